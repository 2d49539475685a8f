//! The records the store keeps, the writes it accepts and the reports it gives.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Transport a phone registered or subscribed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    /// Canonical lowercase name as stored (`udp` / `tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    /// Parse the stored name (exact, lowercase).
    pub fn from_stored(s: &str) -> Option<Transport> {
        match s {
            "udp" => Some(Transport::Udp),
            "tcp" => Some(Transport::Tcp),
            _ => None,
        }
    }
}

/// Where a binding's truth comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provenance {
    /// The cloud answered the phone's REGISTER with a 2xx listing this contact, at `at` (unix s).
    CloudVerified { at: i64 },
    /// Accepted locally during an outage (survival mode), at `at` (unix s); never verified by the cloud.
    LocalOnly { at: i64 },
}

impl Provenance {
    pub(crate) fn parts(self) -> (&'static str, i64) {
        match self {
            Provenance::CloudVerified { at } => ("cloud", at),
            Provenance::LocalOnly { at } => ("local", at),
        }
    }

    pub(crate) fn from_parts(kind: &str, at: i64) -> Option<Provenance> {
        match kind {
            "cloud" => Some(Provenance::CloudVerified { at }),
            "local" => Some(Provenance::LocalOnly { at }),
            _ => None,
        }
    }
}

/// One registered contact of an address-of-record.
///
/// Key: (`aor`, `contact_uri`), compared byte for byte (the caller normalises).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Address-of-record, a `sip:`/`sips:` URI (the To URI of the REGISTER).
    pub aor: String,
    /// The full Contact header value for this binding (with its parameters).
    pub contact: String,
    /// The contact URI alone.
    pub contact_uri: String,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    pub call_id: String,
    pub cseq: u32,
    /// The phone's transport address (where its REGISTER came from; NAT-safe routing target).
    pub source: SocketAddr,
    pub transport: Transport,
    /// `+sip.instance` (RFC 5626), when present.
    pub instance_id: Option<String>,
    /// `reg-id` (RFC 5626), when present.
    pub reg_id: Option<u32>,
    pub provenance: Provenance,
    /// Last time the phone was heard from (refresh, OPTIONS answer), unix seconds.
    pub last_seen: i64,
    /// Path header values (RFC 3327), in order.
    pub path: Vec<String>,
}

/// A SUBSCRIBE dialog holdline has seen (or serves), with what is needed to take it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Unique id (Call-ID + tags, built by the caller). Key of the record.
    pub id: String,
    /// Event package (`dialog`, `message-summary`, `presence`, ...).
    pub event: String,
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    pub watcher_aor: String,
    pub target_uri: String,
    pub remote_target: String,
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: u32,
    /// Absolute expiry, unix seconds.
    pub expires_at: i64,
    /// Last dialog-info `version` seen (at most `i64::MAX`).
    pub last_version: Option<u64>,
    pub last_body: Option<String>,
    pub last_content_type: Option<String>,
    pub phone: SocketAddr,
    pub transport: Transport,
}

/// The last message-summary state of an AoR (what the cloud last sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mwi {
    pub aor: String,
    pub body: String,
    pub content_type: String,
    /// When it was received, unix seconds.
    pub at: i64,
}

/// An entry of the event log (failovers, set-asides, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    /// Short machine-readable kind, e.g. `uplink.down`, `store.set_aside`.
    pub kind: String,
    /// Free text (single line recommended).
    pub detail: String,
}

/// An event as read back, with its row id (increasing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: i64,
    pub event: Event,
}

/// One write inside a [`crate::Store::commit`]. All writes of one commit are applied in
/// one transaction, in order, together with other commits of the same group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Insert, or replace the binding with the same (aor, contact_uri).
    UpsertBinding(Binding),
    /// Remove the binding (aor, contact_uri). `contact` is the contact URI.
    RemoveBinding {
        aor: String,
        contact: String,
    },
    /// Remove every binding of the AoR (`Contact: *`).
    RemoveAor {
        aor: String,
    },
    /// Insert, or replace the subscription with the same id.
    UpsertSubscription(Subscription),
    RemoveSubscription {
        id: String,
    },
    /// Set (replace) the MWI state of an AoR.
    SetMwi {
        aor: String,
        body: String,
        content_type: String,
        at: i64,
    },
    /// Append to the event log.
    Event(Event),
}

/// Why a record was moved to quarantine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineReason {
    /// A required column is NULL.
    MissingField(&'static str),
    /// A column holds the wrong SQLite type (e.g. a blob where text belongs).
    WrongType(&'static str),
    /// A text column is not valid UTF-8.
    BadUtf8(&'static str),
    /// A URI column does not hold a usable SIP URI.
    BadUri(&'static str),
    /// A socket-address column does not parse.
    BadAddress(&'static str),
    /// An expiry or timestamp outside `1..=MAX_UNIX_TIME`.
    ExpiryOutOfRange(&'static str),
    /// Any other value out of its domain (negative CSeq, unknown transport, control chars...).
    BadValue(&'static str),
    /// The stored checksum does not match the record's canonical fields.
    ChecksumMismatch,
    /// Another row holds the same key; this one lost (older `last_seen`, then lower row id).
    DuplicateKey,
}

impl fmt::Display for QuarantineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuarantineReason::MissingField(c) => write!(f, "missing field {c}"),
            QuarantineReason::WrongType(c) => write!(f, "wrong type in {c}"),
            QuarantineReason::BadUtf8(c) => write!(f, "bad UTF-8 in {c}"),
            QuarantineReason::BadUri(c) => write!(f, "bad URI in {c}"),
            QuarantineReason::BadAddress(c) => write!(f, "bad address in {c}"),
            QuarantineReason::ExpiryOutOfRange(c) => write!(f, "out of range: {c}"),
            QuarantineReason::BadValue(c) => write!(f, "bad value in {c}"),
            QuarantineReason::ChecksumMismatch => f.write_str("checksum mismatch"),
            QuarantineReason::DuplicateKey => f.write_str("duplicate key"),
        }
    }
}

/// A record as kept in the quarantine table (lossy text, for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRecord {
    pub id: i64,
    /// When it was quarantined, unix seconds.
    pub at: i64,
    /// Table it came from (`bindings`, `subscriptions`, `mwi`, `events`).
    pub table: String,
    /// Its row id there.
    pub source_rowid: i64,
    /// Its key as far as readable (e.g. `aor contact_uri`), lossy.
    pub key: String,
    /// The reason, as text (see [`QuarantineReason`]).
    pub reason: String,
    /// Every column, escaped, for forensics.
    pub raw: String,
}

/// Good records of a load, plus what was set aside on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<T> {
    pub items: Vec<T>,
    /// Rows found bad during this load and moved to quarantine.
    pub quarantined: usize,
    /// Row-id ranges that SQLite itself could not read (page-level damage), skipped.
    pub unreadable: usize,
}

/// What [`crate::Store::purge_expired`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Expired records deleted (bindings + subscriptions).
    pub purged: usize,
    pub purged_bindings: usize,
    pub purged_subscriptions: usize,
    /// Bad records met and moved to quarantine.
    pub quarantined: usize,
    /// Row-id ranges SQLite could not read, skipped.
    pub unreadable: usize,
    /// Old event-log and quarantine rows trimmed to their caps.
    pub trimmed: usize,
    /// Number of bounded batches (one short write transaction each).
    pub batches: usize,
    pub took: Duration,
}

/// What [`crate::Store::open`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    pub path: PathBuf,
    /// The store did not exist (or was set aside) and was created empty.
    pub created: bool,
    /// Where a damaged or unopenable database was moved (never deleted).
    pub set_aside: Option<PathBuf>,
    /// Why it was set aside.
    pub set_aside_reason: Option<String>,
    /// `(major, minor)` found on disk before migrations, when there was a store.
    pub found_version: Option<(u32, u32)>,
    /// `(major, minor)` after open.
    pub schema_version: (u32, u32),
    /// Migrations applied at this open.
    pub migrations_applied: usize,
    /// Verified records copied from the set-aside file into the fresh store.
    pub salvaged: usize,
    /// Rows already in quarantine at open.
    pub quarantined_total: u64,
    /// `PRAGMA journal_mode` of the writer (`wal` expected).
    pub journal_mode: String,
    /// `PRAGMA synchronous` of the writer (2 = FULL, 1 = NORMAL).
    pub synchronous: i64,
    pub took: Duration,
}

/// Result of [`crate::Store::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// `PRAGMA quick_check` said `ok`.
    pub ok: bool,
    /// Its messages (`["ok"]` when fine; at most 20).
    pub quick_check: Vec<String>,
    /// Good rows per table, in order bindings, subscriptions, mwi, events.
    pub rows: Vec<(String, usize)>,
    /// Bad rows found by this check and moved to quarantine.
    pub quarantined: usize,
    pub unreadable: usize,
    /// Rows in quarantine after the check.
    pub quarantined_total: u64,
    pub took: Duration,
}

/// Counters, cheap to read (no database access).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStats {
    pub path: PathBuf,
    pub schema_version: (u32, u32),
    /// Commits acknowledged durable.
    pub commits: u64,
    /// Commits refused (invalid record) or failed.
    pub commits_failed: u64,
    /// Individual writes applied.
    pub writes: u64,
    /// Write transactions (group commits) done.
    pub groups: u64,
    /// Largest number of commits grouped in one transaction.
    pub largest_group: u64,
    /// Records moved to quarantine since open.
    pub quarantined: u64,
    /// Rows in quarantine (table) as of the last count (open, check, purge, load).
    pub quarantined_total: u64,
    /// Database set aside at open.
    pub set_aside: Option<PathBuf>,
    /// The writer thread is running.
    pub writer_alive: bool,
    /// Time since the writer thread last looped (it wakes at least every second).
    pub writer_idle: Duration,
    pub last_purge: Option<PurgeReport>,
    /// Damage to the file met while running (quick_check failed in `check()`, unreadable
    /// rows, a corrupt-database error on a write). The store keeps serving what it can; a
    /// restart sets the file aside and salvages every verified record, so a supervisor may
    /// choose to restart the appliance when this is set.
    pub damaged: Option<String>,
}
