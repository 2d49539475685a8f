//! The incident's cause, replayed: a store with hundreds of bindings, a few percent of them
//! damaged in every way the corruption tool knows, then load and purge run over it.
//! Nothing may crash; the damaged rows end up in quarantine with their reasons; every good
//! binding is still loaded, before and after the purge.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use common::*;
use holdline_store::damage::{damage_rows, RowDamage};
use holdline_store::{Binding, Store, StoreOptions, Write};

const N: usize = 400;
const PER_KIND: usize = 2; // 9 kinds x 2 = 18 rows = 4.5 %

/// Build the store; bindings with i % 10 == 0 are already expired at NOW.
fn build(dir: &TempDir) -> Vec<Binding> {
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let all: Vec<Binding> = (0..N)
        .map(|i| binding(i, if i % 10 == 0 { NOW - 5 } else { NOW + 3600 }))
        .collect();
    for chunk in all.chunks(50) {
        store
            .commit_blocking(chunk.iter().cloned().map(Write::UpsertBinding).collect())
            .unwrap();
    }
    all
}

/// Damage PER_KIND rows per kind; returns the damaged row ids (duplicates: the originals,
/// which stay good in their copy) and how many rows must end in quarantine.
fn damage(dir: &TempDir) -> (Vec<i64>, Vec<i64>) {
    let mut damaged = Vec::new();
    let mut duplicated = Vec::new();
    for (k, kind) in RowDamage::ALL.iter().enumerate() {
        let ids = damage_rows(
            &dir.db(),
            "bindings",
            *kind,
            PER_KIND,
            1000 + k as u64,
            &[damaged.clone(), duplicated.clone()].concat(),
        )
        .unwrap();
        assert_eq!(ids.len(), PER_KIND);
        if *kind == RowDamage::Duplicate {
            duplicated.extend(ids);
        } else {
            damaged.extend(ids);
        }
    }
    (damaged, duplicated)
}

/// Row id n holds binding n-1 (inserted in order, no deletes before damage).
fn good_set(all: &[Binding], damaged: &[i64]) -> HashSet<String> {
    all.iter()
        .enumerate()
        .filter(|(i, _)| !damaged.contains(&(*i as i64 + 1)))
        .map(|(_, b)| format!("{} {}", b.aor, b.contact_uri))
        .collect()
}

fn keys(bs: &[Binding]) -> HashSet<String> {
    bs.iter()
        .map(|b| format!("{} {}", b.aor, b.contact_uri))
        .collect()
}

fn assert_quarantine_has_every_kind(store: &Store) {
    let q = store.quarantine(1000).unwrap();
    for kind in RowDamage::ALL {
        let n = q
            .iter()
            .filter(|r| r.reason.starts_with(kind.expected_reason()))
            .count();
        assert!(
            n >= PER_KIND,
            "{kind:?}: {n} rows with reason {:?} in quarantine: {q:#?}",
            kind.expected_reason()
        );
    }
    assert!(q.iter().all(|r| r.table == "bindings" && !r.raw.is_empty()));
}

#[test]
fn load_then_purge_over_damaged_store() {
    let dir = TempDir::new("incident-load");
    let all = build(&dir);
    let (damaged, duplicated) = damage(&dir);
    let good = good_set(&all, &damaged);

    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(report.set_aside.is_none(), "row damage is not file damage");
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.quarantined, damaged.len() + duplicated.len());
    assert_eq!(keys(&loaded.items), good, "every good binding is loaded");
    assert_eq!(loaded.items.len(), good.len(), "no duplicate survives");
    assert_eq!(
        store.quarantine_count().unwrap() as usize,
        loaded.quarantined
    );
    assert_quarantine_has_every_kind(&store);

    let rep = store.purge_expired(NOW, 50).unwrap();
    assert_eq!(rep.quarantined, 0, "already quarantined by the load");
    let expected_left: HashSet<String> = all
        .iter()
        .enumerate()
        .filter(|(i, b)| !damaged.contains(&(*i as i64 + 1)) && b.expires_at > NOW)
        .map(|(_, b)| format!("{} {}", b.aor, b.contact_uri))
        .collect();
    assert_eq!(rep.purged_bindings, good.len() - expected_left.len());
    let after = store.load_bindings().unwrap();
    assert_eq!(after.quarantined, 0);
    assert_eq!(keys(&after.items), expected_left);
}

#[test]
fn purge_first_over_damaged_store_then_reopen() {
    // The incident: the routine purge is what meets the corrupt records.
    let dir = TempDir::new("incident-purge");
    let all = build(&dir);
    let (damaged, duplicated) = damage(&dir);
    // Row id n holds binding n-1; bindings with i % 10 == 0 are expired (purged, with
    // their copy, before the duplicate check).
    let live_dups = duplicated.iter().filter(|id| (**id - 1) % 10 != 0).count();

    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let rep = store.purge_expired(NOW, 7).unwrap();
    assert_eq!(
        rep.quarantined,
        damaged.len() + live_dups,
        "purge quarantines what it cannot trust, duplicates included"
    );
    assert_eq!(rep.unreadable, 0);
    assert!(rep.batches > N / 7);
    // Purge again: nothing left to quarantine, nothing crashes.
    let rep2 = store.purge_expired(NOW, 7).unwrap();
    assert_eq!((rep2.purged, rep2.quarantined), (0, 0));
    drop(store);

    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert_eq!(report.quarantined_total as usize, damaged.len() + live_dups);
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.quarantined, 0, "the purge left nothing bad behind");
    let expected_left: HashSet<String> = all
        .iter()
        .enumerate()
        .filter(|(i, b)| !damaged.contains(&(*i as i64 + 1)) && b.expires_at > NOW)
        .map(|(_, b)| format!("{} {}", b.aor, b.contact_uri))
        .collect();
    assert_eq!(keys(&loaded.items), expected_left);
    assert_eq!(loaded.items.len(), expected_left.len());
    assert_quarantine_has_every_kind(&store);
    // Every loaded binding is intact, field for field.
    for b in &loaded.items {
        assert!(
            all.contains(b),
            "loaded binding differs from what was stored: {b:?}"
        );
    }
    let check = store.check().unwrap();
    assert!(check.ok);
    assert_eq!(check.quarantined, 0);
}

#[test]
fn damage_in_every_table_is_quarantined() {
    let dir = TempDir::new("incident-tables");
    {
        let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        let mut w = Vec::new();
        for i in 0..30 {
            w.push(Write::UpsertSubscription(subscription(i, NOW + 100)));
            w.push(Write::SetMwi {
                aor: format!("sip:{}@cloud.test", 1000 + i),
                body: "Messages-Waiting: yes\r\n".into(),
                content_type: "application/simple-message-summary".into(),
                at: NOW,
            });
            w.push(Write::Event(holdline_store::Event {
                at: NOW + i as i64,
                kind: "uplink.down".into(),
                detail: format!("outage {i}"),
            }));
        }
        store.commit_blocking(w).unwrap();
    }
    let mut expected = 0;
    for (t, table) in ["subscriptions", "mwi", "events"].iter().enumerate() {
        let mut used = Vec::new();
        for (k, kind) in RowDamage::ALL.iter().enumerate() {
            match damage_rows(&dir.db(), table, *kind, 1, (t * 100 + k) as u64, &used) {
                Ok(ids) => {
                    // Events have no key: a copied event is not a duplicate.
                    if !(*table == "events" && *kind == RowDamage::Duplicate) {
                        expected += ids.len();
                    }
                    used.extend(ids);
                }
                Err(e) => assert!(e.to_string().contains("has no"), "{e}"),
            }
        }
    }
    assert!(expected >= 18, "damage was written: {expected}");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let check = store.check().unwrap();
    assert!(check.ok);
    assert_eq!(check.quarantined, expected, "{check:?}");
    let subs = store.load_subscriptions().unwrap();
    assert_eq!(subs.quarantined, 0);
    assert!(subs.items.len() >= 30 - 9);
    assert!(store.events(100).unwrap().len() >= 30 - 7);
    assert!(store.mwi("sip:1029@cloud.test").is_ok());
}

/// Rows of pure noise (random types, random bytes, invalid UTF-8, huge integers, reals) in
/// every table, mixed with good rows: loads, purge and check never fail and good rows stay.
#[test]
fn random_noise_rows_in_every_table() {
    use holdline_store::damage::Rng;
    let dir = TempDir::new("incident-noise");
    let all: Vec<Binding> = (0..200).map(|i| binding(i, NOW + 3600)).collect();
    {
        let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        store
            .commit_blocking(all.iter().cloned().map(Write::UpsertBinding).collect())
            .unwrap();
    }
    let mut rng = Rng::new(2026);
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let tables: [(&str, usize); 4] = [
        ("bindings", 15),
        ("subscriptions", 18),
        ("mwi", 5),
        ("events", 4),
    ];
    let mut noise = 0;
    for (table, ncols) in tables {
        let cols: Vec<String> = conn
            .prepare(&format!("SELECT * FROM {table} LIMIT 0"))
            .unwrap()
            .column_names()
            .skip(1)
            .map(|s| s.to_string())
            .collect();
        assert_eq!(cols.len(), ncols);
        for _ in 0..40 {
            let vals: Vec<String> = (0..ncols)
                .map(|_| match rng.below(6) {
                    0 => "NULL".to_owned(),
                    1 => (rng.next_u64() as i64).to_string(),
                    2 => format!("{}e{}", rng.below(1000), rng.below(300)),
                    3 => {
                        let hex: String = (0..rng.below(30))
                            .map(|_| format!("{:02x}", rng.next_u64() as u8))
                            .collect();
                        format!("CAST(x'{hex}' AS TEXT)")
                    }
                    4 => {
                        let hex: String = (0..rng.below(30))
                            .map(|_| format!("{:02x}", rng.next_u64() as u8))
                            .collect();
                        format!("x'{hex}'")
                    }
                    _ => "'sip:1@x'".to_owned(),
                })
                .collect();
            conn.execute(
                &format!(
                    "INSERT INTO {table} ({}) VALUES ({})",
                    cols.join(","),
                    vals.join(",")
                ),
                [],
            )
            .unwrap();
            noise += 1;
        }
    }
    drop(conn);
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let rep = store.purge_expired(NOW, 25).unwrap();
    let check = store.check().unwrap();
    assert!(check.ok);
    assert_eq!(
        rep.quarantined + check.quarantined,
        noise,
        "{rep:?} {check:?}"
    );
    let loaded = store.load_bindings().unwrap();
    assert_eq!(keys(&loaded.items), keys(&all));
    assert_eq!(store.load_subscriptions().unwrap().items.len(), 0);
}

/// The same key three times with valid checksums (as a bad restore or a damaged index could
/// leave it): the freshest `last_seen` wins whatever the row order; the others are
/// quarantined as duplicates.
#[test]
fn duplicate_keys_keep_the_freshest_row() {
    let dir = TempDir::new("incident-dups");
    let seen = [NOW - 50, NOW - 10, NOW - 90]; // middle, newest, oldest, in row order
    for (k, last_seen) in seen.iter().enumerate() {
        let p = dir.0.join(format!("part{k}.db"));
        let (store, _) = Store::open(&p, StoreOptions::default()).unwrap();
        let mut b = binding(1, NOW + 100);
        b.last_seen = *last_seen;
        store
            .commit_blocking(vec![
                Write::UpsertBinding(b),
                Write::UpsertBinding(binding(10 + k, NOW + 100)),
            ])
            .unwrap();
    }
    {
        let (_store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    }
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let cols = binding_cols();
    for k in 0..3 {
        let p = dir.0.join(format!("part{k}.db"));
        conn.execute("ATTACH DATABASE ?1 AS part", [p.to_str().unwrap()])
            .unwrap();
        conn.execute(
            &format!(
                "INSERT INTO main.bindings ({cols}) SELECT {cols} FROM part.bindings ORDER BY id"
            ),
            [],
        )
        .unwrap();
        conn.execute("DETACH DATABASE part", []).unwrap();
    }
    drop(conn);
    // The purge applies the same rule.
    let copy = dir.0.join("copy.db");
    holdline_store::damage::copy_store(&dir.db(), &copy).unwrap();
    {
        let (store, _) = Store::open(&copy, StoreOptions::default()).unwrap();
        assert_eq!(store.purge_expired(NOW, 2).unwrap().quarantined, 2);
        let left = store.load_bindings().unwrap();
        assert_eq!(left.quarantined, 0);
        let one: Vec<_> = left
            .items
            .iter()
            .filter(|b| b.aor == binding(1, 0).aor)
            .collect();
        assert_eq!(one.len(), 1);
        assert_eq!(
            one[0].last_seen,
            NOW - 10,
            "the purge keeps the freshest row too"
        );
    }
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.quarantined, 2);
    assert_eq!(loaded.items.len(), 4);
    let one: Vec<_> = loaded
        .items
        .iter()
        .filter(|b| b.aor == binding(1, 0).aor)
        .collect();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].last_seen, NOW - 10, "the freshest row wins");
    let q = store.quarantine(10).unwrap();
    assert!(q.iter().all(|r| r.reason == "duplicate key"));
    assert_eq!(store.raw_count("bindings").unwrap(), 4);
}

fn binding_cols() -> String {
    [
        "aor",
        "contact",
        "contact_uri",
        "expires_at",
        "call_id",
        "cseq",
        "source",
        "transport",
        "instance_id",
        "reg_id",
        "prov_kind",
        "prov_at",
        "last_seen",
        "path",
        "crc",
    ]
    .join(", ")
}
