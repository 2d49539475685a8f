//! holdline-image end to end: keygen, build from a "release build" and the
//! repository's images/, sign, verify (good and refused), inspect, and the
//! built bundle installed by the update agent on a simulated board.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use holdline_update::agent::InstallOptions;
use holdline_update::bundle::{Bundle, ROOTFS};
use holdline_update::slots::{Layout, SlotName, Tools};
use holdline_update::{keys, Agent, AgentConfig};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holdline-image"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(out: &Output, code: i32, words: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(err.contains(words), "stderr {err:?} should say {words:?}");
}

fn images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_build_sign_verify_inspect_install() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let prefix = d.join("test-release");
    ok(&tool(&["keygen", "--out", s(&prefix)]));
    let (key, public) = (d.join("test-release.key"), d.join("test-release.pub"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // keygen refuses to overwrite a secret key.
    fails(&tool(&["keygen", "--out", s(&prefix)]), 3, "exists");

    let firmware = d.join("holdline");
    std::fs::write(&firmware, "#!/bin/sh\necho fixture firmware 1.4.0\n").unwrap();
    let bundle = d.join("sim-1.4.0.hlb");
    let out = ok(&tool(&[
        "build",
        "--board",
        "sim",
        "--firmware",
        s(&firmware),
        "--version",
        "1.4.0",
        "--images",
        s(&images()),
        "--pubkey",
        s(&public),
        "--build-time",
        "1700000000",
        "--out",
        s(&bundle),
    ]));
    assert!(out.contains("version 1.4.0"), "{out}");
    fails(
        &tool(&["verify", "--pubkey", s(&public), s(&bundle)]),
        1,
        "not signed",
    );

    ok(&tool(&["sign", "--key", s(&key), s(&bundle)]));
    let out = ok(&tool(&[
        "verify",
        "--pubkey",
        s(&public),
        "--board",
        "sim",
        s(&bundle),
    ]));
    assert!(out.starts_with("OK: version 1.4.0"), "{out}");
    fails(
        &tool(&[
            "verify",
            "--pubkey",
            s(&public),
            "--board",
            "apu2",
            s(&bundle),
        ]),
        1,
        "this appliance is \"apu2\"",
    );
    fails(
        &tool(&[
            "verify",
            "--pubkey",
            s(&public),
            "--installed",
            "2.0.0",
            s(&bundle),
        ]),
        1,
        "older than the installed 2.0.0",
    );
    let stranger = d.join("stranger");
    ok(&tool(&["keygen", "--out", s(&stranger)]));
    fails(
        &tool(&["verify", "--pubkey", s(&d.join("stranger.pub")), s(&bundle)]),
        1,
        "signature check failed",
    );
    let out = ok(&tool(&["inspect", s(&bundle)]));
    assert!(
        out.contains("version     1.4.0") && out.contains("boards      sim"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&tool(&["inspect", "--json", s(&bundle)]))).unwrap();
    assert_eq!(json["manifest"]["version"], "1.4.0");
    assert_eq!(json["signed"], true);

    // The payload carries the overlay, the binary, the layout and the key.
    let b = Bundle::open(&bundle).unwrap();
    let m = b
        .verify_signature(&[keys::load_public(&public).unwrap()])
        .unwrap();
    let names = b
        .read_payload(&m, ROOTFS, |r| {
            let mut names = Vec::new();
            for e in tar::Archive::new(r).entries()? {
                names.push(e?.path()?.to_string_lossy().into_owned());
            }
            Ok(names)
        })
        .unwrap();
    for want in [
        "usr/bin/holdline",
        "usr/lib/systemd/system/holdline.service",
        "usr/lib/holdline/watchdog-test",
        "etc/holdline/holdline.toml",
        "etc/holdline/slots.toml",
        "etc/holdline/keys/test-release.pub",
        "etc/holdline/release",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    // The update agent installs the tool's bundle into the inactive slot.
    let state = d.join("state");
    let mut agent = Agent::open(AgentConfig {
        board: "sim".into(),
        state_dir: state.clone(),
        layout: Layout::simulated(),
        keys: keys::load_keyring(&public).unwrap(),
        commit_after_secs: 10,
        trial_timeout_secs: 60,
        tools: Tools::default(),
    })
    .unwrap();
    agent.sim_power_on().unwrap();
    agent.on_boot(100, &"1.0.0".parse().unwrap()).unwrap();
    let r = agent
        .install(&bundle, InstallOptions::default(), 200)
        .unwrap();
    assert_eq!(r.slot, SlotName::B);
    assert_eq!(
        std::fs::read(state.join("slots/b/usr/bin/holdline")).unwrap(),
        std::fs::read(&firmware).unwrap()
    );
    let mode = std::fs::metadata(state.join("slots/b/usr/bin/holdline"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "firmware must stay executable");
}

#[test]
fn build_for_unknown_board_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("holdline");
    std::fs::write(&firmware, "x").unwrap();
    let out = tool(&[
        "build",
        "--board",
        "nosuch",
        "--firmware",
        s(&firmware),
        "--images",
        s(&images()),
        "--out",
        s(&dir.path().join("b.hlb")),
    ]);
    fails(&out, 3, "manifest.toml");
}

/// A stand-in for a board's base OS tarball (as mmdebstrap would make it).
fn base_tar(dir: &Path) -> PathBuf {
    let p = dir.join("base.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    for (name, body) in [
        ("./boot/vmlinuz", "kernel"),
        ("./etc/os-release", "ID=debian"),
        (
            "./etc/holdline/holdline.toml",
            "base OS default, replaced by the image",
        ),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, body.as_bytes()).unwrap();
    }
    b.into_inner().unwrap();
    p
}

fn payload_files(bundle: &Path) -> Vec<(String, String)> {
    let b = Bundle::open(bundle).unwrap();
    let m = b.manifest_unverified().unwrap();
    b.read_payload(&m, ROOTFS, |r| {
        let mut files = Vec::new();
        for e in tar::Archive::new(r).entries()? {
            let mut e = e?;
            let name = e.path()?.to_string_lossy().into_owned();
            let mut body = String::new();
            if e.header().entry_type().is_file() {
                std::io::Read::read_to_string(&mut e, &mut body)?;
            }
            files.push((name, body));
        }
        Ok(files)
    })
    .unwrap()
}

#[test]
fn every_board_builds() {
    let dir = tempfile::tempdir().unwrap();
    let firmware = dir.path().join("holdline");
    std::fs::write(&firmware, "x").unwrap();
    let base = base_tar(dir.path());
    let imgs = images();
    for board in ["sim", "apu2", "cm4-box"] {
        let out = dir.path().join(format!("{board}.hlb"));
        let build = |extra: &[&str]| {
            let mut args = vec![
                "build",
                "--board",
                board,
                "--firmware",
                s(&firmware),
                "--images",
                s(&imgs),
                "--out",
                s(&out),
            ];
            args.extend_from_slice(extra);
            tool(&args)
        };
        if board == "sim" {
            ok(&build(&[]));
        } else {
            // A partition slot is a whole root filesystem: the base OS is required.
            fails(&build(&[]), 3, "--base-rootfs");
            ok(&build(&["--base-rootfs", s(&base)]));
            let files = payload_files(&out);
            let find = |n: &str| files.iter().filter(|(f, _)| f == n).collect::<Vec<_>>();
            assert_eq!(
                find("boot/vmlinuz").len(),
                1,
                "{board}: kernel from the base"
            );
            assert_eq!(find("etc/os-release").len(), 1);
            let cfg = find("etc/holdline/holdline.toml");
            assert_eq!(cfg.len(), 1, "{board}: overlay replaces the base file");
            assert!(
                cfg[0].1.contains("[update]"),
                "{board}: the image's config wins"
            );
        }
        let m = Bundle::open(&out).unwrap().manifest_unverified().unwrap();
        assert_eq!(m.compatible, vec![board.to_string()]);
    }
}

#[test]
fn sim_run_powers_on_runs_the_slot_and_power_cycles_on_failure() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("update");
    let script = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    };
    // Factory firmware that shuts down cleanly: one boot, exit 0, args passed.
    let marker = dir.path().join("args");
    let good = script("good", &format!("echo \"$@\" > {}", marker.display()));
    let out = ok(&tool(&[
        "sim-run",
        "--state-dir",
        s(&state),
        "--factory",
        s(&good),
        "--",
        "run",
        "--config",
        "x.toml",
    ]));
    assert!(out.contains("after 1 boot"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "run --config x.toml"
    );
    let env = std::fs::read_to_string(state.join("bootenv")).unwrap();
    assert!(
        env.contains("BOOTED=A") && env.contains("LAUNCHED=1"),
        "{env}"
    );
    // Firmware that crashes is power-cycled until --max-boots.
    let bad = script("bad", "exit 1");
    let out = tool(&[
        "sim-run",
        "--state-dir",
        s(&state),
        "--factory",
        s(&bad),
        "--max-boots",
        "3",
    ]);
    fails(&out, 3, "stopped after 3 boots");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("power-cycling")
            .count(),
        3
    );
}
