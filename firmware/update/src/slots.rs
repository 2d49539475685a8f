//! A/B slots as data: the layout file of a board (`images/<board>/slots.toml`)
//! and writing a root filesystem payload into a slot.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SlotName {
    /// Slot A.
    A,
    /// Slot B.
    B,
}

impl SlotName {
    /// The other slot.
    pub fn other(self) -> SlotName {
        match self {
            SlotName::A => SlotName::B,
            SlotName::B => SlotName::A,
        }
    }
    /// "A" or "B".
    pub fn as_str(self) -> &'static str {
        match self {
            SlotName::A => "A",
            SlotName::B => "B",
        }
    }
    /// Parses "A"/"B" (case-insensitive).
    pub fn parse(s: &str) -> Option<SlotName> {
        match s.trim() {
            "A" | "a" => Some(SlotName::A),
            "B" | "b" => Some(SlotName::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which bootloader environment holds the boot order and attempt counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BootloaderSpec {
    /// U-Boot environment through `fw_printenv` / `fw_setenv`.
    Uboot {
        /// `fw_env.config` to pass with `-c` (tool default when absent).
        #[serde(default)]
        config: Option<PathBuf>,
    },
    /// GRUB environment block through `grub-editenv`.
    Grub {
        /// The grubenv file, e.g. `/boot/efi/EFI/holdline/grubenv`.
        env: PathBuf,
    },
    /// Plain key=value file: the simulated board's bootloader.
    File {
        /// The file (relative paths are under the update state directory).
        env: PathBuf,
    },
}

/// Where a slot's root filesystem lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SlotTarget {
    /// A directory (simulated board; relative to the state directory).
    Dir {
        /// The directory.
        path: PathBuf,
    },
    /// A partition: formatted ext4, mounted, filled, unmounted.
    Block {
        /// The partition device, e.g. `/dev/mmcblk0p3`.
        device: PathBuf,
        /// Where to mount it while writing.
        mount: PathBuf,
    },
}

/// One slot of the layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    /// A or B.
    pub name: SlotName,
    /// Its storage.
    pub target: SlotTarget,
}

/// A board's A/B layout (`images/<board>/slots.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    /// Board profile the layout belongs to.
    pub board: String,
    /// Bootloader back-end.
    pub bootloader: BootloaderSpec,
    /// Kernel command line read for `holdline.slot=A|B` (real boards).
    #[serde(default = "default_cmdline")]
    pub cmdline: PathBuf,
    /// Exactly the slots A and B.
    pub slot: Vec<SlotSpec>,
}

fn default_cmdline() -> PathBuf {
    PathBuf::from("/proc/cmdline")
}

/// Errors of the layout and of slot writing.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    /// The layout file is invalid.
    #[error("slot layout: {0}")]
    Layout(String),
    /// I/O on a slot.
    #[error("slot {slot}: {source}")]
    Io {
        /// Slot.
        slot: SlotName,
        /// Cause.
        source: io::Error,
    },
    /// A system tool failed.
    #[error("slot {slot}: {tool} failed: {detail}")]
    Tool {
        /// Slot.
        slot: SlotName,
        /// Tool name.
        tool: String,
        /// Its stderr or exit status.
        detail: String,
    },
}

impl Layout {
    /// Parses and checks a layout.
    pub fn parse(text: &str) -> Result<Layout, SlotError> {
        let l: Layout = toml::from_str(text).map_err(|e| SlotError::Layout(e.to_string()))?;
        let names: Vec<SlotName> = l.slot.iter().map(|s| s.name).collect();
        if names.len() != 2 || !names.contains(&SlotName::A) || !names.contains(&SlotName::B) {
            return Err(SlotError::Layout(
                "exactly one slot A and one slot B are required".into(),
            ));
        }
        Ok(l)
    }

    /// The simulated board's layout (`images/sim/slots.toml`): slot
    /// directories and the boot environment file under the state directory.
    pub fn simulated() -> Layout {
        let dir = |name: SlotName, p: &str| SlotSpec {
            name,
            target: SlotTarget::Dir { path: p.into() },
        };
        Layout {
            board: "sim".into(),
            bootloader: BootloaderSpec::File {
                env: "bootenv".into(),
            },
            cmdline: default_cmdline(),
            slot: vec![dir(SlotName::A, "slots/a"), dir(SlotName::B, "slots/b")],
        }
    }

    /// The spec of `slot`.
    pub fn slot(&self, slot: SlotName) -> Option<&SlotSpec> {
        self.slot.iter().find(|s| s.name == slot)
    }
}

/// How external tools are found: tests inject a PATH for the child process
/// (never by changing this process's environment).
#[derive(Debug, Clone, Default)]
pub struct Tools {
    /// PATH for child processes; inherited when `None`.
    pub path: Option<OsString>,
}

impl Tools {
    /// A command for `program`, searched on the configured PATH.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        if let Some(p) = &self.path {
            c.env("PATH", p);
        }
        c
    }

    /// Runs a command; error text carries its stderr.
    pub fn run(&self, mut cmd: Command) -> Result<String, String> {
        let out = cmd.output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(format!("{} {}", out.status, err));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Writes a root filesystem tar stream into `slot`. Relative paths are under
/// `base` (the update state directory).
pub fn write_slot(
    spec: &SlotSpec,
    base: &Path,
    tools: &Tools,
    rootfs_tar: &mut dyn Read,
) -> Result<(), SlotError> {
    let slot = spec.name;
    let io = |source| SlotError::Io { slot, source };
    match &spec.target {
        SlotTarget::Dir { path } => {
            let dir = resolve(base, path);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io)?;
            }
            std::fs::create_dir_all(&dir).map_err(io)?;
            tar::Archive::new(rootfs_tar).unpack(&dir).map_err(io)
        }
        SlotTarget::Block { device, mount } => {
            let tool = |name: &str, args: &[&std::ffi::OsStr]| {
                let mut c = tools.command(name);
                c.args(args);
                tools.run(c).map(|_| ()).map_err(|detail| SlotError::Tool {
                    slot,
                    tool: name.to_owned(),
                    detail,
                })
            };
            let label = format!("holdline-{slot}");
            tool(
                "mkfs.ext4",
                &[
                    "-F".as_ref(),
                    "-q".as_ref(),
                    "-L".as_ref(),
                    label.as_ref(),
                    device.as_os_str(),
                ],
            )?;
            std::fs::create_dir_all(mount).map_err(io)?;
            tool("mount", &[device.as_os_str(), mount.as_os_str()])?;
            let unpacked = tar::Archive::new(rootfs_tar).unpack(mount).map_err(io);
            let unmounted = tool("umount", &[mount.as_os_str()]);
            unpacked?;
            unmounted
        }
    }
}

/// Reads a file of the slot's root filesystem (simulated board only; real
/// slots are not mounted while inactive).
pub fn slot_dir(spec: &SlotSpec, base: &Path) -> Option<PathBuf> {
    match &spec.target {
        SlotTarget::Dir { path } => Some(resolve(base, path)),
        SlotTarget::Block { .. } => None,
    }
}
