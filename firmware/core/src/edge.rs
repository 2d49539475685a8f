//! The edge proxy: what happens to each message between the phones (LAN)
//! and the cloud (WAN). Sans-IO: `handle_*` in, `poll_*` out.
//!
//! Policy:
//! - Access: LAN requests only from `lan_subnets` and, outside a dialog, only
//!   to the cloud's domain (never to a host named in the Request-URI); WAN
//!   requests only from the cloud's addresses. Otherwise 403.
//! - Every request is forwarded with our Via (branch derived from the
//!   incoming one, so retransmissions and CANCELs match) and, when it starts
//!   a dialog, two Record-Routes (one per leg: RFC 5658 double
//!   record-routing) so holdline stays on the dialog.
//! - REGISTER (LAN → cloud) gets a Path naming our WAN side; the cloud's
//!   digest challenge and the phone's answer pass untouched. On the cloud's
//!   2xx the bindings it lists become [`StoreWrite`]s, and the 2xx is held
//!   until [`Edge::handle_store_done`] says they are durable.
//! - Requests from the cloud are routed by Request-URI to the registered
//!   contact's transport address (NAT-safe, also after a restart once the
//!   bindings are reloaded with [`Edge::load_bindings`]).
//! - Responses go back to where the request came from (remembered per
//!   branch, so TCP connections and NAT mappings are reused; the Via is the
//!   fallback).
//! - Observation: INVITE dialogs ([`Calls`]), SUBSCRIBE dialogs and the
//!   MWI cache ([`Subs`]); the OPTIONS probe ([`Probe`]).
//! - Survival (`survive.rs`, settings from [`Edge::set_survival`]): while
//!   the cloud is Down/Recovering, REGISTERs are answered here (short
//!   jittered expiry; unknown phones local-only), new calls follow the
//!   route policy (site phone, backup route, emergency, 503), in-dialog
//!   requests go straight to the other site phone, BLF/MWI subscriptions are
//!   served in their dialogs; INVITEs the cloud leaves unanswered for the
//!   fail-fast interval are cancelled and routed here; when the cloud is
//!   back, a verified, paced resync (see `survive.rs`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use holdline_sip::values::list_items;
use holdline_sip::{Contacts, Message, Method, NameAddr, Uri};

use crate::bindings::{uri_key, Binding, Bindings, Provenance};
use crate::calls::{Calls, Direction};
use crate::subs::{dialog_info_version, sub_id, Mwi, SubState, Subs, Subscription};
use crate::types::{Peer, Side, Subnet, Transmit, Transport};
use crate::uplink::{Probe, ProbeConfig};

#[path = "survive.rs"]
mod survive;
pub use survive::{BindingKey, SurvivalConfig, SurvivalStats};

/// Prefix of every branch holdline generates (`z9hG4bK` + `-hl`).
const BRANCH_PREFIX: &str = "z9hG4bK-hl";
/// How long a forwarded request's return address is remembered.
const ROUTE_TTL: Duration = Duration::from_secs(40);
/// ... and for INVITE (ringing may last minutes; RFC 3261 Timer C).
const INVITE_ROUTE_TTL: Duration = Duration::from_secs(200);
/// Housekeeping period.
const SWEEP: Duration = Duration::from_secs(1);
/// Forwarded requests whose return route is remembered at most (a flood
/// beyond this gets 503 instead of growing memory without bound).
const MAX_ROUTES: usize = 200_000;
/// Final responses remembered at most for answering retransmitted requests
/// (beyond this a retransmission is forwarded, as before).
const MAX_FINALS: usize = 50_000;
/// How long a relayed final is kept for retransmissions: covers at least
/// two retransmissions at T2 (4 s) while keeping the memory small (at 800
/// finals/s about 8 000 entries).
const FINAL_TTL: Duration = Duration::from_secs(10);
/// Subscriptions tracked at most.
const MAX_SUBSCRIPTIONS: usize = 50_000;
/// A SUBSCRIBE not answered within this many seconds is forgotten.
const PENDING_SUB_GRACE_S: i64 = 64;
/// "Cloud silent": a request forwarded to the cloud (other than an initial
/// INVITE, which fail-fast watches) that has had no response at all after
/// this is a transaction time-out for the uplink monitor. Far shorter than
/// Timer F (32 s), which DESIGN.md rules out for detection ("in about a
/// second, not in Timer B's 32 s"): a UDP phone has sent it three times by
/// then (0, T1, 3·T1 at T1 = 500 ms). It is longer than a probe interval
/// plus its time-out (800 ms by default), so while the cloud answers
/// probes there is always an answer newer than the request and the monitor
/// discards the time-out (a slow far end is no false alarm).
const CLOUD_SILENT: Duration = Duration::from_secs(2);
/// Timer F (64·T1 at T1 = 500 ms): a request to the cloud still unanswered
/// after this is forgotten; the phone's own transaction has ended.
const TIMER_F: Duration = Duration::from_secs(32);
/// RFC 3261 T1: the first INVITE retransmission interval over UDP (Timer A).
const T1: Duration = Duration::from_millis(500);
/// Timer B (64·T1): an INVITE the next hop has not answered at all by then
/// is answered 408 upstream (RFC 3261 §16.8: the time-out is that
/// branch's response).
const TIMER_B: Duration = Duration::from_secs(32);
/// RFC 3261 T2: the longest retransmission interval of a final (Timer G).
const T2: Duration = Duration::from_secs(4);
/// How long a request sent to a TCP phone over a new connection waits for
/// that connection (the daemon reports it up, or a transport error).
const DIAL_TTL: Duration = Duration::from_secs(40);

/// Edge settings (the daemon maps its config onto this).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// LAN listeners.
    pub lan: Vec<Peer>,
    /// WAN listeners.
    pub wan: Vec<Peer>,
    /// Address to advertise on the LAN side (else the listener's).
    pub lan_advertise: Option<IpAddr>,
    /// Address to advertise on the WAN side (else the listener's).
    pub wan_advertise: Option<IpAddr>,
    /// Phones' networks.
    pub lan_subnets: Vec<Subnet>,
    /// Where requests to the cloud go.
    pub cloud: Peer,
    /// Further cloud source addresses (the proxy's is always allowed).
    pub cloud_addrs: Vec<IpAddr>,
    /// The cloud's SIP domain.
    pub domain: String,
    /// The probe.
    pub probe: ProbeConfig,
    /// Seed for branch and tag generation.
    pub seed: u64,
}

/// A store write the edge asks for (the daemon maps it onto the store's API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreWrite {
    /// Add or replace a binding.
    UpsertBinding(Binding),
    /// Remove one binding.
    RemoveBinding {
        /// AoR.
        aor: String,
        /// Contact URI.
        contact_uri: String,
    },
    /// Remove all bindings of an AoR.
    RemoveAor {
        /// AoR.
        aor: String,
    },
    /// Add or replace a subscription.
    UpsertSubscription(Subscription),
    /// Remove a subscription.
    RemoveSubscription {
        /// Id.
        id: String,
    },
    /// Append to the event log (uplink transitions).
    Event {
        /// Unix seconds.
        at: i64,
        /// Kind, e.g. `uplink`.
        kind: String,
        /// What happened.
        detail: String,
    },
    /// New MWI state for an AoR.
    SetMwi {
        /// AoR.
        aor: String,
        /// State.
        mwi: Mwi,
    },
}

/// A batch of writes; when `token` is set the edge waits for
/// [`Edge::handle_store_done`] with it before releasing a held response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreJob {
    /// Completion token, if something waits for durability.
    pub token: Option<u64>,
    /// The writes.
    pub writes: Vec<StoreWrite>,
}

/// Counters for the console.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages received.
    pub rx: u64,
    /// Messages sent.
    pub tx: u64,
    /// Unparseable messages dropped.
    pub bad: u64,
    /// Requests refused by the access rule (403).
    pub forbidden: u64,
    /// REGISTERs answered 2xx by the cloud and stored.
    pub registered: u64,
    /// REGISTERs the cloud refused (final non-2xx other than 401/407).
    pub register_refused: u64,
    /// Responses dropped (not ours / no route).
    pub dropped: u64,
    /// Store batches that failed.
    pub store_failed: u64,
    /// Requests refused with 503 because the route table was full.
    pub overload: u64,
    /// Provisional responses dropped because a final response for the same
    /// request had already been relayed (a 180 overtaken by its 200 on the
    /// way, as a stateful proxy's transaction would absorb it).
    pub late_provisional: u64,
    /// Retransmitted requests absorbed after their final response was
    /// relayed (answered with that final again, or dropped for an INVITE
    /// answered 2xx), instead of being forwarded once more.
    pub absorbed: u64,
    /// Requests forwarded to the cloud that got no response at all within
    /// the "cloud silent" window (fed to the uplink monitor as transaction
    /// time-outs).
    pub cloud_timeouts: u64,
    /// Of those, answered here once the cloud counted as down: handled
    /// locally by survival (REGISTER, SUBSCRIBE, in-dialog to a site phone).
    pub cloud_timeouts_local: u64,
    /// ... or answered 503 with Retry-After (nothing here can handle them).
    pub cloud_timeouts_503: u64,
    /// 100 Trying sent here on receiving an INVITE (RFC 3261 §16.2).
    pub trying_sent: u64,
    /// 100 Trying received from the next hop and not forwarded (§16.7).
    pub trying_dropped: u64,
    /// INVITEs retransmitted here over UDP (Timer A) until the next hop
    /// answered.
    pub invite_retransmissions: u64,
    /// INVITEs the next hop never answered, answered 408 here (Timer B).
    pub invite_timeouts: u64,
    /// Requests to a TCP phone whose connection could not be opened,
    /// answered 480 (or 430 for an RFC 5626 flow) here.
    pub unreachable: u64,
}

/// A REGISTER forwarded to the cloud, waiting for its final answer.
#[derive(Debug, Clone)]
struct PendingRegister {
    aor: String,
    call_id: String,
    cseq: u32,
    phone: Peer,
    star: bool,
    contacts: Vec<ReqContact>,
    expires: Option<u32>,
    path: String,
    at: Instant,
}

#[derive(Debug, Clone)]
struct ReqContact {
    raw: String,
    uri: String,
    expires: Option<u32>,
    instance: Option<String>,
    reg_id: Option<u32>,
}

/// A request forwarded to the cloud with no response yet (initial INVITEs
/// excepted: fail-fast watches those).
#[derive(Debug, Clone)]
struct CloudTx {
    /// First sent (retransmissions keep it).
    sent_at: Instant,
    /// The phone that sent it.
    from: Peer,
    /// The request as it came from the phone (before our Via, Path,
    /// Record-Route), to be handled here if the cloud is gone.
    request: Message,
    /// Reported to the uplink monitor as a time-out.
    reported: bool,
}

/// An INVITE forwarded with no response from the next hop yet.
#[derive(Debug, Clone)]
struct InviteTx {
    to_side: Side,
    to: Peer,
    /// As forwarded (retransmitted over UDP; empty otherwise).
    bytes: Vec<u8>,
    /// As received (for the 408).
    received: Message,
    next: Instant,
    interval: Duration,
    deadline: Instant,
}

/// A final holdline made for an INVITE from a UDP caller (which stopped
/// retransmitting at our 100): repeated until its ACK (Timer G, T1
/// doubling up to T2), at most until Timer H (64·T1).
#[derive(Debug, Clone)]
struct FinalTx {
    side: Side,
    to: Peer,
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    deadline: Instant,
}

/// A request sent to a TCP phone over a connection not open yet.
#[derive(Debug, Clone)]
struct Dial {
    to: Peer,
    /// As received (for the error answer).
    received: Message,
    at: Instant,
}

/// Where the response to a forwarded request goes.
#[derive(Debug, Clone, Copy)]
struct ReturnRoute {
    side: Side,
    peer: Peer,
    until: Instant,
    sent_at: Instant,
    /// A final response (>= 200) has been relayed back on this route.
    final_relayed: bool,
    /// That final was made here (408, 480, ...): the ACK of it ends here.
    local_final: bool,
}

/// The edge proxy.
#[derive(Debug)]
pub struct Edge {
    cfg: EdgeConfig,
    base: Instant,
    base_unix: i64,
    bindings: Bindings,
    calls: Calls,
    subs: Subs,
    probe: Probe,
    pending_reg: HashMap<String, PendingRegister>,
    routes: HashMap<String, ReturnRoute>,
    /// Last final response relayed per branch (not for 2xx to INVITE),
    /// resent when the request is retransmitted; lives as long as the route.
    finals: HashMap<String, (Instant, Vec<u8>)>,
    held: HashMap<u64, Transmit>,
    next_token: u64,
    transmits: VecDeque<Transmit>,
    store_jobs: VecDeque<StoreJob>,
    next_sweep: Instant,
    stats: Stats,
    logs: VecDeque<String>,
    sv: survive::Survival,
    /// Requests to the cloud without any response yet, by our branch.
    cloud_tx: HashMap<String, CloudTx>,
    /// Their branches in the order sent (the time-out queue; entries
    /// answered meanwhile are skipped).
    cloud_tx_order: VecDeque<(Instant, String)>,
    /// Entries of `cloud_tx` already reported as timed out.
    cloud_tx_silent: usize,
    /// Forwarded INVITEs the next hop has not answered yet, by our branch.
    invite_tx: HashMap<String, InviteTx>,
    /// Their timers (due, branch); entries that no longer match are stale.
    invite_timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// Last provisional relayed per INVITE branch, until its final: sent
    /// again when the INVITE is retransmitted.
    provisionals: HashMap<String, Vec<u8>>,
    /// Finals made here for INVITEs from UDP callers, until their ACK.
    final_tx: HashMap<String, FinalTx>,
    /// Their timers (due, branch); entries that no longer match are stale.
    final_timers: BinaryHeap<Reverse<(Instant, String)>>,
    /// The uplink changed state: INVITEs the cloud left without any answer
    /// are looked at once more (see `reclaim_silent_invites`).
    reclaim_due: bool,
    /// Open TCP connections (the daemon reports them; a message received
    /// over TCP also proves one).
    open_tcp: HashSet<(Side, SocketAddr)>,
    /// Requests sent to a phone over a TCP connection being opened, by our
    /// branch: answered 480 if it cannot be opened.
    dialing: HashMap<String, Dial>,
}

/// Unix seconds at `now`, given a base pair.
fn unix_at(base: Instant, base_unix: i64, now: Instant) -> i64 {
    let d = now.saturating_duration_since(base).as_secs();
    base_unix.saturating_add(i64::try_from(d).unwrap_or(i64::MAX))
}

fn hash64(parts: &[&str], seed: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    seed.hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// URI without angle brackets and without header params: the AoR form of a To/From.
fn aor_of(na: &NameAddr<'_>) -> String {
    match na.parsed_uri() {
        Some(Uri::Sip(s)) => {
            let scheme = if s.secure { "sips" } else { "sip" };
            match s.user {
                Some(u) => format!("{scheme}:{u}@{}", s.host.to_ascii_lowercase()),
                None => format!("{scheme}:{}", s.host.to_ascii_lowercase()),
            }
        }
        _ => na.uri.to_string(),
    }
}

/// Host (as IP) and port of a SIP URI, and its transport parameter.
fn uri_target(uri: &str) -> Option<(IpAddr, u16, Option<Transport>)> {
    let u = Uri::parse(uri)?;
    let s = u.as_sip()?;
    let host = s.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    let t = s
        .params
        .get("transport")
        .flatten()
        .and_then(Transport::from_name);
    Some((ip, s.port.unwrap_or(5060), t))
}

impl Edge {
    /// A new edge; `now` and `now_unix` pin the wall clock to the monotonic one.
    pub fn new(cfg: EdgeConfig, now: Instant, now_unix: i64) -> Edge {
        let probe = Probe::new(cfg.probe, now);
        let sv = survive::Survival::new(SurvivalConfig {
            seed: cfg.seed,
            ..SurvivalConfig::default()
        });
        Edge {
            cfg,
            base: now,
            base_unix: now_unix,
            bindings: Bindings::new(),
            calls: Calls::new(),
            subs: Subs::new(),
            probe,
            pending_reg: HashMap::new(),
            routes: HashMap::new(),
            finals: HashMap::new(),
            held: HashMap::new(),
            next_token: 1,
            transmits: VecDeque::new(),
            store_jobs: VecDeque::new(),
            next_sweep: now + SWEEP,
            stats: Stats::default(),
            logs: VecDeque::new(),
            sv,
            cloud_tx: HashMap::new(),
            cloud_tx_order: VecDeque::new(),
            cloud_tx_silent: 0,
            invite_tx: HashMap::new(),
            invite_timers: BinaryHeap::new(),
            provisionals: HashMap::new(),
            open_tcp: HashSet::new(),
            dialing: HashMap::new(),
            reclaim_due: false,
            final_tx: HashMap::new(),
            final_timers: BinaryHeap::new(),
        }
    }

    /// Unix seconds at `now`.
    pub fn unix(&self, now: Instant) -> i64 {
        unix_at(self.base, self.base_unix, now)
    }

    /// Loads bindings (from the store at start). Expired ones are skipped.
    pub fn load_bindings(&mut self, now: Instant, list: Vec<Binding>) -> usize {
        let t = self.unix(now);
        let mut n = 0;
        for b in list.into_iter().filter(|b| b.expires_at > t) {
            self.bindings.upsert(b);
            n += 1;
        }
        n
    }

    /// Loads subscriptions (from the store at start).
    pub fn load_subscriptions(&mut self, list: Vec<Subscription>) {
        for s in list {
            self.subs.insert(s);
        }
    }

    /// Loads one MWI state (from the store at start).
    pub fn load_mwi(&mut self, aor: &str, mwi: Mwi) {
        self.subs.set_mwi(aor, mwi);
    }

    /// The binding cache.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Tracked calls.
    pub fn calls(&self) -> &Calls {
        &self.calls
    }

    /// Tracked subscriptions and MWI.
    pub fn subs(&self) -> &Subs {
        &self.subs
    }

    /// The probe and uplink state.
    pub fn probe(&self) -> &Probe {
        &self.probe
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The cloud's address.
    pub fn cloud(&self) -> Peer {
        self.cfg.cloud
    }

    /// Responses held until the store confirms.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_some() {
            self.stats.tx += 1;
        }
        t
    }

    /// Next store batch to write.
    pub fn poll_store(&mut self) -> Option<StoreJob> {
        self.store_jobs.pop_front()
    }

    /// When [`Edge::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        let mut t = self.next_sweep;
        if let Some(p) = self.probe.poll_timeout() {
            t = t.min(p);
        }
        if let Some(s) = self.sv_poll_timeout() {
            t = t.min(s);
        }
        if let Some((at, _)) = self.cloud_tx_order.front() {
            t = t.min(*at + CLOUD_SILENT);
        }
        if let Some(Reverse((at, _))) = self.invite_timers.peek() {
            t = t.min(*at);
        }
        if self.reclaim_due {
            t = t.min(self.base);
        }
        if let Some(Reverse((at, _))) = self.final_timers.peek() {
            t = t.min(*at);
        }
        if self.cloud_tx_silent > 0 && !self.cloud_usable() {
            // Timed-out requests wait for an answer from here: at once.
            t = t.min(self.base);
        }
        t
    }

    /// Next line for the daemon's log (uplink transitions, mode changes).
    pub fn poll_log(&mut self) -> Option<String> {
        self.logs.pop_front()
    }

    /// `cloud force-down|force-up|auto`.
    pub fn set_cloud_mode(&mut self, now: Instant, mode: holdline_survival::uplink::Mode) {
        self.probe.set_mode(now, mode);
        self.drain_uplink_events(now);
    }

    fn drain_uplink_events(&mut self, now: Instant) {
        use holdline_survival::uplink::UplinkEvent;
        let mut writes = Vec::new();
        let at = self.unix(now);
        while let Some(e) = self.probe.poll_event() {
            self.sv_on_uplink_event(now, &e);
            if matches!(e, UplinkEvent::Transition { .. }) {
                self.reclaim_due = true;
            }
            let detail = match e {
                UplinkEvent::Transition {
                    from, to, reason, ..
                } => {
                    let why = crate::uplink::reason_name(&reason);
                    format!("cloud {from} -> {to} ({why})")
                }
                UplinkEvent::ResyncAllowed {
                    flap_level,
                    rate_divisor,
                    ..
                } => format!(
                    "cloud back: resync allowed (flap level {flap_level}, rate / {rate_divisor})"
                ),
                UplinkEvent::ModeChanged { mode, .. } => format!("cloud mode {mode:?}"),
            };
            self.logs.push_back(detail.clone());
            writes.push(StoreWrite::Event {
                at,
                kind: "uplink".into(),
                detail,
            });
        }
        if !writes.is_empty() {
            self.store_jobs.push_back(StoreJob {
                token: None,
                writes,
            });
        }
    }

    /// Timers: probe, housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.probe.handle_timeout(now);
        let seed = self.cfg.seed;
        while let Some(branch) = self.probe.poll_send(now, |n| {
            format!("{BRANCH_PREFIX}P{n:x}-{:x}", seed & 0xffff_ffff)
        }) {
            self.send_probe(&branch);
        }
        self.drain_uplink_events(now);
        self.sv_handle_timeout(now);
        self.cloud_tx_timers(now);
        self.invite_tx_timers(now);
        self.final_tx_timers(now);
        if std::mem::take(&mut self.reclaim_due) && !self.cloud_usable() {
            self.reclaim_silent_invites(now);
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP;
            self.calls.sweep(now);
            let t = self.unix(now);
            self.bindings.purge_expired(t);
            let gone = self.subs.sweep(t);
            if !gone.is_empty() {
                self.store_jobs.push_back(StoreJob {
                    token: None,
                    writes: gone
                        .into_iter()
                        .map(|id| StoreWrite::RemoveSubscription { id })
                        .collect(),
                });
            }
            self.routes.retain(|_, r| r.until > now);
            let routes = &self.routes;
            self.finals
                .retain(|b, (until, _)| *until > now && routes.contains_key(b));
            self.provisionals
                .retain(|b, _| routes.get(b).is_some_and(|r| !r.final_relayed));
            self.dialing
                .retain(|_, d| now.saturating_duration_since(d.at) < DIAL_TTL);
            self.pending_reg
                .retain(|_, p| now.saturating_duration_since(p.at) < ROUTE_TTL);
            let before = self.cloud_tx.len();
            self.cloud_tx
                .retain(|_, c| now.saturating_duration_since(c.sent_at) < TIMER_F);
            if self.cloud_tx.len() != before {
                self.cloud_tx_silent = self.cloud_tx.values().filter(|c| c.reported).count();
            }
        }
    }

    /// Requests to the cloud with no response: after [`CLOUD_SILENT`] a
    /// transaction time-out for the uplink monitor; once the cloud is not
    /// usable (Down, Recovering) the phone gets its answer from here
    /// (survival's local handling, else 503 with Retry-After), so that it
    /// is not left waiting for its own Timer F. No 408: RFC 4320 §4.1
    /// forbids it for non-INVITE requests (it could only arrive after the
    /// phone's transaction has ended).
    fn cloud_tx_timers(&mut self, now: Instant) {
        while let Some((at, _)) = self.cloud_tx_order.front() {
            if now < *at + CLOUD_SILENT {
                break;
            }
            let Some((at, branch)) = self.cloud_tx_order.pop_front() else {
                break;
            };
            let Some(c) = self.cloud_tx.get_mut(&branch) else {
                continue; // answered meanwhile
            };
            if c.reported || c.sent_at != at {
                continue;
            }
            c.reported = true;
            let sent_at = c.sent_at;
            self.cloud_tx_silent += 1;
            self.stats.cloud_timeouts += 1;
            self.probe.on_transaction_timeout(now, sent_at);
        }
        self.drain_uplink_events(now);
        if self.cloud_tx_silent == 0 || self.cloud_usable() {
            return;
        }
        let due: Vec<String> = self
            .cloud_tx
            .iter()
            .filter(|(_, c)| c.reported)
            .map(|(b, _)| b.clone())
            .collect();
        // Every reported entry is answered now (none is left to wake for).
        self.cloud_tx_silent = 0;
        for branch in due {
            if let Some(c) = self.cloud_tx.remove(&branch) {
                self.answer_unanswered(now, &branch, c);
            }
        }
    }

    /// A request the cloud left unanswered while it went down: handled
    /// here when survival can (REGISTER, SUBSCRIBE, in-dialog requests to a
    /// site phone), else answered 503 with Retry-After; that answer is kept
    /// for the phone's retransmissions.
    fn answer_unanswered(&mut self, now: Instant, branch: &str, c: CloudTx) {
        let Some(method) = c.request.method().cloned() else {
            return;
        };
        if matches!(method, Method::Ack | Method::Cancel) {
            return; // hop-by-hop: nothing to answer
        }
        let call_id = c.request.call_id().unwrap_or_default().to_string();
        let mut msg = c.request.clone();
        if self.sv_lan_request(now, c.from, &mut msg, &method) {
            self.stats.cloud_timeouts_local += 1;
            self.logs.push_back(format!(
                "{method} {call_id}: unanswered by the cloud, which is down: handled here"
            ));
            return;
        }
        let Ok(mut r) = holdline_sip::response_for(&c.request, 503, "Service Unavailable") else {
            return;
        };
        let retry = self.survival_config().retry_after.as_secs().max(1);
        let _ = r.add_header("Retry-After", &retry.to_string());
        self.stats.cloud_timeouts_503 += 1;
        self.logs.push_back(format!(
            "{method} {call_id}: unanswered by the cloud, which is down: 503"
        ));
        let bytes = r.to_bytes();
        if let Some(route) = self.routes.get_mut(branch) {
            route.final_relayed = true;
            if self.finals.len() < MAX_FINALS {
                self.finals
                    .insert(branch.to_string(), (now + FINAL_TTL, bytes.clone()));
            }
        }
        self.transmits.push_back(Transmit {
            side: Side::Lan,
            to: c.from,
            bytes,
        });
    }

    /// Watches a request just forwarded to the cloud (see [`CLOUD_SILENT`]).
    fn watch_cloud_tx(&mut self, now: Instant, branch: &str, from: Peer, request: Message) {
        if self.cloud_tx.contains_key(branch) || self.cloud_tx.len() >= MAX_ROUTES {
            return; // a retransmission keeps the first send's time
        }
        self.cloud_tx.insert(
            branch.to_string(),
            CloudTx {
                sent_at: now,
                from,
                request,
                reported: false,
            },
        );
        self.cloud_tx_order.push_back((now, branch.to_string()));
    }

    /// Timer A (UDP retransmission of a forwarded INVITE, T1 doubling) and
    /// Timer B (no answer at all: 408 upstream) of forwarded INVITEs; a
    /// response from the next hop ends both (`handle_response`).
    fn invite_tx_timers(&mut self, now: Instant) {
        while let Some((at, branch)) = pop_due(&mut self.invite_timers, now) {
            let Some(tx) = self.invite_tx.get(&branch) else {
                continue; // answered meanwhile
            };
            if tx.next != at {
                continue; // stale
            }
            if self.sv_took_back(&branch) {
                // Cancelled upstream by survival and routed here instead.
                self.invite_tx.remove(&branch);
                continue;
            }
            if now >= tx.deadline {
                if let Some(tx) = self.invite_tx.remove(&branch) {
                    self.invite_timed_out(now, &branch, &tx);
                }
                continue;
            }
            let Some(tx) = self.invite_tx.get_mut(&branch) else {
                continue;
            };
            tx.interval = tx.interval.saturating_mul(2);
            tx.next = (now + tx.interval).min(tx.deadline);
            let t = Transmit {
                side: tx.to_side,
                to: tx.to,
                bytes: tx.bytes.clone(),
            };
            let next = tx.next;
            self.invite_timers.push(Reverse((next, branch)));
            self.stats.invite_retransmissions += 1;
            self.transmits.push_back(t);
        }
    }

    /// The cloud is no longer usable: a phone's new call still at the cloud
    /// without any answer (fail-fast found no local route then, and left
    /// it with the cloud) is handled as a new call now, as its own
    /// retransmission would have been before holdline answered 100 Trying
    /// for it: survival's route policy (a site phone, the backup route,
    /// else 503 with Retry-After), not the 408 of Timer B 32 s later.
    fn reclaim_silent_invites(&mut self, now: Instant) {
        let mut silent: Vec<String> = self
            .invite_tx
            .iter()
            .filter(|(_, tx)| {
                tx.to_side == Side::Wan
                    && self.is_cloud_peer(tx.to)
                    && tx.received.to_tag().is_none()
            })
            .map(|(b, _)| b.clone())
            .collect();
        silent.sort();
        for branch in silent {
            if self.sv_took_back(&branch) {
                self.invite_tx.remove(&branch);
                continue; // fail-fast or the reclaim at Down has it
            }
            let Some(route) = self.routes.get(&branch).copied() else {
                continue;
            };
            if route.side != Side::Lan || route.final_relayed {
                continue;
            }
            let Some(tx) = self.invite_tx.remove(&branch) else {
                continue;
            };
            let mut msg = tx.received.clone();
            let call_id = msg.call_id().unwrap_or_default().to_string();
            // Routed afresh on the same branch (the caller's CANCEL and ACK
            // find the new leg), not taken for a retransmission.
            self.routes.remove(&branch);
            self.provisionals.remove(&branch);
            let queued = self.transmits.len();
            if self.sv_lan_request(now, route.peer, &mut msg, &Method::Invite) {
                self.keep_final_made_here(now, &branch, route, queued);
                self.logs.push_back(format!(
                    "INVITE {call_id}: unanswered by the cloud, which is down: handled here"
                ));
            } else {
                // Nothing here can take it: left with the cloud (Timer B).
                if !self.routes.contains_key(&branch) {
                    self.routes.insert(branch.clone(), route);
                }
                self.invite_tx.insert(branch, tx);
            }
        }
    }

    /// Survival answered a reclaimed INVITE itself (503, 403, ...; queued
    /// after `queued`): that final is kept like one made by `answer_here`
    /// (the caller had our 100 and will not retransmit): repeated until the
    /// ACK, which ends here.
    fn keep_final_made_here(
        &mut self,
        now: Instant,
        branch: &str,
        route: ReturnRoute,
        queued: usize,
    ) {
        let made = self.transmits.iter().skip(queued).find_map(|t| {
            if t.to != route.peer {
                return None;
            }
            let m = Message::parse(&t.bytes).ok()?;
            let invite = m.cseq().is_some_and(|c| c.method == Method::Invite);
            (invite && m.status().is_some_and(|s| s >= 300)).then(|| t.bytes.clone())
        });
        let Some(bytes) = made else {
            return;
        };
        if !self.routes.contains_key(branch) {
            self.routes.insert(
                branch.to_string(),
                ReturnRoute {
                    until: now + TIMER_B,
                    sent_at: now,
                    final_relayed: true,
                    local_final: true,
                    ..route
                },
            );
        }
        if self.finals.len() < MAX_FINALS || self.finals.contains_key(branch) {
            self.finals
                .insert(branch.to_string(), (now + FINAL_TTL, bytes.clone()));
        }
        self.repeat_final(now, branch, route.side, route.peer, &bytes);
    }

    /// Timer B fired: the next hop never answered this INVITE. RFC 3261
    /// §16.8 counts that as a 408 from the branch, which (as the only
    /// branch) goes upstream, so the caller is not left in Proceeding
    /// after our 100 Trying.
    fn invite_timed_out(&mut self, now: Instant, branch: &str, tx: &InviteTx) {
        let Some(route) = self.routes.get(branch).copied() else {
            return;
        };
        if route.final_relayed {
            return;
        }
        self.stats.invite_timeouts += 1;
        let call_id = tx.received.call_id().unwrap_or_default().to_string();
        self.logs.push_back(format!(
            "INVITE {call_id}: no answer from {} {}: 408",
            tx.to_side, tx.to
        ));
        self.answer_here(now, branch, route, &tx.received, 408, "Request Timeout");
    }

    /// Answers a forwarded request here with a final (`route` is where its
    /// answers go): kept for retransmissions, its ACK absorbed, its call
    /// state ended.
    fn answer_here(
        &mut self,
        now: Instant,
        branch: &str,
        route: ReturnRoute,
        received: &Message,
        code: u16,
        reason: &str,
    ) {
        let Ok(r) = holdline_sip::response_for(received, code, reason) else {
            return;
        };
        let bytes = r.to_bytes();
        if let Some(rt) = self.routes.get_mut(branch) {
            rt.final_relayed = true;
            rt.local_final = true;
        }
        self.provisionals.remove(branch);
        self.invite_tx.remove(branch);
        self.dialing.remove(branch);
        if self.finals.len() < MAX_FINALS || self.finals.contains_key(branch) {
            self.finals
                .insert(branch.to_string(), (now + FINAL_TTL, bytes.clone()));
        }
        if received.method() == Some(&Method::Invite) {
            if let (Some(cid), Some(ft)) = (received.call_id(), received.from_tag()) {
                for dir in [Direction::Outbound, Direction::Inbound] {
                    self.calls
                        .on_invite_response(now, (cid, ft, dir), code, None);
                }
            }
        }
        if received.method() == Some(&Method::Invite) {
            self.repeat_final(now, branch, route.side, route.peer, &bytes);
        }
        self.transmits.push_back(Transmit {
            side: route.side,
            to: route.peer,
            bytes,
        });
    }

    /// Starts Timer G for a final made here for an INVITE (UDP only: a
    /// stream delivers it).
    fn repeat_final(&mut self, now: Instant, branch: &str, side: Side, to: Peer, bytes: &[u8]) {
        if to.transport != Transport::Udp || self.final_tx.len() >= MAX_FINALS {
            return;
        }
        let next = now + T1;
        self.final_tx.insert(
            branch.to_string(),
            FinalTx {
                side,
                to,
                bytes: bytes.to_vec(),
                next,
                interval: T1,
                deadline: now + TIMER_B,
            },
        );
        self.final_timers.push(Reverse((next, branch.to_string())));
    }

    /// Timer G/H of the finals made here (see [`FinalTx`]).
    fn final_tx_timers(&mut self, now: Instant) {
        while let Some((at, branch)) = pop_due(&mut self.final_timers, now) {
            let Some(f) = self.final_tx.get_mut(&branch) else {
                continue; // ACKed
            };
            if f.next != at {
                continue; // stale
            }
            if now >= f.deadline {
                self.final_tx.remove(&branch);
                continue; // Timer H: the caller is gone
            }
            f.interval = (f.interval.saturating_mul(2)).min(T2);
            f.next = (now + f.interval).min(f.deadline);
            let t = Transmit {
                side: f.side,
                to: f.to,
                bytes: f.bytes.clone(),
            };
            let next = f.next;
            self.final_timers.push(Reverse((next, branch)));
            self.transmits.push_back(t);
        }
    }

    /// A TCP connection to or from `peer` on `side` opened or closed (the
    /// daemon reports both). Requests to a phone whose connection is open
    /// reuse it; once closed, they go to its Contact address instead.
    pub fn handle_connection(&mut self, _now: Instant, side: Side, peer: SocketAddr, open: bool) {
        if open {
            self.open_tcp.insert((side, peer));
            // What waited for this connection has been written on it.
            self.dialing
                .retain(|_, d| !(side == Side::Lan && d.to.addr == peer));
        } else {
            self.open_tcp.remove(&(side, peer));
        }
    }

    /// Sending to `to` on the LAN failed at the transport (a TCP connection
    /// to a phone could not be opened, or broke): requests waiting for it
    /// are answered here, 480 (RFC 3261 §16.7 treats the failure as a 503
    /// from that branch, which a proxy does not pass upstream as such).
    fn lan_transport_error(&mut self, now: Instant, to: Peer) {
        if to.transport != Transport::Tcp {
            return;
        }
        self.open_tcp.remove(&(Side::Lan, to.addr));
        let mut failed: Vec<(String, Dial)> = Vec::new();
        self.dialing.retain(|b, d| {
            if d.to == to {
                failed.push((b.clone(), d.clone()));
                false
            } else {
                true
            }
        });
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        for (branch, d) in failed {
            let Some(route) = self.routes.get(&branch).copied() else {
                continue;
            };
            if route.final_relayed {
                continue;
            }
            self.stats.unreachable += 1;
            let method = d.received.method().cloned();
            let call_id = d.received.call_id().unwrap_or_default().to_string();
            self.logs.push_back(format!(
                "{} {call_id}: cannot reach the phone at {to}: 480",
                method.map(|m| m.to_string()).unwrap_or_default()
            ));
            self.answer_here(
                now,
                &branch,
                route,
                &d.received,
                480,
                "Temporarily Unavailable",
            );
        }
    }

    /// Where a request to a phone's binding goes. Over UDP: its source
    /// address (NAT-safe). Over TCP: its connection while open (RFC 3261
    /// §18.2.2, RFC 5626); once closed, a new connection to the address in
    /// its Contact URI (§18.1.1: host:port, 5060 by default, the Contact's
    /// transport parameter else TCP), never its old ephemeral source port.
    /// An RFC 5626 flow (instance and reg-id) is only ever reached over its
    /// own connection: `None` when that is gone (430 Flow Failed).
    pub(crate) fn lan_peer(&self, b: &Binding) -> Option<Peer> {
        if b.transport != Transport::Tcp || self.open_tcp.contains(&(Side::Lan, b.source)) {
            return Some(b.peer());
        }
        if b.reg_id.is_some() && b.instance_id.is_some() {
            return None;
        }
        match uri_target(&b.contact_uri) {
            Some((ip, port, t)) => Some(Peer {
                transport: t.unwrap_or(Transport::Tcp),
                addr: SocketAddr::new(ip, port),
            }),
            None => Some(b.peer()),
        }
    }

    /// Whether `to` is the cloud: its proxy, or any of `[cloud] addresses`
    /// (any port: a Route may name another node), but not the backup route
    /// (any port of its address either: a gateway answers over TCP, or from
    /// another process, as well).
    pub(crate) fn is_cloud_peer(&self, to: Peer) -> bool {
        let backup_ip = self.survival_config().backup_route.map(|b| b.addr.ip());
        to == self.cfg.cloud
            || (self.is_cloud_addr(to.addr.ip()) && backup_ip != Some(to.addr.ip()))
    }

    /// The store finished the batch with this token.
    pub fn handle_store_done(&mut self, _now: Instant, token: u64, ok: bool) {
        let Some(t) = self.held.remove(&token) else {
            return;
        };
        if ok {
            self.transmits.push_back(t);
            return;
        }
        self.stats.store_failed += 1;
        // The cloud accepted, but we could not make it durable: the phone
        // must not believe it is registered through us. Answer 500.
        if let Ok(resp) = Message::parse(&t.bytes) {
            if let Some(m) = error_from_response(&resp, 500, "Server Internal Error") {
                self.transmits.push_back(Transmit {
                    side: t.side,
                    to: t.to,
                    bytes: m.to_bytes(),
                });
            }
        }
    }

    /// A message arrived on `side` from `from`.
    pub fn handle_message(&mut self, now: Instant, side: Side, from: Peer, bytes: &[u8]) {
        self.stats.rx += 1;
        if side == Side::Lan {
            self.sv_heard(now, from.addr);
        }
        if from.transport == Transport::Tcp && !self.open_tcp.contains(&(side, from.addr)) {
            // It came over a connection, which is open now.
            self.open_tcp.insert((side, from.addr));
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // keep-alive
        }
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.stats.bad += 1;
                self.answer_bad(side, from, bytes, &e);
                return;
            }
        };
        if msg.is_request() {
            self.handle_request(now, side, from, msg);
        } else {
            self.handle_response(now, side, from, msg);
        }
        self.sv_blf_refresh(now);
    }

    // ------------------------------------------------------------ helpers

    fn listener(&self, side: Side, transport: Transport) -> Option<Peer> {
        let list = match side {
            Side::Lan => &self.cfg.lan,
            Side::Wan => &self.cfg.wan,
        };
        list.iter()
            .find(|p| p.transport == transport)
            .or_else(|| list.first())
            .copied()
    }

    /// host:port to advertise on a side for a transport.
    fn local_hostport(&self, side: Side, transport: Transport) -> String {
        let l = self.listener(side, transport);
        let adv = match side {
            Side::Lan => self.cfg.lan_advertise,
            Side::Wan => self.cfg.wan_advertise,
        };
        let ip = adv.or(l.map(|p| p.addr.ip()));
        let port = l.map(|p| p.addr.port()).unwrap_or(5060);
        match ip {
            Some(IpAddr::V6(v6)) => format!("[{v6}]:{port}"),
            Some(ip) => format!("{ip}:{port}"),
            None => format!("127.0.0.1:{port}"),
        }
    }

    fn route_uri(&self, side: Side, transport: Transport) -> String {
        let hp = self.local_hostport(side, transport);
        match transport {
            Transport::Udp => format!("<sip:{hp};lr>"),
            Transport::Tcp => format!("<sip:{hp};transport=tcp;lr>"),
        }
    }

    /// Whether a URI names one of our listeners.
    fn is_ours(&self, uri: &str) -> bool {
        let Some((ip, port, _)) = uri_target(uri) else {
            return false;
        };
        self.cfg
            .lan
            .iter()
            .chain(self.cfg.wan.iter())
            .any(|p| p.addr.port() == port && (p.addr.ip() == ip || p.addr.ip().is_unspecified()))
            || [self.cfg.lan_advertise, self.cfg.wan_advertise]
                .iter()
                .flatten()
                .any(|a| {
                    *a == ip
                        && self
                            .cfg
                            .lan
                            .iter()
                            .chain(self.cfg.wan.iter())
                            .any(|p| p.addr.port() == port)
                })
    }

    fn is_cloud_addr(&self, ip: IpAddr) -> bool {
        ip == self.cfg.cloud.addr.ip() || self.cfg.cloud_addrs.contains(&ip)
    }

    fn in_lan(&self, ip: IpAddr) -> bool {
        self.cfg.lan_subnets.iter().any(|s| s.contains(ip))
    }

    fn reply(&mut self, side: Side, to: Peer, req: &Message, code: u16, reason: &str) {
        if req.method() == Some(&Method::Ack) {
            return;
        }
        if let Ok(r) = holdline_sip::response_for(req, code, reason) {
            self.transmits.push_back(Transmit {
                side,
                to,
                bytes: r.to_bytes(),
            });
        }
    }

    fn answer_bad(&mut self, side: Side, from: Peer, bytes: &[u8], e: &holdline_sip::ParseError) {
        // Answer a malformed request when its structure allows (400);
        // malformed responses are dropped.
        let Ok(m) = Message::parse_structure(bytes) else {
            return;
        };
        if !m.is_request() || m.method() == Some(&Method::Ack) || m.top_via().is_none() {
            return;
        }
        if m.call_id().is_none() || m.cseq().is_none() || m.from().is_none() || m.to().is_none() {
            return;
        }
        let code = e.status_code();
        if let Ok(r) = holdline_sip::response_for(&m, code, e.reason_phrase()) {
            self.transmits.push_back(Transmit {
                side,
                to: from,
                bytes: r.to_bytes(),
            });
        }
    }

    fn send_probe(&mut self, branch: &str) {
        let cloud = self.cfg.cloud;
        let hp = self.local_hostport(Side::Wan, cloud.transport);
        let d = &self.cfg.domain;
        let seq = self.probe.sent();
        let raw = format!(
            "OPTIONS sip:{d} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {hp};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:holdline@{hp}>;tag=hlp{seed:x}\r\n\
             To: <sip:{d}>\r\n\
             Call-ID: {branch}@{hp}\r\n\
             CSeq: {seq} OPTIONS\r\n\
             User-Agent: holdline/{v}\r\n\
             Content-Length: 0\r\n\r\n",
            t = cloud.transport.via_name(),
            seed = self.cfg.seed & 0xffff,
            v = env!("CARGO_PKG_VERSION"),
        );
        self.transmits.push_back(Transmit {
            side: Side::Wan,
            to: cloud,
            bytes: raw.into_bytes(),
        });
    }

    // ----------------------------------------------------------- requests

    fn handle_request(&mut self, now: Instant, side: Side, from: Peer, mut msg: Message) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        // Access rule.
        let allowed = match side {
            Side::Lan => self.in_lan(from.addr.ip()),
            Side::Wan => self.is_cloud_addr(from.addr.ip()),
        };
        if !allowed {
            self.stats.forbidden += 1;
            self.reply(side, from, &msg, 403, "Forbidden");
            return;
        }
        // Where responses go: the source (NAT-safe, RFC 3581).
        let src_ip = from.addr.ip().to_string();
        let _ = msg.set_top_via_received(Some(&src_ip), Some(from.addr.port()));

        // Requests addressed to holdline itself (keep-alive OPTIONS).
        let ruri = msg.request_uri().unwrap_or_default().to_string();
        let no_user = Uri::parse(&ruri)
            .and_then(|u| u.as_sip().map(|s| s.user.is_none()))
            .unwrap_or(false);
        if no_user && self.is_ours(&ruri) && msg.routes().is_empty() {
            match method {
                Method::Options => self.reply(side, from, &msg, 200, "OK"),
                Method::Ack => {}
                Method::Subscribe if side == Side::Lan && msg.to_tag().is_some() => {
                    // The refresh of a subscription holdline serves itself:
                    // its Contact (no user part) is the phone's remote
                    // target, and no Route is left. Survival answers it;
                    // any other is a dialog holdline does not have (481:
                    // the phone subscribes anew, RFC 6665 §4.1.2.2).
                    if !self.sv_lan_request(now, from, &mut msg, &method) {
                        self.reply(side, from, &msg, 481, "Call/Transaction Does Not Exist");
                    }
                }
                _ => self.reply(side, from, &msg, 404, "Not Found"),
            }
            return;
        }

        if msg.decrement_max_forwards().is_err() {
            self.reply(side, from, &msg, 483, "Too Many Hops");
            return;
        }
        // Pop our own Route entries (both legs of our double Record-Route).
        while msg.top_route().is_some_and(|r| self.is_ours(r.uri)) {
            msg.pop_route();
        }

        match side {
            Side::Lan => self.lan_to_wan(now, from, msg, method),
            Side::Wan => self.wan_to_lan(now, from, msg, method),
        }
    }

    fn our_branch(&self, side: Side, msg: &Message) -> String {
        let v = msg.top_via();
        let b = v.and_then(|v| v.branch()).unwrap_or("");
        let host = v.map(|v| v.host).unwrap_or("");
        let cid = msg.call_id().unwrap_or("");
        // Keyed on the incoming branch: a retransmission, and a CANCEL of an
        // INVITE, get the same branch (RFC 3261 §16.11).
        let cseq_num = msg.cseq().map(|c| c.seq.to_string()).unwrap_or_default();
        let key: Vec<&str> = if b.starts_with("z9hG4bK") {
            vec![b, host]
        } else {
            vec![b, host, cid, &cseq_num]
        };
        let h = hash64(&key, self.cfg.seed);
        let s = match side {
            Side::Lan => 'L',
            Side::Wan => 'W',
        };
        format!("{BRANCH_PREFIX}{s}{h:016x}")
    }

    /// Adds our Via, remembers the return route, queues the request.
    fn forward(
        &mut self,
        now: Instant,
        from_side: Side,
        from: Peer,
        msg: Message,
        to_side: Side,
        to: Peer,
    ) {
        let branch = self.our_branch(from_side, &msg);
        self.forward_branch(now, branch, from_side, from, msg, to_side, to);
    }

    /// [`Edge::forward`] with a given branch.
    #[allow(clippy::too_many_arguments)]
    fn forward_branch(
        &mut self,
        now: Instant,
        branch: String,
        from_side: Side,
        from: Peer,
        mut msg: Message,
        to_side: Side,
        to: Peer,
    ) {
        if self.absorb_retransmission(now, &branch, from_side, from, &msg) {
            return;
        }
        let is_ack = msg.method() == Some(&Method::Ack);
        if is_ack && self.routes.get(&branch).is_some_and(|r| r.local_final) {
            // The ACK of a final made here (hop by hop, RFC 3261 §17.1.1.3).
            self.final_tx.remove(&branch);
            return;
        }
        let invite = msg.method() == Some(&Method::Invite);
        if invite && self.routes.contains_key(&branch) {
            // A retransmitted INVITE still in progress: the next hop has it
            // (Timer A repeats it over UDP), so it is not forwarded again;
            // the caller gets the last provisional, or a 100, once more
            // (RFC 3261 §17.2.1).
            let again = match self.provisionals.get(&branch) {
                Some(p) => Some(p.clone()),
                None => Self::trying_for(&msg),
            };
            if let Some(bytes) = again {
                self.stats.absorbed += 1;
                self.transmits.push_back(Transmit {
                    side: from_side,
                    to: from,
                    bytes,
                });
            }
            return;
        }
        if self.routes.len() >= MAX_ROUTES && !self.routes.contains_key(&branch) {
            self.stats.overload += 1;
            if let Ok(mut r) = holdline_sip::response_for(&msg, 503, "Service Unavailable") {
                let _ = r.add_header("Retry-After", "5");
                if msg.method() != Some(&Method::Ack) {
                    self.transmits.push_back(Transmit {
                        side: from_side,
                        to: from,
                        bytes: r.to_bytes(),
                    });
                }
            }
            return;
        }
        if invite {
            // Our transaction key for this request: a leg survival opens
            // for an INVITE already forwarded (fail-fast) has another branch.
            let key = self.our_branch(from_side, &msg);
            if key == branch || !self.routes.contains_key(&key) {
                // RFC 3261 §16.2: a stateful proxy answers an INVITE with
                // 100 Trying at once (a UDP caller stops retransmitting).
                if let Some(bytes) = Self::trying_for(&msg) {
                    self.stats.trying_sent += 1;
                    self.transmits.push_back(Transmit {
                        side: from_side,
                        to: from,
                        bytes,
                    });
                }
            } else {
                // The caller had its 100 on the first leg, which is given up.
                self.invite_tx.remove(&key);
            }
        }
        let received = invite.then(|| msg.clone());
        let dial_copy = (to_side == Side::Lan
            && to.transport == Transport::Tcp
            && !is_ack
            && !self.open_tcp.contains(&(Side::Lan, to.addr)))
        .then(|| msg.clone());
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            to.transport.via_name(),
            self.local_hostport(to_side, to.transport)
        );
        if msg.push_via(&via).is_err() {
            return;
        }
        let ttl = if msg.method() == Some(&Method::Invite) {
            INVITE_ROUTE_TTL
        } else {
            ROUTE_TTL
        };
        if msg.method() != Some(&Method::Ack) {
            // A retransmitted request keeps what its route has seen.
            let (final_relayed, local_final) = self
                .routes
                .get(&branch)
                .map_or((false, false), |r| (r.final_relayed, r.local_final));
            self.routes.insert(
                branch.clone(),
                ReturnRoute {
                    side: from_side,
                    peer: from,
                    until: now + ttl,
                    sent_at: now,
                    final_relayed,
                    local_final,
                },
            );
        }
        let bytes = msg.to_bytes();
        if let Some(received) = received {
            // Timer A over UDP (the caller stops retransmitting at our
            // 100), Timer B for every transport.
            let udp = to.transport == Transport::Udp;
            let deadline = now + TIMER_B;
            let next = if udp { now + T1 } else { deadline };
            if self.invite_tx.len() < MAX_ROUTES {
                self.invite_tx.insert(
                    branch.clone(),
                    InviteTx {
                        to_side,
                        to,
                        bytes: if udp { bytes.clone() } else { Vec::new() },
                        received: received.clone(),
                        next,
                        interval: T1,
                        deadline,
                    },
                );
                self.invite_timers.push(Reverse((next, branch.clone())));
            }
        }
        if to_side == Side::Lan
            && to.transport == Transport::Tcp
            && !self.open_tcp.contains(&(Side::Lan, to.addr))
            && !is_ack
            && self.dialing.len() < MAX_ROUTES
        {
            // A new connection to the phone: answered here if it fails.
            if let Some(received) = dial_copy {
                self.dialing.insert(
                    branch,
                    Dial {
                        to,
                        received,
                        at: now,
                    },
                );
            }
        }
        self.transmits.push_back(Transmit {
            side: to_side,
            to,
            bytes,
        });
    }

    /// A 100 Trying for a received INVITE (RFC 3261 §8.2.6.1: with its
    /// Timestamp; no To tag).
    fn trying_for(msg: &Message) -> Option<Vec<u8>> {
        let mut r = holdline_sip::response_for(msg, 100, "Trying").ok()?;
        if let Some(ts) = msg.header("Timestamp") {
            let ts = ts.to_string();
            let _ = r.add_header("Timestamp", &ts);
        }
        Some(r.to_bytes())
    }

    /// A retransmitted request (same branch) whose final response has been
    /// relayed is not forwarded again (RFC 3261 §17.2, RFC 6026): the final
    /// is sent back once more, or for an INVITE answered 2xx the
    /// retransmission is dropped (the UAS retransmits its 2xx itself).
    /// Without a remembered final a non-INVITE goes on as before. ACK and
    /// CANCEL are never absorbed. True when absorbed.
    fn absorb_retransmission(
        &mut self,
        now: Instant,
        branch: &str,
        from_side: Side,
        from: Peer,
        msg: &Message,
    ) -> bool {
        let method = msg.method();
        if matches!(method, Some(&Method::Ack) | Some(&Method::Cancel)) {
            return false;
        }
        if !self.routes.get(branch).is_some_and(|r| r.final_relayed) {
            return false;
        }
        match self.finals.get(branch).filter(|(until, _)| *until > now) {
            Some((_, bytes)) => {
                self.transmits.push_back(Transmit {
                    side: from_side,
                    to: from,
                    bytes: bytes.clone(),
                });
            }
            None if method == Some(&Method::Invite) => {}
            None => return false,
        }
        self.stats.absorbed += 1;
        true
    }

    fn double_record_route(
        &self,
        msg: &mut Message,
        first: (Side, Transport),
        second: (Side, Transport),
    ) {
        // `first` is the leg the request came from (bottom), `second` on top.
        let _ = msg.prepend_record_route(&self.route_uri(first.0, first.1));
        let _ = msg.prepend_record_route(&self.route_uri(second.0, second.1));
    }

    fn lan_to_wan(&mut self, now: Instant, from: Peer, mut msg: Message, method: Method) {
        let in_dialog = msg.to_tag().is_some();
        let ruri = msg.request_uri().unwrap_or_default().to_string();
        // Next hop: a remaining Route to a cloud address; with no Route
        // left, an in-dialog request (or ACK) goes to its Request-URI (the
        // remote target) when that is a WAN peer holdline may talk to: the
        // backup route's dialogs never went through the cloud, which is
        // also the wrong place for them while it is up. Else the cloud proxy.
        let next = match msg.top_route() {
            Some(r) => uri_target(r.uri),
            None if in_dialog || method == Method::Ack => uri_target(&ruri),
            None => None,
        }
        .filter(|(ip, _, _)| {
            self.is_cloud_addr(*ip)
                || self
                    .survival_config()
                    .backup_route
                    .is_some_and(|b| b.addr.ip() == *ip)
        });
        let has_route = msg.top_route().is_some();
        if !in_dialog && !has_route && !self.is_cloud_target(&ruri) && method != Method::Ack {
            self.stats.forbidden += 1;
            self.reply(
                Side::Lan,
                from,
                &msg,
                403,
                "Forbidden (not the cloud's domain)",
            );
            return;
        }
        if self.sv_lan_request(now, from, &mut msg, &method) {
            return;
        }
        // An initial INVITE is watched by fail-fast (kept as received),
        // anything else but ACK by the "cloud silent" time-out.
        let initial_invite = method == Method::Invite && !in_dialog;
        let original = initial_invite.then(|| (msg.clone(), from));
        let watched = (!initial_invite && method != Method::Ack).then(|| msg.clone());
        let to = match next {
            Some((ip, port, t)) => {
                let addr = SocketAddr::new(ip, port);
                let backup = self.survival_config().backup_route;
                let default = match backup.filter(|b| b.addr == addr) {
                    Some(b) => b.transport,
                    None => self.cfg.cloud.transport,
                };
                Peer {
                    transport: t.unwrap_or(default),
                    addr,
                }
            }
            None => self.cfg.cloud,
        };
        match method {
            Method::Register => {
                let path = self.route_uri(Side::Wan, to.transport);
                if msg.prepend_path(&path).is_err() {
                    return;
                }
                // The path extension is in use on this registration (RFC 3327 §5.1).
                let has_path = msg
                    .header_values("Supported")
                    .flat_map(list_items)
                    .any(|o| o.trim().eq_ignore_ascii_case("path"));
                if !has_path {
                    let _ = msg.add_header("Supported", "path");
                }
                if let Some(p) = self.pending_register(now, from, &msg, path) {
                    let branch = self.our_branch(Side::Lan, &msg);
                    self.pending_reg.insert(branch, p);
                }
            }
            Method::Invite if !in_dialog => {
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
                }
                self.double_record_route(
                    &mut msg,
                    (Side::Lan, from.transport),
                    (Side::Wan, to.transport),
                );
            }
            Method::Subscribe | Method::Refer if !in_dialog => {
                if method == Method::Subscribe {
                    self.track_subscribe(now, from, &msg);
                }
                self.double_record_route(
                    &mut msg,
                    (Side::Lan, from.transport),
                    (Side::Wan, to.transport),
                );
            }
            Method::Subscribe => self.track_subscribe(now, from, &msg),
            Method::Cancel => {
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    self.calls.on_cancel(now, cid, ft, Direction::Outbound);
                }
            }
            Method::Bye => {
                if let (Some(cid), Some(ft), Some(tt)) =
                    (msg.call_id(), msg.from_tag(), msg.to_tag())
                {
                    self.calls.on_bye(now, cid, (ft, tt), Some(from));
                }
            }
            _ => {}
        }
        let branch = self.our_branch(Side::Lan, &msg);
        let queued = self.transmits.len();
        self.forward_branch(now, branch.clone(), Side::Lan, from, msg, Side::Wan, to);
        // Sent on (not absorbed, not refused), and not to the backup route.
        let sent = self.transmits.len() > queued
            && self
                .transmits
                .back()
                .is_some_and(|t| t.side == Side::Wan && t.to == to)
            && self.survival_config().backup_route != Some(to);
        if let Some(w) = watched.filter(|_| sent) {
            self.watch_cloud_tx(now, &branch, from, w);
        }
        if let Some(o) = original {
            if let Some(bytes) = self.transmits.back().map(|t| t.bytes.clone()) {
                self.sv_forwarded_to_cloud(now, &branch, Some(o), &bytes);
            }
        }
    }

    fn is_cloud_target(&self, ruri: &str) -> bool {
        let Some(u) = Uri::parse(ruri) else {
            return false;
        };
        let Some(s) = u.as_sip() else {
            return false;
        };
        if s.host.eq_ignore_ascii_case(&self.cfg.domain) {
            return true;
        }
        let host = s.host.trim_start_matches('[').trim_end_matches(']');
        host.parse::<IpAddr>()
            .is_ok_and(|ip| self.is_cloud_addr(ip))
    }

    fn pending_register(
        &self,
        now: Instant,
        from: Peer,
        msg: &Message,
        path: String,
    ) -> Option<PendingRegister> {
        let aor = aor_of(&msg.to()?);
        let call_id = msg.call_id()?.to_string();
        let cseq = msg.cseq()?.seq;
        let star = matches!(msg.contacts(), Some(Contacts::Star));
        let mut contacts = Vec::new();
        for v in msg.header_values("Contact") {
            for item in list_items(v) {
                if item.trim() == "*" {
                    continue;
                }
                let Some(na) = NameAddr::parse(item) else {
                    continue;
                };
                contacts.push(ReqContact {
                    raw: item.trim().to_string(),
                    uri: na.uri.to_string(),
                    expires: na.expires(),
                    instance: na.instance().map(str::to_string),
                    reg_id: na.reg_id(),
                });
            }
        }
        Some(PendingRegister {
            aor,
            call_id,
            cseq,
            phone: from,
            star,
            contacts,
            expires: msg.expires(),
            path,
            at: now,
        })
    }

    fn track_subscribe(&mut self, now: Instant, from: Peer, msg: &Message) {
        let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) else {
            return;
        };
        let id = sub_id(cid, ft);
        let cseq = msg.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(s) = self.subs.get_mut(&id) {
            s.subscribe_cseq = s.subscribe_cseq.max(cseq);
            return;
        }
        if msg.to_tag().is_some() {
            return; // a refresh of a dialog we do not know (e.g. from before a restart without store)
        }
        let event = msg
            .event()
            .map(|e| e.package.to_string())
            .unwrap_or_else(|| "presence".to_string());
        let contact = match msg.contacts() {
            Some(Contacts::List(l)) => l.first().map(|c| c.uri.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            return;
        }
        self.subs.insert(Subscription {
            id,
            event,
            call_id: cid.to_string(),
            phone_tag: ft.to_string(),
            notifier_tag: None,
            watcher_aor: msg.from().map(|f| aor_of(&f)).unwrap_or_default(),
            target_uri: msg.to().map(|t| aor_of(&t)).unwrap_or_default(),
            phone_contact: contact,
            route_set: Vec::new(),
            subscribe_cseq: cseq,
            notify_cseq: 0,
            expires_at: self.unix(now) + PENDING_SUB_GRACE_S,
            phone: from,
            state: SubState::Pending,
            last_version: None,
            last_body: None,
            last_content_type: None,
            last_notify_at: None,
            notifies: 0,
        });
    }

    fn wan_to_lan(&mut self, now: Instant, from: Peer, mut msg: Message, method: Method) {
        let ruri = msg.request_uri().unwrap_or_default().to_string();
        // Target: the registered contact's transport address, else a LAN host named directly.
        let target = match self.bindings.by_contact(&ruri) {
            Some(b) => match self.lan_peer(b) {
                Some(p) => Some(p),
                None => {
                    // RFC 5626 §5.3: the phone's flow is gone.
                    self.stats.unreachable += 1;
                    self.reply(Side::Wan, from, &msg, 430, "Flow Failed");
                    return;
                }
            },
            None => uri_target(&ruri)
                .filter(|(ip, _, _)| self.in_lan(*ip) && !self.is_ours(&ruri))
                .map(|(ip, port, t)| Peer {
                    transport: t.unwrap_or(Transport::Udp),
                    addr: SocketAddr::new(ip, port),
                }),
        };
        let Some(to) = target else {
            self.reply(Side::Wan, from, &msg, 404, "Not Found");
            return;
        };
        let in_dialog = msg.to_tag().is_some();
        match method {
            Method::Invite if !in_dialog => {
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    let fu = msg.from().map(|f| aor_of(&f)).unwrap_or_default();
                    let tu = msg.to().map(|t| aor_of(&t)).unwrap_or_default();
                    self.calls
                        .on_invite(now, (cid, ft), (&fu, &tu), Direction::Inbound, Some(to));
                }
                self.double_record_route(
                    &mut msg,
                    (Side::Wan, from.transport),
                    (Side::Lan, to.transport),
                );
            }
            Method::Subscribe | Method::Refer if !in_dialog => {
                self.double_record_route(
                    &mut msg,
                    (Side::Wan, from.transport),
                    (Side::Lan, to.transport),
                );
            }
            Method::Cancel => {
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    self.calls.on_cancel(now, cid, ft, Direction::Inbound);
                }
            }
            Method::Bye => {
                if let (Some(cid), Some(ft), Some(tt)) =
                    (msg.call_id(), msg.from_tag(), msg.to_tag())
                {
                    self.calls.on_bye(now, cid, (ft, tt), Some(to));
                }
            }
            Method::Notify if self.sv_cloud_notify_taken_over(&msg) => {
                // holdline serves this dialog until it deactivates it.
                self.reply(Side::Wan, from, &msg, 481, "Subscription Taken Over");
                return;
            }
            Method::Notify => self.observe_notify(now, &msg),
            _ => {}
        }
        self.forward(now, Side::Wan, from, msg, Side::Lan, to);
    }

    fn observe_notify(&mut self, now: Instant, msg: &Message) {
        let t = self.unix(now);
        let body = String::from_utf8_lossy(msg.body()).into_owned();
        let ctype = msg.content_type().map(str::to_string);
        let event = msg
            .event()
            .map(|e| e.package.to_string())
            .unwrap_or_default();
        let state = msg.subscription_state();
        let mut writes = Vec::new();
        let mut mwi_aor = msg.to().map(|t| aor_of(&t));
        if let (Some(cid), Some(tt)) = (msg.call_id(), msg.to_tag()) {
            if let Some(s) = self.subs.for_notify(cid, tt) {
                if s.notifier_tag.is_none() {
                    s.notifier_tag = msg.from_tag().map(str::to_string);
                }
                if let Some(c) = msg.cseq() {
                    s.notify_cseq = s.notify_cseq.max(c.seq);
                }
                s.notifies += 1;
                s.last_notify_at = Some(t);
                if !body.is_empty() {
                    if let Some(v) = dialog_info_version(&body) {
                        s.last_version = Some(v);
                    }
                    s.last_body = Some(body.clone());
                    s.last_content_type = ctype.clone();
                }
                match state {
                    Some(st) if st.state.eq_ignore_ascii_case("terminated") => {
                        s.state = SubState::Terminated {
                            reason: st.reason().map(str::to_string),
                        };
                    }
                    Some(st) => {
                        s.state = SubState::Active;
                        if let Some(e) = st.expires() {
                            s.expires_at = t + i64::from(e);
                        }
                    }
                    None => {}
                }
                mwi_aor = Some(s.watcher_aor.clone());
                writes.push(StoreWrite::UpsertSubscription(s.clone()));
            }
        }
        if event.eq_ignore_ascii_case("message-summary") && !body.is_empty() {
            if let Some(aor) = mwi_aor {
                let m = Mwi {
                    body,
                    content_type: ctype
                        .unwrap_or_else(|| "application/simple-message-summary".into()),
                    at: t,
                };
                self.subs.set_mwi(&aor, m.clone());
                writes.push(StoreWrite::SetMwi { aor, mwi: m });
            }
        }
        if !writes.is_empty() {
            self.store_jobs.push_back(StoreJob {
                token: None,
                writes,
            });
        }
    }

    // ---------------------------------------------------------- responses

    fn handle_response(&mut self, now: Instant, side: Side, from: Peer, mut msg: Message) {
        let Some(branch) = msg.top_via().and_then(|v| v.branch()).map(str::to_string) else {
            self.stats.dropped += 1;
            return;
        };
        if !branch.starts_with(BRANCH_PREFIX) {
            self.stats.dropped += 1;
            return;
        }
        let status = msg.status().unwrap_or(0);
        let retry_after = msg
            .header("Retry-After")
            .and_then(|v| v.split([';', '(']).next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if side == Side::Wan && self.probe.on_response(now, &branch, status, retry_after) {
            self.drain_uplink_events(now);
            return;
        }
        // Any response to the INVITE from the next hop ends its Timer A/B
        // (not the answer to a CANCEL, which shares the branch: the INVITE
        // itself may still be unanswered); any response ends the wait for
        // a new TCP connection.
        if msg.cseq().is_some_and(|c| c.method == Method::Invite) {
            self.invite_tx.remove(&branch);
        }
        self.dialing.remove(&branch);
        if side == Side::Wan {
            // Any response ends the "cloud silent" watch.
            if self.cloud_tx.remove(&branch).is_some_and(|c| c.reported) {
                self.cloud_tx_silent = self.cloud_tx_silent.saturating_sub(1);
            }
        }
        let consumed = match side {
            Side::Wan => self.sv_wan_response(now, &branch, &msg),
            Side::Lan => self.sv_lan_response(now, &branch, &msg),
        };
        if consumed {
            return;
        }
        msg.pop_via();
        // Where it goes back to.
        let ret = self.routes.get(&branch).copied();
        let (to_side, to) = match ret {
            Some(r) => (r.side, r.peer),
            None => {
                let to_side = match branch.as_bytes().get(BRANCH_PREFIX.len()) {
                    Some(b'L') => Side::Lan,
                    Some(b'W') => Side::Wan,
                    _ => {
                        self.stats.dropped += 1;
                        return;
                    }
                };
                match via_target(&msg) {
                    Some(p) => (to_side, p),
                    None => {
                        self.stats.dropped += 1;
                        return;
                    }
                }
            }
        };
        // A site-to-site call routed here without the cloud stays on the LAN.
        let lan_local = side == Side::Lan && to_side == Side::Lan && ret.is_some();
        if to_side == side && !lan_local {
            // A response must cross sides; anything else is spoofed or looped.
            self.stats.dropped += 1;
            return;
        }
        // Every answer from the cloud is evidence for the uplink monitor
        // (not the backup route's).
        if side == Side::Wan && self.is_cloud_peer(from) {
            if let Some(r) = ret {
                self.probe
                    .on_cloud_response(now, r.sent_at, status, retry_after);
                self.drain_uplink_events(now);
            }
        }
        if status == 100 {
            // RFC 3261 §16.7 step 3: a stateful proxy never forwards a 100;
            // the caller had ours when the request arrived.
            self.stats.trying_dropped += 1;
            return;
        }
        if status < 200 && ret.is_some_and(|r| r.final_relayed) {
            // Overtaken by the final answer (e.g. reordered by a multi-process
            // cloud): relaying it now would contradict the final (RFC 3261
            // §16.7: a proxy forwards no provisional after a final).
            self.stats.late_provisional += 1;
            return;
        }
        let cseq_method = msg.cseq().map(|c| c.method);
        // The answer to a CANCEL shares the INVITE's branch but is no final
        // of the INVITE: the INVITE's own final (487) is still to come, and
        // its retransmissions must never be answered with the CANCEL's 200.
        let final_of_request = status >= 200 && cseq_method != Some(Method::Cancel);
        if final_of_request {
            if let Some(r) = self.routes.get_mut(&branch) {
                // Keep a little while for retransmitted finals.
                r.until = r.until.min(now + Duration::from_secs(32));
                r.final_relayed = true;
            }
        }
        match cseq_method {
            Some(Method::Register) if status >= 200 => {
                if let Some(p) = self.pending_reg.remove(&branch) {
                    if (200..300).contains(&status) {
                        let writes = self.register_ok(now, &p, &msg);
                        self.sv_cap_phone_expiry(&mut msg);
                        self.stats.registered += 1;
                        if !writes.is_empty() {
                            let token = self.next_token;
                            self.next_token += 1;
                            self.held.insert(
                                token,
                                Transmit {
                                    side: to_side,
                                    to,
                                    bytes: msg.to_bytes(),
                                },
                            );
                            self.store_jobs.push_back(StoreJob {
                                token: Some(token),
                                writes,
                            });
                            return;
                        }
                    } else if status != 401 && status != 407 {
                        self.stats.register_refused += 1;
                    }
                }
            }
            Some(Method::Invite) => {
                if let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) {
                    let tt = msg.to_tag().map(str::to_string);
                    // A response from the cloud answers a phone's call (outbound leg).
                    let dir = match side {
                        Side::Wan => Direction::Outbound,
                        Side::Lan => Direction::Inbound,
                    };
                    self.calls
                        .on_invite_response(now, (cid, ft, dir), status, tt.as_deref());
                    if lan_local {
                        // Both legs are ours: the caller's too.
                        self.calls.on_invite_response(
                            now,
                            (cid, ft, Direction::Outbound),
                            status,
                            tt.as_deref(),
                        );
                    }
                }
            }
            Some(Method::Subscribe) if status >= 200 => {
                self.observe_subscribe_answer(now, &msg, status)
            }
            _ => {}
        }
        let bytes = msg.to_bytes();
        if cseq_method == Some(Method::Invite) && ret.is_some() {
            if status < 200 {
                if self.provisionals.len() < MAX_FINALS || self.provisionals.contains_key(&branch) {
                    self.provisionals.insert(branch.clone(), bytes.clone());
                }
            } else {
                self.provisionals.remove(&branch);
            }
        }
        let invite_2xx = cseq_method == Some(Method::Invite) && (200..300).contains(&status);
        if final_of_request
            && !invite_2xx
            && ret.is_some()
            && (self.finals.len() < MAX_FINALS || self.finals.contains_key(&branch))
        {
            self.finals.insert(branch, (now + FINAL_TTL, bytes.clone()));
        }
        self.transmits.push_back(Transmit {
            side: to_side,
            to,
            bytes,
        });
    }

    fn observe_subscribe_answer(&mut self, now: Instant, msg: &Message, status: u16) {
        let (Some(cid), Some(ft)) = (msg.call_id(), msg.from_tag()) else {
            return;
        };
        let t = self.unix(now);
        let id = sub_id(cid, ft);
        let rr: Vec<String> = msg
            .record_routes()
            .iter()
            .map(|r| r.uri.to_string())
            .collect();
        let Some(s) = self.subs.get_mut(&id) else {
            return;
        };
        if (200..300).contains(&status) {
            if s.notifier_tag.is_none() {
                s.notifier_tag = msg.to_tag().map(str::to_string);
            }
            if !rr.is_empty() {
                s.route_set = rr;
            }
            match msg.expires() {
                Some(0) => {
                    s.state = SubState::Terminated {
                        reason: Some("unsubscribed".into()),
                    }
                }
                Some(e) => {
                    s.expires_at = t + i64::from(e);
                    s.state = SubState::Active;
                }
                None => {
                    if s.state == SubState::Pending {
                        // No Expires in the 2xx: RFC 6665 lets the package
                        // decide; an hour is the usual default.
                        s.state = SubState::Active;
                        s.expires_at = t + 3600;
                    }
                }
            }
            let w = StoreWrite::UpsertSubscription(s.clone());
            self.store_jobs.push_back(StoreJob {
                token: None,
                writes: vec![w],
            });
        } else if s.state == SubState::Pending {
            s.state = SubState::Terminated {
                reason: Some(format!("rejected {status}")),
            };
        }
    }

    /// The cloud's 2xx to a REGISTER: update the cache, return the writes.
    fn register_ok(
        &mut self,
        now: Instant,
        p: &PendingRegister,
        resp: &Message,
    ) -> Vec<StoreWrite> {
        let t = self.unix(now);
        let mut writes = Vec::new();
        if p.star {
            self.bindings.remove_aor(&p.aor);
            writes.push(StoreWrite::RemoveAor { aor: p.aor.clone() });
            return writes;
        }
        // Contacts the registrar lists in its 2xx, with their expiry.
        let mut listed: HashMap<String, Option<u32>> = HashMap::new();
        if let Some(Contacts::List(l)) = resp.contacts() {
            for c in l {
                listed.insert(uri_key(c.uri), c.expires());
            }
        }
        let default_exp = resp.expires().or(p.expires);
        for c in &p.contacts {
            let key = uri_key(&c.uri);
            let exp = match listed.get(&key) {
                Some(e) => e.or(default_exp).or(c.expires),
                None => None,
            };
            match exp {
                Some(e) if e > 0 => {
                    let b = Binding {
                        aor: p.aor.clone(),
                        contact: c.raw.clone(),
                        contact_uri: c.uri.clone(),
                        expires_at: t + i64::from(e),
                        call_id: p.call_id.clone(),
                        cseq: p.cseq,
                        source: p.phone.addr,
                        transport: p.phone.transport,
                        instance_id: c.instance.clone(),
                        reg_id: c.reg_id,
                        provenance: Provenance::CloudVerified { at: t },
                        last_seen: t,
                        path: vec![p.path.clone()],
                    };
                    self.bindings.upsert(b.clone());
                    writes.push(StoreWrite::UpsertBinding(b));
                }
                _ => {
                    self.bindings.remove(&p.aor, &c.uri);
                    writes.push(StoreWrite::RemoveBinding {
                        aor: p.aor.clone(),
                        contact_uri: c.uri.clone(),
                    });
                }
            }
        }
        writes
    }
}

/// Where a response goes by its (new) top Via: received/rport, else sent-by.
fn via_target(msg: &Message) -> Option<Peer> {
    let v = msg.top_via()?;
    let transport = Transport::from_name(v.transport)?;
    let host = v.received().unwrap_or(v.host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    let port = match v.rport() {
        Some(Some(p)) => p,
        _ => v.port.unwrap_or(5060),
    };
    Some(Peer {
        transport,
        addr: SocketAddr::new(ip, port),
    })
}

/// An error response with the same Via/From/To/Call-ID/CSeq as `resp`.
fn error_from_response(resp: &Message, code: u16, reason: &str) -> Option<Message> {
    let mut m = Message::new_response(code, reason).ok()?;
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        let vals: Vec<String> = resp.header_values(name).map(str::to_string).collect();
        for v in vals {
            m.add_header(name, &v).ok()?;
        }
    }
    m.add_header("Retry-After", "5").ok()?;
    m.set_body(None, b"").ok()?;
    Some(m)
}

/// The earliest entry of a timer heap, if it is due at `now`. Entries are
/// never removed early: a caller skips the stale ones (answered, or
/// rescheduled) by comparing with its own record.
fn pop_due(
    heap: &mut BinaryHeap<Reverse<(Instant, String)>>,
    now: Instant,
) -> Option<(Instant, String)> {
    match heap.peek() {
        Some(Reverse((at, _))) if *at <= now => heap.pop().map(|Reverse(entry)| entry),
        _ => None,
    }
}

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
