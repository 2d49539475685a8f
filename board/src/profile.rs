//! Board profiles: TOML files naming a board's watchdog, serial port, LEDs
//! and reset button. Built-in ones live in `board/profiles/` and are
//! compiled in; `[board] profile` in the daemon config names one of them or
//! a path to a file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

/// Built-in profiles: (name, TOML text).
pub const BUILTIN: &[(&str, &str)] = &[
    ("apu2", include_str!("../profiles/apu2.toml")),
    ("cm4-box", include_str!("../profiles/cm4-box.toml")),
    ("sim", include_str!("../profiles/sim.toml")),
];

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub board: BoardInfo,
    pub watchdog: WatchdogConfig,
    pub serial: SerialConfig,
    pub leds: LedsConfig,
    #[serde(default)]
    pub button: Option<ButtonConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    /// Short identity, e.g. `apu2`; also what update bundles name.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum WatchdogConfig {
    /// `/dev/watchdogN` through its ioctls.
    Linux {
        device: PathBuf,
        #[serde(default = "default_watchdog_secs")]
        timeout_secs: u32,
    },
    /// The simulated watchdog (marker in the state directory).
    Sim {
        #[serde(default = "default_watchdog_secs")]
        timeout_secs: u32,
    },
    /// Another process (the Linux `watchdog` daemon) owns the device; it
    /// asks `holdline health`.
    External,
}

fn default_watchdog_secs() -> u32 {
    30
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SerialConfig {
    /// A real serial port, 8N1, no flow control.
    Device {
        device: PathBuf,
        #[serde(default = "default_baud")]
        baud: u32,
    },
    /// A pseudo-terminal whose slave path is linked at `link` (relative to
    /// the state directory): `screen <link>` is the simulated cable.
    Pty {
        #[serde(default)]
        link: Option<PathBuf>,
    },
    /// No serial console.
    None,
}

fn default_baud() -> u32 {
    115_200
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedsConfig {
    /// Power / health.
    pub status: PinConfig,
    /// Cloud state (green: up).
    pub cloud: PinConfig,
    /// Optional second cloud LED (amber: survival).
    #[serde(default)]
    pub cloud_alt: Option<PinConfig>,
    /// Fault.
    #[serde(default)]
    pub fault: Option<PinConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ButtonConfig {
    pub pin: PinConfig,
    /// Held at least this long: factory reset.
    #[serde(default = "default_long_press")]
    pub long_press_secs: u32,
}

fn default_long_press() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum PinConfig {
    Sim,
    /// `/sys/class/leds/<name>`.
    LedClass {
        name: String,
    },
    /// A GPIO character-device line.
    Gpio {
        chip: PathBuf,
        line: u32,
        #[serde(default)]
        active_low: bool,
    },
    /// A key of an input device (gpio-keys).
    Evdev {
        device: PathBuf,
        code: u16,
    },
}

impl Profile {
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| Error::new(ErrorKind::InvalidProfile, format!("board profile: {e}")))
    }

    /// A built-in name (`apu2`, `cm4-box`, `sim`) or a path to a TOML file.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(text);
        }
        let path = Path::new(name_or_path);
        if !name_or_path.contains('/') && !name_or_path.ends_with(".toml") {
            let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "no board profile {name_or_path:?} (built in: {})",
                    names.join(", ")
                ),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Self::parse(&text)
    }

    pub fn watchdog_timeout(&self) -> Option<std::time::Duration> {
        match &self.watchdog {
            WatchdogConfig::Linux { timeout_secs, .. } | WatchdogConfig::Sim { timeout_secs } => {
                Some(std::time::Duration::from_secs(u64::from(*timeout_secs)))
            }
            WatchdogConfig::External => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_profile_parses() {
        for (name, text) in BUILTIN {
            let profile = Profile::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&profile.board.name, name);
            assert!(profile.watchdog_timeout().is_some());
        }
        let apu2 = Profile::load("apu2").unwrap();
        assert_eq!(
            apu2.serial,
            SerialConfig::Device {
                device: "/dev/ttyS0".into(),
                baud: 115_200
            }
        );
    }

    #[test]
    fn every_profile_file_on_disk_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            Profile::load(path.to_str().unwrap()).unwrap();
            seen += 1;
        }
        assert_eq!(seen, BUILTIN.len());
    }

    #[test]
    fn unknown_keys_and_names_are_clear_errors() {
        let text = BUILTIN[2].1.replace("[board]", "[board]\ncolour = \"red\"");
        let err = Profile::parse(&text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidProfile);
        assert!(err.to_string().contains("colour"), "{err}");
        let err = Profile::load("apu3").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("apu2"));
    }
}
