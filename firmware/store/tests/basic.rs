//! Round trips, removals, refused writes, events, MWI, reopen, purge of expired rows.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use holdline_store::{Event, Store, StoreError, StoreOptions, Write};

#[test]
fn bindings_round_trip_and_survive_reopen() {
    let dir = TempDir::new("roundtrip");
    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(report.created);
    assert!(report.set_aside.is_none());
    assert_eq!(report.schema_version, (1, 0));
    assert_eq!(report.journal_mode, "wal");
    assert_eq!(
        report.synchronous, 2,
        "synchronous = FULL: acknowledged = durable"
    );
    let writes: Vec<Write> = (0..20)
        .map(|i| Write::UpsertBinding(binding(i, NOW + 3600)))
        .collect();
    store.commit_blocking(writes).unwrap();
    // Upsert replaces by (aor, contact_uri).
    let mut b = binding(3, NOW + 7200);
    b.cseq = 99;
    store
        .commit_blocking(vec![Write::UpsertBinding(b.clone())])
        .unwrap();
    store
        .commit_blocking(vec![Write::RemoveBinding {
            aor: binding(4, 0).aor,
            contact: binding(4, 0).contact_uri,
        }])
        .unwrap();
    store
        .commit_blocking(vec![Write::RemoveAor {
            aor: binding(5, 0).aor,
        }])
        .unwrap();
    drop(store);

    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(!report.created);
    assert_eq!(report.found_version, Some((1, 0)));
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.quarantined, 0);
    assert_eq!(loaded.items.len(), 18);
    let got = loaded.items.iter().find(|x| x.aor == b.aor).unwrap();
    assert_eq!(got, &b);
    for i in (0..20).filter(|i| *i != 3 && *i != 4 && *i != 5) {
        assert!(
            loaded.items.contains(&binding(i, NOW + 3600)),
            "binding {i}"
        );
    }
}

#[test]
fn invalid_write_is_refused_alone() {
    let dir = TempDir::new("invalid");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let mut bad = binding(1, NOW + 60);
    bad.aor = "not a uri".into();
    let r1 = store.commit(vec![Write::UpsertBinding(bad)]);
    let r2 = store.commit(vec![Write::UpsertBinding(binding(2, NOW + 60))]);
    assert!(matches!(
        r1.blocking_recv().unwrap(),
        Err(StoreError::Invalid(_))
    ));
    r2.blocking_recv().unwrap().unwrap();
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.items, vec![binding(2, NOW + 60)]);
    assert_eq!(store.stats().commits_failed, 1);
}

#[test]
fn subscriptions_mwi_events() {
    let dir = TempDir::new("subs");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    store
        .commit_blocking(vec![
            Write::UpsertSubscription(subscription(1, NOW + 60)),
            Write::UpsertSubscription(subscription(2, NOW - 60)),
            Write::SetMwi {
                aor: "sip:1001@cloud.test".into(),
                body: "Messages-Waiting: yes\r\nVoice-Message: 2/0\r\n".into(),
                content_type: "application/simple-message-summary".into(),
                at: NOW,
            },
            Write::Event(Event {
                at: NOW,
                kind: "uplink.down".into(),
                detail: "3 probes lost".into(),
            }),
            Write::Event(Event {
                at: NOW + 5,
                kind: "uplink.up".into(),
                detail: "steady 30 s".into(),
            }),
        ])
        .unwrap();
    store
        .commit_blocking(vec![Write::SetMwi {
            aor: "sip:1001@cloud.test".into(),
            body: "Messages-Waiting: no\r\n".into(),
            content_type: "application/simple-message-summary".into(),
            at: NOW + 1,
        }])
        .unwrap();
    let subs = store.load_subscriptions().unwrap();
    assert_eq!(subs.items.len(), 2);
    assert!(subs.items.contains(&subscription(1, NOW + 60)));
    let mwi = store.mwi("sip:1001@cloud.test").unwrap().unwrap();
    assert_eq!(mwi.body, "Messages-Waiting: no\r\n");
    assert_eq!(store.mwi("sip:9@cloud.test").unwrap(), None);
    let ev = store.events(10).unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(ev[0].event.kind, "uplink.up");

    let rep = store.purge_expired(NOW, 1).unwrap();
    assert_eq!(rep.purged_subscriptions, 1);
    assert_eq!(rep.quarantined, 0);
    let subs = store.load_subscriptions().unwrap();
    assert_eq!(subs.items, vec![subscription(1, NOW + 60)]);
}

#[test]
fn purge_removes_only_expired_in_small_batches() {
    let dir = TempDir::new("purge");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let writes: Vec<Write> = (0..100)
        .map(|i| Write::UpsertBinding(binding(i, if i % 2 == 0 { NOW - 1 } else { NOW + 100 })))
        .collect();
    store.commit_blocking(writes).unwrap();
    let rep = store.purge_expired(NOW, 7).unwrap();
    assert_eq!(rep.purged_bindings, 50);
    assert!(rep.batches >= 100 / 7, "bounded batches: {}", rep.batches);
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.items.len(), 50);
    assert!(loaded.items.iter().all(|b| b.expires_at > NOW));
    assert!(store.stats().last_purge.is_some());
}

#[test]
fn writer_is_alive_and_finishes_queued_commits_on_close() {
    let dir = TempDir::new("alive");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(store.stats().writer_alive);
    let rx = store.commit(vec![Write::UpsertBinding(binding(1, NOW + 1))]);
    drop(store);
    // The writer finishes queued jobs before it stops.
    rx.blocking_recv().unwrap().unwrap();
}

#[test]
fn background_purger_runs_on_its_interval() {
    let dir = TempDir::new("purger");
    let opts = StoreOptions {
        purge_interval: std::time::Duration::from_millis(50),
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(&dir.db(), opts).unwrap();
    // Expired long ago by the system clock.
    let old = 1_000_000_000;
    store
        .commit_blocking(vec![
            Write::UpsertBinding(binding(1, old)),
            Write::UpsertBinding(binding(2, holdline_store::MAX_UNIX_TIME)),
        ])
        .unwrap();
    let purger = store.spawn_purger().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.stats().last_purge.is_none() {
        assert!(std::time::Instant::now() < deadline, "purger never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(purger);
    let left = store.load_bindings().unwrap().items;
    assert_eq!(left, vec![binding(2, holdline_store::MAX_UNIX_TIME)]);
    assert_eq!(StoreOptions::default().purge_interval.as_secs(), 600);
}

#[test]
fn purge_trims_event_log_and_quarantine_to_their_caps() {
    let dir = TempDir::new("trim");
    let opts = StoreOptions {
        max_events: 5,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(&dir.db(), opts).unwrap();
    let evs = (0..20)
        .map(|i| {
            Write::Event(Event {
                at: NOW + i,
                kind: "uplink.flap".into(),
                detail: format!("n{i}"),
            })
        })
        .collect();
    store.commit_blocking(evs).unwrap();
    let rep = store.purge_expired(NOW, 100).unwrap();
    assert_eq!(rep.trimmed, 15);
    let left = store.events(100).unwrap();
    assert_eq!(left.len(), 5);
    assert_eq!(left[0].event.detail, "n19", "the newest are kept");
    assert_eq!(left[4].event.detail, "n15");
}

#[test]
fn mwi_lookup_quarantines_a_duplicate_and_keeps_the_newest() {
    let dir = TempDir::new("mwi-dup");
    {
        let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        store
            .commit_blocking(vec![Write::SetMwi {
                aor: "sip:1001@cloud.test".into(),
                body: "Messages-Waiting: yes\r\n".into(),
                content_type: "application/simple-message-summary".into(),
                at: NOW,
            }])
            .unwrap();
    }
    let ids = holdline_store::damage::damage_rows(
        &dir.db(),
        "mwi",
        holdline_store::damage::RowDamage::Duplicate,
        1,
        1,
        &[],
    )
    .unwrap();
    assert_eq!(ids.len(), 1);
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let m = store.mwi("sip:1001@cloud.test").unwrap().unwrap();
    assert_eq!(m.body, "Messages-Waiting: yes\r\n");
    let q = store.quarantine(10).unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "duplicate key");
    assert_eq!(store.raw_count("mwi").unwrap(), 1);
}

#[test]
fn empty_commit_is_a_cheap_writer_liveness_probe() {
    // For the health supervisor: an empty commit goes through the writer's queue and
    // resolves once the writer has handled it (an empty transaction, nothing written).
    let dir = TempDir::new("ping");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let before = std::fs::metadata(dir.db()).unwrap().len();
    for _ in 0..20 {
        store.commit(Vec::new()).blocking_recv().unwrap().unwrap();
    }
    assert_eq!(store.stats().commits, 20);
    assert_eq!(store.stats().writes, 0);
    assert!(store.stats().writer_idle < std::time::Duration::from_secs(60));
    assert_eq!(std::fs::metadata(dir.db()).unwrap().len(), before);
}
