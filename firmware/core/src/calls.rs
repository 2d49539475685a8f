//! Every INVITE dialog crossing the appliance, with its state in RFC 4235
//! terms (the states a dialog-info NOTIFY reports for BLF).
//!
//! A call leg is keyed by Call-ID, the caller's From-tag and its direction:
//! a call between two site phones crosses holdline twice (phone → cloud,
//! cloud → phone) with the same Call-ID and tags, and both legs are tracked.
//! Terminated calls stay visible for [`LINGER`] so the console can show how
//! they ended.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::types::Peer;

/// How long a terminated call stays listed.
pub const LINGER: Duration = Duration::from_secs(30);
/// A call that never got a final answer is dropped after this long.
pub const SETUP_LIMIT: Duration = Duration::from_secs(300);

/// Which way the call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// A site phone calls out (LAN → cloud).
    Outbound,
    /// The cloud brings a call to a site phone (cloud → LAN).
    Inbound,
}

/// Why a call ended (RFC 4235 `event` values, roughly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The caller cancelled before an answer.
    Cancelled,
    /// A final non-2xx answer.
    Rejected {
        /// Status code.
        code: u16,
    },
    /// A BYE after the answer.
    Hangup,
    /// Nothing final was seen in time.
    Timeout,
}

impl Ended {
    /// Short text for the console: `cancelled`, `rejected 486`, `hangup`, `timeout`.
    pub fn text(&self) -> String {
        match self {
            Ended::Cancelled => "cancelled".into(),
            Ended::Rejected { code } => format!("rejected {code}"),
            Ended::Hangup => "hangup".into(),
            Ended::Timeout => "timeout".into(),
        }
    }
}

/// RFC 4235 dialog states; each carries what is known in that state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallState {
    /// INVITE sent, nothing or only 100 back.
    Trying {
        /// Since.
        since: Instant,
    },
    /// A provisional answer without a To-tag.
    Proceeding {
        /// Since.
        since: Instant,
    },
    /// A provisional answer with a To-tag: ringing.
    Early {
        /// Since.
        since: Instant,
        /// Callee's tag.
        to_tag: String,
    },
    /// Answered.
    Confirmed {
        /// Since.
        since: Instant,
        /// Callee's tag.
        to_tag: String,
    },
    /// Over.
    Terminated {
        /// When.
        at: Instant,
        /// How.
        how: Ended,
    },
}

impl CallState {
    /// RFC 4235 name.
    pub fn name(&self) -> &'static str {
        match self {
            CallState::Trying { .. } => "trying",
            CallState::Proceeding { .. } => "proceeding",
            CallState::Early { .. } => "early",
            CallState::Confirmed { .. } => "confirmed",
            CallState::Terminated { .. } => "terminated",
        }
    }

    fn since(&self) -> Instant {
        match self {
            CallState::Trying { since }
            | CallState::Proceeding { since }
            | CallState::Early { since, .. }
            | CallState::Confirmed { since, .. } => *since,
            CallState::Terminated { at, .. } => *at,
        }
    }
}

/// One call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Call-ID.
    pub call_id: String,
    /// Caller's From-tag.
    pub from_tag: String,
    /// From URI (caller).
    pub from_uri: String,
    /// To URI (callee).
    pub to_uri: String,
    /// Direction.
    pub direction: Direction,
    /// The site phone's transport address (caller for outbound; callee once known for inbound).
    pub phone: Option<Peer>,
    /// When the INVITE was first seen.
    pub started: Instant,
    /// State.
    pub state: CallState,
}

/// The call table.
#[derive(Debug, Default)]
pub struct Calls {
    map: HashMap<(String, String, Direction), Call>,
}

impl Calls {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// A dialog-creating INVITE (no To-tag) was forwarded. Retransmissions are no-ops.
    pub fn on_invite(
        &mut self,
        now: Instant,
        (call_id, from_tag): (&str, &str),
        (from_uri, to_uri): (&str, &str),
        direction: Direction,
        phone: Option<Peer>,
    ) {
        let key = (call_id.to_string(), from_tag.to_string(), direction);
        if let Some(c) = self.map.get_mut(&key) {
            // A retransmission changes nothing; a new INVITE after a
            // challenge (401/407) or a rejection starts the call again.
            if let CallState::Terminated { .. } = c.state {
                c.state = CallState::Trying { since: now };
                c.started = now;
            }
            return;
        }
        self.map.insert(
            key,
            Call {
                call_id: call_id.to_string(),
                from_tag: from_tag.to_string(),
                from_uri: from_uri.to_string(),
                to_uri: to_uri.to_string(),
                direction,
                phone,
                started: now,
                state: CallState::Trying { since: now },
            },
        );
    }

    /// A response to the initial INVITE.
    pub fn on_invite_response(
        &mut self,
        now: Instant,
        (call_id, from_tag, direction): (&str, &str, Direction),
        code: u16,
        to_tag: Option<&str>,
    ) {
        let key = (call_id.to_string(), from_tag.to_string(), direction);
        let Some(c) = self.map.get_mut(&key) else {
            return;
        };
        let next = match (&c.state, code) {
            (CallState::Terminated { .. }, _) => return,
            (CallState::Confirmed { .. }, 200..=299) => return,
            (_, 100) => return,
            (CallState::Confirmed { .. }, 101..=199) => return,
            (_, 101..=199) => match to_tag {
                Some(t) if !t.is_empty() => CallState::Early {
                    since: match &c.state {
                        CallState::Early { since, .. } => *since,
                        _ => now,
                    },
                    to_tag: t.to_string(),
                },
                _ => match &c.state {
                    CallState::Early { .. } => return,
                    _ => CallState::Proceeding { since: now },
                },
            },
            (_, 200..=299) => CallState::Confirmed {
                since: now,
                to_tag: to_tag.unwrap_or_default().to_string(),
            },
            (CallState::Confirmed { .. }, _) => return,
            (_, code) => CallState::Terminated {
                at: now,
                how: if code == 487 {
                    Ended::Cancelled
                } else {
                    Ended::Rejected { code }
                },
            },
        };
        c.state = next;
    }

    /// A CANCEL for the call (the caller gave up).
    pub fn on_cancel(&mut self, now: Instant, call_id: &str, from_tag: &str, direction: Direction) {
        let key = (call_id.to_string(), from_tag.to_string(), direction);
        if let Some(c) = self.map.get_mut(&key) {
            if !matches!(
                c.state,
                CallState::Confirmed { .. } | CallState::Terminated { .. }
            ) {
                c.state = CallState::Terminated {
                    at: now,
                    how: Ended::Cancelled,
                };
            }
        }
    }

    /// A BYE inside the call, sent by either party (tags in either order).
    /// `phone` is the site phone on this BYE's leg (its sender on the LAN
    /// side, its target on the WAN side): with both legs of a site-to-site
    /// call present, only that leg ends here (the other ends when the BYE
    /// crosses holdline again).
    pub fn on_bye(&mut self, now: Instant, call_id: &str, tags: (&str, &str), phone: Option<Peer>) {
        let matches =
            |c: &Call| c.call_id == call_id && (c.from_tag == tags.0 || c.from_tag == tags.1);
        let by_phone = phone.is_some()
            && self.map.values().any(|c| {
                matches(c) && c.phone == phone && !matches!(c.state, CallState::Terminated { .. })
            });
        for c in self.map.values_mut() {
            if !matches(c) || matches!(c.state, CallState::Terminated { .. }) {
                continue;
            }
            if by_phone && c.phone != phone {
                continue;
            }
            c.state = CallState::Terminated {
                at: now,
                how: Ended::Hangup,
            };
            if by_phone {
                return;
            }
        }
    }

    /// Drops calls that ended more than [`LINGER`] ago and setups older than
    /// [`SETUP_LIMIT`] (marked terminated first).
    pub fn sweep(&mut self, now: Instant) {
        for c in self.map.values_mut() {
            let stale = matches!(
                c.state,
                CallState::Trying { .. } | CallState::Proceeding { .. } | CallState::Early { .. }
            ) && now.saturating_duration_since(c.started) > SETUP_LIMIT;
            if stale {
                c.state = CallState::Terminated {
                    at: now,
                    how: Ended::Timeout,
                };
            }
        }
        self.map.retain(|_, c| match c.state {
            CallState::Terminated { at, .. } => now.saturating_duration_since(at) < LINGER,
            _ => true,
        });
    }

    /// A call leg by Call-ID, caller tag and direction.
    pub fn get(&self, call_id: &str, from_tag: &str, direction: Direction) -> Option<&Call> {
        self.map
            .get(&(call_id.to_string(), from_tag.to_string(), direction))
    }

    /// All calls, oldest first.
    pub fn list(&self) -> Vec<&Call> {
        let mut v: Vec<&Call> = self.map.values().collect();
        v.sort_by_key(|c| (c.started, c.state.since()));
        v
    }

    /// Calls not terminated.
    pub fn active(&self) -> usize {
        self.map
            .values()
            .filter(|c| !matches!(c.state, CallState::Terminated { .. }))
            .count()
    }

    /// Number of tracked calls (including lingering terminated ones).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Nothing tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_and_hung_up() {
        let t0 = Instant::now();
        let mut c = Calls::new();
        c.on_invite(
            t0,
            ("c", "ft"),
            ("sip:a@x", "sip:b@x"),
            Direction::Outbound,
            None,
        );
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("trying")
        );
        c.on_invite_response(t0, ("c", "ft", Direction::Outbound), 100, None);
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("trying")
        );
        c.on_invite_response(t0, ("c", "ft", Direction::Outbound), 183, None);
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("proceeding")
        );
        c.on_invite_response(t0, ("c", "ft", Direction::Outbound), 180, Some("tt"));
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("early")
        );
        c.on_invite_response(t0, ("c", "ft", Direction::Outbound), 200, Some("tt"));
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("confirmed")
        );
        assert_eq!(c.active(), 1);
        // a retransmitted 200 or late 180 changes nothing
        c.on_invite_response(t0, ("c", "ft", Direction::Outbound), 180, Some("tt"));
        assert_eq!(
            c.get("c", "ft", Direction::Outbound)
                .map(|x| x.state.name()),
            Some("confirmed")
        );
        // callee hangs up: tags swapped
        c.on_bye(t0, "c", ("tt", "ft"), None);
        assert!(matches!(
            c.get("c", "ft", Direction::Outbound).map(|x| &x.state),
            Some(CallState::Terminated {
                how: Ended::Hangup,
                ..
            })
        ));
        assert_eq!(c.active(), 0);
        c.sweep(t0 + LINGER + Duration::from_secs(1));
        assert!(c.is_empty());
    }

    #[test]
    fn rejected_cancelled_and_stale() {
        let t0 = Instant::now();
        let mut c = Calls::new();
        c.on_invite(t0, ("r", "f"), ("a", "b"), Direction::Inbound, None);
        c.on_invite_response(t0, ("r", "f", Direction::Inbound), 486, Some("x"));
        assert!(matches!(
            c.get("r", "f", Direction::Inbound).map(|x| &x.state),
            Some(CallState::Terminated {
                how: Ended::Rejected { code: 486 },
                ..
            })
        ));
        c.on_invite(t0, ("k", "f"), ("a", "b"), Direction::Outbound, None);
        c.on_cancel(t0, "k", "f", Direction::Outbound);
        assert_eq!(
            c.get("k", "f", Direction::Outbound).map(|x| x.state.name()),
            Some("terminated")
        );
        c.on_invite(t0, ("s", "f"), ("a", "b"), Direction::Outbound, None);
        c.sweep(t0 + SETUP_LIMIT + Duration::from_secs(1));
        assert!(matches!(
            c.get("s", "f", Direction::Outbound).map(|x| &x.state),
            Some(CallState::Terminated {
                how: Ended::Timeout,
                ..
            })
        ));
        // responses for unknown calls are ignored
        c.on_invite_response(t0, ("nope", "f", Direction::Outbound), 200, None);
        // the sweep also dropped the calls that ended long ago
        assert_eq!(c.len(), 1);
    }
}
