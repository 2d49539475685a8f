//! SIP messages, framing, RFC 3261 transactions and stateful-proxy primitives; sans-IO.
//!
//! # Message layer
//!
//! [`Message`] is lossless: every header line that an edit does not touch is
//! written back byte for byte (unknown headers and parameters, several values
//! on one line, compact names, folding, IPv6 hosts, quoted Contact parameters
//! such as `+sip.instance`, `tel:`/`urn:` URIs, unknown methods).
//!
//! * Parse / write: [`Message::parse`], [`Message::to_bytes`], [`Message::write_to`].
//! * Kind: [`Message::is_request`], [`Message::method`], [`Message::request_uri`],
//!   [`Message::status`], [`Message::reason`].
//! * Typed reads (borrowed views, see [`values`]): [`Message::vias`],
//!   [`Message::top_via`], [`Message::call_id`], [`Message::cseq`],
//!   [`Message::from`], [`Message::to`], [`Message::contacts`],
//!   [`Message::expires`], [`Message::max_forwards`], [`Message::routes`],
//!   [`Message::record_routes`], [`Message::paths`], [`Message::content_type`],
//!   [`Message::event`], [`Message::subscription_state`], [`Message::body`],
//!   [`Message::header`] / [`Message::header_values`] for anything else.
//! * Edits: [`Message::push_via`], [`Message::pop_via`],
//!   [`Message::set_top_via_received`], [`Message::prepend_record_route`],
//!   [`Message::prepend_path`], [`Message::pop_route`],
//!   [`Message::set_request_uri`], [`Message::decrement_max_forwards`],
//!   [`Message::add_header`], [`Message::remove_header`],
//!   [`Message::replace_header`], [`Message::set_body`]. Edits refuse CR/LF/NUL
//!   in values ([`EditError::Injection`]).
//! * Answers: [`Message::response_for`] (alias [`response_for`]).
//!
//! # Modules
//!
//! | module | owns |
//! |---|---|
//! | [`message`], [`values`], [`parse`], [`name`], [`method`], [`error`] | the lossless message model, borrowed typed views, `ParseError`/`EditError` |
//! | [`framing`] | datagram and stream (Content-Length) framing, max size, RFC 5626 CRLF ping/pong |
//! | [`inbound`] | bad input: [`inbound::classify`] → message, 400/505/513 answer, or counted [`inbound::DropReason`]; the reference pipeline used by fuzz/proptest/bench |
//! | [`transaction`] | RFC 3261 §17 client/server transactions, timers A–M, RFC 6026, RFC 2543 matching; sans-IO `handle_*`/`poll_*` |
//! | [`proxy`] | RFC 3261 §16 mechanics: branch + loop hash, received/rport, Max-Forwards, two-sided Record-Route, Route popping, Path, response routing by Via, best response |
//! | [`access`] | no-open-relay rule by source prefix and side, 403 helper, bounded per-source token bucket |
//!
//! Nothing here opens a socket, spawns a task or reads a clock: time is an
//! `Instant` argument, output is polled. Routing *policy* (which leg, which
//! domain) belongs to holdline-core.
//!
//! # Example
//!
//! ```
//! use holdline_sip::{Message, Method};
//!
//! let raw = b"REGISTER sip:cloud.test SIP/2.0\r\n\
//! v: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport, SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK0\r\n\
//! Max-Forwards: 70\r\n\
//! f: <sip:100@cloud.test>;tag=a1\r\n\
//! t: <sip:100@cloud.test>\r\n\
//! i: c1@10.0.0.5\r\n\
//! CSeq: 1 REGISTER\r\n\
//! m: <sip:100@10.0.0.5>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1\r\n\
//! X-Vendor: keep;me=\"as is\"\r\n\
//! l: 0\r\n\r\n";
//! let mut msg = Message::parse(raw).unwrap();
//! assert_eq!(msg.method(), Some(&Method::Register));
//! assert_eq!(msg.via_count(), 2);
//! assert_eq!(msg.top_via().unwrap().branch(), Some("z9hG4bK1"));
//! let contacts = msg.contacts().unwrap();
//! # let holdline_sip::Contacts::List(list) = contacts else { panic!() };
//! assert_eq!(list[0].reg_id(), Some(1));
//!
//! msg.push_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKproxy").unwrap();
//! msg.prepend_path("<sip:192.0.2.1;lr>").unwrap();
//! msg.decrement_max_forwards().unwrap();
//! let out = msg.to_bytes();
//! // Lines the proxy did not touch are unchanged.
//! assert!(out.windows(21).any(|w| w == b"X-Vendor: keep;me=\"as"));
//!
//! let ok = holdline_sip::response_for(&msg, 200, "OK").unwrap();
//! assert_eq!(ok.status(), Some(200));
//! assert!(ok.to_tag().is_some());
//! ```

pub mod access;
pub mod error;
pub mod framing;
pub mod inbound;
pub mod message;
pub mod method;
pub mod name;
pub mod parse;
pub mod proxy;
pub mod transaction;
pub mod values;

pub use error::{EditError, ParseError};
pub use message::{response_for, HeaderRef, Message, Request, Response};
pub use method::Method;
pub use name::HeaderName;
pub use values::{CSeq, Contacts, Event, NameAddr, SipUri, SubscriptionState, Uri, Via};
