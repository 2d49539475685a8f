//! Survival wiring: how [`Edge`] drives holdline-survival (issue 4).
//!
//! A child module of `edge` (it reads the edge's private state); edge.rs
//! calls the `sv_*` hooks at the points where a message crosses it.
//!
//! - Uplink: [`UplinkMonitor`] replaces the simple probe. Fed by probe
//!   answers and time-outs, every response from the cloud
//!   (`CloudResponse`, incl. 503 with/without Retry-After), INVITEs that
//!   got nothing within the fail-fast interval (`TransactionTimeout`) and
//!   send errors the driver reports ([`Edge::handle_transport_error`]).
//!   Transitions are logged and stored (`drain_uplink_events`).
//! - Registrar: while the cloud is not usable (Down, Recovering) REGISTERs
//!   are answered here by [`registrar::decide`]: refreshes of known
//!   bindings get a short jittered expiry and mark the phone alive, unknown
//!   phones get a `LocalOnly` binding (never given to the cloud).
//! - Calls: [`RoutePolicy`] for new INVITEs while not usable (site phone /
//!   backup / emergency / 503 + Retry-After) and fail-fast while usable
//!   (no answer within the interval: CANCEL upstream, route locally when a
//!   local route exists). In-dialog requests whose Request-URI is a site
//!   phone go straight to it when no Route is left or the cloud is not
//!   usable (mid-call BYE/re-INVITE of a site-to-site call).
//! - BLF/MWI: at Down every active cloud subscription is taken over in its
//!   dialog (survival [`SvSubscription`]: CSeq and version continue above
//!   the last seen); NOTIFYs are built from the calls the edge tracks
//!   ([`BlfBoard`]) and the cached MWI; new SUBSCRIBEs while not usable are
//!   served locally; taken-over subscriptions are ended with
//!   `terminated;reason=deactivated` by the resync pacer.
//! - Resync: on `ResyncAllowed`, [`resync::plan`] over the bindings
//!   (provenance, liveness = refreshed since the outage began) and a
//!   [`ResyncPacer`] at `resync_rate / rate_divisor`: trusted = holdline
//!   re-REGISTERs each verified binding with its Path and stored contact;
//!   untrusted = the phones' own refreshes are forwarded as the pace admits
//!   (else answered locally again with the short expiry).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use holdline_survival::blf::BlfBoard;
use holdline_survival::bodies::{
    self, DialogEntry, DialogState, MessageSummary, DIALOG_INFO_CONTENT_TYPE,
    MESSAGE_SUMMARY_CONTENT_TYPE,
};
use holdline_survival::registrar::{self, Known, RegistrarConfig};
use holdline_survival::resync::{
    self, BindingFacts, PacerAction, PacerConfig, ResyncMode, ResyncPacer, ResyncProgress,
};
use holdline_survival::route::{FailFast, FailFastDecision, Route, RoutePolicy, UplinkView};
use holdline_survival::subscription::{
    DialogIds, FollowUp, NotifyOutcome, NotifyPlan, Package, RefreshAnswer,
    Subscription as SvSubscription, SubscriptionConfig,
};
use holdline_survival::uplink::{UplinkEvent, UplinkKind};
use holdline_survival::{Millis, Rng};

use super::*;
use crate::calls::CallState;

/// A binding's key in the resync: (AoR, contact URI).
pub type BindingKey = (String, String);

/// Survival settings (the daemon maps `[cloud]`/`[survival]` onto this).
#[derive(Debug, Clone)]
pub struct SurvivalConfig {
    /// `[cloud] trusted`: holdline re-registers verified bindings itself.
    pub trusted: bool,
    /// `[cloud] resync_rate`: bindings per second given back.
    pub resync_rate: u32,
    /// `[survival] backup_route`.
    pub backup_route: Option<Peer>,
    /// `[survival] emergency`.
    pub emergency: Vec<String>,
    /// INVITE with no answer from the cloud within this: CANCEL, route locally.
    pub fail_fast: Duration,
    /// Survival REGISTER expiry.
    pub registrar: RegistrarConfig,
    /// Retry-After of the 503 for calls with no route.
    pub retry_after: Duration,
    /// A binding refreshed within this before the resync counts as alive
    /// even when its refresh was before the outage began.
    pub liveness_window: Duration,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// While the cloud is up, cap the expiry holdline's 2xx tells phones
    /// (mid-registrar style; the cloud keeps the phone's own expiry), so
    /// that every phone refreshes at least this often and proves itself
    /// alive during an outage. `None`: the cloud's expiry passes unchanged.
    /// Without it, in untrusted mode a phone that did not refresh during a
    /// short outage holds the cloud's long expiry and a restarted cloud gets
    /// it back only at its next refresh: use trusted mode, or set this.
    pub phone_refresh: Option<Duration>,
}

impl Default for SurvivalConfig {
    fn default() -> Self {
        SurvivalConfig {
            trusted: false,
            resync_rate: 50,
            backup_route: None,
            emergency: vec!["911".into(), "112".into()],
            fail_fast: FailFast::<String>::DEFAULT_INTERVAL,
            registrar: RegistrarConfig::default(),
            retry_after: Duration::from_secs(30),
            liveness_window: Duration::from_secs(30),
            seed: 0x5eed,
            phone_refresh: None,
        }
    }
}

/// Survival counters for the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SurvivalStats {
    /// REGISTERs answered locally.
    pub local_registers: u64,
    /// Of which created local-only bindings.
    pub local_only_bindings: u64,
    /// New calls routed to a site phone without the cloud.
    pub local_calls: u64,
    /// New calls sent to the backup route.
    pub backup_calls: u64,
    /// New calls answered 503.
    pub rejected_calls: u64,
    /// INVITEs cancelled upstream by fail-fast.
    pub fail_fast: u64,
    /// In-dialog requests sent straight to a site phone.
    pub direct_in_dialog: u64,
    /// Subscriptions taken over at Down.
    pub taken_over: u64,
    /// Subscriptions served locally from the start.
    pub local_subscriptions: u64,
    /// NOTIFYs built here.
    pub notifies: u64,
    /// NOTIFYs lost (no answer).
    pub notifies_lost: u64,
    /// Re-REGISTERs sent on phones' behalf.
    pub reregisters: u64,
}

/// An INVITE to the cloud watched by fail-fast.
#[derive(Debug, Clone)]
pub(super) struct FfInvite {
    /// The INVITE as the phone sent it (Via/received added, our Routes popped).
    original: Message,
    /// The INVITE as forwarded (for the CANCEL).
    forwarded: Message,
    caller: Peer,
    callee: String,
    sent_at: Instant,
}

/// An INVITE routed locally: where its CANCEL goes.
#[derive(Debug, Clone)]
pub(super) struct LocalInvite {
    branch: String,
    to_side: Side,
    to: Peer,
    ruri: String,
    until: Instant,
}

/// A NOTIFY holdline sent, waiting for its answer.
#[derive(Debug, Clone)]
pub(super) struct NotifyTx {
    sub: String,
    to: Peer,
    bytes: Vec<u8>,
    next_resend: Instant,
    interval: Duration,
    deadline: Instant,
}

/// All survival state of the edge.
#[derive(Debug)]
pub(super) struct Survival {
    pub(super) cfg: SurvivalConfig,
    failfast: FailFast<String>,
    ff: HashMap<String, FfInvite>,
    /// Upstream INVITEs cancelled by fail-fast: their late answers are dropped.
    abandoned: HashMap<String, (Message, Instant)>,
    /// INVITEs left with their callee's leg when the cloud went silent (the
    /// cloud had delivered them through holdline): never routed again, their
    /// answers come by the shortcut.
    reached: HashMap<String, Instant>,
    local_invites: HashMap<String, LocalInvite>,
    policy: RoutePolicy,
    rng: Rng,
    blf: BlfBoard,
    takeover: BTreeMap<String, (SvSubscription, Option<Millis>)>,
    sub_cfg: SubscriptionConfig,
    notifies: BTreeMap<String, NotifyTx>,
    next_notify: u64,
    pacer: Option<ResyncPacer<BindingKey, String>>,
    finished_reported: bool,
    rereg: BTreeMap<String, (BindingKey, Instant)>,
    resync_fwd: HashMap<String, BindingKey>,
    /// OPTIONS liveness pings to phones at resync: branch → binding.
    pings: HashMap<String, BindingKey>,
    next_ping: u64,
    /// Binding → when its phone last answered an OPTIONS.
    options_ok: HashMap<BindingKey, Millis>,
    /// A resync waiting for the pings: (outage since, rate divisor, deadline).
    pending_resync: Option<(Millis, u32, Instant)>,
    /// LAN source address → when a message last came from it (a phone
    /// that answers or places calls during the outage is alive).
    heard: HashMap<SocketAddr, Millis>,
    /// Calls routed here without the cloud (Call-IDs): the cloud never
    /// sees them, so their watchers stay with holdline until they end.
    local_call_ids: HashSet<String>,
    /// Deactivations held back while a watched phone is in such a call:
    /// id → (since when, put back in the pacer's queue already).
    deferred: BTreeMap<String, (Instant, bool)>,
    /// Last resync release (any pacer): a new resync's first release waits
    /// a pace interval after it, so that two resyncs back to back (a flap)
    /// never burst above the cap.
    last_release: Option<Instant>,
    /// No release before this (set when a resync starts).
    pace_gate: Option<Instant>,
    /// Untrusted resync: phones whose refresh was let through, and when.
    admitted: HashMap<BindingKey, Instant>,
    pub(super) stats: SurvivalStats,
}

const NOTIFY_T1: Duration = Duration::from_millis(500);
const NOTIFY_DEADLINE: Duration = Duration::from_secs(4);
const REREG_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the resync waits for phones to answer the liveness OPTIONS.
const PING_WAIT: Duration = Duration::from_secs(2);
/// Longest a deactivation waits for the watched phone's local calls to end.
const DEFER_MAX: Duration = Duration::from_secs(120);
/// Expiry (jittered between the two) of a refresh the untrusted resync
/// could not let through yet for the pace: the phone asks again soon.
const PACE_RETRY: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(20));
/// How long a phone's admitted refresh may take (challenge round trip).
const ADMIT_HOLD: Duration = Duration::from_secs(32);

impl Survival {
    pub(super) fn new(cfg: SurvivalConfig) -> Survival {
        let policy = RoutePolicy {
            emergency: cfg.emergency.clone(),
            has_backup: cfg.backup_route.is_some(),
            retry_after: cfg.retry_after,
        };
        Survival {
            failfast: FailFast::new(cfg.fail_fast),
            ff: HashMap::new(),
            abandoned: HashMap::new(),
            reached: HashMap::new(),
            local_invites: HashMap::new(),
            policy,
            rng: Rng::seeded(cfg.seed),
            blf: BlfBoard::new(Duration::from_secs(5)),
            takeover: BTreeMap::new(),
            sub_cfg: SubscriptionConfig::default(),
            notifies: BTreeMap::new(),
            next_notify: 1,
            pacer: None,
            finished_reported: false,
            rereg: BTreeMap::new(),
            resync_fwd: HashMap::new(),
            pings: HashMap::new(),
            next_ping: 1,
            options_ok: HashMap::new(),
            pending_resync: None,
            heard: HashMap::new(),
            local_call_ids: HashSet::new(),
            deferred: BTreeMap::new(),
            admitted: HashMap::new(),
            last_release: None,
            pace_gate: None,
            stats: SurvivalStats::default(),
            cfg,
        }
    }
}

/// `;expires=N` of one Contact item lowered to `cap` when above it.
fn cap_expires_param(item: &str, cap: u64) -> String {
    let lower = item.to_ascii_lowercase();
    let Some(pos) = lower.rfind(";expires=") else {
        return item.to_string();
    };
    let start = pos + ";expires=".len();
    let end = item[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(item.len(), |e| start + e);
    match item[start..end].parse::<u64>() {
        Ok(v) if v > cap => format!("{}{cap}{}", &item[..start], &item[end..]),
        _ => item.to_string(),
    }
}

/// The user part of a SIP URI (the number dialled).
fn uri_user(uri: &str) -> Option<String> {
    let u = Uri::parse(uri)?;
    let s = u.as_sip()?;
    s.user.map(str::to_string)
}

fn package_of(event: &str) -> Option<Package> {
    if event.eq_ignore_ascii_case("dialog") {
        Some(Package::Dialog)
    } else if event.eq_ignore_ascii_case("message-summary") {
        Some(Package::MessageSummary)
    } else {
        None
    }
}

impl Edge {
    // ------------------------------------------------------- public API

    /// Replaces the survival settings (call once after [`Edge::new`]).
    pub fn set_survival(&mut self, cfg: SurvivalConfig) {
        self.sv = Survival::new(cfg);
    }

    /// The survival settings in force.
    pub fn survival_config(&self) -> &SurvivalConfig {
        &self.sv.cfg
    }

    /// Progress of the current (or last) resync, for `show resync`.
    pub fn resync_progress(&self) -> Option<&ResyncProgress> {
        self.sv.pacer.as_ref().map(|p| p.progress())
    }

    /// Survival counters.
    pub fn survival_stats(&self) -> &SurvivalStats {
        &self.sv.stats
    }

    /// Subscriptions holdline serves itself now (taken over or local).
    pub fn local_subscriptions(&self) -> usize {
        self.sv.takeover.len()
    }

    /// `resync now`: while the cloud is Recovering, end the hold-down at
    /// once (the technician vouches for the cloud) and start the resync.
    /// False (nothing done) in any other state.
    pub fn resync_now(&mut self, now: Instant) -> bool {
        if self.probe.state_name() != "recovering" {
            return false;
        }
        let mode = self.probe.mode();
        self.probe
            .set_mode(now, holdline_survival::uplink::Mode::ForcedUp);
        self.probe.set_mode(now, mode);
        self.drain_uplink_events(now);
        true
    }

    /// Sending to `to` failed at the transport (the driver reports it):
    /// evidence for the uplink monitor when `to` is the cloud (its proxy
    /// or any of its addresses, not the backup route); on the LAN, requests
    /// waiting for a new TCP connection to a phone are answered here.
    pub fn handle_transport_error(&mut self, now: Instant, side: Side, to: Peer) {
        if side == Side::Lan {
            self.lan_transport_error(now, to);
            return;
        }
        if !self.is_cloud_peer(to) {
            return;
        }
        self.probe.on_transport_error(now, now);
        self.drain_uplink_events(now);
    }

    // ------------------------------------------------------------ time

    pub(super) fn ms(&self, now: Instant) -> Millis {
        Millis::from_instant(self.base, now)
    }

    fn unix_to_ms(&self, unix: i64) -> Millis {
        let d = unix.saturating_sub(self.base_unix).max(0);
        Millis(u64::try_from(d).unwrap_or(0).saturating_mul(1000))
    }

    /// An INVITE forwarded on this branch was cancelled upstream by
    /// survival and routed here instead (its timers stop).
    pub(super) fn sv_took_back(&self, branch: &str) -> bool {
        self.sv.abandoned.contains_key(branch) || self.sv.reached.contains_key(branch)
    }

    /// True while new requests go to the cloud first (Up, Suspect).
    pub(super) fn cloud_usable(&self) -> bool {
        self.probe.cloud_usable()
    }

    pub(super) fn sv_poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Millis> = None;
        let mut consider = |m: Option<Millis>| {
            if let Some(m) = m {
                next = Some(next.map_or(m, |n| n.min(m)));
            }
        };
        consider(self.sv.failfast.poll_timeout());
        consider(self.sv.blf.poll_timeout());
        let gate = self.sv.pace_gate.map(|g| self.ms(g));
        consider(
            self.sv
                .pacer
                .as_ref()
                .and_then(|p| p.poll_timeout())
                .map(|p| gate.map_or(p, |g| p.max(g))),
        );
        for (_, r) in self.sv.takeover.values() {
            consider(*r);
        }
        let mut at = next.map(|m| m.to_instant(self.base));
        if let Some((_, _, d)) = self.sv.pending_resync {
            at = Some(at.map_or(d, |a| a.min(d)));
        }
        for n in self.sv.notifies.values() {
            let d = n.next_resend.min(n.deadline);
            at = Some(at.map_or(d, |a| a.min(d)));
        }
        at
    }

    pub(super) fn sv_handle_timeout(&mut self, now: Instant) {
        let t = self.ms(now);
        // Fail-fast.
        self.sv.failfast.handle_timeout(t);
        while let Some(branch) = self.sv.failfast.poll_expired() {
            self.sv_fail_fast(now, &branch);
        }
        self.drain_uplink_events(now);
        // NOTIFY retransmissions and losses.
        self.sv_notify_timers(now);
        // Subscriptions waiting for a retry.
        let due: Vec<String> = self
            .sv
            .takeover
            .iter()
            .filter(|(_, (_, r))| r.is_some_and(|r| r <= t))
            .map(|(k, _)| k.clone())
            .collect();
        for id in due {
            if let Some((_, r)) = self.sv.takeover.get_mut(&id) {
                *r = None;
            }
            self.sv_send_notify(now, &id, false);
        }
        self.sv.blf.handle_timeout(t);
        if let Some((outage, divisor, deadline)) = self.sv.pending_resync {
            if now >= deadline {
                self.sv.pending_resync = None;
                self.sv.pings.clear();
                self.sv_start_resync(now, outage, divisor);
            }
        }
        self.sv_release_deferred(now);
        self.sv_pace(now);
        // Re-REGISTERs with no answer.
        let lost: Vec<(String, BindingKey)> = self
            .sv
            .rereg
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > REREG_TIMEOUT)
            .map(|(b, (k, _))| (b.clone(), k.clone()))
            .collect();
        for (b, k) in lost {
            self.sv.rereg.remove(&b);
            if let Some(p) = self.sv.pacer.as_mut() {
                p.report(t, &k, false);
            }
        }
        // Untrusted: phones that have not come back within twice the
        // longest survival expiry are not coming (dead): give up on them.
        let give_up = self.sv.cfg.registrar.expiry_max * 2 + Duration::from_secs(30);
        if let Some(p) = self.sv.pacer.as_mut() {
            if p.progress().mode == ResyncMode::Untrusted
                && !p.is_done()
                && t.since(p.progress().started_at) > give_up
            {
                p.abandon_pending(t);
            }
        }
        self.sv_check_resync_done(now);
        self.sv
            .abandoned
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(40));
        self.sv
            .reached
            .retain(|_, at| now.saturating_duration_since(*at) < Duration::from_secs(40));
        self.sv.local_invites.retain(|_, l| l.until > now);
        self.sv
            .admitted
            .retain(|_, at| now.saturating_duration_since(*at) < ADMIT_HOLD);
        if self.sv.local_call_ids.len() > 10_000
            || self.sv.pacer.as_ref().is_some_and(|p| p.is_done())
        {
            let live: HashSet<String> = self
                .calls
                .list()
                .iter()
                .filter(|c| !matches!(c.state, CallState::Terminated { .. }))
                .map(|c| c.call_id.clone())
                .collect();
            self.sv.local_call_ids.retain(|c| live.contains(c));
        }
        self.sv
            .ff
            .retain(|_, f| now.saturating_duration_since(f.sent_at) < INVITE_ROUTE_TTL);
    }

    /// Reacts to one uplink event (called from `drain_uplink_events`).
    pub(super) fn sv_on_uplink_event(&mut self, now: Instant, ev: &UplinkEvent) {
        match ev {
            UplinkEvent::Transition {
                to: UplinkKind::Down,
                ..
            } => {
                self.sv_take_over(now);
                self.sv_reclaim_invites(now);
            }
            UplinkEvent::ResyncAllowed {
                outage_since,
                rate_divisor,
                ..
            } => {
                // The monitor's Millis are since the probe's epoch.
                let outage = Millis::from_instant(self.base, self.probe.instant(*outage_since));
                self.sv_begin_resync(now, outage, *rate_divisor);
            }
            _ => {}
        }
    }

    /// A message came from a LAN address (liveness evidence for the resync).
    pub(super) fn sv_heard(&mut self, now: Instant, from: SocketAddr) {
        const MAX_HEARD: usize = 100_000;
        if self.sv.heard.len() >= MAX_HEARD && !self.sv.heard.contains_key(&from) {
            self.sv.heard.clear();
        }
        let t = self.ms(now);
        self.sv.heard.insert(from, t);
    }

    /// The last sign of life of a binding's phone: its last REGISTER or
    /// any message from its address.
    fn sv_last_alive(&self, b: &Binding) -> Millis {
        let reg = self.unix_to_ms(b.last_seen);
        match self.sv.heard.get(&b.source) {
            Some(h) => reg.max(*h),
            None => reg,
        }
    }

    /// Whether the entity a subscription watches is in a call routed here
    /// without the cloud (its end would be invisible to the cloud's BLF).
    fn sv_busy_locally(&self, id: &str) -> bool {
        let Some(s) = self.subs.get(id) else {
            return false;
        };
        if s.event.eq_ignore_ascii_case("message-summary") {
            return false;
        }
        self.calls.list().iter().any(|c| {
            self.sv.local_call_ids.contains(&c.call_id)
                && !matches!(c.state, CallState::Terminated { .. })
                && (c.from_uri == s.target_uri || c.to_uri == s.target_uri)
        })
    }

    /// A log line and an event-store record.
    fn sv_log(&mut self, now: Instant, detail: String) {
        let at = self.unix(now);
        self.logs.push_back(detail.clone());
        self.store_jobs.push_back(StoreJob {
            token: None,
            writes: vec![StoreWrite::Event {
                at,
                kind: "survival".into(),
                detail,
            }],
        });
    }

    // ------------------------------------------------------- responses

    /// Caps the expiry in the cloud's REGISTER 2xx to the phone
    /// ([`SurvivalConfig::phone_refresh`]).
    pub(super) fn sv_cap_phone_expiry(&self, resp: &mut Message) {
        let Some(cap) = self.sv.cfg.phone_refresh else {
            return;
        };
        let cap = cap.as_secs().max(1);
        let items: Vec<String> = resp
            .header_values("Contact")
            .flat_map(list_items)
            .map(|i| cap_expires_param(i.trim(), cap))
            .collect();
        if !items.is_empty() {
            resp.remove_header("Contact");
            for i in &items {
                let _ = resp.add_header("Contact", i);
            }
        }
        if let Some(e) = resp.expires() {
            if u64::from(e) > cap {
                let _ = resp.replace_header("Expires", &cap.to_string());
            }
        }
    }

    /// A response from the cloud with one of our branches (after the probe
    /// check). True when it was ours alone (re-REGISTER, the late answer to
    /// an INVITE cancelled by fail-fast) and is consumed.
    pub(super) fn sv_wan_response(&mut self, now: Instant, branch: &str, msg: &Message) -> bool {
        let t = self.ms(now);
        let status = msg.status().unwrap_or(0);
        self.sv.failfast.answered(&branch.to_string());
        let is_invite = msg.cseq().is_some_and(|c| c.method == Method::Invite);
        if status >= 200 && is_invite {
            if let Some(ff) = self.sv.ff.remove(branch) {
                if status >= 300 && self.sv_after_cloud_failure(now, branch, ff, msg, status) {
                    return true;
                }
            }
        }
        if let Some((key, _)) = self.sv.rereg.get(branch).cloned() {
            if status >= 200 {
                self.sv.rereg.remove(branch);
                let ok = (200..300).contains(&status);
                if let Some(p) = self.sv.pacer.as_mut() {
                    p.report(t, &key, ok);
                }
                if ok {
                    self.stats.registered += 1;
                }
                self.sv_check_resync_done(now);
            }
            return true;
        }
        if status >= 200 {
            if let Some(key) = self.sv.resync_fwd.remove(branch) {
                let ok = (200..300).contains(&status);
                // A challenge is not an answer yet: the phone's retry follows.
                if ok || (status != 401 && status != 407) {
                    self.sv.admitted.remove(&key);
                    if let Some(p) = self.sv.pacer.as_mut() {
                        p.report(t, &key, ok);
                    }
                    self.sv_check_resync_done(now);
                }
            }
        }
        if let Some((inv, _)) = self.sv.abandoned.get(branch) {
            // Cancelled upstream and routed locally: the cloud's late answer
            // must not reach the caller. A non-2xx final is ACKed here.
            if (300..700).contains(&status) {
                if let Ok(ack) = Message::ack_for(inv, msg) {
                    self.transmits.push_back(Transmit {
                        side: Side::Wan,
                        to: self.cfg.cloud,
                        bytes: ack.to_bytes(),
                    });
                }
            }
            // The answer to our own CANCEL of it is ours too: relayed, it
            // would reach the caller without a Via of its own.
            return msg
                .cseq()
                .is_some_and(|c| matches!(c.method, Method::Invite | Method::Cancel));
        }
        false
    }

    /// A response from the LAN with one of our branches: our own NOTIFYs
    /// and liveness OPTIONS.
    pub(super) fn sv_lan_response(&mut self, now: Instant, branch: &str, msg: &Message) -> bool {
        if let Some(key) = self.sv.pings.remove(branch) {
            // Any answer, even an error, proves the phone is there.
            let t = self.ms(now);
            self.sv.options_ok.insert(key, t);
            if self.sv.pings.is_empty() {
                if let Some((outage, divisor, _)) = self.sv.pending_resync.take() {
                    self.sv_start_resync(now, outage, divisor);
                }
            }
            return true;
        }
        let Some(tx) = self.sv.notifies.get(branch) else {
            return !self.cloud_usable() && self.sv_shortcut_response(now, branch, msg);
        };
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return true;
        }
        let id = tx.sub.clone();
        self.sv.notifies.remove(branch);
        let outcome = if (200..300).contains(&status) {
            NotifyOutcome::Delivered
        } else {
            NotifyOutcome::Rejected(status)
        };
        self.sv_notify_outcome(now, &id, outcome);
        true
    }

    /// The cloud is gone while a call between two site phones that it
    /// routed is being set up (the callee's leg came back through holdline):
    /// the callee's answers would go to the dead cloud and be lost, so they
    /// go straight to the caller instead, over the leg holdline forwarded
    /// (its Via is under the cloud's). The caller's ACK and BYE already go
    /// straight to the callee (in-dialog requests while not usable). True
    /// when relayed this way.
    fn sv_shortcut_response(&mut self, now: Instant, branch: &str, msg: &Message) -> bool {
        let Some(r) = self.routes.get(branch).copied() else {
            return false;
        };
        if r.side != Side::Wan || r.peer != self.cfg.cloud {
            return false;
        }
        // Ours (to the callee), the cloud's, ours (from the caller), the caller's.
        let branches: Vec<String> = msg
            .vias()
            .take(3)
            .map(|v| v.branch().unwrap_or_default().to_string())
            .collect();
        let Some(up) = branches.get(2).filter(|b| b.starts_with(BRANCH_PREFIX)) else {
            return false;
        };
        let Some(caller) = self.routes.get(up.as_str()).copied() else {
            return false;
        };
        if caller.side != Side::Lan || msg.via_count() < 4 {
            return false;
        }
        let up = up.clone();
        let status = msg.status().unwrap_or(0);
        if status < 200 && caller.final_relayed {
            return true; // overtaken by the final
        }
        let mut m = msg.clone();
        for _ in 0..3 {
            m.pop_via();
        }
        self.sv.failfast.answered(&up);
        // The callee answered: holdline's Timer A/B towards the dead cloud
        // end as if the cloud had answered.
        self.invite_tx.remove(&up);
        if status >= 200 {
            self.sv.ff.remove(&up);
            for b in [branch, up.as_str()] {
                if let Some(rt) = self.routes.get_mut(b) {
                    rt.final_relayed = true;
                }
            }
        }
        if m.cseq().is_some_and(|c| c.method == Method::Invite) {
            if let (Some(cid), Some(ft)) = (m.call_id(), m.from_tag()) {
                let tt = m.to_tag().map(str::to_string);
                for dir in [Direction::Inbound, Direction::Outbound] {
                    self.calls
                        .on_invite_response(now, (cid, ft, dir), status, tt.as_deref());
                }
            }
        }
        self.sv.stats.direct_in_dialog += 1;
        self.transmits.push_back(Transmit {
            side: Side::Lan,
            to: caller.peer,
            bytes: m.to_bytes(),
        });
        self.sv_blf_refresh(now);
        true
    }

    // -------------------------------------------------------- requests

    /// Records a request forwarded to the cloud (for `CloudResponse` and
    /// fail-fast). `original` is the request before our Via/Record-Route.
    pub(super) fn sv_forwarded_to_cloud(
        &mut self,
        now: Instant,
        branch: &str,
        original: Option<(Message, Peer)>,
        forwarded: &[u8],
    ) {
        let t = self.ms(now);
        let Some((orig, caller)) = original else {
            return;
        };
        if self.sv.ff.contains_key(branch) {
            return; // retransmission
        }
        let callee = orig.request_uri().and_then(uri_user).unwrap_or_default();
        let Ok(fwd) = Message::parse(forwarded) else {
            return;
        };
        self.sv.failfast.sent(t, branch.to_string());
        self.sv.ff.insert(
            branch.to_string(),
            FfInvite {
                original: orig,
                forwarded: fwd,
                caller,
                callee,
                sent_at: now,
            },
        );
    }

    fn is_site_number(&self, number: &str) -> bool {
        let aor = format!("sip:{number}@{}", self.cfg.domain.to_ascii_lowercase());
        !self.bindings.for_aor(&aor).is_empty()
    }

    fn site_binding(&self, number: &str) -> Option<Binding> {
        let aor = format!("sip:{number}@{}", self.cfg.domain.to_ascii_lowercase());
        self.bindings
            .for_aor(&aor)
            .iter()
            .max_by_key(|b| b.last_seen)
            .cloned()
    }

    fn uplink_view(&self) -> UplinkView {
        UplinkView {
            up: self.probe.is_up(),
            usable: self.probe.cloud_usable(),
            resyncing: self.sv.pending_resync.is_some()
                || self.sv.pacer.as_ref().is_some_and(|p| !p.is_done()),
        }
    }

    /// The cloud answered an INVITE with a final error: a site phone the
    /// cloud does not know (404/480: e.g. its location table is still being
    /// resynced) or a cloud in trouble while not Up is reached here instead
    /// ([`RoutePolicy::after_cloud_failure`]). True when rerouted (the
    /// error is ACKed here and not relayed).
    fn sv_after_cloud_failure(
        &mut self,
        now: Instant,
        branch: &str,
        ff: FfInvite,
        msg: &Message,
        status: u16,
    ) -> bool {
        let route = {
            let dir = |n: &str| self.is_site_number(n);
            self.sv
                .policy
                .after_cloud_failure(&ff.callee, status, self.uplink_view(), &dir)
        };
        let Some(route) = route else {
            return false;
        };
        if let Ok(ack) = Message::ack_for(&ff.forwarded, msg) {
            self.transmits.push_back(Transmit {
                side: Side::Wan,
                to: self.cfg.cloud,
                bytes: ack.to_bytes(),
            });
        }
        self.sv
            .abandoned
            .insert(branch.to_string(), (ff.forwarded.clone(), now));
        let call_id = ff.original.call_id().unwrap_or_default().to_string();
        self.sv_log(
            now,
            format!("INVITE {call_id}: the cloud answered {status}; routed {route:?} here"),
        );
        let local_branch = format!("{branch}x");
        self.sv_route_invite(
            now,
            ff.caller,
            ff.original,
            route,
            &ff.callee,
            branch,
            &local_branch,
        );
        true
    }

    fn sv_fail_fast(&mut self, now: Instant, branch: &str) {
        let Some(ff) = self.sv.ff.remove(branch) else {
            return;
        };
        self.probe.on_transaction_timeout(now, ff.sent_at);
        self.drain_uplink_events(now);
        self.sv_leave_cloud(now, branch, ff);
    }

    /// At Down: INVITEs still waiting at the cloud for a final answer
    /// (a 100 Trying stops fail-fast and the caller's retransmissions, but
    /// the dead cloud will never forward them) are taken back and routed
    /// here, unless they already reached their callee through holdline.
    fn sv_reclaim_invites(&mut self, now: Instant) {
        let mut pending: Vec<String> = self.sv.ff.keys().cloned().collect();
        pending.sort();
        for b in pending {
            self.sv.failfast.answered(&b);
            if let Some(ff) = self.sv.ff.remove(&b) {
                self.sv_leave_cloud(now, &b, ff);
            }
        }
    }

    /// An INVITE the cloud has not answered is taken back: cancelled
    /// upstream and routed here when a local route exists (else left with
    /// the cloud).
    fn sv_leave_cloud(&mut self, now: Instant, branch: &str, ff: FfInvite) {
        let call_id = ff.original.call_id().unwrap_or_default().to_string();
        let from_tag = ff.original.from_tag().unwrap_or_default().to_string();
        if self
            .calls
            .get(&call_id, &from_tag, Direction::Inbound)
            .is_some()
        {
            // The cloud already delivered it to the site phone through
            // holdline: a second INVITE would be a merged request (482).
            // Its answers come back by the shortcut (sv_shortcut_response).
            self.sv_log(
                now,
                format!("fail-fast: INVITE {call_id} already reached its callee: left as it is"),
            );
            // Not routed again by anyone (incident_sim seed 905: the reclaim
            // of silent INVITEs at Down sent it a second time: 482).
            self.sv.reached.insert(branch.to_string(), now);
            return;
        }
        let decision = {
            let dir = |n: &str| self.is_site_number(n);
            self.sv.policy.after_fail_fast(&ff.callee, &dir)
        };
        let route = match decision {
            FailFastDecision::KeepWaiting => {
                self.sv_log(
                    now,
                    format!("fail-fast: INVITE {call_id} unanswered, no local route: left with the cloud"),
                );
                return;
            }
            FailFastDecision::CancelAndRoute(r) => r,
        };
        self.sv.stats.fail_fast += 1;
        if let Ok(cancel) = Message::cancel_for(&ff.forwarded) {
            self.transmits.push_back(Transmit {
                side: Side::Wan,
                to: self.cfg.cloud,
                bytes: cancel.to_bytes(),
            });
        }
        self.sv
            .abandoned
            .insert(branch.to_string(), (ff.forwarded.clone(), now));
        self.sv_log(
            now,
            format!(
                "fail-fast: INVITE {call_id} unanswered by the cloud: cancelled, routed {route:?}"
            ),
        );
        let local_branch = format!("{branch}x");
        self.sv_route_invite(
            now,
            ff.caller,
            ff.original,
            route,
            &ff.callee,
            branch,
            &local_branch,
        );
    }

    /// Routes a new INVITE without the cloud. `key_branch` is the branch the
    /// caller's CANCEL maps to; `branch` the one the local leg uses.
    #[allow(clippy::too_many_arguments)]
    fn sv_route_invite(
        &mut self,
        now: Instant,
        from: Peer,
        mut msg: Message,
        route: Route,
        callee: &str,
        key_branch: &str,
        branch: &str,
    ) {
        let (to_side, to, ruri) = match route {
            Route::Reject503 { retry_after_s } => {
                self.sv.stats.rejected_calls += 1;
                if let Ok(mut r) = holdline_sip::response_for(&msg, 503, "Service Unavailable") {
                    let _ = r.add_header("Retry-After", &retry_after_s.to_string());
                    let _ = r.set_body(None, b"");
                    self.transmits.push_back(Transmit {
                        side: Side::Lan,
                        to: from,
                        bytes: r.to_bytes(),
                    });
                }
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    let fu = msg.from().map(|f| aor_of(&f)).unwrap_or_default();
                    let tu = msg.to().map(|t| aor_of(&t)).unwrap_or_default();
                    self.calls.on_invite(
                        now,
                        (cid, ft),
                        (&fu, &tu),
                        Direction::Outbound,
                        Some(from),
                    );
                    self.calls
                        .on_invite_response(now, (cid, ft, Direction::Outbound), 503, None);
                }
                return;
            }
            Route::SitePhone => match self.site_binding(callee) {
                Some(b) => {
                    let to = self.lan_peer(&b).unwrap_or_else(|| b.peer());
                    (Side::Lan, to, b.contact_uri.clone())
                }
                None => {
                    let r = Route::Reject503 {
                        retry_after_s: u32::try_from(self.sv.cfg.retry_after.as_secs())
                            .unwrap_or(30),
                    };
                    return self.sv_route_invite(now, from, msg, r, callee, key_branch, branch);
                }
            },
            Route::Backup => match self.sv.cfg.backup_route {
                Some(p) => (
                    Side::Wan,
                    p,
                    msg.request_uri().unwrap_or_default().to_string(),
                ),
                None => return,
            },
            Route::Cloud => (
                Side::Wan,
                self.cfg.cloud,
                msg.request_uri().unwrap_or_default().to_string(),
            ),
        };
        match route {
            Route::SitePhone => {
                self.sv.stats.local_calls += 1;
                if let Some(cid) = msg.call_id() {
                    self.sv.local_call_ids.insert(cid.to_string());
                }
            }
            Route::Backup => self.sv.stats.backup_calls += 1,
            _ => {}
        }
        if to_side == Side::Lan {
            let _ = msg.set_request_uri(&ruri);
            msg.remove_header("Route");
        }
        if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
            let fu = msg.from().map(|f| aor_of(&f)).unwrap_or_default();
            let tu = msg.to().map(|t| aor_of(&t)).unwrap_or_default();
            self.calls
                .on_invite(now, (cid, ft), (&fu, &tu), Direction::Outbound, Some(from));
            if to_side == Side::Lan {
                self.calls
                    .on_invite(now, (cid, ft), (&fu, &tu), Direction::Inbound, Some(to));
            }
        }
        self.double_record_route(
            &mut msg,
            (Side::Lan, from.transport),
            (to_side, to.transport),
        );
        self.sv.local_invites.insert(
            key_branch.to_string(),
            LocalInvite {
                branch: branch.to_string(),
                to_side,
                to,
                ruri,
                until: now + INVITE_ROUTE_TTL,
            },
        );
        self.forward_branch(now, branch.to_string(), Side::Lan, from, msg, to_side, to);
        self.sv_blf_refresh(now);
    }

    /// LAN requests that survival handles. True when handled (answered or
    /// forwarded); false: the normal path (to the cloud) continues.
    pub(super) fn sv_lan_request(
        &mut self,
        now: Instant,
        from: Peer,
        msg: &mut Message,
        method: &Method,
    ) -> bool {
        let in_dialog = msg.to_tag().is_some();
        let usable = self.cloud_usable();
        match method {
            Method::Register => self.sv_register(now, from, msg),
            Method::Invite if !in_dialog => {
                let key = self.our_branch(Side::Lan, msg);
                if self.sv.local_invites.contains_key(&key) {
                    // A retransmission of an INVITE already routed locally.
                    if let Some(l) = self.sv.local_invites.get(&key).cloned() {
                        let mut m = msg.clone();
                        let _ = m.set_request_uri(&l.ruri);
                        self.forward_branch(now, l.branch, Side::Lan, from, m, l.to_side, l.to);
                    }
                    return true;
                }
                let callee = msg.request_uri().and_then(uri_user).unwrap_or_default();
                if !usable && self.sv.ff.contains_key(&key) {
                    // A retransmission of an INVITE sent to the cloud before
                    // it went Down and still unanswered: take it back now
                    // (as fail-fast would), never route it a second time.
                    let local = {
                        let dir = |n: &str| self.is_site_number(n);
                        self.sv.policy.after_fail_fast(&callee, &dir)
                    };
                    if local == FailFastDecision::KeepWaiting {
                        return false; // left with the cloud: forwarded again
                    }
                    self.sv.failfast.answered(&key);
                    if let Some(ff) = self.sv.ff.remove(&key) {
                        self.sv_leave_cloud(now, &key, ff);
                    }
                    return true;
                }
                let route = {
                    let dir = |n: &str| self.is_site_number(n);
                    self.sv.policy.new_call(&callee, self.uplink_view(), &dir)
                };
                if route == Route::Cloud {
                    return false;
                }
                // In survival only phones with a binding here place calls.
                let caller = msg.from().map(|f| aor_of(&f)).unwrap_or_default();
                if self.bindings.for_aor(&caller).is_empty() {
                    self.stats.forbidden += 1;
                    self.reply(Side::Lan, from, msg, 403, "Forbidden (not registered here)");
                    return true;
                }
                let branch = key.clone();
                self.sv_route_invite(now, from, msg.clone(), route, &callee, &key, &branch);
                true
            }
            Method::Ack
                if self
                    .sv
                    .local_invites
                    .contains_key(&self.our_branch(Side::Lan, msg)) =>
            {
                // ACK of a non-2xx final of a locally routed INVITE (same branch).
                let key = self.our_branch(Side::Lan, msg);
                if let Some(l) = self.sv.local_invites.get(&key).cloned() {
                    let mut m = msg.clone();
                    let _ = m.set_request_uri(&l.ruri);
                    m.remove_header("Route");
                    self.forward_branch(now, l.branch, Side::Lan, from, m, l.to_side, l.to);
                }
                true
            }
            Method::Cancel => {
                let key = self.our_branch(Side::Lan, msg);
                let Some(l) = self.sv.local_invites.get(&key).cloned() else {
                    return false;
                };
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    self.calls.on_cancel(now, cid, ft, Direction::Outbound);
                    self.calls.on_cancel(now, cid, ft, Direction::Inbound);
                }
                let mut m = msg.clone();
                let _ = m.set_request_uri(&l.ruri);
                m.remove_header("Route");
                self.forward_branch(now, l.branch, Side::Lan, from, m, l.to_side, l.to);
                self.sv_blf_refresh(now);
                true
            }
            Method::Subscribe => self.sv_subscribe(now, from, msg, usable),
            _ if in_dialog || *method == Method::Ack => {
                // A site phone named by the Request-URI, reached directly when
                // no Route is left (a local dialog) or the cloud is gone.
                let ruri = msg.request_uri().unwrap_or_default().to_string();
                let no_route = msg.top_route().is_none();
                if !no_route && usable {
                    return false;
                }
                let target = match self.bindings.by_contact(&ruri) {
                    Some(b) => Some(self.lan_peer(b).unwrap_or_else(|| b.peer())),
                    None => uri_target(&ruri)
                        .filter(|(ip, _, _)| self.in_lan(*ip) && !self.is_ours(&ruri))
                        .map(|(ip, port, t)| Peer {
                            transport: t.unwrap_or(Transport::Udp),
                            addr: SocketAddr::new(ip, port),
                        }),
                };
                let Some(to) = target else {
                    return false;
                };
                msg.remove_header("Route");
                if *method == Method::Bye {
                    if let (Some(cid), Some(ft), Some(tt)) =
                        (msg.call_id(), msg.from_tag(), msg.to_tag())
                    {
                        self.calls.on_bye(now, cid, (ft, tt), Some(from));
                        self.calls.on_bye(now, cid, (ft, tt), Some(to));
                    }
                }
                self.sv.stats.direct_in_dialog += 1;
                let branch = self.our_branch(Side::Lan, msg);
                self.forward_branch(now, branch, Side::Lan, from, msg.clone(), Side::Lan, to);
                self.sv_blf_refresh(now);
                true
            }
            _ => false,
        }
    }

    // -------------------------------------------------------- registrar

    fn sv_register(&mut self, now: Instant, from: Peer, msg: &mut Message) -> bool {
        let usable = self.cloud_usable();
        let untrusted_resync = self
            .sv
            .pacer
            .as_ref()
            .is_some_and(|pc| !pc.is_done() && pc.progress().mode == ResyncMode::Untrusted);
        if usable && !untrusted_resync {
            return false; // the normal path: to the cloud
        }
        let path = self.route_uri(Side::Wan, self.cfg.cloud.transport);
        let Some(p) = self.pending_register(now, from, msg, path) else {
            return false;
        };
        let key = (
            p.aor.clone(),
            p.contacts
                .first()
                .map(|c| c.uri.clone())
                .unwrap_or_default(),
        );
        if usable {
            // Untrusted resync: the phone's own refresh goes to the cloud
            // as the pace admits; otherwise it is answered locally again.
            // Once admitted, its follow-ups (the answer to the cloud's
            // digest challenge) go on without asking the pacer again.
            let t = self.ms(now);
            let admitted = self
                .sv
                .admitted
                .get(&key)
                .is_some_and(|at| now.saturating_duration_since(*at) < ADMIT_HOLD);
            let admit = if admitted {
                resync::Admission::Forward
            } else if self.sv_pace_gated(now) {
                resync::Admission::AnswerLocally
            } else {
                match self.sv.pacer.as_mut() {
                    Some(pc) => pc.admit_phone_refresh(t, &key),
                    None => resync::Admission::Forward,
                }
            };
            if admit == resync::Admission::Forward && !admitted {
                self.sv.last_release = Some(now);
            }
            if admit == resync::Admission::Forward {
                self.sv.admitted.entry(key.clone()).or_insert(now);
                let branch = self.our_branch(Side::Lan, msg);
                self.sv.resync_fwd.insert(branch, key);
                return false;
            }
            // Refused for the pace only: answered here, with an expiry
            // short enough that the phone asks again soon (with the
            // survival expiry an unlucky phone lost 30-60 s per refusal
            // and could miss the resync; incident_sim seed 57).
            let soon = RegistrarConfig {
                expiry_min: PACE_RETRY.0,
                expiry_max: PACE_RETRY.1,
            };
            self.sv_register_locally(now, from, msg, &p, &soon);
            return true;
        }
        let cfg = self.sv.cfg.registrar;
        self.sv_register_locally(now, from, msg, &p, &cfg);
        true
    }

    fn sv_register_locally(
        &mut self,
        now: Instant,
        from: Peer,
        msg: &Message,
        p: &PendingRegister,
        expiry: &RegistrarConfig,
    ) {
        let t = self.unix(now);
        let mut writes = Vec::new();
        if p.star {
            self.bindings.remove_aor(&p.aor);
            writes.push(StoreWrite::RemoveAor { aor: p.aor.clone() });
        }
        for c in &p.contacts {
            let existing: Vec<Binding> = self.bindings.for_aor(&p.aor).to_vec();
            let known: Vec<Known<'_>> = existing
                .iter()
                .map(|b| Known {
                    call_id: &b.call_id,
                    cseq: b.cseq,
                    source: b.source,
                    instance_id: b.instance_id.as_deref(),
                    provenance: match b.provenance {
                        Provenance::CloudVerified { .. } => registrar::Provenance::CloudVerified,
                        Provenance::LocalOnly { .. } => registrar::Provenance::LocalOnly,
                    },
                })
                .collect();
            let reg = registrar::Register {
                call_id: &p.call_id,
                cseq: p.cseq,
                source: from.addr,
                instance_id: c.instance.as_deref(),
                requested_expires: c.expires.or(p.expires),
            };
            let decision = registrar::decide(expiry, &known, &reg, &mut self.sv.rng);
            match decision {
                registrar::Decision::Refresh { index, expires, .. } => {
                    let Some(old) = existing.get(index) else {
                        continue;
                    };
                    if uri_key(&old.contact_uri) != uri_key(&c.uri) {
                        self.bindings.remove(&old.aor, &old.contact_uri);
                        writes.push(StoreWrite::RemoveBinding {
                            aor: old.aor.clone(),
                            contact_uri: old.contact_uri.clone(),
                        });
                    }
                    let b = Binding {
                        contact: c.raw.clone(),
                        contact_uri: c.uri.clone(),
                        expires_at: t + i64::from(expires),
                        call_id: p.call_id.clone(),
                        cseq: p.cseq,
                        source: from.addr,
                        transport: from.transport,
                        instance_id: c.instance.clone().or(old.instance_id.clone()),
                        reg_id: c.reg_id.or(old.reg_id),
                        last_seen: t,
                        ..old.clone()
                    };
                    self.bindings.upsert(b.clone());
                    writes.push(StoreWrite::UpsertBinding(b));
                }
                registrar::Decision::NewLocalOnly { expires } => {
                    self.sv.stats.local_only_bindings += 1;
                    let b = Binding {
                        aor: p.aor.clone(),
                        contact: c.raw.clone(),
                        contact_uri: c.uri.clone(),
                        expires_at: t + i64::from(expires),
                        call_id: p.call_id.clone(),
                        cseq: p.cseq,
                        source: from.addr,
                        transport: from.transport,
                        instance_id: c.instance.clone(),
                        reg_id: c.reg_id,
                        provenance: Provenance::LocalOnly { at: t },
                        last_seen: t,
                        path: Vec::new(),
                    };
                    self.bindings.upsert(b.clone());
                    writes.push(StoreWrite::UpsertBinding(b));
                }
                registrar::Decision::Remove { index } => {
                    if let Some(old) = index.and_then(|i| existing.get(i)) {
                        self.bindings.remove(&old.aor, &old.contact_uri);
                        writes.push(StoreWrite::RemoveBinding {
                            aor: old.aor.clone(),
                            contact_uri: old.contact_uri.clone(),
                        });
                    }
                }
                registrar::Decision::OutOfOrder { .. } => {
                    self.reply(Side::Lan, from, msg, 500, "Out of Order");
                    return;
                }
            }
        }
        self.sv.stats.local_registers += 1;
        let Ok(mut r) = holdline_sip::response_for(msg, 200, "OK") else {
            return;
        };
        for b in self.bindings.for_aor(&p.aor) {
            let exp = (b.expires_at - t).max(0);
            let _ = r.add_header("Contact", &format!("<{}>;expires={exp}", b.contact_uri));
        }
        let _ = r.set_body(None, b"");
        let tx = Transmit {
            side: Side::Lan,
            to: from,
            bytes: r.to_bytes(),
        };
        if writes.is_empty() {
            self.transmits.push_back(tx);
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.held.insert(token, tx);
        self.store_jobs.push_back(StoreJob {
            token: Some(token),
            writes,
        });
    }

    // ---------------------------------------------------- subscriptions

    fn sv_take_over(&mut self, now: Instant) {
        // The board is fed only while something is served here: bring it
        // up to date first, or the first NOTIFY of each taken-over dialog
        // shows the calls as they were at the last outage (incident_sim
        // seed 709: a call confirmed just before the cloud died was never
        // shown confirmed to a watcher whose next NOTIFY was held up).
        self.sv_blf_feed(now);
        let t = self.unix(now);
        let ids: Vec<String> = self
            .subs
            .list()
            .iter()
            .filter(|s| s.state == SubState::Active && s.notifier_tag.is_some())
            .filter(|s| !self.sv.takeover.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            let Some(s) = self.subs.get(&id) else {
                continue;
            };
            let Some(package) = package_of(&s.event) else {
                continue;
            };
            let ids = DialogIds {
                call_id: s.call_id.clone(),
                notifier_tag: s.notifier_tag.clone().unwrap_or_default(),
                subscriber_tag: s.phone_tag.clone(),
            };
            let exp = if s.expires_at > t {
                self.unix_to_ms(s.expires_at)
            } else {
                self.ms(now) + Duration::from_secs(600)
            };
            let mut sv = SvSubscription::restored(ids, package, exp, s.notify_cseq, s.last_version);
            sv.take_over();
            self.sv.takeover.insert(id.clone(), (sv, None));
            self.sv.stats.taken_over += 1;
            // One NOTIFY with the state as holdline knows it now.
            self.sv_send_notify(now, &id, false);
        }
    }

    fn sv_subscribe(&mut self, now: Instant, from: Peer, msg: &Message, usable: bool) -> bool {
        let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) else {
            return false;
        };
        let id = sub_id(cid, ft);
        let requested = u64::from(msg.expires().unwrap_or(3600));
        let t = self.ms(now);
        if let Some((sv, _)) = self.sv.takeover.get_mut(&id) {
            let answer = sv.on_refresh(t, requested, &self.sv.sub_cfg);
            let expires = match answer {
                RefreshAnswer::NotLocal => return false,
                RefreshAnswer::Accept { expires } => expires,
                RefreshAnswer::Unsubscribe => 0,
            };
            if let Ok(mut r) = holdline_sip::response_for(msg, 200, "OK") {
                let _ = r.add_header("Expires", &expires.to_string());
                let _ = r.add_header(
                    "Contact",
                    &format!("<sip:{}>", self.local_hostport(Side::Lan, from.transport)),
                );
                let _ = r.set_body(None, b"");
                self.transmits.push_back(Transmit {
                    side: Side::Lan,
                    to: from,
                    bytes: r.to_bytes(),
                });
            }
            let unix = self.unix(now);
            if let Some(s) = self.subs.get_mut(&id) {
                s.subscribe_cseq = s.subscribe_cseq.max(msg.cseq().map(|c| c.seq).unwrap_or(0));
                s.expires_at = unix + i64::try_from(expires).unwrap_or(0);
            }
            self.sv_send_notify(now, &id, false);
            return true;
        }
        if usable || msg.to_tag().is_some() {
            return false;
        }
        // A new subscription while the cloud is gone: served here.
        let event = msg
            .event()
            .map(|e| e.package.to_string())
            .unwrap_or_default();
        let Some(package) = package_of(&event) else {
            return false;
        };
        let tag = msg.local_tag();
        let granted = requested.min(self.sv.sub_cfg.max_expires.as_secs());
        let contact = match msg.contacts() {
            Some(Contacts::List(l)) => l.first().map(|c| c.uri.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        if granted == 0 {
            self.reply(Side::Lan, from, msg, 200, "OK");
            return true;
        }
        let unix = self.unix(now);
        let core_sub = Subscription {
            id: id.clone(),
            event,
            call_id: cid.to_string(),
            phone_tag: ft.to_string(),
            notifier_tag: Some(tag.clone()),
            watcher_aor: msg.from().map(|f| aor_of(&f)).unwrap_or_default(),
            target_uri: msg.to().map(|t| aor_of(&t)).unwrap_or_default(),
            phone_contact: contact,
            route_set: Vec::new(),
            subscribe_cseq: msg.cseq().map(|c| c.seq).unwrap_or(0),
            notify_cseq: 0,
            expires_at: unix + i64::try_from(granted).unwrap_or(0),
            phone: from,
            state: SubState::Active,
            last_version: None,
            last_body: None,
            last_content_type: None,
            last_notify_at: None,
            notifies: 0,
        };
        self.subs.insert(core_sub.clone());
        self.store_jobs.push_back(StoreJob {
            token: None,
            writes: vec![StoreWrite::UpsertSubscription(core_sub)],
        });
        let ids = DialogIds {
            call_id: cid.to_string(),
            notifier_tag: tag,
            subscriber_tag: ft.to_string(),
        };
        let sv = SvSubscription::new_local(ids, package, t, granted, &self.sv.sub_cfg);
        self.sv.takeover.insert(id.clone(), (sv, None));
        self.sv.stats.local_subscriptions += 1;
        if let Ok(mut r) = holdline_sip::response_for(msg, 200, "OK") {
            let _ = r.add_header("Expires", &granted.to_string());
            let _ = r.add_header(
                "Contact",
                &format!("<sip:{}>", self.local_hostport(Side::Lan, from.transport)),
            );
            let _ = r.set_body(None, b"");
            self.transmits.push_back(Transmit {
                side: Side::Lan,
                to: from,
                bytes: r.to_bytes(),
            });
        }
        self.sv_send_notify(now, &id, false);
        true
    }

    /// A NOTIFY from the cloud in a dialog holdline has taken over: 481
    /// (the phone now gets its NOTIFYs from holdline until deactivation).
    pub(super) fn sv_cloud_notify_taken_over(&self, msg: &Message) -> bool {
        let (Some(cid), Some(tt)) = (msg.call_id(), msg.to_tag()) else {
            return false;
        };
        self.sv
            .takeover
            .get(&sub_id(cid, tt))
            .is_some_and(|(s, _)| s.is_local())
    }

    /// Feeds the BLF board from the calls the edge tracks; NOTIFYs watchers
    /// of every entity whose state changed.
    pub(super) fn sv_blf_refresh(&mut self, now: Instant) {
        if self.sv.takeover.is_empty() {
            return;
        }
        let changed = self.sv_blf_feed(now);
        if changed.is_empty() {
            return;
        }
        let ids: Vec<String> = self
            .sv
            .takeover
            .iter()
            .filter(|(_, (s, _))| s.package == Package::Dialog && s.is_local())
            .map(|(id, _)| id.clone())
            .filter(|id| {
                self.subs
                    .get(id)
                    .is_some_and(|s| changed.contains(&s.target_uri))
            })
            .collect();
        for id in ids {
            self.sv_send_notify(now, &id, false);
        }
    }

    /// Brings the BLF board up to date with the calls the edge tracks;
    /// returns the entities whose state changed.
    fn sv_blf_feed(&mut self, now: Instant) -> BTreeSet<String> {
        let t = self.ms(now);
        let mut changed: BTreeSet<String> = BTreeSet::new();
        let entries: Vec<(String, DialogEntry)> = self
            .calls
            .list()
            .iter()
            .map(|c| {
                let state = match &c.state {
                    CallState::Trying { .. } => DialogState::Trying,
                    CallState::Proceeding { .. } => DialogState::Proceeding,
                    CallState::Early { .. } => DialogState::Early,
                    CallState::Confirmed { .. } => DialogState::Confirmed,
                    CallState::Terminated { .. } => DialogState::Terminated,
                };
                let (entity, dir, remote) = match c.direction {
                    Direction::Outbound => (
                        c.from_uri.clone(),
                        bodies::Direction::Initiator,
                        c.to_uri.clone(),
                    ),
                    Direction::Inbound => (
                        c.to_uri.clone(),
                        bodies::Direction::Recipient,
                        c.from_uri.clone(),
                    ),
                };
                (
                    entity,
                    DialogEntry {
                        id: c.call_id.clone(),
                        call_id: Some(c.call_id.clone()),
                        local_tag: None,
                        remote_tag: None,
                        direction: Some(dir),
                        state,
                        remote_identity: Some(remote),
                    },
                )
            })
            .collect();
        for (entity, entry) in entries {
            if self.sv.blf.update(t, &entity, entry) {
                changed.insert(entity);
            }
        }
        changed
    }

    /// Builds and sends the next NOTIFY of a taken-over / local subscription
    /// (`deactivate`: the final `terminated;reason=deactivated` one).
    fn sv_send_notify(&mut self, now: Instant, id: &str, deactivate: bool) {
        let t = self.ms(now);
        let Some((sv, _)) = self.sv.takeover.get_mut(id) else {
            return;
        };
        let plan: Option<NotifyPlan> = if deactivate {
            sv.deactivate()
        } else {
            sv.next_notify(t)
        };
        let Some(plan) = plan else {
            return;
        };
        let package = sv.package;
        let Some(s) = self.subs.get(id).cloned() else {
            self.sv.takeover.remove(id);
            return;
        };
        let (ctype, body) = match package {
            Package::Dialog => (
                DIALOG_INFO_CONTENT_TYPE.to_string(),
                self.sv.blf.body(&s.target_uri, plan.version.unwrap_or(0)),
            ),
            Package::MessageSummary => match self.subs.mwi(&s.watcher_aor) {
                Some(m) => (m.content_type.clone(), m.body.clone()),
                None => (
                    MESSAGE_SUMMARY_CONTENT_TYPE.to_string(),
                    MessageSummary::default().to_body(),
                ),
            },
        };
        let branch = format!(
            "{BRANCH_PREFIX}N{:x}-{:x}",
            self.sv.next_notify,
            self.cfg.seed & 0xffff
        );
        self.sv.next_notify += 1;
        let hp = self.local_hostport(Side::Lan, s.phone.transport);
        let ruri = if s.phone_contact.is_empty() {
            format!("sip:{}", s.phone.addr)
        } else {
            s.phone_contact
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        };
        let raw = format!(
            "NOTIFY {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/{tr} {hp};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{target}>;tag={ntag}\r\n\
             To: <{watcher}>;tag={ptag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cseq} NOTIFY\r\n\
             Contact: <sip:{hp}>\r\n\
             Event: {event}\r\n\
             Subscription-State: {state}\r\n\
             Content-Type: {ctype}\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            tr = s.phone.transport.via_name(),
            target = s.target_uri,
            ntag = s.notifier_tag.clone().unwrap_or_default(),
            watcher = s.watcher_aor,
            ptag = s.phone_tag,
            cid = s.call_id,
            cseq = plan.cseq,
            event = s.event,
            state = plan.state.header_value(),
            len = body.len(),
        );
        self.sv.stats.notifies += 1;
        let bytes = raw.into_bytes();
        self.transmits.push_back(Transmit {
            side: Side::Lan,
            to: s.phone,
            bytes: bytes.clone(),
        });
        self.sv.notifies.insert(
            branch,
            NotifyTx {
                sub: id.to_string(),
                to: s.phone,
                bytes,
                next_resend: now + NOTIFY_T1,
                interval: NOTIFY_T1,
                deadline: now + NOTIFY_DEADLINE,
            },
        );
        // The subscription's CSeq and version persist (a restart carries on).
        let unix = self.unix(now);
        if let Some(cs) = self.subs.get_mut(id) {
            cs.notify_cseq = plan.cseq;
            if let Some(v) = plan.version {
                cs.last_version = Some(v);
            }
            cs.last_notify_at = Some(unix);
            cs.notifies += 1;
            let w = StoreWrite::UpsertSubscription(cs.clone());
            self.store_jobs.push_back(StoreJob {
                token: None,
                writes: vec![w],
            });
        }
    }

    fn sv_notify_timers(&mut self, now: Instant) {
        let mut lost = Vec::new();
        let mut resend = Vec::new();
        for (b, n) in self.sv.notifies.iter_mut() {
            if now >= n.deadline {
                lost.push((b.clone(), n.sub.clone()));
            } else if now >= n.next_resend {
                if n.to.transport == Transport::Udp {
                    resend.push(Transmit {
                        side: Side::Lan,
                        to: n.to,
                        bytes: n.bytes.clone(),
                    });
                }
                n.interval = (n.interval * 2).min(Duration::from_secs(4));
                n.next_resend = now + n.interval;
            }
        }
        self.transmits.extend(resend);
        for (b, id) in lost {
            self.sv.notifies.remove(&b);
            self.sv.stats.notifies_lost += 1;
            self.sv_notify_outcome(now, &id, NotifyOutcome::Lost);
        }
    }

    fn sv_notify_outcome(&mut self, now: Instant, id: &str, outcome: NotifyOutcome) {
        let t = self.ms(now);
        let Some((sv, retry)) = self.sv.takeover.get_mut(id) else {
            return;
        };
        match sv.notify_outcome(t, outcome, &self.sv.sub_cfg) {
            FollowUp::None => {}
            FollowUp::SendNow => self.sv_send_notify(now, id, false),
            FollowUp::RetryAt(at) => *retry = Some(at),
            FollowUp::Remove => {
                self.sv.takeover.remove(id);
                if self.subs.remove(id).is_some() {
                    self.store_jobs.push_back(StoreJob {
                        token: None,
                        writes: vec![StoreWrite::RemoveSubscription { id: id.to_string() }],
                    });
                }
            }
        }
    }

    // ----------------------------------------------------------- resync

    /// The cloud is back: phones that have not refreshed since the outage
    /// began are asked with an OPTIONS whether they are alive; the resync
    /// starts when all answered or after [`PING_WAIT`].
    fn sv_begin_resync(&mut self, now: Instant, outage_since: Millis, rate_divisor: u32) {
        let quiet: Vec<Binding> = self
            .bindings
            .iter()
            .filter(|b| matches!(b.provenance, Provenance::CloudVerified { .. }))
            .filter(|b| self.sv_last_alive(b) < outage_since)
            .cloned()
            .collect();
        self.sv.pings.clear();
        for b in quiet {
            let hp = self.local_hostport(Side::Lan, b.transport);
            let branch = format!(
                "{BRANCH_PREFIX}O{:x}-{:x}",
                self.sv.next_ping,
                self.cfg.seed & 0xffff
            );
            self.sv.next_ping += 1;
            let raw = format!(
                "OPTIONS {uri} SIP/2.0\r\n\
                 Via: SIP/2.0/{tr} {hp};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:holdline@{hp}>;tag=hlo{seed:x}\r\n\
                 To: <{uri}>\r\n\
                 Call-ID: {branch}@{hp}\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                uri = b.contact_uri,
                tr = b.transport.via_name(),
                seed = self.cfg.seed & 0xffff,
            );
            self.transmits.push_back(Transmit {
                side: Side::Lan,
                to: b.peer(),
                bytes: raw.into_bytes(),
            });
            self.sv
                .pings
                .insert(branch, (b.aor.clone(), b.contact_uri.clone()));
        }
        if self.sv.pings.is_empty() {
            self.sv_start_resync(now, outage_since, rate_divisor);
        } else {
            self.sv.pending_resync = Some((outage_since, rate_divisor, now + PING_WAIT));
        }
    }

    fn sv_start_resync(&mut self, now: Instant, outage_since: Millis, rate_divisor: u32) {
        let t = self.ms(now);
        let window = self.sv.cfg.liveness_window;
        let facts: Vec<BindingFacts<BindingKey>> = self
            .bindings
            .iter()
            .map(|b| BindingFacts {
                key: (b.aor.clone(), b.contact_uri.clone()),
                integrity_ok: !b.aor.is_empty() && !b.contact_uri.is_empty(),
                provenance: match b.provenance {
                    Provenance::CloudVerified { .. } => registrar::Provenance::CloudVerified,
                    Provenance::LocalOnly { .. } => registrar::Provenance::LocalOnly,
                },
                last_refresh: Some(self.sv_last_alive(b)),
                last_options_ok: self
                    .sv
                    .options_ok
                    .get(&(b.aor.clone(), b.contact_uri.clone()))
                    .copied(),
            })
            .collect();
        let plan = resync::plan(facts, outage_since, t, window);
        let verified = plan.verified.len();
        let rejected = plan.rejected.len();
        let subs: Vec<String> = self
            .sv
            .takeover
            .iter()
            .filter(|(_, (s, _))| s.is_local())
            .map(|(id, _)| id.clone())
            .collect();
        let nsubs = subs.len();
        // Every subscription still served here is in the new queue.
        self.sv.deferred.clear();
        let mode = if self.sv.cfg.trusted {
            ResyncMode::Trusted
        } else {
            ResyncMode::Untrusted
        };
        let cfg = PacerConfig {
            rate: self.sv.cfg.resync_rate.max(1),
            ..PacerConfig::default()
        };
        let seed = self.sv.rng.next_u64();
        let pacer = ResyncPacer::new(t, cfg, rate_divisor, mode, plan, subs, Rng::seeded(seed));
        let rate = pacer.rate();
        self.sv.pace_gate = self
            .sv
            .last_release
            .map(|l| l + Duration::from_millis(1000_u64.div_ceil(u64::from(rate.max(1)))));
        self.sv.pacer = Some(pacer);
        self.sv.finished_reported = false;
        self.sv_log(
            now,
            format!(
                "resync started ({mode:?}): {verified} verified bindings, {rejected} held back, \
                 {nsubs} subscriptions to deactivate, {rate}/s"
            ),
        );
        self.sv_pace(now);
        self.sv_check_resync_done(now);
    }

    /// True while a new resync must not release yet (see `pace_gate`).
    fn sv_pace_gated(&mut self, now: Instant) -> bool {
        match self.sv.pace_gate {
            Some(g) if now < g => true,
            Some(_) => {
                self.sv.pace_gate = None;
                false
            }
            None => false,
        }
    }

    fn sv_pace(&mut self, now: Instant) {
        let t = self.ms(now);
        if self.sv_pace_gated(now) {
            return;
        }
        while let Some(action) = self.sv.pacer.as_mut().and_then(|p| p.poll_action(t)) {
            self.sv.last_release = Some(now);
            match action {
                PacerAction::ReRegister(key) => self.sv_reregister(now, key),
                PacerAction::TerminateSubscription(id) => {
                    // Held back (see sv_release_deferred) while a NOTIFY of
                    // this dialog is still out (deactivating now would queue
                    // the final NOTIFY behind it and send it later, beside
                    // the pace), or while the watched phone is in a call the
                    // cloud never saw (at most DEFER_MAX).
                    let since = self.sv.deferred.remove(&id).map_or(now, |(s, _)| s);
                    let waited_out = now.saturating_duration_since(since) >= DEFER_MAX;
                    if self.sv_notify_out(&id) || (!waited_out && self.sv_busy_locally(&id)) {
                        self.sv.deferred.insert(id, (since, false));
                    } else {
                        self.sv_send_notify(now, &id, true);
                    }
                }
            }
        }
    }

    /// A NOTIFY of this subscription is waiting for its answer.
    fn sv_notify_out(&self, id: &str) -> bool {
        self.sv.notifies.values().any(|n| n.sub == id)
    }

    /// Deactivations held back while the watched phone was in a local call
    /// go back to the pacer's queue once the call ended (or after
    /// [`DEFER_MAX`]): they are sent against a token of their own, never
    /// beside the pace, and a busy phone costs one token, not one per poll.
    fn sv_release_deferred(&mut self, now: Instant) {
        if self.sv.deferred.is_empty() {
            return;
        }
        let t = self.ms(now);
        let ready: Vec<String> = self
            .sv
            .deferred
            .iter()
            .filter(|(id, (since, queued))| {
                !*queued
                    && !self.sv_notify_out(id)
                    && (now.saturating_duration_since(*since) >= DEFER_MAX
                        || !self.sv_busy_locally(id))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ready {
            match self.sv.pacer.as_mut() {
                // Stays in `deferred` (as queued) until the pacer releases it.
                Some(p) => {
                    p.put_back_subscription(t, id.clone());
                    if let Some(d) = self.sv.deferred.get_mut(&id) {
                        d.1 = true;
                    }
                }
                None => {
                    self.sv.deferred.remove(&id);
                    self.sv_send_notify(now, &id, true);
                }
            }
        }
    }

    fn sv_reregister(&mut self, now: Instant, key: BindingKey) {
        let t = self.unix(now);
        let b = self
            .bindings
            .for_aor(&key.0)
            .iter()
            .find(|b| uri_key(&b.contact_uri) == uri_key(&key.1))
            .cloned();
        let Some(b) = b else {
            let t = self.ms(now);
            if let Some(p) = self.sv.pacer.as_mut() {
                p.report(t, &key, false);
            }
            return;
        };
        let cloud = self.cfg.cloud;
        let hp = self.local_hostport(Side::Wan, cloud.transport);
        let n = self.sv.rereg.len() as u64 + self.sv.stats.reregisters;
        let branch = format!("{BRANCH_PREFIX}R{:x}-{:x}", n, self.cfg.seed & 0xffff);
        let exp = (b.expires_at - t).max(60);
        let mut params = format!(";expires={exp}");
        if let Some(i) = &b.instance_id {
            params.push_str(&format!(";+sip.instance=\"{}\"", i.trim_matches('"')));
        }
        if let Some(r) = b.reg_id {
            params.push_str(&format!(";reg-id={r}"));
        }
        let path = b
            .path
            .first()
            .cloned()
            .unwrap_or_else(|| self.route_uri(Side::Wan, cloud.transport));
        let h = hash64(&[&b.aor, &b.contact_uri], self.cfg.seed);
        let raw = format!(
            "REGISTER sip:{d} SIP/2.0\r\n\
             Via: SIP/2.0/{tr} {hp};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag=hlr{h:x}\r\n\
             To: <{aor}>\r\n\
             Call-ID: hl-resync-{h:x}@{hp}\r\n\
             CSeq: {seq} REGISTER\r\n\
             Contact: <{uri}>{params}\r\n\
             Path: {path}\r\n\
             Supported: path\r\n\
             Expires: {exp}\r\n\
             User-Agent: holdline/{v}\r\n\
             Content-Length: 0\r\n\r\n",
            d = self.cfg.domain,
            tr = cloud.transport.via_name(),
            aor = b.aor,
            seq = self.sv.stats.reregisters + 1,
            uri = b.contact_uri,
            v = env!("CARGO_PKG_VERSION"),
        );
        self.sv.stats.reregisters += 1;
        self.sv.rereg.insert(branch, (key, now));
        self.transmits.push_back(Transmit {
            side: Side::Wan,
            to: cloud,
            bytes: raw.into_bytes(),
        });
    }

    fn sv_check_resync_done(&mut self, now: Instant) {
        if self.sv.finished_reported {
            return;
        }
        let done = self.sv.pacer.as_ref().filter(|p| p.is_done()).map(|p| {
            let pr = p.progress();
            (pr.bindings_confirmed, pr.bindings_failed)
        });
        if let Some((confirmed, failed)) = done {
            self.sv.finished_reported = true;
            self.sv_log(
                now,
                format!(
                    "resync finished: {confirmed} bindings confirmed by the cloud, {failed} failed"
                ),
            );
        }
    }
}

#[cfg(test)]
#[path = "survive_tests.rs"]
mod tests;
