//! The invariants, checked on every step: what the phones observed and what
//! the edge sent, judged against the simulation's ground truth (who is alive,
//! who is registered, what the cloud has verified). The first violation
//! ends the seed with a message naming it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use holdline_core::{Edge, Side, Transmit};
use holdline_sip::Method;

use super::phone::{index_of, Phone, Watch};
use super::ua::parse;

/// Repeats of one release (retransmissions, challenge round trip, retry of
/// a lost NOTIFY) within this are not new releases.
const SAME_RELEASE_MS: u64 = 32_000;

/// What a phone saw that matters to an invariant.
#[derive(Debug, Clone)]
pub enum Obs {
    CallPlaced {
        call_id: String,
        caller: usize,
        callee: usize,
    },
    Ringing {
        call_id: String,
        via_cloud: bool,
    },
    CallAnswered {
        call_id: String,
    },
    CallFailed {
        call_id: String,
        status: u16,
    },
    CallEnded {
        call_id: String,
        phone: usize,
    },
    /// The callee answered 482 to a second INVITE of one call (RFC 3261 §8.2.2.2).
    Merged,
    ByeTimedOut {
        call_id: String,
        phone: usize,
    },
    NotifyCseqBackwards {
        phone: usize,
        call_id: String,
        last: u32,
        got: u32,
    },
    VersionBackwards {
        phone: usize,
        call_id: String,
        last: u64,
        got: u64,
    },
    BadDialogInfo {
        phone: usize,
        body: String,
    },
    BadMwi {
        phone: usize,
        body: String,
    },
    Unparseable {
        phone: usize,
        bytes: String,
    },
}

#[derive(Debug, Clone)]
pub struct CallRec {
    pub caller: usize,
    pub callee: usize,
    pub placed: u64,
    /// Both phones registered here and alive when the call was placed.
    pub local_route: bool,
    /// A party was switched off before the call was over.
    pub excluded: bool,
    pub answered: Option<u64>,
    /// Whether the callee's INVITE came through the cloud.
    pub via_cloud: Option<bool>,
    pub failed: Option<u16>,
    pub ended: BTreeMap<usize, u64>,
}

/// Counters for the summary (and to prove the run was not vacuous).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub calls_with_local_route: u64,
    pub answered: u64,
    pub failed: u64,
    pub failed_no_local_route: u64,
    pub pushes: u64,
    pub forwarded_resync_registers: u64,
    pub deactivations: u64,
    pub notifies_to_phones: u64,
    pub max_pace: usize,
    pub blf_checked: u64,
    /// Watches the BLF check leaves out by design: a call holdline routed
    /// without the cloud (404 from a cloud that does not know the callee
    /// yet, fail-fast) while the watcher's dialog was the cloud's. The
    /// cloud never saw the call, and holdline must not send NOTIFYs in the
    /// cloud's dialog (its CSeq and version would collide with the cloud's).
    pub blf_blind: u64,
    /// Watches left out because a NOTIFY of the dialog had to be
    /// retransmitted during the call (see `finish`).
    pub blf_folded_after_loss: u64,
    pub merged: u64,
}

/// The checker.
#[derive(Debug)]
pub struct Checker {
    pub calls: BTreeMap<String, CallRec>,
    pub counts: Counts,
    /// (AoR, contact) the cloud accepted from the phone itself, ever.
    pub verified: BTreeSet<(String, String)>,
    resync_rate: u32,
    pace: VecDeque<(u64, String)>,
    released: BTreeMap<String, u64>,
    /// Start of the first outage since the last finished resync (for "dead").
    pub episode_start: Option<u64>,
}

impl Checker {
    pub fn new(resync_rate: u32) -> Checker {
        Checker {
            calls: BTreeMap::new(),
            counts: Counts::default(),
            verified: BTreeSet::new(),
            resync_rate,
            pace: VecDeque::new(),
            released: BTreeMap::new(),
            episode_start: None,
        }
    }

    /// A phone was switched off: its calls in progress say nothing about holdline.
    pub fn phone_off(&mut self, i: usize) {
        for c in self.calls.values_mut() {
            let over = c.failed.is_some() || c.ended.len() == 2;
            if !over && (c.caller == i || c.callee == i) {
                c.excluded = true;
            }
        }
    }

    pub fn obs(&mut self, now: u64, o: Obs, phones: &[Phone]) -> Result<(), String> {
        match o {
            Obs::CallPlaced {
                call_id,
                caller,
                callee,
            } => {
                // A local route: both registered here (per their last 2xx,
                // with a margin) and switched on.
                let reg = |i: usize| phones.get(i).is_some_and(|p| p.registered(now, 5_000));
                let local_route = reg(caller) && reg(callee);
                self.counts.calls += 1;
                if local_route {
                    self.counts.calls_with_local_route += 1;
                }
                self.calls.insert(
                    call_id,
                    CallRec {
                        caller,
                        callee,
                        placed: now,
                        local_route,
                        excluded: false,
                        answered: None,
                        via_cloud: None,
                        failed: None,
                        ended: BTreeMap::new(),
                    },
                );
            }
            Obs::CallAnswered { call_id } => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    if c.answered.is_none() {
                        c.answered = Some(now);
                        self.counts.answered += 1;
                    }
                }
            }
            Obs::CallFailed { call_id, status } => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.failed = Some(status);
                    self.counts.failed += 1;
                    if !c.local_route || c.excluded {
                        self.counts.failed_no_local_route += 1;
                    } else {
                        return Err(format!(
                            "call {call_id} from phone {} to phone {} failed with {status} at {now} ms \
                             (placed at {} ms) although both were registered here and alive",
                            c.caller, c.callee, c.placed
                        ));
                    }
                }
            }
            Obs::CallEnded { call_id, phone } => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.ended.insert(phone, now);
                }
            }
            Obs::Merged => self.counts.merged += 1,
            Obs::Ringing { call_id, via_cloud } => {
                if let Some(c) = self.calls.get_mut(&call_id) {
                    c.via_cloud.get_or_insert(via_cloud);
                }
            }
            Obs::ByeTimedOut { call_id, phone } => {
                if let Some(c) = self.calls.get(&call_id) {
                    let other = if c.caller == phone { c.callee } else { c.caller };
                    let still = phones.get(other).is_some_and(|p| p.on && p.in_call(&call_id));
                    if still && !c.excluded {
                        return Err(format!(
                            "BYE of call {call_id} from phone {phone} lost: phone {other} still has the call at {now} ms"
                        ));
                    }
                }
            }
            Obs::NotifyCseqBackwards {
                phone,
                call_id,
                last,
                got,
            } => {
                return Err(format!(
                    "phone {phone} got a NOTIFY with CSeq {got} after {last} in subscription {call_id} at {now} ms"
                ))
            }
            Obs::VersionBackwards {
                phone,
                call_id,
                last,
                got,
            } => {
                return Err(format!(
                    "phone {phone} got dialog-info version {got} after {last} in subscription {call_id} at {now} ms"
                ))
            }
            Obs::BadDialogInfo { phone, body } => {
                return Err(format!("phone {phone} got a dialog-info without a version: {body}"))
            }
            Obs::BadMwi { phone, body } => {
                return Err(format!("phone {phone} got a message-summary without Messages-Waiting: {body}"))
            }
            Obs::Unparseable { phone, bytes } => {
                return Err(format!("phone {phone} got an unparseable message: {bytes}"))
            }
        }
        Ok(())
    }

    /// Everything the edge sends passes here.
    pub fn edge_tx(
        &mut self,
        now: u64,
        tx: &Transmit,
        edge: &Edge,
        phones: &[Phone],
    ) -> Result<(), String> {
        // Only REGISTERs to the cloud and NOTIFYs to phones are judged here
        // (the receivers report anything unparseable).
        let judged = match tx.side {
            Side::Wan => tx.bytes.starts_with(b"REGISTER "),
            Side::Lan => tx.bytes.starts_with(b"NOTIFY "),
        };
        if !judged {
            return Ok(());
        }
        let Some(m) = parse(&tx.bytes) else {
            return Err(format!(
                "the edge sent an unparseable message: {}",
                String::from_utf8_lossy(&tx.bytes)
            ));
        };
        match (tx.side, m.method()) {
            (Side::Wan, Some(Method::Register)) => {
                let cid = m.call_id().unwrap_or_default().to_string();
                let aor = m.to().map(|t| t.uri.to_string()).unwrap_or_default();
                let contact = match m.contacts() {
                    Some(holdline_sip::Contacts::List(l)) => {
                        l.first().map(|c| c.uri.to_string()).unwrap_or_default()
                    }
                    _ => String::new(),
                };
                if m.paths().is_empty() {
                    return Err(format!(
                        "REGISTER to the cloud without Path at {now} ms: {cid}"
                    ));
                }
                if cid.starts_with("hl-resync") {
                    self.counts.pushes += 1;
                    self.judge_push(now, &aor, &contact, phones)?;
                    self.paced(now, format!("reg {cid}"))?;
                } else if let Some(p) = edge.resync_progress() {
                    // The edge's resync clock is ms since its creation, as ours.
                    let active = p.finished_at.is_none_or(|f| f.0 >= now);
                    if active && p.mode == holdline_survival::resync::ResyncMode::Untrusted {
                        self.counts.forwarded_resync_registers += 1;
                        self.paced(now, format!("reg {cid}"))?;
                    }
                }
            }
            (Side::Lan, Some(Method::Notify)) => {
                self.counts.notifies_to_phones += 1;
                let deactivated = m.subscription_state().is_some_and(|s| {
                    s.state.eq_ignore_ascii_case("terminated") && s.reason() == Some("deactivated")
                });
                if deactivated {
                    self.counts.deactivations += 1;
                    self.paced(now, format!("notify {}", m.call_id().unwrap_or_default()))?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A REGISTER holdline made on a phone's behalf must be for a binding
    /// the cloud verified before, of a phone that is not dead.
    fn judge_push(
        &mut self,
        now: u64,
        aor: &str,
        contact: &str,
        phones: &[Phone],
    ) -> Result<(), String> {
        if !self
            .verified
            .contains(&(aor.to_string(), contact.to_string()))
        {
            return Err(format!(
                "unverified binding {aor} -> {contact} pushed to the cloud at {now} ms (never accepted by the cloud from the phone)"
            ));
        }
        let user = aor
            .trim_start_matches("sip:")
            .split('@')
            .next()
            .unwrap_or("");
        let Some(p) = index_of(user).and_then(|i| phones.get(i)) else {
            return Err(format!("push for an unknown phone {aor} at {now} ms"));
        };
        // Dead: switched off and silent since before the outage began (1 s
        // of margin for packets in flight). A phone that spoke during the
        // outage and died later passed the liveness check honestly.
        if let Some(start) = self.episode_start {
            if !p.on && p.last_sent + 1_000 < start {
                return Err(format!(
                    "dead phone {} ({aor}, silent since {} ms, outage from {start} ms) pushed to the cloud at {now} ms",
                    p.idx, p.last_sent
                ));
            }
        }
        Ok(())
    }

    /// One resync release (REGISTER given back, subscription deactivated):
    /// never more than `resync_rate` in any sliding second.
    /// `key` names the binding or subscription: its retransmissions, a
    /// challenged REGISTER's second try and a lost deactivation's retry
    /// within [`SAME_RELEASE_MS`] are the same release, not new ones.
    fn paced(&mut self, now: u64, key: String) -> Result<(), String> {
        while self.pace.front().is_some_and(|(t, _)| *t + 1_000 <= now) {
            self.pace.pop_front();
        }
        if self
            .released
            .get(&key)
            .is_some_and(|t| now.saturating_sub(*t) < SAME_RELEASE_MS)
        {
            return Ok(());
        }
        self.released.insert(key.clone(), now);
        self.pace.push_back((now, key));
        let n = self.pace.len();
        self.counts.max_pace = self.counts.max_pace.max(n);
        if n > self.resync_rate as usize {
            let list: Vec<String> = self.pace.iter().map(|(t, k)| format!("{t}:{k}")).collect();
            return Err(format!(
                "resync pace above the cap of {}/s at {now} ms: {n} releases in one second: {list:?}",
                self.resync_rate
            ));
        }
        Ok(())
    }

    /// At the end: calls that were answered were ended on both sides, and
    /// every BLF watcher that watched a whole call saw it confirmed and
    /// terminated.
    pub fn finish(&mut self, end: u64, watches: &[Watch]) -> Result<(), String> {
        for (cid, c) in &self.calls {
            let Some(ans) = c.answered else { continue };
            if c.excluded || ans + 150_000 > end {
                continue;
            }
            if c.ended.len() < 2 {
                return Err(format!(
                    "call {cid} (phone {} -> {}) answered at {ans} ms was never ended on both sides: {:?}",
                    c.caller, c.callee, c.ended
                ));
            }
        }
        for (cid, c) in &self.calls {
            let (Some(_), false) = (c.answered, c.excluded) else {
                continue;
            };
            if c.ended.len() < 2 {
                continue;
            }
            let ended = c.ended.values().copied().max().unwrap_or(0);
            if ended + 10_000 > end {
                continue;
            }
            let parties = [c.caller, c.callee];
            for w in watches {
                let Some(t) = index_of(&w.target) else {
                    continue;
                };
                if !parties.contains(&t) || w.watcher == c.caller || w.watcher == c.callee {
                    continue;
                }
                if w.from > c.placed || w.to.is_some_and(|to| to < ended + 10_000) {
                    continue;
                }
                let cloud_served = w.holdline_from.is_none_or(|h| h > c.placed);
                if c.via_cloud == Some(false) && cloud_served {
                    self.counts.blf_blind += 1;
                    continue;
                }
                let seen = w.seen.get(cid).copied().unwrap_or((false, false));
                // A notifier sends one NOTIFY at a time per dialog, each
                // with the full state of the moment (RFC 4235, RFC 6665
                // §4.2.2): when the answers to one are lost, the states the
                // call went through meanwhile are folded into the next
                // NOTIFY, and a short call's `confirmed` can be skipped.
                // Such a miss is counted, not judged; any other is a failure.
                let lossy = w
                    .retransmitted
                    .iter()
                    .any(|t| (c.placed..=ended).contains(t));
                if seen != (true, true) && lossy {
                    self.counts.blf_folded_after_loss += 1;
                    continue;
                }
                self.counts.blf_checked += 1;
                if seen != (true, true) {
                    return Err(format!(
                        "BLF: phone {} watching {} (dialog from {} ms to {:?}, holdline's from {:?}) saw call {cid} (placed {} ms, ended {ended} ms, via the cloud: {:?}) as confirmed={} terminated={}",
                        w.watcher, w.target, w.from, w.to, w.holdline_from, c.placed, c.via_cloud, seen.0, seen.1
                    ));
                }
            }
        }
        Ok(())
    }
}
