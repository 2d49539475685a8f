//! Uplink state machine: is the cloud answering?
//!
//! `Up → Suspect → Down → Recovering → Up`, driven by OPTIONS probes it asks
//! the driver to send, and by what the driver sees on every transaction that
//! crosses the uplink (responses, time-outs, transport errors, 503s).
//!
//! Driving it (quinn-proto style, time is always an argument):
//! ```text
//! loop {
//!     monitor.handle_timeout(now);
//!     while let Some(probe) = monitor.poll_probe(now) { send OPTIONS, remember probe id }
//!     while let Some(ev) = monitor.poll_event() { log, count, store, start/stop resync }
//!     sleep until monitor.poll_timeout() or until an input arrives:
//!     monitor.handle(now, UplinkInput::...)
//! }
//! ```
//!
//! Detection with the defaults: a probe every 500 ms while Up (or 500 ms after
//! the cloud was last heard), a probe times out after 300 ms, the first failure
//! makes the uplink Suspect, Suspect probes every 150 ms, and three failures in a
//! row (none of them older than the last answer) make it Down. The worst case
//! after the cloud goes silent is 500 + 300 + 150 + 300 = 1250 ms. A single lost
//! packet is one failure: it makes the uplink Suspect, and the next answer makes
//! it Up again.
//!
//! Recovery: the first answer in Down makes it Recovering; it becomes Up (and
//! a resync is allowed) only after a steady hold-down. The hold-down doubles for
//! each flap (a resync or a failed recovery) within `flap_window`, and shrinks
//! back as those age out of the window; the resync rate is divided by the same
//! factor, so a second failure ten minutes after the first gives a longer
//! hold-down and a gentler resync, not a second storm.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use crate::time::Millis;

/// Tunables of the uplink monitor. `Default` gives the documented figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    /// Probe interval while Up (counted from the last probe or the last answer heard).
    pub probe_interval_up: Duration,
    /// Probe interval while Suspect.
    pub probe_interval_suspect: Duration,
    /// Probe interval while Down.
    pub probe_interval_down: Duration,
    /// Probe interval while Recovering.
    pub probe_interval_recovering: Duration,
    /// A probe not answered within this time is a failure.
    pub probe_timeout: Duration,
    /// Consecutive failures (Suspect, Recovering) that make the uplink Down.
    pub down_after_failures: u32,
    /// A 503 whose Retry-After is above this (or absent) counts as a failure.
    pub retry_after_threshold: Duration,
    /// Hold-down before the first recovery in a flap window.
    pub hold_down_base: Duration,
    /// Upper bound of the grown hold-down.
    pub hold_down_max: Duration,
    /// Answers needed during the hold-down (besides its duration).
    pub recover_successes: u32,
    /// How long a flap (resync or failed recovery) keeps counting.
    pub flap_window: Duration,
}

impl Default for UplinkConfig {
    fn default() -> Self {
        UplinkConfig {
            probe_interval_up: Duration::from_millis(500),
            probe_interval_suspect: Duration::from_millis(150),
            probe_interval_down: Duration::from_millis(1000),
            probe_interval_recovering: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            down_after_failures: 3,
            retry_after_threshold: Duration::from_secs(10),
            hold_down_base: Duration::from_secs(10),
            hold_down_max: Duration::from_secs(300),
            recover_successes: 3,
            flap_window: Duration::from_secs(30 * 60),
        }
    }
}

/// Identifies one probe (OPTIONS) the driver was asked to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

/// Why the cloud counts as failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// A probe got no answer within `probe_timeout`.
    ProbeTimeout,
    /// A transaction to the cloud timed out (includes an INVITE with no
    /// provisional within the fail-fast interval).
    TransactionTimeout,
    /// Sending to the cloud failed (ICMP unreachable, TCP reset, ...).
    TransportError,
    /// 503 without Retry-After, or with one above the threshold.
    ServiceUnavailable,
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Evidence that the cloud is failing.
    Failure(Failure),
    /// The cloud answered.
    Answered,
    /// The cloud answered steadily for the whole hold-down.
    HoldDownElapsed,
    /// A technician forced the state (`cloud force-down` / `cloud force-up`).
    Forced,
}

/// The uplink's state; each variant carries what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// The cloud answers.
    Up {
        /// When this state was entered.
        since: Millis,
    },
    /// A failure was seen; probing faster.
    Suspect {
        /// When this state was entered.
        since: Millis,
        /// Consecutive failures, none older than the last answer.
        failures: u32,
    },
    /// The cloud counts as gone: survival mode.
    Down {
        /// When this state was entered.
        since: Millis,
        /// When the outage began (kept across failed recoveries).
        outage_since: Millis,
        /// What made it Down.
        reason: Reason,
    },
    /// The cloud answers again; waiting for the hold-down.
    Recovering {
        /// When this state was entered.
        since: Millis,
        /// When the outage began.
        outage_since: Millis,
        /// Hold-down for this recovery (grown by recent flaps).
        hold_down: Duration,
        /// Flaps within the window when this recovery began.
        flap_level: u32,
        /// Answers seen since `since`.
        successes: u32,
        /// Consecutive failures since the last answer.
        failures: u32,
    },
}

/// The variant of [`Uplink`] without its data (for logs, counters, display).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UplinkKind {
    /// See [`Uplink::Up`].
    Up,
    /// See [`Uplink::Suspect`].
    Suspect,
    /// See [`Uplink::Down`].
    Down,
    /// See [`Uplink::Recovering`].
    Recovering,
}

impl fmt::Display for UplinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UplinkKind::Up => "up",
            UplinkKind::Suspect => "suspect",
            UplinkKind::Down => "down",
            UplinkKind::Recovering => "recovering",
        })
    }
}

impl Uplink {
    /// The variant without data.
    pub fn kind(&self) -> UplinkKind {
        match self {
            Uplink::Up { .. } => UplinkKind::Up,
            Uplink::Suspect { .. } => UplinkKind::Suspect,
            Uplink::Down { .. } => UplinkKind::Down,
            Uplink::Recovering { .. } => UplinkKind::Recovering,
        }
    }

    /// When the current state was entered.
    pub fn since(&self) -> Millis {
        match self {
            Uplink::Up { since }
            | Uplink::Suspect { since, .. }
            | Uplink::Down { since, .. }
            | Uplink::Recovering { since, .. } => *since,
        }
    }
}

/// Manual override for field technicians.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The state follows the evidence.
    Auto,
    /// Held Down whatever the cloud does (`cloud force-down`).
    ForcedDown,
    /// Held Up whatever the cloud does (`cloud force-up`).
    ForcedUp,
}

/// What the rest of the system must know; drain with [`UplinkMonitor::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkEvent {
    /// The state changed: log it, count it, store it in the event log.
    Transition {
        /// When.
        at: Millis,
        /// From which state.
        from: UplinkKind,
        /// To which state.
        to: UplinkKind,
        /// Why.
        reason: Reason,
    },
    /// The cloud is back: start the verified resync now.
    ResyncAllowed {
        /// When.
        at: Millis,
        /// When the outage that ends here began.
        outage_since: Millis,
        /// Flaps in the window before this one (0: first in the window).
        flap_level: u32,
        /// Divide `resync_rate` by this (1 for the first resync in a window).
        rate_divisor: u32,
    },
    /// The mode changed.
    ModeChanged {
        /// When.
        at: Millis,
        /// The new mode.
        mode: Mode,
    },
}

/// Inputs from the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkInput {
    /// A response to a probe arrived (`retry_after` from a 503's Retry-After).
    ProbeResponse {
        /// Which probe.
        id: ProbeId,
        /// Status code.
        status: u16,
        /// Retry-After of the response, if any.
        retry_after: Option<Duration>,
    },
    /// Sending a probe failed at the transport.
    ProbeTransportError {
        /// Which probe.
        id: ProbeId,
    },
    /// Any response from the cloud to a transaction the proxy sent.
    CloudResponse {
        /// When the request was sent.
        sent_at: Millis,
        /// Status code.
        status: u16,
        /// Retry-After of the response, if any.
        retry_after: Option<Duration>,
    },
    /// A transaction to the cloud timed out (or an INVITE got no provisional
    /// within the fail-fast interval).
    TransactionTimeout {
        /// When the request was sent.
        sent_at: Millis,
    },
    /// Sending a request to the cloud failed at the transport.
    TransportError {
        /// When the request was sent.
        sent_at: Millis,
    },
}

/// Counters for `show cloud`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UplinkCounters {
    /// Probes handed to the driver.
    pub probes_sent: u64,
    /// Probes answered (any status).
    pub probes_answered: u64,
    /// Probes that timed out.
    pub probes_timed_out: u64,
    /// Failures counted, by kind: probe time-outs are in `probes_timed_out`.
    pub transaction_timeouts: u64,
    /// Transport errors (probes and transactions).
    pub transport_errors: u64,
    /// 503s that counted as failures.
    pub service_unavailable: u64,
    /// Transitions into Suspect.
    pub to_suspect: u64,
    /// Transitions into Down.
    pub to_down: u64,
    /// Transitions into Recovering.
    pub to_recovering: u64,
    /// Transitions into Up.
    pub to_up: u64,
    /// Recoveries that fell back to Down.
    pub recoveries_failed: u64,
    /// Resyncs allowed.
    pub resyncs: u64,
}

/// What `show cloud` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkStatus {
    /// Current state.
    pub state: Uplink,
    /// Current mode.
    pub mode: Mode,
    /// Last time the cloud was heard (any answer).
    pub last_heard: Option<Millis>,
    /// Flaps within the window now.
    pub flap_level: u32,
    /// Hold-down a recovery starting now would use.
    pub hold_down: Duration,
    /// Counters.
    pub counters: UplinkCounters,
}

const MAX_FLAP_HISTORY: usize = 32;
const MAX_LEVEL: u32 = 6;

/// Sans-IO uplink monitor.
#[derive(Debug, Clone)]
pub struct UplinkMonitor {
    config: UplinkConfig,
    state: Uplink,
    mode: Mode,
    next_probe_id: u64,
    next_probe_at: Millis,
    outstanding: VecDeque<(ProbeId, Millis)>,
    last_heard: Option<Millis>,
    flaps: VecDeque<Millis>,
    events: VecDeque<UplinkEvent>,
    counters: UplinkCounters,
}

impl UplinkMonitor {
    /// A monitor that starts Up (the cloud is presumed to answer at boot; if it
    /// does not, the usual detection applies) and probes at once. Intervals
    /// and the probe timeout are clamped to at least 10 ms (a zero interval
    /// would ask for probes forever at the same instant).
    pub fn new(config: UplinkConfig, now: Millis) -> UplinkMonitor {
        let floor = Duration::from_millis(10);
        let config = UplinkConfig {
            probe_interval_up: config.probe_interval_up.max(floor),
            probe_interval_suspect: config.probe_interval_suspect.max(floor),
            probe_interval_down: config.probe_interval_down.max(floor),
            probe_interval_recovering: config.probe_interval_recovering.max(floor),
            probe_timeout: config.probe_timeout.max(floor),
            ..config
        };
        UplinkMonitor {
            config,
            state: Uplink::Up { since: now },
            mode: Mode::Auto,
            next_probe_id: 1,
            next_probe_at: now,
            outstanding: VecDeque::new(),
            last_heard: None,
            flaps: VecDeque::new(),
            events: VecDeque::new(),
            counters: UplinkCounters::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &UplinkConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &Uplink {
        &self.state
    }

    /// The current manual mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True when requests should go to the cloud first (Up or Suspect).
    /// In Down and Recovering new calls are routed locally from the start.
    pub fn cloud_usable(&self) -> bool {
        matches!(self.state, Uplink::Up { .. } | Uplink::Suspect { .. })
    }

    /// True only in Up (emergency calls go to the cloud only then).
    pub fn is_up(&self) -> bool {
        matches!(self.state, Uplink::Up { .. })
    }

    /// Counters.
    pub fn counters(&self) -> &UplinkCounters {
        &self.counters
    }

    /// Everything `show cloud` needs.
    pub fn status(&self, now: Millis) -> UplinkStatus {
        let level = self.flap_level(now);
        UplinkStatus {
            state: self.state.clone(),
            mode: self.mode,
            last_heard: self.last_heard,
            flap_level: level,
            hold_down: self.hold_down_for(level),
            counters: self.counters.clone(),
        }
    }

    /// Flaps (resyncs and failed recoveries) within the window ending `now`.
    pub fn flap_level(&self, now: Millis) -> u32 {
        let window = self.config.flap_window;
        let n = self
            .flaps
            .iter()
            .filter(|t| now.since(**t) < window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX).min(MAX_LEVEL)
    }

    fn hold_down_for(&self, level: u32) -> Duration {
        let grown = self
            .config
            .hold_down_base
            .saturating_mul(1u32 << level.min(MAX_LEVEL));
        grown.min(self.config.hold_down_max.max(self.config.hold_down_base))
    }

    /// Next event of interest.
    pub fn poll_event(&mut self) -> Option<UplinkEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` (or `poll_probe`) next has work to do.
    pub fn poll_timeout(&self) -> Option<Millis> {
        let probe_deadline = self
            .outstanding
            .front()
            .map(|(_, sent)| *sent + self.config.probe_timeout);
        // The hold-down only ends by the clock once enough answers are in;
        // otherwise the next answer re-checks it (no timeout in the past).
        let hold = match &self.state {
            Uplink::Recovering {
                since,
                hold_down,
                successes,
                failures,
                ..
            } if *successes >= self.config.recover_successes && *failures == 0 => {
                Some(*since + *hold_down)
            }
            _ => None,
        };
        // Plain matches: this runs on every step of a driver's loop.
        let mut next = self.next_probe_at;
        if let Some(t) = probe_deadline {
            next = next.min(t);
        }
        if let Some(t) = hold {
            next = next.min(t);
        }
        Some(next)
    }

    /// A probe to send now, if one is due. Call until `None`.
    pub fn poll_probe(&mut self, now: Millis) -> Option<ProbeId> {
        if now < self.next_probe_at {
            return None;
        }
        let id = ProbeId(self.next_probe_id);
        self.next_probe_id += 1;
        self.outstanding.push_back((id, now));
        self.counters.probes_sent += 1;
        self.next_probe_at = now + self.probe_interval();
        Some(id)
    }

    fn probe_interval(&self) -> Duration {
        match self.state {
            Uplink::Up { .. } => self.config.probe_interval_up,
            Uplink::Suspect { .. } => self.config.probe_interval_suspect,
            Uplink::Down { .. } => self.config.probe_interval_down,
            // A failure during the hold-down is probed as fast as in Suspect,
            // so that a cloud that dies again is Down as quickly as the first time.
            Uplink::Recovering { failures, .. } if failures > 0 => {
                self.config.probe_interval_suspect
            }
            Uplink::Recovering { .. } => self.config.probe_interval_recovering,
        }
    }

    /// Expire probes and finish hold-downs that are due.
    pub fn handle_timeout(&mut self, now: Millis) {
        while let Some(&(_, sent)) = self.outstanding.front() {
            if now < sent + self.config.probe_timeout {
                break;
            }
            self.outstanding.pop_front();
            self.counters.probes_timed_out += 1;
            self.failure(now, sent, Failure::ProbeTimeout);
        }
        self.check_hold_down(now);
    }

    /// Feed one input.
    pub fn handle(&mut self, now: Millis, input: UplinkInput) {
        match input {
            UplinkInput::ProbeResponse {
                id,
                status,
                retry_after,
            } => {
                let sent = self.take_probe(id);
                self.counters.probes_answered += 1;
                self.response(now, sent.unwrap_or(now), status, retry_after);
            }
            UplinkInput::ProbeTransportError { id } => {
                if let Some(sent) = self.take_probe(id) {
                    self.counters.transport_errors += 1;
                    self.failure(now, sent, Failure::TransportError);
                }
            }
            UplinkInput::CloudResponse {
                sent_at,
                status,
                retry_after,
            } => self.response(now, sent_at, status, retry_after),
            UplinkInput::TransactionTimeout { sent_at } => {
                self.counters.transaction_timeouts += 1;
                self.failure(now, sent_at, Failure::TransactionTimeout);
            }
            UplinkInput::TransportError { sent_at } => {
                self.counters.transport_errors += 1;
                self.failure(now, sent_at, Failure::TransportError);
            }
        }
        self.check_hold_down(now);
    }

    /// `cloud force-down`, `cloud force-up`, `cloud auto`.
    pub fn set_mode(&mut self, now: Millis, mode: Mode) {
        if mode == self.mode {
            return;
        }
        self.mode = mode;
        self.events
            .push_back(UplinkEvent::ModeChanged { at: now, mode });
        match mode {
            Mode::ForcedDown => {
                if !matches!(self.state, Uplink::Down { .. }) {
                    let outage_since = self.outage_since().unwrap_or(now);
                    self.enter(
                        now,
                        Uplink::Down {
                            since: now,
                            outage_since,
                            reason: Reason::Forced,
                        },
                        Reason::Forced,
                    );
                }
            }
            Mode::ForcedUp => match self.state {
                Uplink::Up { .. } => {}
                Uplink::Suspect { .. } => {
                    self.enter(now, Uplink::Up { since: now }, Reason::Forced);
                }
                Uplink::Down { outage_since, .. } | Uplink::Recovering { outage_since, .. } => {
                    self.allow_resync(now, outage_since, Reason::Forced);
                }
            },
            Mode::Auto => {}
        }
    }

    fn outage_since(&self) -> Option<Millis> {
        match self.state {
            Uplink::Down { outage_since, .. } | Uplink::Recovering { outage_since, .. } => {
                Some(outage_since)
            }
            _ => None,
        }
    }

    fn take_probe(&mut self, id: ProbeId) -> Option<Millis> {
        let pos = self.outstanding.iter().position(|(p, _)| *p == id)?;
        self.outstanding.remove(pos).map(|(_, sent)| sent)
    }

    fn response(&mut self, now: Millis, sent: Millis, status: u16, retry_after: Option<Duration>) {
        match status {
            503 => {
                let short = retry_after.is_some_and(|r| r <= self.config.retry_after_threshold);
                if short {
                    // Overloaded but alive and telling us when to come back: neutral.
                    return;
                }
                self.counters.service_unavailable += 1;
                self.failure(now, sent, Failure::ServiceUnavailable);
            }
            // A proxy in front of a dead registrar may answer these: neutral.
            408 | 500 | 504 => {}
            100..=699 => self.success(now),
            _ => {}
        }
    }

    fn success(&mut self, now: Millis) {
        self.last_heard = Some(self.last_heard.map_or(now, |t| t.max(now)));
        if self.mode != Mode::Auto {
            return;
        }
        match self.state.clone() {
            Uplink::Up { .. } => {
                // Probe again a full interval after the last answer.
                self.next_probe_at = self.next_probe_at.max(now + self.config.probe_interval_up);
            }
            Uplink::Suspect { .. } => self.enter(now, Uplink::Up { since: now }, Reason::Answered),
            Uplink::Down { outage_since, .. } => {
                let level = self.flap_level(now);
                let hold_down = self.hold_down_for(level);
                self.enter(
                    now,
                    Uplink::Recovering {
                        since: now,
                        outage_since,
                        hold_down,
                        flap_level: level,
                        successes: 1,
                        failures: 0,
                    },
                    Reason::Answered,
                );
            }
            Uplink::Recovering {
                since,
                outage_since,
                hold_down,
                flap_level,
                successes,
                ..
            } => {
                self.state = Uplink::Recovering {
                    since,
                    outage_since,
                    hold_down,
                    flap_level,
                    successes: successes.saturating_add(1),
                    failures: 0,
                };
            }
        }
    }

    fn failure(&mut self, now: Millis, sent: Millis, failure: Failure) {
        // Evidence older than the last answer says nothing about now.
        if self.last_heard.is_some_and(|h| sent < h) {
            return;
        }
        if self.mode != Mode::Auto {
            return;
        }
        let threshold = self.config.down_after_failures.max(1);
        let reason = Reason::Failure(failure);
        match self.state.clone() {
            Uplink::Up { .. } => {
                if threshold <= 1 {
                    self.go_down(now, now, reason);
                } else {
                    self.enter(
                        now,
                        Uplink::Suspect {
                            since: now,
                            failures: 1,
                        },
                        reason,
                    );
                    // Probe at once.
                    self.next_probe_at = now;
                }
            }
            Uplink::Suspect { since, failures } => {
                let failures = failures + 1;
                if failures >= threshold {
                    self.go_down(now, now, reason);
                } else {
                    self.state = Uplink::Suspect { since, failures };
                }
            }
            Uplink::Down { .. } => {}
            Uplink::Recovering {
                since,
                outage_since,
                hold_down,
                flap_level,
                successes,
                failures,
            } => {
                let failures = failures + 1;
                if failures >= threshold {
                    self.counters.recoveries_failed += 1;
                    self.push_flap(now);
                    self.go_down(now, outage_since, reason);
                } else {
                    self.state = Uplink::Recovering {
                        since,
                        outage_since,
                        hold_down,
                        flap_level,
                        successes,
                        failures,
                    };
                    self.next_probe_at = self.next_probe_at.min(now);
                }
            }
        }
    }

    fn go_down(&mut self, now: Millis, outage_since: Millis, reason: Reason) {
        self.enter(
            now,
            Uplink::Down {
                since: now,
                outage_since,
                reason,
            },
            reason,
        );
    }

    fn check_hold_down(&mut self, now: Millis) {
        if self.mode != Mode::Auto {
            return;
        }
        if let Uplink::Recovering {
            since,
            outage_since,
            hold_down,
            successes,
            failures,
            ..
        } = self.state
        {
            if now >= since + hold_down
                && successes >= self.config.recover_successes
                && failures == 0
            {
                self.allow_resync(now, outage_since, Reason::HoldDownElapsed);
            }
        }
    }

    fn allow_resync(&mut self, now: Millis, outage_since: Millis, reason: Reason) {
        let level = self.flap_level(now);
        self.enter(now, Uplink::Up { since: now }, reason);
        self.push_flap(now);
        self.counters.resyncs += 1;
        self.events.push_back(UplinkEvent::ResyncAllowed {
            at: now,
            outage_since,
            flap_level: level,
            rate_divisor: 1u32 << level.min(MAX_LEVEL),
        });
    }

    fn push_flap(&mut self, now: Millis) {
        let window = self.config.flap_window;
        while self.flaps.front().is_some_and(|t| now.since(*t) >= window) {
            self.flaps.pop_front();
        }
        if self.flaps.len() >= MAX_FLAP_HISTORY {
            self.flaps.pop_front();
        }
        self.flaps.push_back(now);
    }

    fn enter(&mut self, now: Millis, next: Uplink, reason: Reason) {
        let from = self.state.kind();
        let to = next.kind();
        self.state = next;
        match to {
            UplinkKind::Up => self.counters.to_up += 1,
            UplinkKind::Suspect => self.counters.to_suspect += 1,
            UplinkKind::Down => self.counters.to_down += 1,
            UplinkKind::Recovering => self.counters.to_recovering += 1,
        }
        // New state, new probe cadence (never later than already planned).
        self.next_probe_at = self.next_probe_at.min(now + self.probe_interval());
        self.events.push_back(UplinkEvent::Transition {
            at: now,
            from,
            to,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cloud for unit tests: answers each probe after `rtt` unless it is
    /// silent at the answer's arrival or the probe is in `lost`.
    struct Wire {
        rtt: u64,
        silent_from: Option<u64>,
        silent_until: Option<u64>,
        lost: Vec<u64>,
        in_flight: Vec<(u64, ProbeId)>,
        probes: u64,
    }

    impl Wire {
        fn new(rtt: u64) -> Wire {
            Wire {
                rtt,
                silent_from: None,
                silent_until: None,
                lost: Vec::new(),
                in_flight: Vec::new(),
                probes: 0,
            }
        }
        fn silent_at(&self, t: u64) -> bool {
            self.silent_from.is_some_and(|s| t >= s) && self.silent_until.is_none_or(|u| t < u)
        }
    }

    /// Runs the monitor until `end`, returns all events.
    fn run(m: &mut UplinkMonitor, w: &mut Wire, start: u64, end: u64) -> Vec<UplinkEvent> {
        let mut now = start;
        let mut events = Vec::new();
        loop {
            m.handle_timeout(Millis(now));
            while let Some(id) = m.poll_probe(Millis(now)) {
                w.probes += 1;
                if !w.lost.contains(&w.probes) {
                    w.in_flight.push((now + w.rtt, id));
                }
            }
            let due: Vec<ProbeId> = w
                .in_flight
                .iter()
                .filter(|(t, _)| *t <= now)
                .map(|(_, id)| *id)
                .collect();
            w.in_flight.retain(|(t, _)| *t > now);
            for id in due {
                if !w.silent_at(now) {
                    m.handle(
                        Millis(now),
                        UplinkInput::ProbeResponse {
                            id,
                            status: 200,
                            retry_after: None,
                        },
                    );
                }
            }
            while let Some(e) = m.poll_event() {
                events.push(e);
            }
            let next_wire = w.in_flight.iter().map(|(t, _)| *t).min();
            let next = [m.poll_timeout().map(|t| t.0), next_wire]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end)
                .max(now + 1);
            if next > end {
                return events;
            }
            now = next;
        }
    }

    fn down_at(events: &[UplinkEvent]) -> Option<u64> {
        events.iter().find_map(|e| match e {
            UplinkEvent::Transition {
                at,
                to: UplinkKind::Down,
                ..
            } => Some(at.0),
            _ => None,
        })
    }

    #[test]
    fn silent_cloud_is_down_within_1500ms_whatever_the_phase() {
        let mut worst = 0;
        for rtt in [1, 20, 80, 250] {
            for offset in (0..1000).step_by(7) {
                let silence = 10_000 + offset;
                let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
                let mut w = Wire::new(rtt);
                w.silent_from = Some(silence);
                let ev = run(&mut m, &mut w, 0, silence + 5_000);
                let down = down_at(&ev).expect("silent cloud must be detected");
                assert!(down >= silence, "no Down before the silence: {ev:?}");
                let took = down - silence;
                assert!(took <= 1500, "rtt {rtt} offset {offset}: took {took} ms");
                worst = worst.max(took);
            }
        }
        assert!(
            worst > 900,
            "sweep should hit the bad phases, worst {worst}"
        );
    }

    #[test]
    fn a_single_lost_probe_never_makes_it_down() {
        for lost in 1..40 {
            let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
            let mut w = Wire::new(30);
            w.lost = vec![lost];
            let ev = run(&mut m, &mut w, 0, 20_000);
            assert_eq!(down_at(&ev), None, "lost probe {lost}: {ev:?}");
            assert!(m.is_up());
            if lost < 30 {
                assert!(ev.iter().any(|e| matches!(
                    e,
                    UplinkEvent::Transition {
                        to: UplinkKind::Suspect,
                        ..
                    }
                )));
            }
        }
    }

    #[test]
    fn a_single_transaction_timeout_or_503_is_not_down() {
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        let mut w = Wire::new(30);
        run(&mut m, &mut w, 0, 2_000);
        m.handle(
            Millis(2_001),
            UplinkInput::TransactionTimeout {
                sent_at: Millis(2_000),
            },
        );
        assert_eq!(m.state().kind(), UplinkKind::Suspect);
        let ev = run(&mut m, &mut w, 2_001, 5_000);
        assert_eq!(down_at(&ev), None);
        assert!(m.is_up());
    }

    #[test]
    fn stale_evidence_is_ignored_and_503_rules_hold() {
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        let mut w = Wire::new(30);
        run(&mut m, &mut w, 0, 3_000);
        // Sent long before the last answer: says nothing.
        m.handle(
            Millis(3_000),
            UplinkInput::TransactionTimeout {
                sent_at: Millis(100),
            },
        );
        assert!(m.is_up());
        // 503 with a short Retry-After: alive, overloaded.
        m.handle(
            Millis(3_000),
            UplinkInput::CloudResponse {
                sent_at: Millis(2_990),
                status: 503,
                retry_after: Some(Duration::from_secs(2)),
            },
        );
        assert!(m.is_up());
        // Three 503s without Retry-After: down.
        for i in 0..3 {
            m.handle(
                Millis(3_001 + i),
                UplinkInput::CloudResponse {
                    sent_at: Millis(2_999),
                    status: 503,
                    retry_after: None,
                },
            );
        }
        assert_eq!(m.state().kind(), UplinkKind::Down);
        assert_eq!(m.counters().service_unavailable, 3);
        // A long Retry-After also counts.
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        m.handle(
            Millis(1),
            UplinkInput::CloudResponse {
                sent_at: Millis(0),
                status: 503,
                retry_after: Some(Duration::from_secs(3600)),
            },
        );
        assert_eq!(m.state().kind(), UplinkKind::Suspect);
    }

    fn resyncs(ev: &[UplinkEvent]) -> Vec<(u64, u32, u32)> {
        ev.iter()
            .filter_map(|e| match e {
                UplinkEvent::ResyncAllowed {
                    at,
                    flap_level,
                    rate_divisor,
                    ..
                } => Some((at.0, *flap_level, *rate_divisor)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn recovery_holds_down_and_grows_when_the_cloud_flaps_then_decays() {
        let cfg = UplinkConfig::default();
        let mut m = UplinkMonitor::new(cfg.clone(), Millis(0));
        let mut w = Wire::new(30);
        // Outage 1: 60 s..90 s.
        w.silent_from = Some(60_000);
        w.silent_until = Some(90_000);
        let ev = run(&mut m, &mut w, 0, 200_000);
        let r = resyncs(&ev);
        assert_eq!(r.len(), 1, "{ev:?}");
        let (at1, level1, div1) = r[0];
        assert_eq!((level1, div1), (0, 1));
        assert!(at1 >= 90_000 + 10_000, "hold-down of 10 s respected: {at1}");
        assert!(at1 <= 90_000 + 12_000);
        // Outage 2 ten minutes later: longer hold-down, gentler resync.
        w.silent_from = Some(660_000);
        w.silent_until = Some(690_000);
        let ev = run(&mut m, &mut w, 200_000, 800_000);
        let r = resyncs(&ev);
        assert_eq!(r.len(), 1, "{ev:?}");
        let (at2, level2, div2) = r[0];
        assert_eq!((level2, div2), (1, 2));
        assert!(at2 >= 690_000 + 20_000, "hold-down doubled: {at2}");
        // An hour of calm: back to the base hold-down.
        assert_eq!(m.flap_level(Millis(at2 + 31 * 60_000)), 0);
        assert_eq!(
            m.status(Millis(at2 + 31 * 60_000)).hold_down,
            cfg.hold_down_base
        );
    }

    #[test]
    fn a_recovery_that_fails_goes_back_down_and_counts_as_a_flap() {
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        let mut w = Wire::new(30);
        w.silent_from = Some(5_000);
        w.silent_until = Some(20_000);
        run(&mut m, &mut w, 0, 23_000);
        assert_eq!(m.state().kind(), UplinkKind::Recovering);
        w.silent_from = Some(23_000);
        w.silent_until = Some(40_000);
        let ev = run(&mut m, &mut w, 23_000, 41_000);
        assert!(resyncs(&ev).is_empty());
        assert_eq!(m.counters().recoveries_failed, 1);
        let ev = run(&mut m, &mut w, 41_000, 100_000);
        let r = resyncs(&ev);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].1, 1);
        assert!(r[0].0 >= 40_000 + 20_000);
        if let Some(UplinkEvent::ResyncAllowed { outage_since, .. }) = ev
            .iter()
            .find(|e| matches!(e, UplinkEvent::ResyncAllowed { .. }))
        {
            assert!(
                outage_since.0 < 7_000,
                "outage began with the first silence"
            );
        }
    }

    #[test]
    fn poll_timeout_is_never_left_in_the_past() {
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        let mut w = Wire::new(30);
        w.silent_from = Some(1_000);
        w.silent_until = Some(5_000);
        let mut now = 0;
        let mut same = 0;
        while now < 60_000 {
            let before = now;
            run(&mut m, &mut w, now, now + 1);
            // After handling `now`, the next timeout must be in the future.
            if let Some(t) = m.poll_timeout() {
                assert!(t.0 > before || m.poll_probe(Millis(before)).is_some());
            }
            now += 1;
            same += 1;
        }
        assert!(same > 0);
    }

    #[test]
    fn a_cloud_that_dies_again_during_the_hold_down_is_down_as_fast() {
        for offset in (0..1000).step_by(37) {
            let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
            let mut w = Wire::new(40);
            w.silent_from = Some(5_000);
            w.silent_until = Some(20_000);
            run(&mut m, &mut w, 0, 23_000 + offset);
            assert_eq!(m.state().kind(), UplinkKind::Recovering);
            let again = 23_000 + offset;
            w.silent_from = Some(again);
            w.silent_until = None;
            let ev = run(&mut m, &mut w, again, again + 5_000);
            let down = down_at(&ev).expect("down again");
            assert!(down - again <= 1500, "offset {offset}: {} ms", down - again);
        }
    }

    #[test]
    fn zero_intervals_are_clamped() {
        let cfg = UplinkConfig {
            probe_interval_up: Duration::ZERO,
            probe_interval_suspect: Duration::ZERO,
            probe_interval_down: Duration::ZERO,
            probe_interval_recovering: Duration::ZERO,
            probe_timeout: Duration::ZERO,
            ..UplinkConfig::default()
        };
        let mut m = UplinkMonitor::new(cfg, Millis(0));
        assert!(m.poll_probe(Millis(0)).is_some());
        assert!(m.poll_probe(Millis(0)).is_none(), "one probe per instant");
        assert_eq!(m.config().probe_timeout, Duration::from_millis(10));
    }

    #[test]
    fn manual_override() {
        let mut m = UplinkMonitor::new(UplinkConfig::default(), Millis(0));
        let mut w = Wire::new(30);
        run(&mut m, &mut w, 0, 1_000);
        m.set_mode(Millis(1_000), Mode::ForcedDown);
        assert_eq!(m.state().kind(), UplinkKind::Down);
        while m.poll_event().is_some() {}
        let ev = run(&mut m, &mut w, 1_000, 60_000);
        assert!(ev
            .iter()
            .all(|e| !matches!(e, UplinkEvent::Transition { .. })));
        assert_eq!(m.state().kind(), UplinkKind::Down);
        // Forced up from Down: resync allowed at once.
        m.set_mode(Millis(60_000), Mode::ForcedUp);
        assert!(m.is_up());
        let mut got = Vec::new();
        while let Some(e) = m.poll_event() {
            got.push(e);
        }
        assert_eq!(resyncs(&got).len(), 1);
        // Forced up ignores a silent cloud.
        w.silent_from = Some(61_000);
        run(&mut m, &mut w, 60_000, 70_000);
        assert!(m.is_up());
        // Auto: the evidence rules again.
        m.set_mode(Millis(70_000), Mode::Auto);
        let ev = run(&mut m, &mut w, 70_000, 72_000);
        assert_eq!(m.state().kind(), UplinkKind::Down, "{ev:?}");
    }
}
