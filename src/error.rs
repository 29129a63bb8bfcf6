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

/// Every `error` code a client can see: one variant each (clients match on them, so a code is
/// never renamed). A test fails when a variant is unused, so this list is the list the API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not JSON.
    InvalidJson,
    /// A parameter is missing, unknown, of the wrong type or out of range.
    InvalidParam,
    /// The body is larger than server.body_limit.
    PayloadTooLarge,
    /// No such path.
    RouteNotFound,
    /// The path exists but not for this method.
    MethodNotAllowed,
    /// Actix's own 408.
    RequestTimeout,
    /// Actix's own 411.
    LengthRequired,
    /// Actix's own 415.
    UnsupportedMediaType,
    /// Actix's own 431.
    HeadersTooLarge,
    /// Actix's own 503.
    ServiceUnavailable,
    /// Any other HTTP error actix produced.
    HttpError,
    /// A bug.
    InternalError,
    /// MySQL unreachable or failing.
    DatabaseUnavailable,
    /// Ceph unreachable or failing.
    CephUnavailable,
    /// Libvirt unreachable or failing.
    LibvirtUnavailable,
    /// /healthz: at least one backend is down.
    BackendUnavailable,
    /// No image of that id (or another project's private image).
    ImageNotFound,
    /// No host of that id.
    HostNotFound,
    /// Host add/update: a host with that URI, name or libvirt host UUID exists.
    HostExists,
    /// Host remove: instances are on it, or it is `libvirt.uri`.
    HostInUse,
    /// Host add: libvirt at that URI did not answer.
    HostUnreachable,
    /// Instance create or resize: no host passes placement's filters (the message says why per host).
    NoValidHost,
    /// Register: no RBD image of that name.
    ImageNotInPool,
    /// Register: that RBD image is registered already.
    ImageAlreadyRegistered,
    /// Register: the size disagrees with the RBD image.
    ImageSizeMismatch,
    /// Upload: the file is neither raw nor qcow2, or is a qcow2 that names a backing file or an
    /// external data file, or is encrypted, or is damaged.
    ImageFormatRefused,
    /// The image is not available for this request.
    ImageBusy,
    /// Delete: clones or instances depend on it.
    ImageHasClones,
    /// No instance of that id (or another project's).
    InstanceNotFound,
    /// The instance is in a transitional status.
    InstanceBusy,
    /// The instance is in error: destroy it.
    InstanceError,
    /// Turnon or resume of a running instance, or a change that needs it stopped.
    InstanceRunning,
    /// Turnoff, pause, resume, reboot or reset of a stopped instance.
    InstanceStopped,
    /// The instance is paused: resume it first (pause of a paused one, reboot, hot-plug).
    InstancePaused,
    /// The guest ignored the ACPI shutdown.
    InstanceStillRunning,
    /// Root_size below the image's size.
    RootSizeTooSmall,
    /// A volume resize to a size not above the current one (volumes only grow).
    VolumeCannotShrink,
    /// No volume of that id (or another project's).
    VolumeNotFound,
    /// Attached, attaching or detaching.
    VolumeInUse,
    /// In a status that forbids the request.
    VolumeBusy,
    /// A root disk cannot be handled on its own.
    VolumeIsRoot,
    /// Unmount: the volume is attached to no instance.
    VolumeNotAttached,
    /// Unmount: the volume is attached to another instance.
    VolumeAttachedElsewhere,
    /// The instance has no free disk target.
    NoFreeDevice,
    /// No snapshot of that id (or another project's).
    SnapshotNotFound,
    /// The snapshot is being made, deleted or restored, or is in error.
    SnapshotBusy,
    /// Restore: the snapshot is not of this instance, or the disks attached now differ from
    /// the ones it holds.
    SnapshotMismatch,
    /// Delete or destroy: snapshots hold the volume (delete them first).
    VolumeHasSnapshots,
    /// Destroy: snapshots of the instance exist (delete them first).
    InstanceHasSnapshots,
    /// No network interface of that id (or another project's).
    NetworkInterfaceNotFound,
    /// Attached, attaching or detaching.
    NetworkInterfaceInUse,
    /// In a status that forbids the request.
    NetworkInterfaceBusy,
    /// Detach: the NIC is attached to no instance.
    NetworkInterfaceNotAttached,
    /// Detach: the NIC is attached to another instance.
    NetworkInterfaceAttachedElsewhere,
    /// Create: another NIC has that MAC.
    MacInUse,
    /// Create: another NIC has that address on that bridge.
    IpInUse,
    /// Create: the address is outside the bridge's pool.
    IpOutsidePool,
    /// The bridge's address pool has no free address.
    PoolExhausted,
    /// Not one of network.bridges.
    BridgeNotAllowed,
    /// The hypervisor has no such bridge.
    BridgeMissing,
    /// The hypervisor refused the device.
    AttachFailed,
    /// The guest has not released the device yet.
    DetachPending,
    /// No credentials, or credentials that are unknown, revoked or expired.
    Unauthorized,
    /// Valid credentials whose role may not do this.
    Forbidden,
    /// The create would take its project over a quota.
    QuotaExceeded,
    /// Too many requests from one credential or address (with `Retry-After`).
    RateLimited,
}

impl ErrorCode {
    /// The HTTP status the code is answered with (a test checks each answer against it).
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidJson | InvalidParam | HttpError => 400,
            Unauthorized => 401,
            Forbidden => 403,
            RouteNotFound
            | HostNotFound
            | ImageNotFound
            | ImageNotInPool
            | InstanceNotFound
            | VolumeNotFound
            | SnapshotNotFound
            | NetworkInterfaceNotFound => 404,
            MethodNotAllowed => 405,
            RequestTimeout => 408,
            HostExists
            | HostInUse
            | ImageAlreadyRegistered
            | ImageBusy
            | ImageHasClones
            | InstanceBusy
            | InstanceError
            | InstanceRunning
            | InstanceStopped
            | InstancePaused
            | InstanceStillRunning
            | VolumeInUse
            | VolumeBusy
            | VolumeIsRoot
            | VolumeNotAttached
            | VolumeAttachedElsewhere
            | NoFreeDevice
            | SnapshotBusy
            | SnapshotMismatch
            | VolumeHasSnapshots
            | InstanceHasSnapshots
            | NetworkInterfaceInUse
            | NetworkInterfaceBusy
            | NetworkInterfaceNotAttached
            | NetworkInterfaceAttachedElsewhere
            | MacInUse
            | IpInUse
            | IpOutsidePool
            | PoolExhausted
            | DetachPending
            | QuotaExceeded
            | NoValidHost => 409,
            LengthRequired => 411,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            HostUnreachable | ImageSizeMismatch | ImageFormatRefused | RootSizeTooSmall
            | VolumeCannotShrink | BridgeNotAllowed | BridgeMissing | AttachFailed => 422,
            RateLimited => 429,
            HeadersTooLarge => 431,
            InternalError => 500,
            ServiceUnavailable | DatabaseUnavailable | CephUnavailable | LibvirtUnavailable
            | BackendUnavailable => 503,
        }
    }

    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidParam,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RouteNotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::RequestTimeout,
        ErrorCode::LengthRequired,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::HeadersTooLarge,
        ErrorCode::ServiceUnavailable,
        ErrorCode::HttpError,
        ErrorCode::InternalError,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::CephUnavailable,
        ErrorCode::LibvirtUnavailable,
        ErrorCode::BackendUnavailable,
        ErrorCode::ImageNotFound,
        ErrorCode::HostNotFound,
        ErrorCode::HostExists,
        ErrorCode::HostInUse,
        ErrorCode::HostUnreachable,
        ErrorCode::NoValidHost,
        ErrorCode::ImageNotInPool,
        ErrorCode::ImageAlreadyRegistered,
        ErrorCode::ImageSizeMismatch,
        ErrorCode::ImageFormatRefused,
        ErrorCode::ImageBusy,
        ErrorCode::ImageHasClones,
        ErrorCode::InstanceNotFound,
        ErrorCode::InstanceBusy,
        ErrorCode::InstanceError,
        ErrorCode::InstanceRunning,
        ErrorCode::InstanceStopped,
        ErrorCode::InstancePaused,
        ErrorCode::InstanceStillRunning,
        ErrorCode::RootSizeTooSmall,
        ErrorCode::VolumeCannotShrink,
        ErrorCode::VolumeNotFound,
        ErrorCode::VolumeInUse,
        ErrorCode::VolumeBusy,
        ErrorCode::VolumeIsRoot,
        ErrorCode::VolumeNotAttached,
        ErrorCode::VolumeAttachedElsewhere,
        ErrorCode::NoFreeDevice,
        ErrorCode::SnapshotNotFound,
        ErrorCode::SnapshotBusy,
        ErrorCode::SnapshotMismatch,
        ErrorCode::VolumeHasSnapshots,
        ErrorCode::InstanceHasSnapshots,
        ErrorCode::NetworkInterfaceNotFound,
        ErrorCode::NetworkInterfaceInUse,
        ErrorCode::NetworkInterfaceBusy,
        ErrorCode::NetworkInterfaceNotAttached,
        ErrorCode::NetworkInterfaceAttachedElsewhere,
        ErrorCode::MacInUse,
        ErrorCode::IpInUse,
        ErrorCode::IpOutsidePool,
        ErrorCode::PoolExhausted,
        ErrorCode::BridgeNotAllowed,
        ErrorCode::BridgeMissing,
        ErrorCode::AttachFailed,
        ErrorCode::DetachPending,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::QuotaExceeded,
        ErrorCode::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidParam => "invalid_param",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::ServiceUnavailable => "service_unavailable",
            ErrorCode::HttpError => "http_error",
            ErrorCode::InternalError => "internal_error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::CephUnavailable => "ceph_unavailable",
            ErrorCode::LibvirtUnavailable => "libvirt_unavailable",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::ImageNotFound => "image_not_found",
            ErrorCode::HostNotFound => "host_not_found",
            ErrorCode::HostExists => "host_exists",
            ErrorCode::HostInUse => "host_in_use",
            ErrorCode::HostUnreachable => "host_unreachable",
            ErrorCode::NoValidHost => "no_valid_host",
            ErrorCode::ImageNotInPool => "image_not_in_pool",
            ErrorCode::ImageAlreadyRegistered => "image_already_registered",
            ErrorCode::ImageSizeMismatch => "image_size_mismatch",
            ErrorCode::ImageFormatRefused => "image_format_refused",
            ErrorCode::ImageBusy => "image_busy",
            ErrorCode::ImageHasClones => "image_has_clones",
            ErrorCode::InstanceNotFound => "instance_not_found",
            ErrorCode::InstanceBusy => "instance_busy",
            ErrorCode::InstanceError => "instance_error",
            ErrorCode::InstanceRunning => "instance_running",
            ErrorCode::InstanceStopped => "instance_stopped",
            ErrorCode::InstancePaused => "instance_paused",
            ErrorCode::InstanceStillRunning => "instance_still_running",
            ErrorCode::RootSizeTooSmall => "root_size_too_small",
            ErrorCode::VolumeCannotShrink => "volume_cannot_shrink",
            ErrorCode::VolumeNotFound => "volume_not_found",
            ErrorCode::VolumeInUse => "volume_in_use",
            ErrorCode::VolumeBusy => "volume_busy",
            ErrorCode::VolumeIsRoot => "volume_is_root",
            ErrorCode::VolumeNotAttached => "volume_not_attached",
            ErrorCode::VolumeAttachedElsewhere => "volume_attached_elsewhere",
            ErrorCode::NoFreeDevice => "no_free_device",
            ErrorCode::SnapshotNotFound => "snapshot_not_found",
            ErrorCode::SnapshotBusy => "snapshot_busy",
            ErrorCode::SnapshotMismatch => "snapshot_mismatch",
            ErrorCode::VolumeHasSnapshots => "volume_has_snapshots",
            ErrorCode::InstanceHasSnapshots => "instance_has_snapshots",
            ErrorCode::NetworkInterfaceNotFound => "network_interface_not_found",
            ErrorCode::NetworkInterfaceInUse => "network_interface_in_use",
            ErrorCode::NetworkInterfaceBusy => "network_interface_busy",
            ErrorCode::NetworkInterfaceNotAttached => "network_interface_not_attached",
            ErrorCode::NetworkInterfaceAttachedElsewhere => "network_interface_attached_elsewhere",
            ErrorCode::MacInUse => "mac_in_use",
            ErrorCode::IpInUse => "ip_in_use",
            ErrorCode::IpOutsidePool => "ip_outside_pool",
            ErrorCode::PoolExhausted => "pool_exhausted",
            ErrorCode::BridgeNotAllowed => "bridge_not_allowed",
            ErrorCode::BridgeMissing => "bridge_missing",
            ErrorCode::AttachFailed => "attach_failed",
            ErrorCode::DetachPending => "detach_pending",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Database,
    Ceph,
    Libvirt,
}

impl Backend {
    /// As users and operators name it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Database => "MySQL",
            Backend::Ceph => "Ceph",
            Backend::Libvirt => "libvirt",
        }
    }

    fn code(self) -> ErrorCode {
        match self {
            Backend::Database => ErrorCode::DatabaseUnavailable,
            Backend::Ceph => ErrorCode::CephUnavailable,
            Backend::Libvirt => ErrorCode::LibvirtUnavailable,
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
    NotFound { code: ErrorCode, message: String },
    /// The resource's state forbids the request.
    #[error("{message}")]
    Conflict { code: ErrorCode, message: String },
    /// Well-formed but semantically invalid (a size that disagrees with the real one...).
    #[error("{message}")]
    Unprocessable { code: ErrorCode, message: String },
    #[error("{message}")]
    Unavailable { backend: Backend, message: String },
    /// A bug: something that should not happen.
    #[error("{0}")]
    Internal(String),
    /// No usable credentials (401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(String),
    /// Credentials whose role is too weak (403).
    #[error("{0}")]
    Forbidden(String),
    /// Over a rate limit: 429 with `Retry-After` (whole seconds).
    #[error("{message}")]
    RateLimited {
        retry_after_secs: u64,
        message: String,
    },
    /// Any other HTTP error actix produced (415, 408...), re-wrapped as JSON.
    #[error("{message}")]
    Http {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }
    pub fn conflict(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Conflict {
            code,
            message: message.into(),
        }
    }
    pub fn unprocessable(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code,
            message: message.into(),
        }
    }
    /// A transaction MySQL rolled back to break a deadlock (it says: try restarting it).
    pub fn is_deadlock(&self) -> bool {
        matches!(self, ApiError::Unavailable { backend: Backend::Database, message } if message.starts_with(DEADLOCK))
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
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Http { status, .. } => *status,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidJson(_) => ErrorCode::InvalidJson,
            ApiError::InvalidParam(_) => ErrorCode::InvalidParam,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::RouteNotFound(_) => ErrorCode::RouteNotFound,
            ApiError::MethodNotAllowed(_) => ErrorCode::MethodNotAllowed,
            ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::Http { code, .. } => *code,
            ApiError::Unavailable { backend, .. } => backend.code(),
            ApiError::Internal(_) => ErrorCode::InternalError,
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
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

fn http_code(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        408 => ErrorCode::RequestTimeout,
        411 => ErrorCode::LengthRequired,
        415 => ErrorCode::UnsupportedMediaType,
        431 => ErrorCode::HeadersTooLarge,
        503 => ErrorCode::ServiceUnavailable,
        _ => ErrorCode::HttpError,
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
            error: self.code().as_str(),
            message: &message,
            request_id: crate::context::current(),
        };
        let mut r = HttpResponse::build(self.status());
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            // The backend probes run every second: worth trying again soon.
            r.insert_header((actix_web::http::header::RETRY_AFTER, "2"));
        }
        if let ApiError::RateLimited {
            retry_after_secs, ..
        } = self
        {
            r.insert_header((
                actix_web::http::header::RETRY_AFTER,
                retry_after_secs.to_string(),
            ));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            r.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                "Bearer realm=\"api-web\"",
            ));
        }
        r.json(body)
    }
}

/// How a deadlocked transaction's error begins.
const DEADLOCK: &str = "MySQL: deadlock, the transaction was rolled back";

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
            // InnoDB chose this transaction as a deadlock victim: running it again is the cure
            // (`is_deadlock`).
            E::DatabaseError(K::SerializationFailure, info) => {
                ApiError::unavailable(Backend::Database, format!("{DEADLOCK}: {}", info.message()))
            }
            // Lost connections, lock wait timeouts, read-only server...: transient.
            E::DatabaseError(_, info) => {
                ApiError::unavailable(Backend::Database, format!("MySQL: {}", info.message()))
            }
            E::NotFound => ApiError::Internal("a row expected to exist was not found".into()),
            other => ApiError::Internal(format!("database: {other}")),
        }
    }
}

impl From<crate::model::IllegalTransition> for ApiError {
    fn from(e: crate::model::IllegalTransition) -> Self {
        ApiError::Internal(e.to_string())
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

/// Each code with its doc comment (from this file's source): the list the OpenAPI document's
/// `x-error-codes` must equal (`tests/it/openapi.rs`).
pub fn documented() -> Vec<(ErrorCode, String)> {
    let src = include_str!("error.rs");
    let start = src.find("pub enum ErrorCode {").unwrap_or(0);
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    let mut doc: Vec<&str> = vec![];
    let mut out = vec![];
    for line in body.lines().skip(1) {
        let l = line.trim();
        if let Some(d) = l.strip_prefix("///") {
            doc.push(d.trim());
        } else if let Some(name) = l.strip_suffix(',') {
            if let Some(c) = ErrorCode::ALL.iter().find(|c| format!("{c:?}") == name) {
                out.push((*c, doc.join(" ")));
            }
            doc.clear();
        }
    }
    out
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
                ApiError::not_found(ErrorCode::ImageNotFound, "x"),
                404,
                "image_not_found",
            ),
            (
                ApiError::conflict(ErrorCode::ImageHasClones, "x"),
                409,
                "image_has_clones",
            ),
            (
                ApiError::unprocessable(ErrorCode::ImageSizeMismatch, "x"),
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
            (ApiError::Unauthorized("x".into()), 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
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

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{s}"
            );
            // The variant's name is the code in CamelCase.
            let camel: String = s
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            assert_eq!(format!("{c:?}"), camel);
        }
    }

    /// Each code has its doc comment (the OpenAPI document's list is checked against them),
    /// and each answer's status is its code's `status()`: the constructors named with a code
    /// in the source agree with it.
    #[test]
    fn every_code_is_documented_and_answered_with_its_status() {
        for (code, doc) in documented() {
            assert!(!doc.is_empty(), "ErrorCode::{code:?} has no doc comment");
        }
        let mut src = String::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    src.push_str(&std::fs::read_to_string(p).unwrap());
                }
            }
        }
        let flat: String = src.chars().filter(|c| !c.is_whitespace()).collect();
        for (ctor, status) in [
            ("not_found", 404),
            ("conflict", 409),
            ("unprocessable", 422),
        ] {
            for c in ErrorCode::ALL {
                if flat.contains(&format!("{ctor}(ErrorCode::{c:?},")) {
                    assert_eq!(c.status(), status, "{c:?} is answered by ApiError::{ctor}");
                }
            }
        }
        for c in ErrorCode::ALL {
            let e = match c.status() {
                404 => ApiError::not_found(*c, "x"),
                409 => ApiError::conflict(*c, "x"),
                422 => ApiError::unprocessable(*c, "x"),
                _ => continue,
            };
            assert_eq!(e.status().as_u16(), c.status());
        }
        assert_eq!(ApiError::Unauthorized("x".into()).code().status(), 401);
        assert_eq!(
            ApiError::unavailable(Backend::Ceph, "x").status().as_u16(),
            ErrorCode::CephUnavailable.status()
        );
    }

    /// Every code is answered somewhere (Lemmy's errors-used test): a code nothing uses is a
    /// promise to clients the API does not keep.
    #[test]
    fn every_code_is_used() {
        let mut src = String::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("error.rs") {
                    src.push_str(&std::fs::read_to_string(p).unwrap());
                }
            }
        }
        let this = include_str!("error.rs");
        let body = &this[..this.find("#[cfg(test)]").unwrap()];
        for c in ErrorCode::ALL {
            let name = format!("ErrorCode::{c:?}");
            // Used by another module, or mapped here from a status or a backend.
            let here = body.matches(&name).count() > 2;
            assert!(src.contains(&name) || here, "{name} is never answered");
        }
    }
}
