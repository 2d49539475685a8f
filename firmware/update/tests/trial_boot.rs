//! Trial boot on the simulated board (file bootloader), with fixture
//! firmware builds whose `health` command is the health source.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use holdline_update::agent::{BootEvent, InstallOptions, LastResult, SlotState, TickEvent, Trial};
use holdline_update::slots::SlotName;

/// Ticks the agent with the firmware's own health every 10 s until the
/// trial ends (or `until`); returns the final event.
fn run_trial(board: &mut SimBoard, from: u64, until: u64) -> TickEvent {
    let mut now = from;
    loop {
        let healthy = board.firmware_healthy();
        let ev = board.agent.tick(now, healthy).unwrap();
        match ev {
            TickEvent::Waiting { .. } if now < until => now += 10,
            other => return other,
        }
    }
}

#[test]
fn good_bundle_committed_after_health_window() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "1.1.0", true, Some(&board.key));
    let r = board
        .agent
        .install(&b, InstallOptions::default(), 2_000)
        .unwrap();
    assert_eq!(r.slot, SlotName::B);
    assert!(r.rebooting);
    // Before the reboot nothing is committed and A still runs.
    let st = board.agent.status().unwrap();
    assert!(matches!(st.trial, Trial::Pending { .. }));
    assert!(st.reboot_pending);
    assert!(board.agent.take_reboot_request().unwrap());

    assert_eq!(board.power_on(2_010), SlotName::B);
    assert_eq!(board.run_firmware(SlotName::B, "version").1.trim(), "1.1.0");
    // Not committed before the window has passed.
    assert_eq!(
        board.agent.tick(2_010, true).unwrap(),
        TickEvent::Waiting { healthy_for: 0 }
    );
    assert!(matches!(
        board.agent.tick(2_010 + COMMIT_AFTER - 1, true).unwrap(),
        TickEvent::Waiting { .. }
    ));
    let ev = run_trial(&mut board, 2_010 + COMMIT_AFTER - 1, 2_010 + TRIAL_TIMEOUT);
    assert_eq!(ev, TickEvent::Committed("1.1.0".parse().unwrap()));

    let st = board.agent.status().unwrap();
    assert_eq!(st.booted, SlotName::B);
    assert_eq!(st.running_version.unwrap().to_string(), "1.1.0");
    assert_eq!(st.trial, Trial::None);
    assert!(matches!(st.last_result, Some(LastResult::Committed { .. })));
    assert_eq!(st.boot_order[0], SlotName::B);
    // Committed: later reboots stay on B.
    assert_eq!(board.power_on(3_000), SlotName::B);
    assert_eq!(board.power_on(3_100), SlotName::B);
    assert_eq!(board.power_on(3_200), SlotName::B);
    assert_eq!(board.power_on(3_300), SlotName::B);
    let text = board.agent.status().unwrap().render_text();
    assert!(text.contains("committed 1.1.0"), "{text}");
    assert!(text.lines().all(|l| l.len() <= 80), "{text}");
}

#[test]
fn never_healthy_bundle_rolled_back_and_refused_next_time() {
    let mut board = SimBoard::new();
    let bad = make_bundle(board.dir.path(), "sim", "1.2.0", false, Some(&board.key));
    board
        .agent
        .install(&bad, InstallOptions::default(), 2_000)
        .unwrap();
    assert!(board.agent.take_reboot_request().unwrap());
    assert_eq!(board.power_on(2_010), SlotName::B);
    assert!(!board.firmware_healthy());

    let ev = run_trial(&mut board, 2_010, 2_010 + 10 * TRIAL_TIMEOUT);
    let TickEvent::RolledBack { version, reason } = ev else {
        panic!("expected rollback, got {ev:?}");
    };
    assert_eq!(version.to_string(), "1.2.0");
    assert!(reason.contains("not healthy"), "{reason}");
    // The agent asks for the reboot; the bootloader picks the old slot.
    assert!(board.agent.take_reboot_request().unwrap());
    assert_eq!(board.power_on(2_200), SlotName::A);

    // The old version serves afterwards, healthy.
    let (ok, v) = board.run_firmware(SlotName::A, "version");
    assert!(ok);
    assert_eq!(v.trim(), "1.0.0");
    assert!(board.firmware_healthy());
    let st = board.agent.status().unwrap();
    assert_eq!(st.booted, SlotName::A);
    assert_eq!(st.running_version.unwrap().to_string(), "1.0.0");
    assert_eq!(st.failed_versions.len(), 1);
    assert_eq!(st.failed_versions[0].version.to_string(), "1.2.0");
    let b = st.slots.iter().find(|s| s.name == SlotName::B).unwrap();
    assert_eq!(b.state, Some(SlotState::Bad));
    assert_eq!(b.attempts_left, 0);
    // It keeps booting A.
    assert_eq!(board.power_on(2_300), SlotName::A);
    assert_eq!(board.power_on(2_400), SlotName::A);
    assert_eq!(board.power_on(2_500), SlotName::A);
    assert_eq!(board.power_on(2_600), SlotName::A);

    // The failed version is refused next time, with a clear reason...
    let err = board
        .agent
        .install(&bad, InstallOptions::default(), 3_000)
        .unwrap_err();
    assert!(err.to_string().contains("failed its trial boot"), "{err}");
    // ...unless the operator explicitly retries it.
    let opts = InstallOptions {
        retry_failed: true,
        ..InstallOptions::default()
    };
    board.agent.install(&bad, opts, 3_100).unwrap();
}

#[test]
fn watchdog_reset_during_trial_falls_back() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "1.3.0", true, Some(&board.key));
    board
        .agent
        .install(&b, InstallOptions::default(), 2_000)
        .unwrap();
    assert!(board.agent.take_reboot_request().unwrap());
    assert_eq!(board.power_on(2_010), SlotName::B);
    // The firmware hangs; the hardware watchdog resets the board before the
    // trial commits. The bootloader has no attempt left for B.
    let slot = board.agent.sim_power_on().unwrap();
    assert_eq!(slot, SlotName::A);
    let ev = board
        .agent
        .on_boot(2_100, &"1.0.0".parse().unwrap())
        .unwrap();
    assert!(matches!(ev, BootEvent::FellBack { .. }), "{ev:?}");
    let st = board.agent.status().unwrap();
    assert_eq!(st.running_version.unwrap().to_string(), "1.0.0");
    match st.last_result {
        Some(LastResult::RolledBack {
            version, reason, ..
        }) => {
            assert_eq!(version.to_string(), "1.3.0");
            assert!(reason.contains("watchdog"), "{reason}");
        }
        other => panic!("expected rollback, got {other:?}"),
    }
    assert!(board
        .agent
        .install(&b, InstallOptions::default(), 2_200)
        .is_err());
}

#[test]
fn second_install_during_trial_refused() {
    let mut board = SimBoard::new();
    let b1 = make_bundle(board.dir.path(), "sim", "1.1.0", true, Some(&board.key));
    let b2 = make_bundle(board.dir.path(), "sim", "1.4.0", true, Some(&board.key));
    board
        .agent
        .install(&b1, InstallOptions::default(), 2_000)
        .unwrap();
    let err = board
        .agent
        .install(&b2, InstallOptions::default(), 2_001)
        .unwrap_err();
    assert!(err.to_string().contains("still on trial"), "{err}");
}
