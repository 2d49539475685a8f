//! The health-gated watchdog at the appliance level: the real binary on
//! the simulated board (`[board] profile = "sim"`: a 10 s watchdog that,
//! when not fed, ends the process with exit 75 and leaves a marker).
//!
//! - a stalled SIP loop (test-only fault injection, `[health]
//!   fault_injection = true`) stops the feeding: the process exits 75 and
//!   the next start reports the watchdog reset (`show health`, counter, event
//!   log);
//! - `debug stall` is refused while fault injection is off (the default);
//! - a healthy appliance under SIPp load (phones registering and calling
//!   through holdline to a Kamailio cloud) for three minutes is never reset.
//!
//! No timing asserts: every wait is a generous bound, so a loaded 2-core
//! machine cannot flip these tests.

use std::time::{Duration, Instant};

use holdline_tests::holdline::{ConsoleAnswer, Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

const PHONE_PORT: u16 = 5062;
/// The sim watchdog's timeout plus the SIP loop's check-in deadline is
/// 20 s; this bound is for a machine that is very busy.
const RESET_BOUND: Duration = Duration::from_secs(120);

fn console(hl: &Holdline, args: &[&str]) -> ConsoleAnswer {
    hl.console(args).expect("holdline console runs")
}

fn text(a: &ConsoleAnswer) -> String {
    format!("{}{}", a.stdout, a.stderr)
}

#[test]
fn a_stalled_sip_loop_is_reset_by_the_watchdog_and_the_next_start_reports_it() {
    let block = Block::allocate();
    let mut opts = HoldlineOpts::new(&block);
    opts.extra = "[health]\nfault_injection = true\n".into();
    let mut hl = Holdline::start(opts).expect("holdline starts");

    // Healthy first: fed, first boot, no resets.
    let health = console(&hl, &["show", "health"]);
    assert!(health.ok, "{}", text(&health));
    assert!(health.stdout.contains("health: ok"), "{}", health.stdout);
    assert!(
        health
            .stdout
            .contains("last boot: power-on  watchdog resets: 0"),
        "{}",
        health.stdout
    );

    // Unknown task names are refused (usage), nothing is stalled.
    let bad = console(&hl, &["debug", "stall", "console"]);
    assert!(!bad.ok, "{}", text(&bad));
    assert!(text(&bad).contains("usage: debug stall"), "{}", text(&bad));

    let stalled_at = Instant::now();
    let stall = console(&hl, &["debug", "stall", "sip"]);
    assert!(stall.ok, "{}", text(&stall));
    assert!(stall.stdout.contains("sip stalled"), "{}", stall.stdout);

    // The process ends on its own: the console stops answering.
    let mut stale_seen = false;
    loop {
        let a = console(&hl, &["show", "health"]);
        if a.code == Some(6) {
            break;
        }
        stale_seen |= a.stdout.contains("health: STALE (sip)");
        assert!(
            stalled_at.elapsed() < RESET_BOUND,
            "still running {:?} after the stall:\n{}\n{}",
            stalled_at.elapsed(),
            text(&a),
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = stalled_at.elapsed();
    let code = hl.stop().expect("exit status");
    assert_eq!(
        code,
        Some(75),
        "exit code of a watchdog reset\n{}",
        hl.log()
    );
    assert!(
        hl.log().contains("sim watchdog: not fed in time"),
        "{}",
        hl.log()
    );
    eprintln!("watchdog reset {took:?} after the stall (STALE seen before: {stale_seen})");

    // The "reboot": the next start reports and counts it.
    hl.start_again().expect("holdline starts after the reset");
    let health = console(&hl, &["show", "health"]);
    assert!(health.ok, "{}", text(&health));
    assert!(health.stdout.contains("health: ok"), "{}", health.stdout);
    assert!(
        health
            .stdout
            .contains("last boot: watchdog reset  watchdog resets: 1"),
        "{}",
        health.stdout
    );
    // And the event log has it (written once the store is up; bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = console(&hl, &["show", "log"]);
        if log.stdout.contains("watchdog.reset") {
            assert!(log.stdout.contains("1 in all"), "{}", log.stdout);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no watchdog.reset event:\n{}",
            text(&log)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A clean stop is not a reset: the next start says power-on, count kept.
    assert_eq!(hl.stop().expect("stops"), Some(0), "{}", hl.log());
    hl.start_again().expect("starts again");
    let health = console(&hl, &["show", "health"]);
    assert!(
        health
            .stdout
            .contains("last boot: power-on  watchdog resets: 1"),
        "{}",
        health.stdout
    );
}

#[test]
fn debug_stall_is_refused_while_fault_injection_is_off() {
    let block = Block::allocate();
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
    for task in ["sip", "store", "uplink"] {
        let a = console(&hl, &["debug", "stall", task]);
        assert!(!a.ok, "{}", text(&a));
        assert_eq!(a.code, Some(1), "{}", text(&a));
        assert!(text(&a).contains("fault injection is off"), "{}", text(&a));
    }
    // Nothing was stalled: every task keeps checking in, the watchdog is fed.
    std::thread::sleep(Duration::from_secs(3));
    let health = console(&hl, &["show", "health"]);
    assert!(health.ok, "{}", text(&health));
    assert!(health.stdout.contains("health: ok"), "{}", health.stdout);
    assert!(!health.stdout.contains("STALL"), "{}", health.stdout);
    assert!(health.stdout.contains("feeding yes"), "{}", health.stdout);
}

#[test]
fn a_healthy_appliance_under_sipp_load_for_three_minutes_is_never_reset() {
    const LOAD: Duration = Duration::from_secs(180);
    const RATE: f64 = 2.0;
    let block = Block::allocate();
    // 1000 calls 1001; 1002..1011 keep re-registering.
    let users = User::numbered(1000, 12);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let register = |phone: u8, who: &[User], name: &str| {
        Sipp::new(Scenario::Register)
            .name(name)
            .local(block.phone(phone), PHONE_PORT)
            .remote(hl.lan())
            .users(who)
            .timeout(Duration::from_secs(60))
            .run()
            .expect("sipp register runs")
    };
    let r = register(0, &users[..1], "register-caller");
    assert!(r.all_ok(), "{r}");
    let r = register(1, &users[1..2], "register-callee");
    assert!(r.all_ok(), "{r}");

    let calls = (RATE * LOAD.as_secs_f64()) as u64;
    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(calls)
        .timeout(LOAD + Duration::from_secs(120))
        .spawn()
        .expect("callee starts");
    let uac = Sipp::new(Scenario::Uac)
        .name("caller")
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .calls(calls)
        .rate(RATE)
        .limit(20)
        .var("HOLD_MS", "1000")
        .timeout(LOAD + Duration::from_secs(60))
        .spawn()
        .expect("caller starts");

    let started = Instant::now();
    let mut samples = 0;
    let mut not_ok = Vec::new();
    let mut registers = 0;
    let mut next_register = Instant::now();
    let mut uac = Some(uac);
    while started.elapsed() < LOAD + Duration::from_secs(60) {
        let a = console(&hl, &["show", "health"]);
        assert_ne!(
            a.code,
            Some(6),
            "holdline stopped answering under load after {:?}:\n{}",
            started.elapsed(),
            hl.log()
        );
        samples += 1;
        if !a.stdout.contains("health: ok") {
            not_ok.push(format!("{:?}: {}", started.elapsed(), text(&a)));
        }
        if Instant::now() >= next_register && started.elapsed() < LOAD {
            let r = register(2, &users[2..], "reregister");
            assert!(r.created > 0, "{r}");
            registers += 1;
            next_register = Instant::now() + Duration::from_secs(30);
        }
        if started.elapsed() >= LOAD && !uac.as_mut().is_some_and(|u| u.is_running()) {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let uac = uac.take().expect("caller").wait().expect("caller result");
    let uas = uas.stop(Duration::from_secs(10)).expect("callee result");
    eprintln!(
        "load: {} calls created, {} successful, {} failed; {samples} health samples, \
         {registers} re-registration rounds",
        uac.created, uac.successful, uac.failed
    );

    // Real load went through holdline...
    assert!(uac.successful > calls / 2, "{uac}\n{uas}");
    let status = console(&hl, &["status"]);
    assert!(status.ok, "{}", text(&status));
    // ... and the appliance was healthy all along and never reset.
    assert!(
        not_ok.is_empty(),
        "health not ok under load:\n{}",
        not_ok.join("\n")
    );
    let health = console(&hl, &["show", "health"]);
    assert!(health.stdout.contains("health: ok"), "{}", health.stdout);
    assert!(health.stdout.contains("feeding yes"), "{}", health.stdout);
    assert!(
        health
            .stdout
            .contains("last boot: power-on  watchdog resets: 0"),
        "{}",
        health.stdout
    );
    // Still the same process: a clean stop exits 0.
    assert_eq!(hl.stop().expect("stops"), Some(0), "{}", hl.log());
    assert!(!hl.log().contains("sim watchdog"), "{}", hl.log());
    drop(cloud);
}

/// Images where the Debian `watchdog` daemon owns the device (`[watchdog]
/// kind = "external"`, as on cm4-box) rely on `holdline health` as its test
/// binary: exit 0 while every critical task is fresh, 1 once one is stale.
/// holdline arms no watchdog itself there, so the stall is not reset here
/// (the watchdog daemon would reboot the machine).
#[test]
fn holdline_health_fails_once_a_task_stalls_when_an_external_watchdog_owns_the_device() {
    let block = Block::allocate();
    let profile_dir = holdline_tests::proc::RunDir::new("profile").expect("run dir");
    let profile = profile_dir.join("sim-external.toml");
    std::fs::write(
        &profile,
        "[board]\nname = \"sim-external\"\n\
         description = \"sim pins, the watchdog daemon owns the watchdog\"\n\
         [watchdog]\nkind = \"external\"\n\
         [serial]\nkind = \"none\"\n\
         [leds]\nstatus = { kind = \"sim\" }\ncloud = { kind = \"sim\" }\n\
         cloud_alt = { kind = \"sim\" }\nfault = { kind = \"sim\" }\n\
         [button]\nlong_press_secs = 10\npin = { kind = \"sim\" }\n",
    )
    .expect("profile");
    let mut opts = HoldlineOpts::new(&block);
    opts.extra = format!(
        "[health]\nfault_injection = true\n[board]\nprofile = \"{}\"\n",
        profile.display()
    );
    let hl = Holdline::start(opts).expect("holdline starts");
    let socket = hl.socket();
    let health = || {
        holdline_tests::holdline::run_cli(
            &["health", "--socket", &socket.to_string_lossy()],
            Duration::from_secs(30),
        )
        .expect("holdline health runs")
    };
    let h = health();
    assert_eq!(h.status.code(), Some(0), "{}{}", h.stdout, h.stderr);
    let shown = console(&hl, &["show", "health"]);
    assert!(
        shown.stdout.contains("watchdog: external"),
        "{}",
        shown.stdout
    );

    let stall = console(&hl, &["debug", "stall", "uplink"]);
    assert!(stall.ok, "{}", text(&stall));
    // Stale after its deadline (10 s); bounded wait.
    let deadline = Instant::now() + RESET_BOUND;
    loop {
        let h = health();
        if h.status.code() == Some(1) {
            break;
        }
        assert_eq!(h.status.code(), Some(0), "{}{}", h.stdout, h.stderr);
        assert!(Instant::now() < deadline, "holdline health still passes");
        std::thread::sleep(Duration::from_millis(500));
    }
    let shown = console(&hl, &["show", "health"]);
    assert!(
        shown.stdout.contains("health: STALE (uplink)"),
        "{}",
        shown.stdout
    );
    // No watchdog of its own: still running, nothing recorded as a reset.
    assert!(!hl.log().contains("sim watchdog"), "{}", hl.log());
}
