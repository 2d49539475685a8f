//! The health-gated feeding against the simulated watchdog, end to end, in a
//! child process (the watchdog really ends its process): a stalled SIP task
//! stops the feeding, the watchdog fires, the child exits with the reset
//! exit code, and the next start reports a watchdog reset. A healthy child
//! is never reset and its deliberate stop leaves a power-on boot status.

// Test harness helpers outside #[test] functions: a failure here is a test failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use holdline_board::watchdog::sim::{SimWatchdog, MARKER_FILE};
use holdline_board::{BootStatus, Expiry, Watchdog, EXIT_WATCHDOG_RESET};
use holdline_health::{tasks, Decision, Health, HealthConfig, Supervisor};

const CHILD_ENV: &str = "HOLDLINE_HEALTH_CHILD";

/// The child: a SIP "loop" checking in, a supervisor feeding the simulated
/// watchdog; with `stall`, the SIP loop is stalled by fault injection after
/// a while. A healthy child stops the watchdog on purpose and exits 0.
fn child(dir: &Path, stall: bool) -> ! {
    let mut wd = SimWatchdog::open(dir, Expiry::ExitProcess).expect("open sim watchdog");
    println!(
        "child boot status: {}",
        wd.boot_status().expect("boot").as_str()
    );
    let timeout = wd.start(Duration::from_secs(3)).expect("start");
    let health = Health::new(HealthConfig {
        fault_injection: stall,
    });
    let start = Instant::now();
    let sip = health.register(tasks::SIP, Duration::from_secs(1), start);
    let mut sup = Supervisor::new(health.clone(), Supervisor::interval_for(timeout));
    let run_for = Duration::from_millis(1500);
    loop {
        let now = Instant::now();
        if stall && now - start > Duration::from_millis(500) && !sip.stall_requested() {
            health
                .inject_stall(tasks::SIP)
                .expect("fault injection enabled");
        }
        sip.check_in(now);
        match sup.tick(now) {
            Decision::Feed => {
                wd.keepalive().expect("keepalive");
                sup.fed(now);
            }
            Decision::Wait => {}
            Decision::Withhold { stale, first } => {
                if first {
                    println!("child: withholding the feed, stale: {stale:?}");
                }
            }
        }
        if !stall && now - start > run_for {
            wd.stop().expect("magic close");
            std::process::exit(0);
        }
        if now - start > Duration::from_secs(120) {
            // The watchdog should have ended us long ago.
            std::process::exit(99);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_child(dir: &Path, mode: &str) -> i32 {
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(Instant::now() < deadline, "child did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("holdline-health-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs only as the child half of the tests below (it is a no-op in the
/// parent test run, where the variable is unset).
#[test]
fn child_process_entry() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (mode, dir) = spec.split_once(':').unwrap();
        child(Path::new(dir), mode == "stall");
    }
    assert!(std::env::var(CHILD_ENV).is_err());
}

#[test]
fn stalled_sip_task_resets_and_next_start_reports_it() {
    let dir = tempdir("stall");
    let code = run_child(&dir, "stall");
    assert_eq!(
        code, EXIT_WATCHDOG_RESET,
        "the simulated watchdog reset the child"
    );
    assert!(dir.join(MARKER_FILE).exists());
    let mut next = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
    assert_eq!(next.boot_status().unwrap(), BootStatus::WatchdogReset);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn healthy_child_is_not_reset() {
    let dir = tempdir("healthy");
    let code = run_child(&dir, "healthy");
    assert_eq!(code, 0, "a healthy child ran and stopped on purpose");
    assert!(!dir.join(MARKER_FILE).exists());
    let mut next = SimWatchdog::open(&dir, Expiry::ExitProcess).unwrap();
    assert_eq!(next.boot_status().unwrap(), BootStatus::PowerOn);
    std::fs::remove_dir_all(dir).unwrap();
}
