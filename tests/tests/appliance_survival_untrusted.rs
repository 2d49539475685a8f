//! Untrusted resync with the real binary and peers (issue 4.5,
//! `[cloud] trusted = false`, the default): the cloud does not accept
//! REGISTERs on phones' behalf, so after an outage holdline gives the
//! verified phones back by letting their own refreshes through to the cloud
//! (paced), challenge and all; a phone first seen during the outage
//! (local-only) is not given back by holdline.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, LocationContact, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippProcess};

const PHONE_PORT: u16 = 5062;

fn users_in(table: &[LocationContact]) -> Vec<String> {
    let mut v: Vec<String> = table.iter().map(|c| c.aor.clone()).collect();
    v.sort();
    v.dedup();
    v
}

fn wait_cloud(hl: &Holdline, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let j = hl.console_json(&["status"]).unwrap_or_default();
        if j.contains(&format!("\"cloud\":\"{want}\"")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "holdline never saw the cloud {want}: {j}\n{}",
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn after_an_outage_the_phones_own_refreshes_put_them_back_in_the_cloud() {
    let block = Block::allocate();
    let users = User::numbered(2000, 4);
    let (refreshing, local_only) = (&users[..3], &users[3]);
    let mut cloud =
        Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone())).expect("cloud");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    // Faster detection than the rig's 1 s probe (the product default is 500 ms).
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    let text = text.replacen("probe_interval_ms = 1000", "probe_interval_ms = 500", 1);
    std::fs::write(hl.config_path(), text).expect("config");
    hl.start_again().expect("holdline");
    wait_cloud(&hl, "up", Duration::from_secs(30));

    // Phones that refresh every 2 s and answer the cloud's challenges.
    let phones: Vec<SippProcess> = refreshing
        .iter()
        .enumerate()
        .map(|(i, u)| {
            Sipp::new(Scenario::RegisterRefresh)
                .name(&format!("phone-{}", u.name))
                .local(block.phone(i as u8), PHONE_PORT)
                .remote(hl.lan())
                .users(std::slice::from_ref(u))
                .var("REFRESH_MS", "2000")
                .var("REGISTRATIONS", "300")
                .timeout(Duration::from_secs(700))
                .spawn()
                .expect("phone")
        })
        .collect();
    let want: Vec<String> = refreshing.iter().map(|u| u.name.clone()).collect();
    let table = cloud
        .wait_location(Duration::from_secs(60), |t| {
            let have = users_in(t);
            want.iter().all(|w| have.contains(w))
        })
        .expect("location");
    assert!(
        want.iter().all(|w| users_in(&table).contains(w)),
        "phones never registered through holdline: {table:?}\n{}",
        hl.log()
    );

    // The cloud dies; refreshes are answered by holdline meanwhile.
    cloud.crash().expect("kill the cloud");
    wait_cloud(&hl, "down", Duration::from_secs(30));
    let r = Sipp::new(Scenario::RegisterRefresh)
        .name("local-only")
        .local(block.phone(3), PHONE_PORT)
        .remote(hl.lan())
        .users(std::slice::from_ref(local_only))
        .var("REGISTRATIONS", "1")
        .timeout(Duration::from_secs(60))
        .run()
        .expect("local-only phone");
    assert!(
        r.all_ok(),
        "holdline did not answer a REGISTER in survival: {r}"
    );
    std::thread::sleep(Duration::from_secs(6));

    // Back with an empty location table: the refreshing phones return
    // through their own (challenged) refreshes; the local-only one does not.
    cloud.start_again().expect("cloud restarts");
    let table = cloud
        .wait_location(Duration::from_secs(90), |t| {
            let have = users_in(t);
            want.iter().all(|w| have.contains(w))
        })
        .expect("location");
    let have = users_in(&table);
    assert!(
        want.iter().all(|w| have.contains(w)),
        "verified phones not back in the cloud: want {want:?}, have {have:?}\n{}\n{}",
        hl.console_json(&["show", "resync"]).unwrap_or_default(),
        hl.log()
    );
    assert!(
        !have.contains(&local_only.name),
        "holdline gave the cloud a phone it never verified: {table:?}"
    );
    let resync = hl
        .wait_console(&["show", "resync"], Duration::from_secs(30), |j| {
            j.contains("\"bindings_confirmed\":3")
        })
        .expect("show resync");
    assert!(resync.contains("\"mode\":\"untrusted\""), "{resync}");
    assert!(resync.contains("\"rejected_provenance\":1"), "{resync}");
    assert!(resync.contains("\"reregisters\":0"), "{resync}");

    for p in phones {
        let _ = p.stop(Duration::from_secs(2));
    }
    let _ = hl.stop();
    let _ = cloud.stop();
}
