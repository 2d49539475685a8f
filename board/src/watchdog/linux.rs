//! `/dev/watchdog` through the kernel's watchdog ioctls
//! (include/uapi/linux/watchdog.h), with `nix`.
//!
//! Opening the device arms it, so the device is opened in
//! [`Watchdog::start`], not before. The boot status is read from sysfs
//! (`/sys/class/watchdog/<name>/bootstatus`) until then, and with
//! `WDIOC_GETBOOTSTATUS` once the device is open.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::libc::c_int;
use nix::sys::ioctl::ioctl_num_type;

use super::{timeout_secs, BootStatus, Watchdog};
use crate::error::{Error, ErrorKind, Result};

/// `struct watchdog_info` from linux/watchdog.h.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchdogInfo {
    pub options: u32,
    pub firmware_version: u32,
    pub identity: [u8; 32],
}

impl WatchdogInfo {
    pub fn identity(&self) -> String {
        let end = self
            .identity
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.identity.len());
        String::from_utf8_lossy(&self.identity[..end]).into_owned()
    }
}

/// `WATCHDOG_IOCTL_BASE`.
pub const WATCHDOG_IOCTL_BASE: u8 = b'W';

// The request codes, built with the kernel's _IOR/_IOWR encoding. The unit
// tests check them against the numbers the kernel headers produce.
/// `_IOR('W', 0, struct watchdog_info)`
pub const WDIOC_GETSUPPORT: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 0, std::mem::size_of::<WatchdogInfo>());
/// `_IOR('W', 1, int)`
pub const WDIOC_GETSTATUS: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 1, std::mem::size_of::<c_int>());
/// `_IOR('W', 2, int)`
pub const WDIOC_GETBOOTSTATUS: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 2, std::mem::size_of::<c_int>());
/// `_IOR('W', 5, int)` (yes, _IOR: the argument is ignored)
pub const WDIOC_KEEPALIVE: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 5, std::mem::size_of::<c_int>());
/// `_IOWR('W', 6, int)`: the driver writes back the timeout it took.
pub const WDIOC_SETTIMEOUT: ioctl_num_type =
    nix::request_code_readwrite!(WATCHDOG_IOCTL_BASE, 6, std::mem::size_of::<c_int>());
/// `_IOR('W', 7, int)`
pub const WDIOC_GETTIMEOUT: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 7, std::mem::size_of::<c_int>());
/// `_IOR('W', 10, int)`
pub const WDIOC_GETTIMELEFT: ioctl_num_type =
    nix::request_code_read!(WATCHDOG_IOCTL_BASE, 10, std::mem::size_of::<c_int>());

/// A request code as a plain number, whatever `ioctl_num_type` is on this
/// target (u64 on glibc x86_64, i32 on musl), for comparisons and logs.
#[allow(clippy::unnecessary_cast)]
pub fn request_number(code: ioctl_num_type) -> u64 {
    code as u64 & 0xffff_ffff
}

/// "Card previously reset the CPU" in `options` / boot status.
pub const WDIOF_CARDRESET: u32 = 0x0020;
/// Set timeout (in seconds) is supported.
pub const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// Supports the magic close char 'V'.
pub const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// Keep-alive ping reply / supported.
pub const WDIOF_KEEPALIVEPING: u32 = 0x8000;

nix::ioctl_read_bad!(wdioc_getsupport, WDIOC_GETSUPPORT, WatchdogInfo);
nix::ioctl_read_bad!(wdioc_getbootstatus, WDIOC_GETBOOTSTATUS, c_int);
nix::ioctl_read_bad!(wdioc_keepalive, WDIOC_KEEPALIVE, c_int);
nix::ioctl_readwrite_bad!(wdioc_settimeout, WDIOC_SETTIMEOUT, c_int);
nix::ioctl_read_bad!(wdioc_gettimeout, WDIOC_GETTIMEOUT, c_int);
nix::ioctl_read_bad!(wdioc_gettimeleft, WDIOC_GETTIMELEFT, c_int);

/// The Linux watchdog device.
pub struct LinuxWatchdog {
    path: PathBuf,
    sysfs: Option<PathBuf>,
    file: Option<File>,
    info: Option<WatchdogInfo>,
}

impl LinuxWatchdog {
    /// Does not touch the device yet (opening it would arm it).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let sysfs = sysfs_dir(&path);
        Self {
            path,
            sysfs,
            file: None,
            info: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `WDIOC_GETSUPPORT` of the open device.
    pub fn info(&self) -> Option<WatchdogInfo> {
        self.info
    }

    fn fd(&self) -> Result<c_int> {
        self.file
            .as_ref()
            .map(|f| f.as_raw_fd())
            .ok_or_else(|| Error::new(ErrorKind::NotStarted, "watchdog not started"))
    }

    /// `WDIOC_GETTIMEOUT`.
    pub fn timeout(&self) -> Result<Duration> {
        let fd = self.fd()?;
        let mut secs: c_int = 0;
        // SAFETY: fd is an open watchdog device owned by self.file; the
        // pointer is to a live c_int, the argument type of WDIOC_GETTIMEOUT.
        unsafe { wdioc_gettimeout(fd, &mut secs) }
            .map_err(|e| Error::errno("WDIOC_GETTIMEOUT", e))?;
        Ok(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    }

    /// `WDIOC_GETTIMELEFT` (not every driver has it).
    pub fn time_left(&self) -> Result<Duration> {
        let fd = self.fd()?;
        let mut secs: c_int = 0;
        // SAFETY: as in `timeout`: open fd, pointer to a live c_int.
        unsafe { wdioc_gettimeleft(fd, &mut secs) }
            .map_err(|e| Error::errno("WDIOC_GETTIMELEFT", e))?;
        Ok(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
    }
}

/// `/dev/watchdogN` ↦ `/sys/class/watchdog/watchdogN`; the legacy
/// `/dev/watchdog` is the first device, `watchdog0`.
fn sysfs_dir(dev: &Path) -> Option<PathBuf> {
    let name = dev.file_name()?.to_str()?;
    let name = if name == "watchdog" {
        "watchdog0"
    } else {
        name
    };
    name.starts_with("watchdog")
        .then(|| Path::new("/sys/class/watchdog").join(name))
}

impl Watchdog for LinuxWatchdog {
    fn start(&mut self, timeout: Duration) -> Result<Duration> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .write(true)
                .open(&self.path)
                .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
            let mut info = WatchdogInfo::default();
            // SAFETY: fd is the watchdog device just opened; the pointer is
            // to a live `struct watchdog_info` with the kernel's layout.
            match unsafe { wdioc_getsupport(file.as_raw_fd(), &mut info) } {
                Ok(_) => self.info = Some(info),
                Err(e) => tracing::warn!("{}: WDIOC_GETSUPPORT: {e}", self.path.display()),
            }
            self.file = Some(file);
        }
        let fd = self.fd()?;
        let mut secs = timeout_secs(timeout);
        // SAFETY: open watchdog fd; pointer to a live c_int that the driver
        // reads and overwrites with the timeout it took.
        unsafe { wdioc_settimeout(fd, &mut secs) }
            .map_err(|e| Error::errno("WDIOC_SETTIMEOUT", e))?;
        // Read back what the device really uses.
        let took = self
            .timeout()
            .unwrap_or(Duration::from_secs(u64::try_from(secs).unwrap_or(0)));
        if took != Duration::from_secs(u64::try_from(timeout_secs(timeout)).unwrap_or(0)) {
            tracing::warn!(
                "{}: asked for a {}s timeout, the device took {}s",
                self.path.display(),
                timeout_secs(timeout),
                took.as_secs()
            );
        }
        Ok(took)
    }

    fn keepalive(&mut self) -> Result<()> {
        let fd = self.fd()?;
        let mut ignored: c_int = 0;
        // SAFETY: open watchdog fd; WDIOC_KEEPALIVE is declared _IOR(int)
        // and we pass a live c_int.
        unsafe { wdioc_keepalive(fd, &mut ignored) }
            .map_err(|e| Error::errno("WDIOC_KEEPALIVE", e))?;
        Ok(())
    }

    fn stop(&mut self) -> Result<()> {
        if let Some(mut file) = self.file.take() {
            file.write_all(b"V")
                .map_err(|e| Error::io("watchdog magic close", e))?;
            // Closing right after 'V' disarms (unless the kernel was built
            // with NOWAYOUT, which no code can change).
            drop(file);
        }
        Ok(())
    }

    fn boot_status(&mut self) -> Result<BootStatus> {
        if let Ok(fd) = self.fd() {
            let mut flags: c_int = 0;
            // SAFETY: open watchdog fd; pointer to a live c_int.
            unsafe { wdioc_getbootstatus(fd, &mut flags) }
                .map_err(|e| Error::errno("WDIOC_GETBOOTSTATUS", e))?;
            return Ok(BootStatus::from_flags(flags as u32));
        }
        let Some(dir) = &self.sysfs else {
            return Ok(BootStatus::Unknown);
        };
        let file = dir.join("bootstatus");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        let flags: u32 = text.trim().parse().map_err(|_| {
            Error::new(
                ErrorKind::Io,
                format!("{}: not a number: {:?}", file.display(), text.trim()),
            )
        })?;
        Ok(BootStatus::from_flags(flags))
    }

    fn describe(&self) -> String {
        match &self.info {
            Some(info) => format!("{} ({})", self.path.display(), info.identity()),
            None => self.path.display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request numbers as the kernel's generic _IOC encoding gives them
    /// (x86, arm, arm64, riscv): dir<<30 | size<<16 | 'W'<<8 | nr.
    #[test]
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    ))]
    fn ioctl_numbers_match_the_kernel_encoding() {
        assert_eq!(std::mem::size_of::<WatchdogInfo>(), 40);
        assert_eq!(request_number(WDIOC_GETSUPPORT), 0x8028_5700);
        assert_eq!(request_number(WDIOC_GETSTATUS), 0x8004_5701);
        assert_eq!(request_number(WDIOC_GETBOOTSTATUS), 0x8004_5702);
        assert_eq!(request_number(WDIOC_KEEPALIVE), 0x8004_5705);
        assert_eq!(request_number(WDIOC_SETTIMEOUT), 0xC004_5706);
        assert_eq!(request_number(WDIOC_GETTIMEOUT), 0x8004_5707);
        assert_eq!(request_number(WDIOC_GETTIMELEFT), 0x8004_570A);
    }

    #[test]
    fn sysfs_names_follow_the_device() {
        assert_eq!(
            sysfs_dir(Path::new("/dev/watchdog")),
            Some(PathBuf::from("/sys/class/watchdog/watchdog0"))
        );
        assert_eq!(
            sysfs_dir(Path::new("/dev/watchdog1")),
            Some(PathBuf::from("/sys/class/watchdog/watchdog1"))
        );
        assert_eq!(sysfs_dir(Path::new("/dev/null")), None);
    }

    #[test]
    fn keepalive_before_start_is_not_started() {
        let mut wd = LinuxWatchdog::new("/nonexistent/watchdog9");
        let err = wd.keepalive().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotStarted);
        let err = wd.start(Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn identity_stops_at_nul() {
        let mut info = WatchdogInfo::default();
        info.identity[..8].copy_from_slice(b"Software");
        assert_eq!(info.identity(), "Software");
    }
}
