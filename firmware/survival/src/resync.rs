//! Verified resync: which bindings go back to the cloud, and at what pace.
//!
//! [`plan`] checks every binding (record integrity, provenance: verified by
//! the cloud before, liveness: refreshed during the outage or answered an
//! OPTIONS ping within a window) and keeps only verified ones. [`ResyncPacer`]
//! then releases work at most `rate` per second (a token bucket of depth 1,
//! so releases are never closer than `1/rate` apart, plus a random extra
//! delay), in this order: bindings first, then the terminations of taken-over
//! subscriptions.
//!
//! Trusted mode (`[cloud] trusted = true`): the pacer asks the driver to
//! re-REGISTER each verified binding on the phone's behalf. Untrusted mode:
//! the phones' own refreshes (due soon thanks to the short survival expiry)
//! are forwarded when [`ResyncPacer::admit_phone_refresh`] says so, and
//! answered locally again (short expiry) when the pace is used up.

use std::collections::VecDeque;
use std::time::Duration;

use crate::registrar::Provenance;
use crate::rng::Rng;
use crate::time::Millis;

/// What the driver knows about one stored binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingFacts<K> {
    /// The driver's key of the binding.
    pub key: K,
    /// The record passed its checksum / validation when read.
    pub integrity_ok: bool,
    /// Where it came from.
    pub provenance: Provenance,
    /// Last REGISTER refresh from the phone (answered locally or by the cloud).
    pub last_refresh: Option<Millis>,
    /// Last OPTIONS ping the phone answered.
    pub last_options_ok: Option<Millis>,
}

/// Why a binding is not given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// The record failed its integrity check.
    Integrity,
    /// Never verified by the cloud (local-only).
    Provenance,
    /// No sign of life during the outage.
    Liveness,
}

/// Result of the verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncPlan<K> {
    /// Bindings to give back, in input order.
    pub verified: Vec<K>,
    /// Bindings kept back, with the first failed check.
    pub rejected: Vec<(K, Rejection)>,
}

/// Checks every binding. `outage_since` is when the outage began, a binding
/// is alive if refreshed since then or if its phone answered an OPTIONS
/// within `liveness_window` before `now`.
pub fn plan<K>(
    facts: impl IntoIterator<Item = BindingFacts<K>>,
    outage_since: Millis,
    now: Millis,
    liveness_window: Duration,
) -> ResyncPlan<K> {
    let mut verified = Vec::new();
    let mut rejected = Vec::new();
    for f in facts {
        let alive = f.last_refresh.is_some_and(|t| t >= outage_since)
            || f.last_options_ok
                .is_some_and(|t| t <= now && now.since(t) <= liveness_window);
        let why = if !f.integrity_ok {
            Some(Rejection::Integrity)
        } else if f.provenance != Provenance::CloudVerified {
            Some(Rejection::Provenance)
        } else if !alive {
            Some(Rejection::Liveness)
        } else {
            None
        };
        match why {
            Some(r) => rejected.push((f.key, r)),
            None => verified.push(f.key),
        }
    }
    ResyncPlan { verified, rejected }
}

/// `[cloud] trusted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncMode {
    /// Re-REGISTER on the phones' behalf.
    Trusted,
    /// Forward the phones' own refreshes.
    Untrusted,
}

/// Pacer tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacerConfig {
    /// `[cloud] resync_rate`: releases per second (before the flap divisor).
    pub rate: u32,
    /// Extra random delay after each release, in thousandths of `1/rate`.
    pub jitter_permille: u32,
    /// Attempts per binding in trusted mode (a failed re-REGISTER is queued again).
    pub max_attempts: u32,
}

impl Default for PacerConfig {
    fn default() -> Self {
        PacerConfig {
            rate: 50,
            jitter_permille: 250,
            max_attempts: 4,
        }
    }
}

/// Work the pacer releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacerAction<K, S> {
    /// Trusted mode: send a REGISTER for this binding (with Path and its stored contact).
    ReRegister(K),
    /// Send the `terminated;reason=deactivated` NOTIFY of this subscription.
    TerminateSubscription(S),
}

/// Answer to a phone's own REGISTER refresh during the resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Forward it to the cloud now.
    Forward,
    /// Pace used up: answer locally (short expiry) so the phone comes back later.
    AnswerLocally,
}

/// For `show resync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResyncProgress {
    /// Mode.
    pub mode: ResyncMode,
    /// When the resync started.
    pub started_at: Millis,
    /// When everything was released and answered, if done.
    pub finished_at: Option<Millis>,
    /// Effective releases per second.
    pub rate: u32,
    /// Verified bindings to give back.
    pub bindings_total: usize,
    /// Released (re-REGISTER sent or phone's refresh forwarded).
    pub bindings_released: usize,
    /// Confirmed by the cloud (2xx).
    pub bindings_confirmed: usize,
    /// Given up after `max_attempts`.
    pub bindings_failed: usize,
    /// Rejected by the plan: (integrity, provenance, liveness).
    pub rejected: (usize, usize, usize),
    /// Phones' refreshes forwarded that were not in the plan (the cloud
    /// authenticates them itself).
    pub unplanned_forwarded: usize,
    /// Taken-over subscriptions to end.
    pub subscriptions_total: usize,
    /// Terminations released.
    pub subscriptions_terminated: usize,
}

/// Paces the resync. `K`: binding key, `S`: subscription key.
#[derive(Debug, Clone)]
pub struct ResyncPacer<K, S> {
    cfg: PacerConfig,
    rate: u32,
    tokens_milli: u64,
    last_refill: Millis,
    not_before: Millis,
    rng: Rng,
    bindings: VecDeque<(K, u32)>,
    in_flight: Vec<(K, u32)>,
    subs: VecDeque<S>,
    progress: ResyncProgress,
    releases: u64,
}

const TOKEN: u64 = 1000;

impl<K: PartialEq + Clone, S> ResyncPacer<K, S> {
    /// Starts a resync at `now`. `rate_divisor` comes from the uplink's
    /// `ResyncAllowed` (1 for the first resync in a flap window).
    pub fn new(
        now: Millis,
        cfg: PacerConfig,
        rate_divisor: u32,
        mode: ResyncMode,
        plan: ResyncPlan<K>,
        subscriptions: Vec<S>,
        rng: Rng,
    ) -> ResyncPacer<K, S> {
        let rate = (cfg.rate / rate_divisor.max(1)).max(1);
        let mut rejected = (0, 0, 0);
        for (_, r) in &plan.rejected {
            match r {
                Rejection::Integrity => rejected.0 += 1,
                Rejection::Provenance => rejected.1 += 1,
                Rejection::Liveness => rejected.2 += 1,
            }
        }
        let progress = ResyncProgress {
            mode,
            started_at: now,
            finished_at: None,
            rate,
            bindings_total: plan.verified.len(),
            bindings_released: 0,
            bindings_confirmed: 0,
            bindings_failed: 0,
            rejected,
            unplanned_forwarded: 0,
            subscriptions_total: subscriptions.len(),
            subscriptions_terminated: 0,
        };
        let mut p = ResyncPacer {
            cfg,
            rate,
            tokens_milli: TOKEN,
            last_refill: now,
            not_before: now,
            rng,
            bindings: plan.verified.into_iter().map(|k| (k, 0)).collect(),
            in_flight: Vec::new(),
            subs: subscriptions.into(),
            progress,
            releases: 0,
        };
        p.check_done(now);
        p
    }

    /// Effective releases per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Progress for `show resync`.
    pub fn progress(&self) -> &ResyncProgress {
        &self.progress
    }

    /// True once every item was released and every re-REGISTER answered.
    pub fn is_done(&self) -> bool {
        self.progress.finished_at.is_some()
    }

    fn interval_ms(&self) -> u64 {
        1000_u64.div_ceil(u64::from(self.rate))
    }

    fn refill(&mut self, now: Millis) {
        if now > self.last_refill {
            let elapsed = now.0 - self.last_refill.0;
            self.tokens_milli = self
                .tokens_milli
                .saturating_add(elapsed.saturating_mul(u64::from(self.rate)))
                .min(TOKEN);
            self.last_refill = now;
        }
    }

    fn token_at(&self) -> Millis {
        let missing = TOKEN.saturating_sub(self.tokens_milli);
        let wait = missing.div_ceil(u64::from(self.rate));
        Millis(self.last_refill.0 + wait).max(self.not_before)
    }

    fn try_take(&mut self, now: Millis) -> bool {
        self.refill(now);
        if now < self.not_before || self.tokens_milli < TOKEN {
            return false;
        }
        self.tokens_milli -= TOKEN;
        self.releases += 1;
        // Jitter: the next release is pushed back from when its token is due
        // (never earlier, so the cap holds) by a random share of the interval.
        let max_extra = self.interval_ms() * u64::from(self.cfg.jitter_permille) / 1000;
        let extra = self.rng.range_inclusive(0, max_extra);
        let due = self.token_at();
        self.not_before = Millis(due.0 + extra);
        true
    }

    fn has_releasable(&self) -> bool {
        (self.progress.mode == ResyncMode::Trusted && !self.bindings.is_empty())
            || (!self.subs.is_empty() && self.bindings_phase_over())
    }

    fn bindings_phase_over(&self) -> bool {
        // Untrusted: bindings come back through the phones' own refreshes,
        // which may take a whole survival expiry; do not hold the
        // terminations back for them.
        self.progress.mode == ResyncMode::Untrusted || self.bindings.is_empty()
    }

    /// When `poll_action` may release something next.
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.has_releasable() {
            Some(self.token_at())
        } else {
            None
        }
    }

    /// The next piece of work, if the pace allows it now. Call until `None`.
    pub fn poll_action(&mut self, now: Millis) -> Option<PacerAction<K, S>> {
        if !self.has_releasable() || !self.try_take(now) {
            return None;
        }
        if self.progress.mode == ResyncMode::Trusted {
            if let Some((k, attempts)) = self.bindings.pop_front() {
                if attempts == 0 {
                    self.progress.bindings_released += 1;
                }
                self.in_flight.push((k.clone(), attempts + 1));
                return Some(PacerAction::ReRegister(k));
            }
        }
        let s = self.subs.pop_front()?;
        self.progress.subscriptions_terminated += 1;
        self.check_done(now);
        Some(PacerAction::TerminateSubscription(s))
    }

    /// Trusted mode: the cloud answered a re-REGISTER (`ok`: 2xx).
    pub fn report(&mut self, now: Millis, key: &K, ok: bool) {
        if let Some(pos) = self.in_flight.iter().position(|(k, _)| k == key) {
            let (k, attempts) = self.in_flight.swap_remove(pos);
            if ok {
                self.progress.bindings_confirmed += 1;
            } else if attempts < self.cfg.max_attempts {
                self.bindings.push_back((k, attempts));
            } else {
                self.progress.bindings_failed += 1;
            }
        }
        self.check_done(now);
    }

    /// Untrusted mode (or a phone refreshing on its own in trusted mode):
    /// a phone's REGISTER refresh arrived during the resync.
    pub fn admit_phone_refresh(&mut self, now: Millis, key: &K) -> Admission {
        let planned_pos = self.bindings.iter().position(|(k, _)| k == key);
        if self.progress.mode == ResyncMode::Trusted && planned_pos.is_none() {
            // Already given back (or never planned): the cloud is Up, forward.
            return Admission::Forward;
        }
        if !self.try_take(now) {
            return Admission::AnswerLocally;
        }
        match planned_pos {
            Some(pos) => {
                self.bindings.remove(pos);
                self.progress.bindings_released += 1;
                // The phone's own transaction: the driver reports its answer
                // like a re-REGISTER's.
                self.in_flight.push((key.clone(), self.cfg.max_attempts));
            }
            None => self.progress.unplanned_forwarded += 1,
        }
        self.check_done(now);
        Admission::Forward
    }

    /// A termination released by [`ResyncPacer::poll_action`] that the
    /// driver could not send yet (e.g. the watched phone is in a call the
    /// cloud never saw): queued again at the back, to be released against
    /// a token of its own later, so that holding it back never lets it
    /// bypass the pace.
    pub fn put_back_subscription(&mut self, now: Millis, s: S) {
        self.progress.subscriptions_terminated =
            self.progress.subscriptions_terminated.saturating_sub(1);
        self.subs.push_back(s);
        self.progress.finished_at = None;
        self.check_done(now);
    }

    /// Untrusted mode: phones that have not refreshed by the end of the
    /// resync window (the longest survival expiry plus a margin) are counted as
    /// failed so that the resync can finish.
    pub fn abandon_pending(&mut self, now: Millis) {
        self.progress.bindings_failed += self.bindings.len();
        self.bindings.clear();
        self.check_done(now);
    }

    /// Releases so far (each took one token: re-REGISTERs, terminations,
    /// phones' refreshes admitted against the pace).
    pub fn releases(&self) -> u64 {
        self.releases
    }

    /// Bindings not yet given back.
    pub fn pending_bindings(&self) -> usize {
        self.bindings.len()
    }

    fn check_done(&mut self, now: Millis) {
        if self.progress.finished_at.is_none()
            && self.bindings.is_empty()
            && self.in_flight.is_empty()
            && self.subs.is_empty()
        {
            self.progress.finished_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_termination_put_back_waits_for_a_token_of_its_own() {
        let plan = ResyncPlan::<u32> {
            verified: vec![],
            rejected: vec![],
        };
        let cfg = PacerConfig {
            rate: 2,
            jitter_permille: 0,
            max_attempts: 1,
        };
        let mut p: ResyncPacer<u32, &str> = ResyncPacer::new(
            Millis(0),
            cfg,
            1,
            ResyncMode::Trusted,
            plan,
            vec!["a", "b"],
            Rng::seeded(1),
        );
        assert_eq!(
            p.poll_action(Millis(0)),
            Some(PacerAction::TerminateSubscription("a"))
        );
        // "a" cannot go yet: back in the queue, no extra release now.
        p.put_back_subscription(Millis(0), "a");
        assert_eq!(p.poll_action(Millis(0)), None);
        assert!(!p.is_done());
        assert_eq!(
            p.poll_action(Millis(500)),
            Some(PacerAction::TerminateSubscription("b"))
        );
        assert_eq!(p.poll_action(Millis(999)), None);
        assert_eq!(
            p.poll_action(Millis(1000)),
            Some(PacerAction::TerminateSubscription("a"))
        );
        assert!(p.is_done());
        assert_eq!(p.progress().subscriptions_terminated, 2);
    }

    fn facts(
        key: u32,
        ok: bool,
        prov: Provenance,
        refresh: Option<u64>,
        options: Option<u64>,
    ) -> BindingFacts<u32> {
        BindingFacts {
            key,
            integrity_ok: ok,
            provenance: prov,
            last_refresh: refresh.map(Millis),
            last_options_ok: options.map(Millis),
        }
    }

    #[test]
    fn plan_keeps_only_verified_bindings() {
        use Provenance::*;
        let p = plan(
            vec![
                facts(1, true, CloudVerified, Some(50_000), None),
                facts(2, false, CloudVerified, Some(50_000), None),
                facts(3, true, LocalOnly, Some(50_000), None),
                facts(4, true, CloudVerified, Some(5_000), None),
                facts(5, true, CloudVerified, Some(5_000), Some(95_000)),
                facts(6, true, CloudVerified, None, Some(10_000)),
            ],
            Millis(10_000),
            Millis(100_000),
            Duration::from_secs(30),
        );
        assert_eq!(p.verified, vec![1, 5]);
        assert_eq!(
            p.rejected,
            vec![
                (2, Rejection::Integrity),
                (3, Rejection::Provenance),
                (4, Rejection::Liveness),
                (6, Rejection::Liveness)
            ]
        );
    }

    fn drain(
        p: &mut ResyncPacer<u32, &'static str>,
        until: u64,
    ) -> Vec<(u64, PacerAction<u32, &'static str>)> {
        let mut out = Vec::new();
        let mut now = 0;
        while now <= until {
            while let Some(a) = p.poll_action(Millis(now)) {
                if let PacerAction::ReRegister(k) = &a {
                    p.report(Millis(now), k, true);
                }
                out.push((now, a));
            }
            match p.poll_timeout() {
                Some(t) => now = t.0.max(now + 1),
                None => break,
            }
        }
        out
    }

    fn max_in_window(times: &[u64], window: u64) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi] - times[lo] >= window {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn trusted_pacer_never_exceeds_the_rate_and_orders_bindings_first() {
        for divisor in [1, 2, 4] {
            let plan = ResyncPlan {
                verified: (0..500).collect(),
                rejected: vec![(999, Rejection::Liveness)],
            };
            let mut p = ResyncPacer::new(
                Millis(0),
                PacerConfig::default(),
                divisor,
                ResyncMode::Trusted,
                plan,
                vec!["s1", "s2"],
                Rng::seeded(9),
            );
            let rate = 50 / divisor;
            assert_eq!(p.rate(), rate);
            let out = drain(&mut p, 1_000_000);
            assert_eq!(out.len(), 502);
            assert!(matches!(out[499].1, PacerAction::ReRegister(499)));
            assert!(matches!(
                out[500].1,
                PacerAction::TerminateSubscription("s1")
            ));
            let times: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
            assert!(max_in_window(&times, 1000) <= rate as usize);
            // Jittered: gaps vary, none below the interval.
            let gaps: std::collections::BTreeSet<u64> =
                times.windows(2).map(|w| w[1] - w[0]).collect();
            assert!(gaps.len() > 3, "{gaps:?}");
            assert!(*gaps.iter().next().unwrap() >= 1000 / u64::from(rate));
            // Jitter costs at most a quarter of the pace on average.
            let took = times[times.len() - 1];
            assert!(
                took <= 502 * 1000 * 5 / 4 / u64::from(rate) + 1000,
                "took {took}"
            );
            assert!(p.is_done());
            let pr = p.progress();
            assert_eq!(
                (
                    pr.bindings_confirmed,
                    pr.subscriptions_terminated,
                    pr.rejected.2
                ),
                (500, 2, 1)
            );
        }
    }

    #[test]
    fn idle_time_does_not_build_a_burst() {
        let plan = ResyncPlan {
            verified: (0..100u32).collect(),
            rejected: vec![],
        };
        let mut p: ResyncPacer<u32, ()> = ResyncPacer::new(
            Millis(0),
            PacerConfig {
                rate: 10,
                ..PacerConfig::default()
            },
            1,
            ResyncMode::Untrusted,
            plan,
            vec![],
            Rng::seeded(5),
        );
        // Nobody refreshes for a minute, then every phone at once, every 10 ms.
        let mut forwarded = Vec::new();
        for i in 0..100u32 {
            let t = 60_000 + u64::from(i) * 10;
            if p.admit_phone_refresh(Millis(t), &i) == Admission::Forward {
                forwarded.push(t);
            }
        }
        assert!(!forwarded.is_empty());
        assert!(max_in_window(&forwarded, 1000) <= 10, "{forwarded:?}");
    }

    #[test]
    fn failed_reregister_is_retried_then_counted() {
        let plan = ResyncPlan {
            verified: vec![1u32],
            rejected: vec![],
        };
        let mut p: ResyncPacer<u32, ()> = ResyncPacer::new(
            Millis(0),
            PacerConfig::default(),
            1,
            ResyncMode::Trusted,
            plan,
            vec![],
            Rng::seeded(1),
        );
        assert_eq!(p.poll_action(Millis(0)), Some(PacerAction::ReRegister(1)));
        p.report(Millis(10), &1, false);
        assert_eq!(p.poll_action(Millis(10)), None, "paced");
        for _ in 1..PacerConfig::default().max_attempts {
            assert!(!p.is_done());
            let t = p.poll_timeout().unwrap();
            assert_eq!(p.poll_action(t), Some(PacerAction::ReRegister(1)));
            p.report(t, &1, false);
        }
        assert_eq!(p.progress().bindings_failed, 1);
        assert_eq!(p.progress().bindings_released, 1);
        assert!(p.is_done());
    }

    #[test]
    fn untrusted_mode_paces_the_phones_own_refreshes() {
        let plan = ResyncPlan {
            verified: vec![1u32, 2, 3],
            rejected: vec![],
        };
        let mut p: ResyncPacer<u32, u8> = ResyncPacer::new(
            Millis(0),
            PacerConfig {
                rate: 2,
                ..PacerConfig::default()
            },
            1,
            ResyncMode::Untrusted,
            plan,
            vec![7],
            Rng::seeded(3),
        );
        // Terminations are released at once (not held back for refreshes).
        assert_eq!(
            p.poll_action(Millis(0)),
            Some(PacerAction::TerminateSubscription(7))
        );
        assert_eq!(
            p.admit_phone_refresh(Millis(1), &1),
            Admission::AnswerLocally
        );
        assert_eq!(p.admit_phone_refresh(Millis(700), &1), Admission::Forward);
        p.report(Millis(750), &1, true);
        assert_eq!(
            p.admit_phone_refresh(Millis(800), &2),
            Admission::AnswerLocally
        );
        assert_eq!(p.admit_phone_refresh(Millis(1400), &9), Admission::Forward);
        assert_eq!(p.progress().unplanned_forwarded, 1);
        assert_eq!(p.pending_bindings(), 2);
        assert!(!p.is_done());
        assert_eq!(p.poll_timeout(), None, "nothing to release by itself");
        p.abandon_pending(Millis(200_000));
        assert!(p.is_done());
        assert_eq!(p.progress().bindings_failed, 2);
    }
}
