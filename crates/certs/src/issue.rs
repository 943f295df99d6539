//! Issuing: from the internal CA (at once) or through ACME (an account per directory, kept
//! wrapped by the root key; HTTP-01 answered by the edge, DNS-01 through a webhook).
//!
//! Every issued key is sealed under the certificate's own key before anything is stored.

use std::sync::Arc;

use model::certs::Challenge;
use store::certs::{CertMaterial, CertRecord};
use store::keyring::KeyPurpose;
use store::Actor;
use time::OffsetDateTime;

use crate::{material, Certs, CertsError, Result};

/// Where and how to order certificates through ACME.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory_url: String,
    /// Extra trusted roots (PEM) for the directory's TLS (a private or test CA).
    pub ca_pem: Option<String>,
    pub contact_email: Option<String>,
    /// DNS-01 webhook (`POST {url}/set-txt`, `POST {url}/clear-txt`).
    pub dns_webhook: Option<String>,
}

const ACCOUNT_LABEL: &str = "acme-account";

/// The ACME side: configuration, pending HTTP-01 tokens and the account, once loaded.
pub(crate) struct AcmeIssuer {
    config: Option<AcmeConfig>,
    tokens: acme::Http01Tokens,
    client: tokio::sync::Mutex<Option<Arc<acme::AcmeClient>>>,
}

impl AcmeIssuer {
    pub fn new(config: Option<AcmeConfig>) -> AcmeIssuer {
        AcmeIssuer {
            config,
            tokens: acme::Http01Tokens::new(),
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn configured(&self) -> bool {
        self.config.is_some()
    }

    pub fn tokens(&self) -> acme::Http01Tokens {
        self.tokens.clone()
    }
}

impl Certs {
    /// Signs a certificate for the record's names with the internal CA.
    pub(crate) async fn issue_internal(
        &self,
        actor: &Actor,
        rec: &CertRecord,
    ) -> Result<(CertMaterial, OffsetDateTime)> {
        let (chain_pem, key_pem) = self.ca.issue_server_pem(&rec.domains, self.now())?;
        self.seal(actor, rec, &chain_pem, &key_pem).await
    }

    /// Orders a certificate for the record's names through ACME.
    pub(crate) async fn issue_acme(
        &self,
        actor: &Actor,
        rec: &CertRecord,
    ) -> Result<(CertMaterial, OffsetDateTime)> {
        let cfg = self.issuer.config.as_ref().ok_or_else(|| {
            CertsError::Unavailable("ACME is not configured (--acme-directory)".into())
        })?;
        let solver = match rec.challenge.unwrap_or_default() {
            Challenge::Http01 => acme::ChallengeSolver::Http01(self.issuer.tokens.clone()),
            Challenge::Dns01 => {
                let url = cfg.dns_webhook.as_deref().ok_or_else(|| {
                    CertsError::Unavailable(
                        "dns-01 needs a DNS provider: start gantry with --acme-dns-webhook URL"
                            .into(),
                    )
                })?;
                acme::ChallengeSolver::Dns01(Arc::new(acme::WebhookDns::with_roots(
                    url,
                    cfg.ca_pem.as_deref(),
                )?))
            }
        };
        let client = self.acme_client(actor, cfg).await?;
        let issued = client.issue(&rec.domains, &solver).await?;
        self.seal(actor, rec, &issued.chain_pem, &issued.key_pem)
            .await
    }

    /// The ACME client with its account: restored from the store, or created (and stored,
    /// wrapped by the root key) on first use.
    async fn acme_client(&self, actor: &Actor, cfg: &AcmeConfig) -> Result<Arc<acme::AcmeClient>> {
        let mut slot = self.issuer.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut client = acme::AcmeClient::new(&cfg.directory_url, cfg.ca_pem.as_deref())?;
        match self.store.acme_account(&cfg.directory_url).await? {
            Some(wrapped) => {
                let json = self.keyring.open_installation(ACCOUNT_LABEL, &wrapped)?;
                let json = std::str::from_utf8(&json)
                    .map_err(|_| CertsError::Invalid("stored ACME account is corrupt".into()))?;
                let creds = acme::AccountCredentials::from_json(json)?;
                client.restore(&creds).await?;
            }
            None => {
                let creds = client
                    .create_account(cfg.contact_email.as_deref(), true)
                    .await?;
                let json = zeroize::Zeroizing::new(creds.to_json()?);
                let wrapped = self
                    .keyring
                    .seal_installation(ACCOUNT_LABEL, json.as_bytes())?;
                self.store
                    .save_acme_account(actor, &cfg.directory_url, &wrapped)
                    .await?;
            }
        }
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Checks issued PEM, seals its key and says when to renew it.
    async fn seal(
        &self,
        actor: &Actor,
        rec: &CertRecord,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<(CertMaterial, OffsetDateTime)> {
        let parsed = material::parse(chain_pem, key_pem, self.now())?;
        let key_ct = self
            .keyring
            .seal_resource(
                actor,
                KeyPurpose::Certificate,
                &rec.scope,
                &rec.name,
                parsed.key_pem.as_bytes(),
            )
            .await?;
        let renew_at = self.renew_at(parsed.not_after);
        Ok((parsed.material(key_ct), renew_at))
    }
}
