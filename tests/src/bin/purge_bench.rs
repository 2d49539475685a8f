//! Issue 5's SIP-level figure: REGISTER latency (p50/p99, REGISTER sent → final response
//! received) through holdline while the store's expiry purge runs versus while it does
//! not, on a store pre-filled with 100,000 bindings; and holdline's RSS with them loaded.
//! Kamailio answering the same REGISTERs directly is measured in the same run as the
//! reference.
//!
//!     cargo run --release -p holdline-tests --bin purge_bench -- [--bindings N] [--registers M] [--rate R]
//!
//! Phases (each REGISTER is a new AoR, so every one is a store write, durable before the
//! 200 OK): (1) straight to the Kamailio cloud; (2) through holdline with
//! `[store] purge_interval_s = 600` (no purge during the phase); (3) through holdline with
//! `purge_interval_s = 1` (purge passes over the whole table back to back; the first one
//! deletes the 10 % expired rows, so the row count after the phase shows it ran). Every phase
//! starts holdline on a fresh copy of the same filled store. The cloud trusts holdline's
//! and the client's address (no digest challenge: one round trip per REGISTER).
//! Loopback only, bounded in count and time; every process is stopped at the end.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use holdline_tests::holdline::{self, Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, DOMAIN};
use holdline_tests::net::Block;
use holdline_tests::proc::{self, RunDir};

struct Args {
    bindings: usize,
    registers: usize,
    rate: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bindings: 100_000,
        registers: 1000,
        rate: 40.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bindings" => a.bindings = val.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--registers" => a.registers = val.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--rate" => a.rate = val.parse().map_err(|e| format!("{flag}: {e}"))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if !(a.rate > 0.0 && a.rate <= 500.0) || a.registers == 0 || a.registers > 20_000 {
        return Err("--rate must be in (0, 500], --registers in 1..=20000".into());
    }
    Ok(a)
}

/// `target/<profile>` of this executable, and whether it is the release profile.
fn profile_dir() -> Result<(PathBuf, bool), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or_else(|| format!("unexpected path {}", exe.display()))?
        .to_path_buf();
    let release = dir.file_name().is_some_and(|n| n == "release");
    Ok((dir, release))
}

/// A store with `n` bindings (phones on 127.0/16–127.1/16), made by the store's `fill` example.
fn fill(out: &Path, n: usize) -> Result<(), String> {
    let (_, release) = profile_dir()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "run",
        "--quiet",
        "-p",
        "holdline-store",
        "--example",
        "fill",
    ]);
    if release {
        cmd.arg("--release");
    }
    cmd.arg("--")
        .arg(out)
        .arg(n.to_string())
        .arg("3600")
        .arg("127");
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    let o = proc::run_bounded(cmd, Duration::from_secs(1200)).map_err(|e| e.to_string())?;
    if !o.status.success() {
        return Err(format!("fill failed:\n{}{}", o.stdout, o.stderr));
    }
    Ok(())
}

fn remove_store(db: &Path) -> Result<(), String> {
    for side in ["", "-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{side}", db.display()));
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    Ok(())
}

/// The pid of the holdline running with this config (from /proc).
fn holdline_pid(config: &Path) -> Option<u32> {
    let want = config.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains(&want) && c.split('\0').any(|a| a == "run")
            })
        })
}

#[derive(Default)]
struct Figures {
    latencies: Vec<Duration>,
    /// (send offset from the phase start, latency) of REGISTERs slower than 50 ms.
    slow: Vec<(Duration, Duration)>,
    failed: usize,
    lost: usize,
    elapsed: Duration,
}

impl Figures {
    fn pct(&self, p: usize) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = (self.latencies.len() * p / 100).min(self.latencies.len() - 1);
        self.latencies[i].as_secs_f64() * 1000.0
    }
    fn line(&self, what: &str) -> String {
        format!(
            "| {what} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} | {} |",
            self.latencies.len(),
            self.pct(50),
            self.pct(99),
            self.latencies
                .last()
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
            self.slow.len(),
            self.failed,
            self.lost
        )
    }
    fn slow_text(&self) -> String {
        self.slow
            .iter()
            .take(30)
            .map(|(at, l)| format!("{:.1}s:{:.0}ms", at.as_secs_f64(), l.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn call_id_of(msg: &str) -> Option<&str> {
    msg.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("call-id") || name == "i").then(|| value.trim())
    })
}

fn status_of(msg: &str) -> Option<u16> {
    let first = msg.lines().next()?;
    let rest = first.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// `n` REGISTERs (each a new AoR) at `rate`/s from `sock` to `to`; latency of each 200.
fn registers(
    sock: &UdpSocket,
    to: SocketAddr,
    phase: u32,
    n: usize,
    rate: f64,
) -> Result<Figures, String> {
    let local = sock.local_addr().map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(1)))
        .map_err(|e| e.to_string())?;
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut pending: HashMap<String, Instant> = HashMap::new();
    let mut fig = Figures::default();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut last_send = start;
    let mut buf = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if sent < n && now >= start + gap.mul_f64(sent as f64) {
            let user = 300_000 + phase * 20_000 + sent as u32;
            let call_id = format!("pb{phase}-{sent}@{}", local.ip());
            let msg = format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {local};branch=z9hG4bK-pb{phase}-{sent};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{user}@{DOMAIN}>;tag=pb{sent}\r\n\
                 To: <sip:{user}@{DOMAIN}>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 REGISTER\r\n\
                 Contact: <sip:{user}@{local};transport=udp>\r\n\
                 Expires: 3600\r\n\
                 Supported: path\r\n\
                 User-Agent: holdline-purge-bench\r\n\
                 Content-Length: 0\r\n\r\n"
            );
            pending.insert(call_id, Instant::now());
            sock.send_to(msg.as_bytes(), to)
                .map_err(|e| format!("send: {e}"))?;
            sent += 1;
            last_send = Instant::now();
            continue;
        }
        if sent == n && (pending.is_empty() || now > last_send + Duration::from_secs(10)) {
            break;
        }
        match sock.recv_from(&mut buf) {
            Ok((len, _)) => {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..len]);
                let (Some(code), Some(cid)) = (status_of(&text), call_id_of(&text)) else {
                    continue;
                };
                if code < 200 {
                    continue;
                }
                if let Some(t0) = pending.remove(cid) {
                    if code == 200 {
                        let l = at - t0;
                        if l > Duration::from_millis(50) {
                            fig.slow.push((t0 - start, l));
                        }
                        fig.latencies.push(l);
                    } else {
                        fig.failed += 1;
                    }
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => return Err(format!("recv: {e}")),
        }
    }
    fig.lost = pending.len();
    fig.elapsed = start.elapsed();
    fig.latencies.sort();
    Ok(fig)
}

/// Rows in the store's bindings table (sqlite3 shell, read only), or "?".
fn binding_rows(db: &Path) -> String {
    let Ok(sqlite3) = holdline_tests::which("sqlite3") else {
        return "?".into();
    };
    let mut cmd = Command::new(sqlite3);
    cmd.arg("-readonly")
        .arg(db)
        .arg("SELECT count(*) FROM bindings");
    match proc::run_bounded(cmd, Duration::from_secs(60)) {
        Ok(o) if o.status.success() => o.stdout.trim().to_string(),
        _ => "?".into(),
    }
}

fn rss_mib(pid: Option<u32>) -> String {
    pid.and_then(|p| proc::rss_kib(p).ok())
        .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let (_, release) = profile_dir()?;
    println!(
        "purge_bench: {} bindings, {} REGISTERs per phase at {}/s ({} build)",
        args.bindings,
        args.registers,
        args.rate,
        if release { "release" } else { "debug" }
    );
    let work = RunDir::new("purge-bench").map_err(|e| e.to_string())?;
    let filled = work.join("filled.db");
    let t = Instant::now();
    fill(&filled, args.bindings)?;
    println!(
        "filled {} in {:.1} s",
        filled.display(),
        t.elapsed().as_secs_f64()
    );
    holdline::binary().map_err(|e| e.to_string())?;

    let block = Block::try_allocate().map_err(|e| e.to_string())?;
    let mut kopts = KamailioOpts::with_users(Vec::new());
    kopts.trusted = vec![block.holdline().into(), block.phone(0).into()];
    let cloud = Kamailio::start(block.cloud(), kopts).map_err(|e| e.to_string())?;
    let sock = UdpSocket::bind((block.phone(0), 0)).map_err(|e| e.to_string())?;

    let mut rows = Vec::new();
    let direct = registers(&sock, cloud.addr().into(), 0, args.registers, args.rate)?;
    rows.push(direct.line("Kamailio directly (reference)"));
    let mut notes = vec![format!(
        "Kamailio directly: slow (sent at: latency): {}",
        direct.slow_text()
    )];

    let mut hl = Holdline::start(HoldlineOpts::new(&block)).map_err(|e| e.to_string())?;
    let db = hl.dir().join("holdline.db");
    let config = hl.config_path().to_path_buf();
    let base_cfg = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
    for (phase, interval) in [(1u32, 600u64), (2, 1)] {
        hl.stop().map_err(|e| e.to_string())?;
        remove_store(&db)?;
        std::fs::copy(&filled, &db).map_err(|e| e.to_string())?;
        std::fs::write(
            &config,
            base_cfg.replace(
                "[store]\n",
                &format!("[store]\npurge_interval_s = {interval}\n"),
            ),
        )
        .map_err(|e| e.to_string())?;
        let t = Instant::now();
        hl.start_again().map_err(|e| e.to_string())?;
        let ready = t.elapsed();
        let pid = holdline_pid(&config);
        // Let the start settle (and with a 1 s interval, the first purge begin).
        std::thread::sleep(Duration::from_secs(3));
        let rss_loaded = rss_mib(pid);
        let fig = registers(&sock, hl.lan(), phase, args.registers, args.rate)?;
        let rss_after = rss_mib(pid);
        let peak = pid
            .and_then(|p| proc::peak_rss_kib(p).ok())
            .map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        // Evidence that the purge ran: the filled store's expired 10 % are gone.
        let row_count = binding_rows(&db);
        let store = hl
            .console_json(&["show", "store"])
            .map_err(|e| e.to_string())?;
        let label = if interval == 1 {
            "holdline, purge every 1 s (running)".to_string()
        } else {
            format!("holdline, purge interval {interval} s (idle)")
        };
        rows.push(fig.line(&label));
        notes.push(format!(
            "{label}: console ready {:.1} s after start; RSS {rss_loaded} with the bindings \
             loaded, {rss_after} after the phase, peak {peak}; phase took {:.1} s; \
             {row_count} binding rows in the store after it\n  \
             slow (sent at: latency): {}\n  show store: {store}",
            ready.as_secs_f64(),
            fig.elapsed.as_secs_f64(),
            fig.slow_text()
        ));
        let log = hl.log();
        if log.contains("panicked") {
            return Err(format!("holdline panicked:\n{log}"));
        }
    }
    hl.stop().map_err(|e| e.to_string())?;
    drop(cloud);

    println!("\n| path | 200 OKs | p50 | p99 | max | > 50 ms | failed | lost |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    println!();
    for n in &notes {
        println!("{n}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("purge_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
