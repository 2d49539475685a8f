//! A bad record is logged once — when it is moved to quarantine — not at every read.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::sync::{Arc, Mutex};

use common::*;
use holdline_store::damage::{damage_rows, RowDamage};
use holdline_store::{Store, StoreOptions, Write};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn each_bad_record_is_logged_once() {
    let cap = Capture::default();
    // Global: the quarantine moves are logged from the writer thread.
    tracing_subscriber::fmt()
        .with_writer(cap.clone())
        .with_ansi(false)
        .init();
    let dir = TempDir::new("logging");
    {
        let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
        store
            .commit_blocking(
                (0..100)
                    .map(|i| Write::UpsertBinding(binding(i, NOW + 100)))
                    .collect(),
            )
            .unwrap();
    }
    let mut used = Vec::new();
    for (k, kind) in [
        RowDamage::BadUri,
        RowDamage::BadUtf8,
        RowDamage::ChecksumMismatch,
    ]
    .iter()
    .enumerate()
    {
        used.extend(damage_rows(&dir.db(), "bindings", *kind, 2, k as u64, &used).unwrap());
    }
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    assert_eq!(store.load_bindings().unwrap().quarantined, 6);
    assert_eq!(store.load_bindings().unwrap().quarantined, 0);
    assert_eq!(store.purge_expired(NOW, 10).unwrap().quarantined, 0);
    assert_eq!(store.check().unwrap().quarantined, 0);
    drop(store);
    std::io::stdout().flush().unwrap();
    let log = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("record quarantined"))
        .collect();
    assert_eq!(lines.len(), 6, "{log}");
    assert!(lines.iter().any(|l| l.contains("bad UTF-8 in contact")));
    assert!(lines.iter().any(|l| l.contains("checksum mismatch")));
}
