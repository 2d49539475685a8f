//! Deterministic simulation of the incident in virtual time.
//!
//! One seed = one evening: a site of phones behind the survival logic (wired
//! together here the way the proxy core will drive it), a cloud that goes
//! silent for "a few seconds to a minute", restarts with an empty location
//! table, and does it again ten minutes later; phones that call, refresh,
//! restart, die; isolated packet loss and random delay on every packet.
//! Invariants are checked on every step; the first violation ends the seed
//! with a message that names it.
//!
//! Shared by `tests/incident_sim.rs` and `examples/incident_sim.rs`.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::time::Duration;

use holdline_survival::blf::BlfBoard;
use holdline_survival::bodies::{read_dialog_info_head, DialogEntry, DialogState, Direction};
use holdline_survival::registrar::{self, Decision, Known, Provenance, Register, RegistrarConfig};
use holdline_survival::resync::{
    self, Admission, BindingFacts, PacerAction, PacerConfig, ResyncMode, ResyncPacer,
};
use holdline_survival::route::{FailFast, FailFastDecision, Route, RoutePolicy, UplinkView};
use holdline_survival::subscription::{
    CloudNotify, DialogIds, FollowUp, NotifyOutcome, NotifyPlan, Package, Subscription,
    SubscriptionConfig,
};
use holdline_survival::uplink::{
    UplinkConfig, UplinkEvent, UplinkInput, UplinkKind, UplinkMonitor,
};
use holdline_survival::{Millis, Rng};

/// Phones at the site; the last one is unknown until it appears during the
/// first outage.
pub const PHONES: usize = 8;
const NEW_PHONE: usize = PHONES - 1;
const DETECT_LIMIT_MS: u64 = 1500;
const CALL_HANG_LIMIT_MS: u64 = 1600;
const LIVENESS_WINDOW: Duration = Duration::from_secs(90);
const PING_EVERY_MS: u64 = 30_000;
const TIMER_F_MS: u64 = 32_000;
const PUSH_TIMEOUT_MS: u64 = 4_000;
const UNTRUSTED_WINDOW_MS: u64 = 150_000;

/// The network between the site and the cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// About 2% loss, never two losses within 3 s: a single loss must never
    /// make the uplink Down.
    Isolated,
    /// 3% independent loss plus three short partitions (0.3–1.2 s) in the calm
    /// between outages: Downs outside the outages are allowed (counted) but
    /// every other invariant holds.
    Bursty,
}

/// What one seed produced.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    /// Silence start → Down, per outage (ms).
    pub detections_ms: Vec<u64>,
    /// Calls attempted.
    pub calls: u64,
    /// Calls that failed (all had no local route).
    pub calls_failed: u64,
    /// Of those: callee unplugged, not yet on site, or never registered.
    pub failed_callee_gone: u64,
    /// Of those: external or emergency number with the cloud gone and no backup route.
    pub failed_no_backup: u64,
    /// Calls completed over a local route (site phone or backup).
    pub calls_local: u64,
    /// Calls rescued by fail-fast.
    pub calls_fail_fast: u64,
    /// Bindings re-registered on the phones' behalf.
    pub pushes: u64,
    /// Resyncs: (start ms, rate divisor, duration ms if finished).
    pub resyncs: Vec<(u64, u32, Option<u64>)>,
    /// NOTIFYs phones accepted.
    pub notifies: u64,
    /// Trusted mode?
    pub trusted: bool,
    /// Untrusted mode: verified phones not back in the cloud at the end
    /// because they had not refreshed during the outage (their own refresh
    /// is an hour away).
    pub untrusted_not_returned: u64,
    /// Downs outside the cloud's outages (bursty network only).
    pub other_downs: u64,
    /// Of those, Downs with no partition in the 1.5 s before: loss alone.
    pub loss_downs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callee {
    Site(usize),
    External,
    Emergency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallState {
    Pending,
    Done,
    Failed,
}

#[derive(Debug, Clone)]
struct Call {
    from: usize,
    to: Callee,
    started: u64,
    sent_at: u64,
    state: CallState,
    had_local_route: bool,
    keep_waiting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    SilenceStart(usize),
    SilenceEnd(usize),
    DetectCheck(usize),
    ProbeAnswer(u64),
    CallAtCloud(usize),
    CallResponse(usize, u16),
    PhoneCall(usize),
    PhoneRegister(usize),
    RegAtCloud(usize),
    RegResponse(usize),
    RegTimeout(usize, u32),
    PushAtCloud(usize),
    PushResponse(usize),
    PushTimeout(usize),
    PhoneRestart(usize),
    PhoneDies(usize),
    NewPhoneAppears,
    PhoneSubscribe(usize, Package),
    CloudNotifyAtHoldline(u64, u32, u64),
    NotifyAtPhone {
        dialog: u64,
        cseq: u32,
        version: Option<u64>,
        terminated: bool,
        from_cloud: bool,
    },
    NotifyResult(u64, u32, NotifyOutcome),
    NotifyRetry(u64),
    RelayDone(u64),
    LocalCallEnds(usize),
    TimerB(usize),
    PingTick,
    UntrustedDeadline(usize),
}

#[derive(Debug, Clone, Copy)]
struct Sched {
    t: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (t, seq).
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

#[derive(Debug, Clone)]
struct Binding {
    call_id: String,
    cseq: u32,
    provenance: Provenance,
    integrity_ok: bool,
    last_refresh: Option<Millis>,
    last_options_ok: Option<Millis>,
}

#[derive(Debug, Clone)]
struct PhoneDialog {
    phone: usize,
    package: Package,
    live: bool,
    last_cseq: u32,
    last_version: Option<u64>,
}

#[derive(Debug, Clone)]
struct Phone {
    present: bool,
    alive: bool,
    died_at: Option<u64>,
    call_id: u64,
    cseq: u32,
    registering: bool,
    refreshed_in_outage: bool,
}

#[derive(Debug, Clone, Copy)]
struct CloudSub {
    cseq: u32,
    version: u64,
}

struct Cloud {
    silent: bool,
    retain_subs: bool,
    location: BTreeSet<usize>,
    subs: BTreeMap<u64, CloudSub>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Sched>,
    // network
    last_loss: u64,
    // cloud
    cloud: Cloud,
    silences: Vec<(u64, u64)>,
    silence_active: Option<usize>,
    partitions: Vec<(u64, u64)>,
    bursty: bool,
    // phones
    phones: Vec<Phone>,
    numbers: Vec<String>,
    dialogs: BTreeMap<u64, PhoneDialog>,
    watches: BTreeMap<u64, usize>,
    next_dialog: u64,
    cloud_fifo: BTreeMap<(u64, bool), u64>,
    // holdline (the survival library, driven like the core will)
    uplink: UplinkMonitor,
    failfast: FailFast<usize>,
    policy: RoutePolicy,
    reg_cfg: RegistrarConfig,
    sub_cfg: SubscriptionConfig,
    bindings: BTreeMap<usize, Binding>,
    subs: BTreeMap<u64, Subscription>,
    pacer: Option<ResyncPacer<usize, u64>>,
    pacer_log: VecDeque<u64>,
    resync_no: usize,
    outage_since: Option<u64>,
    last_plan: Vec<usize>,
    last_plan_refreshed: Vec<usize>,
    push_inflight: BTreeSet<usize>,
    hl_rng: Rng,
    trusted: bool,
    resync_rate: u32,
    resync_cap: usize,
    recovering_since: Option<u64>,
    flap_window_ms: u64,
    // bookkeeping
    calls: Vec<Call>,
    pending_calls: VecDeque<usize>,
    report: SeedReport,
    end: u64,
    trace: bool,
    blf: BlfBoard,
    check_bodies: bool,
}

/// Runs one seed; `Err` names the first invariant violated.
pub fn run_seed(seed: u64) -> Result<SeedReport, String> {
    run_seed_on(seed, Network::Isolated)
}

/// Runs one seed on the given network.
pub fn run_seed_on(seed: u64, net: Network) -> Result<SeedReport, String> {
    let mut sim = Sim::new(seed, net);
    sim.run()
        .map_err(|e| format!("seed {seed}: at t={} ms: {e}", sim.now))?;
    Ok(sim.report)
}

fn view(uplink: &UplinkMonitor, resyncing: bool) -> UplinkView {
    UplinkView {
        up: uplink.is_up(),
        usable: uplink.cloud_usable(),
        resyncing,
    }
}

impl Sim {
    fn new(seed: u64, net: Network) -> Sim {
        let mut rng = Rng::seeded(seed ^ 0x005E_ED0F_4011_D1E5);
        let cfg = UplinkConfig::default();
        let flap_window_ms = holdline_survival::time::ms(cfg.flap_window);
        let fail1 = 60_000 + rng.range_inclusive(0, 30_000);
        let d1 = rng.range_inclusive(2_000, 60_000);
        let fail2 = fail1 + 600_000 - 30_000 + rng.range_inclusive(0, 60_000);
        let d2 = rng.range_inclusive(2_000, 60_000);
        let end = fail2 + d2 + 300_000;
        let has_backup = rng.chance(1, 2);
        let trusted = rng.chance(1, 2);
        // A low `resync_rate` so that the few bindings of the simulated site
        // actually run into the cap.
        let resync_rate = u32::try_from(rng.range_inclusive(2, 10)).unwrap_or(5);
        let numbers = (0..PHONES).map(|i| format!("2{i:02}")).collect();
        let mut phones = vec![
            Phone {
                present: true,
                alive: true,
                died_at: None,
                call_id: 0,
                cseq: 1,
                registering: false,
                refreshed_in_outage: false,
            };
            PHONES
        ];
        phones[NEW_PHONE].present = false;
        let hl_seed = rng.next_u64();
        let mut sim = Sim {
            seed,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            last_loss: 0,
            cloud: Cloud {
                silent: false,
                retain_subs: false,
                location: BTreeSet::new(),
                subs: BTreeMap::new(),
            },
            silences: vec![(fail1, fail1 + d1), (fail2, fail2 + d2)],
            silence_active: None,
            partitions: Vec::new(),
            bursty: net == Network::Bursty,
            phones,
            numbers,
            dialogs: BTreeMap::new(),
            watches: BTreeMap::new(),
            next_dialog: 1,
            cloud_fifo: BTreeMap::new(),
            uplink: UplinkMonitor::new(cfg, Millis(0)),
            failfast: FailFast::new(FailFast::<usize>::DEFAULT_INTERVAL),
            policy: RoutePolicy {
                has_backup,
                ..RoutePolicy::default()
            },
            reg_cfg: RegistrarConfig::default(),
            sub_cfg: SubscriptionConfig::default(),
            bindings: BTreeMap::new(),
            subs: BTreeMap::new(),
            pacer: None,
            pacer_log: VecDeque::new(),
            resync_no: 0,
            outage_since: None,
            last_plan: Vec::new(),
            last_plan_refreshed: Vec::new(),
            push_inflight: BTreeSet::new(),
            hl_rng: Rng::seeded(hl_seed),
            trusted,
            resync_rate,
            resync_cap: 1,
            recovering_since: None,
            flap_window_ms,
            calls: Vec::new(),
            pending_calls: VecDeque::new(),
            report: SeedReport {
                trusted,
                ..SeedReport::default()
            },
            end,
            trace: std::env::var_os("HOLDLINE_SIM_TRACE").is_some(),
            blf: BlfBoard::new(Duration::from_secs(10)),
            // Rendering XML in a debug build is slow: every tenth seed checks bodies.
            check_bodies: seed.is_multiple_of(10),
        };
        sim.cloud.retain_subs = sim.rng.chance(1, 2);
        // Boot: every known phone registered through the cloud, subscribed
        // to a neighbour's BLF and its own MWI.
        for p in 0..NEW_PHONE {
            sim.phones[p].call_id = sim.rng.next_u64();
            sim.cloud.location.insert(p);
            sim.bindings.insert(
                p,
                Binding {
                    call_id: sim.phones[p].call_id.to_string(),
                    cseq: 1,
                    provenance: Provenance::CloudVerified,
                    integrity_ok: true,
                    last_refresh: Some(Millis(0)),
                    last_options_ok: None,
                },
            );
            let t1 = sim.rng.range_inclusive(100, 2_000);
            let t2 = sim.rng.range_inclusive(100, 2_000);
            sim.at(t1, Ev::PhoneSubscribe(p, Package::Dialog));
            sim.at(t2, Ev::PhoneSubscribe(p, Package::MessageSummary));
            let first_call = sim.rng.range_inclusive(5_000, 60_000);
            sim.at(first_call, Ev::PhoneCall(p));
        }
        // One record is corrupt in the store.
        let corrupt =
            usize::try_from(sim.rng.range_inclusive(0, (NEW_PHONE - 1) as u64)).unwrap_or(0);
        if let Some(b) = sim.bindings.get_mut(&corrupt) {
            b.integrity_ok = false;
        }
        // Faults in time.
        for (k, (s, e)) in sim.silences.clone().into_iter().enumerate() {
            sim.at(s, Ev::SilenceStart(k));
            sim.at(e, Ev::SilenceEnd(k));
            sim.at(s + DETECT_LIMIT_MS, Ev::DetectCheck(k));
        }
        let appear = fail1 + sim.rng.range_inclusive(DETECT_LIMIT_MS, d1);
        sim.at(appear, Ev::NewPhoneAppears);
        // One phone dies in the calm between the outages.
        let victim = sim.rng.range_inclusive(0, (NEW_PHONE - 1) as u64) as usize;
        let dies = sim
            .rng
            .range_inclusive(fail1 + d1 + 60_000, fail2.saturating_sub(200_000));
        sim.at(dies, Ev::PhoneDies(victim));
        // Two phone restarts anywhere in the evening.
        for _ in 0..2 {
            let p = sim.rng.range_inclusive(0, (NEW_PHONE - 1) as u64) as usize;
            let t = sim.rng.range_inclusive(10_000, end - 60_000);
            sim.at(t, Ev::PhoneRestart(p));
        }
        if sim.bursty {
            for _ in 0..3 {
                let s = sim
                    .rng
                    .range_inclusive(fail1 + d1 + 30_000, fail2.saturating_sub(30_000));
                let len = sim.rng.range_inclusive(300, 1_200);
                sim.partitions.push((s, s + len));
            }
        }
        sim.at(PING_EVERY_MS, Ev::PingTick);
        sim
    }

    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Sched {
            t,
            seq: self.seq,
            ev,
        });
    }

    fn delay(&mut self) -> u64 {
        self.rng.range_inclusive(5, 100)
    }

    /// Arrival time on a FIFO leg of a cloud-originated NOTIFY path (the
    /// simulated cloud serialises its NOTIFYs per dialog, as a good notifier does).
    fn fifo_arrival(&mut self, dialog: u64, second_leg: bool) -> u64 {
        let t = self.now + self.delay();
        let last = self.cloud_fifo.entry((dialog, second_leg)).or_insert(0);
        let t = t.max(*last + 1);
        *last = t;
        t
    }

    /// Isolated loss: about 2% of packets, never two within 3 s (bursty: 3%).
    fn lost(&mut self) -> bool {
        if self.bursty {
            return self.rng.chance(3, 100);
        }
        if self.now < self.last_loss + 3_000 && self.last_loss != 0 {
            return false;
        }
        if self.rng.chance(2, 100) {
            self.last_loss = self.now.max(1);
            true
        } else {
            false
        }
    }

    /// Nothing from the cloud arrives, nothing reaches it: an outage or a partition.
    fn cloud_silent_at(&self, t: u64) -> bool {
        self.silences
            .iter()
            .chain(self.partitions.iter())
            .any(|(s, e)| t >= *s && t < *e)
    }

    fn resyncing(&self) -> bool {
        self.pacer.as_ref().is_some_and(|p| !p.is_done())
    }

    fn number_of(&self, c: Callee) -> String {
        match c {
            Callee::Site(i) => self.numbers[i].clone(),
            Callee::External => "5551234".to_owned(),
            Callee::Emergency => "911".to_owned(),
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let mut steps_at_same_time = 0u32;
        let mut steps = 0u64;
        loop {
            steps += 1;
            if steps > 2_000_000 {
                return Err("simulation did not finish in 2M steps".into());
            }
            let next_q = self.queue.peek().map(|s| s.t);
            let mut next = next_q;
            let timers = [
                self.uplink.poll_timeout(),
                self.failfast.poll_timeout(),
                self.pacer.as_ref().and_then(|p| p.poll_timeout()),
            ];
            for t in timers.iter().flatten() {
                next = Some(next.map_or(t.0, |n| n.min(t.0)));
            }
            let Some(next) = next else { break };
            if next > self.end {
                break;
            }
            if next <= self.now {
                steps_at_same_time += 1;
                if steps_at_same_time > 1_000 {
                    return Err("stuck: a timeout stays in the past".into());
                }
            } else {
                steps_at_same_time = 0;
            }
            self.now = self.now.max(next);
            while self.queue.peek().is_some_and(|s| s.t <= self.now) {
                if let Some(s) = self.queue.pop() {
                    if self.trace {
                        eprintln!(
                            "{:>8} {:?} uplink={}",
                            self.now,
                            s.ev,
                            self.uplink.state().kind()
                        );
                    }
                    self.handle(s.ev)?;
                }
            }
            self.drive()?;
            self.check_step()?;
        }
        self.check_end()
    }

    /// The core's loop body: timers, probes, uplink events, fail-fast, pacer.
    fn drive(&mut self) -> Result<(), String> {
        let now = Millis(self.now);
        self.blf.handle_timeout(now);
        self.uplink.handle_timeout(now);
        while let Some(id) = self.uplink.poll_probe(now) {
            let rtt = self.delay() + self.delay();
            if !self.lost() {
                self.at(self.now + rtt, Ev::ProbeAnswer(id.0));
            }
        }
        self.failfast.handle_timeout(now);
        while let Some(call) = self.failfast.poll_expired() {
            self.fail_fast(call)?;
        }
        self.uplink_events()?;
        self.pace()?;
        Ok(())
    }

    fn uplink_events(&mut self) -> Result<(), String> {
        while let Some(ev) = self.uplink.poll_event() {
            if self.trace {
                eprintln!("{:>8} uplink {:?}", self.now, ev);
            }
            match ev {
                UplinkEvent::Transition { at, to, .. } => match to {
                    UplinkKind::Down => {
                        match self.silence_active {
                            Some(k) => {
                                if self.report.detections_ms.len() == k {
                                    self.report.detections_ms.push(at.0 - self.silences[k].0);
                                }
                            }
                            None if self.bursty => {
                                self.report.other_downs += 1;
                                let from = at.0.saturating_sub(DETECT_LIMIT_MS);
                                if !self
                                    .partitions
                                    .iter()
                                    .any(|(s, e)| *s <= at.0 && *e >= from)
                                {
                                    self.report.loss_downs += 1;
                                }
                            }
                            None => {
                                return Err("false Down: the cloud was answering".into());
                            }
                        }
                        if self.outage_since.is_none() {
                            self.outage_since = Some(at.0);
                        }
                        // A resync in progress stops; taken-over subscriptions stay local.
                        self.pacer = None;
                        self.take_over_all()?;
                    }
                    UplinkKind::Recovering => self.recovering_since = Some(at.0),
                    UplinkKind::Up | UplinkKind::Suspect => {}
                },
                UplinkEvent::ResyncAllowed {
                    at,
                    outage_since,
                    rate_divisor,
                    ..
                } => self.start_resync(at.0, outage_since, rate_divisor)?,
                UplinkEvent::ModeChanged { .. } => {}
            }
        }
        Ok(())
    }

    fn take_over_all(&mut self) -> Result<(), String> {
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for d in ids {
            let fire = self.subs.get_mut(&d).is_some_and(|s| s.take_over());
            if fire {
                self.local_notify(d)?;
            }
        }
        Ok(())
    }

    fn start_resync(&mut self, at: u64, outage_since: Millis, divisor: u32) -> Result<(), String> {
        // Only one full-rate storm per flap window, and a longer hold-down
        // before any later one.
        for (t, _, _) in &self.report.resyncs {
            if at - t < self.flap_window_ms && divisor < 2 {
                return Err(format!(
                    "second full-rate resync {} ms after the one at {t}",
                    at - t
                ));
            }
        }
        if let Some(r) = self.recovering_since {
            let base = 10_000 * u64::from(divisor);
            if at - r < base {
                return Err(format!(
                    "hold-down {} ms shorter than {base} ms for divisor {divisor}",
                    at - r
                ));
            }
        }
        let facts: Vec<BindingFacts<usize>> = self
            .bindings
            .iter()
            .map(|(p, b)| BindingFacts {
                key: *p,
                integrity_ok: b.integrity_ok,
                provenance: b.provenance,
                last_refresh: b.last_refresh,
                last_options_ok: b.last_options_ok,
            })
            .collect();
        let plan = resync::plan(facts, outage_since, Millis(at), LIVENESS_WINDOW);
        self.last_plan = plan.verified.clone();
        self.last_plan_refreshed = plan
            .verified
            .iter()
            .copied()
            .filter(|p| {
                self.bindings
                    .get(p)
                    .and_then(|b| b.last_refresh)
                    .is_some_and(|t| t >= outage_since)
            })
            .collect();
        let subs: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.is_local())
            .map(|(d, _)| *d)
            .collect();
        let mode = if self.trusted {
            ResyncMode::Trusted
        } else {
            ResyncMode::Untrusted
        };
        let rng = Rng::seeded(self.hl_rng.next_u64());
        self.pacer = Some(ResyncPacer::new(
            Millis(at),
            PacerConfig {
                rate: self.resync_rate,
                ..PacerConfig::default()
            },
            divisor,
            mode,
            plan,
            subs,
            rng,
        ));
        self.pacer_log.clear();
        // The cap the configuration promises, not what the pacer says of itself.
        self.resync_cap = usize::try_from((self.resync_rate / divisor.max(1)).max(1)).unwrap_or(1);
        self.resync_no += 1;
        self.report.resyncs.push((at, divisor, None));
        // The evening lasts until this resync could have finished.
        self.end = self.end.max(at + UNTRUSTED_WINDOW_MS + 30_000);
        if !self.trusted {
            self.at(
                at + UNTRUSTED_WINDOW_MS,
                Ev::UntrustedDeadline(self.resync_no),
            );
        }
        self.outage_since = None;
        for p in &mut self.phones {
            p.refreshed_in_outage = false;
        }
        Ok(())
    }

    fn paced(&mut self) -> Result<(), String> {
        if self.pacer.is_none() {
            return Ok(());
        }
        let rate = self.resync_cap;
        self.pacer_log.push_back(self.now);
        while self.pacer_log.len() > rate + 1 {
            self.pacer_log.pop_front();
        }
        if self.pacer_log.len() > rate {
            if let Some(first) = self.pacer_log.front() {
                if self.now - first < 1000 {
                    return Err(format!(
                        "resync pace above {rate}/s: {} releases in {} ms",
                        rate + 1,
                        self.now - first
                    ));
                }
            }
        }
        Ok(())
    }

    fn pace(&mut self) -> Result<(), String> {
        let now = Millis(self.now);
        while let Some(action) = self.pacer.as_mut().and_then(|p| p.poll_action(now)) {
            self.paced()?;
            match action {
                PacerAction::ReRegister(p) => {
                    let b = self.bindings.get(&p).ok_or("pushed an unknown binding")?;
                    if !b.integrity_ok {
                        return Err(format!("pushed corrupt binding of phone {p}"));
                    }
                    if b.provenance != Provenance::CloudVerified {
                        return Err(format!("pushed local-only binding of phone {p}"));
                    }
                    if let Some(died) = self.phones[p].died_at {
                        if self.now - died > 200_000 {
                            return Err(format!("pushed binding of phone {p}, dead since {died}"));
                        }
                    }
                    self.report.pushes += 1;
                    self.push_inflight.insert(p);
                    if !self.lost() {
                        let d = self.delay();
                        self.at(self.now + d, Ev::PushAtCloud(p));
                    }
                    self.at(self.now + PUSH_TIMEOUT_MS, Ev::PushTimeout(p));
                }
                PacerAction::TerminateSubscription(d) => {
                    let plan = self.subs.get_mut(&d).and_then(|s| s.deactivate());
                    if let Some(plan) = plan {
                        self.send_notify(d, plan);
                    }
                }
            }
        }
        if let Some(p) = &self.pacer {
            if let (Some(done), Some(last)) =
                (p.progress().finished_at, self.report.resyncs.last_mut())
            {
                if last.2.is_none() {
                    last.2 = Some(done.0 - last.0);
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, ev: Ev) -> Result<(), String> {
        let now = Millis(self.now);
        match ev {
            Ev::SilenceStart(k) => {
                self.cloud.silent = true;
                self.silence_active = Some(k);
            }
            Ev::SilenceEnd(_) => {
                // The registrar comes back after its restart: empty table.
                self.cloud.silent = false;
                self.silence_active = None;
                self.cloud.location.clear();
                if !self.cloud.retain_subs {
                    self.cloud.subs.clear();
                }
            }
            Ev::DetectCheck(k) => {
                if self.uplink.state().kind() != UplinkKind::Down {
                    return Err(format!(
                        "cloud silent since {} ms and uplink is {}",
                        self.silences[k].0,
                        self.uplink.state().kind()
                    ));
                }
            }
            Ev::ProbeAnswer(id) => {
                if !self.cloud_silent_at(self.now) {
                    self.uplink.handle(
                        now,
                        UplinkInput::ProbeResponse {
                            id: holdline_survival::uplink::ProbeId(id),
                            status: 200,
                            retry_after: None,
                        },
                    );
                }
            }
            Ev::PhoneCall(p) => self.phone_call(p)?,
            Ev::CallAtCloud(c) => self.call_at_cloud(c),
            Ev::CallResponse(c, status) => self.call_response(c, status)?,
            Ev::PhoneRegister(p) => self.phone_register(p)?,
            Ev::RegAtCloud(p) => {
                if !self.cloud_silent_at(self.now) {
                    self.cloud.location.insert(p);
                    let d = self.delay();
                    self.at(self.now + d, Ev::RegResponse(p));
                }
            }
            Ev::RegResponse(p) => {
                if self.cloud_silent_at(self.now) || !self.phones[p].registering {
                    return Ok(());
                }
                self.phones[p].registering = false;
                self.uplink.handle(
                    now,
                    UplinkInput::CloudResponse {
                        sent_at: now,
                        status: 200,
                        retry_after: None,
                    },
                );
                let call_id = self.phones[p].call_id.to_string();
                let cseq = self.phones[p].cseq;
                self.bindings.insert(
                    p,
                    Binding {
                        call_id,
                        cseq,
                        provenance: Provenance::CloudVerified,
                        integrity_ok: true,
                        last_refresh: Some(now),
                        last_options_ok: None,
                    },
                );
                if self.push_inflight.remove(&p) {
                    if let Some(pc) = self.pacer.as_mut() {
                        pc.report(now, &p, true);
                    }
                }
                // Registered at the cloud for an hour: past the end of the evening.
            }
            Ev::RegTimeout(p, cseq) => {
                if self.phones[p].registering && self.phones[p].cseq == cseq {
                    self.phones[p].registering = false;
                    if self.push_inflight.remove(&p) {
                        if let Some(pc) = self.pacer.as_mut() {
                            pc.report(now, &p, false);
                        }
                    }
                    self.at(self.now + 1_000, Ev::PhoneRegister(p));
                }
            }
            Ev::PushAtCloud(p) => {
                if !self.cloud_silent_at(self.now) {
                    self.cloud.location.insert(p);
                    if !self.lost() {
                        let d = self.delay();
                        self.at(self.now + d, Ev::PushResponse(p));
                    }
                }
            }
            Ev::PushResponse(p) => {
                if !self.cloud_silent_at(self.now) && self.push_inflight.remove(&p) {
                    if let Some(pc) = self.pacer.as_mut() {
                        pc.report(now, &p, true);
                    }
                }
            }
            Ev::PushTimeout(p) => {
                if self.push_inflight.remove(&p) {
                    if let Some(pc) = self.pacer.as_mut() {
                        pc.report(now, &p, false);
                    }
                }
            }
            Ev::PhoneRestart(p) => {
                if self.phones[p].alive && self.phones[p].present {
                    self.phones[p].call_id = self.rng.next_u64();
                    self.phones[p].cseq = 1;
                    self.phones[p].registering = false;
                    let mine: Vec<u64> = self
                        .dialogs
                        .iter()
                        .filter(|(_, d)| d.phone == p && d.live)
                        .map(|(id, _)| *id)
                        .collect();
                    for d in mine {
                        if let Some(x) = self.dialogs.get_mut(&d) {
                            x.live = false;
                        }
                    }
                    self.at(self.now + 50, Ev::PhoneRegister(p));
                    self.at(self.now + 500, Ev::PhoneSubscribe(p, Package::Dialog));
                    self.at(
                        self.now + 500,
                        Ev::PhoneSubscribe(p, Package::MessageSummary),
                    );
                }
            }
            Ev::PhoneDies(p) => {
                self.phones[p].alive = false;
                self.phones[p].died_at = Some(self.now);
                let mine: Vec<u64> = self
                    .dialogs
                    .iter()
                    .filter(|(_, d)| d.phone == p)
                    .map(|(id, _)| *id)
                    .collect();
                for d in mine {
                    if let Some(x) = self.dialogs.get_mut(&d) {
                        x.live = false;
                    }
                }
            }
            Ev::NewPhoneAppears => {
                self.phones[NEW_PHONE].present = true;
                self.phones[NEW_PHONE].call_id = self.rng.next_u64();
                self.at(self.now, Ev::PhoneRegister(NEW_PHONE));
                let first_call = self.now + self.rng.range_inclusive(1_000, 20_000);
                self.at(first_call, Ev::PhoneCall(NEW_PHONE));
            }
            Ev::PhoneSubscribe(p, pkg) => self.phone_subscribe(p, pkg),
            Ev::CloudNotifyAtHoldline(d, cseq, version) => {
                if self.cloud_silent_at(self.now) {
                    return Ok(());
                }
                let Some(sub) = self.subs.get_mut(&d) else {
                    return Ok(());
                };
                let v = (sub.package == Package::Dialog).then_some(version);
                if sub.on_cloud_notify(cseq, v, None) != CloudNotify::Relay {
                    return Ok(());
                }
                if self.lost() {
                    // The proxy transaction times out.
                    self.at(self.now + TIMER_F_MS, Ev::RelayDone(d));
                } else {
                    let arrive = self.fifo_arrival(d, true);
                    self.at(
                        arrive,
                        Ev::NotifyAtPhone {
                            dialog: d,
                            cseq,
                            version: v,
                            terminated: false,
                            from_cloud: true,
                        },
                    );
                }
            }
            Ev::NotifyAtPhone {
                dialog,
                cseq,
                version,
                terminated,
                from_cloud,
            } => self.notify_at_phone(dialog, cseq, version, terminated, from_cloud)?,
            Ev::NotifyResult(d, _cseq, outcome) => {
                let follow = self
                    .subs
                    .get_mut(&d)
                    .map(|s| s.notify_outcome(now, outcome, &SubscriptionConfig::default()));
                match follow {
                    Some(FollowUp::RetryAt(t)) => self.at(t.0, Ev::NotifyRetry(d)),
                    Some(FollowUp::SendNow) => self.local_notify(d)?,
                    Some(FollowUp::Remove) => {
                        self.subs.remove(&d);
                    }
                    Some(FollowUp::None) | None => {}
                }
            }
            Ev::TimerB(idx) => self.finish(idx, false)?,
            Ev::LocalCallEnds(idx) => self.local_call_state(idx, DialogState::Terminated)?,
            Ev::RelayDone(d) => {
                let f = self.subs.get_mut(&d).map(|s| s.relay_done());
                if f == Some(FollowUp::SendNow) {
                    self.local_notify(d)?;
                }
            }
            Ev::NotifyRetry(d) => {
                if self.subs.get(&d).is_some_and(|s| s.is_local()) {
                    self.local_notify(d)?;
                }
            }
            Ev::PingTick => {
                for (p, b) in self.bindings.iter_mut() {
                    if self.phones[*p].alive && self.phones[*p].present {
                        b.last_options_ok = Some(now);
                    }
                }
                self.at(self.now + PING_EVERY_MS, Ev::PingTick);
            }
            Ev::UntrustedDeadline(n) => {
                if n == self.resync_no {
                    if let Some(p) = self.pacer.as_mut() {
                        p.abandon_pending(now);
                    }
                }
            }
        }
        Ok(())
    }

    fn site_dir(&self) -> impl Fn(&str) -> bool + '_ {
        move |n: &str| {
            self.numbers
                .iter()
                .position(|x| x == n)
                .is_some_and(|i| self.bindings.contains_key(&i))
        }
    }

    fn phone_call(&mut self, p: usize) -> Result<(), String> {
        let next = self.now + self.rng.range_inclusive(20_000, 100_000);
        self.at(next, Ev::PhoneCall(p));
        if !self.phones[p].alive || !self.phones[p].present || !self.bindings.contains_key(&p) {
            return Ok(());
        }
        let r = self.rng.range_inclusive(0, 99);
        let to = if r < 70 {
            let mut c = self.rng.range_inclusive(0, (PHONES - 1) as u64) as usize;
            if c == p {
                c = (c + 1) % PHONES;
            }
            Callee::Site(c)
        } else if r < 95 {
            Callee::External
        } else {
            Callee::Emergency
        };
        let had_local_route = match to {
            Callee::Site(c) => {
                self.phones[c].alive && self.phones[c].present && self.bindings.contains_key(&c)
            }
            Callee::External | Callee::Emergency => self.policy.has_backup,
        };
        let idx = self.calls.len();
        self.calls.push(Call {
            from: p,
            to,
            started: self.now,
            sent_at: self.now,
            state: CallState::Pending,
            had_local_route,
            keep_waiting: false,
        });
        self.pending_calls.push_back(idx);
        self.report.calls += 1;
        let number = self.number_of(to);
        let route = {
            let v = view(&self.uplink, self.resyncing());
            let dir = self.site_dir();
            self.policy.new_call(&number, v, &dir)
        };
        if route == Route::Cloud {
            self.failfast.sent(Millis(self.now), idx);
            if !self.lost() {
                let d = self.delay();
                self.at(self.now + d, Ev::CallAtCloud(idx));
            }
            Ok(())
        } else {
            self.route_locally(idx, route)
        }
    }

    fn route_locally(&mut self, idx: usize, route: Route) -> Result<(), String> {
        let ok = match route {
            Route::SitePhone => match self.calls[idx].to {
                Callee::Site(c) => self.phones[c].alive,
                _ => false,
            },
            Route::Backup | Route::Cloud => true,
            Route::Reject503 { .. } => false,
        };
        if matches!(route, Route::SitePhone | Route::Backup) && ok {
            self.report.calls_local += 1;
        }
        self.finish(idx, ok)?;
        if ok && route == Route::SitePhone {
            // BLF from the calls holdline routes: confirmed now, terminated later.
            self.local_call_state(idx, DialogState::Confirmed)?;
            let len = self.rng.range_inclusive(2_000, 60_000);
            self.at(self.now + len, Ev::LocalCallEnds(idx));
        }
        Ok(())
    }

    fn entity(&self, phone: usize) -> String {
        format!("sip:{}@cloud.test", self.numbers[phone])
    }

    fn local_call_state(&mut self, idx: usize, state: DialogState) -> Result<(), String> {
        let from = self.calls[idx].from;
        let Callee::Site(to) = self.calls[idx].to else {
            return Ok(());
        };
        let now = Millis(self.now);
        for (party, dir, other) in [
            (from, Direction::Initiator, to),
            (to, Direction::Recipient, from),
        ] {
            let entry = DialogEntry {
                id: format!("call{idx}"),
                call_id: Some(format!("call{idx}@sim")),
                local_tag: None,
                remote_tag: None,
                direction: Some(dir),
                state,
                remote_identity: Some(self.entity(other)),
            };
            let entity = self.entity(party);
            if !self.blf.update(now, &entity, entry) {
                continue;
            }
            let watching: Vec<u64> = self
                .watches
                .iter()
                .filter(|(_, w)| **w == party)
                .map(|(d, _)| *d)
                .collect();
            for d in watching {
                if self.subs.get(&d).is_some_and(|s| s.is_local()) {
                    self.local_notify(d)?;
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self, idx: usize, ok: bool) -> Result<(), String> {
        // A callee that died while the call was being set up had no route after all.
        if let Callee::Site(c) = self.calls[idx].to {
            if !self.phones[c].alive {
                self.calls[idx].had_local_route = false;
            }
        }
        let call = &mut self.calls[idx];
        if call.state != CallState::Pending {
            return Ok(());
        }
        call.state = if ok {
            CallState::Done
        } else {
            CallState::Failed
        };
        if !ok {
            self.report.calls_failed += 1;
            match call.to {
                Callee::Site(_) => self.report.failed_callee_gone += 1,
                Callee::External | Callee::Emergency => self.report.failed_no_backup += 1,
            }
            if call.had_local_route {
                return Err(format!(
                    "call {idx} from phone {} to {:?} failed although it had a local route",
                    call.from, call.to
                ));
            }
        }
        Ok(())
    }

    fn call_at_cloud(&mut self, idx: usize) {
        if self.cloud_silent_at(self.now) {
            return;
        }
        let status = match self.calls[idx].to {
            Callee::Site(c) => {
                if self.cloud.location.contains(&c) && self.phones[c].alive {
                    200
                } else {
                    480
                }
            }
            Callee::External | Callee::Emergency => 200,
        };
        // The cloud's own BLF for the parties.
        let from = self.calls[idx].from;
        let to = match self.calls[idx].to {
            Callee::Site(c) => Some(c),
            _ => None,
        };
        let watching: Vec<u64> = self
            .watches
            .iter()
            .filter(|(_, w)| Some(**w) == to || **w == from)
            .map(|(d, _)| *d)
            .collect();
        for d in watching {
            if let Some(cs) = self.cloud.subs.get_mut(&d) {
                cs.cseq += 1;
                cs.version += 1;
                let (c, v) = (cs.cseq, cs.version);
                if !self.lost() {
                    let arrive = self.fifo_arrival(d, false);
                    self.at(arrive, Ev::CloudNotifyAtHoldline(d, c, v));
                }
            }
        }
        if !self.lost() {
            let d = self.delay();
            self.at(self.now + d, Ev::CallResponse(idx, status));
        }
    }

    fn call_response(&mut self, idx: usize, status: u16) -> Result<(), String> {
        if self.cloud_silent_at(self.now) {
            return Ok(());
        }
        let sent_at = Millis(self.calls[idx].sent_at);
        self.uplink.handle(
            Millis(self.now),
            UplinkInput::CloudResponse {
                sent_at,
                status,
                retry_after: None,
            },
        );
        let tracked = self.failfast.answered(&idx);
        if !tracked && !self.calls[idx].keep_waiting {
            // Fail-fast already moved it to a local route.
            return Ok(());
        }
        if status < 300 {
            return self.finish(idx, true);
        }
        let number = self.number_of(self.calls[idx].to);
        let alt = {
            let v = view(&self.uplink, self.resyncing());
            let dir = self.site_dir();
            self.policy.after_cloud_failure(&number, status, v, &dir)
        };
        match alt {
            Some(route) => self.route_locally(idx, route),
            None => self.finish(idx, false),
        }
    }

    fn fail_fast(&mut self, idx: usize) -> Result<(), String> {
        self.uplink.handle(
            Millis(self.now),
            UplinkInput::TransactionTimeout {
                sent_at: Millis(self.calls[idx].sent_at),
            },
        );
        let number = self.number_of(self.calls[idx].to);
        let decision = {
            let dir = self.site_dir();
            self.policy.after_fail_fast(&number, &dir)
        };
        self.report.calls_fail_fast += 1;
        match decision {
            FailFastDecision::CancelAndRoute(route) => self.route_locally(idx, route),
            FailFastDecision::KeepWaiting => {
                self.calls[idx].keep_waiting = true;
                let b = self.calls[idx].sent_at + TIMER_F_MS;
                self.at(b, Ev::TimerB(idx));
                Ok(())
            }
        }
    }

    fn phone_register(&mut self, p: usize) -> Result<(), String> {
        if !self.phones[p].alive || !self.phones[p].present || self.phones[p].registering {
            return Ok(());
        }
        self.phones[p].cseq += 1;
        let now = Millis(self.now);
        let mut forward = self.uplink.cloud_usable();
        if forward {
            if let Some(pc) = self.pacer.as_mut() {
                let before = pc.releases();
                if pc.admit_phone_refresh(now, &p) == Admission::AnswerLocally {
                    forward = false;
                } else {
                    if pc.releases() > before {
                        self.paced()?;
                    }
                    if self.last_plan.contains(&p) {
                        self.push_inflight.insert(p);
                    }
                }
            }
        }
        if forward {
            self.phones[p].registering = true;
            let cseq = self.phones[p].cseq;
            self.at(self.now + TIMER_F_MS, Ev::RegTimeout(p, cseq));
            let d = self.delay();
            self.at(self.now + d, Ev::RegAtCloud(p));
            return Ok(());
        }
        // Survival registrar.
        let call_id = self.phones[p].call_id.to_string();
        let src = std::net::SocketAddr::from(([10, 0, 0, (p + 1) as u8], 5060));
        let decision = {
            let known: Vec<Known<'_>> = self
                .bindings
                .get(&p)
                .map(|b| Known {
                    call_id: &b.call_id,
                    cseq: b.cseq,
                    source: src,
                    instance_id: None,
                    provenance: b.provenance,
                })
                .into_iter()
                .collect();
            let reg = Register {
                call_id: &call_id,
                cseq: self.phones[p].cseq,
                source: src,
                instance_id: None,
                requested_expires: Some(3600),
            };
            registrar::decide(&self.reg_cfg, &known, &reg, &mut self.hl_rng)
        };
        let expires = match decision {
            Decision::Refresh { expires, .. } => {
                if let Some(b) = self.bindings.get_mut(&p) {
                    b.call_id = call_id;
                    b.cseq = self.phones[p].cseq;
                    b.integrity_ok = true;
                    b.last_refresh = Some(now);
                }
                expires
            }
            Decision::NewLocalOnly { expires } => {
                self.bindings.insert(
                    p,
                    Binding {
                        call_id,
                        cseq: self.phones[p].cseq,
                        provenance: Provenance::LocalOnly,
                        integrity_ok: true,
                        last_refresh: Some(now),
                        last_options_ok: None,
                    },
                );
                expires
            }
            d => return Err(format!("unexpected registrar decision {d:?}")),
        };
        if !(60..=120).contains(&expires) {
            return Err(format!("survival expiry {expires} outside 60..=120"));
        }
        self.phones[p].refreshed_in_outage = true;
        let again = u64::from(expires) * 1000 * self.rng.range_inclusive(50, 90) / 100;
        self.at(self.now + again, Ev::PhoneRegister(p));
        Ok(())
    }

    fn phone_subscribe(&mut self, p: usize, pkg: Package) {
        if !self.phones[p].alive || !self.phones[p].present {
            return;
        }
        let d = self.next_dialog;
        self.next_dialog += 1;
        let ids = DialogIds {
            call_id: format!("sub{d}"),
            notifier_tag: format!("n{d}"),
            subscriber_tag: format!("s{d}"),
        };
        let expires = Millis(self.now + 3_600_000);
        if self.uplink.cloud_usable() {
            if self.cloud_silent_at(self.now) {
                // No answer: the phone tries again later.
                self.at(self.now + 5_000, Ev::PhoneSubscribe(p, pkg));
                return;
            }
            self.subs
                .insert(d, Subscription::observed(ids, pkg, expires));
            self.cloud.subs.insert(
                d,
                CloudSub {
                    cseq: 1,
                    version: 0,
                },
            );
            let arrive = self.fifo_arrival(d, false);
            self.at(arrive, Ev::CloudNotifyAtHoldline(d, 1, 0));
        } else {
            let s = Subscription::new_local(ids, pkg, Millis(self.now), 3600, &self.sub_cfg);
            self.subs.insert(d, s);
        }
        self.dialogs.insert(
            d,
            PhoneDialog {
                phone: p,
                package: pkg,
                live: true,
                last_cseq: 0,
                last_version: None,
            },
        );
        if pkg == Package::Dialog {
            self.watches.insert(d, (p + 1) % NEW_PHONE);
        }
        if self.subs.get(&d).is_some_and(|s| s.is_local()) {
            let _ = self.local_notify(d);
        }
    }

    fn local_notify(&mut self, d: u64) -> Result<(), String> {
        let plan = self
            .subs
            .get_mut(&d)
            .and_then(|s| s.next_notify(Millis(self.now)));
        if let Some(plan) = plan {
            if let (true, Some(v), Some(w)) =
                (self.check_bodies, plan.version, self.watches.get(&d))
            {
                // The body the core would send; its version must be the plan's.
                let body = self.blf.body(&self.entity(*w), v);
                let head = read_dialog_info_head(&body).ok_or("unreadable dialog-info body")?;
                if head.version != v || !head.full {
                    return Err(format!(
                        "dialog-info body version {} != plan {v}",
                        head.version
                    ));
                }
            }
            self.send_notify(d, plan);
        }
        Ok(())
    }

    fn send_notify(&mut self, d: u64, plan: NotifyPlan) {
        if self.lost() {
            self.at(
                self.now + TIMER_F_MS,
                Ev::NotifyResult(d, plan.cseq, NotifyOutcome::Lost),
            );
            return;
        }
        let dl = self.delay();
        self.at(
            self.now + dl,
            Ev::NotifyAtPhone {
                dialog: d,
                cseq: plan.cseq,
                version: plan.version,
                terminated: plan.state.is_terminated(),
                from_cloud: false,
            },
        );
    }

    fn notify_at_phone(
        &mut self,
        d: u64,
        cseq: u32,
        version: Option<u64>,
        terminated: bool,
        from_cloud: bool,
    ) -> Result<(), String> {
        let live = self.dialogs.get(&d).is_some_and(|x| x.live);
        if from_cloud {
            // The phone's answer goes back through holdline.
            let dl = self.delay();
            self.at(self.now + dl, Ev::RelayDone(d));
        } else {
            let outcome = if live {
                NotifyOutcome::Delivered
            } else {
                NotifyOutcome::Rejected(481)
            };
            let dl = self.delay();
            self.at(self.now + dl, Ev::NotifyResult(d, cseq, outcome));
        }
        if !live {
            return Ok(());
        }
        let Some(dlg) = self.dialogs.get_mut(&d) else {
            return Ok(());
        };
        if cseq <= dlg.last_cseq {
            return Err(format!(
                "dialog {d}: NOTIFY CSeq {cseq} not above {} (from cloud: {from_cloud})",
                dlg.last_cseq
            ));
        }
        dlg.last_cseq = cseq;
        if dlg.package == Package::Dialog {
            let Some(v) = version else {
                return Err(format!("dialog {d}: dialog-info NOTIFY without version"));
            };
            if dlg.last_version.is_some_and(|l| v <= l) {
                return Err(format!(
                    "dialog {d}: version {v} not above {:?} (from cloud: {from_cloud})",
                    dlg.last_version
                ));
            }
            dlg.last_version = Some(v);
        }
        self.report.notifies += 1;
        if terminated {
            dlg.live = false;
            let (p, pkg) = (dlg.phone, dlg.package);
            self.at(self.now + 100, Ev::PhoneSubscribe(p, pkg));
        }
        Ok(())
    }

    fn check_step(&mut self) -> Result<(), String> {
        if let Some(k) = self.silence_active {
            let since = self.silences[k].0;
            if self.now > since + DETECT_LIMIT_MS && self.uplink.state().kind() != UplinkKind::Down
            {
                return Err(format!(
                    "cloud silent since {since} and uplink still {}",
                    self.uplink.state().kind()
                ));
            }
        }
        while let Some(&idx) = self.pending_calls.front() {
            let c = &self.calls[idx];
            if c.state != CallState::Pending || (c.keep_waiting && !c.had_local_route) {
                self.pending_calls.pop_front();
                continue;
            }
            if self.now > c.started + CALL_HANG_LIMIT_MS {
                return Err(format!(
                    "call {idx} from phone {} to {:?} pending for {} ms",
                    c.from,
                    c.to,
                    self.now - c.started
                ));
            }
            break;
        }
        Ok(())
    }

    fn check_end(&mut self) -> Result<(), String> {
        if self.report.detections_ms.len() != self.silences.len() {
            return Err(format!(
                "{} outages, {} detected",
                self.silences.len(),
                self.report.detections_ms.len()
            ));
        }
        if self.report.resyncs.len() < 2 {
            return Err(format!(
                "{} resyncs after 2 outages",
                self.report.resyncs.len()
            ));
        }
        let Some(p) = &self.pacer else {
            return Err("no resync at the end".into());
        };
        if !p.is_done() {
            return Err(format!("resync not finished: {:?}", p.progress()));
        }
        // Trusted: every verified phone is back. Untrusted: every verified
        // phone that refreshed during the outage (its short survival expiry
        // brings it back); the others wait for their own, long, refresh.
        let must_return = if self.trusted {
            &self.last_plan
        } else {
            &self.last_plan_refreshed
        };
        for &v in must_return {
            if self.phones[v].alive && !self.cloud.location.contains(&v) {
                return Err(format!("verified phone {v} missing from the cloud"));
            }
        }
        if !self.trusted {
            self.report.untrusted_not_returned = self
                .last_plan
                .iter()
                .filter(|v| self.phones[**v].alive && !self.cloud.location.contains(v))
                .count() as u64;
        }
        for (i, ph) in self.phones.iter().enumerate() {
            if !ph.alive && self.cloud.location.contains(&i) {
                return Err(format!("dead phone {i} in the cloud's location table"));
            }
        }
        Ok(())
    }
}
