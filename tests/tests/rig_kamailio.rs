//! The rig on its own, without holdline: SIPp phones against the Kamailio
//! cloud. If these fail, the appliance tests cannot mean anything.
//!
//! No timing asserts: every wait is a generous bound, never a measurement.

use std::net::SocketAddr;
use std::time::Duration;

use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippResult, Transport};

const PHONE_PORT: u16 = 5062;

fn cloud(block: &Block, users: &[User]) -> Kamailio {
    let mut opts = KamailioOpts::with_users(users.to_vec());
    opts.trusted = vec![block.trunk().into()];
    Kamailio::start(block.cloud(), opts).expect("Kamailio cloud starts")
}

fn register(block: &Block, cloud: &Kamailio, phone: u8, users: &[User]) -> SippResult {
    Sipp::new(Scenario::Register)
        .name(&format!("register-{phone}"))
        .local(block.phone(phone), PHONE_PORT)
        .remote(cloud.addr().into())
        .users(users)
        .rate(20.0)
        .timeout(Duration::from_secs(120))
        .run()
        .expect("sipp register runs")
}

#[test]
fn twenty_phones_register_with_digest_auth_and_appear_in_the_location_table() {
    let block = Block::allocate();
    let users = User::numbered(1000, 20);
    let cloud = cloud(&block, &users);

    let res = register(&block, &cloud, 0, &users);
    assert!(res.all_ok(), "{res}");
    assert_eq!(res.successful, 20, "{res}");

    let table = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 20)
        .expect("ul.dump");
    assert_eq!(table.len(), 20, "{table:#?}");
    for u in &users {
        let c = table
            .iter()
            .find(|c| c.aor == u.name)
            .unwrap_or_else(|| panic!("{} not in the location table: {table:#?}", u.name));
        let expected = format!("sip:{}@{}:{PHONE_PORT}", u.name, block.phone(0));
        assert!(c.address.starts_with(&expected), "{c:?}");
        assert_eq!(c.path, None, "direct registration has no Path: {c:?}");
    }
    assert_eq!(cloud.location_count().expect("statistics"), 20);
}

#[test]
fn a_wrong_password_is_rejected_and_not_bound() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let cloud = cloud(&block, &users);
    let impostor = vec![User::new("1000", "wrong")];
    let res = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .users(&impostor)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert_eq!(res.successful, 0, "{res}");
    assert!(res.failed >= 1, "{res}");
    assert!(cloud.location().expect("ul.dump").is_empty());
}

#[test]
fn phones_register_over_tcp() {
    let block = Block::allocate();
    let users = User::numbered(2000, 5);
    let cloud = cloud(&block, &users);
    let res = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .transport(Transport::Tcp)
        .users(&users)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp runs");
    assert!(res.all_ok(), "{res}");
    let table = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 5)
        .expect("ul.dump");
    assert_eq!(table.len(), 5, "{table:#?}");
    assert!(
        table.iter().all(|c| c.address.contains("transport=TCP")),
        "{table:#?}"
    );
}

#[test]
fn a_call_between_two_phones_is_answered_and_hung_up() {
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud = cloud(&block, &users);
    assert!(register(&block, &cloud, 0, &users[..1]).all_ok());
    assert!(register(&block, &cloud, 1, &users[1..]).all_ok());

    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(1)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("callee starts");
    let uac = Sipp::new(Scenario::Uac)
        .name("caller")
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .var("HOLD_MS", "500")
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .run()
        .expect("caller runs");
    assert!(uac.all_ok(), "{uac}");
    assert_eq!(uac.successful, 1, "{uac}");
    // The cloud challenged the INVITE (digest auth), then relayed it.
    let statuses: Vec<u16> = uac.messages.iter().filter_map(|m| m.status()).collect();
    assert!(
        statuses.contains(&407),
        "INVITE not challenged: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let callee = uas.wait().expect("callee finishes");
    assert!(callee.all_ok(), "{callee}");
    assert_eq!(callee.successful, 1, "{callee}");
}

#[test]
fn an_inbound_call_from_the_trunk_reaches_a_registered_phone() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let cloud = cloud(&block, &users);
    assert!(register(&block, &cloud, 0, &users).all_ok());

    let uas = Sipp::new(Scenario::Uas)
        .local(block.phone(0), PHONE_PORT)
        .calls(1)
        .spawn()
        .expect("phone answers");
    let trunk = User::new("pstn", "");
    let uac = Sipp::new(Scenario::Uac)
        .name("trunk")
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .dial(&[(trunk, "1000".into())])
        .var("HOLD_MS", "200")
        .run()
        .expect("trunk calls");
    assert!(uac.all_ok(), "{uac}");
    let phone = uas.wait().expect("phone finishes");
    assert_eq!(phone.successful, 1, "{phone}");
}

#[test]
fn a_blf_watcher_gets_notifies_for_the_calls_of_the_phone_it_watches() {
    let block = Block::allocate();
    let users = User::numbered(1000, 3);
    let cloud = cloud(&block, &users);
    assert!(register(&block, &cloud, 0, &users[..1]).all_ok());
    assert!(register(&block, &cloud, 1, &users[1..2]).all_ok());

    // 1002 watches 1000's busy lamp.
    let watcher = Sipp::new(Scenario::Subscribe)
        .name("blf")
        .local(block.phone(2), PHONE_PORT)
        .remote(cloud.addr().into())
        .watch(&[(users[2].clone(), users[0].name.clone())])
        .var("IDLE_MS", "10000")
        .timeout(Duration::from_secs(180))
        .spawn()
        .expect("watcher starts");
    wait_for_watchers(&cloud, 1);

    let uas = Sipp::new(Scenario::Uas)
        .local(block.phone(1), PHONE_PORT)
        .calls(1)
        .spawn()
        .expect("callee");
    let uac = Sipp::new(Scenario::Uac)
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .var("HOLD_MS", "1000")
        .run()
        .expect("caller");
    assert!(uac.all_ok(), "{uac}");
    assert!(uas.wait().expect("callee").all_ok());

    let res = watcher.wait().expect("watcher finishes");
    assert!(res.all_ok(), "{res}");
    let notifies = res.notifies();
    assert!(!notifies.is_empty(), "no NOTIFY: {res}");
    assert!(
        notifies[0].subscription_state.starts_with("active"),
        "{notifies:#?}"
    );
    assert!(notifies.iter().all(|n| n.event.starts_with("dialog")));
    let states: Vec<&str> = notifies
        .iter()
        .flat_map(|n| n.dialog_states.iter().map(String::as_str))
        .collect();
    assert!(states.contains(&"confirmed"), "{states:?}\n{notifies:#?}");
    assert!(states.contains(&"terminated"), "{states:?}\n{notifies:#?}");
    // UDP may deliver them out of order (Kamailio notifies from several
    // processes); in CSeq order the dialog-info version must only go up.
    let mut by_cseq: Vec<(Option<u32>, Option<u64>)> =
        notifies.iter().map(|n| (n.cseq, n.version)).collect();
    by_cseq.sort();
    let versions: Vec<u64> = by_cseq.iter().filter_map(|(_, v)| *v).collect();
    assert!(
        versions.windows(2).all(|w| w[0] < w[1]),
        "dialog-info versions not increasing in CSeq order: {by_cseq:?}"
    );
}

#[test]
fn an_mwi_watcher_gets_the_published_message_summary() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let cloud = cloud(&block, &users);
    assert!(register(&block, &cloud, 0, &users).all_ok());

    let watcher = Sipp::new(Scenario::Subscribe)
        .name("mwi")
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .watch(&[(users[0].clone(), users[0].name.clone())])
        .key("event", "message-summary")
        .key("accept", "application/simple-message-summary")
        .var("IDLE_MS", "8000")
        .spawn()
        .expect("watcher starts");
    wait_for_watchers(&cloud, 1);

    let publish = Sipp::new(Scenario::PublishMwi)
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .rows(vec![vec![
            "1000".into(),
            String::new(),
            "3".into(),
            "1".into(),
        ]])
        .run()
        .expect("publisher runs");
    assert!(publish.all_ok(), "{publish}");

    let res = watcher.wait().expect("watcher finishes");
    let notifies = res.notifies();
    let mwi = notifies
        .iter()
        .find(|n| n.messages_waiting == Some(true))
        .unwrap_or_else(|| {
            panic!("no message-summary with waiting messages: {notifies:#?}\n{res}")
        });
    assert!(mwi.body.contains("Voice-Message: 3/1"), "{mwi:#?}");
    assert!(mwi.event.starts_with("message-summary"), "{mwi:#?}");
}

#[test]
fn a_restart_empties_the_location_table() {
    let block = Block::allocate();
    let users = User::numbered(1000, 5);
    let mut cloud = cloud(&block, &users);
    assert!(register(&block, &cloud, 0, &users).all_ok());
    let before = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 5)
        .expect("ul.dump");
    assert_eq!(before.len(), 5);

    cloud.restart().expect("cloud restarts");
    assert!(
        cloud.location().expect("ul.dump").is_empty(),
        "bindings survived the restart"
    );

    // And it serves again: the phones can register anew.
    let again = register(&block, &cloud, 0, &users);
    assert!(again.all_ok(), "{again}");
    let after = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 5)
        .expect("ul.dump");
    assert_eq!(after.len(), 5);
}

#[test]
fn blocks_are_distinct_and_the_cloud_answers_options() {
    let a = Block::allocate();
    let b = Block::allocate();
    assert_ne!(a.prefix(), b.prefix());
    let cloud = cloud(&a, &[]);
    let code = holdline_tests::net::sip_options(
        a.phone(0),
        SocketAddr::V4(cloud.addr()),
        Duration::from_secs(10),
    )
    .expect("OPTIONS answered");
    assert_eq!(code, 200);
}

fn wait_for_watchers(cloud: &Kamailio, n: usize) {
    let subs = cloud
        .wait_subscriptions(n, Duration::from_secs(30))
        .expect("active_watchers");
    assert!(
        subs.len() >= n,
        "the cloud never held {n} subscriptions: {subs:?}\n{}",
        cloud.log()
    );
}

#[test]
fn a_frozen_cloud_is_silent_until_thawed() {
    let block = Block::allocate();
    let mut cloud = cloud(&block, &[]);
    let to = SocketAddr::V4(cloud.addr());
    cloud.freeze().expect("SIGSTOP");
    assert!(
        holdline_tests::net::sip_options(block.phone(0), to, Duration::from_secs(2)).is_err(),
        "a frozen cloud answered"
    );
    cloud.thaw().expect("SIGCONT");
    let code = holdline_tests::net::sip_options(block.phone(0), to, Duration::from_secs(30))
        .expect("answers again");
    assert_eq!(code, 200);
    // Dropped frozen: must still stop (covered by Drop's thaw).
    cloud.freeze().expect("SIGSTOP again");
}

#[test]
fn a_location_table_of_hundreds_reads_whole() {
    // kamcmd's binrpc refuses replies this large; the rig reads over JSON-RPC.
    let block = Block::allocate();
    let users = User::numbered(3000, 300);
    let cloud = cloud(&block, &users);
    let res = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .users(&users)
        .rate(100.0)
        .timeout(Duration::from_secs(180))
        .run()
        .expect("sipp runs");
    assert!(res.all_ok(), "{res}");
    let table = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 300)
        .expect("ul.dump over JSON-RPC");
    assert_eq!(table.len(), 300);
    assert_eq!(cloud.location_count().expect("statistics"), 300);
}

#[test]
fn an_inbound_call_reaches_a_phone_registered_over_tcp() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let cloud = cloud(&block, &users);
    let reg = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(cloud.addr().into())
        .transport(Transport::Tcp)
        .users(&users)
        .run()
        .expect("register over TCP");
    assert!(reg.all_ok(), "{reg}");

    let uas = Sipp::new(Scenario::Uas)
        .local(block.phone(0), PHONE_PORT)
        .transport(Transport::Tcp)
        .calls(1)
        .spawn()
        .expect("phone answers over TCP");
    let uac = Sipp::new(Scenario::Uac)
        .name("trunk")
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .dial(&[(User::new("pstn", ""), "1000".into())])
        .var("HOLD_MS", "200")
        .run()
        .expect("trunk calls");
    assert!(uac.all_ok(), "{uac}");
    let phone = uas.wait().expect("phone finishes");
    assert_eq!(phone.successful, 1, "{phone}");
}

#[test]
fn a_registration_accepted_without_a_challenge_also_succeeds() {
    // As from holdline answering locally in survival; here the cloud simply
    // trusts the source (the trunk address) and does not challenge.
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud = cloud(&block, &users);
    let res = Sipp::new(Scenario::Register)
        .local(block.trunk(), 5062)
        .remote(cloud.addr().into())
        .users(&users)
        .trace_messages(true)
        .run()
        .expect("sipp runs");
    assert!(res.all_ok(), "{res}");
    assert!(
        res.messages.iter().all(|m| m.status() != Some(401)),
        "challenged anyway"
    );
    assert_eq!(cloud.location().expect("ul.dump").len(), 2);
}
