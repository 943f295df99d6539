//! The API's error: a code from the shared table and a message safe to show the caller.
//!
//! Internal faults are logged with the request id and answered with a generic message;
//! an `ApiError` message must never carry a secret, a token, a SQL statement or a path
//! on the server.

use model::{Code, Invalid};
use store::StoreError;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadRequest, message)
    }
    pub fn denied(action: &str, scope: &model::Scope) -> ApiError {
        ApiError::new(
            Code::PermissionDenied,
            format!("permission denied: {action} on {scope}"),
        )
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        ApiError::new(e.code, e.message)
    }
}

impl From<secrets::SecretsError> for ApiError {
    fn from(e: secrets::SecretsError) -> ApiError {
        match e {
            secrets::SecretsError::Store(s) => s.into(),
            e => {
                let code = e.code();
                if matches!(code, Code::Internal | Code::Unavailable) {
                    tracing::error!(error = %e, "key hierarchy failure");
                    return ApiError::new(
                        code,
                        "the key hierarchy failed to serve the request; see the server log",
                    );
                }
                ApiError::new(code, e.to_string())
            }
        }
    }
}

impl From<certs::CertsError> for ApiError {
    fn from(e: certs::CertsError) -> ApiError {
        match e {
            certs::CertsError::Store(s) => s.into(),
            certs::CertsError::Keys(k) => k.into(),
            e => {
                let code = e.code();
                if code == Code::Internal {
                    tracing::error!(error = %e, "certificate failure");
                    return ApiError::new(code, "certificate issuance failed; see the server log");
                }
                ApiError::new(code, e.to_string())
            }
        }
    }
}

impl From<artifacts::ArtifactError> for ApiError {
    fn from(e: artifacts::ArtifactError) -> ApiError {
        match e {
            artifacts::ArtifactError::Store(s) => s.into(),
            artifacts::ArtifactError::Keys(k) => k.into(),
            e => {
                let code = e.code();
                if matches!(code, Code::Internal | Code::Unavailable) {
                    tracing::error!(error = %e, "artifact registry failure");
                }
                ApiError::new(code, e.to_string())
            }
        }
    }
}

impl From<services::ServiceError> for ApiError {
    fn from(e: services::ServiceError) -> ApiError {
        match e {
            services::ServiceError::Store(s) => s.into(),
            services::ServiceError::Keys(k) => k.into(),
            services::ServiceError::Artifacts(a) => a.into(),
            e => {
                let code = e.code();
                if code == Code::Internal {
                    tracing::error!(error = %e, "service failure");
                }
                ApiError::new(code, e.to_string())
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let code = e.code();
        match code {
            Code::Unavailable | Code::Internal => {
                tracing::error!(error = %e, "store failure");
                ApiError::new(
                    code,
                    "the store failed to serve the request; see the server log",
                )
            }
            _ => ApiError::new(code, e.to_string()),
        }
    }
}
