//! The store's error enum.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Bad *records* are not errors: they are
/// quarantined and counted; these are failures of the store as a whole or of a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation (I/O error, disk full, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// File system error outside SQLite (renaming a damaged store aside, ...).
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The store was written by a firmware with a newer, incompatible schema (A/B rollback
    /// after a major schema change). It is left untouched.
    #[error(
        "store {path} has schema {found_major}.{found_minor}, newer than this firmware's \
         {supported_major}.x; refusing to open it read-write (it is left untouched)"
    )]
    SchemaTooNew {
        path: PathBuf,
        found_major: u32,
        found_minor: u32,
        supported_major: u32,
    },
    /// A write was refused because the record would not pass validation when read back.
    #[error("invalid record in write: {0}")]
    Invalid(String),
    /// The writer thread is gone (store closed or writer failed).
    #[error("store writer is not running")]
    WriterGone,
}
