//! Set-up shared by the `appliance_survival_*` tests (issue 4 with the real
//! rig): holdline with survival settings, phones registered through it, the
//! cloud's state as holdline sees it, the rig's extra SIPp scenarios, and
//! numbers read out of the console's JSON.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod blf;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use holdline_tests::holdline::{Holdline, HoldlineOpts};
use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, SipMessage, Sipp, SippResult};

/// Every site phone's SIP port.
pub const PHONE_PORT: u16 = 5062;

/// How holdline is set up for a survival test.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `[cloud] trusted = true` (holdline re-registers phones itself at resync).
    pub trusted: bool,
    /// `[uplink] probe_interval_ms`; `None`: 500 (the product default).
    pub probe_interval_ms: Option<u64>,
    /// `[survival]` keys (`backup_route = ...`, `emergency = [...]`), if any.
    pub survival: Option<String>,
}

/// Starts holdline in `block` with `setup` and waits until it sees the cloud up.
pub fn start_holdline(block: &Block, setup: &Setup) -> Holdline {
    let mut opts = HoldlineOpts::new(block);
    opts.probe_interval_ms = setup.probe_interval_ms.unwrap_or(500);
    if let Some(s) = &setup.survival {
        opts.extra = format!("[survival]\n{s}\n");
    }
    let mut hl = Holdline::start(opts).expect("holdline starts");
    if setup.trusted {
        // The rig's options have no `[cloud] trusted` knob: amend and restart.
        let text = std::fs::read_to_string(hl.config_path()).expect("config");
        let text = text.replacen("[cloud]\n", "[cloud]\ntrusted = true\n", 1);
        std::fs::write(hl.config_path(), text).expect("config");
        hl.start_again().expect("holdline with trusted resync");
    }
    wait_cloud(&hl, "up", Duration::from_secs(30));
    hl
}

/// Starts the site every survival test begins from: the cloud (Kamailio
/// with `copts`) on the block's cloud address, holdline in front of it with
/// `setup` (seeing the cloud up), and `phones[i]` registered from phone `i`
/// through holdline. The tests differ in what they then break; the working
/// site before the break is the same, so it is built in one place.
pub fn start_site(
    block: &Block,
    copts: KamailioOpts,
    setup: &Setup,
    phones: &[User],
) -> (Kamailio, Holdline) {
    let cloud = Kamailio::start(block.cloud(), copts).expect("cloud");
    let hl = start_holdline(block, setup);
    for (i, u) in phones.iter().enumerate() {
        let i = u8::try_from(i).expect("a phone index fits the block");
        register(block, &hl, i, u);
    }
    (cloud, hl)
}

/// [`start_site`] with the product's defaults on both sides: a cloud that
/// knows `users` and challenges everyone, holdline as shipped, every one of
/// `users` registered (the plain site most call tests break).
pub fn start_default_site(block: &Block, users: &[User]) -> (Kamailio, Holdline) {
    start_site(
        block,
        KamailioOpts::with_users(users.to_vec()),
        &Setup::default(),
        users,
    )
}

/// Cloud options for a site where holdline re-registers phones itself at
/// resync (`Setup::trusted`): the cloud must then take holdline's REGISTERs
/// unchallenged, as it does from its other trusted peers in `trusted`.
pub fn trusting_cloud(
    block: &Block,
    users: &[User],
    trusted: &[std::net::Ipv4Addr],
) -> KamailioOpts {
    let mut copts = KamailioOpts::with_users(users.to_vec());
    copts.trusted = trusted
        .iter()
        .copied()
        .chain(std::iter::once(block.holdline()))
        .map(Into::into)
        .collect();
    copts
}

/// Kills the cloud (no goodbye on the wire) and waits until holdline has
/// found it down: the outage most survival tests are about, and the point
/// after which holdline alone must serve the site.
pub fn kill_cloud_and_wait_down(cloud: &mut Kamailio, hl: &Holdline) {
    cloud.crash().expect("kill the cloud");
    wait_cloud(hl, "down", Duration::from_secs(30));
}

/// Phone 1 as the callee of a site call: answers one call on the phone's
/// registered port after 100 ms of ringing, tracing its messages (the tests
/// watch them while it runs). The caller adds the scenario's own variables.
pub fn site_callee(block: &Block, s: Scenario) -> Sipp {
    Sipp::new(s)
        .name("callee")
        .local(block.phone(1), PHONE_PORT)
        .calls(1)
        .var("RING_MS", "100")
        .trace_messages(true)
}

/// Phone 0 calling `users[1]` as `users[0]` through holdline, from port
/// 5064 (not its registered port), tracing its messages.
pub fn site_caller(block: &Block, hl: &Holdline, users: &[User], s: Scenario) -> Sipp {
    Sipp::new(s)
        .name("caller")
        .local(block.phone(0), 5064)
        .remote(hl.lan())
        .dial(&[(users[0].clone(), users[1].name.clone())])
        .trace_messages(true)
}

/// Phone 0 (user `u`) calls `number` through holdline expecting a 503
/// (`tests/sipp/uac_rejected.xml`): what a phone must hear for a call that
/// holdline has nowhere to send while the cloud is gone.
pub fn call_refused_503(block: &Block, hl: &Holdline, u: &User, number: &str) -> SippResult {
    Sipp::new(scenario("uac_rejected.xml"))
        .name("call-rejected")
        .local(block.phone(0), 5064)
        .remote(hl.lan())
        .dial(&[(u.clone(), number.to_string())])
        .var("STATUS", "503")
        .trace_messages(true)
        .timeout(Duration::from_secs(60))
        .run()
        .expect("caller runs")
}

/// The 503 among `msgs`, asserted to carry a positive Retry-After (issue
/// 4.2: a refused phone is told when to try again, not left to hammer).
pub fn refusal_with_retry_after(msgs: &[SipMessage]) -> &SipMessage {
    let refusal = msgs
        .iter()
        .find(|m| m.status() == Some(503))
        .expect("a 503");
    let retry_after = refusal
        .header("Retry-After")
        .and_then(|v| v.split([';', ' ', '(']).next())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "{refusal:?}");
    refusal
}

/// The cloud's state in `status` (`up`, `suspect`, `down`, `recovering`).
pub fn cloud_state(hl: &Holdline) -> String {
    let j = hl.console_json(&["status"]).unwrap_or_default();
    j.split("\"cloud\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("?")
        .to_string()
}

/// Waits (bounded) until holdline says the cloud is `want`.
pub fn wait_cloud(hl: &Holdline, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let s = cloud_state(hl);
        if s == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "holdline never saw the cloud {want} (it says {s})\n{}",
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Registers `u` from phone `i` through holdline (answers a challenge when
/// the cloud sends one) and asserts it succeeded.
pub fn register(block: &Block, hl: &Holdline, i: u8, u: &User) {
    let r = Sipp::new(Scenario::RegisterRefresh)
        .name(&format!("register-{}", u.name))
        .var("REGISTRATIONS", "1")
        .local(block.phone(i), PHONE_PORT)
        .remote(hl.lan())
        .users(std::slice::from_ref(u))
        .timeout(Duration::from_secs(60))
        .run()
        .expect("sipp register runs");
    assert!(r.all_ok(), "{} could not register: {r}", u.name);
}

/// One of the scenarios under `tests/sipp/` that the rig's [`Scenario`] enum
/// does not name.
pub fn scenario(file: &str) -> Scenario {
    Scenario::Custom(sipp_dir().join(file))
}

fn sipp_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// `"key":<number>` in console JSON.
pub fn json_u64(json: &str, key: &str) -> Option<u64> {
    let rest = json.split(&format!("\"{key}\":")).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// How many `Via` header lines a message has (each line may hold several
/// values; SIPp and the peers here write one per line).
pub fn via_count(m: &SipMessage) -> usize {
    m.headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Via") || k.eq_ignore_ascii_case("v"))
        .map(|(_, v)| v.split(',').count())
        .sum()
}

/// Status codes of the responses a SIPp run received.
pub fn statuses(msgs: &[SipMessage]) -> Vec<u16> {
    msgs.iter()
        .filter(|m| m.direction == holdline_tests::sipp::Direction::Received)
        .filter_map(SipMessage::status)
        .collect()
}

/// The tag parameter of a From/To header value.
pub fn tag_of(header: &str) -> Option<String> {
    header.split(";tag=").nth(1).map(|t| {
        t.split([';', '>', ' '])
            .next()
            .unwrap_or(t)
            .trim()
            .to_string()
    })
}

/// CSeq number of a message.
pub fn cseq_of(m: &SipMessage) -> Option<u32> {
    m.header("CSeq")
        .and_then(|c| c.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The messages a traced SIPp run has sent and received so far (its
/// `-trace_msg` log, read while it runs).
pub fn messages_so_far(p: &holdline_tests::sipp::SippProcess) -> Vec<SipMessage> {
    p.dir()
        .map(|d| {
            holdline_tests::sipp::parse_message_log(&holdline_tests::proc::read_lossy(
                &d.join("messages.log"),
            ))
        })
        .unwrap_or_default()
}

/// Waits (bounded) until a traced SIPp run has received a `method` request.
pub fn wait_received(p: &holdline_tests::sipp::SippProcess, method: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let msgs = messages_so_far(p);
        if msgs.iter().any(|m| {
            m.direction == holdline_tests::sipp::Direction::Received && m.method() == Some(method)
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {method} received within {within:?}: {msgs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a SIPp run received a `code` answer to its `method` request
/// (by the CSeq method: SIPp's `<recv response="200">` matches any 200, so a
/// retransmitted 200 to the INVITE can pass for the 200 to a BYE).
pub fn got_answer(msgs: &[SipMessage], method: &str, code: u16) -> bool {
    msgs.iter().any(|m| {
        m.direction == holdline_tests::sipp::Direction::Received
            && m.status() == Some(code)
            && m.header("CSeq")
                .and_then(|c| c.split_whitespace().nth(1))
                .is_some_and(|mth| mth.eq_ignore_ascii_case(method))
    })
}
