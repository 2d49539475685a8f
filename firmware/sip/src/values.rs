//! Typed, borrowed views of header values. They never own data and never
//! rewrite anything: the message keeps its bytes, these only read them.

use crate::method::Method;
use crate::parse::{
    balanced, find_byte, find_outside, find_ws, parse_decimal, parse_hostport, rfind_byte,
    split_outside, trim_ws, unquote, Params,
};

/// A URI as found in a Request-URI or a name-addr. `sip:`/`sips:` URIs are
/// split into parts; any other scheme (`tel:`, `urn:`, ...) is kept opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// A `sip:` or `sips:` URI.
    Sip(SipUri<'a>),
    /// Any other absolute URI, kept as written.
    Other {
        /// The scheme, e.g. `tel` or `urn`.
        scheme: &'a str,
        /// Everything after the first `:`.
        rest: &'a str,
    },
}

/// The parts of a `sip:`/`sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// True for `sips:`.
    pub secure: bool,
    /// The userinfo (user and optional password), without the `@`.
    pub user: Option<&'a str>,
    /// Host: a name, an IPv4 address or a bracketed IPv6 reference.
    pub host: &'a str,
    /// Port, if written.
    pub port: Option<u16>,
    /// URI parameters (`;lr;transport=tcp`), without the leading `;`.
    pub params: Params<'a>,
    /// URI headers (`?a=b`), without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> Uri<'a> {
    /// Parses an absolute URI (no surrounding `<>`).
    pub fn parse(s: &'a str) -> Option<Uri<'a>> {
        let s = trim_ws(s);
        if s.bytes()
            .any(|b| b <= b' ' || b == b'<' || b == b'>' || b == b'"')
        {
            return None;
        }
        let colon = find_byte(s, b':')?;
        let scheme = s.get(..colon)?;
        let rest = s.get(colon + 1..)?;
        if scheme.is_empty()
            || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            || !scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
        {
            return None;
        }
        let secure = if scheme.eq_ignore_ascii_case("sip") {
            false
        } else if scheme.eq_ignore_ascii_case("sips") {
            true
        } else {
            if rest.is_empty() {
                return None;
            }
            return Some(Uri::Other { scheme, rest });
        };
        // The userinfo may hold `?`, `;`, `/` and `,` (RFC 3261 §25.1
        // user-unreserved), so the last `@` ends it; headers come after it.
        let (user, after_user) = match rfind_byte(rest, b'@') {
            Some(i) => (Some(rest.get(..i)?), rest.get(i + 1..)?),
            None => (None, rest),
        };
        let (hostpart, headers) = match find_byte(after_user, b'?') {
            Some(i) => (after_user.get(..i)?, Some(after_user.get(i + 1..)?)),
            None => (after_user, None),
        };
        if let Some(u) = user {
            if u.is_empty() {
                return None;
            }
        }
        let (hostport, params) = match find_byte(hostpart, b';') {
            Some(i) => (hostpart.get(..i)?, hostpart.get(i + 1..)?),
            None => (hostpart, ""),
        };
        let (host, port) = parse_hostport(hostport)?;
        Some(Uri::Sip(SipUri {
            secure,
            user,
            host,
            port,
            params: Params(params),
            headers,
        }))
    }

    /// The `sip:`/`sips:` parts, if this is a SIP URI.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(s) => Some(s),
            Uri::Other { .. } => None,
        }
    }
}

impl SipUri<'_> {
    /// The user part without a password.
    pub fn user_name(&self) -> Option<&str> {
        self.user.map(|u| u.split(':').next().unwrap_or(u))
    }

    /// True when the URI carries the `lr` parameter (loose routing).
    pub fn is_loose(&self) -> bool {
        self.params.get("lr").is_some()
    }
}

/// One Via value (`SIP/2.0/UDP host:port;branch=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name and version, e.g. `SIP` and `2.0`.
    pub protocol: &'a str,
    /// Protocol version.
    pub version: &'a str,
    /// Transport token, e.g. `UDP`, `TCP`, `TLS`, `WS`.
    pub transport: &'a str,
    /// sent-by host (name, IPv4 or `[IPv6]`).
    pub host: &'a str,
    /// sent-by port, if written.
    pub port: Option<u16>,
    /// The parameters.
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// Parses one Via value, checking its parameters strictly.
    pub fn parse(s: &'a str) -> Option<Via<'a>> {
        Self::parse_with(s, true)
    }

    /// Parses one Via value without the strict parameter check (for reads
    /// of a message that [`crate::Message::validate`] already checked).
    pub(crate) fn parse_lax(s: &'a str) -> Option<Via<'a>> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &'a str, strict: bool) -> Option<Via<'a>> {
        let s = trim_ws(s);
        let (sent, params) = match find_outside(s, b';') {
            Some(i) => (s.get(..i)?, s.get(i + 1..)?),
            None => (s, ""),
        };
        let s1 = find_byte(sent, b'/')?;
        let after1 = sent.get(s1 + 1..)?;
        let s2 = find_byte(after1, b'/')?;
        let protocol = trim_ws(sent.get(..s1)?);
        let version = trim_ws(after1.get(..s2)?);
        let rest = trim_ws(after1.get(s2 + 1..)?);
        let ws = find_ws(rest)?;
        let transport = rest.get(..ws)?;
        let hostport = trim_ws(rest.get(ws..)?);
        if !crate::parse::is_token(protocol)
            || !crate::parse::is_token(version)
            || !crate::parse::is_token(transport)
        {
            return None;
        }
        let (host, port) = parse_hostport(hostport)?;
        if strict && !crate::parse::params_well_formed(params) {
            return None;
        }
        let params = Params(params);
        Some(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
        })
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.get("branch").flatten()
    }

    /// The `received` parameter (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<&'a str> {
        self.params.get("received").flatten()
    }

    /// The `rport` parameter (RFC 3581): `None` when absent,
    /// `Some(None)` when present without value, `Some(Some(p))` with a value.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// True when the branch has the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

/// A name-addr or addr-spec with its header parameters
/// (From, To, Contact, Route, Record-Route, Path values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name as written (quotes kept), if any.
    pub display: Option<&'a str>,
    /// The URI text, without `<>`.
    pub uri: &'a str,
    /// Header parameters after the URI (`;tag=...;expires=...`).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one name-addr / addr-spec value, checking URI and parameters strictly.
    pub fn parse(s: &'a str) -> Option<NameAddr<'a>> {
        Self::parse_with(s, true)
    }

    /// Parses without the strict URI and parameter checks (for reads of a
    /// message that [`crate::Message::validate`] already checked).
    pub(crate) fn parse_lax(s: &'a str) -> Option<NameAddr<'a>> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &'a str, strict: bool) -> Option<NameAddr<'a>> {
        let s = trim_ws(s);
        if s.is_empty() || (strict && !balanced(s)) {
            return None;
        }
        let lt = find_lt(s);
        let na = match lt {
            Some(lt) => {
                let gt = find_byte(s.get(lt..)?, b'>')? + lt;
                let display = trim_ws(s.get(..lt)?);
                let uri = s.get(lt + 1..gt)?;
                // No LWS inside the brackets (RFC 4475 §3.1.2.14).
                if uri.is_empty() || uri != trim_ws(uri) {
                    return None;
                }
                let after = trim_ws(s.get(gt + 1..)?);
                let params = if after.is_empty() {
                    ""
                } else {
                    after.strip_prefix(';')?
                };
                if !display.is_empty() && !display.starts_with('"') {
                    // Unquoted display name: tokens and spaces only.
                    if !display.bytes().all(|b| {
                        crate::parse::is_token_byte(b) || b == b' ' || b == b'\t' || b >= 0x80
                    }) {
                        return None;
                    }
                }
                if display.starts_with('"') && (!display.ends_with('"') || display.len() < 2) {
                    return None;
                }
                NameAddr {
                    display: (!display.is_empty()).then_some(display),
                    uri,
                    params: Params(params),
                }
            }
            None => {
                let (uri, params) = match find_outside(s, b';') {
                    Some(i) => (trim_ws(s.get(..i)?), s.get(i + 1..)?),
                    None => (s, ""),
                };
                if uri.bytes().any(|b| matches!(b, b' ' | b'\t' | b',' | b'?')) {
                    return None;
                }
                NameAddr {
                    display: None,
                    uri,
                    params: Params(params),
                }
            }
        };
        if strict
            && (Uri::parse(na.uri).is_none() || !crate::parse::params_well_formed(na.params.0))
        {
            return None;
        }
        Some(na)
    }

    /// The URI, parsed.
    pub fn parsed_uri(&self) -> Option<Uri<'a>> {
        Uri::parse(self.uri)
    }

    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.get("tag").flatten()
    }

    /// The `expires` parameter (Contact), when a valid 32-bit number.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The `+sip.instance` parameter (RFC 5626), quotes removed
    /// (`<urn:uuid:...>` stays as written inside the quotes).
    pub fn instance(&self) -> Option<&'a str> {
        self.params.get_unquoted("+sip.instance").flatten()
    }

    /// The `reg-id` parameter (RFC 5626).
    pub fn reg_id(&self) -> Option<u32> {
        self.params
            .get("reg-id")
            .flatten()
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            .and_then(|v| u32::try_from(v).ok())
    }
}

/// Position of the `<` that opens the URI, outside quotes.
fn find_lt(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut in_quote = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if in_quote {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_quote = false;
            }
        } else if c == b'"' {
            in_quote = true;
        } else if c == b'<' {
            return Some(i);
        } else if c == b';' {
            return None;
        }
        i += 1;
    }
    None
}

/// The Contact header's value set: `*` or a list of addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *` (remove all bindings; REGISTER with Expires: 0).
    Star,
    /// The listed addresses in message order (possibly empty).
    List(Vec<NameAddr<'a>>),
}

/// CSeq: sequence number and method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (RFC 3261: less than 2^31).
    pub seq: u32,
    /// Method.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(s: &str) -> Option<CSeq> {
        let s = trim_ws(s);
        let ws = find_ws(s)?;
        let seq = parse_decimal(s.get(..ws)?, (1u64 << 31) - 1)?;
        let method = Method::parse(trim_ws(s.get(ws..)?))?;
        Some(CSeq {
            seq: u32::try_from(seq).ok()?,
            method,
        })
    }
}

/// An Event header (RFC 6665): package and parameters (e.g. `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// Event package, e.g. `dialog` or `message-summary`.
    pub package: &'a str,
    /// Parameters.
    pub params: Params<'a>,
}

impl<'a> Event<'a> {
    /// Parses an Event value.
    pub fn parse(s: &'a str) -> Option<Event<'a>> {
        let s = trim_ws(s);
        let (pkg, params) = match find_byte(s, b';') {
            Some(i) => (trim_ws(s.get(..i)?), s.get(i + 1..)?),
            None => (s, ""),
        };
        crate::parse::is_token(pkg).then_some(Event {
            package: pkg,
            params: Params(params),
        })
    }

    /// The `id` parameter.
    pub fn id(&self) -> Option<&'a str> {
        self.params.get("id").flatten()
    }
}

/// A Subscription-State header (RFC 6665).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    /// `active`, `pending`, `terminated` or an extension.
    pub state: &'a str,
    /// Parameters (`expires`, `reason`, `retry-after`).
    pub params: Params<'a>,
}

impl<'a> SubscriptionState<'a> {
    /// Parses a Subscription-State value.
    pub fn parse(s: &'a str) -> Option<SubscriptionState<'a>> {
        let e = Event::parse(s)?;
        Some(SubscriptionState {
            state: e.package,
            params: e.params,
        })
    }

    /// The `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(|v| parse_decimal(v, u64::from(u32::MAX)))
            .and_then(|v| u32::try_from(v).ok())
    }

    /// The `reason` parameter.
    pub fn reason(&self) -> Option<&'a str> {
        self.params.get("reason").flatten()
    }
}

/// Splits a list header value into its comma-separated elements.
pub fn list_items(value: &str) -> impl Iterator<Item = &str> {
    split_outside(value, b',')
}

/// Removes surrounding quotes from a quoted string value.
pub fn unquoted(s: &str) -> &str {
    unquote(s)
}
