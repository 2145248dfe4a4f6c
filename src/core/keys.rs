//! The life of signing keys: loading, first-start creation, rotation, and
//! keeping every replica's keyring in step with the database.
//!
//! A rotation stores the next generation with an activation time in the
//! future (two refresh intervals), so every replica and every JWKS cache that
//! honours our `Cache-Control` knows the new key before any token is signed
//! with it. After the next key activates, the old one keeps verifying for one
//! token lifetime (plus leeway), then leaves the keyring and the JWKS.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use authd_verify::LEEWAY;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use crate::{
    core::kek::{KekSettings, Keks},
    core::tokens::{KeyPair, Keyring, Tokens},
    domain::{
        Error,
        audit::{Actor, AuditEvent, EventType, Origin},
    },
    store::{Database, StoredKey},
};

#[derive(Debug, Clone)]
pub(crate) struct KeySettings {
    /// A PEM key file; when set it is the only key and the database's keys
    /// are not used.
    pub(crate) file: Option<PathBuf>,
    /// How often each replica reloads keys from the database.
    pub(crate) refresh: Duration,
    /// Rotate automatically once the newest key is this old.
    pub(crate) rotation_period: Option<Duration>,
    /// The access token lifetime: how long a retired key keeps verifying.
    pub(crate) token_ttl: Duration,
    /// The key-encryption keys that seal keys stored in the database.
    pub(crate) encryption: KekSettings,
}

impl KeySettings {
    fn publish_delay(&self) -> Duration {
        self.refresh * 2
    }

    fn retention(&self) -> Duration {
        self.token_ttl + LEEWAY
    }
}

/// The keyring to start with. Without a key file and with an empty table,
/// this creates generation 1; replicas starting together each offer one and
/// all adopt the one the database kept.
pub(crate) async fn load(
    db: &Database,
    settings: &KeySettings,
    keks: &Keks,
) -> anyhow::Result<Keyring> {
    if let Some(path) = &settings.file {
        let context = || format!("AUTHD_SIGNING_KEY_FILE {}", path.display());
        let pem = tokio::fs::read_to_string(path)
            .await
            .with_context(context)?;
        return Ok(Keyring::new(
            KeyPair::from_pkcs8_pem(&pem).with_context(context)?,
            &[],
        )?);
    }
    let mut stored = db.signing_keys().await?;
    if stored.is_empty() {
        let key = KeyPair::generate()?;
        if db
            .insert_signing_key(
                key.kid(),
                &keks.seal(key.kid(), key.pkcs8_pem())?,
                1,
                Utc::now(),
                stored_event(&key, 1),
            )
            .await?
        {
            tracing::info!(kid = key.kid(), "first signing key created");
        }
        stored = db.signing_keys().await?;
    }
    let plaintext = stored
        .iter()
        .filter(|key| !Keks::is_sealed(&key.private_key))
        .count();
    if keks.current_id().is_some() && plaintext > 0 {
        tracing::warn!(
            plaintext,
            "signing keys are stored unencrypted; run `authd keys rewrap` to encrypt them"
        );
    }
    Ok(keyring_from(
        stored,
        Utc::now(),
        settings.retention(),
        keks,
    )?)
}

fn keyring_from(
    stored: Vec<StoredKey>,
    now: DateTime<Utc>,
    retention: Duration,
    keks: &Keks,
) -> Result<Keyring, Error> {
    let retention = chrono::Duration::from_std(retention).map_err(Error::internal)?;
    let Some(signing) = stored
        .iter()
        .rposition(|key| key.activates_at() <= now)
        .or_else(|| (!stored.is_empty()).then_some(0))
    else {
        return Err(Error::internal("no signing key is stored"));
    };
    let mut also_verifying = Vec::new();
    let mut signing_key = None;
    for (index, key) in stored.iter().enumerate() {
        let retired_at = stored.get(index + 1).map(StoredKey::activates_at);
        let keep = index >= signing || retired_at.is_some_and(|at| at > now - retention);
        if !keep {
            continue;
        }
        let pair = KeyPair::from_pkcs8_pem(keks.open(&key.kid, &key.private_key)?.expose_secret())?;
        if index == signing {
            signing_key = Some(pair);
        } else {
            also_verifying.push(pair);
        }
    }
    let signing = signing_key.ok_or_else(|| Error::internal("signing key vanished"))?;
    Keyring::new(signing, &also_verifying)
}

/// A rotation that was stored.
pub struct Rotated {
    pub kid: String,
    pub generation: i64,
    pub activates_at: DateTime<Utc>,
}

/// Stores the next generation of key, to sign from after the publish delay.
/// Two rotations racing for one generation store one key; the loser is told.
pub(crate) async fn rotate(
    db: &Database,
    settings: &KeySettings,
    keks: &Keks,
) -> anyhow::Result<Rotated> {
    anyhow::ensure!(
        settings.file.is_none(),
        "keys come from AUTHD_SIGNING_KEY_FILE; replace the file to change them"
    );
    let generation = db
        .signing_keys()
        .await?
        .last()
        .map_or(1, |newest| newest.generation + 1);
    let key = KeyPair::generate()?;
    let activates_at = Utc::now()
        + chrono::Duration::from_std(settings.publish_delay()).map_err(Error::internal)?;
    let stored = db
        .insert_signing_key(
            key.kid(),
            &keks.seal(key.kid(), key.pkcs8_pem())?,
            generation,
            activates_at,
            stored_event(&key, generation),
        )
        .await?;
    anyhow::ensure!(
        stored,
        "another rotation stored generation {generation} first"
    );
    Ok(Rotated {
        kid: key.kid().to_owned(),
        generation,
        activates_at,
    })
}

/// The audit event of a new signing key: authd's own doing, whether at
/// startup, on schedule or at `authd keys rotate`.
fn stored_event(key: &KeyPair, generation: i64) -> AuditEvent {
    AuditEvent::new(
        EventType::SigningKeyRotated,
        Actor::System,
        &Origin::default(),
    )
    .detail("kid", key.kid())
    .detail("generation", generation.to_string())
}

/// What `authd keys rewrap` did.
pub struct Rewrapped {
    pub count: usize,
    pub totp_secrets: usize,
    pub kek_id: String,
}

/// Seals every stored key under the current KEK, opening each with
/// whichever configured KEK sealed it (or none, for plaintext rows): this
/// encrypts existing plaintext keys and moves keys off a previous KEK. One
/// transaction, so a crash leaves all rows as they were or all rewrapped.
/// Then users' TOTP secrets, likewise in one transaction of their own: the
/// previous KEK can go once both are done.
pub(crate) async fn rewrap(db: &Database, keks: &Keks) -> anyhow::Result<Rewrapped> {
    let kek_id = keks
        .current_id()
        .context("keys rewrap needs AUTHD_KEY_ENCRYPTION_KEY_FILE: the key to encrypt with")?
        .to_owned();
    let count = db
        .rewrap_signing_keys(|key| {
            let pem = keks.open(&key.kid, &key.private_key)?;
            keks.seal(&key.kid, pem.expose_secret())
        })
        .await?;
    let totp_secrets = db
        .rewrap_totp_secrets(|user_id, stored| {
            let secret = keks.open_totp(user_id, stored)?;
            keks.seal_totp(user_id, secret.expose_secret())
        })
        .await?;
    Ok(Rewrapped {
        count,
        totp_secrets,
        kek_id,
    })
}

/// Reloads the keyring every refresh interval, rotating first when the
/// newest key has reached the rotation period. Runs until aborted.
pub(crate) async fn keep_fresh(
    db: Database,
    tokens: Arc<Tokens>,
    settings: KeySettings,
    keks: Arc<Keks>,
) {
    if settings.file.is_some() {
        return;
    }
    loop {
        tokio::time::sleep(settings.refresh).await;
        if let Err(error) = refresh_once(&db, &tokens, &settings, &keks).await {
            tracing::warn!(error = %error, "cannot refresh signing keys; keeping the current ones");
        }
    }
}

async fn refresh_once(
    db: &Database,
    tokens: &Tokens,
    settings: &KeySettings,
    keks: &Keks,
) -> anyhow::Result<()> {
    let mut stored = db.signing_keys().await?;
    let due = settings.rotation_period.is_some_and(|period| {
        stored.last().is_some_and(|newest| {
            chrono::Duration::from_std(period)
                .is_ok_and(|period| newest.created_at() + period <= Utc::now())
        })
    });
    if due {
        // Every replica may find the rotation due at once; the unique
        // generation lets one of them store it and the rest just reload.
        match rotate(db, settings, keks).await {
            Ok(rotated) => tracing::info!(kid = %rotated.kid, "signing key rotated on schedule"),
            Err(error) => tracing::debug!(error = %error, "scheduled rotation not stored"),
        }
        stored = db.signing_keys().await?;
    }
    let keyring = keyring_from(stored, Utc::now(), settings.retention(), keks)?;
    tokens.install(keyring);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(generation: i64, activates_at: DateTime<Utc>) -> (StoredKey, String) {
        let pair = KeyPair::generate().expect("key");
        let key = StoredKey {
            kid: pair.kid().to_owned(),
            private_key: pair.pkcs8_pem().to_owned(),
            generation,
            created_at: activates_at.naive_utc(),
            activates_at: activates_at.naive_utc(),
        };
        (key, pair.kid().to_owned())
    }

    /// The signing kid and the published kids, in JWKS order.
    fn published(keys: Vec<StoredKey>, now: DateTime<Utc>) -> (String, Vec<String>) {
        let keyring =
            keyring_from(keys, now, Duration::from_secs(900), &Keks::default()).expect("keyring");
        let signing = keyring.signing_kid().to_owned();
        let tokens = Tokens::new(keyring, "iss".into(), "aud".into(), Duration::from_secs(60));
        let kids = tokens
            .jwks()
            .keys
            .into_iter()
            .filter_map(|key| key.common.key_id)
            .collect();
        (signing, kids)
    }

    #[test]
    fn a_key_signs_from_activation_and_verifies_one_lifetime_past_retirement() {
        let now = Utc::now();
        let minutes = |m: i64| chrono::Duration::minutes(m);
        let (old, old_kid) = stored(1, now - minutes(60));
        let (new, new_kid) = stored(2, now + minutes(1));
        // Pre-published: the new key verifies but does not sign yet.
        let (signing, kids) = published(vec![old, new], now);
        assert_eq!(signing, old_kid);
        assert_eq!(kids, [old_kid.clone(), new_kid.clone()]);

        let (old, old_kid) = stored(1, now - minutes(60));
        let (new, new_kid) = stored(2, now - minutes(10));
        let (signing, kids) = published(vec![old, new], now);
        assert_eq!(signing, new_kid);
        assert_eq!(
            kids,
            [new_kid.clone(), old_kid],
            "retired 10 min ago, lifetime 15"
        );

        let (old, _) = stored(1, now - minutes(60));
        let (new, new_kid) = stored(2, now - minutes(20));
        let (signing, kids) = published(vec![old, new], now);
        assert_eq!((signing, kids), (new_kid.clone(), vec![new_kid]));
    }
}
