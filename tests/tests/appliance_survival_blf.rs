//! BLF take-over with the real binary and peers (issue 4.4): a busy-lamp
//! subscription made through holdline to the Kamailio cloud is continued in
//! its dialog when the cloud dies (same Call-ID and tags, CSeq and
//! dialog-info `version` above the last the phone saw, state from the calls
//! holdline routes, its refresh answered here) and ended with
//! `terminated;reason=deactivated` once the cloud is back; a watcher that
//! misses a NOTIFY (one loss) keeps its subscription.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::time::{Duration, Instant};

use common::blf::*;
use common::{cseq_of, json_u64, messages_so_far, wait_received};
use holdline_tests::sipp::SipMessage;

#[test]
fn a_blf_subscription_is_continued_in_its_dialog_while_the_cloud_is_down_then_deactivated() {
    let mut site = Site::start(6000);
    // Subscribed while the cloud is up; a call so that the cloud's NOTIFYs
    // carry states and the version moves on.
    let mut w = site.watcher(3000);
    let subs = site
        .cloud
        .wait_subscriptions(1, Duration::from_secs(30))
        .expect("active_watchers");
    assert_eq!(subs.len(), 1, "{subs:?}");
    wait_received(&w, "NOTIFY", Duration::from_secs(30));
    let up_call = site.call("call-up");
    let deadline = Instant::now() + Duration::from_secs(30);
    while saw_states(&messages_so_far(&w), &up_call, false) != (true, true) {
        assert!(
            Instant::now() < deadline,
            "the cloud's BLF never showed the call: {:#?}",
            messages_so_far(&w)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));

    site.kill_cloud();
    site.blf_served_here(&mut w);

    // The cloud returns: holdline ends the subscription.
    site.cloud.start_again().expect("cloud restarts");
    let r = finish(w, Duration::from_secs(120));
    assert!(r.all_ok(), "{r}");
    let all = notifies(&r.messages);
    let from_cloud: Vec<&&SipMessage> = all.iter().filter(|n| !built_by_holdline(n)).collect();
    let first = from_cloud.first().expect("NOTIFYs from the cloud");
    let last_cseq = from_cloud
        .iter()
        .filter_map(|n| cseq_of(n))
        .max()
        .unwrap_or(0);
    let last_version = from_cloud.iter().filter_map(|n| version_of(n)).max();
    assert!(last_version.is_some(), "{from_cloud:#?}");
    check_local_notifies(&r.messages, first, (last_cseq, last_version), "watcher");
    // Nothing from the cloud after holdline took over.
    let first_local = all
        .iter()
        .position(|n| built_by_holdline(n))
        .expect("local NOTIFYs");
    assert!(
        all[first_local..].iter().all(|n| built_by_holdline(n)),
        "the cloud's NOTIFYs reached the phone after the take-over: {all:#?}"
    );
    let resync = site
        .hl
        .console_json(&["show", "resync"])
        .expect("show resync");
    assert!(
        json_u64(&resync, "subscriptions_terminated").is_some_and(|n| n >= 1),
        "{resync}"
    );
    let _ = site.cloud.stop();
}

#[test]
fn a_watcher_that_misses_a_notify_during_the_outage_keeps_its_subscription() {
    use nix::sys::signal::Signal;
    let mut site = Site::start(6100);
    // No refresh in this test: SIPp resumed after SIGSTOP, its timers run
    // out, would refresh while it answers the queued NOTIFYs and take the
    // refresh's 2xx for an unexpected message.
    let w = site.watcher(120_000);
    site.cloud
        .wait_subscriptions(1, Duration::from_secs(30))
        .expect("active_watchers");
    wait_received(&w, "NOTIFY", Duration::from_secs(30));

    site.kill_cloud();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !notifies(&messages_so_far(&w))
        .iter()
        .any(|n| built_by_holdline(n))
    {
        assert!(Instant::now() < deadline, "no take-over NOTIFY");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The phone stops answering (hung) while a call changes the lamp.
    signal(&w, Signal::SIGSTOP);
    site.call("call-1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lost = loop {
        let r = site
            .hl
            .console_json(&["show", "resync"])
            .unwrap_or_default();
        let lost = json_u64(&r, "notifies_lost").unwrap_or(0);
        if lost >= 1 || Instant::now() >= deadline {
            break lost;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // One loss at most before it answers again (three in a row end it).
    signal(&w, Signal::SIGCONT);
    assert!(
        lost >= 1,
        "no NOTIFY was lost: the test did not test anything"
    );

    // Still subscribed: the lamp follows the next call.
    let second = site.call("call-2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while saw_states(&messages_so_far(&w), &second, true) != (true, true) {
        assert!(
            Instant::now() < deadline,
            "the watcher lost its subscription after one missed NOTIFY: {:#?}\n{}",
            messages_so_far(&w),
            site.hl
                .console_json(&["show", "subscriptions"])
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut w = w;
    assert!(w.is_running(), "the watcher's subscription ended");
    let r = w.stop(Duration::from_secs(5)).expect("watcher");
    // No NOTIFY said the subscription was over.
    assert!(
        notifies(&r.messages).iter().all(|n| !n
            .header("Subscription-State")
            .unwrap_or_default()
            .starts_with("terminated")),
        "{:#?}",
        notifies(&r.messages)
    );
}
