//! The registry against a real store, keyring and local object store in a temp dir:
//! manifests, immutability, encryption at rest, integrity on pull, hostile archives.

use std::io::Write;
use std::sync::Arc;

use artifacts::{ArtifactError, Registry};
use bytes::Bytes;
use model::artifacts::ArtifactRef;
use model::clock::SystemClock;
use model::{Code, Name};
use secrets::{Keyring, SealSetup};
use store::{Actor, Store};

mod s3;

struct H {
    dir: tempfile::TempDir,
    reg: Registry,
}

pub fn actor() -> Actor {
    Actor {
        principal: "dev".into(),
        request_id: "t".into(),
        source: "127.0.0.1:1".into(),
    }
}

async fn setup() -> H {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("g.db").display());
    let store = Arc::new(Store::open(&url).await.unwrap());
    for t in ["acme", "globex"] {
        store
            .create_tenant(&actor(), &Name::parse(t).unwrap())
            .await
            .unwrap();
    }
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
    let objects =
        artifacts::open_objects(&format!("file://{}", dir.path().join("objects").display()))
            .unwrap();
    let reg = Registry::new(store, kr, objects, Arc::new(SystemClock));
    H { dir, reg }
}

/// A .tar.gz of `files` (path, content, mode).
pub fn targz(files: &[(&str, &[u8], u32)]) -> Bytes {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, path, *content).unwrap();
    }
    Bytes::from(b.into_inner().unwrap().finish().unwrap())
}

pub fn r(s: &str) -> ArtifactRef {
    ArtifactRef::parse(s).unwrap()
}

pub const SECRET_MARK: &[u8] = b"PLAINTEXT-MARKER-7f3a9c";

#[tokio::test]
async fn push_show_pull_unpack_and_immutability() {
    let h = setup().await;
    let v1 = targz(&[
        ("bin/customers-mngr", b"#!/bin/sh\necho hi\n", 0o755),
        ("config/app.json", SECRET_MARK, 0o644),
    ]);
    let (info, created) = h
        .reg
        .push(&actor(), &r("acme/customers-mngr@1.4.0"), v1.clone())
        .await
        .unwrap();
    assert!(created);
    assert_eq!((info.files, info.size), (2, v1.len() as u64));
    assert!(info.digest.starts_with("sha256:"));
    assert_eq!(info.manifest[0].path, "bin/customers-mngr");
    assert!(info.manifest[0].executable);
    assert!(!info.manifest[1].executable);
    // The same content again: fine, nothing new. Other content: immutable, 409.
    let (_, again) = h
        .reg
        .push(&actor(), &r("acme/customers-mngr@1.4.0"), v1.clone())
        .await
        .unwrap();
    assert!(!again);
    let other = targz(&[("bin/customers-mngr", b"other", 0o755)]);
    let e = h
        .reg
        .push(&actor(), &r("acme/customers-mngr@1.4.0"), other.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Conflict, "{e}");
    h.reg
        .push(&actor(), &r("acme/customers-mngr@1.5.0"), other)
        .await
        .unwrap();
    let list = h.reg.list(&Name::parse("acme").unwrap()).await.unwrap();
    assert_eq!(list.len(), 2);
    assert!(list[0].manifest.is_empty(), "lists carry no manifests");
    // Pull: the exact bytes; unpack: the files with their executable bit.
    let (_, got) = h.reg.pull(&r("acme/customers-mngr@1.4.0")).await.unwrap();
    assert_eq!(got, v1);
    let out = h.dir.path().join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    artifacts::unpack(&got, &out).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let bin = out.join("bin/customers-mngr");
    assert!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o100 != 0);
    assert_eq!(
        std::fs::read(out.join("config/app.json")).unwrap(),
        SECRET_MARK
    );
    // Encrypted at rest: the content is in no file of the object store or the database.
    std::fs::remove_dir_all(&out).unwrap();
    for e in walk(h.dir.path()) {
        let data = std::fs::read(&e).unwrap();
        assert!(
            !data.windows(SECRET_MARK.len()).any(|w| w == SECRET_MARK),
            "{} holds the artifact's content in plaintext",
            e.display()
        );
    }
    // Another tenant cannot read it, and a missing one is 404.
    let e = h
        .reg
        .pull(&r("globex/customers-mngr@1.4.0"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // Delete: gone, its blob too.
    h.reg
        .delete(&actor(), &r("acme/customers-mngr@1.4.0"))
        .await
        .unwrap();
    let e = h
        .reg
        .show(&r("acme/customers-mngr@1.4.0"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let blobs = walk(&h.dir.path().join("objects"));
    assert_eq!(blobs.len(), 1, "only 1.5.0's blob is left: {blobs:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_tampered_or_swapped_blob_is_refused() {
    let h = setup().await;
    let a = targz(&[("run", b"version a", 0o755)]);
    let b = targz(&[("run", b"version b", 0o755)]);
    h.reg.push(&actor(), &r("acme/app@1"), a).await.unwrap();
    h.reg.push(&actor(), &r("acme/app@2"), b).await.unwrap();
    let blobs = walk(&h.dir.path().join("objects"));
    assert_eq!(blobs.len(), 2);
    // Flip one byte of a blob.
    let mut data = std::fs::read(&blobs[0]).unwrap();
    let i = data.len() / 2;
    data[i] = if data[i] == b'A' { b'B' } else { b'A' };
    std::fs::write(&blobs[0], &data).unwrap();
    // Swap: blob 1's bytes under blob 0's name is refused too (bound to its digest).
    let mut refused = 0;
    for v in ["acme/app@1", "acme/app@2"] {
        if let Err(e) = h.reg.pull(&r(v)).await {
            assert!(matches!(e, ArtifactError::Integrity(_)), "{e}");
            refused += 1;
        }
    }
    assert_eq!(refused, 1);
    let good = std::fs::read(&blobs[1]).unwrap();
    std::fs::write(&blobs[0], good).unwrap();
    let mut refused = 0;
    for v in ["acme/app@1", "acme/app@2"] {
        if h.reg.pull(&r(v)).await.is_err() {
            refused += 1;
        }
    }
    assert_eq!(
        refused, 1,
        "a blob copied under another digest does not decrypt"
    );
}

#[tokio::test]
async fn hostile_and_broken_archives_are_refused_with_the_reason() {
    let h = setup().await;
    let raw_tar = |f: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
        let mut b = tar::Builder::new(Vec::new());
        f(&mut b);
        let t = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&t).unwrap();
        Bytes::from(gz.finish().unwrap())
    };
    let dotdot = {
        // The tar crate refuses to *write* `..`; write the header's name bytes directly.
        raw_tar(&|b| {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..9].copy_from_slice(b"../escape");
            h.set_size(1);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        })
    };
    let symlink = raw_tar(&|b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_cksum();
        b.append_link(&mut h, "link", "/etc/passwd").unwrap();
    });
    let empty = raw_tar(&|_| {});
    for (bytes, want) in [
        (Bytes::from_static(b"not gzip at all"), "not a .tar.gz"),
        (dotdot, "leaves the archive"),
        (symlink, "only files and directories"),
        (empty, "no file"),
    ] {
        let e = h
            .reg
            .push(&actor(), &r("acme/bad@1"), bytes)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
        assert!(e.to_string().contains(want), "{e} (want {want})");
    }
    // Nothing was recorded.
    assert!(h
        .reg
        .list(&Name::parse("acme").unwrap())
        .await
        .unwrap()
        .is_empty());
}
