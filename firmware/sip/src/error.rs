//! Error enums of the message layer.

use thiserror::Error;

/// Why bytes from the network are not a usable SIP message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// Nothing but white space.
    #[error("empty message")]
    Empty,
    /// Larger than the configured maximum.
    #[error("message too large: {size} bytes, limit {max}")]
    TooLarge {
        /// Bytes seen.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The blank line that ends the headers is missing.
    #[error("incomplete message: no end of headers")]
    Incomplete,
    /// The request or status line is malformed.
    #[error("malformed start line")]
    BadStartLine,
    /// A SIP version other than SIP/2.0 (answer 505).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A header line without a valid name and colon, a bare CR or a NUL byte.
    #[error("malformed header line {line}")]
    BadHeaderLine {
        /// 1-based line number (start line is line 1).
        line: usize,
    },
    /// Content-Length not a number, or several that disagree.
    #[error("bad Content-Length")]
    BadContentLength,
    /// The datagram ends before Content-Length bytes of body.
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    /// A mandatory header is missing.
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    /// A header that must appear once appears several times.
    #[error("more than one {0} header")]
    DuplicateHeader(&'static str),
    /// A header this crate must read is malformed.
    #[error("malformed {0} header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
}

impl ParseError {
    /// Reason phrase for the 400 (or 505) response answering this error.
    pub fn reason_phrase(&self) -> &'static str {
        match self {
            ParseError::Empty => "Bad Request (Empty)",
            ParseError::TooLarge { .. } => "Message Too Large",
            ParseError::Incomplete => "Bad Request (Incomplete)",
            ParseError::BadStartLine => "Bad Request (Malformed Request-Line)",
            ParseError::UnsupportedVersion => "Version Not Supported",
            ParseError::BadHeaderLine { .. } => "Bad Request (Malformed Header Line)",
            ParseError::BadContentLength => "Bad Request (Bad Content-Length)",
            ParseError::BodyTruncated => "Bad Request (Body Shorter Than Content-Length)",
            ParseError::MissingHeader(h) => match *h {
                "Via" => "Bad Request (Missing Via)",
                "From" => "Bad Request (Missing From)",
                "To" => "Bad Request (Missing To)",
                "Call-ID" => "Bad Request (Missing Call-ID)",
                "CSeq" => "Bad Request (Missing CSeq)",
                _ => "Bad Request (Missing Header)",
            },
            ParseError::DuplicateHeader(_) => "Bad Request (Duplicate Header)",
            ParseError::BadHeader(h) => match *h {
                "Via" => "Bad Request (Malformed Via)",
                "From" => "Bad Request (Malformed From)",
                "To" => "Bad Request (Malformed To)",
                "Call-ID" => "Bad Request (Malformed Call-ID)",
                "CSeq" => "Bad Request (Malformed CSeq)",
                "Max-Forwards" => "Bad Request (Malformed Max-Forwards)",
                "Expires" => "Bad Request (Malformed Expires)",
                "Contact" => "Bad Request (Malformed Contact)",
                "Request-URI" => "Bad Request (Malformed Request-URI)",
                _ => "Bad Request (Malformed Header)",
            },
            ParseError::CSeqMismatch => "Bad Request (CSeq Method Mismatch)",
        }
    }

    /// Status code that answers this error: 505 for a bad version,
    /// 513 for an oversized message, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::UnsupportedVersion => 505,
            ParseError::TooLarge { .. } => 513,
            _ => 400,
        }
    }
}

/// Why an edit of a message was refused. The message is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EditError {
    /// The value contains CR, LF or NUL (header injection).
    #[error("value contains CR, LF or NUL")]
    Injection,
    /// The header name is not a valid token.
    #[error("invalid header name")]
    BadName,
    /// The value does not parse as what the edit needs.
    #[error("invalid value for {0}")]
    BadValue(&'static str),
    /// The edit applies to requests only (or responses only).
    #[error("edit not applicable to this kind of message")]
    WrongKind,
    /// Max-Forwards is zero: the request must not be forwarded (483).
    #[error("Max-Forwards exhausted")]
    TooManyHops,
}
