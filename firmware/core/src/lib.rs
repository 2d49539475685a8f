//! The appliance's edge-proxy brain: routing between LAN phones and the WAN
//! cloud; sans-IO (no sockets, no tokio, no clock of its own).
//!
//! The daemon feeds [`Edge`] with what arrives and with the time:
//! [`Edge::handle_message`], [`Edge::handle_timeout`],
//! [`Edge::handle_store_done`]; and drains what it must do:
//! [`Edge::poll_transmit`] (send a message), [`Edge::poll_store`] (write to
//! the store; a token means a response waits for durability),
//! [`Edge::poll_timeout`] (when to call back).
//!
//! Modules: [`edge`] (the proxy policy), [`bindings`] (the binding cache),
//! [`calls`] (INVITE dialogs, RFC 4235 states), [`subs`] (SUBSCRIBE
//! dialogs, MWI cache), [`uplink`] (the OPTIONS probe driving
//! holdline-survival's uplink monitor), [`types`]. Survival (issue 4: local
//! registrar, local routing and fail-fast, BLF/MWI take-over, verified paced
//! resync) is `edge/survive.rs`, configured with [`Edge::set_survival`].

pub mod bindings;
pub mod calls;
pub mod edge;
pub mod subs;
pub mod types;
pub mod uplink;

pub use bindings::{Binding, Bindings, Provenance};
pub use calls::{Call, CallState, Calls, Direction};
pub use edge::{
    BindingKey, Edge, EdgeConfig, Stats, StoreJob, StoreWrite, SurvivalConfig, SurvivalStats,
};
pub use subs::{Mwi, SubState, Subs, Subscription};
pub use types::{Peer, Side, Subnet, Transmit, Transport};
pub use uplink::{state_name, Probe, ProbeConfig, Uplink};
