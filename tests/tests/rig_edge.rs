//! Kamailio as a plain stateful edge proxy in front of the Kamailio cloud:
//! the benchmark's baseline, and the shape of every appliance test (phones →
//! edge → cloud, inbound back through the Path).

use std::net::SocketAddr;
use std::time::Duration;

use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp};

const PHONE_PORT: u16 = 5062;

#[test]
fn phones_register_and_call_through_a_kamailio_edge() {
    let block = Block::allocate();
    let users = User::numbered(1000, 4);
    let cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let edge =
        Kamailio::start_edge(block.edge(), cloud.addr(), KamailioOpts::default()).expect("edge");
    let via_edge = SocketAddr::V4(edge.addr());

    // Callers 1000..1002 at phone 0, callee 1003 at phone 1.
    for (phone, us) in [(0u8, &users[..3]), (1, &users[3..])] {
        let res = Sipp::new(Scenario::Register)
            .name(&format!("register-{phone}"))
            .local(block.phone(phone), PHONE_PORT)
            .remote(via_edge)
            .users(us)
            .run()
            .expect("register runs");
        assert!(res.all_ok(), "{res}");
    }
    let table = cloud
        .wait_location(Duration::from_secs(30), |t| t.len() >= 4)
        .expect("ul.dump");
    assert_eq!(table.len(), 4, "{table:#?}");
    let edge_host = block.edge().to_string();
    for c in &table {
        let path = c.path.as_deref().unwrap_or("");
        assert!(path.contains(&edge_host), "no Path through the edge: {c:?}");
    }

    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(3)
        .trace_messages(true)
        .spawn()
        .expect("callee");
    let dial: Vec<(User, String)> = users[..3]
        .iter()
        .map(|u| (u.clone(), users[3].name.clone()))
        .collect();
    let uac = Sipp::new(Scenario::Uac)
        .name("callers")
        .local(block.phone(0), PHONE_PORT)
        .remote(via_edge)
        .dial(&dial)
        .var("HOLD_MS", "300")
        .trace_messages(true)
        .run()
        .expect("callers");
    assert!(uac.all_ok(), "{uac}");
    assert_eq!(uac.successful, 3, "{uac}");
    let callee = uas.wait().expect("callee");
    assert_eq!(callee.successful, 3, "{callee}");
    // The INVITE reached the callee through the edge (its Via is on top).
    let invites = callee.received("INVITE");
    assert!(!invites.is_empty());
    let top_via = invites[0].header("Via").unwrap_or("");
    assert!(top_via.contains(&edge_host), "{top_via}");
}
