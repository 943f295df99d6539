//! DNS-01 challenge responses (RFC 8555 §8.4): the [`DnsProvider`] trait and
//! [`WebhookDns`], a provider that delegates TXT record changes to an HTTP webhook.
//!
//! # Provider contract
//!
//! * `set_txt(fqdn, value)` **adds** a TXT record `value` at `fqdn` and must keep
//!   other values at the same name: `example.com` and `*.example.com` in one order
//!   both use `_acme-challenge.example.com.` with different values. It should
//!   return once the record is published (or set
//!   [`Timeouts::dns_propagation`](crate::Timeouts) to give it time).
//! * `clear_txt(fqdn)` removes **all** TXT values at `fqdn`. It is called once
//!   per name after the order finished, whether it succeeded or not, and must be
//!   idempotent (clearing a name without records is not an error).
//! * `fqdn` is absolute, with a trailing dot: `_acme-challenge.example.com.`.
//!
//! # Webhook contract ([`WebhookDns`])
//!
//! Both calls are `POST` with `Content-Type: application/json`; any `2xx`
//! status is success, anything else (or no answer within the request
//! timeout) is a failure whose status and first bytes of body end up in the error.
//!
//! ```text
//! POST {base_url}/set-txt    {"host": "_acme-challenge.example.com.", "value": "<base64url SHA-256 digest>"}
//! POST {base_url}/clear-txt  {"host": "_acme-challenge.example.com."}
//! ```
//!
//! This is exactly the management API of `pebble-challtestsrv`, which the
//! integration tests use as the webhook target.
//!
//! Must never: send anything but the record name and the digest (no account
//! key, no key authorization), follow redirects, or wait without a timeout.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::Serialize;

use crate::error::{chain, one_line, AcmeError, BoxError, Result};
use crate::transport;

/// Boxed, `Send` future returned by [`DnsProvider`] methods, so that
/// `Arc<dyn DnsProvider>` works without `async-trait`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Publishes and removes the TXT records DNS-01 validation looks up.
///
/// Contract:
/// * `set_txt(fqdn, value)` **adds** `value` at `fqdn` and keeps other values at that
///   name (`x` and `*.x` in one order share `_acme-challenge.x.`). It should return
///   once the record is published, or the caller sets `Timeouts::dns_propagation`.
/// * `clear_txt(fqdn)` removes all values at `fqdn`; called once per name after every
///   order, successful or not; must be idempotent.
/// * `fqdn` is absolute with a trailing dot: `_acme-challenge.example.com.`.
/// * Each call is cut off after `Timeouts::request`.
pub trait DnsProvider: Send + Sync {
    /// Adds TXT `value` at `fqdn` (absolute name with trailing dot).
    fn set_txt<'a>(&'a self, fqdn: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), BoxError>>;

    /// Removes every TXT value at `fqdn`. Idempotent.
    fn clear_txt<'a>(&'a self, fqdn: &'a str) -> BoxFuture<'a, Result<(), BoxError>>;
}

/// A [`DnsProvider`] that delegates to an HTTP webhook.
///
/// ```text
/// POST {base_url}/set-txt    {"host": "_acme-challenge.example.com.", "value": "<base64url SHA-256 digest>"}
/// POST {base_url}/clear-txt  {"host": "_acme-challenge.example.com."}
/// ```
///
/// `Content-Type: application/json`; any `2xx` is success; anything else, or no
/// answer within 15 s, is an error carrying the status and the start of the body.
/// This is the management API of `pebble-challtestsrv`.
#[derive(Clone)]
pub struct WebhookDns {
    base_url: String,
    client: reqwest::Client,
}

/// Default time one webhook call may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(15);

impl WebhookDns {
    /// A webhook provider for `base_url` (`http://` or `https://`; a trailing
    /// `/` is ignored). HTTPS endpoints are verified against the public web PKI
    /// roots plus `extra_roots_pem`, using the ring provider.
    pub fn new(base_url: &str) -> Result<Self> {
        Self::with_roots(base_url, None)
    }

    /// Like [`WebhookDns::new`], additionally trusting the PEM certificates in `extra_roots_pem`.
    pub fn with_roots(base_url: &str, extra_roots_pem: Option<&str>) -> Result<Self> {
        let base_url = base_url.trim().trim_end_matches('/').to_owned();
        let parsed: http::Uri = base_url
            .parse()
            .map_err(|_| AcmeError::Config(format!("webhook URL {base_url:?} is not a URL")))?;
        match parsed.scheme_str() {
            Some("http") | Some("https") if parsed.host().is_some() => {}
            _ => {
                return Err(AcmeError::Config(format!(
                    "webhook URL {base_url:?} must be http:// or https:// with a host"
                )))
            }
        }
        if parsed.query().is_some() {
            return Err(AcmeError::Config(format!(
                "webhook URL {base_url:?} must not have a query string"
            )));
        }
        let client =
            transport::http_client(transport::tls_config(extra_roots_pem)?, WEBHOOK_TIMEOUT)?;
        Ok(Self { base_url, client })
    }

    /// The configured base URL (without trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn post<T: Serialize + Sync>(&self, endpoint: &str, body: &T) -> Result<(), BoxError> {
        let url = format!("{}/{endpoint}", self.base_url);
        let rsp = self
            .client
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {}", chain(&e)))?;
        let status = rsp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = transport::read_body(rsp).await.unwrap_or_default();
        let text = one_line(&String::from_utf8_lossy(&body[..body.len().min(200)]));
        Err(if text.is_empty() {
            format!("POST {url}: HTTP {status}").into()
        } else {
            format!("POST {url}: HTTP {status}: {text}").into()
        })
    }
}

#[derive(Serialize)]
struct SetTxt<'a> {
    host: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct ClearTxt<'a> {
    host: &'a str,
}

impl DnsProvider for WebhookDns {
    fn set_txt<'a>(&'a self, fqdn: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { self.post("set-txt", &SetTxt { host: fqdn, value }).await })
    }

    fn clear_txt<'a>(&'a self, fqdn: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move { self.post("clear-txt", &ClearTxt { host: fqdn }).await })
    }
}

impl fmt::Debug for WebhookDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookDns")
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_base_url() {
        assert_eq!(
            WebhookDns::new("http://127.0.0.1:8055/")
                .unwrap()
                .base_url(),
            "http://127.0.0.1:8055"
        );
        assert!(WebhookDns::new("ftp://x").is_err());
        assert!(WebhookDns::new("not a url").is_err());
        assert!(WebhookDns::new("http://h/?a=b").is_err());
    }

    #[test]
    fn provider_is_object_safe() {
        let p: std::sync::Arc<dyn DnsProvider> =
            std::sync::Arc::new(WebhookDns::new("http://127.0.0.1:1").unwrap());
        drop(p);
    }
}
