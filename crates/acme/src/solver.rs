//! [`ChallengeSolver`] — how the caller proves control of a domain — and the
//! bookkeeping that removes every published challenge response again.
//!
//! Must never: leave an HTTP-01 token or a DNS-01 TXT record behind after an
//! order finished, failed, or was cancelled (a dropped `issue` future still
//! cleans up: HTTP tokens synchronously, DNS records from a spawned, bounded
//! task); let a slow DNS provider block without a timeout.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::dns01::DnsProvider;
use crate::error::{chain, AcmeError, Result};
use crate::http01::{valid_token, Http01Tokens};

/// The challenge type used to validate every name of an order.
#[derive(Clone)]
pub enum ChallengeSolver {
    /// HTTP-01: responses are published in the shared [`Http01Tokens`] map,
    /// which the edge serves on port 80. Cannot validate wildcard names.
    Http01(Http01Tokens),
    /// DNS-01: TXT records are published through a [`DnsProvider`]. Required for wildcards.
    Dns01(Arc<dyn DnsProvider>),
}

impl ChallengeSolver {
    /// The RFC 8555 challenge type name (`http-01` or `dns-01`).
    pub fn kind(&self) -> &'static str {
        match self {
            ChallengeSolver::Http01(_) => "http-01",
            ChallengeSolver::Dns01(_) => "dns-01",
        }
    }

    pub(crate) fn challenge_type(&self) -> instant_acme::ChallengeType {
        match self {
            ChallengeSolver::Http01(_) => instant_acme::ChallengeType::Http01,
            ChallengeSolver::Dns01(_) => instant_acme::ChallengeType::Dns01,
        }
    }
}

impl fmt::Debug for ChallengeSolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeSolver::Http01(tokens) => f.debug_tuple("Http01").field(tokens).finish(),
            ChallengeSolver::Dns01(_) => f.debug_tuple("Dns01").field(&"dyn DnsProvider").finish(),
        }
    }
}

/// Publishes challenge responses and remembers what to remove afterwards.
pub(crate) struct Published {
    solver: ChallengeSolver,
    http_tokens: Vec<String>,
    dns_names: Vec<String>,
    call_timeout: Duration,
    done: bool,
}

impl Published {
    pub(crate) fn new(solver: &ChallengeSolver, call_timeout: Duration) -> Self {
        Self {
            solver: solver.clone(),
            http_tokens: Vec::new(),
            dns_names: Vec::new(),
            call_timeout,
            done: false,
        }
    }

    /// Publishes the HTTP-01 response for `token`.
    pub(crate) fn http01(
        &mut self,
        domain: &str,
        token: &str,
        key_authorization: &str,
    ) -> Result<()> {
        let ChallengeSolver::Http01(tokens) = &self.solver else {
            return Err(AcmeError::Config(
                "HTTP-01 response with a DNS-01 solver".into(),
            ));
        };
        if !valid_token(token) {
            return Err(AcmeError::Protocol {
                step: "authorization",
                reason: format!("the CA sent a malformed HTTP-01 token for {domain}"),
            });
        }
        self.http_tokens.push(token.to_owned());
        tokens.insert(token.to_owned(), key_authorization.to_owned());
        tracing::debug!(domain, "published HTTP-01 response");
        Ok(())
    }

    /// Publishes the DNS-01 TXT record `value` at `fqdn`.
    pub(crate) async fn dns01(&mut self, fqdn: &str, value: &str) -> Result<()> {
        let ChallengeSolver::Dns01(provider) = &self.solver else {
            return Err(AcmeError::Config(
                "DNS-01 response with an HTTP-01 solver".into(),
            ));
        };
        let provider = provider.clone();
        // Remember the name before the call: a call that times out may still have succeeded.
        if !self.dns_names.iter().any(|n| n == fqdn) {
            self.dns_names.push(fqdn.to_owned());
        }
        match tokio::time::timeout(self.call_timeout, provider.set_txt(fqdn, value)).await {
            Ok(Ok(())) => {
                tracing::debug!(fqdn, "published DNS-01 TXT record");
                Ok(())
            }
            Ok(Err(e)) => Err(AcmeError::Dns {
                action: "set",
                fqdn: fqdn.to_owned(),
                reason: chain(e.as_ref()),
            }),
            Err(_) => Err(AcmeError::Dns {
                action: "set",
                fqdn: fqdn.to_owned(),
                reason: format!("no answer within {}s", self.call_timeout.as_secs()),
            }),
        }
    }

    /// Removes everything published. Failures are logged, never returned: a
    /// leftover record must not turn a good certificate into an error.
    pub(crate) async fn cleanup(mut self) {
        self.done = true;
        self.clear_http();
        let ChallengeSolver::Dns01(provider) = &self.solver else {
            return;
        };
        let names = std::mem::take(&mut self.dns_names);
        clear_dns(provider.clone(), names, self.call_timeout).await;
    }

    fn clear_http(&mut self) {
        if let ChallengeSolver::Http01(tokens) = &self.solver {
            for token in self.http_tokens.drain(..) {
                tokens.remove(&token);
            }
        }
    }
}

async fn clear_dns(provider: Arc<dyn DnsProvider>, names: Vec<String>, call_timeout: Duration) {
    for fqdn in names {
        match tokio::time::timeout(call_timeout, provider.clear_txt(&fqdn)).await {
            Ok(Ok(())) => tracing::debug!(fqdn, "removed DNS-01 TXT record"),
            Ok(Err(e)) => {
                tracing::warn!(fqdn, error = %chain(e.as_ref()), "could not remove DNS-01 TXT record")
            }
            Err(_) => tracing::warn!(
                fqdn,
                timeout_secs = call_timeout.as_secs(),
                "DNS provider did not answer while removing DNS-01 TXT record"
            ),
        }
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The issuing future was dropped mid-way (cancelled or timed out by the caller).
        self.clear_http();
        if let ChallengeSolver::Dns01(provider) = &self.solver {
            let names = std::mem::take(&mut self.dns_names);
            if names.is_empty() {
                return;
            }
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(clear_dns(provider.clone(), names, self.call_timeout));
                }
                Err(_) => tracing::warn!(
                    records = ?names,
                    "issuance cancelled outside a Tokio runtime; DNS-01 TXT records left behind"
                ),
            }
        }
    }
}
