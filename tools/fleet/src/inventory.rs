//! The inventory file:
//!
//! ```toml
//! [[appliance]]
//! name = "site-0001"
//! address = "10.20.0.1:8080"   # management API, IP:port (no DNS names)
//! group = "canary"             # "canary" appliances form the first wave
//! token_file = "tokens/site-0001"   # or token = "..."
//! ca_file = "mgmt-ca.pem"      # optional: HTTPS, trusting this CA / certificate
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Group whose members form the canary wave.
pub const CANARY_GROUP: &str = "canary";

/// The whole inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Appliances, in file order.
    #[serde(rename = "appliance", default)]
    pub appliances: Vec<Appliance>,
}

/// One appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// Unique name.
    pub name: String,
    /// Management API address.
    pub address: SocketAddr,
    /// Group (free text; `canary` is special).
    #[serde(default = "default_group")]
    pub group: String,
    /// Bearer token inline.
    #[serde(default)]
    pub token: Option<String>,
    /// Bearer token file (relative to the inventory file).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// PEM CA (or self-signed certificate) of the appliance's HTTPS listener
    /// (relative to the inventory file). Absent: plain HTTP.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_group() -> String {
    "default".into()
}

/// Inventory problems.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Unreadable file.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Invalid TOML or values.
    #[error("{path}: {detail}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

impl Inventory {
    /// Loads and checks an inventory; token files are read now.
    pub fn load(path: &Path) -> Result<Inventory, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |detail: String| InventoryError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let mut inv: Inventory = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut names = BTreeSet::new();
        for a in &mut inv.appliances {
            if a.name.is_empty() || !names.insert(a.name.clone()) {
                return Err(invalid(format!(
                    "appliance name {:?} empty or repeated",
                    a.name
                )));
            }
            if let Some(f) = &a.token_file {
                let p = base.join(f);
                let t = std::fs::read_to_string(&p).map_err(|source| InventoryError::Io {
                    path: p.clone(),
                    source,
                })?;
                a.token = Some(t.lines().next().unwrap_or("").trim().to_owned());
            }
            if let Some(ca) = &a.ca_file {
                a.ca_file = Some(base.join(ca));
            }
            if a.token.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(format!(
                    "appliance {:?} has no token or token_file",
                    a.name
                )));
            }
        }
        if inv.appliances.is_empty() {
            return Err(invalid("no [[appliance]] entries".into()));
        }
        Ok(inv)
    }

    /// The appliance called `name`.
    pub fn get(&self, name: &str) -> Option<&Appliance> {
        self.appliances.iter().find(|a| a.name == name)
    }
}

impl Appliance {
    /// The bearer token (checked present by [`Inventory::load`]).
    pub fn token(&self) -> &str {
        self.token.as_deref().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Inventory, InventoryError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "from-file\n").unwrap();
        let p = dir.path().join("fleet.toml");
        std::fs::write(&p, text).unwrap();
        Inventory::load(&p)
    }

    #[test]
    fn tokens_names_and_unknown_keys() {
        let inv =
            load("[[appliance]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\ntoken_file = \"tok\"\n")
                .unwrap();
        assert_eq!(inv.appliances[0].token(), "from-file");
        assert_eq!(inv.appliances[0].group, "default");
        let e = load("[[appliance]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.to_string().contains("no token"), "{e}");
        let e = load("[[appliance]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\ntoken = \"t\"\n[[appliance]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\ntoken = \"t\"\n").unwrap_err();
        assert!(e.to_string().contains("repeated"), "{e}");
        let e = load("[[appliance]]\nname = \"a\"\naddress = \"site.example:1\"\ntoken = \"t\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("address"), "{e}");
        let e = load(
            "[[appliance]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\ntoken = \"t\"\ncolor = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("color"), "{e}");
    }
}
