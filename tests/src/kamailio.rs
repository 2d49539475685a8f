//! Kamailio from Debian, run by the tests as the hosted PBX ("the cloud") or
//! as a plain stateful edge proxy (the benchmark's baseline).
//!
//! The configs are templates under `tests/kamailio/`; every instance gets its
//! own run directory with the generated config, a sqlite database
//! (subscribers and presence tables), its pid file and its control socket, so
//! any number of instances coexist on distinct loopback addresses.
//!
//! ```no_run
//! use holdline_tests::{kamailio::{Kamailio, KamailioOpts, User}, net::Block};
//! let block = Block::allocate();
//! let cloud = Kamailio::start(block.cloud(), KamailioOpts::with_users(User::numbered(1000, 20)))
//!     .expect("cloud starts");
//! let bindings = cloud.location().expect("ul.dump");
//! ```

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::net;
use crate::proc::{self, ChildGuard, RunDir};
use crate::RigError;

/// The cloud's config template.
const CLOUD_CFG: &str = include_str!("../kamailio/cloud.cfg");
/// The edge proxy's config template.
const EDGE_CFG: &str = include_str!("../kamailio/edge.cfg");
/// Where Debian's kamailio-sqlite-modules puts the table definitions.
const SQLITE_SCHEMA_DIR: &str = "/usr/share/kamailio/db_sqlite";
/// The SIP domain the cloud serves.
pub const DOMAIN: &str = "cloud.test";

/// A subscriber of the cloud (digest credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User part of the AoR (`sip:<name>@cloud.test`), also the digest username.
    pub name: String,
    /// Digest password.
    pub password: String,
}

impl User {
    /// A user with a password.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> User {
        User {
            name: name.into(),
            password: password.into(),
        }
    }

    /// `count` users named `first`, `first+1`, ... with password `pw<name>`.
    pub fn numbered(first: u32, count: usize) -> Vec<User> {
        (0..count)
            .map(|i| {
                let name = (first as usize + i).to_string();
                User::new(name.clone(), format!("pw{name}"))
            })
            .collect()
    }

    /// `sip:<name>@cloud.test`.
    pub fn aor(&self) -> String {
        format!("sip:{}@{DOMAIN}", self.name)
    }
}

/// Options for a Kamailio instance.
#[derive(Debug, Clone)]
pub struct KamailioOpts {
    /// SIP port on the instance's address (UDP and TCP). Default 5060.
    pub port: u16,
    /// Subscribers provisioned before start (cloud only).
    pub users: Vec<User>,
    /// Sources whose requests the cloud does not challenge (a trunk, or an
    /// edge the cloud trusts to register phones on their behalf).
    pub trusted: Vec<IpAddr>,
    /// Kamailio `debug` level (1 errors .. 3 debug). Default 1; `RIG_KAMAILIO_DEBUG` overrides.
    pub debug: u8,
    /// Worker processes per listener (UDP and TCP). Default 2.
    pub children: u8,
    /// Shared memory in MB. Default 64.
    pub shm_mb: u32,
    /// Private memory per process in MB. Default 8.
    pub pkg_mb: u32,
    /// How long to wait for the instance to answer after start. Default 60 s.
    pub ready_timeout: Duration,
}

impl Default for KamailioOpts {
    fn default() -> Self {
        KamailioOpts {
            port: 5060,
            users: Vec::new(),
            trusted: Vec::new(),
            debug: std::env::var("RIG_KAMAILIO_DEBUG")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            children: 2,
            shm_mb: 64,
            pkg_mb: 8,
            ready_timeout: Duration::from_secs(60),
        }
    }
}

impl KamailioOpts {
    /// Defaults with these subscribers.
    pub fn with_users(users: Vec<User>) -> KamailioOpts {
        KamailioOpts {
            users,
            ..KamailioOpts::default()
        }
    }
}

/// Which config an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The hosted PBX: registrar, auth, presence.
    Cloud,
    /// A plain stateful proxy in front of `cloud` (adds Path, record-routes).
    Edge {
        /// The cloud it forwards to.
        cloud: SocketAddrV4,
    },
}

/// One contact in Kamailio's location table (`ul.dump`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationContact {
    /// AoR as Kamailio stores it (user part only, `use_domain` is off).
    pub aor: String,
    /// Contact URI.
    pub address: String,
    /// Seconds left.
    pub expires: Option<i64>,
    /// Call-ID of the registration.
    pub call_id: Option<String>,
    /// CSeq of the registration.
    pub cseq: Option<u32>,
    /// Path header value, when the phone registered through an edge.
    pub path: Option<String>,
    /// Source address when it differs from the contact (`received`).
    pub received: Option<String>,
    /// Local socket the REGISTER arrived on.
    pub socket: Option<String>,
    /// User-Agent of the registration.
    pub user_agent: Option<String>,
    /// +sip.instance, when given.
    pub instance: Option<String>,
}

/// One subscription the cloud's presence server holds (`active_watchers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watcher {
    /// Watched URI (`sip:1001@cloud.test`).
    pub presentity: String,
    /// Watcher's user part.
    pub watcher_user: String,
    /// Event package (`dialog`, `message-summary`).
    pub event: String,
    /// Subscription status (1 active).
    pub status: i64,
    /// Call-ID of the subscription dialog.
    pub call_id: String,
    /// Expiry (unix time).
    pub expires: i64,
    /// Watcher's contact.
    pub contact: String,
}

/// A running Kamailio; stopped on `Drop`.
#[derive(Debug)]
pub struct Kamailio {
    // Field order matters: the process stops before its directory goes.
    child: Option<ChildGuard>,
    ip: Ipv4Addr,
    role: Role,
    opts: KamailioOpts,
    starts: u32,
    frozen: bool,
    dir: RunDir,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // A stopped process group ignores SIGTERM until continued.
        if self.frozen {
            let _ = self.thaw();
        }
    }
}

impl Kamailio {
    /// Starts the cloud on `ip:opts.port` (UDP and TCP), provisions
    /// `opts.users`, and returns once it answers OPTIONS and its control socket.
    pub fn start(ip: Ipv4Addr, opts: KamailioOpts) -> Result<Kamailio, RigError> {
        Self::start_role(ip, Role::Cloud, opts)
    }

    /// Starts Kamailio as a plain stateful edge proxy on `ip:opts.port` in front
    /// of `cloud` (the benchmark's baseline for holdline).
    pub fn start_edge(
        ip: Ipv4Addr,
        cloud: SocketAddrV4,
        opts: KamailioOpts,
    ) -> Result<Kamailio, RigError> {
        Self::start_role(ip, Role::Edge { cloud }, opts)
    }

    fn start_role(ip: Ipv4Addr, role: Role, opts: KamailioOpts) -> Result<Kamailio, RigError> {
        for tool in ["kamailio", "kamcmd", "sqlite3"] {
            crate::which(tool)?;
        }
        let prefix = match role {
            Role::Cloud => "kamailio-cloud",
            Role::Edge { .. } => "kamailio-edge",
        };
        let dir = RunDir::new(prefix).map_err(|e| RigError::io("run dir", e))?;
        let mut k = Kamailio {
            child: None,
            ip,
            role,
            opts,
            starts: 0,
            frozen: false,
            dir,
        };
        if role == Role::Cloud {
            k.create_db()?;
        }
        k.write_config()?;
        k.spawn()?;
        Ok(k)
    }

    /// The SIP address (UDP and TCP).
    pub fn addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.opts.port)
    }

    /// The instance's IP.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The run directory (config, database, logs, control socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the generated config.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("kamailio.cfg")
    }

    /// Path of the sqlite database (cloud only).
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("kamailio.db")
    }

    /// `unix:<path>` of the binrpc control socket, for `kamcmd -s`.
    pub fn ctl_socket(&self) -> String {
        format!("unix:{}", self.dir.join("ctl.sock").display())
    }

    /// Everything Kamailio logged so far (all starts).
    pub fn log(&self) -> String {
        proc::read_lossy(&self.dir.join(format!("{}.stderr", self.log_name())))
    }

    /// Pid of the main process while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        let child = self.child.as_mut()?;
        child.is_running().then(|| child.pid())
    }

    /// Pids of the main process and all its workers.
    pub fn pids(&mut self) -> Vec<u32> {
        self.pid().map(proc::group_members).unwrap_or_default()
    }

    /// True while the main process runs.
    pub fn is_running(&mut self) -> bool {
        self.pid().is_some()
    }

    /// Runs `kamcmd -s <ctl> <args>` (bounded to 30 s) and returns its stdout.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, RigError> {
        let mut cmd = Command::new(crate::which("kamcmd")?);
        cmd.arg("-s").arg(self.ctl_socket()).args(args);
        let out = proc::run_bounded(cmd, Duration::from_secs(30))
            .map_err(|e| RigError::io("kamcmd", e))?;
        if !out.status.success() || out.stdout.starts_with("error:") {
            return Err(RigError::Command {
                what: format!("kamcmd {}", args.join(" ")),
                detail: format!("{}{}", out.stdout, out.stderr),
            });
        }
        Ok(out.stdout)
    }

    /// Runs a JSON-RPC command over the instance's FIFO (no reply size
    /// limit, unlike kamcmd) and returns its `result` (cloud only; bounded to
    /// 60 s).
    pub fn rpc(&self, method: &str, params: &[&str]) -> Result<serde_json::Value, RigError> {
        use std::io::{Read, Write};
        use std::os::unix::fs::OpenOptionsExt;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let what = format!("rpc {method}");
        // jsonrpcs refuses reply names with a dot (or a slash).
        let reply_name = format!("reply_{}_{n}", std::process::id());
        let reply_path = self.dir.join(&reply_name);
        nix::unistd::mkfifo(&reply_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| RigError::io(&what, e.into()))?;
        let nonblock = nix::fcntl::OFlag::O_NONBLOCK.bits();
        // Read-write so that opening never blocks and Kamailio's open for
        // writing finds a reader.
        let reply = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nonblock)
            .open(&reply_path);
        let result = reply
            .map_err(|e| RigError::io(&what, e))
            .and_then(|mut reply| {
                let request = serde_json::json!({
                    "jsonrpc": "2.0",
                    "method": method,
                    "params": params,
                    "reply_name": reply_name,
                    "id": n,
                });
                let mut fifo = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(nonblock)
                    .open(self.dir.join("rpc.fifo"))
                    .map_err(|e| RigError::io(&what, e))?;
                fifo.write_all(format!("{request}\n").as_bytes())
                    .map_err(|e| RigError::io(&what, e))?;
                drop(fifo);
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 1 << 16];
                loop {
                    match reply.read(&mut chunk) {
                        Ok(len) if len > 0 => {
                            buf.extend_from_slice(&chunk[..len]);
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(RigError::io(&what, e)),
                    }
                    // Nothing more for now: complete once it parses.
                    if !buf.is_empty() {
                        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
                            return Ok(v);
                        }
                    }
                    if Instant::now() >= deadline {
                        return Err(RigError::Command {
                            what,
                            detail: format!("no complete reply in 60 s ({} bytes)", buf.len()),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        let _ = fs::remove_file(&reply_path);
        let reply = result?;
        if let Some(err) = reply.get("error") {
            return Err(RigError::Command {
                what: format!("rpc {method}"),
                detail: err.to_string(),
            });
        }
        Ok(reply
            .get("result")
            .cloned()
            .unwrap_or(serde_json::Value::Null))
    }

    /// The whole location table (`ul.dump` over JSON-RPC, any size).
    pub fn location(&self) -> Result<Vec<LocationContact>, RigError> {
        Ok(location_from_json(&self.rpc("ul.dump", &[])?))
    }

    /// Number of contacts in the location table (from statistics; cheap with
    /// many bindings).
    pub fn location_count(&self) -> Result<u64, RigError> {
        let out = self.kamcmd(&["stats.get_statistics", "usrloc:"])?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("usrloc:location_contacts = "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(RigError::Parse(format!("usrloc statistics: {out}")))
    }

    /// Polls the location table until `pred` holds for it (every 200 ms, up
    /// to `timeout`); returns the last table read either way, so the caller's
    /// assert can show it.
    pub fn wait_location(
        &self,
        timeout: Duration,
        pred: impl Fn(&[LocationContact]) -> bool,
    ) -> Result<Vec<LocationContact>, RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            let table = self.location()?;
            if pred(&table) || Instant::now() >= deadline {
                return Ok(table);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Subscriptions the presence server holds (cloud only).
    pub fn subscriptions(&self) -> Result<Vec<Watcher>, RigError> {
        let out = self.sql(
            "SELECT presentity_uri, watcher_username, event, status, callid, expires, contact \
             FROM active_watchers ORDER BY id;",
            true,
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\x1f').collect();
                Some(Watcher {
                    presentity: f.first()?.to_string(),
                    watcher_user: f.get(1)?.to_string(),
                    event: f.get(2)?.to_string(),
                    status: f.get(3)?.parse().ok()?,
                    call_id: f.get(4)?.to_string(),
                    expires: f.get(5)?.parse().ok()?,
                    contact: f.get(6)?.to_string(),
                })
            })
            .collect())
    }

    /// Polls the presence server until it holds at least `n` subscriptions
    /// (every 200 ms, up to `timeout`); returns the last list read either way.
    /// The list is written back to the database once a second, so allow that.
    pub fn wait_subscriptions(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Watcher>, RigError> {
        let deadline = Instant::now() + timeout;
        loop {
            let subs = self.subscriptions()?;
            if subs.len() >= n || Instant::now() >= deadline {
                return Ok(subs);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Freezes every process of the instance (`SIGSTOP`): the cloud goes
    /// silent without closing a socket, as a hung registrar does. Undo with
    /// [`Kamailio::thaw`] (also done on `Drop`, before stopping it).
    pub fn freeze(&mut self) -> Result<(), RigError> {
        self.signal(nix::sys::signal::Signal::SIGSTOP)?;
        self.frozen = true;
        Ok(())
    }

    /// Resumes a frozen instance (`SIGCONT`).
    pub fn thaw(&mut self) -> Result<(), RigError> {
        self.signal(nix::sys::signal::Signal::SIGCONT)?;
        self.frozen = false;
        Ok(())
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) -> Result<(), RigError> {
        match self.child.as_mut() {
            Some(c) => c
                .signal(sig)
                .map_err(|e| RigError::io("signal kamailio", e)),
            None => Err(RigError::Startup {
                what: "kamailio".into(),
                detail: "not running".into(),
            }),
        }
    }

    /// Adds subscribers while running (auth_db reads the table per request).
    pub fn add_users(&self, users: &[User]) -> Result<(), RigError> {
        self.sql(&insert_users_sql(users), false).map(|_| ())
    }

    /// Kills the whole instance with `SIGKILL` (a crash); it stays down until
    /// [`Kamailio::start_again`].
    pub fn crash(&mut self) -> Result<(), RigError> {
        self.frozen = false;
        if let Some(child) = self.child.as_mut() {
            child.kill().map_err(|e| RigError::io("kill kamailio", e))?;
        }
        self.child = None;
        Ok(())
    }

    /// Stops the instance gracefully (`SIGTERM`); down until [`Kamailio::start_again`].
    pub fn stop(&mut self) -> Result<(), RigError> {
        if self.frozen {
            self.thaw()?;
        }
        if let Some(child) = self.child.as_mut() {
            child
                .terminate(Duration::from_secs(5))
                .map_err(|e| RigError::io("stop kamailio", e))?;
        }
        self.child = None;
        Ok(())
    }

    /// Starts a stopped or crashed instance again with the same config and
    /// subscribers. The location table starts empty (usrloc is in memory);
    /// the presence tables are emptied too, like a registrar failing over to a
    /// node that knows nothing.
    pub fn start_again(&mut self) -> Result<(), RigError> {
        if self.is_running() {
            return Err(RigError::Startup {
                what: "kamailio start_again".into(),
                detail: "it is still running".into(),
            });
        }
        self.child = None;
        if self.role == Role::Cloud {
            self.sql(
                "DELETE FROM presentity; DELETE FROM active_watchers; \
                 DELETE FROM watchers; DELETE FROM pua;",
                false,
            )?;
        }
        // Sockets of the killed workers are gone once they are reaped, but
        // wait for the port anyway rather than fail the bind.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !net::udp_port_free(self.ip, self.opts.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn()
    }

    /// [`Kamailio::crash`] then [`Kamailio::start_again`]: the incident's restart,
    /// with an empty location table.
    pub fn restart(&mut self) -> Result<(), RigError> {
        self.crash()?;
        self.start_again()
    }

    fn log_name(&self) -> &'static str {
        match self.role {
            Role::Cloud => "kamailio-cloud",
            Role::Edge { .. } => "kamailio-edge",
        }
    }

    fn spawn(&mut self) -> Result<(), RigError> {
        self.starts += 1;
        let mut cmd = Command::new(crate::which("kamailio")?);
        cmd.arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(self.config_path())
            .arg("-Y")
            .arg(self.dir.path())
            .arg("-P")
            .arg(self.dir.join("kamailio.pid"))
            // The sqlite URL `sqlite:///tmp/x.db` reaches db_sqlite as the
            // relative path `tmp/x.db`: keep the working directory at `/`.
            .arg("-w")
            .arg("/")
            .arg("-m")
            .arg(self.opts.shm_mb.to_string())
            .arg("-M")
            .arg(self.opts.pkg_mb.to_string());
        let _ = fs::remove_file(self.dir.join("ctl.sock"));
        let child = ChildGuard::spawn(self.log_name(), cmd, self.dir.path())
            .map_err(|e| RigError::io("spawn kamailio", e))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), RigError> {
        let deadline = Instant::now() + self.opts.ready_timeout;
        let addr = SocketAddr::V4(self.addr());
        loop {
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait().map_err(|e| RigError::io("wait kamailio", e))?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(RigError::Startup {
                    what: format!("kamailio on {addr} (start {})", self.starts),
                    detail: format!("exited with {status}:\n{}", proc::tail(&self.log(), 40)),
                });
            }
            let sip_ok = net::sip_options(self.ip, addr, Duration::from_millis(500)).is_ok();
            if sip_ok
                && self.kamcmd(&["core.version"]).is_ok()
                && net::wait_for_tcp(addr, Duration::from_millis(500))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(RigError::Startup {
                    what: format!("kamailio on {addr}"),
                    detail: format!(
                        "not ready within {:?}:\n{}",
                        self.opts.ready_timeout,
                        proc::tail(&self.log(), 40)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn write_config(&self) -> Result<(), RigError> {
        let mut trusted = String::new();
        for ip in &self.opts.trusted {
            let _ = writeln!(trusted, "\tif ($si == \"{ip}\") {{ $var(trusted) = 1; }}");
        }
        let (template, cloud, cloud_ip) = match self.role {
            Role::Cloud => (CLOUD_CFG, String::new(), String::new()),
            Role::Edge { cloud } => (EDGE_CFG, cloud.to_string(), cloud.ip().to_string()),
        };
        let text = fill(
            template,
            &[
                ("IP", self.ip.to_string()),
                ("PORT", self.opts.port.to_string()),
                ("RUN", self.dir.path().display().to_string()),
                ("DB", self.db_path().display().to_string()),
                ("DEBUG", self.opts.debug.to_string()),
                ("CHILDREN", self.opts.children.to_string()),
                ("TRUSTED", trusted),
                ("CLOUD_IP", cloud_ip),
                ("CLOUD", cloud),
            ],
        );
        fs::write(self.config_path(), text).map_err(|e| RigError::io("write kamailio.cfg", e))
    }

    fn create_db(&self) -> Result<(), RigError> {
        let mut script = String::new();
        for part in ["standard", "auth_db", "presence"] {
            let path = Path::new(SQLITE_SCHEMA_DIR).join(format!("{part}-create.sql"));
            let sql = fs::read_to_string(&path).map_err(|e| {
                RigError::io(
                    &format!("{} (package kamailio-sqlite-modules)", path.display()),
                    e,
                )
            })?;
            script.push_str(&sql);
            script.push('\n');
        }
        // WAL: Kamailio's processes read (auth_db) while the presence timer
        // writes; readers never wait for the writer. Persists in the file.
        script.push_str("PRAGMA journal_mode=WAL;\n");
        script.push_str(&insert_users_sql(&self.opts.users));
        let script_path = self.dir.join("provision.sql");
        fs::write(&script_path, script).map_err(|e| RigError::io("write provision.sql", e))?;
        let mut cmd = Command::new(crate::which("sqlite3")?);
        cmd.arg("-bail")
            .arg(self.db_path())
            .arg(format!(".read {}", script_path.display()));
        let out = proc::run_bounded(cmd, Duration::from_secs(60))
            .map_err(|e| RigError::io("sqlite3", e))?;
        if !out.status.success() {
            return Err(RigError::Command {
                what: "sqlite3 provision".into(),
                detail: out.stderr,
            });
        }
        Ok(())
    }

    fn sql(&self, sql: &str, read_only: bool) -> Result<String, RigError> {
        let mut cmd = Command::new(crate::which("sqlite3")?);
        if read_only {
            cmd.arg("-readonly");
        }
        cmd.arg("-bail")
            .arg("-cmd")
            .arg(".timeout 10000")
            .arg("-separator")
            .arg("\x1f")
            .arg(self.db_path())
            .arg(sql);
        let out = proc::run_bounded(cmd, Duration::from_secs(30))
            .map_err(|e| RigError::io("sqlite3", e))?;
        if !out.status.success() {
            return Err(RigError::Command {
                what: format!("sqlite3 {sql}"),
                detail: out.stderr,
            });
        }
        Ok(out.stdout)
    }
}

fn insert_users_sql(users: &[User]) -> String {
    let mut s = String::from("BEGIN;\n");
    for u in users {
        let _ = writeln!(
            s,
            "INSERT INTO subscriber (username, domain, password) VALUES ('{}', '{DOMAIN}', '{}');",
            u.name.replace('\'', "''"),
            u.password.replace('\'', "''")
        );
    }
    s.push_str("COMMIT;\n");
    s
}

/// Replaces every `@@NAME@@` in `template` by its value.
pub fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("@@{name}@@"), value);
    }
    out
}

/// Reads the contacts out of a JSON-RPC `ul.dump` result.
pub fn location_from_json(result: &serde_json::Value) -> Vec<LocationContact> {
    use serde_json::Value;
    let text = |v: &Value, k: &str| -> Option<String> {
        match v.get(k)? {
            Value::String(s) if s == "[not set]" => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let list = |v: Option<&Value>| -> Vec<Value> {
        v.and_then(Value::as_array).cloned().unwrap_or_default()
    };
    let mut out = Vec::new();
    for domain in list(result.get("Domains")) {
        for aor in list(domain.get("Domain").and_then(|d| d.get("AoRs"))) {
            let Some(info) = aor.get("Info") else {
                continue;
            };
            let name = text(info, "AoR").unwrap_or_default();
            for c in list(info.get("Contacts")) {
                let Some(c) = c.get("Contact") else { continue };
                out.push(LocationContact {
                    aor: name.clone(),
                    address: text(c, "Address").unwrap_or_default(),
                    expires: c.get("Expires").and_then(Value::as_i64),
                    call_id: text(c, "Call-ID"),
                    cseq: c
                        .get("CSeq")
                        .and_then(Value::as_u64)
                        .and_then(|v| u32::try_from(v).ok()),
                    path: text(c, "Path"),
                    received: text(c, "Received"),
                    socket: text(c, "Socket"),
                    user_agent: text(c, "User-Agent"),
                    instance: text(c, "Instance"),
                });
            }
        }
    }
    out
}

/// Parses `kamcmd ul.dump` output (binrpc's indented `Key: value` text).
pub fn parse_ul_dump(text: &str) -> Vec<LocationContact> {
    let mut out: Vec<LocationContact> = Vec::new();
    let mut aor = String::new();
    let mut in_contact = false;
    for line in text.lines() {
        let line = line.trim();
        if line == "Contact: {" {
            in_contact = true;
            out.push(LocationContact {
                aor: aor.clone(),
                ..LocationContact::default()
            });
            continue;
        }
        if line == "}" {
            in_contact = false;
            continue;
        }
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        if key == "AoR" {
            aor = value.to_string();
            continue;
        }
        if !in_contact {
            continue;
        }
        let Some(c) = out.last_mut() else {
            continue;
        };
        let opt = || (value != "[not set]").then(|| value.to_string());
        match key {
            "Address" => c.address = value.to_string(),
            "Expires" => c.expires = value.parse().ok(),
            "Call-ID" => c.call_id = opt(),
            "CSeq" => c.cseq = value.parse().ok(),
            "Path" => c.path = opt(),
            "Received" => c.received = opt(),
            "Socket" => c.socket = opt(),
            "User-Agent" => c.user_agent = opt(),
            "Instance" => c.instance = opt(),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ul_dump_text() {
        let text = "{\n\tDomains: {\n\t\tDomain: {\n\t\t\tDomain: location\n\t\t\tSize: 1024\n\
            \t\t\tAoRs: {\n\t\t\t\tInfo: {\n\t\t\t\t\tAoR: 1000\n\t\t\t\t\tHashID: 1\n\
            \t\t\t\t\tContacts: {\n\t\t\t\t\t\tContact: {\n\
            \t\t\t\t\t\t\tAddress: sip:1000@127.9.9.10:5062;transport=UDP\n\
            \t\t\t\t\t\t\tExpires: 3597\n\t\t\t\t\t\t\tCall-ID: 1-6862@127.9.9.10\n\
            \t\t\t\t\t\t\tCSeq: 2\n\t\t\t\t\t\t\tPath: <sip:127.9.9.1:5070;lr>\n\
            \t\t\t\t\t\t\tReceived: [not set]\n\t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t}\n\
            \t\t\t}\n\t\t\tStats: {\n\t\t\t\tRecords: 1\n\t\t\t}\n\t\t}\n\t}\n}\n";
        let c = parse_ul_dump(text);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].aor, "1000");
        assert_eq!(c[0].address, "sip:1000@127.9.9.10:5062;transport=UDP");
        assert_eq!(c[0].expires, Some(3597));
        assert_eq!(c[0].cseq, Some(2));
        assert_eq!(c[0].path.as_deref(), Some("<sip:127.9.9.1:5070;lr>"));
        assert_eq!(c[0].received, None);
    }

    #[test]
    fn parses_ul_dump_json() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"Domains":[{"Domain":{"Domain":"location","AoRs":[{"Info":{"AoR":"1000",
            "Contacts":[{"Contact":{"Address":"sip:1000@127.9.9.10:5062","Expires":3597,
            "Call-ID":"c1","CSeq":2,"Path":"<sip:127.9.9.1:5070;lr>","Received":"[not set]"}}]}}]}}]}"#,
        )
        .expect("json");
        let c = location_from_json(&v);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].aor, "1000");
        assert_eq!(c[0].expires, Some(3597));
        assert_eq!(c[0].cseq, Some(2));
        assert_eq!(c[0].path.as_deref(), Some("<sip:127.9.9.1:5070;lr>"));
        assert_eq!(c[0].received, None);
    }

    #[test]
    fn fills_every_placeholder() {
        let t = fill(
            "a @@X@@ b @@Y@@ @@X@@",
            &[("X", "1".into()), ("Y", "2".into())],
        );
        assert_eq!(t, "a 1 b 2 1");
    }
}
