//! Fail-fast for INVITEs and the local route decision.
//!
//! An INVITE sent to the cloud that gets no provisional response within the
//! fail-fast interval (default 1 s) is not left to Timer B's 32 s: the
//! [`FailFast`] tracker reports it, the driver asks [`RoutePolicy::after_fail_fast`]
//! and, unless the answer is to keep waiting (an emergency call with nowhere
//! else to go), CANCELs it upstream and routes it locally. It should also feed
//! `UplinkInput::TransactionTimeout { sent_at }` to the uplink monitor.
//!
//! [`RoutePolicy`] is a pure function of the callee, the uplink and a
//! [`SiteDirectory`] (is this number a phone registered here?).

use std::collections::VecDeque;
use std::time::Duration;

use crate::time::Millis;

/// Answers "is this number (user part of the Request-URI) a phone registered here?".
pub trait SiteDirectory {
    /// True when the callee has a usable binding on this appliance.
    fn is_site_phone(&self, number: &str) -> bool;
}

impl<F: Fn(&str) -> bool> SiteDirectory for F {
    fn is_site_phone(&self, number: &str) -> bool {
        self(number)
    }
}

/// Where a new call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// Forward to the cloud (fail-fast armed).
    Cloud,
    /// To the site phone's binding(s) here.
    SitePhone,
    /// To the configured backup route (PSTN gateway / backup trunk).
    Backup,
    /// Answer 503 Service Unavailable with this Retry-After (seconds).
    Reject503 {
        /// Retry-After header value, seconds.
        retry_after_s: u32,
    },
}

/// What to do with an INVITE whose fail-fast interval expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailFastDecision {
    /// CANCEL upstream, then route as given.
    CancelAndRoute(Route),
    /// Leave it with the cloud (emergency call and no other route).
    KeepWaiting,
}

/// What the driver knows about the uplink when deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UplinkView {
    /// `UplinkMonitor::is_up()`.
    pub up: bool,
    /// `UplinkMonitor::cloud_usable()` (Up or Suspect).
    pub usable: bool,
    /// True while a resync is in progress (the cloud may lack bindings it lost).
    pub resyncing: bool,
}

/// Routing policy from `[survival]` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Emergency numbers (`[survival] emergency`), matched on the user part.
    pub emergency: Vec<String>,
    /// Whether `[survival] backup_route` is configured.
    pub has_backup: bool,
    /// Retry-After of the 503 for calls with no route.
    pub retry_after: Duration,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            emergency: vec!["911".to_owned(), "112".to_owned()],
            has_backup: false,
            retry_after: Duration::from_secs(30),
        }
    }
}

impl RoutePolicy {
    /// Is `number` an emergency number?
    pub fn is_emergency(&self, number: &str) -> bool {
        self.emergency.iter().any(|e| e == number)
    }

    fn reject(&self) -> Route {
        Route::Reject503 {
            retry_after_s: u32::try_from(self.retry_after.as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
        }
    }

    /// Route for a new INVITE from a site phone.
    ///
    /// Emergency: cloud if Up, else backup, else the cloud anyway (best effort,
    /// never a 503). Others: cloud while usable (with fail-fast), else local.
    pub fn new_call(&self, callee: &str, uplink: UplinkView, dir: &dyn SiteDirectory) -> Route {
        if self.is_emergency(callee) {
            return if uplink.up || !self.has_backup {
                Route::Cloud
            } else {
                Route::Backup
            };
        }
        if uplink.usable {
            Route::Cloud
        } else {
            self.local(callee, dir)
        }
    }

    /// Local route: site phone if registered here, else backup, else 503.
    pub fn local(&self, callee: &str, dir: &dyn SiteDirectory) -> Route {
        if dir.is_site_phone(callee) {
            Route::SitePhone
        } else if self.has_backup {
            Route::Backup
        } else {
            self.reject()
        }
    }

    /// True when a local route other than a 503 exists for `callee`.
    pub fn has_local_route(&self, callee: &str, dir: &dyn SiteDirectory) -> bool {
        !matches!(self.local(callee, dir), Route::Reject503 { .. })
    }

    /// The fail-fast interval expired for an INVITE to `callee`.
    ///
    /// Cancels and reroutes only when a local route exists: with nowhere
    /// else to go (no site phone, no backup route) the call stays with the
    /// cloud, which may still answer (a lost provisional, a slow cloud), and
    /// ends by the cloud's answer or Timer B. Emergency calls go to the
    /// backup route when there is one, never to a site phone.
    pub fn after_fail_fast(&self, callee: &str, dir: &dyn SiteDirectory) -> FailFastDecision {
        if self.is_emergency(callee) {
            return if self.has_backup {
                FailFastDecision::CancelAndRoute(Route::Backup)
            } else {
                FailFastDecision::KeepWaiting
            };
        }
        match self.local(callee, dir) {
            Route::Reject503 { .. } => FailFastDecision::KeepWaiting,
            route => FailFastDecision::CancelAndRoute(route),
        }
    }

    /// The cloud answered a call with a final failure. A 404/480 for a callee
    /// registered here means the cloud does not (yet) know a phone that
    /// holdline can reach (a restarted cloud before the resync reached it, a
    /// local-only phone, a binding kept back by the verification): the call
    /// goes to the site phone instead of failing. A 408/5xx is treated the
    /// same while the cloud may lack bindings (resyncing, or not Up).
    /// Returns `None` to relay the cloud's answer as is (486 Busy, 603, ...).
    pub fn after_cloud_failure(
        &self,
        callee: &str,
        status: u16,
        uplink: UplinkView,
        dir: &dyn SiteDirectory,
    ) -> Option<Route> {
        let unknown_there = matches!(status, 404 | 480);
        let cloud_trouble = status == 408 || (500..600).contains(&status);
        let reroute = unknown_there || (cloud_trouble && (uplink.resyncing || !uplink.up));
        if reroute && dir.is_site_phone(callee) {
            Some(Route::SitePhone)
        } else {
            None
        }
    }
}

/// Tracks INVITEs forwarded to the cloud until their first provisional.
///
/// `K` is the driver's key for the client transaction (branch, id, ...).
#[derive(Debug, Clone)]
pub struct FailFast<K> {
    interval: Duration,
    pending: VecDeque<(Millis, K)>,
    expired: VecDeque<K>,
}

impl<K: PartialEq + Clone> FailFast<K> {
    /// Default fail-fast interval.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// A tracker with the given interval.
    pub fn new(interval: Duration) -> FailFast<K> {
        FailFast {
            interval,
            pending: VecDeque::new(),
            expired: VecDeque::new(),
        }
    }

    /// An INVITE was sent to the cloud at `now`.
    pub fn sent(&mut self, now: Millis, key: K) {
        let deadline = now + self.interval;
        // Keep deadline order even if the driver's `now` is not monotonic.
        let pos = self
            .pending
            .iter()
            .rposition(|(d, _)| *d <= deadline)
            .map_or(0, |p| p + 1);
        self.pending.insert(pos, (deadline, key));
    }

    /// A provisional (or final) response arrived, or the call was cancelled:
    /// stop tracking. Returns whether it was tracked.
    pub fn answered(&mut self, key: &K) -> bool {
        if let Some(pos) = self.pending.iter().position(|(_, k)| k == key) {
            self.pending.remove(pos);
            true
        } else {
            false
        }
    }

    /// Number of INVITEs waiting for a provisional.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Next deadline.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.pending.front().map(|(d, _)| *d)
    }

    /// Move expired INVITEs to the output queue.
    pub fn handle_timeout(&mut self, now: Millis) {
        while self.pending.front().is_some_and(|(d, _)| *d <= now) {
            if let Some((_, k)) = self.pending.pop_front() {
                self.expired.push_back(k);
            }
        }
    }

    /// Next INVITE to cancel upstream and route locally (ask the policy first).
    pub fn poll_expired(&mut self) -> Option<K> {
        self.expired.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(n: &str) -> bool {
        n.starts_with("2")
    }

    const UP: UplinkView = UplinkView {
        up: true,
        usable: true,
        resyncing: false,
    };
    const DOWN: UplinkView = UplinkView {
        up: false,
        usable: false,
        resyncing: false,
    };
    const SUSPECT: UplinkView = UplinkView {
        up: false,
        usable: true,
        resyncing: false,
    };

    #[test]
    fn route_decisions() {
        let no_backup = RoutePolicy::default();
        let backup = RoutePolicy {
            has_backup: true,
            ..RoutePolicy::default()
        };
        assert_eq!(no_backup.new_call("201", UP, &dir), Route::Cloud);
        assert_eq!(no_backup.new_call("201", SUSPECT, &dir), Route::Cloud);
        assert_eq!(no_backup.new_call("201", DOWN, &dir), Route::SitePhone);
        assert_eq!(backup.new_call("5551234", DOWN, &dir), Route::Backup);
        assert_eq!(
            no_backup.new_call("5551234", DOWN, &dir),
            Route::Reject503 { retry_after_s: 30 }
        );
        // Emergency: cloud if up, else backup, never a 503.
        assert_eq!(backup.new_call("911", UP, &dir), Route::Cloud);
        assert_eq!(backup.new_call("911", SUSPECT, &dir), Route::Backup);
        assert_eq!(backup.new_call("112", DOWN, &dir), Route::Backup);
        assert_eq!(no_backup.new_call("911", DOWN, &dir), Route::Cloud);
        assert_eq!(
            no_backup.after_fail_fast("911", &dir),
            FailFastDecision::KeepWaiting
        );
        assert_eq!(
            backup.after_fail_fast("911", &dir),
            FailFastDecision::CancelAndRoute(Route::Backup)
        );
        assert_eq!(
            no_backup.after_fail_fast("202", &dir),
            FailFastDecision::CancelAndRoute(Route::SitePhone)
        );
        assert_eq!(
            no_backup.after_fail_fast("5551234", &dir),
            FailFastDecision::KeepWaiting,
            "no local route: do not turn a slow call into a failed one"
        );
        assert_eq!(
            backup.after_fail_fast("5551234", &dir),
            FailFastDecision::CancelAndRoute(Route::Backup)
        );
        assert!(no_backup.has_local_route("202", &dir));
        assert!(!no_backup.has_local_route("999", &dir));
        // A cloud that lost its table says 480 for a site phone: route locally.
        let resync = UplinkView {
            resyncing: true,
            ..UP
        };
        assert_eq!(
            no_backup.after_cloud_failure("202", 480, resync, &dir),
            Some(Route::SitePhone)
        );
        assert_eq!(
            no_backup.after_cloud_failure("202", 480, UP, &dir),
            Some(Route::SitePhone)
        );
        assert_eq!(no_backup.after_cloud_failure("202", 500, UP, &dir), None);
        assert_eq!(
            no_backup.after_cloud_failure("202", 503, resync, &dir),
            Some(Route::SitePhone)
        );
        assert_eq!(
            no_backup.after_cloud_failure("202", 486, resync, &dir),
            None
        );
        assert_eq!(
            no_backup.after_cloud_failure("999", 480, resync, &dir),
            None
        );
    }

    #[test]
    fn fail_fast_expires_only_unanswered_invites() {
        let mut ff = FailFast::new(FailFast::<u32>::DEFAULT_INTERVAL);
        ff.sent(Millis(0), 1);
        ff.sent(Millis(100), 2);
        ff.sent(Millis(200), 3);
        assert!(ff.answered(&2));
        assert!(!ff.answered(&2));
        assert_eq!(ff.poll_timeout(), Some(Millis(1000)));
        ff.handle_timeout(Millis(999));
        assert_eq!(ff.poll_expired(), None);
        ff.handle_timeout(Millis(1200));
        assert_eq!(ff.poll_expired(), Some(1));
        assert_eq!(ff.poll_expired(), Some(3));
        assert_eq!(ff.poll_expired(), None);
        assert!(ff.is_empty());
        // Non-monotonic `now` keeps deadline order.
        ff.sent(Millis(500), 4);
        ff.sent(Millis(100), 5);
        assert_eq!(ff.poll_timeout(), Some(Millis(1100)));
        assert_eq!(ff.len(), 2);
    }
}
