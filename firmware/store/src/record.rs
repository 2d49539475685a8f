//! Rows as raw SQLite values, their validation, canonical encoding and checksum.
//!
//! Every row is read column by column as a raw [`ValueRef`] and copied into a
//! [`RawValue`], so a wrong type or invalid UTF-8 in one column of one row can never make
//! the query itself fail: the row is judged here and, if bad, quarantined with the reason.
//!
//! ## Checksum: CRC32C
//! Each row carries `crc` = CRC32C over a canonical, length-prefixed encoding of all its
//! fields (domain-tagged per record kind and format version, so fields cannot be shifted
//! between columns or kinds without detection). CRC32C was chosen over a truncated SHA-256:
//! the threat is accidental damage (torn pages, bit rot, buggy writers), not an attacker —
//! anyone able to write the database could recompute any unkeyed hash anyway. CRC32C catches
//! every burst error up to 32 bits and misses random damage with probability 2^-32, and it is
//! hardware-accelerated (SSE4.2 / ARMv8 CRC), which keeps a full validation pass of 100,000
//! rows during the purge cheap.

use std::net::SocketAddr;

use rusqlite::types::{Value, ValueRef};

use crate::model::{Binding, Event, Mwi, Provenance, QuarantineReason, Subscription, Transport};

/// Latest accepted timestamp (2100-01-01T00:00:00Z). Anything later is damage.
pub const MAX_UNIX_TIME: i64 = 4_102_444_800;
/// Longest accepted single-line text field (URIs, Call-ID, Contact value...).
pub const MAX_LINE: usize = 4096;
/// Longest accepted body (MWI, last NOTIFY body).
pub const MAX_BODY: usize = 64 * 1024;

/// One column of one row, owned, as SQLite handed it over.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(Vec<u8>),
    Blob(Vec<u8>),
}

impl From<ValueRef<'_>> for RawValue {
    fn from(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => RawValue::Null,
            ValueRef::Integer(i) => RawValue::Integer(i),
            ValueRef::Real(r) => RawValue::Real(r),
            ValueRef::Text(t) => RawValue::Text(t.to_vec()),
            ValueRef::Blob(b) => RawValue::Blob(b.to_vec()),
        }
    }
}

impl rusqlite::ToSql for RawValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(Borrowed(match self {
            RawValue::Null => ValueRef::Null,
            RawValue::Integer(i) => ValueRef::Integer(*i),
            RawValue::Real(r) => ValueRef::Real(*r),
            RawValue::Text(t) => ValueRef::Text(t),
            RawValue::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

type R<T> = Result<T, QuarantineReason>;

/// Sequential typed access to a row's raw values.
struct Fields<'a> {
    vals: &'a [RawValue],
    cols: &'static [&'static str],
    i: usize,
}

impl<'a> Fields<'a> {
    fn new(vals: &'a [RawValue], cols: &'static [&'static str]) -> Self {
        Fields { vals, cols, i: 0 }
    }

    fn next(&mut self) -> (&'static str, Option<&'a RawValue>) {
        let name = self.cols.get(self.i).copied().unwrap_or("?");
        let v = self.vals.get(self.i);
        self.i += 1;
        (name, v)
    }

    fn opt_text(&mut self) -> R<Option<String>> {
        match self.next() {
            (_, None | Some(RawValue::Null)) => Ok(None),
            (name, Some(RawValue::Text(b))) => String::from_utf8(b.clone())
                .map(Some)
                .map_err(|_| QuarantineReason::BadUtf8(name)),
            (name, Some(_)) => Err(QuarantineReason::WrongType(name)),
        }
    }

    fn text(&mut self) -> R<String> {
        let name = self.cols.get(self.i).copied().unwrap_or("?");
        self.opt_text()?.ok_or(QuarantineReason::MissingField(name))
    }

    fn opt_int(&mut self) -> R<Option<i64>> {
        match self.next() {
            (_, None | Some(RawValue::Null)) => Ok(None),
            (_, Some(RawValue::Integer(i))) => Ok(Some(*i)),
            (name, Some(_)) => Err(QuarantineReason::WrongType(name)),
        }
    }

    fn int(&mut self) -> R<i64> {
        let name = self.cols.get(self.i).copied().unwrap_or("?");
        self.opt_int()?.ok_or(QuarantineReason::MissingField(name))
    }
}

// ---------------------------------------------------------------- validation

fn is_line_char(c: char) -> bool {
    !c.is_control()
}

pub(crate) fn check_line(field: &'static str, s: &str, allow_empty: bool) -> R<()> {
    if (!allow_empty && s.is_empty()) || s.len() > MAX_LINE || !s.chars().all(is_line_char) {
        return Err(QuarantineReason::BadValue(field));
    }
    Ok(())
}

pub(crate) fn check_body(field: &'static str, s: &str) -> R<()> {
    if s.len() > MAX_BODY || s.contains('\0') {
        return Err(QuarantineReason::BadValue(field));
    }
    Ok(())
}

/// A usable SIP URI: `sip:` / `sips:` with a non-empty host, or `tel:` with a number;
/// no whitespace, control characters, `<`, `>` or `"`.
pub(crate) fn check_uri(field: &'static str, s: &str) -> R<()> {
    let bad = || QuarantineReason::BadUri(field);
    if s.len() > MAX_LINE
        || s.chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"'))
    {
        return Err(bad());
    }
    let (scheme, rest) = s.split_once(':').ok_or_else(bad)?;
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "sip" | "sips" => {
            let hostport = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let host = hostport.split([';', '?']).next().unwrap_or("");
            let host = if let Some(v6) = host.strip_prefix('[') {
                v6.split_once(']').map(|(h, _)| h).ok_or_else(bad)?
            } else {
                host.split(':').next().unwrap_or("")
            };
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
            {
                return Err(bad());
            }
            Ok(())
        }
        "tel" if !rest.is_empty() => Ok(()),
        _ => Err(bad()),
    }
}

pub(crate) fn check_time(field: &'static str, t: i64) -> R<()> {
    if (1..=MAX_UNIX_TIME).contains(&t) {
        Ok(())
    } else {
        Err(QuarantineReason::ExpiryOutOfRange(field))
    }
}

fn u32_of(field: &'static str, v: i64) -> R<u32> {
    u32::try_from(v).map_err(|_| QuarantineReason::BadValue(field))
}

fn addr_of(field: &'static str, s: &str) -> R<SocketAddr> {
    let a: SocketAddr = s.parse().map_err(|_| QuarantineReason::BadAddress(field))?;
    check_addr(field, a)?;
    Ok(a)
}

/// A routable transport address: a real IP (not unspecified, not multicast) and a port.
pub(crate) fn check_addr(field: &'static str, a: SocketAddr) -> R<()> {
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(QuarantineReason::BadAddress(field));
    }
    Ok(())
}

fn transport_of(s: &str) -> R<Transport> {
    Transport::from_stored(s).ok_or(QuarantineReason::BadValue("transport"))
}

fn list_of(field: &'static str, s: &str) -> R<Vec<String>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let items: Vec<String> = s.split('\n').map(str::to_owned).collect();
    for i in &items {
        check_line(field, i, false)?;
    }
    Ok(items)
}

fn crc_of(v: i64) -> R<u32> {
    u32::try_from(v).map_err(|_| QuarantineReason::ChecksumMismatch)
}

// ---------------------------------------------------------------- canonical encoding

struct Canon(Vec<u8>);

impl Canon {
    fn new(tag: &str) -> Self {
        let mut c = Canon(Vec::with_capacity(256));
        c.s(tag);
        c
    }
    fn s(&mut self, s: &str) {
        self.0.extend_from_slice(&(s.len() as u64).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn i(&mut self, i: i64) {
        self.0.extend_from_slice(&i.to_le_bytes());
    }
    fn os(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.s(s);
            }
        }
    }
    fn oi(&mut self, i: Option<i64>) {
        match i {
            None => self.0.push(0),
            Some(i) => {
                self.0.push(1);
                self.i(i);
            }
        }
    }
    fn list(&mut self, l: &[String]) {
        self.i(l.len() as i64);
        for s in l {
            self.s(s);
        }
    }
    fn crc(&self) -> u32 {
        crc32c::crc32c(&self.0)
    }
}

fn join(l: &[String]) -> String {
    l.join("\n")
}

fn t(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn ot(s: Option<&str>) -> Value {
    s.map_or(Value::Null, t)
}

// ---------------------------------------------------------------- records

/// A kind of record kept in its own table.
pub(crate) trait Record: Sized {
    const TABLE: &'static str;
    /// Columns read and written, in order; the last one is `crc`.
    const COLS: &'static [&'static str];
    /// Decode, validate and verify the checksum of a row.
    fn decode(vals: &[RawValue]) -> R<Self>;
    /// Semantic validation (also applied to writes before they are accepted).
    fn validate(&self) -> R<()>;
    fn checksum(&self) -> u32;
    /// Values for `COLS`, checksum included.
    fn to_values(&self) -> Vec<Value>;
    /// Key for duplicate detection; `None` when the kind has no key.
    fn key(&self) -> Option<String>;
    /// Expiry, for kinds that expire.
    fn expires_at(&self) -> Option<i64>;
    /// Preference between duplicates: higher wins (then higher row id).
    fn freshness(&self) -> i64;
    /// Index of the columns that name the record in the quarantine listing.
    const KEY_COLS: &'static [usize];
    /// Index of the columns that form the record's unique key (empty: no key).
    const UNIQUE_COLS: &'static [usize] = &[];
}

fn verify<T: Record>(rec: T, stored: i64) -> R<T> {
    rec.validate()?;
    if crc_of(stored)? != rec.checksum() {
        return Err(QuarantineReason::ChecksumMismatch);
    }
    Ok(rec)
}

impl Record for Binding {
    const TABLE: &'static str = "bindings";
    const COLS: &'static [&'static str] = &[
        "aor",
        "contact",
        "contact_uri",
        "expires_at",
        "call_id",
        "cseq",
        "source",
        "transport",
        "instance_id",
        "reg_id",
        "prov_kind",
        "prov_at",
        "last_seen",
        "path",
        "crc",
    ];
    const KEY_COLS: &'static [usize] = &[0, 2];
    const UNIQUE_COLS: &'static [usize] = &[0, 2];

    fn decode(vals: &[RawValue]) -> R<Self> {
        let mut f = Fields::new(vals, Self::COLS);
        let aor = f.text()?;
        let contact = f.text()?;
        let contact_uri = f.text()?;
        let expires_at = f.int()?;
        let call_id = f.text()?;
        let cseq = u32_of("cseq", f.int()?)?;
        let source = addr_of("source", &f.text()?)?;
        let transport = transport_of(&f.text()?)?;
        let instance_id = f.opt_text()?;
        let reg_id = f.opt_int()?.map(|r| u32_of("reg_id", r)).transpose()?;
        let prov_kind = f.text()?;
        let prov_at = f.int()?;
        let provenance = Provenance::from_parts(&prov_kind, prov_at)
            .ok_or(QuarantineReason::BadValue("prov_kind"))?;
        let last_seen = f.int()?;
        let path = list_of("path", &f.text()?)?;
        let crc = f.int()?;
        verify(
            Binding {
                aor,
                contact,
                contact_uri,
                expires_at,
                call_id,
                cseq,
                source,
                transport,
                instance_id,
                reg_id,
                provenance,
                last_seen,
                path,
            },
            crc,
        )
    }

    fn validate(&self) -> R<()> {
        check_uri("aor", &self.aor)?;
        check_line("contact", &self.contact, false)?;
        check_uri("contact_uri", &self.contact_uri)?;
        check_time("expires_at", self.expires_at)?;
        check_line("call_id", &self.call_id, false)?;
        check_addr("source", self.source)?;
        if let Some(i) = &self.instance_id {
            check_line("instance_id", i, false)?;
        }
        check_time("prov_at", self.provenance.parts().1)?;
        check_time("last_seen", self.last_seen)?;
        for p in &self.path {
            check_line("path", p, false)?;
        }
        Ok(())
    }

    fn checksum(&self) -> u32 {
        let mut c = Canon::new("holdline.binding.v1");
        c.s(&self.aor);
        c.s(&self.contact);
        c.s(&self.contact_uri);
        c.i(self.expires_at);
        c.s(&self.call_id);
        c.i(i64::from(self.cseq));
        c.s(&self.source.to_string());
        c.s(self.transport.as_str());
        c.os(self.instance_id.as_deref());
        c.oi(self.reg_id.map(i64::from));
        let (k, at) = self.provenance.parts();
        c.s(k);
        c.i(at);
        c.i(self.last_seen);
        c.list(&self.path);
        c.crc()
    }

    fn to_values(&self) -> Vec<Value> {
        let (k, at) = self.provenance.parts();
        vec![
            t(&self.aor),
            t(&self.contact),
            t(&self.contact_uri),
            Value::Integer(self.expires_at),
            t(&self.call_id),
            Value::Integer(i64::from(self.cseq)),
            Value::Text(self.source.to_string()),
            t(self.transport.as_str()),
            ot(self.instance_id.as_deref()),
            self.reg_id
                .map_or(Value::Null, |r| Value::Integer(i64::from(r))),
            t(k),
            Value::Integer(at),
            Value::Integer(self.last_seen),
            Value::Text(join(&self.path)),
            Value::Integer(i64::from(self.checksum())),
        ]
    }

    fn key(&self) -> Option<String> {
        Some(format!("{}\n{}", self.aor, self.contact_uri))
    }

    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }

    fn freshness(&self) -> i64 {
        self.last_seen
    }
}

impl Record for Subscription {
    const TABLE: &'static str = "subscriptions";
    const COLS: &'static [&'static str] = &[
        "sub_id",
        "event",
        "call_id",
        "local_tag",
        "remote_tag",
        "watcher_aor",
        "target_uri",
        "remote_target",
        "route_set",
        "local_cseq",
        "remote_cseq",
        "expires_at",
        "last_version",
        "last_body",
        "last_content_type",
        "phone",
        "transport",
        "crc",
    ];
    const KEY_COLS: &'static [usize] = &[0];
    const UNIQUE_COLS: &'static [usize] = &[0];

    fn decode(vals: &[RawValue]) -> R<Self> {
        let mut f = Fields::new(vals, Self::COLS);
        let id = f.text()?;
        let event = f.text()?;
        let call_id = f.text()?;
        let local_tag = f.text()?;
        let remote_tag = f.text()?;
        let watcher_aor = f.text()?;
        let target_uri = f.text()?;
        let remote_target = f.text()?;
        let route_set = list_of("route_set", &f.text()?)?;
        let local_cseq = u32_of("local_cseq", f.int()?)?;
        let remote_cseq = u32_of("remote_cseq", f.int()?)?;
        let expires_at = f.int()?;
        let last_version = f
            .opt_int()?
            .map(|v| u64::try_from(v).map_err(|_| QuarantineReason::BadValue("last_version")))
            .transpose()?;
        let last_body = f.opt_text()?;
        let last_content_type = f.opt_text()?;
        let phone = addr_of("phone", &f.text()?)?;
        let transport = transport_of(&f.text()?)?;
        let crc = f.int()?;
        verify(
            Subscription {
                id,
                event,
                call_id,
                local_tag,
                remote_tag,
                watcher_aor,
                target_uri,
                remote_target,
                route_set,
                local_cseq,
                remote_cseq,
                expires_at,
                last_version,
                last_body,
                last_content_type,
                phone,
                transport,
            },
            crc,
        )
    }

    fn validate(&self) -> R<()> {
        check_line("sub_id", &self.id, false)?;
        check_line("event", &self.event, false)?;
        check_line("call_id", &self.call_id, false)?;
        check_line("local_tag", &self.local_tag, true)?;
        check_line("remote_tag", &self.remote_tag, true)?;
        check_uri("watcher_aor", &self.watcher_aor)?;
        check_uri("target_uri", &self.target_uri)?;
        check_uri("remote_target", &self.remote_target)?;
        for r in &self.route_set {
            check_line("route_set", r, false)?;
        }
        check_time("expires_at", self.expires_at)?;
        check_addr("phone", self.phone)?;
        if let Some(v) = self.last_version {
            i64::try_from(v).map_err(|_| QuarantineReason::BadValue("last_version"))?;
        }
        if let Some(b) = &self.last_body {
            check_body("last_body", b)?;
        }
        if let Some(c) = &self.last_content_type {
            check_line("last_content_type", c, false)?;
        }
        Ok(())
    }

    fn checksum(&self) -> u32 {
        let mut c = Canon::new("holdline.subscription.v1");
        c.s(&self.id);
        c.s(&self.event);
        c.s(&self.call_id);
        c.s(&self.local_tag);
        c.s(&self.remote_tag);
        c.s(&self.watcher_aor);
        c.s(&self.target_uri);
        c.s(&self.remote_target);
        c.list(&self.route_set);
        c.i(i64::from(self.local_cseq));
        c.i(i64::from(self.remote_cseq));
        c.i(self.expires_at);
        c.oi(self.last_version.and_then(|v| i64::try_from(v).ok()));
        c.os(self.last_body.as_deref());
        c.os(self.last_content_type.as_deref());
        c.s(&self.phone.to_string());
        c.s(self.transport.as_str());
        c.crc()
    }

    fn to_values(&self) -> Vec<Value> {
        vec![
            t(&self.id),
            t(&self.event),
            t(&self.call_id),
            t(&self.local_tag),
            t(&self.remote_tag),
            t(&self.watcher_aor),
            t(&self.target_uri),
            t(&self.remote_target),
            Value::Text(join(&self.route_set)),
            Value::Integer(i64::from(self.local_cseq)),
            Value::Integer(i64::from(self.remote_cseq)),
            Value::Integer(self.expires_at),
            self.last_version
                .and_then(|v| i64::try_from(v).ok())
                .map_or(Value::Null, Value::Integer),
            ot(self.last_body.as_deref()),
            ot(self.last_content_type.as_deref()),
            Value::Text(self.phone.to_string()),
            t(self.transport.as_str()),
            Value::Integer(i64::from(self.checksum())),
        ]
    }

    fn key(&self) -> Option<String> {
        Some(self.id.clone())
    }

    fn expires_at(&self) -> Option<i64> {
        Some(self.expires_at)
    }

    fn freshness(&self) -> i64 {
        i64::from(self.remote_cseq)
    }
}

impl Record for Mwi {
    const TABLE: &'static str = "mwi";
    const COLS: &'static [&'static str] = &["aor", "body", "content_type", "at", "crc"];
    const KEY_COLS: &'static [usize] = &[0];
    const UNIQUE_COLS: &'static [usize] = &[0];

    fn decode(vals: &[RawValue]) -> R<Self> {
        let mut f = Fields::new(vals, Self::COLS);
        let aor = f.text()?;
        let body = f.text()?;
        let content_type = f.text()?;
        let at = f.int()?;
        let crc = f.int()?;
        verify(
            Mwi {
                aor,
                body,
                content_type,
                at,
            },
            crc,
        )
    }

    fn validate(&self) -> R<()> {
        check_uri("aor", &self.aor)?;
        check_body("body", &self.body)?;
        check_line("content_type", &self.content_type, false)?;
        check_time("at", self.at)
    }

    fn checksum(&self) -> u32 {
        let mut c = Canon::new("holdline.mwi.v1");
        c.s(&self.aor);
        c.s(&self.body);
        c.s(&self.content_type);
        c.i(self.at);
        c.crc()
    }

    fn to_values(&self) -> Vec<Value> {
        vec![
            t(&self.aor),
            t(&self.body),
            t(&self.content_type),
            Value::Integer(self.at),
            Value::Integer(i64::from(self.checksum())),
        ]
    }

    fn key(&self) -> Option<String> {
        Some(self.aor.clone())
    }

    fn expires_at(&self) -> Option<i64> {
        None
    }

    fn freshness(&self) -> i64 {
        self.at
    }
}

impl Record for Event {
    const TABLE: &'static str = "events";
    const COLS: &'static [&'static str] = &["at", "kind", "detail", "crc"];
    const KEY_COLS: &'static [usize] = &[1];

    fn decode(vals: &[RawValue]) -> R<Self> {
        let mut f = Fields::new(vals, Self::COLS);
        let at = f.int()?;
        let kind = f.text()?;
        let detail = f.text()?;
        let crc = f.int()?;
        verify(Event { at, kind, detail }, crc)
    }

    fn validate(&self) -> R<()> {
        check_time("at", self.at)?;
        check_line("kind", &self.kind, false)?;
        check_body("detail", &self.detail)
    }

    fn checksum(&self) -> u32 {
        let mut c = Canon::new("holdline.event.v1");
        c.i(self.at);
        c.s(&self.kind);
        c.s(&self.detail);
        c.crc()
    }

    fn to_values(&self) -> Vec<Value> {
        vec![
            Value::Integer(self.at),
            t(&self.kind),
            t(&self.detail),
            Value::Integer(i64::from(self.checksum())),
        ]
    }

    fn key(&self) -> Option<String> {
        None
    }

    fn expires_at(&self) -> Option<i64> {
        None
    }

    fn freshness(&self) -> i64 {
        self.at
    }
}

// ---------------------------------------------------------------- forensics

fn esc(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => b.escape_ascii().to_string(),
    }
}

fn show(v: &RawValue) -> String {
    match v {
        RawValue::Null => "NULL".into(),
        RawValue::Integer(i) => i.to_string(),
        RawValue::Real(r) => format!("{r:?}"),
        RawValue::Text(b) => format!("'{}'", esc(b)),
        RawValue::Blob(b) => format!(
            "x'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

fn cap(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Every column, escaped, for the quarantine table (valid UTF-8, at most 8 KiB).
pub(crate) fn dump(cols: &[&str], vals: &[RawValue]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .zip(vals)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect();
    cap(parts.join(" "), 8192)
}

/// The record's key columns, lossy, for listings.
pub(crate) fn lossy_key(key_cols: &[usize], vals: &[RawValue]) -> String {
    let parts: Vec<String> = key_cols
        .iter()
        .filter_map(|&i| vals.get(i))
        .map(|v| match v {
            RawValue::Text(b) => esc(b),
            other => show(other),
        })
        .collect();
    cap(parts.join(" "), 512)
}

/// Fingerprint of a row's raw content: lets the writer check that a row judged bad by a
/// reader has not been rewritten since, before moving it to quarantine.
pub(crate) fn fingerprint(vals: &[RawValue]) -> u32 {
    let mut buf = Vec::new();
    for v in vals {
        match v {
            RawValue::Null => buf.push(0),
            RawValue::Integer(i) => {
                buf.push(1);
                buf.extend_from_slice(&i.to_le_bytes());
            }
            RawValue::Real(r) => {
                buf.push(2);
                buf.extend_from_slice(&r.to_bits().to_le_bytes());
            }
            RawValue::Text(b) | RawValue::Blob(b) => {
                buf.push(if matches!(v, RawValue::Text(_)) { 3 } else { 4 });
                buf.extend_from_slice(&(b.len() as u64).to_le_bytes());
                buf.extend_from_slice(b);
            }
        }
    }
    crc32c::crc32c(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::Rng;

    #[test]
    fn uri_checks() {
        for good in [
            "sip:100@cloud.test",
            "sips:alice@example.com:5061;transport=tls",
            "sip:100@10.0.0.1:5060;transport=udp",
            "sip:[2001:db8::1]:5060",
            "SIP:100@Cloud.Test",
            "tel:+15551234567",
            "sip:cloud.test",
        ] {
            assert!(check_uri("u", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "not a uri",
            "sip:",
            "sip:100@",
            "http://x",
            "sip:100@host name",
            "sip:<100@x>",
            "sip:100@ho\u{0}st",
            "sip:100@[::1",
            "tel:",
        ] {
            assert_eq!(
                check_uri("u", bad),
                Err(QuarantineReason::BadUri("u")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn time_and_line_checks() {
        assert!(check_time("t", 1).is_ok());
        assert!(check_time("t", MAX_UNIX_TIME).is_ok());
        assert!(check_time("t", 0).is_err());
        assert!(check_time("t", -1).is_err());
        assert!(check_time("t", MAX_UNIX_TIME + 1).is_err());
        assert!(check_line("l", "a b", false).is_ok());
        assert!(check_line("l", "", false).is_err());
        assert!(check_line("l", "", true).is_ok());
        assert!(check_line("l", "a\r\nb", false).is_err());
        assert!(check_line("l", &"x".repeat(MAX_LINE + 1), false).is_err());
        assert!(check_body("b", "a\r\nb").is_ok());
        assert!(check_body("b", "a\0b").is_err());
    }

    fn sample() -> Binding {
        Binding {
            aor: "sip:100@cloud.test".into(),
            contact: "<sip:100@10.0.0.1>".into(),
            contact_uri: "sip:100@10.0.0.1".into(),
            expires_at: 1_900_000_000,
            call_id: "c1".into(),
            cseq: 1,
            source: "10.0.0.1:5060".parse().expect("addr"),
            transport: Transport::Udp,
            instance_id: None,
            reg_id: None,
            provenance: Provenance::CloudVerified { at: 1_900_000_000 },
            last_seen: 1_900_000_000,
            path: vec![],
        }
    }

    fn raw(v: Vec<Value>) -> Vec<RawValue> {
        v.into_iter()
            .map(|v| match v {
                Value::Null => RawValue::Null,
                Value::Integer(i) => RawValue::Integer(i),
                Value::Real(r) => RawValue::Real(r),
                Value::Text(t) => RawValue::Text(t.into_bytes()),
                Value::Blob(b) => RawValue::Blob(b),
            })
            .collect()
    }

    #[test]
    fn checksum_covers_every_field_and_its_position() {
        let b = sample();
        assert_eq!(Binding::decode(&raw(b.to_values())), Ok(b.clone()));
        let base = b.checksum();
        let variants: Vec<Binding> = vec![
            Binding {
                aor: "sip:101@cloud.test".into(),
                ..b.clone()
            },
            Binding {
                contact: "<sip:100@10.0.0.2>".into(),
                ..b.clone()
            },
            Binding {
                expires_at: b.expires_at + 1,
                ..b.clone()
            },
            Binding {
                cseq: 2,
                ..b.clone()
            },
            Binding {
                source: "10.0.0.1:5061".parse().expect("addr"),
                ..b.clone()
            },
            Binding {
                transport: Transport::Tcp,
                ..b.clone()
            },
            Binding {
                instance_id: Some(String::new()),
                ..b.clone()
            },
            Binding {
                reg_id: Some(0),
                ..b.clone()
            },
            Binding {
                provenance: Provenance::LocalOnly { at: 1_900_000_000 },
                ..b.clone()
            },
            Binding {
                last_seen: b.last_seen - 1,
                ..b.clone()
            },
            Binding {
                path: vec![String::new()],
                ..b.clone()
            },
            // Shifting text between adjacent fields changes the checksum too.
            Binding {
                call_id: "c".into(),
                contact: "<sip:100@10.0.0.1>1".into(),
                ..b.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.checksum(), base, "{v:?}");
        }
    }

    #[test]
    fn reasons_for_each_kind_of_bad_column() {
        let good = raw(sample().to_values());
        let with = |i: usize, v: RawValue| {
            let mut r = good.clone();
            r[i] = v;
            Binding::decode(&r).err()
        };
        assert_eq!(
            with(0, RawValue::Null),
            Some(QuarantineReason::MissingField("aor"))
        );
        assert_eq!(
            with(0, RawValue::Integer(5)),
            Some(QuarantineReason::WrongType("aor"))
        );
        assert_eq!(
            with(1, RawValue::Text(vec![0xff, 0xfe])),
            Some(QuarantineReason::BadUtf8("contact"))
        );
        assert_eq!(
            with(2, RawValue::Text(b"nope".to_vec())),
            Some(QuarantineReason::BadUri("contact_uri"))
        );
        assert_eq!(
            with(3, RawValue::Integer(-5)),
            Some(QuarantineReason::ExpiryOutOfRange("expires_at"))
        );
        assert_eq!(
            with(5, RawValue::Integer(-1)),
            Some(QuarantineReason::BadValue("cseq"))
        );
        assert_eq!(
            with(6, RawValue::Text(b"10.0.0.1".to_vec())),
            Some(QuarantineReason::BadAddress("source"))
        );
        for unroutable in ["0.0.0.0:5060", "10.0.0.1:0", "[::]:5060", "224.0.0.1:5060"] {
            assert_eq!(
                with(6, RawValue::Text(unroutable.as_bytes().to_vec())),
                Some(QuarantineReason::BadAddress("source")),
                "{unroutable}"
            );
        }
        assert_eq!(
            with(7, RawValue::Text(b"sctp".to_vec())),
            Some(QuarantineReason::BadValue("transport"))
        );
        assert_eq!(
            with(14, RawValue::Integer(1)),
            Some(QuarantineReason::ChecksumMismatch)
        );
        assert_eq!(
            with(14, RawValue::Integer(-1)),
            Some(QuarantineReason::ChecksumMismatch)
        );
        assert_eq!(
            Binding::decode(&good[..3]).err(),
            Some(QuarantineReason::MissingField("expires_at"))
        );
    }

    fn random_value(rng: &mut Rng, good: &RawValue) -> RawValue {
        let bytes = |rng: &mut Rng| -> Vec<u8> {
            (0..rng.below(40)).map(|_| rng.next_u64() as u8).collect()
        };
        match rng.below(7) {
            0 => RawValue::Null,
            1 => RawValue::Integer(rng.next_u64() as i64),
            2 => RawValue::Real(f64::from_bits(rng.next_u64())),
            3 => RawValue::Text(bytes(rng)),
            4 => RawValue::Blob(bytes(rng)),
            _ => good.clone(),
        }
    }

    /// Any content a row can hold is judged without panicking.
    #[test]
    fn decoding_random_rows_never_panics() {
        let mut rng = Rng::new(42);
        let b = raw(sample().to_values());
        let mut accepted = 0;
        for _ in 0..20_000 {
            let len = b.len() - usize::from(rng.below(10) == 0);
            let row: Vec<RawValue> = b[..len].iter().map(|g| random_value(&mut rng, g)).collect();
            if Binding::decode(&row).is_ok() {
                accepted += 1;
            }
            let _ = Subscription::decode(&row);
            let _ = Mwi::decode(&row);
            let _ = Event::decode(&row);
            let _ = dump(Binding::COLS, &row);
            let _ = lossy_key(Binding::KEY_COLS, &row);
        }
        // Only rows whose every column stayed intact pass (the checksum guards the rest).
        assert!(accepted < 20_000 / 100, "{accepted}");
    }
}
