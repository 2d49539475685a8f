//! Lossless message layer: each case the parser choice was judged on.

use holdline_sip::{
    response_for, Contacts, EditError, HeaderName, Message, Method, ParseError, Uri,
};

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const INVITE: &str = "INVITE sip:200@cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport, SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bKb;x-unknown=\"q;v\"
v: SIP/2.0/UDP host.example;branch=z9hG4bKc
Max-Forwards: 70
f: \"Alice \\\"A\\\"\" <sip:100@cloud.test>;tag=1928;x-p=1
t: <tel:+15551234567;phone-context=cloud.test>
i: a84b4c76e66710@10.0.0.5
CSeq: 314159 INVITE
m: <sip:100@[2001:db8::5]:5070;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1;expires=600
Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>
Route: <sip:p3.example;lr>,<sip:p4.example;lr>
X-Unknown: Foo;bar=\"baz, qux\" , other
Subject: folded
 across lines
P-Asserted-Identity: <urn:service:sos>
c: application/sdp
l: 5

v=0
";

#[test]
fn untouched_message_round_trips_byte_for_byte() {
    let raw = crlf(INVITE);
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.to_bytes(), raw);
}

#[test]
fn two_vias_on_one_line_are_both_kept_and_read() {
    let m = Message::parse(&crlf(INVITE)).unwrap();
    let vias: Vec<_> = m.vias().collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].branch(), Some("z9hG4bKa"));
    assert_eq!(vias[0].rport(), Some(None));
    assert_eq!(vias[1].host, "[2001:db8::5]");
    assert_eq!(vias[1].port, Some(5070));
    assert_eq!(vias[1].transport, "TCP");
    assert_eq!(vias[1].params.get("x-unknown"), Some(Some("\"q;v\"")));
    assert_eq!(vias[2].host, "host.example");
}

#[test]
fn compact_forms_are_read_and_kept() {
    let raw = crlf(INVITE);
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.call_id(), Some("a84b4c76e66710@10.0.0.5"));
    assert_eq!(m.from_tag(), Some("1928"));
    assert_eq!(m.content_type(), Some("application/sdp"));
    assert_eq!(m.body(), b"v=0\r\n");
    let out = m.to_bytes();
    assert!(contains(&out, "\r\ni: a84b4c76e66710@10.0.0.5\r\n"));
    assert!(contains(&out, "\r\nl: 5\r\n"));
}

#[test]
fn quoted_contact_params_and_ipv6_contact() {
    let m = Message::parse(&crlf(INVITE)).unwrap();
    let Some(Contacts::List(list)) = m.contacts() else {
        panic!("contacts")
    };
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].instance(),
        Some("<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>")
    );
    assert_eq!(list[0].reg_id(), Some(1));
    assert_eq!(list[0].expires(), Some(600));
    let Some(Uri::Sip(u)) = list[0].parsed_uri() else {
        panic!("uri")
    };
    assert_eq!(u.host, "[2001:db8::5]");
    assert_eq!(u.port, Some(5070));
    assert_eq!(u.params.get("transport"), Some(Some("tcp")));
}

#[test]
fn tel_and_urn_uris() {
    let m = Message::parse(&crlf(INVITE)).unwrap();
    let to = m.to().unwrap();
    assert_eq!(
        to.parsed_uri(),
        Some(Uri::Other {
            scheme: "tel",
            rest: "+15551234567;phone-context=cloud.test"
        })
    );
    assert_eq!(m.header("p-asserted-identity"), Some("<urn:service:sos>"));
}

#[test]
fn route_lists_and_unknown_headers() {
    let m = Message::parse(&crlf(INVITE)).unwrap();
    let rr: Vec<_> = m.record_routes().iter().map(|r| r.uri.to_owned()).collect();
    assert_eq!(rr, ["sip:p1.example;lr", "sip:p2.example;lr"]);
    assert_eq!(m.routes().len(), 2);
    assert_eq!(m.header("x-unknown"), Some("Foo;bar=\"baz, qux\" , other"));
    assert_eq!(m.header("Subject"), Some("folded across lines"));
}

#[test]
fn unknown_method_is_parsed_and_forwarded() {
    let raw = crlf(
        "FOOBAR sip:x@cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKz
From: <sip:a@b>;tag=1
To: <sip:x@cloud.test>
Call-ID: 1
CSeq: 1 FOOBAR
Content-Length: 0

",
    );
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.method(), Some(&Method::Extension("FOOBAR".into())));
    assert_eq!(m.to_bytes(), raw);
}

#[test]
fn edits_leave_other_lines_alone() {
    let raw = crlf(INVITE);
    let mut m = Message::parse(&raw).unwrap();
    m.push_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1")
        .unwrap();
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKp1"));
    assert_eq!(m.via_count(), 4);
    assert_eq!(
        m.pop_via().as_deref(),
        Some("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1")
    );
    // Round trip is exact again after push+pop.
    assert_eq!(m.to_bytes(), raw);

    // Pop the first of two values on one line: the rest stays.
    let first = m.pop_via().unwrap();
    assert!(first.ends_with("branch=z9hG4bKa;rport"));
    let out = m.to_bytes();
    assert!(contains(
        &out,
        "\r\nVia: SIP/2.0/TCP [2001:db8::5]:5070;branch=z9hG4bKb;x-unknown=\"q;v\"\r\nv: SIP/2.0/UDP host.example"
    ));

    assert_eq!(m.decrement_max_forwards(), Ok(69));
    m.prepend_record_route("<sip:192.0.2.1;lr;hl=wan>").unwrap();
    assert_eq!(m.record_routes()[0].uri, "sip:192.0.2.1;lr;hl=wan");
    assert_eq!(m.pop_route().as_deref(), Some("<sip:p3.example;lr>"));
    assert_eq!(m.routes().len(), 1);
    m.set_request_uri("sip:200@10.0.0.9:5060").unwrap();
    assert_eq!(m.request_uri(), Some("sip:200@10.0.0.9:5060"));
    let out = m.to_bytes();
    for keep in [
        "\r\nX-Unknown: Foo;bar=\"baz, qux\" , other\r\n",
        "\r\nSubject: folded\r\n across lines\r\n",
        "\r\nm: <sip:100@[2001:db8::5]:5070;transport=tcp>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\";reg-id=1;expires=600\r\n",
        "\r\nf: \"Alice \\\"A\\\"\" <sip:100@cloud.test>;tag=1928;x-p=1\r\n",
        "\r\nRecord-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n",
    ] {
        assert!(contains(&out, keep), "lost {keep:?}");
    }
    let again = Message::parse(&out).unwrap();
    assert_eq!(again.max_forwards(), Some(69));
    assert_eq!(again.body(), b"v=0\r\n");
}

#[test]
fn received_and_rport_are_filled_in() {
    let mut m = Message::parse(&crlf(INVITE)).unwrap();
    m.set_top_via_received(Some("198.51.100.7"), Some(40000))
        .unwrap();
    let v = m.top_via().unwrap();
    assert_eq!(v.received(), Some("198.51.100.7"));
    assert_eq!(v.rport(), Some(Some(40000)));
    assert_eq!(m.via_count(), 3);
    assert_eq!(m.vias().nth(1).unwrap().branch(), Some("z9hG4bKb"));
}

#[test]
fn header_add_remove_replace_and_injection() {
    let mut m = Message::parse(&crlf(INVITE)).unwrap();
    assert_eq!(
        m.add_header("X-Evil", "a\r\nVia: SIP/2.0/UDP evil"),
        Err(EditError::Injection)
    );
    assert_eq!(m.add_header("Bad Name", "x"), Err(EditError::BadName));
    m.add_header("Supported", "path").unwrap();
    assert_eq!(m.header("k"), Some("path"));
    assert_eq!(m.remove_header("x-unknown"), 1);
    assert_eq!(m.header("X-Unknown"), None);
    m.replace_header("Call-ID", "new-id").unwrap();
    assert_eq!(m.call_id(), Some("new-id"));
    assert_eq!(
        m.headers().filter(|h| h.kind == HeaderName::CallId).count(),
        1
    );
}

#[test]
fn response_for_copies_vias_and_adds_to_tag() {
    let req = Message::parse(&crlf(INVITE)).unwrap();
    let r = response_for(&req, 486, "Busy Here").unwrap();
    assert_eq!(r.status(), Some(486));
    assert_eq!(r.reason(), Some("Busy Here"));
    assert_eq!(r.via_count(), 3);
    assert_eq!(r.call_id(), req.call_id());
    assert_eq!(r.cseq(), req.cseq());
    assert_eq!(r.from_tag(), Some("1928"));
    let tag = r.to_tag().unwrap().to_owned();
    // Same request, same tag (a retransmission gets the same answer).
    assert_eq!(
        response_for(&req, 486, "Busy Here").unwrap().to_tag(),
        Some(tag.as_str())
    );
    // 100 Trying gets no tag.
    assert_eq!(response_for(&req, 100, "Trying").unwrap().to_tag(), None);
    // The response parses back.
    let again = Message::parse(&r.to_bytes()).unwrap();
    assert_eq!(again.to_tag(), Some(tag.as_str()));
    assert!(response_for(&req, 200, "OK\r\nX: y").is_err());
}

#[test]
fn mandatory_header_errors() {
    let base = "OPTIONS sip:x@cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKz
From: <sip:a@b>;tag=1
To: <sip:x@cloud.test>
Call-ID: 1
CSeq: 1 OPTIONS
Content-Length: 0

";
    assert!(Message::parse(&crlf(base)).is_ok());
    for (drop, err) in [
        ("Via:", ParseError::MissingHeader("Via")),
        ("From:", ParseError::MissingHeader("From")),
        ("To:", ParseError::MissingHeader("To")),
        ("Call-ID:", ParseError::MissingHeader("Call-ID")),
        ("CSeq:", ParseError::MissingHeader("CSeq")),
    ] {
        let text: String = base
            .lines()
            .filter(|l| !l.starts_with(drop))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(Message::parse(&crlf(&text)), Err(err));
    }
    let mismatch = base.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    assert_eq!(
        Message::parse(&crlf(&mismatch)),
        Err(ParseError::CSeqMismatch)
    );
    let neg = base.replace("Content-Length: 0", "Expires: -1\nContent-Length: 0");
    assert_eq!(
        Message::parse(&crlf(&neg)),
        Err(ParseError::BadHeader("Expires"))
    );
    let huge = base.replace(
        "Content-Length: 0",
        "Expires: 99999999999999\nContent-Length: 0",
    );
    assert_eq!(
        Message::parse(&crlf(&huge)),
        Err(ParseError::BadHeader("Expires"))
    );
    let badcl = base.replace("Content-Length: 0", "Content-Length: 10");
    assert_eq!(
        Message::parse(&crlf(&badcl)),
        Err(ParseError::BodyTruncated)
    );
    let nancl = base.replace("Content-Length: 0", "Content-Length: x");
    assert_eq!(
        Message::parse(&crlf(&nancl)),
        Err(ParseError::BadContentLength)
    );
    let ver = base.replace("SIP/2.0\n", "SIP/7.0\n");
    assert_eq!(
        Message::parse(&crlf(&ver)),
        Err(ParseError::UnsupportedVersion)
    );
    assert_eq!(Message::parse(b""), Err(ParseError::Empty));
    assert_eq!(
        Message::parse(b"OPTIONS sip:x SIP/2.0\r\n"),
        Err(ParseError::Incomplete)
    );
    let bare_cr = base.replace("Call-ID: 1", "Call-ID: 1\rVia: SIP/2.0/UDP evil");
    assert!(matches!(
        Message::parse(&crlf(&bare_cr)),
        Err(ParseError::BadHeaderLine { .. })
    ));
}

#[test]
fn datagram_bytes_after_content_length_are_discarded() {
    let raw = crlf(
        "MESSAGE sip:x@cloud.test SIP/2.0
Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKz
From: <sip:a@b>;tag=1
To: <sip:x@cloud.test>
Call-ID: 1
CSeq: 1 MESSAGE
Content-Length: 2

hello",
    );
    let m = Message::parse(&raw).unwrap();
    assert_eq!(m.body(), b"he");
}

#[test]
fn contact_star_and_response_parse() {
    let raw = crlf(
        "SIP/2.0 200 OK
Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKz
From: <sip:a@b>;tag=1
To: <sip:a@b>;tag=2
Call-ID: 1
CSeq: 2 REGISTER
Contact: *
Content-Length: 0

",
    );
    let m = Message::parse(&raw).unwrap();
    assert!(m.is_response());
    assert_eq!(m.status(), Some(200));
    assert_eq!(m.cseq().unwrap().method, Method::Register);
    assert_eq!(m.contacts(), Some(Contacts::Star));
}
