//! The bundle file: a tar archive holding `manifest.toml`, its detached
//! signature `manifest.sig` (hex Ed25519 over the manifest's exact bytes) and
//! the payload files under `payload/`. Nothing else is allowed in it.
//!
//! Verification order: signature over the manifest, then format, board,
//! payload digests, then version policy. A payload is hashed again while it
//! is written to a slot, so a bundle swapped after verification is caught.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::manifest::{Manifest, ManifestError, ManifestTemplate, Payload};

/// Name of the manifest entry.
pub const MANIFEST_NAME: &str = "manifest.toml";
/// Name of the detached signature entry.
pub const SIGNATURE_NAME: &str = "manifest.sig";
/// Directory of payload entries.
pub const PAYLOAD_DIR: &str = "payload/";
/// The payload that becomes a slot's root filesystem.
pub const ROOTFS: &str = "rootfs.tar";
const MAX_SMALL_ENTRY: u64 = 64 * 1024;

/// Why a bundle is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading or writing the bundle failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Not a tar archive, or an entry not allowed in a bundle.
    #[error("not a holdline bundle: {0}")]
    Malformed(String),
    /// No manifest in the archive.
    #[error("not a holdline bundle: no {MANIFEST_NAME}")]
    NoManifest,
    /// The manifest is unreadable (only reported after the signature checked out, or by `inspect`).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The bundle carries no signature.
    #[error("bundle is not signed (no {SIGNATURE_NAME})")]
    Unsigned,
    /// The signature does not verify with any trusted key.
    #[error("signature check failed: the manifest was altered or signed by an untrusted key")]
    BadSignature,
    /// The bundle is for another board.
    #[error("bundle is for board(s) {compatible:?}, this appliance is {board:?}")]
    WrongBoard {
        /// This appliance's board.
        board: String,
        /// What the bundle supports.
        compatible: Vec<String>,
    },
    /// A payload listed in the manifest is missing.
    #[error("payload {0:?} listed in the manifest is missing from the bundle")]
    MissingPayload(String),
    /// A payload in the archive is not listed in the manifest.
    #[error("payload {0:?} is not listed in the manifest")]
    UnlistedPayload(String),
    /// A payload's digest differs from the manifest.
    #[error("payload {name:?} was altered: sha256 {actual}, manifest says {expected}")]
    Digest {
        /// Payload name.
        name: String,
        /// Digest in the manifest.
        expected: String,
        /// Digest of the bytes found.
        actual: String,
    },
    /// Anti-rollback.
    #[error("version {bundle} is older than the installed {installed} (use the downgrade override to force)")]
    Older {
        /// The running slot's version.
        installed: semver::Version,
        /// The bundle's version.
        bundle: semver::Version,
    },
    /// This version failed its trial boot before.
    #[error("version {0} failed its trial boot here before (use the retry override to try again)")]
    PreviouslyFailed(semver::Version),
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lower-case hex SHA-256 of a reader's bytes, and their count.
pub fn sha256_reader(r: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Reads the rest, then returns hex digest and byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((hex::encode(self.hasher.finalize()), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Policy checks beyond the signature.
#[derive(Debug, Clone, Default)]
pub struct Policy<'a> {
    /// This appliance's board profile.
    pub board: &'a str,
    /// Version of the running slot, if known.
    pub installed: Option<&'a semver::Version>,
    /// Field-tech override: allow a version older than the installed one.
    pub allow_downgrade: bool,
    /// Versions that failed a trial boot here.
    pub failed: &'a [semver::Version],
    /// Override: try a previously failed version again.
    pub retry_failed: bool,
}

/// An opened (not yet trusted) bundle.
#[derive(Debug)]
pub struct Bundle {
    path: PathBuf,
    manifest_bytes: Vec<u8>,
    signature: Option<Vec<u8>>,
    /// Digest and size of each payload found in the archive.
    payloads: BTreeMap<String, (String, u64)>,
}

fn entry_name(entry: &tar::Entry<'_, File>) -> Result<String, BundleError> {
    let p = entry
        .path()
        .map_err(|e| BundleError::Malformed(format!("bad entry name: {e}")))?;
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| BundleError::Malformed("entry name is not UTF-8".into()))
}

fn read_small(entry: &mut tar::Entry<'_, File>, name: &str) -> Result<Vec<u8>, BundleError> {
    if entry.header().size().unwrap_or(u64::MAX) > MAX_SMALL_ENTRY {
        return Err(BundleError::Malformed(format!("{name} is too large")));
    }
    let mut v = Vec::new();
    entry
        .take(MAX_SMALL_ENTRY)
        .read_to_end(&mut v)
        .map_err(|e| BundleError::Malformed(format!("{name}: {e}")))?;
    Ok(v)
}

impl Bundle {
    /// Reads the archive, keeps manifest and signature, hashes every payload.
    pub fn open(path: &Path) -> Result<Bundle, BundleError> {
        let file = File::open(path).map_err(io_err(path))?;
        let mut archive = tar::Archive::new(file);
        let mut manifest_bytes = None;
        let mut signature = None;
        let mut payloads = BTreeMap::new();
        let entries = archive
            .entries()
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| BundleError::Malformed(e.to_string()))?;
            let name = entry_name(&entry)?;
            if name == MANIFEST_NAME {
                if manifest_bytes.is_some() {
                    return Err(BundleError::Malformed("two manifests".into()));
                }
                manifest_bytes = Some(read_small(&mut entry, &name)?);
            } else if name == SIGNATURE_NAME {
                if signature.is_some() {
                    return Err(BundleError::Malformed("two signatures".into()));
                }
                signature = Some(read_small(&mut entry, &name)?);
            } else if let Some(p) = name.strip_prefix(PAYLOAD_DIR) {
                if p.is_empty() || p.contains('/') || p.starts_with('.') {
                    return Err(BundleError::Malformed(format!("bad payload name {name:?}")));
                }
                let digest = sha256_reader(&mut entry)
                    .map_err(|e| BundleError::Malformed(format!("{name}: {e}")))?;
                if payloads.insert(p.to_owned(), digest).is_some() {
                    return Err(BundleError::Malformed(format!("{name} appears twice")));
                }
            } else {
                return Err(BundleError::Malformed(format!("unexpected entry {name:?}")));
            }
        }
        Ok(Bundle {
            path: path.to_path_buf(),
            manifest_bytes: manifest_bytes.ok_or(BundleError::NoManifest)?,
            signature,
            payloads,
        })
    }

    /// The manifest, parsed but NOT authenticated (for `inspect`).
    pub fn manifest_unverified(&self) -> Result<Manifest, BundleError> {
        Ok(Manifest::parse(&self.manifest_bytes)?)
    }

    /// True when the bundle carries a signature entry.
    pub fn is_signed(&self) -> bool {
        self.signature.is_some()
    }

    /// Checks the signature against the trusted keys; returns the parsed manifest.
    pub fn verify_signature(&self, keys: &[VerifyingKey]) -> Result<Manifest, BundleError> {
        let sig_text = self.signature.as_ref().ok_or(BundleError::Unsigned)?;
        let sig_bytes: [u8; 64] = std::str::from_utf8(sig_text)
            .ok()
            .and_then(|t| hex::decode(t.trim()).ok())
            .and_then(|b| b.try_into().ok())
            .ok_or(BundleError::BadSignature)?;
        let sig = Signature::from_bytes(&sig_bytes);
        if !keys
            .iter()
            .any(|k| k.verify_strict(&self.manifest_bytes, &sig).is_ok())
        {
            return Err(BundleError::BadSignature);
        }
        Ok(Manifest::parse(&self.manifest_bytes)?)
    }

    /// Checks that the payloads found match the manifest exactly.
    pub fn verify_payloads(&self, manifest: &Manifest) -> Result<(), BundleError> {
        for p in &manifest.payload {
            let (actual, size) = self
                .payloads
                .get(&p.name)
                .ok_or_else(|| BundleError::MissingPayload(p.name.clone()))?;
            if *actual != p.sha256 || *size != p.size {
                return Err(BundleError::Digest {
                    name: p.name.clone(),
                    expected: p.sha256.clone(),
                    actual: actual.clone(),
                });
            }
        }
        for name in self.payloads.keys() {
            if !manifest.payload.iter().any(|p| &p.name == name) {
                return Err(BundleError::UnlistedPayload(name.clone()));
            }
        }
        Ok(())
    }

    /// Full verification: signature, board, digests, version policy.
    pub fn verify(
        &self,
        keys: &[VerifyingKey],
        policy: &Policy<'_>,
    ) -> Result<Manifest, BundleError> {
        let manifest = self.verify_signature(keys)?;
        if !manifest.is_compatible(policy.board) {
            return Err(BundleError::WrongBoard {
                board: policy.board.to_owned(),
                compatible: manifest.compatible.clone(),
            });
        }
        self.verify_payloads(&manifest)?;
        if let Some(installed) = policy.installed {
            if manifest.version < *installed && !policy.allow_downgrade {
                return Err(BundleError::Older {
                    installed: installed.clone(),
                    bundle: manifest.version.clone(),
                });
            }
        }
        if policy.failed.contains(&manifest.version) && !policy.retry_failed {
            return Err(BundleError::PreviouslyFailed(manifest.version.clone()));
        }
        Ok(manifest)
    }

    /// Streams one payload of a verified manifest to `sink`, hashing it again
    /// on the way; fails if the bytes differ from the manifest's digest.
    pub fn read_payload<T>(
        &self,
        manifest: &Manifest,
        name: &str,
        sink: impl FnOnce(&mut dyn Read) -> io::Result<T>,
    ) -> Result<T, BundleError> {
        let expected = manifest
            .payload
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| BundleError::MissingPayload(name.to_owned()))?;
        let file = File::open(&self.path).map_err(io_err(&self.path))?;
        let mut archive = tar::Archive::new(file);
        let want = format!("{PAYLOAD_DIR}{name}");
        let entries = archive
            .entries()
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        for entry in entries {
            let entry = entry.map_err(|e| BundleError::Malformed(e.to_string()))?;
            if entry_name(&entry)? != want {
                continue;
            }
            let mut hr = HashingReader::new(entry);
            let out = sink(&mut hr).map_err(io_err(&self.path))?;
            let (actual, size) = hr.finish().map_err(io_err(&self.path))?;
            if actual != expected.sha256 || size != expected.size {
                return Err(BundleError::Digest {
                    name: name.to_owned(),
                    expected: expected.sha256.clone(),
                    actual,
                });
            }
            return Ok(out);
        }
        Err(BundleError::MissingPayload(name.to_owned()))
    }
}

fn append(
    builder: &mut tar::Builder<File>,
    name: &str,
    mtime: u64,
    size: u64,
    data: &mut dyn Read,
) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut h, name, data)
}

fn write_archive(
    out: &Path,
    manifest_bytes: &[u8],
    signature: Option<&Signature>,
    payloads: &[(String, PathBuf)],
    mtime: u64,
) -> Result<(), BundleError> {
    let tmp = out.with_extension("partial");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut b = tar::Builder::new(file);
    let ioe = io_err(&tmp);
    append(
        &mut b,
        MANIFEST_NAME,
        mtime,
        manifest_bytes.len() as u64,
        &mut &manifest_bytes[..],
    )
    .map_err(&ioe)?;
    if let Some(sig) = signature {
        let text = format!("{}\n", hex::encode(sig.to_bytes()));
        append(
            &mut b,
            SIGNATURE_NAME,
            mtime,
            text.len() as u64,
            &mut text.as_bytes(),
        )
        .map_err(&ioe)?;
    }
    for (name, path) in payloads {
        let mut f = File::open(path).map_err(io_err(path))?;
        let size = f.metadata().map_err(io_err(path))?.len();
        append(&mut b, &format!("{PAYLOAD_DIR}{name}"), mtime, size, &mut f).map_err(&ioe)?;
    }
    let mut file = b.into_inner().map_err(&ioe)?;
    file.flush().map_err(&ioe)?;
    file.sync_all().map_err(&ioe)?;
    std::fs::rename(&tmp, out).map_err(io_err(out))
}

/// Builds an unsigned bundle at `out` from a template and payload files
/// (name inside the bundle, file on disk).
pub fn build(
    out: &Path,
    template: &ManifestTemplate,
    version: semver::Version,
    build_time: u64,
    payloads: &[(String, PathBuf)],
) -> Result<Manifest, BundleError> {
    let mut entries = Vec::new();
    for (name, path) in payloads {
        let mut f = File::open(path).map_err(io_err(path))?;
        let (sha256, size) = sha256_reader(&mut f).map_err(io_err(path))?;
        entries.push(Payload {
            name: name.clone(),
            sha256,
            size,
        });
    }
    let manifest = Manifest {
        format: template.format,
        compatible: template.compatible.clone(),
        version,
        build_time,
        description: template.description.clone(),
        payload: entries,
    };
    let bytes = manifest.to_bytes()?;
    write_archive(out, &bytes, None, payloads, build_time)?;
    Ok(manifest)
}

/// Signs (or re-signs) a bundle in place with `key`.
pub fn sign(bundle: &Path, key: &SigningKey) -> Result<Manifest, BundleError> {
    let opened = Bundle::open(bundle)?;
    let manifest = opened.manifest_unverified()?;
    opened.verify_payloads(&manifest)?;
    let sig = key.sign(&opened.manifest_bytes);
    // Copy the payloads out so the archive can be rewritten in place.
    let dir = bundle.with_extension("sign.d");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let mut files = Vec::new();
    for p in &manifest.payload {
        let dest = dir.join(&p.name);
        opened.read_payload(&manifest, &p.name, |r| {
            let mut f = File::create(&dest)?;
            io::copy(r, &mut f)?;
            f.sync_all()
        })?;
        files.push((p.name.clone(), dest));
    }
    let res = write_archive(
        bundle,
        &opened.manifest_bytes,
        Some(&sig),
        &files,
        manifest.build_time,
    );
    let _ = std::fs::remove_dir_all(&dir);
    res.map(|()| manifest)
}
