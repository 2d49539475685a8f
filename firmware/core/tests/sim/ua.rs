//! What phones and the cloud share: RFC 3261 client transactions over UDP
//! (Timer A/E retransmissions, Timer B/F give-up), a cache of sent responses
//! for retransmitted requests, and small message helpers.

use std::collections::BTreeMap;

use holdline_core::Peer;
use holdline_sip::Message;

pub const T1: u64 = 500;
pub const T2: u64 = 4_000;
/// Timer B / F.
pub const TIMER_B: u64 = 32_000;

pub fn parse(bytes: &[u8]) -> Option<Message> {
    Message::parse(bytes).ok()
}

pub fn branch_of(m: &Message) -> String {
    m.top_via()
        .and_then(|v| v.branch().map(str::to_string))
        .unwrap_or_default()
}

/// Record-Route values as `<uri>` (in message order).
pub fn record_route(m: &Message) -> Vec<String> {
    m.record_routes()
        .iter()
        .map(|r| format!("<{}>", r.uri))
        .collect()
}

/// The address a `<sip:host:port;...>` route or URI names.
pub fn uri_peer(uri: &str) -> Option<Peer> {
    let s = uri.trim().trim_start_matches('<');
    let s = s.split('>').next()?;
    let s = s.strip_prefix("sip:")?;
    let hostport = s.split([';', '?']).next()?;
    let hostport = hostport.rsplit('@').next()?;
    let hp = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5060")
    };
    crate::sim::net::udp_opt(&hp)
}

/// The branch of the first Via of a message we built (one Via line, with
/// `branch=`), without parsing it all.
fn first_branch(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .find(|l| l.starts_with("Via:"))
        .and_then(|l| l.split("branch=").nth(1))
        .and_then(|b| b.split([';', ',', ' ']).next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A response to `req` with extra header lines (`Name: value\r\n` each).
pub fn response(req: &Message, code: u16, reason: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let Ok(mut r) = holdline_sip::response_for(req, code, reason) else {
        return Vec::new();
    };
    for (n, v) in extra {
        let _ = r.add_header(n, v);
    }
    r.to_bytes()
}

/// Why a client transaction exists (the owner's tag).
#[derive(Debug)]
struct Tx<K> {
    to: Peer,
    bytes: Vec<u8>,
    invite: bool,
    next: u64,
    interval: u64,
    deadline: u64,
    provisional: bool,
    key: K,
}

/// Client transactions of one UA, by branch.
#[derive(Debug)]
pub struct Transactions<K> {
    txs: BTreeMap<String, Tx<K>>,
}

/// What a response did to its transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<K> {
    /// A provisional (first one or not).
    Provisional(K),
    /// The final answer; the transaction is gone.
    Final(K),
    /// Nothing known (a retransmitted final, a stranger).
    Unknown,
}

impl<K: Clone> Transactions<K> {
    pub fn new() -> Self {
        Transactions {
            txs: BTreeMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.txs.clear();
    }

    /// Sends a request and keeps it for retransmission.
    pub fn send(
        &mut self,
        now: u64,
        out: &mut Vec<(Peer, Vec<u8>)>,
        to: Peer,
        bytes: Vec<u8>,
        invite: bool,
        key: K,
    ) {
        let branch = first_branch(&bytes);
        out.push((to, bytes.clone()));
        self.txs.insert(
            branch,
            Tx {
                to,
                bytes,
                invite,
                next: now + T1,
                interval: T1,
                deadline: now + TIMER_B,
                provisional: false,
                key,
            },
        );
    }

    pub fn on_response(&mut self, branch: &str, status: u16, now: u64) -> Answer<K> {
        let Some(tx) = self.txs.get_mut(branch) else {
            return Answer::Unknown;
        };
        if status < 200 {
            tx.provisional = true;
            if tx.invite {
                // Proceeding: no more retransmissions; a call that rings
                // forever is ended by the owner, not here.
                tx.next = u64::MAX;
                tx.deadline = now + 3 * TIMER_B;
            } else {
                tx.interval = T2;
            }
            return Answer::Provisional(tx.key.clone());
        }
        match self.txs.remove(branch) {
            Some(tx) => Answer::Final(tx.key),
            None => Answer::Unknown,
        }
    }

    pub fn next_timer(&self) -> Option<u64> {
        self.txs.values().map(|t| t.next.min(t.deadline)).min()
    }

    /// Retransmits what is due; returns the keys of transactions that timed out.
    pub fn on_timer(&mut self, now: u64, out: &mut Vec<(Peer, Vec<u8>)>) -> Vec<K> {
        let mut gone = Vec::new();
        self.txs.retain(|_, t| {
            if now >= t.deadline {
                gone.push(t.key.clone());
                return false;
            }
            if now >= t.next {
                out.push((t.to, t.bytes.clone()));
                t.interval = if t.invite {
                    t.interval * 2
                } else {
                    (t.interval * 2).min(T2)
                };
                t.next = now + t.interval;
            }
            true
        });
        gone
    }
}

/// Responses sent, for retransmitted requests (server transactions).
#[derive(Debug)]
pub struct Sent {
    map: BTreeMap<(String, String), (u64, Vec<u8>)>,
}

impl Sent {
    pub fn new() -> Self {
        Sent {
            map: BTreeMap::new(),
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    fn key(req: &Message) -> (String, String) {
        let m = req.method().map(|m| m.to_string()).unwrap_or_default();
        (branch_of(req), m)
    }

    /// The last response sent to this request, if it was seen before.
    pub fn replay(&self, req: &Message) -> Option<Vec<u8>> {
        self.map.get(&Self::key(req)).map(|(_, b)| b.clone())
    }

    pub fn record(&mut self, now: u64, req: &Message, resp: &[u8]) {
        self.map.insert(Self::key(req), (now, resp.to_vec()));
    }

    pub fn record_raw(&mut self, now: u64, branch: &str, method: &str, resp: &[u8]) {
        self.map.insert(
            (branch.to_string(), method.to_string()),
            (now, resp.to_vec()),
        );
    }

    pub fn expire(&mut self, now: u64) {
        self.map
            .retain(|_, (at, _)| now.saturating_sub(*at) < 2 * TIMER_B);
    }
}
