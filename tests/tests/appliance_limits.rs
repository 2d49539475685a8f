//! Per-source rate limiting on the LAN listener (issue 2 item 5): one source
//! flooding OPTIONS (a bounded count) is limited and counted, while another
//! phone still registers through holdline to the real Kamailio cloud.
//! No timing asserts: the flood is a fixed count, every wait a generous bound.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

const PHONE_PORT: u16 = 5062;
const FLOOD: usize = 2000;
const RATE: u32 = 20;
const BURST: u32 = 40;

fn options(i: usize, from: SocketAddr, to: SocketAddr) -> String {
    format!(
        "OPTIONS sip:{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKflood{i};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@{from}>;tag=f{i}\r\n\
         To: <sip:{to}>\r\n\
         Call-ID: flood-{i}@{from}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The number after `"key":` in a JSON text.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json
        .get(at..)?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn a_flooding_source_is_limited_while_another_phone_registers() {
    let block = Block::allocate();
    let users = User::numbered(3000, 5);
    let _cloud = Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone()))
        .expect("Kamailio cloud starts");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");

    // A low LAN limit for this test: the fixture's config gets two keys.
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    assert!(text.contains("[lan]\n"), "{text}");
    let text = text.replacen(
        "[lan]\n",
        &format!("[lan]\nrate_limit_per_s = {RATE}\nrate_limit_burst = {BURST}\n"),
        1,
    );
    std::fs::write(hl.config_path(), text).expect("config written");
    hl.start_again().expect("holdline restarts with the limit");

    // One source floods a bounded number of OPTIONS as fast as it can.
    let flooder = UdpSocket::bind(SocketAddrV4::new(block.phone(0), PHONE_PORT)).expect("bind");
    let from = flooder.local_addr().expect("local addr");
    let started = Instant::now();
    for i in 0..FLOOD {
        // A full socket buffer may refuse a datagram: that only lowers the count.
        let _ = flooder.send_to(options(i, from, hl.lan()).as_bytes(), hl.lan());
    }
    let flood_secs = started.elapsed().as_secs_f64();

    // Another phone registers normally meanwhile.
    let reg = Sipp::new(Scenario::Register)
        .name("register-limits")
        .local(block.phone(1), PHONE_PORT)
        .remote(hl.lan())
        .users(&users)
        .rate(5.0)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(reg.all_ok(), "{reg}");
    assert_eq!(reg.successful, 5, "{reg}");

    // The flooder got answers only for what its bucket allowed.
    flooder
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut answered = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = flooder.recv_from(&mut buf) {
        if buf.get(..n).is_some_and(|b| b.starts_with(b"SIP/2.0 200")) {
            answered += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(BURST) + f64::from(RATE) * elapsed;
    assert!(
        (answered as f64) <= allowed + 1.0,
        "{answered} OPTIONS answered, the bucket allows at most {allowed:.0} \
         (flood took {flood_secs:.2} s, test {elapsed:.1} s)"
    );
    assert!(answered >= 1, "the flooder's first requests are served");

    // ... and the rest were dropped and counted.
    let status = hl.console_json(&["status"]).expect("status");
    let limited = json_number(&status, "rate_limited_lan").expect("rate_limited_lan in status");
    // (Loose: the kernel may drop a few datagrams of the flood itself.)
    assert!(
        limited >= (FLOOD / 2) as u64,
        "only {limited} of {FLOOD} limited: {status}"
    );
    assert_eq!(
        json_number(&status, "rate_limited_wan"),
        Some(0),
        "{status}"
    );
}
