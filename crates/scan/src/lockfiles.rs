//! Lockfiles into packages: `Cargo.lock` (registry packages only: path and git
//! dependencies are the artifact's own code), `package-lock.json` (versions 1 to 3; linked
//! and local packages skipped) and `requirements.txt` (exact `==` pins; anything else is
//! listed as unpinned, since no single version can be checked).

use std::collections::BTreeSet;

use model::scan::{Ecosystem, Inventory, Package};
use serde_json::Value;

/// Lockfiles larger than this are not read (and are listed as unreadable).
pub const MAX_LOCKFILE_BYTES: u64 = 16 * 1024 * 1024;

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// True for the paths whose content [`inventory`] reads.
pub fn is_lockfile(path: &str) -> bool {
    matches!(
        file_name(path),
        "Cargo.lock" | "package-lock.json" | "requirements.txt"
    )
}

/// The inventory of an artifact from its lockfiles (`(path, content)` pairs).
pub fn inventory(files: &[(String, Vec<u8>)]) -> Inventory {
    let mut inv = Inventory::default();
    let mut packages = BTreeSet::new();
    for (path, bytes) in files {
        let parsed = match std::str::from_utf8(bytes) {
            Err(_) => Err("not UTF-8".to_string()),
            Ok(text) => match file_name(path) {
                "Cargo.lock" => cargo_lock(text),
                "package-lock.json" => package_lock(text),
                "requirements.txt" => Ok(requirements(text, &mut inv.unpinned)),
                _ => continue,
            },
        };
        match parsed {
            Ok(found) => {
                inv.lockfiles.push(path.clone());
                packages.extend(found.into_iter().map(|(ecosystem, name, version)| Package {
                    ecosystem,
                    name,
                    version,
                    lockfile: path.clone(),
                }));
            }
            Err(why) => inv.unreadable.push(format!("{path}: {why}")),
        }
    }
    inv.packages = packages.into_iter().collect();
    inv.lockfiles.sort();
    inv
}

type Found = Vec<(Ecosystem, String, String)>;

fn cargo_lock(text: &str) -> Result<Found, String> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        version: String,
        source: Option<String>,
    }
    let lock: Lock = toml::from_str(text).map_err(|e| format!("invalid Cargo.lock: {e}"))?;
    Ok(lock
        .package
        .into_iter()
        // Only crates from a registry are crates.io's (or a mirror's) packages; a crate
        // without a source is part of the workspace, one from git is not in the database.
        .filter(|p| {
            p.source
                .as_deref()
                .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"))
        })
        .map(|p| (Ecosystem::CratesIo, p.name, p.version))
        .collect())
}

/// True when an npm lockfile entry is a published package (not a link, a path or a git
/// checkout).
fn npm_published(entry: &Value) -> bool {
    if entry.get("link").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    let resolved = entry.get("resolved").and_then(Value::as_str).unwrap_or("");
    !(resolved.starts_with("file:") || resolved.starts_with("git"))
}

fn package_lock(text: &str) -> Result<Found, String> {
    let doc: Value =
        serde_json::from_str(text).map_err(|e| format!("invalid package-lock.json: {e}"))?;
    let mut out = Vec::new();
    if let Some(packages) = doc.get("packages").and_then(Value::as_object) {
        // Versions 2 and 3: "node_modules/a/node_modules/@s/b" -> "@s/b".
        for (key, entry) in packages {
            let Some(idx) = key.rfind("node_modules/") else {
                continue; // "" is the project itself, other keys are workspace folders.
            };
            let name = entry
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or(&key[idx + "node_modules/".len()..]);
            if let (Some(version), true) = (
                entry.get("version").and_then(Value::as_str),
                npm_published(entry),
            ) {
                out.push((Ecosystem::Npm, name.to_string(), version.to_string()));
            }
        }
        return Ok(out);
    }
    // Version 1: nested "dependencies".
    fn walk(deps: &serde_json::Map<String, Value>, out: &mut Found, depth: usize) {
        if depth > 64 {
            return;
        }
        for (name, entry) in deps {
            if let Some(version) = entry.get("version").and_then(Value::as_str) {
                if npm_published(entry) && !version.starts_with("file:") {
                    out.push((Ecosystem::Npm, name.clone(), version.to_string()));
                }
            }
            if let Some(d) = entry.get("dependencies").and_then(Value::as_object) {
                walk(d, out, depth + 1);
            }
        }
    }
    match doc.get("dependencies").and_then(Value::as_object) {
        Some(deps) => walk(deps, &mut out, 0),
        None if doc.is_object() => {}
        None => return Err("invalid package-lock.json: not an object".into()),
    }
    Ok(out)
}

fn requirements(text: &str, unpinned: &mut Vec<String>) -> Found {
    let mut out = Vec::new();
    // Backslash continuations join lines (hashes usually follow that way).
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for raw in joined.lines() {
        let line = raw.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue; // options (-r, -e, --index-url ...) and comments
        }
        // Environment markers and hash options do not change which version is pinned.
        let spec = line.split(';').next().unwrap_or("").trim();
        let spec = spec.split(" --").next().unwrap_or("").trim();
        let pinned = spec
            .split_once("===")
            .or_else(|| spec.split_once("=="))
            .map(|(n, v)| (n.trim(), v.trim()));
        match pinned {
            Some((name, version))
                if !version.is_empty()
                    && !version.contains([',', '*', ' '])
                    && !name.is_empty() =>
            {
                // `name[extra1,extra2]`: the extras do not change the package.
                let name = name.split('[').next().unwrap_or(name).trim();
                out.push((
                    Ecosystem::PyPi,
                    Ecosystem::PyPi.normalize(name),
                    version.to_string(),
                ));
            }
            _ => unpinned.push(spec.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(path: &str, text: &str) -> Inventory {
        inventory(&[(path.to_string(), text.as_bytes().to_vec())])
    }

    #[test]
    fn cargo_lock_registry_packages_only() {
        let i = inv(
            "app/Cargo.lock",
            r#"
version = 3
[[package]]
name = "app"
version = "0.1.0"
[[package]]
name = "time"
version = "0.1.45"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "abc"
[[package]]
name = "mine"
version = "1.0.0"
source = "git+https://example.test/mine#abc"
"#,
        );
        assert_eq!(i.lockfiles, vec!["app/Cargo.lock"]);
        assert_eq!(i.packages.len(), 1);
        assert_eq!(i.packages[0].name, "time");
        assert_eq!(i.packages[0].version, "0.1.45");
        assert_eq!(i.packages[0].ecosystem, Ecosystem::CratesIo);
    }

    #[test]
    fn package_lock_v3_and_v1() {
        let v3 = inv(
            "package-lock.json",
            r#"{"lockfileVersion":3,"packages":{
                "":{"name":"app","version":"1.0.0"},
                "node_modules/lodash":{"version":"4.17.11","resolved":"https://registry.npmjs.org/lodash/-/lodash-4.17.11.tgz"},
                "node_modules/a/node_modules/@scope/b":{"version":"2.0.0"},
                "node_modules/local":{"resolved":"packages/local","link":true},
                "packages/local":{"version":"0.0.1"}}}"#,
        );
        let names: Vec<_> = v3.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["@scope/b", "lodash"]);
        let v1 = inv(
            "package-lock.json",
            r#"{"lockfileVersion":1,"dependencies":{
                "minimist":{"version":"0.0.8","dependencies":{"deep":{"version":"1.0.0"}}},
                "here":{"version":"file:../here"}}}"#,
        );
        let names: Vec<_> = v1.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["deep", "minimist"]);
    }

    #[test]
    fn requirements_pins_and_unpinned() {
        let i = inv(
            "requirements.txt",
            "# deps\nPyYAML==5.3.1 \\\n    --hash=sha256:abc\nrequests[security]==2.19.0 ; python_version >= '3'\nflask>=2\n-r other.txt\nDjango===3.0.1  # pinned\n\n",
        );
        let got: Vec<_> = i
            .packages
            .iter()
            .map(|p| format!("{}@{}", p.name, p.version))
            .collect();
        assert_eq!(got, vec!["django@3.0.1", "pyyaml@5.3.1", "requests@2.19.0"]);
        assert_eq!(i.unpinned, vec!["flask>=2"]);
    }

    #[test]
    fn unreadable_lockfiles_are_said() {
        let i = inventory(&[
            ("Cargo.lock".into(), b"[[package]\n".to_vec()),
            ("package-lock.json".into(), vec![0xff, 0xfe]),
        ]);
        assert!(i.packages.is_empty());
        assert_eq!(i.unreadable.len(), 2, "{:?}", i.unreadable);
        assert!(i.unreadable[0].starts_with("Cargo.lock: invalid Cargo.lock"));
        assert!(i.unreadable[1].contains("not UTF-8"));
    }

    #[test]
    fn lockfile_names() {
        assert!(is_lockfile("Cargo.lock"));
        assert!(is_lockfile("srv/web/package-lock.json"));
        assert!(!is_lockfile("Cargo.toml"));
        assert!(!is_lockfile("requirements.txt.bak"));
    }
}
