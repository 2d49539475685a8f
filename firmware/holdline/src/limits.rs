//! Per-source rate limiting of requests on the LAN and WAN listeners
//! (issue 2 item 5: one misbehaving device must not starve the rest).
//!
//! One [`holdline_sip::access::RateLimiter`] (token bucket per source IP,
//! bounded table, time passed in) per side, plus a separate, much more
//! generous one for the cloud's own addresses on the WAN side. The sockets
//! (`net.rs`) ask [`Limits::admit`] for every message *before* it is queued
//! for parsing; an excess request is dropped there and counted, so a flood
//! neither reaches the parser nor fills the loop's queue.
//!
//! Only requests are limited: a response (first bytes `SIP/`) answers
//! something holdline itself sent, and dropping it would only cause
//! retransmissions. A rate of 0 turns limiting off for that class.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use holdline_core::Side;
use holdline_sip::access::RateLimiter;

use crate::config::Config;

/// Sources remembered per limiter (the table is bounded; the least recently
/// seen are forgotten first and start again with a full bucket).
pub const MAX_SOURCES: usize = 16_384;

/// Requests dropped by the LAN limiter since start (process-wide: one
/// daemon per process).
static LAN_LIMITED: AtomicU64 = AtomicU64::new(0);
/// Requests dropped by the WAN limiters since start.
static WAN_LIMITED: AtomicU64 = AtomicU64::new(0);

/// Rate and burst of one class of sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second sustained (0: unlimited).
    pub per_s: u32,
    /// Requests accepted at once after a quiet spell.
    pub burst: u32,
}

/// The limiters of both sides.
pub struct Limits {
    lan: Option<RateLimiter>,
    wan: Option<RateLimiter>,
    cloud: Option<RateLimiter>,
    cloud_addrs: Vec<IpAddr>,
}

fn limiter(r: Rate) -> Option<RateLimiter> {
    (r.per_s > 0).then(|| RateLimiter::new(r.per_s, r.burst.max(1), MAX_SOURCES))
}

/// True when `bytes` start like a SIP response (status line).
fn is_response(bytes: &[u8]) -> bool {
    bytes.starts_with(b"SIP/")
}

impl Limits {
    /// The limiters configured by `[lan]` and `[wan]`; the cloud's addresses
    /// are `[cloud] proxy`, `[cloud] addresses` and `[survival] backup_route`.
    pub fn from_config(cfg: &Config) -> Limits {
        let mut cloud_addrs = cfg.cloud.addresses.clone();
        cloud_addrs.push(cfg.cloud.proxy.addr.ip());
        if let Some(b) = &cfg.survival.backup_route {
            cloud_addrs.push(b.addr.ip());
        }
        Limits::new(
            Rate {
                per_s: cfg.lan.rate_limit_per_s,
                burst: cfg.lan.rate_limit_burst,
            },
            Rate {
                per_s: cfg.wan.rate_limit_per_s,
                burst: cfg.wan.rate_limit_burst,
            },
            Rate {
                per_s: cfg.wan.cloud_rate_limit_per_s,
                burst: cfg.wan.cloud_rate_limit_burst,
            },
            cloud_addrs,
        )
    }

    /// `lan` for phones, `wan` for any WAN source, `cloud` for the WAN
    /// sources in `cloud_addrs` (the cloud's proxy and further addresses).
    pub fn new(lan: Rate, wan: Rate, cloud: Rate, cloud_addrs: Vec<IpAddr>) -> Limits {
        Limits {
            lan: limiter(lan),
            wan: limiter(wan),
            cloud: limiter(cloud),
            cloud_addrs,
        }
    }

    /// Whether a message from `source` on `side` may go on to the parser.
    /// False (and counted) for a request over its source's rate.
    pub fn admit(&mut self, now: Instant, side: Side, source: IpAddr, bytes: &[u8]) -> bool {
        if is_response(bytes) {
            return true;
        }
        let source = canonical(source);
        let (limiter, counter) = match side {
            Side::Lan => (self.lan.as_mut(), &LAN_LIMITED),
            Side::Wan if self.cloud_addrs.iter().any(|a| canonical(*a) == source) => {
                (self.cloud.as_mut(), &WAN_LIMITED)
            }
            Side::Wan => (self.wan.as_mut(), &WAN_LIMITED),
        };
        let Some(limiter) = limiter else {
            return true;
        };
        if limiter.allow(now, source) {
            true
        } else {
            counter.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// IPv4-mapped IPv6 addresses count as their IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Requests dropped so far by the LAN and the WAN limiters.
pub fn limited() -> (u64, u64) {
    (
        LAN_LIMITED.load(Ordering::Relaxed),
        WAN_LIMITED.load(Ordering::Relaxed),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const OPTIONS: &[u8] = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
    const OK: &[u8] = b"SIP/2.0 200 OK\r\n\r\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn a_flooding_source_is_limited_and_others_are_not() {
        let t0 = Instant::now();
        let cloud = ip("192.0.2.2");
        let mut l = Limits::new(
            Rate {
                per_s: 10,
                burst: 20,
            },
            Rate { per_s: 5, burst: 5 },
            Rate {
                per_s: 1000,
                burst: 2000,
            },
            vec![cloud],
        );
        let (lan0, wan0) = limited();
        let flood = ip("10.0.0.66");
        let admitted = (0..1000)
            .filter(|_| l.admit(t0, Side::Lan, flood, OPTIONS))
            .count();
        assert_eq!(admitted, 20, "only the burst gets through at once");
        // Another phone is untouched, and responses are never limited.
        assert!(l.admit(t0, Side::Lan, ip("10.0.0.7"), OPTIONS));
        assert!(l.admit(t0, Side::Lan, flood, OK));
        // The bucket refills at the configured rate: 10/s -> 1 per 100 ms.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.admit(t1, Side::Lan, flood, OPTIONS));
        assert!(!l.admit(t1, Side::Lan, flood, OPTIONS));
        // WAN: a stranger gets the small limit, the cloud the large one.
        let stranger = (0..100)
            .filter(|_| l.admit(t0, Side::Wan, ip("198.51.100.9"), OPTIONS))
            .count();
        assert_eq!(stranger, 5);
        let from_cloud = (0..1500)
            .filter(|_| l.admit(t0, Side::Wan, cloud, OPTIONS))
            .count();
        assert_eq!(from_cloud, 1500);
        // The mapped IPv6 form of the cloud's address is the cloud.
        assert!(l.admit(t0, Side::Wan, ip("::ffff:192.0.2.2"), OPTIONS));
        // Counters are process-wide (other tests may add to them).
        let (lan1, wan1) = limited();
        assert!(lan1 >= lan0 + 981);
        assert!(wan1 >= wan0 + 95);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let t0 = Instant::now();
        let off = Rate { per_s: 0, burst: 0 };
        let mut l = Limits::new(off, off, off, Vec::new());
        for _ in 0..10_000 {
            assert!(l.admit(t0, Side::Lan, ip("10.0.0.1"), OPTIONS));
            assert!(l.admit(t0, Side::Wan, ip("10.0.0.1"), OPTIONS));
        }
    }
}
