//! Where new calls go while the cloud is gone (issue 4.2), with the real
//! binary and peers: a number not registered on site goes to the
//! `[survival] backup_route` (a SIPp UAS playing the PSTN gateway, on a
//! loopback address outside the site's subnet) and the call completes; with
//! no backup route it is refused 503 with Retry-After; an emergency number
//! (`[survival] emergency`) goes to the cloud while it is up and to the
//! backup route while it is down; the gateway's answers are not taken for
//! the cloud's (the uplink stays down). The same backup route is used when
//! the cloud hangs and fail-fast gives up on it before it is found down.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{
    call_refused_503, got_answer, json_u64, kill_cloud_and_wait_down, refusal_with_retry_after,
    start_default_site, start_site, statuses, Setup,
};
use holdline_tests::holdline::Holdline;
use holdline_tests::kamailio::{KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippProcess, SippResult};

/// A number nobody on site has (an outside line).
const OFF_SITE: &str = "5551234";

/// A UAS answering one call at `ip:5060` (the backup gateway, or the cloud's PSAP).
fn answer_one(name: &str, ip: Ipv4Addr) -> SippProcess {
    Sipp::new(Scenario::Uas)
        .name(name)
        .local(ip, 5060)
        .calls(1)
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("uas starts")
}

/// Phone `i` (user `u`) calls `number` through holdline and hangs up.
fn call(block: &Block, hl: &Holdline, u: &User, number: &str) -> SippResult {
    Sipp::new(Scenario::Uac)
        .name(&format!("call-{number}"))
        .local(block.phone(0), 5064)
        .remote(hl.lan())
        .dial(&[(u.clone(), number.to_string())])
        .var("HOLD_MS", "500")
        .trace_messages(true)
        .timeout(Duration::from_secs(90))
        .run()
        .expect("caller runs")
}

/// The top Via of the first INVITE a UAS received.
fn top_via_of_invite(r: &SippResult) -> String {
    r.received("INVITE")
        .first()
        .and_then(|m| m.header("Via"))
        .unwrap_or_default()
        .to_string()
}

fn backup_config(backup: SocketAddr) -> String {
    format!("backup_route = \"udp:{backup}\"\nemergency = [\"911\", \"112\"]")
}

/// The backup route's loopback block (outside the site's subnet, as a real
/// PSTN gateway is) and the gateway's address in it. The block is returned
/// so that it stays allocated for the whole test.
fn backup_gateway() -> (Block, SocketAddr) {
    let gw_block = Block::allocate();
    let backup = SocketAddr::new(gw_block.backup().into(), 5060);
    (gw_block, backup)
}

/// Setup with the backup route at `backup` (and 911/112 as emergency numbers).
fn with_backup_route(backup: SocketAddr) -> Setup {
    Setup {
        survival: Some(backup_config(backup)),
        ..Setup::default()
    }
}

#[test]
fn with_the_cloud_down_a_call_to_an_off_site_number_goes_to_the_backup_route_and_completes() {
    let block = Block::allocate();
    // The gateway lives outside the site's subnet (another block).
    let (gw_block, backup) = backup_gateway();
    let users = User::numbered(4000, 1);
    let (mut cloud, hl) = start_site(
        &block,
        KamailioOpts::with_users(users.clone()),
        &with_backup_route(backup),
        &users,
    );
    let gateway = answer_one("backup-gw", gw_block.backup());

    kill_cloud_and_wait_down(&mut cloud, &hl);

    let uac = call(&block, &hl, &users[0], OFF_SITE);
    let gw = gateway
        .stop(Duration::from_secs(10))
        .expect("gateway finishes");
    assert!(
        uac.all_ok() && uac.successful == 1 && got_answer(&uac.messages, "BYE", 200),
        "the call to {OFF_SITE} did not complete: {uac}\ngateway: {gw}\n{}\n{}",
        hl.console_json(&["show", "resync"]).unwrap_or_default(),
        hl.log()
    );
    assert!(
        gw.all_ok() && gw.successful == 1,
        "the backup gateway did not get (and end) the call: {gw}"
    );
    // It came from holdline's WAN side, with the number dialled.
    let via = top_via_of_invite(&gw);
    assert!(via.contains(&hl.wan().to_string()), "top Via {via:?}");
    let invite = gw.received("INVITE");
    let ruri = invite.first().map(|m| m.start_line()).unwrap_or_default();
    assert!(ruri.contains(OFF_SITE), "{ruri}");
    // The caller never saw the cloud (no challenge: nobody asked it).
    assert!(!statuses(&uac.messages).contains(&407), "{uac}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "backup_calls"), Some(1), "{resync}");
    assert_eq!(json_u64(&resync, "rejected_calls"), Some(0), "{resync}");
    // The gateway's answers are no sign of the (dead) cloud.
    assert_cloud_stayed_down(&hl);
}

/// The cloud, dead since it was found down, never looked back (no
/// `down -> recovering` from answers that came from someone else).
fn assert_cloud_stayed_down(hl: &Holdline) {
    let log = hl.log();
    assert!(
        !log.contains("down -> recovering"),
        "answers from the backup route taken for the cloud's:\n{log}"
    );
    assert_eq!(common::cloud_state(hl), "down", "{log}");
}

#[test]
fn with_the_cloud_down_and_no_backup_route_a_call_to_an_off_site_number_gets_503_with_retry_after()
{
    let block = Block::allocate();
    let users = User::numbered(4100, 1);
    let (mut cloud, hl) = start_default_site(&block, &users);

    kill_cloud_and_wait_down(&mut cloud, &hl);

    let uac = call_refused_503(&block, &hl, &users[0], OFF_SITE);
    assert!(
        uac.all_ok() && uac.successful == 1,
        "no 503 with Retry-After: {uac}\n{:#?}",
        uac.messages
    );
    let refusal = refusal_with_retry_after(&uac.messages);
    // holdline answered it (one Via: the phone's; no trace of the cloud).
    assert_eq!(common::via_count(refusal), 1, "{refusal:?}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "rejected_calls"), Some(1), "{resync}");
    assert_eq!(json_u64(&resync, "backup_calls"), Some(0), "{resync}");
}

#[test]
fn an_emergency_call_goes_to_the_cloud_while_it_is_up_and_to_the_backup_route_while_it_is_down() {
    let block = Block::allocate();
    let (gw_block, backup) = backup_gateway();
    let users = User::numbered(4200, 1);
    let psap_user = User::new("911", "pw911");
    let mut all = users.clone();
    all.push(psap_user.clone());
    let (mut cloud, hl) = start_site(
        &block,
        KamailioOpts::with_users(all),
        &with_backup_route(backup),
        &users,
    );
    // The cloud's emergency service: 911 registered straight to the cloud.
    let psap_ip = gw_block.phone(0);
    let r = Sipp::new(Scenario::Register)
        .name("register-psap")
        .local(psap_ip, 5060)
        .remote(cloud.addr().into())
        .users(std::slice::from_ref(&psap_user))
        .timeout(Duration::from_secs(60))
        .run()
        .expect("psap registers");
    assert!(r.all_ok(), "{r}");
    let psap = answer_one("psap", psap_ip);
    let gateway = answer_one("backup-gw", gw_block.backup());

    // Cloud up: the emergency call goes to the cloud (which challenges the
    // caller and reaches its PSAP), not to the backup route.
    let up_call = call(&block, &hl, &users[0], "911");
    assert!(
        up_call.all_ok() && up_call.successful == 1 && got_answer(&up_call.messages, "BYE", 200),
        "emergency call with the cloud up: {up_call}\n{}",
        hl.log()
    );
    let psap = psap.stop(Duration::from_secs(10)).expect("psap finishes");
    assert!(
        psap.all_ok() && psap.successful == 1,
        "the cloud's PSAP did not get the call: {psap}"
    );
    assert!(statuses(&up_call.messages).contains(&407), "{up_call}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "backup_calls"), Some(0), "{resync}");

    // Cloud down: the same number goes to the backup route.
    kill_cloud_and_wait_down(&mut cloud, &hl);
    let down_call = call(&block, &hl, &users[0], "911");
    let gw = gateway
        .stop(Duration::from_secs(10))
        .expect("gateway finishes");
    assert!(
        down_call.all_ok()
            && down_call.successful == 1
            && got_answer(&down_call.messages, "BYE", 200),
        "emergency call with the cloud down: {down_call}\ngateway: {gw}\n{}",
        hl.log()
    );
    assert!(
        gw.all_ok() && gw.successful == 1,
        "the backup gateway did not get the emergency call: {gw}"
    );
    let invite = gw.received("INVITE");
    let ruri = invite.first().map(|m| m.start_line()).unwrap_or_default();
    assert!(ruri.starts_with("INVITE sip:911@"), "{ruri}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "backup_calls"), Some(1), "{resync}");
    assert_cloud_stayed_down(&hl);
}

#[test]
fn with_the_cloud_hung_but_not_yet_found_down_a_call_to_an_off_site_number_goes_to_the_backup_route_after_fail_fast(
) {
    let block = Block::allocate();
    let (gw_block, backup) = backup_gateway();
    let users = User::numbered(4300, 1);
    // Probes every 10 s: the hang is not found by probing during the call set-up.
    let (mut cloud, hl) = start_site(
        &block,
        KamailioOpts::with_users(users.clone()),
        &Setup {
            probe_interval_ms: Some(10_000),
            ..with_backup_route(backup)
        },
        &users,
    );
    let gateway = answer_one("backup-gw", gw_block.backup());

    cloud.freeze().expect("the cloud hangs");
    let uac = call(&block, &hl, &users[0], OFF_SITE);
    let gw = gateway
        .stop(Duration::from_secs(10))
        .expect("gateway finishes");
    cloud.thaw().expect("thaw");
    assert!(
        uac.all_ok() && uac.successful == 1 && got_answer(&uac.messages, "BYE", 200),
        "the call to {OFF_SITE} did not complete: {uac}\ngateway: {gw}\n{}",
        hl.log()
    );
    assert!(gw.all_ok() && gw.successful == 1, "{gw}");
    let resync = hl.console_json(&["show", "resync"]).expect("show resync");
    assert_eq!(json_u64(&resync, "fail_fast"), Some(1), "{resync}");
    assert_eq!(json_u64(&resync, "backup_calls"), Some(1), "{resync}");
    let _ = cloud.stop();
}
