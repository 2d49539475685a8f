//! Differential check: on the valid RFC 4475 messages and typical phone
//! traffic, our typed reads (Via transport/port/branch, CSeq, Call-ID,
//! From tag) agree with ezk-sip-types 0.6, a maintained parser. Where ezk
//! cannot decode a field, that is listed (and it must stay an ezk gap, not
//! a disagreement).

// Test helpers outside #[test] fns: a panic is the test failing.
#![allow(clippy::unwrap_used)]

use ezk_sip_types::header::typed::{CSeq, CallID, FromTo, Via};
use ezk_sip_types::msg::{Line, PullParser};
use ezk_sip_types::{Headers, Name};
use holdline_sip::Message;

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ezk_headers(raw: &[u8]) -> Option<Headers> {
    let src = bytes::Bytes::copy_from_slice(raw);
    let mut p = PullParser::new(&src, 0);
    let mut headers = Headers::new();
    let mut first = true;
    for line in &mut p {
        let line = line.ok()?;
        if first {
            first = false;
            continue;
        }
        let text = std::str::from_utf8(line).ok()?;
        let (_, l) = Line::parse(&src, text).ok()?;
        headers.insert(l.name, l.value);
    }
    Some(headers)
}

/// Returns the fields ezk could not decode; panics on a disagreement.
fn compare(name: &str, raw: &[u8]) -> Vec<&'static str> {
    let ours = Message::parse(raw).unwrap_or_else(|e| panic!("{name}: ours failed: {e}"));
    let Some(h) = ezk_headers(raw) else {
        return vec!["message"];
    };
    let mut gaps = Vec::new();
    match h.get_named::<Vec<Via>>() {
        Ok(vias) => {
            let mine: Vec<_> = ours.vias().collect();
            assert_eq!(mine.len(), vias.len(), "{name}: Via count");
            for (m, e) in mine.iter().zip(&vias) {
                assert!(
                    m.transport.eq_ignore_ascii_case(&e.transport),
                    "{name}: transport"
                );
                assert_eq!(m.port, e.sent_by.port, "{name}: port");
                // ezk percent-decodes parameter values; we keep the wire form
                // (transaction matching compares the bytes as sent).
                let eb = e.params.get_val("branch").map(|b| b.as_str().to_owned());
                assert_eq!(m.branch().map(pct_decode), eb, "{name}: branch");
                let host = e.sent_by.host.to_string();
                assert!(
                    m.host
                        .trim_matches(['[', ']'])
                        .eq_ignore_ascii_case(host.trim_matches(['[', ']'])),
                    "{name}: host {} vs {host}",
                    m.host
                );
            }
        }
        Err(_) => gaps.push("Via"),
    }
    match h.get_named::<CSeq>() {
        Ok(c) => {
            let m = ours.cseq().unwrap();
            assert_eq!(m.seq, c.cseq, "{name}: CSeq number");
            assert_eq!(
                m.method.as_str(),
                c.method.to_string(),
                "{name}: CSeq method"
            );
        }
        Err(_) => gaps.push("CSeq"),
    }
    match h.get_named::<CallID>() {
        Ok(c) => assert_eq!(ours.call_id(), Some(c.0.as_str()), "{name}: Call-ID"),
        Err(_) => gaps.push("Call-ID"),
    }
    match h.get::<FromTo>(Name::FROM) {
        Ok(f) => assert_eq!(
            ours.from_tag().map(str::to_owned),
            f.tag.map(|t| t.as_str().to_owned()),
            "{name}: From tag"
        ),
        Err(_) => gaps.push("From"),
    }
    gaps
}

#[test]
fn typed_reads_agree_with_ezk() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let manifest = std::fs::read_to_string(dir.join("MANIFEST")).unwrap();
    let mut report = Vec::new();
    let mut compared = 0;
    for line in manifest.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        if kind != "valid" && kind != "response" {
            continue;
        }
        let raw = std::fs::read(dir.join(format!("{name}.sip"))).unwrap();
        let gaps = compare(name, &raw);
        if gaps.is_empty() {
            compared += 1;
        } else {
            report.push(format!("{name}: ezk cannot decode {}", gaps.join(", ")));
        }
    }
    // Typical phone traffic must be fully comparable.
    let phone = b"REGISTER sip:cloud.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nFrom: <sip:100@cloud.test>;tag=49583\r\nTo: <sip:100@cloud.test>\r\nCall-ID: 843817637684230@10.0.0.5\r\nCSeq: 1826 REGISTER\r\nContact: <sip:100@10.0.0.5:5060>;expires=3600\r\nContent-Length: 0\r\n\r\n";
    assert!(compare("phone REGISTER", phone).is_empty());
    println!(
        "compared fully: {compared}; ezk gaps:\n{}",
        report.join("\n")
    );
    assert!(
        compared >= 10,
        "only {compared} messages fully compared:\n{}",
        report.join("\n")
    );
}
