//! The real daemon with a phone on TCP and the test playing the cloud (a
//! UDP socket on the block's cloud address that answers probes and
//! REGISTERs and sends INVITEs), so every byte on both sides is seen:
//! - an INVITE from the cloud gets holdline's own 100 Trying at once, and
//!   the phone's 100 is never relayed (RFC 3261 §16.2, §16.7);
//! - once the phone's TCP connection has closed, a request for it goes over
//!   a new connection to the address in its Contact, not to the ephemeral
//!   port it registered from (RFC 3261 §18.1.1, §18.2.2);
//! - when no connection can be opened, the cloud is answered 480 instead
//!   of silence.
//!
//! No timing asserts: every wait is a generous bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::DOMAIN;
use holdline_tests::net::{self, Block};

const WAIT: Duration = Duration::from_secs(20);

/// Header values of `name` (case-insensitive) in a SIP message's text.
fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    headers(msg, name).first().copied().unwrap_or("")
}

fn status(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// A response to `req` (its Vias, From, To with a tag, Call-ID, CSeq).
fn reply(req: &str, code: u16, reason: &str, extra: &str) -> String {
    let mut r = format!("SIP/2.0 {code} {reason}\r\n");
    for v in headers(req, "Via") {
        r.push_str(&format!("Via: {v}\r\n"));
    }
    r.push_str(&format!("From: {}\r\n", header(req, "From")));
    let to = header(req, "To");
    if code > 100 && !to.contains("tag=") {
        r.push_str(&format!("To: {to};tag=t{code}\r\n"));
    } else {
        r.push_str(&format!("To: {to}\r\n"));
    }
    r.push_str(&format!("Call-ID: {}\r\n", header(req, "Call-ID")));
    r.push_str(&format!("CSeq: {}\r\n", header(req, "CSeq")));
    r.push_str(extra);
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

/// The test's cloud: answers OPTIONS and REGISTER, hands every other
/// message to the test, sends what the test gives it.
struct Cloud {
    sock: UdpSocket,
    rx: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Cloud {
    fn start(addr: SocketAddr) -> Cloud {
        let sock = UdpSocket::bind(addr).expect("cloud socket");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let s = sock.try_clone().expect("clone");
        let st = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if msg.starts_with("OPTIONS ") {
                    Some(reply(&msg, 200, "OK", ""))
                } else if msg.starts_with("REGISTER ") {
                    let contact = header(&msg, "Contact");
                    Some(reply(
                        &msg,
                        200,
                        "OK",
                        &format!("Contact: {contact};expires=3600\r\n"),
                    ))
                } else {
                    None
                };
                match answer {
                    Some(a) => {
                        let _ = s.send_to(a.as_bytes(), from);
                    }
                    None => {
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Cloud {
            sock,
            rx,
            stop,
            thread: Some(thread),
        }
    }

    /// Messages (not probes or REGISTERs) until one matches `pred`.
    fn until(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(m) = self.rx.recv_timeout(Duration::from_millis(100)) {
                let done = pred(&m);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
        panic!("the cloud did not get what it waited for; it got {seen:#?}");
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one SIP message (headers and a body of Content-Length) from a stream.
fn read_message(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = header(&text[..end + 2], "Content-Length")
                .parse()
                .unwrap_or(0);
            if text.len() >= end + 4 + len {
                return text[..end + 4 + len].to_string();
            }
        }
        assert!(Instant::now() < deadline, "no whole message: {text:?}");
        match s.read(&mut chunk) {
            Ok(0) => panic!("connection closed before a whole message: {text:?}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
}

/// The connection holdline opens to the phone's Contact address.
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).expect("nonblocking");
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking stream");
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "holdline never connected to the Contact address"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn tcp_connections(hl: &Holdline) -> u64 {
    let text = hl.console_json(&["status"]).expect("status");
    let v: serde_json::Value = serde_json::from_str(&text).expect("status is JSON");
    v.pointer("/status/tcp_connections")
        .or_else(|| v.get("tcp_connections"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("tcp_connections in {text}"))
}

fn wait_tcp_connections(hl: &Holdline, n: u64) {
    let deadline = Instant::now() + WAIT;
    while tcp_connections(hl) != n {
        assert!(Instant::now() < deadline, "tcp connections never {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn invite(hl: &Holdline, cloud: SocketAddr, contact: &str, call: &str) -> String {
    format!(
        "INVITE {contact} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {cloud};branch=z9hG4bK-{call}\r\n\
         Route: <{path}>\r\n\
         Max-Forwards: 69\r\n\
         From: <sip:bob@{DOMAIN}>;tag=b-{call}\r\n\
         To: <sip:carol@{DOMAIN}>\r\n\
         Call-ID: {call}\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:bob@{cloud}>\r\n\
         Content-Length: 0\r\n\r\n",
        path = hl.path_uri(),
    )
}

#[test]
fn a_tcp_phone_whose_connection_closed_is_reached_at_its_contact_else_the_cloud_gets_480() {
    let block = Block::allocate();
    let cloud_addr = SocketAddr::new(block.cloud().into(), 5060);
    assert!(net::udp_port_free(block.cloud(), 5060));
    let cloud = Cloud::start(cloud_addr);
    let mut opts = HoldlineOpts::new(&block);
    // The phone's TCP connection comes from 127.0.0.1 (std cannot bind a
    // client socket first); its Contact listener is on the block's phone.
    opts.lan_subnets.push("127.0.0.1/32".into());
    let hl = Holdline::start(opts).expect("holdline starts");

    // The phone registers over TCP; its Contact names where it listens.
    let contact_addr = SocketAddr::new(block.phone(1).into(), 5080);
    let contact = format!("sip:carol@{contact_addr};transport=tcp");
    let mut phone = TcpStream::connect(hl.lan()).expect("phone connects");
    let src = phone.local_addr().expect("local");
    let register = format!(
        "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {src};branch=z9hG4bK-reg1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@{DOMAIN}>;tag=r1\r\n\
         To: <sip:carol@{DOMAIN}>\r\n\
         Call-ID: reg-carol\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <{contact}>\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    );
    phone.write_all(register.as_bytes()).expect("REGISTER sent");
    let ok = read_message(&mut phone);
    assert_eq!(status(&ok), Some(200), "{ok}");
    // The phone goes away (reboot, NAT time-out, ...): its connection closes.
    drop(phone);
    wait_tcp_connections(&hl, 0);

    // 1. The cloud calls it: holdline's 100 at once, then a new connection
    //    to the Contact address.
    let listener = TcpListener::bind(contact_addr).expect("the phone listens");
    let inv = invite(&hl, cloud_addr, &contact, "call-1");
    cloud
        .sock
        .send_to(inv.as_bytes(), hl.wan())
        .expect("INVITE sent");
    let seen = cloud.until(|m| status(m) == Some(100));
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert!(header(&seen[0], "Call-ID") == "call-1", "{seen:#?}");
    let mut conn = accept(&listener);
    let got = read_message(&mut conn);
    assert!(got.starts_with(&format!("INVITE {contact} ")), "{got}");
    // The phone's own 100 stays with holdline; its 486 goes through.
    conn.write_all(reply(&got, 100, "Trying from the phone", "").as_bytes())
        .expect("100 sent");
    conn.write_all(reply(&got, 486, "Busy Here", "").as_bytes())
        .expect("486 sent");
    let seen = cloud.until(|m| status(m).is_some_and(|s| s >= 200));
    let codes: Vec<Option<u16>> = seen.iter().map(|m| status(m)).collect();
    assert_eq!(codes, vec![Some(486)], "{seen:#?}");
    let status_json = hl.console_json(&["status"]).expect("status");
    assert!(
        status_json.contains("\"trying_dropped\":1"),
        "{status_json}"
    );

    // 2. The phone is gone altogether: nothing listens at its Contact; the
    //    cloud gets 100, then 480, not silence.
    drop(conn);
    drop(listener);
    wait_tcp_connections(&hl, 0);
    let inv = invite(&hl, cloud_addr, &contact, "call-2");
    cloud
        .sock
        .send_to(inv.as_bytes(), hl.wan())
        .expect("INVITE sent");
    let seen = cloud.until(|m| status(m).is_some_and(|s| s >= 200));
    let codes: Vec<Option<u16>> = seen.iter().map(|m| status(m)).collect();
    assert_eq!(codes, vec![Some(100), Some(480)], "{seen:#?}");
    assert_eq!(header(&seen[1], "Call-ID"), "call-2");
    assert!(
        hl.log().contains("cannot reach the phone at"),
        "{}",
        hl.log()
    );
    let status_json = hl.console_json(&["status"]).expect("status");
    assert!(
        status_json.contains("\"phone_unreachable\":1"),
        "{status_json}"
    );
}

/// Reads datagrams on `s` until one matches `pred`.
fn recv_until(s: &UdpSocket, pred: impl Fn(&str) -> bool) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = pred(&m);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
    panic!("the phone did not get what it waited for; it got {seen:#?}");
}

#[test]
fn a_udp_phones_invite_gets_holdlines_100_at_once_and_a_retransmission_is_not_forwarded_again() {
    let block = Block::allocate();
    let cloud_addr = SocketAddr::new(block.cloud().into(), 5060);
    assert!(net::udp_port_free(block.cloud(), 5060));
    let cloud = Cloud::start(cloud_addr);
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
    let phone_addr = SocketAddr::new(block.phone(2).into(), 5060);
    let phone = UdpSocket::bind(phone_addr).expect("phone socket");
    let inv = format!(
        "INVITE sip:5551234@{DOMAIN} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {phone_addr};branch=z9hG4bK-u1;rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:dave@{DOMAIN}>;tag=d1\r\n\
         To: <sip:5551234@{DOMAIN}>\r\n\
         Call-ID: udp-call-1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:dave@{phone_addr}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    phone
        .send_to(inv.as_bytes(), hl.lan())
        .expect("INVITE sent");
    // holdline's 100, before the cloud has said anything
    let got = recv_until(&phone, |m| status(m).is_some());
    assert_eq!(status(&got[0]), Some(100), "{got:#?}");
    assert_eq!(header(&got[0], "Call-ID"), "udp-call-1");
    let at_cloud = cloud.until(|m| m.starts_with("INVITE "));
    let fwd = at_cloud.last().expect("INVITE").clone();
    // the cloud's own 100 stays with holdline; its 180 goes through
    let hl_wan = hl.wan();
    let to_hl = |m: String| {
        cloud.sock.send_to(m.as_bytes(), hl_wan).expect("sent");
    };
    to_hl(reply(&fwd, 100, "Trying at the cloud", ""));
    to_hl(reply(&fwd, 180, "Ringing", ""));
    let got = recv_until(&phone, |m| status(m) == Some(180));
    assert!(
        got.iter().all(|m| !m.contains("Trying at the cloud")),
        "{got:#?}"
    );
    // the phone retransmits (it missed our answers): it gets the 180 again;
    // the cloud no second INVITE
    phone
        .send_to(inv.as_bytes(), hl.lan())
        .expect("INVITE again");
    let again = recv_until(&phone, |m| status(m).is_some());
    assert_eq!(status(&again[0]), Some(180), "{again:#?}");
    // the final ends it; whatever reached the cloud by then holds no
    // second INVITE (a forwarded one would have come long before the 486
    // went back)
    to_hl(reply(&fwd, 486, "Busy Here", ""));
    let got = recv_until(&phone, |m| status(m) == Some(486));
    assert!(got.iter().all(|m| status(m) != Some(100)), "{got:#?}");
    let ack = inv
        .replace("INVITE sip:5551234", "ACK sip:5551234")
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
        .replacen(
            &format!("To: <sip:5551234@{DOMAIN}>"),
            &format!("To: <sip:5551234@{DOMAIN}>;tag=t486"),
            1,
        );
    phone.send_to(ack.as_bytes(), hl.lan()).expect("ACK sent");
    let seen = cloud.until(|m| m.starts_with("ACK "));
    // Every INVITE the cloud got is the first or one of holdline's own
    // Timer A repetitions (none unless the cloud's 100 took over 500 ms):
    // the phone's retransmission never went on.
    let invites = at_cloud
        .iter()
        .chain(seen.iter())
        .filter(|m| m.starts_with("INVITE "))
        .count() as u64;
    let status_json = hl.console_json(&["status"]).expect("status");
    let v: serde_json::Value = serde_json::from_str(&status_json).expect("JSON");
    let repeated = v
        .pointer("/status/invite_retransmissions")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("invite_retransmissions in {status_json}"));
    assert_eq!(
        invites,
        1 + repeated,
        "the retransmission was forwarded: {seen:#?}"
    );
    assert!(status_json.contains("\"trying_sent\":1"), "{status_json}");
    assert!(
        status_json.contains("\"trying_dropped\":1"),
        "{status_json}"
    );
}
