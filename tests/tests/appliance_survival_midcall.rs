//! A call between two site phones set up through the Kamailio cloud, and the
//! cloud killed mid-call (issue 4.2, in-dialog requests): holdline knows both
//! legs, so the caller's re-INVITE, INFO, UPDATE and then its BYE still
//! reach the other phone (straight from holdline, without the dead cloud)
//! and get their 200s; no call is left hanging; the same for a BYE from the
//! callee. And a call set up during the outage (the cloud never saw it)
//! keeps running after the cloud is back and up, its in-dialog requests
//! still going phone to phone (issue 4.5).
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::time::Duration;

use common::{
    json_u64, kill_cloud_and_wait_down, scenario, site_callee, site_caller, start_default_site,
    start_site, trusting_cloud, via_count, wait_cloud, wait_received, Setup,
};
use holdline_tests::holdline::Holdline;
use holdline_tests::kamailio::{Kamailio, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Sipp, SippProcess};

/// Starts `callee`, then `caller` (its call goes through the cloud), waits
/// until the call is up (the callee got the ACK), then kills the cloud and
/// waits until holdline has found it down: the start of every "the cloud
/// dies mid-call" test here. Returns the running (callee, caller).
fn call_up_then_the_cloud_dies(
    cloud: &mut Kamailio,
    hl: &Holdline,
    callee: Sipp,
    caller: Sipp,
) -> (SippProcess, SippProcess) {
    let callee = callee.spawn().expect("callee starts");
    let caller = caller.spawn().expect("caller starts");
    wait_received(&callee, "ACK", Duration::from_secs(30));
    kill_cloud_and_wait_down(cloud, hl);
    (callee, caller)
}

#[test]
fn re_invite_and_bye_of_a_call_set_up_through_the_cloud_reach_the_other_phone_after_the_cloud_dies()
{
    let block = Block::allocate();
    let users = User::numbered(5000, 2);
    let (mut cloud, hl) = start_default_site(&block, &users);

    let callee = site_callee(&block, scenario("uas_reinvite.xml"))
        .var("BYE_TIMEOUT_MS", "60000")
        .timeout(Duration::from_secs(120));
    // Talks 8 s before the re-INVITE: the cloud is killed (and found down)
    // meanwhile; a re-INVITE sent before holdline sees it down is
    // retransmitted by the phone until it gets through.
    let caller = site_caller(&block, &hl, &users, scenario("uac_reinvite.xml"))
        .var("PRE_MS", "8000")
        .var("HOLD_MS", "1000")
        .timeout(Duration::from_secs(120));
    let (callee, caller) = call_up_then_the_cloud_dies(&mut cloud, &hl, callee, caller);

    let caller = caller.wait().expect("caller finishes");
    let callee = callee.wait().expect("callee finishes");
    assert!(
        caller.all_ok()
            && caller.successful == 1
            && common::got_answer(&caller.messages, "INVITE", 200)
            && caller
                .messages
                .iter()
                .any(|m| m.status() == Some(200) && m.header("CSeq") == Some("10 INVITE"))
            && common::got_answer(&caller.messages, "INFO", 200)
            && common::got_answer(&caller.messages, "UPDATE", 200)
            && common::got_answer(&caller.messages, "BYE", 200),
        "the caller's re-INVITE, INFO, UPDATE or BYE failed after the cloud died: {caller}\n{}\n{}",
        hl.console_json(&["show", "resync"]).unwrap_or_default(),
        hl.log()
    );
    assert!(
        callee.all_ok() && callee.successful == 1,
        "the callee did not get the re-INVITE and the BYE: {callee}"
    );

    // The initial INVITE came through the cloud (its Via among them) ...
    let invites = callee.received("INVITE");
    let initial = invites
        .iter()
        .find(|m| m.header("CSeq").is_some_and(|c| !c.starts_with("10 ")))
        .expect("the initial INVITE");
    let cloud_ip = block.cloud().to_string();
    assert!(
        initial.text.contains(&format!("SIP/2.0/UDP {cloud_ip}")),
        "the call was not set up through the cloud: {initial:?}"
    );
    // ... the re-INVITE and the BYE straight from holdline (its Via and the caller's).
    let reinvite = invites
        .iter()
        .find(|m| m.header("CSeq").is_some_and(|c| c.starts_with("10 ")))
        .expect("the re-INVITE");
    let mut in_dialog = vec![*reinvite];
    for method in ["INFO", "UPDATE", "BYE"] {
        let got = callee.received(method);
        in_dialog.push(
            got.first()
                .copied()
                .unwrap_or_else(|| panic!("no {method}: {callee}")),
        );
    }
    for m in in_dialog {
        assert_eq!(via_count(m), 2, "not sent straight by holdline: {m:?}");
        let top = m.header("Via").unwrap_or_default();
        assert!(top.contains(&hl.lan().to_string()), "top Via {top:?}");
        assert!(
            !m.text.contains(&format!("SIP/2.0/UDP {cloud_ip}")),
            "{m:?}"
        );
    }
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert!(
        json_u64(&resync, "direct_in_dialog").is_some_and(|n| n >= 4),
        "{resync}"
    );
    // holdline saw the call end.
    let calls = hl
        .wait_console(&["show", "calls"], Duration::from_secs(10), |j| {
            j.matches("\"ended\":\"hangup\"").count() >= 2
        })
        .expect("show calls");
    assert!(
        calls.matches("\"ended\":\"hangup\"").count() >= 2,
        "{calls}"
    );
}

#[test]
fn a_call_set_up_during_the_outage_keeps_running_after_the_cloud_is_back_and_ends_normally() {
    let block = Block::allocate();
    let users = User::numbered(5300, 2);
    let (mut cloud, hl) = start_site(
        &block,
        trusting_cloud(&block, &users, &[]),
        &Setup {
            trusted: true,
            ..Setup::default()
        },
        &users,
    );
    kill_cloud_and_wait_down(&mut cloud, &hl);

    let callee = site_callee(&block, scenario("uas_reinvite.xml"))
        .var("BYE_TIMEOUT_MS", "90000")
        .timeout(Duration::from_secs(150))
        .spawn()
        .expect("callee starts");
    // Talks 30 s before the re-INVITE: long enough for the cloud to come
    // back and be up (hold-down) first.
    let caller = site_caller(&block, &hl, &users, scenario("uac_reinvite.xml"))
        .var("PRE_MS", "30000")
        .var("HOLD_MS", "1000")
        .timeout(Duration::from_secs(150))
        .spawn()
        .expect("caller starts");
    wait_received(&callee, "ACK", Duration::from_secs(30));

    cloud.start_again().expect("cloud restarts");
    wait_cloud(&hl, "up", Duration::from_secs(60));
    let reinvite_sent = common::messages_so_far(&caller)
        .iter()
        .any(|m| m.header("CSeq") == Some("10 INVITE"));
    assert!(
        !reinvite_sent,
        "the cloud was not up before the re-INVITE: this test needs more talk time"
    );

    let caller = caller.wait().expect("caller finishes");
    let callee = callee.wait().expect("callee finishes");
    assert!(
        caller.all_ok()
            && caller.successful == 1
            && caller
                .messages
                .iter()
                .any(|m| m.status() == Some(200) && m.header("CSeq") == Some("10 INVITE"))
            && common::got_answer(&caller.messages, "INFO", 200)
            && common::got_answer(&caller.messages, "UPDATE", 200)
            && common::got_answer(&caller.messages, "BYE", 200),
        "the call set up during the outage did not end normally: {caller}\n{}",
        hl.log()
    );
    assert!(
        callee.all_ok() && callee.successful == 1,
        "the callee did not get the re-INVITE and the BYE: {callee}"
    );
    // The whole call stayed on the site: the cloud (which never saw it) is
    // in none of its requests.
    let cloud_ip = block.cloud().to_string();
    for m in callee
        .messages
        .iter()
        .filter(|m| m.direction == holdline_tests::sipp::Direction::Received)
        .filter(|m| m.method().is_some())
    {
        assert_eq!(via_count(m), 2, "{m:?}");
        assert!(
            !m.text.contains(&format!("SIP/2.0/UDP {cloud_ip}")),
            "{m:?}"
        );
    }
    let _ = cloud.stop();
}

#[test]
fn the_callees_bye_of_a_call_set_up_through_the_cloud_reaches_the_caller_after_the_cloud_dies() {
    let block = Block::allocate();
    let users = User::numbered(5400, 2);
    let (mut cloud, hl) = start_default_site(&block, &users);

    // The callee hangs up after 8 s of talk; the cloud dies meanwhile.
    let callee = site_callee(&block, scenario("uas_hangup.xml"))
        .var("TALK_MS", "8000")
        .timeout(Duration::from_secs(120));
    let caller = site_caller(&block, &hl, &users, scenario("uac_wait_bye.xml"))
        .var("BYE_TIMEOUT_MS", "60000")
        .timeout(Duration::from_secs(120));
    let (callee, caller) = call_up_then_the_cloud_dies(&mut cloud, &hl, callee, caller);

    let callee = callee.wait().expect("callee finishes");
    let caller = caller.wait().expect("caller finishes");
    assert!(
        callee.all_ok()
            && callee.successful == 1
            && common::got_answer(&callee.messages, "BYE", 200),
        "the callee's BYE was not answered after the cloud died: {callee}\n{}",
        hl.log()
    );
    assert!(
        caller.all_ok() && caller.successful == 1,
        "the caller did not get the BYE: {caller}"
    );
    let bye = caller.received("BYE");
    let bye = bye.first().expect("a BYE");
    assert_eq!(via_count(bye), 2, "not sent straight by holdline: {bye:?}");
    assert!(
        !bye.text.contains(&format!("SIP/2.0/UDP {}", block.cloud())),
        "{bye:?}"
    );
}
