//! The serial console's login: one password whose Argon2 hash (a PHC string,
//! `$argon2id$v=19$m=...,t=...,p=...$salt$hash`, verified with the RustCrypto
//! `argon2` crate) is in the config, and a lock-out after repeated failures.
//! Sans-IO: time is an argument. Failures and lock-outs are logged.

use std::fmt;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// A password hash from the config, checked to be a PHC string when loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

/// The config's hash is not a usable PHC string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHash(pub String);

impl fmt::Display for BadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "console password hash: {}", self.0)
    }
}

impl std::error::Error for BadHash {}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the hash itself into logs.
        f.write_str("PasswordHash(..)")
    }
}

impl PasswordHash {
    /// Accepts an Argon2 PHC string.
    pub fn parse(phc: &str) -> Result<Self, BadHash> {
        let parsed = argon2::PasswordHash::new(phc.trim()).map_err(|e| BadHash(e.to_string()))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(BadHash(format!(
                "algorithm {} is not argon2",
                parsed.algorithm.as_str()
            )));
        }
        if parsed.hash.is_none() {
            return Err(BadHash("no hash value".into()));
        }
        Ok(Self(phc.trim().to_string()))
    }

    /// Hashes `password` with Argon2id, default parameters and the given
    /// salt (at least 8 bytes; use random bytes). For tools and tests.
    pub fn create(password: &str, salt: &[u8]) -> Result<Self, BadHash> {
        Self::create_with(Argon2::default(), password, salt)
    }

    /// Hashes `password` with Argon2id, default parameters and a random
    /// 16-byte salt from the kernel (`/dev/urandom`): what a
    /// `hash-password` tool writes into `[console] password_hash`.
    pub fn create_random(password: &str) -> Result<Self, BadHash> {
        use std::io::Read;
        let mut salt = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut salt))
            .map_err(|e| BadHash(format!("no random salt: {e}")))?;
        Self::create(password, &salt)
    }

    /// As [`PasswordHash::create`] with explicit parameters (tests use tiny
    /// ones so that debug builds stay quick).
    pub fn create_with(argon: Argon2<'_>, password: &str, salt: &[u8]) -> Result<Self, BadHash> {
        let salt = SaltString::encode_b64(salt).map_err(|e| BadHash(e.to_string()))?;
        let hash = argon
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| BadHash(e.to_string()))?;
        Ok(Self(hash.to_string()))
    }

    /// Constant-time check of `password` against the hash (CPU-heavy by
    /// design: call it off the async executor).
    pub fn verify(&self, password: &str) -> bool {
        match argon2::PasswordHash::new(&self.0) {
            Ok(parsed) => Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }

    pub fn as_phc(&self) -> &str {
        &self.0
    }
}

/// When to lock the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive wrong passwords before the lock-out.
    pub max_failures: u32,
    /// How long the console stays locked.
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lockout: Duration::from_secs(300),
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Accepted,
    /// Wrong; `left` more tries before the lock-out.
    Rejected {
        left: u32,
    },
    /// Wrong, and now locked for this long.
    LockedOut {
        for_: Duration,
    },
}

/// Counts failures across sessions on the same port.
#[derive(Debug, Clone)]
pub struct Guard {
    policy: LockoutPolicy,
    failures: u32,
    locked_until: Option<Instant>,
}

impl Guard {
    pub fn new(policy: LockoutPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            locked_until: None,
        }
    }

    /// Some(remaining) while locked.
    pub fn locked(&mut self, now: Instant) -> Option<Duration> {
        match self.locked_until {
            Some(until) if now < until => Some(until - now),
            Some(_) => {
                self.locked_until = None;
                self.failures = 0;
                tracing::info!("console: lock-out ended");
                None
            }
            None => None,
        }
    }

    /// Records the result of a password check made at `now` (only call it
    /// when [`Guard::locked`] said no).
    pub fn record(&mut self, ok: bool, now: Instant) -> Attempt {
        if ok {
            if self.failures > 0 {
                tracing::info!(
                    "console: login accepted after {} failed attempt(s)",
                    self.failures
                );
            } else {
                tracing::info!("console: login accepted");
            }
            self.failures = 0;
            return Attempt::Accepted;
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= self.policy.max_failures.max(1) {
            self.locked_until = Some(now + self.policy.lockout);
            tracing::warn!(
                "console: {} failed logins, locked for {}s",
                self.failures,
                self.policy.lockout.as_secs()
            );
            Attempt::LockedOut {
                for_: self.policy.lockout,
            }
        } else {
            let left = self.policy.max_failures - self.failures;
            tracing::warn!("console: failed login ({} left before lock-out)", left);
            Attempt::Rejected { left }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::{Algorithm, Params, Version};

    fn fast() -> Argon2<'static> {
        Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        )
    }

    #[test]
    fn hashes_verify_and_round_trip_as_phc() {
        let hash = PasswordHash::create_with(fast(), "tech-42", b"saltsalt1234").unwrap();
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        let again = PasswordHash::parse(hash.as_phc()).unwrap();
        assert!(again.verify("tech-42"));
        assert!(!again.verify("tech-43"));
        assert!(!again.verify(""));
        assert_eq!(format!("{again:?}"), "PasswordHash(..)");
    }

    #[test]
    fn random_salts_differ_and_default_params_verify() {
        let a = PasswordHash::create_random("pw").unwrap();
        let b = PasswordHash::create_random("pw").unwrap();
        assert_ne!(a.as_phc(), b.as_phc());
        assert!(a.as_phc().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(a.verify("pw"));
    }

    #[test]
    fn bad_hashes_are_refused_at_load() {
        assert!(PasswordHash::parse("").is_err());
        assert!(PasswordHash::parse("hunter2").is_err());
        assert!(PasswordHash::parse("$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ").is_err());
        let pbkdf = "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
        assert!(PasswordHash::parse(pbkdf).is_err());
    }

    #[test]
    fn lockout_after_n_failures_then_unlock() {
        let t0 = Instant::now();
        let mut g = Guard::new(LockoutPolicy {
            max_failures: 3,
            lockout: Duration::from_secs(60),
        });
        assert_eq!(g.record(false, t0), Attempt::Rejected { left: 2 });
        assert_eq!(g.record(false, t0), Attempt::Rejected { left: 1 });
        assert_eq!(
            g.record(false, t0),
            Attempt::LockedOut {
                for_: Duration::from_secs(60)
            }
        );
        assert_eq!(
            g.locked(t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        assert_eq!(g.locked(t0 + Duration::from_secs(60)), None);
        // The count starts over after the lock-out.
        assert_eq!(
            g.record(false, t0 + Duration::from_secs(61)),
            Attempt::Rejected { left: 2 }
        );
        assert_eq!(
            g.record(true, t0 + Duration::from_secs(62)),
            Attempt::Accepted
        );
        assert_eq!(
            g.record(false, t0 + Duration::from_secs(63)),
            Attempt::Rejected { left: 2 }
        );
    }
}
