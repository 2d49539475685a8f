//! Staged rollout: a canary wave, then growing waves. Each wave is gated on
//! every appliance in it committing the new version (its trial boot passed)
//! and reporting healthy; any failure halts the rollout before the next
//! wave and names the appliance and the reason. The state is saved after
//! every step so that `resume` and `abort` work from another invocation.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdline_update::agent::{LastResult, Trial};
use holdline_update::bundle::Bundle;
use semver::Version;
use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::inventory::{Inventory, CANARY_GROUP};

/// How waves are formed and gated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Canary wave size when no appliance is in group `canary`.
    pub canary: usize,
    /// Size of the first wave after the canaries.
    pub first_wave: usize,
    /// Each following wave is this many times larger.
    pub growth: usize,
}

/// Why an appliance failed its wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Appliance name.
    pub appliance: String,
    /// What happened.
    pub reason: String,
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Working on wave `wave` (0-based), or interrupted there.
    Running {
        /// Current wave.
        wave: usize,
    },
    /// Stopped by failures in `wave`.
    Halted {
        /// The wave that failed.
        wave: usize,
        /// Which appliances failed and why.
        failures: Vec<Failure>,
    },
    /// Stopped by the operator.
    Aborted {
        /// The wave it was in.
        wave: usize,
    },
    /// Every wave passed.
    Complete,
}

/// The saved rollout (`--state` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Its version.
    pub version: Version,
    /// Appliance names per wave.
    pub waves: Vec<Vec<String>>,
    /// Appliances that committed the version and reported healthy.
    pub done: BTreeSet<String>,
    /// Progress.
    pub phase: Phase,
    /// Per-wave time limit for commit + health.
    pub timeout_secs: u64,
    /// Poll interval.
    pub poll_ms: u64,
}

/// Fleet tool failures (not rollout halts, which are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Bundle unreadable.
    #[error("bundle {path}: {detail}")]
    Bundle {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// State file problems.
    #[error("rollout state {path}: {detail}")]
    State {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A rollout is already under way.
    #[error("a rollout of {version} is {what} (state {path}); `resume` or `abort` it first")]
    Busy {
        /// Its version.
        version: Version,
        /// "running" / "halted".
        what: &'static str,
        /// State file.
        path: PathBuf,
    },
    /// Nothing to resume/abort.
    #[error("no rollout to {0}")]
    NothingTo(&'static str),
    /// Writing progress failed.
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
}

/// Result of driving a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All waves passed.
    Complete,
    /// Halted; see the failures.
    Halted(Vec<Failure>),
}

/// Splits the inventory into waves: the `canary` group (or the first
/// `plan.canary` appliances), then waves of `first_wave`, growing by `growth`.
pub fn plan_waves(inv: &Inventory, plan: &Plan) -> Vec<Vec<String>> {
    let mut canaries: Vec<String> = inv
        .appliances
        .iter()
        .filter(|a| a.group == CANARY_GROUP)
        .map(|a| a.name.clone())
        .collect();
    let mut rest: Vec<String> = inv
        .appliances
        .iter()
        .filter(|a| a.group != CANARY_GROUP)
        .map(|a| a.name.clone())
        .collect();
    if canaries.is_empty() {
        let n = plan.canary.clamp(1, rest.len().max(1)).min(rest.len());
        canaries = rest.drain(..n).collect();
    }
    let mut waves = vec![canaries];
    let mut size = plan.first_wave.max(1);
    while !rest.is_empty() {
        let n = size.min(rest.len());
        waves.push(rest.drain(..n).collect());
        size = size.saturating_mul(plan.growth.max(1));
    }
    waves.retain(|w| !w.is_empty());
    waves
}

/// Reads the version of a bundle (the appliances verify it; this only plans).
pub fn bundle_version(path: &Path) -> Result<Version, FleetError> {
    let err = |detail: String| FleetError::Bundle {
        path: path.to_path_buf(),
        detail,
    };
    let b = Bundle::open(path).map_err(|e| err(e.to_string()))?;
    if !b.is_signed() {
        return Err(err("not signed; sign it with holdline-image first".into()));
    }
    Ok(b.manifest_unverified()
        .map_err(|e| err(e.to_string()))?
        .version)
}

/// Loads a saved rollout, if any.
pub fn load(path: &Path) -> Result<Option<Rollout>, FleetError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| FleetError::State {
                path: path.to_path_buf(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FleetError::State {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

fn save(path: &Path, r: &Rollout) -> Result<(), FleetError> {
    let err = |e: String| FleetError::State {
        path: path.to_path_buf(),
        detail: e,
    };
    let bytes = serde_json::to_vec_pretty(r).map_err(|e| err(e.to_string()))?;
    holdline_update::write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
}

/// Plans a new rollout; refuses while another one is running or halted.
pub fn start(
    inv: &Inventory,
    bundle: &Path,
    plan: &Plan,
    timeout: Duration,
    poll: Duration,
    state: &Path,
) -> Result<Rollout, FleetError> {
    if let Some(old) = load(state)? {
        let what = match old.phase {
            Phase::Running { .. } => Some("running"),
            Phase::Halted { .. } => Some("halted"),
            Phase::Aborted { .. } | Phase::Complete => None,
        };
        if let Some(what) = what {
            return Err(FleetError::Busy {
                version: old.version,
                what,
                path: state.to_path_buf(),
            });
        }
    }
    let version = bundle_version(bundle)?;
    let r = Rollout {
        bundle: bundle.to_path_buf(),
        version,
        waves: plan_waves(inv, plan),
        done: BTreeSet::new(),
        phase: Phase::Running { wave: 0 },
        timeout_secs: timeout.as_secs(),
        poll_ms: u64::try_from(poll.as_millis()).unwrap_or(u64::MAX),
    };
    save(state, &r)?;
    Ok(r)
}

enum Check {
    Done,
    Pending(String),
    Failed(String),
}

fn check(client: &Client, a: &crate::inventory::Appliance, target: &Version) -> Check {
    let st = match client.update_status(a) {
        Ok(s) => s,
        Err(ClientError::Unauthorized) => return Check::Failed("token refused (401)".into()),
        Err(e) => return Check::Pending(format!("no answer ({e}); rebooting?")),
    };
    match &st.last_result {
        Some(LastResult::RolledBack {
            version, reason, ..
        }) if version == target => {
            let running = st
                .running_version
                .map_or_else(|| "?".to_owned(), |v| v.to_string());
            return Check::Failed(format!(
                "rolled back to {running} by the appliance: {reason}"
            ));
        }
        Some(LastResult::WriteFailed {
            version, reason, ..
        }) if version == target => {
            return Check::Failed(format!("could not write its inactive slot: {reason}"));
        }
        _ => {}
    }
    match &st.trial {
        Trial::Pending { .. } => return Check::Pending("installed, waiting for the reboot".into()),
        Trial::Running { healthy_since, .. } => {
            return Check::Pending(match healthy_since {
                Some(_) => "trial boot, healthy, inside the health window".into(),
                None => "trial boot, not healthy yet".into(),
            })
        }
        Trial::None => {}
    }
    if st.running_version.as_ref() != Some(target) {
        let v = st
            .running_version
            .map_or_else(|| "?".to_owned(), |v| v.to_string());
        return Check::Pending(format!("running {v}, waiting"));
    }
    match client.health(a) {
        Ok(h) if h.healthy => Check::Done,
        Ok(h) => Check::Pending(format!(
            "committed but unhealthy: {}",
            h.problems.join("; ")
        )),
        Err(e) => Check::Pending(format!("health: {e}")),
    }
}

fn already_there(
    client: &Client,
    a: &crate::inventory::Appliance,
    target: &Version,
) -> Result<bool, ClientError> {
    let st = client.update_status(a)?;
    Ok(st.trial == Trial::None && st.running_version.as_ref() == Some(target))
}

/// Drives the rollout from its current wave to completion or a halt,
/// printing progress to `out` and saving `state` after every step.
pub fn drive(
    r: &mut Rollout,
    state: &Path,
    inv: &Inventory,
    client: &Client,
    retry_failed: bool,
    out: &mut dyn Write,
) -> Result<Outcome, FleetError> {
    let mut wave = match &r.phase {
        Phase::Running { wave } | Phase::Halted { wave, .. } => *wave,
        Phase::Complete => return Ok(Outcome::Complete),
        Phase::Aborted { .. } => return Err(FleetError::NothingTo("resume (it was aborted)")),
    };
    let bytes = std::fs::read(&r.bundle).map_err(|e| FleetError::Bundle {
        path: r.bundle.clone(),
        detail: e.to_string(),
    })?;
    let total = r.waves.len();
    let count: usize = r.waves.iter().map(Vec::len).sum();
    writeln!(
        out,
        "rollout {} to {count} appliances in {total} waves: {}",
        r.version,
        r.waves
            .iter()
            .map(|w| format!("[{}]", w.join(" ")))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    while wave < total {
        r.phase = Phase::Running { wave };
        save(state, r)?;
        let names = r.waves[wave].clone();
        let label = if wave == 0 { "canary" } else { "wave" };
        writeln!(
            out,
            "wave {}/{total} ({label}): {}",
            wave + 1,
            names.join(" ")
        )?;
        let failures = run_wave(r, &names, inv, client, retry_failed, &bytes, out)?;
        if !failures.is_empty() {
            let untouched: usize = r.waves[wave + 1..].iter().map(Vec::len).sum();
            for f in &failures {
                writeln!(
                    out,
                    "HALTED in wave {}/{total}: {}: {}",
                    wave + 1,
                    f.appliance,
                    f.reason
                )?;
            }
            writeln!(
                out,
                "rollout halted before wave {}; {untouched} appliance(s) not touched. Fix, then `resume` (with --retry-failed to retry a rolled-back version) or `abort`.",
                wave + 2
            )?;
            r.phase = Phase::Halted {
                wave,
                failures: failures.clone(),
            };
            save(state, r)?;
            return Ok(Outcome::Halted(failures));
        }
        writeln!(
            out,
            "wave {}/{total} done: {} committed and healthy",
            wave + 1,
            names.len()
        )?;
        wave += 1;
    }
    r.phase = Phase::Complete;
    save(state, r)?;
    writeln!(
        out,
        "rollout complete: {count}/{count} appliances on {}",
        r.version
    )?;
    Ok(Outcome::Complete)
}

fn run_wave(
    r: &mut Rollout,
    names: &[String],
    inv: &Inventory,
    client: &Client,
    retry_failed: bool,
    bundle: &[u8],
    out: &mut dyn Write,
) -> Result<Vec<Failure>, FleetError> {
    let mut failures = Vec::new();
    let mut fail = |name: &str, reason: String, out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out, "  {name}: FAILED: {reason}")?;
        failures.push(Failure {
            appliance: name.to_owned(),
            reason,
        });
        Ok(())
    };
    let mut pending: BTreeMap<String, String> = BTreeMap::new();
    for name in names {
        if r.done.contains(name) {
            writeln!(out, "  {name}: already done")?;
            continue;
        }
        let Some(a) = inv.get(name) else {
            fail(name, "not in the inventory any more".into(), out)?;
            continue;
        };
        match already_there(client, a, &r.version) {
            Ok(true) => {
                pending.insert(name.clone(), "already running this version".into());
                writeln!(out, "  {name}: already running {}", r.version)?;
                continue;
            }
            Ok(false) => {}
            Err(e) => {
                fail(name, format!("status before upload: {e}"), out)?;
                continue;
            }
        }
        writeln!(out, "  {name}: uploading {} bytes", bundle.len())?;
        match client.install(a, bundle, retry_failed) {
            Ok(ans) if ans.ok => {
                writeln!(out, "  {name}: {}", ans.message)?;
                pending.insert(name.clone(), ans.message);
            }
            Ok(ans) => fail(name, format!("refused the bundle: {}", ans.message), out)?,
            Err(e) => fail(name, format!("upload failed: {e}"), out)?,
        }
    }
    let started = Instant::now();
    let timeout = Duration::from_secs(r.timeout_secs);
    let poll = Duration::from_millis(r.poll_ms);
    while !pending.is_empty() {
        std::thread::sleep(poll);
        for (name, note) in pending.clone() {
            let Some(a) = inv.get(&name) else { continue };
            match check(client, a, &r.version) {
                Check::Done => {
                    writeln!(
                        out,
                        "  {name}: committed {} and healthy ({} s)",
                        r.version,
                        started.elapsed().as_secs()
                    )?;
                    pending.remove(&name);
                    r.done.insert(name);
                }
                Check::Failed(reason) => {
                    pending.remove(&name);
                    fail(&name, reason, out)?;
                }
                Check::Pending(now) => {
                    if now != note {
                        writeln!(out, "  {name}: {now}")?;
                        pending.insert(name, now);
                    }
                }
            }
        }
        if started.elapsed() > timeout {
            for (name, note) in std::mem::take(&mut pending) {
                fail(
                    &name,
                    format!(
                        "did not commit {} and report healthy within {} s (last seen: {note})",
                        r.version, r.timeout_secs
                    ),
                    out,
                )?;
            }
        }
    }
    Ok(failures)
}

/// Marks the saved rollout aborted and says where it stopped.
pub fn abort(state: &Path, out: &mut dyn Write) -> Result<(), FleetError> {
    let mut r = load(state)?.ok_or(FleetError::NothingTo("abort"))?;
    let wave = match r.phase {
        Phase::Running { wave } | Phase::Halted { wave, .. } => wave,
        Phase::Aborted { .. } => return Err(FleetError::NothingTo("abort (already aborted)")),
        Phase::Complete => return Err(FleetError::NothingTo("abort (it completed)")),
    };
    r.phase = Phase::Aborted { wave };
    save(state, &r)?;
    let done: Vec<&str> = r.done.iter().map(String::as_str).collect();
    writeln!(
        out,
        "rollout of {} aborted in wave {}/{}; on the new version: {}",
        r.version,
        wave + 1,
        r.waves.len(),
        if done.is_empty() {
            "none".to_owned()
        } else {
            done.join(" ")
        }
    )?;
    Ok(())
}

/// The same read-back as [`status_table`], as JSON: one object per
/// appliance with its `update` status and `health` (null when unreachable,
/// with `error` saying why).
pub fn status_json(inv: &Inventory, client: &Client) -> (serde_json::Value, bool) {
    let mut all_ok = true;
    let rows = inv
        .appliances
        .iter()
        .map(|a| {
            let update = client.update_status(a);
            let health = client.health(a);
            all_ok &= update.is_ok() && health.as_ref().is_ok_and(|h| h.healthy);
            let error = match (&update, &health) {
                (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                _ => None,
            };
            serde_json::json!({
                "name": a.name,
                "group": a.group,
                "address": a.address.to_string(),
                "update": update.ok(),
                "health": health.ok(),
                "error": error,
            })
        })
        .collect();
    (serde_json::Value::Array(rows), all_ok)
}

/// One row per appliance: version, slot, trial, health, last result.
pub fn status_table(inv: &Inventory, client: &Client) -> (String, bool) {
    let mut all_ok = true;
    let mut s = format!(
        "{:<14} {:<8} {:<21} {:<8} {:<4} {:<9} {}\n",
        "NAME", "GROUP", "ADDRESS", "VERSION", "SLOT", "HEALTH", "LAST"
    );
    for a in &inv.appliances {
        let (version, slot, last) = match client.update_status(a) {
            Ok(st) => {
                let trial = match &st.trial {
                    Trial::None => String::new(),
                    Trial::Pending { version, .. } | Trial::Running { version, .. } => {
                        format!("trial {version}; ")
                    }
                };
                (
                    st.running_version
                        .map_or_else(|| "?".to_owned(), |v| v.to_string()),
                    st.booted.to_string(),
                    format!(
                        "{trial}{}",
                        st.last_result
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), holdline_update::agent::describe)
                    ),
                )
            }
            Err(e) => {
                all_ok = false;
                ("?".into(), "?".into(), e.to_string())
            }
        };
        let health = match client.health(a) {
            Ok(h) if h.healthy => "healthy".to_owned(),
            Ok(_) => {
                all_ok = false;
                "UNHEALTHY".to_owned()
            }
            Err(_) => {
                all_ok = false;
                "no answer".to_owned()
            }
        };
        let mut line = format!(
            "{:<14} {:<8} {:<21} {:<8} {:<4} {:<9} {}",
            a.name, a.group, a.address, version, slot, health, last
        );
        if line.chars().count() > 120 {
            line = line.chars().take(117).collect::<String>() + "...";
        }
        s.push_str(&line);
        s.push('\n');
    }
    (s, all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Appliance;

    fn inv(groups: &[&str]) -> Inventory {
        Inventory {
            appliances: groups
                .iter()
                .enumerate()
                .map(|(i, g)| Appliance {
                    name: format!("a{i}"),
                    address: ([127, 0, 0, 1], 8000 + i as u16).into(),
                    group: (*g).into(),
                    token: Some("t".into()),
                    token_file: None,
                    ca_file: None,
                })
                .collect(),
        }
    }

    #[test]
    fn waves_grow_after_the_canaries() {
        let plan = Plan {
            canary: 1,
            first_wave: 2,
            growth: 2,
        };
        let w = plan_waves(&inv(&["x"; 10]), &plan);
        let sizes: Vec<usize> = w.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 2, 4, 3]);
        // The canary group goes first wherever it is in the file.
        let w = plan_waves(&inv(&["x", "x", "canary", "x", "canary"]), &plan);
        assert_eq!(w[0], vec!["a2", "a4"]);
        assert_eq!(w[1], vec!["a0", "a1"]);
        assert_eq!(w[2], vec!["a3"]);
        // One appliance: one wave.
        assert_eq!(
            plan_waves(&inv(&["x"]), &plan),
            vec![vec!["a0".to_string()]]
        );
    }
}
