//! Field-technician actions (fieldtech helper): the bodies of the console
//! commands `reboot`, `factory-reset` and `debug stall sip|store|uplink`,
//! the reset button's long press, and the store event for a watchdog-reset
//! boot. The daemon owns the loop and calls in (see requests.md,
//! "fieldtech → daemon"); everything here runs on the loop or after it.
//!
//! The serial console asks "Type 'yes'" before `reboot` and `factory-reset`
//! (holdline-console's serial layer); the Unix socket (`holdline console
//! reboot`) does not: it is the administrator's scripted path, guarded by
//! the socket's file permissions.
//!
//! ## Reboot (`reboot`, confirmed on the serial console)
//! The command is answered at once; the loop keeps running for [`DRAIN`] so
//! the answer reaches the terminal ([`FieldTech::should_stop`]), then the
//! daemon shuts down cleanly (store flushed, watchdog disarmed with the
//! magic close, so this is *not* counted as a watchdog reset) and calls
//! [`FieldTech::finish`]:
//! - simulated board: exit [`Exit::Restart`] (8); the supervisor (systemd,
//!   `holdline-image sim-run`, a test) starts holdline again: that is the reboot;
//! - real boards: `systemctl reboot`, then exit 0. If systemctl fails, exit 8
//!   so that systemd at least restarts the daemon.
//!
//! ## Factory reset (`factory-reset`, confirmed; or a long button press)
//! Keeps nothing but the board identity. Precisely:
//! - **erased**: the store — `<store>`, `<store>-wal`, `-shm`, `-journal` and
//!   every copy an earlier damage set aside (`<store>.corrupt-*` with its
//!   side files): bindings, subscriptions, MWI, the event log, the
//!   quarantine. Removed, not set aside: a factory reset is also how a site's
//!   data leaves a returned appliance.
//! - **replaced**: the config file `holdline run --config` was started with
//!   becomes the image default for this board (the shipped
//!   `images/<board>/rootfs/etc/holdline/holdline.toml`, built in), with the
//!   running `[board] profile` kept. The new text is validated before it is
//!   written; nothing is written when it does not load.
//! - **kept (the identity)**: the board profile, the firmware slots and the
//!   update agent's state (`[update] state_dir`), the TLS certificate, key and
//!   token files under /etc/holdline, and the watchdog-reset counter
//!   (`<state_dir>/watchdog-resets`: hardware history, no site data).
//! - **where**: store files are looked for in the store's own directory only,
//!   by exact name, regular files only (never a symlink, never a directory,
//!   nothing recursive). On the simulated board, the config is replaced only
//!   when it lies inside the state dir (a developer's files elsewhere are
//!   never touched).
//! - **crash safety**: the erase happens after the clean shutdown (the store
//!   is closed). First the new config is written next to the old one
//!   (`<config>.factory.tmp`), then a marker `<state_dir>/factory-reset.pending`
//!   lists what is left to do; then the config is renamed into place and the
//!   files erased (WAL and side files before the database, so a stale WAL can
//!   never be replayed into a fresh database); then the marker is removed.
//!   [`resume_pending_reset`], called before the store opens, finishes an
//!   interrupted reset.
//! - afterwards the appliance reboots as for `reboot`.
//!
//! ## Fault injection (`debug stall sip|store|uplink`)
//! Refused unless `[health] fault_injection = true` (off by default; tests
//! only). Calls [`holdline_health::Health::inject_stall`]: the task's
//! check-ins are ignored, the watchdog stops being fed and fires (the
//! simulated one exits 75); the next start reports the watchdog reset.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdline_console::command::Command;
use holdline_console::render::{Answer, Block};
use holdline_health::tasks;
use holdline_store::{Event, Store, Write};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::exit::Exit;
use crate::hw::Hw;

/// How long the loop keeps serving after a reboot/factory-reset answer, so
/// the answer reaches the socket client or the serial terminal.
pub const DRAIN: Duration = Duration::from_millis(500);

/// The marker of a factory reset in progress, in the state dir.
pub const MARKER: &str = "factory-reset.pending";

/// The tasks `debug stall` accepts.
const STALLABLE: [&str; 3] = [tasks::SIP, tasks::STORE, tasks::UPLINK];

/// The image default configs, by board name (`[board] name` of the profile).
const IMAGE_DEFAULTS: [(&str, &str); 3] = [
    (
        "sim",
        include_str!("../../../images/sim/rootfs/etc/holdline/holdline.toml"),
    ),
    (
        "apu2",
        include_str!("../../../images/apu2/rootfs/etc/holdline/holdline.toml"),
    ),
    (
        "cm4-box",
        include_str!("../../../images/cm4-box/rootfs/etc/holdline/holdline.toml"),
    ),
];

/// What the appliance does once the loop has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Restart (sim) or reboot the machine (real boards).
    Reboot,
    /// Erase per the module's rule, then reboot.
    FactoryReset,
}

/// A factory reset that could not be done (the appliance still reboots).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// A file operation failed.
    #[error("factory reset: {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The image default config would not load with the kept identity.
    #[error("factory reset: the image default config for board {board} does not load: {msg}")]
    BadDefault {
        /// Board name.
        board: String,
        /// The config error.
        msg: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FieldError {
    let path = path.to_path_buf();
    move |source| FieldError::Io {
        action,
        path,
        source,
    }
}

/// The directory holding the store (and the board's state), as the daemon
/// computes it for `hw::start`.
pub fn state_dir(cfg: &Config) -> PathBuf {
    cfg.store
        .path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The config file this process was started with (`holdline run --config
/// FILE`, `-c FILE`, `--config=FILE`, `-cFILE`); None on built-in defaults.
pub fn own_config_path() -> Option<PathBuf> {
    config_path_in(std::env::args_os().skip(1))
}

fn config_path_in(args: impl Iterator<Item = std::ffi::OsString>) -> Option<PathBuf> {
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" || s == "-c" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
        if let Some(v) = s.strip_prefix("-c").filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(v.strip_prefix('=').unwrap_or(v)));
        }
    }
    None
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn event(kind: &str, detail: String) -> Write {
    Write::Event(Event {
        at: unix_now(),
        kind: kind.to_string(),
        detail,
    })
}

/// Writes an event without waiting for it (the log is best effort).
fn log_event(store: &Store, kind: &str, detail: String) {
    drop(store.commit(vec![event(kind, detail)]));
}

/// The daemon's field-tech state: which action is pending and what a
/// factory reset needs to know.
#[derive(Debug)]
pub struct FieldTech {
    state_dir: PathBuf,
    store_path: PathBuf,
    config_path: Option<PathBuf>,
    profile: String,
    board: String,
    sim: bool,
    pending: Option<(Action, Instant)>,
}

impl FieldTech {
    /// After `hw::start`. `config_path`: see [`own_config_path`].
    pub fn new(cfg: &Config, config_path: Option<PathBuf>, hw: &Hw) -> Self {
        let board = hw.board_name().to_string();
        FieldTech {
            state_dir: state_dir(cfg),
            store_path: cfg.store.path.clone(),
            config_path,
            profile: cfg.board.profile.clone(),
            sim: board == "sim",
            board,
            pending: None,
        }
    }

    /// Writes the boot's events: a `watchdog.reset` event when the last boot
    /// ended in a watchdog reset (with the life-time count).
    pub fn record_boot(&self, hw: &Hw, store: &Store) {
        if hw.boot_status() == holdline_board::BootStatus::WatchdogReset {
            log_event(
                store,
                "watchdog.reset",
                format!(
                    "the last boot ended in a watchdog reset ({} in all)",
                    hw.watchdog_resets()
                ),
            );
        }
    }

    /// Answers the field-tech commands (`reboot`, `factory-reset`, `debug
    /// ...`); None for every other command. Call on the loop.
    pub fn answer(&mut self, cmd: &Command, hw: &Hw, store: &Store) -> Option<Answer> {
        match cmd {
            Command::Reboot => Some(self.request(Action::Reboot, "console", store)),
            Command::FactoryReset => Some(self.request(Action::FactoryReset, "console", store)),
            Command::Unknown(line) => debug_command(line, hw),
            _ => None,
        }
    }

    /// The reset button was held (long press): the same factory reset.
    pub fn button_long_press(&mut self, store: &Store) {
        warn!("reset button held: factory reset");
        let _ = self.request(Action::FactoryReset, "button", store);
    }

    fn request(&mut self, action: Action, by: &str, store: &Store) -> Answer {
        if let Some((pending, _)) = self.pending {
            return Answer::error(format!("{} already in progress", action_name(pending)));
        }
        self.pending = Some((action, Instant::now()));
        let then = if self.sim {
            "restarting (simulated board: exit 8, the supervisor starts holdline again)"
        } else {
            "rebooting"
        };
        let lines = match action {
            Action::Reboot => {
                warn!(by, "reboot requested");
                log_event(store, "reboot", format!("requested by the {by}"));
                vec![format!("reboot: clean shutdown, then {then}")]
            }
            Action::FactoryReset => {
                warn!(by, "factory reset requested");
                log_event(store, "factory_reset", format!("requested by the {by}"));
                vec![
                    "factory reset: erasing the store and restoring the default config".into(),
                    format!("(board {} is kept), then {then}", self.board),
                ]
            }
        };
        Answer::ok(vec![Block::Lines {
            name: action_name(action),
            lines,
        }])
    }

    /// `Some(exit)` once a requested action has been pending for [`DRAIN`]:
    /// the loop should stop (with that exit; [`FieldTech::finish`] turns it
    /// into the final one).
    pub fn should_stop(&self) -> Option<Exit> {
        match self.pending {
            Some((_, since)) if since.elapsed() >= DRAIN => Some(Exit::Ok),
            _ => None,
        }
    }

    /// Call after the clean shutdown (store dropped): performs the pending
    /// action and returns the process's exit; `exit` unchanged when none.
    pub async fn finish(self, exit: Exit) -> Exit {
        let Some((action, _)) = self.pending else {
            return exit;
        };
        if action == Action::FactoryReset {
            let plan = self.reset_plan();
            match tokio::task::spawn_blocking(move || factory_reset(&plan)).await {
                Ok(Ok(report)) => info!(
                    erased = report.erased,
                    config = report.config.as_str(),
                    "factory reset done"
                ),
                Ok(Err(e)) => error!(error = %e, "factory reset incomplete"),
                Err(e) => error!(error = %e, "factory reset task failed"),
            }
        }
        if self.sim {
            info!("simulated board: exiting for a restart");
            return Exit::Restart;
        }
        let rebooted = tokio::task::spawn_blocking(|| {
            std::process::Command::new("systemctl")
                .arg("reboot")
                .status()
        })
        .await;
        match rebooted {
            Ok(Ok(s)) if s.success() => Exit::Ok,
            other => {
                error!(result = ?other, "systemctl reboot failed; exiting for a restart");
                Exit::Restart
            }
        }
    }

    fn reset_plan(&self) -> ResetPlan {
        ResetPlan {
            state_dir: self.state_dir.clone(),
            store: self.store_path.clone(),
            config: self.config_path.clone(),
            board: self.board.clone(),
            profile: self.profile.clone(),
            sim: self.sim,
        }
    }
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Reboot => "reboot",
        Action::FactoryReset => "factory-reset",
    }
}

/// `debug stall sip|store|uplink`: None when the line is not a `debug` command.
fn debug_command(line: &str, hw: &Hw) -> Option<Answer> {
    let words: Vec<String> = line
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    if words.first().map(String::as_str) != Some("debug") {
        return None;
    }
    let usage = || Answer::error("usage: debug stall sip|store|uplink");
    let task = match words.as_slice() {
        [_, stall, task] if stall == "stall" => task.as_str(),
        _ => return Some(usage()),
    };
    let Some(task) = STALLABLE.iter().find(|t| **t == task) else {
        return Some(usage());
    };
    Some(match hw.health().inject_stall(task) {
        Ok(()) => {
            warn!(task, "fault injection: task stalled on request");
            Answer::ok(vec![Block::Lines {
                name: "debug",
                lines: vec![
                    format!("{task} stalled: its check-ins are ignored from now on;"),
                    "the watchdog stops being fed once it is stale, then fires".into(),
                ],
            }])
        }
        Err(holdline_health::FaultError::Disabled) => {
            Answer::error("refused: fault injection is off ([health] fault_injection = false)")
        }
        Err(e) => Answer::error(e.to_string()),
    })
}

/// What a factory reset works on.
#[derive(Debug, Clone)]
pub struct ResetPlan {
    /// The board's state dir (marker goes here).
    pub state_dir: PathBuf,
    /// `[store] path`.
    pub store: PathBuf,
    /// The config file, if the daemon runs from one.
    pub config: Option<PathBuf>,
    /// Board name (selects the image default config).
    pub board: String,
    /// `[board] profile` to keep.
    pub profile: String,
    /// Simulated board: touch nothing outside the state dir.
    pub sim: bool,
}

/// What a factory reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Store files removed.
    pub erased: usize,
    /// What happened to the config.
    pub config: String,
}

/// The store's files to erase, side files first, the database last.
fn store_files(store: &Path) -> Vec<PathBuf> {
    let Some(dir) = store.parent().map(|p| {
        if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        }
    }) else {
        return Vec::new();
    };
    let Some(name) = store.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let sides = ["-wal", "-shm", "-journal"];
    let mut side_files = Vec::new();
    let mut mains = Vec::new();
    let aside = format!("{name}.corrupt-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Some(n) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let is_file =
                std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.file_type().is_file());
            if !is_file {
                continue;
            }
            let base = sides
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(&n)
                .to_string();
            if base != name && !base.starts_with(&aside) {
                continue;
            }
            if base == n {
                mains.push(dir.join(&n));
            } else {
                side_files.push(dir.join(&n));
            }
        }
    }
    side_files.sort();
    // Set-aside copies before the live database.
    mains.sort_by_key(|p| p.file_name().and_then(|n| n.to_str()) == Some(name));
    side_files.extend(mains);
    side_files
}

/// The image default for `board` with `[board] profile` set to `profile`,
/// validated; None when there is no image for that board.
pub fn image_default(board: &str, profile: &str) -> Option<Result<String, FieldError>> {
    let (_, text) = IMAGE_DEFAULTS.iter().find(|(b, _)| *b == board)?;
    let mut out = String::with_capacity(text.len());
    let mut in_board = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_board = t == "[board]";
        }
        if in_board && t.starts_with("profile") && t.contains('=') {
            out.push_str(&format!("profile = {}\n", toml_string(profile)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    Some(
        match Config::parse(&out, Path::new("image default")) {
            Ok(c) if c.board.profile == profile => Ok(out),
            Ok(_) => Err("[board] profile not kept".to_string()),
            Err(e) => Err(e.to_string()),
        }
        .map_err(|msg| FieldError::BadDefault {
            board: board.to_string(),
            msg,
        }),
    )
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn inside(path: &Path, dir: &Path) -> bool {
    match (
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .canonicalize(),
        dir.canonicalize(),
    ) {
        (Ok(p), Ok(d)) => p.starts_with(d),
        _ => false,
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn write_synced(path: &Path, text: &str) -> Result<(), FieldError> {
    let mut f = std::fs::File::create(path).map_err(io_err("creating", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("writing", path))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn remove_if_present(path: &Path) -> Result<bool, FieldError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FieldError::Io {
            action: "removing",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Performs a factory reset per the module's rule (blocking; the store must
/// be closed).
pub fn factory_reset(plan: &ResetPlan) -> Result<ResetReport, FieldError> {
    // 1. The new config, next to the old one.
    let mut config_note = "no config file (built-in defaults): nothing to restore".to_string();
    let mut config_move: Option<(PathBuf, PathBuf)> = None;
    if let Some(cfg) = &plan.config {
        if plan.sim && !inside(cfg, &plan.state_dir) {
            config_note = format!(
                "simulated board: {} is outside the state dir; left alone",
                cfg.display()
            );
        } else {
            match image_default(&plan.board, &plan.profile) {
                None => {
                    config_note = format!("no image default for board {}: kept", plan.board);
                }
                Some(text) => {
                    // A config that cannot be restored (read-only file
                    // system, bad default) must not keep the store alive.
                    let tmp = with_suffix(cfg, ".factory.tmp");
                    match text.and_then(|t| write_synced(&tmp, &t)) {
                        Ok(()) => {
                            config_move = Some((tmp, cfg.clone()));
                            config_note =
                                format!("{} restored to the image default", cfg.display());
                        }
                        Err(e) => {
                            error!(error = %e, "factory reset: config NOT restored");
                            config_note = format!("config NOT restored: {e}");
                        }
                    }
                }
            }
        }
    }
    // 2. The marker: what is left to do, resumable.
    let files = store_files(&plan.store);
    let mut marker = String::new();
    if let Some((tmp, cfg)) = &config_move {
        marker.push_str(&format!("config {}\n", cfg.display()));
        marker.push_str(&format!("config-tmp {}\n", tmp.display()));
    }
    for f in &files {
        marker.push_str(&format!("erase {}\n", f.display()));
    }
    let marker_path = plan.state_dir.join(MARKER);
    let marker_tmp = with_suffix(&marker_path, ".tmp");
    write_synced(&marker_tmp, &marker)?;
    std::fs::rename(&marker_tmp, &marker_path).map_err(io_err("renaming", &marker_tmp))?;
    sync_dir(&plan.state_dir);
    // 3. Do it.
    let erased = apply_marker(&plan.state_dir, &marker)?;
    Ok(ResetReport {
        erased,
        config: config_note,
    })
}

/// Carries out a marker's steps, then removes the marker. Only paths in the
/// state dir or the marker's own config are touched.
fn apply_marker(state_dir: &Path, marker: &str) -> Result<usize, FieldError> {
    let (mut config, mut tmp) = (None, None);
    let mut erase = Vec::new();
    for line in marker.lines() {
        match line.split_once(' ') {
            Some(("config", p)) => config = Some(PathBuf::from(p)),
            Some(("config-tmp", p)) => tmp = Some(PathBuf::from(p)),
            Some(("erase", p)) => erase.push(PathBuf::from(p)),
            _ => warn!(line, "factory reset marker: line ignored"),
        }
    }
    if let (Some(cfg), Some(tmp)) = (config, tmp) {
        if tmp == with_suffix(&cfg, ".factory.tmp") && tmp.exists() {
            std::fs::rename(&tmp, &cfg).map_err(io_err("renaming", &tmp))?;
            if let Some(d) = cfg.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(d);
            }
        }
    }
    let mut erased = 0;
    for f in erase {
        let regular = std::fs::symlink_metadata(&f).is_ok_and(|m| m.file_type().is_file());
        if !regular || !inside(&f, state_dir) {
            continue;
        }
        if remove_if_present(&f)? {
            erased += 1;
        }
    }
    sync_dir(state_dir);
    remove_if_present(&state_dir.join(MARKER))?;
    Ok(erased)
}

/// Before the store opens: finishes a factory reset that a crash or power
/// loss interrupted. `Ok(true)` when one was finished (the config may have
/// changed: restart to load it).
pub fn resume_pending_reset(cfg: &Config) -> Result<bool, FieldError> {
    let dir = state_dir(cfg);
    let marker_path = dir.join(MARKER);
    let marker = match std::fs::read_to_string(&marker_path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(FieldError::Io {
                action: "reading",
                path: marker_path,
                source: e,
            })
        }
    };
    warn!("an interrupted factory reset is being finished");
    apply_marker(&dir, &marker)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("holdline-fieldtech-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    struct NoConsole;

    impl holdline_console::serial::Exec for NoConsole {
        async fn run(&mut self, _line: &str) -> holdline_console::serial::Reply {
            holdline_console::serial::Reply::error("no console in this test")
        }
        fn prompt(&mut self) -> holdline_console::serial::PromptInfo {
            holdline_console::serial::PromptInfo {
                site: "test".into(),
                cloud: "up".into(),
            }
        }
    }

    /// A sim board with a 1 s long press and no serial console, its store
    /// and config in `d` (the state dir).
    async fn sim_appliance(d: &Path, fault_injection: bool) -> (Hw, Store, Config) {
        let profile = d.join("sim-test.toml");
        let text = holdline_board::profile::BUILTIN
            .iter()
            .find(|(n, _)| *n == "sim")
            .unwrap()
            .1
            .replace("long_press_secs = 10", "long_press_secs = 1")
            .replace("kind = \"pty\"\nlink = \"console.pty\"", "kind = \"none\"");
        std::fs::write(&profile, text).unwrap();
        let mut cfg = Config::default();
        cfg.store.path = d.join("holdline.db");
        cfg.board.profile = profile.to_str().unwrap().to_string();
        cfg.health.fault_injection = fault_injection;
        let mut hw_cfg = crate::hw::HwConfig::new(cfg.board.profile.clone(), state_dir(&cfg));
        hw_cfg.health.fault_injection = fault_injection;
        let hw = crate::hw::start(hw_cfg, NoConsole).await.unwrap();
        let (store, _) = Store::open(&cfg.store.path, Default::default()).unwrap();
        (hw, store, cfg)
    }

    #[tokio::test]
    async fn debug_stall_needs_fault_injection_and_a_known_task() {
        let d = dir("debug");
        let (hw, store, cfg) = sim_appliance(&d, false).await;
        let sip = hw
            .health()
            .register(tasks::SIP, Duration::from_secs(30), Instant::now());
        let mut field = FieldTech::new(&cfg, None, &hw);
        let cmd = |s: &str| Command::Unknown(s.to_string());
        let a = field.answer(&cmd("debug stall sip"), &hw, &store).unwrap();
        assert!(!a.ok);
        assert!(a.text().contains("fault injection is off"), "{}", a.text());
        assert!(!sip.stall_requested());
        assert!(field.answer(&cmd("frobnicate"), &hw, &store).is_none());
        assert!(field.answer(&Command::Status, &hw, &store).is_none());
        hw.shutdown().await;

        let d = dir("debug-on");
        let (hw, store, cfg) = sim_appliance(&d, true).await;
        let sip = hw
            .health()
            .register(tasks::SIP, Duration::from_secs(30), Instant::now());
        let mut field = FieldTech::new(&cfg, None, &hw);
        for bad in [
            "debug",
            "debug stall",
            "debug stall console",
            "debug stall sip now",
        ] {
            let a = field.answer(&cmd(bad), &hw, &store).unwrap();
            assert!(
                a.text().contains("usage: debug stall"),
                "{bad}: {}",
                a.text()
            );
        }
        assert!(!sip.stall_requested());
        let a = field.answer(&cmd("DEBUG Stall SIP"), &hw, &store).unwrap();
        assert!(a.ok, "{}", a.text());
        assert!(sip.stall_requested());
        // Nothing is pending: the appliance keeps running until the watchdog.
        assert_eq!(field.should_stop(), None);
        hw.shutdown().await;
    }

    /// The reset button held (sim pin): the daemon's receiver gets a
    /// request, the same factory reset follows: the loop is told to stop
    /// after the drain time, and `finish` erases the store, restores the
    /// config and exits for a restart (sim).
    #[tokio::test]
    async fn a_long_button_press_performs_the_factory_reset() {
        let d = dir("button");
        let (mut hw, store, cfg) = sim_appliance(&d, false).await;
        let config = d.join("holdline.toml");
        std::fs::write(&config, "[cloud]\ndomain = \"site.example\"\n").unwrap();
        store
            .commit_blocking(vec![event("test", "site data".into())])
            .unwrap();
        let mut field = FieldTech::new(&cfg, Some(config.clone()), &hw);
        let mut presses = hw.factory_reset_requests().unwrap();
        hw.sim_pins().button.set_level(true);
        let got = tokio::time::timeout(Duration::from_secs(30), presses.recv()).await;
        assert_eq!(got.unwrap(), Some(()));
        hw.sim_pins().button.set_level(false);
        field.button_long_press(&store);
        // A second request while one is pending is refused.
        let again = field.answer(&Command::Reboot, &hw, &store).unwrap();
        assert!(!again.ok, "{}", again.text());
        while field.should_stop().is_none() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(store
            .events(10)
            .unwrap()
            .iter()
            .any(|e| e.event.kind == "factory_reset" && e.event.detail.contains("button")));
        hw.shutdown().await;
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .unwrap();
        assert_eq!(field.finish(Exit::Ok).await, Exit::Restart);
        assert!(!d.join("holdline.db").exists());
        let restored = Config::load(&config).unwrap();
        assert_eq!(restored.cloud.domain, "cloud.test");
        assert_eq!(restored.board.profile, cfg.board.profile);
        assert!(d.join("sim-test.toml").exists());
    }

    #[tokio::test]
    async fn a_watchdog_reset_boot_is_written_to_the_event_log() {
        let d = dir("boot-event");
        std::fs::write(
            d.join(holdline_board::watchdog::sim::MARKER_FILE),
            "simulated watchdog reset\n",
        )
        .unwrap();
        let (hw, store, cfg) = sim_appliance(&d, false).await;
        assert_eq!(hw.boot_status(), holdline_board::BootStatus::WatchdogReset);
        let field = FieldTech::new(&cfg, None, &hw);
        field.record_boot(&hw, &store);
        let mut found = false;
        for _ in 0..100 {
            let events = store.events(10).unwrap();
            if let Some(e) = events.iter().find(|e| e.event.kind == "watchdog.reset") {
                assert!(e.event.detail.contains("1 in all"), "{}", e.event.detail);
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(found, "no watchdog.reset event");
        hw.shutdown().await;
    }

    #[test]
    fn config_path_from_the_command_line() {
        let p = |v: &[&str]| config_path_in(v.iter().map(std::ffi::OsString::from));
        assert_eq!(p(&["run", "--config", "a.toml"]), Some("a.toml".into()));
        assert_eq!(p(&["run", "-c", "b.toml"]), Some("b.toml".into()));
        assert_eq!(p(&["run", "--config=c.toml"]), Some("c.toml".into()));
        assert_eq!(p(&["run", "-cd.toml"]), Some("d.toml".into()));
        assert_eq!(p(&["run"]), None);
        assert_eq!(p(&["run", "--", "--config", "x"]), None);
    }

    #[test]
    fn every_image_default_loads_with_the_profile_kept() {
        for (board, _) in IMAGE_DEFAULTS {
            let text = image_default(board, "/etc/holdline/my \"board\".toml")
                .unwrap()
                .unwrap();
            let cfg = Config::parse(&text, Path::new("t")).unwrap();
            assert_eq!(cfg.board.profile, "/etc/holdline/my \"board\".toml");
        }
        assert!(image_default("no-such-board", "sim").is_none());
    }

    #[test]
    fn factory_reset_erases_only_the_store_and_restores_the_config() {
        let d = dir("reset");
        let store = d.join("holdline.db");
        for name in [
            "holdline.db",
            "holdline.db-wal",
            "holdline.db-shm",
            "holdline.db.corrupt-20261125T100000Z",
            "holdline.db.corrupt-20261125T100000Z-wal",
        ] {
            std::fs::write(d.join(name), "data").unwrap();
        }
        // Not the store's: kept.
        for name in ["holdline.dbx", "other.db", "watchdog-resets", "notes.txt"] {
            std::fs::write(d.join(name), "keep").unwrap();
        }
        std::fs::create_dir_all(d.join("update")).unwrap();
        std::fs::write(d.join("update/state"), "slot A").unwrap();
        let outside = dir("reset-outside");
        std::fs::write(outside.join("secret"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), d.join("holdline.db-journal")).unwrap();
        let cfg = d.join("holdline.toml");
        std::fs::write(&cfg, "[cloud]\ndomain = \"site.example\"\n").unwrap();

        let plan = ResetPlan {
            state_dir: d.clone(),
            store: store.clone(),
            config: Some(cfg.clone()),
            board: "sim".into(),
            profile: "sim".into(),
            sim: true,
        };
        let report = factory_reset(&plan).unwrap();
        assert_eq!(report.erased, 5, "{report:?}");
        let mut left: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "holdline.db-journal",
                "holdline.dbx",
                "holdline.toml",
                "notes.txt",
                "other.db",
                "update",
                "watchdog-resets"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "keep"
        );
        let text = std::fs::read_to_string(&cfg).unwrap();
        let loaded = Config::parse(&text, &cfg).unwrap();
        assert_eq!(loaded.cloud.domain, "cloud.test");
        assert_eq!(loaded.board.profile, "sim");
        assert!(!d.join(MARKER).exists());
    }

    #[test]
    fn sim_reset_leaves_a_config_outside_the_state_dir_alone() {
        let d = dir("sim-outside");
        let elsewhere = dir("sim-outside-cfg");
        let cfg = elsewhere.join("dev.toml");
        std::fs::write(&cfg, "[cloud]\ndomain = \"dev.example\"\n").unwrap();
        std::fs::write(d.join("holdline.db"), "data").unwrap();
        let plan = ResetPlan {
            state_dir: d.clone(),
            store: d.join("holdline.db"),
            config: Some(cfg.clone()),
            board: "sim".into(),
            profile: "sim".into(),
            sim: true,
        };
        let report = factory_reset(&plan).unwrap();
        assert_eq!(report.erased, 1);
        assert!(report.config.contains("left alone"), "{report:?}");
        assert_eq!(
            std::fs::read_to_string(&cfg).unwrap(),
            "[cloud]\ndomain = \"dev.example\"\n"
        );
    }

    #[test]
    fn an_unwritable_config_does_not_keep_the_store() {
        let d = dir("ro-config");
        std::fs::write(d.join("holdline.db"), "data").unwrap();
        // The config's directory does not exist: its replacement cannot be written.
        let plan = ResetPlan {
            state_dir: d.clone(),
            store: d.join("holdline.db"),
            config: Some(d.join("missing-dir/holdline.toml")),
            board: "apu2".into(),
            profile: "apu2".into(),
            sim: false,
        };
        let report = factory_reset(&plan).unwrap();
        assert_eq!(report.erased, 1);
        assert!(report.config.contains("NOT restored"), "{report:?}");
        assert!(!d.join("holdline.db").exists());
        assert!(!d.join(MARKER).exists());
    }

    #[test]
    fn an_interrupted_reset_is_finished_at_the_next_start() {
        let d = dir("resume");
        let store = d.join("holdline.db");
        std::fs::write(&store, "data").unwrap();
        std::fs::write(d.join("holdline.db-wal"), "wal").unwrap();
        let cfg_path = d.join("holdline.toml");
        std::fs::write(&cfg_path, "old").unwrap();
        std::fs::write(with_suffix(&cfg_path, ".factory.tmp"), "new").unwrap();
        // As if power was lost right after the marker was written.
        let marker = format!(
            "config {}\nconfig-tmp {}\nerase {}\nerase {}\nerase /etc/passwd\n",
            cfg_path.display(),
            with_suffix(&cfg_path, ".factory.tmp").display(),
            d.join("holdline.db-wal").display(),
            store.display()
        );
        std::fs::write(d.join(MARKER), marker).unwrap();
        let mut cfg = Config::default();
        cfg.store.path = store.clone();
        assert!(resume_pending_reset(&cfg).unwrap());
        assert!(!store.exists());
        assert!(!d.join("holdline.db-wal").exists());
        assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), "new");
        assert!(!d.join(MARKER).exists());
        assert!(!resume_pending_reset(&cfg).unwrap());
    }
}
