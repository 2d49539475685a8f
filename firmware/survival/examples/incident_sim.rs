//! Figures for the incident in virtual time (not a test, not a benchmark of
//! speed: every number here is virtual milliseconds and is the same on any
//! machine).
//!
//! ```text
//! cargo run -p holdline-survival --example incident_sim            # 1000 seeds
//! HOLDLINE_SIM_SEEDS=200 cargo run -p holdline-survival --example incident_sim
//! ```

#[path = "../tests/sim/mod.rs"]
mod sim;

use holdline_survival::resync::{PacerAction, PacerConfig, ResyncMode, ResyncPacer, ResyncPlan};
use holdline_survival::{Millis, Rng};

fn pct(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = (sorted.len() - 1) * p / 100;
    sorted[i]
}

/// Virtual time to give 500 verified bindings back at the default pace,
/// every re-REGISTER answered at once.
fn resync_500(divisor: u32, seed: u64) -> u64 {
    let plan = ResyncPlan {
        verified: (0..500u32).collect(),
        rejected: vec![],
    };
    let mut p: ResyncPacer<u32, ()> = ResyncPacer::new(
        Millis(0),
        PacerConfig::default(),
        divisor,
        ResyncMode::Trusted,
        plan,
        vec![],
        Rng::seeded(seed),
    );
    let mut now = Millis(0);
    while !p.is_done() {
        while let Some(a) = p.poll_action(now) {
            if let PacerAction::ReRegister(k) = a {
                p.report(now, &k, true);
            }
        }
        match p.poll_timeout() {
            Some(t) => now = t.max(Millis(now.0 + 1)),
            None => break,
        }
    }
    p.progress().finished_at.map_or(0, |t| t.0)
}

fn main() {
    let n: u64 = std::env::var("HOLDLINE_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut detections = Vec::new();
    let mut first_resync = Vec::new();
    let mut second_resync = Vec::new();
    let (mut calls, mut failed, mut local, mut rescued, mut pushes) = (0, 0, 0, 0, 0);
    let (mut gone, mut no_backup) = (0, 0);
    let (mut untrusted_seeds, mut not_returned) = (0, 0);
    let mut failing = Vec::new();
    for seed in 0..n {
        match sim::run_seed(seed) {
            Ok(r) => {
                detections.extend(r.detections_ms.iter().copied());
                calls += r.calls;
                failed += r.calls_failed;
                gone += r.failed_callee_gone;
                no_backup += r.failed_no_backup;
                local += r.calls_local;
                rescued += r.calls_fail_fast;
                pushes += r.pushes;
                if !r.trusted {
                    untrusted_seeds += 1;
                    not_returned += r.untrusted_not_returned;
                }
                if r.trusted {
                    if let Some((_, _, Some(d))) = r.resyncs.first() {
                        first_resync.push(*d);
                    }
                    if let Some((_, _, Some(d))) = r.resyncs.get(1) {
                        second_resync.push(*d);
                    }
                }
            }
            Err(e) => {
                println!("FAILED {e}");
                failing.push(seed);
            }
        }
    }
    detections.sort_unstable();
    first_resync.sort_unstable();
    second_resync.sort_unstable();
    println!("seeds: {n} (failing: {failing:?})");
    println!(
        "detection (cloud silent -> Down), {} outages: median {} ms, p99 {} ms, worst {} ms",
        detections.len(),
        pct(&detections, 50),
        pct(&detections, 99),
        detections.last().copied().unwrap_or(0)
    );
    println!(
        "calls: {calls} attempted, {local} completed over a local route, {rescued} fail-fast expiries; {failed} failed, none with a local route ({gone} to an unplugged/absent phone, {no_backup} external/emergency with the cloud gone and no backup configured)"
    );
    println!(
        "trusted resync of the simulated site (7-8 phones, resync_rate 2..10/s): first median {} ms, second (after a flap, half rate) median {} ms; {pushes} re-REGISTERs in all",
        pct(&first_resync, 50),
        pct(&second_resync, 50)
    );
    println!(
        "untrusted mode, {untrusted_seeds} seeds: {not_returned} verified phones not back in the cloud at the end (they did not refresh during the outage; their own refresh is up to an hour away)"
    );
    let m = (n / 3).max(1);
    let (mut other, mut loss_only, mut bursty_fail) = (0, 0, 0);
    for seed in 0..m {
        match sim::run_seed_on(seed, sim::Network::Bursty) {
            Ok(r) => {
                other += r.other_downs;
                loss_only += r.loss_downs;
            }
            Err(e) => {
                println!("FAILED (bursty) {e}");
                bursty_fail += 1;
            }
        }
    }
    println!(
        "bursty network (3% independent loss, 3 partitions of 0.3-1.2 s per evening), {m} seeds: {other} Downs outside the outages, {loss_only} of them from loss alone; {bursty_fail} failing seeds"
    );
    for divisor in [1, 2] {
        let mut t: Vec<u64> = (0..20).map(|s| resync_500(divisor, s)).collect();
        t.sort_unstable();
        println!(
            "500 verified bindings at resync_rate 50/s (divisor {divisor}): median {} ms, worst {} ms",
            pct(&t, 50),
            t.last().copied().unwrap_or(0)
        );
    }
}
