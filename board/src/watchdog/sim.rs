//! A simulated watchdog that behaves like the real one from the firmware's
//! point of view: once started, if it is not fed within its timeout it ends
//! the process the way a reset ends the machine — abruptly, with exit code
//! [`EXIT_WATCHDOG_RESET`] — after writing a marker file, so that the next
//! start reports [`BootStatus::WatchdogReset`]. A supervisor (systemd,
//! a test) restarts the process like the hardware would reboot the box.
//!
//! Tests that must not lose their own process use [`Expiry::Notify`].

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::{BootStatus, Watchdog};
use crate::error::{Error, ErrorKind, Result};

/// Exit code of a process ended by the simulated watchdog (`EX_TEMPFAIL`).
/// Documented in firmware/holdline's exit codes as "watchdog reset".
pub const EXIT_WATCHDOG_RESET: i32 = 75;

/// File name of the marker inside the state directory.
pub const MARKER_FILE: &str = "sim-watchdog.reset";

/// What happens when the simulated watchdog expires.
#[derive(Clone)]
pub enum Expiry {
    /// Write the marker and `std::process::exit(EXIT_WATCHDOG_RESET)`.
    ExitProcess,
    /// Write the marker and send on the channel (tests).
    Notify(mpsc::Sender<()>),
}

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Expiry::ExitProcess => "ExitProcess",
            Expiry::Notify(_) => "Notify",
        })
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

struct State {
    armed: bool,
    timeout: Duration,
    fed_at: Instant,
    expired: bool,
}

/// The simulated watchdog. See the module docs.
pub struct SimWatchdog {
    marker: PathBuf,
    boot: BootStatus,
    shared: Arc<Shared>,
    expiry: Expiry,
    thread: Option<thread::JoinHandle<()>>,
}

impl SimWatchdog {
    /// Reads (and removes) the marker a previous expiry left in
    /// `state_dir`: its presence is this start's boot status.
    pub fn open(state_dir: &Path, expiry: Expiry) -> Result<Self> {
        let marker = state_dir.join(MARKER_FILE);
        let boot = match std::fs::remove_file(&marker) {
            Ok(()) => BootStatus::WatchdogReset,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BootStatus::PowerOn,
            Err(e) => return Err(Error::io(format!("removing {}", marker.display()), e)),
        };
        Ok(Self {
            marker,
            boot,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    armed: false,
                    timeout: Duration::ZERO,
                    fed_at: Instant::now(),
                    expired: false,
                }),
                wake: Condvar::new(),
            }),
            expiry,
            thread: None,
        })
    }

    pub fn marker_path(&self) -> &Path {
        &self.marker
    }

    /// Has it fired (only observable with [`Expiry::Notify`])?
    pub fn expired(&self) -> bool {
        self.shared.state.lock().map(|s| s.expired).unwrap_or(true)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>> {
        self.shared
            .state
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "simulated watchdog state poisoned"))
    }
}

fn run_timer(shared: Arc<Shared>, marker: PathBuf, expiry: Expiry) {
    let Ok(mut state) = shared.state.lock() else {
        return;
    };
    loop {
        if !state.armed {
            return;
        }
        let deadline = state.fed_at + state.timeout;
        let now = Instant::now();
        if now >= deadline {
            state.expired = true;
            state.armed = false;
            drop(state);
            let note = format!(
                "simulated watchdog reset after {} ms without keepalive\n",
                now.saturating_duration_since(deadline).as_millis()
            );
            if let Err(e) = std::fs::write(&marker, note) {
                eprintln!("sim watchdog: cannot write {}: {e}", marker.display());
            }
            match expiry {
                Expiry::ExitProcess => {
                    eprintln!(
                        "sim watchdog: not fed in time, resetting (exit {EXIT_WATCHDOG_RESET})"
                    );
                    std::process::exit(EXIT_WATCHDOG_RESET);
                }
                Expiry::Notify(tx) => {
                    let _ = tx.send(());
                    return;
                }
            }
        }
        state = match shared.wake.wait_timeout(state, deadline - now) {
            Ok((guard, _)) => guard,
            Err(_) => return,
        };
    }
}

impl Watchdog for SimWatchdog {
    fn start(&mut self, timeout: Duration) -> Result<Duration> {
        let took = Duration::from_secs(super::timeout_secs(timeout) as u64);
        // Tests may ask for sub-second timeouts; keep them as given.
        let took = if timeout < Duration::from_secs(1) && !timeout.is_zero() {
            timeout
        } else {
            took
        };
        {
            let mut state = self.lock()?;
            state.armed = true;
            state.timeout = took;
            state.fed_at = Instant::now();
        }
        self.shared.wake.notify_all();
        if self.thread.as_ref().is_none_or(|h| h.is_finished()) {
            let expiry = self.expiry.clone();
            let shared = Arc::clone(&self.shared);
            let marker = self.marker.clone();
            let handle = thread::Builder::new()
                .name("sim-watchdog".into())
                .spawn(move || run_timer(shared, marker, expiry))
                .map_err(|e| Error::io("spawning the simulated watchdog", e))?;
            self.thread = Some(handle);
        }
        Ok(took)
    }

    fn keepalive(&mut self) -> Result<()> {
        let mut state = self.lock()?;
        if !state.armed {
            return Err(Error::new(
                ErrorKind::NotStarted,
                "simulated watchdog not started",
            ));
        }
        state.fed_at = Instant::now();
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        self.lock()?.armed = false;
        self.shared.wake.notify_all();
        if let Some(handle) = self.thread.take() {
            let _ = handle.join();
        }
        Ok(())
    }

    fn boot_status(&mut self) -> Result<BootStatus> {
        Ok(self.boot)
    }

    fn describe(&self) -> String {
        format!("simulated (marker {})", self.marker.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "holdline-simwd-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fed_watchdog_does_not_fire_and_stop_disarms() {
        let dir = tempdir("fed");
        let (tx, rx) = mpsc::channel();
        let mut wd = SimWatchdog::open(&dir, Expiry::Notify(tx)).unwrap();
        assert_eq!(wd.boot_status().unwrap(), BootStatus::PowerOn);
        wd.start(Duration::from_millis(400)).unwrap();
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(50));
            wd.keepalive().unwrap();
        }
        wd.stop().unwrap();
        // After a deliberate stop nothing fires, however long we wait.
        assert!(rx.recv_timeout(Duration::from_millis(800)).is_err());
        assert!(!wd.marker_path().exists());
        let mut next = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
        assert_eq!(next.boot_status().unwrap(), BootStatus::PowerOn);
    }

    #[test]
    fn unfed_watchdog_fires_and_next_start_reports_it() {
        let dir = tempdir("unfed");
        let (tx, rx) = mpsc::channel();
        let mut wd = SimWatchdog::open(&dir, Expiry::Notify(tx)).unwrap();
        wd.start(Duration::from_millis(200)).unwrap();
        rx.recv_timeout(Duration::from_secs(30))
            .expect("watchdog fired");
        assert!(wd.expired());
        assert!(dir.join(MARKER_FILE).exists());
        let mut next = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
        assert_eq!(next.boot_status().unwrap(), BootStatus::WatchdogReset);
        // Reported once: the start after that is a normal one.
        let mut third = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
        assert_eq!(third.boot_status().unwrap(), BootStatus::PowerOn);
    }

    #[test]
    fn keepalive_needs_start() {
        let dir = tempdir("ka");
        let mut wd = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
        assert_eq!(wd.keepalive().unwrap_err().kind(), ErrorKind::NotStarted);
    }
}
