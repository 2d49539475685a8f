//! Failure detection time (issue 4's figure): how long after the Kamailio
//! cloud dies (SIGKILL: ICMP unreachable from then on) or goes silent
//! (SIGSTOP: no answer at all) does holdline's `show cloud` say `down`?
//!
//! ```text
//! cargo build --release -p holdline && cargo build -p holdline-tests --bin detect_bench
//! target/debug/detect_bench [--runs 20] [--mode both|kill|freeze] [--probe-ms default|MS] [--holdline PATH]
//! ```
//!
//! `--probe-ms default` (the default) leaves `[uplink]` out of the config,
//! so holdline's own defaults (probe interval, probe timeout, misses before
//! Down) are what is measured; a number sets `probe_interval_ms` only.
//!
//! Each run starts a fresh cloud and a fresh holdline (so hold-down and flap
//! history never carry over), waits until `show cloud` says `up`, waits a
//! varying fraction of a probe interval (so the failure lands at every phase
//! of the probe cycle), fails the cloud and polls `holdline console --json
//! show cloud` every 20 ms until the state is `down` (10 s bound). The
//! figure includes the console's own round trip (a few ms).

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use holdline_tests::holdline::HoldlineOpts;
use holdline_tests::kamailio::{Kamailio, KamailioOpts};
use holdline_tests::net::Block;
use holdline_tests::proc::{self as rigproc, ChildGuard, RunDir};
use holdline_tests::RigError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Kill,
    Freeze,
}

const USAGE: &str = "usage: detect_bench [--runs N] [--mode both|kill|freeze] \
                     [--probe-ms default|MS] [--holdline PATH]";

struct Args {
    runs: usize,
    modes: Vec<Mode>,
    /// `None`: holdline's own default.
    probe_ms: Option<u64>,
    holdline: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        runs: 20,
        modes: vec![Mode::Kill, Mode::Freeze],
        probe_ms: None,
        holdline: ["release", "debug"]
            .iter()
            .map(|p| root.join("target").join(p).join("holdline"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| root.join("target/release/holdline")),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => a.runs = v.parse().map_err(|_| format!("not a number: {v}"))?,
            "--probe-ms" if v == "default" => a.probe_ms = None,
            "--probe-ms" => a.probe_ms = Some(v.parse().map_err(|_| format!("not a number: {v}"))?),
            "--holdline" => a.holdline = PathBuf::from(v),
            "--mode" => {
                a.modes = match v.as_str() {
                    "both" => vec![Mode::Kill, Mode::Freeze],
                    "kill" => vec![Mode::Kill],
                    "freeze" => vec![Mode::Freeze],
                    other => return Err(format!("--mode {other}: both|kill|freeze")),
                }
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
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
    let mut lines = vec![format!(
        "\nholdline failure detection: {} runs per mode, probe interval {}, binary {}\n\n\
         | cloud failure | runs | detected | median (ms) | best (ms) | worst (ms) |\n|---|---|---|---|---|---|",
        args.runs,
        match args.probe_ms {
            Some(ms) => format!("{ms} ms"),
            None => "holdline's default ([uplink] not in the config)".into(),
        },
        args.holdline.display()
    )];
    for mode in &args.modes {
        let mut times = Vec::new();
        let mut missed = 0;
        for run in 0..args.runs {
            match one_run(&args, *mode, run) {
                Ok(Some(ms)) => {
                    eprintln!("{mode:?} run {run}: down after {ms:.0} ms");
                    times.push(ms);
                }
                Ok(None) => {
                    eprintln!("{mode:?} run {run}: not down within 10 s");
                    missed += 1;
                }
                Err(e) => {
                    eprintln!("{mode:?} run {run}: {e}");
                    missed += 1;
                }
            }
        }
        times.sort_by(f64::total_cmp);
        let at = |i: usize| {
            times
                .get(i)
                .map(|t| format!("{t:.0}"))
                .unwrap_or("-".into())
        };
        lines.push(format!(
            "| {} | {} | {} | {} | {} | {} |",
            match mode {
                Mode::Kill => "killed (SIGKILL)",
                Mode::Freeze => "silent (SIGSTOP)",
            },
            args.runs,
            args.runs - missed,
            at(times.len() / 2),
            at(0),
            at(times.len().saturating_sub(1)),
        ));
    }
    println!("{}", lines.join("\n"));
    ExitCode::SUCCESS
}

/// holdline's default `[uplink] probe_interval_ms` (only used to spread the
/// moment of failure over a probe cycle).
const DEFAULT_PROBE_INTERVAL_MS: u64 = 500;

/// The rig's config without its `[uplink]` section (which holds only the
/// probe interval), so holdline's defaults apply.
fn without_uplink(text: &str) -> String {
    text.lines()
        .filter(|l| *l != "[uplink]" && !l.starts_with("probe_interval_ms"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `holdline console --json show cloud` → the `state` string, wherever it
/// sits in the JSON.
fn cloud_state(bin: &PathBuf, socket: &std::path::Path) -> Option<String> {
    let mut cmd = Command::new(bin);
    cmd.arg("console")
        .arg("--socket")
        .arg(socket)
        .args(["--json", "show", "cloud"]);
    let out = rigproc::run_bounded(cmd, Duration::from_secs(10)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    find_state(&v)
}

fn find_state(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(serde_json::Value::String(s)) = m.get("state") {
                return Some(s.clone());
            }
            m.values().find_map(find_state)
        }
        serde_json::Value::Array(a) => a.iter().find_map(find_state),
        _ => None,
    }
}

fn one_run(args: &Args, mode: Mode, run: usize) -> Result<Option<f64>, RigError> {
    let block = Block::allocate();
    let mut cloud = Kamailio::start(block.cloud(), KamailioOpts::default())?;
    let dir = RunDir::new("detect-holdline").map_err(|e| RigError::Io {
        what: "run dir".into(),
        source: e,
    })?;
    let mut opts = HoldlineOpts::new(&block);
    let mut text = match args.probe_ms {
        Some(ms) => {
            opts.probe_interval_ms = ms;
            opts.config_text(dir.path())
        }
        None => without_uplink(&opts.config_text(dir.path())),
    };
    text.push('\n');
    let config = dir.join("holdline.toml");
    std::fs::write(&config, text).map_err(|e| RigError::Io {
        what: "write holdline.toml".into(),
        source: e,
    })?;
    let socket = dir.join("console.sock");
    let mut cmd = Command::new(&args.holdline);
    cmd.arg("run").arg("--config").arg(&config);
    cmd.current_dir(dir.path());
    let mut holdline =
        ChildGuard::spawn("holdline", cmd, dir.path()).map_err(|e| RigError::Io {
            what: "spawn holdline".into(),
            source: e,
        })?;

    // Up first (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if !holdline.is_running() {
            return Err(RigError::Startup {
                what: "holdline".into(),
                detail: holdline.log_tail(30),
            });
        }
        if cloud_state(&args.holdline, &socket).as_deref() == Some("up") {
            break;
        }
        if Instant::now() >= deadline {
            return Err(RigError::Startup {
                what: "holdline".into(),
                detail: format!("cloud never 'up' in show cloud\n{}", holdline.log_tail(30)),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Land the failure at a different phase of the probe cycle each run.
    let interval = args.probe_ms.unwrap_or(DEFAULT_PROBE_INTERVAL_MS);
    let phase = interval * ((run as u64 * 7) % 10) / 10;
    std::thread::sleep(Duration::from_millis(phase));

    let t0 = Instant::now();
    match mode {
        Mode::Kill => cloud.crash()?,
        Mode::Freeze => cloud.freeze()?,
    }
    let limit = t0 + Duration::from_secs(10);
    let detected = loop {
        if cloud_state(&args.holdline, &socket).as_deref() == Some("down") {
            break Some(t0.elapsed().as_secs_f64() * 1000.0);
        }
        if Instant::now() >= limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(holdline);
    drop(cloud);
    drop(dir);
    Ok(detected)
}
