//! One console line → one [`Command`].
//!
//! The same language serves the Unix socket (`holdline console`) and the
//! serial port. Parsing never fails: anything not understood becomes
//! [`Command::Unknown`] carrying the original line, so the caller can answer
//! with a clear error. Words are separated by whitespace and matched
//! case-insensitively; arguments (an AoR, a count) keep their case.
//!
//! A trailing or leading `--json` word asks for machine-readable output; it
//! is returned separately by [`parse_line`] so every command supports it.

/// What to do with the cloud uplink state machine (`cloud force-down` etc.).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudMode {
    /// Treat the cloud as down regardless of probes.
    ForceDown,
    /// Treat the cloud as up regardless of probes.
    ForceUp,
    /// Back to the probe-driven state machine.
    Auto,
}

/// Every console command. Variants exist for the whole command set even
/// where a build cannot run them yet; such a build answers "not available
/// in this build" rather than inventing a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`: the command list.
    Help,
    /// `status`: one screen summary of the appliance.
    Status,
    /// `version`: firmware version and build.
    Version,
    /// `show registrations [AOR]`: the binding cache, optionally one AoR.
    ShowRegistrations { aor: Option<String> },
    /// `show calls`: tracked INVITE dialogs and their RFC 4235 state.
    ShowCalls,
    /// `show subscriptions`: tracked SUBSCRIBE dialogs.
    ShowSubscriptions,
    /// `show cloud`: uplink state, probe round-trip time.
    ShowCloud,
    /// `show health`: critical tasks and watchdog feeding.
    ShowHealth,
    /// `show leds`: status LED states.
    ShowLeds,
    /// `show log [N]`: the last N events (default 20).
    ShowLog { count: Option<usize> },
    /// `show store`: store statistics.
    ShowStore,
    /// `store check`: run the store's integrity check now.
    StoreCheck,
    /// `store quarantine`: list quarantined records.
    StoreQuarantine,
    /// `show resync`: progress of the post-outage resync.
    ShowResync,
    /// `resync now`: start the resync without waiting for hold-down.
    ResyncNow,
    /// `cloud force-down|force-up|auto`.
    Cloud(CloudMode),
    /// `reboot`.
    Reboot,
    /// `factory-reset`.
    FactoryReset,
    /// `update status`: A/B slots and the running image.
    UpdateStatus,
    /// Anything else; carries the line as typed (trimmed).
    Unknown(String),
}

/// Help lines: command syntax and a short description (each fits 80 columns).
pub const HELP: &[(&str, &str)] = &[
    ("help", "this list"),
    ("status", "appliance summary"),
    ("version", "firmware version"),
    (
        "show registrations [AOR]",
        "binding cache (one AoR if given)",
    ),
    ("show calls", "calls crossing the appliance and their state"),
    ("show subscriptions", "BLF/MWI/presence subscriptions"),
    ("show cloud", "uplink state and probe round-trip time"),
    ("show health", "critical tasks and watchdog"),
    ("show leds", "status LEDs"),
    ("show log [N]", "last N events"),
    ("show store", "store statistics"),
    ("store check", "run the store integrity check"),
    ("store quarantine", "quarantined records"),
    ("show resync", "resync progress after an outage"),
    ("resync now", "start the resync now"),
    (
        "cloud force-down|force-up|auto",
        "override the uplink state",
    ),
    ("reboot", "restart the appliance"),
    ("factory-reset", "erase config and store, restart"),
    ("update status", "firmware slots"),
    ("(any command) --json", "machine-readable answer"),
];

/// A parsed line: the command and whether JSON output was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The command.
    pub command: Command,
    /// `--json` was present.
    pub json: bool,
}

/// Parses one console line. Returns `None` for an empty (or blank) line.
pub fn parse_line(line: &str) -> Option<Parsed> {
    let mut json = false;
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| {
            if w.eq_ignore_ascii_case("--json") {
                json = true;
                false
            } else {
                true
            }
        })
        .collect();
    if words.is_empty() {
        return if json {
            Some(Parsed {
                command: Command::Unknown(line.trim().to_string()),
                json,
            })
        } else {
            None
        };
    }
    Some(Parsed {
        command: parse_words(&words),
        json,
    })
}

impl Command {
    /// Parses a line, ignoring any `--json` word. Blank → `Unknown("")`.
    pub fn parse(line: &str) -> Command {
        match parse_line(line) {
            Some(p) => p.command,
            None => Command::Unknown(String::new()),
        }
    }

    /// The canonical spelling of the command (for logs and errors).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help => "help",
            Command::Status => "status",
            Command::Version => "version",
            Command::ShowRegistrations { .. } => "show registrations",
            Command::ShowCalls => "show calls",
            Command::ShowSubscriptions => "show subscriptions",
            Command::ShowCloud => "show cloud",
            Command::ShowHealth => "show health",
            Command::ShowLeds => "show leds",
            Command::ShowLog { .. } => "show log",
            Command::ShowStore => "show store",
            Command::StoreCheck => "store check",
            Command::StoreQuarantine => "store quarantine",
            Command::ShowResync => "show resync",
            Command::ResyncNow => "resync now",
            Command::Cloud(CloudMode::ForceDown) => "cloud force-down",
            Command::Cloud(CloudMode::ForceUp) => "cloud force-up",
            Command::Cloud(CloudMode::Auto) => "cloud auto",
            Command::Reboot => "reboot",
            Command::FactoryReset => "factory-reset",
            Command::UpdateStatus => "update status",
            Command::Unknown(_) => "unknown",
        }
    }
}

fn parse_words(words: &[&str]) -> Command {
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let unknown = || Command::Unknown(words.join(" "));
    match l.as_slice() {
        ["help"] | ["?"] => Command::Help,
        ["status"] => Command::Status,
        ["version"] => Command::Version,
        ["show", "registrations"] => Command::ShowRegistrations { aor: None },
        ["show", "registrations", _] => Command::ShowRegistrations {
            aor: words.get(2).map(|s| s.to_string()),
        },
        ["show", "calls"] => Command::ShowCalls,
        ["show", "subscriptions"] => Command::ShowSubscriptions,
        ["show", "cloud"] => Command::ShowCloud,
        ["show", "health"] => Command::ShowHealth,
        ["show", "leds"] => Command::ShowLeds,
        ["show", "log"] => Command::ShowLog { count: None },
        ["show", "log", n] => match n.parse::<usize>() {
            Ok(count) => Command::ShowLog { count: Some(count) },
            Err(_) => unknown(),
        },
        ["show", "store"] => Command::ShowStore,
        ["store", "check"] => Command::StoreCheck,
        ["store", "quarantine"] => Command::StoreQuarantine,
        ["show", "resync"] => Command::ShowResync,
        ["resync", "now"] => Command::ResyncNow,
        ["cloud", "force-down"] => Command::Cloud(CloudMode::ForceDown),
        ["cloud", "force-up"] => Command::Cloud(CloudMode::ForceUp),
        ["cloud", "auto"] => Command::Cloud(CloudMode::Auto),
        ["reboot"] => Command::Reboot,
        ["factory-reset"] => Command::FactoryReset,
        ["update", "status"] => Command::UpdateStatus,
        _ => unknown(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_basic_set() {
        assert_eq!(Command::parse("help"), Command::Help);
        assert_eq!(Command::parse("  STATUS "), Command::Status);
        assert_eq!(Command::parse("version"), Command::Version);
        assert_eq!(
            Command::parse("show registrations"),
            Command::ShowRegistrations { aor: None }
        );
        assert_eq!(
            Command::parse("show registrations sip:Alice@cloud.test"),
            Command::ShowRegistrations {
                aor: Some("sip:Alice@cloud.test".into())
            }
        );
        assert_eq!(Command::parse("show calls"), Command::ShowCalls);
        assert_eq!(
            Command::parse("show subscriptions"),
            Command::ShowSubscriptions
        );
        assert_eq!(Command::parse("show cloud"), Command::ShowCloud);
    }

    #[test]
    fn parses_later_commands() {
        assert_eq!(
            Command::parse("show log 5"),
            Command::ShowLog { count: Some(5) }
        );
        assert_eq!(Command::parse("show log"), Command::ShowLog { count: None });
        assert_eq!(
            Command::parse("cloud force-down"),
            Command::Cloud(CloudMode::ForceDown)
        );
        assert_eq!(Command::parse("update status"), Command::UpdateStatus);
        assert_eq!(Command::parse("factory-reset"), Command::FactoryReset);
    }

    #[test]
    fn json_flag_anywhere() {
        let p = parse_line("show calls --json").expect("a command");
        assert!(p.json);
        assert_eq!(p.command, Command::ShowCalls);
        let p = parse_line("--json status").expect("a command");
        assert!(p.json);
        assert_eq!(p.command, Command::Status);
    }

    #[test]
    fn unknown_keeps_the_text() {
        assert_eq!(
            Command::parse("show me the money"),
            Command::Unknown("show me the money".into())
        );
        assert_eq!(
            Command::parse("show log x"),
            Command::Unknown("show log x".into())
        );
        assert_eq!(
            Command::parse("show registrations a b"),
            Command::Unknown("show registrations a b".into())
        );
        assert!(parse_line("   ").is_none());
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\u{0}",
            "ßhow calls",
            "show\tcalls",
            "🙂",
            "show   registrations   \u{7f}",
        ] {
            let _ = Command::parse(s);
        }
        assert_eq!(Command::parse("show\tcalls"), Command::ShowCalls);
    }

    #[test]
    fn help_lines_fit_80_columns() {
        for (syntax, what) in HELP {
            assert!(syntax.len() + what.len() + 4 <= 80);
        }
    }
}
