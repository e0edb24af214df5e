//! The API keys' file in the data directory, `keys.json`: each key's name, scopes, optional
//! rate limit, creation time and SHA-256, never the key itself. Written durably
//! (`durable_file.rs`) under an exclusive lock on `keys.lock`, so `clarion keys create` and a
//! running server's `POST /v1/keys` never lose each other's change.
//!
//! A plain SHA-256 (not a password hash such as argon2) is what a generated key needs: a key is
//! 256 random bits, so no dictionary or brute force applies, and the check stays a microsecond
//! on every request (as GitHub's and Stripe's tokens are checked).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::KeyError;
use super::scope::Scopes;
use crate::durable_file::{create_dir_durably, write_durably};

pub const KEYS_FILE: &str = "keys.json";
const LOCK_FILE: &str = "keys.lock";
/// Most stored keys: a deployment has a key per calling service, tens or hundreds; the whole
/// set is held by every shard and reread on every change.
pub const MAX_KEYS: usize = 10_000;
/// Longest key name (`[A-Za-z0-9][A-Za-z0-9_.-]*`).
pub const MAX_NAME_LEN: usize = 64;
/// The highest per-key rate limit accepted (requests per second).
pub const MAX_RATE_LIMIT: u32 = 1_000_000;
/// Largest `keys.json` read: [`MAX_KEYS`] keys of at most about 300 bytes each (a 64-byte
/// name, six scopes, a limit, a time and a 64-digit hash, as JSON) with room to spare. A larger
/// file was not written by Clarion and is refused before it is read into memory.
pub const MAX_FILE_BYTES: u64 = 8 << 20;
/// The prefix of a generated key, so a leaked one is recognisable (secret scanners).
pub const KEY_PREFIX: &str = "clk_";
const FORMAT: u64 = 1;

/// One stored key, as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub name: String,
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_s: Option<u32>,
    pub created_at_ms: u64,
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    format: u64,
    keys: Vec<StoredKey>,
}

/// SHA-256 of a presented or generated key.
pub fn digest(key: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, key).as_ref());
    out
}

#[cfg(test)]
pub(crate) fn tests_hex(bytes: &[u8]) -> String {
    hex(bytes)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Parses a stored digest.
pub fn parse_hex_digest(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A new key: `clk_` and 256 random bits, base64url.
pub fn generate() -> Result<String, KeyError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Io(io::Error::other("the system's random source failed")))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// A key's name: 1 to 64 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid {
            field: "name",
            message: format!(
                "must be 1 to {MAX_NAME_LEN} of letters, digits, `_`, `.` or `-`, starting with a letter or digit"
            ),
        })
    }
}

fn validate_rate(rate: Option<u32>) -> Result<(), KeyError> {
    match rate {
        Some(r) if r == 0 || r > MAX_RATE_LIMIT => Err(KeyError::Invalid {
            field: "rate_limit_per_s",
            message: format!("must be between 1 and {MAX_RATE_LIMIT}"),
        }),
        _ => Ok(()),
    }
}

/// The keys' file of one data directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
}

impl KeyStore {
    pub fn new(data_dir: &Path) -> KeyStore {
        KeyStore {
            dir: data_dir.to_path_buf(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(KEYS_FILE)
    }

    /// Every stored key; none when the file does not exist yet.
    pub fn load(&self) -> Result<Vec<StoredKey>, KeyError> {
        let path = self.path();
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(KeyError::Io(e)),
        };
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, MAX_FILE_BYTES + 1), &mut bytes)
            .map_err(KeyError::Io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(KeyError::Corrupt(format!(
                "{} is over {MAX_FILE_BYTES} bytes: not a keys file Clarion wrote",
                path.display()
            )));
        }
        let file: KeysFile = serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Corrupt(format!("{}: {e}", path.display())))?;
        if file.keys.len() > MAX_KEYS {
            return Err(KeyError::Corrupt(format!(
                "{} holds {} keys, over the {MAX_KEYS} Clarion keeps",
                path.display(),
                file.keys.len()
            )));
        }
        if file.format > FORMAT {
            return Err(KeyError::Corrupt(format!(
                "{} has format {}: written by a newer Clarion",
                path.display(),
                file.format
            )));
        }
        Ok(file.keys)
    }

    /// Creates a key: returns what is stored and the key itself (shown once, never stored).
    pub fn create(
        &self,
        name: &str,
        scopes: Scopes,
        rate_limit_per_s: Option<u32>,
        now_ms: u64,
    ) -> Result<(StoredKey, String), KeyError> {
        validate_name(name)?;
        validate_rate(rate_limit_per_s)?;
        if scopes.is_empty() {
            return Err(KeyError::Invalid {
                field: "scopes",
                message: "at least one scope is required".into(),
            });
        }
        let _lock = self.lock()?;
        let mut keys = self.load()?;
        if keys.iter().any(|k| k.name == name) {
            return Err(KeyError::Exists(name.to_string()));
        }
        if keys.len() >= MAX_KEYS {
            return Err(KeyError::TooMany);
        }
        let key = generate()?;
        let stored = StoredKey {
            name: name.to_string(),
            scopes: scopes.names().into_iter().map(String::from).collect(),
            rate_limit_per_s,
            created_at_ms: now_ms,
            sha256: hex(&digest(key.as_bytes())),
        };
        keys.push(stored.clone());
        self.write(keys)?;
        Ok((stored, key))
    }

    /// Deletes a key by name.
    pub fn revoke(&self, name: &str) -> Result<(), KeyError> {
        let _lock = self.lock()?;
        let mut keys = self.load()?;
        let before = keys.len();
        keys.retain(|k| k.name != name);
        if keys.len() == before {
            return Err(KeyError::NotFound(name.to_string()));
        }
        self.write(keys)
    }

    fn write(&self, keys: Vec<StoredKey>) -> Result<(), KeyError> {
        let bytes = serde_json::to_vec_pretty(&KeysFile {
            format: FORMAT,
            keys,
        })
        .map_err(|e| KeyError::Io(io::Error::other(e)))?;
        write_durably(&self.path(), &bytes, 0o600).map_err(KeyError::Io)?;
        // Owned as the data directory is: `clarion keys` run as root must not leave a file the
        // server's own user cannot read.
        use std::os::unix::fs::MetadataExt;
        let dir = std::fs::metadata(&self.dir).map_err(KeyError::Io)?;
        let file = std::fs::metadata(self.path()).map_err(KeyError::Io)?;
        if (file.uid(), file.gid()) != (dir.uid(), dir.gid()) {
            std::os::unix::fs::chown(self.path(), Some(dir.uid()), Some(dir.gid()))
                .map_err(KeyError::Io)?;
        }
        Ok(())
    }

    /// The store's exclusive lock (held until dropped), creating the data directory if needed.
    fn lock(&self) -> Result<File, KeyError> {
        create_dir_durably(&self.dir).map_err(KeyError::Io)?;
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .map_err(KeyError::Io)?;
        f.lock().map_err(KeyError::Io)?;
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_keys_are_stored_hashed_and_revoked_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::new(&tmp.path().join("data"));
        assert!(store.load().unwrap().is_empty());
        let scopes = Scopes::parse_list(["send"]).unwrap();
        let (stored, key) = store.create("billing", scopes, Some(100), 5).unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == 4 + 43, "{key}");
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(!text.contains(&key), "the key itself is never stored");
        assert_eq!(
            parse_hex_digest(&stored.sha256),
            Some(digest(key.as_bytes()))
        );
        assert_eq!(store.load().unwrap(), vec![stored]);
        assert!(matches!(
            store.create("billing", scopes, None, 6),
            Err(KeyError::Exists(_))
        ));
        for bad in ["", "-x", "a b", &"x".repeat(65)] {
            assert!(matches!(
                store.create(bad, scopes, None, 6),
                Err(KeyError::Invalid { field: "name", .. })
            ));
        }
        assert!(matches!(
            store.create("r", scopes, Some(0), 6),
            Err(KeyError::Invalid {
                field: "rate_limit_per_s",
                ..
            })
        ));
        store.revoke("billing").unwrap();
        assert!(store.load().unwrap().is_empty());
        assert!(matches!(
            store.revoke("billing"),
            Err(KeyError::NotFound(_))
        ));
    }

    #[test]
    fn a_keys_file_past_its_bounds_is_refused_not_read_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let store = KeyStore::new(tmp.path());
        let big = vec![b' '; MAX_FILE_BYTES as usize + 1];
        std::fs::write(store.path(), &big).unwrap();
        let err = store.load().unwrap_err();
        assert!(
            matches!(&err, KeyError::Corrupt(m) if m.contains("over 8388608 bytes")),
            "{err:?}"
        );
        let key = |i: usize| {
            serde_json::json!({"name": format!("k{i}"), "scopes": ["send"],
                "created_at_ms": 1, "sha256": "00".repeat(32)})
        };
        let many: Vec<_> = (0..=MAX_KEYS).map(key).collect();
        let text = serde_json::json!({"format": 1, "keys": many}).to_string();
        std::fs::write(store.path(), text).unwrap();
        let err = store.load().unwrap_err();
        assert!(
            matches!(&err, KeyError::Corrupt(m) if m.contains("10001 keys")),
            "{err:?}"
        );
    }
}
