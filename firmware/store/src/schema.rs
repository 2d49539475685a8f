//! Versioned schema with ordered migrations.
//!
//! `PRAGMA user_version` holds `major << 16 | minor`; `PRAGMA application_id` marks the
//! file as a holdline store.
//!
//! ## The A/B rollback rule
//! After a rollback, the *older* firmware must still read and write what the newer one left:
//! - A **minor** step (same major) may only *add*: new tables, new indexes, new nullable
//!   columns or columns with a constant `DEFAULT`. Nothing is renamed, retyped, dropped or
//!   re-encoded. The store always names its columns (never `SELECT *`, never positional
//!   `INSERT`), so an older firmware ignores columns it does not know and its inserts give
//!   them their defaults. Each record's `crc` covers a frozen set of fields (the `.v1`
//!   encoding in `record.rs`); fields added by a minor step get their own checksum column
//!   (NULL meaning "fields at their defaults"), so the older firmware's rows stay valid for
//!   the newer one and vice versa.
//! - A **major** step is anything else. A firmware refuses to open a store whose major is
//!   newer than its own ([`crate::StoreError::SchemaTooNew`]) and leaves the file untouched,
//!   rather than misreading it. A major step therefore needs a release that still writes the
//!   old major first; it should be avoided.
//! - Migrations run in order, each in its own transaction that also sets `user_version`, so
//!   a power cut mid-migration leaves the store at the previous version, consistent.

use rusqlite::Connection;

/// `holdline` store marker (`HLDS`).
pub const APPLICATION_ID: i32 = 0x484C_4453;
pub const SCHEMA_MAJOR: u32 = 1;
pub const SCHEMA_MINOR: u32 = 0;

/// One ordered step.
pub(crate) struct Migration {
    pub major: u32,
    pub minor: u32,
    pub sql: &'static str,
}

/// All migrations, oldest first. Append only.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    major: 1,
    minor: 0,
    // No UNIQUE constraints and no NOT NULL: the store must be able to *hold* a damaged row
    // (written by a bug, a torn page, the corruption tool) and then quarantine it when read;
    // keys are enforced by the writer (delete + insert in one transaction) and duplicates
    // found on read are quarantined.
    sql: "
        CREATE TABLE bindings (
            id INTEGER PRIMARY KEY,
            aor TEXT, contact TEXT, contact_uri TEXT, expires_at INTEGER,
            call_id TEXT, cseq INTEGER, source TEXT, transport TEXT,
            instance_id TEXT, reg_id INTEGER, prov_kind TEXT, prov_at INTEGER,
            last_seen INTEGER, path TEXT, crc INTEGER
        );
        CREATE INDEX bindings_key ON bindings(aor, contact_uri);
        CREATE INDEX bindings_expiry ON bindings(expires_at);
        CREATE TABLE subscriptions (
            id INTEGER PRIMARY KEY,
            sub_id TEXT, event TEXT, call_id TEXT, local_tag TEXT, remote_tag TEXT,
            watcher_aor TEXT, target_uri TEXT, remote_target TEXT, route_set TEXT,
            local_cseq INTEGER, remote_cseq INTEGER, expires_at INTEGER,
            last_version INTEGER, last_body TEXT, last_content_type TEXT,
            phone TEXT, transport TEXT, crc INTEGER
        );
        CREATE INDEX subscriptions_key ON subscriptions(sub_id);
        CREATE TABLE mwi (
            id INTEGER PRIMARY KEY,
            aor TEXT, body TEXT, content_type TEXT, at INTEGER, crc INTEGER
        );
        CREATE INDEX mwi_key ON mwi(aor);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at INTEGER, kind TEXT, detail TEXT, crc INTEGER
        );
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            at INTEGER, source_table TEXT, source_rowid INTEGER,
            key TEXT, reason TEXT, raw TEXT
        );
    ",
}];

/// Tables that must exist in a store of the current major.
pub(crate) const TABLES: &[&str] = &["bindings", "subscriptions", "mwi", "events", "quarantine"];

pub(crate) fn pack(major: u32, minor: u32) -> i64 {
    (i64::from(major) << 16) | i64::from(minor & 0xffff)
}

pub(crate) fn unpack(v: i64) -> (u32, u32) {
    let v = u32::try_from(v).unwrap_or(u32::MAX);
    (v >> 16, v & 0xffff)
}

/// What [`prepare`] found.
pub(crate) enum Prepared {
    /// Ready; `(found, applied)`.
    Ready {
        found: Option<(u32, u32)>,
        applied: usize,
    },
    /// The file is a valid SQLite database but not a usable holdline store.
    Foreign(String),
    /// Newer major: refuse.
    TooNew((u32, u32)),
}

/// Check the identity and version of an opened database and migrate it forward.
pub(crate) fn prepare(conn: &mut Connection) -> rusqlite::Result<Prepared> {
    let app: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let uv: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let objects: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
        [],
        |r| r.get(0),
    )?;
    let fresh = app == 0 && uv == 0 && objects == 0;
    if !fresh && app != APPLICATION_ID {
        return Ok(Prepared::Foreign(format!(
            "not a holdline store (application_id {app:#x}, {objects} schema objects)"
        )));
    }
    let found = if fresh { None } else { Some(unpack(uv)) };
    let (maj, _) = unpack(uv);
    if maj > SCHEMA_MAJOR {
        return Ok(Prepared::TooNew(unpack(uv)));
    }
    let mut applied = 0;
    for m in MIGRATIONS {
        if pack(m.major, m.minor) <= uv {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(m.sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", pack(m.major, m.minor))?;
        tx.commit()?;
        applied += 1;
    }
    for t in TABLES {
        let n: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [t],
            |r| r.get(0),
        )?;
        if n != 1 {
            return Ok(Prepared::Foreign(format!(
                "schema incomplete: table {t} missing"
            )));
        }
    }
    Ok(Prepared::Ready { found, applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_strictly_ordered_and_end_at_the_current_version() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| pack(m.major, m.minor)).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.last(), Some(&pack(SCHEMA_MAJOR, SCHEMA_MINOR)));
        assert_eq!(unpack(pack(3, 7)), (3, 7));
    }

    #[test]
    fn fresh_database_is_migrated_once() {
        let mut c = Connection::open_in_memory().expect("memory db");
        match prepare(&mut c).expect("prepare") {
            Prepared::Ready { found, applied } => {
                assert_eq!(found, None);
                assert_eq!(applied, MIGRATIONS.len());
            }
            _ => panic!("fresh db must be ready"),
        }
        let uv: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("user_version");
        assert_eq!(uv, pack(SCHEMA_MAJOR, SCHEMA_MINOR));
        match prepare(&mut c).expect("prepare again") {
            Prepared::Ready { found, applied } => {
                assert_eq!(found, Some((SCHEMA_MAJOR, SCHEMA_MINOR)));
                assert_eq!(applied, 0);
            }
            _ => panic!("migrated db must be ready"),
        }
    }

    #[test]
    fn a_store_with_a_missing_table_is_not_ready() {
        let mut c = Connection::open_in_memory().expect("memory db");
        prepare(&mut c).expect("prepare");
        c.execute_batch("DROP TABLE mwi").expect("drop");
        assert!(matches!(prepare(&mut c), Ok(Prepared::Foreign(_))));
    }
}
