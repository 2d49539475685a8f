//! Calls through holdline and the Kamailio cloud: phone to phone, and an
//! inbound call after a holdline restart (bindings reloaded from the store).
//! No timing asserts: every wait is a generous bound.

use std::time::Duration;

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippResult};

const PHONE_PORT: u16 = 5062;

fn register(block: &Block, hl: &Holdline, phone: u8, users: &[User]) -> SippResult {
    Sipp::new(Scenario::Register)
        .name(&format!("register-{phone}"))
        .local(block.phone(phone), PHONE_PORT)
        .remote(hl.lan())
        .users(users)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp register runs")
}

#[test]
fn a_call_between_two_phones_through_holdline_is_answered_and_hung_up() {
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let _cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let r0 = register(&block, &hl, 0, &users[..1]);
    assert!(r0.all_ok(), "{r0}");
    let r1 = register(&block, &hl, 1, &users[1..]);
    assert!(r1.all_ok(), "{r1}");

    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(1)
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("callee starts");
    let uac = Sipp::new(Scenario::Uac)
        .name("caller")
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .var("HOLD_MS", "500")
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .run()
        .expect("caller runs");
    assert!(uac.all_ok(), "{uac}");
    assert_eq!(uac.successful, 1, "{uac}");
    // The cloud's digest challenge reached the phone untouched, the answer went through.
    let statuses: Vec<u16> = uac.messages.iter().filter_map(|m| m.status()).collect();
    assert!(statuses.contains(&407), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    let callee = uas.wait().expect("callee finishes");
    assert!(callee.all_ok(), "{callee}");
    assert_eq!(callee.successful, 1, "{callee}");
    // holdline stayed on the dialog: its Record-Route reached the callee.
    let invite = callee.received("INVITE");
    let rr = invite
        .first()
        .and_then(|m| m.header("Record-Route"))
        .unwrap_or_default()
        .to_string();
    assert!(rr.contains(&hl.lan().to_string()), "Record-Route {rr:?}");

    // Both legs of the call were tracked to the end (out from 1000, in to 1001).
    let calls = hl
        .wait_console(&["show", "calls"], Duration::from_secs(10), |j| {
            j.matches("\"state\":\"terminated\"").count() >= 2
        })
        .expect("console");
    assert!(calls.contains("\"dir\":\"out\""), "{calls}");
    assert!(calls.contains("\"dir\":\"in\""), "{calls}");
    assert_eq!(calls.matches("\"ended\":\"hangup\"").count(), 2, "{calls}");
    assert!(
        calls.contains("\"from\":\"sip:1000@cloud.test\""),
        "{calls}"
    );
}

#[test]
fn an_inbound_call_reaches_the_phone_after_a_holdline_restart() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let mut opts = KamailioOpts::with_users(users.clone());
    opts.trusted = vec![block.trunk().into()];
    let _cloud = Kamailio::start(block.cloud(), opts).expect("cloud");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let r = register(&block, &hl, 0, &users);
    assert!(r.all_ok(), "{r}");

    // Restart: the binding (and the phone's transport address) comes back from the store.
    hl.start_again().expect("holdline restarts");

    let uas = Sipp::new(Scenario::Uas)
        .name("phone")
        .local(block.phone(0), PHONE_PORT)
        .calls(1)
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("phone answers");
    let trunk = User::new("pstn", "");
    let uac = Sipp::new(Scenario::Uac)
        .name("trunk")
        .local(block.trunk(), 5060)
        .remote(_cloud.addr().into())
        .dial(&[(trunk, users[0].name.clone())])
        .var("HOLD_MS", "300")
        .timeout(Duration::from_secs(120))
        .run()
        .expect("trunk calls");
    assert!(uac.all_ok(), "{uac}");
    let phone = uas.wait().expect("phone finishes");
    assert!(phone.all_ok(), "{phone}");
    assert_eq!(phone.successful, 1, "{phone}");
    // It came through holdline (its Via), not straight from the cloud.
    let invite = phone.received("INVITE");
    let via = invite
        .first()
        .and_then(|m| m.header("Via"))
        .unwrap_or_default()
        .to_string();
    assert!(via.contains(&hl.lan().to_string()), "top Via {via:?}");
    let calls = hl.console_json(&["show", "calls"]).expect("console");
    assert!(calls.contains("\"dir\":\"in\""), "{calls}");
}

#[test]
fn a_phone_on_tcp_registers_and_calls_through_holdline() {
    use holdline_tests::sipp::Transport;
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let reg = Sipp::new(Scenario::Register)
        .name("register-tcp")
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .transport(Transport::Tcp)
        .users(&users[..1])
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(reg.all_ok(), "{reg}");
    let r1 = register(&block, &hl, 1, &users[1..]);
    assert!(r1.all_ok(), "{r1}");
    let regs = hl
        .console_json(&["show", "registrations", "sip:1000@cloud.test"])
        .expect("console");
    assert!(
        regs.contains(&format!("\"source\":\"tcp:{}:", block.phone(0))),
        "{regs}"
    );
    let table = cloud.location().expect("ul.dump");
    assert!(
        table.iter().all(|c| c
            .path
            .as_deref()
            .unwrap_or_default()
            .contains(&hl.wan().to_string())),
        "{table:#?}"
    );

    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(1)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("callee starts");
    let uac = Sipp::new(Scenario::Uac)
        .name("caller-tcp")
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .transport(Transport::Tcp)
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .var("HOLD_MS", "300")
        .timeout(Duration::from_secs(120))
        .run()
        .expect("caller runs");
    assert!(uac.all_ok(), "{uac}");
    let callee = uas.wait().expect("callee finishes");
    assert!(callee.all_ok(), "{callee}");
}

#[test]
fn the_uplink_probe_sees_the_cloud_up_with_a_round_trip_time() {
    let block = Block::allocate();
    let _cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(Vec::new())).expect("cloud");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    // The monitor presumes the cloud up at start; wait for real answers.
    let cloud = hl
        .wait_console(&["show", "cloud"], Duration::from_secs(20), |j| {
            j.contains("\"last_status\":200")
        })
        .expect("console");
    assert!(cloud.contains("\"state\":\"up\""), "{cloud}");
    assert!(cloud.contains("\"last_status\":200"), "{cloud}");
    assert!(!cloud.contains("\"rtt_ms\":null"), "{cloud}");
    assert!(!cloud.contains("\"probes_answered\":0,"), "{cloud}");

    // A technician forces the uplink down, then back to automatic.
    let forced = hl
        .console_json(&["cloud", "force-down"])
        .expect("force-down");
    assert!(forced.contains("\"state\":\"down\""), "{forced}");
    assert!(forced.contains("\"mode\":\"forceddown\""), "{forced}");
    let auto = hl.console_json(&["cloud", "auto"]).expect("auto");
    assert!(auto.contains("\"mode\":\"auto\""), "{auto}");
    // Back from Down goes through the hold-down (Recovering), then Up.
    let back = hl
        .wait_console(&["show", "cloud"], Duration::from_secs(60), |j| {
            j.contains("\"state\":\"up\"")
        })
        .expect("console");
    assert!(back.contains("\"state\":\"up\""), "{back}");
    let log = hl.console_json(&["show", "log"]).expect("log");
    assert!(log.contains("uplink"), "{log}");
}
