//! Bytes from the network → parse → proxy primitives → serialize: no panic,
//! and what the proxy sends parses again. Same entry point as the bounded
//! proptests in tests/never_panics.rs.
#![no_main]

use std::net::SocketAddr;

use holdline_sip::inbound::{proxy_pipeline, DropStats};
use holdline_sip::proxy::{Leg, ProxyIdentity};
use holdline_sip::transaction::Transport;
use holdline_sip::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let lan = Leg::new(SocketAddr::from(([127, 0, 0, 1], 5060)), Transport::Udp);
    let wan = Leg::new(SocketAddr::from(([127, 0, 0, 1], 5070)), Transport::Udp);
    let id = ProxyIdentity::new(vec![lan.clone(), wan.clone()], 1);
    let src = SocketAddr::from(([10, 0, 0, 5], 5060));
    let mut stats = DropStats::default();
    if let Some(out) = proxy_pipeline(&id, &lan, &wan, src, data, &mut stats) {
        if out != b"\r\n" {
            assert!(Message::parse_structure(&out).is_ok());
        }
    }
    if let Ok(m) = Message::parse(data) {
        let b = m.to_bytes();
        let again = Message::parse(&b).expect("serialized valid message parses");
        assert_eq!(again.to_bytes(), b);
        let _ = (
            m.contacts(),
            m.routes(),
            m.record_routes(),
            m.paths(),
            m.event(),
        );
        let _ = Message::response_for(&m, 400, "Bad Request");
    }
});
