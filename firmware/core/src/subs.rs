//! SUBSCRIBE dialogs (BLF `dialog`, MWI `message-summary`, `presence`) seen
//! crossing the appliance, and the MWI cache per AoR.
//!
//! What is kept is what survival needs to take a subscription over in its
//! existing dialog: Call-ID, both tags, both CSeqs, expiry, the phone's
//! address and the last NOTIFY's body and dialog-info version.
//! A subscription is keyed by Call-ID and the subscriber's (phone's) tag.

use std::collections::{BTreeMap, HashMap};

use crate::types::Peer;

/// Subscription lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubState {
    /// SUBSCRIBE forwarded, no 2xx yet.
    Pending,
    /// Accepted by the cloud.
    Active,
    /// Ended (NOTIFY with `Subscription-State: terminated`, a final error,
    /// or expiry).
    Terminated {
        /// Reason given, if any.
        reason: Option<String>,
    },
}

impl SubState {
    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            SubState::Pending => "pending",
            SubState::Active => "active",
            SubState::Terminated { .. } => "terminated",
        }
    }
}

/// One subscription dialog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `call-id;phone-tag` — stable key (also the store id).
    pub id: String,
    /// Event package (`dialog`, `message-summary`, `presence`).
    pub event: String,
    /// Call-ID.
    pub call_id: String,
    /// The phone's (subscriber's) tag.
    pub phone_tag: String,
    /// The notifier's (cloud's) tag, once known.
    pub notifier_tag: Option<String>,
    /// Subscriber AoR (From URI).
    pub watcher_aor: String,
    /// What is watched (To URI).
    pub target_uri: String,
    /// The phone's Contact (where in-dialog NOTIFYs go).
    pub phone_contact: String,
    /// Record-Route of the dialog, as seen.
    pub route_set: Vec<String>,
    /// Phone's last SUBSCRIBE CSeq.
    pub subscribe_cseq: u32,
    /// Notifier's last NOTIFY CSeq.
    pub notify_cseq: u32,
    /// Expiry, unix seconds (while Pending: when to give up waiting for the answer).
    pub expires_at: i64,
    /// The phone's transport address.
    pub phone: Peer,
    /// State.
    pub state: SubState,
    /// dialog-info `version` of the last NOTIFY.
    pub last_version: Option<u64>,
    /// Last NOTIFY body.
    pub last_body: Option<String>,
    /// Last NOTIFY Content-Type.
    pub last_content_type: Option<String>,
    /// When the last NOTIFY passed, unix seconds.
    pub last_notify_at: Option<i64>,
    /// NOTIFYs seen.
    pub notifies: u64,
}

/// Makes the subscription id from Call-ID and the phone's tag.
pub fn sub_id(call_id: &str, phone_tag: &str) -> String {
    format!("{call_id};{phone_tag}")
}

/// The last message-summary state of an AoR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mwi {
    /// Body (RFC 3842).
    pub body: String,
    /// Content-Type.
    pub content_type: String,
    /// When, unix seconds.
    pub at: i64,
}

impl Mwi {
    /// `Messages-Waiting: yes` in the body.
    pub fn waiting(&self) -> bool {
        self.body.lines().any(|l| {
            let mut kv = l.splitn(2, ':');
            matches!(
                (kv.next(), kv.next()),
                (Some(k), Some(v)) if k.trim().eq_ignore_ascii_case("messages-waiting")
                    && v.trim().eq_ignore_ascii_case("yes")
            )
        })
    }
}

/// Extracts `version="N"` from a dialog-info document's root element.
pub fn dialog_info_version(body: &str) -> Option<u64> {
    let start = body.find("<dialog-info")?;
    let rest = &body[start..];
    let end = rest.find('>')?;
    let tag = &rest[..end];
    let v = tag.find("version=")?;
    let after = &tag[v + "version=".len()..];
    let quote = after.chars().next()?;
    if quote != '"' && quote != '\'' {
        return None;
    }
    let inner = &after[1..];
    let close = inner.find(quote)?;
    inner[..close].trim().parse().ok()
}

/// Subscriptions and MWI.
#[derive(Debug, Default)]
pub struct Subs {
    map: HashMap<String, Subscription>,
    mwi: BTreeMap<String, Mwi>,
}

impl Subs {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts (or replaces) a subscription, e.g. reloaded from the store.
    pub fn insert(&mut self, s: Subscription) {
        self.map.insert(s.id.clone(), s);
    }

    /// A subscription by id.
    pub fn get(&self, id: &str) -> Option<&Subscription> {
        self.map.get(id)
    }

    /// Mutable access by id.
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Subscription> {
        self.map.get_mut(id)
    }

    /// Finds the subscription a NOTIFY belongs to: its To-tag is the phone's tag.
    pub fn for_notify(&mut self, call_id: &str, to_tag: &str) -> Option<&mut Subscription> {
        self.map.get_mut(&sub_id(call_id, to_tag))
    }

    /// Removes one.
    pub fn remove(&mut self, id: &str) -> Option<Subscription> {
        self.map.remove(id)
    }

    /// All, sorted by watcher then target.
    pub fn list(&self) -> Vec<&Subscription> {
        let mut v: Vec<&Subscription> = self.map.values().collect();
        v.sort_by(|a, b| {
            (&a.watcher_aor, &a.target_uri, &a.id).cmp(&(&b.watcher_aor, &b.target_uri, &b.id))
        });
        v
    }

    /// Count.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// None tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops subscriptions expired at `now_unix` or terminated; returns their ids.
    pub fn sweep(&mut self, now_unix: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .map
            .values()
            .filter(|s| match s.state {
                SubState::Terminated { .. } => true,
                SubState::Active => s.expires_at > 0 && s.expires_at <= now_unix,
                // A SUBSCRIBE never answered: dropped once its grace time passes.
                SubState::Pending => s.expires_at > 0 && s.expires_at <= now_unix,
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &gone {
            self.map.remove(id);
        }
        gone
    }

    /// Records a message-summary state for an AoR.
    pub fn set_mwi(&mut self, aor: &str, m: Mwi) {
        self.mwi.insert(aor.to_string(), m);
    }

    /// MWI state of an AoR.
    pub fn mwi(&self, aor: &str) -> Option<&Mwi> {
        self.mwi.get(aor)
    }

    /// All MWI states.
    pub fn mwi_all(&self) -> impl Iterator<Item = (&String, &Mwi)> {
        self.mwi.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_dialog_info() {
        let b = r#"<?xml version="1.0"?>
<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="7" state="full" entity="sip:b@x">
</dialog-info>"#;
        assert_eq!(dialog_info_version(b), Some(7));
        assert_eq!(dialog_info_version("<dialog-info version='12'>"), Some(12));
        assert_eq!(dialog_info_version("<dialog-info state=\"full\">"), None);
        assert_eq!(dialog_info_version("<dialog-info version=\"x\">"), None);
        assert_eq!(dialog_info_version("<dialog-info version="), None);
        assert_eq!(dialog_info_version(""), None);
    }

    #[test]
    fn mwi_waiting() {
        let m = Mwi {
            body: "Messages-Waiting: yes\r\nVoice-Message: 2/0\r\n".into(),
            content_type: "application/simple-message-summary".into(),
            at: 1,
        };
        assert!(m.waiting());
        let n = Mwi {
            body: "messages-waiting:no\r\n".into(),
            ..m
        };
        assert!(!n.waiting());
    }

    #[test]
    fn sweep_drops_expired_and_terminated() {
        let peer = Peer {
            transport: crate::types::Transport::Udp,
            addr: "127.0.1.1:5060".parse().expect("addr"),
        };
        let mk = |id: &str, state: SubState, exp: i64| Subscription {
            id: id.into(),
            event: "dialog".into(),
            call_id: id.into(),
            phone_tag: "t".into(),
            notifier_tag: None,
            watcher_aor: "a".into(),
            target_uri: "b".into(),
            phone_contact: String::new(),
            route_set: vec![],
            subscribe_cseq: 1,
            notify_cseq: 0,
            expires_at: exp,
            phone: peer,
            state,
            last_version: None,
            last_body: None,
            last_content_type: None,
            last_notify_at: None,
            notifies: 0,
        };
        let mut s = Subs::new();
        s.insert(mk("1", SubState::Active, 100));
        s.insert(mk("2", SubState::Active, 300));
        s.insert(mk("3", SubState::Terminated { reason: None }, 300));
        s.insert(mk("4", SubState::Pending, 0));
        s.insert(mk("5", SubState::Pending, 150));
        let mut gone = s.sweep(200);
        gone.sort();
        assert_eq!(gone, vec!["1", "3", "5"]);
        assert_eq!(s.len(), 2);
    }
}
