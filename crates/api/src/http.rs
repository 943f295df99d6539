//! Small HTTP helpers: JSON responses, bounded body reading, query parsing, request ids.
//!
//! Everything a client sends is bounded here (body size, read time, query length) before
//! any handler sees it. Nothing here may echo a header value such as a token.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use model::{Code, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ApiError;

pub type Body = Full<Bytes>;

/// Largest request body the control API accepts.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest time a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(15);

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .unwrap_or_else(|_| internal()),
        Err(e) => {
            tracing::error!(error = %e, "response serialization failed");
            internal()
        }
    }
}

fn internal() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"error":{"code":"internal","message":"internal error"}}"#,
    )));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

pub fn error(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    json(status, &ErrorBody::new(e.code, e.message.clone()))
}

pub fn no_content() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Reads a JSON request body: checks the media type, the size and the read time, then
/// decodes it, rejecting unknown fields (the request types say so).
pub async fn read_json<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<T, ApiError> {
    read_json_up_to(headers, body, MAX_BODY).await
}

/// Like `read_json`, for the few endpoints that take larger documents.
pub async fn read_json_up_to<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body_up_to(headers, body, limit).await?;
    check_json_type(headers, &bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body: {}",
            model::name::truncate(&e.to_string())
        ))
    })
}

/// Like `read_json`, for bodies that carry a secret (a value, a plaintext, a passphrase):
/// decoding errors never quote the body, since serde's messages include the offending
/// value (`invalid type: string "..."`). Unknown and missing fields are still named.
pub async fn read_secret_json<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<T, ApiError> {
    read_sensitive_json(headers, body, MAX_SECRET_BODY).await
}

/// Reads a JSON body holding something sensitive (a secret, a private key), up to `limit`
/// bytes: a parse error names the position, never the content.
pub async fn read_sensitive_json<T: DeserializeOwned>(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = read_body_up_to(headers, body, limit).await?;
    check_json_type(headers, &bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let msg = e.to_string();
        if msg.starts_with("unknown field") || msg.starts_with("missing field") {
            ApiError::bad_request(format!("invalid request body: {}", model::name::truncate(&msg)))
        } else {
            ApiError::bad_request(format!(
                "invalid request body at line {} column {}: not the expected JSON document (the value is not repeated here)",
                e.line(),
                e.column()
            ))
        }
    })
}

fn check_json_type(headers: &http::HeaderMap, bytes: &[u8]) -> Result<(), ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; send a JSON object",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            Code::UnsupportedMediaType,
            "request body must be application/json",
        ));
    }
    Ok(())
}

/// Largest body of a secret put: a 64 KiB value, base64-encoded, in its JSON document.
pub const MAX_SECRET_BODY: usize = 96 * 1024;

/// Reads a body up to `MAX_BODY` bytes within `BODY_TIMEOUT`.
pub async fn read_body(headers: &http::HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
    read_body_up_to(headers, body, MAX_BODY).await
}

/// Reads a body up to `limit` bytes within `BODY_TIMEOUT`.
pub async fn read_body_up_to(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    read_body_within(headers, body, limit, BODY_TIMEOUT).await
}

/// Reads a body of at most `limit` bytes within `timeout` (large uploads get longer).
pub async fn read_body_within(
    headers: &http::HeaderMap,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            Code::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > limit as u64 {
            return Err(too_large());
        }
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(ApiError::new(
            Code::Timeout,
            "timed out reading the request body",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(ApiError::bad_request("could not read the request body")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

/// Parses a query string into pairs, refusing parameters not in `allowed` and repeats.
pub fn query<'a>(
    raw: Option<&str>,
    allowed: &[&'a str],
) -> Result<Vec<(&'a str, String)>, ApiError> {
    let raw = raw.unwrap_or("");
    if raw.len() > 2048 {
        return Err(ApiError::bad_request("query string is too long"));
    }
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let Some(key) = allowed.iter().find(|a| **a == k) else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {:?}; allowed: {}",
                model::name::truncate(&k),
                if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                }
            )));
        };
        if out.iter().any(|(k2, _)| k2 == key) {
            return Err(ApiError::bad_request(format!(
                "query parameter {key} given twice"
            )));
        }
        out.push((key, v.into_owned()));
    }
    Ok(out)
}

pub fn get<'q>(q: &'q [(&str, String)], key: &str) -> Option<&'q str> {
    q.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
}

/// The request id: the client's `x-request-id` when it is sane, otherwise a new one.
pub fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

pub fn set_request_id(resp: &mut Response<Body>, id: &str) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("x-request-id", v);
    }
}
