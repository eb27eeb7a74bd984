//! Tenants' secrets, sealed with the operator's key: AES-256-GCM with a
//! random nonce per seal, bound to the tenant and the secret's name (the
//! additional data), so a sealed value moved to another tenant or name
//! does not open. The control plane seals what a tenant sets and keeps only
//! that; snapshots carry it sealed; a node opens it in memory, for the
//! services that declare it. Both read the key from a file the operator
//! provides: 32 random bytes, hex-encoded (`openssl rand -hex 32`).

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a key or a sealed secret was refused. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("reading the secrets key {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("the secrets key {path} must be 64 hex digits (32 bytes)")]
    BadKey { path: String },
    #[error("no random bytes for a nonce")]
    Random,
    #[error("sealed secret {name:?} does not open with this key")]
    DoesNotOpen { name: String },
}

/// The operator's key. Its `Debug` shows nothing of it.
pub struct SecretsKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(..)")
    }
}

impl SecretsKey {
    /// The key in `path`: 64 hex digits, surrounding whitespace ignored.
    pub fn from_file(path: &Path) -> Result<Self, SecretsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SecretsError::ReadKey {
            path: shown.clone(),
            source,
        })?;
        Self::from_hex(text.trim()).ok_or(SecretsError::BadKey { path: shown })
    }

    /// A key from 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).ok()?;
        Some(Self {
            key: LessSafeKey::new(key),
        })
    }

    /// A fresh random key, hex-encoded: what `scripts/run.sh` writes for a
    /// development platform.
    pub fn generate_hex() -> Result<String, SecretsError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SecretsError::Random)?;
        Ok(hex::encode(bytes))
    }

    /// `value` sealed for `tenant`'s secret `name`: base64 of the nonce and
    /// the ciphertext with its tag.
    pub fn seal(&self, tenant: &str, name: &str, value: &[u8]) -> Result<String, SecretsError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretsError::Random)?;
        let mut sealed = value.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(bound_to(tenant, name)),
                &mut sealed,
            )
            .map_err(|_| SecretsError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// The value of `tenant`'s secret `name`, if `sealed` was sealed for
    /// exactly that with this key.
    pub fn open(&self, tenant: &str, name: &str, sealed: &str) -> Result<Vec<u8>, SecretsError> {
        let refused = || SecretsError::DoesNotOpen {
            name: name.to_string(),
        };
        let bytes = STANDARD.decode(sealed).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut buffer = ciphertext.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(bound_to(tenant, name)), &mut buffer)
            .map_err(|_| refused())?;
        Ok(plain.to_vec())
    }
}

/// The additional data a secret is sealed with: its tenant and name, each
/// ended by a NUL (neither may contain one).
fn bound_to(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = b"edge-secret\0".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad.push(0);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_hex(&SecretsKey::generate_hex().expect("random")).expect("key")
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_tenant_and_name_with_its_key() {
        let key = key();
        let sealed = key.seal("acme", "api_key", b"s3cr3t").expect("seal");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(
            key.open("acme", "api_key", &sealed).expect("open"),
            b"s3cr3t"
        );
        assert!(key.open("globex", "api_key", &sealed).is_err());
        assert!(key.open("acme", "other", &sealed).is_err());
        assert!(self::key().open("acme", "api_key", &sealed).is_err());
        assert!(key.open("acme", "api_key", "not base64!").is_err());
        assert!(key.open("acme", "api_key", "AAAA").is_err());
    }

    #[test]
    fn two_seals_of_one_value_differ() {
        let key = key();
        let a = key.seal("acme", "k", b"v").expect("seal");
        let b = key.seal("acme", "k", b"v").expect("seal");
        assert_ne!(a, b, "a fresh nonce each time");
    }

    #[test]
    fn a_key_is_64_hex_digits() {
        assert!(SecretsKey::from_hex("00").is_none());
        assert!(SecretsKey::from_hex(&"zz".repeat(32)).is_none());
        assert!(SecretsKey::from_hex(&"ab".repeat(32)).is_some());
        assert_eq!(format!("{:?}", key()), "SecretsKey(..)");
    }
}
