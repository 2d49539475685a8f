//! Header names: case-insensitive, with RFC 3261 §7.3.3 compact forms.

/// A header name, recognised for the headers this crate reads or edits.
/// Everything else is [`HeaderName::Other`] and is only ever copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// Via / v
    Via,
    /// From / f
    From,
    /// To / t
    To,
    /// Call-ID / i
    CallId,
    /// CSeq
    CSeq,
    /// Contact / m
    Contact,
    /// Max-Forwards
    MaxForwards,
    /// Route
    Route,
    /// Record-Route
    RecordRoute,
    /// Path (RFC 3327)
    Path,
    /// Expires
    Expires,
    /// Content-Length / l
    ContentLength,
    /// Content-Type / c
    ContentType,
    /// Event / o (RFC 6665)
    Event,
    /// Subscription-State
    SubscriptionState,
    /// Proxy-Require
    ProxyRequire,
    /// Require
    Require,
    /// Supported / k
    Supported,
    /// Retry-After
    RetryAfter,
    /// Any other header; its name is in the raw line.
    Other,
}

impl HeaderName {
    /// Classifies a raw header name (full or compact form, any case).
    pub fn classify(name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            return match name[0].to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'o' => HeaderName::Event,
                b'k' => HeaderName::Supported,
                _ => HeaderName::Other,
            };
        }
        const TABLE: &[(&str, HeaderName)] = &[
            ("via", HeaderName::Via),
            ("from", HeaderName::From),
            ("to", HeaderName::To),
            ("call-id", HeaderName::CallId),
            ("cseq", HeaderName::CSeq),
            ("contact", HeaderName::Contact),
            ("max-forwards", HeaderName::MaxForwards),
            ("route", HeaderName::Route),
            ("record-route", HeaderName::RecordRoute),
            ("path", HeaderName::Path),
            ("expires", HeaderName::Expires),
            ("content-length", HeaderName::ContentLength),
            ("content-type", HeaderName::ContentType),
            ("event", HeaderName::Event),
            ("subscription-state", HeaderName::SubscriptionState),
            ("proxy-require", HeaderName::ProxyRequire),
            ("require", HeaderName::Require),
            ("supported", HeaderName::Supported),
            ("retry-after", HeaderName::RetryAfter),
        ];
        let first = name.first().map(u8::to_ascii_lowercase);
        for (full, kind) in TABLE {
            if full.len() == name.len()
                && full.as_bytes().first().copied() == first
                && full.as_bytes().eq_ignore_ascii_case(name)
            {
                return *kind;
            }
        }
        HeaderName::Other
    }

    /// The canonical (long) spelling used when this crate writes a new line.
    pub fn canonical(self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::Contact => "Contact",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Path => "Path",
            HeaderName::Expires => "Expires",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::Event => "Event",
            HeaderName::SubscriptionState => "Subscription-State",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Require => "Require",
            HeaderName::Supported => "Supported",
            HeaderName::RetryAfter => "Retry-After",
            HeaderName::Other => "",
        }
    }

    /// True for headers whose values may be comma-separated lists on one line
    /// and that this crate splits (Via, Contact, Route, Record-Route, Path).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            HeaderName::Via
                | HeaderName::Contact
                | HeaderName::Route
                | HeaderName::RecordRoute
                | HeaderName::Path
                | HeaderName::ProxyRequire
                | HeaderName::Require
                | HeaderName::Supported
        )
    }
}

/// Compares a raw header name (compact or long, any case) with a name given
/// by the caller (compact or long, any case).
pub fn names_match(raw: &[u8], wanted: &str) -> bool {
    let a = HeaderName::classify(raw);
    let b = HeaderName::classify(wanted.as_bytes());
    if a != HeaderName::Other || b != HeaderName::Other {
        return a == b;
    }
    raw.eq_ignore_ascii_case(wanted.as_bytes())
}
