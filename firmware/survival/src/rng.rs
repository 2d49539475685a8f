//! A small seeded pseudo-random generator (SplitMix64).
//!
//! The survival logic draws jitter from an `Rng` the driver passes in. The
//! daemon seeds it once at start from whatever entropy it has; tests and the
//! simulation seed it with a number so that every run can be replayed. Not for
//! cryptography (tags and branches that must be unguessable come from the SIP layer).

/// SplitMix64: tiny, fast, good enough for jitter and simulation faults.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator that always yields the same sequence for the same seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (returns `lo` when `hi <= lo`).
    pub fn range_inclusive(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift reduction: unbiased enough for jitter and simulation.
        let r = u128::from(self.next_u64()) * u128::from(span + 1);
        lo + u64::try_from(r >> 64).unwrap_or(0)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        den != 0 && self.range_inclusive(0, den - 1) < num
    }

    /// A random lowercase hex token of `len` characters (tags in simulations).
    pub fn hex(&mut self, len: usize) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(HEX[usize::try_from(self.next_u64() & 15).unwrap_or(0)]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_ranges_hold() {
        let mut a = Rng::seeded(42);
        let mut b = Rng::seeded(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::seeded(7);
        let mut seen_lo = false;
        let mut seen_hi = false;
        for _ in 0..10_000 {
            let v = r.range_inclusive(60, 120);
            assert!((60..=120).contains(&v));
            seen_lo |= v == 60;
            seen_hi |= v == 120;
        }
        assert!(seen_lo && seen_hi);
        assert_eq!(r.range_inclusive(5, 5), 5);
        assert_eq!(r.range_inclusive(9, 3), 9);
        assert!(!r.chance(0, 10));
        assert!(r.chance(10, 10));
        assert!(!r.chance(1, 0));
        assert_eq!(r.hex(8).len(), 8);
    }
}
