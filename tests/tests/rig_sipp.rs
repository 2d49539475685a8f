//! The SIPp phones' behaviours that the survival tests lean on: a watcher
//! that subscribes again when its subscription is deactivated (RFC 6665),
//! and a phone that keeps refreshing its registration.

use std::net::SocketAddr;
use std::time::Duration;

use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

#[test]
fn a_watcher_subscribes_again_when_its_subscription_is_deactivated() {
    let block = Block::allocate();
    let notifier = Sipp::new(Scenario::Notifier)
        .local(block.phone(1), 5062)
        .calls(1)
        .timeout(Duration::from_secs(120))
        .spawn()
        .expect("notifier starts");
    let watcher = Sipp::new(Scenario::Subscribe)
        .local(block.phone(0), 5062)
        .remote(SocketAddr::new(block.phone(1).into(), 5062))
        .watch(&[(User::new("1000", "x"), "1001".into())])
        .var("IDLE_MS", "15000")
        .timeout(Duration::from_secs(120))
        .run()
        .expect("watcher runs");
    let notifier = notifier.wait().expect("notifier finishes");
    assert!(
        notifier.all_ok(),
        "the watcher did not subscribe again: {notifier}"
    );
    assert!(watcher.all_ok(), "{watcher}");

    let n = watcher.notifies();
    let states: Vec<&str> = n.iter().map(|n| n.subscription_state.as_str()).collect();
    assert_eq!(
        states,
        [
            "active;expires=3600",
            "terminated;reason=deactivated",
            "terminated;reason=noresource"
        ],
        "{n:#?}"
    );
    // The second subscription is a new dialog: another watcher tag.
    assert_ne!(n[0].watcher_tag, n[2].watcher_tag, "{n:#?}");
    assert_eq!(n[0].watcher_tag, n[1].watcher_tag, "{n:#?}");
    assert!(watcher.received("NOTIFY").len() >= 3, "{watcher}");
    let subscribes = watcher
        .messages
        .iter()
        .filter(|m| m.method() == Some("SUBSCRIBE"))
        .count();
    assert!(subscribes >= 2, "{watcher}");
}

#[test]
fn a_phone_refreshes_its_registration_in_the_same_dialog() {
    let block = Block::allocate();
    let users = User::numbered(1000, 2);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let res = Sipp::new(Scenario::RegisterRefresh)
        .local(block.phone(0), 5062)
        .remote(cloud.addr().into())
        .users(&users)
        .var("REFRESH_MS", "300")
        .var("REGISTRATIONS", "3")
        .trace_messages(true)
        .timeout(Duration::from_secs(120))
        .run()
        .expect("sipp runs");
    assert!(res.all_ok(), "{res}");
    assert_eq!(res.successful, 2, "{res}");
    // Three challenged REGISTERs each: CSeq 1..6, one Call-ID per phone.
    let table = cloud.location().expect("ul.dump");
    assert_eq!(table.len(), 2, "{table:#?}");
    for c in &table {
        assert_eq!(c.cseq, Some(6), "{c:?}");
    }
    let oks = res
        .messages
        .iter()
        .filter(|m| m.status() == Some(200))
        .filter_map(|m| m.header("CSeq"))
        .collect::<std::collections::HashSet<_>>();
    assert!(oks.len() >= 3, "{oks:?}");
}
