//! Survival logic of holdline: the uplink state machine, fail-fast and local
//! routing, the survival registrar policy, BLF/MWI take-over, and the verified,
//! paced resync. Sans-IO: nothing here touches a socket, a clock, a file or the
//! OS's randomness. Every entry point takes the current time ([`Millis`], since
//! an epoch the driver picks) and, where jitter is needed, an [`Rng`] the driver
//! seeded. The proxy core drives it; `tests/incident_sim.rs` drives it in
//! virtual time over 1000 seeds.
//!
//! # How the core drives it
//!
//! | piece | inputs (from the core) | outputs (to the core) |
//! |---|---|---|
//! | [`uplink::UplinkMonitor`] | `handle(now, UplinkInput::{ProbeResponse, ProbeTransportError, CloudResponse, TransactionTimeout, TransportError})`, `handle_timeout(now)`, `set_mode(now, Mode)` (console `cloud force-down/force-up/auto`) | `poll_probe(now)` → send an OPTIONS, `poll_event()` → `Transition` (log, count, store in the event log) / `ResyncAllowed` (start the resync) / `ModeChanged`, `poll_timeout()`, `status(now)` for `show cloud` |
//! | [`route::FailFast`] | `sent(now, key)` for each INVITE forwarded to the cloud, `answered(&key)` on its first provisional or final | `poll_expired()` → CANCEL upstream, feed `TransactionTimeout` to the monitor, route by [`route::RoutePolicy::after_fail_fast`] |
//! | [`route::RoutePolicy`] | callee, [`route::UplinkView`], a [`route::SiteDirectory`] (closure "is this number registered here?") | [`route::Route`]: `Cloud`, `SitePhone`, `Backup`, `Reject503 { retry_after_s }`; `after_cloud_failure` reroutes a 404/480 for a site phone |
//! | [`registrar::decide`] | the AOR's stored bindings, the REGISTER, `&mut Rng` | `Refresh` (short jittered expiry, mark alive), `NewLocalOnly`, `Remove`, `OutOfOrder` |
//! | [`subscription::Subscription`] | cloud NOTIFYs relayed (`on_cloud_notify`, `relay_done`), `take_over()` at Down, phone refreshes, NOTIFY outcomes | [`subscription::NotifyPlan`] (CSeq, version, Subscription-State) for each NOTIFY to send, `FollowUp::{SendNow, RetryAt, Remove}`; one NOTIFY in flight per dialog |
//! | [`blf::BlfBoard`], [`bodies`] | call state changes of the calls the proxy routes | RFC 4235 full-state bodies with the plan's version; RFC 3842 message-summary parse/build |
//! | [`resync::plan`], [`resync::ResyncPacer`] | binding facts (integrity, provenance, last refresh, last OPTIONS answer), `outage_since` and `rate_divisor` from `ResyncAllowed`, re-REGISTER outcomes, phones' own refreshes | `poll_action(now)` → `ReRegister(key)` / `TerminateSubscription(key)` at most `rate` per second, jittered; `admit_phone_refresh` → `Forward` / `AnswerLocally`; `progress()` for `show resync` |
//!
//! One loop iteration of the core: feed what arrived (`handle*`), then
//! `handle_timeout(now)` on each piece, drain `poll_*` until `None`, and sleep
//! until the earliest `poll_timeout()`.
//!
//! # Mapping onto `holdline-core`
//! Done: `firmware/core/src/uplink.rs` (the probe drives the monitor) and
//! `firmware/core/src/survive.rs` (everything else, as listed below; its
//! module docs say what each hook feeds). Not fed yet: Timer B/F time-outs
//! of non-INVITE transactions (the probe covers detection) and send errors
//! (`Edge::handle_transport_error` exists; the daemon's sockets do not report).
//! - `core::uplink::Probe` → [`uplink::UplinkMonitor`]: send an OPTIONS for
//!   each `poll_probe` id; its answer → `ProbeResponse`; every other cloud
//!   response → `CloudResponse { sent_at }`; Timer B/F and fail-fast expiries →
//!   `TransactionTimeout { sent_at }`; send errors → `TransportError`.
//!   Convert `Instant`s with [`Millis::from_instant`] / [`Millis::to_instant`].
//! - `core::subs::Subscription` → [`subscription::Subscription::restored`]
//!   (`DialogIds { call_id, notifier_tag, subscriber_tag: phone_tag }`,
//!   `notify_cseq`, `last_version`); store `last_cseq()` / `last_version()` back
//!   after every NOTIFY. `core::subs::dialog_info_version` →
//!   [`bodies::read_dialog_info_head`].
//! - `core::bindings::Binding` → [`registrar::Known`] for survival REGISTERs and
//!   [`resync::BindingFacts`] at resync (integrity from the store's record
//!   check, last refresh, last OPTIONS answer from the phone).
//! - `core::calls` state changes of calls routed locally → [`blf::BlfBoard::update`].
//!
//! # Defaults and what they give
//! Probes every 500 ms (timeout 300 ms), 150 ms while Suspect, Down after 3
//! failures in a row: Down at most 1250 ms after the cloud goes silent, never
//! from a single lost packet. Hold-down 10 s, doubled per flap (resync or failed
//! recovery) in the last 30 min, up to 5 min; the resync rate is divided by the
//! same factor. Fail-fast 1 s. Survival REGISTER expiry 60–120 s.

pub mod blf;
pub mod bodies;
pub mod registrar;
pub mod resync;
pub mod rng;
pub mod route;
pub mod subscription;
pub mod time;
pub mod uplink;

pub use rng::Rng;
pub use time::Millis;
