//! Envelope encryption of stored signing keys and TOTP secrets under a
//! key-encryption key (KEK) that lives in a file, outside the database: a
//! dump or backup of the database alone cannot mint tokens nor codes.
//!
//! A sealed key is stored as `authd-kek-v1:<kek id>:<nonce>:<ciphertext>`
//! (nonce and ciphertext base64url): XChaCha20-Poly1305 with a random 192-bit
//! nonce, so random nonces never collide in practice, and the version, KEK
//! id and `kid` as associated data, so a sealed value copied onto another
//! row does not open. The KEK id is a short hash of the KEK, telling which
//! KEK sealed a row without revealing anything usable about it. Rows that
//! start with `-----BEGIN` are plaintext PKCS#8 PEM, as stored before
//! encryption was configured.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use secrecy::{ExposeSecret, SecretBox, SecretString, zeroize::Zeroizing};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::Error;

const VERSION: &str = "authd-kek-v1";
const KEK_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
const PLAINTEXT_PREFIX: &str = "-----BEGIN";

/// Where the KEKs are. The previous one only decrypts: it is for moving
/// rows to a new KEK (`authd keys rewrap`) and for serving meanwhile.
#[derive(Debug, Clone, Default)]
pub(crate) struct KekSettings {
    pub(crate) file: Option<PathBuf>,
    pub(crate) previous_file: Option<PathBuf>,
}

/// One key-encryption key. No `Debug`: the key never reaches a log.
struct Kek {
    id: String,
    key: SecretBox<[u8; KEK_BYTES]>,
}

impl Kek {
    /// Reads a KEK file: 32 random bytes in standard base64, surrounding
    /// whitespace ignored (`openssl rand -base64 32`). Errors name the
    /// setting and the file, never its contents.
    async fn read(path: &Path, setting: &str) -> anyhow::Result<Self> {
        let context = || format!("{setting} {}", path.display());
        let text = SecretString::from(
            tokio::fs::read_to_string(path)
                .await
                .with_context(context)?,
        );
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.expose_secret().trim())
                .ok()
                .filter(|bytes| bytes.len() == KEK_BYTES)
                .with_context(|| {
                    format!(
                        "{}: expected {KEK_BYTES} random bytes in base64, \
                         as `openssl rand -base64 32` writes",
                        context()
                    )
                })?,
        );
        let key = SecretBox::<[u8; KEK_BYTES]>::init_with_mut(|key| key.copy_from_slice(&decoded));
        let digest = Sha256::new()
            .chain_update(b"authd key-encryption key id\0")
            .chain_update(key.expose_secret())
            .finalize();
        Ok(Self {
            id: URL_SAFE_NO_PAD.encode(&digest[..8]),
            key,
        })
    }

    /// A cipher under this KEK; it wipes its copy of the key when dropped.
    fn cipher(&self) -> Result<XChaCha20Poly1305, Error> {
        XChaCha20Poly1305::new_from_slice(self.key.expose_secret())
            .map_err(|_| Error::internal("a key-encryption key of the wrong length"))
    }
}

/// What a sealed value is bound to: moved to another row, or relabelled
/// with another KEK id or version, it no longer opens.
fn associated_data(kek_id: &str, binding: &str) -> String {
    format!("{VERSION}:{kek_id}:{binding}")
}

/// What a TOTP secret is bound to: its user, in a form no `kid` takes.
fn totp_binding(user_id: Uuid) -> String {
    format!("totp:{user_id}")
}

/// The KEKs this process holds: none (keys are stored as plaintext PEM), a
/// current one that seals and opens, and optionally a previous one that only
/// opens.
#[derive(Default)]
pub(crate) struct Keks {
    current: Option<Kek>,
    previous: Option<Kek>,
}

impl Keks {
    pub(crate) async fn load(settings: &KekSettings) -> anyhow::Result<Self> {
        let current = match &settings.file {
            Some(path) => Some(Kek::read(path, "AUTHD_KEY_ENCRYPTION_KEY_FILE").await?),
            None => None,
        };
        let previous = match &settings.previous_file {
            Some(path) => Some(Kek::read(path, "AUTHD_PREVIOUS_KEY_ENCRYPTION_KEY_FILE").await?),
            None => None,
        };
        Ok(Self { current, previous })
    }

    /// The id of the KEK that seals, if any.
    pub(crate) fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|kek| kek.id.as_str())
    }

    /// The form in which `pem` is stored for `kid`: sealed under the current
    /// KEK, or the PEM itself when there is none.
    pub(crate) fn seal(&self, kid: &str, pem: &str) -> Result<String, Error> {
        self.seal_bound(kid, pem)
    }

    /// The form in which a user's TOTP secret is stored: sealed under the
    /// current KEK and bound to the user, or the base32 itself when there is
    /// no KEK.
    pub(crate) fn seal_totp(&self, user_id: Uuid, secret: &str) -> Result<String, Error> {
        self.seal_bound(&totp_binding(user_id), secret)
    }

    /// A user's TOTP secret (base32), whichever KEK sealed it. Base32 never
    /// starts with the sealed form's version, so plaintext is told apart.
    pub(crate) fn open_totp(&self, user_id: Uuid, stored: &str) -> Result<SecretString, Error> {
        if !stored.starts_with(VERSION) {
            return Ok(SecretString::from(stored.to_owned()));
        }
        self.open_bound(
            &format!("the TOTP secret of user {user_id}"),
            &totp_binding(user_id),
            stored,
        )
    }

    fn seal_bound(&self, binding: &str, plaintext: &str) -> Result<String, Error> {
        let Some(kek) = &self.current else {
            return Ok(plaintext.to_owned());
        };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| Error::internal(e.to_string()))?;
        let aad = associated_data(&kek.id, binding);
        let sealed = kek
            .cipher()?
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| Error::internal("cannot encrypt a stored secret"))?;
        Ok(format!(
            "{VERSION}:{}:{}:{}",
            kek.id,
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(sealed)
        ))
    }

    /// The PKCS#8 PEM of the key stored for `kid`, whichever KEK sealed it.
    /// Errors say which KEK a row needs and which this process has, never
    /// anything of the key.
    pub(crate) fn open(&self, kid: &str, stored: &str) -> Result<SecretString, Error> {
        if stored.starts_with(PLAINTEXT_PREFIX) {
            return Ok(SecretString::from(stored.to_owned()));
        }
        self.open_bound(&format!("signing key {kid}"), kid, stored)
    }

    /// Opens what [`Keks::seal_bound`] sealed for `binding`; errors name the
    /// row as `what`.
    fn open_bound(&self, what: &str, binding: &str, stored: &str) -> Result<SecretString, Error> {
        let mut fields = stored.split(':');
        let (Some(VERSION), Some(kek_id), Some(nonce), Some(sealed), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Error::internal(format!(
                "{what} is stored in a form this authd does not know"
            )));
        };
        let kek = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|kek| kek.id == kek_id)
            .ok_or_else(|| self.missing(what, kek_id))?;
        let undecodable =
            || Error::internal(format!("{what} is damaged: its value does not decode"));
        let nonce: [u8; NONCE_BYTES] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|nonce| nonce.try_into().ok())
            .ok_or_else(undecodable)?;
        let sealed = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| undecodable())?;
        let aad = associated_data(kek_id, binding);
        let plaintext = Zeroizing::new(
            kek.cipher()?
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &sealed,
                        aad: aad.as_bytes(),
                    },
                )
                .map_err(|_| {
                    Error::internal(format!(
                        "{what} does not decrypt under key-encryption key {kek_id}: \
                         the row was altered or moved from another"
                    ))
                })?,
        );
        let plaintext = std::str::from_utf8(&plaintext).map_err(|_| undecodable())?;
        Ok(SecretString::from(plaintext.to_owned()))
    }

    /// Whether `stored` is sealed, rather than plaintext PEM.
    pub(crate) fn is_sealed(stored: &str) -> bool {
        !stored.starts_with(PLAINTEXT_PREFIX)
    }

    fn missing(&self, what: &str, kek_id: &str) -> Error {
        let held: Vec<&str> = [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .map(|kek| kek.id.as_str())
            .collect();
        let held = if held.is_empty() {
            "none is configured; set AUTHD_KEY_ENCRYPTION_KEY_FILE".to_owned()
        } else {
            format!(
                "the configured key-encryption key files hold {}; a wrong file?",
                held.join(" and ")
            )
        };
        Error::internal(format!(
            "{what} is encrypted under key-encryption key {kek_id}, but {held}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn kek(dir: &Path, name: &str) -> (PathBuf, Kek) {
        let mut bytes = [0u8; KEK_BYTES];
        getrandom::fill(&mut bytes).expect("random");
        let path = dir.join(name);
        std::fs::write(&path, format!("{}\n", STANDARD.encode(bytes))).expect("write");
        let kek = Kek::read(&path, "TEST").await.expect("kek");
        (path, kek)
    }

    #[tokio::test]
    async fn a_sealed_key_opens_only_with_its_kek_and_for_its_kid() {
        let dir = tempfile::tempdir().expect("dir");
        let (_, first) = kek(dir.path(), "first").await;
        let (_, second) = kek(dir.path(), "second").await;
        let first_id = first.id.clone();
        let sealing = Keks {
            current: Some(first),
            previous: None,
        };
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n";
        let sealed = sealing.seal("kid-a", pem).expect("seal");
        assert!(Keks::is_sealed(&sealed) && !sealed.contains("PRIVATE"));
        assert!(sealed.starts_with(&format!("authd-kek-v1:{first_id}:")));
        assert_ne!(
            sealed,
            sealing.seal("kid-a", pem).expect("seal"),
            "fresh nonce"
        );
        assert_eq!(
            sealing
                .open("kid-a", &sealed)
                .expect("open")
                .expose_secret(),
            pem
        );
        assert!(
            sealing.open("kid-b", &sealed).is_err(),
            "moved to another row"
        );
        assert_eq!(
            sealing
                .open("kid-a", pem)
                .expect("plaintext")
                .expose_secret(),
            pem
        );

        let rotated = Keks {
            current: Some(second),
            previous: sealing.current,
        };
        assert_eq!(
            rotated
                .open("kid-a", &sealed)
                .expect("previous")
                .expose_secret(),
            pem
        );
        let error = Keks::default().open("kid-a", &sealed).expect_err("no KEK");
        assert!(error.to_string().contains("AUTHD_KEY_ENCRYPTION_KEY_FILE"));
        let wrong = Keks {
            current: rotated.current,
            previous: None,
        };
        let error = wrong.open("kid-a", &sealed).expect_err("wrong KEK");
        assert!(error.to_string().contains(&first_id), "{error}");
    }

    #[tokio::test]
    async fn a_kek_file_must_hold_32_bytes_of_base64() {
        let dir = tempfile::tempdir().expect("dir");
        for (name, contents) in [
            ("short", STANDARD.encode([7u8; 16])),
            ("hex", "ab".repeat(32)),
            ("empty", String::new()),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, &contents).expect("write");
            let error = Kek::read(&path, "AUTHD_KEY_ENCRYPTION_KEY_FILE")
                .await
                .err()
                .expect(name);
            let message = format!("{error:#}");
            assert!(
                message.contains("AUTHD_KEY_ENCRYPTION_KEY_FILE"),
                "{message}"
            );
            assert!(
                contents.is_empty() || !message.contains(&contents),
                "{message}"
            );
        }
    }
}
