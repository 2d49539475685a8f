//! Every board under images/ has a complete, valid image description:
//! manifest template, A/B layout, service unit, default config, and (real
//! boards) watchdog daemon settings and a boot script.

use std::path::{Path, PathBuf};

use holdline_board::profile::{Profile, WatchdogConfig};
use holdline_update::manifest::ManifestTemplate;
use holdline_update::slots::{BootloaderSpec, Layout, SlotTarget};

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images")
}

fn boards() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(images())
        .expect("images/ exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("manifest.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The board profile a config names: built in, or a file in the overlay.
fn board_profile(dir: &Path, cfg: &str) -> Profile {
    let v: toml::Value = toml::from_str(cfg).expect("config is TOML");
    let name = v["board"]["profile"].as_str().expect("[board] profile");
    match name.strip_prefix('/') {
        Some(rel) => {
            let p = dir.join("rootfs").join(rel);
            Profile::parse(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        }
        None => Profile::load(name).unwrap_or_else(|e| panic!("{name}: {e}")),
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_three_boards_exist() {
    assert_eq!(boards(), vec!["apu2", "cm4-box", "sim"]);
}

#[test]
fn manifests_and_layouts_parse_and_name_their_board() {
    for b in boards() {
        let dir = images().join(&b);
        let t = ManifestTemplate::parse(&read(&dir.join("manifest.toml")))
            .unwrap_or_else(|e| panic!("{b}: {e}"));
        assert_eq!(t.compatible, vec![b.clone()], "{b}");
        let l =
            Layout::parse(&read(&dir.join("slots.toml"))).unwrap_or_else(|e| panic!("{b}: {e}"));
        assert_eq!(l.board, b);
        let cfg = read(&dir.join("rootfs/etc/holdline/holdline.toml"));
        let profile = board_profile(&dir, &cfg);
        assert_eq!(profile.board.name, b, "{b}: config names another board");
        if b == "sim" {
            assert_eq!(
                l,
                Layout::simulated(),
                "images/sim/slots.toml drifted from the built-in layout"
            );
        } else {
            assert!(cfg.contains("layout = \"/etc/holdline/slots.toml\""), "{b}");
            for s in &l.slot {
                assert!(matches!(s.target, SlotTarget::Block { .. }), "{b}");
            }
            let boot = match l.bootloader {
                BootloaderSpec::Uboot { .. } => "boot/boot.cmd",
                BootloaderSpec::Grub { .. } => "boot/grub.cfg",
                BootloaderSpec::File { .. } => panic!("{b}: a real board needs a real bootloader"),
            };
            let script = read(&dir.join(boot));
            for var in ["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "holdline.slot="] {
                assert!(script.contains(var), "{b}: {boot} lacks {var}");
            }
            let wd = read(&dir.join("rootfs/etc/watchdog.conf"));
            assert!(
                wd.contains("test-binary = /usr/lib/holdline/watchdog-test"),
                "{b}"
            );
            let daemon_owns_device = wd
                .lines()
                .any(|l| l.trim_start().starts_with("watchdog-device"));
            // The device opens only once: exactly one of holdline and the
            // watchdog daemon may own it.
            match profile.watchdog {
                WatchdogConfig::External => {
                    assert!(daemon_owns_device, "{b}: nobody feeds the watchdog")
                }
                WatchdogConfig::Linux { .. } => {
                    assert!(!daemon_owns_device, "{b}: both open the watchdog")
                }
                WatchdogConfig::Sim { .. } => {
                    panic!("{b}: a real board with the simulated watchdog")
                }
            }
        }
    }
}

#[test]
fn service_unit_is_notify_with_watchdog() {
    let unit = read(&images().join("common/rootfs/usr/lib/systemd/system/holdline.service"));
    for line in [
        "Type=notify",
        "WatchdogSec=",
        "NotifyAccess=main",
        "Restart=always",
        "StartLimitAction=reboot",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "unit lacks {line}"
        );
    }
    let test = read(&images().join("common/rootfs/usr/lib/holdline/watchdog-test"));
    assert!(test.contains("holdline health"));
}
