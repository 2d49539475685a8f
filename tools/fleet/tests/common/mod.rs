//! In-process fake appliances for the fleet tool's tests.
//!
//! Each one serves the same management HTTP API as `holdline`'s mgmt.rs
//! (paths and bodies from `holdline_update::api`, bearer token) on its own
//! loopback address, and behind it runs the REAL update agent on a
//! simulated board (file bootloader, slot directories, real signed bundles,
//! real verification). A background task plays the daemon: it "reboots"
//! when the agent asks, and ticks the agent with the health of the fixture
//! firmware in the booted slot. Time is a virtual clock advanced by that
//! task (1 virtual second per step), so the agent's windows do not depend
//! on how loaded the machine is.
//!
//! This is NOT the real daemon: it stands in for it until the daemon's
//! management listener can be started in tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // test fixtures

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use holdline_update::agent::InstallOptions;
use holdline_update::api::{self, ApiError, Health, InstallAnswer};
use holdline_update::bundle;
use holdline_update::keys::{self, SigningKey};
use holdline_update::manifest::{ManifestTemplate, FORMAT_VERSION};
use holdline_update::slots::{Layout, SlotName, Tools};
use holdline_update::{Agent, AgentConfig};

/// Virtual seconds of continuous health before a commit.
pub const COMMIT_AFTER: u64 = 5;
/// Virtual seconds before an uncommitted trial is rolled back.
pub const TRIAL_TIMEOUT: u64 = 20;

pub fn firmware_script(version: &str, healthy: bool) -> String {
    format!(
        "#!/bin/sh\ncase \"$1\" in\n  version) echo {version} ;;\n  health) exit {} ;;\nesac\n",
        if healthy { 0 } else { 1 }
    )
}

pub fn rootfs_tar(dir: &Path, version: &str, healthy: bool) -> PathBuf {
    let path = dir.join(format!("rootfs-{version}-{healthy}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let script = firmware_script(version, healthy);
    let mut h = tar::Header::new_ustar();
    h.set_size(script.len() as u64);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "usr/bin/holdline", script.as_bytes())
        .unwrap();
    b.into_inner().unwrap();
    path
}

/// A signed sim bundle with fixture firmware that is healthy or never healthy.
pub fn make_bundle(dir: &Path, key: &SigningKey, version: &str, healthy: bool) -> PathBuf {
    let rootfs = rootfs_tar(dir, version, healthy);
    let out = dir.join(format!("sim-{version}-{healthy}.hlb"));
    let t = ManifestTemplate {
        format: FORMAT_VERSION,
        compatible: vec!["sim".into()],
        description: "fleet test".into(),
    };
    bundle::build(
        &out,
        &t,
        version.parse().unwrap(),
        1_700_000_000,
        &[(bundle::ROOTFS.into(), rootfs)],
    )
    .unwrap();
    bundle::sign(&out, key).unwrap();
    out
}

pub struct Appliance {
    pub name: String,
    pub group: String,
    pub token: String,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub agent: Mutex<Agent>,
    pub clock: AtomicU64,
    /// Forces the health verdict to "unhealthy" (a site problem).
    pub broken: AtomicBool,
    pub installs: AtomicUsize,
    /// Order in which appliances received uploads (shared by the fleet).
    pub upload_log: Arc<Mutex<Vec<String>>>,
}

impl Appliance {
    fn slot_script(&self, slot: SlotName) -> String {
        let p = self
            .dir
            .join("state/slots")
            .join(slot.as_str().to_lowercase())
            .join("usr/bin/holdline");
        std::fs::read_to_string(p).unwrap_or_default()
    }

    fn booted_script(&self) -> String {
        let slot = self.agent.lock().unwrap().booted_slot().unwrap();
        self.slot_script(slot)
    }

    pub fn firmware_version(&self) -> String {
        let s = self.booted_script();
        s.split("version) echo ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("0.0.0")
            .to_owned()
    }

    pub fn healthy(&self) -> bool {
        !self.broken.load(Ordering::SeqCst) && self.booted_script().contains("health) exit 0")
    }

    /// Power-on: the file bootloader picks a slot, the "daemon" starts.
    fn power_on(&self) {
        let mut agent = self.agent.lock().unwrap();
        agent.sim_power_on().unwrap();
        drop(agent);
        let version = self.firmware_version().parse().unwrap();
        let now = self.clock.load(Ordering::SeqCst);
        self.agent.lock().unwrap().on_boot(now, &version).unwrap();
    }

    /// One virtual second of the daemon's life.
    fn step(&self) {
        let now = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        let healthy = self.healthy();
        let mut agent = self.agent.lock().unwrap();
        agent.tick(now, healthy).unwrap();
        let reboot = agent.take_reboot_request().unwrap();
        drop(agent);
        if reboot {
            self.power_on();
        }
    }

    pub fn status(&self) -> holdline_update::UpdateStatus {
        self.agent.lock().unwrap().status().unwrap()
    }
}

type Shared = Arc<Appliance>;

fn api_error(code: StatusCode, text: String) -> Response {
    (code, Json(ApiError { error: text })).into_response()
}

async fn auth(State(a): State<Shared>, req: Request, next: Next) -> Response {
    let want = format!("Bearer {}", a.token);
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == want);
    if !ok {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        );
    }
    next.run(req).await
}

async fn health(State(a): State<Shared>) -> Response {
    let healthy = a.healthy();
    let h = Health {
        healthy,
        version: a.firmware_version(),
        problems: if healthy {
            vec![]
        } else {
            vec!["critical task sip loop late".into()]
        },
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

async fn status(State(a): State<Shared>) -> Response {
    let v = serde_json::json!({ "name": a.name, "cloud": "up" });
    Json(v).into_response()
}

async fn metrics(State(_): State<Shared>) -> Response {
    "holdline_registrations 0\n".into_response()
}

async fn update_status(State(a): State<Shared>) -> Response {
    match a.agent.lock().unwrap().status() {
        Ok(s) => Json(s).into_response(),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn upload(State(a): State<Shared>, req: Request) -> Response {
    let retry_failed = req
        .uri()
        .query()
        .is_some_and(|q| q.contains("retry_failed=true"));
    let body: Bytes = axum::body::to_bytes(req.into_body(), api::MAX_BUNDLE_BYTES)
        .await
        .unwrap();
    a.installs.fetch_add(1, Ordering::SeqCst);
    a.upload_log.lock().unwrap().push(a.name.clone());
    let path = a.dir.join("upload.hlb");
    std::fs::write(&path, &body).unwrap();
    let now = a.clock.load(Ordering::SeqCst);
    let opts = InstallOptions {
        retry_failed,
        ..InstallOptions::default()
    };
    let res = a.agent.lock().unwrap().install(&path, opts, now);
    match res {
        Ok(r) => Json(InstallAnswer {
            ok: true,
            version: Some(r.version.to_string()),
            message: format!(
                "installed {} into slot {}; trial boot follows",
                r.version, r.slot
            ),
        })
        .into_response(),
        Err(e) if e.is_refusal() => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(InstallAnswer {
                ok: false,
                version: None,
                message: e.to_string(),
            }),
        )
            .into_response(),
        Err(e) => api_error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

pub struct Fleet {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub appliances: Vec<Shared>,
    pub inventory: PathBuf,
    pub upload_log: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    /// `n` appliances on 127.0.`net`.(1..=n); the first is in group "canary".
    pub fn start(net: u8, n: usize) -> Fleet {
        Fleet::start_with(net, n, false)
    }

    /// Same, serving HTTPS with a self-signed certificate per appliance
    /// (the inventory's `ca_file`) when `tls`.
    pub fn start_with(net: u8, n: usize, tls: bool) -> Fleet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        let upload_log = Arc::new(Mutex::new(Vec::new()));
        let mut appliances = Vec::new();
        let mut inv = String::new();
        for i in 1..=n {
            let (name, group) = if i == 1 {
                ("canary-1".to_owned(), "canary")
            } else {
                (format!("site-{i}"), "default")
            };
            let adir = dir.path().join(&name);
            let state = adir.join("state");
            let layout = Layout::simulated();
            // Factory image 1.0.0 in slot A.
            let factory = rootfs_tar(&adir_create(&adir), "1.0.0", true);
            let spec = layout.slot(SlotName::A).unwrap().clone();
            holdline_update::slots::write_slot(
                &spec,
                &state,
                &Tools::default(),
                &mut std::fs::File::open(factory).unwrap(),
            )
            .unwrap();
            let agent = Agent::open(AgentConfig {
                board: "sim".into(),
                state_dir: state,
                layout,
                keys: vec![key.verifying_key()],
                commit_after_secs: COMMIT_AFTER,
                trial_timeout_secs: TRIAL_TIMEOUT,
                tools: Tools::default(),
            })
            .unwrap();
            let listener = rt
                .block_on(tokio::net::TcpListener::bind((
                    std::net::Ipv4Addr::new(127, 0, net, i as u8),
                    0,
                )))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let token = format!("test-token-{name}");
            let a = Arc::new(Appliance {
                name: name.clone(),
                group: group.into(),
                token: token.clone(),
                addr,
                dir: adir,
                agent: Mutex::new(agent),
                clock: AtomicU64::new(1_000),
                broken: AtomicBool::new(false),
                installs: AtomicUsize::new(0),
                upload_log: upload_log.clone(),
            });
            a.power_on();
            let app = Router::new()
                .route(api::HEALTH, get(health))
                .route(api::STATUS, get(status))
                .route(api::METRICS, get(metrics))
                .route(api::UPDATE, get(update_status).post(upload))
                .layer(middleware::from_fn_with_state(a.clone(), auth))
                .with_state(a.clone());
            let mut ca_line = String::new();
            if tls {
                let ip = addr.ip().to_string();
                let ck = rcgen::generate_simple_self_signed(vec![ip]).unwrap();
                let ca = a.dir.join("mgmt.crt");
                std::fs::write(&ca, ck.cert.pem()).unwrap();
                ca_line = format!("ca_file = \"{}\"\n", ca.display());
                let acceptor = acceptor(ck);
                rt.spawn(serve_tls(listener, acceptor, app));
            } else {
                rt.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            let daemon = a.clone();
            rt.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let d = daemon.clone();
                    let _ = tokio::task::spawn_blocking(move || d.step()).await;
                }
            });
            inv.push_str(&format!(
                "[[appliance]]\nname = \"{name}\"\naddress = \"{addr}\"\ngroup = \"{group}\"\ntoken = \"{token}\"\n{ca_line}\n"
            ));
            appliances.push(a);
        }
        let inventory = dir.path().join("fleet.toml");
        std::fs::write(&inventory, inv).unwrap();
        Fleet {
            rt,
            dir,
            key,
            appliances,
            inventory,
            upload_log,
        }
    }

    pub fn get(&self, name: &str) -> &Shared {
        self.appliances.iter().find(|a| a.name == name).unwrap()
    }

    /// Runs the real holdline-fleet binary against the fleet.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdline-fleet"))
            .arg("--inventory")
            .arg(&self.inventory)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }
}

fn adir_create(p: &Path) -> PathBuf {
    std::fs::create_dir_all(p).unwrap();
    p.to_path_buf()
}

fn acceptor(ck: rcgen::CertifiedKey) -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// The same accept loop as mgmt.rs's HTTPS listener.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}
