//! Start-up checks: damaged or foreign files are set aside (never deleted) and a fresh
//! store works; schema versions follow the A/B rollback rule.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use holdline_store::damage::{copy_store, damage_file, FileDamage};
use holdline_store::{Store, StoreError, StoreOptions, Write};
use rusqlite::Connection;

/// A store with `n` bindings, checkpointed into one file, closed.
fn populated(dir: &TempDir, n: usize) {
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let w = (0..n)
        .map(|i| Write::UpsertBinding(binding(i, NOW + 100)))
        .collect();
    store.commit_blocking(w).unwrap();
    drop(store);
    // Fold the WAL into the main file so file damage hits the real data.
    let c = Connection::open(dir.db()).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

/// Open the damaged store: it must be set aside byte for byte, a fresh store must work,
/// and whatever was salvaged must be exactly records that were written (`written`).
/// Returns how many were salvaged.
fn assert_set_aside_and_fresh(dir: &TempDir, original: &[u8], written: usize) -> usize {
    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let aside = report.set_aside.clone().expect("damaged file set aside");
    assert!(report.created);
    assert!(report.set_aside_reason.is_some());
    let name = aside.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("holdline.db.corrupt-20"), "{name}");
    // Never deleted, never changed: the damaged bytes are kept as they were.
    assert_eq!(std::fs::read(&aside).unwrap(), original);
    // Salvaged records are verified originals, nothing else.
    let all: Vec<_> = (0..written).map(|i| binding(i, NOW + 100)).collect();
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.items.len(), report.salvaged);
    assert!(loaded.items.iter().all(|b| all.contains(b)));
    // The fresh store works and says what happened.
    store
        .commit_blocking(vec![Write::UpsertBinding(binding(7000, NOW + 100))])
        .unwrap();
    assert!(store
        .load_bindings()
        .unwrap()
        .items
        .contains(&binding(7000, NOW + 100)));
    let ev = store.events(10).unwrap();
    assert_eq!(ev[0].event.kind, "store.set_aside");
    assert_eq!(store.stats().set_aside, Some(aside));
    drop(store);
    let (_, again) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(
        again.set_aside.is_none(),
        "the fresh store is kept at the next start"
    );
    report.salvaged
}

#[test]
fn truncated_file_is_set_aside() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let dir = TempDir::new("truncated");
    populated(&dir, 300);
    damage_file(&dir.db(), FileDamage::Truncate, 1).unwrap();
    let bytes = std::fs::read(dir.db()).unwrap();
    let salvaged = assert_set_aside_and_fresh(&dir, &bytes, 300);
    eprintln!(
        "truncated: {salvaged} of 300 salvaged, {} bytes",
        bytes.len()
    );
    assert!(salvaged > 0, "rows before the cut are salvaged");
}

#[test]
fn garbage_header_is_set_aside() {
    let dir = TempDir::new("garbage-header");
    populated(&dir, 50);
    damage_file(&dir.db(), FileDamage::GarbageHeader, 2).unwrap();
    let bytes = std::fs::read(dir.db()).unwrap();
    assert_eq!(assert_set_aside_and_fresh(&dir, &bytes, 50), 0);
}

#[test]
fn file_of_random_bytes_is_set_aside() {
    let dir = TempDir::new("garbage-file");
    let mut rng = holdline_store::damage::Rng::new(9);
    let bytes: Vec<u8> = (0..20_000).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(dir.db(), &bytes).unwrap();
    assert_eq!(assert_set_aside_and_fresh(&dir, &bytes, 0), 0);
}

#[test]
fn torn_page_is_set_aside_and_the_rest_salvaged() {
    // A torn page of a b-tree fails quick_check: the file is set aside, and every record
    // on the other pages comes back verified; only the torn page's rows are lost.
    for seed in 0..6 {
        let dir = TempDir::new(&format!("torn-{seed}"));
        populated(&dir, 300);
        damage_file(&dir.db(), FileDamage::TornPage, seed).unwrap();
        let bytes = std::fs::read(dir.db()).unwrap();
        let salvaged = assert_set_aside_and_fresh(&dir, &bytes, 300);
        eprintln!("seed {seed}: {salvaged} of 300 salvaged");
        assert!(
            salvaged >= 200,
            "seed {seed}: only {salvaged} of 300 salvaged"
        );
    }
}

#[test]
fn salvage_can_be_turned_off() {
    let dir = TempDir::new("nosalvage");
    populated(&dir, 300);
    damage_file(&dir.db(), FileDamage::TornPage, 3).unwrap();
    let opts = StoreOptions {
        salvage: false,
        ..StoreOptions::default()
    };
    let (store, report) = Store::open(&dir.db(), opts).unwrap();
    assert!(report.set_aside.is_some());
    assert_eq!(report.salvaged, 0);
    assert!(store.load_bindings().unwrap().items.is_empty());
}

#[test]
fn empty_file_is_a_fresh_store() {
    let dir = TempDir::new("empty");
    std::fs::write(dir.db(), b"").unwrap();
    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(report.set_aside.is_none());
    assert!(report.created);
    store
        .commit_blocking(vec![Write::UpsertBinding(binding(1, NOW + 1))])
        .unwrap();
}

#[test]
fn foreign_sqlite_database_is_set_aside() {
    let dir = TempDir::new("foreign");
    {
        let c = Connection::open(dir.db()).unwrap();
        c.execute_batch(
            "CREATE TABLE location (username TEXT); INSERT INTO location VALUES ('x');",
        )
        .unwrap();
    }
    let (_store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(report
        .set_aside_reason
        .as_deref()
        .unwrap()
        .contains("not a holdline store"));
}

#[test]
fn newer_major_schema_is_refused_and_untouched() {
    let dir = TempDir::new("newer-major");
    populated(&dir, 3);
    {
        let c = Connection::open(dir.db()).unwrap();
        c.pragma_update(None, "user_version", 2_i64 << 16).unwrap();
    }
    let before = std::fs::read(dir.db()).unwrap();
    match Store::open(&dir.db(), StoreOptions::default()) {
        Err(e @ StoreError::SchemaTooNew { .. }) => {
            assert!(
                e.to_string().contains("refusing to open it read-write"),
                "{e}"
            )
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a newer major schema must be refused"),
    }
    assert_eq!(std::fs::read(dir.db()).unwrap(), before, "left untouched");
    let siblings = std::fs::read_dir(&dir.0).unwrap().count();
    assert!(siblings <= 3, "nothing set aside");
}

#[test]
fn newer_minor_schema_is_readable_after_rollback() {
    // What a future 1.1 firmware may do (add a column with a default, add a table); this
    // firmware (1.0) must still read and write the store after an A/B rollback.
    let dir = TempDir::new("newer-minor");
    populated(&dir, 5);
    {
        let c = Connection::open(dir.db()).unwrap();
        c.execute_batch(
            "ALTER TABLE bindings ADD COLUMN user_agent TEXT DEFAULT NULL;
             ALTER TABLE bindings ADD COLUMN crc_v1_1 INTEGER DEFAULT NULL;
             CREATE TABLE dialogs (id INTEGER PRIMARY KEY, state TEXT);
             UPDATE bindings SET user_agent = 'Yealink', crc_v1_1 = 12345;",
        )
        .unwrap();
        c.pragma_update(None, "user_version", (1_i64 << 16) | 1)
            .unwrap();
    }
    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert_eq!(report.found_version, Some((1, 1)));
    assert_eq!(report.schema_version, (1, 1), "not downgraded");
    assert_eq!(report.migrations_applied, 0);
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.items.len(), 5);
    assert_eq!(loaded.quarantined, 0);
    store
        .commit_blocking(vec![Write::UpsertBinding(binding(9, NOW + 100))])
        .unwrap();
    assert_eq!(store.load_bindings().unwrap().items.len(), 6);
}

#[test]
fn copy_keeps_version_and_rows() {
    let dir = TempDir::new("copy");
    populated(&dir, 10);
    let copy = dir.0.join("copy.db");
    copy_store(&dir.db(), &copy).unwrap();
    let (store, report) = Store::open(&copy, StoreOptions::default()).unwrap();
    assert_eq!(report.found_version, Some((1, 0)));
    assert_eq!(store.load_bindings().unwrap().items.len(), 10);
}

#[test]
fn unopenable_path_is_an_error_not_a_set_aside() {
    let dir = TempDir::new("nodir");
    let path = dir.0.join("missing-dir").join("holdline.db");
    assert!(Store::open(&path, StoreOptions::default()).is_err());
}

#[test]
fn garbage_wal_is_ignored_not_fatal() {
    // SQLite checksums WAL frames; a WAL of garbage (e.g. a torn append) is not replayed.
    let dir = TempDir::new("garbage-wal");
    populated(&dir, 20);
    let mut rng = holdline_store::damage::Rng::new(5);
    let wal: Vec<u8> = (0..16_384).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(format!("{}-wal", dir.db().display()), wal).unwrap();
    let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert!(report.set_aside.is_none(), "{:?}", report.set_aside_reason);
    assert_eq!(store.load_bindings().unwrap().items.len(), 20);
}

#[test]
fn damage_appearing_while_running_never_fails_load_or_purge() {
    // quick_check passed at start; then a page tears under the running store (bit rot,
    // a bad sector). Reads skip what SQLite cannot read, bad rows go to quarantine, and
    // neither the load nor the purge returns an error.
    for seed in 0..4 {
        let dir = TempDir::new(&format!("live-{seed}"));
        populated(&dir, 400);
        let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        assert!(report.set_aside.is_none());
        // Make sure every change is in the main file, then tear a page of it.
        drop(store);
        let c = Connection::open(dir.db()).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        damage_file(&dir.db(), FileDamage::TornPage, seed).unwrap();
        drop(c);
        let loaded = store.load_bindings().unwrap();
        let written: Vec<_> = (0..400).map(|i| binding(i, NOW + 100)).collect();
        assert!(loaded.items.iter().all(|b| written.contains(b)));
        let rep = store.purge_expired(NOW, 50);
        let check = store.check();
        eprintln!(
            "seed {seed}: loaded {} quarantined {} unreadable {}; purge {:?}; check ok {:?}",
            loaded.items.len(),
            loaded.quarantined,
            loaded.unreadable,
            rep.as_ref().map(|r| (r.quarantined, r.unreadable)),
            check.as_ref().map(|c| c.ok)
        );
        assert!(rep.is_ok(), "purge: {rep:?}");
        assert!(check.is_ok(), "check: {check:?}");
        let w = store.commit_blocking(vec![
            Write::UpsertBinding(binding(5, NOW + 200)),
            Write::UpsertBinding(binding(9000, NOW + 200)),
        ]);
        eprintln!("seed {seed}: commit after the tear: {w:?}");
        assert!(store.stats().damaged.is_some(), "the damage is reported");
        drop(store);
        // The next start sets the file aside and salvages the verified records — unless
        // the checkpoint at close rewrote the torn page from a good cached copy.
        let (store, report) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        if report.set_aside.is_some() {
            assert!(report.salvaged >= 300, "{}", report.salvaged);
        } else {
            assert!(store.check().unwrap().ok);
        }
        eprintln!(
            "seed {seed}: reopened, set aside: {:?}",
            report.set_aside.is_some()
        );
        assert!(store.stats().damaged.is_none());
    }
}
