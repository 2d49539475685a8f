//! BLF and MWI through holdline: the cloud's NOTIFYs reach the phones, and
//! holdline records the subscription dialogs and caches message-summary.
//! No timing asserts: every wait is a generous bound.

use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

const PHONE_PORT: u16 = 5062;

fn wait_for_watchers(cloud: &Kamailio, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let subs = cloud.subscriptions().expect("active_watchers");
        if subs.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cloud never held {n} subscriptions: {subs:?}\n{}",
            cloud.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_blf_subscription_through_holdline_gets_notifies_and_holdline_records_it() {
    let block = Block::allocate();
    let users = User::numbered(1000, 3);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    for (i, u) in users[..2].iter().enumerate() {
        let r = Sipp::new(Scenario::Register)
            .name(&format!("register-{i}"))
            .local(block.phone(i as u8), PHONE_PORT)
            .remote(hl.lan())
            .users(std::slice::from_ref(u))
            .timeout(Duration::from_secs(60))
            .run()
            .expect("register");
        assert!(r.all_ok(), "{r}");
    }

    // 1002 watches 1000's busy lamp, through holdline.
    let watcher = Sipp::new(Scenario::Subscribe)
        .name("blf")
        .local(block.phone(2), PHONE_PORT)
        .remote(hl.lan())
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
        .remote(hl.lan())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .var("HOLD_MS", "1000")
        .run()
        .expect("caller");
    assert!(uac.all_ok(), "{uac}");
    assert!(uas.wait().expect("callee").all_ok());

    let res = watcher.wait().expect("watcher finishes");
    assert!(res.all_ok(), "{res}");
    let notifies = res.notifies();
    let states: Vec<&str> = notifies
        .iter()
        .flat_map(|n| n.dialog_states.iter().map(String::as_str))
        .collect();
    assert!(states.contains(&"confirmed"), "{states:?}\n{notifies:#?}");
    assert!(states.contains(&"terminated"), "{states:?}\n{notifies:#?}");
    let last_version = notifies
        .iter()
        .filter_map(|n| n.version)
        .max()
        .expect("versions");

    // holdline recorded the dialog: tags, CSeq, the last NOTIFY's version and body.
    let subs = hl
        .wait_console(&["show", "subscriptions"], Duration::from_secs(10), |j| {
            j.contains(&format!("\"version\":{last_version}"))
        })
        .expect("console");
    assert!(subs.contains("\"event\":\"dialog\""), "{subs}");
    assert!(
        subs.contains("\"watcher\":\"sip:1002@cloud.test\""),
        "{subs}"
    );
    assert!(
        subs.contains("\"target\":\"sip:1000@cloud.test\""),
        "{subs}"
    );
    assert!(subs.contains("\"state\":\"active\""), "{subs}");
    assert!(
        subs.contains(&format!("\"version\":{last_version}")),
        "last dialog-info version {last_version} not recorded: {subs}"
    );
    assert!(
        subs.contains(&format!("\"notifies\":{}", notifies.len())),
        "{} NOTIFYs seen by the phone: {subs}",
        notifies.len()
    );
}

#[test]
fn an_mwi_notify_through_holdline_is_cached() {
    let block = Block::allocate();
    let users = User::numbered(1000, 1);
    let mut opts = KamailioOpts::with_users(users.clone());
    opts.trusted = vec![block.trunk().into()];
    let cloud = Kamailio::start(block.cloud(), opts).expect("cloud");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let r = Sipp::new(Scenario::Register)
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .users(&users)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("register");
    assert!(r.all_ok(), "{r}");

    let watcher = Sipp::new(Scenario::Subscribe)
        .name("mwi")
        .local(block.phone(0), PHONE_PORT)
        .remote(hl.lan())
        .watch(&[(users[0].clone(), users[0].name.clone())])
        .key("event", "message-summary")
        .key("accept", "application/simple-message-summary")
        .var("IDLE_MS", "8000")
        .timeout(Duration::from_secs(120))
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
    assert!(
        notifies.iter().any(|n| n.messages_waiting == Some(true)),
        "the phone got no waiting message-summary: {notifies:#?}\n{res}"
    );
    let subs = hl
        .wait_console(&["show", "subscriptions"], Duration::from_secs(10), |j| {
            j.contains("\"waiting\":true")
        })
        .expect("console");
    assert!(
        subs.contains("\"mwi\":[{\"aor\":\"sip:1000@cloud.test\",\"waiting\":true"),
        "{subs}"
    );
    assert!(subs.contains("Voice-Message: 3/1"), "{subs}");

    // The cache is durable: still there after a restart.
    hl.start_again().expect("restart");
    let subs = hl
        .console_json(&["show", "subscriptions"])
        .expect("console");
    assert!(
        subs.contains("\"waiting\":true"),
        "MWI cache lost on restart: {subs}"
    );
}
