//! A snapshot of the appliance's state, refreshed by the daemon's loop about
//! once a second, for readers outside the loop: the management API
//! ([`crate::mgmt::MgmtBackend`]) and the update agent's health verdict.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use holdline_update::agent::{InstallOptions, InstallReport};
use holdline_update::api::Health;
use holdline_update::UpdateStatus;

use crate::mgmt::{InstallFailure, MgmtBackend};
use crate::update_cmd::{self, UpdateConfig};

/// What the loop publishes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every critical task fresh.
    pub tasks_fresh: bool,
    /// Stale tasks, for the health answer.
    pub problems: Vec<String>,
    /// Uplink state name (`up`, `suspect`, `down`, `unknown`).
    pub cloud: String,
    /// `status --json`.
    pub status_json: String,
    /// Bindings in the cache.
    pub bindings: usize,
    /// Tracked subscriptions.
    pub subscriptions: usize,
    /// Calls not terminated.
    pub calls_active: usize,
    /// Probe round-trip time, seconds.
    pub rtt_s: Option<f64>,
    /// Records quarantined by the store since open.
    pub quarantined: u64,
    /// Watchdog resets counted by the board.
    pub watchdog_resets: u64,
    /// The edge serves the site without the cloud (survival: the cloud is
    /// suspect, down or recovering; local registrar and routing answer).
    pub survival_serving: bool,
    /// Uplink transitions since start, by the state entered
    /// (`suspect`, `down`, `recovering`, `up`).
    pub uplink_transitions: Vec<(&'static str, u64)>,
    /// Last resync: bindings given back (confirmed by the cloud), still
    /// pending, refused (integrity, provenance, liveness) or failed.
    pub resync: Option<ResyncCounts>,
}

/// Resync progress for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResyncCounts {
    /// Confirmed by the cloud.
    pub given_back: u64,
    /// Verified, not confirmed yet.
    pub pending: u64,
    /// Held back by the verification.
    pub refused: u64,
    /// Given up on.
    pub failed: u64,
}

impl Snapshot {
    /// Healthy as the update agent and the management API mean it: every
    /// critical task fresh (the SIP loop among them) and the cloud answering
    /// or survival serving the site without it (issue 7: an appliance in
    /// survival can still commit an update).
    pub fn healthy(&self) -> bool {
        self.tasks_fresh && (self.cloud == "up" || self.survival_serving)
    }
}

/// Shared handle on the snapshot.
pub type Shared = Arc<Mutex<Snapshot>>;

/// Reads the snapshot (a poisoned lock still yields the last value).
pub fn read(s: &Shared) -> Snapshot {
    s.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Replaces the snapshot.
pub fn write(s: &Shared, snap: Snapshot) {
    *s.lock().unwrap_or_else(|p| p.into_inner()) = snap;
}

/// The management API's view of the daemon.
pub struct Backend {
    /// The snapshot.
    pub shared: Shared,
    /// `[update]`.
    pub update: UpdateConfig,
    /// `[board] profile`.
    pub board: String,
}

impl MgmtBackend for Backend {
    fn health(&self) -> Health {
        let s = read(&self.shared);
        let mut problems = s.problems.clone();
        if s.cloud != "up" {
            problems.push(format!("cloud {}", s.cloud));
        }
        Health {
            healthy: s.healthy(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            problems,
        }
    }

    fn status_json(&self) -> String {
        read(&self.shared).status_json
    }

    fn metrics(&self) -> String {
        let s = read(&self.shared);
        let mut m = String::new();
        let mut g = |name: &str, help: &str, v: String| {
            let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        g(
            "holdline_registrations",
            "Bindings in the cache.",
            s.bindings.to_string(),
        );
        g(
            "holdline_subscriptions",
            "Tracked SUBSCRIBE dialogs.",
            s.subscriptions.to_string(),
        );
        g(
            "holdline_calls_active",
            "Calls not terminated.",
            s.calls_active.to_string(),
        );
        g(
            "holdline_cloud_up",
            "1 when the cloud answers the OPTIONS probe.",
            u8::from(s.cloud == "up").to_string(),
        );
        if let Some(rtt) = s.rtt_s {
            g(
                "holdline_cloud_rtt_seconds",
                "Last probe round-trip time.",
                format!("{rtt}"),
            );
        }
        g(
            "holdline_store_quarantined_records",
            "Records moved to quarantine since start.",
            s.quarantined.to_string(),
        );
        g(
            "holdline_watchdog_resets",
            "Watchdog resets counted on this appliance.",
            s.watchdog_resets.to_string(),
        );
        g(
            "holdline_tasks_fresh",
            "1 when every critical task checks in on time.",
            u8::from(s.tasks_fresh).to_string(),
        );
        g(
            "holdline_survival_serving",
            "1 when the site is served without the cloud.",
            u8::from(s.survival_serving).to_string(),
        );
        if !s.uplink_transitions.is_empty() {
            let name = "holdline_cloud_transitions_total";
            let _ = writeln!(
                m,
                "# HELP {name} Uplink state changes since start, by state entered.\n# TYPE {name} counter"
            );
            for (to, n) in &s.uplink_transitions {
                let _ = writeln!(m, "{name}{{to=\"{to}\"}} {n}");
            }
        }
        if let Some(r) = s.resync {
            let name = "holdline_resync_bindings";
            let _ = writeln!(
                m,
                "# HELP {name} Last resync after an outage: bindings by outcome.\n# TYPE {name} gauge"
            );
            for (state, n) in [
                ("given_back", r.given_back),
                ("pending", r.pending),
                ("refused", r.refused),
                ("failed", r.failed),
            ] {
                let _ = writeln!(m, "{name}{{state=\"{state}\"}} {n}");
            }
        }
        m
    }

    fn update_status(&self) -> Result<UpdateStatus, String> {
        update_cmd::status(&self.update, &self.board).map_err(|e| e.to_string())
    }

    fn install(
        &self,
        bundle: &Path,
        opts: InstallOptions,
    ) -> Result<InstallReport, InstallFailure> {
        update_cmd::install_for_api(&self.update, &self.board, bundle, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_and_metrics_follow_the_snapshot() {
        let shared: Shared = Arc::new(Mutex::new(Snapshot::default()));
        let b = Backend {
            shared: shared.clone(),
            update: UpdateConfig::default(),
            board: "sim".into(),
        };
        assert!(!b.health().healthy);
        write(
            &shared,
            Snapshot {
                tasks_fresh: true,
                cloud: "up".into(),
                bindings: 7,
                rtt_s: Some(0.002),
                ..Snapshot::default()
            },
        );
        assert!(b.health().healthy);
        let m = b.metrics();
        assert!(m.contains("holdline_registrations 7"), "{m}");
        assert!(m.contains("holdline_cloud_up 1"), "{m}");
        assert!(m.contains("holdline_cloud_rtt_seconds 0.002"), "{m}");
        // survival serving counts as healthy; transitions and resync are exported
        write(
            &shared,
            Snapshot {
                tasks_fresh: true,
                cloud: "down".into(),
                survival_serving: true,
                uplink_transitions: vec![("down", 2), ("up", 1)],
                resync: Some(ResyncCounts {
                    given_back: 4,
                    pending: 0,
                    refused: 2,
                    failed: 0,
                }),
                ..Snapshot::default()
            },
        );
        assert!(b.health().healthy);
        let m = b.metrics();
        assert!(
            m.contains("holdline_cloud_transitions_total{to=\"down\"} 2"),
            "{m}"
        );
        assert!(
            m.contains("holdline_resync_bindings{state=\"refused\"} 2"),
            "{m}"
        );
        assert!(m.contains("holdline_survival_serving 1"), "{m}");
        write(
            &shared,
            Snapshot {
                tasks_fresh: false,
                cloud: "down".into(),
                survival_serving: true,
                ..Snapshot::default()
            },
        );
        assert!(!b.health().healthy, "a stale task is never healthy");
    }
}
