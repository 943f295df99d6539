//! Storage of the edge's TLS certificates and of service replicas.
//!
//! A certificate row holds the public chain in PEM and the private key only as a `gk1`
//! ciphertext made by the keyring (this crate never sees a plaintext key). A DNS name
//! belongs to one tenant, as hosts do for routes: a certificate for a name another tenant
//! routes or holds a certificate for is refused. Every change bumps the `certificates`
//! generation (replicas bump `routes`) so the edge knows to rebuild its snapshot.

use model::certs::{CertSource, CertStatus, Challenge, ReplicaInfo, ReplicaState};
use model::Scope;
use sqlx::any::AnyRow;
use sqlx::Row;
use time::OffsetDateTime;

use crate::audit::NewEvent;
use crate::routes::bump;
use crate::{parse_ts, ts, Actor, Result, Store, StoreError};

const HTTPS_POLICY: &str = "edge.https_policy";

/// A certificate as stored.
#[derive(Clone, PartialEq)]
pub struct CertRecord {
    pub scope: Scope,
    pub name: String,
    pub domains: Vec<String>,
    pub source: CertSource,
    pub status: CertStatus,
    pub status_message: Option<String>,
    pub challenge: Option<Challenge>,
    /// The issued material, once there is one.
    pub material: Option<CertMaterial>,
    pub renew_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for CertRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CertRecord({}/{}, {:?})",
            self.scope, self.name, self.status
        )
    }
}

/// A certificate chain and its encrypted key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertMaterial {
    pub chain_pem: String,
    /// `gk1` ciphertext (base64) of the PKCS#8 key, made by the keyring.
    pub key_ciphertext: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub fingerprint: String,
}

const COLS: &str = "scope, name, domains, source, status, status_message, challenge, chain_pem, \
                    key_ciphertext, not_before, not_after, fingerprint, renew_at, created_at, \
                    created_by, updated_at";

fn enum_str<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn enum_parse<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}

fn opt_ts(row: &AnyRow, col: &str) -> Result<Option<OffsetDateTime>> {
    row.try_get::<Option<String>, _>(col)?
        .map(|s| parse_ts(&s))
        .transpose()
}

fn row_to_cert(row: &AnyRow) -> Result<CertRecord> {
    let scope_s: String = row.try_get("scope")?;
    let scope = Scope::parse(&scope_s).map_err(|e| StoreError::Corrupt(e.message))?;
    let name: String = row.try_get("name")?;
    let domains: Vec<String> = serde_json::from_str(&row.try_get::<String, _>("domains")?)
        .map_err(|e| StoreError::Corrupt(format!("certificate {scope_s}/{name}: {e}")))?;
    let material = match (
        row.try_get::<Option<String>, _>("chain_pem")?,
        row.try_get::<Option<String>, _>("key_ciphertext")?,
        opt_ts(row, "not_before")?,
        opt_ts(row, "not_after")?,
        row.try_get::<Option<String>, _>("fingerprint")?,
    ) {
        (Some(chain_pem), Some(key_ciphertext), Some(not_before), Some(not_after), Some(fp)) => {
            Some(CertMaterial {
                chain_pem,
                key_ciphertext,
                not_before,
                not_after,
                fingerprint: fp,
            })
        }
        _ => None,
    };
    Ok(CertRecord {
        scope,
        name,
        domains,
        source: enum_parse(&row.try_get::<String, _>("source")?, "certificate source")?,
        status: enum_parse(&row.try_get::<String, _>("status")?, "certificate status")?,
        status_message: row.try_get("status_message")?,
        challenge: row
            .try_get::<Option<String>, _>("challenge")?
            .map(|c| enum_parse(&c, "challenge"))
            .transpose()?,
        material,
        renew_at: opt_ts(row, "renew_at")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
        created_by: row.try_get("created_by")?,
        updated_at: parse_ts(&row.try_get::<String, _>("updated_at")?)?,
    })
}

fn tenant_of(scope: &Scope) -> Result<&str> {
    match scope {
        Scope::Environment(t, _) => Ok(t.as_str()),
        _ => Err(StoreError::Unprocessable(
            "certificates and replicas live in an environment".into(),
        )),
    }
}

/// A change to a certificate's material or state (`None`: unchanged).
#[derive(Default)]
pub struct CertUpdate<'a> {
    pub material: Option<&'a CertMaterial>,
    pub status: Option<CertStatus>,
    /// `Some(None)` clears the message.
    pub status_message: Option<Option<&'a str>>,
    pub renew_at: Option<Option<OffsetDateTime>>,
}

impl Store {
    /// Adds a certificate record (with or without material yet).
    pub async fn create_cert(&self, actor: &Actor, rec: &CertRecord) -> Result<()> {
        let tenant = tenant_of(&rec.scope)?.to_string();
        let scope = rec.scope.to_string();
        let mut w = self.begin_write().await?;
        w.require_environment(&rec.scope, "certificates").await?;
        if sqlx::query("SELECT 1 AS x FROM certificates WHERE scope = $1 AND name = $2")
            .bind(&scope)
            .bind(&rec.name)
            .fetch_optional(&mut *w.tx)
            .await?
            .is_some()
        {
            return Err(StoreError::AlreadyExists(format!(
                "certificate {scope}/{} already exists",
                rec.name
            )));
        }
        for d in &rec.domains {
            let other = sqlx::query(
                "SELECT tenant FROM certificate_domains WHERE domain = $1 AND tenant <> $2 \
                 UNION ALL SELECT tenant FROM routes WHERE host = $1 AND tenant <> $2 LIMIT 1",
            )
            .bind(d)
            .bind(&tenant)
            .fetch_optional(&mut *w.tx)
            .await?;
            if other.is_some() {
                return Err(StoreError::Conflict(format!(
                    "{d} belongs to another tenant"
                )));
            }
        }
        let domains =
            serde_json::to_string(&rec.domains).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let m = rec.material.as_ref();
        sqlx::query(&format!(
            "INSERT INTO certificates (tenant, {COLS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(&tenant)
        .bind(&scope)
        .bind(&rec.name)
        .bind(&domains)
        .bind(enum_str(&rec.source))
        .bind(enum_str(&rec.status))
        .bind(rec.status_message.as_deref())
        .bind(rec.challenge.as_ref().map(enum_str))
        .bind(m.map(|m| m.chain_pem.as_str()))
        .bind(m.map(|m| m.key_ciphertext.as_str()))
        .bind(m.map(|m| ts(m.not_before)))
        .bind(m.map(|m| ts(m.not_after)))
        .bind(m.map(|m| m.fingerprint.as_str()))
        .bind(rec.renew_at.map(ts))
        .bind(ts(rec.created_at))
        .bind(&rec.created_by)
        .bind(ts(rec.updated_at))
        .execute(&mut *w.tx)
        .await?;
        for d in &rec.domains {
            sqlx::query(
                "INSERT INTO certificate_domains (domain, scope, name, tenant) VALUES ($1, $2, $3, $4)",
            )
            .bind(d)
            .bind(&scope)
            .bind(&rec.name)
            .bind(&tenant)
            .execute(&mut *w.tx)
            .await?;
        }
        bump(&mut w.tx, "certificates").await?;
        let mut ev = NewEvent::success(
            "certificate.create",
            format!("certificates/{scope}/{}", rec.name),
            rec.scope.clone(),
        );
        ev.detail = format!(
            "source={} domains={}",
            enum_str(&rec.source),
            rec.domains.join(",")
        );
        w.commit(actor, ev).await
    }

    /// Changes a certificate's material or state; `action` names the audit event
    /// (`certificate.renew`, `certificate.issue-failed`, ...).
    pub async fn update_cert(
        &self,
        actor: &Actor,
        scope: &Scope,
        name: &str,
        change: &CertUpdate<'_>,
        action: &str,
        detail: String,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLS} FROM certificates WHERE scope = $1 AND name = $2"
        ))
        .bind(scope.to_string())
        .bind(name)
        .fetch_optional(&mut *w.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate {scope}/{name} not found")))?;
        let mut rec = row_to_cert(&row)?;
        if let Some(m) = change.material {
            rec.material = Some(m.clone());
        }
        if let Some(s) = change.status {
            rec.status = s;
        }
        if let Some(m) = change.status_message {
            rec.status_message = m.map(str::to_string);
        }
        if let Some(r) = change.renew_at {
            rec.renew_at = r;
        }
        let m = rec.material.as_ref();
        sqlx::query(
            "UPDATE certificates SET status = $1, status_message = $2, chain_pem = $3, \
             key_ciphertext = $4, not_before = $5, not_after = $6, fingerprint = $7, \
             renew_at = $8, updated_at = $9 WHERE scope = $10 AND name = $11",
        )
        .bind(enum_str(&rec.status))
        .bind(rec.status_message.as_deref())
        .bind(m.map(|m| m.chain_pem.as_str()))
        .bind(m.map(|m| m.key_ciphertext.as_str()))
        .bind(m.map(|m| ts(m.not_before)))
        .bind(m.map(|m| ts(m.not_after)))
        .bind(m.map(|m| m.fingerprint.as_str()))
        .bind(rec.renew_at.map(ts))
        .bind(ts(self.now()))
        .bind(scope.to_string())
        .bind(name)
        .execute(&mut *w.tx)
        .await?;
        bump(&mut w.tx, "certificates").await?;
        let mut ev = NewEvent::success(
            action,
            format!("certificates/{scope}/{name}"),
            scope.clone(),
        );
        ev.detail = detail;
        w.commit(actor, ev).await
    }

    pub async fn certs(&self, scope: &Scope) -> Result<Vec<CertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM certificates WHERE scope = $1 ORDER BY name"
        ))
        .bind(scope.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_cert).collect()
    }

    /// Every certificate of every tenant (for the edge's snapshot and the renewer).
    pub async fn all_certs(&self) -> Result<Vec<CertRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLS} FROM certificates ORDER BY scope, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_cert).collect()
    }

    pub async fn cert(&self, scope: &Scope, name: &str) -> Result<CertRecord> {
        sqlx::query(&format!(
            "SELECT {COLS} FROM certificates WHERE scope = $1 AND name = $2"
        ))
        .bind(scope.to_string())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| row_to_cert(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("certificate {scope}/{name} not found")))
    }

    pub async fn delete_cert(&self, actor: &Actor, scope: &Scope, name: &str) -> Result<()> {
        let mut w = self
            .begin_write()
            .await?
            .change_one(
                sqlx::query("DELETE FROM certificates WHERE scope = $1 AND name = $2")
                    .bind(scope.to_string())
                    .bind(name),
                || format!("certificate {scope}/{name} not found"),
            )
            .await?;
        sqlx::query("DELETE FROM certificate_domains WHERE scope = $1 AND name = $2")
            .bind(scope.to_string())
            .bind(name)
            .execute(&mut *w.tx)
            .await?;
        bump(&mut w.tx, "certificates").await?;
        w.commit(
            actor,
            NewEvent::success(
                "certificate.delete",
                format!("certificates/{scope}/{name}"),
                scope.clone(),
            ),
        )
        .await
    }

    /// The TLS policy of every edge's HTTPS listener, when set centrally.
    pub async fn https_policy(&self) -> Result<Option<model::certs::HttpsPolicy>> {
        Ok(self
            .setting(HTTPS_POLICY)
            .await?
            .and_then(|v| model::certs::HttpsPolicy::parse(&v).ok()))
    }

    /// Sets (or clears) the edges' TLS policy; edges apply it to new connections.
    pub async fn set_https_policy(
        &self,
        actor: &Actor,
        policy: Option<model::certs::HttpsPolicy>,
    ) -> Result<()> {
        self.set_setting(actor, HTTPS_POLICY, policy.map(|p| p.as_str()))
            .await
    }

    /// An installation-wide setting, if set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get("value"))
            .transpose()?)
    }

    /// Sets (or, with `None`, clears) an installation-wide setting, audited.
    pub async fn set_setting(&self, actor: &Actor, name: &str, value: Option<&str>) -> Result<()> {
        let mut w = self.begin_write().await?;
        sqlx::query("DELETE FROM settings WHERE name = $1")
            .bind(name)
            .execute(&mut *w.tx)
            .await?;
        if let Some(v) = value {
            sqlx::query(
                "INSERT INTO settings (name, value, updated_at, updated_by) VALUES ($1, $2, $3, $4)",
            )
            .bind(name)
            .bind(v)
            .bind(ts(self.now()))
            .bind(&actor.principal)
            .execute(&mut *w.tx)
            .await?;
        }
        let mut ev = NewEvent::success(
            "setting.update",
            format!("settings/{name}"),
            Scope::Platform,
        );
        ev.detail = format!("{name}={}", value.unwrap_or("(default)"));
        w.commit(actor, ev).await
    }

    /// The stored (root-wrapped) ACME account credentials for `directory`, if any.
    pub async fn acme_account(&self, directory: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT credentials FROM acme_accounts WHERE directory = $1")
                .bind(directory)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get("credentials"))
                .transpose()?,
        )
    }

    /// Stores the ACME account of `directory` (wrapped by the keyring), replacing any.
    pub async fn save_acme_account(
        &self,
        actor: &Actor,
        directory: &str,
        wrapped: &str,
    ) -> Result<()> {
        let mut w = self.begin_write().await?;
        sqlx::query("DELETE FROM acme_accounts WHERE directory = $1")
            .bind(directory)
            .execute(&mut *w.tx)
            .await?;
        sqlx::query(
            "INSERT INTO acme_accounts (directory, credentials, created_at) VALUES ($1, $2, $3)",
        )
        .bind(directory)
        .bind(wrapped)
        .bind(ts(self.now()))
        .execute(&mut *w.tx)
        .await?;
        let mut ev = NewEvent::success(
            "acme.account-create",
            "acme/account".into(),
            Scope::Platform,
        );
        ev.detail = format!("directory={directory}");
        w.commit(actor, ev).await
    }

    /// Registers a replica of `service`; the edge routes to it within a poll interval.
    pub async fn register_replica(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &str,
        address: &str,
        state: ReplicaState,
    ) -> Result<ReplicaInfo> {
        let mut w = self.begin_write().await?;
        w.require_environment(scope, "replicas").await?;
        let scope_s = scope.to_string();
        if sqlx::query(
            "SELECT 1 AS x FROM replicas WHERE scope = $1 AND service = $2 AND address = $3",
        )
        .bind(&scope_s)
        .bind(service)
        .bind(address)
        .fetch_optional(&mut *w.tx)
        .await?
        .is_some()
        {
            return Err(StoreError::AlreadyExists(format!(
                "replica {address} of {scope}/{service} is already registered"
            )));
        }
        let now = parse_ts(&ts(self.now()))?;
        sqlx::query(
            "INSERT INTO replicas (scope, service, address, state, registered_at, registered_by) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&scope_s)
        .bind(service)
        .bind(address)
        .bind(enum_str(&state))
        .bind(ts(now))
        .bind(&actor.principal)
        .execute(&mut *w.tx)
        .await?;
        bump(&mut w.tx, "routes").await?;
        let mut ev = NewEvent::success(
            "replica.register",
            format!("services/{scope}/{service}/replicas/{address}"),
            scope.clone(),
        );
        ev.detail = format!("state={}", enum_str(&state));
        w.commit(actor, ev).await?;
        Ok(ReplicaInfo {
            service: format!("{scope}/{service}"),
            address: address.to_string(),
            state,
            registered_at: now,
            registered_by: actor.principal.clone(),
        })
    }

    /// Sets a replica's state (`draining`: no new requests).
    pub async fn update_replica(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &str,
        address: &str,
        state: ReplicaState,
    ) -> Result<ReplicaInfo> {
        let mut w = self
            .begin_write()
            .await?
            .change_one(sqlx::query(
            "UPDATE replicas SET state = $1 WHERE scope = $2 AND service = $3 AND address = $4",
        )
        .bind(enum_str(&state))
        .bind(scope.to_string())
        .bind(service)
        .bind(address), || {
                format!(
                "replica {address} of {scope}/{service} not found"
            )
            })
            .await?;
        bump(&mut w.tx, "routes").await?;
        let mut ev = NewEvent::success(
            "replica.update",
            format!("services/{scope}/{service}/replicas/{address}"),
            scope.clone(),
        );
        ev.detail = format!("state={}", enum_str(&state));
        w.commit(actor, ev).await?;
        self.replicas(scope, service)
            .await?
            .into_iter()
            .find(|r| r.address == address)
            .ok_or_else(|| StoreError::NotFound(format!("replica {address} not found")))
    }

    /// Deregisters a replica: the edge drains it (in-flight requests finish).
    pub async fn delete_replica(
        &self,
        actor: &Actor,
        scope: &Scope,
        service: &str,
        address: &str,
    ) -> Result<()> {
        let q =
            sqlx::query("DELETE FROM replicas WHERE scope = $1 AND service = $2 AND address = $3")
                .bind(scope.to_string())
                .bind(service)
                .bind(address);
        let mut w = self
            .begin_write()
            .await?
            .change_one(q, || {
                format!("replica {address} of {scope}/{service} not found")
            })
            .await?;
        bump(&mut w.tx, "routes").await?;
        w.commit(
            actor,
            NewEvent::success(
                "replica.deregister",
                format!("services/{scope}/{service}/replicas/{address}"),
                scope.clone(),
            ),
        )
        .await
    }

    pub async fn replicas(&self, scope: &Scope, service: &str) -> Result<Vec<ReplicaInfo>> {
        let rows = sqlx::query(
            "SELECT scope, service, address, state, registered_at, registered_by FROM replicas \
             WHERE scope = $1 AND service = $2 ORDER BY address",
        )
        .bind(scope.to_string())
        .bind(service)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_replica).collect()
    }

    /// Every replica of every service (for the edge's snapshot).
    pub async fn all_replicas(&self) -> Result<Vec<ReplicaInfo>> {
        let rows = sqlx::query(
            "SELECT scope, service, address, state, registered_at, registered_by FROM replicas \
             ORDER BY scope, service, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_replica).collect()
    }
}

fn row_to_replica(row: &AnyRow) -> Result<ReplicaInfo> {
    let scope: String = row.try_get("scope")?;
    let service: String = row.try_get("service")?;
    Ok(ReplicaInfo {
        service: format!("{scope}/{service}"),
        address: row.try_get("address")?,
        state: enum_parse(&row.try_get::<String, _>("state")?, "replica state")?,
        registered_at: parse_ts(&row.try_get::<String, _>("registered_at")?)?,
        registered_by: row.try_get("registered_by")?,
    })
}
