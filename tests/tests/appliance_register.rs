//! Registration through holdline against the real Kamailio cloud: Path,
//! digest pass-through, the binding cache, and a rejected REGISTER.
//! No timing asserts: every wait is a generous bound.

use std::time::Duration;

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

const PHONE_PORT: u16 = 5062;

#[test]
fn a_hundred_phones_register_through_holdline_with_its_path() {
    let block = Block::allocate();
    let users = User::numbered(1000, 100);
    let cloud = Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone()))
        .expect("Kamailio cloud starts");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");

    // 100 phones, 25 per source address.
    let runs: Vec<_> = (0..4u8)
        .map(|i| {
            let chunk = &users[usize::from(i) * 25..usize::from(i + 1) * 25];
            Sipp::new(Scenario::Register)
                .name(&format!("register-{i}"))
                .local(block.phone(i), PHONE_PORT)
                .remote(hl.lan())
                .users(chunk)
                .rate(25.0)
                .timeout(Duration::from_secs(120))
                .spawn()
                .expect("sipp starts")
        })
        .collect();
    for r in runs {
        let res = r.wait().expect("sipp finishes");
        assert!(res.all_ok(), "{res}");
        assert_eq!(res.successful, 25, "{res}");
    }

    let table = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 100)
        .expect("ul.dump");
    assert_eq!(table.len(), 100, "{table:#?}");
    let wan = hl.wan().to_string();
    for u in &users {
        let c = table
            .iter()
            .find(|c| c.aor == u.name)
            .unwrap_or_else(|| panic!("{} not in the location table", u.name));
        let path = c.path.as_deref().unwrap_or_default();
        assert!(
            path.contains(&wan),
            "{} has no holdline Path: {c:?}",
            u.name
        );
    }

    // holdline stored every binding the cloud accepted (2xx only after durable).
    let regs = hl
        .console_json(&["show", "registrations"])
        .expect("console");
    let rows = regs.matches("\"aor\":").count();
    assert_eq!(rows, 100, "{regs}");
    assert_eq!(
        regs.matches("\"verified\":\"cloud\"").count(),
        100,
        "{regs}"
    );
    let one = hl
        .console_json(&["show", "registrations", "sip:1042@cloud.test"])
        .expect("one AoR");
    assert!(
        one.contains(&format!(
            "\"source\":\"udp:{}:{PHONE_PORT}\"",
            block.phone(1)
        )),
        "{one}"
    );
    let status = hl.console_json(&["status"]).expect("status");
    assert!(status.contains("\"bindings\":100"), "{status}");
}

#[test]
fn a_register_the_cloud_rejects_changes_nothing_in_the_cache() {
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");

    let ok = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .users(&users[..1])
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(ok.all_ok(), "{ok}");
    let before = hl
        .console_json(&["show", "registrations"])
        .expect("console");
    assert_eq!(before.matches("\"aor\":").count(), 1, "{before}");

    // Wrong password for 1001, and a wrong password trying to unregister 1000.
    for (user, expires) in [
        (User::new("1001", "wrong"), "3600"),
        (User::new("1000", "wrong"), "0"),
    ] {
        let bad = Sipp::new(Scenario::Register)
            .local(block.phone(1), PHONE_PORT)
            .remote(hl.lan())
            .users(&[user])
            .key("expires", expires)
            .timeout(Duration::from_secs(60))
            .run()
            .expect("sipp runs");
        assert_eq!(bad.successful, 0, "{bad}");
    }
    let after = hl
        .console_json(&["show", "registrations"])
        .expect("console");
    // Same binding, same source (the expiry countdown may differ by a second).
    assert_eq!(after.matches("\"aor\":").count(), 1, "{after}");
    assert!(after.contains("\"aor\":\"sip:1000@cloud.test\""), "{after}");
    assert!(
        after.contains(&format!("udp:{}:{PHONE_PORT}", block.phone(0))),
        "{after}"
    );
    let table = cloud.location().expect("ul.dump");
    assert_eq!(table.len(), 1, "{table:#?}");
}

#[test]
fn unregister_removes_the_binding_and_the_cache_survives_a_restart() {
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let reg = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .users(&users)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(reg.all_ok(), "{reg}");

    hl.start_again().expect("holdline restarts");
    let regs = hl
        .console_json(&["show", "registrations"])
        .expect("console");
    assert_eq!(
        regs.matches("\"aor\":").count(),
        2,
        "cache lost on restart: {regs}"
    );

    let unreg = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .users(&users[..1])
        .key("expires", "0")
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(unreg.all_ok(), "{unreg}");
    let regs = hl
        .console_json(&["show", "registrations"])
        .expect("console");
    assert_eq!(regs.matches("\"aor\":").count(), 1, "{regs}");
    assert!(regs.contains("sip:1001@cloud.test"), "{regs}");
    let table = cloud
        .wait_location(Duration::from_secs(10), |t| t.len() == 1)
        .expect("ul.dump");
    assert_eq!(table.len(), 1, "{table:#?}");
}
