//! The incident, replayed through the real sans-IO core ([`Edge`]) in
//! virtual time: simulated phones on the LAN, a simulated cloud on the WAN,
//! a lossy, jittery network between them, real SIP bytes everywhere.
//!
//! One seed = one evening: phones boot, register, watch each other (BLF)
//! and their mailboxes (MWI) and call each other; the cloud is killed,
//! restarted with an empty location table, killed again and restarted again
//! (the flap); phones restart or die; a new phone appears during the outage.
//! Every step (a delivered datagram, a timer, a store completion) is
//! followed by the invariant checks of [`invariants`]; the first violation
//! ends the seed with a message naming it.

pub mod cloud;
pub mod invariants;
pub mod net;
pub mod phone;
pub mod ua;

use std::time::{Duration, Instant};

use holdline_core::{Edge, EdgeConfig, Peer, ProbeConfig, Subnet, SurvivalConfig};

use cloud::Cloud;
use invariants::{Checker, Counts};
use net::{node_of, phone_addr, udp, Links, Net, Node, Packet, Queue, Rng};
use phone::Phone;

/// The detection target (issue 4: Down within 1.5 s of the cloud going silent).
pub const DETECT_LIMIT_MS: u64 = 1_500;

/// One seed's scenario, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    pub phones: usize,
    pub trusted: bool,
    pub resync_rate: u32,
    pub links: Links,
    /// (kill, restart) of each outage, ms.
    pub outages: Vec<(u64, u64)>,
    pub end: u64,
    /// (phone, off at, back after) — `None`: dies.
    pub power: Vec<(usize, u64, Option<u64>)>,
    /// A phone the cloud never saw: boots during the first outage.
    pub newcomer: Option<(usize, u64)>,
}

impl Scenario {
    pub fn draw(seed: u64) -> Scenario {
        let mut r = Rng::new(seed);
        let phones = r.range(5, 8) as usize;
        let trusted = r.chance(500);
        let resync_rate = [1, 2, 3, 5, 50][r.range(0, 4) as usize];
        let links = Links {
            lan_loss: r.range(0, 20),
            lan_delay: (r.range(1, 5), r.range(0, 20)),
            wan_loss: r.range(0, 40),
            wan_delay: (r.range(5, 60), r.range(0, 60)),
        };
        // "A few seconds to a minute" of silence, twice; the second time
        // within the flap window (ten minutes in the incident, shortened).
        let k1 = r.range(15_000, 25_000);
        let r1 = k1 + r.range(3_000, 45_000);
        let k2 = r1 + r.range(30_000, 90_000);
        let r2 = k2 + r.range(3_000, 45_000);
        // Time for the resync and for untrusted phones' own refreshes.
        let end = r2 + 150_000;
        let mut power = Vec::new();
        let newcomer = r.chance(500).then(|| (phones - 1, r.range(k1 + 2_000, r1)));
        let regulars = if newcomer.is_some() {
            phones - 1
        } else {
            phones
        };
        if r.chance(500) {
            // Dies before the first outage and never comes back.
            let who = r.range(0, regulars as u64 - 1) as usize;
            power.push((who, r.range(6_000, k1 - 2_000), None));
        }
        for i in 0..regulars {
            if r.chance(300) && !power.iter().any(|(p, _, _)| *p == i) {
                power.push((
                    i,
                    r.range(8_000, end - 60_000),
                    Some(r.range(2_000, 10_000)),
                ));
            }
        }
        Scenario {
            seed,
            phones,
            trusted,
            resync_rate,
            links,
            outages: vec![(k1, r1), (k2, r2)],
            end,
            power,
            newcomer,
        }
    }
}

/// What one seed produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub counts: Counts,
    /// Silence → Down, per outage (ms).
    pub detections: Vec<u64>,
    pub local_calls: u64,
    pub fail_fast: u64,
    pub taken_over: u64,
    pub edge_notifies: u64,
    pub cloud_notifies: u64,
    pub resyncs: u64,
    pub packets: u64,
    pub lost: u64,
    /// FNV-1a over every delivered datagram (time, receiver, bytes).
    pub trace: u64,
}

#[derive(Debug, Clone)]
enum Ev {
    Packet(Packet),
    StoreDone(u64),
    Kill(usize),
    Restart,
    PowerOff(usize, Option<u64>),
    Boot(usize),
    Voicemail,
}

struct World {
    sc: Scenario,
    base: Instant,
    now: u64,
    edge: Edge,
    phones: Vec<Phone>,
    cloud: Cloud,
    net: Net,
    q: Queue<Ev>,
    rng: Rng,
    chk: Checker,
    /// Outage index → kill time, while not yet detected.
    detect_pending: Option<(usize, u64)>,
    detections: Vec<u64>,
    cloud_alive_since: u64,
    resyncs: u64,
    trace: u64,
    spins: u32,
    /// `HOLDLINE_SIM_TRACE=1`: print every datagram delivered.
    verbose: bool,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn edge_config(seed: u64) -> EdgeConfig {
    EdgeConfig {
        lan: vec![udp(net::EDGE_LAN)],
        wan: vec![udp(net::EDGE_WAN)],
        lan_advertise: None,
        wan_advertise: None,
        lan_subnets: vec![Subnet {
            addr: "127.0.1.0".parse().expect("subnet"),
            prefix: 24,
        }],
        cloud: udp(net::CLOUD),
        cloud_addrs: vec![],
        domain: net::DOMAIN.into(),
        probe: ProbeConfig {
            interval: Duration::from_millis(500),
            timeout: Duration::from_millis(300),
            down_after: 3,
        },
        seed,
    }
}

impl World {
    fn new(sc: Scenario) -> World {
        let mut rng = Rng::new(sc.seed ^ 0x51ed_5eed);
        // The base instant only anchors virtual time: nothing reads a clock.
        let base = Instant::now();
        let mut edge = Edge::new(edge_config(sc.seed), base, 1_800_000_000);
        edge.set_survival(SurvivalConfig {
            trusted: sc.trusted,
            resync_rate: sc.resync_rate,
            seed: sc.seed,
            ..SurvivalConfig::default()
        });
        let n = sc.phones;
        let phones = (0..n)
            .map(|i| {
                let others = (0..n).filter(|&j| j != i).collect();
                Phone::new(i, phone_addr(i), (i + 1) % n, others, rng.fork())
            })
            .collect();
        let cloud = Cloud::new(!sc.trusted, rng.fork());
        let net = Net::new(sc.links, rng.fork());
        let mut q = Queue::new();
        for i in 0..n {
            match sc.newcomer {
                Some((p, at)) if p == i => q.at(at, Ev::Boot(i)),
                _ => q.at(rng.range(0, 3_000), Ev::Boot(i)),
            }
        }
        for (k, (kill, restart)) in sc.outages.iter().enumerate() {
            q.at(*kill, Ev::Kill(k));
            q.at(*restart, Ev::Restart);
        }
        for (p, at, back) in &sc.power {
            q.at(*at, Ev::PowerOff(*p, *back));
        }
        q.at(rng.range(5_000, 30_000), Ev::Voicemail);
        let chk = Checker::new(sc.resync_rate);
        World {
            sc,
            base,
            now: 0,
            edge,
            phones,
            cloud,
            net,
            q,
            rng,
            chk,
            detect_pending: None,
            detections: Vec::new(),
            cloud_alive_since: 0,
            resyncs: 0,
            trace: 0xcbf2_9ce4_8422_2325,
            spins: 0,
            verbose: std::env::var("HOLDLINE_SIM_TRACE").is_ok_and(|v| v == "1"),
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.base + Duration::from_millis(t)
    }

    fn ms(&self, i: Instant) -> u64 {
        let d = i.saturating_duration_since(self.base);
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    fn run(mut self) -> Result<Report, String> {
        loop {
            let tq = self.q.next_time().unwrap_or(u64::MAX);
            let te = self.ms(self.edge.poll_timeout()).max(self.now);
            let tp = self
                .phones
                .iter()
                .filter_map(Phone::next_timer)
                .min()
                .unwrap_or(u64::MAX);
            let tc = self.cloud.next_timer().unwrap_or(u64::MAX);
            let t = tq.min(te).min(tp).min(tc).max(self.now);
            if t > self.sc.end {
                break;
            }
            if t == self.now && te == t && tq > t && tp > t && tc > t {
                self.spins += 1;
                if self.spins > 10_000 {
                    return Err(format!(
                        "the edge asks to be woken at {t} ms forever (poll_timeout does not move)"
                    ));
                }
            } else {
                self.spins = 0;
            }
            self.now = t;
            if tq == t {
                let Some(s) = self.q.pop() else { break };
                self.event(s.ev)?;
            } else if te == t {
                self.edge.handle_timeout(self.at(t));
            } else if tp == t {
                for p in &mut self.phones {
                    if p.next_timer().is_some_and(|x| x <= t) {
                        p.on_timer(t);
                    }
                }
            } else {
                self.cloud.on_timer(t);
            }
            self.drain()?;
            self.check_step()?;
        }
        self.finish()
    }

    fn event(&mut self, ev: Ev) -> Result<(), String> {
        let now = self.now;
        match ev {
            Ev::Packet(p) => {
                self.trace = fnv(fnv(self.trace, &now.to_le_bytes()), &p.bytes);
                if self.verbose {
                    let text = String::from_utf8_lossy(&p.bytes);
                    let first = text.lines().next().unwrap_or("");
                    let cid = text
                        .lines()
                        .find(|l| l.starts_with("Call-ID:"))
                        .unwrap_or("");
                    let cseq = text.lines().find(|l| l.starts_with("CSeq:")).unwrap_or("");
                    let via = text.lines().find(|l| l.starts_with("Via:")).unwrap_or("");
                    eprintln!(
                        "{now:>7} {:?} <- {}: {first} | {cid} | {cseq} | {via}",
                        p.to, p.from
                    );
                    if std::env::var("HOLDLINE_SIM_BODIES").is_ok() {
                        if let Some((_, body)) = text.split_once("\r\n\r\n") {
                            if !body.is_empty() {
                                eprintln!("        body: {}", body.replace('\n', " "));
                            }
                        }
                    }
                }
                match p.to {
                    Node::Edge(side) => {
                        let at = self.at(now);
                        self.edge.handle_message(at, side.side(), p.from, &p.bytes)
                    }
                    Node::Phone(i) => {
                        if let Some(ph) = self.phones.get_mut(i) {
                            ph.on_packet(now, &p.bytes);
                        }
                    }
                    Node::Cloud => self.cloud.on_packet(now, p.from, &p.bytes),
                }
            }
            Ev::StoreDone(tok) => {
                let at = self.at(now);
                self.edge.handle_store_done(at, tok, true);
            }
            Ev::Kill(k) => {
                self.cloud.kill();
                self.detect_pending = Some((k, now));
                if self.chk.episode_start.is_none() {
                    self.chk.episode_start = Some(now);
                }
            }
            Ev::Restart => {
                self.cloud.restart();
                self.cloud_alive_since = now;
                if let Some((k, _)) = self.detect_pending {
                    return Err(format!(
                        "outage {k}: the cloud was back at {now} ms before holdline saw it Down"
                    ));
                }
            }
            Ev::PowerOff(i, back) => {
                if let Some(p) = self.phones.get_mut(i) {
                    p.power_off(now, back);
                }
                self.chk.phone_off(i);
            }
            Ev::Boot(i) => {
                if let Some(p) = self.phones.get_mut(i) {
                    p.boot(now);
                }
            }
            Ev::Voicemail => {
                let who = self.rng.range(0, self.sc.phones as u64 - 1);
                self.cloud.voicemail(now, &format!("{}", 201 + who));
                let next = now + self.rng.range(20_000, 60_000);
                self.q.at(next, Ev::Voicemail);
            }
        }
        Ok(())
    }

    fn send(&mut self, from: Peer, to: Peer, bytes: Vec<u8>) -> Result<(), String> {
        let Some(node) = node_of(to.addr, self.sc.phones) else {
            return Err(format!(
                "{from} sent to {to}, where nobody listens: {}",
                String::from_utf8_lossy(&bytes)
            ));
        };
        match self.net.route(self.now, from.addr, node) {
            Some(arrival) => self.q.at(
                arrival,
                Ev::Packet(Packet {
                    to: node,
                    from,
                    bytes,
                }),
            ),
            None if self.verbose => {
                let text = String::from_utf8_lossy(&bytes);
                let first = text.lines().next().unwrap_or("");
                eprintln!("{:>7} LOST {from} -> {node:?}: {first}", self.now);
            }
            None => {}
        }
        Ok(())
    }

    /// Everything the step produced: store jobs, datagrams, observations.
    fn drain(&mut self) -> Result<(), String> {
        loop {
            let mut any = false;
            while let Some(job) = self.edge.poll_store() {
                any = true;
                if let Some(tok) = job.token {
                    let d = self.rng.range(1, 4);
                    self.q.at(self.now + d, Ev::StoreDone(tok));
                }
            }
            while let Some(tx) = self.edge.poll_transmit() {
                any = true;
                self.chk.edge_tx(self.now, &tx, &self.edge, &self.phones)?;
                let from = match tx.side {
                    holdline_core::Side::Lan => udp(net::EDGE_LAN),
                    holdline_core::Side::Wan => udp(net::EDGE_WAN),
                };
                self.send(from, tx.to, tx.bytes)?;
            }
            while let Some(line) = self.edge.poll_log() {
                if self.verbose {
                    eprintln!("{:>7} EDGE LOG: {line}", self.now);
                }
                if line.starts_with("resync started") {
                    self.resyncs += 1;
                }
                if line.starts_with("resync finished") {
                    self.chk.episode_start = None;
                }
            }
            for i in 0..self.phones.len() {
                let out = std::mem::take(&mut self.phones[i].out);
                let obs = std::mem::take(&mut self.phones[i].obs);
                let from = Peer {
                    transport: holdline_core::Transport::Udp,
                    addr: self.phones[i].addr,
                };
                for (to, b) in out {
                    any = true;
                    self.send(from, to, b)?;
                }
                for o in obs {
                    self.chk.obs(self.now, o, &self.phones)?;
                }
            }
            let out = std::mem::take(&mut self.cloud.out);
            for (to, b) in out {
                any = true;
                self.send(udp(net::CLOUD), to, b)?;
            }
            if let Some(bad) = self.cloud.unparseable.first() {
                return Err(format!("the cloud got an unparseable message: {bad}"));
            }
            for a in std::mem::take(&mut self.cloud.accepted) {
                if a.call_id.starts_with("reg-") {
                    self.chk.verified.insert((a.aor, a.contact));
                }
            }
            if !any {
                return Ok(());
            }
        }
    }

    fn check_step(&mut self) -> Result<(), String> {
        let down = self.edge.probe().state_name() == "down";
        if let Some((k, kill)) = self.detect_pending {
            if down {
                let d = self.now - kill;
                self.detections.push(d);
                self.detect_pending = None;
                if d > DETECT_LIMIT_MS {
                    return Err(format!(
                        "outage {k}: Down {d} ms after the cloud went silent (limit {DETECT_LIMIT_MS} ms)"
                    ));
                }
            } else if self.now > kill + DETECT_LIMIT_MS {
                return Err(format!(
                    "outage {k}: not Down {} ms after the cloud went silent",
                    self.now - kill
                ));
            }
        } else if down && self.cloud.alive && self.now > self.cloud_alive_since + 3_000 {
            return Err(format!(
                "false alarm: Down at {} ms while the cloud answers (WAN losses are isolated)",
                self.now
            ));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Report, String> {
        let end = self.sc.end;
        // Every live phone that the cloud verified is in its location table
        // again (with Path); no dead phone is.
        for p in &self.phones {
            let aor = format!("sip:{}@{}", p.user, net::DOMAIN);
            let contact = format!("sip:{}@{}", p.user, p.addr);
            let there = self.cloud.has_binding(end, &aor, &contact);
            if p.on && p.registered(end, 0) && !there {
                return Err(format!(
                    "phone {} is alive and registered but not in the cloud's location table at the end",
                    p.idx
                ));
            }
            if p.dead && there {
                return Err(format!(
                    "dead phone {} is in the cloud's location table at the end",
                    p.idx
                ));
            }
        }
        let watches: Vec<phone::Watch> =
            self.phones.iter().flat_map(|p| p.watches.clone()).collect();
        self.chk.finish(end, &watches)?;
        let sv = self.edge.survival_stats().clone();
        Ok(Report {
            counts: self.chk.counts.clone(),
            detections: self.detections,
            local_calls: sv.local_calls,
            fail_fast: sv.fail_fast,
            taken_over: sv.taken_over,
            edge_notifies: sv.notifies,
            cloud_notifies: self.cloud.notifies,
            resyncs: self.resyncs,
            packets: self.net.sent,
            lost: self.net.lost,
            trace: self.trace,
        })
    }
}

/// Runs one seed: its report, or the first invariant it broke.
pub fn run_seed(seed: u64) -> Result<Report, String> {
    let sc = Scenario::draw(seed);
    let desc = format!("{sc:?}");
    World::new(sc)
        .run()
        .map_err(|e| format!("seed {seed}: {e}\n  scenario: {desc}"))
}
