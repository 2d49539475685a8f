//! `holdline update install BUNDLE` and `holdline update status`, and the
//! update agent's hooks for the daemon. Owned by the images helper; the
//! daemon declares `mod update_cmd;`, parses the command line and calls
//! [`run`]; at start it calls [`start_agent`] and then [`tick`] every few
//! seconds with its health verdict.
//!
//! Exit codes of [`run`] (the daemon's `Exit` table): 0 done; 1 the bundle
//! was refused or the install failed (the running slot is untouched, the
//! message says why); 3 the `[update]` configuration is unusable (layout or
//! key file missing or invalid).

use std::io::Write;
use std::path::{Path, PathBuf};

use holdline_update::agent::{BootEvent, InstallOptions, InstallReport, TickEvent};
use holdline_update::slots::{Layout, Tools};
use holdline_update::{keys, now_unix, Agent, AgentConfig, AgentError, UpdateStatus};
use serde::Deserialize;

/// `[update]` section of the appliance config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Persistent directory (data partition) for the update state; the
    /// simulated board keeps its slots and boot environment here too.
    pub state_dir: PathBuf,
    /// A/B slot layout file (`images/<board>/slots.toml`, installed as
    /// `/etc/holdline/slots.toml`). Absent: the built-in simulated layout,
    /// only valid on the `sim` board.
    pub layout: Option<PathBuf>,
    /// Trusted public key file, or directory of `*.pub` files. Absent: every
    /// bundle is refused.
    pub keys: Option<PathBuf>,
    /// A trial boot is committed after this many seconds of continuous health.
    pub commit_after_secs: u64,
    /// A trial not committed this long after its boot is rolled back.
    pub trial_timeout_secs: u64,
}

/// Default of `[update] commit_after_secs`.
pub const DEFAULT_COMMIT_AFTER_SECS: u64 = 120;
/// Default of `[update] trial_timeout_secs`.
pub const DEFAULT_TRIAL_TIMEOUT_SECS: u64 = 600;

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            state_dir: PathBuf::from("update"),
            layout: None,
            keys: None,
            commit_after_secs: DEFAULT_COMMIT_AFTER_SECS,
            trial_timeout_secs: DEFAULT_TRIAL_TIMEOUT_SECS,
        }
    }
}

/// What `holdline update ...` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateAction {
    /// `holdline update install BUNDLE [--allow-downgrade] [--retry-failed] [--no-reboot]`
    Install {
        /// Bundle file.
        bundle: PathBuf,
        /// Field-tech override: allow an older version.
        allow_downgrade: bool,
        /// Try a version that failed its trial here before.
        retry_failed: bool,
        /// Do not reboot now (real boards).
        no_reboot: bool,
    },
    /// `holdline update status [--json]`
    Status {
        /// Machine-readable output.
        json: bool,
    },
}

/// Errors setting the agent up.
#[derive(Debug, thiserror::Error)]
pub enum UpdateCmdError {
    /// `[update] layout` unreadable or invalid.
    #[error("update layout {path}: {detail}")]
    Layout {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// No layout for a real board.
    #[error("no [update] layout configured for board {0:?} (only \"sim\" has a built-in one)")]
    NoLayout(String),
    /// Layout belongs to another board.
    #[error("update layout is for board {layout:?}, this appliance is {board:?}")]
    LayoutBoard {
        /// Board of the layout.
        layout: String,
        /// This board.
        board: String,
    },
    /// Keys unreadable.
    #[error("update keys: {0}")]
    Keys(#[from] keys::KeyError),
    /// No trusted key configured.
    #[error("no trusted update keys configured ([update] keys); bundles are refused")]
    NoKeys,
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The agent's background task failed.
    #[error("update agent task: {0}")]
    Task(String),
}

impl UpdateCmdError {
    /// Process exit code (see module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            UpdateCmdError::Agent(_) | UpdateCmdError::NoKeys => 1,
            _ => 3,
        }
    }
}

fn load_layout(cfg: &UpdateConfig, board: &str) -> Result<Layout, UpdateCmdError> {
    let layout = match &cfg.layout {
        None if board == "sim" => Layout::simulated(),
        None => return Err(UpdateCmdError::NoLayout(board.to_owned())),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| UpdateCmdError::Layout {
                path: p.clone(),
                detail: e.to_string(),
            })?;
            Layout::parse(&text).map_err(|e| UpdateCmdError::Layout {
                path: p.clone(),
                detail: e.to_string(),
            })?
        }
    };
    if layout.board != board {
        return Err(UpdateCmdError::LayoutBoard {
            layout: layout.board,
            board: board.to_owned(),
        });
    }
    Ok(layout)
}

/// The board name bundles and layouts are matched against: a built-in
/// profile's name as is, or the `[board] name` of a profile file (`[board]
/// profile` may be a path, as in the cm4-box image); the text itself when
/// the file cannot be read (the board code reports that error).
pub fn board_name(profile: &str) -> String {
    if !profile.contains('/') && !profile.ends_with(".toml") {
        return profile.to_owned();
    }
    std::fs::read_to_string(profile)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("board")?.get("name")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| profile.to_owned())
}

/// Opens the agent for `board` (the `[board] profile`, name or path). With
/// `need_keys`, a missing `[update] keys` is an error.
pub fn open_agent(
    cfg: &UpdateConfig,
    board: &str,
    need_keys: bool,
) -> Result<Agent, UpdateCmdError> {
    let board = &board_name(board);
    let layout = load_layout(cfg, board)?;
    let keys = match &cfg.keys {
        Some(p) => keys::load_keyring(p)?,
        None if need_keys => return Err(UpdateCmdError::NoKeys),
        None => Vec::new(),
    };
    Ok(Agent::open(AgentConfig {
        board: board.to_owned(),
        state_dir: cfg.state_dir.clone(),
        layout,
        keys,
        commit_after_secs: cfg.commit_after_secs,
        trial_timeout_secs: cfg.trial_timeout_secs,
        tools: Tools::default(),
    })?)
}

/// The running binary's version.
pub fn running_version() -> semver::Version {
    env!("CARGO_PKG_VERSION")
        .parse()
        .unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

/// Daemon start: on the simulated board this is the power-on (the file
/// bootloader picks the slot); then the agent reconciles its state with the
/// slot that booted (trial started, or a fallback detected and recorded).
pub fn start_agent(cfg: &UpdateConfig, board: &str) -> Result<(Agent, BootEvent), UpdateCmdError> {
    let mut agent = open_agent(cfg, board, false)?;
    // Under `holdline-image sim-run` the launcher did the power-on (it had to
    // pick the slot's binary); otherwise this start is the power-on.
    if agent.is_simulated() && !agent.sim_take_launched()? {
        agent.sim_power_on()?;
    }
    let event = agent.on_boot(now_unix(), &running_version())?;
    Ok((agent, event))
}

/// What the daemon must do after a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickAction {
    /// Nothing.
    Continue,
    /// The trial was committed (log it).
    Committed(String),
    /// The trial failed. On a real board the agent already ran `systemctl
    /// reboot`; on the simulated board the daemon must now stop and be
    /// started again (that start is the "reboot" into the old slot).
    Restart {
        /// Version that failed.
        version: String,
        /// Why.
        reason: String,
    },
}

/// Called every few seconds (e.g. every 5 s) with the daemon's health:
/// critical tasks fresh and cloud reachable or survival working.
pub fn tick(agent: &mut Agent, healthy: bool) -> Result<TickAction, AgentError> {
    match agent.tick(now_unix(), healthy)? {
        TickEvent::Idle | TickEvent::Waiting { .. } => {
            // An install through the CLI or the management API on the
            // simulated board asks for a restart too.
            if agent.is_simulated() && agent.take_reboot_request()? {
                return Ok(TickAction::Restart {
                    version: String::new(),
                    reason: "update installed; restarting into the new slot".into(),
                });
            }
            Ok(TickAction::Continue)
        }
        TickEvent::Committed(v) => Ok(TickAction::Committed(v.to_string())),
        TickEvent::RolledBack { version, reason } => {
            if agent.is_simulated() {
                agent.take_reboot_request()?;
            }
            Ok(TickAction::Restart {
                version: version.to_string(),
                reason,
            })
        }
    }
}

/// Runs the update agent for the daemon's whole life: reconciles the boot
/// ([`start_agent`]), then every `every` asks `healthy()` and ticks the agent.
/// Returns only when the appliance must restart: on the simulated board the
/// daemon then shuts down and exits so that its supervisor starts it again
/// (that start is the reboot into the bootloader's choice); on a real board
/// the agent has already started `systemctl reboot`. An agent error is
/// logged by the caller; the SIP service must not stop because of it.
pub async fn supervise(
    cfg: UpdateConfig,
    board: String,
    healthy: impl Fn() -> bool + Send + 'static,
    every: std::time::Duration,
) -> Result<TickAction, UpdateCmdError> {
    let (agent, event) = tokio::task::spawn_blocking(move || start_agent(&cfg, &board))
        .await
        .map_err(|e| UpdateCmdError::Task(e.to_string()))??;
    tracing::info!(?event, "update agent: boot reconciled");
    let agent = std::sync::Arc::new(std::sync::Mutex::new(agent));
    loop {
        tokio::time::sleep(every).await;
        let ok = healthy();
        let a = agent.clone();
        let action = tokio::task::spawn_blocking(move || {
            let mut agent = a
                .lock()
                .map_err(|_| UpdateCmdError::Task("agent lock poisoned".into()))?;
            tick(&mut agent, ok).map_err(UpdateCmdError::from)
        })
        .await
        .map_err(|e| UpdateCmdError::Task(e.to_string()))??;
        match action {
            TickAction::Continue => {}
            TickAction::Committed(v) => {
                tracing::info!(version = %v, "update committed after its trial boot")
            }
            restart @ TickAction::Restart { .. } => {
                tracing::warn!(?restart, "update agent: restarting the appliance");
                return Ok(restart);
            }
        }
    }
}

/// Install for the management API: a refused bundle is
/// [`crate::mgmt::InstallFailure::Refused`], anything else `Failed`.
pub fn install_for_api(
    cfg: &UpdateConfig,
    board: &str,
    bundle: &Path,
    opts: InstallOptions,
) -> Result<InstallReport, crate::mgmt::InstallFailure> {
    install(cfg, board, bundle, opts).map_err(|e| match &e {
        UpdateCmdError::Agent(a) if a.is_refusal() => {
            crate::mgmt::InstallFailure::Refused(e.to_string())
        }
        UpdateCmdError::NoKeys => crate::mgmt::InstallFailure::Refused(e.to_string()),
        _ => crate::mgmt::InstallFailure::Failed(e.to_string()),
    })
}

/// Installs a bundle (CLI and management API).
pub fn install(
    cfg: &UpdateConfig,
    board: &str,
    bundle: &Path,
    opts: InstallOptions,
) -> Result<InstallReport, UpdateCmdError> {
    let mut agent = open_agent(cfg, board, true)?;
    Ok(agent.install(bundle, opts, now_unix())?)
}

/// The update status (CLI, console, management API).
pub fn status(cfg: &UpdateConfig, board: &str) -> Result<UpdateStatus, UpdateCmdError> {
    Ok(open_agent(cfg, board, false)?.status()?)
}

/// Runs `holdline update ...`: answer on `out`, errors on `err`; returns the exit code.
pub fn run(
    cfg: &UpdateConfig,
    board: &str,
    action: UpdateAction,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let result = match action {
        UpdateAction::Install {
            bundle,
            allow_downgrade,
            retry_failed,
            no_reboot,
        } => {
            let opts = InstallOptions {
                allow_downgrade,
                retry_failed,
                no_reboot,
            };
            install(cfg, board, &bundle, opts).map(|r| {
                let reboot = if r.rebooting {
                    "rebooting into it for a trial boot"
                } else {
                    "reboot to start its trial boot"
                };
                format!("installed {} into slot {}; {reboot}\n", r.version, r.slot)
            })
        }
        UpdateAction::Status { json } => status(cfg, board).map(|s| {
            if json {
                serde_json::to_string_pretty(&s)
                    .map_or_else(|e| format!("{{\"error\":\"{e}\"}}"), |t| t + "\n")
            } else {
                s.render_text()
            }
        }),
    };
    match result {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "holdline update: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim_cfg(dir: &Path, keys: Option<PathBuf>) -> UpdateConfig {
        UpdateConfig {
            state_dir: dir.join("update"),
            keys,
            commit_after_secs: 0,
            ..UpdateConfig::default()
        }
    }

    #[test]
    fn status_on_a_fresh_sim_board() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sim_cfg(dir.path(), None);
        let (_agent, ev) = start_agent(&cfg, "sim").unwrap();
        assert_eq!(ev, BootEvent::Normal(holdline_update::slots::SlotName::A));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &cfg,
            "sim",
            UpdateAction::Status { json: true },
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
        let st: UpdateStatus = serde_json::from_slice(&out).unwrap();
        assert_eq!(st.running_version, Some(running_version()));
        let code = run(
            &cfg,
            "sim",
            UpdateAction::Status { json: false },
            &mut out,
            &mut err,
        );
        assert_eq!(code, 0);
    }

    #[test]
    fn install_without_keys_and_real_board_without_layout_fail_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sim_cfg(dir.path(), None);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let action = UpdateAction::Install {
            bundle: dir.path().join("x.hlb"),
            allow_downgrade: false,
            retry_failed: false,
            no_reboot: false,
        };
        assert_eq!(run(&cfg, "sim", action.clone(), &mut out, &mut err), 1);
        assert!(String::from_utf8_lossy(&err).contains("no trusted update keys"));
        err.clear();
        assert_eq!(run(&cfg, "apu2", action, &mut out, &mut err), 3);
        assert!(String::from_utf8_lossy(&err).contains("no [update] layout"));
    }

    #[test]
    fn board_name_from_a_profile_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("board.toml");
        std::fs::write(
            &p,
            "[board]\nname = \"cm4-box\"\n[watchdog]\nkind = \"external\"\n[serial]\nkind = \"none\"\n\
             [leds]\nstatus = { kind = \"sim\" }\ncloud = { kind = \"sim\" }\nfault = { kind = \"sim\" }\n",
        )
        .unwrap();
        assert_eq!(board_name(p.to_str().unwrap()), "cm4-box");
        assert_eq!(board_name("sim"), "sim");
        assert_eq!(board_name("apu2"), "apu2");
    }

    #[tokio::test]
    async fn supervise_restarts_after_an_install_on_the_sim_board() {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        let pubkey = dir.path().join("k.pub");
        keys::write_public(&pubkey, &key.verifying_key()).unwrap();
        let cfg = sim_cfg(dir.path(), Some(pubkey));
        // A signed sim bundle with an (empty) rootfs.
        let rootfs = dir.path().join("rootfs.tar");
        std::fs::write(&rootfs, [0u8; 1024]).unwrap(); // an empty tar archive
        let bundle = dir.path().join("b.hlb");
        let t = holdline_update::manifest::ManifestTemplate {
            format: holdline_update::manifest::FORMAT_VERSION,
            compatible: vec!["sim".into()],
            description: String::new(),
        };
        holdline_update::bundle::build(
            &bundle,
            &t,
            semver::Version::new(99, 0, 0),
            0,
            &[(holdline_update::bundle::ROOTFS.into(), rootfs)],
        )
        .unwrap();
        holdline_update::bundle::sign(&bundle, &key).unwrap();

        let sup = tokio::spawn(supervise(
            cfg.clone(),
            "sim".into(),
            || true,
            std::time::Duration::from_millis(10),
        ));
        // The daemon is up (boot reconciled) before the install comes in.
        while status(&cfg, "sim")
            .map(|s| s.last_result.is_none() && s.slots[0].version.is_none())
            .unwrap_or(true)
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let r = install_for_api(&cfg, "sim", &bundle, InstallOptions::default()).unwrap();
        assert_eq!(r.version, semver::Version::new(99, 0, 0));
        let action = sup.await.unwrap().unwrap();
        assert!(matches!(action, TickAction::Restart { .. }), "{action:?}");
        // "Restart": the next start boots the new slot on trial and commits it.
        let (mut agent, ev) = start_agent(&cfg, "sim").unwrap();
        assert!(matches!(ev, BootEvent::TrialStarted { .. }), "{ev:?}");
        assert_eq!(
            tick(&mut agent, true).unwrap(),
            TickAction::Committed("99.0.0".into())
        );
        // A bad bundle is a refusal; a setup problem is a failure.
        let junk = dir.path().join("junk.hlb");
        std::fs::write(&junk, b"junk").unwrap();
        let err = install_for_api(&cfg, "sim", &junk, InstallOptions::default()).unwrap_err();
        assert!(
            matches!(err, crate::mgmt::InstallFailure::Refused(_)),
            "{err:?}"
        );
        let err = install_for_api(&cfg, "apu2", &bundle, InstallOptions::default()).unwrap_err();
        assert!(
            matches!(err, crate::mgmt::InstallFailure::Failed(_)),
            "{err:?}"
        );
    }

    #[test]
    fn config_section_is_strict() {
        let ok: UpdateConfig =
            toml::from_str("state_dir = \"/var/lib/holdline/update\"\ncommit_after_secs = 60\n")
                .unwrap();
        assert_eq!(ok.commit_after_secs, 60);
        assert_eq!(ok.trial_timeout_secs, DEFAULT_TRIAL_TIMEOUT_SECS);
        let err = toml::from_str::<UpdateConfig>("commit_after = 60\n").unwrap_err();
        assert!(err.to_string().contains("commit_after"), "{err}");
    }
}
