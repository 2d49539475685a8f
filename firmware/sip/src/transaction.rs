//! RFC 3261 §17 transactions (client and server, INVITE and non-INVITE),
//! timers A–M with T1/T2/T4 configurable, RFC 6026 Accepted states for 2xx
//! to INVITE, matching by branch with the RFC 2543 fallback. Sans-IO:
//! `handle_*(now, ..)` in, `poll_transmit()` / `poll_event()` /
//! `poll_timeout()` out, `handle_timeout(now)`.
//!
//! Bounded: every state has a deadline (server transactions whose TU never
//! answers are abandoned after [`TxConfig::max_lifetime`]), and the table
//! holds at most [`TxConfig::max_transactions`] entries; a new request beyond
//! that is answered 503 statelessly and counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::message::Message;
use crate::method::Method;

/// Transport of a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP (unreliable: retransmission timers run).
    Udp,
    /// TCP (reliable).
    Tcp,
    /// TLS over TCP (reliable).
    Tls,
}

impl Transport {
    /// True for TCP and TLS.
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// Parses a Via transport token (case-insensitive).
    pub fn from_token(s: &str) -> Option<Transport> {
        if s.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if s.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if s.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}

/// The other end of a hop: transport address and transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Address (for a received message: its source).
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// Bytes to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub to: Peer,
    /// A complete serialized message.
    pub payload: Vec<u8>,
}

/// Timer settings and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxConfig {
    /// RTT estimate (RFC 3261 default 500 ms).
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s).
    pub t4: Duration,
    /// Timer C of a proxy (RFC 3261 §16.6 step 11): more than 3 minutes.
    pub timer_c: Duration,
    /// Timer D for unreliable transports (at least 32 s).
    pub timer_d: Duration,
    /// A server transaction whose TU sends no final response is dropped
    /// after this long (bounds memory; the TU gets [`TxEvent::Abandoned`]).
    pub max_lifetime: Duration,
    /// Maximum number of live transactions (client + server).
    pub max_transactions: usize,
    /// Send 100 Trying as soon as an INVITE server transaction is created
    /// (a proxy MUST, RFC 3261 §16.2).
    pub auto_trying: bool,
}

impl Default for TxConfig {
    fn default() -> Self {
        TxConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(181),
            timer_d: Duration::from_secs(32),
            max_lifetime: Duration::from_secs(300),
            max_transactions: 20_000,
            auto_trying: true,
        }
    }
}

impl TxConfig {
    fn t64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// A transaction handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// What the transaction user (the proxy core) must know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxEvent {
    /// A new request. `tx` is `None` for an ACK that matches no server
    /// transaction (the end-to-end ACK for a 2xx) or that matches one in the
    /// Accepted state (RFC 6026): forward it statelessly.
    Request {
        /// Server transaction created for it.
        tx: Option<TxId>,
        /// The request.
        request: Message,
        /// Where it came from.
        from: Peer,
    },
    /// A response. `tx` is `None` for a response matching no client
    /// transaction (a late or stray one; a 2xx for INVITE may be forwarded
    /// statelessly, RFC 6026).
    Response {
        /// Client transaction it belongs to.
        tx: Option<TxId>,
        /// The response.
        response: Message,
        /// Where it came from.
        from: Peer,
    },
    /// Timer B or F (or the hard stop after Timer C) fired: no final
    /// response. Treat as 408.
    Timeout {
        /// Client transaction.
        tx: TxId,
    },
    /// Timer C fired on an INVITE client transaction: the TU should CANCEL.
    TimerC {
        /// Client transaction.
        tx: TxId,
    },
    /// Timer H fired: the ACK for a non-2xx final never came.
    AckTimeout {
        /// Server transaction.
        tx: TxId,
    },
    /// The TU gave no final response within `max_lifetime`.
    Abandoned {
        /// Server transaction.
        tx: TxId,
    },
    /// The transport reported an error for this transaction.
    TransportError {
        /// Transaction.
        tx: TxId,
    },
    /// The transaction is gone; forget its id.
    Terminated {
        /// Transaction.
        tx: TxId,
    },
}

/// Why a TU call was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TxError {
    /// The table is at [`TxConfig::max_transactions`].
    #[error("transaction table full")]
    TableFull,
    /// No such transaction (maybe already terminated).
    #[error("unknown transaction")]
    Unknown,
    /// Not allowed in the transaction's current state.
    #[error("not allowed in this transaction state")]
    WrongState,
    /// A client transaction with this branch and method exists.
    #[error("duplicate branch")]
    Duplicate,
    /// The message lacks what a transaction needs (top Via branch, CSeq, ...).
    #[error("message not usable for a transaction: {0}")]
    BadMessage(&'static str),
}

/// Result of [`Transactions::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The CANCEL went out in this client transaction.
    Sent(TxId),
    /// No provisional response yet: the CANCEL goes out when one arrives
    /// (RFC 3261 §9.1), or never if a final response comes first.
    Pending,
    /// The INVITE already has a final response.
    TooLate,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxStats {
    /// Requests answered 503 because the table was full.
    pub rejected_full: u64,
    /// Responses matching no client transaction.
    pub stray_responses: u64,
    /// Retransmissions sent by timers or in answer to retransmissions.
    pub retransmissions: u64,
    /// Retransmitted requests absorbed by a server transaction.
    pub absorbed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ServerKey {
    Rfc3261 {
        branch: String,
        sent_by: String,
        method: Method,
    },
    Rfc2543 {
        ruri: String,
        from_tag: String,
        call_id: String,
        cseq: u32,
        method: Method,
        via: String,
    },
}

#[derive(Debug)]
enum ClientState {
    Calling {
        next_a: Option<Instant>,
        interval: Duration,
        timer_b: Instant,
    },
    InvProceeding {
        timer_c: Option<Instant>,
        hard_stop: Option<Instant>,
    },
    InvCompleted {
        timer_d: Instant,
        ack: Vec<u8>,
    },
    Accepted {
        timer_m: Instant,
    },
    Trying {
        next_e: Option<Instant>,
        interval: Duration,
        timer_f: Instant,
    },
    Proceeding {
        next_e: Option<Instant>,
        timer_f: Instant,
    },
    Completed {
        timer_k: Instant,
    },
}

#[derive(Debug)]
struct ClientTx {
    key: ClientKey,
    to: Peer,
    request: Message,
    payload: Vec<u8>,
    state: ClientState,
    cancel_pending: bool,
}

#[derive(Debug)]
enum ServerState {
    InvProceeding {
        last: Option<Vec<u8>>,
        deadline: Instant,
    },
    InvCompleted {
        response: Vec<u8>,
        next_g: Option<Instant>,
        interval: Duration,
        timer_h: Instant,
    },
    Confirmed {
        timer_i: Instant,
    },
    Accepted {
        timer_l: Instant,
    },
    Trying {
        deadline: Instant,
    },
    Proceeding {
        last: Vec<u8>,
        deadline: Instant,
    },
    Completed {
        response: Vec<u8>,
        timer_j: Instant,
    },
}

#[derive(Debug)]
struct ServerTx {
    key: ServerKey,
    from: Peer,
    state: ServerState,
    /// The request that created it (to build any answer later).
    request: Message,
}

#[derive(Debug)]
enum Tx {
    Client(ClientTx),
    Server(ServerTx),
}

/// `now + d`, with `d` capped at one day so that no configuration can
/// overflow an `Instant` (a panic) — every timer here is far shorter.
fn later(now: Instant, d: Duration) -> Instant {
    let d = d.min(Duration::from_secs(86_400));
    now.checked_add(d).unwrap_or(now)
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl Tx {
    fn next_deadline(&self) -> Option<Instant> {
        match self {
            Tx::Client(c) => match &c.state {
                ClientState::Calling {
                    next_a, timer_b, ..
                } => min_opt(*next_a, Some(*timer_b)),
                ClientState::InvProceeding { timer_c, hard_stop } => min_opt(*timer_c, *hard_stop),
                ClientState::InvCompleted { timer_d, .. } => Some(*timer_d),
                ClientState::Accepted { timer_m } => Some(*timer_m),
                ClientState::Trying {
                    next_e, timer_f, ..
                }
                | ClientState::Proceeding { next_e, timer_f } => min_opt(*next_e, Some(*timer_f)),
                ClientState::Completed { timer_k } => Some(*timer_k),
            },
            Tx::Server(s) => match &s.state {
                ServerState::InvProceeding { deadline, .. }
                | ServerState::Trying { deadline }
                | ServerState::Proceeding { deadline, .. } => Some(*deadline),
                ServerState::InvCompleted {
                    next_g, timer_h, ..
                } => min_opt(*next_g, Some(*timer_h)),
                ServerState::Confirmed { timer_i } => Some(*timer_i),
                ServerState::Accepted { timer_l } => Some(*timer_l),
                ServerState::Completed { timer_j, .. } => Some(*timer_j),
            },
        }
    }
}

/// The transaction layer. See the module docs.
#[derive(Debug)]
pub struct Transactions {
    cfg: TxConfig,
    next_id: u64,
    txs: HashMap<TxId, Tx>,
    clients: HashMap<ClientKey, TxId>,
    servers: HashMap<ServerKey, TxId>,
    heap: BinaryHeap<Reverse<(Instant, TxId)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TxEvent>,
    stats: TxStats,
}

fn matching_method(m: &Method) -> Method {
    if *m == Method::Ack {
        Method::Invite
    } else {
        m.clone()
    }
}

fn server_key(req: &Message) -> Option<ServerKey> {
    let method = matching_method(req.method()?);
    let via = req.top_via()?;
    match via.branch() {
        // A branch that is only the magic cookie identifies nothing
        // (RFC 4475 §3.2.1): fall back to RFC 2543 matching.
        Some(b) if b.starts_with("z9hG4bK") && b.len() > 7 => {
            let mut sent_by = via.host.to_ascii_lowercase();
            if let Some(p) = via.port {
                sent_by.push(':');
                sent_by.push_str(&p.to_string());
            }
            Some(ServerKey::Rfc3261 {
                branch: b.to_owned(),
                sent_by,
                method,
            })
        }
        _ => {
            let cseq = req.cseq()?;
            let via_text = req.header_values("Via").next()?;
            let top = crate::values::list_items(via_text).next()?;
            Some(ServerKey::Rfc2543 {
                ruri: req.request_uri()?.to_owned(),
                from_tag: req.from_tag().unwrap_or("").to_owned(),
                call_id: req.call_id()?.to_owned(),
                cseq: cseq.seq,
                method,
                via: top.to_owned(),
            })
        }
    }
}

fn client_key(msg: &Message) -> Option<ClientKey> {
    let branch = msg.top_via()?.branch()?.to_owned();
    let method = msg.cseq()?.method;
    Some(ClientKey { branch, method })
}

impl Transactions {
    /// A transaction layer with these settings.
    pub fn new(cfg: TxConfig) -> Transactions {
        Transactions {
            cfg,
            next_id: 1,
            txs: HashMap::new(),
            clients: HashMap::new(),
            servers: HashMap::new(),
            heap: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: TxStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &TxConfig {
        &self.cfg
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.txs.len()
    }

    /// True when no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.txs.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> TxStats {
        self.stats
    }

    /// Next bytes to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the TU.
    pub fn poll_event(&mut self) -> Option<TxEvent> {
        self.events.pop_front()
    }

    /// When [`Transactions::handle_timeout`] must next be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            match self.txs.get(&id).and_then(Tx::next_deadline) {
                Some(d) if d == at => return Some(at),
                Some(d) if d < at => {
                    self.heap.pop();
                    self.heap.push(Reverse((d, id)));
                }
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    fn alloc_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn schedule(&mut self, id: TxId) {
        if let Some(d) = self.txs.get(&id).and_then(Tx::next_deadline) {
            self.heap.push(Reverse((d, id)));
        }
        if self.heap.len() > 4 * self.txs.len() + 64 {
            let fresh: BinaryHeap<_> = self
                .txs
                .iter()
                .filter_map(|(id, tx)| tx.next_deadline().map(|d| Reverse((d, *id))))
                .collect();
            self.heap = fresh;
        }
    }

    fn send(&mut self, to: Peer, payload: Vec<u8>) {
        self.transmits.push_back(Transmit { to, payload });
    }

    fn remove(&mut self, id: TxId) {
        if let Some(tx) = self.txs.remove(&id) {
            match tx {
                Tx::Client(c) => {
                    self.clients.remove(&c.key);
                }
                Tx::Server(s) => {
                    self.servers.remove(&s.key);
                }
            }
            self.events.push_back(TxEvent::Terminated { tx: id });
        }
    }

    /// Sends a message outside any transaction (an ACK for a 2xx, a 2xx
    /// forwarded statelessly, a stateless answer).
    pub fn send_stateless(&mut self, to: Peer, msg: &Message) {
        self.send(to, msg.to_bytes());
    }

    // ---------------------------------------------------------------- input

    /// A parsed message arrived from `from`.
    pub fn handle_incoming(&mut self, now: Instant, msg: Message, from: Peer) {
        if msg.is_request() {
            self.incoming_request(now, msg, from);
        } else {
            self.incoming_response(now, msg, from);
        }
    }

    fn incoming_request(&mut self, now: Instant, req: Message, from: Peer) {
        let Some(key) = server_key(&req) else {
            return;
        };
        let is_ack = req.method() == Some(&Method::Ack);
        if let Some(&id) = self.servers.get(&key) {
            self.server_retransmission(now, id, req, from, is_ack);
            return;
        }
        if is_ack {
            self.events.push_back(TxEvent::Request {
                tx: None,
                request: req,
                from,
            });
            return;
        }
        if self.txs.len() >= self.cfg.max_transactions {
            self.stats.rejected_full += 1;
            if let Ok(mut r) = Message::response_for(&req, 503, "Service Unavailable") {
                let _ = r.add_header("Retry-After", "5");
                self.send(from, r.to_bytes());
            }
            return;
        }
        let id = self.alloc_id();
        let deadline = later(now, self.cfg.max_lifetime);
        let is_invite = req.method() == Some(&Method::Invite);
        let state = if is_invite {
            let mut last = None;
            if self.cfg.auto_trying {
                if let Ok(t) = Message::response_for(&req, 100, "Trying") {
                    let bytes = t.to_bytes();
                    self.send(from, bytes.clone());
                    last = Some(bytes);
                }
            }
            ServerState::InvProceeding { last, deadline }
        } else {
            ServerState::Trying { deadline }
        };
        self.servers.insert(key.clone(), id);
        self.txs.insert(
            id,
            Tx::Server(ServerTx {
                key,
                from,
                state,
                request: req.clone(),
            }),
        );
        self.schedule(id);
        self.events.push_back(TxEvent::Request {
            tx: Some(id),
            request: req,
            from,
        });
    }

    fn server_retransmission(
        &mut self,
        now: Instant,
        id: TxId,
        req: Message,
        from: Peer,
        is_ack: bool,
    ) {
        let t4 = self.cfg.t4;
        let Some(Tx::Server(s)) = self.txs.get_mut(&id) else {
            return;
        };
        let reliable = s.from.transport.is_reliable();
        let mut resend: Option<Vec<u8>> = None;
        let mut pass_ack = false;
        let mut terminate = false;
        match &mut s.state {
            ServerState::InvProceeding { last, .. } => {
                if !is_ack {
                    resend = last.clone();
                }
            }
            ServerState::InvCompleted { response, .. } => {
                if is_ack {
                    if reliable {
                        terminate = true;
                    } else {
                        s.state = ServerState::Confirmed {
                            timer_i: later(now, t4),
                        };
                    }
                } else {
                    resend = Some(response.clone());
                }
            }
            ServerState::Confirmed { .. } => {}
            ServerState::Accepted { .. } => {
                pass_ack = is_ack;
            }
            ServerState::Trying { .. } => {}
            ServerState::Proceeding { last, .. } => resend = Some(last.clone()),
            ServerState::Completed { response, .. } => resend = Some(response.clone()),
        }
        let to = s.from;
        if let Some(bytes) = resend {
            self.stats.retransmissions += 1;
            self.send(to, bytes);
        } else if !pass_ack && !terminate {
            self.stats.absorbed += 1;
        }
        if pass_ack {
            self.events.push_back(TxEvent::Request {
                tx: None,
                request: req,
                from,
            });
        }
        if terminate {
            self.remove(id);
        } else {
            self.schedule(id);
        }
    }

    fn incoming_response(&mut self, now: Instant, resp: Message, from: Peer) {
        let Some(code) = resp.status() else { return };
        let id = client_key(&resp).and_then(|k| self.clients.get(&k).copied());
        let Some(id) = id else {
            self.stats.stray_responses += 1;
            self.events.push_back(TxEvent::Response {
                tx: None,
                response: resp,
                from,
            });
            return;
        };
        let cfg = self.cfg;
        let Some(Tx::Client(c)) = self.txs.get_mut(&id) else {
            return;
        };
        let reliable = c.to.transport.is_reliable();
        let mut deliver = false;
        let mut send_ack: Option<Vec<u8>> = None;
        let mut send_cancel = false;
        let mut terminate = false;
        match &mut c.state {
            ClientState::Calling { .. } | ClientState::InvProceeding { .. } => {
                deliver = true;
                if code < 200 {
                    let (timer_c, hard_stop) = match &c.state {
                        ClientState::InvProceeding { hard_stop, .. } => (
                            hard_stop.is_none().then(|| later(now, cfg.timer_c)),
                            *hard_stop,
                        ),
                        _ => (Some(later(now, cfg.timer_c)), None),
                    };
                    c.state = ClientState::InvProceeding { timer_c, hard_stop };
                    if c.cancel_pending {
                        c.cancel_pending = false;
                        send_cancel = true;
                    }
                } else if code < 300 {
                    c.cancel_pending = false;
                    c.state = ClientState::Accepted {
                        timer_m: later(now, cfg.t64()),
                    };
                } else {
                    c.cancel_pending = false;
                    match Message::ack_for(&c.request, &resp) {
                        Ok(ack) => {
                            let bytes = ack.to_bytes();
                            send_ack = Some(bytes.clone());
                            if reliable {
                                terminate = true;
                            } else {
                                c.state = ClientState::InvCompleted {
                                    timer_d: later(now, cfg.timer_d),
                                    ack: bytes,
                                };
                            }
                        }
                        Err(_) => terminate = true,
                    }
                }
            }
            ClientState::InvCompleted { ack, .. } => {
                if code >= 300 {
                    send_ack = Some(ack.clone());
                    self.stats.retransmissions += 1;
                }
            }
            ClientState::Accepted { .. } => {
                // RFC 6026: retransmitted 2xx go to the TU (to be forwarded).
                deliver = (200..300).contains(&code);
            }
            ClientState::Trying {
                next_e, timer_f, ..
            }
            | ClientState::Proceeding { next_e, timer_f } => {
                deliver = true;
                if code < 200 {
                    let timer_f = *timer_f;
                    let next_e = next_e.map(|_| later(now, cfg.t2));
                    c.state = ClientState::Proceeding { next_e, timer_f };
                } else if reliable {
                    terminate = true;
                } else {
                    c.state = ClientState::Completed {
                        timer_k: later(now, cfg.t4),
                    };
                }
            }
            ClientState::Completed { .. } => {}
        }
        let to = c.to;
        if let Some(ack) = send_ack {
            self.send(to, ack);
        }
        if deliver {
            self.events.push_back(TxEvent::Response {
                tx: Some(id),
                response: resp,
                from,
            });
        }
        if send_cancel {
            let _ = self.send_cancel_now(now, id);
        }
        if terminate {
            self.remove(id);
        } else {
            self.schedule(id);
        }
    }

    // ------------------------------------------------------------- TU calls

    /// Starts a client transaction for `req` (not ACK: use
    /// [`Transactions::send_stateless`]) towards `to`. The top Via must carry
    /// a unique branch (see [`crate::proxy::branch`]).
    pub fn send_request(&mut self, now: Instant, req: Message, to: Peer) -> Result<TxId, TxError> {
        let method = req
            .method()
            .ok_or(TxError::BadMessage("not a request"))?
            .clone();
        if method == Method::Ack {
            return Err(TxError::BadMessage("ACK is not a transaction"));
        }
        let key = client_key(&req).ok_or(TxError::BadMessage("top Via branch or CSeq"))?;
        if key.method != method {
            return Err(TxError::BadMessage("CSeq method"));
        }
        if self.clients.contains_key(&key) {
            return Err(TxError::Duplicate);
        }
        if self.txs.len() >= self.cfg.max_transactions {
            return Err(TxError::TableFull);
        }
        let id = self.alloc_id();
        let payload = req.to_bytes();
        let reliable = to.transport.is_reliable();
        let t1 = self.cfg.t1;
        let state = if method == Method::Invite {
            ClientState::Calling {
                next_a: (!reliable).then(|| later(now, t1)),
                interval: t1,
                timer_b: later(now, self.cfg.t64()),
            }
        } else {
            ClientState::Trying {
                next_e: (!reliable).then(|| later(now, t1)),
                interval: t1,
                timer_f: later(now, self.cfg.t64()),
            }
        };
        self.send(to, payload.clone());
        self.clients.insert(key.clone(), id);
        self.txs.insert(
            id,
            Tx::Client(ClientTx {
                key,
                to,
                request: req,
                payload,
                state,
                cancel_pending: false,
            }),
        );
        self.schedule(id);
        Ok(id)
    }

    /// Sends a response in a server transaction.
    pub fn send_response(&mut self, now: Instant, id: TxId, resp: &Message) -> Result<(), TxError> {
        let code = resp.status().ok_or(TxError::BadMessage("not a response"))?;
        let cfg = self.cfg;
        let Some(Tx::Server(s)) = self.txs.get_mut(&id) else {
            return Err(TxError::Unknown);
        };
        let reliable = s.from.transport.is_reliable();
        let bytes = resp.to_bytes();
        let mut terminate = false;
        match &mut s.state {
            ServerState::InvProceeding { last, .. } => {
                if code < 200 {
                    *last = Some(bytes.clone());
                } else if code < 300 {
                    s.state = ServerState::Accepted {
                        timer_l: later(now, cfg.t64()),
                    };
                } else {
                    s.state = ServerState::InvCompleted {
                        response: bytes.clone(),
                        next_g: (!reliable).then(|| later(now, cfg.t1)),
                        interval: cfg.t1,
                        timer_h: later(now, cfg.t64()),
                    };
                }
            }
            ServerState::Accepted { .. } => {
                if !(200..300).contains(&code) {
                    return Err(TxError::WrongState);
                }
            }
            ServerState::Trying { deadline } | ServerState::Proceeding { deadline, .. } => {
                if code < 200 {
                    let deadline = *deadline;
                    s.state = ServerState::Proceeding {
                        last: bytes.clone(),
                        deadline,
                    };
                } else if reliable {
                    terminate = true;
                } else {
                    s.state = ServerState::Completed {
                        response: bytes.clone(),
                        timer_j: later(now, cfg.t64()),
                    };
                }
            }
            _ => return Err(TxError::WrongState),
        }
        let to = s.from;
        self.send(to, bytes);
        if terminate {
            self.remove(id);
        } else {
            self.schedule(id);
        }
        Ok(())
    }

    /// Cancels an INVITE client transaction (RFC 3261 §9.1).
    pub fn cancel(&mut self, now: Instant, id: TxId) -> Result<CancelOutcome, TxError> {
        let Some(Tx::Client(c)) = self.txs.get_mut(&id) else {
            return Err(TxError::Unknown);
        };
        match c.state {
            ClientState::Calling { .. } => {
                c.cancel_pending = true;
                Ok(CancelOutcome::Pending)
            }
            ClientState::InvProceeding { .. } => {
                self.send_cancel_now(now, id).map(CancelOutcome::Sent)
            }
            ClientState::InvCompleted { .. } | ClientState::Accepted { .. } => {
                Ok(CancelOutcome::TooLate)
            }
            _ => Err(TxError::WrongState),
        }
    }

    fn send_cancel_now(&mut self, now: Instant, id: TxId) -> Result<TxId, TxError> {
        let Some(Tx::Client(c)) = self.txs.get(&id) else {
            return Err(TxError::Unknown);
        };
        let cancel = Message::cancel_for(&c.request).map_err(|_| TxError::BadMessage("CANCEL"))?;
        let to = c.to;
        self.send_request(now, cancel, to)
    }

    /// The INVITE server transaction a received CANCEL refers to
    /// (RFC 3261 §9.2: same key with method INVITE).
    pub fn find_cancelled(&self, cancel: &Message) -> Option<TxId> {
        if cancel.method() != Some(&Method::Cancel) {
            return None;
        }
        let key = match server_key(cancel)? {
            ServerKey::Rfc3261 {
                branch, sent_by, ..
            } => ServerKey::Rfc3261 {
                branch,
                sent_by,
                method: Method::Invite,
            },
            ServerKey::Rfc2543 {
                ruri,
                from_tag,
                call_id,
                cseq,
                via,
                ..
            } => ServerKey::Rfc2543 {
                ruri,
                from_tag,
                call_id,
                cseq,
                method: Method::Invite,
                via,
            },
        };
        self.servers.get(&key).copied()
    }

    /// True while a server INVITE transaction has sent no final response.
    pub fn is_pending_invite(&self, id: TxId) -> bool {
        matches!(
            self.txs.get(&id),
            Some(Tx::Server(ServerTx {
                state: ServerState::InvProceeding { .. },
                ..
            }))
        )
    }

    /// The request that created a server transaction (to answer it).
    pub fn server_request(&self, id: TxId) -> Option<&Message> {
        match self.txs.get(&id) {
            Some(Tx::Server(s)) => Some(&s.request),
            _ => None,
        }
    }

    /// The request a client transaction sent.
    pub fn client_request(&self, id: TxId) -> Option<&Message> {
        match self.txs.get(&id) {
            Some(Tx::Client(c)) => Some(&c.request),
            _ => None,
        }
    }

    /// The transport failed for this transaction (RFC 3261 §17.1.4).
    pub fn handle_transport_error(&mut self, _now: Instant, id: TxId) {
        if self.txs.contains_key(&id) {
            self.events.push_back(TxEvent::TransportError { tx: id });
            self.remove(id);
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            match self.txs.get(&id).and_then(Tx::next_deadline) {
                Some(d) if d <= now => self.fire(now, id),
                Some(d) if d != at => self.heap.push(Reverse((d, id))),
                _ => {}
            }
        }
    }

    fn fire(&mut self, now: Instant, id: TxId) {
        let cfg = self.cfg;
        let mut resend: Option<(Peer, Vec<u8>)> = None;
        let mut event: Option<TxEvent> = None;
        let mut terminate = false;
        match self.txs.get_mut(&id) {
            Some(Tx::Client(c)) => match &mut c.state {
                ClientState::Calling {
                    next_a,
                    interval,
                    timer_b,
                } => {
                    if *timer_b <= now {
                        event = Some(TxEvent::Timeout { tx: id });
                        terminate = true;
                    } else if next_a.is_some_and(|a| a <= now) {
                        *interval = interval.saturating_mul(2);
                        *next_a = Some(later(now, *interval));
                        resend = Some((c.to, c.payload.clone()));
                    }
                }
                ClientState::InvProceeding { timer_c, hard_stop } => {
                    if hard_stop.is_some_and(|h| h <= now) {
                        event = Some(TxEvent::Timeout { tx: id });
                        terminate = true;
                    } else if timer_c.is_some_and(|t| t <= now) {
                        *timer_c = None;
                        *hard_stop = Some(later(now, cfg.t64()));
                        event = Some(TxEvent::TimerC { tx: id });
                    }
                }
                ClientState::InvCompleted { .. }
                | ClientState::Accepted { .. }
                | ClientState::Completed { .. } => {
                    terminate = true;
                }
                ClientState::Trying {
                    next_e,
                    interval,
                    timer_f,
                } => {
                    if *timer_f <= now {
                        event = Some(TxEvent::Timeout { tx: id });
                        terminate = true;
                    } else if next_e.is_some_and(|e| e <= now) {
                        *interval = interval.saturating_mul(2).min(cfg.t2);
                        *next_e = Some(later(now, *interval));
                        resend = Some((c.to, c.payload.clone()));
                    }
                }
                ClientState::Proceeding { next_e, timer_f } => {
                    if *timer_f <= now {
                        event = Some(TxEvent::Timeout { tx: id });
                        terminate = true;
                    } else if next_e.is_some_and(|e| e <= now) {
                        *next_e = Some(later(now, cfg.t2));
                        resend = Some((c.to, c.payload.clone()));
                    }
                }
            },
            Some(Tx::Server(s)) => match &mut s.state {
                ServerState::InvProceeding { .. }
                | ServerState::Trying { .. }
                | ServerState::Proceeding { .. } => {
                    event = Some(TxEvent::Abandoned { tx: id });
                    terminate = true;
                }
                ServerState::InvCompleted {
                    response,
                    next_g,
                    interval,
                    timer_h,
                } => {
                    if *timer_h <= now {
                        event = Some(TxEvent::AckTimeout { tx: id });
                        terminate = true;
                    } else if next_g.is_some_and(|g| g <= now) {
                        *interval = interval.saturating_mul(2).min(cfg.t2);
                        *next_g = Some(later(now, *interval));
                        resend = Some((s.from, response.clone()));
                    }
                }
                ServerState::Confirmed { .. }
                | ServerState::Accepted { .. }
                | ServerState::Completed { .. } => {
                    terminate = true;
                }
            },
            None => return,
        }
        if let Some((to, bytes)) = resend {
            self.stats.retransmissions += 1;
            self.send(to, bytes);
        }
        if let Some(e) = event {
            self.events.push_back(e);
        }
        if terminate {
            self.remove(id);
        } else {
            self.schedule(id);
        }
    }
}
