//! A BLF SUBSCRIBE that arrives while the cloud is down (issue 4.4: "new
//! SUBSCRIBEs during survival are served locally"), with the real binary
//! and peers: answered by holdline, NOTIFYs with the states of the calls
//! holdline routes, the phone's in-dialog refresh answered too, and ended
//! with `terminated;reason=deactivated` once the cloud is back.
//!
//! Generous bounds only; every process stopped by the test (kill on Drop).

mod common;

use std::time::Duration;

use common::blf::*;
use common::wait_received;

#[test]
fn a_blf_subscribe_while_the_cloud_is_down_is_served_here_refreshes_included_then_deactivated() {
    let mut site = Site::start(6200);
    site.kill_cloud();
    // A watcher subscribes while the cloud is down: served here.
    let mut w = site.watcher(3000);
    wait_received(&w, "NOTIFY", Duration::from_secs(30));
    site.blf_served_here(&mut w);

    site.cloud.start_again().expect("cloud restarts");
    let r = finish(w, Duration::from_secs(120));
    assert!(r.all_ok(), "{r}");
    let ok = first_subscribe_ok(&r);
    assert!(
        ok.header("Contact")
            .is_some_and(|c| c.contains(&site.hl.lan().to_string())),
        "the SUBSCRIBE was not answered by holdline: {ok:?}"
    );
    let all = notifies(&r.messages);
    assert!(all.iter().all(|n| built_by_holdline(n)), "{all:#?}");
    check_local_notifies(&r.messages, all[0], (0, None), "watcher");
    let _ = site.cloud.stop();
}
