//! The update agent on the appliance: install a bundle into the inactive
//! slot, boot it on trial, commit it once healthy, fall back otherwise.
//!
//! Time is an argument (`now`, Unix seconds); health is an argument too (the
//! daemon decides it: critical tasks fresh, cloud reachable or survival
//! working). Every operation takes a file lock, reloads the state file, and
//! writes it back atomically, so the daemon and a `holdline update install`
//! process can share it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::bootloader::{self, BootEnv, BootError, FileEnv, GrubEnv, UbootEnv};
use crate::bundle::{Bundle, BundleError, Policy, ROOTFS};
use crate::slots::{self, BootloaderSpec, Layout, SlotError, SlotName, Tools};

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "update-state.json";

/// What the agent needs to know about the appliance.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This appliance's board profile.
    pub board: String,
    /// Persistent directory (data partition) for the state file; base of relative paths.
    pub state_dir: PathBuf,
    /// A/B layout of the board.
    pub layout: Layout,
    /// Trusted signing keys.
    pub keys: Vec<VerifyingKey>,
    /// A trial is committed after this many seconds of continuous health.
    pub commit_after_secs: u64,
    /// A trial not committed this many seconds after its boot is rolled back.
    pub trial_timeout_secs: u64,
    /// How system tools are found.
    pub tools: Tools,
}

/// Condition of a slot's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Committed; may be booted.
    Good,
    /// Written, on trial.
    Trial,
    /// Failed its trial; the bootloader will not boot it.
    Bad,
    /// Writing started and did not finish.
    Incomplete,
}

/// What the agent knows about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Firmware version in the slot.
    pub version: Version,
    /// Its condition.
    pub state: SlotState,
    /// When it reached that condition (Unix s).
    pub since: u64,
}

/// Trial boot progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Trial {
    /// No trial.
    #[default]
    None,
    /// Installed; waiting for the reboot into the slot.
    Pending {
        /// Slot on trial.
        slot: SlotName,
        /// Version on trial.
        version: Version,
        /// Install time.
        installed_at: u64,
    },
    /// Booted into the slot; waiting for the health window.
    Running {
        /// Slot on trial.
        slot: SlotName,
        /// Version on trial.
        version: Version,
        /// First boot of the trial.
        booted_at: u64,
        /// Start of the current healthy stretch.
        healthy_since: Option<u64>,
    },
}

/// The outcome of the last update operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum LastResult {
    /// Installed, trial boot pending.
    Installed {
        /// Version.
        version: Version,
        /// Slot written.
        slot: SlotName,
        /// When.
        at: u64,
    },
    /// Trial succeeded; the slot is the default now.
    Committed {
        /// Version.
        version: Version,
        /// Slot.
        slot: SlotName,
        /// When.
        at: u64,
    },
    /// Trial failed; the old slot serves.
    RolledBack {
        /// Version that failed.
        version: Version,
        /// Why.
        reason: String,
        /// When.
        at: u64,
    },
    /// A bundle was refused before anything was written.
    Refused {
        /// Its version, if the manifest was trusted enough to read it.
        version: Option<Version>,
        /// Why.
        reason: String,
        /// When.
        at: u64,
    },
    /// Writing the inactive slot failed.
    WriteFailed {
        /// Version.
        version: Version,
        /// Why.
        reason: String,
        /// When.
        at: u64,
    },
}

/// A version that failed its trial here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedVersion {
    /// The version.
    pub version: Version,
    /// Why it failed.
    pub reason: String,
    /// When.
    pub at: u64,
}

/// Persistent agent state (`update-state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UpdateState {
    /// Known slot contents.
    pub slots: BTreeMap<SlotName, SlotRecord>,
    /// Trial progress.
    pub trial: Trial,
    /// Versions refused from now on.
    pub failed: Vec<FailedVersion>,
    /// Last operation's outcome.
    pub last: Option<LastResult>,
    /// Simulated board: the daemon should restart into the bootloader's choice.
    pub reboot_requested: bool,
}

/// Install switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Field-tech override: allow an older version.
    pub allow_downgrade: bool,
    /// Override: retry a version that failed before.
    pub retry_failed: bool,
    /// Do not reboot after install (real boards; the simulated board only flags it).
    pub no_reboot: bool,
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallReport {
    /// Version installed.
    pub version: Version,
    /// Slot written.
    pub slot: SlotName,
    /// Whether a reboot was started (or, simulated, requested).
    pub rebooting: bool,
}

/// What a boot meant for the update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootEvent {
    /// Normal boot of a good slot.
    Normal(SlotName),
    /// Trial of `version` started.
    TrialStarted {
        /// Slot.
        slot: SlotName,
        /// Version.
        version: Version,
    },
    /// The bootloader fell back: `version` failed.
    FellBack {
        /// Version that failed.
        version: Version,
        /// Slot now running.
        running: SlotName,
    },
}

/// What a health tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickEvent {
    /// No trial.
    Idle,
    /// Trial going on.
    Waiting {
        /// Seconds healthy in a row.
        healthy_for: u64,
    },
    /// Trial committed.
    Committed(Version),
    /// Trial failed; reboot into the old slot requested.
    RolledBack {
        /// Version that failed.
        version: Version,
        /// Why.
        reason: String,
    },
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The bundle was refused; nothing was written.
    #[error("bundle refused: {0}")]
    Refused(#[from] BundleError),
    /// Slot writing failed (the running slot is untouched).
    #[error(transparent)]
    Slot(#[from] SlotError),
    /// Bootloader environment access failed.
    #[error("bootloader: {0}")]
    Boot(#[from] BootError),
    /// State file problems.
    #[error("update state {path}: {detail}")]
    State {
        /// File.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Another update is on trial.
    #[error("version {0} is still on trial; wait for commit or rollback")]
    TrialInProgress(Version),
    /// The booted slot is unknown.
    #[error("cannot tell which slot is running: {0}")]
    UnknownSlot(String),
    /// Reboot command failed.
    #[error("reboot failed: {0}")]
    Reboot(String),
}

impl AgentError {
    /// True when the bundle itself was at fault (refusal), not the appliance.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            AgentError::Refused(_) | AgentError::TrialInProgress(_)
        )
    }
}

/// Everything `update status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    /// Board profile.
    pub board: String,
    /// Bootloader back-end.
    pub bootloader: String,
    /// Running slot.
    pub booted: SlotName,
    /// Version of the running slot.
    pub running_version: Option<Version>,
    /// Both slots.
    pub slots: Vec<SlotStatus>,
    /// Boot order the bootloader will follow.
    pub boot_order: Vec<SlotName>,
    /// Trial progress.
    pub trial: Trial,
    /// Commit after this much health.
    pub commit_after_secs: u64,
    /// Roll back when not committed by then.
    pub trial_timeout_secs: u64,
    /// Last operation.
    pub last_result: Option<LastResult>,
    /// Versions refused from now on.
    pub failed_versions: Vec<FailedVersion>,
    /// A (simulated) reboot is pending.
    pub reboot_pending: bool,
}

/// One slot in [`UpdateStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// A or B.
    pub name: SlotName,
    /// True for the running slot.
    pub booted: bool,
    /// Content version.
    pub version: Option<Version>,
    /// Content condition.
    pub state: Option<SlotState>,
    /// Boot attempts the bootloader still allows.
    pub attempts_left: u32,
}

impl UpdateStatus {
    /// Text for the console, at most 80 columns.
    pub fn render_text(&self) -> String {
        let mut s = format!(
            "board {}  bootloader {}  running slot {}\n",
            self.board, self.bootloader, self.booted
        );
        s.push_str("slot  version          state       attempts\n");
        for slot in &self.slots {
            let mark = if slot.booted { "*" } else { " " };
            let version = slot
                .version
                .as_ref()
                .map_or_else(|| "-".to_owned(), Version::to_string);
            let state = match slot.state {
                None => "empty",
                Some(SlotState::Good) => "good",
                Some(SlotState::Trial) => "trial",
                Some(SlotState::Bad) => "bad",
                Some(SlotState::Incomplete) => "incomplete",
            };
            s.push_str(&format!(
                "{}{}    {:<16} {:<11} {}\n",
                slot.name, mark, version, state, slot.attempts_left
            ));
        }
        let order: Vec<&str> = self.boot_order.iter().map(|s| s.as_str()).collect();
        s.push_str(&format!("boot order: {}\n", order.join(" ")));
        match &self.trial {
            Trial::None => s.push_str("trial: none\n"),
            Trial::Pending { slot, version, .. } => {
                s.push_str(&format!("trial: {version} on {slot}, waiting for reboot\n"))
            }
            Trial::Running {
                slot,
                version,
                booted_at,
                healthy_since,
            } => {
                let healthy = healthy_since.map_or_else(
                    || "not healthy yet".to_owned(),
                    |t| format!("healthy since {t}"),
                );
                s.push_str(&format!(
                    "trial: {version} on {slot} since {booted_at}, {healthy}\n       commit after {}s healthy, roll back at {}s\n",
                    self.commit_after_secs, self.trial_timeout_secs
                ));
            }
        }
        match &self.last_result {
            None => s.push_str("last: nothing installed yet\n"),
            Some(r) => s.push_str(&format!("last: {}\n", describe(r))),
        }
        for f in &self.failed_versions {
            s.push_str(&format!("refused version {}: {}\n", f.version, f.reason));
        }
        if self.reboot_pending {
            s.push_str("reboot pending\n");
        }
        s
    }
}

/// One line describing a result.
pub fn describe(r: &LastResult) -> String {
    match r {
        LastResult::Installed { version, slot, at } => {
            format!("installed {version} into {slot} at {at}, trial boot pending")
        }
        LastResult::Committed { version, slot, at } => {
            format!("committed {version} in {slot} at {at}")
        }
        LastResult::RolledBack {
            version,
            reason,
            at,
        } => {
            format!("rolled back {version} at {at}: {reason}")
        }
        LastResult::Refused {
            version,
            reason,
            at,
        } => match version {
            Some(v) => format!("refused {v} at {at}: {reason}"),
            None => format!("refused a bundle at {at}: {reason}"),
        },
        LastResult::WriteFailed {
            version,
            reason,
            at,
        } => format!("writing {version} failed at {at}: {reason}"),
    }
}

/// The update agent.
pub struct Agent {
    cfg: AgentConfig,
    env: Box<dyn BootEnv>,
}

struct Locked {
    _lock: File,
}

impl Agent {
    /// Opens the agent; creates the state directory.
    pub fn open(cfg: AgentConfig) -> Result<Agent, AgentError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| AgentError::State {
            path: cfg.state_dir.clone(),
            detail: e.to_string(),
        })?;
        let env: Box<dyn BootEnv> = match &cfg.layout.bootloader {
            BootloaderSpec::Uboot { config } => Box::new(UbootEnv {
                tools: cfg.tools.clone(),
                config: config.clone(),
                scratch: cfg.state_dir.clone(),
            }),
            BootloaderSpec::Grub { env } => Box::new(GrubEnv {
                tools: cfg.tools.clone(),
                env: env.clone(),
            }),
            BootloaderSpec::File { env } => Box::new(FileEnv {
                path: if env.is_absolute() {
                    env.clone()
                } else {
                    cfg.state_dir.join(env)
                },
            }),
        };
        Ok(Agent { cfg, env })
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    fn state_path(&self) -> PathBuf {
        self.cfg.state_dir.join(STATE_FILE)
    }

    fn state_err(&self, detail: impl ToString) -> AgentError {
        AgentError::State {
            path: self.state_path(),
            detail: detail.to_string(),
        }
    }

    fn lock(&self) -> Result<Locked, AgentError> {
        let p = self.cfg.state_dir.join("update.lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| self.state_err(e))?;
        f.lock().map_err(|e| self.state_err(e))?;
        Ok(Locked { _lock: f })
    }

    /// Reads the state file (defaults when absent).
    pub fn load_state(&self) -> Result<UpdateState, AgentError> {
        match std::fs::read(self.state_path()) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| self.state_err(e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UpdateState::default()),
            Err(e) => Err(self.state_err(e)),
        }
    }

    fn save_state(&self, st: &UpdateState) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| self.state_err(e))?;
        crate::write_atomic(&self.state_path(), &bytes).map_err(|e| self.state_err(e))
    }

    /// The slot this system was booted from.
    pub fn booted_slot(&self) -> Result<SlotName, AgentError> {
        match &self.cfg.layout.bootloader {
            BootloaderSpec::File { .. } => {
                let vars = self.env.read_all()?;
                match vars.get(bootloader::BOOTED_VAR) {
                    Some(v) => SlotName::parse(v)
                        .ok_or_else(|| AgentError::UnknownSlot(format!("BOOTED={v}"))),
                    None => Ok(SlotName::A),
                }
            }
            _ => {
                let p = &self.cfg.layout.cmdline;
                let text = std::fs::read_to_string(p)
                    .map_err(|e| AgentError::UnknownSlot(format!("{}: {e}", p.display())))?;
                bootloader::slot_from_cmdline(&text).ok_or_else(|| {
                    AgentError::UnknownSlot(format!("no holdline.slot= in {}", p.display()))
                })
            }
        }
    }

    /// Simulated board only: what the bootloader does at power-on.
    pub fn sim_power_on(&mut self) -> Result<SlotName, AgentError> {
        let _l = self.lock()?;
        Ok(bootloader::simulate_boot(self.env.as_mut())?)
    }

    /// Simulated board, for a launcher (`holdline-image sim-run`) that picks
    /// the slot's binary itself: power-on, and leave a note so that the
    /// daemon it starts does not power on a second time.
    pub fn sim_launcher_power_on(&mut self) -> Result<SlotName, AgentError> {
        let _l = self.lock()?;
        let slot = bootloader::simulate_boot(self.env.as_mut())?;
        self.env
            .write(&[(bootloader::LAUNCHED_VAR.to_owned(), "1".to_owned())])?;
        Ok(slot)
    }

    /// Simulated board, at daemon start: true (once) when a launcher already
    /// did the power-on; otherwise the daemon's start is the power-on.
    pub fn sim_take_launched(&mut self) -> Result<bool, AgentError> {
        let _l = self.lock()?;
        let launched = self
            .env
            .read_all()?
            .get(bootloader::LAUNCHED_VAR)
            .is_some_and(|v| v == "1");
        if launched {
            self.env
                .write(&[(bootloader::LAUNCHED_VAR.to_owned(), "0".to_owned())])?;
        }
        Ok(launched)
    }

    /// The directory of a slot on the simulated board.
    pub fn sim_slot_dir(&self, slot: SlotName) -> Option<PathBuf> {
        self.cfg
            .layout
            .slot(slot)
            .and_then(|s| slots::slot_dir(s, &self.cfg.state_dir))
    }

    /// True when the bootloader is the simulated one.
    pub fn is_simulated(&self) -> bool {
        matches!(self.cfg.layout.bootloader, BootloaderSpec::File { .. })
    }

    /// Called once at daemon start: reconciles the state with the slot that
    /// actually booted. `running_version` is the version of this binary.
    pub fn on_boot(
        &mut self,
        now: u64,
        running_version: &Version,
    ) -> Result<BootEvent, AgentError> {
        let _l = self.lock()?;
        let mut st = self.load_state()?;
        let booted = self.booted_slot()?;
        st.reboot_requested = false;
        st.slots.entry(booted).or_insert_with(|| SlotRecord {
            version: running_version.clone(),
            state: SlotState::Good,
            since: now,
        });
        let event = match st.trial.clone() {
            Trial::Pending { slot, version, .. } if slot == booted => {
                st.trial = Trial::Running {
                    slot,
                    version: version.clone(),
                    booted_at: now,
                    healthy_since: None,
                };
                BootEvent::TrialStarted { slot, version }
            }
            Trial::Running {
                slot,
                version,
                booted_at,
                ..
            } if slot == booted => {
                // Restarted during the trial without a reset: keep counting
                // the window from the first boot, health starts over.
                st.trial = Trial::Running {
                    slot,
                    version: version.clone(),
                    booted_at,
                    healthy_since: None,
                };
                BootEvent::TrialStarted { slot, version }
            }
            Trial::Pending { slot, version, .. } | Trial::Running { slot, version, .. } => {
                let reason = format!(
                    "trial boot of slot {slot} did not come up healthy; the bootloader fell back to {booted} (watchdog reset or crash)"
                );
                self.fail(&mut st, slot, &version, reason, now)?;
                bootloader::mark_good(self.env.as_mut(), booted)?;
                BootEvent::FellBack {
                    version,
                    running: booted,
                }
            }
            Trial::None => {
                if st.slots.get(&booted).map(|r| r.state) == Some(SlotState::Good) {
                    bootloader::mark_good(self.env.as_mut(), booted)?;
                }
                BootEvent::Normal(booted)
            }
        };
        self.save_state(&st)?;
        Ok(event)
    }

    fn fail(
        &mut self,
        st: &mut UpdateState,
        slot: SlotName,
        version: &Version,
        reason: String,
        now: u64,
    ) -> Result<(), AgentError> {
        bootloader::mark_bad(self.env.as_mut(), slot)?;
        if let Some(r) = st.slots.get_mut(&slot) {
            r.state = SlotState::Bad;
            r.since = now;
        }
        if !st.failed.iter().any(|f| &f.version == version) {
            st.failed.push(FailedVersion {
                version: version.clone(),
                reason: reason.clone(),
                at: now,
            });
        }
        st.last = Some(LastResult::RolledBack {
            version: version.clone(),
            reason,
            at: now,
        });
        st.trial = Trial::None;
        Ok(())
    }

    /// Called periodically with the appliance's health; commits or rolls
    /// back a running trial.
    pub fn tick(&mut self, now: u64, healthy: bool) -> Result<TickEvent, AgentError> {
        let _l = self.lock()?;
        let mut st = self.load_state()?;
        let Trial::Running {
            slot,
            version,
            booted_at,
            healthy_since,
        } = st.trial.clone()
        else {
            return Ok(TickEvent::Idle);
        };
        let since = if healthy {
            Some(healthy_since.unwrap_or(now))
        } else {
            None
        };
        let healthy_for = since.map_or(0, |s| now.saturating_sub(s));
        let event = if since.is_some() && healthy_for >= self.cfg.commit_after_secs {
            bootloader::mark_good(self.env.as_mut(), slot)?;
            if let Some(r) = st.slots.get_mut(&slot) {
                r.state = SlotState::Good;
                r.since = now;
            }
            st.trial = Trial::None;
            // A retried version that now passed is no longer refused.
            st.failed.retain(|f| f.version != version);
            st.last = Some(LastResult::Committed {
                version: version.clone(),
                slot,
                at: now,
            });
            TickEvent::Committed(version)
        } else if now.saturating_sub(booted_at) >= self.cfg.trial_timeout_secs {
            let reason = format!(
                "not healthy for {}s in a row within the {}s trial window",
                self.cfg.commit_after_secs, self.cfg.trial_timeout_secs
            );
            self.fail(&mut st, slot, &version, reason.clone(), now)?;
            self.request_reboot(&mut st, false)?;
            TickEvent::RolledBack { version, reason }
        } else {
            if since == healthy_since {
                return Ok(TickEvent::Waiting { healthy_for });
            }
            st.trial = Trial::Running {
                slot,
                version,
                booted_at,
                healthy_since: since,
            };
            TickEvent::Waiting { healthy_for }
        };
        self.save_state(&st)?;
        Ok(event)
    }

    fn request_reboot(&self, st: &mut UpdateState, no_reboot: bool) -> Result<bool, AgentError> {
        if self.is_simulated() {
            st.reboot_requested = true;
            self.save_state(st)?;
            return Ok(true);
        }
        if no_reboot {
            return Ok(false);
        }
        self.save_state(st)?;
        let mut c = self.cfg.tools.command("systemctl");
        c.arg("reboot");
        self.cfg.tools.run(c).map_err(AgentError::Reboot)?;
        Ok(true)
    }

    /// Simulated board: true (once) when the daemon should restart.
    pub fn take_reboot_request(&mut self) -> Result<bool, AgentError> {
        let _l = self.lock()?;
        let mut st = self.load_state()?;
        if !st.reboot_requested {
            return Ok(false);
        }
        st.reboot_requested = false;
        self.save_state(&st)?;
        Ok(true)
    }

    /// Verifies `bundle`, writes it to the inactive slot and arms one trial boot.
    /// On refusal nothing but the "last result" record changes.
    pub fn install(
        &mut self,
        bundle: &Path,
        opts: InstallOptions,
        now: u64,
    ) -> Result<InstallReport, AgentError> {
        let _l = self.lock()?;
        let mut st = self.load_state()?;
        if let Trial::Pending { version, .. } | Trial::Running { version, .. } = &st.trial {
            return Err(AgentError::TrialInProgress(version.clone()));
        }
        let booted = self.booted_slot()?;
        let target = booted.other();
        let failed: Vec<Version> = st.failed.iter().map(|f| f.version.clone()).collect();
        let installed = st.slots.get(&booted).map(|r| r.version.clone());
        let policy = Policy {
            board: &self.cfg.board,
            installed: installed.as_ref(),
            allow_downgrade: opts.allow_downgrade,
            failed: &failed,
            retry_failed: opts.retry_failed,
        };
        let verified = Bundle::open(bundle).and_then(|b| {
            let m = b.verify(&self.cfg.keys, &policy)?;
            if !m.payload.iter().any(|p| p.name == ROOTFS) {
                return Err(BundleError::MissingPayload(ROOTFS.into()));
            }
            Ok((b, m))
        });
        let (opened, manifest) = match verified {
            Ok(v) => v,
            Err(e) => {
                st.last = Some(LastResult::Refused {
                    version: None,
                    reason: e.to_string(),
                    at: now,
                });
                self.save_state(&st)?;
                return Err(e.into());
            }
        };
        let version = manifest.version.clone();
        let spec = self
            .cfg
            .layout
            .slot(target)
            .cloned()
            .ok_or_else(|| AgentError::UnknownSlot(format!("slot {target} not in layout")))?;
        st.slots.insert(
            target,
            SlotRecord {
                version: version.clone(),
                state: SlotState::Incomplete,
                since: now,
            },
        );
        self.save_state(&st)?;
        let written = opened.read_payload(&manifest, ROOTFS, |r| {
            slots::write_slot(&spec, &self.cfg.state_dir, &self.cfg.tools, r)
                .map_err(std::io::Error::other)
        });
        if let Err(e) = written {
            st.last = Some(LastResult::WriteFailed {
                version,
                reason: e.to_string(),
                at: now,
            });
            self.save_state(&st)?;
            return Err(e.into());
        }
        bootloader::set_trial(self.env.as_mut(), target)?;
        if let Some(r) = st.slots.get_mut(&target) {
            r.state = SlotState::Trial;
        }
        st.trial = Trial::Pending {
            slot: target,
            version: version.clone(),
            installed_at: now,
        };
        st.last = Some(LastResult::Installed {
            version: version.clone(),
            slot: target,
            at: now,
        });
        self.save_state(&st)?;
        let rebooting = self.request_reboot(&mut st, opts.no_reboot)?;
        Ok(InstallReport {
            version,
            slot: target,
            rebooting,
        })
    }

    /// Everything `update status` shows.
    pub fn status(&self) -> Result<UpdateStatus, AgentError> {
        let st = self.load_state()?;
        let booted = self.booted_slot()?;
        let view = bootloader::read_view(self.env.as_ref())?;
        let slots = [SlotName::A, SlotName::B]
            .into_iter()
            .map(|name| {
                let rec = st.slots.get(&name);
                SlotStatus {
                    name,
                    booted: name == booted,
                    version: rec.map(|r| r.version.clone()),
                    state: rec.map(|r| r.state),
                    attempts_left: view.left(name),
                }
            })
            .collect();
        Ok(UpdateStatus {
            board: self.cfg.board.clone(),
            bootloader: self.env.backend().to_owned(),
            booted,
            running_version: st.slots.get(&booted).map(|r| r.version.clone()),
            slots,
            boot_order: view.order,
            trial: st.trial,
            commit_after_secs: self.cfg.commit_after_secs,
            trial_timeout_secs: self.cfg.trial_timeout_secs,
            last_result: st.last,
            failed_versions: st.failed,
            reboot_pending: st.reboot_requested,
        })
    }
}
