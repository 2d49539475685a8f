//! The cloud (WAN side): a registrar with a location table that keeps Path,
//! a proxy that answers INVITEs with 100 Trying and forwards them to the
//! registered contact via the stored Path (record-routing itself), a
//! presence server for `dialog` (RFC 4235, from the calls it proxies) and
//! `message-summary` (a voicemail box per user) that sends NOTIFYs; answers
//! OPTIONS. It can be killed (silent: receives and sends nothing) and
//! restarted with an EMPTY location table and no subscriptions or dialogs,
//! as in the incident.

use std::collections::BTreeMap;

use holdline_core::Peer;
use holdline_sip::{Contacts, Message, Method};

use super::net::{udp, udp_opt, Rng, CLOUD, DOMAIN};
use super::ua::{branch_of, parse, record_route, response, uri_peer, Answer, Sent, Transactions};

const RR: &str = "<sip:127.0.3.1:5060;lr>";
const PRESENCE: &str = "sip:presence@127.0.3.1:5060";
const MAX_SUB_EXPIRES: u32 = 600;

/// One location entry.
#[derive(Debug, Clone)]
pub struct Loc {
    pub contact: String,
    pub path: Vec<String>,
    pub expires_at: u64,
    pub call_id: String,
    pub cseq: u32,
}

/// A REGISTER the cloud accepted (for the checker).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub aor: String,
    pub contact: String,
    pub call_id: String,
}

#[derive(Debug, Clone)]
struct CSub {
    call_id: String,
    phone_tag: String,
    tag: String,
    dialog_event: bool,
    target: String,
    watcher: String,
    route: Vec<String>,
    remote_target: String,
    cseq: u32,
    version: u64,
    expires_at: u64,
    /// A NOTIFY is out; the next waits for its answer (RFC 6665 §4.2.2:
    /// one NOTIFY at a time per dialog, the next carries the latest state).
    outstanding: bool,
    /// State snapshots waiting for the outstanding NOTIFY's answer, sent in
    /// order (every state change reaches the watcher, none overtakes another).
    pending: std::collections::VecDeque<String>,
}

#[derive(Debug, Clone)]
struct CInv {
    forwarded: Message,
    next: Peer,
    call_id: String,
    caller: String,
    callee: String,
    final_sent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Notify(String),
    Invite(String),
}

/// The cloud.
#[derive(Debug)]
pub struct Cloud {
    pub alive: bool,
    pub epoch: u32,
    /// Digest-challenge phones' REGISTERs (untrusted mode: the cloud
    /// authenticates every phone itself; trusted mode: it trusts holdline).
    pub challenge: bool,
    rng: Rng,
    n: u64,
    pub location: BTreeMap<String, Vec<Loc>>,
    subs: BTreeMap<String, CSub>,
    /// BLF: entity user → Call-ID → (state, initiator?).
    dialogs: BTreeMap<String, BTreeMap<String, (&'static str, bool)>>,
    invites: BTreeMap<String, CInv>,
    /// Voicemail: user → new messages (kept across restarts: it is on disk).
    pub mwi: BTreeMap<String, u32>,
    txs: Transactions<Purpose>,
    sent: Sent,
    pub out: Vec<(Peer, Vec<u8>)>,
    pub accepted: Vec<Accepted>,
    pub notifies: u64,
    /// Messages that reached the cloud and did not parse (an invariant).
    pub unparseable: Vec<String>,
}

fn user_of_uri(uri: &str) -> String {
    uri.trim_start_matches('<')
        .trim_start_matches("sip:")
        .split(['@', '>', ';'])
        .next()
        .unwrap_or("")
        .to_string()
}

impl Cloud {
    pub fn new(challenge: bool, rng: Rng) -> Cloud {
        Cloud {
            alive: true,
            epoch: 1,
            challenge,
            rng,
            n: 0,
            location: BTreeMap::new(),
            subs: BTreeMap::new(),
            dialogs: BTreeMap::new(),
            invites: BTreeMap::new(),
            mwi: BTreeMap::new(),
            txs: Transactions::new(),
            sent: Sent::new(),
            out: Vec::new(),
            accepted: Vec::new(),
            notifies: 0,
            unparseable: Vec::new(),
        }
    }

    /// Killed: silent from now on, everything in memory lost.
    pub fn kill(&mut self) {
        self.alive = false;
        self.txs.clear();
        self.sent.clear();
        self.invites.clear();
        self.out.clear();
    }

    /// Restarted with an empty location table, no subscriptions, no dialogs.
    pub fn restart(&mut self) {
        self.alive = true;
        self.epoch += 1;
        self.location.clear();
        self.subs.clear();
        self.dialogs.clear();
    }

    /// Whether `aor` has an unexpired binding to `contact` with a Path.
    pub fn has_binding(&self, now: u64, aor: &str, contact: &str) -> bool {
        self.location.get(aor).is_some_and(|l| {
            l.iter()
                .any(|x| x.contact == contact && x.expires_at > now && !x.path.is_empty())
        })
    }

    fn id(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    pub fn next_timer(&self) -> Option<u64> {
        if !self.alive {
            return None;
        }
        self.txs.next_timer()
    }

    pub fn on_timer(&mut self, now: u64) {
        if !self.alive {
            return;
        }
        let gone = self.txs.on_timer(now, &mut self.out);
        for p in gone {
            match p {
                Purpose::Invite(b) => {
                    self.invites.remove(&b);
                }
                Purpose::Notify(id) => self.notify_done(now, &id, 408),
            }
        }
        self.sent.expire(now);
        let live = |l: &Loc| l.expires_at > now;
        for l in self.location.values_mut() {
            l.retain(live);
        }
        self.location.retain(|_, l| !l.is_empty());
        self.subs.retain(|_, s| s.expires_at > now);
    }

    /// A voicemail arrives (or is listened to) for `user`.
    pub fn voicemail(&mut self, now: u64, user: &str) {
        if !self.alive {
            return;
        }
        let c = self.mwi.entry(user.to_string()).or_insert(0);
        *c = if *c > 0 && self.rng.chance(400) {
            0
        } else {
            *c + 1
        };
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| !s.dialog_event && s.target == user)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.notify(now, &id, false);
        }
    }

    fn send(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push((to, bytes));
    }

    fn answer(
        &mut self,
        now: u64,
        from: Peer,
        req: &Message,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        if req.method() == Some(&Method::Ack) {
            return;
        }
        let r = response(req, code, reason, extra);
        self.sent.record(now, req, &r);
        self.send(from, r);
    }

    pub fn on_packet(&mut self, now: u64, from: Peer, bytes: &[u8]) {
        if !self.alive {
            return;
        }
        let Some(m) = parse(bytes) else {
            self.unparseable
                .push(String::from_utf8_lossy(bytes).into_owned());
            return;
        };
        if m.is_request() {
            if m.method() != Some(&Method::Ack) && m.method() != Some(&Method::Cancel) {
                if let Some(r) = self.sent.replay(&m) {
                    self.send(from, r);
                    return;
                }
            }
            self.on_request(now, from, m);
        } else {
            self.on_response(now, m);
        }
    }

    fn on_request(&mut self, now: u64, from: Peer, mut m: Message) {
        let Some(method) = m.method().cloned() else {
            return;
        };
        // Our own Route entry first (loose routing).
        while m.top_route().is_some_and(|r| r.uri.contains("127.0.3.1")) {
            m.pop_route();
        }
        let ruri = m.request_uri().unwrap_or_default().to_string();
        let to_us = ruri == format!("sip:{DOMAIN}") || ruri.starts_with(PRESENCE);
        match method {
            Method::Options if m.top_route().is_none() && (to_us || !ruri.contains('@')) => {
                self.answer(now, from, &m, 200, "OK", &[])
            }
            Method::Register => self.register(now, from, &m),
            Method::Subscribe if m.to_tag().is_none() => self.subscribe(now, from, &m),
            Method::Subscribe if m.top_route().is_none() && to_us => {
                self.resubscribe(now, from, &m)
            }
            Method::Invite if m.to_tag().is_none() => self.invite(now, from, m),
            Method::Cancel => self.cancel(now, from, &m),
            Method::Ack if self.invites.contains_key(&branch_of(&m)) => {
                // Hop-by-hop ACK of a non-2xx final: on to the callee's leg
                // (same derived branch as the INVITE we forwarded).
                if let Some(inv) = self.invites.get(&branch_of(&m)).cloned() {
                    let mut a = m.clone();
                    let out_branch =
                        format!("z9hG4bK-c{}", branch_of(&m).trim_start_matches("z9hG4bK"));
                    let _ = a.push_via(&format!("SIP/2.0/UDP {CLOUD};branch={out_branch}"));
                    let _ = a.set_request_uri(inv.forwarded.request_uri().unwrap_or_default());
                    let routes: Vec<String> = inv
                        .forwarded
                        .header_values("Route")
                        .map(str::to_string)
                        .collect();
                    for r in routes.iter().rev() {
                        let _ = a.prepend_route(r);
                    }
                    self.send(inv.next, a.to_bytes());
                }
            }
            _ => self.relay(now, from, m, &method),
        }
    }

    // ------------------------------------------------------- registrar

    fn register(&mut self, now: u64, from: Peer, m: &Message) {
        let cid = m.call_id().unwrap_or_default().to_string();
        let holdline = cid.starts_with("hl-resync");
        if self.challenge && !holdline {
            let want = format!("nonce=\"n{}\"", self.epoch);
            let ok = m.header("Authorization").is_some_and(|a| a.contains(&want));
            if !ok {
                let v = format!("Digest realm=\"{DOMAIN}\", nonce=\"n{}\"", self.epoch);
                self.answer(
                    now,
                    from,
                    m,
                    401,
                    "Unauthorized",
                    &[("WWW-Authenticate", v)],
                );
                return;
            }
        }
        let Some(to) = m.to() else {
            self.answer(now, from, m, 400, "Bad Request", &[]);
            return;
        };
        let aor = to.uri.to_string();
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
        let path: Vec<String> = m.paths().iter().map(|p| format!("<{}>", p.uri)).collect();
        let default_exp = m.expires().unwrap_or(3600);
        let list = self.location.entry(aor.clone()).or_default();
        if let Some(Contacts::List(l)) = m.contacts() {
            for c in l {
                let exp = c.expires().unwrap_or(default_exp);
                let contact = c.uri.to_string();
                if let Some(old) = list.iter().find(|x| x.contact == contact) {
                    if old.call_id == cid && old.cseq >= cseq {
                        let r = response(m, 500, "Out of Order", &[]);
                        self.sent.record(now, m, &r);
                        self.out.push((from, r));
                        return;
                    }
                }
                list.retain(|x| x.contact != contact);
                if exp > 0 {
                    list.push(Loc {
                        contact: contact.clone(),
                        path: path.clone(),
                        expires_at: now + u64::from(exp) * 1000,
                        call_id: cid.clone(),
                        cseq,
                    });
                    self.accepted.push(Accepted {
                        aor: aor.clone(),
                        contact,
                        call_id: cid.clone(),
                    });
                }
            }
        }
        let mut extra = Vec::new();
        if let Some(l) = self.location.get(&aor) {
            for x in l {
                let left = x.expires_at.saturating_sub(now) / 1000;
                extra.push(("Contact", format!("<{}>;expires={left}", x.contact)));
            }
        }
        self.answer(now, from, m, 200, "OK", &extra);
    }

    // ----------------------------------------------------------- proxy

    fn invite(&mut self, now: u64, from: Peer, mut m: Message) {
        let callee = user_of_uri(m.request_uri().unwrap_or_default());
        let caller = m.from().map(|f| user_of_uri(f.uri)).unwrap_or_default();
        let aor = format!("sip:{callee}@{DOMAIN}");
        let loc = self
            .location
            .get(&aor)
            .and_then(|l| {
                l.iter()
                    .filter(|x| x.expires_at > now)
                    .max_by_key(|x| x.expires_at)
            })
            .cloned();
        let Some(loc) = loc else {
            self.answer(now, from, &m, 404, "Not Found", &[]);
            return;
        };
        let Some(next) = loc.path.first().and_then(|p| uri_peer(p)) else {
            self.answer(now, from, &m, 480, "Temporarily Unavailable", &[]);
            return;
        };
        self.answer(now, from, &m, 100, "Trying", &[]);
        let in_branch = branch_of(&m);
        let out_branch = format!("z9hG4bK-c{}", in_branch.trim_start_matches("z9hG4bK"));
        let _ = m.push_via(&format!("SIP/2.0/UDP {CLOUD};branch={out_branch}"));
        let _ = m.decrement_max_forwards();
        let _ = m.prepend_record_route(RR);
        let _ = m.set_request_uri(&loc.contact);
        for p in loc.path.iter().rev() {
            let _ = m.prepend_route(p);
        }
        let call_id = m.call_id().unwrap_or_default().to_string();
        self.invites.insert(
            in_branch.clone(),
            CInv {
                forwarded: m.clone(),
                next,
                call_id: call_id.clone(),
                caller: caller.clone(),
                callee: callee.clone(),
                final_sent: false,
            },
        );
        self.blf(now, &caller, &call_id, "trying", true);
        self.blf(now, &callee, &call_id, "trying", false);
        self.txs.send(
            now,
            &mut self.out,
            next,
            m.to_bytes(),
            true,
            Purpose::Invite(in_branch),
        );
    }

    fn cancel(&mut self, now: u64, from: Peer, m: &Message) {
        let b = branch_of(m);
        let Some(inv) = self.invites.get(&b).cloned() else {
            self.answer(now, from, m, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        };
        self.answer(now, from, m, 200, "OK", &[]);
        if !inv.final_sent {
            if let Ok(c) = Message::cancel_for(&inv.forwarded) {
                self.send(inv.next, c.to_bytes());
            }
        }
    }

    /// In-dialog requests (and anything else): loose routing.
    fn relay(&mut self, now: u64, from: Peer, mut m: Message, method: &Method) {
        let next = match m.top_route() {
            Some(r) => uri_peer(&format!("<{}>", r.uri)),
            None => {
                let ruri = m.request_uri().unwrap_or_default().to_string();
                let by_contact = self
                    .location
                    .values()
                    .flatten()
                    .find(|l| l.contact == ruri)
                    .and_then(|l| l.path.first().and_then(|p| uri_peer(p)));
                by_contact
            }
        };
        let Some(next) = next else {
            self.answer(now, from, &m, 404, "Not Found", &[]);
            return;
        };
        if *method == Method::Bye {
            let cid = m.call_id().unwrap_or_default().to_string();
            let users: Vec<String> = self
                .dialogs
                .iter()
                .filter(|(_, d)| d.contains_key(&cid))
                .map(|(u, _)| u.clone())
                .collect();
            for u in users {
                let init = self
                    .dialogs
                    .get(&u)
                    .and_then(|d| d.get(&cid))
                    .is_some_and(|x| x.1);
                self.blf(now, &u, &cid, "terminated", init);
            }
        }
        let b = branch_of(&m);
        let out_branch = format!("z9hG4bK-c{}", b.trim_start_matches("z9hG4bK"));
        let _ = m.push_via(&format!("SIP/2.0/UDP {CLOUD};branch={out_branch}"));
        if m.decrement_max_forwards().is_err() {
            return;
        }
        self.send(next, m.to_bytes());
    }

    fn on_response(&mut self, now: u64, mut m: Message) {
        let b = branch_of(&m);
        let status = m.status().unwrap_or(0);
        if let Answer::Final(p) | Answer::Provisional(p) = self.txs.on_response(&b, status, now) {
            if let Purpose::Notify(id) = p {
                if status >= 200 {
                    self.notify_done(now, &id, status);
                }
                return;
            }
        }
        if !b.starts_with("z9hG4bK-c") {
            return;
        }
        let _ = m.pop_via();
        let Some(up) = m.top_via().and_then(|v| {
            let host = v.received().unwrap_or(v.host);
            let port = match v.rport() {
                Some(Some(p)) => p,
                _ => v.port.unwrap_or(5060),
            };
            udp_opt(&format!("{host}:{port}"))
        }) else {
            return;
        };
        if m.cseq().is_some_and(|c| c.method == Method::Invite) {
            let in_b = branch_of(&m);
            if let Some(inv) = self.invites.get_mut(&in_b) {
                if status >= 200 {
                    inv.final_sent = true;
                }
                let (cid, caller, callee) =
                    (inv.call_id.clone(), inv.caller.clone(), inv.callee.clone());
                let state = match status {
                    100 => None,
                    101..=199 => Some("early"),
                    200..=299 => Some("confirmed"),
                    _ => Some("terminated"),
                };
                if let Some(s) = state {
                    self.blf(now, &caller, &cid, s, true);
                    self.blf(now, &callee, &cid, s, false);
                }
                if status >= 200 {
                    // Stateful: a retransmitted INVITE gets this final again.
                    self.sent.record_raw(now, &in_b, "INVITE", &m.to_bytes());
                }
            }
            if status == 100 {
                return;
            }
        }
        self.send(up, m.to_bytes());
    }

    // -------------------------------------------------------- presence

    fn subscribe(&mut self, now: u64, from: Peer, m: &Message) {
        let event = m.event().map(|e| e.package.to_string()).unwrap_or_default();
        let dialog_event = event.eq_ignore_ascii_case("dialog");
        if !dialog_event && !event.eq_ignore_ascii_case("message-summary") {
            self.answer(now, from, m, 489, "Bad Event", &[]);
            return;
        }
        let target = user_of_uri(m.request_uri().unwrap_or_default());
        let exp = m.expires().unwrap_or(3600).min(MAX_SUB_EXPIRES);
        let tag = m.local_tag();
        let rr = record_route(m);
        let mut extra: Vec<(&str, String)> =
            rr.iter().cloned().map(|r| ("Record-Route", r)).collect();
        extra.push(("Contact", format!("<{PRESENCE}>")));
        extra.push(("Expires", exp.to_string()));
        self.answer(now, from, m, 200, "OK", &extra);
        if exp == 0 {
            return;
        }
        let (Some(cid), Some(ft)) = (m.call_id(), m.from_tag()) else {
            return;
        };
        let id = format!("{cid};{ft}");
        let remote_target = match m.contacts() {
            Some(Contacts::List(l)) => l.first().map(|c| c.uri.to_string()).unwrap_or_default(),
            _ => String::new(),
        };
        let s = CSub {
            call_id: cid.to_string(),
            phone_tag: ft.to_string(),
            tag,
            dialog_event,
            target,
            watcher: m.from().map(|f| f.uri.to_string()).unwrap_or_default(),
            route: rr,
            remote_target,
            cseq: self.rng.range(1, 50) as u32,
            version: 0,
            expires_at: now + u64::from(exp) * 1000,
            outstanding: false,
            pending: std::collections::VecDeque::new(),
        };
        self.subs.insert(id.clone(), s);
        self.notify(now, &id, false);
    }

    fn resubscribe(&mut self, now: u64, from: Peer, m: &Message) {
        let (Some(cid), Some(ft)) = (m.call_id(), m.from_tag()) else {
            return;
        };
        let id = format!("{cid};{ft}");
        if !self.subs.contains_key(&id) {
            self.answer(now, from, m, 481, "Subscription Does Not Exist", &[]);
            return;
        }
        let exp = m.expires().unwrap_or(3600).min(MAX_SUB_EXPIRES);
        self.answer(
            now,
            from,
            m,
            200,
            "OK",
            &[
                ("Expires", exp.to_string()),
                ("Contact", format!("<{PRESENCE}>")),
            ],
        );
        if let Some(s) = self.subs.get_mut(&id) {
            s.expires_at = now + u64::from(exp) * 1000;
        }
        self.notify(now, &id, exp == 0);
        if exp == 0 {
            self.subs.remove(&id);
        }
    }

    fn blf(&mut self, now: u64, user: &str, call_id: &str, state: &'static str, initiator: bool) {
        let d = self.dialogs.entry(user.to_string()).or_default();
        if d.get(call_id)
            .is_some_and(|(s, _)| *s == state || *s == "terminated")
        {
            return;
        }
        d.insert(call_id.to_string(), (state, initiator));
        let ids: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.dialog_event && s.target == user)
            .map(|(k, _)| k.clone())
            .collect();
        for id in ids {
            self.notify(now, &id, false);
        }
        // Terminated dialogs are reported once, then forgotten.
        if let Some(d) = self.dialogs.get_mut(user) {
            d.retain(|_, (s, _)| *s != "terminated");
        }
    }

    fn notify_done(&mut self, now: u64, id: &str, status: u16) {
        if status == 481 {
            self.subs.remove(id);
            return;
        }
        let next = match self.subs.get_mut(id) {
            Some(s) => {
                s.outstanding = false;
                s.pending.pop_front()
            }
            None => None,
        };
        if let Some(snap) = next {
            self.send_notify(now, id, snap, false);
        }
    }

    /// The body of the state now (dialog-info without its version line).
    fn snapshot(&self, s: &CSub) -> String {
        if s.dialog_event {
            let mut body = String::new();
            if let Some(d) = self.dialogs.get(&s.target) {
                for (cid, (st, init)) in d {
                    let dir = if *init { "initiator" } else { "recipient" };
                    body.push_str(&format!(
                        "<dialog id=\"{cid}\" call-id=\"{cid}\" direction=\"{dir}\"><state>{st}</state></dialog>\n"
                    ));
                }
            }
            body
        } else {
            let n = self.mwi.get(&s.target).copied().unwrap_or(0);
            let w = if n > 0 { "yes" } else { "no" };
            format!(
                "Messages-Waiting: {w}\r\nMessage-Account: sip:{}@{DOMAIN}\r\nVoice-Message: {n}/0\r\n",
                s.target
            )
        }
    }

    fn notify(&mut self, now: u64, id: &str, terminated: bool) {
        let Some(s) = self.subs.get(id) else {
            return;
        };
        let snap = self.snapshot(s);
        let Some(s) = self.subs.get_mut(id) else {
            return;
        };
        if s.outstanding && !terminated {
            s.pending.push_back(snap);
            return;
        }
        self.send_notify(now, id, snap, terminated);
    }

    fn send_notify(&mut self, now: u64, id: &str, snap: String, terminated: bool) {
        let b = format!("z9hG4bK-cn{}", self.id());
        let Some(s) = self.subs.get_mut(id) else {
            return;
        };
        s.outstanding = true;
        s.cseq += 1;
        let (ctype, body) = if s.dialog_event {
            let v = s.version;
            s.version += 1;
            let body = format!(
                "<?xml version=\"1.0\"?>\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"{v}\" state=\"full\" entity=\"sip:{}@{DOMAIN}\">\n{snap}</dialog-info>\n",
                s.target
            );
            ("application/dialog-info+xml", body)
        } else {
            ("application/simple-message-summary", snap)
        };
        let state = if terminated {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={}", s.expires_at.saturating_sub(now) / 1000)
        };
        let routes: String = s.route.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let raw = format!(
            "NOTIFY {rt} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {CLOUD};branch={b}\r\n\
             Max-Forwards: 70\r\n\
             {routes}From: <sip:{t}@{DOMAIN}>;tag={tag}\r\n\
             To: <{w}>;tag={pt}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cs} NOTIFY\r\n\
             Contact: <{PRESENCE}>\r\n\
             Event: {ev}\r\n\
             Subscription-State: {state}\r\n\
             Content-Type: {ctype}\r\n\
             Content-Length: {len}\r\n\r\n{body}",
            rt = s.remote_target,
            t = s.target,
            tag = s.tag,
            w = s.watcher,
            pt = s.phone_tag,
            cid = s.call_id,
            cs = s.cseq,
            ev = if s.dialog_event {
                "dialog"
            } else {
                "message-summary"
            },
            len = body.len(),
        );
        let next = s
            .route
            .first()
            .and_then(|r| uri_peer(r))
            .unwrap_or_else(|| udp("127.0.2.1:5060"));
        self.notifies += 1;
        self.txs.send(
            now,
            &mut self.out,
            next,
            raw.into_bytes(),
            false,
            Purpose::Notify(id.to_string()),
        );
    }
}
