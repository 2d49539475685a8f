//! `holdline-image`: build, sign, verify and inspect holdline update bundles.
//!
//! Exit codes: 0 success; 1 the bundle failed verification (message says
//! why); 2 bad command line; 3 an input could not be read or written.
//!
//! A bundle is built from a release build of the firmware for a board and
//! the board's `images/` directory; see `images/README.md`.

mod rootfs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use holdline_update::bundle::{self, Bundle, BundleError, Policy};
use holdline_update::keys::{self, KeyError};
use holdline_update::manifest::{ManifestError, ManifestTemplate};

#[derive(Parser)]
#[command(
    name = "holdline-image",
    version,
    about = "Build, sign, verify and inspect holdline update bundles"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate an Ed25519 key pair: OUT.key (secret, mode 0600) and OUT.pub.
    Keygen {
        /// Path prefix of the two files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Build an (unsigned unless --key) bundle for a board.
    Build {
        /// Board profile: a directory under --images.
        #[arg(long)]
        board: String,
        /// The firmware binary (release build for that board).
        #[arg(long)]
        firmware: PathBuf,
        /// Base OS root filesystem (tar, with its kernel under /boot); needed
        /// by boards whose slots are partitions.
        #[arg(long)]
        base_rootfs: Option<PathBuf>,
        /// Firmware version (semver).
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: semver::Version,
        /// The images/ directory.
        #[arg(long, default_value = "images")]
        images: PathBuf,
        /// Public key(s) the installed firmware will trust (/etc/holdline/keys/).
        #[arg(long)]
        pubkey: Vec<PathBuf>,
        /// Build time (Unix s); default $SOURCE_DATE_EPOCH, else now.
        #[arg(long)]
        build_time: Option<u64>,
        /// Sign with this secret key right away.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output bundle file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign (or re-sign) a bundle in place.
    Sign {
        /// Secret key file.
        #[arg(long)]
        key: PathBuf,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Verify signature, payload digests and, if given, board and version.
    Verify {
        /// Trusted public key file, or a directory of *.pub files.
        #[arg(long)]
        pubkey: PathBuf,
        /// Check compatibility with this board.
        #[arg(long)]
        board: Option<String>,
        /// Check it is not older than this installed version.
        #[arg(long)]
        installed: Option<semver::Version>,
        /// Accept an older version.
        #[arg(long)]
        allow_downgrade: bool,
        /// The bundle.
        bundle: PathBuf,
    },
    /// Run a simulated board: power on (the file bootloader picks a slot),
    /// run that slot's `usr/bin/holdline` with ARGS, and power on again
    /// whenever it exits other than cleanly (restart for an update, watchdog
    /// reset, crash) — what the bootloader, init and systemd do on a real board.
    SimRun {
        /// The daemon's `[update] state_dir` (slots and boot environment).
        #[arg(long)]
        state_dir: PathBuf,
        /// Binary to run for a slot that holds no firmware yet (factory image).
        #[arg(long)]
        factory: Option<PathBuf>,
        /// Stop after this many boots (0: never).
        #[arg(long, default_value_t = 0)]
        max_boots: u32,
        /// Arguments for the firmware, e.g. `-- run --config holdline.toml`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Show the manifest (not authenticated: use verify for that).
    Inspect {
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// The bundle.
        bundle: PathBuf,
    },
}

/// Failures of the tool.
#[derive(Debug, thiserror::Error)]
enum ImageError {
    #[error("verification failed: {0}")]
    Verify(BundleError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    #[error("simulated board: {0}")]
    Agent(holdline_update::AgentError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ImageError {
    fn exit_code(&self) -> u8 {
        match self {
            ImageError::Verify(_) => 1,
            _ => 3,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.cmd) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdline-image: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn build_time(given: Option<u64>) -> u64 {
    given
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok()?.parse().ok())
        .unwrap_or_else(holdline_update::now_unix)
}

fn run(cmd: Cmd) -> Result<String, ImageError> {
    match cmd {
        Cmd::Keygen { out } => {
            let key = keys::generate()?;
            let secret = out.with_extension("key");
            let public = out.with_extension("pub");
            keys::write_secret(&secret, &key)?;
            keys::write_public(&public, &key.verifying_key())?;
            Ok(format!(
                "secret key {} (keep it offline)\npublic key {}\n",
                secret.display(),
                public.display()
            ))
        }
        Cmd::Build {
            board,
            firmware,
            base_rootfs,
            version,
            images,
            pubkey,
            build_time: bt,
            key,
            out,
        } => {
            let bt = build_time(bt);
            let board_dir = images.join(&board);
            let template_path = board_dir.join("manifest.toml");
            let text =
                std::fs::read_to_string(&template_path).map_err(|source| ImageError::Io {
                    path: template_path.clone(),
                    source,
                })?;
            let template = ManifestTemplate::parse(&text)?;
            let rootfs_path = out.with_extension("rootfs.tar");
            rootfs::build(
                &images,
                &board,
                base_rootfs.as_deref(),
                &firmware,
                &pubkey,
                &version,
                bt,
                &rootfs_path,
            )?;
            let built = bundle::build(
                &out,
                &template,
                version,
                bt,
                &[(bundle::ROOTFS.to_owned(), rootfs_path.clone())],
            );
            let _ = std::fs::remove_file(&rootfs_path);
            let manifest = built?;
            let mut text = format!(
                "built {} for {} version {}\n",
                out.display(),
                manifest.compatible.join(","),
                manifest.version
            );
            if let Some(k) = key {
                bundle::sign(&out, &keys::load_secret(&k)?)?;
                text.push_str("signed\n");
            }
            Ok(text)
        }
        Cmd::Sign { key, bundle: path } => {
            let m = bundle::sign(&path, &keys::load_secret(&key)?)?;
            Ok(format!(
                "signed {} (version {})\n",
                path.display(),
                m.version
            ))
        }
        Cmd::Verify {
            pubkey,
            board,
            installed,
            allow_downgrade,
            bundle: path,
        } => verify(
            &path,
            &pubkey,
            board.as_deref(),
            installed.as_ref(),
            allow_downgrade,
        ),
        Cmd::Inspect { json, bundle: path } => inspect(&path, json),
        Cmd::SimRun {
            state_dir,
            factory,
            max_boots,
            args,
        } => sim_run(&state_dir, factory.as_deref(), max_boots, &args),
    }
}

/// The simulated board's power-on loop (see `Cmd::SimRun`).
fn sim_run(
    state_dir: &Path,
    factory: Option<&Path>,
    max_boots: u32,
    args: &[String],
) -> Result<String, ImageError> {
    use holdline_update::slots::{Layout, Tools};
    let mut agent = holdline_update::Agent::open(holdline_update::AgentConfig {
        board: "sim".into(),
        state_dir: state_dir.to_path_buf(),
        layout: Layout::simulated(),
        keys: Vec::new(),
        commit_after_secs: 0,
        trial_timeout_secs: 0,
        tools: Tools::default(),
    })
    .map_err(ImageError::Agent)?;
    let parent = std::os::unix::process::parent_id();
    let mut boots = 0u32;
    loop {
        boots += 1;
        let slot = agent.sim_launcher_power_on().map_err(ImageError::Agent)?;
        let in_slot = agent
            .sim_slot_dir(slot)
            .map(|d| d.join("usr/bin/holdline"))
            .filter(|p| p.exists());
        let Some(bin) = in_slot.or_else(|| factory.map(Path::to_path_buf)) else {
            return Err(ImageError::Io {
                path: state_dir.join("slots"),
                source: std::io::Error::other(format!(
                    "slot {slot} holds no firmware and no --factory was given"
                )),
            });
        };
        eprintln!("sim-run: boot {boots}: slot {slot}: {}", bin.display());
        let mut child = std::process::Command::new(&bin)
            .args(args)
            .spawn()
            .map_err(|source| ImageError::Io {
                path: bin.clone(),
                source,
            })?;
        // The simulated board lives only as long as whoever started it: if
        // that process dies, power off (stop the firmware) instead of
        // leaving an orphan behind.
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        path: bin.clone(),
                        source,
                    })
                }
            }
            if std::os::unix::process::parent_id() != parent {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ImageError::Io {
                    path: bin,
                    source: std::io::Error::other(
                        "the process that started sim-run is gone; powered off",
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        if status.success() {
            return Ok(format!(
                "sim-run: firmware shut down cleanly after {boots} boot(s)\n"
            ));
        }
        eprintln!("sim-run: firmware exited ({status}); power-cycling");
        if max_boots != 0 && boots >= max_boots {
            return Err(ImageError::Io {
                path: bin,
                source: std::io::Error::other(format!("stopped after {boots} boots")),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn verify(
    path: &Path,
    pubkey: &Path,
    board: Option<&str>,
    installed: Option<&semver::Version>,
    allow_downgrade: bool,
) -> Result<String, ImageError> {
    let trusted = keys::load_keyring(pubkey)?;
    let b = Bundle::open(path).map_err(ImageError::Verify)?;
    let manifest = match board {
        Some(board) => b.verify(
            &trusted,
            &Policy {
                board,
                installed,
                allow_downgrade,
                ..Policy::default()
            },
        ),
        None => b.verify_signature(&trusted).and_then(|m| {
            b.verify_payloads(&m)?;
            if let Some(i) = installed {
                if m.version < *i && !allow_downgrade {
                    return Err(BundleError::Older {
                        installed: i.clone(),
                        bundle: m.version.clone(),
                    });
                }
            }
            Ok(m)
        }),
    }
    .map_err(ImageError::Verify)?;
    Ok(format!(
        "OK: version {} for {}: signature valid, {} payload digest(s) match\n",
        manifest.version,
        manifest.compatible.join(","),
        manifest.payload.len()
    ))
}

fn inspect(path: &Path, json: bool) -> Result<String, ImageError> {
    let b = Bundle::open(path)?;
    let m = b.manifest_unverified()?;
    if json {
        let v = serde_json::json!({ "manifest": m, "signed": b.is_signed() });
        return Ok(format!("{v:#}\n"));
    }
    let mut s = format!(
        "bundle      {}\nformat      {}\nversion     {}\nboards      {}\nbuilt       {} (Unix s)\ndescription {}\nsigned      {}\n",
        path.display(),
        m.format,
        m.version,
        m.compatible.join(", "),
        m.build_time,
        m.description,
        if b.is_signed() {
            "yes (not checked here; use verify)"
        } else {
            "no"
        }
    );
    for p in &m.payload {
        s.push_str(&format!(
            "payload     {} {} bytes sha256 {}\n",
            p.name, p.size, p.sha256
        ));
    }
    Ok(s)
}
