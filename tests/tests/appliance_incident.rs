//! The incident, replayed with the real binary and real peers (issue 4.6):
//! phones registered through holdline to a Kamailio cloud; the cloud killed,
//! restarted (with an empty location table), killed again after a short
//! interval and restarted again; calls between site phones at a steady rate
//! the whole time; a BLF watcher on the callees.
//!
//! Asserts: no call failed; the watcher saw `confirmed` and `terminated` for
//! calls in every phase; after each restart every verified phone is back in
//! the cloud's location table within the resync window (holdline
//! re-registers them: `[cloud] trusted = true`, the cloud trusts holdline's
//! address) and neither the dead phone (registered, then gone: it does not
//! answer holdline's liveness OPTIONS) nor the local-only phone (first seen
//! during the outage) is; inbound calls from the cloud reach every phone.
//!
//! Every wait is a generous bound (a loaded 2-core machine); no timing is
//! asserted. Every process is stopped by the test (kill on Drop).

use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, LocationContact, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippProcess};

/// Every site phone's SIP port (registration, answering calls and OPTIONS).
const PHONE_PORT: u16 = 5062;
/// Where the phones' outgoing calls come from (a second line of the phone).
const CALLER_PORT: u16 = 5064;
/// The BLF watcher's port.
const WATCHER_PORT: u16 = 5066;
/// Generous bound for the resync after a restart (hold-down grows on the
/// second failure: 10 s, then 20 s; then liveness pings and the paced resync).
const RESYNC_WINDOW: Duration = Duration::from_secs(90);

fn cloud_state(hl: &Holdline) -> String {
    let j = hl.console_json(&["status"]).unwrap_or_default();
    j.split("\"cloud\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string()
}

fn wait_cloud(hl: &Holdline, want: &[&str], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = cloud_state(hl);
        if want.contains(&s.as_str()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "holdline never saw the cloud {want:?} (it says {s})\n{}",
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn users_in(table: &[LocationContact]) -> Vec<String> {
    let mut v: Vec<String> = table.iter().map(|c| c.aor.clone()).collect();
    v.sort();
    v.dedup();
    v
}

/// Waits until every verified phone is in the location table again, then
/// checks that the dead and the local-only phones are not.
fn assert_resynced(cloud: &Kamailio, hl: &Holdline, verified: &[User], not: &[User], phase: &str) {
    let want: Vec<String> = verified.iter().map(|u| u.name.clone()).collect();
    let table = cloud
        .wait_location(RESYNC_WINDOW, |t| {
            let have = users_in(t);
            want.iter().all(|w| have.contains(w))
        })
        .expect("location table");
    let have = users_in(&table);
    assert!(
        want.iter().all(|w| have.contains(w)),
        "{phase}: verified phones missing from the cloud after the resync window: \
         want {want:?}, have {have:?}\n{}\n{}\n{}\n{}",
        hl.console_json(&["status"]).unwrap_or_default(),
        hl.console_json(&["show", "resync"]).unwrap_or_default(),
        hl.console_json(&["show", "registrations"])
            .unwrap_or_default(),
        hl.log()
    );
    for u in not {
        assert!(
            !have.contains(&u.name),
            "{phase}: {} (dead or never verified) was given to the cloud: {table:?}",
            u.name
        );
    }
    // Every contact the cloud holds routes back through holdline (Path).
    for c in &table {
        assert!(
            c.path
                .as_deref()
                .is_some_and(|p| p.contains(&hl.wan().ip().to_string())),
            "{phase}: contact without holdline's Path: {c:?}"
        );
    }
}

/// The `<state>`s of the dialog elements of a dialog-info body that name `call_id`.
fn dialog_states_of(body: &str, call_id: &str) -> Vec<String> {
    body.split("<dialog ")
        .skip(1)
        .filter(|d| d.contains(call_id))
        .filter_map(|d| {
            let st = d.split("<state").nth(1)?;
            let v = st.split('>').nth(1)?.split('<').next()?;
            Some(v.trim().to_string())
        })
        .collect()
}

fn register(block: &Block, hl: &Holdline, i: u8, u: &User) {
    // The cloud trusts holdline's address: no challenge; this scenario
    // accepts a 200 with or without one.
    let r = Sipp::new(Scenario::RegisterRefresh)
        .name(&format!("register-{}", u.name))
        .var("REGISTRATIONS", "1")
        .local(block.phone(i), PHONE_PORT)
        .remote(hl.lan())
        .users(std::slice::from_ref(u))
        .timeout(Duration::from_secs(60))
        .run()
        .expect("register");
    assert!(r.all_ok(), "{} could not register: {r}", u.name);
}

#[test]
fn two_cloud_restarts_ten_minutes_apart_shortened_no_failed_call_verified_resync() {
    let block = Block::allocate();
    let users = User::numbered(1000, 6);
    // 1000..1003: site phones (answer calls and OPTIONS); 1004: registers,
    // then is gone; 1005: first seen during the outage (local-only).
    let (site, dead, local_only) = (&users[..4], &users[4], &users[5]);
    let mut copts = KamailioOpts::with_users(users.clone());
    copts.trusted = vec![block.holdline().into(), block.trunk().into()];
    let mut cloud = Kamailio::start(block.cloud(), copts).expect("cloud");

    // holdline with `[cloud] trusted = true` (the rig's options have no such
    // knob: the written config is amended and holdline started again).
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline");
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    let text = text
        .replacen(
            "[cloud]\n",
            "[cloud]\ntrusted = true\nresync_rate = 50\n",
            1,
        )
        .replacen("probe_interval_ms = 1000", "probe_interval_ms = 500", 1);
    std::fs::write(hl.config_path(), text).expect("config");
    hl.start_again().expect("holdline with trusted resync");
    wait_cloud(&hl, &["up"], Duration::from_secs(30));

    for (i, u) in site.iter().enumerate() {
        register(&block, &hl, i as u8, u);
    }
    register(&block, &hl, 4, dead);

    // Every site phone answers calls (and, SIPp's -aa, OPTIONS).
    let mut phones: Vec<SippProcess> = (0..site.len())
        .map(|i| {
            Sipp::new(Scenario::Uas)
                .name(&format!("phone-{i}"))
                .local(block.phone(i as u8), PHONE_PORT)
                .calls(100_000)
                .var("RING_MS", "100")
                .timeout(Duration::from_secs(600))
                .spawn()
                .expect("phone")
        })
        .collect();

    // A BLF watcher (on 1005's desk, a different phone) on the two callees.
    let watcher = Sipp::new(Scenario::Subscribe)
        .name("blf")
        .local(block.phone(6), WATCHER_PORT)
        .remote(hl.lan())
        .watch(&[
            (users[5].clone(), site[1].name.clone()),
            (users[5].clone(), site[3].name.clone()),
        ])
        .key("expires", "600")
        .var("IDLE_MS", "60000")
        .trace_messages(true)
        .timeout(Duration::from_secs(400))
        .spawn()
        .expect("watcher");
    let _ = cloud.wait_subscriptions(2, Duration::from_secs(30));

    // Steady calls: 1000 → 1001 and 1002 → 1003, one every 2 s each.
    let calls = 60;
    let callers: Vec<SippProcess> = [(0usize, 1usize), (2, 3)]
        .iter()
        .map(|&(a, b)| {
            Sipp::new(Scenario::Uac)
                .name(&format!("calls-{a}-{b}"))
                .local(block.phone(a as u8), CALLER_PORT)
                .remote(hl.lan())
                .dial(&[(site[a].clone(), site[b].name.clone())])
                .calls(calls)
                .rate(0.5)
                .limit(4)
                // Calls outlast the detection (about 2 s), so a call set up
                // while the cloud was only suspect is still up at take-over.
                .var("HOLD_MS", "4000")
                .trace_messages(true)
                .timeout(Duration::from_secs(400))
                .spawn()
                .expect("caller")
        })
        .collect();

    // Phase 1: the cloud dies.
    std::thread::sleep(Duration::from_secs(8));
    cloud.crash().expect("kill the cloud");
    let killed = Instant::now();
    wait_cloud(&hl, &["down"], Duration::from_secs(30));
    let detect1 = killed.elapsed();
    // A phone never seen before registers during the outage: local-only.
    register(&block, &hl, 5, local_only);
    std::thread::sleep(Duration::from_secs(8));
    // Restart: Kamailio's location table is empty.
    cloud.start_again().expect("cloud restarts");
    let back = Instant::now();
    assert_resynced(
        &cloud,
        &hl,
        site,
        &[dead.clone(), local_only.clone()],
        "first restart",
    );
    let resync1 = back.elapsed();
    wait_cloud(&hl, &["up"], Duration::from_secs(60));

    // Phase 2: the second failure, a shortened "ten minutes" later.
    std::thread::sleep(Duration::from_secs(10));
    cloud.crash().expect("kill the cloud again");
    let killed = Instant::now();
    wait_cloud(&hl, &["down"], Duration::from_secs(30));
    let detect2 = killed.elapsed();
    std::thread::sleep(Duration::from_secs(8));
    cloud.start_again().expect("cloud restarts again");
    let back = Instant::now();
    assert_resynced(
        &cloud,
        &hl,
        site,
        &[dead.clone(), local_only.clone()],
        "second restart",
    );
    let resync2 = back.elapsed();
    // Figures (not asserted; console polling adds up to 0.2 s): see them
    // with `-- --nocapture`.
    eprintln!(
        "incident figures: detection {:.1} s / {:.1} s; restart to all verified phones \
         in the location table {:.1} s / {:.1} s (hold-down 10 s, then 20 s after the flap)",
        detect1.as_secs_f64(),
        detect2.as_secs_f64(),
        resync1.as_secs_f64(),
        resync2.as_secs_f64()
    );
    wait_cloud(&hl, &["up"], Duration::from_secs(90));

    // Zero failed calls, through both failures.
    let mut call_ids = Vec::new();
    for c in callers {
        let r = c.wait().expect("caller finishes");
        assert!(r.all_ok(), "calls failed: {r}\n{}", hl.log());
        assert_eq!(r.successful, calls, "{r}");
        call_ids.extend(
            r.messages
                .iter()
                .filter(|m| m.method() == Some("INVITE"))
                .filter_map(|m| m.header("Call-ID").map(str::to_string)),
        );
    }
    call_ids.sort();
    call_ids.dedup();

    // Inbound calls from the cloud reach every verified phone again.
    let trunk = User::new("9999", "unused");
    let inbound = Sipp::new(Scenario::Uac)
        .name("inbound")
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .dial(
            &site
                .iter()
                .map(|u| (trunk.clone(), u.name.clone()))
                .collect::<Vec<_>>(),
        )
        .calls(site.len() as u64)
        .var("HOLD_MS", "500")
        .timeout(Duration::from_secs(120))
        .run()
        .expect("inbound calls");
    assert!(inbound.all_ok(), "inbound calls from the cloud: {inbound}");
    eprintln!(
        "incident figures: {} calls between site phones, 0 failed; {} inbound calls ok\n{}",
        call_ids.len(),
        site.len(),
        hl.console_json(&["show", "resync"]).unwrap_or_default()
    );

    // BLF: the watcher saw every call confirmed and terminated.
    let res = watcher.stop(Duration::from_secs(5)).expect("watcher");
    let notifies = res.notifies();
    let mut missing = Vec::new();
    for id in &call_ids {
        let states: Vec<String> = notifies
            .iter()
            .flat_map(|n| dialog_states_of(&n.body, id))
            .collect();
        if !(states.iter().any(|s| s == "confirmed") && states.iter().any(|s| s == "terminated")) {
            missing.push((id.clone(), states.join(",")));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} calls not seen confirmed+terminated by the watcher: {missing:?}",
        missing.len(),
        call_ids.len()
    );

    for p in phones.drain(..) {
        let _ = p.stop(Duration::from_secs(2));
    }
    let _ = hl.stop();
    let _ = cloud.stop();
}
