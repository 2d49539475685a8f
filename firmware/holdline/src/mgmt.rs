//! Management HTTP API (owned by the images helper; the daemon declares
//! `mod mgmt;`, implements [`MgmtBackend`] and calls [`serve`] when
//! `[mgmt] enabled = true`). Off by default. Every request needs
//! `Authorization: Bearer <token>`; the token comes from `[mgmt] token_file`
//! (or `token`). Paths and bodies: `holdline_update::api` (the fleet tool
//! speaks the same API).
//!
//! Trust boundary: the management network. Answers never echo request data;
//! an upload is a bundle like any other and goes through full verification.
//! TLS (rustls, TLS 1.2/1.3) when `tls_cert` and `tls_key` (PEM) are set;
//! plain HTTP otherwise, for a management VLAN or a TLS terminator in front.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use holdline_update::agent::{InstallOptions, InstallReport, Trial};
use holdline_update::api::{self, ApiError, Health, InstallAnswer};
use holdline_update::UpdateStatus;
use serde::Deserialize;

/// `[mgmt]` section of the appliance config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MgmtConfig {
    /// Serve the management API at all (default: no).
    pub enabled: bool,
    /// Listen address (management network).
    pub listen: SocketAddr,
    /// File holding the bearer token (first line).
    pub token_file: Option<PathBuf>,
    /// The bearer token inline (prefer `token_file`).
    pub token: Option<String>,
    /// Where uploaded bundles are written before verification.
    pub upload_dir: PathBuf,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for MgmtConfig {
    fn default() -> Self {
        MgmtConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token_file: None,
            token: None,
            upload_dir: std::env::temp_dir(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// Why an install through the API did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallFailure {
    /// The bundle was refused (signature, board, digests, version, trial in progress).
    Refused(String),
    /// The appliance failed (I/O, bootloader).
    Failed(String),
}

/// What the daemon provides to the API.
pub trait MgmtBackend: Send + Sync + 'static {
    /// Health verdict (critical tasks fresh, cloud reachable or survival working).
    fn health(&self) -> Health;
    /// The console's `status --json` document.
    fn status_json(&self) -> String;
    /// Prometheus text: registrations, subscriptions, calls, cloud state and
    /// transitions, resync progress, quarantined records, watchdog resets.
    /// ([`update_metrics`] is appended by the API.)
    fn metrics(&self) -> String;
    /// `holdline update status` data (e.g. `update_cmd::status`).
    fn update_status(&self) -> Result<UpdateStatus, String>;
    /// Installs a bundle file (e.g. `update_cmd::install`); may block.
    fn install(&self, bundle: &Path, opts: InstallOptions)
        -> Result<InstallReport, InstallFailure>;
}

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum MgmtError {
    /// Enabled without a token.
    #[error("[mgmt] is enabled but no token_file or token is set")]
    NoToken,
    /// Token file unreadable or empty.
    #[error("[mgmt] token_file {path}: {detail}")]
    TokenFile {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// Cannot bind.
    #[error("[mgmt] cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("[mgmt] server: {0}")]
    Serve(std::io::Error),
    /// TLS certificate or key unusable, or only one of them set.
    #[error("[mgmt] TLS: {0}")]
    Tls(String),
}

impl MgmtConfig {
    /// The bearer token, from `token_file` or `token`.
    pub fn load_token(&self) -> Result<String, MgmtError> {
        let token = match (&self.token_file, &self.token) {
            (Some(p), _) => std::fs::read_to_string(p)
                .map_err(|e| MgmtError::TokenFile {
                    path: p.clone(),
                    detail: e.to_string(),
                })?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned(),
            (None, Some(t)) => t.trim().to_owned(),
            (None, None) => return Err(MgmtError::NoToken),
        };
        if token.is_empty() {
            return Err(MgmtError::NoToken);
        }
        Ok(token)
    }
}

#[derive(Clone)]
struct AppState {
    backend: Arc<dyn MgmtBackend>,
    token: Arc<str>,
    upload_dir: Arc<Path>,
}

/// The TLS acceptor for `tls_cert`/`tls_key`, or `None` for plain HTTP.
pub fn tls_acceptor(cfg: &MgmtConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, MgmtError> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&cfg.tls_cert, &cfg.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(MgmtError::Tls("set both tls_cert and tls_key".into())),
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| MgmtError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(MgmtError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| MgmtError::Tls(format!("{}: {e}", key.display())))?;
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MgmtError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| MgmtError::Tls(e.to_string()))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Binds `[mgmt] listen` and serves (HTTPS when configured) until `shutdown` resolves.
pub async fn serve(
    cfg: &MgmtConfig,
    backend: Arc<dyn MgmtBackend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MgmtError> {
    let token = cfg.load_token()?;
    let tls = tls_acceptor(cfg)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| MgmtError::Bind {
            addr: cfg.listen,
            source,
        })?;
    match tls {
        Some(acceptor) => {
            serve_tls_on(
                listener,
                acceptor,
                token,
                cfg.upload_dir.clone(),
                backend,
                shutdown,
            )
            .await
        }
        None => serve_on(listener, token, cfg.upload_dir.clone(), backend, shutdown).await,
    }
}

/// Serves plain HTTP on an already bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    token: String,
    upload_dir: PathBuf,
    backend: Arc<dyn MgmtBackend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MgmtError> {
    let app = router(AppState {
        backend,
        token: token.into(),
        upload_dir: upload_dir.into(),
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(MgmtError::Serve)
}

/// Serves HTTPS on an already bound listener until `shutdown` resolves.
pub async fn serve_tls_on(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    token: String,
    upload_dir: PathBuf,
    backend: Arc<dyn MgmtBackend>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), MgmtError> {
    let app = router(AppState {
        backend,
        token: token.into(),
        upload_dir: upload_dir.into(),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of descriptors and the like: do not spin.
                    tracing::warn!(error = %e, "mgmt: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that never finishes its handshake is dropped.
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let Ok(Ok(tls)) = handshake.await else { return };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        });
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(api::HEALTH, get(health))
        .route(api::STATUS, get(status))
        .route(api::METRICS, get(metrics))
        .route(api::UPDATE, get(update_status).post(upload))
        .layer(axum::extract::DefaultBodyLimit::max(api::MAX_BUNDLE_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

fn error(code: StatusCode, text: impl Into<String>) -> Response {
    (code, Json(ApiError { error: text.into() })).into_response()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.trim().as_bytes(), token.as_bytes()))
}

async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if !authorized(req.headers(), &st.token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    next.run(req).await
}

async fn health(State(st): State<AppState>) -> Response {
    let h = st.backend.health();
    let code = if h.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

async fn status(State(st): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        st.backend.status_json(),
    )
        .into_response()
}

/// Prometheus lines describing the update state.
pub fn update_metrics(st: &UpdateStatus) -> String {
    let version = st
        .running_version
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    let trial = u8::from(st.trial != Trial::None);
    format!(
        "# HELP holdline_update_info Running firmware version and slot.\n\
         # TYPE holdline_update_info gauge\n\
         holdline_update_info{{version=\"{version}\",slot=\"{}\",board=\"{}\"}} 1\n\
         # HELP holdline_update_trial 1 while a trial boot is pending or running.\n\
         # TYPE holdline_update_trial gauge\n\
         holdline_update_trial {trial}\n\
         # HELP holdline_update_failed_versions Versions that failed their trial boot and are refused.\n\
         # TYPE holdline_update_failed_versions gauge\n\
         holdline_update_failed_versions {}\n",
        st.booted,
        st.board,
        st.failed_versions.len()
    )
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut text = st.backend.metrics();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if let Ok(u) = st.backend.update_status() {
        text.push_str(&update_metrics(&u));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn update_status(State(st): State<AppState>) -> Response {
    match st.backend.update_status() {
        Ok(s) => Json(s).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

fn install_options(query: Option<&str>) -> InstallOptions {
    let mut opts = InstallOptions::default();
    for pair in query.unwrap_or("").split('&') {
        match pair {
            "allow_downgrade=true" | "allow_downgrade=1" => opts.allow_downgrade = true,
            "retry_failed=true" | "retry_failed=1" => opts.retry_failed = true,
            _ => {}
        }
    }
    opts
}

async fn upload(State(st): State<AppState>, req: Request) -> Response {
    use http_body_util::BodyExt;
    let opts = install_options(req.uri().query());
    // One file per upload: two uploads at once must not share a file (the
    // agent serializes the installs; the second is refused as "on trial").
    static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = st
        .upload_dir
        .join(format!("holdline-upload-{}-{n}.hlb", std::process::id()));
    // The bundle goes to disk as it arrives (a board may have less memory
    // than a bundle is large): a blocking writer takes chunks over a small
    // bounded channel, so a slow disk holds the sender back.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<axum::body::Bytes>(8);
    let wpath = path.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&wpath)?;
        while let Some(chunk) = rx.blocking_recv() {
            f.write_all(&chunk)?;
        }
        f.sync_all()
    });
    let mut body: Body = req.into_body();
    let mut total = 0usize;
    let mut failure = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total += data.len();
                if total > api::MAX_BUNDLE_BYTES {
                    failure = Some((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("bundle larger than {} bytes", api::MAX_BUNDLE_BYTES),
                    ));
                    break;
                }
                if tx.send(data).await.is_err() {
                    // The writer stopped; its error is reported below.
                    break;
                }
            }
            Err(e) => {
                failure = Some((StatusCode::BAD_REQUEST, format!("upload failed: {e}")));
                break;
            }
        }
    }
    drop(tx);
    let written = match writer.await {
        Ok(r) => r.map_err(|e| format!("cannot store upload: {e}")),
        Err(e) => Err(format!("upload writer: {e}")),
    };
    if let Some((code, why)) = failure {
        let _ = std::fs::remove_file(&path);
        return error(code, why);
    }
    if let Err(why) = written {
        let _ = std::fs::remove_file(&path);
        return error(StatusCode::INTERNAL_SERVER_ERROR, why);
    }
    let backend = st.backend.clone();
    let job = tokio::task::spawn_blocking(move || {
        let res = backend.install(&path, opts);
        let _ = std::fs::remove_file(&path);
        res
    });
    match job.await {
        Ok(Ok(r)) => Json(InstallAnswer {
            ok: true,
            version: Some(r.version.to_string()),
            message: format!(
                "installed {} into slot {}; trial boot follows",
                r.version, r.slot
            ),
        })
        .into_response(),
        Ok(Err(InstallFailure::Refused(why))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(InstallAnswer {
                ok: false,
                version: None,
                message: why,
            }),
        )
            .into_response(),
        Ok(Err(InstallFailure::Failed(why))) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("install task: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Fake {
        healthy: bool,
        installed: Mutex<Vec<Vec<u8>>>,
    }

    impl MgmtBackend for Fake {
        fn health(&self) -> Health {
            Health {
                healthy: self.healthy,
                version: "1.0.0".into(),
                problems: vec![],
            }
        }
        fn status_json(&self) -> String {
            "{\"cloud\":\"up\"}".into()
        }
        fn metrics(&self) -> String {
            "holdline_registrations 3".into()
        }
        fn update_status(&self) -> Result<UpdateStatus, String> {
            Err("no agent in this test".into())
        }
        fn install(
            &self,
            bundle: &Path,
            _: InstallOptions,
        ) -> Result<InstallReport, InstallFailure> {
            let bytes = std::fs::read(bundle).map_err(|e| InstallFailure::Failed(e.to_string()))?;
            let refuse = bytes.starts_with(b"bad");
            self.installed.lock().unwrap().push(bytes);
            if refuse {
                return Err(InstallFailure::Refused("signature check failed".into()));
            }
            Ok(InstallReport {
                version: semver::Version::new(1, 1, 0),
                slot: holdline_update::slots::SlotName::B,
                rebooting: true,
            })
        }
    }

    async fn request(
        addr: SocketAddr,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn token_health_metrics_upload() {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Fake {
            healthy: true,
            installed: Mutex::new(vec![]),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            "s3cret".into(),
            dir.path().to_path_buf(),
            fake.clone(),
            async {
                let _ = rx.await;
            },
        ));
        assert_eq!(request(addr, "GET", api::HEALTH, None, b"").await.0, 401);
        assert_eq!(
            request(addr, "GET", api::HEALTH, Some("wrong!"), b"")
                .await
                .0,
            401
        );
        let (code, body) = request(addr, "GET", api::HEALTH, Some("s3cret"), b"").await;
        assert_eq!(code, 200);
        let h: Health = serde_json::from_str(&body).unwrap();
        assert!(h.healthy);
        let (code, body) = request(addr, "GET", api::STATUS, Some("s3cret"), b"").await;
        assert_eq!((code, body.as_str()), (200, "{\"cloud\":\"up\"}"));
        let (code, body) = request(addr, "GET", api::METRICS, Some("s3cret"), b"").await;
        assert_eq!(code, 200);
        assert!(body.contains("holdline_registrations 3\n"), "{body}");
        let (code, body) = request(
            addr,
            "POST",
            api::UPDATE,
            Some("s3cret"),
            b"good bundle bytes",
        )
        .await;
        assert_eq!(code, 200, "{body}");
        let a: InstallAnswer = serde_json::from_str(&body).unwrap();
        assert!(a.ok);
        let (code, body) = request(addr, "POST", api::UPDATE, Some("s3cret"), b"bad bundle").await;
        assert_eq!(code, 422);
        assert!(body.contains("signature check failed"), "{body}");
        assert_eq!(fake.installed.lock().unwrap()[0], b"good bundle bytes");
        assert_eq!(request(addr, "POST", api::UPDATE, None, b"x").await.0, 401);
        assert_eq!(fake.installed.lock().unwrap().len(), 2);
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }

    /// Plain HTTP/1.1 over any stream; reads until the server closes.
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut s: S,
        path: &str,
        token: &str,
    ) -> (u16, String) {
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        // A peer that closes without close_notify ends the read with an error.
        let _ = s.read_to_end(&mut out).await;
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (code, body)
    }

    #[tokio::test]
    async fn https_when_configured() {
        use tokio_rustls::rustls;
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let (cert, key) = (dir.path().join("mgmt.crt"), dir.path().join("mgmt.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
        let mut cfg = MgmtConfig {
            tls_cert: Some(cert),
            ..MgmtConfig::default()
        };
        assert!(
            matches!(tls_acceptor(&cfg), Err(MgmtError::Tls(_))),
            "cert without key"
        );
        cfg.tls_key = Some(key);
        let acceptor = tls_acceptor(&cfg).unwrap().unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(Fake {
            healthy: false,
            installed: Mutex::new(vec![]),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_tls_on(
            listener,
            acceptor,
            "tls-token".into(),
            dir.path().to_path_buf(),
            fake,
            async {
                let _ = rx.await;
            },
        ));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            connector.connect(name.clone(), tcp).await.unwrap()
        };
        let (code, body) = exchange(connect().await, api::HEALTH, "tls-token").await;
        assert_eq!(code, 503, "{body}");
        let h: Health = serde_json::from_str(&body).unwrap();
        assert!(!h.healthy);
        assert_eq!(exchange(connect().await, api::HEALTH, "nope").await.0, 401);
        // Plain HTTP to the TLS port gets no answer.
        let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"GET /api/v1/health HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = plain.read_to_end(&mut out).await;
        assert!(!String::from_utf8_lossy(&out).contains("200 OK"));
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }

    #[test]
    fn config_needs_a_token_when_enabled() {
        let cfg: MgmtConfig = toml::from_str("enabled = true\n").unwrap();
        assert!(matches!(cfg.load_token(), Err(MgmtError::NoToken)));
        let cfg: MgmtConfig = toml::from_str("enabled = true\ntoken = \"abc\"\n").unwrap();
        assert_eq!(cfg.load_token().unwrap(), "abc");
        assert!(toml::from_str::<MgmtConfig>("enable = true\n").is_err());
        assert!(!MgmtConfig::default().enabled);
    }
}
