//! The uplink monitor fed by what the real daemon sees on its sockets
//! (issue 4 item 1): ICMP port-unreachable from a cloud address where
//! nothing listens (transport errors, via `IP_RECVERR` on the WAN socket),
//! requests that a silent cloud leaves unanswered (transaction time-outs,
//! and the phone's clean answer from holdline), and the technician's
//! `cloud force-down|force-up|auto`.
//!
//! No timing asserts: every wait is a generous bound; what is asserted is
//! the mechanism (the reason and the counters in `show cloud`, the event
//! log), never how fast it was.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::DOMAIN;
use holdline_tests::net::{self, Block};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// `show cloud` as JSON fields.
fn cloud(hl: &Holdline) -> Value {
    let text = hl.console_json(&["show", "cloud"]).expect("show cloud");
    let v: Value = serde_json::from_str(&text).expect("show cloud is JSON");
    v["cloud"].clone()
}

fn wait_cloud(hl: &Holdline, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = cloud(hl);
        if pred(&c) || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn num(c: &Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or_else(|| panic!("{key} in {c}"))
}

/// holdline with the cloud on the block's cloud address, a probe every
/// second with a minute's time-out: within a test nothing but transport
/// errors and transaction time-outs can count as a failure.
fn start_holdline(block: &Block) -> Holdline {
    start_holdline_with(block, "udp")
}

/// [`start_holdline`] with the cloud proxy on `transport` (`udp`, `tcp`).
fn start_holdline_with(block: &Block, transport: &str) -> Holdline {
    let mut opts = HoldlineOpts::new(block);
    opts.probe_interval_ms = 1000;
    let mut hl = Holdline::start(opts).expect("holdline starts");
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    let line = "probe_interval_ms = 1000\n";
    assert!(text.contains(line), "{text}");
    let text = text.replacen(line, &format!("{line}probe_timeout_ms = 60000\n"), 1);
    assert!(text.contains("proxy = \"udp:"), "{text}");
    let text = text.replacen("proxy = \"udp:", &format!("proxy = \"{transport}:"), 1);
    std::fs::write(hl.config_path(), text).expect("config written");
    hl.start_again()
        .expect("holdline restarts with the probe settings");
    hl
}

#[test]
fn icmp_port_unreachable_from_the_cloud_makes_the_uplink_down_by_transport_errors() {
    let block = Block::allocate();
    // Nothing listens on the cloud's port: the kernel answers every
    // datagram to it with ICMP port unreachable.
    assert!(net::udp_port_free(block.cloud(), 5060));
    let hl = start_holdline(&block);

    let c = wait_cloud(&hl, |c| c["state"] == "down");
    assert_eq!(c["state"], "down", "{c}");
    assert_eq!(c["reason"], "transport_error", "{c}");
    assert!(num(&c, "transport_errors") >= 3, "{c}");
    // Not from probe time-outs (a minute away) nor request time-outs (none sent).
    assert_eq!(num(&c, "probes_timed_out"), 0, "{c}");
    assert_eq!(num(&c, "transaction_timeouts"), 0, "{c}");
    assert!(num(&c, "to_suspect") >= 1 && num(&c, "to_down") >= 1, "{c}");
    let last = c["last_change"].as_str().unwrap_or_default().to_string();
    assert!(last.starts_with("suspect -> down (transport_error)"), "{c}");

    // Logged and in the event log.
    assert!(
        hl.log().contains("cloud suspect -> down (transport_error)"),
        "{}",
        hl.log()
    );
    let log = hl.console_json(&["show", "log"]).expect("show log");
    assert!(
        log.contains("cloud suspect -> down (transport_error)"),
        "{log}"
    );

    // A technician holds it up whatever the errors say, then lets the
    // evidence decide again: down again, from transport errors.
    let forced = hl.console_json(&["cloud", "force-up"]).expect("force-up");
    assert!(forced.contains("\"state\":\"up\""), "{forced}");
    assert!(forced.contains("\"mode\":\"forcedup\""), "{forced}");
    assert!(forced.contains("\"reason\":\"forced\""), "{forced}");
    let before = num(&cloud(&hl), "transport_errors");
    let auto = hl.console_json(&["cloud", "auto"]).expect("auto");
    assert!(auto.contains("\"mode\":\"auto\""), "{auto}");
    let c = wait_cloud(&hl, |c| {
        c["state"] == "down" && num(c, "transport_errors") > before
    });
    assert_eq!(c["state"], "down", "{c}");
    assert_eq!(c["reason"], "transport_error", "{c}");
    assert_eq!(c["mode"], "auto", "{c}");
    let log = hl.console_json(&["show", "log"]).expect("show log");
    assert!(log.contains("cloud mode ForcedUp"), "{log}");
}

#[test]
fn refused_tcp_connects_to_the_cloud_make_the_uplink_down_by_transport_errors() {
    let block = Block::allocate();
    assert!(net::tcp_port_free(block.cloud(), 5060));
    let hl = start_holdline_with(&block, "tcp");
    let c = wait_cloud(&hl, |c| c["state"] == "down");
    assert_eq!(c["proxy"], format!("tcp:{}:5060", block.cloud()), "{c}");
    assert_eq!(c["state"], "down", "{c}");
    assert_eq!(c["reason"], "transport_error", "{c}");
    assert!(num(&c, "transport_errors") >= 3, "{c}");
    assert_eq!(num(&c, "probes_timed_out"), 0, "{c}");
}

/// A MESSAGE from a phone, to someone in the cloud.
fn message(from: SocketAddr, branch: &str) -> String {
    format!(
        "MESSAGE sip:bob@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@{DOMAIN}>;tag=m1\r\n\
         To: <sip:bob@{DOMAIN}>\r\n\
         Call-ID: {branch}@{from}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 5\r\n\r\nhello"
    )
}

#[test]
fn a_request_the_silent_cloud_leaves_unanswered_is_a_transaction_timeout_and_gets_a_503() {
    let block = Block::allocate();
    // A cloud that swallows everything: no answer, no ICMP.
    let sink = UdpSocket::bind(SocketAddrV4::new(block.cloud(), 5060)).expect("silent cloud");
    let hl = start_holdline(&block);

    let phone_ip = block.phone(1);
    let port = net::free_port(phone_ip).expect("phone port");
    let phone = UdpSocket::bind(SocketAddrV4::new(phone_ip, port)).expect("phone socket");
    phone
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let me = phone.local_addr().expect("addr");
    // Three requests: with the probes' time-out a minute away, their three
    // time-outs in a row are what makes the uplink Down (down_after = 3).
    let msg = message(me, "z9hG4bKsilent1");
    for m in [
        msg.clone(),
        message(me, "z9hG4bKsilent2"),
        message(me, "z9hG4bKsilent3"),
    ] {
        phone.send_to(m.as_bytes(), hl.lan()).expect("send");
    }

    // holdline forwarded it to the cloud.
    sink.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = vec![0u8; 65_536];
    let forwarded = loop {
        let (n, _) = sink.recv_from(&mut buf).expect("the cloud gets something");
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("MESSAGE ") {
            break text;
        }
    };
    assert!(forwarded.contains("z9hG4bKsilent1"), "{forwarded}");

    // The phone gets a clean answer from holdline, not silence.
    let deadline = Instant::now() + WAIT;
    let mut answer = None;
    while Instant::now() < deadline && answer.is_none() {
        if let Ok((n, _)) = phone.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains("z9hG4bKsilent1") && text.starts_with("SIP/2.0 ") {
                answer = Some(text);
            }
        }
    }
    let answer = answer.unwrap_or_else(|| panic!("no answer; holdline log:\n{}", hl.log()));
    assert!(answer.starts_with("SIP/2.0 503 "), "{answer}");
    assert!(answer.contains("\r\nRetry-After: "), "{answer}");

    let c = cloud(&hl);
    assert!(num(&c, "transaction_timeouts") >= 3, "{c}");
    assert!(num(&c, "unanswered_503") >= 1, "{c}");
    assert_eq!(c["state"], "down", "{c}");
    assert_eq!(c["reason"], "transaction_timeout", "{c}");
    assert_eq!(num(&c, "transport_errors"), 0, "{c}");

    // Its retransmission gets the same answer; the cloud sees no more of it.
    phone.send_to(msg.as_bytes(), hl.lan()).expect("send");
    let mut again = None;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline && again.is_none() {
        if let Ok((n, _)) = phone.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if text.contains("z9hG4bKsilent1") {
                again = Some(text);
            }
        }
    }
    let again = again.expect("the retransmission is answered");
    assert!(again.starts_with("SIP/2.0 503 "), "{again}");
}
