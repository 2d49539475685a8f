//! The serial console driven through a pseudo-terminal pair the way a
//! terminal emulator drives a real port: the console serves the pty slave,
//! opened as a serial port (tokio-serial, 115200 8N1, like /dev/ttyS0); the
//! test types on the master side and reads what a screen would show.

// Harness helpers outside #[test] functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::{Algorithm, Argon2, Params, Version};
use holdline_board::serial::{open_serial, PtyPort};
use holdline_console::login::{LockoutPolicy, PasswordHash};
use holdline_console::serial::{serve, Exec, Login, PromptInfo, Reply, SerialConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

const PASSWORD: &str = "field-tech-7";

/// What the daemon would be: records the lines it ran.
#[derive(Clone, Default)]
struct FakeDaemon {
    ran: Arc<Mutex<Vec<String>>>,
    cloud: Arc<Mutex<String>>,
    beats: Arc<AtomicU64>,
}

impl Exec for FakeDaemon {
    async fn run(&mut self, line: &str) -> Reply {
        self.ran.lock().unwrap().push(line.to_string());
        match line {
            "show health" => Reply::ok("health: ok\ntask   state\nsip    fresh\n"),
            "wide" => Reply::ok("w".repeat(150)),
            "cloud force-down" => {
                *self.cloud.lock().unwrap() = "survival".into();
                Reply::ok("cloud forced down")
            }
            "reboot" => Reply::ok("rebooting"),
            other => Reply::error(format!("unknown command: {other}")),
        }
    }

    fn prompt(&mut self) -> PromptInfo {
        PromptInfo {
            site: "lab-7".into(),
            cloud: self.cloud.lock().unwrap().clone(),
        }
    }

    fn heartbeat(&mut self) {
        self.beats.fetch_add(1, Ordering::Relaxed);
    }
}

struct Rig {
    term: PtyPort,
    seen: String,
    daemon: FakeDaemon,
    served: JoinHandle<std::io::Result<()>>,
}

fn hash() -> PasswordHash {
    // Tiny Argon2 parameters keep debug builds quick; the PHC string
    // carries them, as a production hash carries its own.
    let argon = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(256, 1, 1, None).unwrap(),
    );
    PasswordHash::create_with(argon, PASSWORD, b"pty-test-salt").unwrap()
}

fn config() -> SerialConfig {
    let mut cfg = SerialConfig::new(Login::Password(hash()));
    cfg.heartbeat = Duration::from_millis(100);
    cfg
}

impl Rig {
    async fn start(cfg: SerialConfig) -> Rig {
        let term = PtyPort::open(None).unwrap();
        let port = open_serial(term.slave_path(), 115_200).unwrap();
        let daemon = FakeDaemon::default();
        *daemon.cloud.lock().unwrap() = "up".into();
        let mut exec = daemon.clone();
        let served = tokio::spawn(async move { serve(port, &cfg, &mut exec).await });
        Rig {
            term,
            seen: String::new(),
            daemon,
            served,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.term.write_all(bytes).await.unwrap();
    }

    /// Reads until `needle` shows up; returns everything up to and including it.
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(pos) = self.seen.find(needle) {
                let end = pos + needle.len();
                let got: String = self.seen.drain(..end).collect();
                return got;
            }
            let mut buf = [0u8; 512];
            match tokio::time::timeout_at(deadline, self.term.read(&mut buf)).await {
                Ok(Ok(n)) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Ok(Err(e)) => panic!("reading the terminal: {e}; seen {:?}", self.seen),
                Err(_) => panic!("waited for {needle:?}; screen shows {:?}", self.seen),
            }
        }
    }

    async fn login(&mut self) {
        self.expect("Password: ").await;
        self.send(format!("{PASSWORD}\r").as_bytes()).await;
        self.expect("lab-7 (cloud up)> ").await;
    }

    fn ran(&self) -> Vec<String> {
        self.daemon.ran.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_right_and_wrong_password_then_commands() {
    let mut rig = Rig::start(config()).await;
    let banner = rig.expect("Password: ").await;
    assert!(banner.contains("holdline serial console, site lab-7 (cloud up)"));
    rig.send(b"wrong-one\r").await;
    let after = rig.expect("Login incorrect (4 tries left)\r\n").await;
    assert!(
        !after.contains("wrong-one"),
        "password must not echo: {after:?}"
    );
    rig.expect("Password: ").await;
    rig.send(format!("{PASSWORD}\r\n").as_bytes()).await;
    let shown = rig.expect("lab-7 (cloud up)> ").await;
    assert!(!shown.contains(PASSWORD));

    rig.send(b"show health\r").await;
    let out = rig.expect("lab-7 (cloud up)> ").await;
    assert_eq!(
        out,
        "show health\r\nhealth: ok\r\ntask   state\r\nsip    fresh\r\nlab-7 (cloud up)> "
    );

    // The prompt follows the cloud state.
    rig.send(b"cloud force-down\r").await;
    rig.expect("cloud forced down\r\nlab-7 (cloud survival)> ")
        .await;

    rig.send(b"frobnicate\r").await;
    rig.expect("unknown command: frobnicate\r\nlab-7 (cloud survival)> ")
        .await;

    // Every line on screen fits 80 columns, even a wide answer.
    rig.send(b"wide\r").await;
    let out = rig.expect("lab-7 (cloud survival)> ").await;
    for line in out.split("\r\n") {
        assert!(line.len() <= 80, "{} columns: {line:?}", line.len());
    }
    assert_eq!(out.matches('w').count(), 151); // "wide" echoed + 150

    rig.send(b"exit\r").await;
    rig.expect("logged out\r\n").await;
    rig.expect("Password: ").await;
    assert_eq!(
        rig.ran(),
        vec!["show health", "cloud force-down", "frobnicate", "wide"]
    );
    // A pty never reports end of stream while the port is open: stop the
    // console task ourselves (the duplex test covers the stream closing).
    rig.served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_out_after_repeated_failures() {
    let mut cfg = config();
    cfg.lockout = LockoutPolicy {
        max_failures: 2,
        lockout: Duration::from_secs(5),
    };
    let mut rig = Rig::start(cfg).await;
    rig.expect("Password: ").await;
    rig.send(b"nope\r").await;
    rig.expect("Login incorrect (1 tries left)").await;
    rig.expect("Password: ").await;
    rig.send(b"still-nope\r").await;
    rig.expect("Too many failures: locked for 5s").await;
    rig.expect("try again in ").await;
    // The right password typed while locked is thrown away, not tried.
    rig.send(format!("{PASSWORD}\r").as_bytes()).await;
    let waited = rig.expect("Password: ").await;
    assert!(
        !waited.contains("(cloud"),
        "no session while locked: {waited:?}"
    );
    rig.send(format!("{PASSWORD}\r").as_bytes()).await;
    rig.expect("lab-7 (cloud up)> ").await;
    assert!(rig.ran().is_empty());
    rig.served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_editing_as_a_terminal_sends_it() {
    let mut rig = Rig::start(config()).await;
    rig.login().await;
    // Backspace (BS) and DEL both erase; arrow keys are ignored.
    rig.send(b"shoq\x7fw healx\x08th\x1b[A\x1b[D\r").await;
    let out = rig.expect("lab-7 (cloud up)> ").await;
    assert!(
        out.starts_with("shoq\x08 \x08w healx\x08 \x08th\r\n"),
        "{out:?}"
    );
    // Ctrl-U erases the line.
    rig.send(b"garbage\x15show health\r").await;
    rig.expect("health: ok").await;
    rig.expect("lab-7 (cloud up)> ").await;
    // Ctrl-C abandons it: nothing runs.
    rig.send(b"reboot\x03").await;
    rig.expect("^C\r\nlab-7 (cloud up)> ").await;
    // Destructive commands ask first; anything but "yes" cancels.
    rig.send(b"reboot\r").await;
    rig.expect("Type 'yes' to confirm:").await;
    rig.send(b"no\r").await;
    rig.expect("cancelled\r\n").await;
    rig.send(b"reboot\r").await;
    rig.expect("Type 'yes' to confirm:").await;
    rig.send(b"yes\r").await;
    rig.expect("rebooting\r\n").await;
    // Ctrl-D on an empty line logs out.
    rig.send(b"\x04").await;
    rig.expect("logged out").await;
    assert_eq!(rig.ran(), vec!["show health", "show health", "reboot"]);
    rig.served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_logged_out() {
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_secs(1);
    let mut rig = Rig::start(cfg).await;
    rig.login().await;
    rig.send(b"show hea").await; // a half-typed line, then nothing
    rig.expect("idle timeout, logged out\r\n").await;
    rig.expect("Password: ").await;
    // The half-typed line did not survive into the next session.
    rig.send(format!("{PASSWORD}\r").as_bytes()).await;
    rig.expect("lab-7 (cloud up)> ").await;
    rig.send(b"lth\r").await;
    rig.expect("unknown command: lth").await;
    assert!(
        rig.daemon.beats.load(Ordering::Relaxed) > 0,
        "heartbeats while idle"
    );
    rig.served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_password_hash_nobody_gets_in() {
    let mut rig = Rig::start(SerialConfig::new(Login::Disabled)).await;
    rig.expect("console login disabled: no password hash in the config\r\n")
        .await;
    rig.send(b"\r\rshow health\r").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut buf = [0u8; 256];
    let quiet = tokio::time::timeout(Duration::from_millis(300), rig.term.read(&mut buf)).await;
    assert!(quiet.is_err(), "no prompt, no echo");
    assert!(rig.ran().is_empty());
    rig.served.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_ends_when_the_stream_closes() {
    // Over an in-memory stream (a socket would do the same): EOF ends serve.
    let (client, server) = tokio::io::duplex(1024);
    let mut exec = FakeDaemon::default();
    let cfg = SerialConfig::new(Login::Open);
    let task = tokio::spawn(async move { serve(server, &cfg, &mut exec).await });
    let mut client = client;
    let mut buf = vec![0u8; 256];
    let mut seen = String::new();
    while !seen.contains("> ") {
        let n = client.read(&mut buf).await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("(cloud )> "), "{seen:?}");
    drop(client);
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_noise_keeps_the_console_checking_in() {
    // Garbage arriving faster than the heartbeat period (a floating RX pin)
    // must not make the console look hung to the health supervisor.
    let (mut client, server) = tokio::io::duplex(4096);
    let exec = FakeDaemon::default();
    let beats = Arc::clone(&exec.beats);
    let mut cfg = SerialConfig::new(Login::Password(hash()));
    cfg.heartbeat = Duration::from_secs(3600);
    let mut served_exec = exec.clone();
    let task = tokio::spawn(async move { serve(server, &cfg, &mut served_exec).await });
    let drain = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        for _ in 0..50 {
            client.write_all(&[0xff, b'x', 0x1b, 0x07]).await.unwrap();
            let _ = tokio::time::timeout(Duration::from_millis(10), client.read(&mut buf)).await;
        }
        client
    });
    let client = drain.await.unwrap();
    assert!(beats.load(Ordering::Relaxed) > 0, "no check-in under noise");
    assert!(exec.ran.lock().unwrap().is_empty());
    drop(client);
    task.await.unwrap().unwrap();
}
