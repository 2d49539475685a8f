//! The incident without holdline (issue 4's baseline figure): phones
//! registered straight to the Kamailio cloud, the cloud restarts and loses its
//! location table; how long until inbound calls reach the phones again?
//!
//! ```text
//! cargo run -p holdline-tests --bin restart_bench -- [--phones 50] [--refresh-s 60] [--deadline-s 300]
//! ```
//!
//! The phones refresh their registration every `--refresh-s` (Expires twice
//! that), their refreshes spread evenly over the interval as on a real site.
//! After every phone is registered and an inbound call (from a trunk the cloud
//! trusts) reaches each one, the cloud is killed and started again. The
//! location table is then polled every 200 ms: a phone is reachable again
//! when its binding is back. At the end one inbound call per phone checks it.
//! Everything is bounded by `--deadline-s`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use holdline_tests::kamailio::{Kamailio, KamailioOpts, User};
use holdline_tests::net::Block;
use holdline_tests::sipp::{Scenario, Sipp, SippResult};
use holdline_tests::RigError;

const REGISTER_PORT: u16 = 5062;
const ANSWER_PORT: u16 = 5064;

struct Args {
    phones: usize,
    refresh_s: u64,
    deadline_s: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        phones: 50,
        refresh_s: 60,
        deadline_s: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = v.parse().map_err(|_| format!("not a number: {v}"))?;
        match flag.as_str() {
            "--phones" => a.phones = n as usize,
            "--refresh-s" => a.refresh_s = n.max(1),
            "--deadline-s" => a.deadline_s = n.max(10),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: restart_bench [--phones N] [--refresh-s S] [--deadline-s S]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("restart_bench: {e}");
            ExitCode::from(1)
        }
    }
}

fn inbound_round(block: &Block, cloud: &Kamailio, users: &[User]) -> Result<SippResult, RigError> {
    let trunk = User::new("pstn", "");
    let rows: Vec<(User, String)> = users
        .iter()
        .map(|u| (trunk.clone(), u.name.clone()))
        .collect();
    Sipp::new(Scenario::Uac)
        .name("inbound")
        .local(block.trunk(), 5060)
        .remote(SocketAddr::V4(cloud.addr()))
        .dial(&rows)
        .rate(20.0)
        .var("HOLD_MS", "100")
        .timeout(Duration::from_secs(120))
        .run()
}

fn run(args: &Args) -> Result<String, RigError> {
    let block = Block::allocate();
    let users = User::numbered(1000, args.phones);
    let mut opts = KamailioOpts::with_users(users.clone());
    opts.trusted = vec![block.trunk().into()];
    let mut cloud = Kamailio::start(block.cloud(), opts)?;
    let deadline = Instant::now() + Duration::from_secs(args.deadline_s);

    // The phones: one SIPp keeps every registration fresh, another answers.
    let uas = Sipp::new(Scenario::Uas)
        .name("phones-answer")
        .local(block.phone(0), ANSWER_PORT)
        .calls(10 * args.phones as u64)
        .var("RING_MS", "50")
        .timeout(Duration::from_secs(args.deadline_s + 60))
        .spawn()?;
    let refreshes = args.deadline_s / args.refresh_s + 2;
    let contact = format!("{}:{ANSWER_PORT}", block.phone(0));
    let _registrar = Sipp::new(Scenario::RegisterRefresh)
        .name("phones-register")
        .local(block.phone(0), REGISTER_PORT)
        .remote(SocketAddr::V4(cloud.addr()))
        .users(&users)
        .rate(args.phones as f64 / args.refresh_s as f64)
        .key("expires", &(2 * args.refresh_s).to_string())
        .var("REFRESH_MS", &(args.refresh_s * 1000).to_string())
        .var("REGISTRATIONS", &refreshes.to_string())
        .var("CONTACT_HOSTPORT", &contact)
        .timeout(Duration::from_secs(args.deadline_s + 60))
        .spawn()?;
    eprintln!(
        "{} phones registering over {} s (one refresh interval)",
        args.phones, args.refresh_s
    );
    let table = cloud.wait_location(deadline.saturating_duration_since(Instant::now()), |t| {
        t.len() >= args.phones
    })?;
    if table.len() < args.phones {
        return Err(RigError::Startup {
            what: "registrations".into(),
            detail: format!("{} of {} phones registered", table.len(), args.phones),
        });
    }
    let before = inbound_round(&block, &cloud, &users)?;
    eprintln!("before the restart: {before}");

    // The incident: the registrar dies and comes back empty.
    let t0 = Instant::now();
    cloud.restart()?;
    let restart_secs = t0.elapsed().as_secs_f64();
    let mut back_at: Vec<Option<f64>> = vec![None; users.len()];
    while Instant::now() < deadline && back_at.iter().any(Option::is_none) {
        let table = cloud.location()?;
        let now = t0.elapsed().as_secs_f64();
        for (i, u) in users.iter().enumerate() {
            if back_at[i].is_none() && table.iter().any(|c| c.aor == u.name) {
                back_at[i] = Some(now);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = inbound_round(&block, &cloud, &users)?;
    eprintln!("after: {after}");
    let answered = uas.stop(Duration::from_secs(5))?;
    eprintln!("phones: {answered}");

    let mut times: Vec<f64> = back_at.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| -> String {
        if times.is_empty() {
            return "-".into();
        }
        let idx = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        format!("{:.1}", times[idx])
    };
    let reachable = times.len();
    Ok(format!(
        "\ncloud restart without holdline: {} phones registered straight to Kamailio, \
         refresh every {} s (Expires {})\n\n\
         | kamailio down+up (s) | inbound OK before | phones back (of {}) | first back (s) | 50 % (s) | 90 % (s) | all back (s) | inbound OK after |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {:.1} | {}/{} | {} | {} | {} | {} | {} | {}/{} |\n",
        args.phones,
        args.refresh_s,
        2 * args.refresh_s,
        args.phones,
        restart_secs,
        before.successful,
        users.len(),
        reachable,
        pct(0.0),
        pct(0.5),
        pct(0.9),
        if reachable == users.len() {
            pct(1.0)
        } else {
            format!("> {}", args.deadline_s)
        },
        after.successful,
        users.len()
    ))
}
