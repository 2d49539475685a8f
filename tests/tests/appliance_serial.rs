//! The serial console of the real binary on the simulated board, driven
//! the way a terminal emulator drives it: the sim board serves the console
//! on a pseudo-terminal linked at `<state_dir>/console.pty` (`screen
//! console.pty`); the test opens that tty, types keystrokes (CR line ends,
//! DEL, Ctrl-U, Ctrl-C) and reads what a screen would show.
//!
//! Covers: login with a wrong then the right password (from the Argon2 hash
//! in `[console] password_hash`), the prompt (site and cloud state),
//! `status`, `show health`, line editing, the `reboot` confirmation answered
//! "no", logout, the idle timeout and the lock-out after repeated failures.
//! Every wait is a generous bound (no timing asserts).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::net::Block;

const PASSWORD: &str = "field-tech-7";
/// Argon2id of [`PASSWORD`] with tiny parameters (m=256 KiB, t=1) so that a
/// debug build verifies it quickly; the PHC string carries its parameters,
/// as a production hash (m=19456, t=2) does.
const PASSWORD_HASH: &str =
    "$argon2id$v=19$m=256,t=1,p=1$YXBwbGlhbmNlLXNlcmlhbA$ejmopDdZsMUI4E8sE5HkNW7NofOA8Sq87iiGM15dhrM";
/// Generous bound for anything to appear on the screen.
const SCREEN: Duration = Duration::from_secs(30);

/// The terminal: writes keystrokes to the tty, a thread collects the screen.
struct Term {
    tty: File,
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far the test has read.
    pos: usize,
}

impl Term {
    fn open(link: &Path) -> Term {
        let tty = File::options()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NOCTTY)
            .open(link)
            .expect("open the console pty");
        let mut reader = tty.try_clone().expect("clone the tty");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // Ends when holdline (the pty master) goes away.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("screen").extend_from_slice(&buf[..n]);
            }
        });
        Term {
            tty,
            screen,
            pos: 0,
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.tty.write_all(keys).expect("type on the tty");
        self.tty.flush().expect("flush the tty");
    }

    /// Everything shown since the last expect.
    fn unread(&self) -> String {
        let s = self.screen.lock().expect("screen");
        String::from_utf8_lossy(&s[self.pos.min(s.len())..]).into_owned()
    }

    /// Waits until `needle` shows; returns the screen up to and including
    /// it and moves past it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + SCREEN;
        loop {
            {
                let s = self.screen.lock().expect("screen");
                let rest = &s[self.pos.min(s.len())..];
                if let Some(i) = rest
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                {
                    let upto = String::from_utf8_lossy(&rest[..i + needle.len()]).into_owned();
                    self.pos += i + needle.len();
                    return upto;
                }
            }
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?} on the console; it shows:\n{}",
                self.unread()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asserts `needle` does not show within `d`.
    fn never_within(&mut self, needle: &str, d: Duration) {
        std::thread::sleep(d);
        let rest = self.unread();
        assert!(
            !rest.contains(needle),
            "{needle:?} showed up on the console:\n{rest}"
        );
    }
}

fn wait_for_link(hl: &Holdline) -> std::path::PathBuf {
    let link = hl.dir().join("console.pty");
    let deadline = Instant::now() + SCREEN;
    while !link.exists() {
        assert!(
            Instant::now() < deadline,
            "no {} after 30 s\n{}",
            link.display(),
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    link
}

/// The prompt: `<site> (cloud <state>)> ` with the site the cloud domain.
const PROMPT: &str = ")> ";

#[test]
fn a_field_tech_logs_in_runs_commands_and_is_logged_out_and_locked_out() {
    let block = Block::allocate();
    let hl = start_with_console(
        &block,
        &format!("password_hash = \"{PASSWORD_HASH}\"\nidle_timeout_s = 10\n"),
    );
    let link = wait_for_link(&hl);
    let mut term = Term::open(&link);

    // Banner and login (the banner waits in the tty for the terminal).
    term.expect("holdline serial console, site cloud.test");
    term.expect("Password: ");
    term.type_keys(b"not-the-password\r");
    term.expect("Login incorrect (4 tries left)");
    term.expect("Password: ");
    // Ctrl-U erases what was typed so far, then the right password.
    term.type_keys(b"garbage\x15");
    term.type_keys(format!("{PASSWORD}\r").as_bytes());
    let shown = term.expect(PROMPT);
    assert!(shown.contains("cloud.test (cloud "), "{shown:?}");
    assert!(!shown.contains(PASSWORD), "password echoed: {shown:?}");
    assert!(!shown.contains("garbage"), "password echoed: {shown:?}");

    // status
    term.type_keys(b"status\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("status\r\n"), "echo: {out:?}");
    assert!(out.contains("bindings"), "{out}");
    assert!(out.contains("uptime_s"), "{out}");
    // Output lines end in CRLF and fit 80 columns.
    for line in out.split("\r\n") {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }

    // show health, typed with a slip corrected by DEL (echo BS SP BS).
    term.type_keys(b"show heal");
    term.type_keys(b"XY\x7f\x7f");
    term.type_keys(b"th\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("XY\x08 \x08\x08 \x08th"), "{out:?}");
    assert!(out.contains("health: ok"), "{out}");
    assert!(out.contains("sip"), "{out}");
    assert!(out.contains("console"), "{out}");
    assert!(out.contains("watchdog: simulated"), "{out}");

    // Ctrl-C abandons a line; Ctrl-U erases one; arrow keys are swallowed.
    term.type_keys(b"factory-reset\x03");
    let out = term.expect(PROMPT);
    assert!(out.contains("^C\r\n"), "{out:?}");
    assert!(!out.contains("Type 'yes'"), "{out:?}");
    term.type_keys(b"reboot\x15\x1b[Aversion\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("holdline"), "{out}");
    assert!(!out.contains("Type 'yes'"), "{out:?}");

    // reboot asks first; "no" cancels, the appliance keeps running.
    term.type_keys(b"reboot\r");
    term.expect("Type 'yes' to confirm:");
    term.type_keys(b"no\r");
    term.expect("cancelled");
    term.expect(PROMPT);
    let status = hl.console(&["status"]).expect("console");
    assert!(status.ok, "holdline still runs after a cancelled reboot");

    // An unknown command is an error, not a crash.
    term.type_keys(b"frobnicate\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("unknown command"), "{out}");

    // logout: back to the banner and the password prompt.
    term.type_keys(b"exit\r");
    term.expect("logged out");
    term.expect("holdline serial console, site cloud.test");
    term.expect("Password: ");

    // Idle timeout (10 s configured): log in, type nothing.
    term.type_keys(format!("{PASSWORD}\r").as_bytes());
    term.expect(PROMPT);
    let idle_from = Instant::now();
    term.expect("idle timeout, logged out");
    assert!(
        idle_from.elapsed() >= Duration::from_secs(5),
        "logged out early: {:?}",
        idle_from.elapsed()
    );
    term.expect("Password: ");

    // Lock-out: 5 wrong passwords in a row lock the console; the right
    // password is then ignored.
    for left in (1..=4).rev() {
        term.type_keys(b"wrong\r");
        term.expect(&format!("Login incorrect ({left} tries left)"));
        term.expect("Password: ");
    }
    term.type_keys(b"wrong\r");
    term.expect("Too many failures: locked for 300s");
    term.expect("console locked after failed logins");
    term.type_keys(format!("{PASSWORD}\r").as_bytes());
    term.never_within(PROMPT, Duration::from_secs(3));
    // The daemon logged it and is still healthy.
    let log = hl.log();
    assert!(log.contains("failed logins, locked for 300s"), "{log}");
    let health = hl.console(&["show", "health"]).expect("console");
    assert!(health.stdout.contains("health: ok"), "{}", health.stdout);
}

/// holdline with extra keys in its `[console]` section.
fn start_with_console(block: &Block, console_keys: &str) -> Holdline {
    let opts = HoldlineOpts::new(block);
    let mut hl = Holdline::start(opts).expect("holdline starts");
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    assert!(text.contains("[console]\n"), "{text}");
    let text = text.replacen("[console]\n", &format!("[console]\n{console_keys}"), 1);
    std::fs::write(hl.config_path(), text).expect("config");
    hl.stop().expect("stops");
    // The next start links its own pty; never open the old one.
    let _ = std::fs::remove_file(hl.dir().join("console.pty"));
    hl.start_again()
        .expect("holdline restarts with the console settings");
    hl
}

/// Waits (bounded) until holdline's console socket stops answering, i.e.
/// the process ended on its own; returns its exit code.
fn exit_code_after_it_ends(hl: &mut Holdline) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = hl.console(&["status"]).expect("console");
        if a.code == Some(6) {
            break;
        }
        assert!(Instant::now() < deadline, "still running:\n{}", hl.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    hl.stop().expect("exit status")
}

/// `reboot` and `factory-reset` confirmed with "yes" on the serial console
/// (simulated board: no password hash, so no login): a reboot is a clean
/// restart (exit 8, not a watchdog reset, store kept); a factory reset
/// erases the store, restores the image default config with the board
/// profile kept, and leaves the board's identity and history alone.
#[test]
fn reboot_and_factory_reset_confirmed_on_the_serial_console() {
    let block = Block::allocate();
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
    let link = wait_for_link(&hl);
    let mut term = Term::open(&link);
    term.expect(PROMPT);

    term.type_keys(b"reboot\r");
    term.expect("Type 'yes' to confirm:");
    term.type_keys(b"yes\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("reboot: clean shutdown"), "{out}");
    assert_eq!(exit_code_after_it_ends(&mut hl), Some(8), "{}", hl.log());
    assert!(hl.dir().join("holdline.db").exists());
    drop(term);

    let _ = std::fs::remove_file(hl.dir().join("console.pty"));
    hl.start_again().expect("holdline starts after the reboot");
    let health = hl.console(&["show", "health"]).expect("console");
    assert!(
        health
            .stdout
            .contains("last boot: power-on  watchdog resets: 0"),
        "a reboot is not a watchdog reset:\n{}",
        health.stdout
    );
    let log = hl.console(&["show", "log"]).expect("console");
    assert!(log.stdout.contains("reboot"), "{}", log.stdout);

    // Factory reset, confirmed.
    let link = wait_for_link(&hl);
    let mut term = Term::open(&link);
    term.expect(PROMPT);
    let dir = hl.dir().to_path_buf();
    std::fs::write(dir.join("keep-me.txt"), "not the store's").expect("write");
    term.type_keys(b"factory-reset\r");
    term.expect("Type 'yes' to confirm:");
    term.type_keys(b"yes\r");
    let out = term.expect(PROMPT);
    assert!(out.contains("factory reset: erasing the store"), "{out}");
    assert!(out.contains("board sim is kept"), "{out}");
    assert_eq!(exit_code_after_it_ends(&mut hl), Some(8), "{}", hl.log());
    for gone in ["holdline.db", "holdline.db-wal", "holdline.db-shm"] {
        assert!(
            !dir.join(gone).exists(),
            "{gone} survived the factory reset"
        );
    }
    assert!(dir.join("keep-me.txt").exists());
    assert!(!dir.join("factory-reset.pending").exists());
    let config = std::fs::read_to_string(hl.config_path()).expect("config");
    assert!(
        config.contains("# holdline default configuration for the simulated board"),
        "{config}"
    );
    assert!(config.contains("profile = \"sim\""), "{config}");
    assert!(!config.contains("written by holdline_tests"), "{config}");
    assert!(hl.log().contains("factory reset done"), "{}", hl.log());
    // Not restarted here: the image default listens on 127.0.0.1:5060,
    // which parallel tests may use.
}
