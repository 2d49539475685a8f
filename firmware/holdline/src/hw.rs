//! The board, wired into the daemon (owned by the board helper; the daemon
//! declares `mod hw;` and calls [`start`]).
//!
//! [`start`] opens the board profile and starts three tasks on the
//! daemon's runtime:
//! - **watchdog feeding**: the [`holdline_health::Supervisor`] policy on a
//!   tokio interval; the board's watchdog is fed only while every critical
//!   task registered in [`Hw::health`] is fresh. A hung task — or a hung
//!   runtime, which stops this task too — means no feeding and a reset;
//! - **LEDs and button**: every [`leds::TICK`] the LEDs show power/health,
//!   the cloud state ([`Hw::set_cloud`]) and fault ([`Hw::set_fault`]); the
//!   reset button is sampled: a long press sends a factory-reset request
//!   ([`Hw::factory_reset_requests`]), a short press is only logged;
//! - **serial console**: the console served on the profile's port with the
//!   daemon's [`Exec`]; it is itself a critical task ("console").
//!
//! The same gate feeds systemd's `WatchdogSec=` (`WATCHDOG=1` over
//! `$NOTIFY_SOCKET`) when the unit sets one. `READY=1`/`STOPPING=1` are the
//! daemon's (sdnotify.rs); with hw wired, `WATCHDOG=1` should come from here
//! only, so that any stale critical task stops systemd's feeding too.
//!
//! At start the boot status is read: after a watchdog reset it is logged,
//! counted in `<state_dir>/watchdog-resets` and shown by `show health`
//! (the daemon also writes it to the store's event log). A deliberate
//! shutdown ([`Hw::shutdown`]) disarms the watchdog with the magic close.
//!
//! Contract with the daemon (see /work/team/requests.md, board → daemon):
//! - the SIP loop, the store writer and the uplink monitor each
//!   `hw.health().register(tasks::SIP, deadline, Instant::now())` and call
//!   `check_in(Instant::now())` at least every `deadline` (also when idle);
//! - `show health` prints [`Hw::health_report`] (its `Display`), `show leds`
//!   prints [`Hw::leds_text`];
//! - `holdline health` asks the daemon `show health` and exits 0 only if
//!   [`health_ok`] says so.

// The daemon calls a subset of this API as its features land; the rest is
// the documented interface for it, not dead code to remove.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdline_board::button::{ButtonEvent, ButtonTracker};
use holdline_board::leds::{self, LedReport};
use holdline_board::profile::WatchdogConfig;
use holdline_board::serial::ConsolePort;
use holdline_board::{
    Board, BootStatus, CloudLight, Expiry, HealthLight, Indication, OpenOptions, Profile, SimPins,
    Watchdog,
};
use holdline_console::serial::{Exec, PromptInfo, Reply, SerialConfig};
use holdline_health::{
    tasks, Decision, Health, HealthConfig, Report, Supervisor, TaskHandle, WatchdogStatus,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How the daemon wants the board started.
#[derive(Debug, Clone)]
pub struct HwConfig {
    /// `[board] profile`: a built-in name (`sim`, `apu2`, `cm4-box`) or a
    /// path to a profile TOML file.
    pub profile: String,
    /// Persistent state: the simulated watchdog's marker, the pty link, the
    /// watchdog-reset counter. The store's directory is a good choice.
    pub state_dir: PathBuf,
    /// The serial console's login/idle settings; None: no serial console.
    pub serial: Option<SerialConfig>,
    /// `[health]` (fault injection off by default).
    pub health: HealthConfig,
    /// How long the console task may go without checking in.
    pub console_deadline: Duration,
    /// What the simulated watchdog does when it fires: end the process
    /// (exit 75, the default) or, in tests, notify.
    pub sim_expiry: Expiry,
}

impl HwConfig {
    pub fn new(profile: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            profile: profile.into(),
            state_dir: state_dir.into(),
            serial: None,
            health: HealthConfig::default(),
            console_deadline: Duration::from_secs(60),
            sim_expiry: Expiry::ExitProcess,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    /// The profile is unknown/malformed or a device it names cannot be opened.
    #[error("board: {0}")]
    Board(#[from] holdline_board::Error),
}

/// What the LEDs are told from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lights {
    cloud: CloudLight,
    fault: bool,
}

#[derive(Debug)]
struct WdShared {
    device: String,
    timeout: Option<Duration>,
    feeding: bool,
    last_fed: Option<Instant>,
}

/// The running board. Dropping it leaves the tasks running with the
/// runtime; call [`Hw::shutdown`] for a deliberate stop.
pub struct Hw {
    health: Health,
    boot: BootStatus,
    resets: u64,
    board: String,
    lights: watch::Sender<Lights>,
    leds: Arc<Mutex<Vec<LedReport>>>,
    wd: Arc<Mutex<WdShared>>,
    factory_reset: Option<mpsc::Receiver<()>>,
    sim_pins: SimPins,
    stop: watch::Sender<bool>,
    feeder: Option<JoinHandle<()>>,
    others: Vec<JoinHandle<()>>,
}

/// `holdline health`: given the text of the daemon's `show health`, true
/// only when the daemon says every critical task is fresh.
pub fn health_ok(show_health_text: &str) -> bool {
    Report::verdict_of(show_health_text)
}

/// Maps a cloud state name (as the console shows it) to the LEDs' view.
pub fn cloud_light(state: &str) -> CloudLight {
    match state {
        "up" => CloudLight::Up,
        "suspect" | "down" | "survival" => CloudLight::Survival,
        "recovering" => CloudLight::Recovering,
        _ => CloudLight::Unknown,
    }
}

/// Sends a systemd notification (`READY=1`, `WATCHDOG=1`, ...) to
/// `$NOTIFY_SOCKET`; false when not run by systemd or the send failed.
pub fn sd_notify(msg: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) => notify_to(&socket, msg).is_ok(),
        None => false,
    }
}

fn notify_to(socket: &std::ffi::OsStr, msg: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let sock = UnixDatagram::unbound()?;
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(msg.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(msg.as_bytes(), Path::new(socket))?;
        }
    }
    Ok(())
}

/// systemd's `WatchdogSec=` for this process (`WATCHDOG_USEC`, and
/// `WATCHDOG_PID` naming us when set).
fn systemd_watchdog() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads, bumps (after a watchdog reset) and writes the reset counter.
fn count_resets(state_dir: &Path, boot: BootStatus) -> u64 {
    let path = state_dir.join("watchdog-resets");
    let old: u64 = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if boot != BootStatus::WatchdogReset {
        return old;
    }
    let new = old.saturating_add(1);
    if let Err(e) = std::fs::write(&path, format!("{new}\n")) {
        warn!(path = %path.display(), error = %e, "cannot record the watchdog reset count");
    }
    new
}

/// Opens the board and starts the watchdog feeding, LED/button and serial
/// console tasks. `console` runs the serial console's command lines.
pub async fn start<E: Exec + 'static>(cfg: HwConfig, console: E) -> Result<Hw, HwError> {
    let profile = Profile::load(&cfg.profile)?;
    let board_name = profile.board.name.clone();
    let timeout = profile.watchdog_timeout();
    let board = Board::open(
        profile,
        OpenOptions {
            state_dir: cfg.state_dir.clone(),
            sim_expiry: cfg.sim_expiry.clone(),
        },
    )?;
    let long_press = board.long_press();
    let sim_pins = board.sim_pins();
    let serial_profile = board.profile.serial.clone();
    let external = matches!(board.profile.watchdog, WatchdogConfig::External);
    let Board {
        watchdog,
        leds,
        button,
        ..
    } = board;

    let health = Health::new(cfg.health.clone());

    // Watchdog: boot status first (reading it does not arm the device).
    let mut watchdog = watchdog;
    let boot = match watchdog.as_mut().map(|w| w.boot_status()) {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            warn!(error = %e, "cannot read the watchdog boot status");
            BootStatus::Unknown
        }
        None => BootStatus::Unknown,
    };
    let resets = count_resets(&cfg.state_dir, boot);
    if boot == BootStatus::WatchdogReset {
        warn!(resets, "the last boot was a WATCHDOG RESET");
    } else {
        info!(boot = boot.as_str(), board = %board_name, "board started");
    }
    let wd = Arc::new(Mutex::new(WdShared {
        device: if external {
            "external (the watchdog daemon runs `holdline health`)".into()
        } else {
            "none".into()
        },
        timeout: None,
        feeding: false,
        last_fed: None,
    }));
    let (stop, stop_rx) = watch::channel(false);
    let mut armed: Option<(Box<dyn Watchdog>, Duration)> = None;
    if let (Some(mut dog), Some(timeout)) = (watchdog, timeout) {
        match dog.start(timeout) {
            Ok(took) => {
                info!(device = %dog.describe(), timeout_s = took.as_secs_f64(), "watchdog armed");
                let mut w = lock(&wd);
                w.device = dog.describe();
                w.timeout = Some(took);
                drop(w);
                armed = Some((dog, took));
            }
            Err(e) => {
                error!(error = %e, kind = ?e.kind(), "watchdog NOT armed");
                lock(&wd).device = format!("unavailable: {e}");
            }
        }
    }
    // systemd's own watchdog (WatchdogSec=) is fed by the same gate.
    let systemd = systemd_watchdog();
    let feed_every = [armed.as_ref().map(|(_, t)| *t), systemd]
        .into_iter()
        .flatten()
        .min()
        .map_or(Duration::from_secs(10), Supervisor::interval_for);
    let sup = Supervisor::new(health.clone(), feed_every);
    let feeder = Some(tokio::spawn(feed(
        armed.map(|(dog, _)| dog),
        systemd.is_some(),
        sup,
        Arc::clone(&wd),
        stop_rx.clone(),
    )));

    // LEDs and button.
    let (lights, lights_rx) = watch::channel(Lights {
        cloud: CloudLight::Unknown,
        fault: boot == BootStatus::WatchdogReset,
    });
    let led_report = Arc::new(Mutex::new(Vec::new()));
    let (reset_tx, reset_rx) = mpsc::channel(1);
    let mut others = vec![tokio::spawn(lights_task(
        leds,
        button,
        ButtonTracker::new(long_press),
        health.clone(),
        lights_rx,
        Arc::clone(&led_report),
        reset_tx,
        stop_rx.clone(),
    ))];

    // Serial console.
    if let Some(serial_cfg) = cfg.serial.clone() {
        let handle = health.register(tasks::CONSOLE, cfg.console_deadline, Instant::now());
        let exec = HealthExec {
            inner: console,
            handle,
        };
        others.push(tokio::spawn(console_task(
            serial_profile,
            cfg.state_dir.clone(),
            serial_cfg,
            exec,
        )));
    }

    Ok(Hw {
        health,
        boot,
        resets,
        board: board_name,
        lights,
        leds: led_report,
        wd,
        factory_reset: Some(reset_rx),
        sim_pins,
        stop,
        feeder,
        others,
    })
}

async fn feed(
    mut dog: Option<Box<dyn Watchdog>>,
    systemd: bool,
    mut sup: Supervisor,
    wd: Arc<Mutex<WdShared>>,
    mut stop: watch::Receiver<bool>,
) {
    let tick = (sup.feed_every() / 2).max(Duration::from_millis(50));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => {
                if let Some(dog) = dog.as_mut() {
                    match dog.stop() {
                        Ok(()) => info!("watchdog disarmed (deliberate shutdown)"),
                        Err(e) => error!(error = %e, "watchdog magic close failed"),
                    }
                }
                lock(&wd).feeding = false;
                return;
            }
        }
        let now = Instant::now();
        match sup.tick(now) {
            Decision::Feed => {
                let fed = match dog.as_mut().map(|d| d.keepalive()) {
                    Some(Err(e)) => {
                        error!(error = %e, "watchdog keepalive failed");
                        false
                    }
                    Some(Ok(())) => true,
                    None => false,
                };
                if systemd {
                    sd_notify("WATCHDOG=1");
                }
                sup.fed(now);
                let mut w = lock(&wd);
                w.feeding = true;
                if fed {
                    w.last_fed = Some(now);
                }
            }
            Decision::Wait => {}
            Decision::Withhold { stale, first } => {
                lock(&wd).feeding = false;
                if first {
                    error!(
                        stale = %stale.join(","),
                        "critical task(s) stopped checking in: NOT feeding the watchdog"
                    );
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn lights_task(
    mut leds: holdline_board::Leds,
    mut button: Option<holdline_board::Button>,
    mut tracker: ButtonTracker,
    health: Health,
    lights: watch::Receiver<Lights>,
    report: Arc<Mutex<Vec<LedReport>>>,
    reset_tx: mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(leds::TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut phase: u32 = 0;
    let mut led_error_logged = false;
    let mut button_error_logged = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        if let Some(b) = button.as_mut() {
            match b.is_pressed() {
                Ok(pressed) => match tracker.sample(pressed, now) {
                    Some(ButtonEvent::LongPress) => {
                        warn!("reset button held: factory reset requested");
                        let _ = reset_tx.try_send(());
                    }
                    Some(ButtonEvent::ShortPress { held }) => {
                        info!(
                            held_ms = held.as_millis() as u64,
                            "reset button: short press, ignored"
                        );
                    }
                    None => {}
                },
                Err(e) if !button_error_logged => {
                    button_error_logged = true;
                    warn!(error = %e, "cannot read the reset button");
                }
                Err(_) => {}
            }
        }
        let hr = health.report(now);
        let l = *lights.borrow();
        let ind = Indication {
            health: if hr.tasks.is_empty() {
                HealthLight::Starting
            } else if hr.all_fresh() {
                HealthLight::Healthy
            } else {
                HealthLight::Unhealthy
            },
            cloud: l.cloud,
            fault: l.fault,
            button_long_press: tracker.long_press_held(),
        };
        match leds.show(&ind, phase) {
            Ok(_) => *lock(&report) = leds.report(),
            Err(e) if !led_error_logged => {
                led_error_logged = true;
                warn!(error = %e, "cannot drive the LEDs");
            }
            Err(_) => {}
        }
        phase = phase.wrapping_add(1);
    }
}

/// The daemon's [`Exec`], checking in as the "console" critical task.
struct HealthExec<E> {
    inner: E,
    handle: TaskHandle,
}

impl<E: Exec> Exec for HealthExec<E> {
    async fn run(&mut self, line: &str) -> Reply {
        let reply = self.inner.run(line).await;
        self.handle.check_in(Instant::now());
        reply
    }
    fn prompt(&mut self) -> PromptInfo {
        self.handle.check_in(Instant::now());
        self.inner.prompt()
    }
    fn heartbeat(&mut self) {
        self.handle.check_in(Instant::now());
        self.inner.heartbeat();
    }
}

async fn console_task<E: Exec>(
    serial: holdline_board::profile::SerialConfig,
    state_dir: PathBuf,
    cfg: SerialConfig,
    mut exec: HealthExec<E>,
) {
    let mut logged = false;
    loop {
        exec.heartbeat();
        match ConsolePort::open(&serial, &state_dir) {
            Ok(Some(port)) => {
                info!(port = %port.describe(), "serial console up");
                logged = false;
                if let Err(e) = holdline_console::serial::serve(port, &cfg, &mut exec).await {
                    warn!(error = %e, "serial console stopped; reopening");
                }
            }
            Ok(None) => {
                info!("this board has no serial console");
                exec.handle.retire();
                return;
            }
            Err(e) if !logged => {
                logged = true;
                warn!(error = %e, "cannot open the serial console; retrying");
            }
            Err(_) => {}
        }
        // Keep checking in while the port is away: its absence is not a hang.
        for _ in 0..10 {
            exec.heartbeat();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Hw {
    /// The registry the daemon's critical tasks register with.
    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn boot_status(&self) -> BootStatus {
        self.boot
    }

    /// Watchdog resets over the appliance's life (including this boot's).
    pub fn watchdog_resets(&self) -> u64 {
        self.resets
    }

    pub fn board_name(&self) -> &str {
        &self.board
    }

    /// The cloud state the LEDs show.
    pub fn set_cloud(&self, cloud: CloudLight) {
        self.lights.send_modify(|l| l.cloud = cloud);
    }

    /// Lights (or clears) the fault LED (store damaged, last boot a reset...).
    pub fn set_fault(&self, on: bool) {
        self.lights.send_modify(|l| l.fault = on);
    }

    /// `show health`: tasks and watchdog; `Display` gives ≤ 80-column text
    /// whose first line [`health_ok`] reads.
    pub fn health_report(&self) -> Report {
        let now = Instant::now();
        let mut report = self.health.report(now);
        let w = lock(&self.wd);
        report.watchdog = Some(WatchdogStatus {
            device: w.device.clone(),
            timeout: w.timeout,
            feeding: w.feeding,
            last_fed: w.last_fed.map(|t| now.saturating_duration_since(t)),
            boot: self.boot.as_str().to_string(),
            resets: self.resets,
        });
        report
    }

    /// `show leds`: what each LED shows.
    pub fn leds(&self) -> Vec<LedReport> {
        lock(&self.leds).clone()
    }

    /// `show leds` as text (≤ 80 columns).
    pub fn leds_text(&self) -> String {
        let mut out = format!("{:<10} {:<11} {}\n", "led", "pattern", "now");
        for led in self.leds() {
            out.push_str(&format!(
                "{:<10} {:<11} {}\n",
                led.name,
                led.pattern.as_str(),
                if led.lit { "lit" } else { "dark" }
            ));
        }
        out
    }

    /// The simulated pins (pins of kind `sim` in the profile), for tests
    /// that watch the LEDs or press the button.
    pub fn sim_pins(&self) -> SimPins {
        self.sim_pins.clone()
    }

    /// Long presses of the reset button (taken once; the daemon performs
    /// the factory reset).
    pub fn factory_reset_requests(&mut self) -> Option<mpsc::Receiver<()>> {
        self.factory_reset.take()
    }

    /// Deliberate shutdown: stops the tasks and disarms the watchdog with
    /// the magic close. Not for crashes: those must end in a reset.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(feeder) = self.feeder.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), feeder).await;
        }
        for task in self.others.drain(..) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Canned;

    impl Exec for Canned {
        async fn run(&mut self, line: &str) -> Reply {
            Reply::ok(format!("ran {line}"))
        }
        fn prompt(&mut self) -> PromptInfo {
            PromptInfo {
                site: "test".into(),
                cloud: "up".into(),
            }
        }
    }

    fn state_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("holdline-hw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn health_verdict_and_cloud_names() {
        assert!(health_ok("health: ok\ntask ..."));
        assert!(!health_ok("health: STALE (sip)\n"));
        assert!(!health_ok(""));
        assert_eq!(cloud_light("up"), CloudLight::Up);
        assert_eq!(cloud_light("down"), CloudLight::Survival);
        assert_eq!(cloud_light("recovering"), CloudLight::Recovering);
        assert_eq!(cloud_light("?"), CloudLight::Unknown);
    }

    #[test]
    fn notifications_reach_a_systemd_style_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = state_dir("notify");
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        // Abstract sockets (`@name`) too.
        let name = format!("holdline-test-{}", std::process::id());
        let abs = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let listener = UnixDatagram::bind_addr(&abs).unwrap();
        notify_to(std::ffi::OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn reset_counter_counts_only_watchdog_resets() {
        let dir = state_dir("count");
        assert_eq!(count_resets(&dir, BootStatus::PowerOn), 0);
        assert_eq!(count_resets(&dir, BootStatus::WatchdogReset), 1);
        assert_eq!(count_resets(&dir, BootStatus::WatchdogReset), 2);
        assert_eq!(count_resets(&dir, BootStatus::PowerOn), 2);
    }

    /// A critical task that stops checking in stops the feeding; the
    /// simulated watchdog fires (here it notifies instead of exiting 75),
    /// and the next start reports and counts the watchdog reset.
    #[tokio::test]
    async fn stalled_task_stops_feeding_and_next_start_reports_reset() {
        let dir = state_dir("stall");
        let profile = dir.join("fast-sim.toml");
        let text = holdline_board::profile::BUILTIN
            .iter()
            .find(|(n, _)| *n == "sim")
            .unwrap()
            .1
            .replace("timeout_secs = 10", "timeout_secs = 3")
            .replace("kind = \"pty\"\nlink = \"console.pty\"", "kind = \"none\"");
        std::fs::write(&profile, text).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut cfg = HwConfig::new(profile.to_str().unwrap(), &dir);
        cfg.sim_expiry = Expiry::Notify(tx);
        cfg.health.fault_injection = true;
        let hw = start(cfg.clone(), Canned).await.unwrap();
        let sip = hw
            .health()
            .register(tasks::SIP, Duration::from_secs(2), Instant::now());
        // Healthy for a while: fed, not fired.
        for _ in 0..10 {
            sip.check_in(Instant::now());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(rx.try_recv().is_err(), "fed watchdog fired");
        assert!(health_ok(&hw.health_report().to_string()));
        // The SIP loop hangs.
        hw.health().inject_stall(tasks::SIP).unwrap();
        let fired = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap();
        assert!(fired.is_ok(), "the watchdog fired");
        let text = hw.health_report().to_string();
        assert!(text.starts_with("health: STALE (sip)"), "{text}");
        assert!(text.contains("feeding NO"), "{text}");
        drop(hw);
        // "Reboot": the next start reports and counts it.
        let (tx2, _rx2) = std::sync::mpsc::channel();
        cfg.sim_expiry = Expiry::Notify(tx2);
        let hw = start(cfg, Canned).await.unwrap();
        assert_eq!(hw.boot_status(), BootStatus::WatchdogReset);
        assert_eq!(hw.watchdog_resets(), 1);
        assert!(hw
            .health_report()
            .to_string()
            .contains("last boot: watchdog reset  watchdog resets: 1"));
        hw.shutdown().await;
    }

    /// Waits (bounded) until `cond` holds.
    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..300 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("never happened: {what}");
    }

    /// The LED task shows each cloud state on the simulated pins, and the
    /// reset button: a short press is harmless, a long one asks for a
    /// factory reset.
    #[tokio::test]
    async fn leds_follow_cloud_state_and_button_long_press_requests_reset() {
        let dir = state_dir("leds");
        let profile = dir.join("sim-quick-button.toml");
        let text = holdline_board::profile::BUILTIN
            .iter()
            .find(|(n, _)| *n == "sim")
            .unwrap()
            .1
            .replace("long_press_secs = 10", "long_press_secs = 3")
            .replace("kind = \"pty\"\nlink = \"console.pty\"", "kind = \"none\"");
        std::fs::write(&profile, text).unwrap();
        let mut hw = start(HwConfig::new(profile.to_str().unwrap(), &dir), Canned)
            .await
            .unwrap();
        let pins = hw.sim_pins();
        let sip = hw
            .health()
            .register(tasks::SIP, Duration::from_secs(30), Instant::now());
        sip.check_in(Instant::now());
        eventually("status LED on when healthy", || pins.status.level()).await;

        hw.set_cloud(CloudLight::Up);
        eventually("up: green on, amber off", || {
            pins.cloud.level() && !pins.cloud_alt.level()
        })
        .await;
        hw.set_cloud(CloudLight::Survival);
        eventually("survival: green off, amber on", || {
            !pins.cloud.level() && pins.cloud_alt.level()
        })
        .await;
        hw.set_cloud(CloudLight::Recovering);
        let before = pins.cloud.history().len();
        eventually("recovering: green blinks, amber off", || {
            pins.cloud.history().len() >= before + 4 && !pins.cloud_alt.level()
        })
        .await;
        hw.set_fault(true);
        eventually("fault LED on", || pins.fault.level()).await;
        assert!(
            hw.leds_text().contains("fault      on"),
            "{}",
            hw.leds_text()
        );

        let mut resets = hw.factory_reset_requests().unwrap();
        // Short press: nothing.
        pins.button.set_level(true);
        tokio::time::sleep(Duration::from_millis(300)).await;
        pins.button.set_level(false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(resets.try_recv().is_err(), "short press must be harmless");
        // Long press: one request.
        pins.button.set_level(true);
        let got = tokio::time::timeout(Duration::from_secs(30), resets.recv()).await;
        assert_eq!(got.unwrap(), Some(()));
        pins.button.set_level(false);
        hw.shutdown().await;
    }

    #[tokio::test]
    async fn sim_board_feeds_shows_health_and_leds_then_shuts_down() {
        let dir = state_dir("start");
        let mut cfg = HwConfig::new("sim", &dir);
        cfg.serial = Some(SerialConfig::new(holdline_console::serial::Login::Open));
        let mut hw = start(cfg, Canned).await.unwrap();
        assert_eq!(hw.boot_status(), BootStatus::PowerOn);
        let sip = hw
            .health()
            .register(tasks::SIP, Duration::from_secs(5), Instant::now());
        sip.check_in(Instant::now());
        hw.set_cloud(CloudLight::Survival);
        // The pty link appears once the console task runs.
        let link = dir.join("console.pty");
        let mut ok = false;
        for _ in 0..100 {
            let text = hw.health_report().to_string();
            if link.exists() && hw.leds().len() == 4 && text.contains("feeding yes") {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = hw.health_report().to_string();
        assert!(ok, "{text}\n{}", hw.leds_text());
        assert!(health_ok(&text), "{text}");
        assert!(text.contains("console"));
        let leds = hw.leds_text();
        assert!(leds.contains("cloud-alt  on"), "{leds}");
        assert!(hw.factory_reset_requests().is_some());
        hw.shutdown().await;
        // A deliberate stop leaves no reset behind.
        assert!(!dir
            .join(holdline_board::watchdog::sim::MARKER_FILE)
            .exists());
    }
}
