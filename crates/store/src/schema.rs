//! Schema migrations, run on every start. Each migration is a list of statements applied in
//! one transaction together with its row in `schema_migrations`.
//!
//! The DDL is written once for both engines: only TEXT and BIGINT columns, explicit keys
//! (no engine-specific auto-increment), times as fixed-width RFC 3339 UTC text (which
//! sorts like the time it names). A migration may add statements for one engine
//! (`SQLITE_ONLY`) where the same schema is stored better another way; what the store's
//! queries see stays the same. Never edit a released migration; add a new one.

use sqlx::{AnyConnection, Connection, Row};

use crate::{audit::GENESIS_HASH, Engine, Result, Store, StoreError};

const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE tenants (
            name TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL)",
            "CREATE TABLE environments (
            tenant TEXT NOT NULL REFERENCES tenants(name),
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (tenant, name))",
            "CREATE TABLE accounts (
            name TEXT PRIMARY KEY,
            tenant TEXT REFERENCES tenants(name),
            description TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL)",
            "CREATE INDEX accounts_tenant ON accounts(tenant)",
            "CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts(name),
            hash TEXT NOT NULL UNIQUE,
            description TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            expires_at TEXT,
            revoked_at TEXT)",
            "CREATE INDEX tokens_account ON tokens(account)",
            "CREATE TABLE grants (
            role TEXT NOT NULL,
            principal TEXT NOT NULL REFERENCES accounts(name),
            scope TEXT NOT NULL,
            tenant TEXT,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (role, principal, scope))",
            "CREATE INDEX grants_principal ON grants(principal)",
            "CREATE INDEX grants_tenant ON grants(tenant)",
            "CREATE TABLE audit_events (
            seq BIGINT PRIMARY KEY,
            time TEXT NOT NULL,
            principal TEXT NOT NULL,
            action TEXT NOT NULL,
            resource TEXT NOT NULL,
            scope TEXT NOT NULL,
            outcome TEXT NOT NULL,
            request_id TEXT NOT NULL,
            source TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)",
            "CREATE INDEX audit_time ON audit_events(time)",
            "CREATE TABLE audit_head (
            id BIGINT PRIMARY KEY,
            seq BIGINT NOT NULL,
            hash TEXT NOT NULL)",
            "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '$GENESIS')",
        ],
    ),
    (
        2,
        &[
            // The seal's public configuration (one row); never the root key in plaintext.
            "CREATE TABLE seal (
            id BIGINT PRIMARY KEY,
            config TEXT NOT NULL,
            created_at TEXT NOT NULL)",
            // Every key of the hierarchy: environment keys (wrapped by the root key), KMS and
            // secret keys (wrapped by their environment's key).
            "CREATE TABLE keys (
            id TEXT PRIMARY KEY,
            purpose TEXT NOT NULL,
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            parent TEXT,
            state TEXT NOT NULL,
            current_version BIGINT NOT NULL,
            min_decrypt_version BIGINT NOT NULL,
            rotation_days BIGINT NOT NULL,
            next_rotation_at TEXT,
            deletion_at TEXT,
            description TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL)",
            "CREATE INDEX keys_scope ON keys(scope, purpose)",
            "CREATE TABLE key_versions (
            key_id TEXT NOT NULL REFERENCES keys(id),
            version BIGINT NOT NULL,
            wrapped TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (key_id, version))",
            "CREATE TABLE secrets (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            key_id TEXT NOT NULL REFERENCES keys(id),
            state TEXT NOT NULL,
            current_version BIGINT NOT NULL,
            previous_version BIGINT,
            description TEXT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL,
            deleted_at TEXT,
            purge_at TEXT,
            PRIMARY KEY (scope, name))",
            "CREATE TABLE secret_versions (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            version BIGINT NOT NULL,
            ciphertext TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size BIGINT NOT NULL,
            key_version BIGINT NOT NULL,
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            PRIMARY KEY (scope, name, version))",
            "CREATE TABLE secret_requests (
            id TEXT PRIMARY KEY,
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            state TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            requested_at TEXT NOT NULL,
            closed_by TEXT,
            closed_at TEXT)",
            "CREATE INDEX secret_requests_scope ON secret_requests(scope, state)",
        ],
    ),
    (
        3,
        &[
            // The edge's routes; `spec` is the RouteSpec document (JSON).
            "CREATE TABLE routes (
                scope TEXT NOT NULL,
                name TEXT NOT NULL,
                tenant TEXT NOT NULL,
                host TEXT NOT NULL,
                spec TEXT NOT NULL,
                created_at TEXT NOT NULL,
                created_by TEXT NOT NULL,
                PRIMARY KEY (scope, name))",
            "CREATE INDEX routes_host ON routes(host)",
            // Generation counters that data planes poll to know when to rebuild.
            "CREATE TABLE generations (
                name TEXT PRIMARY KEY,
                value BIGINT NOT NULL)",
            "INSERT INTO generations (name, value) VALUES ('routes', 0)",
        ],
    ),
    (
        4,
        &[
            // TLS certificates of the edge: public chain, key only as a keyring ciphertext.
            "CREATE TABLE certificates (
                scope TEXT NOT NULL,
                name TEXT NOT NULL,
                tenant TEXT NOT NULL,
                domains TEXT NOT NULL,
                source TEXT NOT NULL,
                status TEXT NOT NULL,
                status_message TEXT,
                challenge TEXT,
                chain_pem TEXT,
                key_ciphertext TEXT,
                not_before TEXT,
                not_after TEXT,
                fingerprint TEXT,
                renew_at TEXT,
                created_at TEXT NOT NULL,
                created_by TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (scope, name))",
            // Which tenant holds a DNS name (a name belongs to one tenant).
            "CREATE TABLE certificate_domains (
                domain TEXT NOT NULL,
                scope TEXT NOT NULL,
                name TEXT NOT NULL,
                tenant TEXT NOT NULL,
                PRIMARY KEY (domain, scope, name))",
            "INSERT INTO generations (name, value) VALUES ('certificates', 0)",
            // ACME accounts, one per directory; credentials wrapped by the root key.
            "CREATE TABLE acme_accounts (
                directory TEXT PRIMARY KEY,
                credentials TEXT NOT NULL,
                created_at TEXT NOT NULL)",
            // Replicas of services, registered by the runtime (or by hand).
            "CREATE TABLE replicas (
                scope TEXT NOT NULL,
                service TEXT NOT NULL,
                address TEXT NOT NULL,
                state TEXT NOT NULL,
                registered_at TEXT NOT NULL,
                registered_by TEXT NOT NULL,
                PRIMARY KEY (scope, service, address))",
        ],
    ),
    (
        5,
        &[
            // The artifact registry: immutable versions; blobs live in the object store,
            // encrypted, named by the SHA-256 of their plaintext.
            "CREATE TABLE artifacts (
                tenant TEXT NOT NULL,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                digest TEXT NOT NULL,
                size BIGINT NOT NULL,
                files BIGINT NOT NULL,
                unpacked_size BIGINT NOT NULL,
                manifest TEXT NOT NULL,
                created_at TEXT NOT NULL,
                created_by TEXT NOT NULL,
                PRIMARY KEY (tenant, name, version))",
            "CREATE INDEX artifacts_digest ON artifacts(tenant, digest)",
        ],
    ),
    (
        6,
        &[
            // Services: desired state (which revision, how many replicas, running or not).
            "CREATE TABLE services (
                scope TEXT NOT NULL,
                name TEXT NOT NULL,
                state TEXT NOT NULL,
                desired_replicas BIGINT NOT NULL,
                target_revision BIGINT NOT NULL,
                stable_revision BIGINT,
                message TEXT,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (scope, name))",
            // Immutable revisions: what to run (secret references, never values).
            "CREATE TABLE revisions (
                scope TEXT NOT NULL,
                service TEXT NOT NULL,
                number BIGINT NOT NULL,
                spec TEXT NOT NULL,
                status TEXT NOT NULL,
                message TEXT,
                created_at TEXT NOT NULL,
                created_by TEXT NOT NULL,
                PRIMARY KEY (scope, service, number))",
            "INSERT INTO generations (name, value) VALUES ('services', 0)",
        ],
    ),
    (
        7,
        &[
            // Installation-wide settings (e.g. the edge's TLS policy), as JSON values.
            "CREATE TABLE settings (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                updated_by TEXT NOT NULL)",
        ],
    ),
    (
        8,
        &[
            // What an artifact's lockfiles pin (JSON); NULL for versions pushed before.
            "ALTER TABLE artifacts ADD COLUMN inventory TEXT",
            // The offline vulnerability database (normalized OSV records) and, to find the
            // advisories of a package without reading them all, their affected packages.
            "CREATE TABLE advisories (
                id TEXT PRIMARY KEY,
                modified TEXT NOT NULL,
                doc TEXT NOT NULL,
                loaded_at TEXT NOT NULL)",
            "CREATE TABLE advisory_packages (
                ecosystem TEXT NOT NULL,
                package TEXT NOT NULL,
                advisory TEXT NOT NULL,
                PRIMARY KEY (ecosystem, package, advisory))",
            "CREATE INDEX advisory_packages_advisory ON advisory_packages(advisory)",
            // The last events of one resource (a service's status shows them).
            "CREATE INDEX audit_events_resource ON audit_events(resource, seq)",
        ],
    ),
    // On SQLite, the audit trail's sequence number becomes the table's row id (see
    // `SQLITE_ONLY`); nothing changes on PostgreSQL.
    (9, &[]),
];

/// Statements a migration runs on SQLite only, after its statements of both engines.
///
/// 9: SQLite keys a table by a hidden row id unless its key is declared exactly `INTEGER
/// PRIMARY KEY`; `seq BIGINT PRIMARY KEY` made it keep a second B-tree of sequence numbers
/// beside the table, one more page written (and synced, and copied back from the log) with
/// every audit event. Rebuilt with `seq` as the row id (a 64-bit integer on SQLite, as
/// BIGINT is), rows and indexes unchanged.
const SQLITE_ONLY: &[(i64, &[&str])] = &[(
    9,
    &[
        "CREATE TABLE audit_events_v9 (
            seq INTEGER PRIMARY KEY,
            time TEXT NOT NULL,
            principal TEXT NOT NULL,
            action TEXT NOT NULL,
            resource TEXT NOT NULL,
            scope TEXT NOT NULL,
            outcome TEXT NOT NULL,
            request_id TEXT NOT NULL,
            source TEXT NOT NULL,
            detail TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL)",
        "INSERT INTO audit_events_v9 (seq, time, principal, action, resource, scope, outcome, \
         request_id, source, detail, prev_hash, hash) \
         SELECT seq, time, principal, action, resource, scope, outcome, request_id, source, \
         detail, prev_hash, hash FROM audit_events ORDER BY seq",
        "DROP TABLE audit_events",
        "ALTER TABLE audit_events_v9 RENAME TO audit_events",
        "CREATE INDEX audit_time ON audit_events(time)",
        "CREATE INDEX audit_events_resource ON audit_events(resource, seq)",
    ],
)];

/// Key of the PostgreSQL advisory lock that serializes migrations across control planes.
const MIGRATION_LOCK: i64 = 0x6761_6e74_7279;

pub(crate) async fn migrate(store: &Store) -> Result<()> {
    let _guard = store.write_lock.lock().await;
    // One connection for the whole run, so that the session-level advisory lock (PostgreSQL)
    // covers every migration.
    let mut conn = store.pool.acquire().await?;
    if store.engine == Engine::Postgres {
        sqlx::query(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .execute(&mut *conn)
            .await?;
    }
    let result = run_migrations(store, &mut conn).await;
    if store.engine == Engine::Postgres {
        sqlx::query(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .execute(&mut *conn)
            .await?;
    }
    result
}

async fn run_migrations(store: &Store, conn: &mut AnyConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations")
        .fetch_one(&mut *conn)
        .await?
        .try_get("v")?;
    let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if applied > newest {
        return Err(StoreError::Corrupt(format!(
            "schema version {applied} is newer than this binary knows ({newest}); upgrade gantry"
        )));
    }
    for (version, statements) in MIGRATIONS.iter().filter(|m| m.0 > applied) {
        let engine_only: &[&str] = match store.engine {
            Engine::Sqlite => SQLITE_ONLY
                .iter()
                .find(|m| m.0 == *version)
                .map_or(&[], |m| m.1),
            Engine::Postgres => &[],
        };
        let mut tx = conn.begin().await?;
        for stmt in statements.iter().chain(engine_only) {
            let stmt = stmt.replace("$GENESIS", GENESIS_HASH);
            sqlx::query(&stmt).execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::ts(store.now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}
