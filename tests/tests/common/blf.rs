//! BLF helpers of the survival tests: a site (cloud, holdline, a caller and
//! a callee registered, the callee answering), BLF watchers through holdline
//! (`tests/sipp/subscribe_refresh.xml`), and checks of the NOTIFYs a
//! watcher received (who built them, CSeq, dialog-info version and states).

use std::time::{Duration, Instant};

use super::{
    cseq_of, kill_cloud_and_wait_down, messages_so_far, scenario, start_site, tag_of,
    trusting_cloud, via_count, Setup, PHONE_PORT,
};
use holdline_tests::holdline::Holdline;
use holdline_tests::kamailio::{Kamailio, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Direction, Scenario, SipMessage, Sipp, SippProcess, SippResult};

pub const WATCHER_PORT: u16 = 5066;

/// A BLF watcher (`watcher` on `watched`) from phone `i`, refreshing after
/// `quiet_ms` of quiet, through holdline.
pub fn blf_watcher(
    block: &Block,
    hl: &Holdline,
    i: u8,
    (watcher, watched): (&User, &User),
    quiet_ms: u64,
) -> SippProcess {
    Sipp::new(scenario("subscribe_refresh.xml"))
        .name(&format!("blf-{}", watcher.name))
        .local(block.phone(i), WATCHER_PORT)
        .remote(hl.lan())
        .watch(&[(watcher.clone(), watched.name.clone())])
        .key("event", "dialog")
        .key("accept", "application/dialog-info+xml")
        .key("expires", "600")
        .var("QUIET_MS", &quiet_ms.to_string())
        .var("REFRESHES", "60")
        .trace_messages(true)
        .timeout(Duration::from_secs(240))
        .spawn()
        .expect("watcher starts")
}

/// `caller` calls `callee` through holdline (answered by the callee's UAS).
pub fn call(block: &Block, hl: &Holdline, caller: &User, callee: &User, name: &str) -> SippResult {
    let r = Sipp::new(Scenario::Uac)
        .name(name)
        .local(block.phone(0), 5064)
        .remote(hl.lan())
        .dial(&[(caller.clone(), callee.name.clone())])
        .var("HOLD_MS", "500")
        .trace_messages(true)
        .timeout(Duration::from_secs(90))
        .run()
        .expect("caller runs");
    assert!(
        r.all_ok() && r.successful == 1 && super::got_answer(&r.messages, "BYE", 200),
        "{name}: {r}\n{}",
        hl.log()
    );
    r
}

pub fn call_id_of(r: &SippResult) -> String {
    r.messages
        .iter()
        .find(|m| m.method() == Some("INVITE"))
        .and_then(|m| m.header("Call-ID"))
        .unwrap_or_default()
        .to_string()
}

/// A NOTIFY holdline built itself (one Via, holdline's), not one of the
/// cloud's relayed by holdline (the cloud's Via under holdline's).
pub fn built_by_holdline(m: &SipMessage) -> bool {
    via_count(m) == 1
}

pub fn notifies(msgs: &[SipMessage]) -> Vec<&SipMessage> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Received && m.method() == Some("NOTIFY"))
        .collect()
}

/// dialog-info `version`.
pub fn version_of(m: &SipMessage) -> Option<u64> {
    m.body()
        .split_once("<dialog-info")
        .and_then(|(_, r)| r.split_once("version=\""))
        .and_then(|(_, r)| r.split_once('"'))
        .and_then(|(v, _)| v.parse().ok())
}

/// The `<state>`s a dialog-info body gives for dialogs of `call_id`.
pub fn states_of(m: &SipMessage, call_id: &str) -> Vec<String> {
    m.body()
        .split("<dialog ")
        .skip(1)
        .filter(|d| d.contains(call_id))
        .filter_map(|d| {
            let st = d.split("<state").nth(1)?;
            Some(st.split('>').nth(1)?.split('<').next()?.trim().to_string())
        })
        .collect()
}

pub fn saw_states(msgs: &[SipMessage], call_id: &str, local_only: bool) -> (bool, bool) {
    let states: Vec<String> = notifies(msgs)
        .into_iter()
        .filter(|n| !local_only || built_by_holdline(n))
        .flat_map(|n| states_of(n, call_id))
        .collect();
    (
        states.iter().any(|s| s == "confirmed"),
        states.iter().any(|s| s == "terminated"),
    )
}

/// A refresh SUBSCRIBE (To tag set) sent after message `after`, answered 200.
pub fn refresh_answered_after(msgs: &[SipMessage], after: usize) -> Option<usize> {
    msgs.iter().enumerate().skip(after + 1).find_map(|(i, m)| {
        let refresh = m.direction == Direction::Sent
            && m.method() == Some("SUBSCRIBE")
            && m.header("To").and_then(tag_of).is_some();
        if !refresh {
            return None;
        }
        let cseq = cseq_of(m);
        msgs.iter().skip(i + 1).position(|r| {
            r.direction == Direction::Received
                && r.status() == Some(200)
                && r.header("CSeq").is_some_and(|c| c.contains("SUBSCRIBE"))
                && cseq_of(r) == cseq
        })?;
        Some(i)
    })
}

/// Checks the NOTIFYs holdline sent in one subscription dialog: same
/// Call-ID and tags as `first`, CSeq and version strictly above
/// `(cseq, version)` and increasing, dialog-info, active with an expiry
/// (the last one: deactivated).
pub fn check_local_notifies(
    msgs: &[SipMessage],
    first: &SipMessage,
    above: (u32, Option<u64>),
    who: &str,
) {
    let call_id = first.header("Call-ID").unwrap_or_default();
    let from_tag = first.header("From").and_then(tag_of);
    let to_tag = first.header("To").and_then(tag_of);
    let local: Vec<&SipMessage> = notifies(msgs)
        .into_iter()
        .filter(|n| built_by_holdline(n))
        .collect();
    assert!(local.len() >= 2, "{who}: {local:#?}");
    let (mut cseq, mut version) = above;
    for (k, n) in local.iter().enumerate() {
        assert_eq!(n.header("Call-ID"), Some(call_id), "{who}: {n:?}");
        assert_eq!(n.header("From").and_then(tag_of), from_tag, "{who}: {n:?}");
        assert_eq!(n.header("To").and_then(tag_of), to_tag, "{who}: {n:?}");
        assert_eq!(n.header("Event"), Some("dialog"), "{who}: {n:?}");
        assert!(
            n.header("Content-Type")
                .is_some_and(|c| c.contains("application/dialog-info+xml")),
            "{who}: {n:?}"
        );
        let c = cseq_of(n).expect("CSeq");
        assert!(c > cseq, "{who}: CSeq {c} not above {cseq}: {n:?}");
        cseq = c;
        let v = version_of(n).expect("a dialog-info version");
        assert!(
            version.is_none_or(|last| v > last),
            "{who}: version {v} not above {version:?}: {n:?}"
        );
        version = Some(v);
        let state = n.header("Subscription-State").unwrap_or_default();
        if k + 1 == local.len() {
            assert_eq!(state, "terminated;reason=deactivated", "{who}: {n:?}");
        } else {
            let exp = state
                .strip_prefix("active;expires=")
                .and_then(|e| e.split(';').next())
                .and_then(|e| e.trim().parse::<u64>().ok());
            assert!(
                exp.is_some_and(|e| e > 0 && e <= 600),
                "{who}: {state:?} in {n:?}"
            );
        }
    }
}

/// Waits (bounded) until `p` has exited; stops it either way.
pub fn finish(p: SippProcess, within: Duration) -> SippResult {
    let mut p = p;
    let deadline = Instant::now() + within;
    while p.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    p.stop(Duration::from_secs(2)).expect("sipp result")
}

/// A site: the cloud (trusting holdline, for the trusted resync), holdline,
/// the caller and the callee registered, the callee answering calls.
pub struct Site {
    pub block: Block,
    pub users: Vec<User>,
    pub cloud: Kamailio,
    pub hl: Holdline,
    callee_uas: Option<SippProcess>,
}

impl Site {
    pub fn start(first_user: u32) -> Site {
        let block = Block::allocate();
        let users = User::numbered(first_user, 3);
        let (cloud, hl) = start_site(
            &block,
            trusting_cloud(&block, &users, &[]),
            &Setup {
                trusted: true,
                ..Setup::default()
            },
            &users[..2],
        );
        let callee_uas = Sipp::new(Scenario::Uas)
            .name("callee")
            .local(block.phone(1), PHONE_PORT)
            .calls(10)
            .var("RING_MS", "100")
            .timeout(Duration::from_secs(240))
            .spawn()
            .expect("callee answers");
        Site {
            block,
            users,
            cloud,
            hl,
            callee_uas: Some(callee_uas),
        }
    }

    /// Kills the cloud and waits until holdline has found it down.
    pub fn kill_cloud(&mut self) {
        kill_cloud_and_wait_down(&mut self.cloud, &self.hl);
    }

    /// During the outage: a call placed now shows on watcher `w` in
    /// NOTIFYs built by holdline (its refresh answered here too), and the
    /// watcher is still running. The check both BLF outage tests make,
    /// whether the subscription began before the outage or during it.
    pub fn blf_served_here(&self, w: &mut SippProcess) {
        let down_call = self.call("call-down");
        wait_local_blf(w, &down_call, &self.hl);
        assert!(w.is_running(), "the watcher ended during the outage");
    }

    /// The caller calls the callee; returns the call's Call-ID.
    pub fn call(&self, name: &str) -> String {
        call_id_of(&call(
            &self.block,
            &self.hl,
            &self.users[0],
            &self.users[1],
            name,
        ))
    }

    /// A BLF watcher (the third user, from phone 2) on the callee,
    /// refreshing after `quiet_ms` of quiet.
    pub fn watcher(&self, quiet_ms: u64) -> SippProcess {
        blf_watcher(
            &self.block,
            &self.hl,
            2,
            (&self.users[2], &self.users[1]),
            quiet_ms,
        )
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        if let Some(p) = self.callee_uas.take() {
            let _ = p.stop(Duration::from_secs(2));
        }
    }
}

/// Waits (bounded) until the watcher saw `call_id` confirmed and terminated
/// in NOTIFYs built by holdline and had a refresh answered after holdline's
/// first NOTIFY.
pub fn wait_local_blf(w: &SippProcess, call_id: &str, hl: &Holdline) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let m = messages_so_far(w);
        let first_local = m.iter().position(|x| {
            x.direction == Direction::Received
                && x.method() == Some("NOTIFY")
                && built_by_holdline(x)
        });
        let refreshed = first_local
            .and_then(|f| refresh_answered_after(&m, f))
            .is_some();
        let states = saw_states(&m, call_id, true);
        if states == (true, true) && refreshed {
            return;
        }
        if Instant::now() >= deadline {
            // What the SUBSCRIBEs were answered (e.g. a refresh refused).
            let answers: Vec<String> = m
                .iter()
                .filter(|x| x.direction == Direction::Received && x.status().is_some())
                .filter(|x| x.header("CSeq").is_some_and(|c| c.contains("SUBSCRIBE")))
                .map(|x| format!("{} -> {}", x.header("CSeq").unwrap_or(""), x.start_line()))
                .collect();
            panic!(
                "BLF during the outage incomplete (confirmed/terminated seen: {states:?}, \
                 refresh answered 200: {refreshed}; SUBSCRIBE answers: {answers:?}): {m:#?}\n{}",
                hl.log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The 200 a watcher got for its first SUBSCRIBE.
pub fn first_subscribe_ok(r: &SippResult) -> SipMessage {
    r.messages
        .iter()
        .find(|m| {
            m.direction == Direction::Received
                && m.status() == Some(200)
                && m.header("CSeq").is_some_and(|c| c.contains("SUBSCRIBE"))
        })
        .cloned()
        .expect("a 200 to the SUBSCRIBE")
}

pub fn signal(p: &SippProcess, sig: nix::sys::signal::Signal) {
    let pid = p
        .pid()
        .and_then(|p| i32::try_from(p).ok())
        .expect("sipp pid");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal sipp");
}
