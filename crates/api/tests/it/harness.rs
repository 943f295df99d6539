//! A test server and client. `Server::call` asserts the invariants every response must
//! keep: never a 5xx, JSON error documents with a known code, a request id, and a body that
//! matches the OpenAPI schema of the operation.

use std::sync::Arc;

use serde_json::{json, Value};

pub struct Server {
    pub running: Option<api::Running>,
    pub base: String,
    pub http: reqwest::Client,
    pub admin: String,
    pub _dir: tempfile::TempDir,
    pub doc: Value,
}

pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// A fresh PostgreSQL database for one test, from GANTRY_TEST_PG.
pub async fn pg_database() -> String {
    let base = match std::env::var("GANTRY_TEST_PG") {
        Ok(u) => u,
        Err(_) => panic!(
            "GANTRY_TEST_PG is not set: run `. scripts/pg.sh` first (or use scripts/test.sh)"
        ),
    };
    sqlx::any::install_default_drivers();
    let name = format!("gantry_api_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&base)
        .await
        .expect("connect to GANTRY_TEST_PG");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create database");
    pool.close().await;
    let (prefix, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{prefix}/{name}")
}

impl Server {
    pub async fn start() -> Server {
        Server::start_with(None).await
    }

    pub async fn start_with(store_url: Option<String>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut config = api::Config::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        config.store_url = store_url;
        let running = api::start(config).await.expect("server starts");
        let admin = running
            .admin_token
            .clone()
            .expect("first start makes a token");
        let ca = std::fs::read(dir.path().join("data/ca.pem")).unwrap();
        let http = client_for(&ca);
        let base = format!("https://127.0.0.1:{}", running.addr.port());
        let doc = api::openapi::document();
        Server {
            running: Some(running),
            base,
            http,
            admin,
            _dir: dir,
            doc,
        }
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await;
        }
    }

    /// Sends a request and checks the universal response invariants.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.check(method, path, req).await
    }

    /// Sends a prepared request (raw bodies, odd headers) and checks the invariants.
    pub async fn check(&self, method: &str, path: &str, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        // A 5xx is a server fault, except 503 `sealed`, which is the sealed server's answer.
        let sealed = status == 503 && bytes.windows(8).any(|w| w == b"\"sealed\"");
        assert!(
            status < 500 || sealed,
            "{method} {path}: server error {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(
            headers.contains_key("x-request-id"),
            "{method} {path}: no x-request-id"
        );
        let binary = headers
            .get("content-type")
            .is_some_and(|v| v == "application/octet-stream");
        let body: Value = if bytes.is_empty() || (binary && status < 400) {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {path}: body is not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        if status >= 400 {
            let code = body["error"]["code"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: no error code in {body}"));
            let known = model::Code::parse(code);
            assert_eq!(known.as_str(), code, "{method} {path}: unknown code {code}");
            assert_eq!(
                known.http_status(),
                status,
                "{method} {path}: {code} with status {status}"
            );
            assert!(body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()));
            validate(
                &self.doc,
                &json!({"$ref": "#/components/schemas/Error"}),
                &body,
            )
            .unwrap_or_else(|e| panic!("{method} {path}: error body {body}: {e}"));
        } else {
            self.check_schema(method, path, status, &body);
        }
        Resp {
            status,
            body,
            headers,
        }
    }

    fn check_schema(&self, method: &str, path: &str, status: u16, body: &Value) {
        let path_only = path.split('?').next().unwrap();
        let route = match api::routes::route(method, path_only) {
            api::routes::Match::Found(r, _) => r,
            _ => panic!("{method} {path}: success for a path the route table does not know"),
        };
        let op = &self.doc["paths"][route.path][method.to_lowercase()];
        let resp = &op["responses"][status.to_string()];
        assert!(
            resp.is_object(),
            "{method} {}: status {status} is not documented",
            route.path
        );
        match resp["content"]["application/json"]["schema"].as_object() {
            Some(_) => validate(
                &self.doc,
                &resp["content"]["application/json"]["schema"],
                body,
            )
            .unwrap_or_else(|e| {
                panic!("{method} {path}: response does not match the OpenAPI schema: {e}\n{body}")
            }),
            None => assert!(body.is_null(), "{method} {path}: undocumented body {body}"),
        }
    }

    /// Pushes a small .tar.gz to `path` as the admin.
    pub async fn push_artifact(&self, path: &str) -> Resp {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, "run", &b"hello"[..]).unwrap();
        let gz = b.into_inner().unwrap().finish().unwrap();
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .header("content-type", "application/gzip")
            .body(gz);
        self.check("POST", path, req).await
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let r = self
            .call(method, path, Some(&self.admin.clone()), body)
            .await;
        r
    }

    /// Admin call that must succeed.
    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.admin(method, path, body).await;
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    /// Creates an account with `role` on `scope` and returns a token for it.
    pub async fn principal(&self, account: &str, role: &str, scope: &str) -> String {
        let path = match account.split_once('/') {
            Some((t, _)) => format!("/v1/tenants/{t}/accounts"),
            None => "/v1/accounts".into(),
        };
        let r = self
            .admin("POST", &path, Some(json!({"name": account})))
            .await;
        assert!(
            r.status == 201 || r.code() == "already_exists",
            "{}",
            r.body
        );
        self.ok(
            "POST",
            "/v1/grants",
            Some(json!({"role": role, "principal": account, "scope": scope})),
        )
        .await;
        let t = self
            .ok(
                "POST",
                "/v1/tokens",
                Some(json!({"account": account, "ttl_seconds": 3600})),
            )
            .await;
        t["token"].as_str().unwrap().to_string()
    }
}

pub fn client_for(ca_pem: &[u8]) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls_certs(ca_pem) {
        roots.add(c).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        .build()
        .unwrap()
}

fn tls_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    tls::parse_certs(pem).unwrap()
}

/// A small JSON Schema validator for the subset the document uses: $ref, type (or a list
/// of types), enum, required, properties, additionalProperties: false, items, pattern
/// (anchored names only), minimum/maximum.
pub fn validate(doc: &Value, schema: &Value, v: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        let s = &doc["components"]["schemas"][name];
        if s.is_null() {
            return Err(format!("unknown schema {r}"));
        }
        return validate(doc, s, v);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let widened = actual == "integer" && types.contains(&"number");
        if !types.contains(&actual) && !widened {
            return Err(format!("expected {types:?}, got {actual} ({v})"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            return Err(format!("{v} is not one of {e:?}"));
        }
    }
    if let Value::Object(o) = v {
        if let Some(req) = schema["required"].as_array() {
            for r in req {
                let k = r.as_str().unwrap();
                if !o.contains_key(k) {
                    return Err(format!("missing required field {k}"));
                }
            }
        }
        let props = schema["properties"].as_object();
        for (k, val) in o {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(doc, ps, val).map_err(|e| format!("{k}: {e}"))?,
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    return Err(format!("field {k} is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            validate(doc, items, x).map_err(|e| format!("[{i}]: {e}"))?;
        }
    }
    if let (Value::Number(n), Some(min)) = (v, schema["minimum"].as_f64()) {
        if n.as_f64().unwrap_or(0.0) < min {
            return Err(format!("{n} < minimum {min}"));
        }
    }
    Ok(())
}
