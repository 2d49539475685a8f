//! The lossless message model.
//!
//! A [`Message`] owns one copy of the bytes it was parsed from. Every header
//! line is kept as a span of those bytes (name spelling, compact form, folding,
//! parameter order, unknown parameters, several values on one line: all as
//! received). Typed reads parse the span on demand; edits replace or insert
//! whole lines and leave every other line untouched. Serialization writes the
//! spans back, so what the proxy does not touch leaves as it came in.

use std::fmt;
use std::hash::{Hash, Hasher};

use crate::error::{EditError, ParseError};
use crate::method::Method;
use crate::name::HeaderName;
use crate::parse::{find_outside, is_token, is_token_byte, parse_decimal, trim_ws};
use crate::values::{list_items, CSeq, Contacts, Event, NameAddr, SubscriptionState, Uri, Via};

/// The received bytes: kept as a `String` when they are UTF-8 (the common
/// case, checked once), so that typed reads need no further UTF-8 checks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Buffer {
    Text(String),
    Bytes(Vec<u8>),
}

impl Buffer {
    fn new(v: Vec<u8>) -> Buffer {
        match String::from_utf8(v) {
            Ok(s) => Buffer::Text(s),
            Err(e) => Buffer::Bytes(e.into_bytes()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Buffer::Text(s) => s.as_bytes(),
            Buffer::Bytes(v) => v,
        }
    }

    fn is_text(&self) -> bool {
        matches!(self, Buffer::Text(_))
    }

    fn str_range(&self, a: usize, b: usize) -> Option<&str> {
        match self {
            Buffer::Text(s) => s.get(a..b),
            Buffer::Bytes(v) => std::str::from_utf8(v.get(a..b)?).ok(),
        }
    }
}

/// Bytes either borrowed from the parsed buffer or owned by an edit.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Src {
    /// `buf[start..end]`.
    Orig(u32, u32),
    /// Written by this crate.
    Owned(Box<[u8]>),
}

/// Where a header's (unfolded) value is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// Range inside the raw line.
    InLine(u32, u32),
    /// Unfolded copy (the raw line was folded over several lines).
    Unfolded(Box<str>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    kind: HeaderName,
    raw: Src,
    name_len: u32,
    value: Value,
}

/// Request line or status line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Start {
    Request { method: Method, uri: Src },
    Response { code: u16, reason: Src },
}

/// One header as seen through [`Message::headers`].
#[derive(Debug, Clone, Copy)]
pub struct HeaderRef<'a> {
    /// Recognised name (or [`HeaderName::Other`]).
    pub kind: HeaderName,
    /// The name as written (maybe compact, any case).
    pub name: &'a [u8],
    /// The value, unfolded, when it is valid UTF-8.
    pub value: Option<&'a str>,
    /// The whole line as it will be written (without the final CRLF).
    pub raw: &'a [u8],
}

/// A SIP request or response. See the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    buf: Buffer,
    start: Start,
    lines: Vec<Line>,
    body: Src,
    /// A defect of the request line found while reading the structure
    /// (answered 400, or 505 for a version other than 2.0).
    defect: Option<ParseError>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

fn span(start: usize, end: usize) -> Src {
    // Messages are bounded far below 4 GiB by the framer; saturate to be safe.
    Src::Orig(
        u32::try_from(start).unwrap_or(u32::MAX),
        u32::try_from(end).unwrap_or(u32::MAX),
    )
}

fn has_injection(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

impl Message {
    // ----------------------------------------------------------------- parse

    /// Parses and validates one message from a datagram (or one message cut
    /// out of a stream by [`crate::framing::StreamFramer`]).
    ///
    /// Validation: start line, header line syntax, Content-Length, exactly one
    /// From/To/Call-ID/CSeq, at least one Via, all Via/Contact/Route/
    /// Record-Route/Path values well formed, CSeq method equal to the request
    /// method, Max-Forwards and Expires numeric.
    pub fn parse(input: &[u8]) -> Result<Message, ParseError> {
        let m = Message::parse_structure(input)?;
        m.validate()?;
        Ok(m)
    }

    /// Parses the structure only (start line, header lines, body framing)
    /// without checking mandatory headers. Used to answer bad requests.
    pub fn parse_structure(input: &[u8]) -> Result<Message, ParseError> {
        let mut pos = 0;
        // RFC 3261 §7.5: ignore CRLFs before the start line.
        while pos < input.len() && (input[pos] == b'\r' || input[pos] == b'\n') {
            pos += 1;
        }
        if pos >= input.len() {
            return Err(ParseError::Empty);
        }
        let buffer = Buffer::new(input.get(pos..).unwrap_or_default().to_vec());
        let text = buffer.is_text();
        let buf = buffer.bytes();
        let mut lines: Vec<Line> = Vec::with_capacity(16);
        let mut start: Option<(Start, Option<ParseError>)> = None;
        let mut p = 0usize;
        let mut line_no = 0usize;
        // (raw start, raw end, physical line count) of the header being built
        let mut pending: Option<(usize, usize, usize)> = None;
        let body_start;
        loop {
            let Some(nl_rel) = buf.get(p..).and_then(|s| memchr::memchr(b'\n', s)) else {
                return Err(ParseError::Incomplete);
            };
            let nl = p + nl_rel;
            let mut end = nl;
            if end > p && buf.get(end - 1) == Some(&b'\r') {
                end -= 1;
            }
            line_no += 1;
            let phys = buf.get(p..end).unwrap_or_default();
            // A bare CR is never allowed; NUL only escaped as a quoted-pair
            // (RFC 4475 §3.1.1.2).
            if phys.contains(&b'\r')
                || (phys.contains(&0)
                    && phys
                        .iter()
                        .enumerate()
                        .any(|(i, &b)| b == 0 && (i == 0 || phys[i - 1] != b'\\')))
            {
                return Err(if start.is_none() {
                    ParseError::BadStartLine
                } else {
                    ParseError::BadHeaderLine { line: line_no }
                });
            }
            if start.is_none() {
                start = Some(parse_start(buf, p, end)?);
            } else if phys.is_empty() {
                if let Some((s, e, n)) = pending.take() {
                    lines.push(make_line(buf, s, e, n, line_no, text)?);
                }
                body_start = nl + 1;
                break;
            } else if phys[0] == b' ' || phys[0] == b'\t' {
                match pending.as_mut() {
                    Some(pend) => {
                        pend.1 = end;
                        pend.2 += 1;
                    }
                    None => return Err(ParseError::BadHeaderLine { line: line_no }),
                }
            } else {
                if let Some((s, e, n)) = pending.take() {
                    lines.push(make_line(buf, s, e, n, line_no, text)?);
                }
                pending = Some((p, end, 1));
            }
            p = nl + 1;
        }
        let Some(start) = start else {
            return Err(ParseError::BadStartLine);
        };
        let (start, defect) = start;
        let mut m = Message {
            buf: buffer,
            start,
            lines,
            body: Src::Orig(0, 0),
            defect,
        };
        // Body framing by Content-Length (RFC 3261 §18.3).
        let avail = m.buf.bytes().len().saturating_sub(body_start);
        let mut cl: Option<u64> = None;
        let mut cl_error = false;
        for line in m
            .lines
            .iter()
            .filter(|l| l.kind == HeaderName::ContentLength)
        {
            match m
                .value_of(line)
                .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            {
                Some(v) if cl.is_none_or(|c| c == v) => cl = Some(v),
                _ => cl_error = true,
            }
        }
        if cl_error {
            // Framing is unknown: keep what is there, refuse in `validate`.
            m.defect.get_or_insert(ParseError::BadContentLength);
            cl = None;
        }
        let body_len = match cl {
            Some(n) => match usize::try_from(n) {
                Ok(n) if n <= avail => n,
                _ => {
                    m.defect.get_or_insert(ParseError::BodyTruncated);
                    avail
                }
            },
            None => avail,
        };
        m.body = span(body_start, body_start + body_len);
        Ok(m)
    }

    /// Checks the mandatory headers and the headers this crate reads.
    pub fn validate(&self) -> Result<(), ParseError> {
        if let Some(d) = &self.defect {
            return Err(d.clone());
        }
        let mut counts = [0usize; 5];
        for line in &self.lines {
            let idx = match line.kind {
                HeaderName::From => 0,
                HeaderName::To => 1,
                HeaderName::CallId => 2,
                HeaderName::CSeq => 3,
                HeaderName::MaxForwards => 4,
                _ => continue,
            };
            counts[idx] += 1;
        }
        const NAMES: [&str; 5] = ["From", "To", "Call-ID", "CSeq", "Max-Forwards"];
        for (i, name) in NAMES.iter().enumerate() {
            if counts[i] > 1 {
                return Err(ParseError::DuplicateHeader(name));
            }
            if counts[i] == 0 && i < 4 {
                return Err(ParseError::MissingHeader(name));
            }
        }
        let mut vias = 0usize;
        for v in self.values(HeaderName::Via) {
            let v = v.ok_or(ParseError::BadHeader("Via"))?;
            for item in list_items(v) {
                Via::parse(item).ok_or(ParseError::BadHeader("Via"))?;
                vias += 1;
            }
        }
        if vias == 0 {
            return Err(ParseError::MissingHeader("Via"));
        }
        self.first_value(HeaderName::From)
            .and_then(NameAddr::parse)
            .ok_or(ParseError::BadHeader("From"))?;
        self.first_value(HeaderName::To)
            .and_then(NameAddr::parse)
            .ok_or(ParseError::BadHeader("To"))?;
        let call_id = self.call_id().ok_or(ParseError::BadHeader("Call-ID"))?;
        if call_id.is_empty() || call_id.bytes().any(|b| b == b' ' || b == b'\t') {
            return Err(ParseError::BadHeader("Call-ID"));
        }
        let cseq = self.cseq().ok_or(ParseError::BadHeader("CSeq"))?;
        if let Some(method) = self.method() {
            if cseq.method != *method {
                return Err(ParseError::CSeqMismatch);
            }
        }
        if counts[4] == 1 && self.max_forwards().is_none() {
            return Err(ParseError::BadHeader("Max-Forwards"));
        }
        if self.first_value(HeaderName::Expires).is_some() && self.expires().is_none() {
            return Err(ParseError::BadHeader("Expires"));
        }
        for kind in [HeaderName::Route, HeaderName::RecordRoute, HeaderName::Path] {
            for v in self.values(kind) {
                let v = v.ok_or(ParseError::BadHeader(kind.canonical()))?;
                for item in list_items(v) {
                    NameAddr::parse(item).ok_or(ParseError::BadHeader(kind.canonical()))?;
                }
            }
        }
        // Contact: `*` alone, or addresses with a numeric `expires` if any.
        let (mut star, mut addrs) = (false, false);
        for v in self.values(HeaderName::Contact) {
            let v = v.ok_or(ParseError::BadHeader("Contact"))?;
            for item in list_items(v) {
                if item == "*" {
                    star = true;
                    continue;
                }
                addrs = true;
                let na = NameAddr::parse(item).ok_or(ParseError::BadHeader("Contact"))?;
                if na
                    .params
                    .get("expires")
                    .is_some_and(|e| e.is_none() || na.expires().is_none())
                {
                    return Err(ParseError::BadHeader("Contact"));
                }
            }
        }
        if star && addrs {
            return Err(ParseError::BadHeader("Contact"));
        }
        Ok(())
    }

    // ------------------------------------------------------------- serialize

    /// Writes the message. Untouched lines are copied byte for byte; line
    /// ends are written as CRLF. A Content-Length line is added when the
    /// message has none (needed on stream transports).
    pub fn write_to(&self, out: &mut Vec<u8>) {
        match &self.start {
            Start::Request { method, uri } => {
                out.extend_from_slice(method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.src(uri));
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            Start::Response { code, reason } => {
                out.extend_from_slice(b"SIP/2.0 ");
                push_u64(out, u64::from(*code));
                out.push(b' ');
                out.extend_from_slice(self.src(reason));
                out.extend_from_slice(b"\r\n");
            }
        }
        let mut has_cl = false;
        for line in &self.lines {
            has_cl |= line.kind == HeaderName::ContentLength;
            out.extend_from_slice(self.src(&line.raw));
            out.extend_from_slice(b"\r\n");
        }
        let body = self.src(&self.body);
        if !has_cl {
            out.extend_from_slice(b"Content-Length: ");
            push_u64(out, body.len() as u64);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }

    /// The message as bytes (see [`Message::write_to`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.bytes().len() + 128);
        self.write_to(&mut out);
        out
    }

    // ---------------------------------------------------------- start line

    /// True for requests.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// True for responses.
    pub fn is_response(&self) -> bool {
        !self.is_request()
    }

    /// The request method (requests only).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI text (requests only).
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            Start::Request { uri, .. } => std::str::from_utf8(self.src(uri)).ok(),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI, parsed.
    pub fn parsed_request_uri(&self) -> Option<Uri<'_>> {
        self.request_uri().and_then(Uri::parse)
    }

    /// The status code (responses only).
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            Start::Response { code, .. } => Some(*code),
            Start::Request { .. } => None,
        }
    }

    /// The reason phrase (responses only).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            Start::Response { reason, .. } => std::str::from_utf8(self.src(reason)).ok(),
            Start::Request { .. } => None,
        }
    }

    /// The method this message is about: the request method, or the CSeq
    /// method of a response.
    pub fn cseq_method(&self) -> Option<Method> {
        self.cseq().map(|c| c.method)
    }

    // ------------------------------------------------------------- headers

    fn src<'a>(&'a self, s: &'a Src) -> &'a [u8] {
        match s {
            Src::Orig(a, b) => self
                .buf
                .bytes()
                .get(*a as usize..*b as usize)
                .unwrap_or_default(),
            Src::Owned(v) => v,
        }
    }

    fn value_of<'a>(&'a self, line: &'a Line) -> Option<&'a str> {
        match &line.value {
            Value::InLine(a, b) => match &line.raw {
                Src::Orig(s, _) => {
                    let s = *s as usize;
                    self.buf.str_range(s + *a as usize, s + *b as usize)
                }
                Src::Owned(v) => std::str::from_utf8(v.get(*a as usize..*b as usize)?).ok(),
            },
            Value::Unfolded(s) => Some(s),
        }
    }

    fn name_of<'a>(&'a self, line: &'a Line) -> &'a [u8] {
        self.src(&line.raw)
            .get(..line.name_len as usize)
            .unwrap_or_default()
    }

    /// All header lines in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> {
        self.lines.iter().map(|l| HeaderRef {
            kind: l.kind,
            name: self.name_of(l),
            value: self.value_of(l),
            raw: self.src(&l.raw),
        })
    }

    /// Number of header lines.
    pub fn header_count(&self) -> usize {
        self.lines.len()
    }

    fn has(&self, kind: HeaderName) -> bool {
        self.lines.iter().any(|l| l.kind == kind)
    }

    /// Line values of a known header (one item per line; `None` when not UTF-8).
    fn values(&self, kind: HeaderName) -> impl Iterator<Item = Option<&str>> {
        self.lines
            .iter()
            .filter(move |l| l.kind == kind)
            .map(|l| self.value_of(l))
    }

    fn first_value(&self, kind: HeaderName) -> Option<&str> {
        self.lines
            .iter()
            .find(|l| l.kind == kind)
            .and_then(|l| self.value_of(l))
    }

    fn list(&self, kind: HeaderName) -> impl Iterator<Item = &str> {
        self.values(kind).flatten().flat_map(list_items)
    }

    /// Values of every line with this name (full or compact, any case).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let wanted = HeaderName::classify(name.as_bytes());
        self.lines
            .iter()
            .filter(move |l| line_is(l, wanted, self.name_of(l), name))
            .filter_map(|l| self.value_of(l))
    }

    /// The first value of a header by name.
    pub fn header<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.header_values(name).next()
    }

    // ---------------------------------------------------------- typed reads

    /// All Via values, top first (several on one line are split).
    /// Malformed values are skipped; [`Message::parse`] rejects them.
    pub fn vias(&self) -> impl Iterator<Item = Via<'_>> {
        self.list(HeaderName::Via).filter_map(Via::parse_lax)
    }

    /// The top Via.
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.list(HeaderName::Via).next().and_then(Via::parse_lax)
    }

    /// Number of Via values.
    pub fn via_count(&self) -> usize {
        self.list(HeaderName::Via).count()
    }

    /// Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        self.first_value(HeaderName::CallId).map(trim_ws)
    }

    /// CSeq.
    pub fn cseq(&self) -> Option<CSeq> {
        self.first_value(HeaderName::CSeq).and_then(CSeq::parse)
    }

    /// From.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.first_value(HeaderName::From)
            .and_then(NameAddr::parse_lax)
    }

    /// To.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.first_value(HeaderName::To)
            .and_then(NameAddr::parse_lax)
    }

    /// From tag.
    pub fn from_tag(&self) -> Option<&str> {
        self.from().and_then(|f| f.tag())
    }

    /// To tag.
    pub fn to_tag(&self) -> Option<&str> {
        self.to().and_then(|t| t.tag())
    }

    /// Contact values: `*` or the list (empty list when no Contact).
    /// `None` when a value is malformed or `*` is mixed with addresses.
    pub fn contacts(&self) -> Option<Contacts<'_>> {
        let mut list = Vec::new();
        let mut star = false;
        for v in self.values(HeaderName::Contact) {
            for item in list_items(v?) {
                if item == "*" {
                    star = true;
                } else {
                    list.push(NameAddr::parse_lax(item)?);
                }
            }
        }
        match (star, list.is_empty()) {
            (true, true) => Some(Contacts::Star),
            (true, false) => None,
            (false, _) => Some(Contacts::List(list)),
        }
    }

    /// Expires header (seconds). `None` when absent or not a 32-bit number.
    pub fn expires(&self) -> Option<u32> {
        self.first_value(HeaderName::Expires)
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// Max-Forwards (0..=255).
    pub fn max_forwards(&self) -> Option<u8> {
        self.first_value(HeaderName::MaxForwards)
            .and_then(|v| parse_decimal(v, 255))
            .and_then(|v| u8::try_from(v).ok())
    }

    /// Route values, top first.
    pub fn routes(&self) -> Vec<NameAddr<'_>> {
        self.list(HeaderName::Route)
            .filter_map(NameAddr::parse_lax)
            .collect()
    }

    /// Record-Route values, top first.
    pub fn record_routes(&self) -> Vec<NameAddr<'_>> {
        self.list(HeaderName::RecordRoute)
            .filter_map(NameAddr::parse_lax)
            .collect()
    }

    /// Path values (RFC 3327), top first.
    pub fn paths(&self) -> Vec<NameAddr<'_>> {
        self.list(HeaderName::Path)
            .filter_map(NameAddr::parse_lax)
            .collect()
    }

    /// The top Route value.
    pub fn top_route(&self) -> Option<NameAddr<'_>> {
        self.list(HeaderName::Route)
            .next()
            .and_then(NameAddr::parse_lax)
    }

    /// Content-Type value as written.
    pub fn content_type(&self) -> Option<&str> {
        self.first_value(HeaderName::ContentType).map(trim_ws)
    }

    /// Event (RFC 6665).
    pub fn event(&self) -> Option<Event<'_>> {
        self.first_value(HeaderName::Event).and_then(Event::parse)
    }

    /// Subscription-State (RFC 6665).
    pub fn subscription_state(&self) -> Option<SubscriptionState<'_>> {
        self.first_value(HeaderName::SubscriptionState)
            .and_then(SubscriptionState::parse)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        self.src(&self.body)
    }

    /// Option tags listed in Proxy-Require.
    pub fn proxy_require(&self) -> impl Iterator<Item = &str> {
        self.list(HeaderName::ProxyRequire)
    }

    // --------------------------------------------------------------- edits

    fn owned_line(kind: HeaderName, name: &str, value: &str) -> Line {
        let mut raw = String::with_capacity(name.len() + 2 + value.len());
        raw.push_str(name);
        raw.push_str(": ");
        raw.push_str(value);
        let name_len = name.len() as u32;
        let start = name_len + 2;
        let end = raw.len() as u32;
        Line {
            kind,
            raw: Src::Owned(raw.into_bytes().into_boxed_slice()),
            name_len,
            value: Value::InLine(start, end),
        }
    }

    fn first_index(&self, kind: HeaderName) -> Option<usize> {
        self.lines.iter().position(|l| l.kind == kind)
    }

    /// Index just after the last Via line (or 0).
    fn after_vias(&self) -> usize {
        self.lines
            .iter()
            .rposition(|l| l.kind == HeaderName::Via)
            .map_or(0, |i| i + 1)
    }

    fn check_value(value: &str) -> Result<(), EditError> {
        if has_injection(value) {
            Err(EditError::Injection)
        } else {
            Ok(())
        }
    }

    /// Inserts a new top Via (a new line above all others).
    pub fn push_via(&mut self, value: &str) -> Result<(), EditError> {
        Self::check_value(value)?;
        Via::parse(value).ok_or(EditError::BadValue("Via"))?;
        let at = self.first_index(HeaderName::Via).unwrap_or(0);
        self.lines
            .insert(at, Self::owned_line(HeaderName::Via, "Via", value));
        Ok(())
    }

    /// Removes the top value of the first line of `kind` and returns it. When
    /// that line holds several values the rest stays on a rewritten line that
    /// keeps the original header name spelling.
    fn pop_first_item(&mut self, kind: HeaderName) -> Option<String> {
        let idx = self.first_index(kind)?;
        let line = self.lines.get(idx)?;
        let value = self.value_of(line)?.to_owned();
        let name = String::from_utf8_lossy(self.name_of(line)).into_owned();
        let v = trim_ws(&value);
        match find_outside(v, b',') {
            None => {
                self.lines.remove(idx);
                Some(v.to_owned())
            }
            Some(i) => {
                let first = trim_ws(v.get(..i)?).to_owned();
                let rest = trim_ws(v.get(i + 1..)?);
                if rest.is_empty() {
                    self.lines.remove(idx);
                } else {
                    let nl = Self::owned_line(kind, &name, rest);
                    if let Some(slot) = self.lines.get_mut(idx) {
                        *slot = nl;
                    }
                }
                Some(first)
            }
        }
    }

    /// Replaces the top value of the first line of `kind`, keeping the other
    /// values of that line as written.
    fn replace_first_item(&mut self, kind: HeaderName, new_item: &str) -> Option<()> {
        let idx = self.first_index(kind)?;
        let line = self.lines.get(idx)?;
        let value = self.value_of(line)?;
        let name = String::from_utf8_lossy(self.name_of(line)).into_owned();
        let v = trim_ws(value);
        let new_value = match find_outside(v, b',') {
            None => new_item.to_owned(),
            Some(i) => format!("{new_item},{}", v.get(i + 1..)?),
        };
        let nl = Self::owned_line(kind, &name, &new_value);
        *self.lines.get_mut(idx)? = nl;
        Some(())
    }

    /// Removes the top Via value and returns it.
    pub fn pop_via(&mut self) -> Option<String> {
        self.pop_first_item(HeaderName::Via)
    }

    /// Sets `received` and/or fills `rport` in the top Via (RFC 3261 §18.2.1,
    /// RFC 3581). `received: None` leaves it alone; `rport` is only filled
    /// in when the Via carries an empty `rport` parameter.
    pub fn set_top_via_received(
        &mut self,
        received: Option<&str>,
        rport: Option<u16>,
    ) -> Result<(), EditError> {
        if let Some(r) = received {
            Self::check_value(r)?;
            if r.is_empty() || r.contains([';', ',', ' ']) {
                return Err(EditError::BadValue("received"));
            }
        }
        let via = self.top_via().ok_or(EditError::BadValue("Via"))?;
        let mut item = String::with_capacity(96);
        item.push_str(via.protocol);
        item.push('/');
        item.push_str(via.version);
        item.push('/');
        item.push_str(via.transport);
        item.push(' ');
        item.push_str(via.host);
        if let Some(p) = via.port {
            item.push(':');
            item.push_str(&p.to_string());
        }
        let mut wrote_received = false;
        for (n, v) in via.params.iter() {
            if n.eq_ignore_ascii_case("received") && received.is_some() {
                continue;
            }
            if n.eq_ignore_ascii_case("rport") {
                item.push_str(";rport");
                match (v, rport) {
                    (None, Some(p)) => {
                        item.push('=');
                        item.push_str(&p.to_string());
                    }
                    (Some(v), _) => {
                        item.push('=');
                        item.push_str(v);
                    }
                    (None, None) => {}
                }
                continue;
            }
            item.push(';');
            item.push_str(n);
            if let Some(v) = v {
                item.push('=');
                item.push_str(v);
            }
        }
        if let Some(r) = received {
            item.push_str(";received=");
            item.push_str(r);
            wrote_received = true;
        }
        let _ = wrote_received;
        self.replace_first_item(HeaderName::Via, &item)
            .ok_or(EditError::BadValue("Via"))
    }

    /// Prepends a Record-Route value (a new line above existing ones).
    pub fn prepend_record_route(&mut self, value: &str) -> Result<(), EditError> {
        self.prepend_route_like(HeaderName::RecordRoute, value)
    }

    /// Prepends a Path value (RFC 3327).
    pub fn prepend_path(&mut self, value: &str) -> Result<(), EditError> {
        self.prepend_route_like(HeaderName::Path, value)
    }

    /// Prepends a Route value.
    pub fn prepend_route(&mut self, value: &str) -> Result<(), EditError> {
        self.prepend_route_like(HeaderName::Route, value)
    }

    fn prepend_route_like(&mut self, kind: HeaderName, value: &str) -> Result<(), EditError> {
        Self::check_value(value)?;
        NameAddr::parse(value).ok_or(EditError::BadValue(kind.canonical()))?;
        let at = self.first_index(kind).unwrap_or_else(|| self.after_vias());
        self.lines
            .insert(at, Self::owned_line(kind, kind.canonical(), value));
        Ok(())
    }

    /// Removes the top Route value and returns it.
    pub fn pop_route(&mut self) -> Option<String> {
        self.pop_first_item(HeaderName::Route)
    }

    /// Removes the top Record-Route value (used when a response travels
    /// back and the proxy rewrites its own entry) and returns it.
    pub fn pop_record_route(&mut self) -> Option<String> {
        self.pop_first_item(HeaderName::RecordRoute)
    }

    /// Replaces the top Record-Route value.
    pub fn replace_top_record_route(&mut self, value: &str) -> Result<(), EditError> {
        Self::check_value(value)?;
        NameAddr::parse(value).ok_or(EditError::BadValue("Record-Route"))?;
        self.replace_first_item(HeaderName::RecordRoute, value)
            .ok_or(EditError::BadValue("Record-Route"))
    }

    /// Sets the Request-URI (requests only).
    pub fn set_request_uri(&mut self, uri: &str) -> Result<(), EditError> {
        Self::check_value(uri)?;
        Uri::parse(uri).ok_or(EditError::BadValue("Request-URI"))?;
        match &mut self.start {
            Start::Request { uri: u, .. } => {
                *u = Src::Owned(uri.as_bytes().into());
                Ok(())
            }
            Start::Response { .. } => Err(EditError::WrongKind),
        }
    }

    /// Decrements Max-Forwards and returns the new value. A request without
    /// Max-Forwards gets `Max-Forwards: 70` (RFC 3261 §16.6 step 3). A value
    /// of 0 is refused with [`EditError::TooManyHops`] (answer 483).
    pub fn decrement_max_forwards(&mut self) -> Result<u8, EditError> {
        if !self.is_request() {
            return Err(EditError::WrongKind);
        }
        match self.first_index(HeaderName::MaxForwards) {
            None => {
                let at = self.after_vias();
                self.lines.insert(
                    at,
                    Self::owned_line(HeaderName::MaxForwards, "Max-Forwards", "70"),
                );
                Ok(70)
            }
            Some(idx) => {
                let mf = self
                    .max_forwards()
                    .ok_or(EditError::BadValue("Max-Forwards"))?;
                if mf == 0 {
                    return Err(EditError::TooManyHops);
                }
                let n = mf - 1;
                let name = self
                    .lines
                    .get(idx)
                    .map(|l| String::from_utf8_lossy(self.name_of(l)).into_owned())
                    .unwrap_or_else(|| "Max-Forwards".to_owned());
                let nl = Self::owned_line(HeaderName::MaxForwards, &name, &n.to_string());
                if let Some(slot) = self.lines.get_mut(idx) {
                    *slot = nl;
                }
                Ok(n)
            }
        }
    }

    fn check_name(name: &str) -> Result<HeaderName, EditError> {
        if !is_token(name) {
            return Err(EditError::BadName);
        }
        Ok(HeaderName::classify(name.as_bytes()))
    }

    /// Appends a header line at the end of the headers.
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        let kind = Self::check_name(name)?;
        Self::check_value(value)?;
        if kind == HeaderName::ContentLength {
            return Err(EditError::BadValue("Content-Length"));
        }
        self.lines.push(Self::owned_line(kind, name, value));
        Ok(())
    }

    /// Inserts a header line at the top of the headers.
    pub fn add_header_front(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        let kind = Self::check_name(name)?;
        Self::check_value(value)?;
        if kind == HeaderName::ContentLength {
            return Err(EditError::BadValue("Content-Length"));
        }
        self.lines.insert(0, Self::owned_line(kind, name, value));
        Ok(())
    }

    /// Removes every line with this name (full or compact form); returns how many.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let wanted = HeaderName::classify(name.as_bytes());
        let before = self.lines.len();
        let buf = self.buf.bytes();
        self.lines.retain(|l| {
            let raw = match &l.raw {
                Src::Orig(a, b) => buf.get(*a as usize..*b as usize).unwrap_or_default(),
                Src::Owned(v) => v,
            };
            let n = raw.get(..l.name_len as usize).unwrap_or_default();
            !line_is(l, wanted, n, name)
        });
        before - self.lines.len()
    }

    /// Replaces every line with this name by one line `name: value`, at the
    /// place of the first one (or at the end).
    pub fn replace_header(&mut self, name: &str, value: &str) -> Result<(), EditError> {
        let kind = Self::check_name(name)?;
        Self::check_value(value)?;
        if kind == HeaderName::ContentLength {
            return Err(EditError::BadValue("Content-Length"));
        }
        let at = self
            .lines
            .iter()
            .position(|l| line_is(l, kind, self.name_of(l), name));
        self.remove_header(name);
        let line = Self::owned_line(kind, name, value);
        match at {
            Some(i) if i <= self.lines.len() => self.lines.insert(i, line),
            _ => self.lines.push(line),
        }
        Ok(())
    }

    /// Replaces the body and its Content-Length (and Content-Type, when given).
    pub fn set_body(&mut self, content_type: Option<&str>, body: &[u8]) -> Result<(), EditError> {
        if let Some(ct) = content_type {
            self.replace_header("Content-Type", ct)?;
        }
        self.lines.retain(|l| l.kind != HeaderName::ContentLength);
        self.lines.push(Self::owned_line(
            HeaderName::ContentLength,
            "Content-Length",
            &body.len().to_string(),
        ));
        self.body = Src::Owned(body.into());
        Ok(())
    }

    // ------------------------------------------------------------ building

    /// A new request with no headers (add them with [`Message::add_header`]).
    pub fn new_request(method: Method, uri: &str) -> Result<Message, EditError> {
        Self::check_value(uri)?;
        Uri::parse(uri).ok_or(EditError::BadValue("Request-URI"))?;
        Ok(Message {
            buf: Buffer::Bytes(Vec::new()),
            start: Start::Request {
                method,
                uri: Src::Owned(uri.as_bytes().into()),
            },
            lines: Vec::new(),
            body: Src::Owned(Box::default()),
            defect: None,
        })
    }

    /// A new response with no headers.
    pub fn new_response(code: u16, reason: &str) -> Result<Message, EditError> {
        Self::check_value(reason)?;
        if !(100..=699).contains(&code) {
            return Err(EditError::BadValue("status code"));
        }
        Ok(Message {
            buf: Buffer::Bytes(Vec::new()),
            start: Start::Response {
                code,
                reason: Src::Owned(reason.as_bytes().into()),
            },
            lines: Vec::new(),
            body: Src::Owned(Box::default()),
            defect: None,
        })
    }

    /// Copies the raw line of every header of `kind` from `other` (byte for byte).
    fn copy_lines_from(&mut self, other: &Message, kind: HeaderName) {
        for l in other.lines.iter().filter(|l| l.kind == kind) {
            let mut nl = l.clone();
            if let Src::Orig(..) = nl.raw {
                nl.raw = Src::Owned(other.src(&l.raw).into());
            }
            self.lines.push(nl);
        }
    }

    /// Builds a response to `request` (RFC 3261 §8.2.6): the Via lines,
    /// From, To, Call-ID and CSeq are copied byte for byte; for codes above
    /// 100 a To tag is added when the request has none. The tag is derived
    /// from the request (Call-ID, From tag, top branch), so a retransmitted
    /// request gets the same tag. `Content-Length: 0` ends the headers.
    pub fn response_for(request: &Message, code: u16, reason: &str) -> Result<Message, EditError> {
        if !request.is_request() {
            return Err(EditError::WrongKind);
        }
        let mut r = Message::new_response(code, reason)?;
        r.copy_lines_from(request, HeaderName::Via);
        r.copy_lines_from(request, HeaderName::From);
        if code > 100 && request.to_tag().is_none() {
            if let Some(l) = request.lines.iter().find(|l| l.kind == HeaderName::To) {
                let raw = String::from_utf8_lossy(request.src(&l.raw));
                let tag = request.local_tag();
                let mut v = request.value_of(l).map(trim_ws).unwrap_or("").to_owned();
                v.push_str(";tag=");
                v.push_str(&tag);
                let name = raw
                    .split(':')
                    .next()
                    .map(trim_ws)
                    .unwrap_or("To")
                    .to_owned();
                r.lines.push(Self::owned_line(HeaderName::To, &name, &v));
            }
        } else {
            r.copy_lines_from(request, HeaderName::To);
        }
        r.copy_lines_from(request, HeaderName::CallId);
        r.copy_lines_from(request, HeaderName::CSeq);
        r.lines.push(Self::owned_line(
            HeaderName::ContentLength,
            "Content-Length",
            "0",
        ));
        Ok(r)
    }

    /// Copies the raw line of the first value of `kind` only (top Via).
    fn copy_first_item_from(&mut self, other: &Message, kind: HeaderName) -> Option<()> {
        let first = other.list(kind).next()?;
        let name = kind.canonical();
        self.lines.push(Self::owned_line(kind, name, first));
        Some(())
    }

    /// Builds the CANCEL for an INVITE (RFC 3261 §9.1): same Request-URI,
    /// Call-ID, From, To, CSeq number, top Via only and Route set.
    pub fn cancel_for(invite: &Message) -> Result<Message, EditError> {
        if invite.method() != Some(&Method::Invite) {
            return Err(EditError::WrongKind);
        }
        let uri = invite.request_uri().ok_or(EditError::WrongKind)?;
        let cseq = invite.cseq().ok_or(EditError::BadValue("CSeq"))?;
        let mut c = Message::new_request(Method::Cancel, uri)?;
        c.copy_first_item_from(invite, HeaderName::Via)
            .ok_or(EditError::BadValue("Via"))?;
        c.lines.push(Self::owned_line(
            HeaderName::MaxForwards,
            "Max-Forwards",
            "70",
        ));
        c.copy_lines_from(invite, HeaderName::From);
        c.copy_lines_from(invite, HeaderName::To);
        c.copy_lines_from(invite, HeaderName::CallId);
        c.lines.push(Self::owned_line(
            HeaderName::CSeq,
            "CSeq",
            &format!("{} CANCEL", cseq.seq),
        ));
        c.copy_lines_from(invite, HeaderName::Route);
        c.lines.push(Self::owned_line(
            HeaderName::ContentLength,
            "Content-Length",
            "0",
        ));
        Ok(c)
    }

    /// Builds the ACK for a non-2xx final response to an INVITE
    /// (RFC 3261 §17.1.1.3): hop by hop, same branch as the INVITE.
    pub fn ack_for(invite: &Message, response: &Message) -> Result<Message, EditError> {
        if invite.method() != Some(&Method::Invite) || !response.is_response() {
            return Err(EditError::WrongKind);
        }
        let uri = invite.request_uri().ok_or(EditError::WrongKind)?;
        let cseq = invite.cseq().ok_or(EditError::BadValue("CSeq"))?;
        let mut a = Message::new_request(Method::Ack, uri)?;
        a.copy_first_item_from(invite, HeaderName::Via)
            .ok_or(EditError::BadValue("Via"))?;
        a.lines.push(Self::owned_line(
            HeaderName::MaxForwards,
            "Max-Forwards",
            "70",
        ));
        a.copy_lines_from(invite, HeaderName::From);
        if response.has(HeaderName::To) {
            a.copy_lines_from(response, HeaderName::To);
        } else {
            a.copy_lines_from(invite, HeaderName::To);
        }
        a.copy_lines_from(invite, HeaderName::CallId);
        a.lines.push(Self::owned_line(
            HeaderName::CSeq,
            "CSeq",
            &format!("{} ACK", cseq.seq),
        ));
        a.copy_lines_from(invite, HeaderName::Route);
        a.lines.push(Self::owned_line(
            HeaderName::ContentLength,
            "Content-Length",
            "0",
        ));
        Ok(a)
    }

    /// A stable tag derived from the request (for To tags of local answers).
    pub fn local_tag(&self) -> String {
        let mut h = std::hash::DefaultHasher::new();
        self.call_id().hash(&mut h);
        self.from_tag().hash(&mut h);
        self.top_via().and_then(|v| v.branch()).hash(&mut h);
        format!("hl{:012x}", h.finish() & 0xffff_ffff_ffff)
    }
}

/// True when `line` (with raw name `raw`) is a `wanted` header; for
/// unrecognised names the raw name is compared case-insensitively.
fn line_is(line: &Line, wanted: HeaderName, raw: &[u8], name: &str) -> bool {
    if wanted != HeaderName::Other {
        line.kind == wanted
    } else {
        line.kind == HeaderName::Other && raw.eq_ignore_ascii_case(name.as_bytes())
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(tmp.get(i..).unwrap_or_default());
}

fn make_line(
    buf: &[u8],
    s: usize,
    e: usize,
    phys: usize,
    line_no: usize,
    text: bool,
) -> Result<Line, ParseError> {
    let bad = ParseError::BadHeaderLine { line: line_no };
    let raw = buf.get(s..e).ok_or(bad.clone())?;
    let colon = memchr::memchr(b':', raw).ok_or(bad.clone())?;
    let mut name_end = colon;
    while name_end > 0 && (raw[name_end - 1] == b' ' || raw[name_end - 1] == b'\t') {
        name_end -= 1;
    }
    let name = raw.get(..name_end).ok_or(bad.clone())?;
    if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
        return Err(bad);
    }
    let kind = HeaderName::classify(name);
    let mut vs = colon + 1;
    while vs < raw.len()
        && (raw[vs] == b' ' || raw[vs] == b'\t' || raw[vs] == b'\r' || raw[vs] == b'\n')
    {
        vs += 1;
    }
    let mut ve = raw.len();
    while ve > vs && (raw[ve - 1] == b' ' || raw[ve - 1] == b'\t') {
        ve -= 1;
    }
    if kind != HeaderName::Other && !text {
        // Headers this crate reads must be UTF-8 text.
        std::str::from_utf8(raw).map_err(|_| bad.clone())?;
    }
    let value = if phys > 1 {
        let v = raw.get(vs..ve).unwrap_or_default();
        let unfolded: Vec<u8> = v
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        match String::from_utf8(unfolded) {
            Ok(s) => Value::Unfolded(s.into_boxed_str()),
            Err(_) => Value::Unfolded(Box::default()),
        }
    } else {
        Value::InLine(vs as u32, ve as u32)
    };
    Ok(Line {
        kind,
        raw: span(s, e),
        name_len: name_end as u32,
        value,
    })
}

fn parse_start(buf: &[u8], s: usize, e: usize) -> Result<(Start, Option<ParseError>), ParseError> {
    let line = buf.get(s..e).ok_or(ParseError::BadStartLine)?;
    let text = std::str::from_utf8(line).map_err(|_| ParseError::BadStartLine)?;
    if let Some(rest) = text.strip_prefix("SIP/") {
        let (ver, rest) = rest.split_once(' ').ok_or(ParseError::BadStartLine)?;
        if !ver.eq_ignore_ascii_case("2.0") {
            return if ver.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                Err(ParseError::UnsupportedVersion)
            } else {
                Err(ParseError::BadStartLine)
            };
        }
        let (code, reason) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::BadStartLine);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::BadStartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::BadStartLine);
        }
        let reason_start = s + line.len() - reason.len();
        return Ok((
            Start::Response {
                code,
                reason: span(reason_start, e),
            },
            None,
        ));
    }
    // Request-Line = Method SP Request-URI SP SIP-Version, single SPs. The
    // structure is read leniently so that a malformed line can still be
    // answered with a 400; the defect is reported by `validate`.
    let bad = ParseError::BadStartLine;
    let trimmed = text.trim_end_matches(' ');
    let trailing_sp = trimmed.len() != text.len();
    let sp1 = trimmed.find(' ').ok_or(bad.clone())?;
    let sp2 = trimmed.rfind(' ').ok_or(bad.clone())?;
    if sp2 <= sp1 {
        return Err(bad);
    }
    let m = trimmed.get(..sp1).ok_or(bad.clone())?;
    let method = Method::parse(m).ok_or(bad.clone())?;
    let ver = trimmed.get(sp2 + 1..).ok_or(bad.clone())?;
    let uri_raw = trimmed.get(sp1 + 1..sp2).ok_or(bad.clone())?;
    let lead = uri_raw.len() - uri_raw.trim_start_matches(' ').len();
    let uri = uri_raw.trim_matches(' ');
    if uri.is_empty() {
        return Err(bad);
    }
    let Some(v) = ver
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case("SIP/"))
        .and_then(|_| ver.get(4..))
    else {
        return Err(bad);
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad);
    }
    let defect = if trailing_sp || uri.len() != uri_raw.len() || uri.contains(' ') {
        Some(ParseError::BadStartLine)
    } else if v != "2.0" {
        Some(ParseError::UnsupportedVersion)
    } else {
        match Uri::parse(uri) {
            None => Some(ParseError::BadHeader("Request-URI")),
            // URI headers are not allowed in a Request-URI (RFC 3261 §19.1.1).
            Some(Uri::Sip(u)) if u.headers.is_some() => Some(ParseError::BadHeader("Request-URI")),
            Some(_) => None,
        }
    };
    let uri_start = s + sp1 + 1 + lead;
    Ok((
        Start::Request {
            method,
            uri: span(uri_start, uri_start + uri.len()),
        },
        defect,
    ))
}

/// Short alias used in docs.
pub type Request = Message;
/// Short alias used in docs.
pub type Response = Message;

/// Builds a response to `request` (see [`Message::response_for`]).
pub fn response_for(request: &Message, code: u16, reason: &str) -> Result<Message, EditError> {
    Message::response_for(request, code, reason)
}
