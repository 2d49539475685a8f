//! The built `holdline` binary as a test peer: a fixture config written into
//! a run directory, the daemon started with `holdline run --config`, ready
//! when its console answers, stopped on `Drop` (its log printed when the test
//! fails), restartable with the same config and store.
//!
//! The binary is found in the profile directory of the running executable
//! (`target/<profile>/holdline`; a test lives in `target/<profile>/deps`, a
//! benchmark bin in `target/<profile>`); when cargo runs the tests it is (re)built first
//! with `cargo build -p holdline`, so a stale binary is never tested.
//!
//! ```no_run
//! use holdline_tests::{holdline::{Holdline, HoldlineOpts}, net::Block};
//! let block = Block::allocate();
//! let hl = Holdline::start(HoldlineOpts::new(&block)).expect("holdline starts");
//! let status = hl.console(&["status"]).expect("console answers");
//! assert!(status.ok);
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::net::Block;
use crate::proc::{self, ChildGuard, RunDir};
use crate::RigError;

/// LAN port of holdline in the tests (phones send here).
pub const LAN_PORT: u16 = 5060;
/// WAN port of holdline in the tests (the cloud sends here).
pub const WAN_PORT: u16 = 5070;

/// How a test's holdline is configured.
#[derive(Debug, Clone)]
pub struct HoldlineOpts {
    /// Listen address (LAN and WAN use different ports on it).
    pub ip: Ipv4Addr,
    /// The cloud proxy.
    pub cloud: SocketAddrV4,
    /// LAN transport(s): `udp`, `tcp`.
    pub transports: Vec<&'static str>,
    /// OPTIONS probe interval.
    pub probe_interval_ms: u64,
    /// Phones' subnets.
    pub lan_subnets: Vec<String>,
    /// Extra TOML appended to the config (extra sections).
    pub extra: String,
}

impl HoldlineOpts {
    /// holdline on the block's `.1`, the cloud on `.2:5060`, UDP and TCP,
    /// the whole block as the phones' subnet.
    pub fn new(block: &Block) -> HoldlineOpts {
        HoldlineOpts {
            ip: block.holdline(),
            cloud: SocketAddrV4::new(block.cloud(), 5060),
            transports: vec!["udp", "tcp"],
            probe_interval_ms: 1000,
            lan_subnets: vec![format!("{}.0/24", block.prefix())],
            extra: String::new(),
        }
    }

    /// The config text for a run directory.
    pub fn config_text(&self, dir: &Path) -> String {
        let listen = |port: u16| {
            self.transports
                .iter()
                .map(|t| format!("\"{t}:{}:{port}\"", self.ip))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let subnets = self
            .lan_subnets
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "# written by holdline_tests::holdline\n\
             [lan]\nlisten = [{lan}]\nsubnets = [{subnets}]\n\
             [wan]\nlisten = [{wan}]\n\
             [cloud]\nproxy = \"udp:{cloud}\"\ndomain = \"{domain}\"\n\
             [uplink]\nprobe_interval_ms = {probe}\n\
             [store]\npath = \"{db}\"\n\
             [console]\nsocket = \"{sock}\"\n\
             [log]\nlevel = \"info\"\n{extra}",
            lan = listen(LAN_PORT),
            wan = listen(WAN_PORT),
            cloud = self.cloud,
            domain = crate::kamailio::DOMAIN,
            probe = self.probe_interval_ms,
            db = dir.join("holdline.db").display(),
            sock = dir.join("console.sock").display(),
            extra = self.extra,
        )
    }
}

/// A console answer.
#[derive(Debug, Clone)]
pub struct ConsoleAnswer {
    /// Exit status 0.
    pub ok: bool,
    /// Exit code.
    pub code: Option<i32>,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

/// A running holdline.
pub struct Holdline {
    opts: HoldlineOpts,
    dir: RunDir,
    config: PathBuf,
    guard: Option<ChildGuard>,
}

/// The `holdline` binary of the profile the tests were built with, built
/// (once per test process) when cargo runs the tests.
pub fn binary() -> Result<PathBuf, RigError> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // A test: target/<profile>/deps/<test> → target/<profile>;
            // a bin of this crate (a benchmark): target/<profile>/<bin>.
            let dir = exe
                .parent()
                .ok_or_else(|| format!("unexpected executable path {}", exe.display()))?;
            let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
                dir.parent().unwrap_or(dir).to_path_buf()
            } else {
                dir.to_path_buf()
            };
            let bin = profile_dir.join("holdline");
            if let Some(cargo) = std::env::var_os("CARGO") {
                let mut cmd = Command::new(cargo);
                cmd.args(["build", "--quiet", "-p", "holdline", "--bin", "holdline"]);
                if profile_dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
                let out = proc::run_bounded(cmd, Duration::from_secs(900))
                    .map_err(|e| format!("cargo build -p holdline: {e}"))?;
                if !out.status.success() {
                    return Err(format!("cargo build -p holdline failed:\n{}", out.stderr));
                }
            }
            if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!(
                    "{} not found: run `cargo build -p holdline` first",
                    bin.display()
                ))
            }
        })
        .clone()
        .map_err(|detail| RigError::Startup {
            what: "holdline binary".into(),
            detail,
        })
}

/// Runs the binary with `args` to completion (bounded), for CLI tests.
pub fn run_cli(args: &[&str], timeout: Duration) -> Result<proc::Output, RigError> {
    let mut cmd = Command::new(binary()?);
    cmd.args(args);
    proc::run_bounded(cmd, timeout).map_err(|e| RigError::io("running holdline", e))
}

impl Holdline {
    /// Writes the config and starts holdline; returns once its console answers.
    pub fn start(opts: HoldlineOpts) -> Result<Holdline, RigError> {
        let dir = RunDir::new("holdline").map_err(|e| RigError::io("run dir", e))?;
        let config = dir.join("holdline.toml");
        std::fs::write(&config, opts.config_text(dir.path()))
            .map_err(|e| RigError::io("writing holdline.toml", e))?;
        let mut hl = Holdline {
            opts,
            dir,
            config,
            guard: None,
        };
        hl.start_process()?;
        Ok(hl)
    }

    fn start_process(&mut self) -> Result<(), RigError> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("run").arg("--config").arg(&self.config);
        cmd.current_dir(self.dir.path());
        let guard = ChildGuard::spawn("holdline", cmd, self.dir.path())
            .map_err(|e| RigError::io("starting holdline", e))?;
        self.guard = Some(guard);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(g) = self.guard.as_mut() {
                if !g.is_running() {
                    return Err(RigError::Startup {
                        what: "holdline".into(),
                        detail: g.log_tail(40),
                    });
                }
            }
            if let Ok(a) = self.console(&["status"]) {
                if a.ok {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(RigError::Startup {
                    what: "holdline".into(),
                    detail: format!("console not answering after 30 s\n{}", self.log()),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where phones send (LAN, UDP).
    pub fn lan(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.opts.ip, LAN_PORT))
    }

    /// Where the cloud sends (WAN).
    pub fn wan(&self) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.opts.ip, WAN_PORT))
    }

    /// The Path value holdline puts in REGISTERs (its WAN side).
    pub fn path_uri(&self) -> String {
        format!("sip:{}:{WAN_PORT};lr", self.opts.ip)
    }

    /// The run directory (config, store, console socket, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The console socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// Runs `holdline console --socket S ARGS...`.
    pub fn console(&self, args: &[&str]) -> Result<ConsoleAnswer, RigError> {
        let mut cmd = Command::new(binary()?);
        cmd.arg("console")
            .arg("--socket")
            .arg(self.socket())
            .args(args);
        let out = proc::run_bounded(cmd, Duration::from_secs(20))
            .map_err(|e| RigError::io("holdline console", e))?;
        Ok(ConsoleAnswer {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    /// Runs a console command with `--json`; fails unless it succeeded.
    pub fn console_json(&self, args: &[&str]) -> Result<String, RigError> {
        let mut a: Vec<&str> = vec!["--json"];
        a.extend_from_slice(args);
        let ans = self.console(&a)?;
        if !ans.ok {
            return Err(RigError::Command {
                what: format!("holdline console {}", args.join(" ")),
                detail: format!("{}{}", ans.stdout, ans.stderr),
            });
        }
        Ok(ans.stdout)
    }

    /// Polls a console command until `pred` holds on its JSON or `timeout` passes.
    pub fn wait_console(
        &self,
        args: &[&str],
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.console_json(args)?;
            if pred(&out) || Instant::now() > deadline {
                return Ok(out);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        proc::read_lossy(&self.dir.join("holdline.stderr"))
    }

    /// Stops it with SIGTERM (clean shutdown) and returns its exit code.
    pub fn stop(&mut self) -> Result<Option<i32>, RigError> {
        match self.guard.take() {
            Some(mut g) => g
                .terminate(Duration::from_secs(10))
                .map(|s| s.code())
                .map_err(|e| RigError::io("stopping holdline", e)),
            None => Ok(None),
        }
    }

    /// Kills it (SIGKILL: a crash, as far as anyone can tell).
    pub fn kill(&mut self) -> Result<(), RigError> {
        if let Some(mut g) = self.guard.take() {
            g.kill().map_err(|e| RigError::io("killing holdline", e))?;
        }
        Ok(())
    }

    /// Starts it again with the same config and store.
    pub fn start_again(&mut self) -> Result<(), RigError> {
        self.stop()?;
        self.start_process()
    }
}

impl Drop for Holdline {
    fn drop(&mut self) {
        // The guard stops the process (and prints its log tail if the test panicked).
        self.guard.take();
    }
}
