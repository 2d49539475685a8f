//! Critical-task check-ins and the policy that feeds the hardware watchdog
//! only while all are fresh. Sans-IO: no clock and no tokio here; every
//! call takes `now`. The daemon's `hw` module is the thin driver (a tokio
//! interval that calls [`Supervisor::tick`] and feeds the board's watchdog).
//!
//! - [`Health`]: the shared registry. Critical tasks (SIP driver loop, store
//!   writer, uplink monitor, console) [`Health::register`] with a deadline
//!   and call [`TaskHandle::check_in`] at least that often.
//! - [`Supervisor`]: decides, tick by tick, whether to feed. A task that
//!   missed its deadline stops the feeding, so the watchdog resets the box.
//! - [`Report`]: what `show health` prints (≤ 80 columns) and what
//!   `holdline health` judges ([`Report::verdict_of`]).
//! - Fault injection ([`Health::inject_stall`]) exists for tests and is
//!   refused unless [`HealthConfig::fault_injection`] is on (off by default).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Names of the critical tasks the daemon registers.
pub mod tasks {
    pub const SIP: &str = "sip";
    pub const STORE: &str = "store";
    pub const UPLINK: &str = "uplink";
    pub const CONSOLE: &str = "console";
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthConfig {
    /// `[health] fault_injection`: allow [`Health::inject_stall`]. Off by
    /// default; only test fixtures turn it on.
    pub fault_injection: bool,
}

#[derive(Debug)]
struct Entry {
    name: String,
    deadline: Duration,
    registered: Instant,
    last: Option<Instant>,
    check_ins: u64,
    stalled: bool,
    retired: bool,
}

#[derive(Debug)]
struct Registry {
    config: HealthConfig,
    tasks: Vec<Entry>,
}

/// The registry of critical tasks. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Mutex<Registry>>,
}

/// Why a fault could not be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultError {
    /// `[health] fault_injection` is off.
    Disabled,
    /// No task of that name.
    UnknownTask(String),
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultError::Disabled => f.write_str("fault injection is disabled in the config"),
            FaultError::UnknownTask(name) => write!(f, "no critical task named {name:?}"),
        }
    }
}

impl std::error::Error for FaultError {}

impl Health {
    pub fn new(config: HealthConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Registry {
                config,
                tasks: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding this lock cannot leave the registry
        // inconsistent (every update is a single field write), so go on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a critical task that promises to check in at least every
    /// `deadline`. It counts as fresh until `now + deadline` even before its
    /// first check-in. Registering a name again replaces the old entry (a
    /// restarted task).
    pub fn register(&self, name: &str, deadline: Duration, now: Instant) -> TaskHandle {
        let mut reg = self.lock();
        let entry = Entry {
            name: name.to_string(),
            deadline,
            registered: now,
            last: None,
            check_ins: 0,
            stalled: false,
            retired: false,
        };
        let index = match reg.tasks.iter().position(|t| t.name == name) {
            Some(i) => {
                reg.tasks[i] = entry;
                i
            }
            None => {
                reg.tasks.push(entry);
                reg.tasks.len() - 1
            }
        };
        TaskHandle {
            health: self.clone(),
            index,
        }
    }

    /// Makes `task` look hung: its check-ins are ignored (so it goes stale
    /// and the feeding stops) and [`TaskHandle::stall_requested`] turns true
    /// so the task's loop can really block. Refused unless enabled.
    pub fn inject_stall(&self, task: &str) -> Result<(), FaultError> {
        let mut reg = self.lock();
        if !reg.config.fault_injection {
            return Err(FaultError::Disabled);
        }
        let entry = reg
            .tasks
            .iter_mut()
            .find(|t| t.name == task)
            .ok_or_else(|| FaultError::UnknownTask(task.to_string()))?;
        entry.stalled = true;
        Ok(())
    }

    /// Every task's freshness at `now`.
    pub fn report(&self, now: Instant) -> Report {
        let reg = self.lock();
        let tasks = reg
            .tasks
            .iter()
            .filter(|t| !t.retired)
            .map(|t| {
                let since = t.last.unwrap_or(t.registered);
                let age = now.saturating_duration_since(since);
                TaskStatus {
                    name: t.name.clone(),
                    deadline: t.deadline,
                    last_check_in: t.last.map(|l| now.saturating_duration_since(l)),
                    check_ins: t.check_ins,
                    fresh: age <= t.deadline,
                    stalled: t.stalled,
                }
            })
            .collect();
        Report {
            tasks,
            watchdog: None,
        }
    }
}

/// A registered task's handle. Dropping it does NOT unregister the task (a
/// task that died must stop the feeding); a deliberate end calls
/// [`TaskHandle::retire`].
#[derive(Debug)]
pub struct TaskHandle {
    health: Health,
    index: usize,
}

impl TaskHandle {
    /// "I am alive at `now`."
    pub fn check_in(&self, now: Instant) {
        let mut reg = self.health.lock();
        if let Some(entry) = reg.tasks.get_mut(self.index) {
            if !entry.stalled {
                entry.last = Some(now);
                entry.check_ins += 1;
            }
        }
    }

    /// True once a test injected a stall for this task.
    pub fn stall_requested(&self) -> bool {
        let reg = self.health.lock();
        reg.tasks.get(self.index).is_some_and(|e| e.stalled)
    }

    /// The task ends on purpose (shutdown): it no longer counts.
    pub fn retire(self) {
        let mut reg = self.health.lock();
        if let Some(entry) = reg.tasks.get_mut(self.index) {
            entry.retired = true;
        }
    }

    pub fn name(&self) -> String {
        let reg = self.health.lock();
        reg.tasks
            .get(self.index)
            .map(|e| e.name.clone())
            .unwrap_or_default()
    }
}

/// One task in a [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    pub name: String,
    pub deadline: Duration,
    /// Time since the last check-in (None: none yet).
    pub last_check_in: Option<Duration>,
    pub check_ins: u64,
    pub fresh: bool,
    /// A stall was injected (tests only).
    pub stalled: bool,
}

/// The watchdog side of a report, filled in by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogStatus {
    /// e.g. "/dev/watchdog0 (SP5100 TCO timer)", "simulated", "external".
    pub device: String,
    pub timeout: Option<Duration>,
    /// Feeding right now (all tasks fresh).
    pub feeding: bool,
    /// Time since the last keepalive.
    pub last_fed: Option<Duration>,
    /// "power-on", "watchdog reset", ...
    pub boot: String,
    /// Watchdog resets seen over the appliance's life.
    pub resets: u64,
}

/// What `show health` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub tasks: Vec<TaskStatus>,
    pub watchdog: Option<WatchdogStatus>,
}

/// First line of the text form when every task is fresh.
pub const VERDICT_OK: &str = "health: ok";

impl Report {
    /// Every registered task is fresh (and there is at least one).
    pub fn all_fresh(&self) -> bool {
        !self.tasks.is_empty() && self.tasks.iter().all(|t| t.fresh)
    }

    pub fn stale(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .filter(|t| !t.fresh)
            .map(|t| t.name.as_str())
            .collect()
    }

    /// `holdline health`: given the daemon's `show health` text, is every
    /// critical task fresh? Only the exact first line [`VERDICT_OK`] is a yes.
    pub fn verdict_of(text: &str) -> bool {
        text.lines().next().map(str::trim_end) == Some(VERDICT_OK)
    }
}

fn secs(d: Duration) -> String {
    if d < Duration::from_secs(10) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Text for `show health`, every line ≤ 80 columns. The first line is the
/// verdict `holdline health` reads.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_fresh() {
            writeln!(f, "{VERDICT_OK}")?;
        } else if self.tasks.is_empty() {
            writeln!(f, "health: STARTING (no critical task registered)")?;
        } else {
            let mut stale = self.stale().join(", ");
            if stale.len() > 55 {
                stale.truncate(52);
                stale.push_str("...");
            }
            writeln!(f, "health: STALE ({stale})")?;
        }
        writeln!(
            f,
            "{:<16} {:<6} {:>9} {:>9} {:>12}",
            "task", "state", "last", "deadline", "check-ins"
        )?;
        for t in &self.tasks {
            let mut name = t.name.clone();
            name.truncate(16);
            let state = match (t.fresh, t.stalled) {
                (_, true) => "STALL",
                (true, false) => "fresh",
                (false, false) => "STALE",
            };
            let last = t.last_check_in.map_or("never".to_string(), secs);
            writeln!(
                f,
                "{:<16} {:<6} {:>9} {:>9} {:>12}",
                name,
                state,
                last,
                secs(t.deadline),
                t.check_ins
            )?;
        }
        if let Some(w) = &self.watchdog {
            let mut device = w.device.clone();
            device.truncate(68);
            writeln!(f, "watchdog: {device}")?;
            writeln!(
                f,
                "  timeout {}  feeding {}  last fed {}",
                w.timeout.map_or("-".to_string(), secs),
                if w.feeding { "yes" } else { "NO" },
                w.last_fed
                    .map_or("never".to_string(), |d| format!("{} ago", secs(d)))
            )?;
            writeln!(f, "  last boot: {}  watchdog resets: {}", w.boot, w.resets)?;
        }
        Ok(())
    }
}

/// What the driver should do after a [`Supervisor::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Feed the watchdog now.
    Feed,
    /// All fresh, fed recently enough: nothing to do.
    Wait,
    /// Some task is stale: do not feed. `first` is true on the tick the
    /// feeding stopped (log it once, loudly).
    Withhold { stale: Vec<String>, first: bool },
}

/// Feeds while all tasks are fresh, every `feed_every` (a third of the
/// watchdog timeout is the usual choice).
#[derive(Debug)]
pub struct Supervisor {
    health: Health,
    feed_every: Duration,
    last_feed: Option<Instant>,
    withholding: bool,
}

impl Supervisor {
    pub fn new(health: Health, feed_every: Duration) -> Self {
        Self {
            health,
            feed_every,
            last_feed: None,
            withholding: false,
        }
    }

    /// The feed interval for a watchdog timeout: a third, at least 100 ms.
    pub fn interval_for(timeout: Duration) -> Duration {
        (timeout / 3).max(Duration::from_millis(100))
    }

    pub fn tick(&mut self, now: Instant) -> Decision {
        let report = self.health.report(now);
        if !report.all_fresh() && !report.tasks.is_empty() {
            let first = !self.withholding;
            self.withholding = true;
            return Decision::Withhold {
                stale: report.stale().into_iter().map(String::from).collect(),
                first,
            };
        }
        self.withholding = false;
        let due = self
            .last_feed
            .is_none_or(|t| now.saturating_duration_since(t) >= self.feed_every);
        if due {
            Decision::Feed
        } else {
            Decision::Wait
        }
    }

    /// The driver fed the watchdog at `now`.
    pub fn fed(&mut self, now: Instant) {
        self.last_feed = Some(now);
    }

    pub fn last_feed(&self) -> Option<Instant> {
        self.last_feed
    }

    pub fn is_feeding(&self) -> bool {
        !self.withholding
    }

    pub fn feed_every(&self) -> Duration {
        self.feed_every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn feeds_only_while_every_task_is_fresh() {
        let t0 = Instant::now();
        let health = Health::new(HealthConfig::default());
        let sip = health.register(tasks::SIP, ms(1000), t0);
        let store = health.register(tasks::STORE, ms(1000), t0);
        let mut sup = Supervisor::new(health.clone(), ms(300));
        assert_eq!(sup.tick(t0), Decision::Feed);
        sup.fed(t0);
        assert_eq!(sup.tick(t0 + ms(100)), Decision::Wait);
        sip.check_in(t0 + ms(900));
        store.check_in(t0 + ms(900));
        assert_eq!(sup.tick(t0 + ms(1500)), Decision::Feed);
        sup.fed(t0 + ms(1500));
        // store hangs: sip keeps checking in, store does not.
        sip.check_in(t0 + ms(1800));
        let d = sup.tick(t0 + ms(1950));
        assert_eq!(
            d,
            Decision::Withhold {
                stale: vec!["store".into()],
                first: true
            }
        );
        let d = sup.tick(t0 + ms(2000));
        assert!(matches!(d, Decision::Withhold { first: false, .. }));
        assert!(!sup.is_feeding());
        // It comes back: feeding resumes.
        store.check_in(t0 + ms(2100));
        assert_eq!(sup.tick(t0 + ms(2100)), Decision::Feed);
    }

    #[test]
    fn a_dropped_handle_still_counts_a_retired_one_does_not() {
        let t0 = Instant::now();
        let health = Health::new(HealthConfig::default());
        let a = health.register("a", ms(100), t0);
        let b = health.register("b", ms(100), t0);
        drop(a);
        b.check_in(t0 + ms(500));
        assert_eq!(health.report(t0 + ms(500)).stale(), vec!["a"]);
        let c = health.register("a", ms(100), t0 + ms(500));
        c.retire();
        assert!(health.report(t0 + ms(500)).all_fresh());
    }

    #[test]
    fn fault_injection_is_off_by_default() {
        let t0 = Instant::now();
        let health = Health::new(HealthConfig::default());
        let sip = health.register(tasks::SIP, ms(100), t0);
        assert_eq!(health.inject_stall("sip"), Err(FaultError::Disabled));
        assert!(!sip.stall_requested());

        let health = Health::new(HealthConfig {
            fault_injection: true,
        });
        let sip = health.register(tasks::SIP, ms(100), t0);
        assert_eq!(
            health.inject_stall("nope"),
            Err(FaultError::UnknownTask("nope".into()))
        );
        health.inject_stall("sip").unwrap();
        assert!(sip.stall_requested());
        sip.check_in(t0 + ms(150));
        let report = health.report(t0 + ms(150));
        assert_eq!(report.stale(), vec!["sip"]);
        assert!(report.to_string().contains("STALL"));
    }

    #[test]
    fn report_text_fits_80_columns_and_carries_the_verdict() {
        let t0 = Instant::now();
        let health = Health::new(HealthConfig::default());
        let h = health.register("a-very-long-task-name-indeed-longer-than-any", ms(2000), t0);
        h.check_in(t0);
        let _never = health.register(tasks::CONSOLE, ms(60_000), t0);
        let mut report = health.report(t0 + ms(1500));
        report.watchdog = Some(WatchdogStatus {
            device: "/dev/watchdog0 (SP5100 TCO timer)".repeat(4),
            timeout: Some(Duration::from_secs(30)),
            feeding: true,
            last_fed: Some(ms(2500)),
            boot: "watchdog reset".into(),
            resets: 3,
        });
        let text = report.to_string();
        assert!(Report::verdict_of(&text), "{text}");
        for line in text.lines() {
            assert!(line.len() <= 80, "too wide: {line:?}");
        }
        assert!(text.contains("watchdog resets: 3"));
        let stale = health.report(t0 + ms(5000)).to_string();
        assert!(!Report::verdict_of(&stale));
        assert!(stale.starts_with("health: STALE (a-very-long"));
        assert!(!Report::verdict_of(""));
        assert!(!Report::verdict_of("health: okay"));
        assert!(!Health::new(HealthConfig::default()).report(t0).all_fresh());
    }
}
