//! BLF/MWI subscription take-over state (RFC 6665, RFC 4235, RFC 3842).
//!
//! While the cloud serves a subscription, the driver reports every NOTIFY it
//! relays ([`Subscription::on_cloud_notify`]) so that the last CSeq and the
//! last dialog-info `version` are known. When the uplink goes Down the driver
//! calls [`Subscription::take_over`]; from then on NOTIFYs are built here in
//! the same dialog (same Call-ID and tags), with CSeq and version continuing
//! above the last seen, and refreshes are answered locally. A lost NOTIFY is
//! retried; only `max_consecutive_losses` losses in a row (or a 481) end the
//! subscription. At resync the driver ends taken-over subscriptions with
//! `terminated;reason=deactivated`, paced by the resync pacer, so phones
//! subscribe again to the cloud.

use std::time::Duration;

use crate::time::Millis;

/// Event package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Package {
    /// `Event: dialog` (BLF, dialog-info+xml with a `version`).
    Dialog,
    /// `Event: message-summary` (MWI).
    MessageSummary,
}

/// Dialog identifiers of the subscription (from the phone's point of view
/// the notifier tag is the To-tag of its SUBSCRIBE's 2xx).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DialogIds {
    /// Call-ID.
    pub call_id: String,
    /// Notifier's tag (From-tag of NOTIFYs).
    pub notifier_tag: String,
    /// Subscriber's tag (To-tag of NOTIFYs).
    pub subscriber_tag: String,
}

/// Who serves the subscription now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The cloud; holdline relays and watches.
    Cloud,
    /// Taken over from the cloud during an outage.
    TakenOver,
    /// Created locally during an outage.
    Local,
    /// Ended (a terminated NOTIFY was built).
    Terminated,
}

/// Tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// Longest expiry granted to a refresh answered locally.
    pub max_expires: Duration,
    /// Delay before re-sending a NOTIFY that timed out.
    pub notify_retry_delay: Duration,
    /// Consecutive NOTIFY losses that end the subscription.
    pub max_consecutive_losses: u32,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            max_expires: Duration::from_secs(3600),
            notify_retry_delay: Duration::from_secs(2),
            max_consecutive_losses: 3,
        }
    }
}

/// Subscription-State of a NOTIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubState {
    /// `active;expires=N`.
    Active {
        /// Remaining seconds.
        expires: u64,
    },
    /// `terminated;reason=deactivated` (resync: subscribe again to the cloud).
    Deactivated,
    /// `terminated;reason=timeout` (not refreshed in time).
    Timeout,
    /// `terminated;reason=noresource` (unsubscribed: expires 0).
    NoResource,
}

impl SubState {
    /// The header value.
    pub fn header_value(&self) -> String {
        match self {
            SubState::Active { expires } => format!("active;expires={expires}"),
            SubState::Deactivated => "terminated;reason=deactivated".to_owned(),
            SubState::Timeout => "terminated;reason=timeout".to_owned(),
            SubState::NoResource => "terminated;reason=noresource".to_owned(),
        }
    }

    /// True for the terminated states.
    pub fn is_terminated(&self) -> bool {
        !matches!(self, SubState::Active { .. })
    }
}

/// A NOTIFY to build and send in the subscription's dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyPlan {
    /// CSeq number to use (strictly above every CSeq seen or sent).
    pub cseq: u32,
    /// dialog-info `version` for the body (Dialog package only).
    pub version: Option<u64>,
    /// Subscription-State.
    pub state: SubState,
}

/// What to do with a NOTIFY from the cloud in this dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloudNotify {
    /// Relay it to the phone (its CSeq/version were recorded).
    Relay,
    /// Holdline serves this dialog now: answer 481 to the cloud, do not relay
    /// (its CSeq/version would go backwards for the phone).
    Reject481,
}

/// How a NOTIFY transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyOutcome {
    /// 2xx.
    Delivered,
    /// Timer F (or transport error).
    Lost,
    /// A final error response with this status.
    Rejected(u16),
}

/// What follows a NOTIFY's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowUp {
    /// Nothing.
    None,
    /// The state changed while this NOTIFY was in flight: call
    /// [`Subscription::next_notify`] now to send the latest (full) state.
    SendNow,
    /// Call [`Subscription::next_notify`] at this time to re-send the current state.
    RetryAt(Millis),
    /// The subscription is gone: remove it (store and BLF watchers).
    Remove,
}

/// Answer to a SUBSCRIBE refresh during survival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefreshAnswer {
    /// 200 with this Expires; then send a NOTIFY (`next_notify`).
    Accept {
        /// Granted seconds.
        expires: u64,
    },
    /// Expires 0: 200, then a final NOTIFY (`next_notify` gives the terminated one).
    Unsubscribe,
    /// Not ours to answer (cloud phase or terminated): relay / 481.
    NotLocal,
}

/// One subscription's continuation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Dialog identifiers.
    pub ids: DialogIds,
    /// Event package.
    pub package: Package,
    phase: Phase,
    last_cseq: u32,
    last_version: Option<u64>,
    expires_at: Millis,
    losses: u32,
    retry_at: Option<Millis>,
    pending_final: Option<SubState>,
    in_flight: bool,
    relays_in_flight: u32,
    dirty: bool,
}

impl Subscription {
    /// A subscription the cloud accepted (2xx to the phone's SUBSCRIBE seen).
    pub fn observed(ids: DialogIds, package: Package, expires_at: Millis) -> Subscription {
        Subscription {
            ids,
            package,
            phase: Phase::Cloud,
            last_cseq: 0,
            last_version: None,
            expires_at,
            losses: 0,
            retry_at: None,
            pending_final: None,
            in_flight: false,
            relays_in_flight: 0,
            dirty: false,
        }
    }

    /// Restore from the store (`local_cseq`/`last_version` columns).
    pub fn restored(
        ids: DialogIds,
        package: Package,
        expires_at: Millis,
        last_cseq: u32,
        last_version: Option<u64>,
    ) -> Subscription {
        let mut s = Subscription::observed(ids, package, expires_at);
        s.last_cseq = last_cseq;
        s.last_version = last_version;
        s
    }

    /// A new SUBSCRIBE served locally during survival.
    pub fn new_local(
        ids: DialogIds,
        package: Package,
        now: Millis,
        requested: u64,
        cfg: &SubscriptionConfig,
    ) -> Subscription {
        let granted = requested.min(cfg.max_expires.as_secs());
        let mut s = Subscription::observed(ids, package, now + Duration::from_secs(granted));
        s.phase = Phase::Local;
        s
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Highest NOTIFY CSeq seen or sent.
    pub fn last_cseq(&self) -> u32 {
        self.last_cseq
    }

    /// Highest dialog-info version seen or sent.
    pub fn last_version(&self) -> Option<u64> {
        self.last_version
    }

    /// When the subscription expires.
    pub fn expires_at(&self) -> Millis {
        self.expires_at
    }

    /// True while holdline serves it (taken over or local).
    pub fn is_local(&self) -> bool {
        matches!(self.phase, Phase::TakenOver | Phase::Local)
    }

    /// A NOTIFY from the cloud in this dialog, with its CSeq, dialog-info
    /// version (if a dialog body) and expiry (from its Subscription-State).
    pub fn on_cloud_notify(
        &mut self,
        cseq: u32,
        version: Option<u64>,
        expires_at: Option<Millis>,
    ) -> CloudNotify {
        if self.phase != Phase::Cloud {
            return CloudNotify::Reject481;
        }
        self.last_cseq = self.last_cseq.max(cseq);
        self.relays_in_flight = self.relays_in_flight.saturating_add(1);
        if let Some(v) = version {
            self.last_version = Some(self.last_version.map_or(v, |l| l.max(v)));
        }
        if let Some(e) = expires_at {
            self.expires_at = e;
        }
        CloudNotify::Relay
    }

    /// A relayed cloud NOTIFY's transaction ended (the phone answered, or
    /// the proxy transaction timed out). Our own NOTIFYs wait for relayed ones
    /// still in flight, so that a take-over NOTIFY never overtakes the
    /// cloud's last one on the wire.
    pub fn relay_done(&mut self) -> FollowUp {
        self.relays_in_flight = self.relays_in_flight.saturating_sub(1);
        if self.relays_in_flight == 0 && self.dirty && !self.in_flight && self.is_local() {
            FollowUp::SendNow
        } else {
            FollowUp::None
        }
    }

    /// The phone refreshed through the cloud and the cloud granted `expires_at`.
    pub fn on_cloud_refresh(&mut self, expires_at: Millis) {
        if self.phase == Phase::Cloud {
            self.expires_at = expires_at;
        }
    }

    /// The uplink went Down: serve this subscription locally from now on.
    /// Returns true if a NOTIFY with the current local state should be sent.
    pub fn take_over(&mut self) -> bool {
        if self.phase == Phase::Cloud {
            self.phase = Phase::TakenOver;
            true
        } else {
            false
        }
    }

    /// A SUBSCRIBE refresh from the phone while holdline serves the dialog.
    pub fn on_refresh(
        &mut self,
        now: Millis,
        requested: u64,
        cfg: &SubscriptionConfig,
    ) -> RefreshAnswer {
        if !self.is_local() {
            return RefreshAnswer::NotLocal;
        }
        if requested == 0 {
            self.pending_final = Some(SubState::NoResource);
            return RefreshAnswer::Unsubscribe;
        }
        let granted = requested.min(cfg.max_expires.as_secs()).max(1);
        self.expires_at = now + Duration::from_secs(granted);
        RefreshAnswer::Accept { expires: granted }
    }

    /// The next NOTIFY to send (state change, refresh, retry). `None` when the
    /// subscription is not served locally, or while a NOTIFY of this dialog is
    /// still in flight: at most one NOTIFY transaction is outstanding per
    /// dialog (UDP may reorder two, and phones drop a CSeq that goes
    /// backwards); the change is remembered and [`FollowUp::SendNow`] asks
    /// for it when the outstanding one ends. The driver must report every
    /// NOTIFY's outcome ([`Subscription::notify_outcome`]).
    pub fn next_notify(&mut self, now: Millis) -> Option<NotifyPlan> {
        if !self.is_local() {
            return None;
        }
        if self.in_flight || self.relays_in_flight > 0 {
            self.dirty = true;
            return None;
        }
        self.retry_at = None;
        let state = match self.pending_final.take() {
            Some(s) => s,
            None if now >= self.expires_at => SubState::Timeout,
            None => SubState::Active {
                expires: now.secs_until_ceil(self.expires_at),
            },
        };
        Some(self.plan(state))
    }

    /// The final `terminated;reason=deactivated` NOTIFY (resync). `None` if
    /// the subscription is not served locally.
    /// While a NOTIFY is in flight the termination is queued and
    /// [`FollowUp::SendNow`] asks for it (through `next_notify`) afterwards.
    pub fn deactivate(&mut self) -> Option<NotifyPlan> {
        if !self.is_local() {
            return None;
        }
        if self.in_flight || self.relays_in_flight > 0 {
            self.pending_final = Some(SubState::Deactivated);
            self.dirty = true;
            return None;
        }
        self.retry_at = None;
        Some(self.plan(SubState::Deactivated))
    }

    fn plan(&mut self, state: SubState) -> NotifyPlan {
        self.last_cseq = self.last_cseq.saturating_add(1);
        let version = match self.package {
            Package::Dialog => {
                let v = self.last_version.map_or(0, |v| v.saturating_add(1));
                self.last_version = Some(v);
                Some(v)
            }
            Package::MessageSummary => None,
        };
        if state.is_terminated() {
            self.phase = Phase::Terminated;
        }
        self.in_flight = true;
        self.dirty = false;
        NotifyPlan {
            cseq: self.last_cseq,
            version,
            state,
        }
    }

    /// How a NOTIFY built from this subscription ended.
    pub fn notify_outcome(
        &mut self,
        now: Millis,
        outcome: NotifyOutcome,
        cfg: &SubscriptionConfig,
    ) -> FollowUp {
        self.in_flight = false;
        match outcome {
            NotifyOutcome::Delivered => {
                self.losses = 0;
                if self.phase == Phase::Terminated {
                    FollowUp::Remove
                } else if self.dirty && self.relays_in_flight == 0 {
                    FollowUp::SendNow
                } else {
                    FollowUp::None
                }
            }
            NotifyOutcome::Rejected(481) => {
                self.phase = Phase::Terminated;
                FollowUp::Remove
            }
            NotifyOutcome::Lost | NotifyOutcome::Rejected(_) => {
                self.losses = self.losses.saturating_add(1);
                if self.losses >= cfg.max_consecutive_losses.max(1) {
                    self.phase = Phase::Terminated;
                    FollowUp::Remove
                } else if self.phase == Phase::Terminated {
                    // A lost final NOTIFY: the phone will find out at its next
                    // refresh (481); nothing to keep.
                    FollowUp::Remove
                } else {
                    let at = now + cfg.notify_retry_delay;
                    self.retry_at = Some(at);
                    FollowUp::RetryAt(at)
                }
            }
        }
    }

    /// When `next_notify` is due by itself (a retry, or the expiry).
    pub fn poll_timeout(&self) -> Option<Millis> {
        if !self.is_local() {
            return None;
        }
        Some(
            self.retry_at
                .map_or(self.expires_at, |r| r.min(self.expires_at)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> DialogIds {
        DialogIds {
            call_id: "sub1@10.0.0.5".into(),
            notifier_tag: "cloudtag".into(),
            subscriber_tag: "phonetag".into(),
        }
    }

    #[test]
    fn take_over_continues_cseq_and_version_above_the_cloud() {
        let cfg = SubscriptionConfig::default();
        let mut s = Subscription::observed(ids(), Package::Dialog, Millis(600_000));
        assert_eq!(s.next_notify(Millis(0)), None, "cloud serves it");
        assert_eq!(
            s.on_cloud_notify(7, Some(41), Some(Millis(500_000))),
            CloudNotify::Relay
        );
        assert_eq!(s.on_cloud_notify(8, Some(42), None), CloudNotify::Relay);
        assert_eq!(s.relay_done(), FollowUp::None);
        assert!(s.take_over());
        assert!(!s.take_over());
        // The cloud's last NOTIFY is still on its way to the phone: wait for it.
        assert_eq!(s.next_notify(Millis(99_000)), None);
        assert_eq!(s.relay_done(), FollowUp::SendNow);
        let n = s.next_notify(Millis(100_000)).unwrap();
        assert_eq!(n.cseq, 9);
        assert_eq!(n.version, Some(43));
        assert_eq!(n.state.header_value(), "active;expires=400");
        // One NOTIFY in flight per dialog: the next change waits for it.
        assert_eq!(s.next_notify(Millis(100_001)), None);
        assert_eq!(
            s.notify_outcome(Millis(100_050), NotifyOutcome::Delivered, &cfg),
            FollowUp::SendNow
        );
        let n = s.next_notify(Millis(100_050)).unwrap();
        assert_eq!((n.cseq, n.version), (10, Some(44)));
        assert_eq!(
            s.notify_outcome(Millis(100_090), NotifyOutcome::Delivered, &cfg),
            FollowUp::None
        );
        // The cloud comes back with old counters: never relayed.
        assert_eq!(s.on_cloud_notify(3, Some(2), None), CloudNotify::Reject481);
        // Refresh answered locally.
        assert_eq!(
            s.on_refresh(Millis(200_000), 3600, &cfg),
            RefreshAnswer::Accept { expires: 3600 }
        );
        let after_refresh = s.next_notify(Millis(200_000)).unwrap();
        assert_eq!(after_refresh.cseq, 11);
        // A lost NOTIFY does not kill it; a retry goes out with higher CSeq.
        assert!(matches!(
            s.notify_outcome(Millis(230_000), NotifyOutcome::Lost, &cfg),
            FollowUp::RetryAt(_)
        ));
        assert_eq!(s.phase(), Phase::TakenOver);
        assert_eq!(s.poll_timeout(), Some(Millis(232_000)));
        let r = s.next_notify(Millis(232_000)).unwrap();
        assert_eq!((r.cseq, r.version), (12, Some(46)));
        assert_eq!(
            s.notify_outcome(Millis(233_000), NotifyOutcome::Delivered, &cfg),
            FollowUp::None
        );
        // A termination asked for while a NOTIFY is in flight waits for it.
        let mut q = Subscription::observed(ids(), Package::Dialog, Millis(600_000));
        q.take_over();
        q.next_notify(Millis(0)).unwrap();
        assert_eq!(q.deactivate(), None);
        assert_eq!(
            q.notify_outcome(Millis(10), NotifyOutcome::Delivered, &cfg),
            FollowUp::SendNow
        );
        let t = q.next_notify(Millis(10)).unwrap();
        assert_eq!(t.state, SubState::Deactivated);
        // Resync: deactivated, still monotonic; then nothing more.
        let d = s.deactivate().unwrap();
        assert_eq!(d.state.header_value(), "terminated;reason=deactivated");
        assert_eq!((d.cseq, d.version), (13, Some(47)));
        assert_eq!(s.next_notify(Millis(300_000)), None);
        assert_eq!(
            s.notify_outcome(Millis(300_000), NotifyOutcome::Delivered, &cfg),
            FollowUp::Remove
        );
    }

    #[test]
    fn repeated_losses_or_481_end_it_and_expiry_times_out() {
        let cfg = SubscriptionConfig::default();
        let mut s = Subscription::observed(ids(), Package::MessageSummary, Millis(10_000));
        s.take_over();
        for i in 0..2 {
            s.next_notify(Millis(i)).unwrap();
            assert!(matches!(
                s.notify_outcome(Millis(i), NotifyOutcome::Lost, &cfg),
                FollowUp::RetryAt(_)
            ));
        }
        let n = s.next_notify(Millis(5)).unwrap();
        assert_eq!(n.version, None, "MWI has no version");
        assert_eq!(
            s.notify_outcome(Millis(5), NotifyOutcome::Lost, &cfg),
            FollowUp::Remove
        );
        let mut s = Subscription::observed(ids(), Package::Dialog, Millis(10_000));
        s.take_over();
        s.next_notify(Millis(0));
        assert_eq!(
            s.notify_outcome(Millis(0), NotifyOutcome::Rejected(481), &cfg),
            FollowUp::Remove
        );
        let mut s = Subscription::observed(ids(), Package::Dialog, Millis(10_000));
        s.take_over();
        assert_eq!(s.poll_timeout(), Some(Millis(10_000)));
        let t = s.next_notify(Millis(10_000)).unwrap();
        assert_eq!(t.state, SubState::Timeout);
        assert_eq!(s.phase(), Phase::Terminated);
    }

    #[test]
    fn local_subscriptions_start_fresh_and_unsubscribe() {
        let cfg = SubscriptionConfig::default();
        let mut s = Subscription::new_local(ids(), Package::Dialog, Millis(0), 99_999, &cfg);
        assert_eq!(s.expires_at(), Millis(3_600_000));
        let n = s.next_notify(Millis(0)).unwrap();
        assert_eq!((n.cseq, n.version), (1, Some(0)));
        assert_eq!(s.on_refresh(Millis(1), 0, &cfg), RefreshAnswer::Unsubscribe);
        assert_eq!(s.next_notify(Millis(1)), None, "first one in flight");
        assert_eq!(
            s.notify_outcome(Millis(1), NotifyOutcome::Delivered, &cfg),
            FollowUp::SendNow
        );
        let f = s.next_notify(Millis(1)).unwrap();
        assert_eq!(f.state.header_value(), "terminated;reason=noresource");
        assert_eq!(f.cseq, 2);
        let mut r = Subscription::restored(ids(), Package::Dialog, Millis(5), 20, Some(9));
        r.take_over();
        assert_eq!(r.next_notify(Millis(0)).unwrap().cseq, 21);
    }
}
