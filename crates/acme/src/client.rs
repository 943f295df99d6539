//! [`AcmeClient`]: account management and certificate issuance against one
//! ACME directory, on top of `instant-acme`.
//!
//! Issuance is: validate names → new order → publish one challenge response
//! per pending authorization → tell the CA they are ready → poll (bounded,
//! with backoff) until the order is ready → generate a fresh ECDSA P-256 key
//! and CSR with rcgen → finalize → poll (same bound) until the certificate is
//! issued → download and check it → remove every challenge response.
//!
//! Must never: loop or wait without a bound, log or put into an error any
//! private key, account key or key authorization, return a certificate whose
//! names or public key do not match what was requested, or leave challenge
//! responses published after `issue` returns.

use std::fmt;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, Identifier, Key, NewAccount, NewOrder, Order, OrderStatus,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::PrivateKeyDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::cert;
use crate::domain;
use crate::error::{self, chain, one_line, AcmeError, Result};
use crate::solver::{ChallengeSolver, Published};
use crate::transport::{self, ReqwestAcmeHttp};

/// Bounds on every wait the client performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One HTTP request to the CA, or one call to the DNS provider. Default 30 s.
    pub request: Duration,
    /// Total time spent polling an order: waiting for validation plus waiting
    /// for the certificate. Default 60 s.
    pub poll: Duration,
    /// Pause after publishing DNS-01 records before asking the CA to validate,
    /// for providers whose `set_txt` returns before the record is visible. Default 0.
    pub dns_propagation: Duration,
    /// Hard cap on one [`AcmeClient::issue`] call, excluding cleanup. Default 180 s.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(30),
            poll: Duration::from_secs(60),
            dns_propagation: Duration::ZERO,
            total: Duration::from_secs(180),
        }
    }
}

/// First pause between two polls of an order; grows by half each time up to [`MAX_POLL_DELAY`].
const FIRST_POLL_DELAY: Duration = Duration::from_millis(250);
const MAX_POLL_DELAY: Duration = Duration::from_secs(5);

/// An ACME account's credentials: account URL, account private key and directory URL.
///
/// Serialize it (e.g. with [`AccountCredentials::to_json`]), store it
/// **encrypted** — it contains the account private key — and give it back to
/// [`AcmeClient::restore`] to use the same account later. `Debug` never shows the key.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct AccountCredentials(instant_acme::AccountCredentials);

impl AccountCredentials {
    /// JSON encoding for storage. The result contains the account private key.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(&self.0)
            .map_err(|e| AcmeError::Config(format!("cannot encode account credentials: {e}")))
    }

    /// Decodes credentials produced by [`AccountCredentials::to_json`].
    pub fn from_json(json: &str) -> Result<Self> {
        // serde_json errors only carry a position and a category, never input text.
        serde_json::from_str(json)
            .map_err(|e| AcmeError::Config(format!("cannot decode account credentials: {e}")))
    }

    /// The directory URL the account belongs to, if recorded.
    pub fn directory_url(&self) -> Option<String> {
        let value = serde_json::to_value(&self.0).ok()?;
        value.get("directory")?.as_str().map(str::to_owned)
    }
}

impl fmt::Debug for AccountCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountCredentials")
            .field("directory", &self.directory_url())
            .field("key", &"<redacted>")
            .finish()
    }
}

/// A freshly issued certificate.
#[derive(Clone)]
pub struct Issued {
    /// The certificate chain as PEM, leaf first, as served by the CA.
    pub chain_pem: String,
    /// The certificate's private key: ECDSA P-256, PKCS#8 PEM (`BEGIN PRIVATE KEY`).
    pub key_pem: String,
    /// End of validity of the leaf certificate.
    pub not_after: OffsetDateTime,
    /// The names the certificate was issued for (normalised, lower case).
    pub domains: Vec<String>,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("domains", &self.domains)
            .field("not_after", &self.not_after)
            .field("chain_pem_len", &self.chain_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A client for one ACME directory and (after `create_account`/`restore`) one account.
pub struct AcmeClient {
    directory_url: String,
    tls: rustls::ClientConfig,
    timeouts: Timeouts,
    account: Option<Account>,
}

impl fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmeClient")
            .field("directory_url", &self.directory_url)
            .field("account", &self.account.as_ref().map(Account::id))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl AcmeClient {
    /// A client for the ACME directory at `directory_url` (must be `https://`).
    ///
    /// The CA's TLS certificate is verified against Mozilla's root set plus
    /// the PEM certificates in `extra_roots_pem` (e.g. a test CA). No network
    /// traffic happens here; call [`create_account`](Self::create_account) or
    /// [`restore`](Self::restore) next.
    pub fn new(directory_url: &str, extra_roots_pem: Option<&str>) -> Result<Self> {
        let directory_url = directory_url.trim().to_owned();
        let uri: http::Uri = directory_url.parse().map_err(|_| {
            AcmeError::Config(format!("directory URL {directory_url:?} is not a URL"))
        })?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err(AcmeError::Config(format!(
                "directory URL {directory_url:?} must be https:// with a host"
            )));
        }
        Ok(Self {
            tls: transport::tls_config(extra_roots_pem)?,
            directory_url,
            timeouts: Timeouts::default(),
            account: None,
        })
    }

    /// Replaces the default [`Timeouts`]. Call before `create_account`/`restore`:
    /// the request timeout is fixed when the account is bound.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The configured directory URL.
    pub fn directory_url(&self) -> &str {
        &self.directory_url
    }

    /// The account URL, once an account is bound.
    pub fn account_id(&self) -> Option<&str> {
        self.account.as_ref().map(Account::id)
    }

    /// Registers a new account, binds it to this client and returns its credentials.
    ///
    /// `contact_email` becomes a `mailto:` contact. `terms_agreed` states that the
    /// operator agreed to the CA's terms of service; most CAs refuse accounts without it.
    pub async fn create_account(
        &mut self,
        contact_email: Option<&str>,
        terms_agreed: bool,
    ) -> Result<AccountCredentials> {
        let contact = contact_email.map(mailto).transpose()?;
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let http = self.http()?;
        self.probe_directory(&http).await?;

        let new_account = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: terms_agreed,
            only_return_existing: false,
        };
        let (account, credentials) =
            Account::builder_with_http(Box::new(ReqwestAcmeHttp::new(http)))
                .create(&new_account, self.directory_url.clone(), None)
                .await
                .map_err(account_error)?;
        tracing::info!(directory = %self.directory_url, account = account.id(), "ACME account created");
        self.account = Some(account);
        Ok(AccountCredentials(credentials))
    }

    /// Binds the existing account described by `credentials` to this client.
    ///
    /// The CA is asked to confirm that the account exists (RFC 8555 §7.3.1,
    /// `onlyReturnExisting`), so a deactivated or unknown account fails here
    /// rather than at the first issuance. Credentials recorded for a different
    /// directory are refused.
    pub async fn restore(&mut self, credentials: &AccountCredentials) -> Result<()> {
        if let Some(recorded) = credentials.directory_url() {
            if recorded != self.directory_url {
                return Err(AcmeError::Config(format!(
                    "account credentials belong to {recorded}, but this client uses {}",
                    self.directory_url
                )));
            }
        }
        let pkcs8 = credentials.0.private_key().clone_key();
        let key = Key::from_pkcs8_der(pkcs8.clone_key()).map_err(|_| {
            AcmeError::Config("stored account key is not a valid ECDSA P-256 PKCS#8 key".into())
        })?;
        let http = self.http()?;
        self.probe_directory(&http).await?;

        let (account, _) = Account::builder_with_http(Box::new(ReqwestAcmeHttp::new(http)))
            .from_key(
                (key, PrivateKeyDer::Pkcs8(pkcs8)),
                self.directory_url.clone(),
            )
            .await
            .map_err(account_error)?;
        tracing::info!(directory = %self.directory_url, account = account.id(), "ACME account restored");
        self.account = Some(account);
        Ok(())
    }

    /// Obtains a certificate for `domains` (one order, one certificate with all names as SANs).
    ///
    /// Wildcards (`*.example.com`) require [`ChallengeSolver::Dns01`]. Every wait
    /// is bounded by [`Timeouts`]; challenge responses are removed before this
    /// returns, whether it succeeds or fails (and, if the future is dropped, by a
    /// background task). Do not run concurrent DNS-01 issuances for overlapping
    /// names: `clear_txt` removes every value at a record name.
    pub async fn issue(&self, domains: &[String], solver: &ChallengeSolver) -> Result<Issued> {
        let names = domain::normalize(domains)?;
        if let ChallengeSolver::Http01(_) = solver {
            if let Some(wild) = names.iter().find(|n| domain::is_wildcard(n)) {
                return Err(AcmeError::WildcardNeedsDns01(wild.clone()));
            }
        }
        let account = self.account.as_ref().ok_or(AcmeError::NoAccount)?;

        tracing::info!(domains = ?names, challenge = solver.kind(), "ACME issuance started");
        let mut published = Published::new(solver, self.timeouts.request);
        let result = match tokio::time::timeout(
            self.timeouts.total,
            self.issue_inner(account, &names, solver, &mut published),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(AcmeError::Timeout {
                what: "certificate issuance",
                waited: self.timeouts.total,
            }),
        };
        published.cleanup().await;

        match &result {
            Ok(issued) => tracing::info!(
                domains = ?names,
                not_after = %issued.not_after,
                "ACME certificate issued"
            ),
            Err(e) => tracing::warn!(domains = ?names, error = %e, "ACME issuance failed"),
        }
        result
    }

    async fn issue_inner(
        &self,
        account: &Account,
        names: &[String],
        solver: &ChallengeSolver,
        published: &mut Published,
    ) -> Result<Issued> {
        let identifiers: Vec<Identifier> =
            names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| match e {
                instant_acme::Error::Api(p) => AcmeError::OrderInvalid(format!(
                    "the CA refused the order: {}",
                    error::problem(&p)
                )),
                other => error::protocol("new-order", &other),
            })?;
        // The polling budget starts once the challenge responses are published.
        let deadline = match order.state().status {
            OrderStatus::Pending => {
                self.solve_challenges(&mut order, solver, published).await?;
                let deadline = Instant::now() + self.timeouts.poll;
                self.wait_ready(&mut order, solver, deadline).await?;
                deadline
            }
            OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {
                Instant::now() + self.timeouts.poll
            }
            OrderStatus::Invalid => return Err(order_invalid(&mut order)),
        };

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AcmeError::Certificate(format!("key generation: {e}")))?;
        if order.state().status == OrderStatus::Ready {
            let mut params = CertificateParams::new(names.to_vec())
                .map_err(|e| AcmeError::Certificate(format!("CSR parameters: {e}")))?;
            params.distinguished_name = DistinguishedName::new();
            let csr = params
                .serialize_request(&key)
                .map_err(|e| AcmeError::Certificate(format!("CSR: {e}")))?;
            order.finalize_csr(csr.der()).await.map_err(|e| match e {
                instant_acme::Error::Api(p) => AcmeError::OrderInvalid(format!(
                    "the CA refused the CSR: {}",
                    error::problem(&p)
                )),
                other => error::protocol("finalize", &other),
            })?;
        } else {
            // An order that is already processing/valid was finalized with a key we do
            // not have; its certificate would be useless to us.
            return Err(AcmeError::OrderInvalid(format!(
                "new order is already {:?}; cannot finalize it with a fresh key",
                order.state().status
            )));
        }

        let chain_pem = self.wait_certificate(&mut order, deadline).await?;
        let not_after = check_issued(&chain_pem, names, &key)?;
        Ok(Issued {
            chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
            domains: names.to_vec(),
        })
    }

    /// Publishes a response for every pending authorization, then tells the CA
    /// to validate them.
    async fn solve_challenges(
        &self,
        order: &mut Order,
        solver: &ChallengeSolver,
        published: &mut Published,
    ) -> Result<()> {
        let kind = solver.challenge_type();
        let mut to_validate = 0usize;

        // Pass 1: publish every response before asking for any validation, so that
        // names sharing a TXT record (x and *.x) are both in place.
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| error::protocol("fetch authorization", &e))?;
            let ident = authz.identifier().to_string();
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    return Err(AcmeError::OrderInvalid(format!(
                        "authorization for {ident} is {other:?}"
                    )))
                }
            }
            let challenge =
                authz
                    .challenge(kind.clone())
                    .ok_or_else(|| AcmeError::ChallengeUnavailable {
                        domain: ident.clone(),
                        kind: solver.kind(),
                    })?;
            let key_authorization = challenge.key_authorization();
            match solver {
                ChallengeSolver::Http01(_) => {
                    published.http01(&ident, &challenge.token, key_authorization.as_str())?
                }
                ChallengeSolver::Dns01(_) => {
                    published
                        .dns01(
                            &domain::dns01_record(&ident),
                            &key_authorization.dns_value(),
                        )
                        .await?
                }
            }
            to_validate += 1;
        }

        if to_validate == 0 {
            return Ok(());
        }
        if matches!(solver, ChallengeSolver::Dns01(_)) && !self.timeouts.dns_propagation.is_zero() {
            tokio::time::sleep(self.timeouts.dns_propagation).await;
        }

        // Pass 2: the authorizations are cached in `order`, so this makes no
        // extra requests besides the challenge POSTs.
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| error::protocol("fetch authorization", &e))?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = authz.identifier().to_string();
            let Some(mut challenge) = authz.challenge(kind.clone()) else {
                continue;
            };
            challenge.set_ready().await.map_err(|e| match e {
                instant_acme::Error::Api(p) => AcmeError::ChallengeFailed {
                    domain: ident.clone(),
                    kind: solver.kind(),
                    problem: error::problem(&p),
                },
                other => error::protocol("challenge", &other),
            })?;
            tracing::debug!(domain = %ident, "challenge submitted for validation");
        }
        Ok(())
    }

    /// Polls until the order is `ready` (or beyond), with backoff, until `deadline`.
    async fn wait_ready(
        &self,
        order: &mut Order,
        solver: &ChallengeSolver,
        deadline: Instant,
    ) -> Result<()> {
        let mut delay = FIRST_POLL_DELAY;
        loop {
            pause(
                &mut delay,
                deadline,
                self.timeouts.poll,
                "the CA to validate the challenges",
            )
            .await?;
            let status = order
                .refresh()
                .await
                .map_err(|e| error::protocol("poll order", &e))?
                .status;
            match status {
                OrderStatus::Pending => {}
                OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => return Ok(()),
                OrderStatus::Invalid => return Err(explain_invalid(order, solver).await),
            }
        }
    }

    /// Polls until the order is `valid`, then downloads the chain.
    async fn wait_certificate(&self, order: &mut Order, deadline: Instant) -> Result<String> {
        let mut delay = FIRST_POLL_DELAY;
        loop {
            match order.state().status {
                OrderStatus::Valid => {
                    return match order.certificate().await {
                        Ok(Some(pem)) => Ok(pem),
                        Ok(None) => Err(AcmeError::Protocol {
                            step: "certificate download",
                            reason: "the CA sent no certificate for a valid order".into(),
                        }),
                        Err(e) => Err(error::protocol("certificate download", &e)),
                    };
                }
                OrderStatus::Ready | OrderStatus::Processing => {}
                OrderStatus::Invalid => return Err(order_invalid(order)),
                OrderStatus::Pending => {
                    return Err(AcmeError::OrderInvalid(
                        "order went back to pending after finalization".into(),
                    ))
                }
            }
            pause(
                &mut delay,
                deadline,
                self.timeouts.poll,
                "the CA to issue the certificate",
            )
            .await?;
            order
                .refresh()
                .await
                .map_err(|e| error::protocol("poll order", &e))?;
        }
    }

    fn http(&self) -> Result<reqwest::Client> {
        transport::http_client(self.tls.clone(), self.timeouts.request)
    }

    /// Fetches the directory ourselves first, so that "cannot reach the CA" is
    /// told apart from "the CA refused the account".
    async fn probe_directory(&self, http: &reqwest::Client) -> Result<()> {
        let unreachable = |reason: String| AcmeError::DirectoryUnreachable {
            url: self.directory_url.clone(),
            reason,
        };
        let rsp = http
            .get(&self.directory_url)
            .send()
            .await
            .map_err(|e| unreachable(chain(&e.without_url())))?;
        let status = rsp.status();
        if !status.is_success() {
            return Err(unreachable(format!("HTTP {status}")));
        }
        let body = transport::read_body(rsp)
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        let dir: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| unreachable("response is not JSON".into()))?;
        for field in ["newNonce", "newAccount", "newOrder"] {
            if !dir.get(field).is_some_and(serde_json::Value::is_string) {
                return Err(unreachable(format!(
                    "response is not an ACME directory (no {field})"
                )));
            }
        }
        Ok(())
    }
}

/// `ops@example.com` -> `mailto:ops@example.com`, refusing anything that is not a plain address.
fn mailto(email: &str) -> Result<String> {
    let email = email.trim();
    let email = email.strip_prefix("mailto:").unwrap_or(email);
    let plausible = email.split_once('@').is_some_and(|(local, host)| {
        !local.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
    }) && email
        .chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, ',' | '<' | '>' | '"' | '?' | '&'));
    if !plausible {
        return Err(AcmeError::Config(format!(
            "contact {:?} is not a plain e-mail address",
            one_line(email)
        )));
    }
    Ok(format!("mailto:{email}"))
}

fn account_error(e: instant_acme::Error) -> AcmeError {
    match e {
        instant_acme::Error::Api(p) => AcmeError::AccountRefused(error::problem(&p)),
        instant_acme::Error::KeyRejected => {
            AcmeError::Config("stored account key is not a valid ECDSA P-256 PKCS#8 key".into())
        }
        other => error::protocol("account", &other),
    }
}

/// Sleeps for `delay` (then grows it), unless that would pass `deadline`.
async fn pause(
    delay: &mut Duration,
    deadline: Instant,
    budget: Duration,
    what: &'static str,
) -> Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(AcmeError::Timeout {
            what,
            waited: budget,
        });
    }
    let step = (*delay).min(deadline - now);
    tokio::time::sleep(step).await;
    *delay = (*delay + *delay / 2).min(MAX_POLL_DELAY);
    Ok(())
}

fn order_invalid(order: &mut Order) -> AcmeError {
    match &order.state().error {
        Some(p) => AcmeError::OrderInvalid(error::problem(p)),
        None => AcmeError::OrderInvalid("the CA marked the order invalid without a reason".into()),
    }
}

/// Finds out why an order became invalid: the first failed challenge of our type, if any.
async fn explain_invalid(order: &mut Order, solver: &ChallengeSolver) -> AcmeError {
    let kind = solver.challenge_type();
    // `refresh` dropped the cached authorization states, so this fetches fresh ones.
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let Ok(authz) = authz else { continue };
        if authz.status != AuthorizationStatus::Invalid {
            continue;
        }
        let domain = authz.identifier().to_string();
        let problem = authz
            .challenges
            .iter()
            .filter(|c| c.r#type == kind)
            .find_map(|c| c.error.as_ref())
            .or_else(|| authz.challenges.iter().find_map(|c| c.error.as_ref()))
            .map(error::problem)
            .unwrap_or_else(|| "the CA gave no reason".into());
        return AcmeError::ChallengeFailed {
            domain,
            kind: solver.kind(),
            problem,
        };
    }
    order_invalid(order)
}

/// Checks that the chain's leaf covers every requested name and carries our
/// public key; returns its `not_after`.
fn check_issued(chain_pem: &str, names: &[String], key: &KeyPair) -> Result<OffsetDateTime> {
    let chain = cert::chain_der(chain_pem)?;
    let leaf = chain
        .first()
        .ok_or_else(|| AcmeError::BadPem("empty certificate chain".into()))?;
    let info = cert::cert_info(leaf)?;
    if let Some(missing) = names.iter().find(|n| !info.dns_names.contains(n)) {
        return Err(AcmeError::Certificate(format!(
            "issued certificate does not cover {missing}"
        )));
    }
    let parsed = cert::parse_der(leaf)?;
    if parsed.tbs_certificate.subject_pki.raw != key.public_key_der().as_slice() {
        return Err(AcmeError::Certificate(
            "issued certificate does not carry the public key of our CSR".into(),
        ));
    }
    Ok(info.not_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Http01Tokens;

    #[tokio::test]
    async fn wildcard_with_http01_is_refused_before_any_network_traffic() {
        // Port 9 on loopback: nothing listens; the check must not need it.
        let client = AcmeClient::new("https://127.0.0.1:9/dir", None).unwrap();
        let tokens = Http01Tokens::new();
        let err = client
            .issue(
                &["a.example.com".into(), "*.example.com".into()],
                &ChallengeSolver::Http01(tokens.clone()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AcmeError::WildcardNeedsDns01(d) if d == "*.example.com"),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "wildcard domain *.example.com can only be validated with DNS-01, not HTTP-01"
        );
        assert!(tokens.is_empty());
    }

    #[tokio::test]
    async fn issue_without_account_is_a_clear_error() {
        let client = AcmeClient::new("https://127.0.0.1:9/dir", None).unwrap();
        let err = client
            .issue(
                &["a.example.com".into()],
                &ChallengeSolver::Http01(Http01Tokens::new()),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, AcmeError::NoAccount), "{err}");
    }

    #[test]
    fn issue_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let client = AcmeClient::new("https://127.0.0.1:9/dir", None).unwrap();
        let domains = vec!["a.example".to_string()];
        let solver = ChallengeSolver::Http01(Http01Tokens::new());
        let fut = client.issue(&domains, &solver);
        assert_send(&fut);
        fn assert_sync<T: Send + Sync>() {}
        assert_sync::<AcmeClient>();
        assert_sync::<ChallengeSolver>();
    }

    #[test]
    fn directory_must_be_https() {
        assert!(matches!(
            AcmeClient::new("http://127.0.0.1/dir", None),
            Err(AcmeError::Config(_))
        ));
        assert!(matches!(
            AcmeClient::new("nonsense", None),
            Err(AcmeError::Config(_))
        ));
    }

    #[test]
    fn contact_addresses() {
        assert_eq!(mailto("ops@example.com").unwrap(), "mailto:ops@example.com");
        assert_eq!(
            mailto("mailto:ops@example.com").unwrap(),
            "mailto:ops@example.com"
        );
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@localhost",
            "a b@example.com",
            "a@b.com,c@d.com",
        ] {
            assert!(mailto(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_keys() {
        let issued = Issued {
            chain_pem: "CHAIN".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----SECRET".into(),
            not_after: OffsetDateTime::UNIX_EPOCH,
            domains: vec!["a.example".into()],
        };
        let shown = format!("{issued:?}");
        assert!(!shown.contains("SECRET"), "{shown}");

        let json = r#"{"id":"https://ca.example/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://ca.example/dir"}"#;
        let creds = AccountCredentials::from_json(json).unwrap();
        let shown = format!("{creds:?}");
        assert!(!shown.contains("MIGHAgEA"), "{shown}");
        assert_eq!(
            creds.directory_url().as_deref(),
            Some("https://ca.example/dir")
        );
        let back = AccountCredentials::from_json(&creds.to_json().unwrap()).unwrap();
        assert_eq!(back.to_json().unwrap(), creds.to_json().unwrap());
    }

    #[tokio::test]
    async fn restore_refuses_credentials_of_another_directory() {
        let json = r#"{"id":"https://ca.example/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://ca.example/dir"}"#;
        let creds = AccountCredentials::from_json(json).unwrap();
        let mut client = AcmeClient::new("https://127.0.0.1:9/dir", None).unwrap();
        let err = client.restore(&creds).await.unwrap_err();
        assert!(matches!(err, AcmeError::Config(_)), "{err}");
    }
}
