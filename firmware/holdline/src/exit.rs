//! Exit codes: a contract with supervisors (systemd, the watchdog daemon,
//! the update agent's boot confirmation) and with tests. A supervisor can
//! tell a bad config (do not restart in a loop; fall back) from a crash.
//!
//! | code | meaning |
//! |---:|---|
//! | 0  | ok: clean shutdown (SIGTERM/SIGINT), or a console command that succeeded |
//! | 1  | a console command ran and failed (unknown command, error answer) |
//! | 2  | usage: bad command line (clap's own exit code) |
//! | 3  | bad config: unreadable file, TOML error, unknown key, bad value |
//! | 4  | store fatal: the SQLite store could not be opened even after setting it aside |
//! | 5  | cannot listen: a configured address could not be bound |
//! | 6  | not reachable: `holdline console`/`health` could not reach the daemon's socket |
//! | 7  | board: the `[board] profile` is unknown or invalid, or a device it names cannot be opened |
//! | 8  | restart requested: the update agent judged a trial boot failed, or a console `reboot`/`factory-reset` on the simulated board; the supervisor starts holdline again |
//! | 70 | internal error (EX_SOFTWARE): a bug; supervisors restart |
//! | 75 | watchdog reset (EX_TEMPFAIL): a critical task stopped checking in and the (simulated) watchdog fired |

/// The process exit codes of `holdline`. See the module docs for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Clean shutdown or successful command.
    Ok = 0,
    /// A console command failed.
    CommandFailed = 1,
    /// Bad command line.
    Usage = 2,
    /// Bad configuration.
    BadConfig = 3,
    /// The store could not be opened.
    StoreFatal = 4,
    /// A listen address could not be bound.
    CannotListen = 5,
    /// The daemon's console socket could not be reached.
    NotReachable = 6,
    /// The board profile or one of its devices failed.
    Board = 7,
    /// The update agent asked for a restart.
    Restart = 8,
    /// Internal error.
    Internal = 70,
    /// A critical task hung; the watchdog fired.
    WatchdogReset = 75,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::CommandFailed.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::BadConfig.code(), 3);
        assert_eq!(Exit::StoreFatal.code(), 4);
        assert_eq!(Exit::CannotListen.code(), 5);
        assert_eq!(Exit::NotReachable.code(), 6);
        assert_eq!(Exit::Board.code(), 7);
        assert_eq!(Exit::Restart.code(), 8);
        assert_eq!(Exit::Internal.code(), 70);
        assert_eq!(Exit::WatchdogReset.code(), 75);
    }
}
