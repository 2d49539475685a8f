//! Uplink state machine, BLF/MWI take-over bodies and paced resync; sans-IO.
//!
//! Nothing here touches a socket, a clock or the OS's randomness: every entry
//! point takes the current time ([`Millis`]) and, where jitter is needed, an
//! [`Rng`] the driver seeded.

pub mod blf;
pub mod bodies;
pub mod registrar;
pub mod resync;
pub mod rng;
pub mod route;
pub mod subscription;
pub mod time;
pub mod uplink;

pub use rng::Rng;
pub use time::Millis;
