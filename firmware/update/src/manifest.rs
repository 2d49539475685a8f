//! The bundle manifest: what a bundle claims to be. It is the only signed
//! object; payload integrity follows from the SHA-256 digests it lists.

use serde::{Deserialize, Serialize};

/// Bundle format this code writes and the only one it accepts.
pub const FORMAT_VERSION: u32 = 1;

/// Signed description of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Board profiles this bundle may be installed on (e.g. `["apu2"]`).
    pub compatible: Vec<String>,
    /// Firmware version (semver); anti-rollback compares it.
    pub version: semver::Version,
    /// Build time, Unix seconds (UTC).
    pub build_time: u64,
    /// Free text shown by `inspect`.
    #[serde(default)]
    pub description: String,
    /// Every payload file of the bundle, with its digest.
    pub payload: Vec<Payload>,
}

/// One payload file carried in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// File name inside the bundle's `payload/` directory.
    pub name: String,
    /// Lower-case hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// The per-board template under `images/<board>/manifest.toml`: the fields a
/// build does not compute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestTemplate {
    /// Must be [`FORMAT_VERSION`].
    pub format: u32,
    /// Boards the built bundle is compatible with.
    pub compatible: Vec<String>,
    /// Free text copied into the manifest.
    #[serde(default)]
    pub description: String,
}

/// Errors reading or writing a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid TOML for a manifest (or unknown keys).
    #[error("manifest is not valid: {0}")]
    Parse(#[from] toml::de::Error),
    /// The manifest is not UTF-8.
    #[error("manifest is not UTF-8 text")]
    NotUtf8,
    /// Written by a newer (or unknown) tool.
    #[error("unsupported bundle format {found} (this firmware reads format {FORMAT_VERSION})")]
    UnsupportedFormat {
        /// The format found.
        found: u32,
    },
    /// No board listed.
    #[error("manifest lists no compatible board")]
    NoBoard,
    /// Serialization failed (should not happen for valid data).
    #[error("cannot serialize manifest: {0}")]
    Serialize(#[from] toml::ser::Error),
}

impl Manifest {
    /// Parses and checks the format version.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8)?;
        let m: Manifest = toml::from_str(text)?;
        if m.format != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat { found: m.format });
        }
        if m.compatible.is_empty() {
            return Err(ManifestError::NoBoard);
        }
        Ok(m)
    }

    /// The exact bytes that get signed.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        Ok(toml::to_string(self)?.into_bytes())
    }

    /// True when `board` is listed as compatible.
    pub fn is_compatible(&self, board: &str) -> bool {
        self.compatible.iter().any(|b| b == board)
    }
}

impl ManifestTemplate {
    /// Parses a template file's text.
    pub fn parse(text: &str) -> Result<ManifestTemplate, ManifestError> {
        let t: ManifestTemplate = toml::from_str(text)?;
        if t.format != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedFormat { found: t.format });
        }
        if t.compatible.is_empty() {
            return Err(ManifestError::NoBoard);
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_keys() {
        let m = Manifest {
            format: FORMAT_VERSION,
            compatible: vec!["sim".into()],
            version: semver::Version::new(1, 2, 3),
            build_time: 1_700_000_000,
            description: "test".into(),
            payload: vec![Payload {
                name: "rootfs.tar".into(),
                sha256: "00".repeat(32),
                size: 10,
            }],
        };
        let bytes = m.to_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        let mut text = String::from_utf8(bytes).unwrap();
        text.insert_str(0, "surprise = 1\n");
        let err = Manifest::parse(text.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
    }

    #[test]
    fn newer_format_refused() {
        let err = ManifestTemplate::parse("format = 9\ncompatible = [\"sim\"]\n").unwrap_err();
        assert!(matches!(err, ManifestError::UnsupportedFormat { found: 9 }));
    }
}
