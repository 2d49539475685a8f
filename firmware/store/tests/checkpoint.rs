//! Checkpoints run off the commit path: the writer never checkpoints itself
//! (`wal_autocheckpoint = 0` on its connection), a background thread copies committed WAL
//! frames into the database, and the WAL is folded in and removed when the store closes.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use holdline_store::{Store, StoreOptions, Write};
use rusqlite::{Connection, OpenFlags};

/// Rows of `bindings` in the main database file alone (a byte copy without its WAL).
fn rows_in_main_file(dir: &TempDir) -> i64 {
    let copy = dir.0.join("main-only.db");
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(dir.db(), &copy).unwrap();
    let conn = Connection::open_with_flags(&copy, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row("SELECT count(*) FROM bindings", [], |r| r.get(0))
        .unwrap_or(-1)
}

#[test]
fn committed_frames_reach_the_database_file_without_the_writer_checkpointing() {
    let dir = TempDir::new("checkpoint");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    for chunk in 0..6 {
        let writes = (chunk * 500..(chunk + 1) * 500)
            .map(|i| Write::UpsertBinding(binding(i, NOW + 3600)))
            .collect();
        store.commit_blocking(writes).unwrap();
    }
    // The writer's own connection does not checkpoint (its COMMIT never copies pages).
    let wal = std::fs::metadata(dir.0.join("holdline.db-wal"))
        .unwrap()
        .len();
    assert!(wal > 0, "the commits are in the WAL");
    // The checkpointer copies them into the main file (bounded wait: a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = rows_in_main_file(&dir);
        if n == 3000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "checkpointer did not copy the WAL into the database ({n} rows in the main file)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Writes keep working after checkpoints, and everything is there after a reopen.
    store
        .commit_blocking(vec![Write::UpsertBinding(binding(3000, NOW + 3600))])
        .unwrap();
    drop(store);
    assert!(
        !dir.0.join("holdline.db-wal").exists()
            || std::fs::metadata(dir.0.join("holdline.db-wal"))
                .unwrap()
                .len()
                == 0,
        "closing the store folds the WAL in"
    );
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert_eq!(store.load_bindings().unwrap().items.len(), 3001);
}
