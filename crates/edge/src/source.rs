//! Where the edge's desired state comes from: the store and the keyring of the same process
//! (`Local`, inside `gantry up`), or a control plane over its API (`Remote`, `gantry edge`
//! on another machine). The reconciler only sees this trait.
//!
//! A source must never hand out a partial state as if it were whole: a failed load is an
//! error, and the edge keeps its last good snapshot.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use certs::ServedCert;
use model::certs::{EdgeGenerations, EdgeSnapshot, ReplicaInfo};
use model::routes::RouteInfo;
use store::Store;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// What a load brought.
#[derive(Default)]
pub struct Loaded {
    /// Routes and replicas, when asked for.
    pub routes: Option<(Vec<RouteInfo>, Vec<ReplicaInfo>)>,
    /// Certificates, when asked for and available (`None` while sealed).
    pub certificates: Option<Vec<ServedCert>>,
}

pub trait Source: Send + Sync + 'static {
    /// The current generations (cheap; polled every interval).
    fn generations(&self) -> BoxFut<'_, Result<EdgeGenerations, SourceError>>;
    /// Loads routes and replicas and/or certificates.
    fn load(&self, routes: bool, certificates: bool) -> BoxFut<'_, Result<Loaded, SourceError>>;
    /// The key authorization of a pending ACME HTTP-01 token.
    fn challenge(&self, token: &str) -> Option<String>;
    /// The certificate for clients whose SNI no certificate covers.
    fn default_cert(&self, names: &[String]) -> Result<ServedCert, SourceError>;
}

fn err(e: impl std::fmt::Display) -> SourceError {
    SourceError(e.to_string())
}

/// The state of this process's control plane.
pub struct Local {
    pub store: Arc<Store>,
    pub certs: Arc<certs::Certs>,
}

impl Source for Local {
    fn generations(&self) -> BoxFut<'_, Result<EdgeGenerations, SourceError>> {
        Box::pin(async move {
            Ok(EdgeGenerations {
                routes: self.store.generation("routes").await.map_err(err)?,
                certificates: self.store.generation("certificates").await.map_err(err)?,
                // Challenges are answered from the shared map directly (`challenge`).
                acme_http01: BTreeMap::new(),
                https_policy: self.store.https_policy().await.map_err(err)?,
            })
        })
    }

    fn load(&self, routes: bool, certificates: bool) -> BoxFut<'_, Result<Loaded, SourceError>> {
        Box::pin(async move {
            let mut out = Loaded::default();
            if routes {
                out.routes = Some((
                    self.store.all_routes().await.map_err(err)?,
                    self.store.all_replicas().await.map_err(err)?,
                ));
            }
            if certificates && self.certs.can_decrypt() {
                out.certificates = Some(self.certs.served().await.map_err(err)?);
            }
            Ok(out)
        })
    }

    fn challenge(&self, token: &str) -> Option<String> {
        self.certs.http01_tokens().get(token)
    }

    fn default_cert(&self, names: &[String]) -> Result<ServedCert, SourceError> {
        self.certs.default_cert(names).map_err(err)
    }
}

/// A control plane reached over its API with a token allowed to read the edge's
/// configuration (`edge-config read-value` on the platform).
pub struct Remote {
    client: client::Client,
    /// The ACME HTTP-01 answers seen at the last poll.
    challenges: RwLock<BTreeMap<String, String>>,
}

impl Remote {
    pub fn new(client: client::Client) -> Remote {
        Remote {
            client,
            challenges: RwLock::new(BTreeMap::new()),
        }
    }
}

impl Source for Remote {
    fn generations(&self) -> BoxFut<'_, Result<EdgeGenerations, SourceError>> {
        Box::pin(async move {
            let g: EdgeGenerations = self.client.get("/v1/edge/generations").await.map_err(err)?;
            *self.challenges.write().unwrap_or_else(|e| e.into_inner()) = g.acme_http01.clone();
            Ok(g)
        })
    }

    fn load(&self, routes: bool, certificates: bool) -> BoxFut<'_, Result<Loaded, SourceError>> {
        Box::pin(async move {
            let snap: EdgeSnapshot = self.client.get("/v1/edge/snapshot").await.map_err(err)?;
            let mut out = Loaded::default();
            if routes {
                out.routes = Some((snap.routes, snap.replicas));
            }
            if certificates {
                out.certificates = snap.certificates.map(|list| {
                    list.iter()
                        .filter_map(|c| match ServedCert::from_pem(c) {
                            Ok(s) => Some(s),
                            Err(e) => {
                                tracing::warn!(certificate = %c.name, error = %e, "cannot load a certificate; not serving it");
                                None
                            }
                        })
                        .collect()
                });
            }
            Ok(out)
        })
    }

    fn challenge(&self, token: &str) -> Option<String> {
        self.challenges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn default_cert(&self, names: &[String]) -> Result<ServedCert, SourceError> {
        let ck = tls::self_signed(names).map_err(err)?;
        Ok(ServedCert {
            name: "default".into(),
            domains: names.to_vec(),
            chain: ck.chain,
            key: ck.key,
            not_after: (time::OffsetDateTime::now_utc() + time::Duration::days(90))
                .unix_timestamp(),
        })
    }
}
