//! SQLite store: bindings, subscriptions, MWI, event log, quarantine.
//!
//! A synchronous API over rusqlite (bundled SQLite, WAL) plus one writer thread that
//! groups commits. No tokio runtime is needed: [`Store::commit`] hands back a
//! `tokio::sync::oneshot::Receiver` the daemon can `.await`; it resolves `Ok(())` only once
//! the commit is durable on disk (WAL fsynced, `synchronous = FULL`), so a REGISTER's
//! 200 OK can wait for it.
//!
//! ```no_run
//! # fn main() -> Result<(), holdline_store::StoreError> {
//! use holdline_store::{Store, StoreOptions, Write};
//! let (store, report) = Store::open("holdline.db".as_ref(), StoreOptions::default())?;
//! if let Some(p) = &report.set_aside { eprintln!("damaged store moved to {}", p.display()); }
//! let loaded = store.load_bindings()?;          // good rows; bad ones quarantined
//! store.commit_blocking(vec![Write::RemoveAor { aor: "sip:100@cloud.test".into() }])?;
//! let report = store.purge_expired(1_900_000_000, 500)?;
//! # let _ = (loaded, report); Ok(()) }
//! ```
//!
//! Guarantees:
//! - **Durability**: `Ok` from a commit means the writes survive a process kill *and* a
//!   power cut. Writes not yet acknowledged may be lost, all or nothing per group.
//! - **No record can take the store down**: every row is read column by column as a raw
//!   value, validated and checksummed ([`record`] docs); a bad row is moved to the
//!   `quarantine` table with its reason, counted, logged once (`tracing::warn!`), and the
//!   good rows around it keep working. Loads, checks and the purge never panic and never
//!   stop on a bad row.
//! - **A damaged file cannot stop the appliance**: at open, `PRAGMA quick_check` runs; a
//!   file that fails it, or is not a database, is renamed aside with a UTC timestamp (never
//!   deleted), a fresh store is created and every record of the old file that still reads
//!   and verifies is salvaged into it; [`OpenReport`] says so and an event is logged.
//!   Damage met while running is reported in [`StoreStats::damaged`].
//! - **The purge cannot crash and barely delays commits**: bounded batches judged on the
//!   read connection; the writer only applies each batch's deletes and quarantine moves.
//! - **Schema**: versioned, ordered migrations, A/B-rollback rule in [`schema`].
//!
//! Tests: `tests/incident.rs` (the incident's cause replayed: every kind of damage, load and
//! purge), `tests/crash.rs` (SIGKILL at random moments, nothing acknowledged lost),
//! `tests/open.rs` (truncated, torn, garbage and foreign files; schema versions),
//! `tests/group_commit.rs`; figures in `benches/store.rs`.

pub mod damage;
mod db;
mod error;
mod model;
pub mod record;
pub mod schema;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

pub use error::StoreError;
pub use model::{
    Binding, CheckReport, Event, Loaded, Mwi, OpenReport, Provenance, PurgeReport,
    QuarantineReason, QuarantinedRecord, StoreStats, StoredEvent, Subscription, Transport, Write,
};
pub use record::MAX_UNIX_TIME;

use db::{BadRow, Scan};
use record::{fingerprint, Record};
use writer::{Job, Reply, Shared};

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = FULL`: the WAL is fsynced at every (group) commit. An acknowledged
    /// commit survives a power cut. The default, and the only mode the appliance uses.
    Full,
    /// `synchronous = NORMAL`: survives a process crash, but a power cut may lose the last
    /// acknowledged commits. For benchmarks and comparison only.
    Normal,
}

/// Tunables; [`Default`] is what the appliance uses.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Most commits grouped in one transaction.
    pub max_group: usize,
    /// Rows per purge batch (one short write transaction each).
    pub purge_batch: usize,
    /// Pause between purge batches: on a 2-core appliance the purge's reading and judging
    /// otherwise competes with SIP handling for the CPU for the whole pass.
    pub purge_pause: Duration,
    /// Interval of the background purger ([`Store::spawn_purger`]); 10 minutes by default.
    pub purge_interval: Duration,
    /// Rows read per chunk by loads and checks.
    pub load_chunk: usize,
    /// Event-log rows kept (oldest trimmed by the purge).
    pub max_events: usize,
    /// Quarantine rows kept (oldest trimmed by the purge).
    pub max_quarantine: usize,
    /// How long the reader waits for a lock.
    pub busy_timeout: Duration,
    /// After setting a damaged store aside, copy every row of it that still reads and
    /// verifies (checksum and all checks) into the fresh store.
    pub salvage: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Full,
            max_group: 1024,
            purge_batch: 500,
            purge_pause: Duration::from_millis(2),
            purge_interval: Duration::from_secs(600),
            load_chunk: 2000,
            max_events: 10_000,
            max_quarantine: 10_000,
            busy_timeout: Duration::from_secs(5),
            salvage: true,
        }
    }
}

/// Handle to the store. Cheap to clone; `Send + Sync`. The writer thread stops when the
/// last handle is dropped (after finishing queued jobs).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    opts: StoreOptions,
    schema_version: (u32, u32),
    set_aside: Option<PathBuf>,
    reader: Mutex<Connection>,
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Stop channel and thread of the checkpointer.
    checkpointer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

/// How often the checkpointer copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The checkpointer thread: a PASSIVE checkpoint every [`CHECKPOINT_EVERY`] until stopped
/// (nothing to copy costs no I/O). Failures are logged and retried at the next turn.
fn checkpointer(conn: Connection, stop: mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "store checkpoint failed; will retry");
            }
            Err(_) => {}
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `YYYYMMDDTHHMMSSZ` in UTC, without a date library.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

enum OpenFail {
    /// The file is damaged or not ours: set it aside.
    Damaged(String),
    /// Anything else: report, touch nothing.
    Fatal(StoreError),
}

fn classify(e: rusqlite::Error) -> OpenFail {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            OpenFail::Damaged(e.to_string())
        }
        _ => OpenFail::Fatal(StoreError::Sqlite(e)),
    }
}

fn configure(conn: &Connection, opts: &StoreOptions) -> rusqlite::Result<()> {
    conn.busy_timeout(opts.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(mode, "store: WAL journal mode not available");
    }
    let sync = match opts.durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "cell_size_check", "ON")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // After a checkpoint the WAL is cut back to 4 MiB, so one big burst cannot keep
    // flash space forever.
    let _: i64 = conn.query_row("PRAGMA journal_size_limit = 4194304", [], |r| r.get(0))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// `PRAGMA quick_check(20)`, lossy, never failing on odd text.
fn quick_check(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(match r.get_ref(0)? {
            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
            other => format!("{other:?}"),
        });
    }
    Ok(out)
}

struct Opened {
    conn: Connection,
    found: Option<(u32, u32)>,
    applied: usize,
}

fn try_open(path: &Path, opts: &StoreOptions) -> Result<Opened, OpenFail> {
    let mut conn = Connection::open(path).map_err(classify)?;
    configure(&conn, opts).map_err(classify)?;
    let qc = quick_check(&conn).map_err(classify)?;
    if qc.len() != 1 || qc[0] != "ok" {
        return Err(OpenFail::Damaged(format!("quick_check: {}", qc.join("; "))));
    }
    match schema::prepare(&mut conn).map_err(classify)? {
        schema::Prepared::Ready { found, applied } => Ok(Opened {
            conn,
            found,
            applied,
        }),
        schema::Prepared::Foreign(why) => Err(OpenFail::Damaged(why)),
        schema::Prepared::TooNew((found_major, found_minor)) => {
            Err(OpenFail::Fatal(StoreError::SchemaTooNew {
                path: path.to_owned(),
                found_major,
                found_minor,
                supported_major: schema::SCHEMA_MAJOR,
            }))
        }
    }
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Rename a damaged store (and its `-wal`/`-shm`/`-journal`) aside; never delete.
fn set_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = utc_stamp(SystemTime::now());
    let mut dest = with_suffix(path, &format!(".corrupt-{stamp}"));
    let mut n = 1;
    while dest.exists() {
        dest = with_suffix(path, &format!(".corrupt-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &dest).map_err(|source| StoreError::Io {
        action: "renaming damaged store",
        path: path.to_owned(),
        source,
    })?;
    for side in ["-wal", "-shm", "-journal"] {
        let from = with_suffix(path, side);
        if from.exists() {
            let to = with_suffix(&dest, side);
            std::fs::rename(&from, &to).map_err(|source| StoreError::Io {
                action: "renaming damaged store",
                path: from.clone(),
                source,
            })?;
        }
    }
    Ok(dest)
}

fn salvage_table<T: Record>(src: &Connection, dst: &Connection, chunk: usize) -> usize {
    let mut keyed: HashMap<String, T> = HashMap::new();
    let mut unkeyed = Vec::new();
    let mut scan = Scan::new();
    while !scan.done {
        for (_, vals) in scan.next(src, T::TABLE, T::COLS, chunk) {
            let Ok(rec) = T::decode(&vals) else { continue };
            match rec.key() {
                None => unkeyed.push(rec),
                Some(k) => {
                    if keyed
                        .get(&k)
                        .is_none_or(|old| rec.freshness() >= old.freshness())
                    {
                        keyed.insert(k, rec);
                    }
                }
            }
        }
    }
    keyed
        .into_values()
        .chain(unkeyed)
        .filter(|rec| db::insert(dst, rec).is_ok())
        .count()
}

/// Copy every row of a set-aside store that still reads and verifies into the fresh store.
/// The set-aside file is opened read-only and never changed.
fn salvage(from: &Path, into: &mut Connection, chunk: usize) -> rusqlite::Result<usize> {
    let src = Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    src.pragma_update(None, "cell_size_check", "ON")?;
    // Lets SQLite read a file shorter than its header says (truncation) instead of
    // refusing it whole; the connection is read-only, nothing can be written through it.
    src.pragma_update(None, "writable_schema", "ON")?;
    let tx = into.transaction()?;
    let n = salvage_table::<Binding>(&src, &tx, chunk)
        + salvage_table::<Subscription>(&src, &tx, chunk)
        + salvage_table::<Mwi>(&src, &tx, chunk)
        + salvage_table::<Event>(&src, &tx, chunk);
    tx.commit()?;
    Ok(n)
}

impl Store {
    /// Open (or create) the store at `path`.
    ///
    /// Runs `PRAGMA quick_check`; a file that fails it, is not an SQLite database, or is a
    /// database that is not a holdline store is renamed to `PATH.corrupt-YYYYMMDDTHHMMSSZ`
    /// (with its `-wal`/`-shm`) and a fresh store is created; an event `store.set_aside` is
    /// logged in it. Every record of the damaged file that still reads and verifies is
    /// salvaged into the fresh store ([`StoreOptions::salvage`]). A store of a newer schema major is refused ([`StoreError::SchemaTooNew`])
    /// and left untouched. Other errors (permissions, missing directory) are returned.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<(Store, OpenReport), StoreError> {
        let start = Instant::now();
        let existed = path.exists();
        let mut aside = None;
        let mut aside_reason = None;
        let opened = match try_open(path, &opts) {
            Ok(o) => o,
            Err(OpenFail::Fatal(e)) => return Err(e),
            Err(OpenFail::Damaged(why)) => {
                let dest = set_aside(path)?;
                tracing::error!(
                    path = %path.display(),
                    moved_to = %dest.display(),
                    reason = %why,
                    "store damaged; set aside, starting with a fresh store"
                );
                aside = Some(dest);
                aside_reason = Some(why);
                match try_open(path, &opts) {
                    Ok(o) => o,
                    Err(OpenFail::Fatal(e)) => return Err(e),
                    Err(OpenFail::Damaged(why)) => {
                        return Err(StoreError::Invalid(format!(
                            "fresh store at {} is damaged right after creation: {why}",
                            path.display()
                        )))
                    }
                }
            }
        };
        let Opened {
            mut conn,
            found,
            applied,
        } = opened;
        let mut salvaged = 0;
        if let (Some(dest), Some(why)) = (&aside, &aside_reason) {
            if opts.salvage {
                match salvage(dest, &mut conn, opts.load_chunk) {
                    Ok(n) => salvaged = n,
                    Err(e) => tracing::warn!(error = %e, "nothing salvaged from the damaged store"),
                }
            }
            let ev = Event {
                at: unix_now().max(1),
                kind: "store.set_aside".into(),
                detail: format!(
                    "damaged store moved to {}: {why}; {salvaged} verified records salvaged",
                    dest.display()
                ),
            };
            db::apply(&conn, &Write::Event(ev))?;
            tracing::warn!(salvaged, "records salvaged from the damaged store");
        }
        let quarantined_total = db::quarantine_count(&conn)?;
        let journal_mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        let uv: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let schema_version = schema::unpack(uv);

        let reader = Connection::open(path)?;
        configure(&reader, &opts)?;
        reader.pragma_update(None, "query_only", "ON")?;

        // Checkpoints off the commit path: SQLite's automatic checkpoint would run inside
        // the writer's COMMIT every ~1000 WAL pages, copying them into the database and
        // fsyncing it while every REGISTER waiting for its group waits too (measured
        // through the appliance: periodic 100-340 ms stalls of the 200 OK on a
        // 100,000-binding store). The checkpointer thread runs PASSIVE checkpoints on its
        // own connection instead; they never block the writer, and durability does not
        // depend on them (an acknowledged commit is in the fsynced WAL).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let ckpt_conn = Connection::open(path)?;
        configure(&ckpt_conn, &opts)?;
        let (ckpt_stop, ckpt_rx) = mpsc::channel::<()>();
        let checkpointer = std::thread::Builder::new()
            .name("holdline-store-checkpoint".into())
            .spawn(move || checkpointer(ckpt_conn, ckpt_rx))
            .map_err(|source| StoreError::Io {
                action: "starting checkpoint thread for",
                path: path.to_owned(),
                source,
            })?;

        let shared = Arc::new(Shared::new(quarantined_total));
        let (tx, rx) = mpsc::channel();
        let wshared = Arc::clone(&shared);
        let max_group = opts.max_group;
        let thread = std::thread::Builder::new()
            .name("holdline-store-writer".into())
            .spawn(move || writer::run(conn, rx, wshared, max_group))
            .map_err(|source| StoreError::Io {
                action: "starting writer thread for",
                path: path.to_owned(),
                source,
            })?;
        let report = OpenReport {
            path: path.to_owned(),
            created: !existed || aside.is_some() || found.is_none(),
            set_aside: aside.clone(),
            set_aside_reason: aside_reason,
            found_version: found,
            schema_version,
            migrations_applied: applied,
            salvaged,
            quarantined_total,
            journal_mode,
            synchronous,
            took: start.elapsed(),
        };
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                opts,
                schema_version,
                set_aside: aside,
                reader: Mutex::new(reader),
                shared,
                tx: Some(tx),
                thread: Some(thread),
                checkpointer: Some((ckpt_stop, checkpointer)),
            }),
        };
        Ok((store, report))
    }

    /// The path of the store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.opts
    }

    fn send(&self, job: Job) -> Result<(), Job> {
        match &self.inner.tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        }
    }

    fn ask<T>(
        &self,
        make: impl FnOnce(mpsc::SyncSender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(make(tx)).map_err(|_| StoreError::WriterGone)?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Queue `writes` for the next group commit. The receiver resolves `Ok(())` once they are
    /// durable, or with the error (a write that fails validation is refused alone with
    /// [`StoreError::Invalid`], without touching the rest of its group). Never blocks.
    pub fn commit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), StoreError>> {
        let (tx, rx) = oneshot::channel();
        if let Err(Job::Commit { reply, .. }) = self.send(Job::Commit {
            writes,
            reply: Reply::Async(tx),
        }) {
            reply.send(Err(StoreError::WriterGone));
        }
        rx
    }

    /// [`Store::commit`] for synchronous callers (threads, tests): blocks until durable.
    /// Safe to call from anywhere (does not use tokio's `blocking_recv`).
    pub fn commit_blocking(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::sync_channel(1);
        if let Err(Job::Commit { reply, .. }) = self.send(Job::Commit {
            writes,
            reply: Reply::Sync(tx),
        }) {
            reply.send(Err(StoreError::WriterGone));
        }
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the connection inconsistent for
        // SQLite; keep serving.
        self.inner
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Move bad rows to quarantine through the writer; returns how many moved.
    fn quarantine_bad(&self, bad: Vec<BadRow>) -> usize {
        if bad.is_empty() {
            return 0;
        }
        let n = bad.len();
        match self.ask(|reply| Job::Quarantine { rows: bad, reply }) {
            Ok(moved) => moved,
            Err(e) => {
                tracing::error!(error = %e, rows = n, "could not move bad rows to quarantine");
                0
            }
        }
    }

    /// Read, validate and de-duplicate every row of a table; bad rows are quarantined.
    fn load<T: Record>(&self) -> Result<Loaded<T>, StoreError> {
        // Memory matters here (100,000 bindings on a small board): the good records are kept
        // once, in `items`; keys are indexed by a 64-bit hash (a collision is resolved by
        // comparing the real keys, falling back to `collided`).
        let mut items: Vec<Option<T>> = Vec::new();
        let mut meta: Vec<(i64, u32)> = Vec::new();
        let mut by_hash: HashMap<u64, usize> = HashMap::new();
        let mut collided: HashMap<String, usize> = HashMap::new();
        let mut bad = Vec::new();
        let mut scan = Scan::new();
        let hash = |k: &str| {
            use std::hash::{BuildHasher, BuildHasherDefault};
            BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(k)
        };
        while !scan.done {
            // The read lock is taken per chunk, so console reads are not held up by a
            // long load.
            let rows = {
                let conn = self.reader();
                scan.next(&conn, T::TABLE, T::COLS, self.inner.opts.load_chunk)
            };
            for (id, vals) in rows {
                let fp = fingerprint(&vals);
                let rec = match T::decode(&vals) {
                    Ok(rec) => rec,
                    Err(reason) => {
                        bad.push(BadRow::of::<T>(id, &vals, reason));
                        continue;
                    }
                };
                let Some(key) = rec.key() else {
                    items.push(Some(rec));
                    meta.push((id, fp));
                    continue;
                };
                let h = hash(&key);
                let same_key = |i: usize, items: &[Option<T>]| {
                    items
                        .get(i)
                        .and_then(Option::as_ref)
                        .and_then(Record::key)
                        .is_some_and(|k| k == key)
                };
                let found = match by_hash.get(&h).copied() {
                    Some(i) if same_key(i, &items) => Some(i),
                    Some(_) => collided.get(&key).copied(),
                    None => None,
                };
                let new_index = items.len();
                let winner_is_new = match found {
                    None => true,
                    Some(i) => {
                        let old_wins = items
                            .get(i)
                            .and_then(Option::as_ref)
                            .is_some_and(|o| o.freshness() > rec.freshness());
                        let loser = if old_wins {
                            Some((id, fp))
                        } else {
                            items
                                .get_mut(i)
                                .and_then(Option::take)
                                .and_then(|_| meta.get(i).copied())
                        };
                        if let Some((rowid, fingerprint)) = loser {
                            bad.push(BadRow {
                                table: T::TABLE,
                                cols: T::COLS,
                                key_cols: T::KEY_COLS,
                                rowid,
                                fingerprint,
                                reason: QuarantineReason::DuplicateKey,
                            });
                        }
                        !old_wins
                    }
                };
                if winner_is_new {
                    match by_hash.get(&h).copied() {
                        Some(i)
                            if found != Some(i)
                                && !same_key(i, &items)
                                && items.get(i).is_some_and(Option::is_some) =>
                        {
                            collided.insert(key, new_index);
                        }
                        _ => {
                            by_hash.insert(h, new_index);
                        }
                    }
                    items.push(Some(rec));
                    meta.push((id, fp));
                }
            }
        }
        drop((by_hash, collided, meta));
        let quarantined = bad.len();
        self.quarantine_bad(bad);
        if scan.unreadable > 0 {
            self.inner
                .shared
                .note_damage(&format!("{}: rows SQLite cannot read", T::TABLE));
        }
        Ok(Loaded {
            // Option<T> has T's size (niche), so this reuses the allocation.
            items: items.into_iter().flatten().collect(),
            quarantined,
            unreadable: scan.unreadable,
        })
    }

    /// Every good binding; bad and duplicate rows are moved to quarantine and counted.
    pub fn load_bindings(&self) -> Result<Loaded<Binding>, StoreError> {
        self.load::<Binding>()
    }

    /// Every good subscription; bad rows quarantined.
    pub fn load_subscriptions(&self) -> Result<Loaded<Subscription>, StoreError> {
        self.load::<Subscription>()
    }

    /// Every good MWI state; bad rows quarantined.
    pub fn load_mwi(&self) -> Result<Loaded<Mwi>, StoreError> {
        self.load::<Mwi>()
    }

    /// The MWI state of one AoR, if any good one is stored.
    pub fn mwi(&self, aor: &str) -> Result<Option<Mwi>, StoreError> {
        let mut bad = Vec::new();
        let mut best: Option<(i64, u32, Mwi)> = None;
        {
            let conn = self.reader();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, {} FROM mwi WHERE aor = ?1 ORDER BY id",
                Mwi::COLS.join(", ")
            ))?;
            let mut rows = stmt.query([aor])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let mut vals = Vec::with_capacity(Mwi::COLS.len());
                for c in 0..Mwi::COLS.len() {
                    vals.push(record::RawValue::from(row.get_ref(c + 1)?));
                }
                match Mwi::decode(&vals) {
                    Ok(m) => {
                        let fp = fingerprint(&vals);
                        let dup = |(id, fp): (i64, u32)| BadRow {
                            table: Mwi::TABLE,
                            cols: Mwi::COLS,
                            key_cols: Mwi::KEY_COLS,
                            rowid: id,
                            fingerprint: fp,
                            reason: QuarantineReason::DuplicateKey,
                        };
                        match best.take() {
                            Some((bid, bfp, b)) if b.at > m.at => {
                                bad.push(dup((id, fp)));
                                best = Some((bid, bfp, b));
                            }
                            Some((bid, bfp, _)) => {
                                bad.push(dup((bid, bfp)));
                                best = Some((id, fp, m));
                            }
                            None => best = Some((id, fp, m)),
                        }
                    }
                    Err(reason) => bad.push(BadRow::of::<Mwi>(id, &vals, reason)),
                }
            }
        }
        self.quarantine_bad(bad);
        Ok(best.map(|(_, _, m)| m))
    }

    /// The newest `limit` good events, newest first; bad rows quarantined.
    pub fn events(&self, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        let mut bad = Vec::new();
        let mut out = Vec::new();
        {
            let conn = self.reader();
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT id, {} FROM events ORDER BY id DESC LIMIT ?1",
                Event::COLS.join(", ")
            ))?;
            let mut rows = stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let mut vals = Vec::with_capacity(Event::COLS.len());
                for c in 0..Event::COLS.len() {
                    vals.push(record::RawValue::from(row.get_ref(c + 1)?));
                }
                match Event::decode(&vals) {
                    Ok(event) => out.push(StoredEvent { id, event }),
                    Err(reason) => bad.push(BadRow::of::<Event>(id, &vals, reason)),
                }
            }
        }
        self.quarantine_bad(bad);
        Ok(out)
    }

    /// The newest `limit` quarantined records, newest first.
    pub fn quarantine(&self, limit: usize) -> Result<Vec<QuarantinedRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, at, source_table, source_rowid, key, reason, raw \
             FROM quarantine ORDER BY id DESC LIMIT ?1",
        )?;
        let mut rows = stmt.query([i64::try_from(limit).unwrap_or(i64::MAX)])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let int = |i: usize| match row.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Integer(n)) => n,
                _ => 0,
            };
            let text = |i: usize| match row.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t)) => {
                    String::from_utf8_lossy(t).into_owned()
                }
                _ => String::new(),
            };
            out.push(QuarantinedRecord {
                id: int(0),
                at: int(1),
                table: text(2),
                source_rowid: int(3),
                key: text(4),
                reason: text(5),
                raw: text(6),
            });
        }
        Ok(out)
    }

    /// Number of rows in quarantine.
    pub fn quarantine_count(&self) -> Result<u64, StoreError> {
        Ok(db::quarantine_count(&self.reader())?)
    }

    /// One table of the purge: read and judge `batch` rows at a time on the read
    /// connection, then hand the writer one short transaction with what to delete and what
    /// to quarantine. Returns the rows purged.
    fn purge_table<T: Record>(
        &self,
        now: i64,
        batch: usize,
        rep: &mut PurgeReport,
    ) -> Result<usize, StoreError> {
        let mut scan = Scan::new();
        let mut purged = 0;
        while !scan.done {
            let mut expired = Vec::new();
            let mut bad = Vec::new();
            {
                let conn = self.reader();
                for (id, vals) in scan.next(&conn, T::TABLE, T::COLS, batch) {
                    match T::decode(&vals) {
                        Ok(rec) => {
                            if rec.expires_at().is_some_and(|e| e <= now) {
                                expired.push(id);
                            }
                        }
                        Err(reason) => bad.push(BadRow::of::<T>(id, &vals, reason)),
                    }
                }
            }
            rep.batches += 1;
            if !scan.done && !self.inner.opts.purge_pause.is_zero() {
                std::thread::sleep(self.inner.opts.purge_pause);
            }
            if expired.is_empty() && bad.is_empty() {
                continue;
            }
            let table = T::TABLE;
            let done = self.ask(|reply| Job::PurgeApply {
                table,
                now,
                expired,
                bad,
                reply,
            })?;
            purged += done.purged;
            rep.quarantined += done.quarantined;
        }
        if scan.unreadable > 0 {
            rep.unreadable += scan.unreadable;
            self.inner
                .shared
                .note_damage(&format!("{}: rows SQLite cannot read", T::TABLE));
        }
        // Duplicate keys (same rule as the load: the freshest row stays).
        let groups = {
            let conn = self.reader();
            db::duplicate_groups(&conn, T::TABLE, T::COLS, T::UNIQUE_COLS)
        };
        match groups {
            Ok(groups) if !groups.is_empty() => {
                let mut bad = Vec::new();
                for group in groups {
                    let mut best: Option<(i64, i64)> = None; // (freshness, id)
                    let mut good = Vec::new();
                    for (id, vals) in &group {
                        match T::decode(vals) {
                            Ok(rec) => {
                                let f = (rec.freshness(), *id);
                                if best.is_none_or(|b| f > b) {
                                    best = Some(f);
                                }
                                good.push((*id, vals));
                            }
                            Err(reason) => bad.push(BadRow::of::<T>(*id, vals, reason)),
                        }
                    }
                    for (id, vals) in good {
                        if best.is_some_and(|(_, bid)| bid != id) {
                            bad.push(BadRow::of::<T>(id, vals, QuarantineReason::DuplicateKey));
                        }
                    }
                }
                let table = T::TABLE;
                let done = self.ask(|reply| Job::PurgeApply {
                    table,
                    now,
                    expired: Vec::new(),
                    bad,
                    reply,
                })?;
                rep.quarantined += done.quarantined;
                rep.batches += 1;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(table = T::TABLE, error = %e, "purge: duplicate check skipped");
                self.inner.shared.note_if_corrupt(&e);
            }
        }
        Ok(purged)
    }

    /// Delete expired bindings and subscriptions (`expires_at <= now_unix`) in batches of
    /// `batch` rows. Each batch is read and judged on the read connection (so the writer is
    /// never held by the reading), then applied by the writer as one short transaction
    /// queued between group commits. Every row of both tables is judged on the way: bad
    /// rows go to quarantine, unreadable regions are skipped; neither stops the purge.
    /// Then rows sharing a key are found through the key index (one pass) and all but the
    /// freshest quarantined as duplicates, and the event log and quarantine are trimmed to
    /// their caps.
    pub fn purge_expired(&self, now_unix: i64, batch: usize) -> Result<PurgeReport, StoreError> {
        let start = Instant::now();
        let batch = batch.max(1);
        let mut rep = PurgeReport::default();
        rep.purged_bindings = self.purge_table::<Binding>(now_unix, batch, &mut rep)?;
        rep.purged_subscriptions = self.purge_table::<Subscription>(now_unix, batch, &mut rep)?;
        rep.purged = rep.purged_bindings + rep.purged_subscriptions;
        let (events, quarantine) = (self.inner.opts.max_events, self.inner.opts.max_quarantine);
        let (trimmed, _) = self.ask(|reply| Job::Trim {
            events,
            quarantine,
            reply,
        })?;
        rep.trimmed = trimmed;
        rep.took = start.elapsed();
        if let Ok(mut last) = self.inner.shared.last_purge.lock() {
            *last = Some(rep.clone());
        }
        if rep.quarantined > 0 || rep.unreadable > 0 {
            tracing::warn!(
                purged = rep.purged,
                quarantined = rep.quarantined,
                unreadable = rep.unreadable,
                "purge met damaged records"
            );
        } else {
            tracing::debug!(purged = rep.purged, took = ?rep.took, "purge done");
        }
        Ok(rep)
    }

    /// On-demand check (`store check`): `PRAGMA quick_check`, then a validation pass over
    /// every table (bad rows quarantined).
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let start = Instant::now();
        let qc = quick_check(&self.reader())?;
        let ok = qc.len() == 1 && qc[0] == "ok";
        if !ok {
            self.inner
                .shared
                .note_damage(&format!("quick_check: {}", qc.join("; ")));
        }
        let b = self.load::<Binding>()?;
        let s = self.load::<Subscription>()?;
        let m = self.load::<Mwi>()?;
        let e = self.load::<Event>()?;
        let total = self.quarantine_count()?;
        self.inner
            .shared
            .quarantined_total
            .store(total, Ordering::Relaxed);
        Ok(CheckReport {
            ok,
            quick_check: qc,
            rows: vec![
                ("bindings".into(), b.items.len()),
                ("subscriptions".into(), s.items.len()),
                ("mwi".into(), m.items.len()),
                ("events".into(), e.items.len()),
            ],
            quarantined: b.quarantined + s.quarantined + m.quarantined + e.quarantined,
            unreadable: b.unreadable + s.unreadable + m.unreadable + e.unreadable,
            quarantined_total: total,
            took: start.elapsed(),
        })
    }

    /// Counters; no database access.
    pub fn stats(&self) -> StoreStats {
        let sh = &self.inner.shared;
        StoreStats {
            path: self.inner.path.clone(),
            schema_version: self.inner.schema_version,
            commits: sh.commits.load(Ordering::Relaxed),
            commits_failed: sh.commits_failed.load(Ordering::Relaxed),
            writes: sh.writes.load(Ordering::Relaxed),
            groups: sh.groups.load(Ordering::Relaxed),
            largest_group: sh.largest_group.load(Ordering::Relaxed),
            quarantined: sh.quarantined.load(Ordering::Relaxed),
            quarantined_total: sh.quarantined_total.load(Ordering::Relaxed),
            set_aside: self.inner.set_aside.clone(),
            writer_alive: sh.alive.load(Ordering::Relaxed),
            writer_idle: sh.idle(),
            last_purge: sh.last_purge.lock().ok().and_then(|g| g.clone()),
            damaged: sh.damaged.lock().ok().and_then(|g| g.clone()),
        }
    }

    /// Start a background thread that runs [`Store::purge_expired`] every
    /// `options().purge_interval` with `options().purge_batch`, using the system clock.
    /// It holds only a weak reference; it stops when the [`Purger`] is dropped or the store
    /// is closed.
    pub fn spawn_purger(&self) -> Result<Purger, StoreError> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.inner.opts.purge_interval;
        let batch = self.inner.opts.purge_batch;
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("holdline-store-purge".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(interval) {
                    let Some(inner) = weak.upgrade() else { break };
                    let store = Store { inner };
                    if let Err(e) = store.purge_expired(unix_now(), batch) {
                        tracing::error!(error = %e, "purge failed");
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                action: "starting purge thread for",
                path: self.inner.path.clone(),
                source,
            })?;
        Ok(Purger {
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Row count of a table (good and bad rows alike, not validated), for diagnostics.
    pub fn raw_count(&self, table: &str) -> Result<u64, StoreError> {
        if !schema::TABLES.contains(&table) {
            return Err(StoreError::Invalid(format!("unknown table {table}")));
        }
        let n: i64 =
            self.reader()
                .query_row(&format!("SELECT count(*) FROM {table}"), params![], |r| {
                    r.get(0)
                })?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The background purge thread; stops (and is joined) on drop.
pub struct Purger {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Purger {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_handle_is_send_sync_clone() {
        fn ok<T: Send + Sync + Clone + 'static>() {}
        ok::<super::Store>();
        fn send<T: Send + 'static>() {}
        send::<super::StoreError>();
        send::<super::Write>();
    }

    #[test]
    fn utc_stamp_is_civil_time() {
        use std::time::{Duration, UNIX_EPOCH};
        assert_eq!(super::utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_600_000);
        assert_eq!(super::utc_stamp(t), "20261125T094640Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(super::utc_stamp(leap), "20000229T000000Z");
    }
}
