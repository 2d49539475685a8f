//! Fail-fast with the real binary and peers (issue 4.2, "no failed new
//! call"): the Kamailio cloud hangs (SIGSTOP: silent, sockets open) and
//! holdline has not yet found it down (probes every 10 s here). A site phone
//! calls another site phone; the cloud gives no provisional within the
//! fail-fast interval (default 1 s), so holdline CANCELs the INVITE upstream
//! and routes the call to the callee itself. The caller sees a normal call
//! (no error, nothing from the cloud, even once the cloud wakes up mid-call
//! and answers the abandoned INVITE late). Also: with no local route the
//! phone is told 503 + Retry-After once the cloud is found down; and a call
//! placed just as the cloud dies (its INVITE the first thing to meet the
//! dead cloud) completes locally, BYE included.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::time::Duration;

use common::{
    call_refused_503, cloud_state, json_u64, refusal_with_retry_after, site_callee, site_caller,
    start_default_site, start_site, statuses, via_count, wait_received, Setup,
};
use holdline_tests::holdline::Holdline;
use holdline_tests::kamailio::{KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::Scenario;

/// Holdline probing the cloud only every 10 s: a cloud that hangs or dies
/// is not found by probing during the call set-up, so the call itself meets
/// the broken cloud (what fail-fast is for).
fn slow_probes() -> Setup {
    Setup {
        probe_interval_ms: Some(10_000),
        ..Setup::default()
    }
}

/// Asserts holdline has not found the `broken` (hung, dead) cloud yet (it
/// still says `up` or `suspect`): otherwise the test would exercise the
/// ordinary down path instead, and `need` says what it needs.
fn assert_not_found_yet(hl: &Holdline, broken: &str, need: &str) {
    let state = cloud_state(hl);
    assert!(
        state == "up" || state == "suspect",
        "holdline already saw the {broken} cloud {state}: {need}"
    );
}

#[test]
fn an_invite_the_hung_cloud_does_not_answer_within_the_fail_fast_interval_is_cancelled_and_completes_locally(
) {
    let block = Block::allocate();
    let users = User::numbered(5100, 2);
    let mut copts = KamailioOpts::with_users(users.clone());
    // Verbose: the cloud's log shows every request it processed (the CANCEL).
    copts.debug = 3;
    let (mut cloud, hl) = start_site(&block, copts, &slow_probes(), &users);

    let callee = site_callee(&block, Scenario::Uas)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("callee starts");

    cloud.freeze().expect("the cloud hangs");
    assert_not_found_yet(&hl, "hung", "this test needs it undetected");
    // Long enough to wake the cloud up mid-call.
    let caller = site_caller(&block, &hl, &users, Scenario::Uac)
        .var("HOLD_MS", "5000")
        .timeout(Duration::from_secs(90))
        .spawn()
        .expect("caller starts");
    wait_received(&callee, "ACK", Duration::from_secs(30));
    // The cloud wakes up and answers the INVITE it was sent (late).
    cloud.thaw().expect("the cloud wakes up");

    let caller = caller.wait().expect("caller finishes");
    let callee = callee.wait().expect("callee finishes");
    assert!(
        caller.all_ok()
            && caller.successful == 1
            && common::got_answer(&caller.messages, "BYE", 200),
        "the call failed: {caller}\n{}",
        hl.log()
    );
    assert!(callee.all_ok() && callee.successful == 1, "{callee}");
    // Nothing from the cloud reached the caller: no challenge, no error.
    let seen = statuses(&caller.messages);
    assert!(
        seen.iter().all(|s| matches!(s, 100 | 180 | 200)),
        "the caller saw {seen:?}"
    );
    // The callee got the INVITE straight from holdline.
    let invite = callee.received("INVITE");
    let invite = invite.first().expect("an INVITE");
    assert_eq!(via_count(invite), 2, "{invite:?}");
    let call_id = invite.header("Call-ID").unwrap_or_default().to_string();

    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "fail_fast"), Some(1), "{resync}");
    assert!(
        hl.log().contains("fail-fast") || {
            let log = hl.console_json(&["show", "log"]).unwrap_or_default();
            log.contains("fail-fast")
        },
        "{}",
        hl.log()
    );
    // The cloud got the INVITE and holdline's CANCEL for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let cancel = format!("CANCEL {call_id}");
    while !cloud.log().contains(&cancel) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = cloud.log();
    assert!(
        log.contains(&format!("INVITE {call_id}")),
        "the cloud never saw the INVITE"
    );
    assert!(
        log.contains(&cancel),
        "the cloud never got a CANCEL for {call_id}"
    );
    let _ = cloud.stop();
}

#[test]
fn an_invite_with_no_local_route_to_a_hung_cloud_gets_503_with_retry_after_once_the_cloud_is_found_down(
) {
    let block = Block::allocate();
    let users = User::numbered(5200, 1);
    // The product's probe interval: the hung cloud is found down soon.
    let (mut cloud, hl) = start_default_site(&block, &users);

    cloud.freeze().expect("the cloud hangs");
    // Nobody on site has this number and there is no backup route: the call
    // stays with the cloud past the fail-fast interval, and once holdline
    // finds the cloud down the phone is told to retry later.
    let uac = call_refused_503(&block, &hl, &users[0], "5551234");
    assert!(
        uac.all_ok() && uac.successful == 1,
        "no 503 with Retry-After for a call with no local route: {uac}\n{}",
        hl.log()
    );
    let refusal = refusal_with_retry_after(&uac.messages);
    // Answered by holdline (the frozen cloud answered nothing).
    assert_eq!(via_count(refusal), 1, "{refusal:?}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    // Not cancelled: it had nowhere else to go.
    assert_eq!(json_u64(&resync, "fail_fast"), Some(0), "{resync}");
    cloud.thaw().expect("thaw");
    let _ = cloud.stop();
}

#[test]
fn a_call_placed_just_as_the_cloud_dies_completes_locally_and_its_bye_reaches_the_callee() {
    let block = Block::allocate();
    let users = User::numbered(5500, 2);
    // Probes every 10 s: the INVITE is the first thing sent to the dead cloud.
    let (mut cloud, hl) = start_site(
        &block,
        KamailioOpts::with_users(users.clone()),
        &slow_probes(),
        &users,
    );
    let callee = site_callee(&block, Scenario::Uas)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("callee starts");

    cloud.crash().expect("kill the cloud");
    assert_not_found_yet(&hl, "dead", "this test needs the INVITE to find out");
    let caller = site_caller(&block, &hl, &users, Scenario::Uac)
        .var("HOLD_MS", "1000")
        .timeout(Duration::from_secs(90))
        .run()
        .expect("caller runs");
    let callee = callee.stop(Duration::from_secs(10)).expect("callee");
    assert!(
        caller.all_ok()
            && caller.successful == 1
            && common::got_answer(&caller.messages, "BYE", 200),
        "the call placed as the cloud died did not end normally: {caller}\n{}",
        hl.log()
    );
    assert!(
        callee.all_ok() && callee.successful == 1 && !callee.received("BYE").is_empty(),
        "the callee never got the BYE: {callee}"
    );
    let _ = cloud.stop();
}
