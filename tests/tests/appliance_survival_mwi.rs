//! MWI take-over with the real binary and peers (issue 4.4): a phone
//! subscribes to its message-summary through holdline; the voicemail system
//! PUBLISHes to the Kamailio cloud, whose NOTIFY reaches the phone (and is
//! cached by holdline); the cloud dies. holdline continues the subscription
//! in its dialog: the phone's refresh SUBSCRIBE is answered 200 here, and
//! holdline's NOTIFYs carry the same Call-ID and tags, a CSeq above the last
//! one the phone saw, the cached Messages-Waiting body and an active
//! Subscription-State with an expiry. Once the cloud is back, the taken-over
//! subscription is ended with `terminated;reason=deactivated` (RFC 6665), so
//! the phone subscribes to the cloud again.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::time::{Duration, Instant};

use common::{
    cseq_of, json_u64, kill_cloud_and_wait_down, messages_so_far, scenario, start_site, tag_of,
    trusting_cloud, via_count, Setup,
};
use holdline_tests::holdline::Holdline;
use holdline_tests::kamailio::User;
use holdline_tests::net::Block;
use holdline_tests::sipp::{Direction, Scenario, SipMessage, Sipp};

const WATCHER_PORT: u16 = 5066;

/// A NOTIFY holdline built itself: one Via (holdline's), where a NOTIFY of
/// the cloud relayed by holdline carries the cloud's Via under holdline's.
fn built_by_holdline(m: &SipMessage) -> bool {
    via_count(m) == 1
}

fn received_notifies(msgs: &[SipMessage]) -> Vec<&SipMessage> {
    msgs.iter()
        .filter(|m| m.direction == Direction::Received && m.method() == Some("NOTIFY"))
        .collect()
}

/// Index (in `msgs`) of the first refresh SUBSCRIBE sent after `after`
/// that got a 200, and the index of that 200.
fn answered_refresh_after(msgs: &[SipMessage], after: usize) -> Option<(usize, usize)> {
    for (i, m) in msgs.iter().enumerate().skip(after + 1) {
        let is_refresh = m.direction == Direction::Sent
            && m.method() == Some("SUBSCRIBE")
            && m.header("To").and_then(tag_of).is_some();
        if !is_refresh {
            continue;
        }
        let cseq = cseq_of(m);
        let ok = msgs.iter().enumerate().skip(i + 1).find(|(_, r)| {
            r.direction == Direction::Received
                && r.status() == Some(200)
                && r.header("CSeq").is_some_and(|c| c.contains("SUBSCRIBE"))
                && cseq_of(r) == cseq
        });
        if let Some((j, _)) = ok {
            return Some((i, j));
        }
    }
    None
}

fn show(hl: &Holdline, what: &[&str]) -> String {
    hl.console_json(what).unwrap_or_default()
}

#[test]
fn a_message_summary_subscription_is_continued_by_holdline_while_the_cloud_is_down_then_deactivated(
) {
    let block = Block::allocate();
    let users = User::numbered(3000, 1);
    let phone = &users[0];
    // The voicemail system (trunk) publishes unchallenged; holdline
    // re-registers phones at resync unchallenged.
    let (mut cloud, hl) = start_site(
        &block,
        trusting_cloud(&block, &users, &[block.trunk()]),
        &Setup {
            trusted: true,
            ..Setup::default()
        },
        &users,
    );

    // The phone watches its own mailbox, refreshing after 3 s of quiet.
    let watcher = Sipp::new(scenario("subscribe_refresh.xml"))
        .name("mwi-watcher")
        .local(block.phone(0), WATCHER_PORT)
        .remote(hl.lan())
        .watch(&[(phone.clone(), phone.name.clone())])
        .key("event", "message-summary")
        .key("accept", "application/simple-message-summary")
        .key("expires", "600")
        .var("QUIET_MS", "3000")
        .var("REFRESHES", "60")
        .trace_messages(true)
        .timeout(Duration::from_secs(240))
        .spawn()
        .expect("watcher starts");
    let subs = cloud
        .wait_subscriptions(1, Duration::from_secs(30))
        .expect("active_watchers");
    assert_eq!(subs.len(), 1, "the cloud holds no subscription: {subs:?}");

    // The voicemail system: 3 new, 1 old.
    let publish = Sipp::new(Scenario::PublishMwi)
        .local(block.trunk(), 5060)
        .remote(cloud.addr().into())
        .rows(vec![vec![
            phone.name.clone(),
            String::new(),
            "3".into(),
            "1".into(),
        ]])
        .run()
        .expect("publisher runs");
    assert!(publish.all_ok(), "{publish}");

    // The cloud's waiting NOTIFY reached the phone, and holdline cached it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msgs = messages_so_far(&watcher);
        let waiting = received_notifies(&msgs)
            .iter()
            .any(|n| n.body().contains("Messages-Waiting: yes"));
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the phone never got the cloud's waiting message-summary: {msgs:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let cached = hl
        .wait_console(&["show", "subscriptions"], Duration::from_secs(10), |j| {
            j.contains("\"waiting\":true")
        })
        .expect("console");
    assert!(cached.contains("Voice-Message: 3/1"), "{cached}");

    // The cloud dies; holdline takes the subscription over.
    kill_cloud_and_wait_down(&mut cloud, &hl);

    // Wait for: a NOTIFY built by holdline, then a refresh SUBSCRIBE answered
    // 200, then another NOTIFY built by holdline (the answer to the refresh).
    let deadline = Instant::now() + Duration::from_secs(40);
    let msgs = loop {
        let msgs = messages_so_far(&watcher);
        let first_local = msgs.iter().position(|m| {
            m.direction == Direction::Received
                && m.method() == Some("NOTIFY")
                && built_by_holdline(m)
        });
        let done = first_local
            .and_then(|f| answered_refresh_after(&msgs, f))
            .is_some_and(|(_, ok)| {
                msgs.iter().skip(ok + 1).any(|m| {
                    m.direction == Direction::Received
                        && m.method() == Some("NOTIFY")
                        && built_by_holdline(m)
                })
            });
        if done {
            break msgs;
        }
        assert!(
            Instant::now() < deadline,
            "no refresh answered by holdline during the outage: {msgs:#?}\n{}\n{}",
            show(&hl, &["show", "resync"]),
            hl.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // The subscription is still alive (nothing terminated it during the outage).
    let mut watcher = watcher;
    assert!(
        watcher.is_running(),
        "the watcher ended during the outage: {msgs:#?}"
    );

    // Every NOTIFY of the dialog: the cloud's, then holdline's.
    let notifies = received_notifies(&msgs);
    let cloud_first = notifies
        .iter()
        .find(|n| !built_by_holdline(n))
        .expect("a NOTIFY from the cloud");
    let call_id = cloud_first
        .header("Call-ID")
        .unwrap_or_default()
        .to_string();
    let notifier_tag = cloud_first.header("From").and_then(tag_of);
    let watcher_tag = cloud_first.header("To").and_then(tag_of);
    assert!(
        notifier_tag.is_some() && watcher_tag.is_some(),
        "{cloud_first:?}"
    );
    let local: Vec<&&SipMessage> = notifies.iter().filter(|n| built_by_holdline(n)).collect();
    assert!(local.len() >= 2, "{local:#?}");
    // Above every NOTIFY the cloud sent in this dialog.
    let mut last = notifies
        .iter()
        .filter(|n| !built_by_holdline(n))
        .filter_map(|n| cseq_of(n))
        .max()
        .expect("the cloud's NOTIFY CSeqs");
    for n in &local {
        assert_eq!(n.header("Call-ID"), Some(call_id.as_str()), "{n:?}");
        assert_eq!(n.header("From").and_then(tag_of), notifier_tag, "{n:?}");
        assert_eq!(n.header("To").and_then(tag_of), watcher_tag, "{n:?}");
        assert_eq!(n.header("Event"), Some("message-summary"), "{n:?}");
        let c = cseq_of(n).expect("CSeq");
        assert!(
            c > last,
            "NOTIFY CSeq {c} not above the last one the phone saw ({last}): {n:?}"
        );
        last = c;
        // The cached body: 3 new, 1 old, waiting.
        assert!(n.body().contains("Messages-Waiting: yes"), "{n:?}");
        assert!(n.body().contains("Voice-Message: 3/1"), "{n:?}");
        let state = n.header("Subscription-State").unwrap_or_default();
        let expires = state
            .strip_prefix("active;expires=")
            .and_then(|e| e.split(';').next())
            .and_then(|e| e.trim().parse::<u64>().ok());
        assert!(
            expires.is_some_and(|e| e > 0 && e <= 600),
            "Subscription-State {state:?} in {n:?}"
        );
    }
    // The refresh's 200 came from holdline (its Contact), not from the dead cloud.
    let first_local = msgs
        .iter()
        .position(|m| {
            m.direction == Direction::Received
                && m.method() == Some("NOTIFY")
                && built_by_holdline(m)
        })
        .expect("a NOTIFY from holdline");
    let (_, ok) = answered_refresh_after(&msgs, first_local).expect("an answered refresh");
    let ok_msg = &msgs[ok];
    let contact = ok_msg.header("Contact").unwrap_or_default();
    assert!(
        contact.contains(&hl.lan().to_string()),
        "the refresh's 200 does not come from holdline: {ok_msg:?}"
    );
    let granted = ok_msg
        .header("Expires")
        .and_then(|e| e.trim().parse::<u64>().ok());
    assert!(granted.is_some_and(|e| e > 0 && e <= 600), "{ok_msg:?}");
    let resync = show(&hl, &["show", "resync"]);
    assert!(
        json_u64(&resync, "subscriptions_local_now").is_some_and(|n| n >= 1),
        "{resync}"
    );

    // The cloud returns: holdline ends the taken-over subscription.
    cloud.start_again().expect("cloud restarts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while watcher.is_running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let res = watcher
        .stop(Duration::from_secs(2))
        .expect("watcher finishes");
    let msgs = &res.messages;
    let last_notify = received_notifies(msgs)
        .last()
        .copied()
        .cloned()
        .expect("NOTIFYs");
    assert!(
        built_by_holdline(&last_notify),
        "the last NOTIFY is not holdline's: {last_notify:?}\n{res}"
    );
    assert_eq!(
        last_notify.header("Subscription-State"),
        Some("terminated;reason=deactivated"),
        "{last_notify:?}\n{res}"
    );
    assert_eq!(last_notify.header("Call-ID"), Some(call_id.as_str()));
    assert_eq!(last_notify.header("From").and_then(tag_of), notifier_tag);
    assert!(
        cseq_of(&last_notify).is_some_and(|c| c > last),
        "{last_notify:?}"
    );
    assert!(res.all_ok(), "{res}");
    let resync = hl
        .wait_console(&["show", "resync"], Duration::from_secs(30), |j| {
            j.contains("\"subscriptions_terminated\":1")
        })
        .expect("show resync");
    assert!(
        resync.contains("\"subscriptions_terminated\":1"),
        "{resync}"
    );
    let _ = cloud.stop();
}
