//! Stateful proxy mechanics (RFC 3261 §16): unique-branch Via insert and
//! strip, received/rport (RFC 3581), Max-Forwards and loop detection,
//! two-sided Record-Route (one entry per leg, RFC 5658 style), loose routing
//! and Route popping (with the strict-router fix-ups), Path (RFC 3327),
//! response routing by Via, best-response selection for forked requests.
//!
//! Policy — which leg a request leaves by, which domains are allowed — is
//! the caller's (holdline-core). This module only does what RFC 3261 says a
//! proxy does once that choice is made.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;

use thiserror::Error;

use crate::message::Message;
use crate::method::Method;
use crate::parse::{parse_hostport, trim_ws};
use crate::transaction::Transport;
use crate::values::{list_items, NameAddr, Uri, Via};

/// Why a request or response is not proxied. Each maps to a status code
/// (`status()`) for requests, or a drop for responses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProxyError {
    /// Max-Forwards is 0 (483).
    #[error("too many hops")]
    TooManyHops,
    /// This request passed here before with the same loop-relevant fields (482).
    #[error("loop detected")]
    LoopDetected,
    /// Proxy-Require lists extensions this proxy does not support (420).
    #[error("unsupported Proxy-Require: {0}")]
    BadExtension(String),
    /// The next hop cannot be determined from Route / Request-URI (416/400).
    #[error("no usable next hop")]
    NoNextHop,
    /// A response whose top Via is not ours: drop it (RFC 3261 §18.1.2).
    #[error("top Via is not ours")]
    NotOurVia,
    /// A response with no Via left after ours: it was for this proxy.
    #[error("response addressed to this proxy")]
    ForUs,
    /// An edit was refused (malformed value).
    #[error("edit refused: {0}")]
    Edit(#[from] crate::error::EditError),
}

impl ProxyError {
    /// Status code and reason to answer a request refused with this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            ProxyError::TooManyHops => (483, "Too Many Hops"),
            ProxyError::LoopDetected => (482, "Loop Detected"),
            ProxyError::BadExtension(_) => (420, "Bad Extension"),
            ProxyError::NoNextHop => (416, "Unsupported URI Scheme"),
            _ => (400, "Bad Request"),
        }
    }
}

/// One side of the proxy (LAN or WAN): the address it is reached at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// Host as written in Via / Record-Route / Path (`[v6]` bracketed).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: Transport,
}

impl Leg {
    /// A leg at this socket address.
    pub fn new(addr: SocketAddr, transport: Transport) -> Leg {
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Leg {
            host,
            port: addr.port(),
            transport,
        }
    }

    /// A Via value for a request leaving by this leg.
    pub fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            self.transport.via_token(),
            self.host,
            self.port
        )
    }

    /// A loose-routing URI naming this leg, with extra URI parameters
    /// (`params` without leading `;`, may be empty), in angle brackets.
    pub fn route_uri(&self, params: &str) -> String {
        let tp = match self.transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        let sep = if params.is_empty() { "" } else { ";" };
        format!("<sip:{}:{}{tp};lr{sep}{params}>", self.host, self.port)
    }

    fn default_port(&self) -> u16 {
        if self.transport == Transport::Tls {
            5061
        } else {
            5060
        }
    }
}

/// The proxy's identity: its legs and a secret mixed into branches.
#[derive(Debug, Clone)]
pub struct ProxyIdentity {
    legs: Vec<Leg>,
    aliases: Vec<(String, u16)>,
    secret: u64,
}

/// Where to send a request next (RFC 3261 §16.6 steps 6–7, no DNS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// Host (IP literal or name; `[v6]` bracketed).
    pub host: String,
    /// Port, when the URI names one.
    pub port: Option<u16>,
    /// `transport` URI parameter, when given.
    pub transport: Option<Transport>,
}

impl NextHop {
    /// The hop as a socket address when the host is an IP literal.
    pub fn socket_addr(&self, default_port: u16) -> Option<SocketAddr> {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = h.parse().ok()?;
        Some(SocketAddr::new(ip, self.port.unwrap_or(default_port)))
    }
}

/// Where a response goes (RFC 3261 §18.2.2 with RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseTarget {
    /// `received` if present, else the sent-by host.
    pub host: String,
    /// `rport` value if present, else sent-by port, else the default.
    pub port: u16,
    /// Transport from the Via.
    pub transport: Option<Transport>,
}

impl ResponseTarget {
    /// The target as a socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = h.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

fn hash_str<H: Hasher>(h: &mut H, s: Option<&str>) {
    s.unwrap_or("").hash(h);
}

fn host_eq(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl ProxyIdentity {
    /// An identity with these legs; `secret` makes branches unguessable
    /// (pick it at random at start).
    pub fn new(legs: Vec<Leg>, secret: u64) -> ProxyIdentity {
        ProxyIdentity {
            legs,
            aliases: Vec::new(),
            secret,
        }
    }

    /// Another name this proxy answers to in Via / Route (e.g. its host
    /// name or a NAT-mapped public address), with its port.
    pub fn add_alias(&mut self, host: &str, port: u16) {
        self.aliases.push((host.to_owned(), port));
    }

    /// The legs.
    pub fn legs(&self) -> &[Leg] {
        &self.legs
    }

    /// True when `host:port` names one of our legs.
    pub fn is_own(&self, host: &str, port: Option<u16>) -> bool {
        self.leg_of(host, port).is_some()
            || self
                .aliases
                .iter()
                .any(|(h, p)| host_eq(h, host) && port.unwrap_or(5060) == *p)
    }

    /// The leg `host:port` names, if any.
    pub fn leg_of(&self, host: &str, port: Option<u16>) -> Option<&Leg> {
        self.legs
            .iter()
            .find(|l| host_eq(&l.host, host) && port.unwrap_or_else(|| l.default_port()) == l.port)
    }

    fn is_own_uri(&self, uri: &str) -> bool {
        matches!(Uri::parse(uri), Some(Uri::Sip(s)) if s.user.is_none() && self.is_own(s.host, s.port))
    }

    /// Loop-detection hash of a received request (RFC 3261 §16.6 step 8).
    pub fn loop_hash(&self, req: &Message) -> u64 {
        let mut h = std::hash::DefaultHasher::new();
        self.secret.hash(&mut h);
        hash_str(&mut h, req.request_uri());
        hash_str(&mut h, req.to_tag());
        hash_str(&mut h, req.from_tag());
        hash_str(&mut h, req.call_id());
        req.cseq().map(|c| c.seq).hash(&mut h);
        for v in req.header_values("Route") {
            v.hash(&mut h);
        }
        for v in req.header_values("Proxy-Require") {
            v.hash(&mut h);
        }
        for v in req.header_values("Proxy-Authorization") {
            v.hash(&mut h);
        }
        h.finish()
    }

    /// The branch for forwarding `req` (as received) on fork `index`.
    /// Deterministic: a CANCEL or a retransmission of the same request gets
    /// the same branch as the INVITE; unique per received transaction.
    pub fn branch(&self, req: &Message, index: u32) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.secret.hash(&mut h);
        index.hash(&mut h);
        let method = match req.method() {
            Some(Method::Ack) | Some(Method::Cancel) => Some(&Method::Invite),
            m => m,
        };
        method.map(Method::as_str).hash(&mut h);
        match req.top_via() {
            Some(v) if v.has_rfc3261_branch() && req.method() != Some(&Method::Ack) => {
                v.branch().hash(&mut h);
                v.host.to_ascii_lowercase().hash(&mut h);
                v.port.hash(&mut h);
            }
            Some(v) if req.method() == Some(&Method::Ack) => {
                // An ACK for a 2xx is its own transaction: hash its branch.
                v.branch().hash(&mut h);
                v.host.to_ascii_lowercase().hash(&mut h);
                req.call_id().hash(&mut h);
                req.cseq().map(|c| c.seq).hash(&mut h);
            }
            _ => {
                // RFC 2543 peer: the transaction is identified by these fields.
                hash_str(&mut h, req.request_uri());
                hash_str(&mut h, req.from_tag());
                hash_str(&mut h, req.call_id());
                req.cseq().map(|c| c.seq).hash(&mut h);
                req.header_values("Via")
                    .next()
                    .and_then(|v| list_items(v).next())
                    .hash(&mut h);
            }
        }
        let tx = h.finish();
        // A CANCEL hashes like its INVITE (same tags, Call-ID, CSeq number,
        // Route), so it gets the INVITE's branch (RFC 3261 §16.10).
        let lh = if req.method() == Some(&Method::Ack) {
            0
        } else {
            self.loop_hash(req)
        };
        format!("z9hG4bKhl{tx:016x}.{lh:016x}")
    }

    /// RFC 3261 §16.3 step 4: a loop is a Via of ours whose loop hash
    /// equals the hash of the request as received now (a spiral differs).
    pub fn detect_loop(&self, req: &Message) -> Result<(), ProxyError> {
        let mut own = req
            .vias()
            .filter(|v| self.is_own(v.host, v.port))
            .peekable();
        if own.peek().is_none() {
            return Ok(());
        }
        let want = format!("{:016x}", self.loop_hash(req));
        for v in own {
            if let Some(b) = v.branch() {
                if b.starts_with("z9hG4bKhl") && b.rsplit('.').next() == Some(want.as_str()) {
                    return Err(ProxyError::LoopDetected);
                }
            }
        }
        Ok(())
    }

    /// Validation and preprocessing of a received request (RFC 3261 §16.3,
    /// §16.4, RFC 3581): stamps `received`/`rport` on the top Via from the
    /// source address, checks Max-Forwards (0 → 483, except OPTIONS, which
    /// the caller may answer itself), loops, Proxy-Require against
    /// `supported`, then removes the Route values naming this proxy (both
    /// entries of a two-sided Record-Route) and fixes a Request-URI written
    /// by a strict router. Returns the removed own Route values, top first.
    pub fn preprocess(
        &self,
        req: &mut Message,
        source: SocketAddr,
        supported: &[&str],
    ) -> Result<Vec<String>, ProxyError> {
        stamp_received(req, source)?;
        if req.max_forwards() == Some(0) {
            return Err(ProxyError::TooManyHops);
        }
        self.detect_loop(req)?;
        let unsupported: Vec<&str> = req
            .proxy_require()
            .filter(|t| !supported.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            return Err(ProxyError::BadExtension(unsupported.join(", ")));
        }
        // §16.4: a strict router put our URI in the Request-URI: restore the
        // real one from the last Route value.
        if req.request_uri().is_some_and(|u| self.is_own_uri(u)) {
            let last = req.routes().last().map(|r| r.uri.to_owned());
            if let Some(last) = last {
                req.set_request_uri(&last)?;
                remove_last_route(req);
            }
        }
        let mut popped = Vec::new();
        while let Some(top) = req.top_route() {
            if !self.is_own_uri(top.uri) {
                break;
            }
            match req.pop_route() {
                Some(v) => popped.push(v),
                None => break,
            }
        }
        Ok(popped)
    }

    /// Prepares a request to leave by `out` on fork `index`: decrements
    /// Max-Forwards (adds 70 when absent), pushes our Via with a unique
    /// branch computed from the request *as received* (call this before
    /// other edits, or pass the received copy as `received`), and returns the
    /// next hop (top Route if loose, with the strict-router rewrite
    /// otherwise, else the Request-URI).
    pub fn forward(
        &self,
        req: &mut Message,
        received: &Message,
        out: &Leg,
        index: u32,
    ) -> Result<NextHop, ProxyError> {
        let branch = self.branch(received, index);
        self.forward_with_branch(req, out, &branch)
    }

    /// Like [`ProxyIdentity::forward`] with a branch computed beforehand by
    /// [`ProxyIdentity::branch`] on the request as received (saves keeping
    /// a copy of the received request).
    pub fn forward_with_branch(
        &self,
        req: &mut Message,
        out: &Leg,
        branch: &str,
    ) -> Result<NextHop, ProxyError> {
        req.decrement_max_forwards().map_err(|e| match e {
            crate::error::EditError::TooManyHops => ProxyError::TooManyHops,
            other => ProxyError::Edit(other),
        })?;
        req.push_via(&out.via(branch))?;
        next_hop(req)
    }

    /// Adds this proxy to the Record-Route of a request going from leg
    /// `inbound` to leg `outbound`. With two different legs two values are
    /// added (outbound on top), so that in-dialog requests from either side
    /// reach the proxy on the interface facing that side.
    pub fn record_route(
        &self,
        req: &mut Message,
        inbound: &Leg,
        outbound: &Leg,
        params: &str,
    ) -> Result<(), ProxyError> {
        if inbound != outbound {
            req.prepend_record_route(&inbound.route_uri(params))?;
        }
        req.prepend_record_route(&outbound.route_uri(params))?;
        Ok(())
    }

    /// Adds a Path value (RFC 3327) naming `leg` to a REGISTER.
    pub fn add_path(&self, req: &mut Message, leg: &Leg, params: &str) -> Result<(), ProxyError> {
        if req.method() != Some(&Method::Register) {
            return Err(ProxyError::Edit(crate::error::EditError::WrongKind));
        }
        req.prepend_path(&leg.route_uri(params))?;
        Ok(())
    }

    /// Response processing (RFC 3261 §16.7 step 3, §18.1.2): checks that the
    /// top Via is ours, removes it, and returns where the response goes
    /// according to the next Via (never by guessing).
    pub fn route_response(&self, resp: &mut Message) -> Result<ResponseTarget, ProxyError> {
        let top = resp.top_via().ok_or(ProxyError::NotOurVia)?;
        if !self.is_own(top.host, top.port) {
            return Err(ProxyError::NotOurVia);
        }
        resp.pop_via();
        let next = resp.top_via().ok_or(ProxyError::ForUs)?;
        Ok(response_target(&next))
    }
}

/// Where a response goes according to this Via (RFC 3261 §18.2.2, RFC 3581).
pub fn response_target(via: &Via<'_>) -> ResponseTarget {
    let transport = Transport::from_token(via.transport);
    let default = if transport == Some(Transport::Tls) {
        5061
    } else {
        5060
    };
    let host = via
        .received()
        .map(|r| {
            if r.contains(':') && !r.starts_with('[') {
                format!("[{r}]")
            } else {
                r.to_owned()
            }
        })
        .unwrap_or_else(|| via.host.to_owned());
    let port = via.rport().flatten().or(via.port).unwrap_or(default);
    ResponseTarget {
        host,
        port,
        transport,
    }
}

/// Stamps `received` (when the source IP differs from the sent-by host, or
/// when `rport` was asked for) and fills `rport` (RFC 3261 §18.2.1, RFC 3581).
pub fn stamp_received(req: &mut Message, source: SocketAddr) -> Result<(), ProxyError> {
    let Some(via) = req.top_via() else {
        return Err(ProxyError::NotOurVia);
    };
    let src_ip = source.ip().to_string();
    let sent_by = via.host.trim_start_matches('[').trim_end_matches(']');
    let wants_rport = via.rport() == Some(None);
    let differs = !sent_by.eq_ignore_ascii_case(&src_ip);
    if !differs && !wants_rport {
        return Ok(());
    }
    let received = (differs || wants_rport).then_some(src_ip.as_str());
    req.set_top_via_received(received, wants_rport.then_some(source.port()))?;
    Ok(())
}

fn remove_last_route(req: &mut Message) {
    let all: Vec<String> = req
        .header_values("Route")
        .flat_map(list_items)
        .map(str::to_owned)
        .collect();
    if all.is_empty() {
        return;
    }
    req.remove_header("Route");
    for v in all.iter().take(all.len() - 1) {
        let _ = req.add_header("Route", v);
    }
}

/// RFC 3261 §16.6 steps 6–7: the next hop from the top Route (loose) or
/// the Request-URI. A top Route without `lr` (a strict router) gets the
/// Request-URI appended as last Route and becomes the Request-URI.
pub fn next_hop(req: &mut Message) -> Result<NextHop, ProxyError> {
    if let Some(top) = req.top_route() {
        let uri = top.uri.to_owned();
        let loose = matches!(Uri::parse(&uri), Some(Uri::Sip(s)) if s.is_loose());
        if !loose {
            let ruri = req.request_uri().ok_or(ProxyError::NoNextHop)?.to_owned();
            req.pop_route();
            req.add_header("Route", &format!("<{ruri}>"))?;
            req.set_request_uri(&uri)?;
            return hop_of(&uri);
        }
        return hop_of(&uri);
    }
    let ruri = req.request_uri().ok_or(ProxyError::NoNextHop)?.to_owned();
    hop_of(&ruri)
}

fn hop_of(uri: &str) -> Result<NextHop, ProxyError> {
    let Some(Uri::Sip(s)) = Uri::parse(uri) else {
        return Err(ProxyError::NoNextHop);
    };
    let maddr = s.params.get("maddr").flatten();
    let transport = s
        .params
        .get("transport")
        .flatten()
        .and_then(Transport::from_token)
        .or(s.secure.then_some(Transport::Tls));
    let host = match maddr {
        Some(m) => parse_hostport(m)
            .map(|(h, _)| h.to_owned())
            .ok_or(ProxyError::NoNextHop)?,
        None => s.host.to_owned(),
    };
    Ok(NextHop {
        host,
        port: s.port,
        transport,
    })
}

/// Best-response selection for a forked request (RFC 3261 §16.7).
#[derive(Debug, Default)]
pub struct ResponseContext {
    branches: usize,
    finished: usize,
    best: Option<Message>,
    got_2xx: bool,
    got_6xx: bool,
    /// WWW-/Proxy-Authenticate values of every 401/407 seen (§16.7 step 7).
    challenges: Vec<(&'static str, String)>,
}

/// What to do with a response offered to a [`ResponseContext`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Forward this response now (a provisional other than 100, or a 2xx).
    ForwardNow,
    /// Forward it now and CANCEL all other pending branches (a 6xx, RFC 3261 §16.7 step 5; or a 2xx).
    ForwardAndCancelOthers,
    /// Keep it; nothing to send yet.
    Hold,
    /// All branches are done: send this best final response.
    ForwardBest(Box<Message>),
    /// Drop it (100 Trying, or a final after a 2xx/6xx was already chosen other than 2xx).
    Drop,
}

impl ResponseContext {
    /// A context for `branches` client transactions.
    pub fn new(branches: usize) -> ResponseContext {
        ResponseContext {
            branches,
            ..Default::default()
        }
    }

    /// Adds a branch (serial forking / recursion).
    pub fn add_branch(&mut self) {
        self.branches += 1;
    }

    /// Offers a response received on one branch. `None` response = the
    /// branch timed out (treated as 408).
    pub fn offer(&mut self, resp: Option<&Message>) -> Selection {
        let code = resp.and_then(Message::status).unwrap_or(408);
        if code == 100 {
            return Selection::Drop;
        }
        if code < 200 {
            return if self.got_2xx || self.got_6xx {
                Selection::Drop
            } else {
                Selection::ForwardNow
            };
        }
        self.finished += 1;
        if (200..300).contains(&code) {
            // Every 2xx is forwarded (RFC 3261 §16.7 step 5).
            let first = !self.got_2xx;
            self.got_2xx = true;
            return if first {
                Selection::ForwardAndCancelOthers
            } else {
                Selection::ForwardNow
            };
        }
        if self.got_2xx {
            return Selection::Drop;
        }
        let better = match &self.best {
            None => true,
            Some(b) => rank(code) < rank(b.status().unwrap_or(500)),
        };
        if let Some(r) = resp {
            if code == 401 || code == 407 {
                for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
                    for v in r.header_values(name) {
                        if self.challenges.len() < 16 {
                            self.challenges.push((name, v.to_owned()));
                        }
                    }
                }
            }
            if better {
                self.best = Some(r.clone());
            }
        }
        if code >= 600 && !self.got_6xx {
            self.got_6xx = true;
            return Selection::ForwardAndCancelOthers;
        }
        if self.finished >= self.branches {
            if self.got_6xx {
                return Selection::Drop;
            }
            return match self.best.take() {
                Some(mut best) => {
                    // §16.7 step 7: a 401/407 carries every challenge received.
                    if matches!(best.status(), Some(401) | Some(407)) {
                        for (name, v) in &self.challenges {
                            if !best.header_values(name).any(|x| x == v) {
                                let _ = best.add_header(name, v);
                            }
                        }
                    }
                    // §16.7 step 6: a 503 is forwarded as 500.
                    if best.status() == Some(503) {
                        if let Ok(r) = rewrite_status(&best, 500, "Server Internal Error") {
                            best = r;
                        }
                    }
                    Selection::ForwardBest(Box::new(best))
                }
                None => Selection::Drop,
            };
        }
        Selection::Hold
    }

    /// True when every branch has a final response.
    pub fn is_complete(&self) -> bool {
        self.finished >= self.branches
    }
}

/// Lower is better: 6xx first, then the lowest class; within a class
/// 401/407 first (they carry the challenge), then the code.
fn rank(code: u16) -> u32 {
    let class = code / 100;
    let class_rank = if class == 6 { 0 } else { u32::from(class) };
    let auth = if code == 401 || code == 407 { 0 } else { 1 };
    class_rank * 10_000 + auth * 1000 + u32::from(code)
}

fn rewrite_status(
    resp: &Message,
    code: u16,
    reason: &str,
) -> Result<Message, crate::error::EditError> {
    let mut text = format!("SIP/2.0 {code} {reason}\r\n").into_bytes();
    let full = resp.to_bytes();
    let start = full
        .iter()
        .position(|&b| b == b'\n')
        .map_or(full.len(), |i| i + 1);
    text.extend_from_slice(full.get(start..).unwrap_or_default());
    Message::parse(&text).map_err(|_| crate::error::EditError::BadValue("response"))
}

/// The top Route value if it names `uri`'s host (helper for callers that
/// inspect own Route values).
pub fn route_host(value: &str) -> Option<(String, Option<u16>)> {
    let na = NameAddr::parse(trim_ws(value))?;
    match Uri::parse(na.uri)? {
        Uri::Sip(s) => Some((s.host.to_owned(), s.port)),
        Uri::Other { .. } => None,
    }
}
