//! Row-level database operations shared by the reader and the writer.

use rusqlite::{params, params_from_iter, Connection};

use crate::model::{Binding, Event, Mwi, QuarantineReason, Subscription, Write};
use crate::record::{dump, fingerprint, lossy_key, RawValue, Record};

/// A row as read: its id and raw column values (in `T::COLS` order).
pub(crate) type RawRow = (i64, Vec<RawValue>);

/// A bad row found by a reader, to be moved to quarantine by the writer.
#[derive(Debug, Clone)]
pub(crate) struct BadRow {
    pub table: &'static str,
    pub cols: &'static [&'static str],
    pub key_cols: &'static [usize],
    pub rowid: i64,
    pub fingerprint: u32,
    pub reason: QuarantineReason,
}

impl BadRow {
    pub(crate) fn of<T: Record>(rowid: i64, vals: &[RawValue], reason: QuarantineReason) -> Self {
        BadRow {
            table: T::TABLE,
            cols: T::COLS,
            key_cols: T::KEY_COLS,
            rowid,
            fingerprint: fingerprint(vals),
            reason,
        }
    }
}

fn select_sql(table: &str, cols: &[&str], by_id: bool) -> String {
    if by_id {
        format!("SELECT id, {} FROM {table} WHERE id = ?1", cols.join(", "))
    } else {
        format!(
            "SELECT id, {} FROM {table} WHERE id > ?1 ORDER BY id LIMIT ?2",
            cols.join(", ")
        )
    }
}

fn read_rows(
    rows: &mut rusqlite::Rows<'_>,
    ncols: usize,
    out: &mut Vec<RawRow>,
) -> rusqlite::Result<()> {
    while let Some(row) = rows.next()? {
        let id = match row.get_ref(0)? {
            rusqlite::types::ValueRef::Integer(i) => i,
            _ => continue, // INTEGER PRIMARY KEY is always an integer; be defensive anyway
        };
        let mut vals = Vec::with_capacity(ncols);
        for c in 0..ncols {
            vals.push(RawValue::from(row.get_ref(c + 1)?));
        }
        out.push((id, vals));
    }
    Ok(())
}

/// Up to `limit` rows with id > `after`. Rows read before an error are returned with it.
fn chunk(
    conn: &Connection,
    table: &str,
    cols: &[&str],
    after: i64,
    limit: usize,
) -> (Vec<RawRow>, Option<rusqlite::Error>) {
    let mut out = Vec::with_capacity(limit.min(4096));
    let res = (|| {
        let mut stmt = conn.prepare_cached(&select_sql(table, cols, false))?;
        let mut rows = stmt.query(params![after, i64::try_from(limit).unwrap_or(i64::MAX)])?;
        read_rows(&mut rows, cols.len(), &mut out)
    })();
    (out, res.err())
}

/// A cursor over a table by row id that skips regions SQLite cannot read.
pub(crate) struct Scan {
    pub after: i64,
    pub done: bool,
    /// Read errors met (each one skipped a row-id range).
    pub unreadable: usize,
    skip: u32,
}

impl Scan {
    pub(crate) fn new() -> Self {
        Scan::from(0)
    }

    pub(crate) fn from(after: i64) -> Self {
        Scan {
            after,
            done: false,
            unreadable: 0,
            skip: 0,
        }
    }

    /// The next rows of `table`; never fails: unreadable ranges are skipped and counted.
    pub(crate) fn next(
        &mut self,
        conn: &Connection,
        table: &str,
        cols: &[&str],
        limit: usize,
    ) -> Vec<RawRow> {
        let limit = limit.max(1);
        while !self.done {
            let (rows, err) = chunk(conn, table, cols, self.after, limit);
            if let Some((last, _)) = rows.last() {
                self.after = *last;
            }
            match err {
                None => {
                    self.skip = 0;
                    if rows.len() < limit {
                        self.done = true;
                    }
                    return rows;
                }
                Some(e) => {
                    self.unreadable += 1;
                    if self.unreadable == 1 {
                        tracing::warn!(table, after = self.after, error = %e, "unreadable rows skipped");
                    }
                    if !rows.is_empty() {
                        return rows;
                    }
                    // Jump over the damaged region, doubling the jump; bounded.
                    if self.skip >= 62 {
                        self.done = true;
                        return rows;
                    }
                    self.after = self.after.saturating_add(1_i64 << self.skip);
                    self.skip += 1;
                }
            }
        }
        Vec::new()
    }
}

/// Read one row by id (for re-checking before quarantine).
fn row_by_id(
    conn: &Connection,
    table: &str,
    cols: &[&str],
    id: i64,
) -> rusqlite::Result<Option<Vec<RawValue>>> {
    let mut stmt = conn.prepare_cached(&select_sql(table, cols, true))?;
    let mut rows = stmt.query([id])?;
    let mut out = Vec::new();
    read_rows(&mut rows, cols.len(), &mut out)?;
    Ok(out.pop().map(|(_, v)| v))
}

/// Move a row to quarantine (insert there, delete here) if it is still as it was judged.
/// Returns whether it moved. Logs the move once.
pub(crate) fn quarantine_row(conn: &Connection, bad: &BadRow, now: i64) -> rusqlite::Result<bool> {
    let Some(vals) = row_by_id(conn, bad.table, bad.cols, bad.rowid)? else {
        return Ok(false);
    };
    if fingerprint(&vals) != bad.fingerprint {
        return Ok(false);
    }
    insert_quarantine(conn, bad, &vals, now)?;
    Ok(true)
}

/// Insert a judged row into quarantine and delete it from its table.
pub(crate) fn insert_quarantine(
    conn: &Connection,
    bad: &BadRow,
    vals: &[RawValue],
    now: i64,
) -> rusqlite::Result<()> {
    let key = lossy_key(bad.key_cols, vals);
    let reason = bad.reason.to_string();
    conn.prepare_cached(
        "INSERT INTO quarantine (at, source_table, source_rowid, key, reason, raw) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        now,
        bad.table,
        bad.rowid,
        key,
        reason,
        dump(bad.cols, vals)
    ])?;
    conn.prepare_cached(&format!("DELETE FROM {} WHERE id = ?1", bad.table))?
        .execute([bad.rowid])?;
    tracing::warn!(
        table = bad.table,
        rowid = bad.rowid,
        key = %key,
        reason = %reason,
        "record quarantined"
    );
    Ok(())
}

pub(crate) fn insert<T: Record>(conn: &Connection, rec: &T) -> rusqlite::Result<()> {
    let cols = T::COLS.join(", ");
    let marks: Vec<String> = (1..=T::COLS.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "INSERT INTO {} ({cols}) VALUES ({})",
        T::TABLE,
        marks.join(", ")
    );
    conn.prepare_cached(&sql)?
        .execute(params_from_iter(rec.to_values()))?;
    Ok(())
}

/// Validate a write before it joins a group (so one bad write cannot fail a whole group).
pub(crate) fn validate_write(w: &Write) -> Result<(), String> {
    let r = match w {
        Write::UpsertBinding(b) => b.validate(),
        Write::UpsertSubscription(s) => s.validate(),
        Write::SetMwi {
            aor,
            body,
            content_type,
            at,
        } => Mwi {
            aor: aor.clone(),
            body: body.clone(),
            content_type: content_type.clone(),
            at: *at,
        }
        .validate(),
        Write::Event(e) => e.validate(),
        Write::RemoveBinding { .. }
        | Write::RemoveAor { .. }
        | Write::RemoveSubscription { .. } => Ok(()),
    };
    r.map_err(|e| {
        let what = match w {
            Write::UpsertBinding(b) => format!("binding {} {}", b.aor, b.contact_uri),
            Write::UpsertSubscription(s) => format!("subscription {}", s.id),
            Write::SetMwi { aor, .. } => format!("mwi {aor}"),
            Write::Event(e) => format!("event {}", e.kind),
            _ => "removal".to_owned(),
        };
        format!("{what}: {e}")
    })
}

/// Apply one write inside the caller's transaction.
pub(crate) fn apply(conn: &Connection, w: &Write) -> rusqlite::Result<()> {
    match w {
        Write::UpsertBinding(b) => {
            delete_binding(conn, &b.aor, &b.contact_uri)?;
            insert::<Binding>(conn, b)
        }
        Write::RemoveBinding { aor, contact } => delete_binding(conn, aor, contact),
        Write::RemoveAor { aor } => {
            conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1")?
                .execute([aor])?;
            Ok(())
        }
        Write::UpsertSubscription(s) => {
            delete_subscription(conn, &s.id)?;
            insert::<Subscription>(conn, s)
        }
        Write::RemoveSubscription { id } => delete_subscription(conn, id),
        Write::SetMwi {
            aor,
            body,
            content_type,
            at,
        } => {
            conn.prepare_cached("DELETE FROM mwi WHERE aor = ?1")?
                .execute([aor])?;
            insert::<Mwi>(
                conn,
                &Mwi {
                    aor: aor.clone(),
                    body: body.clone(),
                    content_type: content_type.clone(),
                    at: *at,
                },
            )
        }
        Write::Event(e) => insert::<Event>(conn, e),
    }
}

fn delete_binding(conn: &Connection, aor: &str, contact_uri: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM bindings WHERE aor = ?1 AND contact_uri = ?2")?
        .execute([aor, contact_uri])?;
    Ok(())
}

fn delete_subscription(conn: &Connection, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM subscriptions WHERE sub_id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Rows in the quarantine table.
pub(crate) fn quarantine_count(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Keep only the newest `keep` rows of `table` (events, quarantine). Returns rows deleted.
pub(crate) fn trim(conn: &Connection, table: &str, keep: usize) -> rusqlite::Result<usize> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    conn.execute(
        &format!(
            "DELETE FROM {table} WHERE id <= \
             (SELECT id FROM {table} ORDER BY id DESC LIMIT 1 OFFSET ?1)"
        ),
        [keep],
    )
}

/// Rows sharing a unique key with another row: one `Vec` of rows per duplicated key.
/// Uses the key index (one pass), so it is cheap when, as normally, there are none.
pub(crate) fn duplicate_groups(
    conn: &Connection,
    table: &str,
    cols: &[&str],
    unique: &[usize],
) -> rusqlite::Result<Vec<Vec<RawRow>>> {
    let keys: Vec<&str> = unique
        .iter()
        .filter_map(|&i| cols.get(i).copied())
        .collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let list = keys.join(", ");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {list} FROM {table} GROUP BY {list} HAVING count(*) > 1"
    ))?;
    let mut rows = stmt.query([])?;
    let mut groups_keys = Vec::new();
    while let Some(r) = rows.next()? {
        let mut k = Vec::with_capacity(keys.len());
        for i in 0..keys.len() {
            k.push(RawValue::from(r.get_ref(i)?));
        }
        groups_keys.push(k);
    }
    drop(rows);
    let cond: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} IS ?{}", i + 1))
        .collect();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, {} FROM {table} WHERE {} ORDER BY id",
        cols.join(", "),
        cond.join(" AND ")
    ))?;
    let mut out = Vec::with_capacity(groups_keys.len());
    for k in groups_keys {
        let mut rows = stmt.query(rusqlite::params_from_iter(k.iter()))?;
        let mut group = Vec::new();
        read_rows(&mut rows, cols.len(), &mut group)?;
        out.push(group);
    }
    Ok(out)
}
