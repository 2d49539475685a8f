//! End to end with the REAL firmware: five `holdline run` daemons (sim
//! board, management API on loopback), each under `holdline-image sim-run`
//! (the simulated board's bootloader + init), a tiny SIP "cloud" answering
//! their OPTIONS probes, bundles built and signed by `holdline-image`, and
//! the real `holdline-fleet` binary rolling them out.
//!
//! The test builds the workspace's binaries with the same cargo that runs it
//! (`cargo build --workspace --bins`, a no-op when they are already built).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdline_fleet::client::Client;
use holdline_fleet::inventory::Inventory;

const NET: &str = "127.0.21";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the firmware and the image tool; returns the directory holding them.
fn build_bins() -> PathBuf {
    let out = Command::new(env!("CARGO"))
        // The same command as tests/run-all.sh runs before the tests, so in
        // CI this is a no-op (and builds the same feature set).
        .args(["build", "--workspace", "--bins"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building holdline failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // target/<profile>/deps/<this test> → target/<profile>
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// A SIP "cloud" that answers every request with 200 OK.
struct Cloud {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cloud {
    fn start(addr: &str) -> Cloud {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !s2.load(Ordering::SeqCst) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                if req.starts_with("SIP/2.0") {
                    continue;
                }
                let mut resp = String::from("SIP/2.0 200 OK\r\n");
                for line in req.split("\r\n").skip(1) {
                    let lower = line.to_ascii_lowercase();
                    let keep = ["via:", "v:", "from:", "f:", "call-id:", "i:", "cseq:"];
                    if keep.iter().any(|k| lower.starts_with(k)) {
                        resp.push_str(line);
                        resp.push_str("\r\n");
                    } else if lower.starts_with("to:") || lower.starts_with("t:") {
                        resp.push_str(line);
                        if !lower.contains("tag=") {
                            resp.push_str(";tag=cloud1");
                        }
                        resp.push_str("\r\n");
                    }
                }
                resp.push_str("Content-Length: 0\r\n\r\n");
                let _ = sock.send_to(resp.as_bytes(), from);
            }
        });
        Cloud {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One appliance: `holdline-image sim-run -- holdline run --config ...` in
/// its own process group, killed (with the daemon) on drop.
struct Appliance {
    name: String,
    dir: PathBuf,
    child: Child,
}

impl Appliance {
    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("sim-run.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        // The launcher leads its own process group (launcher + daemon).
        // NB: procps `kill -KILL -PGID` sends to -1 (every process!); only
        // `kill -s KILL -- -PGID` addresses the group.
        let pgid = self.child.id();
        if pgid > 1 {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pgid}")])
                .status();
        }
        let _ = self.child.wait();
    }
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn config(dir: &Path, ip: &str, cloud: &str, token: &str) -> String {
    let d = dir.display();
    format!(
        r#"[lan]
listen = ["udp:{ip}:5060"]
[wan]
listen = ["udp:{ip}:5070"]
[cloud]
proxy = "udp:{cloud}"
domain = "cloud.test"
[store]
path = "{d}/holdline.db"
[board]
profile = "sim"
[console]
socket = "{d}/console.sock"
[update]
state_dir = "{d}/update"
keys = "{d}/keys"
commit_after_secs = 1
trial_timeout_secs = 20
[mgmt]
enabled = true
listen = "{ip}:8080"
token = "{token}"
upload_dir = "{d}"
"#
    )
}

fn run_tool(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn logs(apps: &[Appliance]) -> String {
    apps.iter()
        .map(|a| format!("---- {} ----\n{}", a.name, a.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn real_daemons_good_rollout_then_failing_canaries_roll_back() {
    let bins = build_bins();
    let holdline = bins.join("holdline");
    let image = bins.join("holdline-image");
    let fleet_bin = PathBuf::from(env!("CARGO_BIN_EXE_holdline-fleet"));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let _cloud = Cloud::start(&format!("{NET}.1:5060"));

    // Signing key and the two firmware builds: a good one (the real daemon)
    // and one that runs but never becomes healthy (its cloud link is broken).
    let (code, _, err) = run_tool(
        &image,
        &[
            "keygen",
            "--out",
            root.join("test-release").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (key, public) = (root.join("test-release.key"), root.join("test-release.pub"));
    let good_fw = root.join("good-firmware");
    script(&good_fw, &format!("exec {} \"$@\"", holdline.display()));
    let bad_fw = root.join("bad-firmware");
    script(
        &bad_fw,
        &format!(
            "# fixture build: runs, but its cloud link is broken, so it is never healthy\ncfg=\"$3\"\nexec {} run --config \"${{cfg%.toml}}-unhealthy.toml\"",
            holdline.display()
        ),
    );
    let crash_fw = root.join("crash-firmware");
    script(
        &crash_fw,
        "echo 'fixture build: crashes at start' >&2\nexit 70",
    );
    let images = workspace().join("images");
    let mut bundles = Vec::new();
    for (fw, version) in [
        (&good_fw, "0.2.0"),
        (&bad_fw, "0.3.0"),
        (&crash_fw, "0.4.0"),
    ] {
        let out = root.join(format!("sim-{version}.hlb"));
        let (code, o, e) = run_tool(
            &image,
            &[
                "build",
                "--board",
                "sim",
                "--firmware",
                fw.to_str().unwrap(),
                "--version",
                version,
                "--images",
                images.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "{o}{e}");
        bundles.push(out);
    }

    // Five appliances on the factory firmware (the daemon binary itself).
    let mut apps = Vec::new();
    let mut inv = String::new();
    for i in 1..=5u8 {
        let name = if i == 1 {
            "canary-1".to_string()
        } else {
            format!("site-{i}")
        };
        let group = if i == 1 { "canary" } else { "default" };
        let dir = root.join(&name);
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::copy(&public, dir.join("keys/release.pub")).unwrap();
        let ip = format!("{NET}.{}", 10 + i);
        let token = format!("test-token-{i}");
        std::fs::write(
            dir.join("holdline.toml"),
            config(&dir, &ip, &format!("{NET}.1:5060"), &token),
        )
        .unwrap();
        // Nobody answers at .2: the broken build's cloud never comes up.
        std::fs::write(
            dir.join("holdline-unhealthy.toml"),
            config(&dir, &ip, &format!("{NET}.2:5060"), &token),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("sim-run.log")).unwrap();
        let child = Command::new(&image)
            .args(["sim-run", "--state-dir"])
            .arg(dir.join("update"))
            .arg("--factory")
            .arg(&holdline)
            .args(["--max-boots", "20", "--", "run", "--config"])
            .arg(dir.join("holdline.toml"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        inv.push_str(&format!(
            "[[appliance]]\nname = \"{name}\"\naddress = \"{ip}:8080\"\ngroup = \"{group}\"\ntoken = \"{token}\"\n\n"
        ));
        apps.push(Appliance { name, dir, child });
    }
    let inventory = root.join("fleet.toml");
    std::fs::write(&inventory, &inv).unwrap();
    let inv = Inventory::load(&inventory).unwrap();
    let client = Client::new(Duration::from_secs(2), Duration::from_secs(60));

    let wait_healthy = |what: &str| {
        let start = Instant::now();
        loop {
            let healthy = inv
                .appliances
                .iter()
                .filter(|a| client.health(a).is_ok_and(|h| h.healthy))
                .count();
            if healthy == inv.appliances.len() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{what}: only {healthy}/5 healthy after 120 s\n{}",
                logs(&apps)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_healthy("factory start");

    let fleet = |args: &[&str]| {
        let mut all = vec!["--inventory", inventory.to_str().unwrap()];
        all.extend_from_slice(args);
        run_tool(&fleet_bin, &all)
    };
    let version_of = |name: &str| {
        let a = inv.get(name).unwrap();
        client
            .update_status(a)
            .unwrap()
            .running_version
            .unwrap()
            .to_string()
    };

    // 1. A good bundle goes out wave by wave and every daemon commits it.
    let (code, out, err) = fleet(&[
        "rollout",
        bundles[0].to_str().unwrap(),
        "--timeout",
        "180",
        "--poll-ms",
        "500",
    ]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}\n{}", logs(&apps));
    assert!(
        out.contains("in 3 waves: [canary-1] [site-2 site-3] [site-4 site-5]"),
        "{out}"
    );
    assert!(
        out.contains("rollout complete: 5/5 appliances on 0.2.0"),
        "{out}"
    );
    for a in &apps {
        assert_eq!(version_of(&a.name), "0.2.0");
    }

    // 2. A build that never becomes healthy: the canary rolls itself back,
    //    the rollout halts before wave 2 and names it.
    let (code, out, err) = fleet(&[
        "rollout",
        bundles[1].to_str().unwrap(),
        "--timeout",
        "180",
        "--poll-ms",
        "500",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}\n{}", logs(&apps));
    assert!(
        out.contains("HALTED in wave 1/3: canary-1: rolled back to 0.2.0 by the appliance"),
        "{out}\n{}",
        logs(&apps)
    );
    assert!(!out.contains("wave 2/3 ("), "{out}");
    // The canary serves on the old version afterwards; the others were not touched.
    wait_healthy("after the rollback");
    for a in &apps {
        assert_eq!(version_of(&a.name), "0.2.0", "{}", a.name);
    }
    let st = client.update_status(inv.get("site-2").unwrap()).unwrap();
    assert!(st.failed_versions.is_empty());
    let canary = client.update_status(inv.get("canary-1").unwrap()).unwrap();
    assert_eq!(canary.failed_versions[0].version.to_string(), "0.3.0");

    // 3. A build that crashes at start (as a hang ends in a watchdog reset):
    //    the trial boot gets one attempt, the next power-on falls back.
    let (code, out, _) = fleet(&["abort"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = fleet(&[
        "rollout",
        bundles[2].to_str().unwrap(),
        "--timeout",
        "180",
        "--poll-ms",
        "500",
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}\n{}", logs(&apps));
    assert!(
        out.contains("HALTED in wave 1/3: canary-1: rolled back to 0.2.0 by the appliance: trial boot of slot A did not come up healthy; the bootloader fell back to B"),
        "{out}\n{}",
        logs(&apps)
    );
    wait_healthy("after the fallback");
    assert_eq!(version_of("canary-1"), "0.2.0");
}
