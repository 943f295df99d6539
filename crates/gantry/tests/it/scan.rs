//! Vulnerability scanning end to end: an artifact with a Cargo.lock, a package-lock.json
//! and a requirements.txt is pushed; an OSV export (a .zip, a directory and a file) is
//! loaded with the CLI; `artifact show` lists the findings, most severe first; the
//! artifact policy refuses the deploy to production (critical findings) and lets staging
//! through until the policy says otherwise. Bad input gets one-line reasons.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Value};

use crate::harness::{fails, ok, Gantry};

fn osv(id: &str, eco: &str, name: &str, fixed: &str, extra: Value) -> Value {
    let mut r = json!({
        "schema_version": "1.6.0",
        "id": id,
        "modified": "2024-03-01T00:00:00Z",
        "published": "2019-07-10T00:00:00Z",
        "summary": format!("a vulnerability in {name}"),
        "affected": [{"package": {"ecosystem": eco, "name": name},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

fn write_artifact(dir: &Path) {
    std::fs::create_dir_all(dir.join("web")).unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\nexec sleep 5\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("Cargo.lock"),
        r#"version = 3

[[package]]
name = "app"
version = "1.0.0"

[[package]]
name = "time"
version = "0.1.45"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("web/package-lock.json"),
        json!({"name": "web", "lockfileVersion": 3, "packages": {
            "": {"name": "web"},
            "node_modules/lodash": {"version": "4.17.11"},
            "node_modules/left-pad": {"version": "1.3.0"}}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("requirements.txt"), "PyYAML==5.3.1\nflask>=2\n").unwrap();
}

fn show(g: &Gantry) -> Value {
    serde_json::from_str(&ok(g.cli(&[
        "artifact",
        "show",
        "acme/app@1.0.0",
        "-o",
        "json",
    ])))
    .unwrap()
}

fn deploy(g: &Gantry, env: &str) -> std::process::Output {
    g.cli(&[
        "service",
        "deploy",
        &format!("acme/{env}/app"),
        "--artifact",
        "app@1.0.0",
        "--cmd",
        "./run.sh",
    ])
}

#[test]
fn findings_are_shown_and_the_policy_refuses_production() {
    scan_and_policy(None);
}

#[test]
fn findings_and_policy_on_postgres() {
    scan_and_policy(Some(crate::harness::pg_database()));
}

fn scan_and_policy(store: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let g = Gantry::start(&dir.path().join("data"), store);
    ok(g.cli(&["tenant", "create", "acme"]));
    ok(g.cli(&["env", "create", "acme/prod", "--kind", "production"]));
    ok(g.cli(&["env", "create", "acme/staging", "--kind", "staging"]));
    let app = dir.path().join("dist");
    write_artifact(&app);
    ok(g.cli(&["artifact", "push", "acme/app@1.0.0", app.to_str().unwrap()]));

    // Before any database: the inventory is there, nothing is claimed.
    let s = show(&g);
    assert_eq!(s["scan"]["packages"], 4, "{s}");
    assert_eq!(s["scan"]["database_advisories"], 0);
    assert_eq!(s["scan"]["findings"], json!([]));
    assert_eq!(s["scan"]["unpinned"], json!(["flask>=2"]));
    let table = ok(g.cli(&["artifact", "show", "acme/app@1.0.0"]));
    assert!(
        table.contains("no vulnerability database is loaded"),
        "{table}"
    );

    // The database: an npm export as OSV publishes it (a .zip), PyPI records in a
    // directory, a RustSec record in a file; plus a withdrawn, a Go and a broken record.
    let lodash = osv(
        "GHSA-jf85-cpcp-j695",
        "npm",
        "lodash",
        "4.17.12",
        json!({"aliases": ["CVE-2019-10744"], "database_specific": {"severity": "CRITICAL"},
            "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:H/A:H"}]}),
    );
    let withdrawn = json!({"id": "GHSA-gone-0000-0000", "modified": "2024-01-01T00:00:00Z",
        "withdrawn": "2024-01-02T00:00:00Z", "affected": []});
    let zip_path = dir.path().join("npm-all.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        for (name, rec) in [
            ("GHSA-jf85-cpcp-j695.json", &lodash),
            ("GHSA-gone.json", &withdrawn),
        ] {
            z.start_file(name, opts).unwrap();
            z.write_all(rec.to_string().as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }
    let pypi = dir.path().join("pypi");
    std::fs::create_dir_all(&pypi).unwrap();
    std::fs::write(
        pypi.join("PYSEC-2021-142.json"),
        osv(
            "PYSEC-2021-142",
            "PyPI",
            "pyyaml",
            "5.4",
            json!({"database_specific": {"severity": "HIGH"}}),
        )
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        pypi.join("GO-2020-0001.json"),
        osv("GO-2020-0001", "Go", "github.com/x/y", "1.0.0", json!({})).to_string(),
    )
    .unwrap();
    std::fs::write(pypi.join("README.txt"), "not a record").unwrap();
    let rust = dir.path().join("rustsec.json");
    std::fs::write(
        &rust,
        json!([
            osv("RUSTSEC-2020-0071", "crates.io", "time", "0.2.23",
                json!({"severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:N/UI:N/S:U/C:N/I:N/A:H"}]})),
            {"id": "BROKEN-1", "affected": []}
        ])
        .to_string(),
    )
    .unwrap();
    let load = |paths: &[&Path]| -> Value {
        let mut args = vec!["advisory", "load"];
        args.extend(paths.iter().map(|p| p.to_str().unwrap()));
        args.extend(["-o", "json"]);
        serde_json::from_str(&ok(g.cli(&args))).unwrap()
    };
    let r = load(&[&zip_path, &pypi, &rust]);
    assert_eq!(r["received"], 6, "{r}");
    assert_eq!(r["loaded"], 3, "{r}");
    assert_eq!(r["withdrawn"], 1, "{r}");
    assert_eq!(r["ignored"], 1, "{r}");
    assert_eq!(r["rejected"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["rejected"][0].as_str().unwrap().contains("BROKEN-1"),
        "{r}"
    );
    // Loading the same records again changes nothing.
    let again = load(&[&zip_path, &pypi, &rust]);
    assert_eq!(again["unchanged"], 3, "{again}");
    assert_eq!(again["loaded"], 0, "{again}");
    let status: Value =
        serde_json::from_str(&ok(g.cli(&["advisory", "status", "-o", "json"]))).unwrap();
    assert_eq!(status["advisories"], 3, "{status}");
    let adv = ok(g.cli(&["advisory", "show", "GHSA-jf85-cpcp-j695"]));
    assert!(
        adv.contains("critical") && adv.contains("npm lodash"),
        "{adv}"
    );

    // The scan now finds three, most severe first; left-pad is clean.
    let s = show(&g);
    let f = s["scan"]["findings"].as_array().unwrap();
    let got: Vec<(String, String, String)> = f
        .iter()
        .map(|x| {
            (
                x["severity"].as_str().unwrap().into(),
                x["advisory"].as_str().unwrap().into(),
                x["fixed"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "critical".into(),
                "GHSA-jf85-cpcp-j695".into(),
                "4.17.12".into()
            ),
            ("high".into(), "PYSEC-2021-142".into(), "5.4".into()),
            ("medium".into(), "RUSTSEC-2020-0071".into(), "0.2.23".into()),
        ],
        "{s}"
    );
    assert_eq!(f[0]["lockfile"], "web/package-lock.json");
    let table = ok(g.cli(&["artifact", "show", "acme/app@1.0.0"]));
    assert!(
        table.contains("3 finding(s)") && table.contains("GHSA-jf85-cpcp-j695"),
        "{table}"
    );

    // The default policy: production refuses critical findings, staging does not.
    let err = fails(deploy(&g, "prod"), 3);
    assert!(
        err.contains("policy") && err.contains("GHSA-jf85-cpcp-j695") && err.contains("production"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    ok(deploy(&g, "staging"));
    // A stricter staging policy refuses it there too; a looser production one lets it in.
    ok(g.cli(&["artifact", "policy", "set", "--staging", "high"]));
    let err = fails(deploy(&g, "staging"), 3);
    assert!(
        err.contains("staging") && err.contains("PYSEC-2021-142"),
        "{err}"
    );
    ok(g.cli(&["artifact", "policy", "set", "--production", "none"]));
    let p: Value =
        serde_json::from_str(&ok(g.cli(&["artifact", "policy", "show", "-o", "json"]))).unwrap();
    assert_eq!(
        p,
        json!({"production": "none", "certification": "none", "staging": "high", "development": "none"})
    );
    ok(deploy(&g, "prod"));
    // The changes are audited.
    let audit = ok(g.cli(&["audit", "list", "--action", "setting.update"]));
    assert!(audit.contains("artifact_policy"), "{audit}");

    // Bad input: one line, the right exit code.
    let err = fails(
        g.cli(&["artifact", "policy", "set", "--production", "severe"]),
        3,
    );
    assert!(err.contains("invalid severity"), "{err}");
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{not json").unwrap();
    let err = fails(g.cli(&["advisory", "load", junk.to_str().unwrap()]), 3);
    assert!(err.contains("is not JSON"), "{err}");
    let err = fails(g.cli(&["advisory", "show", "GHSA-none-0000-0000"]), 6);
    assert!(err.contains("not found"), "{err}");

    for env in ["prod", "staging"] {
        ok(g.cli(&["service", "delete", &format!("acme/{env}/app")]));
    }
}
