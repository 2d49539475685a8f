//! The appliance's configuration: TOML, strictly typed.
//!
//! Every section and key has a named default, so an empty file (or no file:
//! `holdline run` without `--config`) is a complete loopback configuration
//! on the simulated board. Unknown keys are errors (`deny_unknown_fields`),
//! never ignored: a typo must not silently fall back to a default.
//! Errors are one line naming the file, the key path and, when known, the
//! line: `bad config x.toml: lan.listen[0]: expected "udp:IP:PORT" ... (line 3)`.
//!
//! Relative paths (`[store] path`, `[console] socket`) resolve against the
//! working directory of the process, as usual for a Unix daemon.
//!
//! The keys of DESIGN.md's contract (`[lan] listen`, `[wan] listen`,
//! `[cloud] proxy/domain/trusted/resync_rate`, `[survival] backup_route/
//! emergency`, `[store] path`, `[board] profile`, `[console] socket`) keep
//! their names and meanings; everything else here is an extension.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// A bad configuration: read, parse or validation failure. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("bad config {path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax, unknown key, wrong type or bad value.
    #[error("bad config {path}: {key}: {msg}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Key path, e.g. `lan.listen[0]` (`(top)` for the whole file).
        key: String,
        /// What is wrong.
        msg: String,
        /// 1-based line, when known.
        line: Option<usize>,
    },
    /// Values that parse but do not make sense together.
    #[error("bad config {path}: {key}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Key path.
        key: String,
        /// What is wrong.
        msg: String,
    },
}

/// SIP transport of a listener or a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// `udp:IP:PORT` or `tcp:IP:PORT` (IPv6 as `udp:[::1]:5060`). No names: nothing resolves DNS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Endpoint {
    /// Transport.
    pub transport: Transport,
    /// Address and port.
    pub addr: SocketAddr,
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected \"udp:IP:PORT\" or \"tcp:IP:PORT\", got {s:?}");
        let (t, rest) = s.split_once(':').ok_or_else(bad)?;
        let transport = match t.to_ascii_lowercase().as_str() {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            _ => return Err(bad()),
        };
        let addr: SocketAddr = rest.parse().map_err(|_| bad())?;
        Ok(Endpoint { transport, addr })
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// An IP network, `10.0.0.0/8`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Subnet {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected \"IP/PREFIX\" or \"IP\", got {s:?}");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Subnet { addr, prefix })
    }
}

impl TryFrom<String> for Subnet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Phones' side.
    pub lan: Lan,
    /// Cloud's side.
    pub wan: Wan,
    /// The hosted PBX.
    pub cloud: Cloud,
    /// Uplink monitor (extension).
    pub uplink: Uplink,
    /// SIP protocol knobs (extension).
    pub sip: Sip,
    /// Survival routing.
    pub survival: Survival,
    /// SQLite store.
    pub store: Store,
    /// Hardware profile.
    pub board: Board,
    /// Console socket.
    pub console: Console,
    /// Health supervisor (extension).
    pub health: Health,
    /// Logging (extension).
    pub log: Log,
    /// Firmware update agent (images helper's section).
    pub update: crate::update_cmd::UpdateConfig,
    /// Management HTTP API (images helper's section).
    pub mgmt: crate::mgmt::MgmtConfig,
}

/// `[lan]`: where phones reach the appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Lan {
    /// Listeners, `udp:IP:PORT` / `tcp:IP:PORT`.
    pub listen: Vec<Endpoint>,
    /// Extension: source networks phones may use; anything else is refused.
    pub subnets: Vec<Subnet>,
    /// Extension: address to put in Via/Record-Route on this side when a
    /// listener is bound to a wildcard address.
    pub advertise: Option<IpAddr>,
    /// Extension: requests per second one source address may send on the
    /// LAN side (token bucket; excess requests are dropped before parsing
    /// and counted as `rate_limited_lan`). 0 turns the limit off. The
    /// default is far above any phone (a few per second) and above a test
    /// rig registering 2000 phones from one address, yet caps a runaway
    /// device well below what the loop can handle.
    pub rate_limit_per_s: u32,
    /// Extension: requests one LAN source may send at once after a quiet spell.
    pub rate_limit_burst: u32,
}

/// Default `[lan] rate_limit_per_s`.
pub const LAN_RATE_LIMIT_PER_S: u32 = 2000;
/// Default `[lan] rate_limit_burst`.
pub const LAN_RATE_LIMIT_BURST: u32 = 4000;
/// Default `[wan] rate_limit_per_s` (sources other than the cloud: they
/// are refused with 403 anyway; the limit stops them costing parse time).
pub const WAN_RATE_LIMIT_PER_S: u32 = 50;
/// Default `[wan] rate_limit_burst`.
pub const WAN_RATE_LIMIT_BURST: u32 = 100;
/// Default `[wan] cloud_rate_limit_per_s` (the cloud's own addresses carry
/// every inbound call and NOTIFY of the site: only a runaway is cut).
pub const CLOUD_RATE_LIMIT_PER_S: u32 = 20_000;
/// Default `[wan] cloud_rate_limit_burst`.
pub const CLOUD_RATE_LIMIT_BURST: u32 = 40_000;

impl Default for Lan {
    fn default() -> Self {
        Lan {
            listen: default_lan_listen(),
            subnets: default_lan_subnets(),
            advertise: None,
            rate_limit_per_s: LAN_RATE_LIMIT_PER_S,
            rate_limit_burst: LAN_RATE_LIMIT_BURST,
        }
    }
}

fn default_lan_listen() -> Vec<Endpoint> {
    let a = SocketAddr::from((Ipv4Addr::LOCALHOST, 5060));
    vec![
        Endpoint {
            transport: Transport::Udp,
            addr: a,
        },
        Endpoint {
            transport: Transport::Tcp,
            addr: a,
        },
    ]
}

fn default_lan_subnets() -> Vec<Subnet> {
    vec![Subnet {
        addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
        prefix: 8,
    }]
}

/// `[wan]`: where the cloud reaches the appliance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Wan {
    /// Listeners.
    pub listen: Vec<Endpoint>,
    /// Extension: address for Via/Path/Record-Route on this side (see `[lan] advertise`).
    pub advertise: Option<IpAddr>,
    /// Extension: requests per second one WAN source other than the cloud
    /// may send (0: no limit); excess counted as `rate_limited_wan`.
    pub rate_limit_per_s: u32,
    /// Extension: burst for `rate_limit_per_s`.
    pub rate_limit_burst: u32,
    /// Extension: requests per second from each of the cloud's addresses
    /// (`[cloud] proxy`, `[cloud] addresses`, `[survival] backup_route`).
    pub cloud_rate_limit_per_s: u32,
    /// Extension: burst for `cloud_rate_limit_per_s`.
    pub cloud_rate_limit_burst: u32,
}

impl Default for Wan {
    fn default() -> Self {
        let a = SocketAddr::from((Ipv4Addr::LOCALHOST, 5070));
        Wan {
            listen: vec![
                Endpoint {
                    transport: Transport::Udp,
                    addr: a,
                },
                Endpoint {
                    transport: Transport::Tcp,
                    addr: a,
                },
            ],
            advertise: None,
            rate_limit_per_s: WAN_RATE_LIMIT_PER_S,
            rate_limit_burst: WAN_RATE_LIMIT_BURST,
            cloud_rate_limit_per_s: CLOUD_RATE_LIMIT_PER_S,
            cloud_rate_limit_burst: CLOUD_RATE_LIMIT_BURST,
        }
    }
}

/// `[cloud]`: the hosted PBX.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cloud {
    /// Where requests to the cloud go.
    pub proxy: Endpoint,
    /// SIP domain the cloud serves.
    pub domain: String,
    /// The cloud accepts REGISTERs on phones' behalf.
    pub trusted: bool,
    /// Bindings per second given back after an outage.
    pub resync_rate: u32,
    /// Extension: further source addresses the cloud sends from (the
    /// proxy's address is always allowed).
    pub addresses: Vec<IpAddr>,
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud {
            proxy: Endpoint {
                transport: Transport::Udp,
                addr: SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 5060)),
            },
            domain: "cloud.test".to_string(),
            trusted: false,
            resync_rate: 50,
            addresses: Vec::new(),
        }
    }
}

/// `[uplink]` (extension): the OPTIONS probe of the cloud, which drives
/// holdline-survival's uplink state machine (Down within about a second of
/// silence: 3 missed probes, probing faster while Suspect).
///
/// Worst case from the cloud going silent to Down, with the defaults
/// (interval I = 500, timeout T = 300, down_after N = 3; while Suspect the
/// monitor probes every S = min(150, I) ms). Worst is silence starting just
/// after an answer: the next probe leaves I later and is missed T after
/// that (failure 1: Suspect, probe at once); failure k >= 2 is the probe
/// sent (k - 2) * S after entering Suspect, missed T later:
/// `I + T + (N - 2) * S + T = 500 + 300 + 150 + 300 = 1250 ms`, under the
/// 1.5 s target. With the old T = 400 it was 1450 ms, 50 ms from the limit.
/// Transport errors (ICMP unreachable, TCP reset) and transaction time-outs
/// are failures too and only make it sooner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Uplink {
    /// Interval between probes.
    pub probe_interval_ms: u64,
    /// A probe without an answer after this long counts as missed.
    pub probe_timeout_ms: u64,
    /// Missed probes in a row before the cloud counts as down.
    pub down_after: u32,
}

/// Default `[uplink] probe_timeout_ms` (holdline-survival's default too).
pub const DEFAULT_PROBE_TIMEOUT_MS: u64 = 300;

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            probe_interval_ms: 500,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            down_after: 3,
        }
    }
}

/// `[sip]` (extension): protocol knobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    /// RFC 3261 T1 (round-trip estimate), ms.
    pub t1_ms: u64,
    /// Largest message accepted, bytes.
    pub max_message_size: usize,
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            t1_ms: 500,
            max_message_size: 65_535,
        }
    }
}

/// Allowed `[survival] phone_refresh_s` when set (0 = off).
pub const PHONE_REFRESH_RANGE_S: std::ops::RangeInclusive<u64> = 60..=86_400;

/// `[survival]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Survival {
    /// Optional PSTN gateway / backup trunk.
    pub backup_route: Option<Endpoint>,
    /// Numbers that always have a route.
    pub emergency: Vec<String>,
    /// Extension: while the cloud is up, the longest expiry (seconds)
    /// holdline's REGISTER 2xx tells a phone; the cloud keeps the phone's
    /// own expiry. Every phone then refreshes at least this often, so in an
    /// untrusted-mode outage it proves itself alive and its refresh reaches
    /// the restarted cloud soon. 0 (default): the cloud's expiry passes
    /// unchanged. Otherwise 60..=86400.
    pub phone_refresh_s: u64,
}

impl Default for Survival {
    fn default() -> Self {
        Survival {
            backup_route: None,
            emergency: vec!["911".to_string(), "112".to_string()],
            phone_refresh_s: 0,
        }
    }
}

impl Survival {
    /// `phone_refresh_s` as the core's `SurvivalConfig::phone_refresh`.
    pub fn phone_refresh(&self) -> Option<std::time::Duration> {
        (self.phone_refresh_s > 0).then(|| std::time::Duration::from_secs(self.phone_refresh_s))
    }
}

/// Default `[store] purge_interval_s`: 10 minutes.
pub const DEFAULT_PURGE_INTERVAL_S: u64 = 600;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// SQLite database file.
    pub path: PathBuf,
    /// Extension: seconds between purges of expired bindings (and other
    /// expired records). Default 600 (10 minutes, as in the incident's
    /// setup); a purge works in small batches, so it does not stall SIP.
    pub purge_interval_s: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            path: PathBuf::from("holdline.db"),
            purge_interval_s: DEFAULT_PURGE_INTERVAL_S,
        }
    }
}

/// `[board]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Board {
    /// Hardware profile name (`sim` for the simulated board).
    pub profile: String,
}

impl Default for Board {
    fn default() -> Self {
        Board {
            profile: "sim".to_string(),
        }
    }
}

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Unix socket of the console.
    pub socket: PathBuf,
    /// Extension: serve the console on the board's serial port too.
    pub serial: bool,
    /// Extension: Argon2 PHC hash of the serial console password
    /// (`holdline hash-password`). Without it the serial console of a real
    /// board lets nobody in (and says why); the `sim` board needs no login.
    pub password_hash: Option<String>,
    /// Extension: a serial session idle this long is logged out (seconds).
    pub idle_timeout_s: u64,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            socket: PathBuf::from("console.sock"),
            serial: true,
            password_hash: None,
            idle_timeout_s: 600,
        }
    }
}

/// `[health]` (extension): the health supervisor that gates watchdog feeding.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Allow injecting a stalled task (test fixtures only).
    pub fault_injection: bool,
}

/// `[log]` (extension).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// `tracing` filter, e.g. `info` or `holdline=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".to_string(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse {
                path: path.to_path_buf(),
                key: if key == "." || key.is_empty() {
                    "(top)".to_string()
                } else {
                    key
                },
                msg: inner.message().trim().replace('\n', " "),
                line,
            }
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, msg: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            msg,
        };
        if self.lan.listen.is_empty() {
            return Err(invalid("lan.listen", "needs at least one listener".into()));
        }
        if self.wan.listen.is_empty() {
            return Err(invalid("wan.listen", "needs at least one listener".into()));
        }
        for (i, l) in self.lan.listen.iter().enumerate() {
            if self.wan.listen.contains(l) {
                return Err(invalid(
                    &format!("lan.listen[{i}]"),
                    format!("{l} is also a WAN listener; LAN and WAN must differ"),
                ));
            }
        }
        let d = &self.cloud.domain;
        if d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(invalid(
                "cloud.domain",
                format!("expected a SIP domain like \"cloud.test\", got {d:?}"),
            ));
        }
        if self.cloud.resync_rate == 0 {
            return Err(invalid("cloud.resync_rate", "must be at least 1".into()));
        }
        if !(50..=3_600_000).contains(&self.uplink.probe_interval_ms) {
            return Err(invalid(
                "uplink.probe_interval_ms",
                "must be between 50 and 3600000".into(),
            ));
        }
        if !(10..=60_000).contains(&self.uplink.probe_timeout_ms) {
            return Err(invalid(
                "uplink.probe_timeout_ms",
                "must be between 10 and 60000".into(),
            ));
        }
        if self.uplink.down_after == 0 {
            return Err(invalid("uplink.down_after", "must be at least 1".into()));
        }
        if !(50..=10_000).contains(&self.sip.t1_ms) {
            return Err(invalid("sip.t1_ms", "must be between 50 and 10000".into()));
        }
        if !(1_500..=1_048_576).contains(&self.sip.max_message_size) {
            return Err(invalid(
                "sip.max_message_size",
                "must be between 1500 and 1048576".into(),
            ));
        }
        for (i, e) in self.survival.emergency.iter().enumerate() {
            if e.is_empty()
                || !e
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
            {
                return Err(invalid(
                    &format!("survival.emergency[{i}]"),
                    format!("expected a dial string of digits, got {e:?}"),
                ));
            }
        }
        let r = self.survival.phone_refresh_s;
        if r != 0 && !PHONE_REFRESH_RANGE_S.contains(&r) {
            return Err(invalid(
                "survival.phone_refresh_s",
                format!(
                    "must be 0 (off) or between {} and {}, got {r}",
                    PHONE_REFRESH_RANGE_S.start(),
                    PHONE_REFRESH_RANGE_S.end()
                ),
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty".into()));
        }
        if self.console.socket.as_os_str().is_empty() {
            return Err(invalid("console.socket", "must not be empty".into()));
        }
        if let Some(h) = &self.console.password_hash {
            if let Err(e) = holdline_console::login::PasswordHash::parse(h) {
                return Err(invalid(
                    "console.password_hash",
                    format!("not an Argon2 PHC string: {e}"),
                ));
            }
        }
        if self.board.profile.is_empty() {
            return Err(invalid("board.profile", "must not be empty".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("t.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").expect("defaults");
        assert_eq!(c.lan.listen[0].to_string(), "udp:127.0.0.1:5060");
        assert_eq!(c.wan.listen[1].to_string(), "tcp:127.0.0.1:5070");
        assert_eq!(c.cloud.proxy.to_string(), "udp:127.0.0.2:5060");
        assert_eq!(c.cloud.domain, "cloud.test");
        assert_eq!(c.store.path, PathBuf::from("holdline.db"));
        assert_eq!(c.board.profile, "sim");
        assert_eq!(c.survival.emergency, vec!["911", "112"]);
        assert_eq!(c.store.purge_interval_s, 600);
        assert_eq!(c.lan.rate_limit_per_s, LAN_RATE_LIMIT_PER_S);
        assert_eq!(c.wan.cloud_rate_limit_per_s, CLOUD_RATE_LIMIT_PER_S);
        assert_eq!(c.uplink.probe_timeout_ms, 300);
        assert_eq!(c.survival.phone_refresh_s, 0);
        assert_eq!(c.survival.phone_refresh(), None);
    }

    #[test]
    fn default_uplink_goes_down_within_one_and_a_half_seconds() {
        // The arithmetic in `Uplink`'s doc, from the configured values.
        let u = Uplink::default();
        let suspect = u.probe_interval_ms.min(150);
        let worst = u.probe_interval_ms
            + u.probe_timeout_ms
            + u64::from(u.down_after.saturating_sub(2)) * suspect
            + u.probe_timeout_ms;
        assert_eq!(worst, 1250);
        assert!(worst <= 1500);
    }

    #[test]
    fn uplink_and_phone_refresh_bad_values_name_the_key() {
        for bad in ["0", "5", "60001"] {
            let e = parse(&format!("[uplink]\nprobe_timeout_ms = {bad}\n")).expect_err(bad);
            assert!(e.to_string().contains("uplink.probe_timeout_ms"), "{e}");
        }
        let e = parse("[uplink]\nprobe_timeout_ms = -1\n").expect_err("negative");
        assert!(e.to_string().contains("uplink.probe_timeout_ms"), "{e}");
        for bad in ["1", "59", "86401"] {
            let e = parse(&format!("[survival]\nphone_refresh_s = {bad}\n")).expect_err(bad);
            let s = e.to_string();
            assert!(s.contains("survival.phone_refresh_s"), "{s}");
            assert!(!s.contains('\n'), "{s}");
        }
        let e = parse("[survival]\nphone_refresh_s = \"300\"\n").expect_err("string");
        assert!(e.to_string().contains("survival.phone_refresh_s"), "{e}");
        let c = parse("[survival]\nphone_refresh_s = 300\n").expect("300 s");
        assert_eq!(
            c.survival.phone_refresh(),
            Some(std::time::Duration::from_secs(300))
        );
        assert!(parse("[survival]\nphone_refresh_s = 60\n").is_ok());
        assert!(parse("[survival]\nphone_refresh_s = 86400\n").is_ok());
        assert!(parse("[survival]\nphone_refresh_s = 0\n").is_ok());
    }

    #[test]
    fn rate_limits_are_configurable() {
        let c = parse(
            "[lan]\nrate_limit_per_s = 5\nrate_limit_burst = 10\n\
             [wan]\nrate_limit_per_s = 0\ncloud_rate_limit_per_s = 100\n",
        )
        .expect("rate limits");
        assert_eq!((c.lan.rate_limit_per_s, c.lan.rate_limit_burst), (5, 10));
        assert_eq!(c.wan.rate_limit_per_s, 0);
        assert_eq!(c.wan.rate_limit_burst, WAN_RATE_LIMIT_BURST);
        assert_eq!(c.wan.cloud_rate_limit_per_s, 100);
        let e = parse("[lan]\nrate_limit = 5\n").expect_err("unknown key");
        assert!(e.to_string().contains("rate_limit"), "{e}");
    }

    #[test]
    fn design_example_parses() {
        let c = parse(
            r#"
[lan]
listen = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
[wan]
listen = ["udp:127.0.0.1:5070", "tcp:127.0.0.1:5070"]
[cloud]
proxy = "udp:127.0.0.2:5060"
domain = "cloud.test"
trusted = false
resync_rate = 50
[survival]
backup_route = "udp:127.0.0.3:5060"
emergency = ["911", "112"]
[store]
path = "holdline.db"
[board]
profile = "sim"
[console]
socket = "console.sock"
"#,
        )
        .expect("the design's example");
        assert_eq!(
            c.survival.backup_route.map(|e| e.to_string()),
            Some("udp:127.0.0.3:5060".to_string())
        );
    }

    #[test]
    fn unknown_key_names_the_key_on_one_line() {
        let e = parse("[cloud]\ndomain = \"x.test\"\nprxy = \"udp:1.2.3.4:5\"\n")
            .expect_err("unknown key");
        let s = e.to_string();
        assert!(s.contains("prxy"), "{s}");
        assert!(s.contains("cloud"), "{s}");
        assert!(s.contains("line 3"), "{s}");
        assert!(!s.contains('\n'), "{s}");
        let e = parse("[lann]\n").expect_err("unknown section");
        assert!(e.to_string().contains("lann"), "{e}");
    }

    #[test]
    fn bad_address_names_the_key() {
        let e = parse("[lan]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:nonsense\"]\n")
            .expect_err("bad address");
        let s = e.to_string();
        assert!(s.contains("lan.listen[1]"), "{s}");
        assert!(s.contains("udp:nonsense"), "{s}");
        assert!(!s.contains('\n'), "{s}");
        let e = parse("[cloud]\nproxy = \"sctp:127.0.0.2:5060\"\n").expect_err("bad transport");
        assert!(e.to_string().contains("cloud.proxy"), "{e}");
        let e = parse("[lan]\nsubnets = [\"10.0.0.0/40\"]\n").expect_err("bad subnet");
        assert!(e.to_string().contains("lan.subnets[0]"), "{e}");
    }

    #[test]
    fn wrong_type_and_semantics() {
        let e = parse("[cloud]\ntrusted = \"yes\"\n").expect_err("wrong type");
        assert!(e.to_string().contains("cloud.trusted"), "{e}");
        let e = parse("[cloud]\ndomain = \"\"\n").expect_err("empty domain");
        assert!(e.to_string().contains("cloud.domain"), "{e}");
        let e = parse("[wan]\nlisten = [\"udp:127.0.0.1:5060\"]\n").expect_err("same as LAN");
        assert!(e.to_string().contains("lan.listen[0]"), "{e}");
        let e = parse("[sip]\nt1_ms = 1\n").expect_err("t1");
        assert!(e.to_string().contains("sip.t1_ms"), "{e}");
        let e = parse("[lan\n").expect_err("syntax");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = Config::load(Path::new("/nonexistent/holdline.toml")).expect_err("missing");
        let s = e.to_string();
        assert!(s.contains("/nonexistent/holdline.toml"), "{s}");
        assert!(!s.contains('\n'), "{s}");
    }

    /// Every appliance config shipped in an image (`etc/holdline/holdline.toml`)
    /// parses (STYLE.md 6). Other files there (e.g. the board's `board.toml`) are
    /// not holdline configs.
    #[test]
    fn every_image_config_parses() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(rd) = std::fs::read_dir(dir) else {
                return;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.ends_with("etc/holdline/holdline.toml") {
                    out.push(p);
                }
            }
        }
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../images");
        let mut found = Vec::new();
        walk(&images, &mut found);
        assert!(!found.is_empty(), "no configs under {}", images.display());
        for p in &found {
            if let Err(e) = Config::load(p) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn subnets_and_ipv6() {
        let s: Subnet = "10.1.0.0/16".parse().expect("subnet");
        assert_eq!(s.prefix, 16);
        let s: Subnet = "::1".parse().expect("v6 host");
        assert_eq!(s.prefix, 128);
        let e: Endpoint = "tcp:[::1]:5060".parse().expect("v6 endpoint");
        assert_eq!(e.transport, Transport::Tcp);
    }
}
