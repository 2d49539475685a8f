//! HTTP client for one appliance's management API (blocking, plain HTTP to
//! an IP address: nothing resolves DNS names).

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
}

/// Client with short timeouts for reads and a long one for uploads.
pub struct Client {
    quick: ureq::Agent,
    upload: ureq::Agent,
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

impl Client {
    /// `timeout` bounds status/health requests; uploads get `upload_timeout`.
    pub fn new(timeout: Duration, upload_timeout: Duration) -> Client {
        let build = |t| {
            ureq::AgentBuilder::new()
                .timeout_connect(timeout)
                .timeout(t)
                .build()
        };
        Client {
            quick: build(timeout),
            upload: build(upload_timeout),
        }
    }

    fn url(a: &Appliance, path: &str) -> String {
        format!("http://{}{}", a.address, path)
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
            .quick
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
            .upload
            .post(&url)
            .set("Authorization", &format!("Bearer {}", a.token()))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bundle);
        let (_, body) = Self::answer(res, &[422])?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode(e.to_string()))
    }
}
