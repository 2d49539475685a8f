//! The binding cache: what the cloud accepted for each AoR, and how to reach
//! the phone (its transport address, NAT-safe).
//!
//! Keyed by AoR and by contact URI (inbound requests name a contact URI in
//! their Request-URI). Times are unix seconds (the store persists them).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use crate::types::{Peer, Transport};

/// Who vouched for a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// The cloud answered 2xx to the REGISTER at `at` (unix s).
    CloudVerified {
        /// When.
        at: i64,
    },
    /// Accepted locally during an outage at `at` (unix s); never verified.
    LocalOnly {
        /// When.
        at: i64,
    },
}

/// One contact of one AoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Address of record (`sip:alice@cloud.test`), from the REGISTER's To.
    pub aor: String,
    /// The full Contact header value of this binding as the phone sent it.
    pub contact: String,
    /// The contact URI (key for inbound routing).
    pub contact_uri: String,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// REGISTER Call-ID.
    pub call_id: String,
    /// REGISTER CSeq number.
    pub cseq: u32,
    /// The phone's transport address (where its REGISTER came from).
    pub source: SocketAddr,
    /// The phone's transport.
    pub transport: Transport,
    /// `+sip.instance` when present.
    pub instance_id: Option<String>,
    /// `reg-id` when present.
    pub reg_id: Option<u32>,
    /// Who vouched for it.
    pub provenance: Provenance,
    /// Last REGISTER seen, unix seconds.
    pub last_seen: i64,
    /// Path header values the cloud stored (ours).
    pub path: Vec<String>,
}

impl Binding {
    /// Where to send requests for this binding.
    pub fn peer(&self) -> Peer {
        Peer {
            transport: self.transport,
            addr: self.source,
        }
    }
}

/// Normalizes a URI for matching: angle brackets and surrounding spaces
/// dropped, scheme and host part lower-cased; user part kept as is.
pub fn uri_key(uri: &str) -> String {
    let u = uri
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    match u.split_once('@') {
        Some((user, rest)) => {
            let (scheme, user) = match user.split_once(':') {
                Some((s, u)) => (s.to_ascii_lowercase(), u),
                None => (String::new(), user),
            };
            format!("{scheme}:{user}@{}", rest.to_ascii_lowercase())
        }
        None => u.to_ascii_lowercase(),
    }
}

/// All bindings, by AoR and by contact URI.
#[derive(Debug, Default)]
pub struct Bindings {
    by_aor: BTreeMap<String, Vec<Binding>>,
    by_contact: HashMap<String, String>,
}

impl Bindings {
    /// Empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_contact.len()
    }

    /// No bindings.
    pub fn is_empty(&self) -> bool {
        self.by_contact.is_empty()
    }

    /// Number of AoRs.
    pub fn aors(&self) -> usize {
        self.by_aor.len()
    }

    /// Adds or replaces the binding (same AoR and contact URI).
    pub fn upsert(&mut self, b: Binding) {
        let key = uri_key(&b.contact_uri);
        if let Some(old_aor) = self.by_contact.get(&key).cloned() {
            if old_aor != b.aor {
                self.remove(&old_aor, &b.contact_uri);
            }
        }
        self.by_contact.insert(key.clone(), b.aor.clone());
        let list = self.by_aor.entry(b.aor.clone()).or_default();
        match list.iter_mut().find(|x| uri_key(&x.contact_uri) == key) {
            Some(slot) => *slot = b,
            None => list.push(b),
        }
    }

    /// Removes one binding; returns it.
    pub fn remove(&mut self, aor: &str, contact_uri: &str) -> Option<Binding> {
        let key = uri_key(contact_uri);
        let list = self.by_aor.get_mut(aor)?;
        let i = list.iter().position(|x| uri_key(&x.contact_uri) == key)?;
        let b = list.remove(i);
        if list.is_empty() {
            self.by_aor.remove(aor);
        }
        self.by_contact.remove(&key);
        Some(b)
    }

    /// Removes every binding of an AoR; returns how many.
    pub fn remove_aor(&mut self, aor: &str) -> usize {
        match self.by_aor.remove(aor) {
            Some(list) => {
                for b in &list {
                    self.by_contact.remove(&uri_key(&b.contact_uri));
                }
                list.len()
            }
            None => 0,
        }
    }

    /// The bindings of one AoR.
    pub fn for_aor(&self, aor: &str) -> &[Binding] {
        self.by_aor.get(aor).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The binding whose contact URI is `uri`.
    pub fn by_contact(&self, uri: &str) -> Option<&Binding> {
        let key = uri_key(uri);
        let aor = self.by_contact.get(&key)?;
        self.by_aor
            .get(aor)?
            .iter()
            .find(|b| uri_key(&b.contact_uri) == key)
    }

    /// All bindings, ordered by AoR.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_aor.values().flatten()
    }

    /// Drops bindings that expired at or before `now_unix`; returns them.
    pub fn purge_expired(&mut self, now_unix: i64) -> Vec<Binding> {
        let gone: Vec<(String, String)> = self
            .iter()
            .filter(|b| b.expires_at <= now_unix)
            .map(|b| (b.aor.clone(), b.contact_uri.clone()))
            .collect();
        gone.iter().filter_map(|(a, c)| self.remove(a, c)).collect()
    }

    /// The earliest expiry, unix seconds.
    pub fn next_expiry(&self) -> Option<i64> {
        self.iter().map(|b| b.expires_at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn binding(aor: &str, contact: &str, exp: i64) -> Binding {
        Binding {
            aor: aor.into(),
            contact: format!("<{contact}>"),
            contact_uri: contact.into(),
            expires_at: exp,
            call_id: "c1".into(),
            cseq: 1,
            source: "127.0.1.1:5060".parse().expect("addr"),
            transport: Transport::Udp,
            instance_id: None,
            reg_id: None,
            provenance: Provenance::CloudVerified { at: 0 },
            last_seen: 0,
            path: vec![],
        }
    }

    #[test]
    fn upsert_lookup_remove() {
        let mut b = Bindings::new();
        b.upsert(binding("sip:a@x", "sip:a@10.0.0.1:5060", 100));
        b.upsert(binding("sip:a@x", "sip:a@10.0.0.2:5060", 200));
        b.upsert(binding("sip:a@x", "sip:a@10.0.0.1:5060", 300));
        assert_eq!(b.len(), 2);
        assert_eq!(b.for_aor("sip:a@x").len(), 2);
        assert_eq!(
            b.by_contact("<SIP:a@10.0.0.1:5060>").map(|x| x.expires_at),
            Some(300)
        );
        assert!(b.remove("sip:a@x", "sip:a@10.0.0.1:5060").is_some());
        assert!(b.by_contact("sip:a@10.0.0.1:5060").is_none());
        assert_eq!(b.remove_aor("sip:a@x"), 1);
        assert!(b.is_empty());
        assert_eq!(b.aors(), 0);
    }

    #[test]
    fn purge() {
        let mut b = Bindings::new();
        b.upsert(binding("sip:a@x", "sip:a@10.0.0.1", 100));
        b.upsert(binding("sip:b@x", "sip:b@10.0.0.2", 200));
        assert_eq!(b.next_expiry(), Some(100));
        let gone = b.purge_expired(150);
        assert_eq!(gone.len(), 1);
        assert_eq!(b.len(), 1);
        assert!(b.by_contact("sip:b@10.0.0.2").is_some());
    }

    #[test]
    fn uri_keys() {
        assert_eq!(
            uri_key(" <sip:Bob@HOST:5060;transport=udp> "),
            "sip:Bob@host:5060;transport=udp"
        );
        assert_eq!(uri_key("SIP:HOST"), "sip:host");
    }
}
