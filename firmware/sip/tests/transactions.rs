//! Transaction state machines driven by virtual time over a simulated wire
//! with loss, delay and reordering.

// Test harness helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdline_sip::transaction::{
    CancelOutcome, Peer, Transactions, Transport, TxConfig, TxEvent, TxId,
};
use holdline_sip::{Message, Method};

const T1: Duration = Duration::from_millis(500);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.next() % 1000 < per_mille
    }
    fn range(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = (hi - lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 { 0 } else { self.next() % span })
    }
}

#[derive(Clone, Copy)]
enum Final {
    Never,
    After(u16, Duration),
}

#[derive(Clone, Copy)]
struct UasPolicy {
    provisional: Option<(u16, Duration)>,
    final_: Final,
    /// UA-core retransmission of 2xx to INVITE until ACK (RFC 3261 §13.3.1.4).
    retransmit_2xx: bool,
}

enum TuAction {
    Respond {
        tx: TxId,
        code: u16,
        request: Box<Message>,
    },
    Retransmit2xx {
        tx: TxId,
        response: Box<Message>,
        interval: Duration,
        until: Instant,
    },
    Cancel {
        tx: TxId,
    },
}

type DropFilter = Box<dyn FnMut(bool, &Message) -> bool>;

struct Packet {
    at: Instant,
    seq: u64,
    to_uas: bool,
    payload: Vec<u8>,
}

struct Sim {
    start: Instant,
    now: Instant,
    rng: Rng,
    loss: u64,
    delay: (Duration, Duration),
    drop_if: DropFilter,
    wire: Vec<Packet>,
    seq: u64,
    uac: Transactions,
    uas: Transactions,
    uac_peer: Peer,
    uas_peer: Peer,
    policy: UasPolicy,
    actions: Vec<(Instant, TuAction)>,
    uac_events: Vec<(Duration, TxEvent)>,
    uas_events: Vec<(Duration, TxEvent)>,
    uac_sent: Vec<(Duration, Vec<u8>)>,
    uas_sent: Vec<(Duration, Vec<u8>)>,
    acked: HashSet<String>,
    invite_tx: Option<TxId>,
}

fn peer(ip: [u8; 4], transport: Transport) -> Peer {
    Peer {
        addr: SocketAddr::from((ip, 5060)),
        transport,
    }
}

impl Sim {
    fn new(seed: u64, transport: Transport, cfg: TxConfig, policy: UasPolicy) -> Sim {
        let start = Instant::now();
        Sim {
            start,
            now: start,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            loss: 0,
            delay: (Duration::from_millis(5), Duration::from_millis(5)),
            drop_if: Box::new(|_, _| false),
            wire: Vec::new(),
            seq: 0,
            uac: Transactions::new(cfg),
            uas: Transactions::new(cfg),
            uac_peer: peer([127, 0, 0, 1], transport),
            uas_peer: peer([127, 0, 0, 2], transport),
            policy,
            actions: Vec::new(),
            uac_events: Vec::new(),
            uas_events: Vec::new(),
            uac_sent: Vec::new(),
            uas_sent: Vec::new(),
            acked: HashSet::new(),
            invite_tx: None,
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    fn request(&self, method: Method, branch: &str) -> Message {
        let m = method.as_str();
        let text = format!(
            "{m} sip:uas@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/{} 127.0.0.1:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:uac@127.0.0.1>;tag=f1\r\nTo: <sip:uas@127.0.0.2>\r\nCall-ID: call-{branch}\r\nCSeq: 1 {m}\r\nContent-Length: 0\r\n\r\n",
            self.uac_peer.transport.via_token()
        );
        Message::parse(text.as_bytes()).unwrap()
    }

    fn send_request(&mut self, req: Message) -> TxId {
        let id = self.uac.send_request(self.now, req, self.uas_peer).unwrap();
        self.pump();
        id
    }

    fn pump(&mut self) {
        loop {
            let mut progress = false;
            while let Some(t) = self.uac.poll_transmit() {
                progress = true;
                let t_rel = self.t();
                self.uac_sent.push((t_rel, t.payload.clone()));
                self.put_on_wire(true, t.payload);
            }
            while let Some(t) = self.uas.poll_transmit() {
                progress = true;
                let t_rel = self.t();
                self.uas_sent.push((t_rel, t.payload.clone()));
                self.put_on_wire(false, t.payload);
            }
            while let Some(e) = self.uas.poll_event() {
                progress = true;
                self.uas_tu(e);
            }
            while let Some(e) = self.uac.poll_event() {
                progress = true;
                self.uac_tu(e);
            }
            if !progress {
                break;
            }
        }
    }

    fn put_on_wire(&mut self, to_uas: bool, payload: Vec<u8>) {
        let msg = Message::parse(&payload).unwrap();
        if (self.drop_if)(to_uas, &msg) || self.rng.chance(self.loss) {
            return;
        }
        let d = self.rng.range(self.delay.0, self.delay.1);
        self.seq += 1;
        self.wire.push(Packet {
            at: self.now + d,
            seq: self.seq,
            to_uas,
            payload,
        });
    }

    fn uas_tu(&mut self, e: TxEvent) {
        let t = self.t();
        if let TxEvent::Request {
            tx: Some(tx),
            request,
            ..
        } = &e
        {
            let method = request.method().cloned();
            if method == Some(Method::Cancel) {
                let inv = self.uas.find_cancelled(request);
                let ok = Message::response_for(request, 200, "OK").unwrap();
                self.uas.send_response(self.now, *tx, &ok).unwrap();
                if let Some(inv) = inv {
                    if self.uas.is_pending_invite(inv) {
                        // 487 for the INVITE: answer it with the stored request.
                        self.actions.push((
                            self.now,
                            TuAction::Respond {
                                tx: inv,
                                code: 487,
                                request: Box::new(request.clone()),
                            },
                        ));
                    }
                }
            } else {
                if let Some((code, after)) = self.policy.provisional {
                    self.actions.push((
                        self.now + after,
                        TuAction::Respond {
                            tx: *tx,
                            code,
                            request: Box::new(request.clone()),
                        },
                    ));
                }
                if let Final::After(code, after) = self.policy.final_ {
                    self.actions.push((
                        self.now + after,
                        TuAction::Respond {
                            tx: *tx,
                            code,
                            request: Box::new(request.clone()),
                        },
                    ));
                }
            }
        }
        if let TxEvent::Request {
            tx: None, request, ..
        } = &e
        {
            if request.method() == Some(&Method::Ack) {
                self.acked.insert(request.call_id().unwrap().to_owned());
            }
        }
        self.uas_events.push((t, e));
    }

    fn uac_tu(&mut self, e: TxEvent) {
        let t = self.t();
        if let TxEvent::Response {
            tx: Some(tx),
            response,
            ..
        } = &e
        {
            let code = response.status().unwrap();
            if response.cseq().unwrap().method == Method::Invite && (200..300).contains(&code) {
                // ACK for 2xx: end to end, new branch, outside the transaction.
                let inv = self.uac.client_request(*tx).unwrap().clone();
                let mut ack = Message::ack_for(&inv, response).unwrap();
                ack.pop_via();
                ack.push_via("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKack")
                    .unwrap();
                self.uac.send_stateless(self.uas_peer, &ack);
            }
        }
        self.uac_events.push((t, e));
    }

    fn run_action(&mut self, a: TuAction) {
        match a {
            TuAction::Respond { tx, code, request } => {
                // For 487 after CANCEL the stored request is the CANCEL; build
                // the INVITE answer from it with the INVITE CSeq.
                let mut resp = Message::response_for(&request, code, "Answer").unwrap();
                if request.method() == Some(&Method::Cancel) {
                    resp.replace_header("CSeq", "1 INVITE").unwrap();
                }
                if self.uas.send_response(self.now, tx, &resp).is_ok()
                    && (200..300).contains(&code)
                    && resp.cseq().unwrap().method == Method::Invite
                    && self.policy.retransmit_2xx
                {
                    self.actions.push((
                        self.now + T1,
                        TuAction::Retransmit2xx {
                            tx,
                            response: Box::new(resp),
                            interval: T1,
                            until: self.now + T1 * 64,
                        },
                    ));
                }
            }
            TuAction::Retransmit2xx {
                tx,
                response,
                interval,
                until,
            } => {
                if self.acked.contains(response.call_id().unwrap()) || self.now >= until {
                    return;
                }
                if self.uas.send_response(self.now, tx, &response).is_ok() {
                    let next = (interval * 2).min(Duration::from_secs(4));
                    self.actions.push((
                        self.now + next,
                        TuAction::Retransmit2xx {
                            tx,
                            response,
                            interval: next,
                            until,
                        },
                    ));
                }
            }
            TuAction::Cancel { tx } => {
                let _ = self.uac.cancel(self.now, tx);
            }
        }
    }

    /// Advances virtual time until nothing is left to do or `limit` passes.
    fn drive(&mut self, limit: Duration) {
        let end = self.start + limit;
        loop {
            self.pump();
            let mut next: Option<Instant> = None;
            for t in [self.uac.poll_timeout(), self.uas.poll_timeout()]
                .into_iter()
                .flatten()
                .chain(self.wire.iter().map(|p| p.at))
                .chain(self.actions.iter().map(|a| a.0))
            {
                next = Some(next.map_or(t, |n: Instant| n.min(t)));
            }
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            // Deliver due packets in arrival order (delay makes reordering).
            let mut due: Vec<Packet> = Vec::new();
            let mut i = 0;
            while i < self.wire.len() {
                if self.wire[i].at <= self.now {
                    due.push(self.wire.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|p| (p.at, p.seq));
            for p in due {
                let msg = Message::parse(&p.payload).unwrap();
                if p.to_uas {
                    self.uas.handle_incoming(self.now, msg, self.uac_peer);
                } else {
                    self.uac.handle_incoming(self.now, msg, self.uas_peer);
                }
                self.pump();
            }
            let mut j = 0;
            while j < self.actions.len() {
                if self.actions[j].0 <= self.now {
                    let (_, a) = self.actions.swap_remove(j);
                    self.run_action(a);
                    self.pump();
                } else {
                    j += 1;
                }
            }
            self.uac.handle_timeout(self.now);
            self.uas.handle_timeout(self.now);
        }
    }

    fn uac_finals(&self, tx: TxId) -> Vec<u16> {
        self.uac_events
            .iter()
            .filter_map(|(_, e)| match e {
                TxEvent::Response {
                    tx: Some(t),
                    response,
                    ..
                } if *t == tx => response.status(),
                _ => None,
            })
            .filter(|c| *c >= 200)
            .collect()
    }

    fn uac_timeouts(&self, tx: TxId) -> Vec<Duration> {
        self.uac_events
            .iter()
            .filter_map(|(t, e)| match e {
                TxEvent::Timeout { tx: x } if *x == tx => Some(*t),
                _ => None,
            })
            .collect()
    }

    fn count_sent(sent: &[(Duration, Vec<u8>)], prefix: &str) -> usize {
        sent.iter()
            .filter(|(_, p)| p.starts_with(prefix.as_bytes()))
            .count()
    }
}

fn cfg() -> TxConfig {
    TxConfig::default()
}

const ANSWER_200: UasPolicy = UasPolicy {
    provisional: None,
    final_: Final::After(200, Duration::ZERO),
    retransmit_2xx: true,
};

#[test]
fn non_invite_without_loss_completes_and_drains() {
    let mut s = Sim::new(1, Transport::Udp, cfg(), ANSWER_200);
    let req = s.request(Method::Options, "z9hG4bK1");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    assert_eq!(s.uac_finals(tx), vec![200]);
    let new_requests = s
        .uas_events
        .iter()
        .filter(|(_, e)| matches!(e, TxEvent::Request { tx: Some(_), .. }))
        .count();
    assert_eq!(new_requests, 1);
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn non_invite_timer_e_and_f_on_a_dead_wire() {
    let mut s = Sim::new(2, Transport::Udp, cfg(), ANSWER_200);
    s.loss = 1000;
    let req = s.request(Method::Options, "z9hG4bK2");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    let times: Vec<u128> = s.uac_sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(
        times,
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(s.uac_timeouts(tx), vec![T1 * 64]);
    assert!(s.uac.is_empty());
}

#[test]
fn invite_timer_a_and_b_on_a_dead_wire() {
    let mut s = Sim::new(3, Transport::Udp, cfg(), ANSWER_200);
    s.loss = 1000;
    let req = s.request(Method::Invite, "z9hG4bK3");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    let times: Vec<u128> = s.uac_sent.iter().map(|(t, _)| t.as_millis()).collect();
    assert_eq!(times, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(s.uac_timeouts(tx), vec![T1 * 64]);
    assert!(s.uac.is_empty());
}

#[test]
fn configurable_t1_scales_timers() {
    let mut c = cfg();
    c.t1 = Duration::from_millis(100);
    let mut s = Sim::new(4, Transport::Udp, c, ANSWER_200);
    s.loss = 1000;
    let req = s.request(Method::Invite, "z9hG4bK4");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(60));
    assert_eq!(s.uac_timeouts(tx), vec![Duration::from_millis(6400)]);
}

#[test]
fn reliable_transport_never_retransmits() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(200, Duration::from_secs(5)),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(5, Transport::Tcp, cfg(), policy);
    let req = s.request(Method::Options, "z9hG4bK5");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    assert_eq!(s.uac_sent.len(), 1);
    assert_eq!(s.uac_finals(tx), vec![200]);
    // Timer K and J are zero on reliable transports: nothing lingers.
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn non_invite_over_lossy_reordering_wire_many_seeds() {
    let mut ok = 0;
    for seed in 1..=200u64 {
        let mut s = Sim::new(seed, Transport::Udp, cfg(), ANSWER_200);
        s.loss = 300;
        s.delay = (Duration::from_millis(5), Duration::from_millis(900));
        let req = s.request(Method::Options, &format!("z9hG4bKs{seed}"));
        let tx = s.send_request(req);
        s.drive(Duration::from_secs(200));
        let finals = s.uac_finals(tx);
        let timeouts = s.uac_timeouts(tx);
        assert_eq!(finals.len() + timeouts.len(), 1, "seed {seed}");
        let new_requests = s
            .uas_events
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Request { tx: Some(_), .. }))
            .count();
        assert!(new_requests <= 1, "seed {seed}: TU saw a retransmission");
        assert!(
            s.uac.is_empty() && s.uas.is_empty(),
            "seed {seed}: leftover"
        );
        ok += finals.len();
    }
    assert!(ok > 180, "only {ok} of 200 completed at 30% loss");
}

#[test]
fn invite_2xx_over_lossy_wire_many_seeds_rfc6026() {
    let policy = UasPolicy {
        provisional: Some((180, Duration::from_millis(100))),
        final_: Final::After(200, Duration::from_millis(150)),
        retransmit_2xx: true,
    };
    let mut answered = 0;
    for seed in 1..=200u64 {
        let mut s = Sim::new(seed, Transport::Udp, cfg(), policy);
        s.loss = 200;
        s.delay = (Duration::from_millis(5), Duration::from_millis(400));
        let req = s.request(Method::Invite, &format!("z9hG4bKi{seed}"));
        let tx = s.send_request(req);
        s.drive(Duration::from_secs(300));
        let events: Vec<u16> = s
            .uac_events
            .iter()
            .filter_map(|(_, e)| match e {
                TxEvent::Response {
                    tx: Some(t),
                    response,
                    ..
                } if *t == tx => response.status(),
                _ => None,
            })
            .collect();
        // Once a 2xx arrived no provisional is delivered after it (reordered 180s are absorbed).
        if let Some(first_final) = events.iter().position(|c| *c >= 200) {
            assert!(
                events[first_final..].iter().all(|c| *c >= 200),
                "seed {seed}: {events:?}"
            );
            answered += 1;
        } else {
            assert_eq!(s.uac_timeouts(tx).len(), 1, "seed {seed}");
        }
        // The INVITE reached the UAS TU at most once.
        let invites = s
            .uas_events
            .iter()
            .filter(|(_, e)| matches!(e, TxEvent::Request { tx: Some(_), request, .. } if request.method() == Some(&Method::Invite)))
            .count();
        assert!(invites <= 1, "seed {seed}");
        assert!(
            s.uac.is_empty() && s.uas.is_empty(),
            "seed {seed}: leftover"
        );
    }
    assert!(answered > 180, "only {answered} answered");
}

#[test]
fn invite_2xx_retransmissions_reach_the_tu_in_accepted() {
    let mut s = Sim::new(7, Transport::Udp, cfg(), ANSWER_200);
    // Lose the first two ACKs so the UAS core retransmits its 2xx.
    let mut acks = 0;
    s.drop_if = Box::new(move |to_uas, m| {
        if to_uas && m.method() == Some(&Method::Ack) {
            acks += 1;
            return acks <= 2;
        }
        false
    });
    let req = s.request(Method::Invite, "z9hG4bK7");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    assert_eq!(s.uac_finals(tx), vec![200, 200, 200]);
    assert!(s.acked.contains("call-z9hG4bK7"));
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn invite_486_lost_ack_is_retransmitted_and_confirmed() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(486, Duration::ZERO),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(8, Transport::Udp, cfg(), policy);
    let mut acks = 0;
    s.drop_if = Box::new(move |to_uas, m| {
        if to_uas && m.method() == Some(&Method::Ack) {
            acks += 1;
            return acks <= 2;
        }
        false
    });
    let req = s.request(Method::Invite, "z9hG4bK8");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(120));
    assert_eq!(s.uac_finals(tx), vec![486], "retransmitted 486 absorbed");
    assert_eq!(Sim::count_sent(&s.uas_sent, "SIP/2.0 486"), 3, "Timer G");
    assert_eq!(Sim::count_sent(&s.uac_sent, "ACK"), 3, "ACK resent per 486");
    assert!(!s
        .uas_events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::AckTimeout { .. })));
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn invite_486_without_ack_hits_timer_h() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(486, Duration::ZERO),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(9, Transport::Udp, cfg(), policy);
    s.drop_if = Box::new(|to_uas, m| to_uas && m.method() == Some(&Method::Ack));
    let req = s.request(Method::Invite, "z9hG4bK9");
    s.send_request(req);
    s.drive(Duration::from_secs(120));
    let h: Vec<Duration> = s
        .uas_events
        .iter()
        .filter_map(|(t, e)| matches!(e, TxEvent::AckTimeout { .. }).then_some(*t))
        .collect();
    assert_eq!(h.len(), 1);
    assert!(h[0] >= T1 * 64 && h[0] < T1 * 64 + Duration::from_millis(50));
    // Timer G: T1, 2T1, 4T1, then capped at T2 until H.
    let g: Vec<u128> = s
        .uas_sent
        .iter()
        .filter(|(_, p)| p.starts_with(b"SIP/2.0 486"))
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(&g[..5], &[5, 505, 1505, 3505, 7505]);
    assert!(s.uas.is_empty());
}

#[test]
fn late_response_after_timeout_is_stray() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(200, Duration::from_secs(40)),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(10, Transport::Udp, cfg(), policy);
    let req = s.request(Method::Options, "z9hG4bK10");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(400));
    assert_eq!(s.uac_timeouts(tx), vec![T1 * 64]);
    assert!(s
        .uac_events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::Response { tx: None, .. })));
    assert_eq!(s.uac.stats().stray_responses, 1);
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn cancel_before_provisional_waits_for_it() {
    let policy = UasPolicy {
        provisional: Some((180, Duration::from_secs(2))),
        final_: Final::Never,
        retransmit_2xx: false,
    };
    let mut c = cfg();
    c.auto_trying = false;
    let mut s = Sim::new(11, Transport::Udp, c, policy);
    let req = s.request(Method::Invite, "z9hG4bK11");
    let tx = s.send_request(req);
    s.invite_tx = Some(tx);
    assert_eq!(s.uac.cancel(s.now, tx), Ok(CancelOutcome::Pending));
    s.drive(Duration::from_secs(120));
    // CANCEL went out only after the 180, and the INVITE ended with 487.
    let cancel_at = s
        .uac_sent
        .iter()
        .find(|(_, p)| p.starts_with(b"CANCEL"))
        .map(|(t, _)| *t)
        .unwrap();
    assert!(cancel_at >= Duration::from_secs(2));
    assert_eq!(s.uac_finals(tx), vec![487]);
    let cancel_200 = s.uac_events.iter().any(|(_, e)| matches!(e, TxEvent::Response { tx: Some(t), response, .. } if *t != tx && response.status() == Some(200)));
    assert!(cancel_200);
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn cancel_crossing_200_gets_no_487() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(200, Duration::from_secs(1)),
        retransmit_2xx: true,
    };
    let mut s = Sim::new(12, Transport::Udp, cfg(), policy);
    s.delay = (Duration::from_millis(50), Duration::from_millis(50));
    let req = s.request(Method::Invite, "z9hG4bK12");
    let tx = s.send_request(req);
    // Cancel at t=1s: the 200 is on the wire, the CANCEL crosses it.
    s.actions.push((
        s.start + Duration::from_millis(1000),
        TuAction::Cancel { tx },
    ));
    s.drive(Duration::from_secs(120));
    assert!(s.uac_sent.iter().any(|(_, p)| p.starts_with(b"CANCEL")));
    assert_eq!(s.uac_finals(tx).first(), Some(&200));
    assert!(!s.uac_finals(tx).contains(&487));
    assert_eq!(Sim::count_sent(&s.uas_sent, "SIP/2.0 487"), 0);
    assert!(s.acked.contains("call-z9hG4bK12"));
    assert!(s.uac.is_empty() && s.uas.is_empty());
}

#[test]
fn cancel_after_final_is_too_late() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(486, Duration::ZERO),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(13, Transport::Udp, cfg(), policy);
    let req = s.request(Method::Invite, "z9hG4bK13");
    let tx = s.send_request(req);
    s.drive(Duration::from_millis(100));
    assert_eq!(s.uac.cancel(s.now, tx), Ok(CancelOutcome::TooLate));
}

#[test]
fn rfc2543_requests_match_without_magic_cookie() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::After(404, Duration::from_secs(3)),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(14, Transport::Udp, cfg(), policy);
    let req = s.request(Method::Invite, "old2543branch");
    s.send_request(req);
    s.drive(Duration::from_secs(120));
    // Retransmissions (timer A at 0.5, 1.5 s) were absorbed: the TU saw one INVITE.
    let invites = s
        .uas_events
        .iter()
        .filter(|(_, e)| matches!(e, TxEvent::Request { tx: Some(_), .. }))
        .count();
    assert_eq!(invites, 1);
    // The hop-by-hop ACK matched the server transaction (no Timer H).
    assert!(!s
        .uas_events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::AckTimeout { .. })));
    assert!(s.uas.is_empty());
}

#[test]
fn full_table_answers_503_and_refuses_new_client_transactions() {
    let mut c = cfg();
    c.max_transactions = 1;
    let policy = UasPolicy {
        provisional: None,
        final_: Final::Never,
        retransmit_2xx: false,
    };
    let mut s = Sim::new(15, Transport::Udp, c, policy);
    let a = s.request(Method::Options, "z9hG4bKa");
    s.send_request(a);
    let b = s.request(Method::Options, "z9hG4bKb");
    let b_bytes = b.clone();
    assert_eq!(
        s.uac.send_request(s.now, b, s.uas_peer),
        Err(holdline_sip::transaction::TxError::TableFull)
    );
    s.drive(Duration::from_millis(100));
    // Deliver a second request directly to the full UAS.
    s.uas.handle_incoming(s.now, b_bytes, s.uac_peer);
    let t = s.uas.poll_transmit().unwrap();
    assert!(t.payload.starts_with(b"SIP/2.0 503"));
    assert_eq!(s.uas.stats().rejected_full, 1);
}

#[test]
fn silent_tu_is_abandoned_and_nothing_lives_forever() {
    let policy = UasPolicy {
        provisional: None,
        final_: Final::Never,
        retransmit_2xx: false,
    };
    let mut c = cfg();
    c.max_lifetime = Duration::from_secs(60);
    let mut s = Sim::new(16, Transport::Udp, c, policy);
    let req = s.request(Method::Options, "z9hG4bK16");
    s.send_request(req);
    let inv = s.request(Method::Invite, "z9hG4bK16i");
    s.send_request(inv);
    s.drive(Duration::from_secs(1000));
    let abandoned = s
        .uas_events
        .iter()
        .filter(|(_, e)| matches!(e, TxEvent::Abandoned { .. }))
        .count();
    assert_eq!(abandoned, 2);
    assert!(s.uac.is_empty() && s.uas.is_empty());
    assert_eq!(s.uac.poll_timeout(), None);
    assert_eq!(s.uas.poll_timeout(), None);
}

#[test]
fn timer_c_fires_then_hard_stop() {
    let policy = UasPolicy {
        provisional: Some((180, Duration::ZERO)),
        final_: Final::Never,
        retransmit_2xx: false,
    };
    let mut c = cfg();
    c.timer_c = Duration::from_secs(10);
    c.max_lifetime = Duration::from_secs(1000);
    let mut s = Sim::new(17, Transport::Udp, c, policy);
    let req = s.request(Method::Invite, "z9hG4bK17");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(100));
    let c_at: Vec<Duration> = s
        .uac_events
        .iter()
        .filter_map(|(t, e)| matches!(e, TxEvent::TimerC { tx: x } if *x == tx).then_some(*t))
        .collect();
    assert_eq!(c_at.len(), 1);
    assert!(c_at[0] >= Duration::from_secs(10) && c_at[0] < Duration::from_secs(11));
    assert_eq!(s.uac_timeouts(tx).len(), 1);
    assert!(s.uac.is_empty());
}

#[test]
fn transport_error_ends_the_transaction() {
    let mut s = Sim::new(18, Transport::Tcp, cfg(), ANSWER_200);
    s.loss = 1000;
    let req = s.request(Method::Options, "z9hG4bK18");
    let tx = s.send_request(req);
    s.uac.handle_transport_error(s.now, tx);
    s.pump();
    assert!(s
        .uac_events
        .iter()
        .any(|(_, e)| matches!(e, TxEvent::TransportError { tx: x } if *x == tx)));
    assert!(s.uac.is_empty());
}

#[test]
fn thousands_of_unanswered_transactions_all_end() {
    let mut c = cfg();
    c.max_transactions = 3000;
    let now0 = Instant::now();
    let mut uac = Transactions::new(c);
    let to = peer([127, 0, 0, 2], Transport::Udp);
    let s = Sim::new(40, Transport::Udp, c, ANSWER_200);
    let mut ids = Vec::new();
    for i in 0..3000u32 {
        let method = if i % 2 == 0 {
            Method::Options
        } else {
            Method::Invite
        };
        let req = s.request(method, &format!("z9hG4bKbulk{i}"));
        ids.push(
            uac.send_request(now0 + Duration::from_millis(u64::from(i)), req, to)
                .unwrap(),
        );
    }
    assert_eq!(uac.len(), 3000);
    let extra = s.request(Method::Options, "z9hG4bKbulkextra");
    assert!(uac.send_request(now0, extra, to).is_err(), "table cap");
    let mut now = now0;
    let mut timeouts = 0;
    let mut sent = 0;
    while let Some(t) = uac.poll_timeout() {
        now = t;
        uac.handle_timeout(now);
        while uac.poll_transmit().is_some() {
            sent += 1;
        }
        while let Some(e) = uac.poll_event() {
            if matches!(e, TxEvent::Timeout { .. }) {
                timeouts += 1;
            }
        }
    }
    assert_eq!(timeouts, 3000);
    assert!(uac.is_empty());
    assert!(now < now0 + Duration::from_secs(40));
    // 1500 INVITEs × (1 + 6 retransmissions) + 1500 OPTIONS × (1 + 10).
    assert_eq!(sent, 1500 * 7 + 1500 * 11);
}

#[test]
fn invite_over_tcp_has_no_retransmissions_and_no_linger() {
    let policy = UasPolicy {
        provisional: Some((180, Duration::from_millis(100))),
        final_: Final::After(486, Duration::from_secs(3)),
        retransmit_2xx: false,
    };
    let mut s = Sim::new(41, Transport::Tcp, cfg(), policy);
    let req = s.request(Method::Invite, "z9hG4bKtcp1");
    let tx = s.send_request(req);
    s.drive(Duration::from_secs(100));
    assert_eq!(s.uac_finals(tx), vec![486]);
    assert_eq!(Sim::count_sent(&s.uac_sent, "INVITE"), 1);
    assert_eq!(Sim::count_sent(&s.uas_sent, "SIP/2.0 486"), 1);
    assert_eq!(Sim::count_sent(&s.uac_sent, "ACK"), 1);
    // Timer D and I are zero on TCP: both sides end as soon as the ACK passes.
    let end = s
        .uac_events
        .iter()
        .find_map(|(t, e)| matches!(e, TxEvent::Terminated { tx: x } if *x == tx).then_some(*t))
        .unwrap();
    assert!(end < Duration::from_secs(4));
    assert!(s.uac.is_empty() && s.uas.is_empty());
}
