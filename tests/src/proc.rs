//! Processes the rig starts: own process group, output captured to files,
//! stopped on `Drop`, logs printed when the test that owns them fails.
//!
//! Every child is put in a process group of its own, so that stopping it also
//! stops whatever it forked (Kamailio forks a dozen workers). The child also
//! gets `SIGTERM` when the thread that spawned it dies (`PR_SET_PDEATHSIG`), so a
//! test binary that is killed does not leave peers bound to its addresses:
//! spawn from the thread that owns the guard (the test's own thread).

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Lines of each captured stream printed when a test panics.
const TAIL_LINES: usize = 150;

/// A directory for one test's files (configs, databases, logs, sockets).
///
/// Removed on `Drop`, except when the thread is panicking (or `RIG_KEEP` is
/// set): then it is kept and its path printed, so the run can be inspected.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `$TMPDIR/holdline-tests/<prefix>-<pid>-<n>-<nanos>`.
    pub fn new(prefix: &str) -> io::Result<RunDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir()
            .join("holdline-tests")
            .join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
        fs::create_dir_all(&path)?;
        Ok(RunDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, name: &str) -> io::Result<PathBuf> {
        let p = self.path.join(name);
        fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("[rig] test failed: files kept in {}", self.path.display());
        } else if std::env::var_os("RIG_KEEP").is_some() {
            eprintln!("[rig] RIG_KEEP: files kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A running child process that is stopped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and stdout/stderr captured to
    /// `<log_dir>/<name>.stdout` and `<name>.stderr` (appended, so a restarted
    /// process keeps one log).
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> io::Result<ChildGuard> {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let out = File::options().create(true).append(true).open(&stdout)?;
        let err = File::options().create(true).append(true).open(&stderr)?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(2), which is async-signal-safe; it allocates nothing and
        // touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from)
            });
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start {name} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        Ok(ChildGuard {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        })
    }

    /// The name given at spawn (used in log file names and messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id of the direct child (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the captured stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// Path of the captured stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Captured stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout)
    }

    /// Captured stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr)
    }

    /// Exit status if the child has exited (reaps it).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait()?;
        }
        Ok(self.status)
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to the child's whole process group (no-op once reaped).
    pub fn signal(&mut self, sig: Signal) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        match killpg(self.pgid(), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// `SIGTERM` to the group, up to `grace` to exit, then `SIGKILL`; waits
    /// for the child and returns its status.
    pub fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        self.signal(Signal::SIGTERM)?;
        if self.wait_timeout(grace)?.is_none() {
            let _ = killpg(self.pgid(), Signal::SIGKILL);
        }
        let status = self.child.wait()?;
        self.status = Some(status);
        // Workers that outlived their parent (process group still alive).
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        Ok(status)
    }

    /// `SIGKILL` to the whole group (a crash, as far as peers can tell); waits.
    pub fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        let status = self.child.wait()?;
        self.status = Some(status);
        Ok(status)
    }

    /// The last lines of both captured streams, with headers.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        for (label, path) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = read_lossy(path);
            if text.trim().is_empty() {
                continue;
            }
            s.push_str(&format!(
                "----- {} {label} ({}) -----\n",
                self.name,
                path.display()
            ));
            s.push_str(&tail(&text, lines));
            s.push('\n');
        }
        s
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.terminate(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(TAIL_LINES));
        }
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// Reads a file as lossy UTF-8; empty when it does not exist.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// CPU time (user + system) of a process and all its threads, from
/// `/proc/<pid>/stat`, in seconds. Children are not included.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields resume after ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 (index 0); utime is field 14, stime 15.
    let get = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat field"))
    };
    let ticks = get(11)? + get(12)?;
    Ok(ticks as f64 / clock_ticks() as f64)
}

/// Peak resident set size (`VmHWM`) of a process in KiB.
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size (`VmRSS`) of a process in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, key: &str) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no {key}")))
}

/// Every process whose process group is `pgid` (a guard's whole tree).
pub fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(2))
            .and_then(|f| f.parse::<u32>().ok());
        if pgrp == Some(pgid) {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn clock_ticks() -> u64 {
    // SC_CLK_TCK is 100 on every Linux we run on; ask anyway.
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

/// What a bounded command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
}

/// Runs `cmd` to completion with stdout/stderr captured (through files, so a
/// large output cannot block it), killing it after `timeout`.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> io::Result<Output> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join("holdline-tests");
    fs::create_dir_all(&dir)?;
    let base = dir.join(format!("cmd-{}-{n}", std::process::id()));
    let out_path = base.with_extension("out");
    let err_path = base.with_extension("err");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path)?))
        .stderr(Stdio::from(File::create(&err_path)?));
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = fs::remove_file(&out_path);
            let _ = fs::remove_file(&err_path);
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{program} did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = read_lossy(&out_path);
    let stderr = read_lossy(&err_path);
    let _ = fs::remove_file(&out_path);
    let _ = fs::remove_file(&err_path);
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}
