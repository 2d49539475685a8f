//! The one writer thread: group commit, purge steps, quarantine moves.
//!
//! Every write to the database goes through this thread, so SQLite never sees two writers
//! and a purge batch is just one more short job in the queue between two group commits.
//! Consecutive commits found waiting in the queue are applied in one `BEGIN IMMEDIATE`
//! transaction and made durable by one WAL fsync (`synchronous = FULL`); only then is each
//! committer told `Ok`. A commit that arrives while the fsync runs waits for the next
//! group: no timer, no added delay when idle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use crate::db::{self, BadRow};
use crate::error::StoreError;
use crate::model::{PurgeReport, Write};
use crate::unix_now;

/// How a committer is told its commit is durable.
pub(crate) enum Reply {
    Async(oneshot::Sender<Result<(), StoreError>>),
    Sync(SyncSender<Result<(), StoreError>>),
}

impl Reply {
    pub(crate) fn send(self, r: Result<(), StoreError>) {
        // A committer that stopped waiting is not an error of the store.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(r);
            }
            Reply::Sync(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

/// What one purge batch changed.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Applied {
    pub purged: usize,
    pub quarantined: usize,
}

pub(crate) enum Job {
    Commit {
        writes: Vec<Write>,
        reply: Reply,
    },
    /// Delete these expired rows (still expired) and quarantine these bad rows (still as
    /// judged), in one short transaction. The reading and judging was done by the caller
    /// on the read connection, so the writer is held only for the changes.
    PurgeApply {
        table: &'static str,
        now: i64,
        expired: Vec<i64>,
        bad: Vec<BadRow>,
        reply: SyncSender<Result<Applied, StoreError>>,
    },
    Quarantine {
        rows: Vec<BadRow>,
        reply: SyncSender<Result<usize, StoreError>>,
    },
    Trim {
        events: usize,
        quarantine: usize,
        reply: SyncSender<Result<(usize, u64), StoreError>>,
    },
}

/// Counters shared by the writer and the handles.
pub(crate) struct Shared {
    pub commits: AtomicU64,
    pub commits_failed: AtomicU64,
    pub writes: AtomicU64,
    pub groups: AtomicU64,
    pub largest_group: AtomicU64,
    pub quarantined: AtomicU64,
    pub quarantined_total: AtomicU64,
    pub alive: AtomicBool,
    beat_ms: AtomicU64,
    epoch: Instant,
    pub last_purge: Mutex<Option<PurgeReport>>,
    /// First sign of damage met while running (the file needs the set-aside at next start).
    pub damaged: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(quarantined_total: u64) -> Self {
        Shared {
            commits: AtomicU64::new(0),
            commits_failed: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            largest_group: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            quarantined_total: AtomicU64::new(quarantined_total),
            alive: AtomicBool::new(true),
            beat_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            last_purge: Mutex::new(None),
            damaged: Mutex::new(None),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the writer last looped.
    pub(crate) fn idle(&self) -> Duration {
        let now = self.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(self.beat_ms.load(Ordering::Relaxed)))
    }

    /// Record that the database file itself is damaged (logged once). The running store
    /// keeps serving what it can; the next [`crate::Store::open`] sets the file aside and
    /// salvages every verified record.
    pub(crate) fn note_damage(&self, what: &str) {
        let mut d = self
            .damaged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if d.is_none() {
            tracing::error!(
                what,
                "store file damaged while running; it will be set aside and salvaged at the next start"
            );
            *d = Some(what.to_owned());
        }
    }

    /// Note damage if `e` says the file is corrupt.
    pub(crate) fn note_if_corrupt(&self, e: &rusqlite::Error) {
        if is_corrupt(e) {
            self.note_damage(&e.to_string());
        }
    }

    pub(crate) fn add_quarantined(&self, n: usize) {
        let n = n as u64;
        self.quarantined.fetch_add(n, Ordering::Relaxed);
        self.quarantined_total.fetch_add(n, Ordering::Relaxed);
    }
}

/// The error says the file is damaged (not a transient or resource error).
pub(crate) fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// Marks the writer dead when its thread ends, also by unwinding.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Relaxed);
    }
}

pub(crate) fn run(mut conn: Connection, rx: Receiver<Job>, shared: Arc<Shared>, max_group: usize) {
    let _alive = AliveGuard(Arc::clone(&shared));
    let max_group = max_group.max(1);
    loop {
        shared.beat();
        let first = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut jobs = vec![first];
        while jobs.len() < max_group {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut group: Vec<(Vec<Write>, Reply)> = Vec::new();
        for job in jobs {
            match job {
                Job::Commit { writes, reply } => {
                    match writes.iter().try_for_each(db::validate_write) {
                        Ok(()) => group.push((writes, reply)),
                        Err(e) => {
                            shared.commits_failed.fetch_add(1, Ordering::Relaxed);
                            reply.send(Err(StoreError::Invalid(e)));
                        }
                    }
                }
                other => {
                    flush(&mut conn, &mut group, &shared);
                    other_job(&mut conn, other, &shared);
                }
            }
        }
        flush(&mut conn, &mut group, &shared);
    }
}

fn apply_all<'a>(
    conn: &mut Connection,
    commits: impl Iterator<Item = &'a Vec<Write>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for writes in commits {
        for w in writes {
            db::apply(&tx, w)?;
        }
    }
    tx.commit()
}

/// Apply a group of commits in one transaction; on failure, retry each alone so that one
/// failing commit cannot fail the others.
fn flush(conn: &mut Connection, group: &mut Vec<(Vec<Write>, Reply)>, shared: &Shared) {
    if group.is_empty() {
        return;
    }
    let commits = std::mem::take(group);
    let n = commits.len() as u64;
    let nwrites: u64 = commits.iter().map(|(w, _)| w.len() as u64).sum();
    match apply_all(conn, commits.iter().map(|(w, _)| w)) {
        Ok(()) => {
            shared.groups.fetch_add(1, Ordering::Relaxed);
            shared.largest_group.fetch_max(n, Ordering::Relaxed);
            shared.writes.fetch_add(nwrites, Ordering::Relaxed);
            shared.commits.fetch_add(n, Ordering::Relaxed);
            for (_, reply) in commits {
                reply.send(Ok(()));
            }
        }
        Err(e) => {
            shared.note_if_corrupt(&e);
            tracing::warn!(error = %e, commits = n, "group commit failed; retrying commits one by one");
            for (writes, reply) in commits {
                match apply_all(conn, std::iter::once(&writes)) {
                    Ok(()) => {
                        shared.groups.fetch_add(1, Ordering::Relaxed);
                        shared
                            .writes
                            .fetch_add(writes.len() as u64, Ordering::Relaxed);
                        shared.commits.fetch_add(1, Ordering::Relaxed);
                        reply.send(Ok(()));
                    }
                    Err(e) => {
                        shared.note_if_corrupt(&e);
                        tracing::error!(error = %e, "commit failed");
                        shared.commits_failed.fetch_add(1, Ordering::Relaxed);
                        reply.send(Err(StoreError::Sqlite(e)));
                    }
                }
            }
        }
    }
}

fn other_job(conn: &mut Connection, job: Job, shared: &Shared) {
    match job {
        Job::Commit { writes, reply } => {
            // Not reached (commits are grouped by the caller), but stay correct anyway.
            let mut g = vec![(writes, reply)];
            flush(conn, &mut g, shared);
        }
        Job::PurgeApply {
            table,
            now,
            expired,
            bad,
            reply,
        } => {
            let r = purge_apply(conn, table, now, &expired, &bad);
            match &r {
                Ok(a) => shared.add_quarantined(a.quarantined),
                Err(e) => shared.note_if_corrupt(e),
            }
            let _ = reply.send(r.map_err(StoreError::from));
        }
        Job::Quarantine { rows, reply } => {
            let r = quarantine_rows(conn, &rows);
            match &r {
                Ok(n) => shared.add_quarantined(*n),
                Err(e) => shared.note_if_corrupt(e),
            }
            let _ = reply.send(r.map_err(StoreError::from));
        }
        Job::Trim {
            events,
            quarantine,
            reply,
        } => {
            let r = (|| -> rusqlite::Result<(usize, u64)> {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = db::trim(&tx, "events", events)? + db::trim(&tx, "quarantine", quarantine)?;
                let total = db::quarantine_count(&tx)?;
                tx.commit()?;
                Ok((n, total))
            })();
            if let Ok((_, total)) = &r {
                shared.quarantined_total.store(*total, Ordering::Relaxed);
            }
            let _ = reply.send(r.map_err(StoreError::from));
        }
    }
}

fn quarantine_rows(conn: &mut Connection, rows: &[BadRow]) -> rusqlite::Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let now = unix_now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut moved = 0;
    for bad in rows {
        if db::quarantine_row(&tx, bad, now)? {
            moved += 1;
        }
    }
    tx.commit()?;
    Ok(moved)
}

/// Apply one purge batch. A row-level failure (e.g. a damaged index page under one row)
/// skips that row; it never fails the batch.
fn purge_apply(
    conn: &mut Connection,
    table: &str,
    now: i64,
    expired: &[i64],
    bad: &[BadRow],
) -> rusqlite::Result<Applied> {
    let mut done = Applied::default();
    if expired.is_empty() && bad.is_empty() {
        return Ok(done);
    }
    let qnow = unix_now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for id in expired {
        // `expires_at <= now` again: a row id reused by a fresh binding is not touched.
        let r = tx
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE id = ?1 AND expires_at <= ?2"
            ))
            .and_then(|mut st| st.execute([*id, now]));
        match r {
            Ok(n) => done.purged += n,
            Err(e) => tracing::warn!(table, rowid = id, error = %e, "purge: delete failed"),
        }
    }
    for row in bad {
        match db::quarantine_row(&tx, row, qnow) {
            Ok(true) => done.quarantined += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(table, rowid = row.rowid, error = %e, "purge: quarantine failed")
            }
        }
    }
    tx.commit()?;
    Ok(done)
}
