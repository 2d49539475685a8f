//! Edge benchmark (issue 3's figures): SIPp phones register and call through
//! an edge — holdline, or Kamailio as a plain stateful proxy — in front of the
//! same Kamailio cloud, on loopback. Prints one table.
//!
//! ```text
//! cargo run -p holdline-tests --bin edge_bench -- [--edge both|kamailio|holdline]
//!     [--phones 2000] [--bindings 10000] [--calls 500] [--rate 400] [--call-rate 50]
//!     [--holdline target/release/holdline]
//! ```
//!
//! Per edge, on a freshly restarted cloud (empty location table):
//! 1. `--phones` phones REGISTER (challenge + answer: 2 transactions each) at
//!    `--rate` per second offered; registrations/s achieved = successful / wall time.
//! 2. `--calls` calls from those phones to one answering phone (challenged
//!    INVITE, INVITE, BYE: 3 transactions each, plus ACKs).
//! 3. More phones register until `--bindings` bindings.
//!
//! CPU is utime+stime from `/proc/<pid>/stat` summed over every process of the
//! edge (Kamailio forks workers), read before and after each phase. Memory:
//! the largest `VmHWM` of the edge's processes, their summed `VmHWM`, and their
//! summed PSS (`/proc/<pid>/smaps_rollup`, shared memory counted once) after
//! phases 1 and 3. Every load loop is bounded in count (`-m`) and time.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::{self, Block};
use holdline_tests::proc::{self as rigproc, ChildGuard, RunDir};
use holdline_tests::sipp::{Scenario, Sipp, SippResult};
use holdline_tests::RigError;

const PHONE_PORT: u16 = 5062;
const FIRST_USER: u32 = 100_000;

#[derive(Debug, Clone)]
struct Args {
    edges: Vec<EdgeKind>,
    phones: usize,
    bindings: usize,
    calls: usize,
    rate: f64,
    call_rate: f64,
    holdline: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    Kamailio,
    Holdline,
}

impl EdgeKind {
    fn name(self) -> &'static str {
        match self {
            EdgeKind::Kamailio => "kamailio-edge",
            EdgeKind::Holdline => "holdline",
        }
    }
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let default_holdline = ["release", "debug"]
        .iter()
        .map(|p| root.join("target").join(p).join("holdline"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| root.join("target/release/holdline"));
    let mut a = Args {
        edges: vec![EdgeKind::Kamailio, EdgeKind::Holdline],
        phones: 2000,
        bindings: 10_000,
        calls: 500,
        rate: 400.0,
        call_rate: 50.0,
        holdline: default_holdline,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--edge" => {
                a.edges = match value()?.as_str() {
                    "both" => vec![EdgeKind::Kamailio, EdgeKind::Holdline],
                    "kamailio" => vec![EdgeKind::Kamailio],
                    "holdline" => vec![EdgeKind::Holdline],
                    other => return Err(format!("--edge {other}: both|kamailio|holdline")),
                }
            }
            "--phones" => a.phones = num(&value()?)?,
            "--bindings" => a.bindings = num(&value()?)?,
            "--calls" => a.calls = num(&value()?)?,
            "--rate" => a.rate = num(&value()?)?,
            "--call-rate" => a.call_rate = num(&value()?)?,
            "--holdline" => a.holdline = PathBuf::from(value()?),
            "-h" | "--help" => {
                return Err("usage: edge_bench [--edge both|kamailio|holdline] [--phones N] \
                            [--bindings N] [--calls N] [--rate R] [--call-rate R] [--holdline PATH]"
                    .into())
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.bindings < a.phones {
        a.bindings = a.phones;
    }
    Ok(a)
}

fn num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("not a number: {s}"))
}

/// The edge under test.
enum Edge {
    Kamailio(Kamailio),
    Holdline {
        child: ChildGuard,
        addr: SocketAddrV4,
        _dir: RunDir,
    },
}

impl Edge {
    fn addr(&self) -> SocketAddrV4 {
        match self {
            Edge::Kamailio(k) => k.addr(),
            Edge::Holdline { addr, .. } => *addr,
        }
    }

    fn pids(&mut self) -> Vec<u32> {
        match self {
            Edge::Kamailio(k) => k.pids(),
            Edge::Holdline { child, .. } => rigproc::group_members(child.pid()),
        }
    }

    fn cpu(&mut self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(|p| rigproc::cpu_seconds(p).ok())
            .sum()
    }

    fn memory(&mut self) -> Memory {
        let pids = self.pids();
        let hwm: Vec<u64> = pids
            .iter()
            .filter_map(|p| rigproc::peak_rss_kib(*p).ok())
            .collect();
        Memory {
            processes: pids.len(),
            max_hwm_kib: hwm.iter().copied().max().unwrap_or(0),
            sum_hwm_kib: hwm.iter().sum(),
            sum_pss_kib: pids.iter().filter_map(|p| pss_kib(*p)).sum(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    processes: usize,
    max_hwm_kib: u64,
    sum_hwm_kib: u64,
    sum_pss_kib: u64,
}

fn pss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[derive(Debug, Default)]
struct Report {
    edge: &'static str,
    error: Option<String>,
    reg_ok: u64,
    reg_failed: u64,
    reg_secs: f64,
    reg_cpu: f64,
    call_ok: u64,
    call_failed: u64,
    call_cpu: f64,
    more_ok: u64,
    more_cpu: f64,
    bindings_at_low: u64,
    bindings_at_high: u64,
    mem_low: Memory,
    mem_high: Memory,
    cloud_cpu: f64,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(reports) => {
            print!("{}", table(&args, &reports));
            if reports.iter().any(|r| r.error.is_some()) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("edge_bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<Vec<Report>, RigError> {
    let block = Block::allocate();
    let users = User::numbered(FIRST_USER, args.bindings + 1);
    let callee = users[args.bindings].clone();
    let mut opts = KamailioOpts::with_users(users.clone());
    opts.shm_mb = 256;
    opts.children = 4;
    eprintln!(
        "cloud on {} with {} subscribers (block {})",
        block.cloud(),
        users.len(),
        block.prefix()
    );
    let mut cloud = Kamailio::start(block.cloud(), opts)?;
    let mut reports = Vec::new();
    for (i, kind) in args.edges.iter().enumerate() {
        if i > 0 {
            cloud.restart()?;
        }
        let mut report = Report {
            edge: kind.name(),
            ..Report::default()
        };
        let cloud_cpu0 = group_cpu(&mut cloud);
        if let Err(e) = bench_edge(
            *kind,
            args,
            &block,
            &mut cloud,
            &users,
            &callee,
            &mut report,
        ) {
            eprintln!("{}: {e}", kind.name());
            report.error = Some(e.to_string());
        }
        report.cloud_cpu = group_cpu(&mut cloud) - cloud_cpu0;
        reports.push(report);
    }
    Ok(reports)
}

fn group_cpu(k: &mut Kamailio) -> f64 {
    k.pids()
        .into_iter()
        .filter_map(|p| rigproc::cpu_seconds(p).ok())
        .sum()
}

fn start_edge(
    kind: EdgeKind,
    args: &Args,
    block: &Block,
    cloud: &Kamailio,
) -> Result<Edge, RigError> {
    match kind {
        EdgeKind::Kamailio => {
            // 256 MB shared memory: with the stock 64 MB, t_newtran runs out
            // of shm at 1500 registrations/s (transactions linger for the
            // wait timer). RSS counts only the pages it touches.
            let opts = KamailioOpts {
                shm_mb: 256,
                ..KamailioOpts::default()
            };
            Ok(Edge::Kamailio(Kamailio::start_edge(
                block.edge(),
                cloud.addr(),
                opts,
            )?))
        }
        EdgeKind::Holdline => start_holdline(args, block.holdline(), cloud.addr()),
    }
}

fn start_holdline(args: &Args, ip: Ipv4Addr, cloud: SocketAddrV4) -> Result<Edge, RigError> {
    if !args.holdline.is_file() {
        return Err(RigError::Startup {
            what: "holdline".into(),
            detail: format!(
                "no binary at {} (cargo build --release -p holdline)",
                args.holdline.display()
            ),
        });
    }
    let dir = RunDir::new("bench-holdline").map_err(|e| RigError::Io {
        what: "run dir".into(),
        source: e,
    })?;
    let config = format!(
        "[lan]\nlisten = [\"udp:{ip}:5060\", \"tcp:{ip}:5060\"]\n\
         [wan]\nlisten = [\"udp:{ip}:5070\", \"tcp:{ip}:5070\"]\n\
         [cloud]\nproxy = \"udp:{cloud}\"\ndomain = \"cloud.test\"\n\
         [store]\npath = \"{}\"\n\
         [board]\nprofile = \"sim\"\n\
         [console]\nsocket = \"{}\"\n",
        dir.join("holdline.db").display(),
        dir.join("console.sock").display()
    );
    let config_path = dir.join("holdline.toml");
    std::fs::write(&config_path, config).map_err(|e| RigError::Io {
        what: "write holdline.toml".into(),
        source: e,
    })?;
    let mut cmd = Command::new(&args.holdline);
    cmd.arg("run").arg("--config").arg(&config_path);
    cmd.current_dir(dir.path());
    let mut child = ChildGuard::spawn("holdline", cmd, dir.path()).map_err(|e| RigError::Io {
        what: "spawn holdline".into(),
        source: e,
    })?;
    let addr = SocketAddrV4::new(ip, 5060);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(RigError::Startup {
                what: "holdline".into(),
                detail: format!("exited with {status}:\n{}", child.log_tail(30)),
            });
        }
        if net::sip_options(ip, SocketAddr::V4(addr), Duration::from_millis(500)).is_ok() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(RigError::Startup {
                what: "holdline".into(),
                detail: format!("no answer to OPTIONS on {addr}:\n{}", child.log_tail(30)),
            });
        }
    }
    Ok(Edge::Holdline {
        child,
        addr,
        _dir: dir,
    })
}

fn register(
    name: &str,
    block: &Block,
    phone: u8,
    edge: SocketAddrV4,
    users: &[User],
    rate: f64,
) -> Result<SippResult, RigError> {
    // Bound: every phone gets its turn at `rate`, plus generous slack.
    let secs = (users.len() as f64 / rate.max(1.0)) as u64 + 120;
    Sipp::new(Scenario::Register)
        .name(name)
        .local(block.phone(phone), PHONE_PORT)
        .remote(SocketAddr::V4(edge))
        .users(users)
        .rate(rate)
        .limit(200)
        .timeout(Duration::from_secs(secs))
        .run()
}

fn bench_edge(
    kind: EdgeKind,
    args: &Args,
    block: &Block,
    cloud: &mut Kamailio,
    users: &[User],
    callee: &User,
    r: &mut Report,
) -> Result<(), RigError> {
    let mut edge = start_edge(kind, args, block, cloud)?;
    let addr = edge.addr();
    eprintln!("{}: edge on {addr}", kind.name());

    // Phase 1: N phones register.
    let cpu0 = edge.cpu();
    let reg = register("register", block, 0, addr, &users[..args.phones], args.rate)?;
    r.reg_cpu = edge.cpu() - cpu0;
    r.reg_ok = reg.successful;
    r.reg_failed = reg.failed;
    r.reg_secs = reg.elapsed.as_secs_f64();
    eprintln!("{}: {reg}", kind.name());
    r.bindings_at_low = cloud.location_count()?;
    r.mem_low = edge.memory();

    // Phase 2: calls to one answering phone, registered through the edge.
    let callee_reg = register("callee", block, 1, addr, std::slice::from_ref(callee), 10.0)?;
    if !callee_reg.all_ok() {
        return Err(RigError::Startup {
            what: "callee registration".into(),
            detail: callee_reg.to_string(),
        });
    }
    let uas = Sipp::new(Scenario::Uas)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(args.calls as u64)
        .var("RING_MS", "0")
        .timeout(Duration::from_secs(
            (args.calls as f64 / args.call_rate.max(1.0)) as u64 + 120,
        ))
        .spawn()?;
    let dial: Vec<(User, String)> = users[..args.calls.min(args.phones)]
        .iter()
        .map(|u| (u.clone(), callee.name.clone()))
        .collect();
    let cpu1 = edge.cpu();
    let uac = Sipp::new(Scenario::Uac)
        .name("calls")
        .local(block.phone(0), PHONE_PORT)
        .remote(SocketAddr::V4(addr))
        .dial(&dial)
        .calls(dial.len() as u64)
        .rate(args.call_rate)
        .limit(200)
        .var("HOLD_MS", "100")
        .timeout(Duration::from_secs(
            (dial.len() as f64 / args.call_rate.max(1.0)) as u64 + 120,
        ))
        .run()?;
    r.call_cpu = edge.cpu() - cpu1;
    r.call_ok = uac.successful;
    r.call_failed = uac.failed;
    eprintln!("{}: {uac}", kind.name());
    let uas = uas.stop(Duration::from_secs(10))?;
    eprintln!("{}: {uas}", kind.name());

    // Phase 3: up to the high binding count.
    if args.bindings > args.phones {
        let cpu2 = edge.cpu();
        let more = register(
            "register-more",
            block,
            2,
            addr,
            &users[args.phones..args.bindings],
            args.rate,
        )?;
        r.more_cpu = edge.cpu() - cpu2;
        r.more_ok = more.successful;
        eprintln!("{}: {more}", kind.name());
    }
    r.bindings_at_high = cloud.location_count()?;
    r.mem_high = edge.memory();
    Ok(())
}

fn per_1000(cpu: f64, transactions: u64) -> String {
    if transactions == 0 {
        "-".into()
    } else {
        format!("{:.3}", cpu * 1000.0 / transactions as f64)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn table(args: &Args, reports: &[Report]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nedge benchmark: {} phones, {} calls, {} bindings, offered {}/s registrations, {}/s calls",
        args.phones, args.calls, args.bindings, args.rate, args.call_rate
    );
    let _ = writeln!(
        s,
        "transactions: REGISTER 2 per phone (401 + 200), call 3 (INVITE 407, INVITE 200, BYE)\n"
    );
    let _ = writeln!(
        s,
        "| edge | reg ok/failed | reg/s | CPU s/1000 tx (reg) | calls ok/failed | CPU s/1000 tx (calls) | CPU s/1000 tx (reg to high) | bindings low/high | RSS MiB @low: max VmHWM / sum VmHWM / sum PSS | RSS MiB @high: max VmHWM / sum VmHWM / sum PSS | procs | cloud CPU s |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        if let Some(e) = &r.error {
            if r.reg_ok == 0 {
                let first = e.lines().next().unwrap_or("");
                let _ = writeln!(s, "| {} | not measured: {first} |||||||||||", r.edge);
                continue;
            }
        }
        let reg_s = if r.reg_secs > 0.0 {
            format!("{:.0}", r.reg_ok as f64 / r.reg_secs)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {} | {}/{} | {} | {} | {}/{} | {} | {} | {}/{} | {} / {} / {} | {} / {} / {} | {} | {:.2} |",
            r.edge,
            r.reg_ok,
            r.reg_failed,
            reg_s,
            per_1000(r.reg_cpu, 2 * r.reg_ok),
            r.call_ok,
            r.call_failed,
            per_1000(r.call_cpu, 3 * r.call_ok),
            per_1000(r.more_cpu, 2 * r.more_ok),
            r.bindings_at_low,
            r.bindings_at_high,
            mib(r.mem_low.max_hwm_kib),
            mib(r.mem_low.sum_hwm_kib),
            mib(r.mem_low.sum_pss_kib),
            mib(r.mem_high.max_hwm_kib),
            mib(r.mem_high.sum_hwm_kib),
            mib(r.mem_high.sum_pss_kib),
            r.mem_high.processes,
            r.cloud_cpu
        );
        if let Some(e) = &r.error {
            let _ = writeln!(s, "\n{}: stopped early: {e}", r.edge);
        }
    }
    s
}
