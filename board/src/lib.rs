//! The only code that touches hardware: watchdog, LEDs, button, serial port;
//! each behind a small fallible interface with a Linux implementation and a
//! simulated one.
//!
//! - [`watchdog`]: the [`Watchdog`] trait; [`watchdog::linux::LinuxWatchdog`]
//!   drives `/dev/watchdogN` through its ioctls (nix);
//!   [`watchdog::sim::SimWatchdog`] really ends the process (exit
//!   [`EXIT_WATCHDOG_RESET`]) when not fed and leaves a marker so the next
//!   start reports a watchdog reset.
//! - [`pin`]: LEDs and the reset button over embedded-hal 1.0 digital traits
//!   (simulated pins, kernel LED class, gpio-keys input device, GPIO
//!   character-device lines via linux-embedded-hal behind feature `gpio-cdev`).
//! - [`leds`]: what the LEDs show for each appliance state (pure) and the
//!   driver of the board's LEDs.
//! - [`button`]: short press harmless, long press = factory reset (pure).
//! - [`serial`]: the console port (tokio-serial UART, or a pty when simulated).
//! - [`profile`]: board profiles (TOML, built in from `board/profiles/` or a
//!   file); [`Board::from_profile`] opens one.
//!
//! Every error is an [`Error`] with a [`ErrorKind`] from [`Error::kind`].

pub mod button;
pub mod error;
pub mod leds;
pub mod pin;
pub mod profile;
pub mod serial;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{Error, ErrorKind, Result};
pub use leds::{CloudLight, HealthLight, Indication, Leds};
pub use pin::{Button, InPin, Led, OutPin, SimPin};
pub use profile::Profile;
pub use watchdog::sim::{Expiry, EXIT_WATCHDOG_RESET};
pub use watchdog::{BootStatus, Watchdog};

use profile::{PinConfig, WatchdogConfig};

/// Handles on the simulated pins of a `sim` board, for tests.
#[derive(Debug, Clone, Default)]
pub struct SimPins {
    pub status: SimPin,
    pub cloud: SimPin,
    pub cloud_alt: SimPin,
    pub fault: SimPin,
    pub button: SimPin,
}

/// A board opened from its profile.
pub struct Board {
    pub profile: Profile,
    /// None when another process owns the watchdog (`kind = "external"`).
    pub watchdog: Option<Box<dyn Watchdog>>,
    pub leds: Leds,
    pub button: Option<Button<InPin>>,
    state_dir: PathBuf,
    sim: SimPins,
}

/// How to open a board.
#[derive(Clone)]
pub struct OpenOptions {
    /// Where the simulated watchdog keeps its marker and the simulated
    /// console its pty link.
    pub state_dir: PathBuf,
    /// What the simulated watchdog does when it fires.
    pub sim_expiry: Expiry,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("."),
            sim_expiry: Expiry::ExitProcess,
        }
    }
}

impl Board {
    /// Opens a built-in profile (`apu2`, `cm4-box`, `sim`) or a profile file,
    /// with the simulated parts' state in the current directory.
    pub fn from_profile(name_or_path: &str) -> Result<Self> {
        Self::open(Profile::load(name_or_path)?, OpenOptions::default())
    }

    pub fn open(profile: Profile, opts: OpenOptions) -> Result<Self> {
        let watchdog: Option<Box<dyn Watchdog>> = match &profile.watchdog {
            WatchdogConfig::Linux { device, .. } => {
                Some(Box::new(watchdog::linux::LinuxWatchdog::new(device)))
            }
            WatchdogConfig::Sim { .. } => Some(Box::new(watchdog::sim::SimWatchdog::open(
                &opts.state_dir,
                opts.sim_expiry.clone(),
            )?)),
            WatchdogConfig::External => None,
        };
        let sim = SimPins::default();
        let leds = Leds::new(
            led(&profile.leds.status, &sim.status)?,
            led(&profile.leds.cloud, &sim.cloud)?,
            profile
                .leds
                .cloud_alt
                .as_ref()
                .map(|c| led(c, &sim.cloud_alt))
                .transpose()?,
            profile
                .leds
                .fault
                .as_ref()
                .map(|c| led(c, &sim.fault))
                .transpose()?,
        );
        let button = profile
            .button
            .as_ref()
            .map(|b| button(&b.pin, &sim.button))
            .transpose()?;
        Ok(Self {
            profile,
            watchdog,
            leds,
            button,
            state_dir: opts.state_dir,
            sim,
        })
    }

    /// The simulated pins (only meaningful for pins with `kind = "sim"`).
    pub fn sim_pins(&self) -> SimPins {
        self.sim.clone()
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn long_press(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.profile
                .button
                .as_ref()
                .map_or(10, |b| b.long_press_secs),
        ))
    }

    /// Opens the profile's serial console (needs a tokio runtime).
    pub fn open_console(&self) -> Result<Option<serial::ConsolePort>> {
        serial::ConsolePort::open(&self.profile.serial, &self.state_dir)
    }
}

fn led(cfg: &PinConfig, sim: &SimPin) -> Result<Led<OutPin>> {
    match cfg {
        PinConfig::Sim => Ok(Led::new(OutPin::Sim(sim.clone()), false)),
        PinConfig::LedClass { name } => Ok(Led::new(
            OutPin::LedClass(pin::LedClassPin::open(name)?),
            false,
        )),
        #[cfg(feature = "gpio-cdev")]
        PinConfig::Gpio {
            chip,
            line,
            active_low,
        } => Ok(Led::new(
            OutPin::Gpio(pin::GpioPin::output(chip, *line)?),
            *active_low,
        )),
        #[cfg(not(feature = "gpio-cdev"))]
        PinConfig::Gpio { .. } => Err(Error::new(
            ErrorKind::Unsupported,
            "GPIO character-device pins need the `gpio-cdev` feature",
        )),
        PinConfig::Evdev { .. } => Err(Error::new(
            ErrorKind::InvalidProfile,
            "an input device key cannot drive an LED",
        )),
    }
}

fn button(cfg: &PinConfig, sim: &SimPin) -> Result<Button<InPin>> {
    match cfg {
        PinConfig::Sim => Ok(Button::new(InPin::Sim(sim.clone()), false)),
        PinConfig::Evdev { device, code } => Ok(Button::new(
            InPin::Evdev(pin::EvdevButton::open(device, *code)?),
            false,
        )),
        #[cfg(feature = "gpio-cdev")]
        PinConfig::Gpio {
            chip,
            line,
            active_low,
        } => Ok(Button::new(
            InPin::Gpio(pin::GpioPin::input(chip, *line)?),
            *active_low,
        )),
        #[cfg(not(feature = "gpio-cdev"))]
        PinConfig::Gpio { .. } => Err(Error::new(
            ErrorKind::Unsupported,
            "GPIO character-device pins need the `gpio-cdev` feature",
        )),
        PinConfig::LedClass { .. } => Err(Error::new(
            ErrorKind::InvalidProfile,
            "an LED class device cannot be a button",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_board_opens_and_its_pins_are_visible() {
        let dir = std::env::temp_dir().join(format!("holdline-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut board = Board::open(
            Profile::load("sim").unwrap(),
            OpenOptions {
                state_dir: dir,
                sim_expiry: Expiry::ExitProcess,
            },
        )
        .unwrap();
        let pins = board.sim_pins();
        board.leds.status.set(true).unwrap();
        assert!(pins.status.level());
        pins.button.set_level(true);
        assert!(board.button.as_mut().unwrap().is_pressed().unwrap());
        assert_eq!(
            board.watchdog.as_mut().unwrap().boot_status().unwrap(),
            BootStatus::PowerOn
        );
    }

    /// Each cloud state, as the simulated pins see it over one blink cycle
    /// (8 ticks): (cloud, cloud_alt) levels.
    #[test]
    fn led_pins_for_each_cloud_state() {
        let dir = std::env::temp_dir().join(format!("holdline-leds-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut board = Board::open(
            Profile::load("sim").unwrap(),
            OpenOptions {
                state_dir: dir,
                sim_expiry: Expiry::ExitProcess,
            },
        )
        .unwrap();
        let pins = board.sim_pins();
        let cycle = |board: &mut Board, cloud: CloudLight| -> (Vec<bool>, Vec<bool>, bool, bool) {
            let ind = Indication {
                health: HealthLight::Healthy,
                cloud,
                fault: false,
                button_long_press: false,
            };
            let mut green = Vec::new();
            let mut amber = Vec::new();
            for phase in 0..8 {
                board.leds.show(&ind, phase).unwrap();
                green.push(pins.cloud.level());
                amber.push(pins.cloud_alt.level());
            }
            (green, amber, pins.status.level(), pins.fault.level())
        };
        let on = vec![true; 8];
        let off = vec![false; 8];
        let fast = vec![true, false, true, false, true, false, true, false];

        let (g, a, status, fault) = cycle(&mut board, CloudLight::Up);
        assert_eq!((g, a), (on.clone(), off.clone()));
        assert!(status && !fault);
        let (g, a, _, _) = cycle(&mut board, CloudLight::Survival);
        assert_eq!((g, a), (off.clone(), on.clone()));
        let (g, a, _, _) = cycle(&mut board, CloudLight::Recovering);
        assert_eq!((g, a), (fast, off.clone()));
        let (g, a, _, _) = cycle(&mut board, CloudLight::Unknown);
        assert_eq!((g, a), (off.clone(), off));
        // The pins went through exactly those changes, in order.
        assert_eq!(pins.cloud_alt.history(), vec![false, true, false]);
        let report = board.leds.report();
        assert_eq!(report.len(), 4);
        assert_eq!(report[1].name, "cloud");

        // A fault lights the fault LED; a stale task blinks the status LED.
        let ind = Indication {
            health: HealthLight::Unhealthy,
            cloud: CloudLight::Up,
            fault: true,
            button_long_press: false,
        };
        board.leds.show(&ind, 1).unwrap();
        assert!(pins.fault.level());
        assert!(!pins.status.level());
        board.leds.show(&ind, 2).unwrap();
        assert!(pins.status.level());
    }

    /// The Linux back-ends report missing devices as `NotFound`, each
    /// through its own path (GPIO character device, input device), and an
    /// `external` watchdog is left alone.
    #[test]
    fn linux_pins_report_missing_devices_by_kind() {
        let base = Profile::load("sim").unwrap();
        let dir = std::env::temp_dir();
        let open = |profile: Profile| {
            Board::open(
                profile,
                OpenOptions {
                    state_dir: dir.clone(),
                    sim_expiry: Expiry::ExitProcess,
                },
            )
        };
        let mut gpio = base.clone();
        gpio.leds.fault = Some(PinConfig::Gpio {
            chip: "/dev/gpiochip-none".into(),
            line: 22,
            active_low: false,
        });
        let err = open(gpio).err().unwrap();
        let expected = if cfg!(feature = "gpio-cdev") {
            ErrorKind::NotFound
        } else {
            ErrorKind::Unsupported
        };
        assert_eq!(err.kind(), expected, "{err}");

        let mut evdev = base.clone();
        evdev.button = Some(profile::ButtonConfig {
            pin: PinConfig::Evdev {
                device: "/dev/input/by-path/none-event".into(),
                code: 408,
            },
            long_press_secs: 10,
        });
        assert_eq!(open(evdev).err().unwrap().kind(), ErrorKind::NotFound);

        let mut wrong = base.clone();
        wrong.leds.cloud = PinConfig::Evdev {
            device: "/dev/null".into(),
            code: 1,
        };
        assert_eq!(open(wrong).err().unwrap().kind(), ErrorKind::InvalidProfile);

        let mut external = base;
        external.watchdog = WatchdogConfig::External;
        let board = open(external).unwrap();
        assert!(board.watchdog.is_none());
        assert_eq!(board.profile.watchdog_timeout(), None);
    }

    #[test]
    fn real_boards_fail_cleanly_without_their_hardware() {
        // This machine has no APU2 LEDs: a NotFound, not a panic.
        let err = Board::from_profile("apu2").err().unwrap();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
}
