//! The one error type of the API and how it becomes JSON.
//!
//! Policy:
//! - Every error a client can see has a stable snake_case `error` code (pinned by a test below);
//!   the `message` is for humans and may change.
//! - The HTTP status carries the class: 400 bad input, 404 unknown id or route, 409 state conflict,
//!   422 semantically invalid, 503 a backend (MySQL, libvirt, Ceph) unavailable or failing,
//!   500 only for bugs.
//! - Lower layers have their own error types (`ceph::CephError`, `virt::VirtError`, diesel's);
//!   `From` impls here decide which of them are "backend unavailable" and which are bugs.
//! - Secrets (cephx keys) never reach a message: lower layers do not put them in their errors.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Database,
    Ceph,
    Libvirt,
}

impl Backend {
    fn code(self) -> &'static str {
        match self {
            Backend::Database => "database_unavailable",
            Backend::Ceph => "ceph_unavailable",
            Backend::Libvirt => "libvirt_unavailable",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// A parameter is missing, unknown, of the wrong type or out of range.
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("no route for {0}")]
    RouteNotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// An id that names nothing. `code` is `<resource>_not_found`.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// The resource's state forbids the request.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Well-formed but semantically invalid (a size that disagrees with the real one...).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("{message}")]
    Unavailable { backend: Backend, message: String },
    /// A bug: something that should not happen.
    #[error("{0}")]
    Internal(String),
    /// Any other HTTP error actix produced (415, 408...), re-wrapped as JSON.
    #[error("{message}")]
    Http {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code,
            message: message.into(),
        }
    }
    pub fn unavailable(backend: Backend, message: impl Into<String>) -> Self {
        ApiError::Unavailable {
            backend,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidParam(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::InvalidParam(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RouteNotFound(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Http { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidParam(_) => "invalid_param",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Http { code, .. } => code,
            ApiError::Unavailable { backend, .. } => backend.code(),
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Wraps an HTTP error produced outside our handlers (actix's own 404/405/413/415...).
    pub fn from_status(status: StatusCode, message: String) -> Self {
        match status.as_u16() {
            400 => ApiError::InvalidParam(message),
            404 => ApiError::RouteNotFound(message),
            405 => ApiError::MethodNotAllowed(message),
            413 => ApiError::PayloadTooLarge(message),
            s if s >= 500 && s != 503 => ApiError::Internal(message),
            _ => ApiError::Http {
                status,
                code: http_code(status),
                message,
            },
        }
    }
}

fn http_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        408 => "request_timeout",
        411 => "length_required",
        415 => "unsupported_media_type",
        431 => "headers_too_large",
        503 => "service_unavailable",
        _ => "http_error",
    }
}

/// The error envelope: `{"code":<status>,"error":"<code>","message":"...","request_id":"..."}`.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: u16,
    pub error: &'a str,
    pub message: &'a str,
    pub request_id: String,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        let message = self.to_string();
        let body = ErrorBody {
            code: self.status().as_u16(),
            error: self.code(),
            message: &message,
            request_id: crate::context::current(),
        };
        HttpResponse::build(self.status()).json(body)
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        match e {
            // Integrity violations we did not catch where they can happen are bugs.
            E::DatabaseError(
                K::UniqueViolation
                | K::ForeignKeyViolation
                | K::CheckViolation
                | K::NotNullViolation,
                ref info,
            ) => ApiError::Internal(format!("database constraint: {}", info.message())),
            // Lost connections, deadlocks, lock wait timeouts, read-only server...: transient.
            E::DatabaseError(_, info) => {
                ApiError::unavailable(Backend::Database, format!("MySQL: {}", info.message()))
            }
            E::NotFound => ApiError::Internal("a row expected to exist was not found".into()),
            other => ApiError::Internal(format!("database: {other}")),
        }
    }
}

impl From<crate::context::TaskFailed> for ApiError {
    fn from(e: crate::context::TaskFailed) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::db::PoolError> for ApiError {
    fn from(e: crate::db::PoolError) -> Self {
        ApiError::unavailable(Backend::Database, format!("MySQL unreachable: {e}"))
    }
}

impl From<crate::ceph::CephError> for ApiError {
    fn from(e: crate::ceph::CephError) -> Self {
        ApiError::unavailable(Backend::Ceph, e.to_string())
    }
}

impl From<crate::virt::VirtError> for ApiError {
    fn from(e: crate::virt::VirtError) -> Self {
        ApiError::unavailable(Backend::Libvirt, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn json_of(e: ApiError) -> serde_json::Value {
        let resp = e.error_response();
        let bytes = resp.into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Pins the wire form of every kind of error: clients match on `error`.
    #[test]
    fn error_json_is_pinned() {
        let cases = vec![
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::InvalidParam("x".into()), 400, "invalid_param"),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "payload_too_large",
            ),
            (ApiError::RouteNotFound("/x".into()), 404, "route_not_found"),
            (
                ApiError::MethodNotAllowed("x".into()),
                405,
                "method_not_allowed",
            ),
            (
                ApiError::not_found("image_not_found", "x"),
                404,
                "image_not_found",
            ),
            (
                ApiError::conflict("image_has_clones", "x"),
                409,
                "image_has_clones",
            ),
            (
                ApiError::unprocessable("image_size_mismatch", "x"),
                422,
                "image_size_mismatch",
            ),
            (
                ApiError::unavailable(Backend::Database, "x"),
                503,
                "database_unavailable",
            ),
            (
                ApiError::unavailable(Backend::Ceph, "x"),
                503,
                "ceph_unavailable",
            ),
            (
                ApiError::unavailable(Backend::Libvirt, "x"),
                503,
                "libvirt_unavailable",
            ),
            (ApiError::Internal("x".into()), 500, "internal_error"),
            (
                ApiError::from_status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "x".into()),
                415,
                "unsupported_media_type",
            ),
        ];
        for (err, status, code) in cases {
            let v = json_of(err);
            assert_eq!(v["code"], status, "{v}");
            assert_eq!(v["error"], code, "{v}");
            let expected = if code == "route_not_found" {
                "no route for /x"
            } else {
                "x"
            };
            assert_eq!(v["message"], expected, "{v}");
            assert!(v["request_id"].is_string(), "{v}");
            let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys.len(), 4, "{v}");
        }
    }

    #[test]
    fn route_not_found_names_the_path() {
        let v = json_of(ApiError::RouteNotFound("GET /nope".into()));
        assert_eq!(v["message"], "no route for GET /nope");
    }
}
