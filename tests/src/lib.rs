//! Test rig: real Kamailio as the cloud, SIPp as phones, the built holdline binary.
//!
//! - [`net`]: a loopback block per test (`127.A.B.0/24`) so parallel tests
//!   never collide; port checks; a raw SIP OPTIONS ping.
//! - [`proc`]: child processes in their own process group, output captured
//!   to files, stopped on `Drop`, logs printed when the test panics; CPU and
//!   RSS readings from `/proc` for benchmarks.
//! - [`holdline`]: the built holdline binary with a fixture config (daemon helper's).
//! - [`kamailio`]: Kamailio as the hosted PBX (`cloud.test`: digest auth,
//!   usrloc in memory with Path, presence for dialog and message-summary,
//!   requests from `trusted` addresses such as a trunk not challenged) or as
//!   a plain stateful edge proxy; location table (JSON-RPC, any size) and
//!   subscriptions read back; `crash`/`start_again`/`restart` (empty table),
//!   `freeze`/`thaw` (silent cloud); `kamcmd` and `rpc` for anything else.
//! - [`sipp`]: SIPp scenarios (under `tests/sipp/`) as phones: register,
//!   register-and-refresh, call (UAC, with or without a challenge), answer
//!   (UAS), BLF/MWI watchers (re-subscribe on `deactivated`), MWI publisher,
//!   a deactivating notifier; exit code, statistics and the messages parsed
//!   into a [`sipp::SippResult`] (NOTIFYs with dialog states and versions).
//!
//! Benchmarks (run by hand, print markdown tables): `src/bin/edge_bench.rs`
//! (holdline vs a Kamailio edge), `src/bin/detect_bench.rs` (failure
//! detection time), `src/bin/restart_bench.rs` (cloud restart without holdline).
//! `RIG_KEEP=1` keeps every run directory; `RIG_KAMAILIO_DEBUG=3` makes
//! Kamailio verbose.
//!
//! A typical test:
//! ```no_run
//! use std::time::Duration;
//! use holdline_tests::{kamailio::{Kamailio, KamailioOpts, User}, net::Block, sipp::{Scenario, Sipp}};
//! let block = Block::allocate();
//! let users = User::numbered(1000, 20);
//! let cloud = Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
//! let res = Sipp::new(Scenario::Register)
//!     .local(block.phone(0), 5062)
//!     .remote(cloud.addr().into())
//!     .users(&users)
//!     .run()
//!     .expect("sipp runs");
//! assert_eq!(res.successful, 20, "{res}");
//! ```
//!
//! The Debian packages it needs are installed by `tests/install-deps.sh`.

pub mod holdline;
pub mod kamailio;
pub mod net;
pub mod proc;
pub mod sipp;

use std::io;

/// What can go wrong while driving the rig.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What the rig was doing.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A peer did not come up.
    #[error("{what} did not start: {detail}")]
    Startup {
        /// Which peer.
        what: String,
        /// Why, with the end of its log.
        detail: String,
    },
    /// A helper command (kamcmd, sqlite3) failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its output.
        detail: String,
    },
    /// Output of a peer could not be understood.
    #[error("cannot parse {0}")]
    Parse(String),
    /// A tool the rig needs is not installed.
    #[error("{0} not found in PATH: run tests/install-deps.sh (Debian packages kamailio, sip-tester, sqlite3)")]
    Missing(String),
}

impl RigError {
    pub(crate) fn io(what: &str, source: io::Error) -> RigError {
        RigError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// Full path of `tool` on `PATH` (plus `/usr/sbin`, where Debian puts
/// kamailio and kamcmd, not always on a user's `PATH`).
pub fn which(tool: &str) -> Result<std::path::PathBuf, RigError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or_else(|| RigError::Missing(tool.to_string()))
}
