//! Bad input: every datagram or framed stream message goes through
//! [`classify`]. A malformed request whose top Via can be read gets a 400
//! (or 505 / 513) with a reason phrase; anything else is dropped with a
//! [`DropReason`] that the caller counts in [`DropStats`]. Never panics.

use std::net::SocketAddr;

use crate::error::ParseError;
use crate::framing::{self, Frame, FramingError};
use crate::message::Message;
use crate::method::Method;
use crate::proxy::{Leg, ProxyError, ProxyIdentity};

/// Why a message was dropped (counted, never answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Empty or whitespace-only payload that is not a keep-alive.
    Empty,
    /// Larger than the maximum message size.
    TooLarge,
    /// Not even a start line and headers could be read, or no readable Via
    /// to answer to.
    Unparseable,
    /// A malformed response (responses are never answered).
    MalformedResponse,
    /// A malformed ACK (ACKs are never answered).
    MalformedAck,
    /// Stream framing failed (the connection must be closed).
    Framing,
    /// The source may not send requests here (after the 403, if any).
    Forbidden,
    /// The source exceeded its rate.
    RateLimited,
    /// A response whose top Via is not ours, or one addressed to us.
    NotOurs,
}

impl DropReason {
    /// All reasons, for reporting.
    pub const ALL: [DropReason; 9] = [
        DropReason::Empty,
        DropReason::TooLarge,
        DropReason::Unparseable,
        DropReason::MalformedResponse,
        DropReason::MalformedAck,
        DropReason::Framing,
        DropReason::Forbidden,
        DropReason::RateLimited,
        DropReason::NotOurs,
    ];

    /// A short stable name (for counters and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Empty => "empty",
            DropReason::TooLarge => "too_large",
            DropReason::Unparseable => "unparseable",
            DropReason::MalformedResponse => "malformed_response",
            DropReason::MalformedAck => "malformed_ack",
            DropReason::Framing => "framing",
            DropReason::Forbidden => "forbidden",
            DropReason::RateLimited => "rate_limited",
            DropReason::NotOurs => "not_ours",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl From<FramingError> for DropReason {
    fn from(e: FramingError) -> DropReason {
        match e {
            FramingError::TooLarge { .. } => DropReason::TooLarge,
            _ => DropReason::Framing,
        }
    }
}

/// Counters of dropped messages by reason, and of 400-class answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropStats {
    counts: [u64; 9],
    /// Malformed requests answered with 400/505/513.
    pub answered: u64,
}

impl DropStats {
    /// Counts one drop.
    pub fn record(&mut self, reason: DropReason) {
        if let Some(c) = self.counts.get_mut(reason.index()) {
            *c += 1;
        }
    }

    /// Drops counted for this reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts.get(reason.index()).copied().unwrap_or(0)
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What to do with received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A valid message.
    Message(Box<Message>),
    /// A malformed request: send this answer back to the source, then forget it.
    Reject {
        /// The 400 / 505 / 513 answer.
        response: Box<Message>,
        /// What was wrong.
        error: ParseError,
    },
    /// Drop and count.
    Drop(DropReason),
    /// RFC 5626 ping: answer [`framing::PONG`].
    Ping,
    /// RFC 5626 pong.
    Pong,
}

/// Classifies one datagram (or one framed stream message) of at most `max` bytes.
pub fn classify(bytes: &[u8], max: usize) -> Inbound {
    if bytes.len() > max {
        return Inbound::Drop(DropReason::TooLarge);
    }
    if bytes.iter().all(|&b| b == b'\r' || b == b'\n') {
        // Keep-alives only; an empty datagram is a pong too (nothing to answer).
        return match framing::datagram(bytes, max) {
            Ok(Frame::Ping) => Inbound::Ping,
            _ => Inbound::Pong,
        };
    }
    classify_message(bytes)
}

/// Classifies bytes already known to be one message (no keep-alive check).
pub fn classify_message(bytes: &[u8]) -> Inbound {
    match Message::parse(bytes) {
        Ok(m) => Inbound::Message(Box::new(m)),
        Err(ParseError::Empty) => Inbound::Drop(DropReason::Empty),
        Err(error) => reject(bytes, error),
    }
}

fn reject(bytes: &[u8], error: ParseError) -> Inbound {
    let Ok(skeleton) = Message::parse_structure(bytes) else {
        return Inbound::Drop(DropReason::Unparseable);
    };
    if skeleton.is_response() {
        return Inbound::Drop(DropReason::MalformedResponse);
    }
    if skeleton.method() == Some(&Method::Ack) {
        return Inbound::Drop(DropReason::MalformedAck);
    }
    // The answer goes back to the source address (as with rport); it needs
    // at least a Via line to copy so that the sender can match it.
    if skeleton.header("Via").is_none() {
        return Inbound::Drop(DropReason::Unparseable);
    }
    match Message::response_for(&skeleton, error.status_code(), error.reason_phrase()) {
        Ok(response) => Inbound::Reject {
            response: Box::new(response),
            error,
        },
        Err(_) => Inbound::Drop(DropReason::Unparseable),
    }
}

/// The reference pipeline "bytes from the network → parse → proxy
/// primitives → serialize", used by the fuzz target, the proptest and the
/// benchmark: a request is preprocessed, record-routed on both legs, given
/// a Path when it is a REGISTER and forwarded by `out`; a response is routed
/// back by its Via. Returns the bytes that would be sent, if any.
pub fn proxy_pipeline(
    identity: &ProxyIdentity,
    inbound: &Leg,
    out: &Leg,
    source: SocketAddr,
    bytes: &[u8],
    stats: &mut DropStats,
) -> Option<Vec<u8>> {
    let msg = match classify(bytes, framing::DEFAULT_MAX_MESSAGE) {
        Inbound::Message(m) => *m,
        Inbound::Reject { response, .. } => {
            stats.answered += 1;
            return Some(response.to_bytes());
        }
        Inbound::Drop(r) => {
            stats.record(r);
            return None;
        }
        Inbound::Ping => return Some(framing::PONG.to_vec()),
        Inbound::Pong => return None,
    };
    if msg.is_response() {
        let mut resp = msg;
        return match identity.route_response(&mut resp) {
            Ok(_) => Some(resp.to_bytes()),
            Err(_) => {
                stats.record(DropReason::NotOurs);
                None
            }
        };
    }
    let mut req = msg.clone();
    let answer = |e: ProxyError, stats: &mut DropStats| {
        let (code, reason) = e.status();
        stats.answered += 1;
        let mut r = Message::response_for(&msg, code, reason).ok()?;
        if let ProxyError::BadExtension(tags) = &e {
            r.add_header("Unsupported", tags).ok()?;
        }
        Some(r.to_bytes())
    };
    if let Err(e) = identity.preprocess(&mut req, source, &[]) {
        return answer(e, stats);
    }
    if req.method() == Some(&Method::Register) {
        if let Err(e) = identity.add_path(&mut req, out, "") {
            return answer(e, stats);
        }
    } else if let Err(e) = identity.record_route(&mut req, inbound, out, "") {
        return answer(e, stats);
    }
    match identity.forward(&mut req, &msg, out, 0) {
        Ok(_) => Some(req.to_bytes()),
        Err(e) => answer(e, stats),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_or_drops() {
        let bad = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
        match classify(bad, 65_000) {
            Inbound::Reject { response, error } => {
                assert_eq!(error, ParseError::MissingHeader("Call-ID"));
                assert_eq!(response.status(), Some(400));
                assert_eq!(response.reason(), Some("Bad Request (Missing Call-ID)"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(b"garbage", 100),
            Inbound::Drop(DropReason::Unparseable)
        );
        assert_eq!(classify(b"\r\n\r\n", 100), Inbound::Ping);
        assert_eq!(
            classify(&[b'x'; 200], 100),
            Inbound::Drop(DropReason::TooLarge)
        );
        let bad_resp = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        assert_eq!(
            classify(bad_resp, 1000),
            Inbound::Drop(DropReason::MalformedResponse)
        );
        let v7 = b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n";
        match classify(v7, 1000) {
            Inbound::Reject { response, .. } => assert_eq!(response.status(), Some(505)),
            other => panic!("{other:?}"),
        }
        let mut s = DropStats::default();
        s.record(DropReason::RateLimited);
        s.record(DropReason::RateLimited);
        assert_eq!(s.get(DropReason::RateLimited), 2);
        assert_eq!(s.total(), 2);
    }
}
