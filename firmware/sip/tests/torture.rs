//! RFC 4475 torture messages (tests/torture/*.sip, expectations in
//! tests/torture/MANIFEST): valid ones parse and are forwarded intact,
//! invalid ones are answered or dropped as the RFC says.

// Test helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;

use holdline_sip::inbound::{classify, proxy_pipeline, DropStats, Inbound};
use holdline_sip::proxy::{Leg, ProxyIdentity};
use holdline_sip::transaction::Transport;
use holdline_sip::{HeaderName, Message};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torture")
}

fn manifest() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(dir().join("MANIFEST")).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace().map(str::to_owned);
            let name = parts.next().unwrap();
            (name, parts.collect())
        })
        .collect()
}

fn identity() -> (ProxyIdentity, Leg, Leg) {
    let lan = Leg::new("127.0.0.1:5060".parse().unwrap(), Transport::Udp);
    let wan = Leg::new("127.0.0.1:5070".parse().unwrap(), Transport::Udp);
    (
        ProxyIdentity::new(vec![lan.clone(), wan.clone()], 7),
        lan,
        wan,
    )
}

fn contains_line(hay: &[u8], line: &[u8]) -> bool {
    let mut needle = b"\r\n".to_vec();
    needle.extend_from_slice(line);
    needle.extend_from_slice(b"\r\n");
    hay.windows(needle.len()).any(|w| w == needle.as_slice())
}

#[test]
fn every_corpus_file_has_an_expectation_and_vice_versa() {
    let mut files: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "sip").then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = manifest().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(files, names);
    assert_eq!(files.len(), 49);
}

#[test]
fn rfc4475_corpus() {
    let (id, lan, wan) = identity();
    let source: SocketAddr = "192.0.2.200:5060".parse().unwrap();
    let mut failures = Vec::new();
    for (name, expect) in manifest() {
        let raw = std::fs::read(dir().join(format!("{name}.sip"))).unwrap();
        let what = expect.first().map(String::as_str).unwrap_or("");
        let code: Option<u16> = expect.get(1).and_then(|c| c.parse().ok());
        let mut stats = DropStats::default();
        let result: Result<(), String> = (|| match what {
            "valid" => {
                let m = Message::parse(&raw).map_err(|e| format!("parse: {e}"))?;
                let out = proxy_pipeline(&id, &lan, &wan, source, &raw, &mut stats)
                    .ok_or("not forwarded")?;
                let fwd =
                    Message::parse(&out).map_err(|e| format!("forwarded does not parse: {e}"))?;
                if !fwd.is_request() {
                    return Err(format!("answered {:?} instead of forwarded", fwd.status()));
                }
                if fwd.body() != m.body() {
                    return Err("body changed".into());
                }
                let first_via = m.headers().position(|h| h.kind == HeaderName::Via);
                // A strict router as next hop legitimately rewrites Route
                // (RFC 3261 §16.6 step 6).
                let strict = m
                    .top_route()
                    .and_then(|r| r.parsed_uri())
                    .is_some_and(|u| u.as_sip().is_some_and(|s| !s.is_loose()));
                for (i, h) in m.headers().enumerate() {
                    if Some(i) == first_via
                        || h.kind == HeaderName::MaxForwards
                        || (strict && h.kind == HeaderName::Route)
                    {
                        continue;
                    }
                    if !contains_line(&out, h.raw) {
                        return Err(format!("line lost: {:?}", String::from_utf8_lossy(h.raw)));
                    }
                }
                Ok(())
            }
            "response" => {
                let m = Message::parse(&raw).map_err(|e| format!("parse: {e}"))?;
                if m.to_bytes() != raw {
                    return Err("round trip differs".into());
                }
                Ok(())
            }
            "reject" => match classify(&raw, 65_000) {
                Inbound::Reject { response, error } => {
                    if response.status() != code {
                        return Err(format!("answered {:?} ({error})", response.status()));
                    }
                    if response.reason().is_none_or(str::is_empty) {
                        return Err("no reason phrase".into());
                    }
                    // The answer copies the request's Via/From/To/Call-ID/CSeq
                    // as they came (RFC 3261 §8.2.6), malformed or not.
                    Message::parse_structure(&response.to_bytes())
                        .map_err(|e| format!("answer: {e}"))?;
                    Ok(())
                }
                other => Err(format!("not rejected: {other:?}")),
            },
            "drop" => {
                let out = proxy_pipeline(&id, &lan, &wan, source, &raw, &mut stats);
                if out.is_some() || stats.total() != 1 {
                    return Err(format!("not dropped and counted: {out:?} {stats:?}"));
                }
                Ok(())
            }
            "answer" => {
                Message::parse(&raw).map_err(|e| format!("parse: {e}"))?;
                let out =
                    proxy_pipeline(&id, &lan, &wan, source, &raw, &mut stats).ok_or("no answer")?;
                let r = Message::parse(&out).map_err(|e| format!("answer: {e}"))?;
                if r.status() != code {
                    return Err(format!("answered {:?}", r.status()));
                }
                Ok(())
            }
            other => Err(format!("unknown expectation {other}")),
        })();
        if let Err(e) = result {
            failures.push(format!("{name} ({}): {e}", expect.join(" ")));
        }
    }
    assert!(
        failures.is_empty(),
        "RFC 4475 failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_details() {
    let read = |n: &str| std::fs::read(dir().join(format!("{n}.sip"))).unwrap();
    let m = Message::parse(&read("wsinv")).unwrap();
    assert_eq!(m.to_tag(), Some("1918181833n"));
    assert_eq!(m.from_tag(), Some("98asjd8"));
    assert_eq!(m.max_forwards(), Some(68));
    assert_eq!(m.cseq().unwrap().seq, 9);
    let vias: Vec<_> = m
        .vias()
        .map(|v| (v.transport, v.host, v.branch()))
        .collect();
    assert_eq!(
        vias,
        [
            ("UDP", "192.0.2.2", Some("390skdjuw")),
            ("TCP", "spindle.example.com", Some("z9hG4bK9ikj8")),
            ("UDP", "192.168.255.111", Some("z9hG4bK30239")),
        ]
    );
    assert_eq!(m.body().len(), 150);
    let m = Message::parse(&read("intmeth")).unwrap();
    assert_eq!(
        m.method().unwrap().as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    let m = Message::parse(&read("esc02")).unwrap();
    assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
    assert_eq!(m.header("Contact"), Some("<sip:alias1@host1.example.com>"));
    let m = Message::parse(&read("semiuri")).unwrap();
    let u = m.parsed_request_uri().unwrap();
    let s = u.as_sip().unwrap();
    assert_eq!(s.user, Some("user;par=u%40example.net"));
    assert_eq!(s.host, "example.com");
    let m = Message::parse(&read("dblreq")).unwrap();
    assert!(m.body().is_empty());
    assert!(!String::from_utf8_lossy(&m.to_bytes()).contains("INVITE"));
    let m = Message::parse(&read("transports")).unwrap();
    let t: Vec<_> = m.vias().map(|v| v.transport).collect();
    assert_eq!(t, ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]);
    let m = Message::parse(&read("noreason")).unwrap();
    assert_eq!(m.reason(), Some(""));
}
