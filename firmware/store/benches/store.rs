//! Store figures (run by hand, not in CI):
//!
//!     cargo bench -p holdline-store --bench store [-- purge|latency|rss|group ...]
//!
//! - purge time for 100,000 bindings with 1 % damaged (every kind of damage);
//! - group commit: bindings per second and per-commit latency (p50/p99) at several
//!   numbers of concurrent committers, `synchronous = FULL` (the appliance's setting) and
//!   NORMAL for comparison;
//! - commit latency while a purge of 100,000 bindings runs, versus idle;
//! - RSS with 100,000 bindings loaded.
//!
//! The store lives in `HOLDLINE_BENCH_DIR` (default: the system temp dir) — put it on the
//! disk you want to measure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holdline_store::damage::{damage_rows, RowDamage};
use holdline_store::{Binding, Durability, Provenance, Store, StoreOptions, Transport, Write};

const NOW: i64 = 1_900_000_000;

fn binding(i: usize, expires_at: i64) -> Binding {
    let source: SocketAddr = format!("10.{}.{}.{}:5060", i / 62_500, (i / 250) % 250, i % 250 + 1)
        .parse()
        .unwrap();
    Binding {
        aor: format!("sip:{}@cloud.test", 100_000 + i),
        contact: format!(
            "<sip:{}@{};transport=udp>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-{i:012}>\";reg-id=1",
            100_000 + i,
            source
        ),
        contact_uri: format!("sip:{}@{};transport=udp", 100_000 + i, source),
        expires_at,
        call_id: format!("{i:08x}-4c1d-9a7e@10.0.0.1"),
        cseq: 1000 + (i as u32 % 5000),
        source,
        transport: Transport::Udp,
        instance_id: Some(format!("<urn:uuid:00000000-0000-0000-0000-{i:012}>")),
        reg_id: Some(1),
        provenance: Provenance::CloudVerified { at: NOW - 60 },
        last_seen: NOW - 30,
        path: vec!["<sip:holdline.site.local;lr>".to_owned()],
    }
}

fn bench_dir(tag: &str) -> PathBuf {
    let base = std::env::var_os("HOLDLINE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = base.join(format!("holdline-store-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Fill a store with `n` bindings, 10 % of them expired at NOW.
fn fill(path: &Path, n: usize) {
    let (store, _) = Store::open(path, StoreOptions::default()).unwrap();
    let mut i = 0;
    while i < n {
        let end = (i + 2000).min(n);
        store
            .commit_blocking(
                (i..end)
                    .map(|k| {
                        Write::UpsertBinding(binding(
                            k,
                            if k % 10 == 0 { NOW - 1 } else { NOW + 3600 },
                        ))
                    })
                    .collect(),
            )
            .unwrap();
        i = end;
    }
}

/// `committers` threads, each committing one binding per commit, `total` in all.
/// Returns (bindings/s, sorted latencies).
fn group_commit(
    path: &Path,
    durability: Durability,
    committers: usize,
    total: usize,
) -> (f64, Vec<Duration>) {
    let opts = StoreOptions {
        durability,
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(path, opts).unwrap();
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let per = total / committers;
    let start = Instant::now();
    let handles: Vec<_> = (0..committers)
        .map(|t| {
            let store = store.clone();
            let lat = Arc::clone(&lat);
            std::thread::spawn(move || {
                let mut mine = Vec::with_capacity(per);
                for k in 0..per {
                    let b = binding(5_000_000 + t * per + k, NOW + 3600);
                    let t0 = Instant::now();
                    store
                        .commit_blocking(vec![Write::UpsertBinding(b)])
                        .unwrap();
                    mine.push(t0.elapsed());
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let took = start.elapsed();
    let mut l = std::mem::take(&mut *lat.lock().unwrap());
    l.sort();
    ((per * committers) as f64 / took.as_secs_f64(), l)
}

fn main() {
    // `cargo bench` passes `--bench`; other words pick sections: purge, latency, rss, group
    // (all by default).
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| picked.is_empty() || picked.iter().any(|p| p == s);
    println!("# holdline-store benchmark");
    println!(
        "machine: {} cores visible",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // ---------------------------------------------------------------- purge, 100k, 1 % damaged
    let dir = bench_dir("purge");
    let db = dir.join("holdline.db");
    let t = Instant::now();
    fill(&db, 100_000);
    println!(
        "\nfill 100,000 bindings (50 commits of 2,000): {}",
        ms(t.elapsed())
    );
    let mut used = Vec::new();
    let per_kind = 1000 / RowDamage::ALL.len() + 1; // 9 kinds x 112 = 1,008 rows ~ 1 %
    for (k, kind) in RowDamage::ALL.iter().enumerate() {
        let ids = damage_rows(&db, "bindings", *kind, per_kind, 77 + k as u64, &used).unwrap();
        used.extend(ids);
    }
    println!(
        "damaged rows: {} ({} kinds x {per_kind})",
        used.len(),
        RowDamage::ALL.len()
    );
    let (store, _) = Store::open(&db, StoreOptions::default()).unwrap();
    for batch in [500usize, 5000].into_iter().filter(|_| want("purge")) {
        // Fresh damaged copy for each batch size.
        drop(store.clone());
        let copy = dir.join(format!("copy-{batch}.db"));
        holdline_store::damage::copy_store(&db, &copy).unwrap();
        let (s2, _) = Store::open(&copy, StoreOptions::default()).unwrap();
        let rep = s2.purge_expired(NOW, batch).unwrap();
        println!(
            "purge (batch {batch}): {} — purged {}, quarantined {}, batches {}, unreadable {}",
            ms(rep.took),
            rep.purged,
            rep.quarantined,
            rep.batches,
            rep.unreadable
        );
        let rep2 = s2.purge_expired(NOW, batch).unwrap();
        println!(
            "  second purge, nothing to do: {} ({} batches)",
            ms(rep2.took),
            rep2.batches
        );
    }

    // ---------------------------------------------------------------- commit latency during a purge
    if want("latency") {
        let copy = dir.join("copy-during.db");
        holdline_store::damage::copy_store(&db, &copy).unwrap();
        let (s3, _) = Store::open(&copy, StoreOptions::default()).unwrap();
        let measure = |store: &Store, n: usize, base: usize| {
            let mut l = Vec::with_capacity(n);
            for k in 0..n {
                let t0 = Instant::now();
                store
                    .commit_blocking(vec![Write::UpsertBinding(binding(
                        9_000_000 + base + k,
                        NOW + 3600,
                    ))])
                    .unwrap();
                l.push(t0.elapsed());
            }
            l.sort();
            l
        };
        let idle = measure(&s3, 300, 0);
        let running = Arc::new(AtomicBool::new(true));
        let purger = {
            let s = s3.clone();
            let running = Arc::clone(&running);
            std::thread::spawn(move || {
                let mut reps = 0;
                while running.load(Ordering::Relaxed) {
                    s.purge_expired(NOW, 500).unwrap();
                    reps += 1;
                }
                reps
            })
        };
        let busy = measure(&s3, 300, 1000);
        running.store(false, Ordering::Relaxed);
        let purges = purger.join().unwrap();
        println!(
            "\ncommit latency, 1 committer: idle p50 {} p99 {}; during purge (batch 500, {purges} purge passes) p50 {} p99 {}",
            ms(pct(&idle, 0.5)),
            ms(pct(&idle, 0.99)),
            ms(pct(&busy, 0.5)),
            ms(pct(&busy, 0.99))
        );
    }
    drop(store);

    // ---------------------------------------------------------------- RSS with 100k loaded
    if want("rss") {
        let before = rss_kib();
        let copy = dir.join("copy-rss.db");
        holdline_store::damage::copy_store(&db, &copy).unwrap();
        let (s4, _) = Store::open(&copy, StoreOptions::default()).unwrap();
        let t = Instant::now();
        let loaded = s4.load_bindings().unwrap();
        let took = t.elapsed();
        let after = rss_kib();
        println!(
            "\nload_bindings: {} good, {} quarantined in {}; RSS {} KiB before open, {} KiB with them loaded (+{} KiB)",
            loaded.items.len(),
            loaded.quarantined,
            ms(took),
            before,
            after,
            after.saturating_sub(before)
        );
        drop(loaded);
    }
    let _ = std::fs::remove_dir_all(&dir);

    // ---------------------------------------------------------------- group commit
    if !want("group") {
        return;
    }
    println!("\ngroup commit, one binding per commit:");
    println!("| sync | committers | bindings/s | p50 | p99 |");
    println!("|---|---|---|---|---|");
    for durability in [Durability::Full, Durability::Normal] {
        for committers in [1usize, 8, 64, 256] {
            let dir = bench_dir("gc");
            let total = if committers == 1 { 1000 } else { 10_240 };
            let (rate, l) = group_commit(&dir.join("holdline.db"), durability, committers, total);
            println!(
                "| {:?} | {committers} | {rate:.0} | {} | {} |",
                durability,
                ms(pct(&l, 0.5)),
                ms(pct(&l, 0.99))
            );
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}
