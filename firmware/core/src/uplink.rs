//! The OPTIONS probe of the cloud: when to send, what came back, and the
//! resulting uplink state. (The full Up → Suspect → Down → Recovering
//! machine with hold-down lives in holdline-survival; this is the probe
//! and the state it observes.)

use std::time::{Duration, Instant};

/// The uplink as the probe sees it; each state carries its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// No probe answered or missed yet.
    Unknown,
    /// The last probe was answered.
    Up {
        /// Since when.
        since: Instant,
        /// Round-trip time of the last answer.
        rtt: Duration,
    },
    /// Some probes in a row missed, fewer than the down threshold.
    Suspect {
        /// Since when.
        since: Instant,
        /// Missed in a row.
        missed: u32,
    },
    /// `down_after` probes in a row missed.
    Down {
        /// Since when.
        since: Instant,
        /// Missed in a row.
        missed: u32,
    },
}

impl Uplink {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Uplink::Unknown => "unknown",
            Uplink::Up { .. } => "up",
            Uplink::Suspect { .. } => "suspect",
            Uplink::Down { .. } => "down",
        }
    }
}

/// An OPTIONS in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outstanding {
    /// Via branch of the probe.
    pub branch: String,
    /// Sent at.
    pub sent_at: Instant,
}

/// Probe settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Interval between probes.
    pub interval: Duration,
    /// Missed after this long.
    pub timeout: Duration,
    /// Missed in a row before Down.
    pub down_after: u32,
}

/// The probe.
#[derive(Debug)]
pub struct Probe {
    cfg: ProbeConfig,
    state: Uplink,
    next_send: Instant,
    outstanding: Option<Outstanding>,
    seq: u64,
    /// Probes sent.
    pub sent: u64,
    /// Probes answered.
    pub answered: u64,
    /// Last RTT measured.
    pub last_rtt: Option<Duration>,
    /// Status code of the last answer.
    pub last_status: Option<u16>,
}

impl Probe {
    /// A probe that sends its first OPTIONS at `now`.
    pub fn new(cfg: ProbeConfig, now: Instant) -> Self {
        Probe {
            cfg,
            state: Uplink::Unknown,
            next_send: now,
            outstanding: None,
            seq: 0,
            sent: 0,
            answered: 0,
            last_rtt: None,
            last_status: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> &Uplink {
        &self.state
    }

    /// Settings.
    pub fn config(&self) -> ProbeConfig {
        self.cfg
    }

    /// If a probe is due, records it as sent and returns its sequence number
    /// (the caller makes the branch `…-probe-<seq>` and sends the OPTIONS).
    pub fn poll_send(
        &mut self,
        now: Instant,
        branch_for: impl FnOnce(u64) -> String,
    ) -> Option<String> {
        if self.outstanding.is_some() || now < self.next_send {
            return None;
        }
        self.seq += 1;
        self.sent += 1;
        let branch = branch_for(self.seq);
        self.outstanding = Some(Outstanding {
            branch: branch.clone(),
            sent_at: now,
        });
        self.next_send = now + self.cfg.interval;
        Some(branch)
    }

    /// A response arrived with this Via branch; true when it was our probe.
    /// Any answer, even an error status, proves the cloud is alive.
    pub fn on_response(&mut self, now: Instant, branch: &str, status: u16) -> bool {
        let Some(o) = &self.outstanding else {
            return false;
        };
        if o.branch != branch {
            return false;
        }
        let rtt = now.saturating_duration_since(o.sent_at);
        self.outstanding = None;
        self.answered += 1;
        self.last_rtt = Some(rtt);
        self.last_status = Some(status);
        let since = match &self.state {
            Uplink::Up { since, .. } => *since,
            _ => now,
        };
        self.state = Uplink::Up { since, rtt };
        true
    }

    /// Checks the probe deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(o) = &self.outstanding else {
            return;
        };
        if now < o.sent_at + self.cfg.timeout {
            return;
        }
        self.outstanding = None;
        let missed = match &self.state {
            Uplink::Suspect { missed, .. } | Uplink::Down { missed, .. } => missed + 1,
            _ => 1,
        };
        let since = match &self.state {
            Uplink::Suspect { since, .. } if missed < self.cfg.down_after => *since,
            Uplink::Down { since, .. } => *since,
            _ => now,
        };
        self.state = if missed >= self.cfg.down_after {
            Uplink::Down { since, missed }
        } else {
            Uplink::Suspect { since, missed }
        };
    }

    /// The next instant the probe needs attention.
    pub fn poll_timeout(&self) -> Instant {
        match &self.outstanding {
            Some(o) => o.sent_at + self.cfg.timeout,
            None => self.next_send,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            down_after: 3,
        }
    }

    #[test]
    fn answered_probe_is_up_with_rtt() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        let b = p.poll_send(t0, |n| format!("b{n}")).expect("due");
        assert!(p.poll_send(t0, |n| format!("b{n}")).is_none());
        assert!(!p.on_response(t0, "other", 200));
        assert!(p.on_response(t0 + Duration::from_millis(30), &b, 200));
        assert_eq!(
            p.state(),
            &Uplink::Up {
                since: t0 + Duration::from_millis(30),
                rtt: Duration::from_millis(30)
            }
        );
        assert_eq!(p.poll_timeout(), t0 + Duration::from_secs(5));
    }

    #[test]
    fn missed_probes_go_suspect_then_down_then_up() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        let mut t = t0;
        for i in 1..=3u32 {
            assert!(p.poll_send(t, |n| format!("b{n}")).is_some());
            t += Duration::from_secs(1);
            p.handle_timeout(t);
            if i < 3 {
                assert!(matches!(p.state(), Uplink::Suspect { missed, .. } if *missed == i));
            }
            t = p.poll_timeout();
        }
        assert!(matches!(p.state(), Uplink::Down { missed: 3, .. }));
        let b = p.poll_send(t, |n| format!("b{n}")).expect("due");
        assert!(p.on_response(t, &b, 503));
        assert_eq!(p.state().name(), "up");
        assert_eq!(p.last_status, Some(503));
    }
}
