//! The one table of error codes shared by the API (HTTP status) and the CLI (exit code).
//!
//! Codes are stable identifiers that clients match on; never rename one, only add. Every
//! error body on the wire is `{"error":{"code":"...","message":"..."}}`.

use serde::{Deserialize, Serialize};

macro_rules! codes {
    ($( $variant:ident => ($s:literal, $status:literal, $exit:literal, $doc:literal) ),* $(,)?) => {
        /// A stable, machine-readable error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $( #[doc = $doc] $variant ),* }

        impl Code {
            /// Every code, in table order (used to render the docs and by tests).
            pub const ALL: &'static [Code] = &[ $( Code::$variant ),* ];

            /// The string clients see in `error.code`.
            pub fn as_str(self) -> &'static str { match self { $( Code::$variant => $s ),* } }

            /// The HTTP status the API answers with.
            pub fn http_status(self) -> u16 { match self { $( Code::$variant => $status ),* } }

            /// The exit code of the CLI when the API answered with this code.
            pub fn exit_code(self) -> i32 { match self { $( Code::$variant => $exit ),* } }

            /// What the code means, for the docs.
            pub fn description(self) -> &'static str { match self { $( Code::$variant => $doc ),* } }

            /// Parses a code received on the wire; unknown codes map to `Internal`.
            pub fn parse(s: &str) -> Code {
                match s { $( $s => Code::$variant, )* _ => Code::Internal }
            }
        }
    };
}

codes! {
    BadRequest => ("bad_request", 400, 3, "The request is malformed: invalid JSON, a missing or unknown field, a wrong type."),
    InvalidArgument => ("invalid_argument", 400, 3, "A value is not valid: a bad name, scope, role or duration."),
    Unauthenticated => ("unauthenticated", 401, 4, "No token, or the token is unknown, expired or revoked."),
    PermissionDenied => ("permission_denied", 403, 5, "The principal has no role that allows this action on this scope."),
    NotFound => ("not_found", 404, 6, "The resource does not exist (or the principal may not know it exists)."),
    MethodNotAllowed => ("method_not_allowed", 405, 3, "The path exists but not with this HTTP method."),
    Timeout => ("timeout", 408, 10, "The client was too slow sending the request."),
    AlreadyExists => ("already_exists", 409, 7, "A resource with this name already exists."),
    Conflict => ("conflict", 409, 7, "The resource is in a state that does not allow this change (for example, it still holds resources)."),
    PayloadTooLarge => ("payload_too_large", 413, 8, "The request body is larger than the limit."),
    UnsupportedMediaType => ("unsupported_media_type", 415, 8, "The request body is not of the media type the endpoint takes (`application/json`, or `application/gzip` for artifacts)."),
    Unprocessable => ("unprocessable", 422, 3, "The request is well-formed but cannot be applied as asked (for example, a grant outside the account's tenant)."),
    PolicyViolation => ("policy_violation", 422, 3, "A policy refuses the change (for example, an artifact with findings of a refused severity deployed to production)."),
    RateLimited => ("rate_limited", 429, 9, "Too many requests or failed authentications from this source; retry later."),
    InvalidCiphertext => ("invalid_ciphertext", 400, 3, "Decryption failed: the ciphertext was modified, or belongs to another key, resource or encryption context."),
    Sealed => ("sealed", 503, 10, "The server is sealed: nothing can be read or changed until `gantry unseal`."),
    BadGateway => ("bad_gateway", 502, 10, "The edge could not get an answer from the upstream (connection refused or reset)."),
    GatewayTimeout => ("gateway_timeout", 504, 10, "The upstream did not answer within the route's timeout."),
    Internal => ("internal", 500, 1, "A fault inside Gantry. It is logged with the request id; the message never carries details."),
    Unavailable => ("unavailable", 503, 10, "The server cannot serve the request now (store unreachable, shutting down)."),
}

/// The error document of every non-2xx API response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.as_str().to_string(),
                message: message.into(),
            },
        }
    }
}

/// Renders the code table as Markdown, for `docs/errors.md` (a test keeps them equal).
pub fn markdown_table() -> String {
    let mut out = String::from("| code | HTTP | CLI exit | meaning |\n|---|---|---|---|\n");
    for c in Code::ALL {
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.as_str(),
            c.http_status(),
            c.exit_code(),
            c.description()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate code {}", c.as_str());
            assert_eq!(Code::parse(c.as_str()), *c);
            assert!(c.http_status() >= 400);
            assert!(c.exit_code() > 0);
        }
        assert_eq!(Code::parse("nonsense"), Code::Internal);
    }
}
