//! The rotation reconciler: on every tick it compares the keys' schedules with the clock and
//! applies the difference: rotates keys whose rotation is due (and rewraps what they
//! protect), destroys KMS keys whose deletion date has come, and destroys secrets whose
//! recovery window has ended. Time comes from the injected clock, so tests move it.
//!
//! A tick does nothing while sealed. Failures are logged and retried on the next tick.

use std::sync::Arc;
use std::time::Duration;

use model::kms::KeyState;
use store::keyring::{KeyChange, KeyPurpose};
use store::Actor;

use crate::{Keyring, Result};

/// What one tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub rotated: Vec<String>,
    pub destroyed_keys: Vec<String>,
    pub purged_secrets: Vec<String>,
}

pub struct Rotator {
    keyring: Arc<Keyring>,
}

impl Rotator {
    pub fn new(keyring: Arc<Keyring>) -> Rotator {
        Rotator { keyring }
    }

    /// Runs `tick` every `every` until the task is dropped.
    pub fn spawn(self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            loop {
                interval.tick().await;
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "key rotation tick failed; retrying next tick");
                }
            }
        })
    }

    pub async fn tick(&self) -> Result<TickReport> {
        let kr = &self.keyring;
        let mut report = TickReport::default();
        if kr.is_sealed() {
            return Ok(report);
        }
        let actor = Actor::system();
        let now = kr.now();
        for key in kr.store.keys_due_rotation(now).await? {
            let v = kr.rotate(&actor, &key, "key.auto-rotate").await?;
            tracing::info!(key = %key.id, version = v, "rotated key");
            match key.purpose {
                KeyPurpose::Environment => {
                    let fresh = kr.store.key(&key.id).await?.unwrap_or(key.clone());
                    kr.rewrap_children(&actor, &fresh).await?;
                }
                KeyPurpose::Secret => {
                    let (scope, name) = (&key.scope, &key.name);
                    kr.rewrap_secret(&actor, scope, name).await?;
                }
                // New versions encrypt what comes next (a renewed certificate's key); older
                // versions keep decrypting.
                KeyPurpose::Kms | KeyPurpose::Certificate | KeyPurpose::Artifact => {}
            }
            report.rotated.push(key.id);
        }
        for key in kr.store.keys_due_deletion(now).await? {
            let change = KeyChange {
                state: Some(KeyState::Destroyed),
                ..Default::default()
            };
            kr.store
                .update_key(&actor, &key.id, &change, "key.destroy", String::new())
                .await?;
            kr.forget(&key.id);
            report.destroyed_keys.push(key.id);
        }
        for s in kr.store.secrets_due_purge(now).await? {
            let (scope, name) = s.name.rsplit_once('/').unwrap_or(("", ""));
            let scope =
                model::Scope::parse(scope).map_err(|e| crate::SecretsError::Invalid(e.message))?;
            kr.destroy_secret(&actor, &scope, name, false).await?;
            report.purged_secrets.push(s.name);
        }
        Ok(report)
    }
}
