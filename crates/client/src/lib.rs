//! The HTTP client of the control API, used by the CLI (and later by `gantry edge` and
//! `gantry runner`). It speaks only to the API: it never opens the store.
//!
//! TLS trusts exactly the CA it is given (the installation's internal CA, `ca.pem`); it
//! never disables verification. The token is sent only in the `authorization` header and
//! never appears in an error.

use std::time::Duration;

use model::{Code, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error document.
    #[error("{message}")]
    Api {
        code: Code,
        status: u16,
        message: String,
    },
    #[error("cannot reach {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("unexpected response from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api { code, .. } => code.exit_code(),
            ClientError::Connect { .. } => 11,
            ClientError::Config(_) => 2,
            ClientError::Protocol(_) => 1,
        }
    }
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Where and how to reach the API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://host:port`
    pub server: String,
    pub token: Option<String>,
    /// PEM of the CA to trust.
    pub ca_pem: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
}

impl Client {
    pub fn new(ep: &Endpoint) -> Result<Client> {
        let server = ep.server.trim_end_matches('/').to_string();
        if !server.starts_with("https://") {
            return Err(ClientError::Config(format!(
                "server {server:?} must be an https:// URL"
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        let pem = ep.ca_pem.as_deref().ok_or_else(|| {
            ClientError::Config(
                "no CA certificate: pass --ca PATH (the server's ca.pem) or set GANTRY_CA".into(),
            )
        })?;
        for cert in
            tls::parse_certs(pem.as_bytes()).map_err(|e| ClientError::Config(format!("CA: {e}")))?
        {
            roots
                .add(cert)
                .map_err(|e| ClientError::Config(format!("CA: {e}")))?;
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Client {
            http,
            server,
            token: ep.token.clone(),
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(reqwest::Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// POST without a body.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(reqwest::Method::POST, path, None::<&()>).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        let _: serde_json::Value = self
            .send(reqwest::Method::DELETE, path, None::<&()>)
            .await?;
        Ok(())
    }

    /// DELETE that answers with a document (e.g. a deleted secret's metadata).
    pub async fn delete_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.send(reqwest::Method::DELETE, path, None::<&()>).await
    }

    /// POST raw bytes (`content_type`), e.g. an artifact.
    pub async fn post_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<T> {
        let req = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        let bytes = self.execute(req).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// GET raw bytes, e.g. an artifact's blob.
    pub async fn get_bytes(&self, path: &str) -> Result<bytes::Bytes> {
        self.execute(self.request(reqwest::Method::GET, path)).await
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.server, path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T> {
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let bytes = self.execute(req).await?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| ClientError::Protocol(format!("{e}")))
    }

    /// Sends a request; the body of a success, or the API's error as an error.
    async fn execute(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        let resp = req.send().await.map_err(|e| ClientError::Connect {
            server: self.server.clone(),
            reason: error_chain(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Connect {
            server: self.server.clone(),
            reason: error_chain(&e),
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => Err(ClientError::Api {
                code: Code::parse(&e.error.code),
                status: status.as_u16(),
                message: e.error.message,
            }),
            Err(_) => Err(ClientError::Protocol(format!(
                "HTTP {status} without an error document"
            ))),
        }
    }
}

/// Joins an error with its sources into one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
