//! Small, allocation-free lexical helpers shared by the typed readers.

/// RFC 3261 `token` characters.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// True when `s` is a non-empty RFC 3261 token.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

/// Linear white space as this crate treats it inside an unfolded value.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trims SP / HTAB on both sides.
pub fn trim_ws(s: &str) -> &str {
    let b = s.as_bytes();
    let mut start = 0;
    let mut end = b.len();
    while start < end && is_ws(b[start]) {
        start += 1;
    }
    while end > start && is_ws(b[end - 1]) {
        end -= 1;
    }
    // Cutting at ASCII space/tab keeps UTF-8 boundaries.
    s.get(start..end).unwrap_or("")
}

/// Byte position of `c` in `s` (ASCII only).
#[inline]
pub fn find_byte(s: &str, c: u8) -> Option<usize> {
    memchr::memchr(c, s.as_bytes())
}

/// Last byte position of `c` in `s` (ASCII only).
#[inline]
pub fn rfind_byte(s: &str, c: u8) -> Option<usize> {
    memchr::memrchr(c, s.as_bytes())
}

/// Position of the first SP or HTAB.
#[inline]
pub fn find_ws(s: &str) -> Option<usize> {
    s.as_bytes().iter().position(|&b| is_ws(b))
}

/// Splits `s` at every `sep` byte that is outside double quotes and outside
/// `<...>` brackets. Pieces are trimmed; empty pieces are skipped.
pub fn split_outside(s: &str, sep: u8) -> SplitOutside<'_> {
    SplitOutside { rest: Some(s), sep }
}

/// Iterator returned by [`split_outside`].
pub struct SplitOutside<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        loop {
            let s = self.rest?;
            let cut = find_outside(s, self.sep);
            let (piece, rest) = match cut {
                Some(i) => (s.get(..i).unwrap_or(""), s.get(i + 1..)),
                None => (s, None),
            };
            self.rest = rest;
            let piece = trim_ws(piece);
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

/// Index of the first `sep` outside quotes and angle brackets.
pub fn find_outside(s: &str, sep: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut in_quote = false;
    let mut angle = 0usize;
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
            angle += 1;
        } else if c == b'>' {
            angle = angle.saturating_sub(1);
        } else if c == sep && angle == 0 {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// True when quotes and angle brackets in `s` are balanced.
pub fn balanced(s: &str) -> bool {
    let b = s.as_bytes();
    let mut in_quote = false;
    let mut angle = 0i32;
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
            angle += 1;
            if angle > 1 {
                return false;
            }
        } else if c == b'>' {
            angle -= 1;
            if angle < 0 {
                return false;
            }
        }
        i += 1;
    }
    !in_quote && angle == 0
}

/// A `;name[=value]` parameter list, as it stands in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params<'a>(pub &'a str);

impl<'a> Params<'a> {
    /// Iterates over `(name, value)` pairs; the value keeps its quotes.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        split_outside(self.0, b';').map(|p| match find_byte(p, b'=') {
            Some(i) => (
                trim_ws(p.get(..i).unwrap_or("")),
                Some(trim_ws(p.get(i + 1..).unwrap_or(""))),
            ),
            None => (p, None),
        })
    }

    /// Looks a parameter up by name (case-insensitive). `Some(None)` means the
    /// parameter is present without a value.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Like [`Params::get`], with surrounding double quotes removed.
    pub fn get_unquoted(&self, name: &str) -> Option<Option<&'a str>> {
        self.get(name).map(|v| v.map(unquote))
    }

    /// True when the list holds no parameter.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Removes one pair of surrounding double quotes, if present.
pub fn unquote(s: &str) -> &str {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s.get(1..s.len() - 1).unwrap_or(s)
    } else {
        s
    }
}

/// Parses `host[:port]` where host may be a `[IPv6]` reference.
/// Returns `None` on syntax errors.
pub fn parse_hostport(s: &str) -> Option<(&str, Option<u16>)> {
    let s = trim_ws(s);
    if s.is_empty() {
        return None;
    }
    let (host, rest) = if s.starts_with('[') {
        let end = find_byte(s, b']')?;
        let host = s.get(..=end)?;
        let inner = host.get(1..host.len() - 1)?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return None;
        }
        (host, s.get(end + 1..)?)
    } else {
        match find_byte(s, b':') {
            Some(i) => (s.get(..i)?, s.get(i..)?),
            None => (s, ""),
        }
    };
    if !host.starts_with('[') && !valid_host(host) {
        return None;
    }
    let port = if rest.is_empty() {
        None
    } else {
        let p = trim_ws(rest.strip_prefix(':')?);
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(p.parse::<u16>().ok()?)
    };
    Some((host, port))
}

/// A hostname or IPv4 address (syntax only).
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !h.starts_with('.')
        && !h.contains("..")
}

/// Parses a decimal number made of ASCII digits only, with an upper bound.
pub fn parse_decimal(s: &str, max: u64) -> Option<u64> {
    let s = trim_ws(s);
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v <= max).then_some(v)
}

/// True when a parameter list (without its leading `;`) is well formed:
/// no empty parameter (`;;`, trailing `;`), token names, and values that
/// are non-empty and either a quoted string or free of LWS, quotes, commas
/// and angle brackets (RFC 4475 §3.1.2.1).
pub fn params_well_formed(s: &str) -> bool {
    if trim_ws(s).is_empty() {
        return true;
    }
    let mut rest = s;
    loop {
        let cut = find_outside(rest, b';');
        let piece = trim_ws(match cut {
            Some(i) => rest.get(..i).unwrap_or(""),
            None => rest,
        });
        if piece.is_empty() {
            return false;
        }
        let (name, value) = match find_byte(piece, b'=') {
            Some(i) => (
                piece.get(..i).unwrap_or(""),
                Some(piece.get(i + 1..).unwrap_or("")),
            ),
            None => (piece, None),
        };
        if !is_token(trim_ws(name)) {
            return false;
        }
        if let Some(v) = value {
            let v = trim_ws(v);
            if v.is_empty() {
                return false;
            }
            if v.starts_with('"') {
                if v.len() < 2 || !v.ends_with('"') {
                    return false;
                }
            } else if v
                .bytes()
                .any(|b| matches!(b, b' ' | b'\t' | b'"' | b',' | b'<' | b'>'))
            {
                return false;
            }
        }
        match cut {
            Some(i) => rest = rest.get(i + 1..).unwrap_or(""),
            None => return true,
        }
    }
}
