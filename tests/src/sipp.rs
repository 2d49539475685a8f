//! SIPp as phones: scenarios under `tests/sipp/`, run from a given loopback
//! address, bounded in calls (`-m`) and time (SIPp's `-timeout`, and a kill
//! after a deadline), with the exit code, final statistics and (optionally)
//! every message received parsed into a [`SippResult`].
//!
//! Scenario XML may hold `@@NAME@@` placeholders for values SIPp cannot take
//! from `-key` (pause lengths, receive timeouts); [`Sipp::var`] sets them.
//! Injection rows: field 0 user, field 1 `[authentication username=.. password=..]`,
//! field 2 the other party (callee, watched user), field 3.. scenario specific.

use std::fmt;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::kamailio::{fill, User, DOMAIN};
use crate::net;
use crate::proc::{self, ChildGuard, RunDir};
use crate::RigError;

/// The scenarios of the rig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// Each row registers (digest auth). `-key expires` (default 3600; 0 unregisters).
    Register,
    /// Each row registers and refreshes in the same registration every
    /// `REFRESH_MS` (default 30000), `REGISTRATIONS` REGISTERs in all (default 3);
    /// answers a challenge when there is one, accepts a 200 without one.
    /// `CONTACT_HOSTPORT` (default its own address) points the Contact elsewhere.
    RegisterRefresh,
    /// Each row calls field 2, answers the challenge, holds `HOLD_MS` (default 1000), hangs up.
    Uac,
    /// Answers every INVITE (180, `RING_MS` default 200, 200), waits for BYE
    /// (`BYE_TIMEOUT_MS`, default 60000). Stop it with [`SippProcess::stop`].
    Uas,
    /// Each row subscribes to field 2 (`-key event`, default `dialog`) and
    /// answers NOTIFYs until terminated or idle for `IDLE_MS` (default 5000).
    /// `terminated;reason=deactivated|timeout` makes it subscribe again at once
    /// (new From tag) unless `ON_DEACTIVATED` is `done`.
    Subscribe,
    /// A notifier (test double for the watcher): NOTIFY active, then
    /// terminated;reason=deactivated, expects a new SUBSCRIBE, ends it.
    Notifier,
    /// Each row PUBLISHes a message-summary for field 0: fields 2/3 new/old count.
    PublishMwi,
    /// Any other scenario file.
    Custom(PathBuf),
}

impl Scenario {
    fn file(&self) -> PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp");
        match self {
            Scenario::Register => dir.join("register.xml"),
            Scenario::RegisterRefresh => dir.join("register_refresh.xml"),
            Scenario::Notifier => dir.join("notifier.xml"),
            Scenario::Uac => dir.join("uac.xml"),
            Scenario::Uas => dir.join("uas.xml"),
            Scenario::Subscribe => dir.join("subscribe.xml"),
            Scenario::PublishMwi => dir.join("publish_mwi.xml"),
            Scenario::Custom(p) => p.clone(),
        }
    }

    fn name(&self) -> String {
        self.file()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "custom".into())
    }

    fn defaults(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Scenario::Uac => vec![("HOLD_MS", "1000")],
            Scenario::Uas => vec![("RING_MS", "200"), ("BYE_TIMEOUT_MS", "60000")],
            Scenario::Subscribe => vec![("IDLE_MS", "5000"), ("ON_DEACTIVATED", "resubscribe")],
            Scenario::RegisterRefresh => vec![
                ("REFRESH_MS", "30000"),
                ("REGISTRATIONS", "3"),
                ("CONTACT_HOSTPORT", "[local_ip]:[local_port]"),
            ],
            _ => Vec::new(),
        }
    }

    fn default_keys(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Scenario::Register | Scenario::RegisterRefresh => vec![("expires", "3600")],
            Scenario::Subscribe => vec![
                ("event", "dialog"),
                ("accept", "application/dialog-info+xml"),
                ("expires", "3600"),
            ],
            _ => Vec::new(),
        }
    }
}

/// SIP transport for a SIPp run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One UDP socket (`-t u1`).
    Udp,
    /// One TCP connection (`-t t1`).
    Tcp,
}

/// A SIPp run being set up.
#[derive(Debug, Clone)]
pub struct Sipp {
    scenario: Scenario,
    name: Option<String>,
    local_ip: Ipv4Addr,
    local_port: u16,
    remote: Option<SocketAddr>,
    transport: Transport,
    calls: Option<u64>,
    rate: f64,
    limit: Option<u64>,
    timeout: Duration,
    rows: Vec<Vec<String>>,
    keys: Vec<(String, String)>,
    vars: Vec<(String, String)>,
    trace_msg: bool,
    extra: Vec<String>,
}

impl Sipp {
    /// A run of `scenario` from 127.0.0.1 (set [`Sipp::local`]) with domain
    /// `cloud.test`, rate 10/s, UDP, a 120 s bound, SIPp's `-aa` (answers
    /// out-of-dialog OPTIONS/NOTIFY/INFO/UPDATE, as a phone does).
    pub fn new(scenario: Scenario) -> Sipp {
        Sipp {
            scenario,
            name: None,
            local_ip: Ipv4Addr::LOCALHOST,
            local_port: 0,
            remote: None,
            transport: Transport::Udp,
            calls: None,
            rate: 10.0,
            limit: None,
            timeout: Duration::from_secs(120),
            rows: Vec::new(),
            keys: vec![("domain".into(), DOMAIN.into())],
            vars: Vec::new(),
            trace_msg: false,
            extra: Vec::new(),
        }
    }

    /// Name used for its log files (default: the scenario's).
    pub fn name(mut self, name: &str) -> Sipp {
        self.name = Some(name.to_string());
        self
    }

    /// Local address; port 0 picks a free one.
    pub fn local(mut self, ip: Ipv4Addr, port: u16) -> Sipp {
        self.local_ip = ip;
        self.local_port = port;
        self
    }

    /// Where requests go (not needed for [`Scenario::Uas`]).
    pub fn remote(mut self, addr: SocketAddr) -> Sipp {
        self.remote = Some(addr);
        self
    }

    /// UDP (default) or TCP.
    pub fn transport(mut self, t: Transport) -> Sipp {
        self.transport = t;
        self
    }

    /// Calls to run before exiting (`-m`); default: the number of rows, or 1.
    pub fn calls(mut self, n: u64) -> Sipp {
        self.calls = Some(n);
        self
    }

    /// New calls per second (`-r`, `-rp 1000`); fractional allowed.
    pub fn rate(mut self, per_second: f64) -> Sipp {
        self.rate = per_second;
        self
    }

    /// Maximum simultaneous calls (`-l`).
    pub fn limit(mut self, n: u64) -> Sipp {
        self.limit = Some(n);
        self
    }

    /// Bound on the whole run: SIPp's `-timeout`, and a kill 15 s after it.
    pub fn timeout(mut self, d: Duration) -> Sipp {
        self.timeout = d;
        self
    }

    /// Injection rows (`SEQUENTIAL`), fields as in the module docs.
    pub fn rows(mut self, rows: Vec<Vec<String>>) -> Sipp {
        self.rows = rows;
        self
    }

    /// One row per user: name and credentials (for [`Scenario::Register`]).
    pub fn users(self, users: &[User]) -> Sipp {
        let rows = users.iter().map(|u| user_row(u, "")).collect();
        self.rows(rows)
    }

    /// One row per (caller, callee user part), for [`Scenario::Uac`].
    pub fn dial(self, calls: &[(User, String)]) -> Sipp {
        let rows = calls.iter().map(|(u, to)| user_row(u, to)).collect();
        self.rows(rows)
    }

    /// One row per (watcher, watched user part), for [`Scenario::Subscribe`].
    pub fn watch(self, pairs: &[(User, String)]) -> Sipp {
        self.dial(pairs)
    }

    /// A `-key name value` for the scenario (`[name]`).
    pub fn key(mut self, name: &str, value: &str) -> Sipp {
        self.keys.retain(|(k, _)| k != name);
        self.keys.push((name.to_string(), value.to_string()));
        self
    }

    /// A `@@NAME@@` placeholder value in the scenario file.
    pub fn var(mut self, name: &str, value: &str) -> Sipp {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Log every message (`-trace_msg`) and parse them into the result.
    /// On by default for [`Scenario::Subscribe`].
    pub fn trace_messages(mut self, on: bool) -> Sipp {
        self.trace_msg = on;
        self
    }

    /// Extra SIPp arguments.
    pub fn arg(mut self, a: &str) -> Sipp {
        self.extra.push(a.to_string());
        self
    }

    /// Runs to completion (or the deadline) and returns the result.
    pub fn run(self) -> Result<SippResult, RigError> {
        self.spawn()?.wait()
    }

    /// Starts SIPp in the background (e.g. a UAS); see [`SippProcess`].
    pub fn spawn(self) -> Result<SippProcess, RigError> {
        let sipp = crate::which("sipp")?;
        let name = self.name.clone().unwrap_or_else(|| self.scenario.name());
        let dir = RunDir::new(&format!("sipp-{name}")).map_err(|e| RigError::io("run dir", e))?;
        let port = if self.local_port == 0 {
            net::free_port(self.local_ip).map_err(|e| RigError::io("free port", e))?
        } else {
            self.local_port
        };
        let template = fs::read_to_string(self.scenario.file())
            .map_err(|e| RigError::io(&format!("{}", self.scenario.file().display()), e))?;
        let mut vars: Vec<(&str, String)> = self
            .scenario
            .defaults()
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        for (k, v) in &self.vars {
            vars.retain(|(dk, _)| dk != k);
            vars.push((k.as_str(), v.clone()));
        }
        let scenario_path = dir.join("scenario.xml");
        fs::write(&scenario_path, fill(&template, &vars))
            .map_err(|e| RigError::io("write scenario", e))?;

        let mut cmd = Command::new(sipp);
        cmd.current_dir(dir.path());
        if let Some(remote) = self.remote {
            cmd.arg(remote.to_string());
        }
        cmd.arg("-sf").arg(&scenario_path);
        cmd.arg("-i").arg(self.local_ip.to_string());
        cmd.arg("-p").arg(port.to_string());
        cmd.arg("-t").arg(match self.transport {
            Transport::Udp => "u1",
            Transport::Tcp => "t1",
        });
        let calls = self
            .calls
            .unwrap_or_else(|| (self.rows.len() as u64).max(1));
        cmd.arg("-m").arg(calls.to_string());
        // -r N per -rp 1000 ms; fractional rates as N per longer period.
        let (r, rp) = if self.rate >= 1.0 {
            (self.rate.round() as u64, 1000)
        } else {
            (1, (1000.0 / self.rate.max(0.001)).round() as u64)
        };
        cmd.arg("-r").arg(r.to_string());
        cmd.arg("-rp").arg(rp.to_string());
        if let Some(l) = self.limit {
            cmd.arg("-l").arg(l.to_string());
        }
        if !self.rows.is_empty() {
            let mut csv = String::from("SEQUENTIAL\n");
            for row in &self.rows {
                csv.push_str(&row.join(";"));
                csv.push('\n');
            }
            let csv_path = dir.join("rows.csv");
            fs::write(&csv_path, csv).map_err(|e| RigError::io("write csv", e))?;
            cmd.arg("-inf").arg(csv_path);
        }
        let mut keys: Vec<(String, String)> = self
            .scenario
            .default_keys()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in &self.keys {
            keys.retain(|(dk, _)| dk != k);
            keys.push((k.clone(), v.clone()));
        }
        for (k, v) in &keys {
            cmd.arg("-key").arg(k).arg(v);
        }
        let stat_path = dir.join("stat.csv");
        let err_path = dir.join("errors.log");
        let msg_path = dir.join("messages.log");
        cmd.arg("-trace_stat").arg("-stf").arg(&stat_path);
        cmd.arg("-fd").arg("1");
        cmd.arg("-trace_err").arg("-error_file").arg(&err_path);
        let trace_msg = self.trace_msg || self.scenario == Scenario::Subscribe;
        if trace_msg {
            cmd.arg("-trace_msg").arg("-message_file").arg(&msg_path);
        }
        cmd.arg("-aa").arg("-nostdin");
        cmd.arg("-timeout")
            .arg(format!("{}s", self.timeout.as_secs().max(1)));
        cmd.args(&self.extra);
        let guard = ChildGuard::spawn("sipp", cmd, dir.path())
            .map_err(|e| RigError::io("spawn sipp", e))?;
        Ok(SippProcess {
            guard: Some(guard),
            name,
            local: SocketAddr::new(self.local_ip.into(), port),
            started: Instant::now(),
            deadline: Instant::now() + self.timeout + Duration::from_secs(15),
            stat_path,
            err_path,
            msg_path: trace_msg.then_some(msg_path),
            dir: Some(std::sync::Arc::new(dir)),
        })
    }
}

fn user_row(u: &User, other: &str) -> Vec<String> {
    vec![
        u.name.clone(),
        format!(
            "[authentication username={} password={}]",
            u.name, u.password
        ),
        other.to_string(),
    ]
}

/// A SIPp process running in the background; killed on `Drop`.
#[derive(Debug)]
pub struct SippProcess {
    guard: Option<ChildGuard>,
    name: String,
    local: SocketAddr,
    started: Instant,
    deadline: Instant,
    stat_path: PathBuf,
    err_path: PathBuf,
    msg_path: Option<PathBuf>,
    // Last: the directory goes after the process (then to the result).
    dir: Option<std::sync::Arc<RunDir>>,
}

impl SippProcess {
    /// The local address SIPp listens on.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// The run directory (scenario, CSV, logs).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().map(RunDir::path)
    }

    /// Pid of SIPp.
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().map(|g| g.pid())
    }

    /// True while SIPp runs.
    pub fn is_running(&mut self) -> bool {
        self.guard.as_mut().is_some_and(|g| g.is_running())
    }

    /// Waits for SIPp to finish (killing it at the deadline) and returns the result.
    pub fn wait(mut self) -> Result<SippResult, RigError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        self.finish(left)
    }

    /// Asks SIPp to stop (`SIGUSR1`: no new calls, exit), waits up to `grace`,
    /// then kills it; returns the result.
    pub fn stop(mut self, grace: Duration) -> Result<SippResult, RigError> {
        if let Some(g) = self.guard.as_mut() {
            g.signal(Signal::SIGUSR1)
                .map_err(|e| RigError::io("signal sipp", e))?;
        }
        self.finish(grace)
    }

    fn finish(&mut self, wait: Duration) -> Result<SippResult, RigError> {
        let Some(mut g) = self.guard.take() else {
            return Err(RigError::Startup {
                what: self.name.clone(),
                detail: "already finished".into(),
            });
        };
        let status = g
            .wait_timeout(wait)
            .map_err(|e| RigError::io("wait sipp", e))?;
        let timed_out = status.is_none();
        let status = match status {
            Some(s) => s,
            None => g.kill().map_err(|e| RigError::io("kill sipp", e))?,
        };
        let stats = parse_stat_csv(&proc::read_lossy(&self.stat_path));
        let messages = self
            .msg_path
            .as_ref()
            .map(|p| parse_message_log(&proc::read_lossy(p)))
            .unwrap_or_default();
        let result = SippResult {
            name: self.name.clone(),
            exit_code: status.code(),
            timed_out,
            elapsed: self.started.elapsed(),
            created: stats.get("TotalCallCreated"),
            successful: stats.get("SuccessfulCall(C)"),
            failed: stats.get("FailedCall(C)"),
            retransmissions: stats.get("Retransmissions(C)"),
            dead_calls: stats.get("DeadCallMsgs(C)"),
            unexpected: stats.get("FailedUnexpectedMessage(C)"),
            errors: proc::tail(&proc::read_lossy(&self.err_path), 60),
            log_tail: g.log_tail(40),
            messages,
            dir: self.dir.take(),
        };
        // The guard's Drop only prints its logs if this thread panics later.
        drop(g);
        Ok(result)
    }
}

impl Drop for SippProcess {
    fn drop(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            let _ = g.kill();
        }
    }
}

/// What a SIPp run did.
#[derive(Debug, Clone)]
pub struct SippResult {
    /// Run name.
    pub name: String,
    /// SIPp's exit code: 0 all calls succeeded, 1 some failed, 97 stopped by
    /// command, 99 normal exit without calls, 255/254 fatal (254: bind failed);
    /// `None` when killed by a signal.
    pub exit_code: Option<i32>,
    /// True when the rig had to kill it at the deadline.
    pub timed_out: bool,
    /// Wall time from start to exit.
    pub elapsed: Duration,
    /// Calls created (outgoing + incoming).
    pub created: u64,
    /// Calls that reached the end of the scenario.
    pub successful: u64,
    /// Calls that failed (timeouts, unexpected messages, rejections).
    pub failed: u64,
    /// Retransmissions sent.
    pub retransmissions: u64,
    /// Messages for calls already gone.
    pub dead_calls: u64,
    /// Calls failed by an unexpected message.
    pub unexpected: u64,
    /// End of SIPp's error log.
    pub errors: String,
    /// End of SIPp's stdout/stderr.
    pub log_tail: String,
    /// Every message sent or received, when traced.
    pub messages: Vec<SipMessage>,
    /// The run's files; kept on disk while the result lives, and for good
    /// when the test panics.
    dir: Option<std::sync::Arc<RunDir>>,
}

impl SippResult {
    /// The run directory (scenario, CSV, stats, message log).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().map(RunDir::path)
    }

    /// Exit code 0, not killed, no failed call.
    pub fn all_ok(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.failed == 0
    }

    /// Received NOTIFYs, in arrival order, without retransmissions.
    pub fn notifies(&self) -> Vec<Notify> {
        let mut seen = std::collections::HashSet::new();
        self.messages
            .iter()
            .filter(|m| m.direction == Direction::Received && m.method() == Some("NOTIFY"))
            .filter(|m| {
                // One dialog's retransmission repeats Call-ID, CSeq and both tags.
                seen.insert((
                    m.header("Call-ID"),
                    m.header("CSeq"),
                    m.header("From"),
                    m.header("To"),
                ))
            })
            .map(Notify::from_message)
            .collect()
    }

    /// Received requests of `method` (retransmissions included).
    pub fn received(&self, method: &str) -> Vec<&SipMessage> {
        self.messages
            .iter()
            .filter(|m| m.direction == Direction::Received && m.method() == Some(method))
            .collect()
    }
}

impl fmt::Display for SippResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sipp {}: exit {:?}{}, created {}, successful {}, failed {}, retrans {}, unexpected {}, {:.1}s",
            self.name,
            self.exit_code,
            if self.timed_out { " (killed at deadline)" } else { "" },
            self.created,
            self.successful,
            self.failed,
            self.retransmissions,
            self.unexpected,
            self.elapsed.as_secs_f64()
        )?;
        if !self.errors.trim().is_empty() {
            writeln!(f, "--- errors ---\n{}", self.errors)?;
        }
        if !self.log_tail.trim().is_empty() {
            writeln!(f, "{}", self.log_tail)?;
        }
        Ok(())
    }
}

/// Direction of a traced message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// SIPp sent it.
    Sent,
    /// SIPp received it.
    Received,
}

/// One message from SIPp's message log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage {
    /// Sent or received.
    pub direction: Direction,
    /// The message text.
    pub text: String,
}

impl SipMessage {
    /// First line.
    pub fn start_line(&self) -> &str {
        self.text.lines().next().unwrap_or("")
    }

    /// Method of a request.
    pub fn method(&self) -> Option<&str> {
        let first = self.start_line();
        if first.starts_with("SIP/2.0") {
            None
        } else {
            first.split_whitespace().next()
        }
    }

    /// Status code of a response.
    pub fn status(&self) -> Option<u16> {
        self.start_line()
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }

    /// First value of header `name` (case-insensitive; compact forms of the
    /// common headers understood).
    pub fn header(&self, name: &str) -> Option<&str> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "call-id" => Some("i"),
            "from" => Some("f"),
            "to" => Some("t"),
            "via" => Some("v"),
            "contact" => Some("m"),
            "content-type" => Some("c"),
            "content-length" => Some("l"),
            "event" => Some("o"),
            _ => None,
        };
        self.headers().find_map(|(k, v)| {
            (k.eq_ignore_ascii_case(name) || compact.is_some_and(|c| k.eq_ignore_ascii_case(c)))
                .then_some(v)
        })
    }

    /// Header lines as (name, value).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.head()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
    }

    /// The body (after the blank line).
    pub fn body(&self) -> &str {
        split_head_body(&self.text).1
    }

    fn head(&self) -> &str {
        split_head_body(&self.text).0
    }
}

fn split_head_body(text: &str) -> (&str, &str) {
    if let Some(i) = text.find("\r\n\r\n") {
        (&text[..i], &text[i + 4..])
    } else if let Some(i) = text.find("\n\n") {
        (&text[..i], &text[i + 2..])
    } else {
        (text, "")
    }
}

/// A NOTIFY a watcher received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Call-ID of the subscription.
    pub call_id: String,
    /// The watcher's tag (To tag of the NOTIFY): which subscription dialog.
    pub watcher_tag: Option<String>,
    /// CSeq number.
    pub cseq: Option<u32>,
    /// Event header.
    pub event: String,
    /// Subscription-State header.
    pub subscription_state: String,
    /// Content-Type.
    pub content_type: Option<String>,
    /// The body.
    pub body: String,
    /// dialog-info `version` attribute.
    pub version: Option<u64>,
    /// Every `<state>` of the dialog-info body (`trying`, `early`, `confirmed`, `terminated`).
    pub dialog_states: Vec<String>,
    /// message-summary `Messages-Waiting`.
    pub messages_waiting: Option<bool>,
}

impl Notify {
    fn from_message(m: &SipMessage) -> Notify {
        let body = m.body().to_string();
        let dialog_states = body
            .split("<state")
            .skip(1)
            .filter_map(|s| {
                let s = s.split_once('>')?.1;
                Some(s.split_once('<')?.0.trim().to_string())
            })
            .collect();
        let version = body
            .split_once("<dialog-info")
            .and_then(|(_, r)| r.split_once("version=\""))
            .and_then(|(_, r)| r.split_once('"'))
            .and_then(|(v, _)| v.parse().ok());
        let messages_waiting = body.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("Messages-Waiting")
                .then(|| v.trim().eq_ignore_ascii_case("yes"))
        });
        Notify {
            call_id: m.header("Call-ID").unwrap_or("").to_string(),
            watcher_tag: m
                .header("To")
                .and_then(|t| t.split(";tag=").nth(1))
                .map(|t| t.split(';').next().unwrap_or(t).trim().to_string()),
            cseq: m
                .header("CSeq")
                .and_then(|c| c.split_whitespace().next())
                .and_then(|n| n.parse().ok()),
            event: m.header("Event").unwrap_or("").to_string(),
            subscription_state: m.header("Subscription-State").unwrap_or("").to_string(),
            content_type: m.header("Content-Type").map(str::to_string),
            body,
            version,
            dialog_states,
            messages_waiting,
        }
    }
}

/// Last line of SIPp's `-trace_stat` CSV, by column name.
#[derive(Debug, Default)]
struct Stats(Vec<(String, String)>);

impl Stats {
    fn get(&self, name: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn parse_stat_csv(text: &str) -> Stats {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (Some(header), Some(last)) = (lines.first(), lines.get(1..).and_then(|r| r.last())) else {
        return Stats::default();
    };
    Stats(
        header
            .split(';')
            .zip(last.split(';'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Parses SIPp's `-trace_msg` log: blocks that start with a line of dashes,
/// then `UDP message sent (N bytes):` / `UDP message received [N] bytes :`.
pub fn parse_message_log(text: &str) -> Vec<SipMessage> {
    let mut out = Vec::new();
    for block in text.split("\n----------------------------------------------- ") {
        let mut lines = block.splitn(3, '\n');
        let _stamp = lines.next();
        let Some(desc) = lines.next() else { continue };
        let direction = if desc.contains("message received") {
            Direction::Received
        } else if desc.contains("message sent") {
            Direction::Sent
        } else {
            continue;
        };
        let body = lines.next().unwrap_or("").trim_start_matches(['\r', '\n']);
        let body = body.trim_end_matches(['\r', '\n']);
        if body.is_empty() {
            continue;
        }
        out.push(SipMessage {
            direction,
            text: body.to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_csv_last_line_by_name() {
        let s = parse_stat_csv("A;SuccessfulCall(C);FailedCall(C);\n1;2;3;\n4;20;0;\n");
        assert_eq!(s.get("SuccessfulCall(C)"), 20);
        assert_eq!(s.get("FailedCall(C)"), 0);
        assert_eq!(s.get("missing"), 0);
    }

    #[test]
    fn notify_fields() {
        let m = SipMessage {
            direction: Direction::Received,
            text: "NOTIFY sip:a@b SIP/2.0\r\nCall-ID: x\r\nCSeq: 3 NOTIFY\r\nEvent: dialog\r\n\
                   Subscription-State: active;expires=3600\r\n\
                   Content-Type: application/dialog-info+xml\r\n\r\n\
                   <dialog-info version=\"2\" state=\"full\"><dialog id=\"1\"><state>confirmed</state></dialog></dialog-info>"
                .into(),
        };
        let n = Notify::from_message(&m);
        assert_eq!(n.cseq, Some(3));
        assert_eq!(n.version, Some(2));
        assert_eq!(n.dialog_states, vec!["confirmed"]);
        assert_eq!(n.event, "dialog");
    }
}
