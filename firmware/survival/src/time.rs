//! Virtual time: a monotonic millisecond count chosen by the caller.
//!
//! The survival logic never reads a clock. The driver (the proxy core) picks an
//! epoch (e.g. the `Instant` at start) and passes `Millis` since that epoch;
//! the simulation passes virtual time.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, Instant};

/// A point in time, in milliseconds since an epoch chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The epoch.
    pub const ZERO: Millis = Millis(0);

    /// For a driver on `std::time::Instant`: `now` as milliseconds since the
    /// driver's `epoch` (an `Instant` taken once at start). Reads no clock.
    pub fn from_instant(epoch: Instant, now: Instant) -> Millis {
        Millis(ms(now.saturating_duration_since(epoch)))
    }

    /// Back to an `Instant` (to arm the driver's timer for a `poll_timeout`).
    pub fn to_instant(self, epoch: Instant) -> Instant {
        epoch + Duration::from_millis(self.0)
    }

    /// Milliseconds since the epoch.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Whole seconds from `self` until `later`, rounded up, zero if `later` has passed.
    pub fn secs_until_ceil(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0).div_ceil(1000)
    }
}

/// Milliseconds in a duration, saturating at `u64::MAX`.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Millis {
    type Output = Millis;
    fn add(self, rhs: Duration) -> Millis {
        Millis(self.0.saturating_add(ms(rhs)))
    }
}

impl Sub<Duration> for Millis {
    type Output = Millis;
    fn sub(self, rhs: Duration) -> Millis {
        Millis(self.0.saturating_sub(ms(rhs)))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Millis(5) - Duration::from_millis(10), Millis(0));
        assert_eq!(Millis(u64::MAX) + Duration::from_secs(1), Millis(u64::MAX));
        assert_eq!(Millis(1500).since(Millis(2000)), Duration::ZERO);
        assert_eq!(Millis(1000).secs_until_ceil(Millis(2001)), 2);
        assert_eq!(Millis(3000).secs_until_ceil(Millis(2001)), 0);
        assert_eq!(Millis(61_250).to_string(), "61.250s");
        let epoch = Instant::now();
        let later = epoch + Duration::from_millis(1_234);
        assert_eq!(Millis::from_instant(epoch, later), Millis(1_234));
        assert_eq!(Millis::from_instant(later, epoch), Millis(0));
        assert_eq!(Millis(1_234).to_instant(epoch), later);
    }
}
