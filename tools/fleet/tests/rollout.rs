//! holdline-fleet (the real binary) against six appliances on loopback:
//! in-process fakes that speak the management HTTP API and run the real
//! update agent on simulated boards (see common/). Not yet the real daemon.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;

use std::sync::atomic::Ordering;

use common::*;
use holdline_update::agent::{LastResult, Trial};
use holdline_update::slots::SlotName;

const FAST: [&str; 4] = ["--timeout", "120", "--poll-ms", "50"];

fn line_of(out: &str, needle: &str) -> usize {
    out.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in output:\n{out}"))
}

fn assert_committed(a: &Appliance, version: &str) {
    let st = a.status();
    assert_eq!(
        st.running_version.unwrap().to_string(),
        version,
        "{}",
        a.name
    );
    assert_eq!(st.trial, Trial::None, "{}", a.name);
    assert!(
        matches!(st.last_result, Some(LastResult::Committed { .. })),
        "{}",
        a.name
    );
    assert!(a.healthy(), "{}", a.name);
}

fn assert_untouched(a: &Appliance) {
    assert_eq!(
        a.installs.load(Ordering::SeqCst),
        0,
        "{} got an upload",
        a.name
    );
    let st = a.status();
    assert_eq!(st.running_version.unwrap().to_string(), "1.0.0");
    assert_eq!(st.booted, SlotName::A);
    assert_eq!(st.last_result, None);
}

#[test]
fn good_bundle_rolls_out_wave_by_wave() {
    let fleet = Fleet::start(7, 6);
    let good = make_bundle(fleet.dir.path(), &fleet.key, "1.1.0", true);
    let mut args = vec!["rollout", good.to_str().unwrap()];
    args.extend(FAST);
    let (code, out, err) = fleet.run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("in 3 waves: [canary-1] [site-2 site-3] [site-4 site-5 site-6]"),
        "{out}"
    );
    // Each wave starts only after the previous one committed and is healthy.
    let canary_done = line_of(&out, "canary-1: committed 1.1.0 and healthy");
    let wave1_done = line_of(&out, "wave 1/3 done");
    let wave2_start = line_of(&out, "wave 2/3 (wave): site-2 site-3");
    assert!(
        canary_done < wave1_done && wave1_done < wave2_start,
        "{out}"
    );
    let wave2_done = line_of(&out, "wave 2/3 done");
    for s in ["site-2", "site-3"] {
        assert!(
            line_of(&out, &format!("{s}: committed 1.1.0")) < wave2_done,
            "{out}"
        );
    }
    assert!(wave2_done < line_of(&out, "site-4: uploading"), "{out}");
    assert!(
        out.contains("rollout complete: 6/6 appliances on 1.1.0"),
        "{out}"
    );
    let log = fleet.upload_log.lock().unwrap().clone();
    assert_eq!(
        log,
        ["canary-1", "site-2", "site-3", "site-4", "site-5", "site-6"]
    );
    for a in &fleet.appliances {
        assert_committed(a, "1.1.0");
        assert_eq!(a.status().booted, SlotName::B);
    }
    // Fleet status reads it back.
    let (code, out, _) = fleet.run(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 7, "{out}");
    for a in &fleet.appliances {
        let row = out.lines().find(|l| l.starts_with(&a.name)).unwrap();
        assert!(
            row.contains("1.1.0") && row.contains("healthy") && row.contains(" B "),
            "{row}"
        );
    }
    let (code, out, _) = fleet.run(&["status", "--json"]);
    assert_eq!(code, 0, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 6);
    for row in rows.as_array().unwrap() {
        assert_eq!(row["update"]["running_version"], "1.1.0", "{row}");
        assert_eq!(row["health"]["healthy"], true, "{row}");
        assert!(row["error"].is_null(), "{row}");
    }
    // A second rollout is allowed once the first completed; already-current
    // appliances are not re-flashed.
    let (code, out, _) = fleet.run(&args);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("canary-1: already running 1.1.0"), "{out}");
    assert_eq!(fleet.upload_log.lock().unwrap().len(), 6);
}

#[test]
fn failing_canary_halts_before_the_next_wave() {
    let fleet = Fleet::start(8, 6);
    let bad = make_bundle(fleet.dir.path(), &fleet.key, "1.2.0", false);
    let mut args = vec!["rollout", bad.to_str().unwrap()];
    args.extend(FAST);
    let (code, out, err) = fleet.run(&args);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains(
            "HALTED in wave 1/3: canary-1: rolled back to 1.0.0 by the appliance: not healthy"
        ),
        "{out}"
    );
    assert!(out.contains("5 appliance(s) not touched"), "{out}");
    assert!(!out.contains("wave 2/3"), "{out}");
    // The canary is back on its old version and serving; nobody else was touched.
    let canary = fleet.get("canary-1");
    let st = canary.status();
    assert_eq!(st.running_version.unwrap().to_string(), "1.0.0");
    assert_eq!(st.booted, SlotName::A);
    assert_eq!(st.failed_versions[0].version.to_string(), "1.2.0");
    assert!(canary.healthy());
    for a in fleet.appliances.iter().skip(1) {
        assert_untouched(a);
    }
    // A new rollout is refused while this one is halted.
    let (code, _, err) = fleet.run(&args);
    assert_eq!(code, 3);
    assert!(err.contains("is halted"), "{err}");
    // Resume without the retry override: the canary refuses the failed version.
    let (code, out, _) = fleet.run(&["resume"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("canary-1: FAILED: refused the bundle"),
        "{out}"
    );
    assert!(out.contains("failed its trial boot here before"), "{out}");
    // Abort ends it; the fleet stays on 1.0.0.
    let (code, out, _) = fleet.run(&["abort"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("aborted in wave 1/3; on the new version: none"),
        "{out}"
    );
    for a in fleet.appliances.iter().skip(1) {
        assert_untouched(a);
    }
    let (code, _, err) = fleet.run(&["resume"]);
    assert_eq!(code, 3);
    assert!(err.contains("aborted"), "{err}");
}

#[test]
fn unhealthy_site_in_wave_two_halts_then_resume_completes() {
    let fleet = Fleet::start(9, 5);
    fleet.get("site-3").broken.store(true, Ordering::SeqCst);
    let good = make_bundle(fleet.dir.path(), &fleet.key, "1.3.0", true);
    let mut args = vec!["rollout", good.to_str().unwrap()];
    args.extend(FAST);
    let (code, out, err) = fleet.run(&args);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("HALTED in wave 2/3: site-3: rolled back to 1.0.0"),
        "{out}"
    );
    assert!(!out.contains("wave 3/3"), "{out}");
    assert_committed(fleet.get("canary-1"), "1.3.0");
    assert_committed(fleet.get("site-2"), "1.3.0");
    assert_untouched(fleet.get("site-4"));
    assert_untouched(fleet.get("site-5"));
    // The site is fixed; the operator resumes and retries the failed version there.
    fleet.get("site-3").broken.store(false, Ordering::SeqCst);
    let (code, out, err) = fleet.run(&["resume", "--retry-failed"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("site-2: already done"), "{out}");
    assert!(
        out.contains("rollout complete: 5/5 appliances on 1.3.0"),
        "{out}"
    );
    for a in &fleet.appliances {
        assert_committed(a, "1.3.0");
    }
}

#[test]
fn rollout_over_https() {
    let fleet = Fleet::start_with(10, 5, true);
    let (code, out, err) = fleet.run(&["status"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(out.matches("healthy").count(), 5, "{out}");
    let good = make_bundle(fleet.dir.path(), &fleet.key, "1.5.0", true);
    let mut args = vec!["rollout", good.to_str().unwrap()];
    args.extend(FAST);
    let (code, out, err) = fleet.run(&args);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("rollout complete: 5/5 appliances on 1.5.0"),
        "{out}"
    );
    for a in &fleet.appliances {
        assert_committed(a, "1.5.0");
    }
    // An appliance whose certificate is not the one the inventory trusts
    // is not talked to.
    let inv = std::fs::read_to_string(&fleet.inventory).unwrap();
    let other = fleet.get("site-2").dir.join("mgmt.crt");
    let wrong = inv.replacen(
        &format!(
            "ca_file = \"{}\"",
            fleet.get("canary-1").dir.join("mgmt.crt").display()
        ),
        &format!("ca_file = \"{}\"", other.display()),
        1,
    );
    assert_ne!(wrong, inv);
    std::fs::write(&fleet.inventory, wrong).unwrap();
    let (code, out, _) = fleet.run(&["status"]);
    assert_eq!(code, 1, "{out}");
    let row = out.lines().find(|l| l.starts_with("canary-1")).unwrap();
    assert!(
        row.contains("unreachable") && row.contains("no answer"),
        "{row}"
    );
}
