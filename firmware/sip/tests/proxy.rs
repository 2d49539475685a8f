//! Stateful proxy mechanics on realistic LAN ⇄ WAN flows.

// Test helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use holdline_sip::proxy::{Leg, ProxyError, ProxyIdentity, ResponseContext, Selection};
use holdline_sip::transaction::Transport;
use holdline_sip::{response_for, Contacts, Message, Method};

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn lan() -> Leg {
    Leg::new("127.0.0.1:5060".parse().unwrap(), Transport::Udp)
}
fn wan() -> Leg {
    Leg::new("127.0.0.1:5070".parse().unwrap(), Transport::Udp)
}
fn proxy() -> ProxyIdentity {
    ProxyIdentity::new(vec![lan(), wan()], 0x5eed)
}
fn phone() -> SocketAddr {
    "10.0.0.5:40000".parse().unwrap()
}

const REGISTER: &str = "REGISTER sip:cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKreg1;rport
Max-Forwards: 70
From: <sip:100@cloud.test>;tag=r1
To: <sip:100@cloud.test>
Call-ID: reg-1@10.0.0.5
CSeq: 7 REGISTER
Contact: <sip:100@10.0.0.5:5060>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1
Supported: path, outbound
Expires: 3600
Authorization: Digest username=\"100\", realm=\"cloud.test\", nonce=\"abc\", uri=\"sip:cloud.test\", response=\"0123\"
Content-Length: 0

";

const INVITE: &str = "INVITE sip:200@cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKinv1;rport
Max-Forwards: 70
From: \"Alice\" <sip:100@cloud.test>;tag=a1
To: <sip:200@cloud.test>
Call-ID: call-1@10.0.0.5
CSeq: 1 INVITE
Contact: <sip:100@10.0.0.5:5060>
Content-Type: application/sdp
Content-Length: 5

v=0
";

#[test]
fn register_gets_path_and_response_goes_back_by_via() {
    let p = proxy();
    let received = Message::parse(&crlf(REGISTER)).unwrap();
    let mut req = received.clone();
    let popped = p.preprocess(&mut req, phone(), &[]).unwrap();
    assert!(popped.is_empty());
    let v = req.top_via().unwrap();
    assert_eq!(v.received(), Some("10.0.0.5"));
    assert_eq!(v.rport(), Some(Some(40000)));
    p.add_path(&mut req, &wan(), "ob").unwrap();
    let hop = p.forward(&mut req, &received, &wan(), 0).unwrap();
    assert_eq!(hop.host, "cloud.test");
    assert_eq!(req.max_forwards(), Some(69));
    assert_eq!(req.paths()[0].uri, "sip:127.0.0.1:5070;lr;ob");
    let top = req.top_via().unwrap();
    assert_eq!(top.host, "127.0.0.1");
    assert_eq!(top.port, Some(5070));
    assert!(top.branch().unwrap().starts_with("z9hG4bKhl"));
    // Untouched: digest answer, Contact with instance, Supported.
    let out = String::from_utf8(req.to_bytes()).unwrap();
    assert!(out.contains("\r\nAuthorization: Digest username=\"100\", realm=\"cloud.test\", nonce=\"abc\", uri=\"sip:cloud.test\", response=\"0123\"\r\n"));
    assert!(out.contains(
        "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n"
    ));

    // The cloud answers 200 to what it received.
    let at_cloud = Message::parse(out.as_bytes()).unwrap();
    let mut ok = response_for(&at_cloud, 200, "OK").unwrap();
    let target = p.route_response(&mut ok).unwrap();
    assert_eq!(target.socket_addr(), Some(phone()));
    assert_eq!(ok.via_count(), 1);
    assert_eq!(ok.top_via().unwrap().branch(), Some("z9hG4bKreg1"));
}

#[test]
fn two_sided_record_route_and_in_dialog_requests_from_both_sides() {
    let p = proxy();
    let received = Message::parse(&crlf(INVITE)).unwrap();
    let mut req = received.clone();
    p.preprocess(&mut req, phone(), &[]).unwrap();
    p.record_route(&mut req, &lan(), &wan(), "").unwrap();
    p.forward(&mut req, &received, &wan(), 0).unwrap();
    let rr: Vec<String> = req
        .record_routes()
        .iter()
        .map(|r| r.uri.to_owned())
        .collect();
    assert_eq!(rr, ["sip:127.0.0.1:5070;lr", "sip:127.0.0.1:5060;lr"]);
    assert_eq!(req.body(), b"v=0\r\n");

    // Callee (cloud side) sends BYE: route set = RR in order.
    let bye = crlf(
        "BYE sip:100@10.0.0.5:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKbye1
Max-Forwards: 70
Route: <sip:127.0.0.1:5070;lr>, <sip:127.0.0.1:5060;lr>
From: <sip:200@cloud.test>;tag=b1
To: \"Alice\" <sip:100@cloud.test>;tag=a1
Call-ID: call-1@10.0.0.5
CSeq: 5 BYE
Content-Length: 0

",
    );
    let bye_rx = Message::parse(&bye).unwrap();
    let mut bye = bye_rx.clone();
    let popped = p
        .preprocess(&mut bye, "127.0.0.2:5060".parse().unwrap(), &[])
        .unwrap();
    assert_eq!(popped.len(), 2);
    assert!(bye.routes().is_empty());
    let hop = p.forward(&mut bye, &bye_rx, &lan(), 0).unwrap();
    assert_eq!(
        hop.socket_addr(5060),
        Some("10.0.0.5:5060".parse().unwrap())
    );

    // Caller (LAN side) sends BYE: route set = RR reversed, then the cloud's own.
    let bye2 = crlf(
        "BYE sip:200@127.0.0.2:5060 SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKbye2
Max-Forwards: 70
Route: <sip:127.0.0.1:5060;lr>,<sip:127.0.0.1:5070;lr>
Route: <sip:127.0.0.9;lr>
From: \"Alice\" <sip:100@cloud.test>;tag=a1
To: <sip:200@cloud.test>;tag=b1
Call-ID: call-1@10.0.0.5
CSeq: 2 BYE
Content-Length: 0

",
    );
    let rx = Message::parse(&bye2).unwrap();
    let mut bye2 = rx.clone();
    let popped = p.preprocess(&mut bye2, phone(), &[]).unwrap();
    assert_eq!(popped.len(), 2);
    let hop = p.forward(&mut bye2, &rx, &wan(), 0).unwrap();
    assert_eq!(hop.host, "127.0.0.9");
    assert_eq!(bye2.routes().len(), 1);
}

#[test]
fn loop_is_detected_and_spiral_is_not() {
    let p = proxy();
    let received = Message::parse(&crlf(INVITE)).unwrap();
    let mut req = received.clone();
    p.preprocess(&mut req, phone(), &[]).unwrap();
    p.forward(&mut req, &received, &wan(), 0).unwrap();
    // The same request comes back unchanged: a loop.
    let mut back = Message::parse(&req.to_bytes()).unwrap();
    let err = p
        .preprocess(&mut back, "127.0.0.2:5060".parse().unwrap(), &[])
        .unwrap_err();
    assert_eq!(err, ProxyError::LoopDetected);
    assert_eq!(err.status().0, 482);
    // Retargeted by the cloud: a spiral, allowed.
    let mut spiral = Message::parse(&req.to_bytes()).unwrap();
    spiral.set_request_uri("sip:200@10.0.0.7:5060").unwrap();
    assert!(p
        .preprocess(&mut spiral, "127.0.0.2:5060".parse().unwrap(), &[])
        .is_ok());
}

#[test]
fn max_forwards_and_proxy_require() {
    let p = proxy();
    let zero = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 0");
    let mut m = Message::parse(&crlf(&zero)).unwrap();
    let e = p.preprocess(&mut m, phone(), &[]).unwrap_err();
    assert_eq!(e.status(), (483, "Too Many Hops"));

    let one = INVITE.replace("Max-Forwards: 70", "Max-Forwards: 1");
    let rx = Message::parse(&crlf(&one)).unwrap();
    let mut m = rx.clone();
    p.preprocess(&mut m, phone(), &[]).unwrap();
    p.forward(&mut m, &rx, &wan(), 0).unwrap();
    assert_eq!(m.max_forwards(), Some(0));

    let pr = INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 INVITE\nProxy-Require: foo, path");
    let mut m = Message::parse(&crlf(&pr)).unwrap();
    assert_eq!(
        p.preprocess(&mut m, phone(), &["path"]),
        Err(ProxyError::BadExtension("foo".into()))
    );
}

#[test]
fn strict_router_next_hop_and_strict_request_uri_fixup() {
    let p = proxy();
    // Next hop is a strict router (no lr).
    let text = INVITE.replace(
        "CSeq: 1 INVITE",
        "CSeq: 1 INVITE\nRoute: <sip:127.0.0.9:5060>",
    );
    let rx = Message::parse(&crlf(&text)).unwrap();
    let mut m = rx.clone();
    p.preprocess(&mut m, phone(), &[]).unwrap();
    let hop = p.forward(&mut m, &rx, &wan(), 0).unwrap();
    assert_eq!(hop.host, "127.0.0.9");
    assert_eq!(m.request_uri(), Some("sip:127.0.0.9:5060"));
    assert_eq!(m.routes().last().unwrap().uri, "sip:200@cloud.test");

    // A strict router upstream put our URI in the Request-URI.
    let text = INVITE
        .replace("INVITE sip:200@cloud.test", "INVITE sip:127.0.0.1:5070;lr")
        .replace(
            "CSeq: 1 INVITE",
            "CSeq: 1 INVITE\nRoute: <sip:200@10.0.0.8>",
        );
    let mut m = Message::parse(&crlf(&text)).unwrap();
    p.preprocess(&mut m, phone(), &[]).unwrap();
    assert_eq!(m.request_uri(), Some("sip:200@10.0.0.8"));
    assert!(m.routes().is_empty());
}

#[test]
fn cancel_gets_the_invite_branch() {
    let p = proxy();
    let inv = Message::parse(&crlf(INVITE)).unwrap();
    let cancel = Message::cancel_for(&inv).unwrap();
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(p.branch(&inv, 0), p.branch(&cancel, 0));
    assert_ne!(p.branch(&inv, 0), p.branch(&inv, 1));
    let other = INVITE.replace("z9hG4bKinv1", "z9hG4bKinv2");
    let other = Message::parse(&crlf(&other)).unwrap();
    assert_ne!(p.branch(&inv, 0), p.branch(&other, 0));
}

#[test]
fn response_not_ours_or_for_us() {
    let p = proxy();
    let inv = Message::parse(&crlf(INVITE)).unwrap();
    let mut r = response_for(&inv, 180, "Ringing").unwrap();
    assert_eq!(p.route_response(&mut r), Err(ProxyError::NotOurVia));
    let mut own = inv.clone();
    own.remove_header("Via");
    own.push_via(&wan().via("z9hG4bKx")).unwrap();
    let mut r = response_for(&own, 200, "OK").unwrap();
    assert_eq!(p.route_response(&mut r), Err(ProxyError::ForUs));
}

#[test]
fn ipv6_source_received() {
    let p = proxy();
    let text = REGISTER.replace("10.0.0.5:5060;branch", "[2001:db8::5]:5060;branch");
    let mut m = Message::parse(&crlf(&text)).unwrap();
    p.preprocess(&mut m, "[2001:db8::9]:41000".parse().unwrap(), &[])
        .unwrap();
    let mut r = response_for(&m, 200, "OK").unwrap();
    let t = holdline_sip::proxy::response_target(&r.top_via().unwrap());
    assert_eq!(
        t.socket_addr(),
        Some("[2001:db8::9]:41000".parse().unwrap())
    );
    assert!(r.pop_via().is_some());
    let Some(Contacts::List(c)) = m.contacts() else {
        panic!()
    };
    assert_eq!(c[0].reg_id(), Some(1));
}

fn resp(code: u16) -> Message {
    let inv = Message::parse(&crlf(INVITE)).unwrap();
    response_for(&inv, code, "X").unwrap()
}

#[test]
fn best_response_selection() {
    let mut ctx = ResponseContext::new(3);
    assert_eq!(ctx.offer(Some(&resp(100))), Selection::Drop);
    assert_eq!(ctx.offer(Some(&resp(180))), Selection::ForwardNow);
    assert_eq!(ctx.offer(Some(&resp(503))), Selection::Hold);
    assert_eq!(ctx.offer(Some(&resp(486))), Selection::Hold);
    match ctx.offer(Some(&resp(407))) {
        Selection::ForwardBest(b) => assert_eq!(b.status(), Some(407)),
        other => panic!("{other:?}"),
    }
    // A lone 503 goes out as 500.
    let mut ctx = ResponseContext::new(1);
    match ctx.offer(Some(&resp(503))) {
        Selection::ForwardBest(b) => assert_eq!(b.status(), Some(500)),
        other => panic!("{other:?}"),
    }
    // Timeout on one branch, 404 on the other: 404 wins over 408.
    let mut ctx = ResponseContext::new(2);
    assert_eq!(ctx.offer(None), Selection::Hold);
    match ctx.offer(Some(&resp(404))) {
        Selection::ForwardBest(b) => assert_eq!(b.status(), Some(404)),
        other => panic!("{other:?}"),
    }
    // 6xx: forward and cancel the rest; 2xx always forwarded.
    let mut ctx = ResponseContext::new(3);
    assert_eq!(
        ctx.offer(Some(&resp(603))),
        Selection::ForwardAndCancelOthers
    );
    assert_eq!(
        ctx.offer(Some(&resp(200))),
        Selection::ForwardAndCancelOthers
    );
    assert_eq!(ctx.offer(Some(&resp(200))), Selection::ForwardNow);
    assert!(ctx.is_complete());
}

#[test]
fn alias_names_count_as_own() {
    let mut p = proxy();
    p.add_alias("sbc.site.example", 5060);
    let text = INVITE.replace(
        "CSeq: 1 INVITE",
        "CSeq: 1 INVITE\nRoute: <sip:sbc.site.example;lr>, <sip:127.0.0.9;lr>",
    );
    let mut m = Message::parse(&crlf(&text)).unwrap();
    let popped = p.preprocess(&mut m, phone(), &[]).unwrap();
    assert_eq!(popped, ["<sip:sbc.site.example;lr>"]);
    assert_eq!(m.routes().len(), 1);
}

#[test]
fn forked_challenges_are_merged() {
    let mut a = resp(401);
    a.add_header("WWW-Authenticate", "Digest realm=\"a.test\", nonce=\"1\"")
        .unwrap();
    let mut b = resp(407);
    b.add_header("Proxy-Authenticate", "Digest realm=\"b.test\", nonce=\"2\"")
        .unwrap();
    let mut ctx = ResponseContext::new(3);
    assert_eq!(ctx.offer(Some(&a)), Selection::Hold);
    assert_eq!(ctx.offer(Some(&resp(486))), Selection::Hold);
    match ctx.offer(Some(&b)) {
        Selection::ForwardBest(best) => {
            assert!(matches!(best.status(), Some(401) | Some(407)));
            assert_eq!(best.header_values("WWW-Authenticate").count(), 1);
            assert_eq!(best.header_values("Proxy-Authenticate").count(), 1);
        }
        other => panic!("{other:?}"),
    }
}
