//! Group commit: many concurrent committers, every acknowledged write present after reopen.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use holdline_store::{Store, StoreOptions, Write};

#[test]
fn concurrent_committers_all_acknowledged_writes_survive_reopen() {
    let dir = TempDir::new("group");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let threads = 8;
    let per_thread = 60;
    let store = Arc::new(store);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for k in 0..per_thread {
                    let i = t * per_thread + k;
                    store
                        .commit_blocking(vec![Write::UpsertBinding(binding(i, NOW + 3600))])
                        .unwrap();
                }
            })
        })
        .collect();
    // Meanwhile, a burst of asynchronous commits queued without waiting.
    let base = threads * per_thread;
    let pending: Vec<_> = (0..400)
        .map(|k| store.commit(vec![Write::UpsertBinding(binding(base + k, NOW + 3600))]))
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for rx in pending {
        rx.blocking_recv().unwrap().unwrap();
    }
    let total = base + 400;
    let stats = store.stats();
    assert_eq!(stats.commits as usize, total);
    assert_eq!(stats.writes as usize, total);
    assert!(
        stats.groups < stats.commits,
        "commits were grouped: {} groups for {} commits (largest {})",
        stats.groups,
        stats.commits,
        stats.largest_group
    );
    drop(store);

    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let loaded = store.load_bindings().unwrap();
    assert_eq!(loaded.items.len(), total);
    for i in 0..total {
        assert!(
            loaded.items.contains(&binding(i, NOW + 3600)),
            "binding {i} lost"
        );
    }
}

#[test]
fn one_invalid_commit_does_not_fail_its_group() {
    let dir = TempDir::new("group-invalid");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let mut rxs = Vec::new();
    for i in 0..50 {
        let mut b = binding(i, NOW + 60);
        if i % 10 == 3 {
            b.source = "0.0.0.0:0".parse().unwrap();
            b.expires_at = -1; // out of range: refused
        }
        rxs.push((i, store.commit(vec![Write::UpsertBinding(b)])));
    }
    for (i, rx) in rxs {
        let r = rx.blocking_recv().unwrap();
        assert_eq!(r.is_ok(), i % 10 != 3, "commit {i}: {r:?}");
    }
    assert_eq!(store.load_bindings().unwrap().items.len(), 45);
}

#[test]
fn commit_can_be_awaited_from_async_code() {
    // The daemon awaits durability; no runtime inside the store, any executor works.
    let dir = TempDir::new("group-async");
    let (store, _) = Store::open(&dir.db(), StoreOptions::default()).unwrap();
    let rx = store.commit(vec![Write::UpsertBinding(binding(1, NOW + 60))]);
    let r = futures_lite_block_on(rx);
    assert!(r.unwrap().is_ok());
}

/// Minimal executor: poll with a thread-parking waker.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
