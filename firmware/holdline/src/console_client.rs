//! `holdline console` and `holdline health`: the client side of the console
//! socket.
//!
//! Wire protocol (one command per connection, text, UTF-8): the client
//! writes the command line (as typed, `--json` included) and a newline; the
//! daemon answers a status line `OK` or `ERR`, then the rendered answer,
//! then closes. The same [`crate::console_srv::execute`] serves the serial port.

use std::io::{BufRead, Write};
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::exit::Exit;

/// What came back for one command.
pub struct Reply {
    /// The daemon said `OK`.
    pub ok: bool,
    /// The rendered answer.
    pub body: String,
}

/// Sends one command line, returns the daemon's reply.
pub async fn request(socket: &Path, line: &str) -> std::io::Result<Reply> {
    let mut s = UnixStream::connect(socket).await?;
    let mut msg = line.replace(['\n', '\r'], " ");
    msg.push('\n');
    s.write_all(msg.as_bytes()).await?;
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).await?;
    let mut body = String::new();
    r.read_to_string(&mut body).await?;
    match status.trim_end() {
        "OK" => Ok(Reply { ok: true, body }),
        "ERR" => Ok(Reply { ok: false, body }),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected console reply {other:?}"),
        )),
    }
}

/// `holdline console`: one command (exit 0/1 by its result), or an
/// interactive loop reading lines from stdin when no command is given.
pub async fn run(socket: &Path, json: bool, words: &[String]) -> Exit {
    if !words.is_empty() {
        let mut line = words.join(" ");
        if json {
            line.push_str(" --json");
        }
        return match request(socket, &line).await {
            Ok(r) => {
                print!("{}", r.body);
                let _ = std::io::stdout().flush();
                if r.ok {
                    Exit::Ok
                } else {
                    Exit::CommandFailed
                }
            }
            Err(e) => {
                eprintln!("holdline console: cannot reach {}: {e}", socket.display());
                Exit::NotReachable
            }
        };
    }
    // Interactive: a prompt per line; `quit`/`exit` or end of input leaves.
    let stdin = std::io::stdin();
    let mut failed = false;
    loop {
        print!("holdline> ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if t == "quit" || t == "exit" {
            break;
        }
        let mut l = t.to_string();
        if json {
            l.push_str(" --json");
        }
        match request(socket, &l).await {
            Ok(r) => {
                print!("{}", r.body);
                failed = !r.ok;
            }
            Err(e) => {
                eprintln!("holdline console: cannot reach {}: {e}", socket.display());
                return Exit::NotReachable;
            }
        }
    }
    println!();
    if failed {
        Exit::CommandFailed
    } else {
        Exit::Ok
    }
}

/// `holdline health`: asks the daemon for `show health`; 0 only when every
/// critical task is checking in (the watchdog daemon's test binary).
pub async fn health(socket: &Path) -> Exit {
    match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        request(socket, "show health"),
    )
    .await
    {
        Ok(Ok(r)) if r.ok && crate::hw::health_ok(&r.body) => Exit::Ok,
        Ok(Ok(r)) => {
            eprint!("{}", r.body);
            Exit::CommandFailed
        }
        Ok(Err(e)) => {
            eprintln!("holdline health: cannot reach {}: {e}", socket.display());
            Exit::NotReachable
        }
        Err(_) => {
            eprintln!(
                "holdline health: no answer from {} within 5 s",
                socket.display()
            );
            Exit::NotReachable
        }
    }
}
