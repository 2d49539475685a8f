//! `holdline-store-corrupt`: write chosen kinds of damage into a *copy* of a holdline store,
//! so tests and field technicians can replay the incident's cause (corrupt contact records
//! meeting the routine purge) and check that the appliance quarantines instead of crashing.
//!
//! The input store is never modified: it is copied with `VACUUM INTO` (which folds in its
//! WAL and keeps row ids and the schema version), then the copy is damaged.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use holdline_store::damage::{copy_store, damage_file, damage_rows, FileDamage, RowDamage};

/// Kinds of damage to rows (written with plain SQL, bypassing every check of the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A URI column (aor, watcher_aor) gets "not a <uri>".
    BadUri,
    /// An address column (source, phone) gets "999.1.2.3:99999".
    BadAddress,
    /// The expiry/timestamp gets -3600 or 99999999999.
    ExpiryOutOfRange,
    /// A required column (call_id, kind, content_type) is set to NULL.
    MissingField,
    /// An integer column gets text, or a text column a blob.
    WrongType,
    /// A text column gets bytes that are not UTF-8.
    BadUtf8,
    /// A field changes to another valid value; the stored checksum is left as it was.
    ChecksumMismatch,
    /// The row is copied, so its key is there twice.
    Duplicate,
    /// The transport column gets an unknown value.
    BadValue,
    /// Every kind above (skipping those the table has no column for).
    All,
}

impl Kind {
    fn row_damage(self) -> Vec<RowDamage> {
        match self {
            Kind::BadUri => vec![RowDamage::BadUri],
            Kind::BadAddress => vec![RowDamage::BadAddress],
            Kind::ExpiryOutOfRange => vec![RowDamage::ExpiryOutOfRange],
            Kind::MissingField => vec![RowDamage::MissingField],
            Kind::WrongType => vec![RowDamage::WrongType],
            Kind::BadUtf8 => vec![RowDamage::BadUtf8],
            Kind::ChecksumMismatch => vec![RowDamage::ChecksumMismatch],
            Kind::Duplicate => vec![RowDamage::Duplicate],
            Kind::BadValue => vec![RowDamage::BadValue],
            Kind::All => RowDamage::ALL.to_vec(),
        }
    }
}

/// Kinds of damage to the file, applied after the row damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FileKind {
    /// Cut the file inside its second half, off a page boundary.
    Truncate,
    /// Overwrite the second half of one data-holding page (not the first) with random bytes.
    TornPage,
    /// Overwrite the 100-byte SQLite header with random bytes.
    GarbageHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Table {
    Bindings,
    Subscriptions,
    Mwi,
    Events,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Bindings => "bindings",
            Table::Subscriptions => "subscriptions",
            Table::Mwi => "mwi",
            Table::Events => "events",
        }
    }
}

/// Write chosen kinds of damage into a copy of a holdline store.
///
/// The INPUT store is never modified. OUTPUT must not exist (unless --force).
/// Row damage is applied first (each kind to its own distinct rows), file damage last.
/// The same --seed gives the same damage.
///
/// Examples:
///
///   # 2 % of the bindings damaged in every way, like the incident
///   holdline-store-corrupt holdline.db damaged.db --damage all --percent 2
///
///   # three duplicate subscriptions and a torn page
///   holdline-store-corrupt holdline.db damaged.db --table subscriptions \
///       --damage duplicate --count 3 --file torn-page
///
///   # a truncated file only
///   holdline-store-corrupt holdline.db damaged.db --file truncate
///
/// What the appliance does with the result: bad rows are moved to quarantine with their
/// reason when read (load, purge, `store check`); a file that fails `PRAGMA quick_check`
/// at start is renamed aside and a fresh store is created, salvaging verified rows.
#[derive(Debug, Parser)]
#[command(name = "holdline-store-corrupt", version, verbatim_doc_comment)]
struct Cli {
    /// The store to copy (read only).
    input: PathBuf,
    /// Where to write the damaged copy.
    output: PathBuf,
    /// Row damage to apply; repeat for several kinds.
    #[arg(long = "damage", value_enum)]
    damage: Vec<Kind>,
    /// Table the row damage goes into.
    #[arg(long, value_enum, default_value = "bindings")]
    table: Table,
    /// Rows damaged per kind.
    #[arg(long, default_value_t = 1, conflicts_with = "percent")]
    count: usize,
    /// Rows damaged per kind, as a percentage of the table's rows (at least 1 row).
    #[arg(long)]
    percent: Option<f64>,
    /// File damage, applied after the row damage.
    #[arg(long = "file", value_enum)]
    file: Option<FileKind>,
    /// Seed of the random choices (rows, bytes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    force: bool,
}

fn row_count(path: &std::path::Path, table: &str) -> Result<usize, String> {
    holdline_store::damage::row_count(path, table).map_err(|e| e.to_string())
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.damage.is_empty() && cli.file.is_none() {
        return Err("nothing to do: give --damage KIND and/or --file KIND (see --help)".into());
    }
    if cli.output.exists() {
        if !cli.force {
            return Err(format!(
                "{} exists; choose another OUTPUT or pass --force",
                cli.output.display()
            ));
        }
        for side in ["", "-wal", "-shm", "-journal"] {
            let p = PathBuf::from(format!("{}{side}", cli.output.display()));
            if p.exists() {
                std::fs::remove_file(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
            }
        }
    }
    match copy_store(&cli.input, &cli.output) {
        Ok(()) => println!("copied {} -> {}", cli.input.display(), cli.output.display()),
        // An input SQLite cannot read (already damaged) can still get file damage: copy
        // its bytes as they are.
        Err(e) if cli.damage.is_empty() && cli.input.is_file() => {
            let _ = std::fs::remove_file(&cli.output);
            std::fs::copy(&cli.input, &cli.output)
                .map_err(|e| format!("copying {}: {e}", cli.input.display()))?;
            println!(
                "copied the bytes of {} -> {} (SQLite could not read it: {e})",
                cli.input.display(),
                cli.output.display()
            );
        }
        Err(e) => return Err(format!("copying {}: {e}", cli.input.display())),
    }
    let table = cli.table.name();
    let per_kind = match cli.percent {
        Some(p) if !(0.0..=100.0).contains(&p) => {
            return Err(format!("--percent {p} is not within 0..=100"))
        }
        Some(p) => {
            let n = row_count(&cli.output, table)?;
            ((n as f64 * p / 100.0).round() as usize).max(1)
        }
        None => cli.count,
    };
    let mut kinds: Vec<RowDamage> = Vec::new();
    for k in &cli.damage {
        for d in k.row_damage() {
            if !kinds.contains(&d) {
                kinds.push(d);
            }
        }
    }
    let mut used: Vec<i64> = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let seed = cli.seed.wrapping_mul(31).wrapping_add(i as u64);
        match damage_rows(&cli.output, table, *kind, per_kind, seed, &used) {
            Ok(ids) => {
                println!(
                    "{table}: {kind:?} on {} row(s): ids {ids:?} (expect reason \"{}\")",
                    ids.len(),
                    kind.expected_reason()
                );
                used.extend(ids);
            }
            Err(e) if cli.damage.contains(&Kind::All) && e.to_string().contains("has no") => {
                println!("{table}: {kind:?} skipped ({e})");
            }
            Err(e) => return Err(format!("{kind:?}: {e}")),
        }
    }
    if let Some(f) = cli.file {
        let kind = match f {
            FileKind::Truncate => FileDamage::Truncate,
            FileKind::TornPage => FileDamage::TornPage,
            FileKind::GarbageHeader => FileDamage::GarbageHeader,
        };
        let what = damage_file(&cli.output, kind, cli.seed).map_err(|e| e.to_string())?;
        println!("file: {what}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("holdline-store-corrupt: {e}");
            ExitCode::FAILURE
        }
    }
}
