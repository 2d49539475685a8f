//! SIP messages, framing, RFC 3261 transactions and stateful-proxy primitives; sans-IO.
