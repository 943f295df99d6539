//! The artifact registry: what services run, as immutable versions of a packed directory
//! (.tar.gz). A push checks the archive and records its manifest (every file's path, size
//! and SHA-256); the blob is encrypted under its own key in the tenant's key hierarchy and
//! stored in an object store (local files, or any S3-compatible store) under the SHA-256
//! of its plaintext, so identical content is stored once per tenant. A pull decrypts and
//! verifies the digest: a blob altered in the object store is refused, never handed out.
//!
//! This crate must never write an artifact in plaintext to the object store, and never
//! unpack an entry outside the target directory.

mod archive;

use std::sync::Arc;

use bytes::Bytes;
use model::artifacts::{ArtifactInfo, ArtifactRef};
use model::clock::Clock;
use model::scan::ScanReport;
use model::{Code, Name, Scope};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};
use store::artifacts::Pushed;
use store::keyring::KeyPurpose;
use store::{Actor, Store, StoreError};

pub use archive::{manifest, unpack};

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] secrets::SecretsError),
    #[error("object store: {0}")]
    Objects(String),
    #[error(
        "artifact {0} failed its integrity check: the stored blob was altered or belongs elsewhere"
    )]
    Integrity(String),
    #[error("object store configuration: {0}")]
    Config(String),
}

impl ArtifactError {
    pub fn code(&self) -> Code {
        match self {
            ArtifactError::Invalid(_) => Code::InvalidArgument,
            ArtifactError::TooLarge(_) => Code::PayloadTooLarge,
            ArtifactError::Store(e) => e.code(),
            ArtifactError::Keys(e) => e.code(),
            ArtifactError::Objects(_) => Code::Unavailable,
            ArtifactError::Integrity(_) => Code::Internal,
            ArtifactError::Config(_) => Code::InvalidArgument,
        }
    }
}

pub type Result<T> = std::result::Result<T, ArtifactError>;

/// Opens the object store named by `url`: `file:///abs/dir` or `s3://bucket/prefix`
/// (credentials, region and endpoint from the standard `AWS_*` variables, e.g.
/// `AWS_ENDPOINT=http://127.0.0.1:9000` and `AWS_ALLOW_HTTP=true` for a local store).
pub fn open_objects(url: &str) -> Result<Arc<dyn ObjectStore>> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ArtifactError::Config(format!("invalid object store URL {url:?}: {e}")))?;
    match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|_| ArtifactError::Config(format!("invalid file URL {url:?}")))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| ArtifactError::Config(format!("{}: {e}", dir.display())))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| ArtifactError::Config(e.to_string()))?;
            Ok(Arc::new(fs))
        }
        "s3" => {
            let bucket = parsed.host_str().ok_or_else(|| {
                ArtifactError::Config(format!("{url:?}: use s3://BUCKET[/PREFIX]"))
            })?;
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .map_err(|e| ArtifactError::Config(e.to_string()))?;
            let prefix = parsed.path().trim_matches('/');
            if prefix.is_empty() {
                Ok(Arc::new(s3))
            } else {
                Ok(Arc::new(object_store::prefix::PrefixStore::new(s3, prefix)))
            }
        }
        other => Err(ArtifactError::Config(format!(
            "object store scheme {other:?} is not supported: use file:// or s3://"
        ))),
    }
}

/// The registry of one installation.
pub struct Registry {
    store: Arc<Store>,
    keyring: Arc<secrets::Keyring>,
    objects: Arc<dyn ObjectStore>,
    clock: Arc<dyn Clock>,
}

fn blob_path(tenant: &Name, hex: &str) -> ObjectPath {
    ObjectPath::from(format!("tenants/{tenant}/artifacts/sha256/{hex}"))
}

fn objects_err(e: object_store::Error) -> ArtifactError {
    ArtifactError::Objects(e.to_string())
}

impl Registry {
    pub fn new(
        store: Arc<Store>,
        keyring: Arc<secrets::Keyring>,
        objects: Arc<dyn ObjectStore>,
        clock: Arc<dyn Clock>,
    ) -> Registry {
        Registry {
            store,
            keyring,
            objects,
            clock,
        }
    }

    /// Pushes `bytes` (a .tar.gz) as `r`. The same content again is a no-op; other content
    /// under an existing version is a conflict. Returns the version and whether it is new.
    pub async fn push(
        &self,
        actor: &Actor,
        r: &ArtifactRef,
        bytes: Bytes,
    ) -> Result<(ArtifactInfo, bool)> {
        if bytes.len() > model::artifacts::MAX_ARTIFACT_BYTES {
            return Err(ArtifactError::TooLarge(format!(
                "artifacts are limited to {} bytes",
                model::artifacts::MAX_ARTIFACT_BYTES
            )));
        }
        let data = bytes.clone();
        let contents = tokio::task::spawn_blocking(move || archive::manifest(&data))
            .await
            .map_err(|e| ArtifactError::Invalid(format!("reading the archive failed: {e}")))??;
        let manifest = contents.manifest;
        let mut inventory = scan::inventory(&contents.lockfiles);
        inventory
            .unreadable
            .extend(contents.too_large.iter().map(|p| {
                format!(
                    "{p}: larger than {} bytes, not read",
                    scan::MAX_LOCKFILE_BYTES
                )
            }));
        let hex = hex::encode(Sha256::digest(&bytes));
        let now = self.clock.now();
        let now = now
            .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
            .unwrap_or(now);
        let info = ArtifactInfo {
            name: format!("{}/{}", r.tenant, r.name),
            version: r.version.clone(),
            digest: format!("sha256:{hex}"),
            size: bytes.len() as u64,
            files: manifest.len() as u64,
            unpacked_size: manifest.iter().map(|m| m.size).sum(),
            manifest,
            created_at: now,
            created_by: actor.principal.clone(),
            scan: None,
        };
        // The blob first (idempotent: same content, same path), then the record; a blob
        // without a record is garbage, never a record without its blob.
        let path = blob_path(&r.tenant, &hex);
        if self.objects.head(&path).await.is_err() {
            let scope = Scope::Tenant(r.tenant.clone());
            let ct = self
                .keyring
                .seal_resource(
                    actor,
                    KeyPurpose::Artifact,
                    &scope,
                    &format!("sha256-{hex}"),
                    &bytes,
                )
                .await?;
            self.objects
                .put(&path, Bytes::from(ct.into_bytes()).into())
                .await
                .map_err(objects_err)?;
        }
        let created =
            self.store.create_artifact(actor, &info, &inventory).await? == Pushed::Created;
        let shown = self
            .store
            .artifact(&r.tenant, r.name.as_str(), &r.version)
            .await?;
        Ok((shown, created))
    }

    pub async fn list(&self, tenant: &Name) -> Result<Vec<ArtifactInfo>> {
        Ok(self.store.artifacts(tenant).await?)
    }

    /// A version's record (with its manifest), without the scan.
    pub async fn record(&self, r: &ArtifactRef) -> Result<ArtifactInfo> {
        Ok(self
            .store
            .artifact(&r.tenant, r.name.as_str(), &r.version)
            .await?)
    }

    /// A version with its manifest and its scan against the database as it is now.
    pub async fn show(&self, r: &ArtifactRef) -> Result<ArtifactInfo> {
        let mut info = self.record(r).await?;
        info.scan = self.scan(r).await?;
        Ok(info)
    }

    /// The scan of a version (`None` when it was pushed before scanning existed).
    pub async fn scan(&self, r: &ArtifactRef) -> Result<Option<ScanReport>> {
        let Some(inv) = self
            .store
            .artifact_inventory(&r.tenant, r.name.as_str(), &r.version)
            .await?
        else {
            return Ok(None);
        };
        let names: Vec<_> = inv
            .packages
            .iter()
            .map(|p| (p.ecosystem, p.ecosystem.normalize(&p.name)))
            .collect();
        let advisories = self.store.advisories_for(&names).await?;
        let database_advisories = self.store.advisory_count().await?;
        Ok(Some(ScanReport {
            findings: scan::findings(&inv.packages, &advisories),
            lockfiles: inv.lockfiles,
            packages: inv.packages.len() as u64,
            unpinned: inv.unpinned,
            unreadable: inv.unreadable,
            database_advisories,
        }))
    }

    /// The version's .tar.gz, decrypted and checked against its digest.
    pub async fn pull(&self, r: &ArtifactRef) -> Result<(ArtifactInfo, Bytes)> {
        let info = self.record(r).await?;
        let hex = info
            .digest
            .strip_prefix("sha256:")
            .ok_or_else(|| ArtifactError::Integrity(r.to_string()))?
            .to_string();
        let got = self
            .objects
            .get(&blob_path(&r.tenant, &hex))
            .await
            .map_err(objects_err)?
            .bytes()
            .await
            .map_err(objects_err)?;
        let ct = std::str::from_utf8(&got).map_err(|_| ArtifactError::Integrity(r.to_string()))?;
        let scope = Scope::Tenant(r.tenant.clone());
        let pt = self
            .keyring
            .open_resource(KeyPurpose::Artifact, &scope, &format!("sha256-{hex}"), ct)
            .await
            .map_err(|e| match e {
                secrets::SecretsError::Sealed => ArtifactError::Keys(e),
                _ => ArtifactError::Integrity(r.to_string()),
            })?;
        if hex::encode(Sha256::digest(&pt[..])) != hex {
            return Err(ArtifactError::Integrity(r.to_string()));
        }
        Ok((info, Bytes::copy_from_slice(&pt)))
    }

    /// Deletes a version (and its blob, when no other version has the same content).
    pub async fn delete(&self, actor: &Actor, r: &ArtifactRef) -> Result<()> {
        let info = self.record(r).await?;
        let shared = self
            .store
            .delete_artifact(actor, &r.tenant, r.name.as_str(), &r.version)
            .await?;
        if !shared {
            if let Some(hex) = info.digest.strip_prefix("sha256:") {
                if let Err(e) = self.objects.delete(&blob_path(&r.tenant, hex)).await {
                    tracing::warn!(artifact = %r, error = %e, "cannot delete an unused blob; it stays as garbage");
                }
            }
        }
        Ok(())
    }
}
