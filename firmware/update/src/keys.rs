//! Ed25519 signing keys and their text files.
//!
//! Secret key file: one line `holdline-ed25519-secret <64 hex>`; public key
//! file: `holdline-ed25519-public <64 hex>`. The label keeps an operator from
//! shipping the secret where the public key belongs.

use std::path::{Path, PathBuf};

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

const SECRET_LABEL: &str = "holdline-ed25519-secret";
const PUBLIC_LABEL: &str = "holdline-ed25519-public";

/// Errors handling key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not a {expected} key file")]
    Format {
        /// The file.
        path: PathBuf,
        /// "secret" or "public".
        expected: &'static str,
    },
    /// The bytes are not a valid Ed25519 public key.
    #[error("{path}: invalid Ed25519 public key")]
    Invalid {
        /// The file.
        path: PathBuf,
    },
    /// The system random source failed.
    #[error("no randomness for key generation: {0}")]
    Random(String),
    /// A key directory holds no `*.pub` file.
    #[error("{path}: no public key (*.pub) found")]
    Empty {
        /// The directory.
        path: PathBuf,
    },
}

/// Generates a fresh signing key from the OS random source.
pub fn generate() -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Text of a secret key file.
pub fn secret_to_text(key: &SigningKey) -> String {
    format!("{SECRET_LABEL} {}\n", hex::encode(key.to_bytes()))
}

/// Text of a public key file.
pub fn public_to_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_LABEL} {}\n", hex::encode(key.to_bytes()))
}

fn parse_line(text: &str, label: &str) -> Option<[u8; 32]> {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))?;
    let mut parts = line.split_whitespace();
    if parts.next()? != label {
        return None;
    }
    let bytes = hex::decode(parts.next()?).ok()?;
    if parts.next().is_some() {
        return None;
    }
    bytes.try_into().ok()
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses secret key text.
pub fn secret_from_text(text: &str, path: &Path) -> Result<SigningKey, KeyError> {
    let bytes = parse_line(text, SECRET_LABEL).ok_or_else(|| KeyError::Format {
        path: path.to_path_buf(),
        expected: "secret",
    })?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Parses public key text.
pub fn public_from_text(text: &str, path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = parse_line(text, PUBLIC_LABEL).ok_or_else(|| KeyError::Format {
        path: path.to_path_buf(),
        expected: "public",
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid {
        path: path.to_path_buf(),
    })
}

/// Loads a secret key file.
pub fn load_secret(path: &Path) -> Result<SigningKey, KeyError> {
    secret_from_text(&read(path)?, path)
}

/// Loads a public key file.
pub fn load_public(path: &Path) -> Result<VerifyingKey, KeyError> {
    public_from_text(&read(path)?, path)
}

/// Loads the trusted keys: a single public key file, or every `*.pub` file
/// of a directory (so that a key rotation can ship old and new key).
pub fn load_keyring(path: &Path) -> Result<Vec<VerifyingKey>, KeyError> {
    if !path.is_dir() {
        return Ok(vec![load_public(path)?]);
    }
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(KeyError::Empty {
            path: path.to_path_buf(),
        });
    }
    files.iter().map(|p| load_public(p)).collect()
}

/// Writes a secret key file readable by its owner only.
pub fn write_secret(path: &Path, key: &SigningKey) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(secret_to_text(key).as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Writes a public key file.
pub fn write_public(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    std::fs::write(path, public_to_text(key)).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trip_and_labels() {
        let k = generate().unwrap();
        let p = Path::new("k");
        let back = secret_from_text(&secret_to_text(&k), p).unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        let pubk = public_from_text(&public_to_text(&k.verifying_key()), p).unwrap();
        assert_eq!(pubk, k.verifying_key());
        // A secret key is never accepted where a public key is expected.
        assert!(public_from_text(&secret_to_text(&k), p).is_err());
    }
}
