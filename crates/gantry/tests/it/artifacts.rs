//! The artifact registry through the CLI: a directory pushed as an immutable version,
//! shown with its manifest, pulled back identical, refused when changed under the same
//! version, and deleted.

use crate::harness::{fails, ok, Gantry};

#[test]
fn artifacts_pushed_with_the_cli_come_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), None);
    ok(g.cli(&["tenant", "create", "acme"]));
    let app = dir.path().join("dist");
    std::fs::create_dir_all(app.join("static")).unwrap();
    std::fs::write(app.join("customers-mngr"), "#!/bin/sh\necho customers\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        app.join("customers-mngr"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(app.join("static/index.html"), "<h1>customers</h1>").unwrap();
    let pushed: serde_json::Value = serde_json::from_str(&ok(g.cli(&[
        "artifact",
        "push",
        "acme/customers-mngr@1.4.0",
        app.to_str().unwrap(),
        "-o",
        "json",
    ])))
    .unwrap();
    assert_eq!(pushed["files"], 2);
    let shown = ok(g.cli(&[
        "artifact",
        "show",
        "acme/customers-mngr@1.4.0",
        "-o",
        "json",
    ]));
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["manifest"][0]["path"], "customers-mngr");
    assert_eq!(shown["manifest"][0]["executable"], true);
    assert_eq!(shown["digest"], pushed["digest"]);
    // Pushing the same directory again is fine; changing it under the same version is not.
    ok(g.cli(&[
        "artifact",
        "push",
        "acme/customers-mngr@1.4.0",
        app.to_str().unwrap(),
    ]));
    std::fs::write(app.join("static/index.html"), "<h1>changed</h1>").unwrap();
    let err = fails(
        g.cli(&[
            "artifact",
            "push",
            "acme/customers-mngr@1.4.0",
            app.to_str().unwrap(),
        ]),
        7,
    );
    assert!(err.contains("immutable"), "{err}");
    ok(g.cli(&[
        "artifact",
        "push",
        "acme/customers-mngr@1.5.0",
        app.to_str().unwrap(),
    ]));
    let list = ok(g.cli(&["artifact", "list", "acme"]));
    assert!(list.contains("1.4.0") && list.contains("1.5.0"), "{list}");
    // Pulled back: the digest matches.
    let to = dir.path().join("pulled.tar.gz");
    ok(g.cli(&[
        "artifact",
        "pull",
        "acme/customers-mngr@1.4.0",
        "--to",
        to.to_str().unwrap(),
    ]));
    use sha2::Digest;
    let digest = format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(std::fs::read(&to).unwrap()))
    );
    assert_eq!(serde_json::Value::String(digest), pushed["digest"]);
    // Bad references and missing paths: one-line reasons.
    fails(
        g.cli(&[
            "artifact",
            "push",
            "acme/customers-mngr",
            app.to_str().unwrap(),
        ]),
        3,
    );
    fails(g.cli(&["artifact", "push", "acme/x@1", "/nonexistent"]), 2);
    ok(g.cli(&["artifact", "delete", "acme/customers-mngr@1.4.0"]));
    fails(g.cli(&["artifact", "show", "acme/customers-mngr@1.4.0"]), 6);
    let ev = ok(g.cli(&["audit", "list", "--action", "artifact.*", "-o", "json"]));
    assert!(
        ev.contains("artifact.push") && ev.contains("artifact.delete"),
        "{ev}"
    );
    g.stop();
}
