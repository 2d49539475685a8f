//! The transaction layer and the §16 mechanics together: a test-only proxy
//! "core" between a phone and a cloud over an in-memory wire in virtual
//! time. INVITE with two-sided Record-Route and end-to-end ACK, CANCEL
//! forwarded and 487 relayed, silent cloud answered 408, REGISTER with Path.

// Test helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdline_sip::proxy::{Leg, ProxyIdentity};
use holdline_sip::transaction::{Peer, Transactions, Transport, TxConfig, TxEvent, TxId};
use holdline_sip::{Message, Method};

const PHONE: &str = "10.0.0.5:5060";
const LAN: &str = "127.0.0.1:5060";
const WAN: &str = "127.0.0.1:5070";
const CLOUD: &str = "127.0.0.2:5060";

fn a(s: &str) -> SocketAddr {
    s.parse().unwrap()
}
fn udp(s: &str) -> Peer {
    Peer {
        addr: a(s),
        transport: Transport::Udp,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Cloud {
    Answer,
    RingForever,
    Silent,
}

struct World {
    start: Instant,
    now: Instant,
    wire: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    phone: Transactions,
    proxy: Transactions,
    cloud: Transactions,
    id: ProxyIdentity,
    lan: Leg,
    wan: Leg,
    /// client tx → server tx
    ctx: HashMap<TxId, TxId>,
    /// server tx → client tx
    rev: HashMap<TxId, TxId>,
    cloud_mode: Cloud,
    cloud_pending: Option<(TxId, Message)>,
    phone_events: Vec<(Duration, TxEvent)>,
    cloud_requests: Vec<Message>,
    phone_invite: Option<TxId>,
}

impl World {
    fn new(mode: Cloud) -> World {
        let start = Instant::now();
        let lan = Leg::new(a(LAN), Transport::Udp);
        let wan = Leg::new(a(WAN), Transport::Udp);
        let phone_cfg = TxConfig {
            auto_trying: false,
            ..TxConfig::default()
        };
        World {
            start,
            now: start,
            wire: Vec::new(),
            phone: Transactions::new(phone_cfg),
            proxy: Transactions::new(TxConfig::default()),
            cloud: Transactions::new(TxConfig::default()),
            id: ProxyIdentity::new(vec![lan.clone(), wan.clone()], 42),
            lan,
            wan,
            ctx: HashMap::new(),
            rev: HashMap::new(),
            cloud_mode: mode,
            cloud_pending: None,
            phone_events: Vec::new(),
            cloud_requests: Vec::new(),
            phone_invite: None,
        }
    }

    fn flush(&mut self) {
        loop {
            let mut moved = false;
            while let Some(t) = self.phone.poll_transmit() {
                moved = true;
                self.put(a(PHONE), t.to.addr, t.payload);
            }
            while let Some(t) = self.proxy.poll_transmit() {
                moved = true;
                let from = if t.to.addr == a(CLOUD) {
                    a(WAN)
                } else {
                    a(LAN)
                };
                self.put(from, t.to.addr, t.payload);
            }
            while let Some(t) = self.cloud.poll_transmit() {
                moved = true;
                self.put(a(CLOUD), t.to.addr, t.payload);
            }
            while let Some(e) = self.proxy.poll_event() {
                moved = true;
                self.proxy_core(e);
            }
            while let Some(e) = self.cloud.poll_event() {
                moved = true;
                self.cloud_tu(e);
            }
            while let Some(e) = self.phone.poll_event() {
                moved = true;
                self.phone_tu(e);
            }
            if !moved {
                break;
            }
        }
    }

    fn put(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if self.cloud_mode == Cloud::Silent && to == a(CLOUD) {
            return;
        }
        self.wire
            .push((self.now + Duration::from_millis(10), from, to, bytes));
    }

    /// The test's proxy core: every decision a real core makes by policy
    /// is fixed here (phones → cloud, cloud → the phone).
    fn proxy_core(&mut self, e: TxEvent) {
        match e {
            TxEvent::Request {
                tx: Some(stx),
                request,
                from,
            } => {
                if request.method() == Some(&Method::Cancel) {
                    let ok = Message::response_for(&request, 200, "OK").unwrap();
                    self.proxy.send_response(self.now, stx, &ok).unwrap();
                    if let Some(inv) = self.proxy.find_cancelled(&request) {
                        if let Some(&client) = self.rev.get(&inv) {
                            self.proxy.cancel(self.now, client).unwrap();
                        }
                    }
                    return;
                }
                let received = request.clone();
                let mut req = request;
                let from_lan = from.addr != a(CLOUD);
                let (inb, out) = if from_lan {
                    (self.lan.clone(), self.wan.clone())
                } else {
                    (self.wan.clone(), self.lan.clone())
                };
                if let Err(e) = self.id.preprocess(&mut req, from.addr, &[]) {
                    let (code, reason) = e.status();
                    let r = Message::response_for(&received, code, reason).unwrap();
                    self.proxy.send_response(self.now, stx, &r).unwrap();
                    return;
                }
                if req.method() == Some(&Method::Register) {
                    self.id.add_path(&mut req, &out, "").unwrap();
                } else if req.method() == Some(&Method::Invite) {
                    self.id.record_route(&mut req, &inb, &out, "").unwrap();
                }
                let hop = self.id.forward(&mut req, &received, &out, 0).unwrap();
                let to = if from_lan {
                    udp(CLOUD)
                } else {
                    udp(&hop.socket_addr(5060).unwrap().to_string())
                };
                let client = self.proxy.send_request(self.now, req, to).unwrap();
                self.ctx.insert(client, stx);
                self.rev.insert(stx, client);
            }
            TxEvent::Request {
                tx: None,
                request,
                from,
            } => {
                // ACK for a 2xx: end to end, forwarded statelessly.
                let received = request.clone();
                let mut req = request;
                self.id.preprocess(&mut req, from.addr, &[]).unwrap();
                let out = if from.addr == a(CLOUD) {
                    &self.lan
                } else {
                    &self.wan
                };
                let hop = self.id.forward(&mut req, &received, out, 0).unwrap();
                let to = hop.socket_addr(5060).unwrap();
                self.proxy.send_stateless(udp(&to.to_string()), &req);
            }
            TxEvent::Response {
                tx: Some(client),
                response,
                ..
            } => {
                let mut resp = response;
                if resp.status() == Some(100) {
                    return;
                }
                // Answers to the proxy's own CANCELs end here (ForUs).
                if self.id.route_response(&mut resp).is_err() {
                    return;
                }
                if let Some(&stx) = self.ctx.get(&client) {
                    let _ = self.proxy.send_response(self.now, stx, &resp);
                }
            }
            TxEvent::Response {
                tx: None, response, ..
            } => {
                // A 2xx retransmission after the client transaction ended.
                let mut resp = response;
                if let Ok(t) = self.id.route_response(&mut resp) {
                    let to = t.socket_addr().unwrap();
                    self.proxy.send_stateless(udp(&to.to_string()), &resp);
                }
            }
            TxEvent::Timeout { tx } => {
                if let Some(&stx) = self.ctx.get(&tx) {
                    if let Some(req) = self.proxy.server_request(stx) {
                        let r = Message::response_for(req, 408, "Request Timeout").unwrap();
                        let _ = self.proxy.send_response(self.now, stx, &r);
                    }
                }
            }
            TxEvent::Terminated { tx } => {
                if let Some(stx) = self.ctx.remove(&tx) {
                    self.rev.remove(&stx);
                }
            }
            _ => {}
        }
    }

    fn cloud_tu(&mut self, e: TxEvent) {
        let TxEvent::Request { tx, request, .. } = e else {
            return;
        };
        self.cloud_requests.push(request.clone());
        let Some(tx) = tx else { return };
        match request.method() {
            Some(Method::Invite) => {
                let ring = Message::response_for(&request, 180, "Ringing").unwrap();
                self.cloud.send_response(self.now, tx, &ring).unwrap();
                if self.cloud_mode == Cloud::Answer {
                    let mut ok = Message::response_for(&request, 200, "OK").unwrap();
                    ok.add_header("Contact", "<sip:200@127.0.0.2:5060>")
                        .unwrap();
                    // Record-Route is copied into the 2xx (RFC 3261 §12.1.1).
                    for rr in request.header_values("Record-Route") {
                        ok.add_header("Record-Route", rr).unwrap();
                    }
                    self.cloud.send_response(self.now, tx, &ok).unwrap();
                } else {
                    self.cloud_pending = Some((tx, request));
                }
            }
            Some(Method::Cancel) => {
                let ok = Message::response_for(&request, 200, "OK").unwrap();
                self.cloud.send_response(self.now, tx, &ok).unwrap();
                if let Some((inv_tx, inv)) = self.cloud_pending.take() {
                    let r = Message::response_for(&inv, 487, "Request Terminated").unwrap();
                    self.cloud.send_response(self.now, inv_tx, &r).unwrap();
                }
            }
            _ => {
                let ok = Message::response_for(&request, 200, "OK").unwrap();
                self.cloud.send_response(self.now, tx, &ok).unwrap();
            }
        }
    }

    fn phone_tu(&mut self, e: TxEvent) {
        if let TxEvent::Response {
            tx: Some(tx),
            response,
            ..
        } = &e
        {
            if Some(*tx) == self.phone_invite
                && (200..300).contains(&response.status().unwrap_or(0))
            {
                // ACK for the 2xx: new branch, Route = Record-Route reversed,
                // Request-URI = the callee's Contact.
                let invite = self.phone.client_request(*tx).unwrap().clone();
                let mut ack = Message::ack_for(&invite, response).unwrap();
                ack.pop_via();
                ack.push_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKack1;rport")
                    .unwrap();
                ack.remove_header("Route");
                for rr in response.record_routes() {
                    ack.prepend_route(&format!("<{}>", rr.uri)).unwrap();
                }
                let contact = response.header("Contact").unwrap().to_owned();
                ack.set_request_uri(contact.trim_matches(['<', '>']))
                    .unwrap();
                self.phone.send_stateless(udp(LAN), &ack);
            }
        }
        let t = self.now - self.start;
        self.phone_events.push((t, e));
    }

    fn drive(&mut self, limit: Duration) {
        let end = self.start + limit;
        loop {
            self.flush();
            let next = [
                self.phone.poll_timeout(),
                self.proxy.poll_timeout(),
                self.cloud.poll_timeout(),
                self.wire.iter().map(|w| w.0).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { break };
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            let mut due = Vec::new();
            let mut i = 0;
            while i < self.wire.len() {
                if self.wire[i].0 <= self.now {
                    due.push(self.wire.remove(i));
                } else {
                    i += 1;
                }
            }
            for (_, from, to, bytes) in due {
                let msg = Message::parse(&bytes).unwrap();
                let from = udp(&from.to_string());
                if to == a(PHONE) {
                    self.phone.handle_incoming(self.now, msg, from);
                } else if to == a(LAN) || to == a(WAN) {
                    self.proxy.handle_incoming(self.now, msg, from);
                } else if to == a(CLOUD) {
                    self.cloud.handle_incoming(self.now, msg, from);
                }
                self.flush();
            }
            self.phone.handle_timeout(self.now);
            self.proxy.handle_timeout(self.now);
            self.cloud.handle_timeout(self.now);
        }
    }

    fn phone_codes(&self) -> Vec<u16> {
        self.phone_events
            .iter()
            .filter_map(|(_, e)| match e {
                TxEvent::Response {
                    tx: Some(t),
                    response,
                    ..
                } if Some(*t) == self.phone_invite => response.status(),
                _ => None,
            })
            .collect()
    }

    fn call(&mut self) -> TxId {
        let invite = Message::parse(
            b"INVITE sip:200@cloud.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKcall1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:100@cloud.test>;tag=p1\r\nTo: <sip:200@cloud.test>\r\nCall-ID: call-1@10.0.0.5\r\nCSeq: 1 INVITE\r\nContact: <sip:100@10.0.0.5:5060>\r\nX-Phone: keep me\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        let tx = self.phone.send_request(self.now, invite, udp(LAN)).unwrap();
        self.phone_invite = Some(tx);
        tx
    }

    fn all_idle(&mut self) -> bool {
        self.phone.is_empty() && self.proxy.is_empty() && self.cloud.is_empty()
    }
}

#[test]
fn invite_through_the_proxy_with_end_to_end_ack() {
    let mut w = World::new(Cloud::Answer);
    w.call();
    w.drive(Duration::from_secs(200));
    assert_eq!(w.phone_codes(), vec![100, 180, 200]);
    let inv = w
        .cloud_requests
        .iter()
        .find(|r| r.method() == Some(&Method::Invite))
        .unwrap();
    assert_eq!(inv.via_count(), 2);
    assert_eq!(inv.max_forwards(), Some(69));
    let rr: Vec<&str> = inv.record_routes().iter().map(|r| r.uri).collect();
    assert_eq!(rr, ["sip:127.0.0.1:5070;lr", "sip:127.0.0.1:5060;lr"]);
    assert_eq!(inv.header("X-Phone"), Some("keep me"));
    assert_eq!(inv.vias().nth(1).unwrap().rport(), Some(Some(5060)));
    // The ACK reached the cloud through the proxy, both own Routes popped.
    let ack = w
        .cloud_requests
        .iter()
        .find(|r| r.method() == Some(&Method::Ack))
        .expect("ACK for 2xx reached the cloud");
    assert!(ack.routes().is_empty());
    assert_eq!(ack.request_uri(), Some("sip:200@127.0.0.2:5060"));
    assert_eq!(ack.via_count(), 2);
    assert!(w.all_idle());
}

#[test]
fn cancel_is_forwarded_and_487_relayed() {
    let mut w = World::new(Cloud::RingForever);
    let tx = w.call();
    w.drive(Duration::from_millis(500));
    assert_eq!(w.phone_codes(), vec![100, 180]);
    let out = w.phone.cancel(w.now, tx).unwrap();
    assert!(matches!(
        out,
        holdline_sip::transaction::CancelOutcome::Sent(_)
    ));
    w.drive(Duration::from_secs(200));
    assert_eq!(w.phone_codes(), vec![100, 180, 487]);
    let cancels = w
        .cloud_requests
        .iter()
        .filter(|r| r.method() == Some(&Method::Cancel))
        .count();
    assert_eq!(cancels, 1);
    // The proxy's CANCEL carries the same branch as its INVITE.
    let inv = w
        .cloud_requests
        .iter()
        .find(|r| r.method() == Some(&Method::Invite))
        .unwrap();
    let can = w
        .cloud_requests
        .iter()
        .find(|r| r.method() == Some(&Method::Cancel))
        .unwrap();
    assert_eq!(
        inv.top_via().unwrap().branch(),
        can.top_via().unwrap().branch()
    );
    assert!(w.all_idle());
}

#[test]
fn silent_cloud_gets_the_phone_a_408() {
    let mut w = World::new(Cloud::Silent);
    w.call();
    w.drive(Duration::from_secs(300));
    assert_eq!(w.phone_codes(), vec![100, 408]);
    assert!(w.all_idle());
}

#[test]
fn register_gets_path_and_200_comes_back() {
    let mut w = World::new(Cloud::Answer);
    let reg = Message::parse(
        b"REGISTER sip:cloud.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKreg9;rport\r\nMax-Forwards: 70\r\nFrom: <sip:100@cloud.test>;tag=r9\r\nTo: <sip:100@cloud.test>\r\nCall-ID: reg-9@10.0.0.5\r\nCSeq: 9 REGISTER\r\nContact: <sip:100@10.0.0.5:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    let tx = w.phone.send_request(w.now, reg, udp(LAN)).unwrap();
    w.drive(Duration::from_secs(100));
    let at_cloud = w
        .cloud_requests
        .iter()
        .find(|r| r.method() == Some(&Method::Register))
        .unwrap();
    assert_eq!(at_cloud.paths()[0].uri, "sip:127.0.0.1:5070;lr");
    let got_200 = w.phone_events.iter().any(|(_, e)| {
        matches!(e, TxEvent::Response { tx: Some(t), response, .. } if *t == tx && response.status() == Some(200))
    });
    assert!(got_200);
    assert!(w.all_idle());
}
