//! Bounded property tests of the network entry point: bytes from the
//! network → parse → proxy primitives → serialize never panic, and what the
//! proxy forwards parses again. The same entry point is the cargo-fuzz
//! target in firmware/sip/fuzz.

// Test helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use holdline_sip::framing::StreamFramer;
use holdline_sip::inbound::{proxy_pipeline, DropStats};
use holdline_sip::proxy::{Leg, ProxyIdentity};
use holdline_sip::transaction::{Peer, Transactions, Transport, TxConfig};
use holdline_sip::Message;
use proptest::prelude::*;

const SEEDS: &[&[u8]] = &[
    include_bytes!("torture/wsinv.sip"),
    include_bytes!("torture/intmeth.sip"),
    include_bytes!("torture/longreq.sip"),
    include_bytes!("torture/mpart01.sip"),
    include_bytes!("torture/unreason.sip"),
    include_bytes!("torture/regescrt.sip"),
    include_bytes!("torture/badinv01.sip"),
    b"REGISTER sip:cloud.test SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK0\r\nf: <sip:100@cloud.test>;tag=a\r\nt: <sip:100@cloud.test>\r\ni: c1\r\nCSeq: 1 REGISTER\r\nRoute: <sip:127.0.0.1:5060;lr>,<sip:127.0.0.1:5070;lr>\r\nm: <sip:100@10.0.0.5>;+sip.instance=\"<urn:uuid:1>\";reg-id=1;expires=60\r\nl: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKhl1.2\r\nVia: SIP/2.0/UDP 10.0.0.5;received=10.0.0.5;rport=4000;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nRecord-Route: <sip:127.0.0.1:5070;lr>\r\nContent-Length: 0\r\n\r\n",
];

const SPICE: &[&[u8]] = &[
    b";",
    b",",
    b"\"",
    b"<",
    b">",
    b"\r\n",
    b"\r\n ",
    b":",
    b"\\",
    b"\0",
    b"%",
    b"[",
    b"]",
    b"@",
    b"?",
    b"=",
    b" ",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"Via: ",
    b"Content-Length: 99999999999\r\n",
    b"z9hG4bK",
    b"sip:",
    b"tel:",
    b"\xff\xfe",
];

fn identity() -> (ProxyIdentity, Leg, Leg) {
    let lan = Leg::new("127.0.0.1:5060".parse().unwrap(), Transport::Udp);
    let wan = Leg::new("127.0.0.1:5070".parse().unwrap(), Transport::Udp);
    (
        ProxyIdentity::new(vec![lan.clone(), wan.clone()], 1),
        lan,
        wan,
    )
}

/// Reads everything a typed reader can read; must not panic.
fn read_all(m: &Message) {
    let _ = (
        m.method(),
        m.request_uri(),
        m.parsed_request_uri(),
        m.status(),
        m.reason(),
    );
    let _ = m.vias().count();
    let _ = (
        m.top_via(),
        m.call_id(),
        m.cseq(),
        m.from(),
        m.to(),
        m.from_tag(),
        m.to_tag(),
    );
    if let Some(holdline_sip::Contacts::List(l)) = m.contacts() {
        for n in &l {
            let _ = (n.expires(), n.instance(), n.reg_id(), n.parsed_uri());
        }
    }
    let _ = (
        m.expires(),
        m.max_forwards(),
        m.routes(),
        m.record_routes(),
        m.paths(),
    );
    let _ = (
        m.content_type(),
        m.event(),
        m.subscription_state(),
        m.body().len(),
    );
    let _ = m.headers().count();
    let _ = Message::response_for(m, 400, "Bad");
    let _ = Message::cancel_for(m);
}

fn entry(bytes: &[u8]) {
    let (id, lan, wan) = identity();
    let src: SocketAddr = "10.0.0.5:5060".parse().unwrap();
    let mut stats = DropStats::default();
    if let Some(out) = proxy_pipeline(&id, &lan, &wan, src, bytes, &mut stats) {
        // Whatever the proxy sends parses as a message structure again.
        if out != b"\r\n" {
            let again = Message::parse_structure(&out);
            assert!(
                again.is_ok(),
                "output does not parse: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }
    if let Ok(m) = Message::parse_structure(bytes) {
        read_all(&m);
        let mut e = m.clone();
        let _ = e.pop_via();
        let _ = e.pop_route();
        let _ = e.decrement_max_forwards();
        let _ = e.set_top_via_received(Some("192.0.2.1"), Some(1));
        let _ = e.to_bytes();
    }
    if let Ok(m) = Message::parse(bytes) {
        // A valid message survives serialize → parse unchanged.
        let b = m.to_bytes();
        let again = Message::parse(&b).unwrap();
        assert_eq!(again.to_bytes(), b);
        let now = Instant::now();
        let mut tx = Transactions::new(TxConfig::default());
        let peer = Peer {
            addr: src,
            transport: Transport::Udp,
        };
        tx.handle_incoming(now, m.clone(), peer);
        tx.handle_incoming(now, m, peer);
        tx.handle_timeout(now + Duration::from_secs(400));
        while tx.poll_transmit().is_some() {}
        while tx.poll_event().is_some() {}
    }
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    (
        0..SEEDS.len(),
        proptest::collection::vec((any::<u16>(), 0..4u8, 0..SPICE.len(), any::<u8>()), 0..8),
    )
        .prop_map(|(seed, edits)| {
            let mut v = SEEDS[seed].to_vec();
            for (pos, op, spice, byte) in edits {
                if v.is_empty() {
                    break;
                }
                let at = usize::from(pos) % v.len();
                match op {
                    0 => v[at] = byte,
                    1 => {
                        v.splice(at..at, SPICE[spice].iter().copied());
                    }
                    2 => {
                        let end = (at + usize::from(byte)).min(v.len());
                        v.drain(at..end);
                    }
                    _ => v.truncate(at),
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
        entry(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(bytes in mutated()) {
        entry(&bytes);
    }

    #[test]
    fn stream_framer_never_panics(bytes in mutated(), cuts in proptest::collection::vec(1..64usize, 1..40)) {
        let mut f = StreamFramer::new(4096);
        let mut rest: &[u8] = &bytes;
        for c in cuts.iter().cycle().take(400) {
            if rest.is_empty() { break; }
            let n = (*c).min(rest.len());
            let (a, b) = rest.split_at(n);
            rest = b;
            if f.push(a).is_err() { continue; }
            while let Ok(Some(frame)) = f.next_frame() {
                if let holdline_sip::framing::Frame::Message(m) = frame {
                    entry(&m);
                }
            }
        }
    }
}

#[test]
fn seeds_themselves_pass_the_entry_point() {
    for s in SEEDS {
        entry(s);
    }
}

/// One step of a random conversation with a transaction layer.
#[derive(Debug, Clone)]
enum Op {
    /// A request arrives (method index, branch index).
    Request(u8, u8),
    /// A response arrives (code index, method index, branch index).
    Response(u8, u8, u8),
    /// The TU starts a client transaction (method index, branch index).
    Send(u8, u8),
    /// The TU answers the n-th server transaction it was told about.
    Answer(u8, u8),
    /// The TU cancels the n-th client transaction.
    Cancel(u8),
    /// Time passes (milliseconds).
    Wait(u16),
}

const METHODS: [&str; 4] = ["INVITE", "OPTIONS", "CANCEL", "ACK"];
const CODES: [u16; 6] = [100, 180, 200, 486, 503, 603];

fn text(method: &str, branch: u8) -> Message {
    let b = if branch.is_multiple_of(5) {
        "old".to_owned() // RFC 2543 style
    } else {
        format!("z9hG4bK{branch}")
    };
    let raw = format!(
        "{method} sip:a@127.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch={b}\r\nFrom: <sip:x@y>;tag=f\r\nTo: <sip:a@b>\r\nCall-ID: c{branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    Message::parse(raw.as_bytes()).unwrap()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, 0..12u8).prop_map(|(m, b)| Op::Request(m, b)),
        (0..6u8, 0..4u8, 0..12u8).prop_map(|(c, m, b)| Op::Response(c, m, b)),
        (0..3u8, 0..12u8).prop_map(|(m, b)| Op::Send(m, b)),
        (0..8u8, 0..6u8).prop_map(|(n, c)| Op::Answer(n, c)),
        (0..8u8).prop_map(Op::Cancel),
        (0..40_000u16).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever arrives in whatever order, the layer never panics and every
    /// transaction ends once time passes (nothing lives forever).
    #[test]
    fn transaction_layer_survives_any_sequence(ops in proptest::collection::vec(op(), 1..60)) {
        let t0 = Instant::now();
        let mut now = t0;
        let cfg = TxConfig { max_transactions: 16, ..TxConfig::default() };
        let mut tx = Transactions::new(cfg);
        let peer = Peer { addr: "10.0.0.5:5060".parse().unwrap(), transport: Transport::Udp };
        let mut servers = Vec::new();
        let mut clients = Vec::new();
        for op in ops {
            match op {
                Op::Request(m, b) => tx.handle_incoming(now, text(METHODS[usize::from(m)], b), peer),
                Op::Response(c, m, b) => {
                    let req = text(METHODS[usize::from(m) % 3], b);
                    if let Ok(r) = Message::response_for(&req, CODES[usize::from(c)], "X") {
                        tx.handle_incoming(now, r, peer);
                    }
                }
                Op::Send(m, b) => {
                    if let Ok(id) = tx.send_request(now, text(METHODS[usize::from(m)], b), peer) {
                        clients.push(id);
                    }
                }
                Op::Answer(n, c) => {
                    if let Some(id) = servers.get(usize::from(n)).copied() {
                        if let Some(req) = tx.server_request(id).cloned() {
                            if let Ok(r) = Message::response_for(&req, CODES[usize::from(c)], "X") {
                                let _ = tx.send_response(now, id, &r);
                            }
                        }
                    }
                }
                Op::Cancel(n) => {
                    if let Some(id) = clients.get(usize::from(n)).copied() {
                        let _ = tx.cancel(now, id);
                    }
                }
                Op::Wait(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    tx.handle_timeout(now);
                }
            }
            while tx.poll_transmit().is_some() {}
            while let Some(e) = tx.poll_event() {
                if let holdline_sip::transaction::TxEvent::Request { tx: Some(id), .. } = e {
                    servers.push(id);
                }
            }
            prop_assert!(tx.len() <= 16);
        }
        // No more input: every transaction must end within max_lifetime + 64*T1.
        let end = now + Duration::from_secs(400);
        while let Some(t) = tx.poll_timeout() {
            prop_assert!(t <= end, "a timer beyond every bound");
            tx.handle_timeout(t);
            while tx.poll_transmit().is_some() {}
            while tx.poll_event().is_some() {}
        }
        prop_assert!(tx.is_empty());
    }
}
