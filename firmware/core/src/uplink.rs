//! The OPTIONS probe of the cloud, driving holdline-survival's uplink state
//! machine ([`UplinkMonitor`]: Up → Suspect → Down → Recovering with a
//! hold-down that grows when the cloud flaps). This module adds what the
//! monitor leaves to its driver: which Via branch belongs to which probe,
//! round-trip times, and `Instant` ↔ [`Millis`] conversion.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use holdline_survival::uplink::{
    Failure, Mode, ProbeId, Reason, UplinkConfig, UplinkEvent, UplinkInput, UplinkKind,
    UplinkMonitor, UplinkStatus,
};
use holdline_survival::Millis;

pub use holdline_survival::uplink::Uplink;

/// Probe settings (the daemon's `[uplink]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Interval between probes while Up.
    pub interval: Duration,
    /// A probe unanswered this long is a failure.
    pub timeout: Duration,
    /// Failures in a row before Down.
    pub down_after: u32,
}

impl ProbeConfig {
    /// The monitor's settings: survival's defaults with ours on top
    /// (Suspect probes at least as fast as Up ones).
    pub fn monitor_config(&self) -> UplinkConfig {
        let d = UplinkConfig::default();
        UplinkConfig {
            probe_interval_up: self.interval,
            probe_interval_suspect: d.probe_interval_suspect.min(self.interval),
            probe_interval_down: d
                .probe_interval_down
                .max(self.interval)
                .min(self.interval * 2),
            probe_interval_recovering: self.interval,
            probe_timeout: self.timeout,
            down_after_failures: self.down_after.max(1),
            ..d
        }
    }
}

/// Short, static name of an uplink state (`up`, `suspect`, `down`, `recovering`).
pub fn state_name(u: &Uplink) -> &'static str {
    match u.kind() {
        UplinkKind::Up => "up",
        UplinkKind::Suspect => "suspect",
        UplinkKind::Down => "down",
        UplinkKind::Recovering => "recovering",
    }
}

/// Short, static name of why a transition happened (`probe_timeout`,
/// `transaction_timeout`, `transport_error`, `service_unavailable`,
/// `answered`, `hold_down_elapsed`, `forced`): logs, the event log and
/// `show cloud` use it.
pub fn reason_name(r: &Reason) -> &'static str {
    match r {
        Reason::Failure(Failure::ProbeTimeout) => "probe_timeout",
        Reason::Failure(Failure::TransactionTimeout) => "transaction_timeout",
        Reason::Failure(Failure::TransportError) => "transport_error",
        Reason::Failure(Failure::ServiceUnavailable) => "service_unavailable",
        Reason::Answered => "answered",
        Reason::HoldDownElapsed => "hold_down_elapsed",
        Reason::Forced => "forced",
    }
}

/// The last state change, for `show cloud`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastChange {
    /// From which state.
    pub from: UplinkKind,
    /// To which state.
    pub to: UplinkKind,
    /// Why.
    pub reason: Reason,
    /// When (the driver's clock).
    pub at: Instant,
}

/// The probe and the uplink state it drives.
#[derive(Debug)]
pub struct Probe {
    cfg: ProbeConfig,
    epoch: Instant,
    monitor: UplinkMonitor,
    outstanding: HashMap<String, (ProbeId, Instant)>,
    /// Probes answered.
    pub answered: u64,
    /// Round-trip time of the last answered probe.
    pub last_rtt: Option<Duration>,
    /// Status code of the last answered probe.
    pub last_status: Option<u16>,
    /// The last transition drained with [`Probe::poll_event`].
    pub last_change: Option<LastChange>,
}

impl Probe {
    /// A probe whose first OPTIONS is due at `now`; the cloud is presumed Up.
    pub fn new(cfg: ProbeConfig, now: Instant) -> Self {
        Probe {
            cfg,
            epoch: now,
            monitor: UplinkMonitor::new(cfg.monitor_config(), Millis::ZERO),
            outstanding: HashMap::new(),
            answered: 0,
            last_rtt: None,
            last_status: None,
            last_change: None,
        }
    }

    fn ms(&self, t: Instant) -> Millis {
        Millis::from_instant(self.epoch, t)
    }

    /// Current state.
    pub fn state(&self) -> &Uplink {
        self.monitor.state()
    }

    /// Current state's name.
    pub fn state_name(&self) -> &'static str {
        state_name(self.monitor.state())
    }

    /// Requests should go to the cloud (Up or Suspect).
    pub fn cloud_usable(&self) -> bool {
        self.monitor.cloud_usable()
    }

    /// Settings.
    pub fn config(&self) -> ProbeConfig {
        self.cfg
    }

    /// Probes handed out.
    pub fn sent(&self) -> u64 {
        self.monitor.counters().probes_sent
    }

    /// Everything `show cloud` needs (times in the monitor's milliseconds).
    pub fn status(&self, now: Instant) -> UplinkStatus {
        self.monitor.status(self.ms(now))
    }

    /// `Millis` of the monitor → `Instant`.
    pub fn instant(&self, m: Millis) -> Instant {
        m.to_instant(self.epoch)
    }

    /// Current override mode.
    pub fn mode(&self) -> Mode {
        self.monitor.mode()
    }

    /// If a probe is due, records it and returns its Via branch (made by
    /// `branch_for` from the probe's number). Call until `None`.
    pub fn poll_send(
        &mut self,
        now: Instant,
        branch_for: impl Fn(u64) -> String,
    ) -> Option<String> {
        let at = self.ms(now);
        let id = self.monitor.poll_probe(at)?;
        let branch = branch_for(id.0);
        self.outstanding.insert(branch.clone(), (id, now));
        Some(branch)
    }

    /// A response with this Via branch arrived; true when it answered a probe.
    /// Any answer, even an error status, proves the cloud alive (the monitor
    /// counts a 503 without a short Retry-After as a failure).
    pub fn on_response(
        &mut self,
        now: Instant,
        branch: &str,
        status: u16,
        retry_after: Option<Duration>,
    ) -> bool {
        let Some((id, sent)) = self.outstanding.remove(branch) else {
            return false;
        };
        self.answered += 1;
        self.last_rtt = Some(now.saturating_duration_since(sent));
        self.last_status = Some(status);
        let at = self.ms(now);
        self.monitor.handle(
            at,
            UplinkInput::ProbeResponse {
                id,
                status,
                retry_after,
            },
        );
        true
    }

    /// Any other response from the cloud to a request sent at `sent_at`.
    pub fn on_cloud_response(
        &mut self,
        now: Instant,
        sent_at: Instant,
        status: u16,
        retry_after: Option<Duration>,
    ) {
        let (at, sent_at) = (self.ms(now), self.ms(sent_at));
        self.monitor.handle(
            at,
            UplinkInput::CloudResponse {
                sent_at,
                status,
                retry_after,
            },
        );
    }

    /// True only in Up (emergency calls go to the cloud only then).
    pub fn is_up(&self) -> bool {
        self.monitor.is_up()
    }

    /// A transaction to the cloud sent at `sent_at` got nothing in time
    /// (e.g. an INVITE with no provisional within the fail-fast interval).
    pub fn on_transaction_timeout(&mut self, now: Instant, sent_at: Instant) {
        let (at, sent_at) = (self.ms(now), self.ms(sent_at));
        self.monitor
            .handle(at, UplinkInput::TransactionTimeout { sent_at });
    }

    /// Sending to the cloud failed at the transport.
    pub fn on_transport_error(&mut self, now: Instant, sent_at: Instant) {
        let (at, sent_at) = (self.ms(now), self.ms(sent_at));
        self.monitor
            .handle(at, UplinkInput::TransportError { sent_at });
    }

    /// `cloud force-down` / `force-up` / `auto`.
    pub fn set_mode(&mut self, now: Instant, mode: Mode) {
        let at = self.ms(now);
        self.monitor.set_mode(at, mode);
    }

    /// Expires probes and hold-downs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let at = self.ms(now);
        self.monitor.handle_timeout(at);
        // Forget branches of probes the monitor has already counted as lost.
        let keep = self.cfg.timeout * 4 + Duration::from_secs(1);
        self.outstanding
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < keep);
    }

    /// When [`Probe::handle_timeout`] / [`Probe::poll_send`] next have work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.monitor
            .poll_timeout()
            .map(|m| m.to_instant(self.epoch))
    }

    /// Transitions and other events, oldest first.
    pub fn poll_event(&mut self) -> Option<UplinkEvent> {
        let e = self.monitor.poll_event()?;
        if let UplinkEvent::Transition {
            at,
            from,
            to,
            reason,
        } = e
        {
            self.last_change = Some(LastChange {
                from,
                to,
                reason,
                at: self.instant(at),
            });
        }
        Some(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ProbeConfig {
        ProbeConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            down_after: 3,
        }
    }

    #[test]
    fn answered_probe_keeps_up_and_measures_rtt() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        let b = p.poll_send(t0, |n| format!("b{n}")).expect("due at start");
        assert!(p.poll_send(t0, |n| format!("b{n}")).is_none());
        assert!(!p.on_response(t0, "other", 200, None));
        assert!(p.on_response(t0 + Duration::from_millis(30), &b, 200, None));
        assert_eq!(p.state_name(), "up");
        assert_eq!(p.last_rtt, Some(Duration::from_millis(30)));
        assert_eq!(p.sent(), 1);
    }

    #[test]
    fn silence_goes_suspect_then_down_within_about_a_second_then_recovers() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        let mut t = t0;
        let mut seen = Vec::new();
        while t < t0 + Duration::from_secs(3) {
            p.handle_timeout(t);
            while p.poll_send(t, |n| format!("b{n}")).is_some() {}
            while let Some(e) = p.poll_event() {
                if let UplinkEvent::Transition { to, .. } = e {
                    seen.push((to, t.duration_since(t0)));
                }
            }
            t = p
                .poll_timeout()
                .unwrap_or(t + Duration::from_millis(10))
                .max(t + Duration::from_millis(1));
        }
        assert_eq!(p.state_name(), "down");
        let down_at = seen
            .iter()
            .find(|(k, _)| *k == UplinkKind::Down)
            .map(|(_, d)| *d)
            .expect("went down");
        assert!(down_at <= Duration::from_millis(1500), "{seen:?}");
        // answers again: Recovering, not Up at once (hold-down)
        let b = p
            .poll_send(t + Duration::from_secs(1), |n| format!("r{n}"))
            .expect("probe while down");
        assert!(p.on_response(t + Duration::from_secs(1), &b, 200, None));
        assert_eq!(p.state_name(), "recovering");
    }

    #[test]
    fn transport_errors_alone_make_it_down_and_the_reason_is_kept() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        for i in 0..3u64 {
            p.on_transport_error(t0 + Duration::from_millis(i), t0 + Duration::from_millis(i));
        }
        assert_eq!(p.state_name(), "down");
        let mut last = None;
        while let Some(e) = p.poll_event() {
            last = Some(e);
        }
        assert!(matches!(last, Some(UplinkEvent::Transition { .. })));
        let c = p.last_change.expect("a transition was drained");
        assert_eq!((c.from, c.to), (UplinkKind::Suspect, UplinkKind::Down));
        assert_eq!(reason_name(&c.reason), "transport_error");
        assert_eq!(p.status(t0).counters.transport_errors, 3);
    }

    #[test]
    fn forced_down_and_back() {
        let t0 = Instant::now();
        let mut p = Probe::new(cfg(), t0);
        p.set_mode(t0, Mode::ForcedDown);
        assert!(!p.cloud_usable());
        assert_eq!(p.mode(), Mode::ForcedDown);
        p.set_mode(t0, Mode::Auto);
        assert_eq!(p.mode(), Mode::Auto);
    }
}
