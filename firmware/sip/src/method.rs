//! SIP request methods, including unknown (extension) methods.

use std::fmt;

/// A SIP method. Unknown methods are kept verbatim in [`Method::Extension`]
/// so that a proxy can forward them untouched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// INVITE
    Invite,
    /// ACK
    Ack,
    /// BYE
    Bye,
    /// CANCEL
    Cancel,
    /// REGISTER
    Register,
    /// OPTIONS
    Options,
    /// SUBSCRIBE
    Subscribe,
    /// NOTIFY
    Notify,
    /// MESSAGE
    Message,
    /// PUBLISH
    Publish,
    /// REFER
    Refer,
    /// INFO
    Info,
    /// UPDATE
    Update,
    /// PRACK
    Prack,
    /// Any other token (method names are case-sensitive).
    Extension(Box<str>),
}

impl Method {
    /// Parses a method token (case-sensitive, as RFC 3261 §7.1 says).
    /// Returns `None` when `s` is not a valid token.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            "REFER" => Method::Refer,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            other => {
                if other.is_empty() || !other.bytes().all(crate::parse::is_token_byte) {
                    return None;
                }
                Method::Extension(other.into())
            }
        })
    }

    /// The method's token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Refer => "REFER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
