//! The management HTTP API as the appliance serves it and the fleet tool
//! speaks it. Every request carries `Authorization: Bearer <token>`.
//!
//! | method | path | body / answer |
//! |---|---|---|
//! | GET | [`HEALTH`] | [`Health`]; 200 when healthy, 503 otherwise |
//! | GET | [`STATUS`] | the console's `status --json` document |
//! | GET | [`METRICS`] | Prometheus text format |
//! | GET | [`UPDATE`] | [`crate::UpdateStatus`] |
//! | POST | [`UPDATE`] | bundle bytes → [`InstallAnswer`]; 200 installed, 422 refused |

use serde::{Deserialize, Serialize};

/// Health read-back.
pub const HEALTH: &str = "/api/v1/health";
/// Appliance status document.
pub const STATUS: &str = "/api/v1/status";
/// Update status (GET) and bundle upload (POST).
pub const UPDATE: &str = "/api/v1/update";
/// Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// Largest bundle accepted by upload.
pub const MAX_BUNDLE_BYTES: usize = 512 * 1024 * 1024;

/// Answer of [`HEALTH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Critical tasks fresh and cloud reachable (or survival working).
    pub healthy: bool,
    /// Running firmware version.
    pub version: String,
    /// Reasons when not healthy.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Answer of a bundle upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallAnswer {
    /// True when installed and a trial boot is armed.
    pub ok: bool,
    /// Version installed (when ok).
    #[serde(default)]
    pub version: Option<String>,
    /// Human-readable outcome or refusal reason.
    pub message: String,
}

/// Error body of any failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}
