//! BLF state from the calls holdline routes: per watched entity, the dialogs
//! it is in, rendered as RFC 4235 full-state dialog-info.
//!
//! The driver reports call state changes ([`BlfBoard::update`]); for every
//! subscription watching that entity it then asks the subscription for a
//! NOTIFY plan (CSeq, version) and renders the body with [`BlfBoard::body`].
//! A terminated dialog stays in the documents for `linger` so that a watcher
//! whose NOTIFY was held back (one in flight per dialog) still sees the
//! `terminated` state, then [`BlfBoard::handle_timeout`] drops it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::bodies::{dialog_info_full, DialogEntry, DialogState};
use crate::time::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    entry: DialogEntry,
    ended_at: Option<Millis>,
}

/// Dialog states per watched entity (AOR).
#[derive(Debug, Clone, Default)]
pub struct BlfBoard {
    linger: Duration,
    entities: BTreeMap<String, BTreeMap<String, Slot>>,
    earliest_end: Option<Millis>,
}

/// Cap on dialogs kept per entity (a looping phone cannot grow this forever).
pub const MAX_DIALOGS_PER_ENTITY: usize = 32;

impl BlfBoard {
    /// A board keeping terminated dialogs for `linger`.
    pub fn new(linger: Duration) -> BlfBoard {
        BlfBoard {
            linger,
            entities: BTreeMap::new(),
            earliest_end: None,
        }
    }

    /// A dialog of `entity` changed state. Returns true if anything changed
    /// (then notify the entity's watchers).
    pub fn update(&mut self, now: Millis, entity: &str, entry: DialogEntry) -> bool {
        let dialogs = self.entities.entry(entity.to_owned()).or_default();
        let ended_at = (entry.state == DialogState::Terminated).then_some(now);
        if let Some(t) = ended_at {
            self.earliest_end = Some(self.earliest_end.map_or(t, |e| e.min(t)));
        }
        if let Some(slot) = dialogs.get_mut(&entry.id) {
            if slot.entry == entry {
                return false;
            }
            slot.entry = entry;
            slot.ended_at = ended_at;
            return true;
        }
        if ended_at.is_some() {
            // Never seen alive: nothing for the lamps.
            return false;
        }
        if dialogs.len() >= MAX_DIALOGS_PER_ENTITY {
            // Drop the oldest ended one, else the first (stale) one.
            let victim = dialogs
                .iter()
                .find(|(_, s)| s.ended_at.is_some())
                .or_else(|| dialogs.iter().next())
                .map(|(k, _)| k.clone());
            if let Some(v) = victim {
                dialogs.remove(&v);
            }
        }
        dialogs.insert(entry.id.clone(), Slot { entry, ended_at });
        true
    }

    /// The full-state document for `entity` with the `version` the
    /// subscription's NOTIFY plan gave (idle entities give an empty document).
    pub fn body(&self, entity: &str, version: u64) -> String {
        let dialogs: Vec<DialogEntry> = self
            .entities
            .get(entity)
            .map(|d| d.values().map(|s| s.entry.clone()).collect())
            .unwrap_or_default();
        dialog_info_full(entity, version, &dialogs)
    }

    /// Dialogs of `entity` not yet terminated.
    pub fn active(&self, entity: &str) -> usize {
        self.entities
            .get(entity)
            .map_or(0, |d| d.values().filter(|s| s.ended_at.is_none()).count())
    }

    /// Next time a terminated dialog is due to be dropped.
    pub fn poll_timeout(&self) -> Option<Millis> {
        self.earliest_end.map(|t| t + self.linger)
    }

    /// Drop terminated dialogs older than `linger`, and empty entities.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.poll_timeout().is_none_or(|t| now < t) {
            return;
        }
        let linger = self.linger;
        for dialogs in self.entities.values_mut() {
            dialogs.retain(|_, s| s.ended_at.is_none_or(|t| now < t + linger));
        }
        self.entities.retain(|_, d| !d.is_empty());
        self.earliest_end = self
            .entities
            .values()
            .flat_map(|d| d.values())
            .filter_map(|s| s.ended_at)
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bodies::{read_dialog_info_head, Direction};

    fn entry(id: &str, state: DialogState) -> DialogEntry {
        DialogEntry {
            id: id.into(),
            call_id: Some(format!("{id}@pbx")),
            local_tag: None,
            remote_tag: None,
            direction: Some(Direction::Initiator),
            state,
            remote_identity: Some("sip:202@cloud.test".into()),
        }
    }

    #[test]
    fn call_states_render_and_terminated_ones_linger_then_go() {
        let mut b = BlfBoard::new(Duration::from_secs(10));
        let e = "sip:201@cloud.test";
        assert!(b.update(Millis(0), e, entry("c1", DialogState::Early)));
        assert!(!b.update(Millis(1), e, entry("c1", DialogState::Early)));
        assert!(b.update(Millis(2), e, entry("c1", DialogState::Confirmed)));
        assert_eq!(b.active(e), 1);
        let body = b.body(e, 5);
        assert!(body.contains("<state>confirmed</state>"));
        assert_eq!(read_dialog_info_head(&body).unwrap().version, 5);
        assert!(b.update(Millis(3_000), e, entry("c1", DialogState::Terminated)));
        assert_eq!(b.active(e), 0);
        assert!(b.body(e, 6).contains("<state>terminated</state>"));
        assert_eq!(b.poll_timeout(), Some(Millis(13_000)));
        b.handle_timeout(Millis(12_999));
        assert!(b.body(e, 7).contains("terminated"));
        b.handle_timeout(Millis(13_000));
        assert!(!b.body(e, 8).contains("<dialog "));
        assert_eq!(b.poll_timeout(), None);
        // Unknown dialog that only ever terminates: nothing to show.
        assert!(!b.update(Millis(20_000), e, entry("zz", DialogState::Terminated)));
    }

    #[test]
    fn dialogs_per_entity_are_bounded() {
        let mut b = BlfBoard::new(Duration::from_secs(10));
        for i in 0..100 {
            b.update(
                Millis(i),
                "sip:x@y",
                entry(&format!("d{i:03}"), DialogState::Early),
            );
        }
        assert_eq!(b.active("sip:x@y"), MAX_DIALOGS_PER_ENTITY);
    }
}
