//! Edge tests: a phone and a cloud exchanging messages with the edge under
//! virtual time. No sockets.

use super::*;
use crate::calls::CallState;

const PHONE: &str = "10.0.0.5:5062"; // the phone's NAT'd source address
const CLOUD: &str = "192.0.2.10:5060";

fn peer(s: &str) -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: s.parse().expect("addr"),
    }
}

fn cfg() -> EdgeConfig {
    EdgeConfig {
        lan: vec![peer("10.0.0.1:5060")],
        wan: vec![peer("198.51.100.1:5060")],
        lan_advertise: None,
        wan_advertise: None,
        lan_subnets: vec![Subnet {
            addr: "10.0.0.0".parse().expect("ip"),
            prefix: 8,
        }],
        cloud: peer(CLOUD),
        cloud_addrs: vec![],
        domain: "cloud.test".into(),
        probe: ProbeConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            down_after: 3,
        },
        seed: 7,
    }
}

struct T {
    edge: Edge,
    now: Instant,
}

impl T {
    fn new() -> T {
        T::with_cfg(cfg())
    }
    fn with_cfg(cfg: EdgeConfig) -> T {
        let now = Instant::now();
        let mut edge = Edge::new(cfg, now, 1_000_000);
        // Drain the first probe so tests see only their own traffic.
        edge.handle_timeout(now);
        while edge.poll_transmit().is_some() {}
        T { edge, now }
    }
    fn phone_sends(&mut self, raw: &str) {
        self.edge
            .handle_message(self.now, Side::Lan, peer(PHONE), raw.as_bytes());
    }
    fn cloud_sends(&mut self, raw: &str) {
        self.edge
            .handle_message(self.now, Side::Wan, peer(CLOUD), raw.as_bytes());
    }
    fn out(&mut self) -> Vec<(Transmit, Message)> {
        let mut v = Vec::new();
        while let Some(t) = self.edge.poll_transmit() {
            let m = Message::parse(&t.bytes).expect("edge sends valid SIP");
            v.push((t, m));
        }
        v
    }
    /// The one message out besides the 100 Trying holdline answers an
    /// INVITE with (the tests of that are `trying_*`).
    fn one(&mut self) -> (Transmit, Message) {
        let mut v: Vec<_> = self
            .out()
            .into_iter()
            .filter(|(_, m)| m.status() != Some(100))
            .collect();
        assert_eq!(v.len(), 1, "expected exactly one message out");
        v.remove(0)
    }
}

fn register(cseq: u32, contact: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKreg{cseq};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@cloud.test>;tag=r1\r\n\
         To: <sip:alice@cloud.test>\r\n\
         Call-ID: reg-alice\r\n\
         CSeq: {cseq} REGISTER\r\n\
         Contact: {contact}\r\n\
         {extra}Content-Length: 0\r\n\r\n"
    )
}

/// The cloud's answer to a forwarded request (echoes Via/From/To/Call-ID/CSeq).
fn answer(req: &Message, code: u16, reason: &str, extra: &str) -> String {
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for v in req.header_values("Via") {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    r.push_str(&format!("From: {}\r\n", req.header("From").expect("from")));
    let to = req.header("To").expect("to");
    if req.to_tag().is_none() && code > 100 {
        r.push_str(&format!("To: {to};tag=cloud1\r\n"));
    } else {
        r.push_str(&format!("To: {to}\r\n"));
    }
    r.push_str(&format!("Call-ID: {}\r\n", req.call_id().expect("cid")));
    r.push_str(&format!("CSeq: {}\r\n", req.header("CSeq").expect("cseq")));
    r.push_str(extra);
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

fn register_alice(t: &mut T) {
    t.phone_sends(&register(
        1,
        "<sip:alice@192.168.1.5:5060>",
        "Expires: 3600\r\n",
    ));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(
        &fwd,
        200,
        "OK",
        "Contact: <sip:alice@192.168.1.5:5060>;expires=3600\r\n",
    ));
    let job = t.edge.poll_store().expect("store job");
    let token = job.token.expect("token");
    t.edge.handle_store_done(t.now, token, true);
    let _ = t.out();
}

#[test]
fn register_gets_path_and_2xx_waits_for_the_store() {
    let mut t = T::new();
    t.phone_sends(&register(
        1,
        "<sip:alice@192.168.1.5:5060>",
        "Expires: 3600\r\n",
    ));
    let (tx, fwd) = t.one();
    assert_eq!(tx.side, Side::Wan);
    assert_eq!(tx.to, peer(CLOUD));
    let path: Vec<String> = fwd.paths().iter().map(|p| p.uri.to_string()).collect();
    assert_eq!(path, vec!["sip:198.51.100.1:5060;lr".to_string()]);
    assert_eq!(fwd.via_count(), 2);
    assert!(fwd
        .top_via()
        .and_then(|v| v.branch())
        .is_some_and(|b| b.starts_with(BRANCH_PREFIX)));
    assert_eq!(fwd.max_forwards(), Some(69));
    // the phone's Via got received/rport (NAT-safe return)
    let second = fwd.vias().nth(1).expect("phone via");
    assert_eq!(second.received(), Some("10.0.0.5"));
    assert_eq!(second.rport(), Some(Some(5062)));

    // 401 challenge passes straight back, changes nothing
    t.cloud_sends(&answer(
        &fwd,
        401,
        "Unauthorized",
        "WWW-Authenticate: Digest realm=\"cloud.test\", nonce=\"abc\"\r\n",
    ));
    let (tx, ch) = t.one();
    assert_eq!(tx.side, Side::Lan);
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(ch.status(), Some(401));
    assert_eq!(ch.via_count(), 1);
    assert!(ch
        .header("WWW-Authenticate")
        .is_some_and(|h| h.contains("nonce=\"abc\"")));
    assert!(t.edge.poll_store().is_none());
    assert!(t.edge.bindings().is_empty());

    // the phone answers the challenge; the Authorization header is untouched
    let auth = "Authorization: Digest username=\"alice\", realm=\"cloud.test\", nonce=\"abc\", uri=\"sip:cloud.test\", response=\"0123\"\r\n";
    t.phone_sends(&register(
        2,
        "<sip:alice@192.168.1.5:5060>",
        &format!("Expires: 3600\r\n{auth}"),
    ));
    let (_, fwd2) = t.one();
    assert_eq!(
        fwd2.header("Authorization"),
        Some(auth["Authorization: ".len()..].trim_end())
    );
    t.cloud_sends(&answer(
        &fwd2,
        200,
        "OK",
        "Contact: <sip:alice@192.168.1.5:5060>;expires=1800\r\n",
    ));
    // nothing goes to the phone before the store confirms
    assert!(t.out().is_empty());
    let job = t.edge.poll_store().expect("store job");
    let token = job.token.expect("waits for durability");
    match &job.writes[..] {
        [StoreWrite::UpsertBinding(b)] => {
            assert_eq!(b.aor, "sip:alice@cloud.test");
            assert_eq!(b.contact_uri, "sip:alice@192.168.1.5:5060");
            assert_eq!(b.expires_at, 1_000_000 + 1800);
            assert_eq!(b.source, PHONE.parse().expect("addr"));
            assert_eq!(b.cseq, 2);
            assert_eq!(b.call_id, "reg-alice");
            assert_eq!(b.provenance, Provenance::CloudVerified { at: 1_000_000 });
        }
        other => panic!("unexpected writes {other:?}"),
    }
    assert_eq!(t.edge.held(), 1);
    t.edge.handle_store_done(t.now, token, true);
    let (tx, ok) = t.one();
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(ok.status(), Some(200));
    assert_eq!(t.edge.bindings().len(), 1);
}

#[test]
fn store_failure_turns_the_2xx_into_500() {
    let mut t = T::new();
    t.phone_sends(&register(1, "<sip:alice@192.168.1.5:5060>", ""));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(
        &fwd,
        200,
        "OK",
        "Contact: <sip:alice@192.168.1.5:5060>;expires=60\r\n",
    ));
    let token = t.edge.poll_store().and_then(|j| j.token).expect("token");
    t.edge.handle_store_done(t.now, token, false);
    let (_, r) = t.one();
    assert_eq!(r.status(), Some(500));
    assert_eq!(r.call_id(), Some("reg-alice"));
}

#[test]
fn rejected_register_changes_nothing() {
    let mut t = T::new();
    register_alice(&mut t);
    let before = t.edge.bindings().iter().cloned().collect::<Vec<_>>();
    t.phone_sends(&register(
        5,
        "<sip:alice@192.168.1.5:5060>",
        "Expires: 0\r\n",
    ));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(&fwd, 403, "Forbidden", ""));
    let (_, r) = t.one();
    assert_eq!(r.status(), Some(403));
    assert!(t.edge.poll_store().is_none());
    assert_eq!(
        t.edge.bindings().iter().cloned().collect::<Vec<_>>(),
        before
    );
    assert_eq!(t.edge.stats().register_refused, 1);
}

#[test]
fn expires_zero_and_star_remove() {
    let mut t = T::new();
    register_alice(&mut t);
    t.phone_sends(&register(3, "<sip:alice@192.168.1.5:5060>;expires=0", ""));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    let job = t.edge.poll_store().expect("job");
    assert_eq!(
        job.writes,
        vec![StoreWrite::RemoveBinding {
            aor: "sip:alice@cloud.test".into(),
            contact_uri: "sip:alice@192.168.1.5:5060".into()
        }]
    );
    assert!(t.edge.bindings().is_empty());

    register_alice(&mut t);
    assert_eq!(t.edge.bindings().len(), 1);
    t.phone_sends(&register(9, "*", "Expires: 0\r\n"));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    let job = t.edge.poll_store().expect("job");
    assert_eq!(
        job.writes,
        vec![StoreWrite::RemoveAor {
            aor: "sip:alice@cloud.test".into()
        }]
    );
    assert!(t.edge.bindings().is_empty());
}

fn inbound_invite() -> String {
    "INVITE sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
     Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1\r\n\
     Route: <sip:198.51.100.1:5060;lr>\r\n\
     Max-Forwards: 69\r\n\
     From: <sip:bob@cloud.test>;tag=b1\r\n\
     To: <sip:alice@cloud.test>\r\n\
     Call-ID: call-in-1\r\n\
     CSeq: 1 INVITE\r\n\
     Contact: <sip:bob@192.0.2.10:5060>\r\n\
     Content-Length: 0\r\n\r\n"
        .to_string()
}

#[test]
fn inbound_request_reaches_the_phone_also_after_restart() {
    let mut t = T::new();
    register_alice(&mut t);
    let saved: Vec<Binding> = t.edge.bindings().iter().cloned().collect();

    // a fresh edge (restart) with the bindings reloaded from the store
    let later = t.now + Duration::from_secs(60);
    let mut edge = Edge::new(cfg(), later, 1_000_060);
    assert_eq!(edge.load_bindings(later, saved), 1);
    edge.handle_timeout(later);
    while edge.poll_transmit().is_some() {}
    let mut t2 = T { edge, now: later };
    t2.cloud_sends(&inbound_invite());
    let (tx, fwd) = t2.one();
    assert_eq!(tx.side, Side::Lan);
    assert_eq!(
        tx.to,
        peer(PHONE),
        "NAT-safe: the address the REGISTER came from"
    );
    assert!(fwd.routes().is_empty(), "our Path route was consumed");
    let rr: Vec<String> = fwd
        .record_routes()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(rr, vec!["sip:10.0.0.1:5060;lr", "sip:198.51.100.1:5060;lr"]);
    let call = t2
        .edge
        .calls()
        .get("call-in-1", "b1", Direction::Inbound)
        .expect("tracked");
    assert_eq!(call.direction, Direction::Inbound);

    // the phone rings and answers; responses go back to the cloud
    t2.edge.handle_message(
        later,
        Side::Lan,
        peer(PHONE),
        answer(&fwd, 180, "Ringing", "").as_bytes(),
    );
    let (tx, r) = t2.one();
    assert_eq!(tx.to, peer(CLOUD));
    assert_eq!(r.via_count(), 1);
    assert_eq!(
        t2.edge
            .calls()
            .get("call-in-1", "b1", Direction::Inbound)
            .map(|c| c.state.name()),
        Some("early")
    );
    t2.edge.handle_message(
        later,
        Side::Lan,
        peer(PHONE),
        answer(&fwd, 200, "OK", "").as_bytes(),
    );
    let _ = t2.out();
    assert_eq!(
        t2.edge
            .calls()
            .get("call-in-1", "b1", Direction::Inbound)
            .map(|c| c.state.name()),
        Some("confirmed")
    );
}

#[test]
fn unknown_contact_from_the_cloud_is_404() {
    let mut t = T::new();
    t.cloud_sends(&inbound_invite().replace("192.168.1.5", "203.0.113.9"));
    let (tx, r) = t.one();
    assert_eq!(tx.side, Side::Wan);
    assert_eq!(r.status(), Some(404));
}

#[test]
fn access_rules() {
    let mut t = T::new();
    // LAN: only the cloud's domain
    let inv = "INVITE sip:bob@evil.example SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx1\r\n\
        From: <sip:alice@cloud.test>;tag=a\r\nTo: <sip:bob@evil.example>\r\n\
        Call-ID: x1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(inv);
    let (tx, r) = t.one();
    assert_eq!((tx.side, r.status()), (Side::Lan, Some(403)));
    // LAN: a source outside the site's subnets
    t.edge.handle_message(
        t.now,
        Side::Lan,
        peer("172.16.0.1:5060"),
        register(1, "<sip:x@172.16.0.1>", "").as_bytes(),
    );
    let (_, r) = t.one();
    assert_eq!(r.status(), Some(403));
    // WAN: only the cloud may send requests
    t.edge.handle_message(
        t.now,
        Side::Wan,
        peer("203.0.113.66:5060"),
        inbound_invite().as_bytes(),
    );
    let (tx, r) = t.one();
    assert_eq!(
        (tx.side, tx.to, r.status()),
        (Side::Wan, peer("203.0.113.66:5060"), Some(403))
    );
    assert_eq!(t.edge.stats().forbidden, 3);
}

#[test]
fn outbound_call_states_and_record_route() {
    let mut t = T::new();
    let inv = "INVITE sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKc1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@cloud.test>;tag=a1\r\nTo: <sip:bob@cloud.test>\r\n\
        Call-ID: out-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(inv);
    let (tx, fwd) = t.one();
    assert_eq!(tx.to, peer(CLOUD));
    let rr: Vec<String> = fwd
        .record_routes()
        .iter()
        .map(|r| r.uri.to_string())
        .collect();
    assert_eq!(rr, vec!["sip:198.51.100.1:5060;lr", "sip:10.0.0.1:5060;lr"]);
    // retransmission: the cloud has it (holdline's Timer A repeats it over
    // UDP); the phone gets the 100 again, nothing more goes upstream
    t.phone_sends(inv);
    let out = t.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0.to, out[0].1.status()), (peer(PHONE), Some(100)));
    assert_eq!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| c.state.name()),
        Some("trying")
    );
    // the cloud's 100 is not relayed (the phone had ours)
    t.cloud_sends(&answer(&fwd, 100, "Trying", ""));
    assert!(t.out().is_empty());
    assert_eq!(t.edge.stats().trying_dropped, 1);
    assert_eq!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| c.state.name()),
        Some("trying")
    );
    t.cloud_sends(&answer(&fwd, 180, "Ringing", ""));
    assert_eq!(t.one().0.to, peer(PHONE));
    assert_eq!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| c.state.name()),
        Some("early")
    );
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    let _ = t.one();
    assert_eq!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| c.state.name()),
        Some("confirmed")
    );
    // A provisional overtaken by the final is absorbed; a retransmitted 2xx
    // (also after a retransmitted INVITE) still goes through.
    t.cloud_sends(&answer(&fwd, 180, "Ringing", ""));
    assert!(t.out().is_empty(), "no 180 after the 200");
    assert_eq!(t.edge.stats().late_provisional, 1);
    // A retransmitted INVITE after the 2xx is absorbed (the UAS repeats its 2xx).
    t.phone_sends(inv);
    assert!(
        t.out().is_empty(),
        "INVITE retransmission after 2xx not forwarded"
    );
    // (the first absorbed retransmission is the one answered 100 above)
    assert_eq!(t.edge.stats().absorbed, 2);
    t.cloud_sends(&answer(&fwd, 183, "Session Progress", ""));
    assert!(t.out().is_empty(), "still no provisional after the 200");
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    assert_eq!(t.one().1.status(), Some(200));
    assert_eq!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| c.state.name()),
        Some("confirmed")
    );
    // BYE from the phone through our Record-Route
    let bye = "BYE sip:bob@192.0.2.20:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKb1\r\n\
        Route: <sip:10.0.0.1:5060;lr>, <sip:198.51.100.1:5060;lr>\r\n\
        From: <sip:alice@cloud.test>;tag=a1\r\nTo: <sip:bob@cloud.test>;tag=cloud1\r\n\
        Call-ID: out-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(bye);
    let (tx, fwd_bye) = t.one();
    assert_eq!(
        tx.to,
        peer(CLOUD),
        "in-dialog requests go to the cloud, never to the R-URI host"
    );
    assert!(fwd_bye.routes().is_empty());
    assert!(matches!(
        t.edge
            .calls()
            .get("out-1", "a1", Direction::Outbound)
            .map(|c| &c.state),
        Some(CallState::Terminated { .. })
    ));
}

#[test]
fn blf_subscription_and_mwi_are_observed() {
    let mut t = T::new();
    register_alice(&mut t);
    let sub = "SUBSCRIBE sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKs1\r\n\
        From: <sip:alice@cloud.test>;tag=s1\r\nTo: <sip:bob@cloud.test>\r\n\
        Call-ID: sub-1\r\nCSeq: 10 SUBSCRIBE\r\nEvent: dialog\r\nExpires: 600\r\n\
        Contact: <sip:alice@192.168.1.5:5060>\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(sub);
    let (_, fwd) = t.one();
    assert_eq!(fwd.record_routes().len(), 2);
    t.cloud_sends(&answer(&fwd, 200, "OK", "Expires: 600\r\n"));
    let _ = t.one();
    let s = t.edge.subs().get("sub-1;s1").expect("tracked");
    assert_eq!(s.state, SubState::Active);
    assert_eq!(s.notifier_tag.as_deref(), Some("cloud1"));
    assert_eq!(s.expires_at, 1_000_000 + 600);
    let _ = t.edge.poll_store();

    let body = "<?xml version=\"1.0\"?>\r\n<dialog-info xmlns=\"urn:ietf:params:xml:ns:dialog-info\" version=\"3\" state=\"full\" entity=\"sip:bob@cloud.test\"><dialog id=\"x\"><state>confirmed</state></dialog></dialog-info>";
    let notify = format!(
        "NOTIFY sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKn1\r\n\
        Route: <sip:198.51.100.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n\
        From: <sip:bob@cloud.test>;tag=cloud1\r\nTo: <sip:alice@cloud.test>;tag=s1\r\n\
        Call-ID: sub-1\r\nCSeq: 4 NOTIFY\r\nEvent: dialog\r\n\
        Subscription-State: active;expires=599\r\nContent-Type: application/dialog-info+xml\r\n\
        Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    t.cloud_sends(&notify);
    let (tx, n) = t.one();
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(n.body(), body.as_bytes());
    let s = t.edge.subs().get("sub-1;s1").expect("tracked");
    assert_eq!(s.last_version, Some(3));
    assert_eq!(s.notify_cseq, 4);
    assert_eq!(s.notifies, 1);
    assert!(s
        .last_body
        .as_deref()
        .is_some_and(|b| b.contains("confirmed")));
    let job = t.edge.poll_store().expect("subscription persisted");
    assert!(
        matches!(&job.writes[0], StoreWrite::UpsertSubscription(x) if x.last_version == Some(3))
    );

    // an MWI NOTIFY (unsolicited or in a dialog we did not see) is cached by AoR
    let mwi = "Messages-Waiting: yes\r\nVoice-Message: 2/1 (0/0)\r\n";
    let n2 = format!(
        "NOTIFY sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKn2\r\n\
        From: <sip:alice@cloud.test>;tag=vm\r\nTo: <sip:alice@cloud.test>;tag=m1\r\n\
        Call-ID: mwi-1\r\nCSeq: 1 NOTIFY\r\nEvent: message-summary\r\n\
        Subscription-State: active\r\nContent-Type: application/simple-message-summary\r\n\
        Content-Length: {}\r\n\r\n{mwi}",
        mwi.len()
    );
    t.cloud_sends(&n2);
    let _ = t.one();
    let m = t.edge.subs().mwi("sip:alice@cloud.test").expect("cached");
    assert!(m.waiting());
    assert!(matches!(
        &t.edge.poll_store().expect("mwi persisted").writes[0],
        StoreWrite::SetMwi { aor, .. } if aor == "sip:alice@cloud.test"
    ));
}

#[test]
fn probe_measures_rtt_and_goes_down_on_silence() {
    let now = Instant::now();
    let mut edge = Edge::new(cfg(), now, 0);
    edge.handle_timeout(now);
    let probe = edge.poll_transmit().expect("probe sent");
    assert_eq!(probe.to, peer(CLOUD));
    let m = Message::parse(&probe.bytes).expect("valid OPTIONS");
    assert_eq!(m.method(), Some(&Method::Options));
    let later = now + Duration::from_millis(40);
    let resp = answer(&m, 200, "OK", "");
    edge.handle_message(later, Side::Wan, peer(CLOUD), resp.as_bytes());
    assert!(edge.poll_transmit().is_none(), "probe answers are consumed");
    assert_eq!(edge.probe().state_name(), "up");
    assert_eq!(edge.probe().last_rtt, Some(Duration::from_millis(40)));
    assert_eq!(edge.probe().answered, 1);
    // silence: three missed probes → down (follow poll_timeout, virtual time)
    let mut seen_suspect = false;
    for _ in 0..200 {
        let t = edge.poll_timeout();
        edge.handle_timeout(t);
        while edge.poll_transmit().is_some() {}
        seen_suspect |= edge.probe().state_name() == "suspect";
        if edge.probe().state_name() == "down" {
            break;
        }
    }
    assert!(seen_suspect);
    // the transitions are logged and go to the store's event log
    let mut logged = Vec::new();
    while let Some(l) = edge.poll_log() {
        logged.push(l);
    }
    assert!(logged.iter().any(|l| l.contains("-> down")), "{logged:?}");
    assert_eq!(edge.probe().state_name(), "down");
}

#[test]
fn keepalive_options_to_us_and_garbage() {
    let mut t = T::new();
    t.phone_sends(
        "OPTIONS sip:10.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKo1\r\n\
         From: <sip:alice@cloud.test>;tag=o\r\nTo: <sip:10.0.0.1>\r\nCall-ID: ka\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
    );
    let (tx, r) = t.one();
    assert_eq!((tx.to, r.status()), (peer(PHONE), Some(200)));
    t.phone_sends("\r\n\r\n");
    t.phone_sends("GARBAGE \u{0}\u{1}");
    t.cloud_sends("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKnotours\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: z\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    assert!(t.out().is_empty());
    assert_eq!(t.edge.stats().bad, 1);
    assert_eq!(t.edge.stats().dropped, 1);
}

#[test]
fn max_forwards_zero_is_483() {
    let mut t = T::new();
    t.phone_sends(
        &register(1, "<sip:a@10.0.0.5>", "").replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    let (_, r) = t.one();
    assert_eq!(r.status(), Some(483));
}

#[test]
fn expired_bindings_are_purged_in_memory() {
    let mut t = T::new();
    t.phone_sends(&register(1, "<sip:alice@192.168.1.5:5060>", ""));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(
        &fwd,
        200,
        "OK",
        "Contact: <sip:alice@192.168.1.5:5060>;expires=30\r\n",
    ));
    let token = t.edge.poll_store().and_then(|j| j.token).expect("token");
    t.edge.handle_store_done(t.now, token, true);
    assert_eq!(t.edge.bindings().len(), 1);
    let later = t.now + Duration::from_secs(31);
    t.edge.handle_timeout(later);
    assert!(t.edge.bindings().is_empty());
}

#[test]
fn a_site_to_site_call_is_tracked_on_both_legs_and_survives_a_challenge() {
    let mut t = T::new();
    register_alice(&mut t);
    let inv = |cseq: u32, branch: &str| {
        format!(
            "INVITE sip:alice@cloud.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.0.0.7:5062;branch={branch}\r\n\
             From: <sip:bob@cloud.test>;tag=bb\r\nTo: <sip:alice@cloud.test>\r\n\
             Call-ID: hairpin\r\nCSeq: {cseq} INVITE\r\nContact: <sip:bob@10.0.0.7:5062>\r\n\
             Content-Length: 0\r\n\r\n"
        )
    };
    let bob = peer("10.0.0.7:5062");
    t.edge
        .handle_message(t.now, Side::Lan, bob, inv(1, "z9hG4bKh1").as_bytes());
    let (_, f1) = t.one();
    t.cloud_sends(&answer(&f1, 407, "Proxy Authentication Required", ""));
    let _ = t.out();
    let leg = |t: &T, d| {
        t.edge
            .calls()
            .get("hairpin", "bb", d)
            .map(|c| c.state.name())
    };
    assert_eq!(leg(&t, Direction::Outbound), Some("terminated"));
    // the authenticated INVITE starts the call again
    t.edge
        .handle_message(t.now, Side::Lan, bob, inv(2, "z9hG4bKh2").as_bytes());
    let (_, f2) = t.one();
    assert_eq!(leg(&t, Direction::Outbound), Some("trying"));
    // the cloud hairpins it back to alice through our Path: same Call-ID and tags
    let back = format!(
        "INVITE sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKk2\r\n\
         {}\
         Route: <sip:198.51.100.1:5060;lr>\r\n\
         From: <sip:bob@cloud.test>;tag=bb\r\nTo: <sip:alice@cloud.test>\r\n\
         Call-ID: hairpin\r\nCSeq: 2 INVITE\r\nContact: <sip:bob@10.0.0.7:5062>\r\n\
         Content-Length: 0\r\n\r\n",
        f2.header_values("Via")
            .map(|v| format!("Via: {v}\r\n"))
            .collect::<String>()
    );
    t.cloud_sends(&back);
    let (tx, to_alice) = t.one();
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(leg(&t, Direction::Inbound), Some("trying"));
    // alice answers; the 200 goes to the cloud, which relays it to bob through us
    t.phone_sends(&answer(&to_alice, 200, "OK", ""));
    let (_, ok_up) = t.one();
    assert_eq!(leg(&t, Direction::Inbound), Some("confirmed"));
    assert_eq!(ok_up.via_count(), f2.via_count() + 1);
    t.cloud_sends(&answer(&f2, 200, "OK", ""));
    let (tx, _) = t.one();
    assert_eq!(tx.to, bob);
    assert_eq!(leg(&t, Direction::Outbound), Some("confirmed"));
    // bob hangs up: his BYE ends his leg only; alice's ends when it reaches her
    let bye = "BYE sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.7:5062;branch=z9hG4bKbye\r\n\
        Route: <sip:10.0.0.1:5060;lr>, <sip:198.51.100.1:5060;lr>, <sip:192.0.2.10;lr>\r\n\
        From: <sip:bob@cloud.test>;tag=bb\r\nTo: <sip:alice@cloud.test>;tag=cloud1\r\n\
        Call-ID: hairpin\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n";
    t.edge.handle_message(t.now, Side::Lan, bob, bye.as_bytes());
    let (tx, _) = t.one();
    assert_eq!(tx.to, peer("192.0.2.10:5060"));
    assert_eq!(leg(&t, Direction::Outbound), Some("terminated"));
    assert_eq!(leg(&t, Direction::Inbound), Some("confirmed"));
    let bye2 = "BYE sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye2\r\n\
        Route: <sip:198.51.100.1:5060;lr>, <sip:10.0.0.1:5060;lr>\r\n\
        From: <sip:bob@cloud.test>;tag=bb\r\nTo: <sip:alice@cloud.test>;tag=cloud1\r\n\
        Call-ID: hairpin\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n";
    t.cloud_sends(bye2);
    let (tx, _) = t.one();
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(leg(&t, Direction::Inbound), Some("terminated"));
}

/// No input from either side may panic the edge: valid messages mutated at
/// random (bytes flipped, cut, duplicated), deterministic seed.
#[test]
fn mutated_messages_never_panic() {
    let mut t = T::new();
    register_alice(&mut t);
    let seeds: Vec<String> = vec![
        register(1, "<sip:alice@192.168.1.5:5060>;expires=60", "Expires: 60\r\n"),
        register(2, "*", "Expires: 0\r\n"),
        inbound_invite(),
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-hlL0123456789abcdef;rport\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKx;received=10.0.0.5;rport=5062\r\n\
         From: <sip:a@cloud.test>;tag=1\r\nTo: <sip:a@cloud.test>;tag=2\r\nCall-ID: c\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:a@10.0.0.5>;expires=99999999999\r\nContent-Length: 0\r\n\r\n"
            .to_string(),
        "NOTIFY sip:alice@192.168.1.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKn\r\n\
         From: <sip:b@cloud.test>;tag=f\r\nTo: <sip:alice@cloud.test>;tag=t\r\nCall-ID: n\r\n\
         CSeq: 1 NOTIFY\r\nEvent: message-summary\r\nSubscription-State: terminated;reason=x\r\n\
         Content-Type: application/dialog-info+xml\r\nContent-Length: 34\r\n\r\n<dialog-info version=\"99999999999\""
            .to_string(),
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..20_000u64 {
        let base = seeds[(next() % seeds.len() as u64) as usize].as_bytes();
        let mut m = base.to_vec();
        for _ in 0..(next() % 4 + 1) {
            let len = m.len().max(1) as u64;
            match next() % 5 {
                0 => {
                    let p = (next() % len) as usize;
                    if p < m.len() {
                        m[p] = (next() & 0xff) as u8;
                    }
                }
                1 => m.truncate((next() % len) as usize),
                2 => {
                    let p = (next() % len) as usize;
                    let q = (p + (next() % 32) as usize).min(m.len());
                    let chunk = m[p.min(m.len())..q].to_vec();
                    m.splice(q..q, chunk);
                }
                3 => {
                    let p = (next() % len) as usize;
                    if p < m.len() {
                        m.remove(p);
                    }
                }
                _ => {
                    let p = (next() % len) as usize;
                    let ins: &[u8] = match next() % 4 {
                        0 => b"\r\n",
                        1 => b",",
                        2 => b";",
                        _ => b"<",
                    };
                    m.splice(p.min(m.len())..p.min(m.len()), ins.iter().copied());
                }
            }
        }
        let side = if i % 2 == 0 { Side::Lan } else { Side::Wan };
        let from = if side == Side::Lan {
            peer(PHONE)
        } else {
            peer(CLOUD)
        };
        t.edge.handle_message(t.now, side, from, &m);
        while let Some(job) = t.edge.poll_store() {
            if let Some(tok) = job.token {
                t.edge.handle_store_done(t.now, tok, i % 3 != 0);
            }
        }
        while t.edge.poll_transmit().is_some() {}
        if i % 1000 == 0 {
            t.now += Duration::from_secs(7);
            t.edge.handle_timeout(t.now);
        }
    }
    assert!(t.edge.stats().rx >= 20_000);
}

#[test]
fn an_unanswered_subscribe_is_forgotten() {
    let mut t = T::new();
    // The cloud counts as up throughout (this test jumps past many missed
    // probes): a SUBSCRIBE left unanswered by a cloud that is down would be
    // served here instead (`unanswered_requests_feed_the_uplink_...`).
    t.edge
        .set_cloud_mode(t.now, holdline_survival::uplink::Mode::ForcedUp);
    let sub = "SUBSCRIBE sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKs9\r\n\
        From: <sip:alice@cloud.test>;tag=s9\r\nTo: <sip:bob@cloud.test>\r\n\
        Call-ID: sub-9\r\nCSeq: 1 SUBSCRIBE\r\nEvent: dialog\r\nExpires: 600\r\n\
        Contact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(sub);
    let _ = t.out();
    assert_eq!(
        t.edge.subs().get("sub-9;s9").map(|s| s.state.name()),
        Some("pending")
    );
    t.edge.handle_timeout(t.now + Duration::from_secs(30));
    assert!(t.edge.subs().get("sub-9;s9").is_some());
    t.edge.handle_timeout(t.now + Duration::from_secs(70));
    assert!(t.edge.subs().get("sub-9;s9").is_none());
}

#[test]
fn retransmitted_requests_after_a_final_get_that_final_again() {
    let mut t = T::new();
    let inv = "INVITE sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbusy1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@cloud.test>;tag=a9\r\nTo: <sip:bob@cloud.test>\r\n\
        Call-ID: busy-1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(inv);
    let (_, fwd) = t.one();
    // While no final has come back, a retransmission is answered with a
    // 100 again and not forwarded (holdline's own Timer A repeats the
    // INVITE upstream over UDP).
    t.phone_sends(inv);
    let (tx, trying) = t.out().remove(0);
    assert_eq!((tx.to, trying.status()), (peer(PHONE), Some(100)));
    assert_eq!(t.edge.stats().absorbed, 1);
    t.cloud_sends(&answer(&fwd, 486, "Busy Here", ""));
    let (tx, busy) = t.one();
    assert_eq!((tx.to, busy.status()), (peer(PHONE), Some(486)));
    // The 486 was lost on the LAN: the phone retransmits and gets it again,
    // the cloud sees nothing.
    t.phone_sends(inv);
    let (tx, again) = t.one();
    assert_eq!(
        (tx.side, tx.to, again.status()),
        (Side::Lan, peer(PHONE), Some(486))
    );
    assert_eq!(t.edge.stats().absorbed, 2);
    // The ACK for the 486 still goes through (same branch, never absorbed).
    let ack = "ACK sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKbusy1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@cloud.test>;tag=a9\r\nTo: <sip:bob@cloud.test>;tag=cloud1\r\n\
        Call-ID: busy-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(ack);
    assert_eq!(t.one().0.to, peer(CLOUD));
    // A non-INVITE: the cloud's 200 to an OPTIONS is repeated for its retransmission.
    let opt = "OPTIONS sip:bob@cloud.test SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKopt1\r\n\
        Max-Forwards: 70\r\n\
        From: <sip:alice@cloud.test>;tag=o1\r\nTo: <sip:bob@cloud.test>\r\n\
        Call-ID: opt-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    t.phone_sends(opt);
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    assert_eq!(t.one().1.status(), Some(200));
    t.phone_sends(opt);
    let (tx, again) = t.one();
    assert_eq!((tx.to, again.status()), (peer(PHONE), Some(200)));
    assert_eq!(t.edge.stats().absorbed, 3);
    // A final is kept only for a while (memory): later the request goes on.
    t.now += Duration::from_secs(11);
    t.phone_sends(opt);
    assert_eq!(t.one().0.to, peer(CLOUD));
    assert_eq!(t.edge.stats().absorbed, 3);
}

/// Follows the edge's timer in virtual time until `until`, answering
/// nothing from the cloud; returns what went to the LAN and the last time.
fn run_silent(t: &mut T, until: Instant) -> Vec<(Transmit, Message)> {
    let mut lan = Vec::new();
    for _ in 0..10_000 {
        let at = t.edge.poll_timeout().max(t.now);
        if at > until {
            break;
        }
        t.now = at;
        t.edge.handle_timeout(at);
        while let Some(job) = t.edge.poll_store() {
            if let Some(token) = job.token {
                t.edge.handle_store_done(at, token, true);
            }
        }
        lan.extend(t.out().into_iter().filter(|(x, _)| x.side == Side::Lan));
    }
    t.now = until;
    lan
}

/// Follows the edge's timer until `until`, the cloud answering every probe.
fn answer_probes_until(t: &mut T, until: Instant) {
    for _ in 0..10_000 {
        let at = t.edge.poll_timeout().max(t.now);
        if at > until {
            break;
        }
        t.now = at;
        t.edge.handle_timeout(at);
        for (x, m) in t.out() {
            if x.side == Side::Wan && m.method() == Some(&Method::Options) {
                t.cloud_sends(&answer(&m, 200, "OK", ""));
            }
        }
    }
    t.now = until;
}

fn message_request(branch: &str) -> String {
    format!(
        "MESSAGE sip:bob@cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5062;branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@cloud.test>;tag=m1\r\nTo: <sip:bob@cloud.test>\r\n\
         Call-ID: msg-{branch}\r\nCSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"
    )
}

#[test]
fn a_non_invite_the_cloud_leaves_silent_is_a_transaction_timeout_then_a_503() {
    // Probes a minute apart: within the window only the request is evidence.
    let mut c = cfg();
    c.probe.interval = Duration::from_secs(60);
    let mut t = T::with_cfg(c);
    // The cloud answers probes until it goes silent.
    let start = t.now + Duration::from_secs(2);
    answer_probes_until(&mut t, start);
    assert_eq!(t.edge.probe().state_name(), "up");
    let msg = message_request("z9hG4bKmsg1");
    t.phone_sends(&msg);
    let (tx, _) = t.one();
    assert_eq!(tx.to, peer(CLOUD));
    // The phone retransmits (UDP): forwarded, but the first send's time counts.
    t.now = start + Duration::from_millis(500);
    t.phone_sends(&msg);
    assert_eq!(t.one().0.to, peer(CLOUD));
    // Nothing for 2 s: one transaction time-out for the uplink monitor; the
    // cloud still counts as usable (Suspect), so the phone waits for it.
    let lan = run_silent(&mut t, start + CLOUD_SILENT);
    assert!(lan.is_empty(), "{lan:?}");
    assert_eq!(t.edge.stats().cloud_timeouts, 1);
    let c = t.edge.probe().status(t.now).counters;
    assert_eq!(c.transaction_timeouts, 1);
    assert_eq!(t.edge.probe().state_name(), "suspect");
    let why = t.edge.probe().last_change.expect("a transition");
    assert_eq!(
        crate::uplink::reason_name(&why.reason),
        "transaction_timeout"
    );
    // The probes go unanswered too: Down, and then the phone gets a clean
    // answer from here instead of silence until its Timer F.
    let lan = run_silent(&mut t, start + Duration::from_secs(6));
    assert_eq!(t.edge.probe().state_name(), "down");
    assert_eq!(lan.len(), 1, "{lan:?}");
    let (tx, resp) = &lan[0];
    assert_eq!(tx.to, peer(PHONE));
    assert_eq!(resp.status(), Some(503));
    assert!(resp.header("Retry-After").is_some(), "{resp:?}");
    assert_eq!(resp.call_id(), Some("msg-z9hG4bKmsg1"));
    assert_eq!(t.edge.stats().cloud_timeouts, 1, "reported once");
    assert_eq!(t.edge.stats().cloud_timeouts_503, 1);
    // A late retransmission gets the same 503; the cloud sees nothing.
    t.phone_sends(&msg);
    let (tx, again) = t.one();
    assert_eq!((tx.side, again.status()), (Side::Lan, Some(503)));
    let logged: Vec<String> = std::iter::from_fn(|| t.edge.poll_log()).collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("-> suspect (transaction_timeout)")),
        "{logged:?}"
    );
    assert!(logged.iter().any(|l| l.contains("503")), "{logged:?}");
}

#[test]
fn an_answered_request_is_no_timeout_and_a_provisional_is_an_answer() {
    let mut t = T::new();
    let start = t.now;
    t.phone_sends(&message_request("z9hG4bKmsg2"));
    let (_, fwd) = t.one();
    t.now = start + Duration::from_millis(100);
    t.cloud_sends(&answer(&fwd, 200, "OK", ""));
    assert_eq!(t.one().1.status(), Some(200));
    t.phone_sends(&message_request("z9hG4bKmsg3"));
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(&fwd, 100, "Trying", ""));
    // an answer for the watch, but not relayed (RFC 3261 §16.7)
    assert!(t.out().is_empty());
    // An ACK is never watched (no response comes to it).
    t.phone_sends(
        "ACK sip:bob@cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKack9\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@cloud.test>;tag=a1\r\nTo: <sip:bob@cloud.test>;tag=b1\r\n\
         Call-ID: ack-9\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(t.one().0.to, peer(CLOUD));
    // Answer the probes so that only our requests could time out.
    answer_probes_until(&mut t, start + Duration::from_secs(5));
    assert_eq!(t.edge.stats().cloud_timeouts, 0);
    let c = t.edge.probe().status(t.now).counters;
    assert_eq!(c.transaction_timeouts, 0);
    assert_eq!(t.edge.probe().state_name(), "up");
}

#[test]
fn a_register_refresh_the_silent_cloud_leaves_unanswered_is_answered_locally() {
    let mut t = T::new();
    register_alice(&mut t);
    let start = t.now;
    t.phone_sends(&register(
        2,
        "<sip:alice@192.168.1.5:5060>",
        "Expires: 3600\r\n",
    ));
    assert_eq!(t.one().0.to, peer(CLOUD));
    let lan = run_silent(&mut t, start + Duration::from_secs(20));
    assert_eq!(t.edge.probe().state_name(), "down");
    assert_eq!(t.edge.stats().cloud_timeouts, 1);
    assert_eq!(t.edge.stats().cloud_timeouts_local, 1);
    let oks: Vec<&Message> = lan
        .iter()
        .filter(|(x, m)| x.to == peer(PHONE) && m.status() == Some(200))
        .map(|(_, m)| m)
        .collect();
    assert_eq!(oks.len(), 1, "{lan:?}");
    assert_eq!(oks[0].cseq().map(|c| c.seq), Some(2));
    // Survival's short expiry, not the cloud's hour.
    let exp = match oks[0].contacts() {
        Some(Contacts::List(l)) => l.first().and_then(|c| c.expires()),
        _ => None,
    }
    .or(oks[0].expires())
    .expect("an expiry");
    assert!((1..=120).contains(&exp), "{exp}");
}

#[test]
fn transport_errors_to_the_cloud_make_it_down_others_do_not() {
    let mut t = T::new();
    let lan_phone = peer(PHONE);
    // Not the cloud, or not the WAN: no evidence.
    t.edge.handle_transport_error(t.now, Side::Lan, peer(CLOUD));
    t.edge
        .handle_transport_error(t.now, Side::Wan, peer("192.0.2.99:5060"));
    t.edge.handle_transport_error(t.now, Side::Lan, lan_phone);
    assert_eq!(t.edge.probe().state_name(), "up");
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 0);
    for i in 0..3u64 {
        let at = t.now + Duration::from_millis(i);
        t.edge.handle_transport_error(at, Side::Wan, peer(CLOUD));
    }
    assert_eq!(t.edge.probe().state_name(), "down");
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 3);
    let logged: Vec<String> = std::iter::from_fn(|| t.edge.poll_log()).collect();
    assert!(
        logged
            .iter()
            .any(|l| l.contains("cloud suspect -> down (transport_error)")),
        "{logged:?}"
    );
    // Stored in the event log too.
    let mut events = Vec::new();
    while let Some(job) = t.edge.poll_store() {
        for w in job.writes {
            if let StoreWrite::Event { kind, detail, .. } = w {
                events.push((kind, detail));
            }
        }
    }
    assert!(
        events
            .iter()
            .any(|(k, d)| k == "uplink" && d.contains("-> down (transport_error)")),
        "{events:?}"
    );
}

// ------------------------------------------- 100 Trying, Timers A and B

/// Registers `user` through the cloud from `from` with `contact` (the
/// cloud's 2xx lists it; the store confirms).
fn register_from(t: &mut T, user: &str, from: Peer, contact: &str, params: &str) {
    let via = from.transport.via_name();
    let raw = format!(
        "REGISTER sip:cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/{via} {a};branch=z9hG4bKr-{user};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{user}@cloud.test>;tag=r-{user}\r\n\
         To: <sip:{user}@cloud.test>\r\n\
         Call-ID: reg-{user}\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{contact}>{params}\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n",
        a = from.addr,
    );
    t.edge
        .handle_message(t.now, Side::Lan, from, raw.as_bytes());
    let (_, fwd) = t.one();
    t.cloud_sends(&answer(
        &fwd,
        200,
        "OK",
        &format!("Contact: <{contact}>{params};expires=3600\r\n"),
    ));
    let job = t.edge.poll_store().expect("store job");
    t.edge
        .handle_store_done(t.now, job.token.expect("token"), true);
    let _ = t.out();
}

fn lan_invite(from_user: &str, to: &str, branch: &str, src: &str) -> String {
    format!(
        "INVITE sip:{to}@cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src};branch={branch}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:{from_user}@cloud.test>;tag=t-{branch}\r\n\
         To: <sip:{to}@cloud.test>\r\n\
         Call-ID: c-{branch}\r\n\
         CSeq: 1 INVITE\r\n\
         Timestamp: 54\r\n\
         Contact: <sip:{from_user}@{src}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// Follows the edge's timer until `until`, answering nothing.
fn run_until(t: &mut T, until: Instant) -> Vec<(Instant, Transmit, Message)> {
    run_until_probed(t, until, false)
}

/// [`run_until`], the cloud answering its probes when `probes_answered`
/// (it stays up; only the requests under test go unanswered).
fn run_until_probed(
    t: &mut T,
    until: Instant,
    probes_answered: bool,
) -> Vec<(Instant, Transmit, Message)> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let at = t.edge.poll_timeout().max(t.now);
        if at > until {
            break;
        }
        t.now = at;
        t.edge.handle_timeout(at);
        for (tx, m) in t.out() {
            if m.method() != Some(&Method::Options) {
                seen.push((at, tx, m));
            } else if probes_answered && tx.to == peer(CLOUD) {
                t.cloud_sends(&answer(&m, 200, "OK", ""));
            }
        }
    }
    t.now = until;
    seen
}

#[test]
fn trying_an_invite_from_a_phone_gets_100_at_once_and_the_clouds_100_is_not_relayed() {
    let mut t = T::new();
    let inv = lan_invite("alice", "bob", "z9hG4bKt1", PHONE);
    t.phone_sends(&inv);
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    // the 100 first, to the phone, copied from the request (no To tag)
    let (tx, trying) = &out[0];
    assert_eq!((tx.side, tx.to), (Side::Lan, peer(PHONE)));
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to_tag(), None);
    assert_eq!(trying.via_count(), 1);
    assert_eq!(trying.header("Timestamp"), Some("54"));
    assert_eq!(trying.call_id(), Some("c-z9hG4bKt1"));
    let (tx, fwd) = &out[1];
    assert_eq!(tx.to, peer(CLOUD));
    assert_eq!(fwd.method(), Some(&Method::Invite));
    let fwd = fwd.clone();
    assert_eq!(t.edge.stats().trying_sent, 1);
    // the cloud's own 100 stops nothing for the phone and is not relayed
    t.cloud_sends(&answer(&fwd, 100, "Trying", ""));
    assert!(t.out().is_empty());
    assert_eq!(t.edge.stats().trying_dropped, 1);
    // its 180 is; a retransmitted INVITE now gets that 180 again, and
    // nothing goes to the cloud
    t.cloud_sends(&answer(&fwd, 180, "Ringing", ""));
    let (tx, ringing) = t.one();
    assert_eq!((tx.to, ringing.status()), (peer(PHONE), Some(180)));
    t.phone_sends(&inv);
    let out = t.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0.to, out[0].1.status()), (peer(PHONE), Some(180)));
    assert_eq!(out[0].1.to_tag(), Some("cloud1"));
    // a response stopped Timer A: no retransmission upstream, ever
    let until = t.now + Duration::from_secs(40);
    let later = run_until(&mut t, until);
    assert!(
        later
            .iter()
            .all(|(_, _, m)| m.method() != Some(&Method::Invite)),
        "{later:?}"
    );
    // the final still goes through
    t.cloud_sends(&answer(&fwd, 486, "Busy Here", ""));
    assert_eq!(t.one().1.status(), Some(486));
}

#[test]
fn trying_a_retransmitted_invite_gets_100_again_and_is_not_forwarded_twice() {
    let mut t = T::new();
    let inv = lan_invite("alice", "bob", "z9hG4bKt2", PHONE);
    t.phone_sends(&inv);
    let fwd = t.one().1;
    let start = t.now;
    // the phone missed our 100 and retransmits: the 100 again, no second INVITE
    t.now = start + Duration::from_millis(200);
    t.phone_sends(&inv);
    let out = t.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0.to, out[0].1.status()), (peer(PHONE), Some(100)));
    assert_eq!(t.edge.stats().trying_sent, 1);
    // holdline retransmits upstream itself (Timer A: T1, 2·T1, 4·T1 after
    // the last) while the cloud says nothing
    let seen = run_until_probed(&mut t, start + Duration::from_millis(3_600), true);
    assert_eq!(t.edge.probe().state_name(), "up");
    let at: Vec<Duration> = seen
        .iter()
        .filter(|(_, tx, m)| m.method() == Some(&Method::Invite) && tx.to == peer(CLOUD))
        .map(|(at, _, m)| {
            assert_eq!(
                m.top_via().and_then(|v| v.branch()),
                fwd.top_via().and_then(|v| v.branch())
            );
            at.saturating_duration_since(start)
        })
        .collect();
    assert_eq!(
        at,
        vec![
            Duration::from_millis(500),
            Duration::from_millis(1_500),
            Duration::from_millis(3_500)
        ]
    );
    assert_eq!(t.edge.stats().invite_retransmissions, 3);
}

#[test]
fn timer_b_an_invite_to_a_silent_phone_is_answered_408_and_its_ack_ends_here() {
    let mut t = T::new();
    register_alice(&mut t);
    let start = t.now;
    t.cloud_sends(&inbound_invite());
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    // the cloud has its 100 at once (it stops retransmitting)
    assert_eq!((out[0].0.to, out[0].1.status()), (peer(CLOUD), Some(100)));
    assert_eq!(out[1].0.to, peer(PHONE));
    // a retransmission from the cloud is not sent to the phone again
    t.cloud_sends(&inbound_invite());
    let again = t.out();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].0.to, again[0].1.status()),
        (peer(CLOUD), Some(100))
    );
    // the phone never answers: Timer A to it, then Timer B: 408 upstream
    let seen = run_until(&mut t, start + Duration::from_secs(33));
    let to_phone = seen
        .iter()
        .filter(|(_, tx, m)| tx.to == peer(PHONE) && m.method() == Some(&Method::Invite))
        .count();
    assert_eq!(
        to_phone, 6,
        "retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s"
    );
    let finals: Vec<_> = seen
        .iter()
        .filter(|(_, _, m)| m.status().is_some())
        .collect();
    // at 32 s, then repeated (Timer G: the cloud had our 100 and stopped
    // retransmitting) until its ACK
    assert_eq!(finals.len(), 2, "{finals:?}");
    let (at, tx, r) = finals[0];
    assert_eq!(
        (tx.side, tx.to, r.status()),
        (Side::Wan, peer(CLOUD), Some(408))
    );
    assert_eq!(at.saturating_duration_since(start), Duration::from_secs(32));
    assert_eq!(finals[1].1.bytes, tx.bytes);
    assert_eq!(
        finals[1].0.saturating_duration_since(start),
        Duration::from_millis(32_500)
    );
    assert!(r.to_tag().is_some());
    assert_eq!(t.edge.stats().invite_timeouts, 1);
    assert!(matches!(
        t.edge
            .calls()
            .get("call-in-1", "b1", Direction::Inbound)
            .map(|c| &c.state),
        Some(CallState::Terminated { .. })
    ));
    // the cloud's ACK of the 408 ends here; its retransmitted INVITE gets
    // the 408 again
    let ack = "ACK sip:alice@192.168.1.5:5060 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1\r\n\
         Route: <sip:198.51.100.1:5060;lr>\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:bob@cloud.test>;tag=b1\r\n\
         To: <sip:alice@cloud.test>;tag=x\r\n\
         Call-ID: call-in-1\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n";
    t.cloud_sends(ack);
    assert!(t.out().is_empty());
    // (past the next repetition at T2; within the 10 s a final is kept)
    let until = t.now + Duration::from_secs(5);
    let after_ack = run_until(&mut t, until);
    assert!(
        after_ack.iter().all(|(_, _, m)| m.status().is_none()),
        "the ACK ends the repetition: {after_ack:?}"
    );
    t.cloud_sends(&inbound_invite());
    let (tx, r) = t.one();
    assert_eq!((tx.to, r.status()), (peer(CLOUD), Some(408)));
}

#[test]
fn trying_a_call_routed_locally_in_survival_gets_100_and_no_second_invite() {
    let mut t = T::new();
    let alice = peer("10.0.0.5:5062");
    let bob = peer("10.0.0.6:5060");
    register_from(&mut t, "alice", alice, "sip:alice@10.0.0.5:5062", "");
    register_from(&mut t, "bob", bob, "sip:bob@10.0.0.6:5060", "");
    t.edge
        .set_cloud_mode(t.now, holdline_survival::uplink::Mode::ForcedDown);
    let _ = t.out();
    while t.edge.poll_store().is_some() {}
    let inv = lan_invite("alice", "bob", "z9hG4bKt3", "10.0.0.5:5062");
    t.edge
        .handle_message(t.now, Side::Lan, alice, inv.as_bytes());
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!((out[0].0.to, out[0].1.status()), (alice, Some(100)));
    assert_eq!(
        (out[1].0.to, out[1].1.method()),
        (bob, Some(&Method::Invite))
    );
    let fwd = out[1].1.clone();
    t.edge
        .handle_message(t.now, Side::Lan, alice, inv.as_bytes());
    let out = t.out();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].0.to, out[0].1.status()), (alice, Some(100)));
    // bob's 100 is not relayed, his 180 is
    t.edge.handle_message(
        t.now,
        Side::Lan,
        bob,
        answer(&fwd, 100, "Trying", "").as_bytes(),
    );
    assert!(t.out().is_empty());
    t.edge.handle_message(
        t.now,
        Side::Lan,
        bob,
        answer(&fwd, 180, "Ringing", "").as_bytes(),
    );
    let (tx, r) = t.one();
    assert_eq!((tx.to, r.status()), (alice, Some(180)));
}

// ------------------------------------------------- TCP phones

const TCP_PHONE: &str = "10.0.0.7:40123"; // ephemeral source port

fn tcp(s: &str) -> Peer {
    Peer {
        transport: Transport::Tcp,
        addr: s.parse().expect("addr"),
    }
}

fn inbound_invite_to(user: &str, contact_hostport: &str, branch: &str) -> String {
    inbound_invite()
        .replace(
            "sip:alice@192.168.1.5:5060",
            &format!("sip:{user}@{contact_hostport}"),
        )
        .replace("z9hG4bKinv1", branch)
        .replace("call-in-1", &format!("call-{branch}"))
}

#[test]
fn tcp_a_phone_is_reached_over_its_connection_then_at_its_contact_once_closed() {
    let mut t = T::new();
    // Contact without a port: 5060 by default; transport from the registration
    register_from(
        &mut t,
        "carol",
        tcp(TCP_PHONE),
        "sip:carol@10.0.0.7;transport=tcp",
        "",
    );
    // the connection is open: reused (the REGISTER came over it)
    t.cloud_sends(&inbound_invite_to(
        "carol",
        "10.0.0.7;transport=tcp",
        "z9hG4bKc1",
    ));
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].0.to, tcp(TCP_PHONE));
    // the phone closed it: a new connection to its Contact address, not to
    // the old ephemeral port
    t.edge
        .handle_connection(t.now, Side::Lan, tcp(TCP_PHONE).addr, false);
    t.cloud_sends(&inbound_invite_to(
        "carol",
        "10.0.0.7;transport=tcp",
        "z9hG4bKc2",
    ));
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].0.to, tcp("10.0.0.7:5060"));
    assert_eq!(out[1].1.method(), Some(&Method::Invite));
    // it connects: what waited is on its way; a later error on that
    // connection answers nothing twice
    t.edge
        .handle_connection(t.now, Side::Lan, tcp("10.0.0.7:5060").addr, true);
    t.edge
        .handle_transport_error(t.now, Side::Lan, tcp("10.0.0.7:5060"));
    assert!(t.out().is_empty());
    assert_eq!(t.edge.stats().unreachable, 0);
    // and the probe/uplink never heard of it
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 0);
}

#[test]
fn tcp_a_phone_that_cannot_be_reached_is_answered_480_upstream() {
    let mut t = T::new();
    register_from(
        &mut t,
        "carol",
        tcp(TCP_PHONE),
        "sip:carol@10.0.0.7:5080;transport=tcp",
        "",
    );
    t.edge
        .handle_connection(t.now, Side::Lan, tcp(TCP_PHONE).addr, false);
    t.cloud_sends(&inbound_invite_to(
        "carol",
        "10.0.0.7:5080;transport=tcp",
        "z9hG4bKc3",
    ));
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.status(), Some(100));
    assert_eq!(out[1].0.to, tcp("10.0.0.7:5080"));
    // the connect fails (the daemon reports a transport error)
    t.edge
        .handle_transport_error(t.now, Side::Lan, tcp("10.0.0.7:5080"));
    let (tx, r) = t.one();
    assert_eq!(
        (tx.side, tx.to, r.status()),
        (Side::Wan, peer(CLOUD), Some(480))
    );
    assert_eq!(r.call_id(), Some("call-z9hG4bKc3"));
    assert_eq!(r.via_count(), 1, "the cloud's own Via only");
    assert_eq!(t.edge.stats().unreachable, 1);
    // the same error again changes nothing; the cloud's ACK ends here
    t.edge
        .handle_transport_error(t.now, Side::Lan, tcp("10.0.0.7:5080"));
    assert!(t.out().is_empty());
    assert_eq!(t.edge.probe().state_name(), "up");
    // no Timer B answer later either (the 480 was the final)
    let until = t.now + Duration::from_secs(40);
    let seen = run_until(&mut t, until);
    assert!(
        seen.iter().all(|(_, _, m)| m.status() != Some(408)),
        "{seen:?}"
    );
}

#[test]
fn tcp_an_outbound_flow_that_is_gone_is_430_flow_failed() {
    let mut t = T::new();
    register_from(
        &mut t,
        "dave",
        tcp("10.0.0.8:40200"),
        "sip:dave@10.0.0.8:5060;transport=tcp;ob",
        ";+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-00000000000d>\";reg-id=1",
    );
    t.edge.handle_connection(
        t.now,
        Side::Lan,
        "10.0.0.8:40200".parse().expect("addr"),
        false,
    );
    t.cloud_sends(&inbound_invite_to(
        "dave",
        "10.0.0.8:5060;transport=tcp;ob",
        "z9hG4bKd1",
    ));
    let (tx, r) = t.one();
    assert_eq!((tx.to, r.status()), (peer(CLOUD), Some(430)));
    assert_eq!(t.edge.stats().unreachable, 1);
}

#[test]
fn tcp_after_a_restart_bindings_of_tcp_phones_go_to_their_contact() {
    let mut t = T::new();
    register_from(
        &mut t,
        "carol",
        tcp(TCP_PHONE),
        "sip:carol@10.0.0.7:5070;transport=tcp",
        "",
    );
    let saved: Vec<Binding> = t.edge.bindings().iter().cloned().collect();
    let later = t.now + Duration::from_secs(60);
    let mut edge = Edge::new(cfg(), later, 1_000_060);
    assert_eq!(edge.load_bindings(later, saved), 1);
    edge.handle_timeout(later);
    while edge.poll_transmit().is_some() {}
    let mut t2 = T { edge, now: later };
    t2.cloud_sends(&inbound_invite_to(
        "carol",
        "10.0.0.7:5070;transport=tcp",
        "z9hG4bKc4",
    ));
    let out = t2.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(
        out[1].0.to,
        tcp("10.0.0.7:5070"),
        "no connection survives a restart"
    );
}

// ------------------------------------- transport errors, cloud addresses

#[test]
fn transport_errors_to_any_cloud_address_count_the_backup_route_does_not() {
    let mut c = cfg();
    c.cloud_addrs = vec![
        "192.0.2.11".parse().expect("ip"),
        "192.0.2.50".parse().expect("ip"),
    ];
    let mut t = T::with_cfg(c);
    let backup = peer("192.0.2.50:5060");
    t.edge.set_survival(SurvivalConfig {
        backup_route: Some(backup),
        ..SurvivalConfig::default()
    });
    // the backup route (its address is allowed like the cloud's) is no evidence
    t.edge.handle_transport_error(t.now, Side::Wan, backup);
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 0);
    // another node of the cloud (a Route named it), over TCP on another port
    t.edge
        .handle_transport_error(t.now, Side::Wan, tcp("192.0.2.11:5070"));
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 1);
    t.edge.handle_transport_error(
        t.now + Duration::from_millis(1),
        Side::Wan,
        peer("192.0.2.11:5060"),
    );
    t.edge
        .handle_transport_error(t.now + Duration::from_millis(2), Side::Wan, peer(CLOUD));
    assert_eq!(t.edge.probe().status(t.now).counters.transport_errors, 3);
    assert_eq!(t.edge.probe().state_name(), "down");
}

#[test]
fn timer_b_a_call_left_with_a_silent_cloud_gets_503_once_it_is_down_not_a_late_408() {
    let mut t = T::new();
    let alice = peer("10.0.0.5:5062");
    register_from(&mut t, "alice", alice, "sip:alice@10.0.0.5:5062", "");
    let start = t.now;
    // an off-site number: no site phone, no backup route
    let inv = lan_invite("alice", "5551234", "z9hG4bKt9", "10.0.0.5:5062");
    t.edge
        .handle_message(t.now, Side::Lan, alice, inv.as_bytes());
    let out = t.out();
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].1.status(), Some(100));
    // the cloud answers nothing, probes neither: fail-fast leaves the call
    // with the cloud, then the probes find it down
    let seen = run_until(&mut t, start + Duration::from_secs(31));
    assert_eq!(t.edge.probe().state_name(), "down");
    let to_alice: Vec<_> = seen
        .iter()
        .filter(|(_, tx, m)| tx.to == alice && m.status().is_some())
        .collect();
    assert!(!to_alice.is_empty());
    let (_, first, r) = to_alice[0];
    assert_eq!(r.status(), Some(503));
    assert!(r.header("Retry-After").is_some(), "{r:?}");
    assert_eq!(r.call_id(), Some("c-z9hG4bKt9"));
    // repeated, the same, until alice ACKs (she had our 100 and does not
    // retransmit her INVITE)
    assert!(
        to_alice.iter().all(|(_, tx, _)| tx.bytes == first.bytes),
        "{to_alice:?}"
    );
    let ack = format!(
        "ACK sip:5551234@cloud.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKt9\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@cloud.test>;tag=t-z9hG4bKt9\r\n\
         To: {}\r\n\
         Call-ID: c-z9hG4bKt9\r\n\
         CSeq: 1 ACK\r\n\
         Content-Length: 0\r\n\r\n",
        r.header("To").expect("to")
    );
    t.edge
        .handle_message(t.now, Side::Lan, alice, ack.as_bytes());
    assert!(t.out().is_empty(), "the ACK of holdline's 503 ends here");
    // nothing more: no 408 from Timer B later, no 503 again, no INVITE
    let later = run_until(&mut t, start + Duration::from_secs(40));
    assert!(later.iter().all(|(_, tx, _)| tx.to != alice), "{later:?}");
    assert_eq!(t.edge.stats().invite_timeouts, 0);
}

#[test]
fn timer_b_the_answer_to_a_cancel_does_not_stop_the_invites_timers() {
    let mut t = T::new();
    let start = t.now;
    let inv = lan_invite("alice", "bob", "z9hG4bKt7", PHONE);
    t.phone_sends(&inv);
    let fwd = t.one().1;
    let cancel = inv
        .replace("INVITE sip:bob", "CANCEL sip:bob")
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    t.phone_sends(&cancel);
    let (tx, c) = t.one();
    assert_eq!((tx.to, c.method()), (peer(CLOUD), Some(&Method::Cancel)));
    // the cloud answers the CANCEL (481: it never had the INVITE) and
    // nothing else
    t.cloud_sends(&answer(&c, 481, "Call/Transaction Does Not Exist", ""));
    assert_eq!(t.one().1.status(), Some(481));
    // a retransmitted INVITE is not answered with the CANCEL's final
    t.phone_sends(&inv);
    let (tx, r) = t.out().remove(0);
    assert_eq!((tx.to, r.status()), (peer(PHONE), Some(100)));
    let seen = run_until_probed(&mut t, start + Duration::from_secs(33), true);
    let repeated = seen
        .iter()
        .filter(|(_, tx, m)| tx.to == peer(CLOUD) && m.method() == Some(&Method::Invite))
        .count();
    assert!(repeated >= 5, "Timer A went on: {repeated}");
    let finals: Vec<_> = seen
        .iter()
        .filter(|(_, tx, m)| tx.to == peer(PHONE) && m.status().is_some())
        .collect();
    assert!(!finals.is_empty(), "{seen:?}");
    assert_eq!(finals[0].2.status(), Some(408));
    assert_eq!(
        finals[0].2.top_via().and_then(|v| v.branch()),
        Some("z9hG4bKt7")
    );
    let _ = fwd;
}
