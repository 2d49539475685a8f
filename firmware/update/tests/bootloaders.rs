//! The U-Boot and GRUB back-ends through their standard tools, faked by
//! scripts on a PATH given to the child processes only (this process's
//! environment is never changed), on a board layout with partition slots.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use holdline_update::agent::{BootEvent, InstallOptions, TickEvent};
use holdline_update::bootloader::{self, BootEnv, GrubEnv, UbootEnv};
use holdline_update::slots::{BootloaderSpec, Layout, SlotName, SlotSpec, SlotTarget, Tools};
use holdline_update::{Agent, AgentConfig};

fn script(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Installs fake fw_printenv/fw_setenv, grub-editenv, mkfs.ext4, mount,
/// umount and systemctl into `bin`, all logging to `log`.
fn fake_tools(bin: &Path, store: &Path, log: &Path) {
    let (s, l) = (store.display(), log.display());
    let set_one = format!(
        "touch {s}; grep -v \"^$name=\" {s} > {s}.new; echo \"$name=$value\" >> {s}.new; mv {s}.new {s}\n"
    );
    script(
        bin,
        "fw_printenv",
        &format!("echo \"fw_printenv $*\" >> {l}\ntouch {s}; cat {s}\n"),
    );
    script(
        bin,
        "fw_setenv",
        &format!(
            "echo \"fw_setenv $*\" >> {l}\n[ \"$1\" = -c ] && shift 2\n[ \"$1\" = -s ] || {{ echo 'only -s' >&2; exit 1; }}\nwhile read -r name value; do\n{set_one}done < \"$2\"\n"
        ),
    );
    script(
        bin,
        "grub-editenv",
        &format!(
            "echo \"grub-editenv $*\" >> {l}\n[ \"$1\" = {s} ] || {{ echo \"wrong env file $1\" >&2; exit 1; }}\ncase \"$2\" in\n list) touch {s}; cat {s} ;;\n set) shift 2; for kv in \"$@\"; do name=${{kv%%=*}}; value=${{kv#*=}}; {set_one} done ;;\n *) exit 1 ;;\nesac\n"
        ),
    );
    for tool in ["mkfs.ext4", "mount", "umount", "systemctl"] {
        script(bin, tool, &format!("echo \"{tool} $*\" >> {l}\n"));
    }
}

fn board_layout(root: &Path, bootloader: BootloaderSpec) -> Layout {
    let slot = |name: SlotName, part: &str| SlotSpec {
        name,
        target: SlotTarget::Block {
            device: format!("/dev/fake{part}").into(),
            mount: root.join("mnt"),
        },
    };
    Layout {
        board: "cm4".into(),
        bootloader,
        cmdline: root.join("cmdline"),
        slot: vec![slot(SlotName::A, "p2"), slot(SlotName::B, "p3")],
    }
}

fn env_of(store: &Path) -> String {
    std::fs::read_to_string(store).unwrap()
}

fn run(kind: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let bin = root.join("bin");
    std::fs::create_dir(&bin).unwrap();
    let store = root.join("bootenv.store");
    let log = root.join("tools.log");
    fake_tools(&bin, &store, &log);
    let tools = Tools {
        path: Some(format!("{}:/usr/bin:/bin", bin.display()).into()),
    };
    let spec = match kind {
        "uboot" => BootloaderSpec::Uboot { config: None },
        _ => BootloaderSpec::Grub { env: store.clone() },
    };
    let key = test_key();
    let cfg = AgentConfig {
        board: "cm4".into(),
        state_dir: root.join("state"),
        layout: board_layout(root, spec),
        keys: vec![key.verifying_key()],
        commit_after_secs: COMMIT_AFTER,
        trial_timeout_secs: TRIAL_TIMEOUT,
        tools: tools.clone(),
    };
    let mut agent = Agent::open(cfg).unwrap();
    let mut env: Box<dyn BootEnv> = match kind {
        "uboot" => Box::new(UbootEnv {
            tools: tools.clone(),
            config: None,
            scratch: root.to_path_buf(),
        }),
        _ => Box::new(GrubEnv {
            tools: tools.clone(),
            env: store.clone(),
        }),
    };
    // Power-on as the board's boot script does it.
    let boot = |env: &mut Box<dyn BootEnv>| {
        let slot = bootloader::simulate_boot(env.as_mut()).unwrap();
        std::fs::write(
            root.join("cmdline"),
            format!("root=x holdline.slot={slot} ro\n"),
        )
        .unwrap();
        slot
    };
    assert_eq!(boot(&mut env), SlotName::A);
    agent.on_boot(100, &"1.0.0".parse().unwrap()).unwrap();

    // Good bundle: written to partition p3 through the standard tools.
    let good = make_bundle(root, "cm4", "1.1.0", true, Some(&key));
    let r = agent
        .install(&good, InstallOptions::default(), 200)
        .unwrap();
    assert_eq!(r.slot, SlotName::B);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("mkfs.ext4 -F -q -L holdline-B /dev/fakep3"),
        "{logged}"
    );
    assert!(logged.contains("mount /dev/fakep3"), "{logged}");
    assert!(logged.contains("umount"), "{logged}");
    assert!(logged.contains("systemctl reboot"), "{logged}");
    assert!(root.join("mnt/usr/bin/holdline").exists());
    let e = env_of(&store);
    assert!(
        e.contains("BOOT_ORDER=B A") && e.contains("BOOT_B_LEFT=1"),
        "{e}"
    );

    assert_eq!(boot(&mut env), SlotName::B);
    assert!(matches!(
        agent.on_boot(300, &"1.1.0".parse().unwrap()).unwrap(),
        BootEvent::TrialStarted { .. }
    ));
    agent.tick(300, true).unwrap();
    assert_eq!(
        agent.tick(300 + COMMIT_AFTER, true).unwrap(),
        TickEvent::Committed("1.1.0".parse().unwrap())
    );
    let e = env_of(&store);
    assert!(
        e.contains("BOOT_ORDER=B A") && e.contains("BOOT_B_LEFT=3"),
        "{e}"
    );

    // Bad bundle: never healthy, rolled back through the same tools.
    let bad = make_bundle(root, "cm4", "1.2.0", false, Some(&key));
    assert_eq!(
        agent
            .install(&bad, InstallOptions::default(), 1_000)
            .unwrap()
            .slot,
        SlotName::A
    );
    assert_eq!(boot(&mut env), SlotName::A);
    agent.on_boot(1_010, &"1.2.0".parse().unwrap()).unwrap();
    let ev = agent.tick(1_010 + TRIAL_TIMEOUT, false).unwrap();
    assert!(matches!(ev, TickEvent::RolledBack { .. }), "{ev:?}");
    let e = env_of(&store);
    assert!(
        e.contains("BOOT_ORDER=B\n") && e.contains("BOOT_A_LEFT=0"),
        "{e}"
    );
    assert_eq!(boot(&mut env), SlotName::B);
    agent.on_boot(1_200, &"1.1.0".parse().unwrap()).unwrap();
    let st = agent.status().unwrap();
    assert_eq!(st.running_version.unwrap().to_string(), "1.1.0");
    assert_eq!(
        st.bootloader,
        if kind == "uboot" { "u-boot" } else { "grub" }
    );
}

#[test]
fn uboot_env_through_fw_tools() {
    run("uboot");
}

#[test]
fn grub_env_through_grub_editenv() {
    run("grub");
}

#[test]
fn tool_failure_is_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let env = UbootEnv {
        tools: Tools {
            path: Some(dir.path().as_os_str().to_owned()),
        },
        config: None,
        scratch: dir.path().to_path_buf(),
    };
    let err = env.read_all().unwrap_err();
    assert!(err.to_string().contains("fw_printenv"), "{err}");
}
