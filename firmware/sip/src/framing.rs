//! Framing: datagrams and byte streams (TCP now, TLS later), the maximum
//! message size, and RFC 5626 CRLF keep-alives (a double-CRLF ping is
//! answered with a single-CRLF pong).

use thiserror::Error;

/// Default maximum message size (bytes): the largest UDP payload.
pub const DEFAULT_MAX_MESSAGE: usize = 65_507;

/// What to send back for a keep-alive ping (RFC 5626 §4.4.1).
pub const PONG: &[u8] = b"\r\n";

/// What a client sends as a keep-alive ping.
pub const PING: &[u8] = b"\r\n\r\n";

/// Why framing failed. On a stream every error is fatal: close the connection.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    /// More than the maximum message size.
    #[error("message larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// A stream message without Content-Length (RFC 3261 §18.3: mandatory).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length is not a number, or several disagree.
    #[error("bad Content-Length")]
    BadContentLength,
}

/// One unit cut out of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete SIP message, to give to [`crate::Message::parse`].
    Message(Vec<u8>),
    /// A keep-alive ping (CRLFCRLF): answer with [`PONG`].
    Ping,
    /// A keep-alive pong (single CRLF): the peer is alive.
    Pong,
}

/// Classifies one received datagram.
pub fn datagram(bytes: &[u8], max: usize) -> Result<Frame, FramingError> {
    if bytes.len() > max {
        return Err(FramingError::TooLarge { max });
    }
    if bytes == PING {
        return Ok(Frame::Ping);
    }
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Ok(Frame::Pong);
    }
    Ok(Frame::Message(bytes.to_vec()))
}

/// Cuts a byte stream into SIP messages by Content-Length.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max: usize,
}

impl StreamFramer {
    /// A framer refusing messages larger than `max` bytes.
    pub fn new(max: usize) -> StreamFramer {
        StreamFramer {
            buf: Vec::new(),
            max,
        }
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Appends received bytes. Refuses (and keeps nothing of) input that
    /// would grow the buffer past twice the maximum message size.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FramingError> {
        if self.buf.len() + bytes.len() > self.max.saturating_mul(2).max(8) {
            self.buf.clear();
            return Err(FramingError::TooLarge { max: self.max });
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete frame, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramingError> {
        // Keep-alives live between messages.
        if self.buf.starts_with(PING) {
            self.buf.drain(..4);
            return Ok(Some(Frame::Ping));
        }
        if self.buf.starts_with(b"\r\n") {
            if self.buf.len() == 2 || (self.buf.len() == 3 && self.buf[2] == b'\r') {
                return Ok(None); // may still become a ping
            }
            self.buf.drain(..2);
            return Ok(Some(Frame::Pong));
        }
        if self.buf.first() == Some(&b'\n') {
            self.buf.drain(..1);
            return Ok(Some(Frame::Pong));
        }
        let Some(head_end) = find_head_end(&self.buf) else {
            if self.buf.len() > self.max {
                self.buf.clear();
                return Err(FramingError::TooLarge { max: self.max });
            }
            return Ok(None);
        };
        let head = self.buf.get(..head_end).unwrap_or_default();
        let cl = match content_length(head) {
            Ok(Some(cl)) => cl,
            Ok(None) => {
                self.buf.clear();
                return Err(FramingError::MissingContentLength);
            }
            Err(e) => {
                self.buf.clear();
                return Err(e);
            }
        };
        let total = head_end.saturating_add(cl);
        if total > self.max {
            self.buf.clear();
            return Err(FramingError::TooLarge { max: self.max });
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..total).collect();
        Ok(Some(Frame::Message(msg)))
    }
}

/// Index just past the blank line ending the headers.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < buf.len() {
        if buf[i] == b'\n' {
            if buf[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if buf[i + 1] == b'\r' && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Content-Length from a header block (full or compact name).
fn content_length(head: &[u8]) -> Result<Option<usize>, FramingError> {
    let mut found: Option<usize> = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line.get(..colon).unwrap_or_default();
        let name = name
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .and_then(|e| name.get(..=e))
            .unwrap_or_default();
        if !(name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l")) {
            continue;
        }
        let v = std::str::from_utf8(line.get(colon + 1..).unwrap_or_default())
            .map_err(|_| FramingError::BadContentLength)?;
        let v = crate::parse::parse_decimal(v, u64::from(u32::MAX))
            .ok_or(FramingError::BadContentLength)?;
        let v = usize::try_from(v).map_err(|_| FramingError::BadContentLength)?;
        if found.is_some_and(|f| f != v) {
            return Err(FramingError::BadContentLength);
        }
        found = Some(v);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn stream_splits_by_content_length_across_pushes() {
        let mut f = StreamFramer::new(1000);
        let mut all = Vec::new();
        all.extend_from_slice(MSG);
        all.extend_from_slice(PING);
        all.extend_from_slice(MSG);
        for chunk in all.chunks(7) {
            f.push(chunk).unwrap();
        }
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(MSG.to_vec())));
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Ping));
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Message(MSG.to_vec())));
        assert_eq!(f.next_frame().unwrap(), None);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_and_partial_ping() {
        let mut f = StreamFramer::new(1000);
        f.push(b"\r\n").unwrap();
        assert_eq!(f.next_frame().unwrap(), None);
        f.push(b"\r\n").unwrap();
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Ping));
        f.push(b"\r\nO").unwrap();
        assert_eq!(f.next_frame().unwrap(), Some(Frame::Pong));
        let mut got = None;
        for b in &MSG[1..] {
            f.push(&[*b]).unwrap();
            if let Some(fr) = f.next_frame().unwrap() {
                got = Some(fr);
            }
        }
        assert_eq!(got, Some(Frame::Message(MSG.to_vec())));
    }

    #[test]
    fn stream_errors() {
        let mut f = StreamFramer::new(1000);
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FramingError::MissingContentLength));
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\n")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FramingError::BadContentLength));
        f.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 999999\r\n\r\n")
            .unwrap();
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { max: 1000 }));
        let mut f = StreamFramer::new(100);
        assert!(f.push(&[b'a'; 150]).is_ok());
        assert_eq!(f.next_frame(), Err(FramingError::TooLarge { max: 100 }));
        assert!(f.push(&[b'a'; 500]).is_err());
    }

    #[test]
    fn datagrams() {
        assert_eq!(datagram(PING, 100), Ok(Frame::Ping));
        assert_eq!(datagram(b"\r\n", 100), Ok(Frame::Pong));
        assert_eq!(datagram(MSG, 10), Err(FramingError::TooLarge { max: 10 }));
        assert_eq!(datagram(MSG, 100), Ok(Frame::Message(MSG.to_vec())));
    }
}
