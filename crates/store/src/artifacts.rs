//! Storage of the artifact registry's records: one row per immutable version (digest,
//! sizes, manifest). The blobs themselves live in the object store (the `artifacts`
//! crate); this module never sees artifact content.

use model::artifacts::{ArtifactInfo, ManifestEntry};
use model::scan::Inventory;
use model::{Name, Scope};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::audit::NewEvent;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

const COLS: &str =
    "tenant, name, version, digest, size, files, unpacked_size, manifest, created_at, created_by";

fn row_to_artifact(row: &AnyRow, with_manifest: bool) -> Result<ArtifactInfo> {
    let tenant: String = row.try_get("tenant")?;
    let name: String = row.try_get("name")?;
    let manifest: Vec<ManifestEntry> = if with_manifest {
        serde_json::from_str(&row.try_get::<String, _>("manifest")?)
            .map_err(|e| StoreError::Corrupt(format!("artifact {tenant}/{name}: {e}")))?
    } else {
        Vec::new()
    };
    Ok(ArtifactInfo {
        name: format!("{tenant}/{name}"),
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        size: row.try_get::<i64, _>("size")? as u64,
        files: row.try_get::<i64, _>("files")? as u64,
        unpacked_size: row.try_get::<i64, _>("unpacked_size")? as u64,
        manifest,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
        scan: None,
    })
}

/// Whether a push stored a new version or found the same one already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Created,
    AlreadyThere,
}

impl Store {
    /// Records a version. The same version with the same digest is a no-op
    /// (`AlreadyThere`); with another digest it is a conflict: versions are immutable.
    pub async fn create_artifact(
        &self,
        actor: &Actor,
        a: &ArtifactInfo,
        inventory: &Inventory,
    ) -> Result<Pushed> {
        let (tenant, name) = a
            .name
            .split_once('/')
            .ok_or_else(|| StoreError::Unprocessable("artifact names are TENANT/NAME".into()))?;
        let mut w = self.begin_write().await?;
        if sqlx::query("SELECT 1 AS x FROM tenants WHERE name = $1")
            .bind(tenant)
            .fetch_optional(&mut *w.tx)
            .await?
            .is_none()
        {
            return Err(StoreError::NotFound(format!("tenant {tenant} not found")));
        }
        if let Some(row) = sqlx::query(
            "SELECT digest FROM artifacts WHERE tenant = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(&a.version)
        .fetch_optional(&mut *w.tx)
        .await?
        {
            let digest: String = row.try_get("digest")?;
            return if digest == a.digest {
                Ok(Pushed::AlreadyThere)
            } else {
                Err(StoreError::Conflict(format!(
                    "artifact {}@{} already exists with other content ({digest}); versions are immutable, push a new version",
                    a.name, a.version
                )))
            };
        }
        let manifest =
            serde_json::to_string(&a.manifest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let inventory =
            serde_json::to_string(inventory).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(&format!(
            "INSERT INTO artifacts ({COLS}, inventory) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(tenant)
        .bind(name)
        .bind(&a.version)
        .bind(&a.digest)
        .bind(a.size as i64)
        .bind(a.files as i64)
        .bind(a.unpacked_size as i64)
        .bind(&manifest)
        .bind(ts(a.created_at))
        .bind(&a.created_by)
        .bind(&inventory)
        .execute(&mut *w.tx)
        .await?;
        let scope = Scope::Tenant(Name::parse(tenant).map_err(|e| StoreError::Corrupt(e.message))?);
        let mut ev = NewEvent::success(
            "artifact.push",
            format!("artifacts/{}@{}", a.name, a.version),
            scope,
        );
        ev.detail = format!("digest={} size={}", a.digest, a.size);
        w.commit(actor, ev).await?;
        Ok(Pushed::Created)
    }

    /// Versions of a tenant's artifacts (without manifests), by name then version.
    pub async fn artifacts(&self, tenant: &Name) -> Result<Vec<ArtifactInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM artifacts WHERE tenant = $1 ORDER BY name, created_at"
        ))
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| row_to_artifact(r, false)).collect()
    }

    /// One version, with its manifest.
    pub async fn artifact(&self, tenant: &Name, name: &str, version: &str) -> Result<ArtifactInfo> {
        sqlx::query(&format!(
            "SELECT {COLS} FROM artifacts WHERE tenant = $1 AND name = $2 AND version = $3"
        ))
        .bind(tenant.as_str())
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_artifact(&r, true))
        .transpose()?
        .ok_or_else(|| {
            StoreError::NotFound(format!("artifact {tenant}/{name}@{version} not found"))
        })
    }

    /// What a version's lockfiles pin; `None` for a version pushed before scanning.
    pub async fn artifact_inventory(
        &self,
        tenant: &Name,
        name: &str,
        version: &str,
    ) -> Result<Option<Inventory>> {
        let row = sqlx::query(
            "SELECT inventory FROM artifacts WHERE tenant = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!("artifact {tenant}/{name}@{version} not found"))
        })?;
        row.try_get::<Option<String>, _>("inventory")?
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| {
                    StoreError::Corrupt(format!("inventory of {tenant}/{name}@{version}: {e}"))
                })
            })
            .transpose()
    }

    /// Deletes a version; returns whether another version still uses its blob.
    pub async fn delete_artifact(
        &self,
        actor: &Actor,
        tenant: &Name,
        name: &str,
        version: &str,
    ) -> Result<bool> {
        let mut w = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT digest FROM artifacts WHERE tenant = $1 AND name = $2 AND version = $3",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!("artifact {tenant}/{name}@{version} not found"))
        })?;
        let digest: String = row.try_get("digest")?;
        // A version a revision may run (or be rolled back to) stays.
        let wanted = format!("{name}@{version}");
        for r in
            sqlx::query("SELECT scope, service, number, spec FROM revisions WHERE scope LIKE $1")
                .bind(format!("{tenant}/%"))
                .fetch_all(&mut *w.tx)
                .await?
        {
            let spec: model::services::DeploySpec =
                serde_json::from_str(&r.try_get::<String, _>("spec")?)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if spec.artifact == wanted {
                let (scope, service, n): (String, String, i64) = (
                    r.try_get("scope")?,
                    r.try_get("service")?,
                    r.try_get("number")?,
                );
                return Err(StoreError::Conflict(format!(
                    "artifact {tenant}/{wanted} is used by revision {n} of service {scope}/{service}; delete the service first"
                )));
            }
        }
        sqlx::query("DELETE FROM artifacts WHERE tenant = $1 AND name = $2 AND version = $3")
            .bind(tenant.as_str())
            .bind(name)
            .bind(version)
            .execute(&mut *w.tx)
            .await?;
        let shared = sqlx::query("SELECT 1 AS x FROM artifacts WHERE tenant = $1 AND digest = $2")
            .bind(tenant.as_str())
            .bind(&digest)
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some();
        w.commit(
            actor,
            NewEvent::success(
                "artifact.delete",
                format!("artifacts/{tenant}/{name}@{version}"),
                Scope::Tenant(tenant.clone()),
            ),
        )
        .await?;
        Ok(shared)
    }
}
