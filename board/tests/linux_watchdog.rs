//! The Linux watchdog wrapper against the kernel: its ioctl numbers against
//! what the kernel's own header produces (compiled with the system C
//! compiler), and a run against `softdog` where that module can be loaded
//! with `soft_noboot=1` (it then never reboots the machine). Where either is
//! impossible the test says why and still checks what it can.

use std::process::Command;
use std::time::Duration;

use holdline_board::watchdog::linux::{self, LinuxWatchdog};
use holdline_board::{BootStatus, Watchdog};

/// Compiles a C program printing the kernel's WDIOC_* values; None + reason
/// when there is no compiler or no linux/watchdog.h.
fn kernel_header_values() -> Result<Vec<(String, u64)>, String> {
    let header = std::path::Path::new("/usr/include/linux/watchdog.h");
    if !header.exists() {
        return Err(format!("{} missing (linux-libc-dev)", header.display()));
    }
    let dir = std::env::temp_dir().join(format!("holdline-wdioc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let src = dir.join("wdioc.c");
    let exe = dir.join("wdioc");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include <linux/watchdog.h>
#define P(x) printf(#x " %lu\n", (unsigned long)(x))
int main(void) {
  P(WDIOC_GETSUPPORT); P(WDIOC_GETSTATUS); P(WDIOC_GETBOOTSTATUS);
  P(WDIOC_KEEPALIVE); P(WDIOC_SETTIMEOUT); P(WDIOC_GETTIMEOUT);
  P(WDIOC_GETTIMELEFT); P(WDIOF_CARDRESET); P(WDIOF_SETTIMEOUT);
  P(WDIOF_MAGICCLOSE); P(WDIOF_KEEPALIVEPING); P(sizeof(struct watchdog_info));
  return 0;
}
"#,
    )
    .map_err(|e| e.to_string())?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .map_err(|e| format!("no C compiler ({cc}): {e}"))?;
    if !status.success() {
        return Err(format!("{cc} failed on linux/watchdog.h"));
    }
    let out = Command::new(&exe).output().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_string(), v.parse().ok()?))
        })
        .collect())
}

#[test]
fn ioctl_numbers_equal_the_kernel_headers() {
    let ours: Vec<(&str, u64)> = vec![
        (
            "WDIOC_GETSUPPORT",
            linux::request_number(linux::WDIOC_GETSUPPORT),
        ),
        (
            "WDIOC_GETSTATUS",
            linux::request_number(linux::WDIOC_GETSTATUS),
        ),
        (
            "WDIOC_GETBOOTSTATUS",
            linux::request_number(linux::WDIOC_GETBOOTSTATUS),
        ),
        (
            "WDIOC_KEEPALIVE",
            linux::request_number(linux::WDIOC_KEEPALIVE),
        ),
        (
            "WDIOC_SETTIMEOUT",
            linux::request_number(linux::WDIOC_SETTIMEOUT),
        ),
        (
            "WDIOC_GETTIMEOUT",
            linux::request_number(linux::WDIOC_GETTIMEOUT),
        ),
        (
            "WDIOC_GETTIMELEFT",
            linux::request_number(linux::WDIOC_GETTIMELEFT),
        ),
        ("WDIOF_CARDRESET", u64::from(linux::WDIOF_CARDRESET)),
        ("WDIOF_SETTIMEOUT", u64::from(linux::WDIOF_SETTIMEOUT)),
        ("WDIOF_MAGICCLOSE", u64::from(linux::WDIOF_MAGICCLOSE)),
        ("WDIOF_KEEPALIVEPING", u64::from(linux::WDIOF_KEEPALIVEPING)),
        (
            "sizeof(struct watchdog_info)",
            std::mem::size_of::<linux::WatchdogInfo>() as u64,
        ),
    ];
    // Always: the generic _IOC encoding, computed here independently of nix.
    let ioc =
        |dir: u64, nr: u64, size: u64| (dir << 30) | (size << 16) | (u64::from(b'W') << 8) | nr;
    if cfg!(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "arm"
    )) {
        assert_eq!(ours[0].1, ioc(2, 0, 40), "_IOR('W',0,struct watchdog_info)");
        assert_eq!(ours[2].1, ioc(2, 2, 4), "_IOR('W',2,int)");
        assert_eq!(ours[3].1, ioc(2, 5, 4), "_IOR('W',5,int)");
        assert_eq!(ours[4].1, ioc(3, 6, 4), "_IOWR('W',6,int)");
        assert_eq!(ours[5].1, ioc(2, 7, 4), "_IOR('W',7,int)");
    }
    match kernel_header_values() {
        Ok(kernel) => {
            assert_eq!(kernel.len(), ours.len(), "C program output: {kernel:?}");
            for ((name, ours), (kname, kv)) in ours.iter().zip(&kernel) {
                assert_eq!(name, kname);
                assert_eq!(ours, kv, "{name}: ours {ours:#x}, kernel {kv:#x}");
            }
            println!(
                "ioctl numbers equal linux/watchdog.h ({} values)",
                kernel.len()
            );
        }
        Err(reason) => println!("SKIPPED header comparison: {reason}"),
    }
}

/// Loads softdog with soft_noboot=1; Err(reason) when that is impossible or
/// when a watchdog that could reset this machine is already present.
fn softdog() -> Result<std::path::PathBuf, String> {
    if std::path::Path::new("/dev/watchdog").exists()
        || std::path::Path::new("/dev/watchdog0").exists()
    {
        // Never arm a watchdog we did not load: it may be real hardware.
        let loaded =
            std::fs::read_to_string("/sys/class/watchdog/watchdog0/identity").unwrap_or_default();
        let noboot = std::fs::read_to_string("/sys/module/softdog/parameters/soft_noboot")
            .unwrap_or_default();
        if loaded.trim() == "Software Watchdog" && noboot.trim() == "1" {
            return Ok("/dev/watchdog0".into());
        }
        return Err(format!(
            "a watchdog is already present ({:?}) and is not softdog with soft_noboot=1; \
             not arming it",
            loaded.trim()
        ));
    }
    if let Ok(out) = Command::new("zcat").arg("/proc/config.gz").output() {
        let config = String::from_utf8_lossy(&out.stdout);
        if config.contains("# CONFIG_SOFT_WATCHDOG is not set") {
            return Err("this kernel is built without softdog (CONFIG_SOFT_WATCHDOG)".into());
        }
    }
    let out = Command::new("modprobe")
        .args(["softdog", "soft_noboot=1"])
        .output()
        .map_err(|e| format!("cannot run modprobe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "modprobe softdog failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    for _ in 0..50 {
        if std::path::Path::new("/dev/watchdog0").exists() {
            return Ok("/dev/watchdog0".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("softdog loaded but /dev/watchdog0 did not appear".into())
}

#[test]
fn against_softdog_when_it_can_be_loaded() {
    let device = match softdog() {
        Ok(device) => device,
        Err(reason) => {
            println!("SKIPPED softdog run: {reason}");
            // What can be checked without the device still is.
            let mut wd = LinuxWatchdog::new("/dev/watchdog0");
            assert!(wd.keepalive().is_err());
            return;
        }
    };
    let mut wd = LinuxWatchdog::new(&device);
    // Before start the status comes from sysfs (CONFIG_WATCHDOG_SYSFS).
    match wd.boot_status() {
        Ok(boot) => assert_ne!(boot, BootStatus::WatchdogReset, "softdog never reset us"),
        Err(e) => println!("no sysfs bootstatus before start: {e}"),
    }
    let took = wd.start(Duration::from_secs(37)).expect("start");
    assert_eq!(took, Duration::from_secs(37), "softdog takes any timeout");
    let info = wd.info().expect("WDIOC_GETSUPPORT");
    assert_eq!(info.identity(), "Software Watchdog");
    assert!(info.options & linux::WDIOF_MAGICCLOSE != 0);
    for _ in 0..3 {
        wd.keepalive().expect("keepalive");
    }
    assert_eq!(wd.boot_status().unwrap(), BootStatus::PowerOn);
    assert!(wd.time_left().unwrap() <= Duration::from_secs(37));
    wd.stop().expect("magic close");
    println!("softdog run passed on {}", device.display());
}
