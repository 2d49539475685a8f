//! A site phone: registers (refreshes keep the Call-ID and raise the CSeq),
//! watches one colleague's line (BLF, `dialog`) and its own mailbox (MWI,
//! `message-summary`), calls colleagues, answers calls and OPTIONS, and
//! sometimes restarts (new Call-ID, everything subscribed again) or dies.
//!
//! It behaves like a phone where that matters for the invariants: a NOTIFY
//! whose CSeq goes backwards is dropped (500), a dialog-info whose version
//! does not rise is ignored; both are reported as observations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use holdline_core::Peer;
use holdline_sip::{Contacts, Message, Method};

use super::invariants::Obs;
use super::net::{udp, Rng, DOMAIN, EDGE_LAN};
use super::ua::{branch_of, parse, record_route, response, Answer, Sent, Transactions, T1, T2};

/// Registration expiry the phones ask for (s).
pub const REG_EXPIRES: u32 = 120;
/// Subscription expiry the phones ask for (s).
pub const SUB_EXPIRES: u32 = 600;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    Register,
    Subscribe(usize),
    Invite(String),
    Bye(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pkg {
    Dialog,
    Mwi,
}

/// One subscription of the phone (dialog or message-summary).
#[derive(Debug)]
struct Sub {
    pkg: Pkg,
    target: String,
    /// Dialog, once a SUBSCRIBE went out.
    call_id: String,
    local_tag: String,
    remote_tag: Option<String>,
    route: Vec<String>,
    remote_target: Option<String>,
    cseq: u32,
    last_notify_cseq: Option<u32>,
    last_version: Option<u64>,
    /// When to send the next SUBSCRIBE (initial or refresh); `None` while one is out.
    next: Option<u64>,
    live: bool,
    record: Option<usize>,
    present: BTreeSet<String>,
}

/// One watch (BLF) dialog as the phone lived it, for the BLF invariant.
#[derive(Debug, Clone)]
pub struct Watch {
    pub watcher: usize,
    pub target: String,
    pub from: u64,
    pub to: Option<u64>,
    /// When holdline started serving this dialog (took it over or served
    /// it from the start), if it did.
    pub holdline_from: Option<u64>,
    /// When a NOTIFY of this dialog arrived again (its answer was lost, so
    /// the notifier's transaction was held up).
    pub retransmitted: Vec<u64>,
    /// Call-ID → (confirmed seen, terminated seen).
    pub seen: BTreeMap<String, (bool, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Callee,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallPhase {
    Setup,
    Confirmed,
    Ending,
}

#[derive(Debug)]
struct Call {
    role: Role,
    peer_user: String,
    local_tag: String,
    remote_tag: Option<String>,
    route: Vec<String>,
    remote_target: String,
    phase: CallPhase,
    invite: Option<Message>,
    invite_branch: String,
    cseq: u32,
    hangup_at: Option<u64>,
    /// Callee: when to answer.
    answer_at: Option<u64>,
    /// Callee: a final response repeated until the ACK (bytes, next, interval, give-up).
    final_retx: Option<(Vec<u8>, u64, u64, u64)>,
    ack: Option<Vec<u8>>,
    /// Forget the call at this time (after it ended).
    forget_at: Option<u64>,
}

/// A phone.
#[derive(Debug)]
pub struct Phone {
    pub idx: usize,
    pub user: String,
    pub addr: SocketAddr,
    pub on: bool,
    pub dead: bool,
    boot_at: Option<u64>,
    pub gen: u32,
    rng: Rng,
    n: u64,
    reg_cseq: u32,
    pub registered_until: u64,
    reg_next: Option<u64>,
    nonce: Option<String>,
    challenges: u32,
    subs: Vec<Sub>,
    calls: BTreeMap<String, Call>,
    next_call: u64,
    /// Mean pause between calls (ms).
    call_every: u64,
    others: Vec<String>,
    txs: Transactions<Purpose>,
    sent: Sent,
    pub out: Vec<(Peer, Vec<u8>)>,
    pub obs: Vec<Obs>,
    pub watches: Vec<Watch>,
    /// When the phone last sent anything.
    pub last_sent: u64,
}

fn user_of(i: usize) -> String {
    format!("{}", 201 + i)
}

pub fn index_of(user: &str) -> Option<usize> {
    let n: usize = user.parse().ok()?;
    n.checked_sub(201)
}

impl Phone {
    pub fn new(
        idx: usize,
        addr: SocketAddr,
        watch: usize,
        others: Vec<usize>,
        mut rng: Rng,
    ) -> Phone {
        let call_every = rng.range(10_000, 30_000);
        let user = user_of(idx);
        let subs = vec![
            Sub::new(Pkg::Dialog, user_of(watch)),
            Sub::new(Pkg::Mwi, user.clone()),
        ];
        Phone {
            idx,
            user,
            addr,
            on: false,
            dead: false,
            boot_at: None,
            gen: 0,
            rng,
            n: 0,
            reg_cseq: 0,
            registered_until: 0,
            reg_next: None,
            nonce: None,
            challenges: 0,
            subs,
            calls: BTreeMap::new(),
            next_call: u64::MAX,
            call_every,
            others: others.into_iter().map(user_of).collect(),
            txs: Transactions::new(),
            sent: Sent::new(),
            out: Vec::new(),
            obs: Vec::new(),
            watches: Vec::new(),
            last_sent: 0,
        }
    }

    fn contact(&self) -> String {
        format!("<sip:{}@{}>", self.user, self.addr)
    }

    fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.user)
    }

    fn next_id(&mut self) -> u64 {
        self.n += 1;
        self.n
    }

    fn branch(&mut self) -> String {
        let n = self.next_id();
        format!("z9hG4bK-p{}g{}n{n}", self.idx, self.gen)
    }

    /// Registered (per the phone's last 2xx) for at least `margin` more ms.
    pub fn registered(&self, now: u64, margin: u64) -> bool {
        self.on && self.registered_until > now + margin
    }

    /// Whether the phone currently has a call (any phase) with this Call-ID.
    pub fn in_call(&self, call_id: &str) -> bool {
        self.calls
            .get(call_id)
            .is_some_and(|c| c.phase != CallPhase::Ending || c.forget_at.is_none())
    }

    // ------------------------------------------------------------ power

    /// Powered on at `now` (first boot or after a restart).
    pub fn boot(&mut self, now: u64) {
        self.on = true;
        self.boot_at = None;
        self.gen += 1;
        self.reg_cseq = 0;
        self.nonce = None;
        self.registered_until = 0;
        self.reg_next = Some(now);
        for i in 0..self.subs.len() {
            let d = self.rng.range(500, 3_000);
            self.subs[i].reset(Some(now + d));
        }
        self.next_call = now + self.rng.range(3_000, self.call_every * 2);
    }

    /// Switched off (restart: back after `down_ms`; death: `None`).
    pub fn power_off(&mut self, now: u64, down_ms: Option<u64>) {
        self.calls.clear();
        for i in 0..self.subs.len() {
            self.end_watch(i, now);
            self.subs[i].reset(None);
        }
        self.txs.clear();
        self.sent.clear();
        self.on = false;
        self.registered_until = 0;
        self.reg_next = None;
        self.next_call = u64::MAX;
        match down_ms {
            Some(d) => self.boot_at = Some(now + d),
            None => {
                self.dead = true;
                self.boot_at = None;
            }
        }
    }

    fn send(&mut self, now: u64, bytes: Vec<u8>) {
        self.last_sent = now;
        self.out.push((udp(EDGE_LAN), bytes));
    }

    fn send_tx(&mut self, now: u64, bytes: Vec<u8>, invite: bool, p: Purpose) {
        self.last_sent = now;
        let to = udp(EDGE_LAN);
        self.txs.send(now, &mut self.out, to, bytes, invite, p);
    }

    // ----------------------------------------------------------- timers

    pub fn next_timer(&self) -> Option<u64> {
        if !self.on {
            return self.boot_at;
        }
        let mut t = [self.reg_next, self.txs.next_timer(), Some(self.next_call)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
        for s in &self.subs {
            if let Some(n) = s.next {
                t = t.min(n);
            }
        }
        for c in self.calls.values() {
            for x in [
                c.hangup_at,
                c.answer_at,
                c.forget_at,
                c.final_retx.as_ref().map(|f| f.1),
            ]
            .into_iter()
            .flatten()
            {
                t = t.min(x);
            }
        }
        (t != u64::MAX).then_some(t)
    }

    pub fn on_timer(&mut self, now: u64) {
        if !self.on {
            if self.boot_at.is_some_and(|b| b <= now) {
                self.boot(now);
            }
            return;
        }
        let mut out = Vec::new();
        let gone = self.txs.on_timer(now, &mut out);
        if !out.is_empty() {
            self.last_sent = now;
        }
        self.out.extend(out);
        for p in gone {
            self.on_failure(now, p, 408);
        }
        if self.reg_next.is_some_and(|t| t <= now) {
            self.reg_next = None;
            self.send_register(now);
        }
        for i in 0..self.subs.len() {
            if self.subs[i].next.is_some_and(|t| t <= now) {
                self.subs[i].next = None;
                self.send_subscribe(now, i);
            }
        }
        if self.next_call <= now {
            self.next_call = now + self.rng.range(self.call_every / 2, self.call_every * 3 / 2);
            self.place_call(now);
        }
        let ids: Vec<String> = self.calls.keys().cloned().collect();
        for cid in ids {
            self.call_timers(now, &cid);
        }
        self.sent.expire(now);
    }

    // ----------------------------------------------------- registration

    fn send_register(&mut self, now: u64) {
        self.reg_cseq += 1;
        let b = self.branch();
        let auth = match &self.nonce {
            Some(n) => format!(
                "Authorization: Digest username=\"{u}\", realm=\"{DOMAIN}\", nonce=\"{n}\", uri=\"sip:{DOMAIN}\", response=\"ok\"\r\n",
                u = self.user
            ),
            None => String::new(),
        };
        let raw = format!(
            "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag=r{i}g{g}\r\n\
             To: <{aor}>\r\n\
             Call-ID: reg-{i}-{g}@{ip}\r\n\
             CSeq: {c} REGISTER\r\n\
             Contact: {contact}\r\n\
             {auth}Expires: {REG_EXPIRES}\r\n\
             Content-Length: 0\r\n\r\n",
            a = self.addr,
            aor = self.aor(),
            i = self.idx,
            g = self.gen,
            ip = self.addr.ip(),
            c = self.reg_cseq,
            contact = self.contact(),
        );
        self.send_tx(now, raw.into_bytes(), false, Purpose::Register);
    }

    fn on_register_answer(&mut self, now: u64, m: &Message, status: u16) {
        if (200..300).contains(&status) {
            self.challenges = 0;
            let mine = format!("sip:{}@{}", self.user, self.addr);
            let mut exp = None;
            if let Some(Contacts::List(l)) = m.contacts() {
                for c in l {
                    if c.uri == mine {
                        exp = c.expires().or(m.expires());
                    }
                }
            }
            match exp {
                Some(e) if e > 0 => {
                    self.registered_until = now + u64::from(e) * 1000;
                    self.reg_next = Some(now + (u64::from(e) * 1000 / 2).max(1_000));
                }
                _ => {
                    self.registered_until = 0;
                    self.reg_next = Some(now + 5_000);
                }
            }
            return;
        }
        if (status == 401 || status == 407) && self.challenges < 3 {
            self.challenges += 1;
            let nonce = m
                .header("WWW-Authenticate")
                .and_then(|v| v.split("nonce=\"").nth(1))
                .and_then(|v| v.split('"').next())
                .map(str::to_string);
            self.nonce = nonce;
            self.send_register(now);
            return;
        }
        self.challenges = 0;
        let d = self.rng.range(3_000, 8_000);
        self.reg_next = Some(now + d);
    }

    // ----------------------------------------------------- subscriptions

    fn send_subscribe(&mut self, now: u64, i: usize) {
        let b = self.branch();
        let id = self.next_id();
        let (idx, gen, addr, aor, contact) =
            (self.idx, self.gen, self.addr, self.aor(), self.contact());
        let s = &mut self.subs[i];
        if s.call_id.is_empty() {
            s.call_id = format!("sub-{idx}-{gen}-{id}@{}", addr.ip());
            s.local_tag = format!("s{idx}g{gen}n{id}");
            s.cseq = 0;
        }
        s.cseq += 1;
        let (event, accept) = match s.pkg {
            Pkg::Dialog => ("dialog", "application/dialog-info+xml"),
            Pkg::Mwi => ("message-summary", "application/simple-message-summary"),
        };
        let target_aor = format!("sip:{}@{DOMAIN}", s.target);
        let (ruri, to, routes) = match (&s.remote_tag, &s.remote_target) {
            (Some(rt), Some(tgt)) => (
                tgt.clone(),
                format!("<{target_aor}>;tag={rt}"),
                s.route
                    .iter()
                    .map(|r| format!("Route: {r}\r\n"))
                    .collect::<String>(),
            ),
            _ => (target_aor.clone(), format!("<{target_aor}>"), String::new()),
        };
        let raw = format!(
            "SUBSCRIBE {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             {routes}From: <{aor}>;tag={lt}\r\n\
             To: {to}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {c} SUBSCRIBE\r\n\
             Contact: {contact}\r\n\
             Event: {event}\r\n\
             Accept: {accept}\r\n\
             Expires: {SUB_EXPIRES}\r\n\
             Content-Length: 0\r\n\r\n",
            lt = s.local_tag,
            cid = s.call_id,
            c = s.cseq,
        );
        self.send_tx(now, raw.into_bytes(), false, Purpose::Subscribe(i));
    }

    fn on_subscribe_answer(&mut self, now: u64, i: usize, m: Option<&Message>, status: u16) {
        if (200..300).contains(&status) {
            let Some(m) = m else { return };
            let s = &mut self.subs[i];
            if s.remote_tag.is_none() {
                s.remote_tag = m.to_tag().map(str::to_string);
                let mut rr = record_route(m);
                rr.reverse();
                s.route = rr;
                s.remote_target = contact_uri(m);
            }
            let granted = u64::from(m.expires().unwrap_or(SUB_EXPIRES));
            if granted == 0 {
                self.end_sub(now, i, 1_000);
                return;
            }
            s.next = Some(now + (granted * 1000 / 2).max(1_000));
            return;
        }
        // Refused or timed out: this dialog is over, a new one later.
        let d = self.rng.range(2_000, 6_000);
        self.end_sub(now, i, d);
    }

    fn end_sub(&mut self, now: u64, i: usize, retry_in: u64) {
        self.end_watch(i, now);
        self.subs[i].reset(Some(now + retry_in));
    }

    fn end_watch(&mut self, i: usize, now: u64) {
        if let Some(r) = self.subs[i].record.take() {
            if let Some(w) = self.watches.get_mut(r) {
                w.to = Some(now);
            }
        }
    }

    fn on_notify(&mut self, now: u64, m: &Message) {
        let (Some(cid), Some(tt)) = (m.call_id(), m.to_tag()) else {
            self.answer(now, m, 400, "Bad Request", &[]);
            return;
        };
        let Some(i) = self
            .subs
            .iter()
            .position(|s| s.call_id == cid && s.local_tag == tt)
        else {
            self.answer(now, m, 481, "Subscription Does Not Exist", &[]);
            return;
        };
        let cseq = m.cseq().map(|c| c.seq).unwrap_or(0);
        if let Some(last) = self.subs[i].last_notify_cseq {
            if cseq < last {
                self.obs.push(Obs::NotifyCseqBackwards {
                    phone: self.idx,
                    call_id: cid.to_string(),
                    last,
                    got: cseq,
                });
                self.answer(now, m, 500, "CSeq Out of Order", &[]);
                return;
            }
            if cseq == last {
                // A new transaction with the same CSeq is not a retransmission.
                self.obs.push(Obs::NotifyCseqBackwards {
                    phone: self.idx,
                    call_id: cid.to_string(),
                    last,
                    got: cseq,
                });
                self.answer(now, m, 500, "CSeq Out of Order", &[]);
                return;
            }
        }
        self.subs[i].last_notify_cseq = Some(cseq);
        {
            let s = &mut self.subs[i];
            if s.remote_tag.is_none() {
                s.remote_tag = m.from_tag().map(str::to_string);
                s.route = record_route(m);
                s.remote_target = contact_uri(m);
            }
        }
        let body = String::from_utf8_lossy(m.body()).into_owned();
        let terminated = m
            .subscription_state()
            .is_some_and(|st| st.state.eq_ignore_ascii_case("terminated"));
        let reason = m
            .subscription_state()
            .and_then(|st| st.reason().map(str::to_string));
        // Built by holdline (one Via) rather than relayed from the cloud.
        let by_holdline = m.via_count() == 1;
        if self.subs[i].pkg == Pkg::Dialog && !body.is_empty() {
            self.on_dialog_info(now, i, cid, &body);
        }
        if self.subs[i].pkg == Pkg::Mwi && !body.is_empty() && !body.contains("Messages-Waiting:") {
            self.obs.push(Obs::BadMwi {
                phone: self.idx,
                body: body.clone(),
            });
        }
        self.answer(now, m, 200, "OK", &[]);
        if terminated {
            let d = if reason.as_deref() == Some("deactivated") {
                self.rng.range(0, 500)
            } else {
                self.rng.range(1_000, 3_000)
            };
            // A refresh in flight for this dialog is moot now.
            self.end_sub(now, i, d);
        } else if self.subs[i].record.is_none() {
            let target = self.subs[i].target.clone();
            if self.subs[i].pkg == Pkg::Dialog {
                self.watches.push(Watch {
                    watcher: self.idx,
                    target,
                    from: now,
                    to: None,
                    holdline_from: None,
                    retransmitted: Vec::new(),
                    seen: BTreeMap::new(),
                });
                self.subs[i].record = Some(self.watches.len() - 1);
            }
            self.subs[i].live = true;
        }
        if by_holdline && !terminated {
            if let Some(w) = self.subs[i].record.and_then(|r| self.watches.get_mut(r)) {
                w.holdline_from.get_or_insert(now);
            }
        }
    }

    fn on_dialog_info(&mut self, now: u64, i: usize, cid: &str, body: &str) {
        let _ = now;
        let head = body.split("<dialog-info").nth(1).unwrap_or("");
        let head = head.split('>').next().unwrap_or("");
        let Some(version) = attr(head, "version").and_then(|v| v.parse::<u64>().ok()) else {
            self.obs.push(Obs::BadDialogInfo {
                phone: self.idx,
                body: body.to_string(),
            });
            return;
        };
        let s = &mut self.subs[i];
        if let Some(last) = s.last_version {
            if version <= last {
                self.obs.push(Obs::VersionBackwards {
                    phone: self.idx,
                    call_id: cid.to_string(),
                    last,
                    got: version,
                });
                return;
            }
        }
        s.last_version = Some(version);
        let mut now_present = BTreeSet::new();
        let mut states = Vec::new();
        for d in body.split("<dialog ").skip(1) {
            let Some(id) = attr(d, "call-id").or_else(|| attr(d, "id")) else {
                continue;
            };
            let state = d
                .split("<state")
                .nth(1)
                .and_then(|x| x.split('>').nth(1))
                .and_then(|x| x.split('<').next())
                .unwrap_or("")
                .trim()
                .to_string();
            states.push((id.to_string(), state));
        }
        let mut rec = s.record.and_then(|r| self.watches.get_mut(r));
        for (id, state) in &states {
            if state != "terminated" {
                now_present.insert(id.clone());
            }
            if let Some(w) = rec.as_deref_mut() {
                let e = w.seen.entry(id.clone()).or_insert((false, false));
                if state == "confirmed" {
                    e.0 = true;
                }
                if state == "terminated" {
                    e.1 = true;
                }
            }
        }
        // Full state: a dialog that disappeared has ended.
        if let Some(w) = rec {
            for gone in s.present.difference(&now_present) {
                if let Some(e) = w.seen.get_mut(gone) {
                    e.1 = true;
                }
            }
        }
        s.present = now_present;
    }

    // ------------------------------------------------------------ calls

    fn place_call(&mut self, now: u64) {
        if self.others.is_empty() {
            return;
        }
        let k = self.rng.range(0, self.others.len() as u64 - 1) as usize;
        let callee = self.others[k].clone();
        let id = self.next_id();
        let cid = format!("call-{}-{}-{id}@{}", self.idx, self.gen, self.addr.ip());
        let tag = format!("c{}g{}n{id}", self.idx, self.gen);
        let b = self.branch();
        let raw = format!(
            "INVITE sip:{callee}@{DOMAIN} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {a};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <sip:{callee}@{DOMAIN}>\r\n\
             Call-ID: {cid}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: {contact}\r\n\
             Content-Length: 0\r\n\r\n",
            a = self.addr,
            aor = self.aor(),
            contact = self.contact(),
        );
        let invite = parse(raw.as_bytes());
        self.calls.insert(
            cid.clone(),
            Call {
                role: Role::Caller,
                peer_user: callee.clone(),
                local_tag: tag,
                remote_tag: None,
                route: Vec::new(),
                remote_target: String::new(),
                phase: CallPhase::Setup,
                invite,
                invite_branch: b,
                cseq: 1,
                hangup_at: None,
                answer_at: None,
                final_retx: None,
                ack: None,
                forget_at: None,
            },
        );
        self.obs.push(Obs::CallPlaced {
            call_id: cid.clone(),
            caller: self.idx,
            callee: index_of(&callee).unwrap_or(usize::MAX),
        });
        self.send_tx(now, raw.into_bytes(), true, Purpose::Invite(cid));
    }

    fn call_timers(&mut self, now: u64, cid: &str) {
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        if c.forget_at.is_some_and(|t| t <= now) {
            self.calls.remove(cid);
            return;
        }
        if c.answer_at.is_some_and(|t| t <= now) {
            c.answer_at = None;
            self.answer_call(now, cid);
            return;
        }
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        if let Some((bytes, next, interval, give_up)) = c.final_retx.clone() {
            if now >= give_up {
                c.final_retx = None;
                if c.phase == CallPhase::Setup {
                    // Our 200 was never ACKed: the call failed; end it.
                    self.send_bye(now, cid);
                }
            } else if now >= next {
                let iv = (interval * 2).min(T2);
                c.final_retx = Some((bytes.clone(), now + iv, iv, give_up));
                self.send(now, bytes);
            }
        }
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        if c.hangup_at.is_some_and(|t| t <= now) {
            c.hangup_at = None;
            if c.phase == CallPhase::Confirmed {
                self.send_bye(now, cid);
            }
        }
    }

    fn send_bye(&mut self, now: u64, cid: &str) {
        let b = self.branch();
        let (aor, addr) = (self.aor(), self.addr);
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        c.phase = CallPhase::Ending;
        c.final_retx = None;
        c.cseq += 1;
        let routes: String = c.route.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let raw = format!(
            "BYE {rt} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {addr};branch={b};rport\r\n\
             Max-Forwards: 70\r\n\
             {routes}From: <{aor}>;tag={lt}\r\n\
             To: <sip:{pu}@{DOMAIN}>;tag={rtag}\r\n\
             Call-ID: {cid}\r\n\
             CSeq: {cs} BYE\r\n\
             Content-Length: 0\r\n\r\n",
            rt = c.remote_target,
            lt = c.local_tag,
            pu = c.peer_user,
            rtag = c.remote_tag.clone().unwrap_or_default(),
            cs = c.cseq,
        );
        self.send_tx(now, raw.into_bytes(), false, Purpose::Bye(cid.to_string()));
    }

    fn answer_call(&mut self, now: u64, cid: &str) {
        let contact = self.contact();
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        let Some(inv) = c.invite.clone() else {
            return;
        };
        let mut extra: Vec<(&str, String)> = record_route(&inv)
            .into_iter()
            .map(|r| ("Record-Route", r))
            .collect();
        extra.push(("Contact", contact));
        let ok = response(&inv, 200, "OK", &extra);
        c.final_retx = Some((ok.clone(), now + T1, T1, now + 32_000));
        self.sent.record(now, &inv, &ok);
        self.send(now, ok);
    }

    fn on_invite(&mut self, now: u64, m: &Message) {
        let Some(cid) = m.call_id().map(str::to_string) else {
            return;
        };
        if m.to_tag().is_some() {
            // re-INVITE: not used by these phones.
            self.answer(now, m, 488, "Not Acceptable Here", &[]);
            return;
        }
        if let Some(r) = self.sent.replay(m) {
            self.send(now, r);
            return;
        }
        if self.calls.contains_key(&cid) {
            // Same Call-ID, From tag and CSeq, another branch: RFC 3261 §8.2.2.2.
            self.obs.push(Obs::Merged);
            self.answer(now, m, 482, "Loop Detected", &[]);
            return;
        }
        let from_user = m
            .from()
            .and_then(|f| f.uri.strip_prefix("sip:").map(str::to_string))
            .and_then(|u| u.split('@').next().map(str::to_string))
            .unwrap_or_default();
        let rr = record_route(m);
        let local_tag = m.local_tag();
        let mut extra: Vec<(&str, String)> =
            rr.iter().cloned().map(|r| ("Record-Route", r)).collect();
        extra.push(("Contact", self.contact()));
        let ringing = response(m, 180, "Ringing", &extra);
        self.sent.record(now, m, &ringing);
        self.send(now, ringing);
        let ring = self.rng.range(100, 1_500);
        self.calls.insert(
            cid.clone(),
            Call {
                role: Role::Callee,
                peer_user: from_user,
                local_tag,
                remote_tag: m.from_tag().map(str::to_string),
                route: rr,
                remote_target: contact_uri(m).unwrap_or_default(),
                phase: CallPhase::Setup,
                invite: Some(m.clone()),
                invite_branch: branch_of(m),
                cseq: 0,
                hangup_at: None,
                answer_at: Some(now + ring),
                final_retx: None,
                ack: None,
                forget_at: None,
            },
        );
        self.obs.push(Obs::Ringing {
            call_id: cid,
            via_cloud: m.vias().any(|v| v.host == "127.0.3.1"),
        });
    }

    fn on_invite_answer(&mut self, now: u64, cid: &str, m: &Message, status: u16) {
        let talk = self.rng.range(1_000, 8_000);
        let caller_hangs = self.rng.chance(500);
        let branch = self.branch();
        let Some(c) = self.calls.get_mut(cid) else {
            return;
        };
        if (200..300).contains(&status) {
            if c.phase != CallPhase::Setup {
                // A retransmitted 2xx: ACK again.
                if let Some(a) = c.ack.clone() {
                    self.send(now, a);
                }
                return;
            }
            c.phase = CallPhase::Confirmed;
            c.remote_tag = m.to_tag().map(str::to_string);
            let mut rr = record_route(m);
            rr.reverse();
            c.route = rr;
            c.remote_target = contact_uri(m).unwrap_or_default();
            let routes: String = c.route.iter().map(|r| format!("Route: {r}\r\n")).collect();
            let ack = format!(
                "ACK {rt} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {a};branch={branch};rport\r\n\
                 Max-Forwards: 70\r\n\
                 {routes}From: <sip:{u}@{DOMAIN}>;tag={lt}\r\n\
                 To: <sip:{pu}@{DOMAIN}>;tag={rtag}\r\n\
                 Call-ID: {cid}\r\n\
                 CSeq: 1 ACK\r\n\
                 Content-Length: 0\r\n\r\n",
                rt = c.remote_target,
                a = self.addr,
                u = self.user,
                lt = c.local_tag,
                pu = c.peer_user,
                rtag = c.remote_tag.clone().unwrap_or_default(),
            )
            .into_bytes();
            c.ack = Some(ack.clone());
            if caller_hangs {
                c.hangup_at = Some(now + talk);
            }
            self.obs.push(Obs::CallAnswered {
                call_id: cid.to_string(),
            });
            self.send(now, ack);
            return;
        }
        if status >= 300 {
            let ack = c
                .invite
                .as_ref()
                .and_then(|inv| Message::ack_for(inv, m).ok())
                .map(|a| a.to_bytes());
            if c.phase == CallPhase::Setup {
                c.phase = CallPhase::Ending;
                c.forget_at = Some(now + 32_000);
                self.obs.push(Obs::CallFailed {
                    call_id: cid.to_string(),
                    status,
                });
            }
            if let Some(a) = ack {
                self.send(now, a);
            }
        }
    }

    fn on_failure(&mut self, now: u64, p: Purpose, status: u16) {
        match p {
            Purpose::Register => {
                let d = self.rng.range(3_000, 8_000);
                self.reg_next = Some(now + d);
            }
            Purpose::Subscribe(i) => self.on_subscribe_answer(now, i, None, status),
            Purpose::Invite(cid) => {
                if let Some(c) = self.calls.get_mut(&cid) {
                    if c.phase == CallPhase::Setup {
                        c.phase = CallPhase::Ending;
                        c.forget_at = Some(now);
                        self.obs.push(Obs::CallFailed {
                            call_id: cid,
                            status,
                        });
                    }
                }
            }
            Purpose::Bye(cid) => {
                self.obs.push(Obs::ByeTimedOut {
                    call_id: cid.clone(),
                    phone: self.idx,
                });
                self.calls.remove(&cid);
                self.obs.push(Obs::CallEnded {
                    call_id: cid,
                    phone: self.idx,
                });
            }
        }
    }

    // ------------------------------------------------------------ input

    fn answer(
        &mut self,
        now: u64,
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
        self.send(now, r);
    }

    pub fn on_packet(&mut self, now: u64, bytes: &[u8]) {
        if !self.on {
            return;
        }
        let Some(m) = parse(bytes) else {
            self.obs.push(Obs::Unparseable {
                phone: self.idx,
                bytes: String::from_utf8_lossy(bytes).into_owned(),
            });
            return;
        };
        if m.is_request() {
            self.on_request(now, &m);
        } else {
            self.on_response(now, &m);
        }
    }

    fn on_response(&mut self, now: u64, m: &Message) {
        let status = m.status().unwrap_or(0);
        let branch = branch_of(m);
        match self.txs.on_response(&branch, status, now) {
            Answer::Final(p) | Answer::Provisional(p) => {
                let fin = status >= 200;
                match p {
                    Purpose::Register if fin => self.on_register_answer(now, m, status),
                    Purpose::Subscribe(i) if fin => {
                        self.on_subscribe_answer(now, i, Some(m), status)
                    }
                    Purpose::Invite(cid) => self.on_invite_answer(now, &cid, m, status),
                    Purpose::Bye(cid) if fin => {
                        self.calls.remove(&cid);
                        self.obs.push(Obs::CallEnded {
                            call_id: cid,
                            phone: self.idx,
                        });
                    }
                    _ => {}
                }
            }
            Answer::Unknown => {
                // A retransmitted 2xx to our INVITE (the transaction is gone).
                if m.cseq().is_some_and(|c| c.method == Method::Invite) {
                    if let Some(cid) = m.call_id().map(str::to_string) {
                        self.on_invite_answer(now, &cid, m, status);
                    }
                }
            }
        }
    }

    fn on_request(&mut self, now: u64, m: &Message) {
        let Some(method) = m.method().cloned() else {
            return;
        };
        match method {
            Method::Options => self.answer(now, m, 200, "OK", &[]),
            Method::Notify => {
                if let Some(r) = self.sent.replay(m) {
                    let (cid, tt) = (m.call_id(), m.to_tag());
                    let rec = self
                        .subs
                        .iter()
                        .find(|s| {
                            Some(s.call_id.as_str()) == cid && Some(s.local_tag.as_str()) == tt
                        })
                        .and_then(|s| s.record);
                    if let Some(w) = rec.and_then(|r| self.watches.get_mut(r)) {
                        w.retransmitted.push(now);
                    }
                    self.send(now, r);
                    return;
                }
                self.on_notify(now, m)
            }
            Method::Invite => self.on_invite(now, m),
            Method::Ack => self.on_ack(now, m),
            Method::Cancel => self.on_cancel(now, m),
            Method::Bye => {
                if let Some(r) = self.sent.replay(m) {
                    self.send(now, r);
                    return;
                }
                let cid = m.call_id().unwrap_or_default().to_string();
                let ours = self.calls.get(&cid).is_some_and(|c| {
                    m.to_tag() == Some(c.local_tag.as_str())
                        && c.remote_tag.as_deref() == m.from_tag()
                });
                if ours {
                    self.answer(now, m, 200, "OK", &[]);
                    self.calls.remove(&cid);
                    self.obs.push(Obs::CallEnded {
                        call_id: cid,
                        phone: self.idx,
                    });
                } else {
                    self.answer(now, m, 481, "Call Does Not Exist", &[]);
                }
            }
            _ => self.answer(now, m, 405, "Method Not Allowed", &[]),
        }
    }

    fn on_ack(&mut self, now: u64, m: &Message) {
        let cid = m.call_id().unwrap_or_default().to_string();
        let talk = self.rng.range(1_000, 8_000);
        let hang = self.rng.chance(500);
        let Some(c) = self.calls.get_mut(&cid) else {
            return;
        };
        if c.role != Role::Callee {
            return;
        }
        c.final_retx = None;
        if c.phase == CallPhase::Setup {
            c.phase = CallPhase::Confirmed;
            if hang {
                c.hangup_at = Some(now + talk);
            } else {
                // The caller may not hang up (it chose at random too): a
                // call lasts at most a minute.
                c.hangup_at = Some(now + 60_000);
            }
        } else if c.phase == CallPhase::Ending && c.forget_at.is_some() {
            // ACK of our 487: forget the call soon.
        }
    }

    fn on_cancel(&mut self, now: u64, m: &Message) {
        let cid = m.call_id().unwrap_or_default().to_string();
        let branch = branch_of(m);
        let matching = self
            .calls
            .get(&cid)
            .is_some_and(|c| c.role == Role::Callee && c.invite_branch == branch);
        if !matching {
            self.answer(now, m, 481, "Call/Transaction Does Not Exist", &[]);
            return;
        }
        self.answer(now, m, 200, "OK", &[]);
        let Some(c) = self.calls.get_mut(&cid) else {
            return;
        };
        if c.phase == CallPhase::Setup && c.answer_at.is_some() {
            c.answer_at = None;
            c.phase = CallPhase::Ending;
            c.forget_at = Some(now + 32_000);
            if let Some(inv) = c.invite.clone() {
                let r = response(&inv, 487, "Request Terminated", &[]);
                c.final_retx = Some((r.clone(), now + T1, T1, now + 32_000));
                self.sent.record(now, &inv, &r);
                self.send(now, r);
            }
        }
    }
}

impl Sub {
    fn new(pkg: Pkg, target: String) -> Sub {
        Sub {
            pkg,
            target,
            call_id: String::new(),
            local_tag: String::new(),
            remote_tag: None,
            route: Vec::new(),
            remote_target: None,
            cseq: 0,
            last_notify_cseq: None,
            last_version: None,
            next: None,
            live: false,
            record: None,
            present: BTreeSet::new(),
        }
    }

    fn reset(&mut self, next: Option<u64>) {
        let (pkg, target) = (self.pkg, std::mem::take(&mut self.target));
        *self = Sub::new(pkg, target);
        self.next = next;
    }
}

/// The URI of the first Contact.
fn contact_uri(m: &Message) -> Option<String> {
    match m.contacts() {
        Some(Contacts::List(l)) => l.first().map(|c| c.uri.to_string()),
        _ => None,
    }
}

/// `name="value"` in an XML-ish text.
fn attr<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    let pat = format!(" {name}=\"");
    let start = s.find(&pat)? + pat.len();
    let end = s[start..].find('"')? + start;
    Some(&s[start..end])
}
