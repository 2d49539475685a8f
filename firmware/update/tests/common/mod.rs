//! Fixtures: test keys, fixture firmware builds (good and never-healthy),
//! bundles and a simulated board in a temp dir.
#![allow(dead_code)]
// Test-only helpers: a failed fixture step should panic the test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use holdline_update::bundle;
use holdline_update::keys::{self, SigningKey};
use holdline_update::manifest::ManifestTemplate;
use holdline_update::slots::{BootloaderSpec, Layout, SlotName, SlotSpec, SlotTarget, Tools};
use holdline_update::{Agent, AgentConfig};

pub const COMMIT_AFTER: u64 = 30;
pub const TRIAL_TIMEOUT: u64 = 120;

/// A throw-away test signing key (generated per test, never stored).
pub fn test_key() -> SigningKey {
    keys::generate().unwrap()
}

/// A fixture "firmware" binary: `version` prints its version, `health`
/// exits 0 (good build) or 1 (a build that never becomes healthy).
pub fn firmware_script(version: &str, healthy: bool) -> String {
    format!(
        "#!/bin/sh\ncase \"$1\" in\n  version) echo {version} ;;\n  health) exit {} ;;\n  *) exit 2 ;;\nesac\n",
        if healthy { 0 } else { 1 }
    )
}

/// Builds a rootfs tar with the fixture firmware at usr/bin/holdline.
pub fn rootfs_tar(dir: &Path, version: &str, healthy: bool) -> PathBuf {
    let path = dir.join(format!("rootfs-{version}.tar"));
    let file = std::fs::File::create(&path).unwrap();
    let mut b = tar::Builder::new(file);
    let script = firmware_script(version, healthy);
    let mut h = tar::Header::new_ustar();
    h.set_size(script.len() as u64);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "usr/bin/holdline", script.as_bytes())
        .unwrap();
    b.into_inner().unwrap();
    path
}

/// Builds (and signs with `key`, when given) a bundle for `board`.
pub fn make_bundle(
    dir: &Path,
    board: &str,
    version: &str,
    healthy: bool,
    key: Option<&SigningKey>,
) -> PathBuf {
    let rootfs = rootfs_tar(dir, version, healthy);
    let out = dir.join(format!("{board}-{version}-{healthy}.hlb"));
    let template = ManifestTemplate {
        format: holdline_update::manifest::FORMAT_VERSION,
        compatible: vec![board.into()],
        description: "test bundle".into(),
    };
    bundle::build(
        &out,
        &template,
        version.parse().unwrap(),
        1_700_000_000,
        &[(bundle::ROOTFS.into(), rootfs)],
    )
    .unwrap();
    if let Some(k) = key {
        bundle::sign(&out, k).unwrap();
    }
    out
}

pub fn sim_layout() -> Layout {
    Layout {
        board: "sim".into(),
        bootloader: BootloaderSpec::File {
            env: "bootenv".into(),
        },
        cmdline: "/proc/cmdline".into(),
        slot: vec![
            SlotSpec {
                name: SlotName::A,
                target: SlotTarget::Dir {
                    path: "slots/a".into(),
                },
            },
            SlotSpec {
                name: SlotName::B,
                target: SlotTarget::Dir {
                    path: "slots/b".into(),
                },
            },
        ],
    }
}

/// A simulated board with factory firmware 1.0.0 in slot A, booted.
pub struct SimBoard {
    pub dir: tempfile::TempDir,
    pub agent: Agent,
    pub key: SigningKey,
}

impl SimBoard {
    pub fn new() -> SimBoard {
        let dir = tempfile::tempdir().unwrap();
        let key = test_key();
        let cfg = AgentConfig {
            board: "sim".into(),
            state_dir: dir.path().join("state"),
            layout: sim_layout(),
            keys: vec![key.verifying_key()],
            commit_after_secs: COMMIT_AFTER,
            trial_timeout_secs: TRIAL_TIMEOUT,
            tools: Tools::default(),
        };
        // Factory image: slot A holds 1.0.0.
        let factory = rootfs_tar(dir.path(), "1.0.0", true);
        let spec = cfg.layout.slot(SlotName::A).unwrap().clone();
        let mut f = std::fs::File::open(factory).unwrap();
        holdline_update::slots::write_slot(&spec, &cfg.state_dir, &Tools::default(), &mut f)
            .unwrap();
        let mut board = SimBoard {
            dir,
            agent: Agent::open(cfg).unwrap(),
            key,
        };
        board.power_on(1_000);
        board
    }

    pub fn slot_dir(&self, slot: SlotName) -> PathBuf {
        self.dir
            .path()
            .join("state/slots")
            .join(slot.as_str().to_lowercase())
    }

    /// Power-on: bootloader picks a slot; the daemon starts and reconciles.
    pub fn power_on(&mut self, now: u64) -> SlotName {
        let slot = self.agent.sim_power_on().unwrap();
        let version = self.run_firmware(slot, "version").1;
        self.agent
            .on_boot(now, &version.trim().parse().unwrap())
            .unwrap();
        slot
    }

    /// Runs the booted slot's firmware with `arg`: (success, stdout).
    pub fn run_firmware(&self, slot: SlotName, arg: &str) -> (bool, String) {
        let bin = self.slot_dir(slot).join("usr/bin/holdline");
        let out = std::process::Command::new("sh")
            .arg(&bin)
            .arg(arg)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Health as the fixture firmware in the booted slot reports it.
    pub fn firmware_healthy(&self) -> bool {
        let slot = self.agent.booted_slot().unwrap();
        self.run_firmware(slot, "health").0
    }

    /// Snapshot of what must not change when a bundle is refused.
    pub fn running_snapshot(&self) -> (SlotName, Vec<u8>, String) {
        let slot = self.agent.booted_slot().unwrap();
        let bin = std::fs::read(self.slot_dir(slot).join("usr/bin/holdline")).unwrap();
        let env = std::fs::read_to_string(self.dir.path().join("state/bootenv")).unwrap();
        (slot, bin, env)
    }
}
