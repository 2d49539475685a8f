//! The root filesystem payload: the board's base OS (a tar, e.g. from
//! mmdebstrap, with its kernel under /boot), then `images/common/rootfs`,
//! `images/<board>/rootfs`, the firmware binary, the slot layout and the
//! trusted public keys on top, as one tar (overlay sorted, owner root, one
//! mtime). A real board's slot is a whole root filesystem, so its bundle
//! needs the base; the simulated board's slots need only the overlay.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use holdline_update::keys;
use holdline_update::slots::{Layout, SlotTarget};

/// Failures building the root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// No such board directory.
    #[error("no board {board:?} under {images} (expected {images}/{board}/manifest.toml)")]
    NoBoard {
        /// Board.
        board: String,
        /// images/ directory.
        images: String,
    },
    /// The board's slot layout is invalid.
    #[error("{path}: {detail}")]
    Layout {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A public key is not valid.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The firmware binary is empty.
    #[error("{0}: firmware binary is empty")]
    EmptyFirmware(PathBuf),
    /// A real board without a base root filesystem.
    #[error("board {0:?} writes whole partitions: pass --base-rootfs (a tar of the board's base OS with its kernel)")]
    NoBase(String),
    /// The base tar is unreadable.
    #[error("base rootfs {path}: {detail}")]
    Base {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(PathBuf),
    Dir,
}

struct Item {
    source: Source,
    mode: u32,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Item>) -> Result<(), RootfsError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io(&dir))?
        .collect::<Result<_, _>>()
        .map_err(io(&dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = rel.join(e.file_name());
        let name = rel.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            out.insert(
                name,
                Item {
                    source: Source::Symlink(target),
                    mode: 0o777,
                },
            );
        } else if meta.is_dir() {
            out.insert(
                name,
                Item {
                    source: Source::Dir,
                    mode: 0o755,
                },
            );
            walk(root, &rel, out)?;
        } else {
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            out.insert(
                name,
                Item {
                    source: Source::File(path),
                    mode,
                },
            );
        }
    }
    Ok(())
}

fn add_parents(out: &mut BTreeMap<String, Item>) {
    let names: Vec<String> = out.keys().cloned().collect();
    for n in names {
        let mut p = Path::new(&n).parent();
        while let Some(d) = p {
            if d.as_os_str().is_empty() {
                break;
            }
            out.entry(d.to_string_lossy().into_owned()).or_insert(Item {
                source: Source::Dir,
                mode: 0o755,
            });
            p = d.parent();
        }
    }
}

/// Builds the rootfs tar at `out`.
#[allow(clippy::too_many_arguments)]
pub fn build(
    images: &Path,
    board: &str,
    base: Option<&Path>,
    firmware: &Path,
    pubkeys: &[PathBuf],
    version: &semver::Version,
    mtime: u64,
    out: &Path,
) -> Result<(), RootfsError> {
    let board_dir = images.join(board);
    if !board_dir.join("manifest.toml").is_file() {
        return Err(RootfsError::NoBoard {
            board: board.to_owned(),
            images: images.display().to_string(),
        });
    }
    let layout_path = board_dir.join("slots.toml");
    let layout_text = std::fs::read_to_string(&layout_path).map_err(io(&layout_path))?;
    let layout = Layout::parse(&layout_text).map_err(|e| RootfsError::Layout {
        path: layout_path.clone(),
        detail: e.to_string(),
    })?;
    if layout.board != board {
        return Err(RootfsError::Layout {
            path: layout_path,
            detail: format!("names board {:?}, not {board:?}", layout.board),
        });
    }
    let needs_base = layout
        .slot
        .iter()
        .any(|s| matches!(s.target, SlotTarget::Block { .. }));
    if needs_base && base.is_none() {
        return Err(RootfsError::NoBase(board.to_owned()));
    }
    let mut items = BTreeMap::new();
    for overlay in [images.join("common/rootfs"), board_dir.join("rootfs")] {
        if overlay.is_dir() {
            walk(&overlay, Path::new(""), &mut items)?;
        }
    }
    let fw_meta = std::fs::metadata(firmware).map_err(io(firmware))?;
    if fw_meta.len() == 0 {
        return Err(RootfsError::EmptyFirmware(firmware.to_path_buf()));
    }
    items.insert(
        "usr/bin/holdline".into(),
        Item {
            source: Source::File(firmware.to_path_buf()),
            mode: 0o755,
        },
    );
    items.insert(
        "etc/holdline/slots.toml".into(),
        Item {
            source: Source::Bytes(layout_text.into_bytes()),
            mode: 0o644,
        },
    );
    for k in pubkeys {
        let key = keys::load_public(k)?;
        let name = k.file_stem().map_or_else(
            || "release".to_owned(),
            |s| s.to_string_lossy().into_owned(),
        );
        items.insert(
            format!("etc/holdline/keys/{name}.pub"),
            Item {
                source: Source::Bytes(keys::public_to_text(&key).into_bytes()),
                mode: 0o644,
            },
        );
    }
    items.insert(
        "etc/holdline/release".into(),
        Item {
            source: Source::Bytes(
                format!("board={board}\nversion={version}\nbuild_time={mtime}\n").into_bytes(),
            ),
            mode: 0o644,
        },
    );
    add_parents(&mut items);

    let file = File::create(out).map_err(io(out))?;
    let mut b = tar::Builder::new(file);
    b.mode(tar::HeaderMode::Deterministic);
    let e = io(out);
    if let Some(base) = base {
        copy_base(base, &items, &mut b)?;
    }
    for (name, item) in &items {
        let mut h = tar::Header::new_ustar();
        h.set_mode(item.mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        match &item.source {
            Source::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{name}/"), std::io::empty())
                    .map_err(&e)?;
            }
            Source::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, name, target).map_err(&e)?;
            }
            Source::Bytes(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                b.append_data(&mut h, name, &bytes[..]).map_err(&e)?;
            }
            Source::File(path) => {
                let f = File::open(path).map_err(io(path))?;
                let len = f.metadata().map_err(io(path))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(len);
                b.append_data(&mut h, name, f).map_err(io(path))?;
            }
        }
    }
    let mut f = b.into_inner().map_err(&e)?;
    f.flush().map_err(&e)?;
    Ok(())
}

/// Copies the base OS tar into `b`, leaving out what the overlay replaces
/// (files and directories the overlay brings are written after it).
fn copy_base(
    base: &Path,
    overlay: &BTreeMap<String, Item>,
    b: &mut tar::Builder<File>,
) -> Result<(), RootfsError> {
    let err = |detail: String| RootfsError::Base {
        path: base.to_path_buf(),
        detail,
    };
    let file = File::open(base).map_err(|e| err(e.to_string()))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry.path().map_err(|e| err(e.to_string()))?.into_owned();
        let name = path
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        if name.is_empty() || name == "." {
            continue;
        }
        if overlay.contains_key(&name) {
            continue;
        }
        let mut header = entry.header().clone();
        b.append_data(&mut header, &name, &mut entry)
            .map_err(|e| err(format!("{name}: {e}")))?;
    }
    Ok(())
}
