//! A store, a keyring and a manual clock in a temp dir.

use std::sync::Arc;

use keys::seal::Argon2Params;
use model::clock::ManualClock;
use model::types::EnvKind;
use model::{Name, Scope};
use secrets::{Keyring, SealSetup};
use store::{Actor, Store};

pub struct H {
    pub dir: tempfile::TempDir,
    pub store: Arc<Store>,
    pub clock: Arc<ManualClock>,
    pub kr: Arc<Keyring>,
    pub url: String,
}

pub const FAST_ARGON: Argon2Params = Argon2Params {
    m_kib: 1024,
    t: 1,
    p: 1,
};

pub fn actor(p: &str) -> Actor {
    Actor {
        principal: p.into(),
        request_id: "test".into(),
        source: "127.0.0.1:1".into(),
    }
}

pub fn scope(s: &str) -> Scope {
    Scope::parse(s).unwrap()
}

pub fn file_setup(dir: &std::path::Path) -> SealSetup {
    SealSetup::File {
        key_path: dir.join("seal.key"),
    }
}

impl H {
    pub async fn new() -> H {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gantry.db").display());
        let setup = file_setup(dir.path());
        H::with(dir, url, setup).await
    }

    pub async fn with(dir: tempfile::TempDir, url: String, setup: SealSetup) -> H {
        let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
        let store = Arc::new(Store::open_with_clock(&url, clock.clone()).await.unwrap());
        let kr = Arc::new(
            Keyring::open(store.clone(), setup, clock.clone())
                .await
                .unwrap(),
        );
        let a = actor("admin");
        for t in ["acme", "globex"] {
            let tn = Name::parse(t).unwrap();
            if store.tenant(&tn).await.is_err() {
                store.create_tenant(&a, &tn).await.unwrap();
                for e in ["staging", "production"] {
                    store
                        .create_environment(&a, &tn, &Name::parse(e).unwrap(), EnvKind::Staging)
                        .await
                        .unwrap();
                }
            }
        }
        H {
            dir,
            store,
            clock,
            kr,
            url,
        }
    }

    /// Reopens store and keyring on the same data (a restart).
    pub async fn reopen(self, setup: SealSetup) -> H {
        let H {
            dir, store, url, ..
        } = self;
        store.close().await;
        H::with(dir, url, setup).await
    }

    pub async fn sql(&self, q: &str) {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        sqlx::query(q).execute(&pool).await.unwrap();
        pool.close().await;
    }

    pub async fn sql_string(&self, q: &str) -> String {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&self.url).await.unwrap();
        let s: String = sqlx::query(q)
            .fetch_one(&pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        pool.close().await;
        s
    }
}

pub fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A fresh database on the PostgreSQL server named by `GANTRY_TEST_PG` (`. scripts/pg.sh`);
/// `None` (the test is skipped) only with `GANTRY_SKIP_PG=1`.
pub async fn fresh_pg() -> Option<String> {
    use sqlx::Connection;
    let admin_url = match std::env::var("GANTRY_TEST_PG") {
        Ok(u) if !u.is_empty() => u,
        _ if std::env::var("GANTRY_SKIP_PG").as_deref() == Ok("1") => return None,
        _ => panic!("GANTRY_TEST_PG is not set: run `. scripts/pg.sh` (or GANTRY_SKIP_PG=1)"),
    };
    sqlx::any::install_default_drivers();
    let db = format!("gantry_s_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    Some(format!("{base}/{db}"))
}
