//! Virtual time, a seeded generator and the simulated network: every packet
//! gets a delay with jitter (so packets overtake each other), LAN packets are
//! lost at random, WAN packets are lost in isolation (never two within
//! [`WAN_LOSS_GAP_MS`], so a single lost UDP packet is all the uplink monitor
//! ever has to tolerate outside the cloud's outages). No wall clock: time is
//! a millisecond counter the event loop advances.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::net::SocketAddr;

use holdline_core::{Peer, Side, Transport};

/// Two WAN losses are never closer than this.
pub const WAN_LOSS_GAP_MS: u64 = 3_000;

/// splitmix64: small, seeded, good enough to draw a scenario.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `permille / 1000`.
    pub fn chance(&mut self, permille: u64) -> bool {
        self.next_u64() % 1000 < permille
    }

    /// An independent generator for one actor.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// Who a packet is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    Edge(SideKey),
    Phone(usize),
    Cloud,
}

/// [`Side`] with an order (for the event queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SideKey {
    Lan,
    Wan,
}

impl SideKey {
    pub fn side(self) -> Side {
        match self {
            SideKey::Lan => Side::Lan,
            SideKey::Wan => Side::Wan,
        }
    }
}

/// The simulation's addresses (loopback only, as every holdline test).
pub const EDGE_LAN: &str = "127.0.1.1:5060";
pub const EDGE_WAN: &str = "127.0.2.1:5060";
pub const CLOUD: &str = "127.0.3.1:5060";
pub const DOMAIN: &str = "cloud.test";

pub fn udp(addr: &str) -> Peer {
    udp_opt(addr).expect("simulation address")
}

pub fn udp_opt(addr: &str) -> Option<Peer> {
    Some(Peer {
        transport: Transport::Udp,
        addr: addr.parse().ok()?,
    })
}

pub fn phone_addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 1, 10 + i as u8)),
        5060,
    )
}

/// Which node owns an address.
pub fn node_of(addr: SocketAddr, phones: usize) -> Option<Node> {
    if addr == udp(EDGE_LAN).addr {
        return Some(Node::Edge(SideKey::Lan));
    }
    if addr == udp(EDGE_WAN).addr {
        return Some(Node::Edge(SideKey::Wan));
    }
    if addr == udp(CLOUD).addr {
        return Some(Node::Cloud);
    }
    (0..phones)
        .find(|&i| phone_addr(i) == addr)
        .map(Node::Phone)
}

/// One datagram on its way.
#[derive(Debug, Clone)]
pub struct Packet {
    pub to: Node,
    pub from: Peer,
    pub bytes: Vec<u8>,
}

/// Link quality of one seed.
#[derive(Debug, Clone, Copy)]
pub struct Links {
    /// LAN loss, per mille, independent.
    pub lan_loss: u64,
    /// LAN one-way delay: base and jitter (ms).
    pub lan_delay: (u64, u64),
    /// WAN loss, per mille, isolated.
    pub wan_loss: u64,
    /// WAN one-way delay: base and jitter (ms).
    pub wan_delay: (u64, u64),
}

/// Something scheduled: a packet arriving or one of the scenario's events.
#[derive(Debug, Clone)]
pub struct Sched<E> {
    pub t: u64,
    pub seq: u64,
    pub ev: E,
}

impl<E> PartialEq for Sched<E> {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl<E> Eq for Sched<E> {}
impl<E> PartialOrd for Sched<E> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<E> Ord for Sched<E> {
    fn cmp(&self, o: &Self) -> Ordering {
        // A min-heap on (time, order of scheduling).
        (o.t, o.seq).cmp(&(self.t, self.seq))
    }
}

/// The event queue (packets in flight and scenario events).
#[derive(Debug)]
pub struct Queue<E> {
    heap: BinaryHeap<Sched<E>>,
    seq: u64,
}

impl<E> Queue<E> {
    pub fn new() -> Self {
        Queue {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }
    pub fn at(&mut self, t: u64, ev: E) {
        self.seq += 1;
        self.heap.push(Sched {
            t,
            seq: self.seq,
            ev,
        });
    }
    pub fn next_time(&self) -> Option<u64> {
        self.heap.peek().map(|s| s.t)
    }
    pub fn pop(&mut self) -> Option<Sched<E>> {
        self.heap.pop()
    }
}

/// The wire: decides loss and arrival time of each datagram.
#[derive(Debug)]
pub struct Net {
    pub links: Links,
    rng: Rng,
    last_wan_loss: Option<u64>,
    pub sent: u64,
    pub lost: u64,
}

impl Net {
    pub fn new(links: Links, rng: Rng) -> Net {
        Net {
            links,
            rng,
            last_wan_loss: None,
            sent: 0,
            lost: 0,
        }
    }

    /// When `bytes` from `from` reaches `to`, or `None` when it is lost.
    pub fn route(&mut self, now: u64, from: SocketAddr, to: Node) -> Option<u64> {
        self.sent += 1;
        let wan = matches!(to, Node::Cloud) || from == udp(CLOUD).addr;
        let (loss, (base, jitter)) = if wan {
            (self.links.wan_loss, self.links.wan_delay)
        } else {
            (self.links.lan_loss, self.links.lan_delay)
        };
        let drop = self.rng.chance(loss);
        let delay = base + self.rng.range(0, jitter);
        if drop {
            let isolated = !wan
                || self
                    .last_wan_loss
                    .is_none_or(|l| now.saturating_sub(l) >= WAN_LOSS_GAP_MS);
            if isolated {
                if wan {
                    self.last_wan_loss = Some(now);
                }
                self.lost += 1;
                return None;
            }
        }
        Some(now + delay)
    }
}
