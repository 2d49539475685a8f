//! Model-based check: random sequences of writes (upserts, removals, AoR removals,
//! subscriptions, MWI), grouped in random commits, sometimes with a reopen in between;
//! after each step the store loads exactly what a plain in-memory model holds.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use holdline_store::damage::Rng;
use holdline_store::{Binding, Store, StoreOptions, Subscription, Write};

#[derive(Default)]
struct Model {
    bindings: BTreeMap<(String, String), Binding>,
    subs: BTreeMap<String, Subscription>,
    mwi: BTreeMap<String, String>,
}

impl Model {
    fn apply(&mut self, w: &Write) {
        match w {
            Write::UpsertBinding(b) => {
                self.bindings
                    .insert((b.aor.clone(), b.contact_uri.clone()), b.clone());
            }
            Write::RemoveBinding { aor, contact } => {
                self.bindings.remove(&(aor.clone(), contact.clone()));
            }
            Write::RemoveAor { aor } => self.bindings.retain(|(a, _), _| a != aor),
            Write::UpsertSubscription(s) => {
                self.subs.insert(s.id.clone(), s.clone());
            }
            Write::RemoveSubscription { id } => {
                self.subs.remove(id);
            }
            Write::SetMwi { aor, body, .. } => {
                self.mwi.insert(aor.clone(), body.clone());
            }
            Write::Event(_) => {}
        }
    }
}

fn random_write(rng: &mut Rng) -> Write {
    // Few AoRs and contacts, so that upserts replace and removals hit.
    let i = rng.below(12) as usize;
    let mut b = binding(i, NOW + 100 + rng.below(1000) as i64);
    if rng.below(3) == 0 {
        // A second contact for the same AoR.
        b.contact_uri = format!("{};line=2", b.contact_uri);
        b.contact = format!("<{}>", b.contact_uri);
    }
    b.cseq = rng.below(1000) as u32;
    match rng.below(10) {
        0..=4 => Write::UpsertBinding(b),
        5 => Write::RemoveBinding {
            aor: b.aor,
            contact: b.contact_uri,
        },
        6 => Write::RemoveAor { aor: b.aor },
        7 => {
            let mut s = subscription(i % 5, NOW + 100);
            s.remote_cseq = rng.below(100) as u32;
            Write::UpsertSubscription(s)
        }
        8 => Write::RemoveSubscription {
            id: subscription(i % 5, 0).id,
        },
        _ => Write::SetMwi {
            aor: b.aor,
            body: format!(
                "Messages-Waiting: {}\r\n",
                if rng.below(2) == 0 { "yes" } else { "no" }
            ),
            content_type: "application/simple-message-summary".into(),
            at: NOW + rng.below(100) as i64,
        },
    }
}

#[test]
fn random_write_sequences_match_a_plain_model() {
    for seed in 0..6u64 {
        let dir = TempDir::new(&format!("model-{seed}"));
        let mut rng = Rng::new(seed);
        let mut model = Model::default();
        let mut store = Store::open(&dir.db(), StoreOptions::default()).unwrap().0;
        for step in 0..40 {
            // A few commits in flight at once, so several share a group.
            let mut pending = Vec::new();
            for _ in 0..=rng.below(4) {
                let writes: Vec<Write> =
                    (0..=rng.below(5)).map(|_| random_write(&mut rng)).collect();
                for w in &writes {
                    model.apply(w);
                }
                pending.push(store.commit(writes));
            }
            for rx in pending {
                rx.blocking_recv().unwrap().unwrap();
            }
            if rng.below(8) == 0 {
                drop(store);
                store = Store::open(&dir.db(), StoreOptions::default()).unwrap().0;
            }
            let loaded = store.load_bindings().unwrap();
            assert_eq!(loaded.quarantined, 0);
            let got: BTreeMap<(String, String), Binding> = loaded
                .items
                .into_iter()
                .map(|b| ((b.aor.clone(), b.contact_uri.clone()), b))
                .collect();
            assert_eq!(got, model.bindings, "seed {seed} step {step}");
            let subs: BTreeMap<String, Subscription> = store
                .load_subscriptions()
                .unwrap()
                .items
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect();
            assert_eq!(subs, model.subs, "seed {seed} step {step}");
            for (aor, body) in &model.mwi {
                assert_eq!(&store.mwi(aor).unwrap().unwrap().body, body);
            }
        }
        assert_eq!(store.quarantine_count().unwrap(), 0);
    }
}
