//! HTTP client for one appliance's management API (blocking; HTTPS with the
//! appliance's `ca_file`, plain HTTP otherwise; always to an IP address:
//! nothing resolves DNS names).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdline_update::api::{self, Health, InstallAnswer};
use holdline_update::UpdateStatus;

use crate::inventory::Appliance;

/// Why a request did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No connection or no answer (e.g. rebooting).
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The token was refused.
    #[error("token refused (401)")]
    Unauthorized,
    /// An unexpected HTTP status.
    #[error("HTTP {code}: {body}")]
    Http {
        /// Status.
        code: u16,
        /// Body (shortened).
        body: String,
    },
    /// An answer that does not parse.
    #[error("bad answer: {0}")]
    Decode(String),
    /// The CA file is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Client with short timeouts for reads and a long one for uploads.
pub struct Client {
    timeout: Duration,
    upload_timeout: Duration,
    plain: (ureq::Agent, ureq::Agent),
    tls: Mutex<HashMap<PathBuf, (ureq::Agent, ureq::Agent)>>,
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

fn agent(
    connect: Duration,
    total: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> ureq::Agent {
    let mut b = ureq::AgentBuilder::new()
        .timeout_connect(connect)
        .timeout(total);
    if let Some(c) = tls {
        b = b.tls_config(c);
    }
    b.build()
}

fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let err = |e: String| ClientError::Tls(format!("{}: {e}", ca.display()));
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl Client {
    /// `timeout` bounds status/health requests; uploads get `upload_timeout`.
    pub fn new(timeout: Duration, upload_timeout: Duration) -> Client {
        Client {
            timeout,
            upload_timeout,
            plain: (
                agent(timeout, timeout, None),
                agent(timeout, upload_timeout, None),
            ),
            tls: Mutex::new(HashMap::new()),
        }
    }

    /// (quick, upload) agents for `a`: HTTPS ones when it has a CA file.
    fn agents(&self, a: &Appliance) -> Result<(ureq::Agent, ureq::Agent), ClientError> {
        let Some(ca) = &a.ca_file else {
            return Ok(self.plain.clone());
        };
        let mut cache = self
            .tls
            .lock()
            .map_err(|_| ClientError::Tls("client cache poisoned".into()))?;
        if let Some(pair) = cache.get(ca) {
            return Ok(pair.clone());
        }
        let config = tls_config(ca)?;
        let pair = (
            agent(self.timeout, self.timeout, Some(config.clone())),
            agent(self.timeout, self.upload_timeout, Some(config)),
        );
        cache.insert(ca.clone(), pair.clone());
        Ok(pair)
    }

    fn url(a: &Appliance, path: &str) -> String {
        let scheme = if a.ca_file.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{}", a.address, path)
    }

    fn answer(
        res: Result<ureq::Response, ureq::Error>,
        ok: &[u16],
    ) -> Result<(u16, String), ClientError> {
        match res {
            Ok(r) => {
                let code = r.status();
                r.into_string()
                    .map(|b| (code, b))
                    .map_err(|e| ClientError::Unreachable(e.to_string()))
            }
            Err(ureq::Error::Status(401, _)) => Err(ClientError::Unauthorized),
            Err(ureq::Error::Status(code, r)) => {
                let body = r.into_string().unwrap_or_default();
                if ok.contains(&code) {
                    Ok((code, body))
                } else {
                    Err(ClientError::Http {
                        code,
                        body: short(&body),
                    })
                }
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Unreachable(t.to_string())),
        }
    }

    fn get(&self, a: &Appliance, path: &str, ok: &[u16]) -> Result<(u16, String), ClientError> {
        let res = self
            .agents(a)?
            .0
            .get(&Self::url(a, path))
            .set("Authorization", &format!("Bearer {}", a.token()))
            .call();
        Self::answer(res, ok)
    }

    /// GET health (200 healthy, 503 unhealthy: both answer a [`Health`]).
    pub fn health(&self, a: &Appliance) -> Result<Health, ClientError> {
        let (_, body) = self.get(a, api::HEALTH, &[503])?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET update status.
    pub fn update_status(&self, a: &Appliance) -> Result<UpdateStatus, ClientError> {
        let (_, body) = self.get(a, api::UPDATE, &[])?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// POST a bundle. A refusal (422) is an `Ok` answer with `ok == false`.
    pub fn install(
        &self,
        a: &Appliance,
        bundle: &[u8],
        retry_failed: bool,
    ) -> Result<InstallAnswer, ClientError> {
        let mut url = Self::url(a, api::UPDATE);
        if retry_failed {
            url.push_str("?retry_failed=true");
        }
        let res = self
            .agents(a)?
            .1
            .post(&url)
            .set("Authorization", &format!("Bearer {}", a.token()))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bundle);
        let (_, body) = Self::answer(res, &[422])?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
