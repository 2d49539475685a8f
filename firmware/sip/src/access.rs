//! Who may send requests through (no open relay) and how fast.
//!
//! [`AccessRule`]: LAN side accepts the site's subnets, WAN side only the
//! configured cloud (and backup route) addresses; anything else gets 403
//! ([`forbidden`]) and is counted. [`RateLimiter`]: a token bucket per
//! source address, with a bounded table and time passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::error::EditError;
use crate::message::Message;

/// Which listener a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The phones' side.
    Lan,
    /// The cloud's side.
    Wan,
}

/// An address prefix such as `10.0.0.0/24` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A prefix that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid address prefix {0:?}")]
pub struct CidrError(pub String);

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = || CidrError(s.to_owned());
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().map_err(|_| err())?,
            None => max,
        };
        if prefix > max {
            return Err(err());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// True when `ip` is inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            (IpAddr::V6(_), IpAddr::V4(a)) => self.contains(IpAddr::V6(a.to_ipv6_mapped())),
            (IpAddr::V4(_), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(v4) => self.contains(IpAddr::V4(v4)),
                None => false,
            },
        }
    }
}

/// The no-open-relay rule by source address.
#[derive(Debug, Clone, Default)]
pub struct AccessRule {
    lan: Vec<Cidr>,
    wan: Vec<Cidr>,
    denied: u64,
}

impl AccessRule {
    /// LAN prefixes (the site's subnets) and WAN prefixes (cloud, backup route).
    pub fn new(lan: Vec<Cidr>, wan: Vec<Cidr>) -> AccessRule {
        AccessRule {
            lan,
            wan,
            denied: 0,
        }
    }

    /// True when `source` may send requests on `side`. A refusal is counted.
    pub fn allows(&mut self, side: Side, source: IpAddr) -> bool {
        let list = match side {
            Side::Lan => &self.lan,
            Side::Wan => &self.wan,
        };
        let ok = list.iter().any(|c| c.contains(source));
        if !ok {
            self.denied += 1;
        }
        ok
    }

    /// Requests refused so far.
    pub fn denied(&self) -> u64 {
        self.denied
    }
}

/// The 403 answering a request from a source that may not send it.
pub fn forbidden(request: &Message) -> Result<Message, EditError> {
    Message::response_for(request, 403, "Forbidden")
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    milli: u64,
    last: Instant,
}

/// Token bucket per source address with a bounded table.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: u64,
    burst: u64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
    limited: u64,
}

impl RateLimiter {
    /// `rate` messages per second sustained, `burst` at once, at most
    /// `max_sources` addresses remembered (the least recently seen is
    /// forgotten first; a forgotten source starts with a full bucket).
    pub fn new(rate: u32, burst: u32, max_sources: usize) -> RateLimiter {
        RateLimiter {
            rate: u64::from(rate),
            burst: u64::from(burst.max(1)),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
            limited: 0,
        }
    }

    /// Takes one token for `source` at `now`; false (and counted) when empty.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        let cap = self.burst * 1000;
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.evict(now);
        }
        let rate = self.rate;
        let b = self.buckets.entry(source).or_insert(Bucket {
            milli: cap,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last);
        let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        b.milli = b.milli.saturating_add(ms.saturating_mul(rate)).min(cap);
        b.last = now.max(b.last);
        if b.milli >= 1000 {
            b.milli -= 1000;
            true
        } else {
            self.limited += 1;
            false
        }
    }

    fn evict(&mut self, now: Instant) {
        let cap = self.burst * 1000;
        let rate = self.rate.max(1);
        let refill = Duration::from_millis(cap / rate + 1);
        let before = self.buckets.len();
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < refill);
        if self.buckets.len() == before {
            // Nothing idle: forget the least recently seen eighth at once so
            // that a flood of new sources costs O(1) amortized per packet.
            let mut ages: Vec<(Instant, IpAddr)> =
                self.buckets.iter().map(|(ip, b)| (b.last, *ip)).collect();
            let k = (ages.len() / 8).max(1);
            if k < ages.len() {
                ages.select_nth_unstable(k - 1);
            }
            for (_, ip) in ages.iter().take(k) {
                self.buckets.remove(ip);
            }
        }
    }

    /// Messages refused so far.
    pub fn limited(&self) -> u64 {
        self.limited
    }

    /// Sources remembered now (never more than `max_sources`).
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr() {
        let c: Cidr = "10.0.0.0/24".parse().unwrap();
        assert!(c.contains(ip("10.0.0.200")));
        assert!(!c.contains(ip("10.0.1.1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
        let one: Cidr = "127.0.0.2".parse().unwrap();
        assert!(one.contains(ip("127.0.0.2")) && !one.contains(ip("127.0.0.3")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!(c.contains(ip("::ffff:10.0.0.7")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
    }

    #[test]
    fn access_rule_by_side() {
        let mut r = AccessRule::new(
            vec!["127.0.0.0/30".parse().unwrap()],
            vec!["127.0.0.2".parse().unwrap()],
        );
        assert!(r.allows(Side::Lan, ip("127.0.0.1")));
        assert!(!r.allows(Side::Lan, ip("127.0.0.9")));
        assert!(r.allows(Side::Wan, ip("127.0.0.2")));
        assert!(!r.allows(Side::Wan, ip("127.0.0.1")));
        assert_eq!(r.denied(), 2);
    }

    #[test]
    fn token_bucket_with_virtual_time() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(10, 5, 100);
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        for _ in 0..5 {
            assert!(l.allow(t0, a));
        }
        assert!(!l.allow(t0, a));
        // Another source is not starved by the first.
        assert!(l.allow(t0, b));
        // 100 ms later one token is back.
        assert!(l.allow(t0 + Duration::from_millis(100), a));
        assert!(!l.allow(t0 + Duration::from_millis(100), a));
        // A long pause refills only to the burst.
        let t1 = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(l.allow(t1, a));
        }
        assert!(!l.allow(t1, a));
        assert_eq!(l.limited(), 3);
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut l = RateLimiter::new(1, 1, 64);
        for i in 0..10_000u32 {
            let src = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.allow(t0 + Duration::from_millis(u64::from(i)), src);
            assert!(l.tracked() <= 64);
        }
    }
}
