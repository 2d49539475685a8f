//! Sign/verify round trip, and every kind of bad bundle refused with a clear
//! error while the running slot stays untouched.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use common::*;
use holdline_update::agent::{InstallOptions, LastResult, Trial};
use holdline_update::bundle::{Bundle, BundleError, Policy};
use holdline_update::AgentError;

fn policy(board: &str) -> Policy<'_> {
    Policy {
        board,
        ..Policy::default()
    }
}

#[test]
fn sign_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let key = test_key();
    let unsigned = make_bundle(dir.path(), "sim", "1.1.0", true, None);
    let b = Bundle::open(&unsigned).unwrap();
    assert!(!b.is_signed());
    assert!(matches!(
        b.verify(&[key.verifying_key()], &policy("sim")),
        Err(BundleError::Unsigned)
    ));
    holdline_update::bundle::sign(&unsigned, &key).unwrap();
    let b = Bundle::open(&unsigned).unwrap();
    let m = b.verify(&[key.verifying_key()], &policy("sim")).unwrap();
    assert_eq!(m.version.to_string(), "1.1.0");
    assert_eq!(m.compatible, vec!["sim".to_string()]);
    assert_eq!(m.payload.len(), 1);
    assert_eq!(m.payload[0].sha256.len(), 64);
    // Key rotation: a keyring with another key too still verifies.
    let other = test_key();
    b.verify(
        &[other.verifying_key(), key.verifying_key()],
        &policy("sim"),
    )
    .unwrap();
}

/// Replaces `from` by `to` (same length) inside the bundle file.
fn patch(path: &std::path::Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let pos = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from:?} not in bundle"));
    bytes[pos..pos + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

fn assert_refused(
    board: &mut SimBoard,
    bundle: &std::path::Path,
    opts: InstallOptions,
    check: impl Fn(&BundleError) -> bool,
    words: &str,
) {
    let before = board.running_snapshot();
    let err = board.agent.install(bundle, opts, 2_000).unwrap_err();
    let text = err.to_string();
    match &err {
        AgentError::Refused(e) => assert!(check(e), "unexpected refusal: {text}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(text.contains(words), "error {text:?} should say {words:?}");
    // The running slot, its firmware and the boot environment are untouched,
    // no trial is armed, and the refusal is recorded as the last result.
    assert_eq!(board.running_snapshot(), before);
    let st = board.agent.status().unwrap();
    assert_eq!(st.trial, Trial::None);
    assert!(!st.reboot_pending);
    assert!(matches!(st.last_result, Some(LastResult::Refused { .. })));
    assert_eq!(st.running_version.unwrap().to_string(), "1.0.0");
}

#[test]
fn tampered_payload_refused() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "1.1.0", true, Some(&board.key));
    patch(&b, "echo 1.1.0", "echo 6.6.6");
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::Digest { .. }),
        "was altered",
    );
}

#[test]
fn tampered_manifest_refused() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "1.1.0", true, Some(&board.key));
    patch(&b, "version = \"1.1.0\"", "version = \"9.1.0\"");
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::BadSignature),
        "signature check failed",
    );
}

#[test]
fn wrong_key_refused() {
    let mut board = SimBoard::new();
    let stranger = test_key();
    let b = make_bundle(board.dir.path(), "sim", "1.1.0", true, Some(&stranger));
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::BadSignature),
        "untrusted key",
    );
}

#[test]
fn unsigned_refused() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "1.1.0", true, None);
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::Unsigned),
        "not signed",
    );
}

#[test]
fn wrong_board_refused() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "apu2", "1.1.0", true, Some(&board.key));
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::WrongBoard { .. }),
        "this appliance is \"sim\"",
    );
}

#[test]
fn older_version_refused_unless_overridden() {
    let mut board = SimBoard::new();
    let b = make_bundle(board.dir.path(), "sim", "0.9.0", true, Some(&board.key));
    assert_refused(
        &mut board,
        &b,
        InstallOptions::default(),
        |e| matches!(e, BundleError::Older { .. }),
        "older than the installed 1.0.0",
    );
    // The field-tech override installs it on trial.
    let opts = InstallOptions {
        allow_downgrade: true,
        ..InstallOptions::default()
    };
    let report = board.agent.install(&b, opts, 3_000).unwrap();
    assert_eq!(report.version.to_string(), "0.9.0");
    assert_eq!(report.slot, holdline_update::slots::SlotName::B);
}

#[test]
fn garbage_file_refused() {
    let mut board = SimBoard::new();
    let junk = board.dir.path().join("junk.hlb");
    std::fs::write(&junk, b"this is not a tar archive at all").unwrap();
    let before = board.running_snapshot();
    let err = board
        .agent
        .install(&junk, InstallOptions::default(), 2_000)
        .unwrap_err();
    assert!(err.to_string().contains("not a holdline bundle"), "{err}");
    assert_eq!(board.running_snapshot(), before);
}
