//! The reference docs hold tables generated from the code (permissions, error codes,
//! endpoints) between `<!-- BEGIN GENERATED -->` and `<!-- END GENERATED -->`. These tests
//! fail when the docs drift; run them with GANTRY_BLESS=1 to rewrite the tables.

use std::path::PathBuf;

const BEGIN: &str = "<!-- BEGIN GENERATED -->\n";
const END: &str = "<!-- END GENERATED -->";

/// The package's directory as `cargo test` says it when it runs the test (a test binary
/// reused from a build in another checkout still reads this checkout's docs).
fn doc(name: &str) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("../../docs")
        .join(name)
}

fn check(name: &str, generated: &str) {
    let path = doc(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) else {
        panic!("{name} has no generated section markers");
    };
    let current = &text[b + BEGIN.len()..e];
    if current == generated {
        return;
    }
    if std::env::var("GANTRY_BLESS").is_ok() {
        let new = format!("{}{BEGIN}{generated}{}", &text[..b], &text[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    panic!("docs/{name} is out of date with the code; run the docs tests with GANTRY_BLESS=1");
}

#[test]
fn permission_table_is_documented() {
    check("permissions.md", &model::rbac::markdown_table());
}

#[test]
fn error_codes_are_documented() {
    check("errors.md", &model::codes::markdown_table());
}

#[test]
fn endpoints_are_documented() {
    let mut t = String::from("| method | path | what | audit action |\n|---|---|---|---|\n");
    for r in api::routes::ROUTES {
        let q = api::routes::query_params(r.op);
        let path = if q.is_empty() {
            r.path.to_string()
        } else {
            format!("{}?{}", r.path, q.join("&"))
        };
        t.push_str(&format!(
            "| {} | `{}` | {} | `{}` |\n",
            r.method, path, r.summary, r.id
        ));
    }
    check("api.md", &t);
}
