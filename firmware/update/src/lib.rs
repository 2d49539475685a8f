//! Update agent: bundle format and verification, A/B slots, trial boot and
//! bootloader back-ends. Shared by the appliance (`holdline update ...`, the
//! management API) and the tools (`holdline-image`, `holdline-fleet`).
//!
//! Trust boundary: a bundle is untrusted input until [`bundle::Bundle::verify`]
//! has checked its Ed25519 signature (over the manifest), board, payload
//! digests and version. Only then is the inactive slot written; the running
//! slot is never written.
//!
//! Modules:
//! - [`manifest`]: the signed manifest and the per-board template.
//! - [`keys`]: key generation and key files.
//! - [`bundle`]: build, sign, open, verify.
//! - [`slots`]: A/B layout as data, slot writing.
//! - [`bootloader`]: the `BootEnv` trait (U-Boot, GRUB, file) and boot-chooser logic.
//! - [`agent`]: install, trial boot, commit, rollback, status.
//! - [`api`]: the management HTTP API's paths and bodies (appliance and fleet tool).

pub mod agent;
pub mod api;
pub mod bootloader;
pub mod bundle;
pub mod keys;
pub mod manifest;
pub mod slots;

pub use agent::{Agent, AgentConfig, AgentError, InstallOptions, UpdateStatus};

use std::io::Write;
use std::path::Path;

/// Current time as Unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes a file by temp file + fsync + rename, so a power cut leaves the old
/// or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}
