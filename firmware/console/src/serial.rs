//! The console on a serial port (or any byte stream a terminal sits on):
//! login, prompt, line editing, idle timeout, confirmation of destructive
//! commands, and output that fits 80 columns.
//!
//! [`serve`] runs sessions one after another on one stream until it closes:
//! banner → `Password:` (unless the login is [`Login::Open`]) → prompt
//! `<site> (cloud <state>)> ` → commands. `exit`/`logout`/`quit` or Ctrl-D
//! end a session, and so does the idle timeout; the lock-out counter spans
//! sessions. The daemon supplies an [`Exec`]: it runs a command line and
//! returns its text, and tells the prompt what to show.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::command::Command;
use crate::line::{Echo, Event, LineEditor};
use crate::login::{Attempt, Guard, LockoutPolicy, PasswordHash};

/// Width every output line is wrapped to.
pub const COLUMNS: usize = 80;

/// Who may use the console.
#[derive(Debug, Clone)]
pub enum Login {
    /// A password whose hash is in the config.
    Password(PasswordHash),
    /// No login (the simulated board on a developer's machine only).
    Open,
    /// No password hash is configured: the console explains that and
    /// lets nobody in.
    Disabled,
}

/// How the serial console behaves.
#[derive(Debug, Clone)]
pub struct SerialConfig {
    pub login: Login,
    pub lockout: LockoutPolicy,
    /// A session with no input for this long is logged out.
    pub idle_timeout: Duration,
    /// How often [`Exec::heartbeat`] is called while waiting for input.
    pub heartbeat: Duration,
}

impl SerialConfig {
    pub fn new(login: Login) -> Self {
        Self {
            login,
            lockout: LockoutPolicy::default(),
            idle_timeout: Duration::from_secs(600),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub ok: bool,
}

impl Reply {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: true,
        }
    }
    pub fn error(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ok: false,
        }
    }
}

/// What the prompt shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptInfo {
    /// Site name.
    pub site: String,
    /// Cloud state: "up", "survival", "recovering", ...
    pub cloud: String,
}

/// The daemon's side of the console.
pub trait Exec: Send {
    /// Runs one command line (already confirmed if it needed it) and
    /// returns its text.
    fn run(&mut self, line: &str) -> impl Future<Output = Reply> + Send;
    /// The prompt's contents, asked before every prompt.
    fn prompt(&mut self) -> PromptInfo;
    /// Called at least every [`SerialConfig::heartbeat`] while the console
    /// waits, and on every read (the console's health check-in).
    fn heartbeat(&mut self) {}
}

enum Input {
    Event(Event),
    Idle,
    Closed,
}

struct Term<IO> {
    io: IO,
    editor: LineEditor,
    pending: VecDeque<u8>,
    echo: Vec<u8>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> Term<IO> {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    async fn say(&mut self, text: &str) -> io::Result<()> {
        self.write(format_output(text).as_bytes()).await
    }

    /// Next line event, or Idle after `idle` without any byte, or Closed.
    async fn read_event<E: Exec>(
        &mut self,
        echo: Echo,
        idle: Duration,
        heartbeat: Duration,
        exec: &mut E,
    ) -> io::Result<Input> {
        self.editor.set_echo(echo);
        let mut deadline = Instant::now() + idle;
        loop {
            while let Some(byte) = self.pending.pop_front() {
                deadline = Instant::now() + idle;
                let event = self.editor.feed(byte, &mut self.echo);
                if !self.echo.is_empty() {
                    let echo = std::mem::take(&mut self.echo);
                    self.write(&echo).await?;
                }
                if let Some(event) = event {
                    return Ok(Input::Event(event));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.editor.clear();
                return Ok(Input::Idle);
            }
            let wait = (deadline - now).min(heartbeat.max(Duration::from_millis(10)));
            let mut buf = [0u8; 256];
            match tokio::time::timeout(wait, self.io.read(&mut buf)).await {
                Ok(Ok(0)) => return Ok(Input::Closed),
                Ok(Ok(n)) => {
                    // Busy lines (or line noise on a floating RX pin) must
                    // not look like a hung console.
                    exec.heartbeat();
                    self.pending.extend(&buf[..n]);
                }
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => exec.heartbeat(),
            }
        }
    }

    /// Throws input away until `until`, heart-beating; false if closed.
    async fn discard_until<E: Exec>(
        &mut self,
        until: Instant,
        heartbeat: Duration,
        exec: &mut E,
    ) -> io::Result<bool> {
        self.pending.clear();
        self.editor.clear();
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(true);
            }
            let wait = (until - now).min(heartbeat.max(Duration::from_millis(10)));
            let mut buf = [0u8; 256];
            match tokio::time::timeout(wait, self.io.read(&mut buf)).await {
                Ok(Ok(0)) => return Ok(false),
                Ok(Ok(_)) => exec.heartbeat(),
                Ok(Err(e)) => return Err(e),
                Err(_elapsed) => exec.heartbeat(),
            }
        }
    }
}

/// Terminal-safe output: LF → CRLF, control characters (which could carry
/// escape sequences from network-supplied text such as a SIP URI) replaced
/// by `?`, lines hard-wrapped at [`COLUMNS`].
pub fn format_output(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut col = 0;
        for c in line.chars() {
            let c = match c {
                '\t' => ' ',
                c if c.is_control() => '?',
                c => c,
            };
            if col == COLUMNS {
                out.push_str("\r\n");
                col = 0;
            }
            out.push(c);
            col += 1;
        }
        out.push_str("\r\n");
    }
    // `split` yields one empty piece after a final newline: drop its CRLF.
    if text.ends_with('\n') {
        out.truncate(out.len() - 2);
    }
    out
}

/// The prompt line: `<site> (cloud <state>)> `, at most 43 columns.
pub fn prompt_text(info: &PromptInfo) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .filter(|c| !c.is_control())
            .take(max)
            .collect::<String>()
    };
    let site = clean(&info.site, 20);
    let site = if site.is_empty() {
        "holdline".into()
    } else {
        site
    };
    format!("{site} (cloud {})> ", clean(&info.cloud, 12))
}

/// What a destructive command asks before it runs.
fn confirmation(line: &str) -> Option<&'static str> {
    match Command::parse(line) {
        Command::Reboot => Some("Reboot the appliance? Type 'yes' to confirm: "),
        Command::FactoryReset => Some(
            "Erase ALL settings and data (keeps only the board identity)?\r\n\
             Type 'yes' to confirm: ",
        ),
        _ => None,
    }
}

enum SessionEnd {
    Logout,
    Idle,
    Closed,
}

/// Serves the console on `io` until the stream closes.
pub async fn serve<IO, E>(io: IO, cfg: &SerialConfig, exec: &mut E) -> io::Result<()>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: Exec,
{
    let mut term = Term {
        io,
        editor: LineEditor::default(),
        pending: VecDeque::new(),
        echo: Vec::new(),
    };
    let mut guard = Guard::new(cfg.lockout);
    loop {
        let info = exec.prompt();
        term.say(&format!(
            "\nholdline serial console, site {}\n",
            prompt_text(&info).trim_end_matches("> ")
        ))
        .await?;
        if !login(&mut term, cfg, &mut guard, exec).await? {
            return Ok(());
        }
        match session(&mut term, cfg, exec).await? {
            SessionEnd::Logout => term.say("logged out\n").await?,
            SessionEnd::Idle => {
                tracing::info!("console: idle timeout, logged out");
                term.say("\nidle timeout, logged out\n").await?
            }
            SessionEnd::Closed => return Ok(()),
        }
    }
}

/// Until a good password; false when the stream closed.
async fn login<IO, E>(
    term: &mut Term<IO>,
    cfg: &SerialConfig,
    guard: &mut Guard,
    exec: &mut E,
) -> io::Result<bool>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: Exec,
{
    let hash = match &cfg.login {
        Login::Open => return Ok(true),
        Login::Password(hash) => hash.clone(),
        Login::Disabled => loop {
            term.say("console login disabled: no password hash in the config\n")
                .await?;
            // Say it again now and then (a terminal may attach later).
            if !term
                .discard_until(
                    Instant::now() + Duration::from_secs(60),
                    cfg.heartbeat,
                    exec,
                )
                .await?
            {
                return Ok(false);
            }
        },
    };
    loop {
        if let Some(left) = guard.locked(Instant::now().into_std()) {
            term.say(&format!(
                "console locked after failed logins; try again in {}s\n",
                left.as_secs().max(1)
            ))
            .await?;
            if !term
                .discard_until(Instant::now() + left, cfg.heartbeat, exec)
                .await?
            {
                return Ok(false);
            }
            continue;
        }
        term.write(b"Password: ").await?;
        let password = match term
            .read_event(Echo::Off, cfg.idle_timeout, cfg.heartbeat, exec)
            .await?
        {
            Input::Event(Event::Line(p)) => p,
            Input::Event(Event::Interrupt) | Input::Event(Event::Eof) => continue,
            Input::Idle => {
                term.write(b"\r\n").await?;
                continue;
            }
            Input::Closed => return Ok(false),
        };
        let check = hash.clone();
        let ok = tokio::task::spawn_blocking(move || check.verify(&password))
            .await
            .unwrap_or(false);
        match guard.record(ok, Instant::now().into_std()) {
            Attempt::Accepted => return Ok(true),
            Attempt::Rejected { left } => {
                term.say(&format!("Login incorrect ({left} tries left)\n"))
                    .await?
            }
            Attempt::LockedOut { for_ } => {
                term.say(&format!(
                    "Login incorrect. Too many failures: locked for {}s\n",
                    for_.as_secs()
                ))
                .await?
            }
        }
    }
}

async fn session<IO, E>(
    term: &mut Term<IO>,
    cfg: &SerialConfig,
    exec: &mut E,
) -> io::Result<SessionEnd>
where
    IO: AsyncRead + AsyncWrite + Unpin,
    E: Exec,
{
    loop {
        let prompt = prompt_text(&exec.prompt());
        term.write(prompt.as_bytes()).await?;
        let line = match term
            .read_event(Echo::On, cfg.idle_timeout, cfg.heartbeat, exec)
            .await?
        {
            Input::Event(Event::Line(line)) => line,
            Input::Event(Event::Interrupt) => continue,
            Input::Event(Event::Eof) => return Ok(SessionEnd::Logout),
            Input::Idle => return Ok(SessionEnd::Idle),
            Input::Closed => return Ok(SessionEnd::Closed),
        };
        let line = line.trim();
        match line.to_ascii_lowercase().as_str() {
            "" => continue,
            "exit" | "logout" | "quit" => return Ok(SessionEnd::Logout),
            _ => {}
        }
        if let Some(question) = confirmation(line) {
            term.say(question.trim_end_matches(' ')).await?;
            // say() ended the question with CRLF; answer on the next line.
            let answer = match term
                .read_event(Echo::On, cfg.idle_timeout, cfg.heartbeat, exec)
                .await?
            {
                Input::Event(Event::Line(a)) => a,
                Input::Event(_) => String::new(),
                Input::Idle => return Ok(SessionEnd::Idle),
                Input::Closed => return Ok(SessionEnd::Closed),
            };
            if answer.trim() != "yes" {
                term.say("cancelled\n").await?;
                continue;
            }
        }
        let Reply { mut text, ok } = exec.run(line).await;
        if text.is_empty() && !ok {
            text.push_str("error");
        }
        if !text.is_empty() {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            term.say(&text).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_crlf_sanitised_and_wrapped() {
        assert_eq!(format_output("a\nb\n"), "a\r\nb\r\n");
        assert_eq!(format_output("a\r\nb"), "a\r\nb\r\n");
        assert_eq!(format_output("x\x1b[2Jy"), "x?[2Jy\r\n");
        let long = "z".repeat(170);
        let out = format_output(&long);
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0].len(), 80);
        assert_eq!(lines[1].len(), 80);
        assert_eq!(lines[2].len(), 10);
    }

    #[test]
    fn prompt_shows_site_and_cloud_and_stays_short() {
        let p = prompt_text(&PromptInfo {
            site: "shop-12".into(),
            cloud: "survival".into(),
        });
        assert_eq!(p, "shop-12 (cloud survival)> ");
        let p = prompt_text(&PromptInfo {
            site: "a\x1b".repeat(40),
            cloud: "x".repeat(40),
        });
        assert!(p.len() <= 43 && !p.contains('\x1b'), "{p}");
    }

    #[test]
    fn destructive_commands_ask_first() {
        assert!(confirmation("reboot").is_some());
        assert!(confirmation("FACTORY-RESET").is_some());
        assert!(confirmation("show health").is_none());
    }
}
