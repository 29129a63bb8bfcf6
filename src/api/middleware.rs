//! `X-Request-Id`: taken from the client (if sane) or generated, returned on every response, put
//! in every error body and on every log line written while the request is served (the id itself
//! lives in `crate::context`, which carries it to blocking and background threads).
//!
//! The same middleware is the structured access log and turns any error response that is not
//! already ours (actix's own 404/405/413/415...) into the JSON error envelope.

use crate::context;
use crate::error::ApiError;
use crate::service::Ctx;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::ResponseError;
use std::time::Instant;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A client's id is kept if it is 1-128 visible ASCII characters; otherwise we make one.
fn client_id(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(&HEADER)?.to_str().ok()?;
    (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| v.to_string())
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = client_id(&req).unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let peer = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "-".into());
    context::scope(id.clone(), async move {
        // Routing and handlers turn errors into responses; an Err here comes from an inner
        // middleware and is turned into a response by actix (its log line is then missing).
        let res = next.call(req).await?.map_into_boxed_body();
        let mut res = as_json_error(res, &method, &path);
        if let Ok(v) = HeaderValue::from_str(&id) {
            res.headers_mut().insert(HEADER, v);
        }
        let status = res.status().as_u16();
        let secs = started.elapsed().as_secs_f64();
        let ms = secs * 1000.0;
        if let Some(ctx) = res.request().app_data::<actix_web::web::Data<Ctx>>() {
            let route = res.request().match_pattern();
            let route = route.as_deref().unwrap_or("unmatched");
            ctx.metrics.http(route, &method, status, secs);
        }
        log::info!(
            target: "access",
            "method={method} path={path:?} status={status} duration_ms={ms:.2} peer={peer}"
        );
        Ok(res)
    })
    .await
}

/// Error responses that are not JSON come from actix itself: wrap them in our envelope.
fn as_json_error(
    res: ServiceResponse<BoxBody>,
    method: &str,
    path: &str,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let message = match status.as_u16() {
        404 => format!("{method} {path}"),
        405 => format!("method {method} is not allowed for {path}"),
        _ => res
            .response()
            .error()
            .map(|e| e.to_string())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string()),
    };
    let err = ApiError::from_status(status, message);
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, err.error_response())
}

/// Answers `req` with `e` in our envelope, from a middleware (the handler is not called).
pub fn refuse(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    let (req, _) = req.into_parts();
    ServiceResponse::new(req, e.error_response())
}

/// The request's body (within `server.body_limit`), read by a middleware that hands it on, or
/// the error the handler would have given (413 in our envelope).
pub async fn read_body(req: &mut ServiceRequest) -> Result<actix_web::web::Bytes, ApiError> {
    req.extract::<actix_web::web::Bytes>().await.map_err(|e| {
        let status = e.as_response_error().status_code();
        ApiError::from_status(status, e.to_string())
    })
}
