//! Bootloader back-ends behind one trait, and the boot-chooser logic they share.
//!
//! The scheme is RAUC's U-Boot one: `BOOT_ORDER="A B"` and a per-slot
//! counter `BOOT_A_LEFT` / `BOOT_B_LEFT`. At every boot the bootloader script
//! (images/<board>/boot/) takes the first slot in the order whose counter is
//! above zero, decrements it and boots it with `holdline.slot=<X>` on the
//! kernel command line. A trial gets exactly one attempt: a watchdog reset
//! during the trial makes the next boot fall back to the other slot. Linux
//! resets the counter of a good slot at each healthy boot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::slots::{SlotName, Tools};

/// Attempts a committed slot gets before the bootloader gives up on it.
pub const GOOD_ATTEMPTS: u32 = 3;
/// Variable holding the boot order.
pub const ORDER_VAR: &str = "BOOT_ORDER";
/// Variable the simulated bootloader sets to the slot it booted.
pub const BOOTED_VAR: &str = "BOOTED";
/// Simulated board: "1" while a launcher's power-on awaits the daemon start.
pub const LAUNCHED_VAR: &str = "LAUNCHED";

/// Name of a slot's attempt counter variable.
pub fn left_var(slot: SlotName) -> String {
    format!("BOOT_{slot}_LEFT")
}

/// Errors of a bootloader back-end.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// The tool could not be run or failed.
    #[error("{tool}: {detail}")]
    Tool {
        /// Tool or file involved.
        tool: String,
        /// What went wrong.
        detail: String,
    },
    /// The environment holds an unusable value.
    #[error("bootloader variable {name}={value:?} is invalid")]
    BadValue {
        /// Variable.
        name: String,
        /// Value found.
        value: String,
    },
}

/// Read and write access to the bootloader's environment. Three back-ends:
/// [`UbootEnv`], [`GrubEnv`], [`FileEnv`].
pub trait BootEnv: Send {
    /// Back-end name for status output.
    fn backend(&self) -> &'static str;
    /// All variables currently set.
    fn read_all(&self) -> Result<BTreeMap<String, String>, BootError>;
    /// Sets several variables, at once where the tool allows.
    fn write(&mut self, vars: &[(String, String)]) -> Result<(), BootError>;
}

fn parse_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

fn tool_err(tool: &str) -> impl Fn(String) -> BootError + '_ {
    move |detail| BootError::Tool {
        tool: tool.to_owned(),
        detail,
    }
}

/// U-Boot environment through libubootenv's `fw_printenv` / `fw_setenv`.
#[derive(Debug, Clone)]
pub struct UbootEnv {
    /// How the tools are found.
    pub tools: Tools,
    /// `-c CONFIG` when set.
    pub config: Option<PathBuf>,
    /// Directory for the `fw_setenv -s` script file.
    pub scratch: PathBuf,
}

impl BootEnv for UbootEnv {
    fn backend(&self) -> &'static str {
        "u-boot"
    }
    fn read_all(&self) -> Result<BTreeMap<String, String>, BootError> {
        let mut c = self.tools.command("fw_printenv");
        if let Some(cfg) = &self.config {
            c.arg("-c").arg(cfg);
        }
        Ok(parse_lines(
            &self.tools.run(c).map_err(tool_err("fw_printenv"))?,
        ))
    }
    fn write(&mut self, vars: &[(String, String)]) -> Result<(), BootError> {
        // One script so that all variables change in one environment write.
        let script = self.scratch.join("fw_setenv.script");
        let mut text = String::new();
        for (k, v) in vars {
            text.push_str(&format!("{k} {v}\n"));
        }
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&script)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()
        };
        write().map_err(|e| BootError::Tool {
            tool: "fw_setenv".into(),
            detail: format!("{}: {e}", script.display()),
        })?;
        let mut c = self.tools.command("fw_setenv");
        if let Some(cfg) = &self.config {
            c.arg("-c").arg(cfg);
        }
        c.arg("-s").arg(&script);
        let res = self.tools.run(c).map(|_| ()).map_err(tool_err("fw_setenv"));
        let _ = std::fs::remove_file(&script);
        res
    }
}

/// GRUB environment block through `grub-editenv`.
#[derive(Debug, Clone)]
pub struct GrubEnv {
    /// How the tool is found.
    pub tools: Tools,
    /// The grubenv file.
    pub env: PathBuf,
}

impl BootEnv for GrubEnv {
    fn backend(&self) -> &'static str {
        "grub"
    }
    fn read_all(&self) -> Result<BTreeMap<String, String>, BootError> {
        let mut c = self.tools.command("grub-editenv");
        c.arg(&self.env).arg("list");
        Ok(parse_lines(
            &self.tools.run(c).map_err(tool_err("grub-editenv"))?,
        ))
    }
    fn write(&mut self, vars: &[(String, String)]) -> Result<(), BootError> {
        let mut c = self.tools.command("grub-editenv");
        c.arg(&self.env).arg("set");
        for (k, v) in vars {
            c.arg(format!("{k}={v}"));
        }
        self.tools
            .run(c)
            .map(|_| ())
            .map_err(tool_err("grub-editenv"))
    }
}

/// The simulated board's bootloader: a key=value file, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileEnv {
    /// The file.
    pub path: PathBuf,
}

impl BootEnv for FileEnv {
    fn backend(&self) -> &'static str {
        "file"
    }
    fn read_all(&self) -> Result<BTreeMap<String, String>, BootError> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Ok(parse_lines(&t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(file_err(&self.path, e)),
        }
    }
    fn write(&mut self, vars: &[(String, String)]) -> Result<(), BootError> {
        let mut all = self.read_all()?;
        for (k, v) in vars {
            all.insert(k.clone(), v.clone());
        }
        let text: String = all.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        crate::write_atomic(&self.path, text.as_bytes()).map_err(|e| file_err(&self.path, e))
    }
}

fn file_err(path: &Path, e: std::io::Error) -> BootError {
    BootError::Tool {
        tool: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// What the bootloader will do, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootView {
    /// Slots in the order they are tried.
    pub order: Vec<SlotName>,
    /// Remaining attempts of A and B.
    pub left_a: u32,
    /// Remaining attempts of B.
    pub left_b: u32,
}

impl BootView {
    /// Attempts left for `slot`.
    pub fn left(&self, slot: SlotName) -> u32 {
        match slot {
            SlotName::A => self.left_a,
            SlotName::B => self.left_b,
        }
    }
    fn set_left(&mut self, slot: SlotName, n: u32) {
        match slot {
            SlotName::A => self.left_a = n,
            SlotName::B => self.left_b = n,
        }
    }
    /// The slot the bootloader script picks next, if any.
    pub fn next(&self) -> Option<SlotName> {
        self.order.iter().copied().find(|s| self.left(*s) > 0)
    }
}

/// Reads the boot view; absent variables mean a factory-fresh "A B", 3/3.
pub fn read_view(env: &dyn BootEnv) -> Result<BootView, BootError> {
    let vars = env.read_all()?;
    let order = match vars.get(ORDER_VAR) {
        None => vec![SlotName::A, SlotName::B],
        Some(v) => v
            .split_whitespace()
            .map(|s| {
                SlotName::parse(s).ok_or_else(|| BootError::BadValue {
                    name: ORDER_VAR.into(),
                    value: v.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let left = |slot: SlotName| -> Result<u32, BootError> {
        let name = left_var(slot);
        match vars.get(&name) {
            None => Ok(GOOD_ATTEMPTS),
            Some(v) => v.trim().parse().map_err(|_| BootError::BadValue {
                name,
                value: v.clone(),
            }),
        }
    };
    Ok(BootView {
        order,
        left_a: left(SlotName::A)?,
        left_b: left(SlotName::B)?,
    })
}

fn write_view(env: &mut dyn BootEnv, view: &BootView) -> Result<(), BootError> {
    let order = view
        .order
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    env.write(&[
        (ORDER_VAR.to_owned(), order),
        (left_var(SlotName::A), view.left_a.to_string()),
        (left_var(SlotName::B), view.left_b.to_string()),
    ])
}

/// Next boot tries `slot` exactly once; the other slot stays the fallback.
pub fn set_trial(env: &mut dyn BootEnv, slot: SlotName) -> Result<(), BootError> {
    let mut v = read_view(env)?;
    v.order = vec![slot, slot.other()];
    v.set_left(slot, 1);
    if v.left(slot.other()) == 0 {
        v.set_left(slot.other(), GOOD_ATTEMPTS);
    }
    write_view(env, &v)
}

/// `slot` is good: boot it first, with the full attempt count.
pub fn mark_good(env: &mut dyn BootEnv, slot: SlotName) -> Result<(), BootError> {
    let mut v = read_view(env)?;
    let want_order = vec![slot, slot.other()];
    if v.order == want_order && v.left(slot) == GOOD_ATTEMPTS {
        return Ok(());
    }
    v.order = want_order;
    v.set_left(slot, GOOD_ATTEMPTS);
    write_view(env, &v)
}

/// `slot` is bad: never boot it again until it is reinstalled.
pub fn mark_bad(env: &mut dyn BootEnv, slot: SlotName) -> Result<(), BootError> {
    let mut v = read_view(env)?;
    v.order = vec![slot.other()];
    v.set_left(slot, 0);
    if v.left(slot.other()) == 0 {
        v.set_left(slot.other(), GOOD_ATTEMPTS);
    }
    write_view(env, &v)
}

/// What the board's bootloader script does at power-on, for the simulated
/// board: pick, decrement, record the booted slot. With no bootable slot it
/// restores the counters and boots the first in order (as RAUC's script does).
pub fn simulate_boot(env: &mut dyn BootEnv) -> Result<SlotName, BootError> {
    let mut v = read_view(env)?;
    let slot = match v.next() {
        Some(s) => s,
        None => {
            v.left_a = GOOD_ATTEMPTS;
            v.left_b = GOOD_ATTEMPTS;
            v.order.first().copied().unwrap_or(SlotName::A)
        }
    };
    v.set_left(slot, v.left(slot).saturating_sub(1));
    write_view(env, &v)?;
    env.write(&[(BOOTED_VAR.to_owned(), slot.as_str().to_owned())])?;
    Ok(slot)
}

/// The slot named by `holdline.slot=` on a kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> Option<SlotName> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("holdline.slot="))
        .and_then(SlotName::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_gets_one_attempt_then_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = FileEnv {
            path: dir.path().join("env"),
        };
        assert_eq!(simulate_boot(&mut env).unwrap(), SlotName::A);
        mark_good(&mut env, SlotName::A).unwrap();
        set_trial(&mut env, SlotName::B).unwrap();
        assert_eq!(simulate_boot(&mut env).unwrap(), SlotName::B);
        // Watchdog reset during the trial: next boot is A again.
        assert_eq!(simulate_boot(&mut env).unwrap(), SlotName::A);
        assert_eq!(simulate_boot(&mut env).unwrap(), SlotName::A);
    }

    #[test]
    fn cmdline_slot() {
        assert_eq!(
            slot_from_cmdline("root=/dev/sda3 holdline.slot=B quiet"),
            Some(SlotName::B)
        );
        assert_eq!(slot_from_cmdline("root=/dev/sda3"), None);
    }
}
