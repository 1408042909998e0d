//! Secrets at rest. Values are sealed with XChaCha20-Poly1305 (authenticated: a changed
//! ciphertext, or one moved to another service, fails to open) under a master key. The
//! keys live in a keyring file outside the database, readable by its owner only, so a
//! copy of the database alone reveals nothing.
//!
//! Rotation adds a new current key and keeps the older ones to open what they sealed;
//! the controller re-seals every secret under the new key in one transaction.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Why a keyring or a secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot use the master keyring `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master keyring `{0}` is unreadable")]
    Corrupt(PathBuf),
    #[error("the master keyring `{0}` may be read by other users; it must be private (chmod 600)")]
    NotPrivate(PathBuf),
    #[error("secret sealed under master key `{0}`, which this keyring does not hold")]
    UnknownKey(String),
    #[error("a secret failed its integrity check (tampered with, or sealed for another place)")]
    Tampered,
}

/// A sealed value: which key, the nonce, and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KeyringFile {
    current: String,
    /// Key id -> 32 bytes, hex.
    keys: BTreeMap<String, String>,
}

/// The master keys. Cloning copies the key material; keep clones short-lived.
#[derive(Clone)]
pub struct Keyring {
    path: PathBuf,
    current: String,
    keys: BTreeMap<String, [u8; 32]>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("current", &self.current)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// Loads the keyring at `path`, making one with a fresh key if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(SecretError::NotPrivate(path.to_owned()));
                }
                let file: KeyringFile = serde_json::from_slice(&bytes)
                    .map_err(|_| SecretError::Corrupt(path.to_owned()))?;
                let mut keys = BTreeMap::new();
                for (id, hex_key) in file.keys {
                    let bytes: [u8; 32] = hex::decode(hex_key)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| SecretError::Corrupt(path.to_owned()))?;
                    keys.insert(id, bytes);
                }
                if !keys.contains_key(&file.current) {
                    return Err(SecretError::Corrupt(path.to_owned()));
                }
                Ok(Self {
                    path: path.to_owned(),
                    current: file.current,
                    keys,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                let mut ring = Self {
                    path: path.to_owned(),
                    current: String::new(),
                    keys: BTreeMap::new(),
                };
                ring.add_key().map_err(io)?;
                ring.save()?;
                Ok(ring)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The id of the key new secrets are sealed with.
    pub fn current(&self) -> &str {
        &self.current
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a new current key and writes the keyring (atomically). Older keys stay, so
    /// everything sealed before still opens until it is re-sealed.
    pub fn rotate(&mut self) -> Result<&str, SecretError> {
        let path = self.path.clone();
        let previous = (self.current.clone(), self.keys.clone());
        self.add_key()
            .map_err(|source| SecretError::Io { path, source })?;
        if let Err(e) = self.save() {
            (self.current, self.keys) = previous;
            return Err(e);
        }
        Ok(&self.current)
    }

    fn add_key(&mut self) -> std::io::Result<()> {
        let key: [u8; 32] = random_bytes()?;
        let id = format!("k{}", self.keys.len() + 1);
        self.keys.insert(id.clone(), key);
        self.current = id;
        Ok(())
    }

    fn save(&self) -> Result<(), SecretError> {
        let io = |source| SecretError::Io {
            path: self.path.clone(),
            source,
        };
        let file = KeyringFile {
            current: self.current.clone(),
            keys: self
                .keys
                .iter()
                .map(|(id, k)| (id.clone(), hex::encode(k)))
                .collect(),
        };
        let tmp = self.path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            out.write_all(&serde_json::to_vec_pretty(&file).expect("serializes"))
                .map_err(io)?;
            out.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Seals `plaintext` under the current key. `context` (service, environment and key
    /// name) is authenticated with it, so a ciphertext copied to another place fails.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Sealed {
        let key = &self.keys[&self.current];
        let nonce: [u8; 24] = random_bytes().expect("the kernel gives random bytes");
        let cipher = XChaCha20Poly1305::new(key.into());
        let ciphertext = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("sealing cannot fail");
        Sealed {
            key_id: self.current.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens a sealed value.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<Vec<u8>, SecretError> {
        let key = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| SecretError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != 24 {
            return Err(SecretError::Tampered);
        }
        XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Tampered)
    }

    /// A keyed digest of `message` under the current key: for tokens the controller
    /// can check without storing them.
    pub fn mac(&self, message: &str) -> String {
        mac_with(&self.keys[&self.current], message)
    }

    /// Whether `tag` is the keyed digest of `message` under the current key.
    pub fn verify_mac_current(&self, message: &str, tag: &str) -> bool {
        constant_time_eq(self.mac(message).as_bytes(), tag.as_bytes())
    }

    /// Whether `tag` is the keyed digest of `message` under any key of the ring.
    pub fn verify_mac(&self, message: &str, tag: &str) -> bool {
        self.keys
            .values()
            .any(|k| constant_time_eq(mac_with(k, message).as_bytes(), tag.as_bytes()))
    }
}

/// HMAC-SHA256 of `message` under `key`, in hex.
pub fn keyed_digest(key: &[u8], message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length works");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn mac_with(key: &[u8; 32], message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length works");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Compares without an early exit, so timing tells nothing about where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `N` random bytes from the kernel.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// The context a secret is sealed for.
pub fn secret_context(service: &str, env: &str, key: &str) -> String {
    format!("wharf-secret\0{env}\0{service}\0{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(&dir.path().join("master.keys")).unwrap();
        let sealed = ring.seal(b"hunter2", "a");
        assert!(!sealed.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(ring.open(&sealed, "a").unwrap(), b"hunter2");
        assert!(matches!(
            ring.open(&sealed, "b"),
            Err(SecretError::Tampered)
        ));
        let mut flipped = sealed.clone();
        flipped.ciphertext[0] ^= 1;
        assert!(matches!(
            ring.open(&flipped, "a"),
            Err(SecretError::Tampered)
        ));
    }

    #[test]
    fn rotation_keeps_old_secrets_readable_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.keys");
        let mut ring = Keyring::load_or_create(&path).unwrap();
        let old = ring.seal(b"v1", "c");
        let tag = ring.mac("token");
        let new_id = ring.rotate().unwrap().to_owned();
        assert_ne!(old.key_id, new_id);
        let reloaded = Keyring::load_or_create(&path).unwrap();
        assert_eq!(reloaded.current(), new_id);
        assert_eq!(reloaded.open(&old, "c").unwrap(), b"v1");
        assert_eq!(reloaded.seal(b"v2", "c").key_id, new_id);
        assert!(reloaded.verify_mac("token", &tag));
        assert!(!reloaded.verify_mac("other", &tag));
    }

    #[test]
    fn a_keyring_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.keys");
        Keyring::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::load_or_create(&path),
            Err(SecretError::NotPrivate(_))
        ));
    }
}
