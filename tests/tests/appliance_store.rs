//! Issue 5 at the appliance level: the real `holdline` binary, a Kamailio cloud, SIPp phones.
//!
//! 1. The incident's cause end to end: phones register through holdline; holdline is
//!    stopped; a few percent of the binding rows are damaged in every way
//!    `holdline-store-corrupt` knows; holdline starts again with a 1 s purge interval.
//!    It must start and serve, list the damaged rows with their reasons in
//!    `store quarantine`, keep purging (more rows damaged while it runs are quarantined by
//!    the purge, seen in `show store`), and route an inbound call from the cloud to every
//!    undamaged phone.
//! 2. Purge and resync over it: the cloud restarts with an empty location table; holdline
//!    (trusted resync) gives back every good binding of the damaged store and none of the
//!    quarantined ones.
//! 3. A truncated, then a garbage, database file at start: holdline starts and serves (a
//!    REGISTER through it succeeds), the old file is set aside as `PATH.corrupt-*` with
//!    its bytes untouched, and the event is in the console's event log.
//!
//! Every wait is a generous bound (loaded 2-core machine), no timing is asserted, every
//! process is stopped by the test (kill on Drop). Written by the store helper ("store2").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::proc;
use holdline_tests::sipp::{Scenario, Sipp, SippResult};

const PHONE_PORT: u16 = 5062;

/// The `holdline-store-corrupt` binary of the profile the tests were built with, built
/// once per test process when cargo runs the tests (the harness does the same for
/// `holdline`), so a stale tool is never used.
fn corrupt_tool() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| format!("unexpected test path {}", exe.display()))?
            .to_path_buf();
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "holdline-store-corrupt",
                "--bin",
                "holdline-store-corrupt",
            ]);
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
            let out = proc::run_bounded(cmd, Duration::from_secs(900))
                .map_err(|e| format!("cargo build -p holdline-store-corrupt: {e}"))?;
            if !out.status.success() {
                return Err(format!("cargo build failed:\n{}", out.stderr));
            }
        }
        let bin = profile_dir.join("holdline-store-corrupt");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{} not found", bin.display()))
        }
    });
    match built {
        Ok(p) => p.clone(),
        Err(e) => panic!("holdline-store-corrupt: {e}"),
    }
}

/// Runs the corruption tool; returns its stdout.
fn corrupt(args: &[&str]) -> String {
    let mut cmd = Command::new(corrupt_tool());
    cmd.args(args);
    let out = proc::run_bounded(cmd, Duration::from_secs(120)).expect("corruption tool runs");
    assert!(
        out.status.success(),
        "holdline-store-corrupt {args:?} failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Runs one SQL statement with the sqlite3 shell (waits up to 10 s for a lock).
fn sqlite(db: &Path, sql: &str) -> String {
    let sqlite3 = holdline_tests::which("sqlite3").expect("sqlite3 installed");
    let mut cmd = Command::new(sqlite3);
    cmd.arg("-cmd").arg(".timeout 10000").arg(db).arg(sql);
    let out = proc::run_bounded(cmd, Duration::from_secs(60)).expect("sqlite3 runs");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?} failed:\n{}{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Removes a store and its WAL/SHM.
fn remove_store(db: &Path) {
    for side in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{side}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).expect("remove store file");
        }
    }
}

/// Files `holdline.db.corrupt-*` in the run directory (set-aside stores, not their WAL).
fn set_aside_files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .expect("read run dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("holdline.db.corrupt-")
                    && !n.ends_with("-wal")
                    && !n.ends_with("-shm")
            })
        })
        .collect()
}

/// Sets `[store] purge_interval_s` in holdline's config (read at the next start).
fn set_purge_interval(hl: &Holdline, seconds: u64) {
    let cfg = std::fs::read_to_string(hl.config_path()).expect("read config");
    assert!(cfg.contains("[store]\n"), "{cfg}");
    let cfg = cfg.replace(
        "[store]\n",
        &format!("[store]\npurge_interval_s = {seconds}\n"),
    );
    std::fs::write(hl.config_path(), cfg).expect("write config");
}

fn register(block: &Block, hl: &Holdline, phone: u8, users: &[User], rate: f64) -> SippResult {
    Sipp::new(Scenario::Register)
        .name(&format!("register-{phone}"))
        .local(block.phone(phone), PHONE_PORT)
        .remote(hl.lan())
        .users(users)
        .rate(rate)
        .timeout(Duration::from_secs(240))
        .run()
        .expect("sipp register runs")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("console JSON {e}: {text}"))
}

/// `show store` → `quarantined`.
fn quarantined(hl: &Holdline) -> u64 {
    let j = json(&hl.console_json(&["show", "store"]).expect("show store"));
    j["store"]["quarantined"]
        .as_u64()
        .unwrap_or_else(|| panic!("show store has no quarantined count: {j}"))
}

/// AoRs in `show registrations`.
fn registered(hl: &Holdline) -> BTreeSet<String> {
    let j = json(
        &hl.console_json(&["show", "registrations"])
            .expect("show registrations"),
    );
    let mut out = BTreeSet::new();
    if let Some(obj) = j.as_object() {
        for v in obj.values() {
            for row in v.as_array().into_iter().flatten() {
                if let Some(aor) = row["aor"].as_str() {
                    out.insert(aor.to_string());
                }
            }
        }
    }
    out
}

/// One line of the tool's report: `bindings: Kind on N row(s): ids [a, b] (expect reason "r")`.
struct Damaged {
    kind: String,
    ids: Vec<i64>,
    reason: String,
}

fn parse_report(out: &str) -> Vec<Damaged> {
    out.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("bindings: ")?;
            let kind = rest.split(' ').next()?.to_string();
            let ids = rest.split("ids [").nth(1)?.split(']').next()?;
            let ids = ids
                .split(',')
                .filter_map(|s| s.trim().parse::<i64>().ok())
                .collect();
            let reason = rest
                .split("reason \"")
                .nth(1)?
                .split('"')
                .next()?
                .to_string();
            Some(Damaged { kind, ids, reason })
        })
        .collect()
}

/// With holdline stopped: one binding row per kind of damage (9 kinds) in a copy of its
/// store, put in place of the store. Returns the tool's report, the AoRs whose only row is
/// now bad, and the AoR whose row was duplicated (one copy stays good).
fn damage_every_kind(
    hl: &Holdline,
    phones: usize,
) -> (Vec<Damaged>, BTreeSet<String>, BTreeSet<String>) {
    // Row id → AoR, before the damage changes some AoRs.
    let db = hl.dir().join("holdline.db");
    let by_id: BTreeMap<i64, String> = sqlite(&db, "SELECT id || '|' || aor FROM bindings")
        .lines()
        .filter_map(|l| {
            let (id, aor) = l.split_once('|')?;
            Some((id.parse().ok()?, aor.to_string()))
        })
        .collect();
    assert_eq!(by_id.len(), phones, "one row per phone in the store");

    // One row per kind of damage (9 kinds: 4.5 % of the rows), into a copy.
    let damaged_db = hl.dir().join("damaged.db");
    let report = corrupt(&[
        db.to_str().expect("utf-8 path"),
        damaged_db.to_str().expect("utf-8 path"),
        "--damage",
        "all",
        "--count",
        "1",
        "--seed",
        "5",
    ]);
    println!("{report}");
    let damage = parse_report(&report);
    assert_eq!(
        damage.len(),
        9,
        "every kind of row damage applied:\n{report}"
    );
    let mut lost = BTreeSet::new(); // AoRs whose only row is bad
    let mut duplicated = BTreeSet::new(); // AoRs whose row was copied (one copy stays good)
    for d in &damage {
        for id in &d.ids {
            let aor = by_id.get(id).cloned().expect("damaged id is a binding row");
            if d.kind == "Duplicate" {
                duplicated.insert(aor);
            } else {
                lost.insert(aor);
            }
        }
    }
    assert_eq!(lost.len() + duplicated.len(), 9, "distinct rows damaged");
    remove_store(&db);
    std::fs::rename(&damaged_db, &db).expect("damaged store in place");
    (damage, lost, duplicated)
}

/// The user part of a request line's URI (`INVITE sip:4001@127.1.2.10:5062 SIP/2.0`).
fn request_user(start_line: &str) -> Option<String> {
    let uri = start_line.split(' ').nth(1)?;
    let after = uri.strip_prefix("sip:")?;
    Some(after.split('@').next()?.to_string())
}

#[test]
fn damaged_bindings_are_quarantined_the_purge_survives_and_every_good_phone_gets_its_calls() {
    const PHONES: usize = 200;
    let block = Block::allocate();
    let users = User::numbered(4000, PHONES);
    let mut kopts = KamailioOpts::with_users(users.clone());
    kopts.trusted = vec![block.trunk().into()];
    let cloud = Kamailio::start(block.cloud(), kopts).expect("Kamailio cloud starts");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");

    // Every phone registers through holdline (one SIPp, one contact per user).
    let reg = register(&block, &hl, 0, &users, 30.0);
    assert!(reg.all_ok(), "{reg}");
    assert_eq!(reg.successful, PHONES as u64, "{reg}");
    assert_eq!(registered(&hl).len(), PHONES, "holdline has every binding");
    hl.stop().expect("holdline stops");

    let (damage, lost, duplicated) = damage_every_kind(&hl, PHONES);
    let db = hl.dir().join("holdline.db");

    // Start on the damaged store with a short purge interval.
    set_purge_interval(&hl, 1);
    hl.start_again()
        .expect("holdline starts on a damaged store");
    let status = hl.console(&["status"]).expect("status");
    assert!(status.ok, "{}{}", status.stdout, status.stderr);

    // Every damaged row is in quarantine with its reason.
    let q = json(
        &hl.console_json(&["store", "quarantine"])
            .expect("quarantine"),
    );
    let rows: Vec<(String, String)> = q["quarantine"]
        .as_array()
        .unwrap_or_else(|| panic!("store quarantine is not a table: {q}"))
        .iter()
        .map(|r| {
            (
                r["table"].as_str().unwrap_or_default().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(rows.len() >= 9, "{q}");
    assert!(rows.iter().all(|(t, _)| t == "bindings"), "{q}");
    for d in &damage {
        assert!(
            rows.iter().any(|(_, r)| r.contains(&d.reason)),
            "no quarantined row with reason {:?} ({}):\n{q}",
            d.reason,
            d.kind
        );
    }
    assert!(quarantined(&hl) >= 9, "show store counts them");

    // The cache: every good binding (and one copy of the duplicated one) came back,
    // none of the bad ones did.
    let regs = registered(&hl);
    let good: Vec<&User> = users
        .iter()
        .filter(|u| !lost.contains(&u.aor()) && !duplicated.contains(&u.aor()))
        .collect();
    for u in &good {
        assert!(regs.contains(&u.aor()), "{} lost: {regs:?}", u.aor());
    }
    for aor in &duplicated {
        assert!(regs.contains(aor), "duplicated {aor} lost both copies");
    }
    for aor in &lost {
        assert!(!regs.contains(aor), "bad row of {aor} was loaded");
    }

    // Damage appearing while it runs (bit rot, a bug): the routine purge meets it.
    let before = quarantined(&hl);
    let victims: Vec<String> = good.iter().rev().take(3).map(|u| u.aor()).collect();
    let edits = [
        "UPDATE bindings SET transport = 'carrier-pigeon' WHERE aor = '{}'",
        "UPDATE bindings SET expires_at = -3600 WHERE aor = '{}'",
        "UPDATE bindings SET cseq = cseq + 1 WHERE aor = '{}'",
    ];
    for (sql, aor) in edits.iter().zip(&victims) {
        sqlite(&db, &sql.replace("{}", aor));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while quarantined(&hl) < before + 3 {
        assert!(
            Instant::now() < deadline,
            "the purge did not quarantine the rows damaged while running \
             (quarantined {} < {})\n{}",
            quarantined(&hl),
            before + 3,
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let q = hl
        .console_json(&["store", "quarantine"])
        .expect("quarantine");
    for aor in &victims {
        assert!(q.contains(aor.as_str()), "{aor} not in quarantine: {q}");
    }
    // Let it purge a few more times over the table, then check it is alive and well.
    std::thread::sleep(Duration::from_secs(3));
    let log = hl.log();
    assert!(log.contains("purge met damaged records"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let status = hl.console(&["status"]).expect("status");
    assert!(status.ok, "{}{}", status.stdout, status.stderr);

    // Inbound calls from the cloud to every undamaged phone are routed through holdline.
    let callees: Vec<&User> = good
        .iter()
        .copied()
        .filter(|u| !victims.contains(&u.aor()))
        .collect();
    let uas = Sipp::new(Scenario::Uas)
        .name("phones")
        .local(block.phone(0), PHONE_PORT)
        .calls(callees.len() as u64)
        .trace_messages(true)
        .timeout(Duration::from_secs(300))
        .spawn()
        .expect("phones answer");
    let trunk = User::new("pstn", "");
    let dial: Vec<(User, String)> = callees
        .iter()
        .map(|u| (trunk.clone(), u.name.clone()))
        .collect();
    let uac = Sipp::new(Scenario::Uac)
        .name("trunk")
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .dial(&dial)
        .rate(10.0)
        .var("HOLD_MS", "200")
        .timeout(Duration::from_secs(300))
        .run()
        .expect("trunk calls");
    assert!(uac.all_ok(), "{uac}");
    assert_eq!(uac.successful, callees.len() as u64, "{uac}");
    let phones = uas.wait().expect("phones finish");
    assert!(phones.all_ok(), "{phones}");
    let reached: BTreeSet<String> = phones
        .received("INVITE")
        .iter()
        .filter_map(|m| request_user(m.start_line()))
        .collect();
    for u in &callees {
        assert!(reached.contains(&u.name), "no call reached {}", u.name);
    }
    // Through holdline (its Via on top), not around it.
    let invites = phones.received("INVITE");
    let via = invites
        .first()
        .and_then(|m| m.header("Via"))
        .unwrap_or_default()
        .to_string();
    assert!(via.contains(&hl.lan().to_string()), "top Via {via:?}");
    println!(
        "{} phones, {} rows damaged at rest + 3 while running, {} inbound calls routed",
        PHONES,
        damage.len(),
        reached.len()
    );
}

/// Starts holdline on whatever store file is in place and checks what issue 5.5 asks.
fn start_on_damaged_file(
    hl: &mut Holdline,
    block: &Block,
    bytes: &[u8],
    phone: u8,
    user: &User,
    what: &str,
) {
    let db = hl.dir().join("holdline.db");
    remove_store(&db);
    std::fs::write(&db, bytes).expect("write damaged store");
    let aside_before = set_aside_files(hl.dir());
    hl.start_again()
        .unwrap_or_else(|e| panic!("holdline does not start on a {what} store: {e}"));

    // Serves: a phone registers through it.
    let r = register(block, hl, phone, std::slice::from_ref(user), 10.0);
    assert!(r.all_ok(), "{what}: {r}");
    assert!(
        registered(hl).contains(&user.aor()),
        "{what}: {} not registered",
        user.aor()
    );

    // The old file is set aside, byte for byte, not deleted.
    let new: Vec<PathBuf> = set_aside_files(hl.dir())
        .difference(&aside_before)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "{what}: one file set aside, got {new:?}");
    let kept = std::fs::read(&new[0]).expect("read set-aside file");
    assert!(kept == bytes, "{what}: the set-aside file was modified");

    // The event is on the console (event log) and in holdline's log.
    let events = hl.console_json(&["show", "log"]).expect("show log");
    assert!(events.contains("store.set_aside"), "{what}: {events}");
    let log = hl.log();
    assert!(log.contains("set aside"), "{what}: {log}");
}

#[test]
fn a_truncated_or_garbage_store_at_start_is_set_aside_and_the_appliance_serves() {
    let block = Block::allocate();
    let users = User::numbered(5000, 3);
    let _cloud = Kamailio::start(block.cloud(), KamailioOpts::with_users(users.clone()))
        .expect("Kamailio cloud starts");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
    let r = register(&block, &hl, 0, &users[..1], 10.0);
    assert!(r.all_ok(), "{r}");
    hl.stop().expect("holdline stops");

    // A truncated file (cut off a page boundary in its second half).
    let db = hl.dir().join("holdline.db");
    let truncated = hl.dir().join("truncated.db");
    let out = corrupt(&[
        db.to_str().expect("utf-8 path"),
        truncated.to_str().expect("utf-8 path"),
        "--file",
        "truncate",
    ]);
    assert!(out.contains("truncated from"), "{out}");
    let bytes = std::fs::read(&truncated).expect("read truncated copy");
    start_on_damaged_file(&mut hl, &block, &bytes, 1, &users[1], "truncated");
    hl.stop().expect("holdline stops");

    // Garbage: 64 KiB that are not a database at all.
    let mut x: u64 = 0x0123_4567_89ab_cdef;
    let garbage: Vec<u8> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    start_on_damaged_file(&mut hl, &block, &garbage, 2, &users[2], "garbage");
    assert_eq!(set_aside_files(hl.dir()).len(), 2, "both files kept");
}

#[test]
fn the_resync_after_a_cloud_restart_gives_back_every_good_binding_of_a_damaged_store() {
    const PHONES: usize = 120;
    let block = Block::allocate();
    let users = User::numbered(6000, PHONES);
    let mut kopts = KamailioOpts::with_users(users.clone());
    kopts.trusted = vec![block.holdline().into()];
    let mut cloud = Kamailio::start(block.cloud(), kopts).expect("Kamailio cloud starts");
    let mut hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
    // Trusted resync: holdline re-registers verified phones itself when the cloud returns.
    let text = std::fs::read_to_string(hl.config_path()).expect("config");
    let text = text.replacen(
        "[cloud]\n",
        "[cloud]\ntrusted = true\nresync_rate = 50\n",
        1,
    );
    std::fs::write(hl.config_path(), text).expect("config");
    hl.start_again().expect("holdline with trusted resync");

    let reg = register(&block, &hl, 0, &users, 30.0);
    assert!(reg.all_ok(), "{reg}");
    hl.stop().expect("holdline stops");
    let (_, lost, _) = damage_every_kind(&hl, PHONES);
    set_purge_interval(&hl, 1);
    hl.start_again()
        .expect("holdline starts on a damaged store");

    // The phones stay up (they answer holdline's liveness OPTIONS: SIPp's -aa).
    let phones = Sipp::new(Scenario::Uas)
        .name("phones-alive")
        .local(block.phone(0), PHONE_PORT)
        .calls(1)
        .timeout(Duration::from_secs(300))
        .spawn()
        .expect("phones listen");

    // The cloud dies and comes back with an empty location table.
    cloud.crash().expect("kill the cloud");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = hl.console_json(&["status"]).unwrap_or_default();
        if j.contains("\"cloud\":\"down\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "holdline never saw the cloud down: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    cloud.start_again().expect("cloud restarts");
    let good: Vec<String> = users
        .iter()
        .filter(|u| !lost.contains(&u.aor()))
        .map(|u| u.name.clone())
        .collect();
    let table = cloud
        .wait_location(Duration::from_secs(150), |t| {
            good.iter().all(|g| t.iter().any(|c| &c.aor == g))
        })
        .expect("location table");
    let missing: Vec<&String> = good
        .iter()
        .filter(|g| !table.iter().any(|c| &c.aor == *g))
        .collect();
    assert!(
        missing.is_empty(),
        "good phones not given back to the cloud by the resync: {missing:?}\n{}\n{}",
        hl.console_json(&["show", "resync"]).unwrap_or_default(),
        hl.log()
    );
    for aor in &lost {
        let name = aor
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or_default();
        assert!(
            !table.iter().any(|c| c.aor == name),
            "{aor} (bad row, quarantined) was given to the cloud"
        );
    }
    let status = hl.console(&["status"]).expect("status");
    assert!(status.ok, "{}{}", status.stdout, status.stderr);
    assert!(!hl.log().contains("panicked"));
    drop(phones);
    println!(
        "resync over a damaged store: {} good phones back in the cloud, {} bad rows left out",
        good.len(),
        lost.len()
    );
}
