//! Survival figures with the real rig (issue 4's "Figures to report"):
//! a Kamailio cloud on loopback, SIPp phones, a (release) holdline binary.
//!
//! ```text
//! cargo build --release -p holdline && cargo build -p holdline-tests --bin survival_bench
//! target/debug/survival_bench failover [--cycles 2] [--pairs 4] [--call-rate 2] [--hold-ms 3000]
//!     [--phase-s 20] [--failure kill|freeze] [--holdline PATH]
//! target/debug/survival_bench resync [--phones 500] [--per-ip 50] [--outage-s 10]
//!     [--deadline-s 240] [--inbound yes|no] [--trusted yes|no] [--refresh-s S] [--holdline PATH]
//! ```
//!
//! holdline runs with its own defaults (no `[uplink]` section, no
//! `resync_rate`: 50/s) and `[cloud] trusted = true`; the cloud trusts
//! holdline's address. Every process is stopped on the way out (kill on
//! `Drop`), every wait is bounded.
//!
//! **failover**: `2 × --pairs` site phones registered through holdline, each
//! answering calls (and holdline's OPTIONS); caller `i` calls callee `i`
//! through holdline at a steady rate (`--call-rate` calls/s in all, each held
//! `--hold-ms`); one BLF watcher subscribed (through holdline) to every
//! callee. Then `--cycles` times: `--phase-s` with the cloud up, SIGKILL the
//! cloud (or, `--failure freeze`, SIGSTOP it: silent, no ICMP), wait for `down`, `--phase-s` of survival, start the cloud again
//! (empty location and presence tables), wait until every phone is back in
//! its location table and holdline says `up`. Prints:
//! - calls by the phase they started in (cloud up; kill → Down; Down;
//!   restart → resynced), failed, and setup time (INVITE → 200 at the caller);
//!   plus calls in progress at each kill and how many of those failed;
//! - BLF NOTIFY latency: from the phone's message that changes the call's
//!   state (the callee's 180 → `early`, its 200 → `confirmed`, the caller's
//!   BYE → `terminated`) to the first NOTIFY the watcher receives that shows
//!   that call in that state, split by who sent it: the cloud's presence
//!   server (state changes while the cloud is up and holdline has handed the
//!   subscriptions back) or holdline (state changes while it is down).
//!
//! All times come from SIPp's message logs (`-trace_msg`, microsecond wall
//! clock stamps of one machine) and this program's wall clock.
//!
//! **resync**: `--phones` phones (`--per-ip` users on each loopback address,
//! each address answering OPTIONS and calls) registered through holdline;
//! the cloud killed, `--outage-s` later started again with an empty location
//! table; Kamailio's statistics (`core:rcv_requests_register`,
//! `usrloc:location_contacts`) polled about every 100 ms and holdline's
//! `show cloud` state every ~200 ms. Prints the time from the restart until
//! every phone is back, and the REGISTER rate the cloud saw (peak over any
//! window of at least 1 s, and the mean); then one inbound call from a trunk
//! through the cloud to every phone. `--trusted no` measures the untrusted
//! resync, which relies on the phones' own refreshes: the phones then keep
//! refreshing every `--refresh-s` (default 60; Expires twice that), spread
//! evenly, as in `restart_bench` (the same scenario without holdline).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holdline_tests::holdline::HoldlineOpts;
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::proc::{self as rigproc, ChildGuard, RunDir};
use holdline_tests::sipp::{Direction, Scenario, SipMessage, Sipp, SippProcess, SippResult};
use holdline_tests::RigError;

const USAGE: &str = "usage: survival_bench failover [--cycles N] [--pairs N] [--call-rate R] \
                     [--hold-ms MS] [--phase-s S] [--failure kill|freeze] [--holdline PATH]\n       \
                     survival_bench resync [--phones N] [--per-ip N] [--outage-s S] \
                     [--deadline-s S] [--inbound yes|no] [--trusted yes|no] [--refresh-s S] \
                     [--holdline PATH]";

/// Every site phone's SIP port (registration, answering calls and OPTIONS).
const PHONE_PORT: u16 = 5062;
/// Where callers place their calls from.
const CALLER_PORT: u16 = 5064;
/// The BLF watcher's port.
const WATCHER_PORT: u16 = 5066;

#[derive(Debug, Clone)]
struct Args {
    scenario: String,
    holdline: PathBuf,
    cycles: usize,
    pairs: usize,
    call_rate: f64,
    hold_ms: u64,
    phase_s: u64,
    /// failover: SIGSTOP (silent cloud) instead of SIGKILL.
    freeze: bool,
    phones: usize,
    per_ip: usize,
    outage_s: u64,
    deadline_s: u64,
    inbound: bool,
    trusted: bool,
    refresh_s: Option<u64>,
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut it = std::env::args().skip(1);
    let scenario = it.next().ok_or(USAGE)?;
    if !matches!(scenario.as_str(), "failover" | "resync") {
        return Err(USAGE.into());
    }
    let mut a = Args {
        scenario,
        holdline: root.join("target/release/holdline"),
        cycles: 2,
        pairs: 4,
        call_rate: 2.0,
        hold_ms: 3000,
        phase_s: 20,
        freeze: false,
        phones: 500,
        per_ip: 50,
        outage_s: 10,
        deadline_s: 240,
        inbound: true,
        trusted: true,
        refresh_s: None,
    };
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<u64, String> {
            v.parse().map_err(|_| format!("not a number: {v}"))
        };
        match flag.as_str() {
            "--holdline" => a.holdline = PathBuf::from(v),
            "--cycles" => a.cycles = num(&v)?.clamp(1, 10) as usize,
            "--pairs" => a.pairs = num(&v)?.clamp(1, 50) as usize,
            "--call-rate" => {
                a.call_rate = v
                    .parse::<f64>()
                    .map_err(|_| format!("not a number: {v}"))?
                    .clamp(0.05, 50.0)
            }
            "--hold-ms" => a.hold_ms = num(&v)?.min(60_000),
            "--phase-s" => a.phase_s = num(&v)?.clamp(1, 600),
            "--phones" => a.phones = num(&v)?.clamp(1, 5000) as usize,
            "--per-ip" => a.per_ip = num(&v)?.clamp(1, 1000) as usize,
            "--outage-s" => a.outage_s = num(&v)?.min(600),
            "--deadline-s" => a.deadline_s = num(&v)?.clamp(30, 3600),
            "--inbound" => a.inbound = v != "no",
            "--failure" => {
                a.freeze = match v.as_str() {
                    "kill" => false,
                    "freeze" => true,
                    other => return Err(format!("--failure {other}: kill|freeze")),
                }
            }
            "--trusted" => a.trusted = v != "no",
            "--refresh-s" => a.refresh_s = Some(num(&v)?.clamp(10, 3600)),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if !a.trusted && a.refresh_s.is_none() {
        // Untrusted resync relies on the phones' own refreshes.
        a.refresh_s = Some(60);
    }
    if a.phones.div_ceil(a.per_ip) > 150 {
        return Err("--phones / --per-ip must stay within 150 loopback addresses".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if !args.holdline.is_file() {
        eprintln!(
            "no holdline binary at {} (cargo build --release -p holdline)",
            args.holdline.display()
        );
        return ExitCode::from(2);
    }
    let result = match args.scenario.as_str() {
        "failover" => failover(&args),
        _ => resync(&args),
    };
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("survival_bench: {e}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------- clock

/// Seconds since the Unix epoch, now.
fn wall() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// SIPp's message log stamp `2026-11-25 10:22:55.454675` (local time; this
/// machine runs on UTC) → seconds since the epoch.
fn parse_stamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, dd) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let h: f64 = t.next()?.parse().ok()?;
    let mi: f64 = t.next()?.parse().ok()?;
    let sec: f64 = t.next()?.parse().ok()?;
    Some(days_from_civil(y, m, dd) as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// One message of a SIPp message log, with its stamp.
struct Stamped {
    at: f64,
    msg: SipMessage,
}

/// Reads a SIPp `-trace_msg` log with the stamps (the rig's parser drops them).
fn stamped_log(path: &Path) -> Vec<Stamped> {
    const SEP: &str = "----------------------------------------------- ";
    let text = rigproc::read_lossy(path);
    let mut out = Vec::new();
    let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        if let Some(stamp) = line.strip_prefix(SEP) {
            blocks.push((stamp, Vec::new()));
        } else if let Some((_, lines)) = blocks.last_mut() {
            lines.push(line);
        }
    }
    for (stamp, lines) in blocks {
        let Some(at) = parse_stamp(stamp) else {
            continue;
        };
        let Some((desc, rest)) = lines.split_first() else {
            continue;
        };
        let direction = if desc.contains("message received") {
            Direction::Received
        } else if desc.contains("message sent") {
            Direction::Sent
        } else {
            continue;
        };
        let body = rest.join("\r\n");
        let body = body.trim_matches(['\r', '\n']);
        if body.is_empty() {
            continue;
        }
        out.push(Stamped {
            at,
            msg: SipMessage {
                direction,
                text: body.to_string(),
            },
        });
    }
    out
}

fn messages_of(res: &SippResult) -> Vec<Stamped> {
    res.dir()
        .map(|d| stamped_log(&d.join("messages.log")))
        .unwrap_or_default()
}

fn cseq_method(m: &SipMessage) -> Option<&str> {
    m.header("CSeq")?.split_whitespace().nth(1)
}

// ---------------------------------------------------------------- stats

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Nearest-rank percentile of sorted values.
fn pct(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v.get(idx).copied()
}

fn ms(v: Option<f64>) -> String {
    v.map(|s| format!("{:.0}", s * 1000.0))
        .unwrap_or("-".into())
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}")).unwrap_or("-".into())
}

// ---------------------------------------------------------------- holdline

/// The holdline under test: the given binary, its own defaults, trusted resync.
struct Appliance {
    bin: PathBuf,
    child: Option<ChildGuard>,
    dir: RunDir,
    lan: SocketAddr,
}

impl Appliance {
    fn start(bin: &Path, block: &Block, trusted: bool) -> Result<Appliance, RigError> {
        let dir = RunDir::new("survival-bench").map_err(|e| io_err("run dir", e))?;
        let opts = HoldlineOpts::new(block);
        // holdline's own [uplink] defaults; trusted resync at the default rate.
        let base = opts.config_text(dir.path());
        let mut text = base
            .lines()
            .filter(|l| *l != "[uplink]" && !l.starts_with("probe_interval_ms"))
            .collect::<Vec<_>>()
            .join("\n")
            .replacen("[cloud]\n", &format!("[cloud]\ntrusted = {trusted}\n"), 1);
        text.push('\n');
        let config = dir.join("holdline.toml");
        std::fs::write(&config, text).map_err(|e| io_err("write holdline.toml", e))?;
        let mut cmd = Command::new(bin);
        cmd.arg("run").arg("--config").arg(&config);
        cmd.current_dir(dir.path());
        let child = ChildGuard::spawn("holdline", cmd, dir.path())
            .map_err(|e| io_err("spawn holdline", e))?;
        let mut hl = Appliance {
            bin: bin.to_path_buf(),
            child: Some(child),
            dir,
            lan: SocketAddr::new(opts.ip.into(), holdline_tests::holdline::LAN_PORT),
        };
        hl.wait_state(&["up"], Duration::from_secs(60))?;
        Ok(hl)
    }

    /// `holdline console --json ARGS` as JSON (None when it does not answer).
    fn console(&self, args: &[&str]) -> Option<serde_json::Value> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("console")
            .arg("--socket")
            .arg(self.dir.join("console.sock"))
            .arg("--json")
            .args(args);
        let out = rigproc::run_bounded(cmd, Duration::from_secs(10)).ok()?;
        serde_json::from_str(&out.stdout).ok()
    }

    fn state(&self) -> Option<String> {
        find_key(&self.console(&["show", "cloud"])?, "state").and_then(|v| match v {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        })
    }

    /// Polls `show cloud` (every 50 ms) until its state is one of `want`;
    /// returns the wall time it was first seen.
    fn wait_state(&mut self, want: &[&str], within: Duration) -> Result<f64, RigError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut() {
                if !c.is_running() {
                    return Err(RigError::Startup {
                        what: "holdline".into(),
                        detail: c.log_tail(40),
                    });
                }
            }
            let s = self.state();
            if s.as_deref().is_some_and(|s| want.contains(&s)) {
                return Ok(wall());
            }
            if Instant::now() >= deadline {
                return Err(RigError::Startup {
                    what: "holdline".into(),
                    detail: format!(
                        "show cloud never said {want:?} within {within:?} (last: {s:?})\n{}",
                        self.log_tail()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        self.child
            .as_ref()
            .map(|c| c.log_tail(40))
            .unwrap_or_default()
    }
}

fn find_key(v: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .cloned()
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

fn io_err(what: &str, e: std::io::Error) -> RigError {
    RigError::Io {
        what: what.into(),
        source: e,
    }
}

fn register_through(
    name: &str,
    ip: std::net::Ipv4Addr,
    hl: &Appliance,
    users: &[User],
    rate: f64,
) -> Result<SippProcess, RigError> {
    Sipp::new(Scenario::RegisterRefresh)
        .name(name)
        .var("REGISTRATIONS", "1")
        .local(ip, PHONE_PORT)
        .remote(hl.lan)
        .users(users)
        .rate(rate)
        .limit(50)
        .timeout(Duration::from_secs(120))
        .spawn()
}

fn ensure_ok(r: &SippResult, what: &str) -> Result<(), RigError> {
    if r.all_ok() {
        Ok(())
    } else {
        Err(RigError::Startup {
            what: what.into(),
            detail: r.to_string(),
        })
    }
}

/// Waits until every user in `want` has a contact in the cloud's location table.
fn wait_all_back(
    cloud: &Kamailio,
    want: &[User],
    within: Duration,
) -> Result<Option<f64>, RigError> {
    let deadline = Instant::now() + within;
    loop {
        let table = cloud.location().unwrap_or_default();
        if want.iter().all(|u| table.iter().any(|c| c.aor == u.name)) {
            return Ok(Some(wall()));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- failover

const CLOUD: &str = "cloud (Kamailio presence)";
const HOLDLINE: &str = "holdline (survival)";

/// One failover cycle's moments (wall clock, s).
#[derive(Debug, Clone, Copy)]
struct Cycle {
    kill: f64,
    down: f64,
    restart: f64,
    /// Every phone in the location table again and holdline says `up`.
    resynced: Option<f64>,
}

#[derive(Debug, Default)]
struct CallRecord {
    start: Option<f64>,
    answered: Option<f64>,
    bye: Option<f64>,
    ok: bool,
    /// First error response: "INVITE 503", "BYE 404", ...
    final_error: Option<String>,
    /// Every message of the call at the caller: (time, "sent|recv start line (CSeq)").
    trace: Vec<(f64, String)>,
}

fn calls_of(msgs: &[Stamped]) -> BTreeMap<String, CallRecord> {
    let mut calls: BTreeMap<String, CallRecord> = BTreeMap::new();
    for s in msgs {
        let Some(id) = s.msg.header("Call-ID") else {
            continue;
        };
        let c = calls.entry(id.to_string()).or_default();
        c.trace.push((
            s.at,
            format!(
                "{} {} ({}){}{}",
                match s.msg.direction {
                    Direction::Sent => "sent",
                    Direction::Received => "recv",
                },
                s.msg.start_line(),
                s.msg.header("CSeq").unwrap_or("-"),
                s.msg
                    .header("Record-Route")
                    .map(|r| format!(" Record-Route: {r}"))
                    .unwrap_or_default(),
                s.msg
                    .header("Route")
                    .map(|r| format!(" Route: {r}"))
                    .unwrap_or_default()
            ),
        ));
        match (s.msg.direction, s.msg.method(), s.msg.status()) {
            (Direction::Sent, Some("INVITE"), _) => {
                c.start.get_or_insert(s.at);
            }
            (Direction::Sent, Some("BYE"), _) => {
                c.bye.get_or_insert(s.at);
            }
            (Direction::Received, None, Some(code)) => match cseq_method(&s.msg) {
                Some("INVITE") if (200..300).contains(&code) => {
                    c.answered.get_or_insert(s.at);
                }
                Some("BYE") if (200..300).contains(&code) => c.ok = true,
                m if code >= 300 && code != 401 && code != 407 => {
                    c.final_error
                        .get_or_insert_with(|| format!("{} {code}", m.unwrap_or("?")));
                }
                _ => {}
            },
            _ => {}
        }
    }
    calls
}

/// First moment each call reached `early` (callee's 180 sent) and
/// `confirmed` (callee's 200 to INVITE sent), from the callees' logs.
fn callee_events(msgs: &[Stamped], out: &mut HashMap<(String, &'static str), f64>) {
    for s in msgs {
        if s.msg.direction != Direction::Sent || cseq_method(&s.msg) != Some("INVITE") {
            continue;
        }
        let Some(id) = s.msg.header("Call-ID") else {
            continue;
        };
        let state = match s.msg.status() {
            Some(180) | Some(183) => "early",
            Some(200) => "confirmed",
            _ => continue,
        };
        out.entry((id.to_string(), state)).or_insert(s.at);
    }
}

/// (call-id, state) → first arrival at the watcher of a NOTIFY showing it,
/// and whether the cloud sent that NOTIFY (a Via of `cloud_ip` under
/// holdline's) rather than holdline itself.
fn notify_arrivals(msgs: &[Stamped], cloud_ip: &str) -> HashMap<(String, String), (f64, bool)> {
    let mut out = HashMap::new();
    let cloud_via = format!("/UDP {cloud_ip}");
    for s in msgs {
        if s.msg.direction != Direction::Received || s.msg.method() != Some("NOTIFY") {
            continue;
        }
        let from_cloud = s
            .msg
            .headers()
            .any(|(k, v)| (k.eq_ignore_ascii_case("via") || k == "v") && v.contains(&cloud_via));
        for d in s.msg.body().split("<dialog ").skip(1) {
            let Some(id) = d
                .split_once("call-id=\"")
                .and_then(|(_, r)| r.split_once('"'))
                .map(|(v, _)| v.to_string())
            else {
                continue;
            };
            let Some(state) = d
                .split_once("<state")
                .and_then(|(_, r)| r.split_once('>'))
                .and_then(|(_, r)| r.split_once('<'))
                .map(|(v, _)| v.trim().to_string())
            else {
                continue;
            };
            out.entry((id, state)).or_insert((s.at, from_cloud));
        }
    }
    out
}

fn failover(args: &Args) -> Result<String, RigError> {
    let bound = Instant::now() + Duration::from_secs(1800);
    let block = Block::allocate();
    let n = args.pairs;
    let users = User::numbered(1000, 2 * n);
    let watcher_user = User::new("1999", "unused");
    let mut all = users.clone();
    all.push(watcher_user.clone());
    let mut copts = KamailioOpts::with_users(all);
    copts.trusted = vec![block.holdline().into(), block.trunk().into()];
    let mut cloud = Kamailio::start(block.cloud(), copts)?;
    let mut hl = Appliance::start(&args.holdline, &block, true)?;
    eprintln!("holdline up; registering {} site phones", users.len());
    for (i, u) in users.iter().enumerate() {
        let r = register_through(
            &format!("reg-{}", u.name),
            block.phone(i as u8),
            &hl,
            std::slice::from_ref(u),
            10.0,
        )?
        .wait()?;
        ensure_ok(&r, &format!("registration of {}", u.name))?;
    }
    let total_s = args.cycles as u64 * (3 * args.phase_s + 120) + args.phase_s + 60;
    // Every site phone answers calls (and holdline's liveness OPTIONS: -aa).
    let mut phones: Vec<SippProcess> = (0..users.len())
        .map(|i| {
            Sipp::new(Scenario::Uas)
                .name(&format!("phone-{i}"))
                .local(block.phone(i as u8), PHONE_PORT)
                .calls(1_000_000)
                .var("RING_MS", "200")
                .trace_messages(i >= n)
                .timeout(Duration::from_secs(total_s + 120))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let watched: Vec<(User, String)> = users[n..]
        .iter()
        .map(|u| (watcher_user.clone(), u.name.clone()))
        .collect();
    let watcher = Sipp::new(Scenario::Subscribe)
        .name("blf")
        .local(block.phone((2 * n) as u8), WATCHER_PORT)
        .remote(hl.lan)
        .watch(&watched)
        .calls(n as u64)
        .key("expires", "3600")
        .var("IDLE_MS", &((total_s + 60) * 1000).to_string())
        .timeout(Duration::from_secs(total_s + 120))
        .spawn()?;
    cloud.wait_subscriptions(n, Duration::from_secs(30))?;
    let per_pair = args.call_rate / n as f64;
    let max_calls = (per_pair * total_s as f64).ceil() as u64 + 10;
    let callers: Vec<SippProcess> = (0..n)
        .map(|i| {
            Sipp::new(Scenario::Uac)
                .name(&format!("calls-{i}"))
                .local(block.phone(i as u8), CALLER_PORT)
                .remote(hl.lan)
                .dial(&[(users[i].clone(), users[n + i].name.clone())])
                .calls(max_calls)
                .rate(per_pair)
                .limit(20)
                .var("HOLD_MS", &args.hold_ms.to_string())
                .trace_messages(true)
                .timeout(Duration::from_secs(total_s + 60))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let calls_from = wall();
    eprintln!(
        "calls: {n} pairs at {:.2}/s each, held {} ms; BLF watcher on the {n} callees",
        per_pair, args.hold_ms
    );

    let mut cycles = Vec::new();
    for k in 0..args.cycles {
        std::thread::sleep(Duration::from_secs(args.phase_s));
        let kill = wall();
        if args.freeze {
            cloud.freeze()?;
        } else {
            cloud.crash()?;
        }
        let down = hl.wait_state(&["down"], Duration::from_secs(30))?;
        eprintln!("cycle {k}: down {:.2} s after the kill", down - kill);
        std::thread::sleep(Duration::from_secs(args.phase_s));
        // A frozen cloud is killed now; either way it starts with empty tables.
        cloud.crash()?;
        cloud.start_again()?;
        let restart = wall();
        let back = wait_all_back(&cloud, &users, Duration::from_secs(180))?;
        let up = hl.wait_state(&["up"], Duration::from_secs(180)).ok();
        let resynced = match (back, up) {
            (Some(b), Some(u)) => Some(b.max(u)),
            _ => None,
        };
        eprintln!(
            "cycle {k}: restart → all phones back {} s, holdline up {} s",
            secs(back.map(|b| b - restart)),
            secs(up.map(|u| u - restart))
        );
        cycles.push(Cycle {
            kill,
            down,
            restart,
            resynced,
        });
        if Instant::now() > bound {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(args.phase_s));
    let calls_until = wall();

    // Stop placing calls; let the calls in progress end.
    let mut caller_results = Vec::new();
    for c in callers {
        caller_results.push(c.stop(Duration::from_secs(args.hold_ms / 1000 + 30))?);
    }
    std::thread::sleep(Duration::from_secs(2));
    let watcher_res = watcher.stop(Duration::from_secs(5))?;
    let mut callee_results = Vec::new();
    for (i, p) in phones.drain(..).enumerate() {
        let r = p.stop(Duration::from_secs(3))?;
        if i >= n {
            callee_results.push(r);
        }
    }
    let show_resync = hl
        .console(&["show", "resync"])
        .map(|v| v.to_string())
        .unwrap_or_default();
    let show_status = hl
        .console(&["status"])
        .map(|v| v.to_string())
        .unwrap_or_default();
    drop(hl);
    drop(cloud);

    // ---- calls
    let mut calls: BTreeMap<String, CallRecord> = BTreeMap::new();
    let mut sipp_ok = 0;
    let mut sipp_failed = 0;
    for r in &caller_results {
        sipp_ok += r.successful;
        sipp_failed += r.failed;
        calls.extend(calls_of(&messages_of(r)));
    }
    #[derive(Default)]
    struct Bucket {
        started: u64,
        failed: u64,
        codes: BTreeMap<String, u64>,
        setup: Vec<f64>,
        from: f64,
        to: f64,
    }
    let phase_of = |t: f64| -> (usize, usize) {
        // (cycle, phase): phase 0 up, 1 kill→down, 2 down, 3 restart→resynced.
        for (k, c) in cycles.iter().enumerate() {
            if t < c.kill {
                return (k, 0);
            }
            if t < c.down {
                return (k, 1);
            }
            if t < c.restart {
                return (k, 2);
            }
            if t < c.resynced.unwrap_or(f64::INFINITY) {
                return (k, 3);
            }
        }
        (cycles.len(), 0)
    };
    let mut buckets: BTreeMap<(usize, usize), Bucket> = BTreeMap::new();
    // Every phase of every cycle gets a row, empty or not.
    for k in 0..cycles.len() {
        for p in 0..4 {
            buckets.entry((k, p)).or_default();
        }
    }
    buckets.entry((cycles.len(), 0)).or_default();
    let mut in_progress: Vec<(u64, u64)> = vec![(0, 0); cycles.len()];
    let failed_call = |c: &CallRecord| !c.ok;
    for c in calls.values() {
        let Some(start) = c.start else { continue };
        let b = buckets.entry(phase_of(start)).or_default();
        b.started += 1;
        if failed_call(c) {
            b.failed += 1;
            *b.codes
                .entry(c.final_error.clone().unwrap_or("no final".into()))
                .or_default() += 1;
        }
        if let Some(a) = c.answered {
            b.setup.push(a - start);
        }
        let end = c.bye.unwrap_or(f64::INFINITY);
        for (k, cy) in cycles.iter().enumerate() {
            if start < cy.kill && end > cy.kill {
                in_progress[k].0 += 1;
                if failed_call(c) {
                    in_progress[k].1 += 1;
                }
            }
        }
    }
    for ((k, p), b) in buckets.iter_mut() {
        let (from, to) = match (p, cycles.get(*k)) {
            (0, Some(c)) => (
                if *k == 0 {
                    calls_from
                } else {
                    cycles[*k - 1].resynced.unwrap_or(cycles[*k - 1].restart)
                },
                c.kill,
            ),
            (0, None) => (
                cycles.last().and_then(|c| c.resynced).unwrap_or(calls_from),
                calls_until,
            ),
            (1, Some(c)) => (c.kill, c.down),
            (2, Some(c)) => (c.down, c.restart),
            (3, Some(c)) => (c.restart, c.resynced.unwrap_or(calls_until)),
            _ => (0.0, 0.0),
        };
        b.from = from;
        b.to = to;
    }

    let mut out = format!(
        "\nfailover: {} cycles (cloud {}, {} s down, started again with empty tables); \
         {} pairs of site phones calling through holdline at {:.2} calls/s in all, held {} ms; \
         holdline {} with its default [uplink] and resync_rate, trusted resync\n\n\
         | cycle | phase | window (s) | calls started | failed | setup median (ms) | setup worst (ms) |\n\
         |---|---|---|---|---|---|---|\n",
        cycles.len(),
        if args.freeze {
            "silenced by SIGSTOP, then killed"
        } else {
            "SIGKILLed"
        },
        args.phase_s,
        n,
        args.call_rate,
        args.hold_ms,
        args.holdline.display()
    );
    let phase_name = [
        "cloud up",
        "kill → Down",
        "Down (survival)",
        "restart → resynced",
    ];
    for ((k, p), b) in &buckets {
        let setup = sorted(b.setup.clone());
        let codes = if b.codes.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                b.codes
                    .iter()
                    .map(|(c, n)| format!("{n}× {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} | {}{} | {} | {} |\n",
            k + 1,
            phase_name.get(*p).unwrap_or(&"?"),
            (b.to - b.from).max(0.0),
            b.started,
            b.failed,
            codes,
            ms(pct(&setup, 0.5)),
            ms(setup.last().copied()),
        ));
    }
    out.push_str(&format!(
        "\nSIPp's own count over all callers: {sipp_ok} successful, {sipp_failed} failed.\n\n\
         | cycle | kill → Down (s) | Down → restart (s) | restart → resynced (s) | calls in progress at the kill | of them failed |\n\
         |---|---|---|---|---|---|\n"
    ));
    for (k, c) in cycles.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {:.2} | {:.1} | {} | {} | {} |\n",
            k + 1,
            c.down - c.kill,
            c.restart - c.down,
            secs(c.resynced.map(|r| r - c.restart)),
            in_progress[k].0,
            in_progress[k].1
        ));
    }

    // What the failed calls (at most 10) and the slow ones (setup over 5 s,
    // at most 5) saw, times from the INVITE.
    let slow = |c: &CallRecord| match (c.start, c.answered) {
        (Some(s), Some(a)) => a - s > 5.0,
        _ => false,
    };
    let shown = calls
        .iter()
        .filter(|(_, c)| !c.ok)
        .take(10)
        .chain(calls.iter().filter(|(_, c)| c.ok && slow(c)).take(5));
    for (id, c) in shown {
        let t0 = c.start.unwrap_or(0.0);
        eprintln!("{} call {id}:", if c.ok { "slow" } else { "failed" });
        for (at, line) in &c.trace {
            eprintln!("  {:+8.0} ms {line}", (at - t0) * 1000.0);
        }
    }

    // ---- BLF latency
    let mut events: HashMap<(String, &'static str), f64> = HashMap::new();
    for r in &callee_results {
        callee_events(&messages_of(r), &mut events);
    }
    for (id, c) in &calls {
        if let Some(b) = c.bye {
            events.insert((id.clone(), "terminated"), b);
        }
    }
    let arrivals = notify_arrivals(&messages_of(&watcher_res), &block.cloud().to_string());
    // Who sent the first NOTIFY showing the change: the cloud (its Via under
    // holdline's) or holdline. A change never notified is put where it was
    // due: holdline from Down to the restart, the cloud otherwise.
    let due = |t: f64| -> &'static str {
        if cycles.iter().any(|c| t >= c.down && t < c.restart) {
            HOLDLINE
        } else {
            CLOUD
        }
    };
    let mut lat: BTreeMap<(&'static str, &'static str), (Vec<f64>, u64)> = BTreeMap::new();
    for ((id, state), at) in &events {
        // Calls placed after the last phase ended are cut short by the stop.
        if *at > calls_until {
            continue;
        }
        match arrivals.get(&(id.clone(), state.to_string())) {
            Some((n, from_cloud)) => lat
                .entry((if *from_cloud { CLOUD } else { HOLDLINE }, state))
                .or_default()
                .0
                .push(n - at),
            None => lat.entry((due(*at), state)).or_default().1 += 1,
        }
    }
    out.push_str(
        "\nBLF NOTIFY latency: phone's state-changing message (callee 180 → early, callee 200 → \
         confirmed, caller BYE → terminated) → first NOTIFY at the watcher showing that call in that state\n\n\
         | NOTIFY sent by | state | samples | median (ms) | p95 (ms) | worst (ms) | never notified |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for ((who, state), (v, missing)) in &lat {
        let v = sorted(v.clone());
        out.push_str(&format!(
            "| {who} | {state} | {} | {} | {} | {} | {missing} |\n",
            v.len(),
            ms(pct(&v, 0.5)),
            ms(pct(&v, 0.95)),
            ms(v.last().copied())
        ));
    }
    eprintln!("show resync at the end: {show_resync}\nstatus at the end: {show_status}");
    Ok(out)
}

// ---------------------------------------------------------------- resync

/// Kamailio's REGISTER counter and contact count
/// (`kamcmd stats.get_statistics core: usrloc:`; the counter is kex's
/// `rcv_requests_register`, or `rcv_reqs_register` in some versions).
fn cloud_counters(cloud: &Kamailio) -> Option<(u64, u64)> {
    let out = match cloud.kamcmd(&["stats.get_statistics", "core:", "usrloc:"]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("kamcmd stats: {e}");
            return None;
        }
    };
    let get = |names: &[&str]| {
        out.lines().find_map(|l| {
            let (k, v) = l.trim().split_once('=')?;
            names
                .contains(&k.trim())
                .then(|| v.trim().parse::<u64>().ok())
                .flatten()
        })
    };
    let regs = get(&["core:rcv_requests_register", "core:rcv_reqs_register"]);
    let contacts = get(&["usrloc:location_contacts"]);
    if regs.is_none() || contacts.is_none() {
        eprintln!("kamcmd stats: no REGISTER counter or contact count in:\n{out}");
    }
    Some((regs?, contacts?))
}

fn resync(args: &Args) -> Result<String, RigError> {
    let block = Block::allocate();
    let users = User::numbered(20_000, args.phones);
    let groups: Vec<&[User]> = users.chunks(args.per_ip).collect();
    let mut copts = KamailioOpts::with_users(users.clone());
    copts.trusted = vec![block.holdline().into(), block.trunk().into()];
    let mut cloud = Kamailio::start(block.cloud(), copts)?;
    let mut hl = Appliance::start(&args.holdline, &block, args.trusted)?;
    let deadline = Duration::from_secs(args.deadline_s);

    // Register every phone through holdline (a group per address), then let
    // each address answer calls and OPTIONS. With --refresh-s the phones keep
    // refreshing (Expires twice that), their refreshes spread evenly over the
    // interval; they register from one port and answer on another.
    let t = Instant::now();
    let answer_port = if args.refresh_s.is_some() {
        CALLER_PORT
    } else {
        PHONE_PORT
    };
    let mut refreshers: Vec<SippProcess> = Vec::new();
    if let Some(r) = args.refresh_s {
        let total = r + args.outage_s + args.deadline_s + 120;
        for (g, us) in groups.iter().enumerate() {
            let ip = block.phone(g as u8);
            refreshers.push(
                Sipp::new(Scenario::RegisterRefresh)
                    .name(&format!("refresh-{g}"))
                    .local(ip, PHONE_PORT)
                    .remote(hl.lan)
                    .users(us)
                    .rate(us.len() as f64 / r as f64)
                    .limit(us.len() as u64 + 10)
                    .key("expires", &(2 * r).to_string())
                    .var("REFRESH_MS", &(r * 1000).to_string())
                    .var("REGISTRATIONS", &(total / r + 2).to_string())
                    .var("CONTACT_HOSTPORT", &format!("{ip}:{answer_port}"))
                    .timeout(Duration::from_secs(total + 60))
                    .spawn()?,
            );
        }
        let table =
            cloud.wait_location(Duration::from_secs(r + 120), |t| t.len() >= users.len())?;
        if table.len() < users.len() {
            return Err(RigError::Startup {
                what: "registrations".into(),
                detail: format!("{} of {} phones registered", table.len(), users.len()),
            });
        }
    } else {
        let regs: Vec<SippProcess> = groups
            .iter()
            .enumerate()
            .map(|(g, us)| {
                register_through(&format!("reg-{g}"), block.phone(g as u8), &hl, us, 20.0)
            })
            .collect::<Result<_, _>>()?;
        for r in regs {
            let r = r.wait()?;
            ensure_ok(&r, "registration")?;
        }
    }
    eprintln!(
        "{} phones registered through holdline in {:.1} s",
        users.len(),
        t.elapsed().as_secs_f64()
    );
    let before = cloud.location_count()?;
    let mut phones: Vec<SippProcess> = (0..groups.len())
        .map(|g| {
            Sipp::new(Scenario::Uas)
                .name(&format!("phones-{g}"))
                .local(block.phone(g as u8), answer_port)
                .calls(1_000_000)
                .var("RING_MS", "50")
                .timeout(Duration::from_secs(args.deadline_s + args.outage_s + 300))
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let verified = hl
        .console(&["show", "registrations"])
        .map(|v| v.to_string().matches("verified").count())
        .unwrap_or(0);
    eprintln!(
        "cloud holds {before} contacts; 'verified' appears {verified} times in show registrations"
    );

    let kill = wall();
    cloud.crash()?;
    let down = hl.wait_state(&["down"], Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(args.outage_s));
    cloud.start_again()?;
    let restart = wall();
    let t_restart = Instant::now();

    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut first_back: Option<f64> = None;
    let mut all_back: Option<f64> = None;
    let mut states: Vec<(f64, String)> = Vec::new();
    let mut i = 0u64;
    let mut reg_base: Option<u64> = None;
    while t_restart.elapsed() < deadline {
        if let Some((regs, contacts)) = cloud_counters(&cloud) {
            let now = wall();
            reg_base.get_or_insert(regs);
            samples.push((now, regs));
            if contacts > 0 && first_back.is_none() {
                first_back = Some(now);
            }
            if contacts as usize >= users.len() {
                all_back = Some(now);
            }
        }
        if i.is_multiple_of(2) {
            if let Some(s) = hl.state() {
                if states.last().map(|(_, l)| l != &s).unwrap_or(true) {
                    states.push((wall(), s));
                }
            }
        }
        i += 1;
        if all_back.is_some() && states.last().is_some_and(|(_, s)| s == "up") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // A last look for stragglers (re-REGISTERs still in flight).
    std::thread::sleep(Duration::from_millis(500));
    if let Some((regs, _)) = cloud_counters(&cloud) {
        samples.push((wall(), regs));
    }
    let table = cloud.location()?;
    let back: usize = users
        .iter()
        .filter(|u| table.iter().any(|c| c.aor == u.name))
        .count();
    let show_resync = hl
        .console(&["show", "resync"])
        .map(|v| v.to_string())
        .unwrap_or_default();
    let flap_level = hl
        .console(&["show", "cloud"])
        .and_then(|v| find_key(&v, "flap_level"))
        .map(|v| v.to_string())
        .unwrap_or_default();

    // Peak REGISTER rate over windows of at least 1 s.
    let mut peak = 0.0f64;
    for (j, &(tj, cj)) in samples.iter().enumerate() {
        if let Some(&(ti, ci)) = samples[..j].iter().rev().find(|(ti, _)| tj - ti >= 1.0) {
            peak = peak.max((cj - ci) as f64 / (tj - ti));
        }
    }
    let total_regs = samples.last().map(|s| s.1).unwrap_or(0) - reg_base.unwrap_or(0);
    let resync_span = match (first_back, all_back) {
        (Some(f), Some(a)) if a > f => Some(a - f),
        _ => None,
    };

    let inbound = if args.inbound {
        let trunk = User::new("pstn", "");
        let rows: Vec<(User, String)> = users
            .iter()
            .map(|u| (trunk.clone(), u.name.clone()))
            .collect();
        let r = Sipp::new(Scenario::Uac)
            .name("inbound")
            .local(block.trunk(), 5060)
            .remote(SocketAddr::V4(cloud.addr()))
            .dial(&rows)
            .rate(25.0)
            .limit(100)
            .var("HOLD_MS", "100")
            .timeout(Duration::from_secs(users.len() as u64 / 10 + 60))
            .run()?;
        eprintln!("inbound after the resync: {r}");
        format!("{}/{}", r.successful, users.len())
    } else {
        "-".into()
    };
    for p in phones.drain(..).chain(refreshers.drain(..)) {
        let _ = p.stop(Duration::from_secs(2));
    }
    eprintln!("show resync: {show_resync}\nholdline states after the restart: {states:?}");
    let recovering = states
        .iter()
        .find(|(_, s)| s == "recovering")
        .map(|(t, _)| t - restart);
    let up = states
        .iter()
        .find(|(_, s)| s == "up")
        .map(|(t, _)| t - restart);
    drop(hl);
    drop(cloud);

    Ok(format!(
        "\nresync: {} phones ({} per address) registered through holdline ({}, \
         resync_rate default), cloud SIGKILLed, started again {} s later with an empty \
         location table; holdline {}\n\n\
         | phones | in cloud before | kill → Down (s) | restart → recovering (s) | restart → first back (s) | \
         restart → all back (s) | first → all (s) | back | REGISTERs seen | mean rate (/s) | peak rate, ≥1 s window (/s) | \
         holdline up (s) | inbound OK after |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {:.2} | {} | {} | {} | {} | {}/{} | {} | {} | {:.1} | {} | {} |\n\
         (holdline's flap level at the end: {flap_level})\n",
        users.len(),
        args.per_ip,
        match (args.trusted, args.refresh_s) {
            (true, None) => "trusted = true, phones not refreshing".to_string(),
            (true, Some(r)) => format!("trusted = true, phones refreshing every {r} s"),
            (false, Some(r)) => format!("trusted = false, phones refreshing every {r} s"),
            (false, None) => "trusted = false".to_string(),
        },
        args.outage_s,
        args.holdline.display(),
        users.len(),
        before,
        down - kill,
        secs(recovering),
        secs(first_back.map(|f| f - restart)),
        secs(all_back.map(|a| a - restart)),
        secs(resync_span),
        back,
        users.len(),
        total_regs,
        resync_span
            .map(|s| format!("{:.1}", total_regs as f64 / s))
            .unwrap_or("-".into()),
        peak,
        secs(up),
        inbound,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_percentiles() {
        let t = parse_stamp("1970-01-02 00:00:01.5").expect("stamp");
        assert!((t - 86_401.5).abs() < 1e-6);
        let t = parse_stamp("2026-11-25 10:22:55.454675").expect("stamp");
        assert!((t - 1_795_602_175.454_675).abs() < 1e-3, "{t}");
        assert_eq!(pct(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(pct(&[], 0.5), None);
    }
}
