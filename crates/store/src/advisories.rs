//! The offline vulnerability database: advisories (normalized OSV records, stored as JSON
//! documents) and an index of the packages they affect, so that scanning an artifact reads
//! only the advisories of its packages. Also the installation's artifact policy.
//!
//! The database is installation-wide and public knowledge: it holds nothing secret. This
//! module must never decide what is vulnerable (the `scan` crate does); it stores and
//! finds.

use std::collections::BTreeMap;

use model::scan::{Advisory, ArtifactPolicy, DatabaseStatus, Ecosystem, LoadReport};
use model::Scope;
use sqlx::Row;

use crate::audit::NewEvent;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

/// Packages looked up per statement.
const CHUNK: usize = 200;
const POLICY: &str = "artifact_policy";

/// What to store: advisories to add or replace, and ids of withdrawn ones to remove.
#[derive(Debug, Default)]
pub struct AdvisoryBatch {
    pub advisories: Vec<Advisory>,
    pub withdrawn: Vec<String>,
}

fn corrupt(id: &str, e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(format!("advisory {id}: {e}"))
}

impl Store {
    /// Stores a batch in one transaction (one audit event). An advisory whose `modified`
    /// time is already stored is left as it is. Fills `loaded`, `unchanged`, `withdrawn`.
    pub async fn load_advisories(
        &self,
        actor: &Actor,
        batch: &AdvisoryBatch,
        report: &mut LoadReport,
    ) -> Result<()> {
        let now = ts(self.now());
        let mut w = self.begin_write().await?;
        for a in &batch.advisories {
            let stored: Option<String> =
                sqlx::query("SELECT modified FROM advisories WHERE id = $1")
                    .bind(&a.id)
                    .fetch_optional(&mut *w.tx)
                    .await?
                    .map(|r| r.try_get("modified"))
                    .transpose()?;
            if stored.as_deref() == Some(a.modified.as_str()) {
                report.unchanged += 1;
                continue;
            }
            let doc = serde_json::to_string(a).map_err(|e| corrupt(&a.id, e))?;
            for stmt in [
                "DELETE FROM advisory_packages WHERE advisory = $1",
                "DELETE FROM advisories WHERE id = $1",
            ] {
                sqlx::query(stmt).bind(&a.id).execute(&mut *w.tx).await?;
            }
            sqlx::query(
                "INSERT INTO advisories (id, modified, doc, loaded_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&a.id)
            .bind(&a.modified)
            .bind(&doc)
            .bind(&now)
            .execute(&mut *w.tx)
            .await?;
            let mut packages: Vec<(&str, &str)> = a
                .affected
                .iter()
                .map(|x| (x.ecosystem.as_str(), x.package.as_str()))
                .collect();
            packages.sort();
            packages.dedup();
            for (eco, pkg) in packages {
                sqlx::query(
                    "INSERT INTO advisory_packages (ecosystem, package, advisory) VALUES ($1, $2, $3)",
                )
                .bind(eco)
                .bind(pkg)
                .bind(&a.id)
                .execute(&mut *w.tx)
                .await?;
            }
            report.loaded += 1;
        }
        for id in &batch.withdrawn {
            sqlx::query("DELETE FROM advisory_packages WHERE advisory = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("DELETE FROM advisories WHERE id = $1")
                .bind(id)
                .execute(&mut *w.tx)
                .await?;
            report.withdrawn += 1;
        }
        let mut ev = NewEvent::success("advisory.load", "advisories".into(), Scope::Platform);
        ev.detail = format!(
            "loaded={} unchanged={} withdrawn={}",
            report.loaded, report.unchanged, report.withdrawn
        );
        w.commit(actor, ev).await
    }

    /// The advisories that name any of `packages` (ecosystem, normalized name).
    pub async fn advisories_for(&self, packages: &[(Ecosystem, String)]) -> Result<Vec<Advisory>> {
        let mut by_eco: BTreeMap<Ecosystem, Vec<&str>> = BTreeMap::new();
        for (eco, name) in packages {
            by_eco.entry(*eco).or_default().push(name);
        }
        let mut out = BTreeMap::new();
        for (eco, mut names) in by_eco {
            names.sort();
            names.dedup();
            for chunk in names.chunks(CHUNK) {
                let params: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
                let sql = format!(
                    "SELECT a.id, a.doc FROM advisory_packages p JOIN advisories a ON a.id = p.advisory \
                     WHERE p.ecosystem = $1 AND p.package IN ({})",
                    params.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(eco.as_str());
                for n in chunk {
                    q = q.bind(*n);
                }
                for row in q.fetch_all(&self.pool).await? {
                    let id: String = row.try_get("id")?;
                    if let std::collections::btree_map::Entry::Vacant(slot) = out.entry(id) {
                        let doc: String = row.try_get("doc")?;
                        let a: Advisory =
                            serde_json::from_str(&doc).map_err(|e| corrupt(slot.key(), e))?;
                        slot.insert(a);
                    }
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// One advisory.
    pub async fn advisory(&self, id: &str) -> Result<Advisory> {
        let row = sqlx::query("SELECT doc FROM advisories WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!("advisory {} not found", model::name::truncate(id)))
            })?;
        serde_json::from_str(&row.try_get::<String, _>("doc")?).map_err(|e| corrupt(id, e))
    }

    /// How many advisories the database holds (what a scan reports it ran against).
    pub async fn advisory_count(&self) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM advisories")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok(n as u64)
    }

    /// How large the database is, and when it was last loaded.
    pub async fn advisory_status(&self) -> Result<DatabaseStatus> {
        let row = sqlx::query("SELECT COUNT(*) AS n, MAX(loaded_at) AS at FROM advisories")
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        let at: Option<String> = row.try_get("at")?;
        let mut by_ecosystem = Vec::new();
        for r in sqlx::query(
            "SELECT ecosystem, COUNT(DISTINCT advisory) AS n FROM advisory_packages GROUP BY ecosystem ORDER BY ecosystem",
        )
        .fetch_all(&self.pool)
        .await?
        {
            by_ecosystem.push((r.try_get("ecosystem")?, r.try_get::<i64, _>("n")? as u64));
        }
        Ok(DatabaseStatus {
            advisories: n as u64,
            by_ecosystem,
            loaded_at: at.as_deref().map(parse_ts).transpose()?,
        })
    }

    /// The artifact policy (the default until one is set).
    pub async fn artifact_policy(&self) -> Result<ArtifactPolicy> {
        match self.setting(POLICY).await? {
            None => Ok(ArtifactPolicy::default()),
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("setting {POLICY}: {e}"))),
        }
    }

    /// Sets the artifact policy (audited).
    pub async fn set_artifact_policy(&self, actor: &Actor, p: &ArtifactPolicy) -> Result<()> {
        let v = serde_json::to_string(p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.set_setting(actor, POLICY, Some(&v)).await
    }
}
