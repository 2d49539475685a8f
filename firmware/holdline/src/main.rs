//! `holdline`: the appliance daemon and its console client.
//!
//! ```text
//! holdline run [--config FILE]                       run the appliance
//! holdline console [--socket PATH] [--json] [CMD..]  one command, or interactive
//! holdline health [--socket PATH]                    0 when every critical task is fresh
//! holdline check-config FILE                         validate a config, exit 0 or 3
//! holdline update ...                                firmware update agent
//! ```
//! Exit codes: see [`exit`].

mod appstate;
mod config;
mod console_client;
mod console_srv;
mod daemon;
mod exit;
mod fieldtech;
mod hw;
mod limits;
// Management HTTP API (images helper); started when `[mgmt] enabled`.
#[allow(dead_code)]
mod mgmt;
mod net;
mod persist;
mod sdnotify;
// `holdline update` bodies and the update agent (images helper).
#[allow(dead_code)]
mod update_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::exit::Exit;

#[derive(Debug, Parser)]
#[command(
    name = "holdline",
    version,
    about = "On-premises SIP session border controller"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the appliance (built-in loopback defaults on the simulated board without --config).
    Run {
        /// TOML config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run one console command (or an interactive session) against the running daemon.
    Console {
        /// The daemon's console socket (default: `[console] socket` of --config, else console.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Take the socket path from this config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Machine-readable answer.
        #[arg(long)]
        json: bool,
        /// The command, e.g. `show registrations`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Exit 0 only when the running daemon reports every critical task fresh (the watchdog daemon's test).
    Health {
        /// The daemon's console socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Take the socket path from this config file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (0 valid, 3 bad config).
    CheckConfig {
        /// TOML config file.
        file: PathBuf,
    },
    /// Firmware update agent: install a signed bundle, show the A/B slots.
    Update {
        /// Config file (its `[update]` and `[board]` sections are used).
        #[arg(long, short = 'c', value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UpdateCmd,
    },
}

#[derive(Debug, Subcommand)]
enum UpdateCmd {
    /// Verify a bundle and write it to the inactive slot for a trial boot.
    Install {
        /// The bundle file.
        bundle: PathBuf,
        /// Allow an older version (field-tech override).
        #[arg(long)]
        allow_downgrade: bool,
        /// Try a version that failed its trial here before.
        #[arg(long)]
        retry_failed: bool,
        /// Do not reboot now.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Slots, running version, trial state.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, Exit> {
    match path {
        Some(p) => Config::load(p).map_err(|e| {
            eprintln!("holdline: {e}");
            Exit::BadConfig
        }),
        None => Ok(Config::default()),
    }
}

fn socket_path(socket: Option<PathBuf>, config: Option<&PathBuf>) -> Result<PathBuf, Exit> {
    match socket {
        Some(s) => Ok(s),
        None => Ok(load_config(config)?.console.socket),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Exit> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("holdline: cannot start the runtime: {e}");
            Exit::Internal
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.cmd {
        Cmd::Run { config } => match load_config(config.as_ref()) {
            Ok(cfg) => {
                init_logging(&cfg.log.level);
                match runtime() {
                    Ok(rt) => rt.block_on(daemon::run(cfg)),
                    Err(e) => e,
                }
            }
            Err(e) => e,
        },
        Cmd::Console {
            socket,
            config,
            json,
            command,
        } => match (socket_path(socket, config.as_ref()), runtime()) {
            (Ok(s), Ok(rt)) => rt.block_on(console_client::run(&s, json, &command)),
            (Err(e), _) | (_, Err(e)) => e,
        },
        Cmd::Health { socket, config } => match (socket_path(socket, config.as_ref()), runtime()) {
            (Ok(s), Ok(rt)) => rt.block_on(console_client::health(&s)),
            (Err(e), _) | (_, Err(e)) => e,
        },
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                Exit::Ok
            }
            Err(e) => {
                eprintln!("holdline: {e}");
                Exit::BadConfig
            }
        },
        Cmd::Update { config, action } => match load_config(config.as_ref()) {
            Ok(cfg) => {
                let action = match action {
                    UpdateCmd::Install {
                        bundle,
                        allow_downgrade,
                        retry_failed,
                        no_reboot,
                    } => update_cmd::UpdateAction::Install {
                        bundle,
                        allow_downgrade,
                        retry_failed,
                        no_reboot,
                    },
                    UpdateCmd::Status { json } => update_cmd::UpdateAction::Status { json },
                };
                let code = update_cmd::run(
                    &cfg.update,
                    &cfg.board.profile,
                    action,
                    &mut std::io::stdout(),
                    &mut std::io::stderr(),
                );
                return ExitCode::from(code);
            }
            Err(e) => e,
        },
    };
    exit.into()
}
