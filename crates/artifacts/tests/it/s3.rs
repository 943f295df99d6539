//! The registry on an S3-compatible object store: moto's S3 server (PyPI `moto[server]`,
//! installed by scripts/test.sh) on loopback. Blobs land in the bucket encrypted and come
//! back verified; a blob changed in the bucket is refused.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use artifacts::Registry;
use model::clock::SystemClock;
use model::Name;
use secrets::{Keyring, SealSetup};
use store::Store;

use crate::{actor, r, targz, SECRET_MARK};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn blobs_in_an_s3_bucket_are_encrypted_and_verified() {
    if Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: moto_server is missing; scripts/test.sh installs it (pip install 'moto[server]')");
        return;
    }
    let port = free_port();
    let _moto = Moto(
        Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = Instant::now();
    // Create the bucket (moto takes unsigned requests).
    loop {
        if let Ok(resp) = http.put(format!("{endpoint}/gantry")).send().await {
            if resp.status().is_success() {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY: only this test reads the AWS_* variables of this process.
    for (k, v) in [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    let objects = artifacts::open_objects("s3://gantry/registry").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Arc::new(Store::open(&url).await.unwrap());
    store
        .create_tenant(&actor(), &Name::parse("acme").unwrap())
        .await
        .unwrap();
    let kr = Arc::new(
        Keyring::open(
            store.clone(),
            SealSetup::File {
                key_path: dir.path().join("seal.key"),
            },
            Arc::new(SystemClock),
        )
        .await
        .unwrap(),
    );
    let reg = Registry::new(store, kr, objects, Arc::new(SystemClock));
    let v1 = targz(&[("app", SECRET_MARK, 0o755)]);
    let (info, _) = reg
        .push(&actor(), &r("acme/app@1"), v1.clone())
        .await
        .unwrap();
    let (_, back) = reg.pull(&r("acme/app@1")).await.unwrap();
    assert_eq!(back, v1);
    // What the bucket holds is ciphertext (read with a client of the bucket's own).
    let raw = artifacts::open_objects("s3://gantry").unwrap();
    let hex = info.digest.strip_prefix("sha256:").unwrap();
    let key =
        object_store::path::Path::from(format!("registry/tenants/acme/artifacts/sha256/{hex}"));
    let stored = raw.get(&key).await.unwrap().bytes().await.unwrap();
    assert!(!stored.is_empty());
    assert!(!stored.windows(SECRET_MARK.len()).any(|w| w == SECRET_MARK));
    // Changed in the bucket: refused.
    let mut bad = stored.to_vec();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    raw.put(&key, bytes::Bytes::from(bad).into()).await.unwrap();
    assert!(reg.pull(&r("acme/app@1")).await.is_err());
    reg.delete(&actor(), &r("acme/app@1")).await.unwrap();
    assert!(
        raw.get(&key).await.is_err(),
        "the blob is deleted with its last version"
    );
}
