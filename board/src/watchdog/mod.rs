//! The hardware watchdog: a trait, the Linux `/dev/watchdog` driver and a
//! simulated one that really ends the process when it is not fed.

pub mod linux;
pub mod sim;

use std::time::Duration;

use crate::error::Result;

/// Why the machine (or, simulated, the process) last started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootStatus {
    /// Power-on or an ordinary reboot: the watchdog did not fire.
    PowerOn,
    /// The watchdog reset the machine (`WDIOF_CARDRESET`).
    WatchdogReset,
    /// The driver reported other flags (overheat, power-under, ...), raw.
    Other(u32),
    /// The driver cannot tell.
    Unknown,
}

impl BootStatus {
    /// From the kernel's `WDIOC_GETBOOTSTATUS` / sysfs `bootstatus` flags.
    pub fn from_flags(flags: u32) -> Self {
        if flags & linux::WDIOF_CARDRESET != 0 {
            BootStatus::WatchdogReset
        } else if flags == 0 {
            BootStatus::PowerOn
        } else {
            BootStatus::Other(flags)
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            BootStatus::PowerOn => "power-on",
            BootStatus::WatchdogReset => "watchdog reset",
            BootStatus::Other(_) => "other",
            BootStatus::Unknown => "unknown",
        }
    }
}

/// A watchdog timer. Once started it must be fed (`keepalive`) more often
/// than its timeout, or the machine is reset. Only a deliberate shutdown
/// calls [`Watchdog::stop`]; dropping a started watchdog leaves it armed, so
/// a crashed daemon still ends in a reset.
pub trait Watchdog: Send {
    /// Arms the watchdog with `timeout` (rounded up to whole seconds) and
    /// returns the timeout the device actually took (drivers clamp it, e.g.
    /// the Raspberry Pi's bcm2835 allows at most 15 s).
    fn start(&mut self, timeout: Duration) -> Result<Duration>;
    /// Feeds the watchdog.
    fn keepalive(&mut self) -> Result<()>;
    /// Deliberate shutdown: disarms with the magic close (`'V'`).
    fn stop(&mut self) -> Result<()>;
    /// Why this boot happened.
    fn boot_status(&mut self) -> Result<BootStatus>;
    /// A short description for `show health` (driver identity, device path).
    fn describe(&self) -> String;
}

/// Whole seconds, rounded up, at least 1 (the kernel API counts seconds).
pub(crate) fn timeout_secs(timeout: Duration) -> i32 {
    let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_status_from_kernel_flags() {
        assert_eq!(BootStatus::from_flags(0), BootStatus::PowerOn);
        assert_eq!(BootStatus::from_flags(0x20), BootStatus::WatchdogReset);
        assert_eq!(BootStatus::from_flags(0x21), BootStatus::WatchdogReset);
        assert_eq!(BootStatus::from_flags(0x10), BootStatus::Other(0x10));
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(timeout_secs(Duration::from_millis(1)), 1);
        assert_eq!(timeout_secs(Duration::from_millis(1500)), 2);
        assert_eq!(timeout_secs(Duration::from_secs(30)), 30);
        assert_eq!(timeout_secs(Duration::ZERO), 1);
    }
}
