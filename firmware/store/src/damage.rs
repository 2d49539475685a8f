//! Deliberate damage, for tests and the `holdline-store-corrupt` field tool.
//!
//! Never used by the appliance itself. Row damage is written with plain SQL into a store
//! file (normally a *copy*, see [`copy_store`]), bypassing every check of the writer, exactly
//! as a bug, bit rot or a hand edit would. File damage overwrites or truncates bytes.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::StoreError;

/// Kinds of damage to rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowDamage {
    /// A URI column gets something that is not a SIP URI.
    BadUri,
    /// An address column gets an unparsable socket address.
    BadAddress,
    /// An expiry/timestamp column gets a value far outside the accepted range.
    ExpiryOutOfRange,
    /// A required column is set to NULL.
    MissingField,
    /// An integer column gets text, a text column a blob.
    WrongType,
    /// A text column gets bytes that are not UTF-8.
    BadUtf8,
    /// A field is changed to another *valid* value without updating the checksum.
    ChecksumMismatch,
    /// The row is copied, so its key appears twice.
    Duplicate,
    /// An enumerated column (transport) gets an unknown value.
    BadValue,
}

impl RowDamage {
    pub const ALL: [RowDamage; 9] = [
        RowDamage::BadUri,
        RowDamage::BadAddress,
        RowDamage::ExpiryOutOfRange,
        RowDamage::MissingField,
        RowDamage::WrongType,
        RowDamage::BadUtf8,
        RowDamage::ChecksumMismatch,
        RowDamage::Duplicate,
        RowDamage::BadValue,
    ];

    /// The reason text the store gives when it quarantines a row with this damage
    /// (prefix), for a table that has the relevant column.
    pub fn expected_reason(self) -> &'static str {
        match self {
            RowDamage::BadUri => "bad URI",
            RowDamage::BadAddress => "bad address",
            RowDamage::ExpiryOutOfRange => "out of range",
            RowDamage::MissingField => "missing field",
            RowDamage::WrongType => "wrong type",
            RowDamage::BadUtf8 => "bad UTF-8",
            RowDamage::ChecksumMismatch => "checksum mismatch",
            RowDamage::Duplicate => "duplicate key",
            RowDamage::BadValue => "bad value",
        }
    }
}

/// Kinds of damage to the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDamage {
    /// Cut the file at a point that is not a page boundary, inside its second half.
    Truncate,
    /// Overwrite the second half of one page (not page 1, and one whose second half holds
    /// data) with random bytes, as a torn write of a 4 KiB page on a device with 2 KiB
    /// atomic writes would.
    TornPage,
    /// Overwrite the 100-byte SQLite header with random bytes.
    GarbageHeader,
}

/// Deterministic pseudo-random numbers (splitmix64); no dependency, reproducible by seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Columns of a table that each kind of damage targets.
struct Targets {
    uri: Option<&'static str>,
    addr: Option<&'static str>,
    expiry: &'static str,
    required: &'static str,
    utf8: &'static str,
    int_col: &'static str,
    enum_col: Option<&'static str>,
    /// Integer column changed by +1 for a checksum mismatch (stays valid).
    crc_bump: &'static str,
    cols: &'static [&'static str],
}

fn targets(table: &str) -> Result<Targets, StoreError> {
    use crate::record::Record;
    Ok(match table {
        "bindings" => Targets {
            uri: Some("aor"),
            addr: Some("source"),
            expiry: "expires_at",
            required: "call_id",
            utf8: "contact",
            int_col: "cseq",
            enum_col: Some("transport"),
            crc_bump: "cseq",
            cols: crate::Binding::COLS,
        },
        "subscriptions" => Targets {
            uri: Some("watcher_aor"),
            addr: Some("phone"),
            expiry: "expires_at",
            required: "call_id",
            utf8: "event",
            int_col: "local_cseq",
            enum_col: Some("transport"),
            crc_bump: "local_cseq",
            cols: crate::Subscription::COLS,
        },
        "mwi" => Targets {
            uri: Some("aor"),
            addr: None,
            expiry: "at",
            required: "content_type",
            utf8: "body",
            int_col: "at",
            enum_col: None,
            crc_bump: "at",
            cols: crate::Mwi::COLS,
        },
        "events" => Targets {
            uri: None,
            addr: None,
            expiry: "at",
            required: "kind",
            utf8: "detail",
            int_col: "at",
            enum_col: None,
            crc_bump: "at",
            cols: crate::Event::COLS,
        },
        other => return Err(StoreError::Invalid(format!("unknown table {other}"))),
    })
}

/// Copy a store (including what is still in its WAL) to `to` with `VACUUM INTO`;
/// row ids, `user_version` and `application_id` are kept. `to` must not exist.
pub fn copy_store(from: &Path, to: &Path) -> Result<(), StoreError> {
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let to = to
        .to_str()
        .ok_or_else(|| StoreError::Invalid(format!("path {} is not UTF-8", to.display())))?;
    conn.execute("VACUUM INTO ?1", [to])?;
    Ok(())
}

/// Rows in `table` (good and bad alike).
pub fn row_count(path: &Path, table: &str) -> Result<usize, StoreError> {
    targets(table)?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Apply `kind` to `count` distinct rows of `table` chosen at random by `seed` (fewer if the
/// table is smaller). Returns the row ids damaged (for `Duplicate`: the ids of the rows
/// copied). Rows already listed in `avoid` are not chosen again.
pub fn damage_rows(
    path: &Path,
    table: &str,
    kind: RowDamage,
    count: usize,
    seed: u64,
    avoid: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let t = targets(table)?;
    let conn = Connection::open(path)?;
    let mut ids: Vec<i64> = {
        let mut stmt = conn.prepare(&format!("SELECT id FROM {table} ORDER BY id"))?;
        let rows = stmt.query_map([], |r| r.get::<_, i64>(0))?;
        rows.collect::<Result<_, _>>()?
    };
    ids.retain(|i| !avoid.contains(i));
    let mut rng = Rng::new(seed);
    let mut chosen = Vec::new();
    while chosen.len() < count && !ids.is_empty() {
        let i = usize::try_from(rng.below(ids.len() as u64)).unwrap_or(0);
        chosen.push(ids.swap_remove(i.min(ids.len() - 1)));
    }
    let unsupported = |what: &str| {
        StoreError::Invalid(format!(
            "table {table} has no {what} column for this damage"
        ))
    };
    let tx = conn.unchecked_transaction()?;
    for &id in &chosen {
        let sql = match kind {
            RowDamage::BadUri => format!(
                "UPDATE {table} SET {} = 'not a <uri>' WHERE id = ?1",
                t.uri.ok_or_else(|| unsupported("URI"))?
            ),
            RowDamage::BadAddress => format!(
                "UPDATE {table} SET {} = '999.1.2.3:99999' WHERE id = ?1",
                t.addr.ok_or_else(|| unsupported("address"))?
            ),
            RowDamage::ExpiryOutOfRange => {
                let v: i64 = if rng.below(2) == 0 {
                    -3600
                } else {
                    99_999_999_999
                };
                format!("UPDATE {table} SET {} = {v} WHERE id = ?1", t.expiry)
            }
            RowDamage::MissingField => {
                format!("UPDATE {table} SET {} = NULL WHERE id = ?1", t.required)
            }
            RowDamage::WrongType => {
                if rng.below(2) == 0 {
                    format!("UPDATE {table} SET {} = 'soon' WHERE id = ?1", t.int_col)
                } else {
                    format!(
                        "UPDATE {table} SET {} = x'deadbeef' WHERE id = ?1",
                        t.required
                    )
                }
            }
            RowDamage::BadUtf8 => format!(
                "UPDATE {table} SET {} = CAST(x'3c7369703ac328ff3e' AS TEXT) WHERE id = ?1",
                t.utf8
            ),
            RowDamage::ChecksumMismatch => format!(
                "UPDATE {table} SET {c} = {c} + 1 WHERE id = ?1",
                c = t.crc_bump
            ),
            RowDamage::Duplicate => {
                let cols = t.cols.join(", ");
                format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM {table} WHERE id = ?1")
            }
            RowDamage::BadValue => format!(
                "UPDATE {table} SET {} = 'carrier-pigeon' WHERE id = ?1",
                t.enum_col.ok_or_else(|| unsupported("enumerated"))?
            ),
        };
        tx.execute(&sql, [id])?;
    }
    tx.commit()?;
    // Leave a single self-contained file behind.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(chosen)
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Damage the file itself. Checkpoint the store first (the tool's copies are already
/// self-contained). Returns a one-line description of what was done.
pub fn damage_file(path: &Path, kind: FileDamage, seed: u64) -> Result<String, StoreError> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("opening", path))?;
    let len = f.metadata().map_err(io("reading size of", path))?.len();
    let mut rng = Rng::new(seed);
    let mut header = [0u8; 100];
    let page_size = if len >= 100 {
        f.read_exact(&mut header).map_err(io("reading", path))?;
        match u16::from_be_bytes([header[16], header[17]]) {
            1 => 65_536,
            0 => 4096,
            n => u64::from(n),
        }
    } else {
        4096
    };
    match kind {
        FileDamage::Truncate => {
            let at = if len < 2 {
                0
            } else {
                (len / 2 + rng.below(len / 2)) / 512 * 512 + 100
            }
            .min(len.saturating_sub(1));
            f.set_len(at).map_err(io("truncating", path))?;
            Ok(format!("truncated from {len} to {at} bytes"))
        }
        FileDamage::GarbageHeader => {
            let garbage: Vec<u8> = (0..100).map(|_| (rng.next_u64() & 0xff) as u8).collect();
            f.seek(SeekFrom::Start(0)).map_err(io("seeking in", path))?;
            f.write_all(&garbage).map_err(io("writing", path))?;
            f.sync_all().map_err(io("syncing", path))?;
            Ok("overwrote the 100-byte header with random bytes".to_owned())
        }
        FileDamage::TornPage => {
            let pages = len / page_size;
            if pages < 2 {
                return Err(StoreError::Invalid(format!(
                    "{} has {pages} page(s); a torn page needs at least 2",
                    path.display()
                )));
            }
            // Only pages whose second half holds data (a tear in empty space is harmless);
            // 0-based, never the header page.
            let mut candidates = Vec::new();
            let mut half = vec![0u8; usize::try_from(page_size / 2).unwrap_or(2048)];
            for p in 1..pages {
                f.seek(SeekFrom::Start(p * page_size + page_size / 2))
                    .map_err(io("seeking in", path))?;
                f.read_exact(&mut half).map_err(io("reading", path))?;
                if half.iter().any(|b| *b != 0) {
                    candidates.push(p);
                }
            }
            if candidates.is_empty() {
                candidates.extend(1..pages);
            }
            let pick = usize::try_from(rng.below(candidates.len() as u64)).unwrap_or(0);
            let page = candidates.get(pick).copied().unwrap_or(1);
            let start = page * page_size + page_size / 2;
            let garbage: Vec<u8> = (0..page_size / 2)
                .map(|_| (rng.next_u64() & 0xff) as u8)
                .collect();
            f.seek(SeekFrom::Start(start))
                .map_err(io("seeking in", path))?;
            f.write_all(&garbage).map_err(io("writing", path))?;
            f.sync_all().map_err(io("syncing", path))?;
            Ok(format!(
                "tore page {} (bytes {start}..{}) of {pages}",
                page + 1,
                start + page_size / 2
            ))
        }
    }
}
