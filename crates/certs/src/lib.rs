//! The edge's TLS certificates as desired state: added by users (`cert add`), issued by the
//! internal CA or through ACME (`cert issue`), renewed before they expire, and handed to the
//! edge decrypted, as parsed chains and keys.
//!
//! A private key is encrypted under the certificate's own key in its environment's key
//! hierarchy (`secrets::Keyring::seal_resource`) before it reaches the store, and is only
//! decrypted into memory for the edge. This crate must never write a key in plaintext,
//! log it, or put it in an error or an audit event.
//!
//! The renewer is a reconciler: on every tick it compares each certificate's `renew_at`
//! with the clock and issues what is due (pending ACME orders, renewals 30 days before
//! expiry, retries of failed attempts after a back-off). A failure leaves the current
//! certificate served and says why in its status.

mod issue;
mod material;

use std::sync::Arc;
use std::time::Duration;

use model::certs::{AddCert, CertInfo, CertSource, CertStatus, IssueCert, Issuer};
use model::clock::Clock;
use model::{Code, Scope};
use store::certs::{CertRecord, CertUpdate};
use store::keyring::KeyPurpose;
use store::{Actor, Store, StoreError};

pub use issue::AcmeConfig;
pub use material::ServedCert;

/// Errors of certificate management. Messages are safe to show (never key material).
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] secrets::SecretsError),
    #[error("the internal CA could not issue the certificate: {0}")]
    Ca(#[from] tls::TlsError),
    #[error("ACME: {0}")]
    Acme(#[from] acme::AcmeError),
    #[error("{0}")]
    Unavailable(String),
}

impl CertsError {
    pub fn code(&self) -> Code {
        match self {
            CertsError::Invalid(_) => Code::InvalidArgument,
            CertsError::Store(e) => e.code(),
            CertsError::Keys(e) => e.code(),
            CertsError::Ca(_) => Code::Internal,
            CertsError::Acme(_) => Code::BadGateway,
            CertsError::Unavailable(_) => Code::Unavailable,
        }
    }
}

pub type Result<T> = std::result::Result<T, CertsError>;

/// How certificates are issued and renewed.
#[derive(Debug, Clone)]
pub struct CertsConfig {
    /// ACME issuance; `None`: `cert issue --issuer acme` is refused.
    pub acme: Option<AcmeConfig>,
    /// Renew this long before expiry.
    pub renew_before: Duration,
    /// Wait this long after a failed attempt before the next one.
    pub retry_after: Duration,
}

impl Default for CertsConfig {
    fn default() -> Self {
        CertsConfig {
            acme: None,
            renew_before: Duration::from_secs(model::certs::RENEW_BEFORE_DAYS as u64 * 86_400),
            retry_after: Duration::from_secs(3600),
        }
    }
}

/// Certificate management of one installation.
pub struct Certs {
    store: Arc<Store>,
    keyring: Arc<secrets::Keyring>,
    ca: Arc<tls::InternalCa>,
    clock: Arc<dyn Clock>,
    config: CertsConfig,
    issuer: issue::AcmeIssuer,
}

/// What one renewer tick did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub issued: Vec<String>,
    pub failed: Vec<String>,
}

impl Certs {
    pub fn new(
        store: Arc<Store>,
        keyring: Arc<secrets::Keyring>,
        ca: Arc<tls::InternalCa>,
        clock: Arc<dyn Clock>,
        config: CertsConfig,
    ) -> Arc<Certs> {
        let issuer = issue::AcmeIssuer::new(config.acme.clone());
        Arc::new(Certs {
            store,
            keyring,
            ca,
            clock,
            config,
            issuer,
        })
    }

    /// The HTTP-01 tokens pending; the edge's HTTP listener answers challenges from them.
    pub fn http01_tokens(&self) -> acme::Http01Tokens {
        self.issuer.tokens()
    }

    /// Whether keys can be decrypted now (the server is not sealed).
    pub fn can_decrypt(&self) -> bool {
        !self.keyring.is_sealed()
    }

    /// The internal CA (for clients that pin it).
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    fn now(&self) -> time::OffsetDateTime {
        // Whole milliseconds, as the store keeps them.
        let now = self.clock.now();
        now.replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(now)
    }

    /// Adds a user's certificate and key (PEM). The key must match the leaf, the chain
    /// must be valid now, and its names must be free for this tenant.
    pub async fn add(&self, actor: &Actor, scope: &Scope, req: &AddCert) -> Result<CertInfo> {
        let parsed = material::parse(&req.cert_pem, &req.key_pem, self.now())?;
        let key_ct = self
            .keyring
            .seal_resource(
                actor,
                KeyPurpose::Certificate,
                scope,
                req.name.as_str(),
                parsed.key_pem.as_bytes(),
            )
            .await?;
        let now = self.now();
        let rec = CertRecord {
            scope: scope.clone(),
            name: req.name.as_str().to_string(),
            domains: parsed.domains.clone(),
            source: CertSource::Uploaded,
            status: CertStatus::Active,
            status_message: None,
            challenge: None,
            material: Some(parsed.material(key_ct)),
            renew_at: None,
            created_at: now,
            created_by: actor.principal.clone(),
            updated_at: now,
        };
        self.store.create_cert(actor, &rec).await?;
        Ok(info(&rec))
    }

    /// Asks for a certificate: the internal CA issues it at once; ACME orders are placed
    /// by the renewer (the answer is `pending`, `cert show` follows it).
    pub async fn issue(&self, actor: &Actor, scope: &Scope, req: &IssueCert) -> Result<CertInfo> {
        req.validate().map_err(|e| CertsError::Invalid(e.message))?;
        if req.issuer == Issuer::Acme && !self.issuer.configured() {
            return Err(CertsError::Invalid(
                "ACME is not configured: start gantry with --acme-directory URL".into(),
            ));
        }
        let mut domains = req.domains.clone();
        domains.sort();
        domains.dedup();
        let now = self.now();
        let mut rec = CertRecord {
            scope: scope.clone(),
            name: req.name.as_str().to_string(),
            domains,
            source: match req.issuer {
                Issuer::Internal => CertSource::Internal,
                Issuer::Acme => CertSource::Acme,
            },
            status: CertStatus::Pending,
            status_message: None,
            challenge: (req.issuer == Issuer::Acme).then_some(req.challenge),
            material: None,
            renew_at: Some(now),
            created_at: now,
            created_by: actor.principal.clone(),
            updated_at: now,
        };
        if req.issuer == Issuer::Internal {
            // Issued in the request: the record is created complete.
            let (m, renew_at) = self.issue_internal(actor, &rec).await?;
            rec.material = Some(m);
            rec.status = CertStatus::Active;
            rec.renew_at = Some(renew_at);
        }
        self.store.create_cert(actor, &rec).await?;
        Ok(info(&rec))
    }

    pub async fn list(&self, scope: &Scope) -> Result<Vec<CertInfo>> {
        Ok(self.store.certs(scope).await?.iter().map(info).collect())
    }

    pub async fn show(&self, scope: &Scope, name: &str) -> Result<CertInfo> {
        Ok(info(&self.store.cert(scope, name).await?))
    }

    pub async fn delete(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<()> {
        Ok(self.store.delete_cert(actor, scope, name).await?)
    }

    /// Renews now (internal and ACME certificates), whatever the schedule says.
    pub async fn renew(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<CertInfo> {
        let rec = self.store.cert(scope, name).await?;
        if rec.source == CertSource::Uploaded {
            return Err(CertsError::Invalid(format!(
                "certificate {scope}/{name} was added by hand; add a new one instead"
            )));
        }
        self.attempt(actor, &rec).await;
        self.show(scope, name).await
    }

    /// Every certificate with material, decrypted and parsed, for the edge. A certificate
    /// that cannot be decrypted or parsed is skipped with a warning (the others still serve).
    pub async fn served(&self) -> Result<Vec<ServedCert>> {
        Ok(self
            .served_pem()
            .await?
            .iter()
            .filter_map(|c| match ServedCert::from_pem(c) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(certificate = %c.name, error = %e, "cannot load a certificate; not serving it");
                    None
                }
            })
            .collect())
    }

    /// Like `served`, as PEM (chain and decrypted key), for remote edges.
    pub async fn served_pem(&self) -> Result<Vec<model::certs::EdgeCert>> {
        if self.keyring.is_sealed() {
            return Err(CertsError::Keys(secrets::SecretsError::Sealed));
        }
        let mut out = Vec::new();
        for rec in self.store.all_certs().await? {
            let Some(m) = &rec.material else { continue };
            let id = format!("{}/{}", rec.scope, rec.name);
            let key = self
                .keyring
                .open_resource(
                    KeyPurpose::Certificate,
                    &rec.scope,
                    &rec.name,
                    &m.key_ciphertext,
                )
                .await
                .map_err(CertsError::from)
                .and_then(|k| {
                    String::from_utf8(k.to_vec())
                        .map_err(|_| CertsError::Invalid("stored key is corrupt".into()))
                });
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(certificate = %id, error = %e, "cannot decrypt a certificate's key; not serving it");
                    continue;
                }
            };
            out.push(model::certs::EdgeCert {
                name: id,
                domains: rec.domains.clone(),
                chain_pem: m.chain_pem.clone(),
                key_pem: key,
                not_after: m.not_after.unix_timestamp(),
            });
        }
        Ok(out)
    }

    /// The certificate served to clients that send no SNI or a name no certificate covers:
    /// issued in memory by the internal CA for `names`.
    pub fn default_cert(&self, names: &[String]) -> Result<ServedCert> {
        let ck = self.ca.issue_server(names)?;
        Ok(ServedCert {
            name: "default".into(),
            domains: names.to_vec(),
            chain: ck.chain,
            key: ck.key,
            not_after: (self.clock.now() + time::Duration::days(90)).unix_timestamp(),
        })
    }

    /// Runs `tick` every `every` until the task is dropped.
    pub fn spawn_renewer(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if let Err(e) = self.tick().await {
                    tracing::warn!(error = %e, "certificate renewal tick failed; retrying next tick");
                }
            }
        })
    }

    /// Issues every certificate whose `renew_at` has come. Does nothing while sealed.
    pub async fn tick(&self) -> Result<TickReport> {
        let mut report = TickReport::default();
        if self.keyring.is_sealed() {
            return Ok(report);
        }
        let now = self.now();
        for rec in self.store.all_certs().await? {
            let due = rec.source != CertSource::Uploaded && rec.renew_at.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            let id = format!("{}/{}", rec.scope, rec.name);
            if self.attempt(&Actor::system(), &rec).await {
                report.issued.push(id);
            } else {
                report.failed.push(id);
            }
        }
        Ok(report)
    }

    /// Issues `rec` (internal CA or ACME) and stores the result; on failure records why
    /// and when to try again. True when a certificate was issued.
    async fn attempt(&self, actor: &Actor, rec: &CertRecord) -> bool {
        let id = format!("{}/{}", rec.scope, rec.name);
        let renewal = rec.material.is_some();
        let result = match rec.source {
            CertSource::Internal => self.issue_internal(actor, rec).await,
            CertSource::Acme => self.issue_acme(actor, rec).await,
            CertSource::Uploaded => return false,
        };
        match result {
            Ok((m, renew_at)) => {
                let change = CertUpdate {
                    material: Some(&m),
                    status: Some(CertStatus::Active),
                    status_message: Some(None),
                    renew_at: Some(Some(renew_at)),
                };
                let action = if renewal {
                    "certificate.renew"
                } else {
                    "certificate.issue"
                };
                let detail = format!("not_after={}", model::types::format_time(m.not_after));
                match self
                    .store
                    .update_cert(actor, &rec.scope, &rec.name, &change, action, detail)
                    .await
                {
                    Ok(()) => {
                        tracing::info!(certificate = %id, renewal, "certificate issued");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(certificate = %id, error = %e, "cannot store an issued certificate");
                        false
                    }
                }
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(certificate = %id, error = %message, "certificate issuance failed");
                let retry = self.now()
                    + time::Duration::try_from(self.config.retry_after)
                        .unwrap_or(time::Duration::HOUR);
                // An active certificate whose renewal failed keeps being served.
                let change = CertUpdate {
                    material: None,
                    status: Some(if renewal {
                        rec.status
                    } else {
                        CertStatus::Failed
                    }),
                    status_message: Some(Some(&message)),
                    renew_at: Some(Some(retry)),
                };
                let action = if renewal {
                    "certificate.renew-failed"
                } else {
                    "certificate.issue-failed"
                };
                if let Err(e) = self
                    .store
                    .update_cert(
                        actor,
                        &rec.scope,
                        &rec.name,
                        &change,
                        action,
                        message.clone(),
                    )
                    .await
                {
                    tracing::warn!(certificate = %id, error = %e, "cannot record a failed issuance");
                }
                false
            }
        }
    }

    /// When a certificate valid until `not_after` is renewed.
    fn renew_at(&self, not_after: time::OffsetDateTime) -> time::OffsetDateTime {
        not_after
            - time::Duration::try_from(self.config.renew_before)
                .unwrap_or(time::Duration::days(model::certs::RENEW_BEFORE_DAYS))
    }
}

/// The API's view of a record.
fn info(rec: &CertRecord) -> CertInfo {
    let m = rec.material.as_ref();
    let mut status_message = rec.status_message.clone();
    if rec.status == CertStatus::Active && status_message.is_some() {
        // A failed renewal of a served certificate: say so, keep it active.
        status_message = status_message.map(|m| format!("last renewal failed: {m}"));
    }
    CertInfo {
        name: format!("{}/{}", rec.scope, rec.name),
        domains: rec.domains.clone(),
        source: rec.source,
        status: rec.status,
        status_message,
        not_before: m.map(|m| m.not_before),
        not_after: m.map(|m| m.not_after),
        fingerprint: m.map(|m| m.fingerprint.clone()),
        renew_at: if rec.source == CertSource::Uploaded {
            None
        } else {
            rec.renew_at
        },
        challenge: rec.challenge,
        warnings: model::certs::wildcard_warnings(&rec.domains),
        created_at: rec.created_at,
        created_by: rec.created_by.clone(),
        updated_at: rec.updated_at,
    }
}
