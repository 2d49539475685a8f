//! `holdline-fleet`: fleet status and staged rollout over the appliances'
//! management API (`holdline_update::api`).
//!
//! - [`inventory`]: the inventory file (name, address, group, token).
//! - [`client`]: the HTTP client for one appliance.
//! - [`rollout`]: wave planning, the health gate, halt/resume/abort state.

pub mod client;
pub mod inventory;
pub mod rollout;
