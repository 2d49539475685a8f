//! Local registrar policy while the cloud is Down.
//!
//! A REGISTER refresh of a known binding (same Call-ID with a higher CSeq, or
//! the same phone IP address, or the same `+sip.instance`) is answered locally
//! with a short, jittered expiry (default 60–120 s), so that phones come back
//! to the cloud soon after it returns; the driver stores the refresh time as
//! proof that the phone is alive. An unknown phone gets a provisional,
//! local-only binding that is never pushed to the cloud.
//!
//! Pure decisions: the driver looks up the AOR's bindings, calls [`decide`],
//! writes what it says to the store and only then answers 200.

use std::net::SocketAddr;
use std::time::Duration;

use crate::rng::Rng;

/// Where a binding came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// The cloud answered 2xx to this phone's REGISTER (it authenticated it).
    CloudVerified,
    /// Created here during an outage; never given to the cloud.
    LocalOnly,
}

/// A stored binding of the AOR, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known<'a> {
    /// Call-ID of the REGISTER that made or last refreshed it.
    pub call_id: &'a str,
    /// Its CSeq.
    pub cseq: u32,
    /// The phone's transport address.
    pub source: SocketAddr,
    /// `+sip.instance` if the phone sent one.
    pub instance_id: Option<&'a str>,
    /// Provenance.
    pub provenance: Provenance,
}

/// The incoming REGISTER, as the driver parsed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register<'a> {
    /// Call-ID.
    pub call_id: &'a str,
    /// CSeq number.
    pub cseq: u32,
    /// The phone's transport address.
    pub source: SocketAddr,
    /// `+sip.instance` of the Contact, if any.
    pub instance_id: Option<&'a str>,
    /// Requested expiry (Contact `expires` or Expires header), seconds.
    pub requested_expires: Option<u32>,
}

/// How a REGISTER matched a known binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchedBy {
    /// Same Call-ID, higher CSeq.
    CallId,
    /// Same `+sip.instance`.
    InstanceId,
    /// Same phone IP address (e.g. the phone restarted with a new Call-ID).
    Address,
}

/// What to do with a REGISTER during survival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Refresh `known[index]`: update contact/Call-ID/CSeq/source, keep its
    /// provenance, mark the phone alive now, answer 200 with `expires`.
    Refresh {
        /// Index into the `known` slice.
        index: usize,
        /// Expires to grant, seconds.
        expires: u32,
        /// How it matched.
        matched_by: MatchedBy,
    },
    /// Unknown phone: store a new `LocalOnly` binding, answer 200 with `expires`.
    NewLocalOnly {
        /// Expires to grant, seconds.
        expires: u32,
    },
    /// Expires 0: remove `known[index]` (or nothing if `None`) and answer 200.
    Remove {
        /// Index into `known`, if it matched one.
        index: Option<usize>,
    },
    /// Same Call-ID with a CSeq not above the stored one: out of order
    /// (RFC 3261 §10.3 step 7); do not update, answer 500.
    OutOfOrder {
        /// Index into `known`.
        index: usize,
    },
}

/// Survival registrar tunables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shortest expiry granted.
    pub expiry_min: Duration,
    /// Longest expiry granted.
    pub expiry_max: Duration,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            expiry_min: Duration::from_secs(60),
            expiry_max: Duration::from_secs(120),
        }
    }
}

impl RegistrarConfig {
    /// A jittered expiry in `[expiry_min, expiry_max]`, never above what the
    /// phone asked for.
    pub fn jittered_expiry(&self, requested: Option<u32>, rng: &mut Rng) -> u32 {
        let lo = self.expiry_min.as_secs();
        let hi = self.expiry_max.as_secs().max(lo);
        let granted = u32::try_from(rng.range_inclusive(lo, hi)).unwrap_or(u32::MAX);
        match requested {
            Some(r) if r > 0 => granted.min(r),
            _ => granted,
        }
    }
}

/// Decide what a REGISTER gets while the cloud is Down.
pub fn decide(
    cfg: &RegistrarConfig,
    known: &[Known<'_>],
    reg: &Register<'_>,
    rng: &mut Rng,
) -> Decision {
    let matched = find(known, reg);
    if reg.requested_expires == Some(0) {
        return match matched {
            Some((index, MatchedBy::CallId, false)) => Decision::OutOfOrder { index },
            Some((index, _, _)) => Decision::Remove { index: Some(index) },
            None => Decision::Remove { index: None },
        };
    }
    match matched {
        Some((index, MatchedBy::CallId, false)) => Decision::OutOfOrder { index },
        Some((index, matched_by, _)) => Decision::Refresh {
            index,
            expires: cfg.jittered_expiry(reg.requested_expires, rng),
            matched_by,
        },
        None => Decision::NewLocalOnly {
            expires: cfg.jittered_expiry(reg.requested_expires, rng),
        },
    }
}

/// (index, how, in order)
fn find(known: &[Known<'_>], reg: &Register<'_>) -> Option<(usize, MatchedBy, bool)> {
    if let Some(i) = known.iter().position(|k| k.call_id == reg.call_id) {
        let k = &known[i];
        return Some((i, MatchedBy::CallId, reg.cseq > k.cseq));
    }
    if let Some(inst) = reg.instance_id {
        if let Some(i) = known.iter().position(|k| k.instance_id == Some(inst)) {
            return Some((i, MatchedBy::InstanceId, true));
        }
    }
    known
        .iter()
        .position(|k| k.source.ip() == reg.source.ip())
        .map(|i| (i, MatchedBy::Address, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn known() -> Vec<Known<'static>> {
        vec![
            Known {
                call_id: "a@1",
                cseq: 10,
                source: addr("10.0.0.1:5060"),
                instance_id: None,
                provenance: Provenance::CloudVerified,
            },
            Known {
                call_id: "b@2",
                cseq: 3,
                source: addr("10.0.0.2:5060"),
                instance_id: Some("<urn:uuid:2>"),
                provenance: Provenance::CloudVerified,
            },
        ]
    }

    fn reg<'a>(call_id: &'a str, cseq: u32, src: &str, inst: Option<&'a str>) -> Register<'a> {
        Register {
            call_id,
            cseq,
            source: addr(src),
            instance_id: inst,
            requested_expires: Some(3600),
        }
    }

    #[test]
    fn known_refreshes_are_answered_with_short_jittered_expiry() {
        let cfg = RegistrarConfig::default();
        let k = known();
        let mut rng = Rng::seeded(1);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            match decide(&cfg, &k, &reg("a@1", 11, "10.0.0.1:5060", None), &mut rng) {
                Decision::Refresh {
                    index: 0,
                    expires,
                    matched_by: MatchedBy::CallId,
                } => {
                    assert!((60..=120).contains(&expires));
                    seen.insert(expires);
                }
                d => panic!("{d:?}"),
            }
        }
        assert!(seen.len() > 20, "expiry is jittered");
        // Restarted phone: new Call-ID, same instance-id, new port.
        assert!(matches!(
            decide(
                &cfg,
                &k,
                &reg("new", 1, "10.0.0.9:7000", Some("<urn:uuid:2>")),
                &mut rng
            ),
            Decision::Refresh {
                index: 1,
                matched_by: MatchedBy::InstanceId,
                ..
            }
        ));
        // Restarted phone: new Call-ID, same IP.
        assert!(matches!(
            decide(&cfg, &k, &reg("new", 1, "10.0.0.1:5062", None), &mut rng),
            Decision::Refresh {
                index: 0,
                matched_by: MatchedBy::Address,
                ..
            }
        ));
        // Phone asks for less than the minimum: it gets what it asked.
        let mut r = reg("a@1", 12, "10.0.0.1:5060", None);
        r.requested_expires = Some(30);
        assert!(matches!(
            decide(&cfg, &k, &r, &mut rng),
            Decision::Refresh { expires: 30, .. }
        ));
    }

    #[test]
    fn unknown_out_of_order_and_removal() {
        let cfg = RegistrarConfig::default();
        let k = known();
        let mut rng = Rng::seeded(2);
        assert!(matches!(
            decide(&cfg, &k, &reg("zz", 1, "10.0.0.7:5060", None), &mut rng),
            Decision::NewLocalOnly { expires } if (60..=120).contains(&expires)
        ));
        assert_eq!(
            decide(&cfg, &k, &reg("a@1", 10, "10.0.0.1:5060", None), &mut rng),
            Decision::OutOfOrder { index: 0 }
        );
        let mut r = reg("a@1", 20, "10.0.0.1:5060", None);
        r.requested_expires = Some(0);
        assert_eq!(
            decide(&cfg, &k, &r, &mut rng),
            Decision::Remove { index: Some(0) }
        );
        let mut r = reg("q", 20, "10.9.9.9:5060", None);
        r.requested_expires = Some(0);
        assert_eq!(
            decide(&cfg, &[], &r, &mut rng),
            Decision::Remove { index: None }
        );
    }
}
