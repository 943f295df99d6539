//! The OpenAPI document: served, complete, and consistent with the route table.

use serde_json::Value;

use crate::harness::Server;

#[tokio::test]
async fn document_is_served_and_covers_every_route() {
    let s = Server::start().await;
    let r = s.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let doc = r.body;
    assert_eq!(doc, api::openapi::document());
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            documented += 1;
            let m = method.to_uppercase();
            let route = api::routes::ROUTES
                .iter()
                .find(|r| r.path == path && r.method == m);
            assert!(route.is_some(), "{m} {path} is documented but not routed");
            // Every $ref resolves.
            check_refs(&doc, op);
            // Path parameters are declared.
            for seg in path.split('/').filter(|s| s.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                assert!(
                    op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path"),
                    "{m} {path}: {name}"
                );
            }
        }
    }
    assert_eq!(documented, api::routes::ROUTES.len());
    s.stop().await;
}

fn check_refs(doc: &Value, v: &Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                let name = r.trim_start_matches("#/components/schemas/");
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "dangling {r}"
                );
            }
            o.values().for_each(|x| check_refs(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| check_refs(doc, x)),
        _ => {}
    }
}
