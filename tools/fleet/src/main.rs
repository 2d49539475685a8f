//! `holdline-fleet`: fleet status and staged, health-gated rollout.
//!
//! Exit codes: 0 success (all healthy / rollout complete); 1 a rollout
//! halted or an appliance is unhealthy or unreachable; 2 bad command line;
//! 3 inventory, bundle or state file unusable, or a rollout already running.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use holdline_fleet::client::Client;
use holdline_fleet::inventory::Inventory;
use holdline_fleet::rollout::{self, Outcome, Plan};

#[derive(Parser)]
#[command(
    name = "holdline-fleet",
    version,
    about = "Fleet status and staged rollout of holdline bundles"
)]
struct Cli {
    /// Inventory file.
    #[arg(long, default_value = "fleet.toml")]
    inventory: PathBuf,
    /// Rollout state file (default: the inventory's name + .rollout.json).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Timeout of one status/health request, seconds.
    #[arg(long, default_value_t = 5)]
    request_timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Version, slot, health and last update result of every appliance.
    Status {
        /// JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Roll a signed bundle out in waves: canary first, then growing waves.
    Rollout {
        /// The signed bundle.
        bundle: PathBuf,
        /// Canary count when no appliance is in group "canary".
        #[arg(long, default_value_t = 1)]
        canary: usize,
        /// Size of the first wave after the canaries.
        #[arg(long, default_value_t = 2)]
        first_wave: usize,
        /// Growth factor of the following waves.
        #[arg(long, default_value_t = 2)]
        growth: usize,
        /// Per wave: seconds to commit and report healthy.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// Poll interval, milliseconds.
        #[arg(long, default_value_t = 5000)]
        poll_ms: u64,
    },
    /// Continue a halted or interrupted rollout with the wave it stopped in.
    Resume {
        /// Ask appliances to retry a version that failed its trial there.
        #[arg(long)]
        retry_failed: bool,
    },
    /// Stop a rollout for good (appliances keep what they run).
    Abort,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let state = cli.state.clone().unwrap_or_else(|| {
        let mut p = cli.inventory.clone().into_os_string();
        p.push(".rollout.json");
        PathBuf::from(p)
    });
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("holdline-fleet: {e}");
        ExitCode::from(3)
    };
    if let Cmd::Abort = cli.cmd {
        return match rollout::abort(&state, &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    let inv = match Inventory::load(&cli.inventory) {
        Ok(i) => i,
        Err(e) => return fail(&e),
    };
    let client = Client::new(
        Duration::from_secs(cli.request_timeout.max(1)),
        Duration::from_secs(600),
    );
    let mut out = std::io::stdout();
    let driven = match cli.cmd {
        Cmd::Status { json } => {
            let (text, ok) = if json {
                let (v, ok) = rollout::status_json(&inv, &client);
                (format!("{v:#}\n"), ok)
            } else {
                rollout::status_table(&inv, &client)
            };
            print!("{text}");
            return if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            };
        }
        Cmd::Rollout {
            bundle,
            canary,
            first_wave,
            growth,
            timeout,
            poll_ms,
        } => {
            let plan = Plan {
                canary,
                first_wave,
                growth,
            };
            rollout::start(
                &inv,
                &bundle,
                &plan,
                Duration::from_secs(timeout),
                Duration::from_millis(poll_ms.max(10)),
                &state,
            )
            .and_then(|mut r| rollout::drive(&mut r, &state, &inv, &client, false, &mut out))
        }
        Cmd::Resume { retry_failed } => rollout::load(&state).and_then(|r| {
            let mut r = r.ok_or(rollout::FleetError::NothingTo("resume"))?;
            rollout::drive(&mut r, &state, &inv, &client, retry_failed, &mut out)
        }),
        Cmd::Abort => return ExitCode::SUCCESS,
    };
    match driven {
        Ok(Outcome::Complete) => ExitCode::SUCCESS,
        Ok(Outcome::Halted(_)) => ExitCode::from(1),
        Err(e) => fail(&e),
    }
}
