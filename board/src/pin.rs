//! LEDs and the reset button through the embedded-hal 1.0 digital traits.
//!
//! Back-ends, chosen per pin by the board profile:
//! - [`SimPin`]: simulated; remembers its level and every change, for tests;
//! - [`LedClassPin`]: the kernel LED class (`/sys/class/leds/<name>`), for
//!   boards whose platform driver registers the LEDs there (PC Engines APU2);
//! - [`EvdevButton`]: a key of a kernel input device (gpio-keys), read with
//!   `EVIOCGKEY`, for boards whose button is registered there;
//! - GPIO character-device lines through `linux-embedded-hal`'s `CdevPin`
//!   (feature `gpio-cdev`), for header GPIOs (Raspberry Pi CM4 carriers).
//!
//! [`Led`] and [`Button`] add the active-low inversion and the meaning
//! ("on", "pressed") on top of the raw pins.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use embedded_hal::digital::{ErrorType, InputPin, OutputPin, StatefulOutputPin};

use crate::error::{Error, ErrorKind, Result};

/// How many level changes a simulated pin remembers.
const SIM_HISTORY: usize = 4096;

#[derive(Debug, Default)]
struct SimState {
    level: bool,
    history: Vec<bool>,
}

/// A simulated pin. Clones share the same state, so a test keeps a clone
/// and watches what the firmware drives (or presses the button).
#[derive(Debug, Clone, Default)]
pub struct SimPin {
    state: Arc<Mutex<SimState>>,
}

impl SimPin {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> T) -> Result<T> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Error::new(ErrorKind::Io, "simulated pin poisoned"))?;
        Ok(f(&mut state))
    }

    /// The current raw level (true = high).
    pub fn level(&self) -> bool {
        self.with(|s| s.level).unwrap_or(false)
    }

    /// Every level the pin was driven to, oldest first (capped).
    pub fn history(&self) -> Vec<bool> {
        self.with(|s| s.history.clone()).unwrap_or_default()
    }

    /// Drives the level from outside (a test pressing a button).
    pub fn set_level(&self, high: bool) {
        let _ = self.with(|s| record(s, high));
    }
}

fn record(state: &mut SimState, high: bool) {
    if state.history.last() != Some(&high) || state.history.is_empty() {
        if state.history.len() >= SIM_HISTORY {
            state.history.remove(0);
        }
        state.history.push(high);
    }
    state.level = high;
}

impl ErrorType for SimPin {
    type Error = Error;
}

impl OutputPin for SimPin {
    fn set_low(&mut self) -> Result<()> {
        self.with(|s| record(s, false))
    }
    fn set_high(&mut self) -> Result<()> {
        self.with(|s| record(s, true))
    }
}

impl StatefulOutputPin for SimPin {
    fn is_set_high(&mut self) -> Result<bool> {
        self.with(|s| s.level)
    }
    fn is_set_low(&mut self) -> Result<bool> {
        self.with(|s| !s.level)
    }
}

impl InputPin for SimPin {
    fn is_high(&mut self) -> Result<bool> {
        self.with(|s| s.level)
    }
    fn is_low(&mut self) -> Result<bool> {
        self.with(|s| !s.level)
    }
}

/// An LED of the kernel LED class: `brightness` 0 or `max_brightness`.
/// Opening sets its `trigger` to `none` so no kernel trigger fights us.
#[derive(Debug)]
pub struct LedClassPin {
    brightness: PathBuf,
    max: String,
    high: bool,
}

impl LedClassPin {
    pub fn open(name: &str) -> Result<Self> {
        Self::open_in(Path::new("/sys/class/leds"), name)
    }

    /// `root` is `/sys/class/leds` except in tests.
    pub fn open_in(root: &Path, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name == ".." {
            return Err(Error::new(
                ErrorKind::InvalidProfile,
                format!("bad LED class name {name:?}"),
            ));
        }
        let dir = root.join(name);
        let max_path = dir.join("max_brightness");
        let max = std::fs::read_to_string(&max_path)
            .map_err(|e| Error::io(format!("reading {}", max_path.display()), e))?
            .trim()
            .to_string();
        let trigger = dir.join("trigger");
        if let Err(e) = std::fs::write(&trigger, "none") {
            tracing::warn!("{}: cannot clear trigger: {e}", trigger.display());
        }
        Ok(Self {
            brightness: dir.join("brightness"),
            max,
            high: false,
        })
    }

    fn write(&mut self, high: bool) -> Result<()> {
        let value = if high { self.max.as_str() } else { "0" };
        // Truncating is harmless on sysfs and right on a plain file (tests).
        let mut file = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.brightness)
            .map_err(|e| Error::io(format!("opening {}", self.brightness.display()), e))?;
        file.write_all(value.as_bytes())
            .map_err(|e| Error::io(format!("writing {}", self.brightness.display()), e))?;
        self.high = high;
        Ok(())
    }
}

impl ErrorType for LedClassPin {
    type Error = Error;
}

impl OutputPin for LedClassPin {
    fn set_low(&mut self) -> Result<()> {
        self.write(false)
    }
    fn set_high(&mut self) -> Result<()> {
        self.write(true)
    }
}

impl StatefulOutputPin for LedClassPin {
    fn is_set_high(&mut self) -> Result<bool> {
        Ok(self.high)
    }
    fn is_set_low(&mut self) -> Result<bool> {
        Ok(!self.high)
    }
}

/// Size of the `EVIOCGKEY` bitmap: KEY_MAX (0x2ff) / 8 + 1.
const KEY_BITMAP: usize = 0x2ff / 8 + 1;
nix::ioctl_read_buf!(eviocgkey, b'E', 0x18, u8);

/// One key of a kernel input device (gpio-keys), high while pressed.
#[derive(Debug)]
pub struct EvdevButton {
    file: File,
    code: u16,
}

impl EvdevButton {
    pub fn open(device: &Path, code: u16) -> Result<Self> {
        if usize::from(code) >= KEY_BITMAP * 8 {
            return Err(Error::new(
                ErrorKind::InvalidProfile,
                format!("key code {code} out of range"),
            ));
        }
        let file = File::open(device)
            .map_err(|e| Error::io(format!("opening {}", device.display()), e))?;
        Ok(Self { file, code })
    }
}

impl ErrorType for EvdevButton {
    type Error = Error;
}

impl InputPin for EvdevButton {
    fn is_high(&mut self) -> Result<bool> {
        let mut bits = [0u8; KEY_BITMAP];
        // SAFETY: the fd is an open input device owned by self.file; the
        // buffer is a live byte array whose length the macro passes as the
        // ioctl size, so the kernel writes at most that many bytes.
        unsafe { eviocgkey(self.file.as_raw_fd(), &mut bits) }
            .map_err(|e| Error::errno("EVIOCGKEY", e))?;
        let code = usize::from(self.code);
        Ok(bits[code / 8] & (1 << (code % 8)) != 0)
    }
    fn is_low(&mut self) -> Result<bool> {
        self.is_high().map(|h| !h)
    }
}

/// A GPIO character-device line (`/dev/gpiochipN`, line offset).
#[cfg(feature = "gpio-cdev")]
pub struct GpioPin(linux_embedded_hal::CdevPin);

#[cfg(feature = "gpio-cdev")]
impl GpioPin {
    fn request(chip: &Path, line: u32, output: bool) -> Result<Self> {
        use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
        let ctx = |what: &str| format!("{what} {}:{line}", chip.display());
        let map = |what: &str, e: linux_embedded_hal::gpio_cdev::Error| {
            Error::new(ErrorKind::Io, format!("{}: {e}", ctx(what)))
        };
        let mut chip_handle = Chip::new(chip).map_err(|e| {
            if chip.exists() {
                map("opening", e)
            } else {
                Error::new(ErrorKind::NotFound, ctx("no GPIO chip"))
            }
        })?;
        let line_handle = chip_handle
            .get_line(line)
            .map_err(|e| map("getting line", e))?;
        let flags = if output {
            LineRequestFlags::OUTPUT
        } else {
            LineRequestFlags::INPUT
        };
        let handle = line_handle
            .request(flags, 0, "holdline")
            .map_err(|e| map("requesting line", e))?;
        let pin = linux_embedded_hal::CdevPin::new(handle).map_err(|e| map("line info", e))?;
        Ok(Self(pin))
    }

    pub fn output(chip: &Path, line: u32) -> Result<Self> {
        Self::request(chip, line, true)
    }

    pub fn input(chip: &Path, line: u32) -> Result<Self> {
        Self::request(chip, line, false)
    }

    fn map(e: linux_embedded_hal::CdevPinError) -> Error {
        Error::new(ErrorKind::Io, format!("GPIO line: {e}"))
    }
}

/// An output pin of any back-end.
pub enum OutPin {
    Sim(SimPin),
    LedClass(LedClassPin),
    #[cfg(feature = "gpio-cdev")]
    Gpio(GpioPin),
}

impl ErrorType for OutPin {
    type Error = Error;
}

impl OutputPin for OutPin {
    fn set_low(&mut self) -> Result<()> {
        match self {
            OutPin::Sim(p) => p.set_low(),
            OutPin::LedClass(p) => p.set_low(),
            #[cfg(feature = "gpio-cdev")]
            OutPin::Gpio(p) => p.0.set_low().map_err(GpioPin::map),
        }
    }
    fn set_high(&mut self) -> Result<()> {
        match self {
            OutPin::Sim(p) => p.set_high(),
            OutPin::LedClass(p) => p.set_high(),
            #[cfg(feature = "gpio-cdev")]
            OutPin::Gpio(p) => p.0.set_high().map_err(GpioPin::map),
        }
    }
}

/// An input pin of any back-end.
pub enum InPin {
    Sim(SimPin),
    Evdev(EvdevButton),
    #[cfg(feature = "gpio-cdev")]
    Gpio(GpioPin),
}

impl ErrorType for InPin {
    type Error = Error;
}

impl InputPin for InPin {
    fn is_high(&mut self) -> Result<bool> {
        match self {
            InPin::Sim(p) => p.is_high(),
            InPin::Evdev(p) => p.is_high(),
            #[cfg(feature = "gpio-cdev")]
            InPin::Gpio(p) => p.0.is_high().map_err(GpioPin::map),
        }
    }
    fn is_low(&mut self) -> Result<bool> {
        self.is_high().map(|h| !h)
    }
}

/// An LED: "on"/"off" over any [`OutputPin`], with active-low inversion.
/// Writes only on change, so a blinking task can call `set` every tick.
pub struct Led<P = OutPin> {
    pin: P,
    active_low: bool,
    on: Option<bool>,
}

impl<P: OutputPin> Led<P> {
    pub fn new(pin: P, active_low: bool) -> Self {
        Self {
            pin,
            active_low,
            on: None,
        }
    }

    pub fn set(&mut self, on: bool) -> std::result::Result<(), P::Error> {
        if self.on == Some(on) {
            return Ok(());
        }
        if on != self.active_low {
            self.pin.set_high()?;
        } else {
            self.pin.set_low()?;
        }
        self.on = Some(on);
        Ok(())
    }

    /// What was last written (None before the first write).
    pub fn is_on(&self) -> Option<bool> {
        self.on
    }
}

/// The reset button: "pressed" over any [`InputPin`], with active-low
/// inversion (a button to ground with a pull-up reads low when pressed).
pub struct Button<P = InPin> {
    pin: P,
    active_low: bool,
}

impl<P: InputPin> Button<P> {
    pub fn new(pin: P, active_low: bool) -> Self {
        Self { pin, active_low }
    }

    pub fn is_pressed(&mut self) -> std::result::Result<bool, P::Error> {
        Ok(self.pin.is_high()? != self.active_low)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_pin_records_changes() {
        let pin = SimPin::new();
        let mut led = Led::new(OutPin::Sim(pin.clone()), false);
        led.set(true).unwrap();
        led.set(true).unwrap();
        led.set(false).unwrap();
        assert_eq!(pin.history(), vec![true, false]);
        assert!(!pin.level());
    }

    #[test]
    fn active_low_inverts() {
        let pin = SimPin::new();
        let mut led = Led::new(pin.clone(), true);
        led.set(true).unwrap();
        assert!(!pin.level());
        let mut button = Button::new(pin.clone(), true);
        pin.set_level(true);
        assert!(!button.is_pressed().unwrap());
        pin.set_level(false);
        assert!(button.is_pressed().unwrap());
    }

    #[test]
    fn led_class_pin_writes_brightness() {
        let root = std::env::temp_dir().join(format!("holdline-leds-{}", std::process::id()));
        let dir = root.join("apu:green:1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("max_brightness"), "255\n").unwrap();
        std::fs::write(dir.join("brightness"), "0").unwrap();
        std::fs::write(dir.join("trigger"), "[heartbeat]").unwrap();
        let mut pin = LedClassPin::open_in(&root, "apu:green:1").unwrap();
        pin.set_high().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("brightness")).unwrap(),
            "255"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("trigger")).unwrap(),
            "none"
        );
        pin.set_low().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("brightness")).unwrap(),
            "0"
        );
        assert_eq!(
            LedClassPin::open_in(&root, "../etc").unwrap_err().kind(),
            ErrorKind::InvalidProfile
        );
        assert_eq!(
            LedClassPin::open_in(&root, "nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
