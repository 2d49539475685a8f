//! Bad configs: one-line error naming the key or path, the bad-config exit
//! code (3), nothing started. And `holdline run` on built-in defaults.

use std::time::Duration;

use holdline_tests::holdline::{run_cli, Holdline, HoldlineOpts};
use holdline_tests::net::Block;
use holdline_tests::proc::RunDir;

const BAD_CONFIG: i32 = 3;

fn check(dir: &RunDir, name: &str, text: &str, must_name: &str) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    let sock = dir.join("console.sock");
    let out = run_cli(
        &["run", "--config", path.to_str().expect("utf-8 path")],
        Duration::from_secs(30),
    )
    .expect("holdline runs");
    assert_eq!(out.status.code(), Some(BAD_CONFIG), "{name}: {out:?}");
    let err = out.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{name}: not one line: {err}");
    assert!(
        err.contains(must_name),
        "{name}: {err:?} does not name {must_name:?}"
    );
    assert!(!sock.exists(), "{name}: something was started");
    assert!(
        !dir.join("holdline.db").exists(),
        "{name}: the store was opened"
    );
}

#[test]
fn bad_configs_fail_with_one_line_naming_the_key_and_exit_3() {
    let dir = RunDir::new("bad-config").expect("dir");
    let base = |extra: &str| {
        format!(
            "[store]\npath = \"{}\"\n[console]\nsocket = \"{}\"\n{extra}",
            dir.join("holdline.db").display(),
            dir.join("console.sock").display()
        )
    };
    check(
        &dir,
        "unknown-key.toml",
        &base("[cloud]\ndomian = \"cloud.test\"\n"),
        "domian",
    );
    check(&dir, "unknown-section.toml", &base("[clowd]\n"), "clowd");
    check(
        &dir,
        "bad-address.toml",
        &base("[lan]\nlisten = [\"udp:127.0.0.1:99999\"]\n"),
        "lan.listen[0]",
    );
    check(
        &dir,
        "bad-proxy.toml",
        &base("[cloud]\nproxy = \"cloud.test:5060\"\n"),
        "cloud.proxy",
    );
    check(&dir, "syntax.toml", &base("[lan\n"), "syntax.toml");
    check(
        &dir,
        "probe-timeout.toml",
        &base("[uplink]\nprobe_timeout_ms = 0\n"),
        "uplink.probe_timeout_ms",
    );
    check(
        &dir,
        "phone-refresh.toml",
        &base("[survival]\nphone_refresh_s = 5\n"),
        "survival.phone_refresh_s",
    );
    let missing = dir.join("does-not-exist.toml");
    let out = run_cli(
        &["run", "--config", missing.to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
    .expect("holdline runs");
    assert_eq!(out.status.code(), Some(BAD_CONFIG), "{out:?}");
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("does-not-exist.toml"), "{out:?}");
}

#[test]
fn check_config_accepts_the_test_fixture_and_refuses_an_unknown_key() {
    let block = Block::allocate();
    let dir = RunDir::new("check-config").expect("dir");
    let good = dir.join("good.toml");
    std::fs::write(&good, HoldlineOpts::new(&block).config_text(dir.path())).expect("write");
    let out = run_cli(
        &["check-config", good.to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
    .expect("runs");
    assert!(out.status.success(), "{out:?}");
    // The survival key for phones' refresh (0 = off, else 60..=86400).
    let refresh = dir.join("refresh.toml");
    let text = HoldlineOpts::new(&block).config_text(dir.path());
    std::fs::write(
        &refresh,
        format!("{text}[survival]\nphone_refresh_s = 300\n"),
    )
    .expect("write");
    let out = run_cli(
        &["check-config", refresh.to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
    .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[board]\nprofile = \"sim\"\nleds = 3\n").expect("write");
    let out = run_cli(
        &["check-config", bad.to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
    .expect("runs");
    assert_eq!(out.status.code(), Some(BAD_CONFIG), "{out:?}");
    assert!(out.stderr.contains("leds"), "{out:?}");
}

#[test]
fn console_unknown_command_is_an_error_with_exit_1_and_json_works() {
    let block = Block::allocate();
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let a = hl.console(&["frobnicate", "now"]).expect("console");
    assert_eq!(a.code, Some(1), "{a:?}");
    assert!(a.stdout.contains("unknown command"), "{a:?}");
    let v = hl.console_json(&["version"]).expect("version");
    assert!(v.starts_with("{\"ok\":true,\"version\":{"), "{v}");
    let c = hl.console_json(&["show", "cloud"]).expect("cloud");
    assert!(c.contains("\"proxy\":\"udp:"), "{c}");
    let help = hl.console(&["help"]).expect("help");
    assert!(
        help.ok && help.stdout.contains("show registrations"),
        "{help:?}"
    );
    assert!(help.stdout.lines().all(|l| l.len() <= 80), "{help:?}");

    // The board's health view and the watchdog daemon's test command.
    let health = hl.console(&["show", "health"]).expect("show health");
    assert!(
        health.ok && health.stdout.contains("health: ok"),
        "{health:?}"
    );
    let out = run_cli(
        &["health", "--socket", hl.socket().to_str().expect("utf-8")],
        Duration::from_secs(30),
    )
    .expect("holdline health");
    assert!(out.status.success(), "{out:?}");

    // SIGTERM: clean shutdown, exit 0, console socket removed.
    assert_eq!(hl.stop().expect("stops"), Some(0), "{}", hl.log());
    assert!(!hl.socket().exists());
    assert!(hl.log().contains("stopped"), "{}", hl.log());
}
