//! `/healthz` and `/api/v1/version`.

use super::Success;
use crate::context::{self, blocking};
use crate::error::ErrorCode;
use crate::service::{health, Ctx};
use actix_web::web::Data;
use actix_web::HttpResponse;
use serde::Serialize;
use std::time::Duration;

/// A check that takes longer than this counts as failed (the backend hangs): /healthz answers
/// within it.
const CHECK_TIMEOUT: Duration = health::PROBE_WAIT;

#[derive(Serialize)]
struct CheckView {
    ok: bool,
    detail: String,
}

async fn run(ctx: Data<Ctx>, f: fn(&Ctx) -> health::Check) -> CheckView {
    let work = blocking::<_, context::TaskFailed, _>(move || Ok(f(&ctx)));
    match tokio::time::timeout(CHECK_TIMEOUT, work).await {
        Ok(Ok(c)) => CheckView {
            ok: c.ok,
            detail: c.detail,
        },
        Ok(Err(e)) => CheckView {
            ok: false,
            detail: e.to_string(),
        },
        Err(_) => CheckView {
            ok: false,
            detail: format!("no answer within {} ms", CHECK_TIMEOUT.as_millis()),
        },
    }
}

#[derive(Serialize)]
struct Checks {
    mysql: CheckView,
    libvirt: CheckView,
    ceph: CheckView,
}

#[derive(Serialize)]
struct Unhealthy<'a> {
    code: u16,
    error: &'static str,
    message: String,
    request_id: String,
    data: &'a Checks,
}

/// 200 when MySQL, libvirt and Ceph all answer; 503 naming each that does not.
pub async fn healthz(ctx: Data<Ctx>) -> HttpResponse {
    let (mysql, libvirt, ceph) = futures_util::join!(
        run(ctx.clone(), health::mysql),
        run(ctx.clone(), health::libvirt),
        run(ctx.clone(), health::ceph)
    );
    let checks = Checks {
        mysql,
        libvirt,
        ceph,
    };
    let failing: Vec<String> = [
        ("mysql", &checks.mysql),
        ("libvirt", &checks.libvirt),
        ("ceph", &checks.ceph),
    ]
    .iter()
    .filter(|(_, c)| !c.ok)
    .map(|(n, c)| format!("{n} ({})", c.detail))
    .collect();
    if failing.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({
            "code": 0,
            "message": "success",
            "data": &checks,
            "request_id": context::current(),
        }))
    } else {
        HttpResponse::ServiceUnavailable().json(Unhealthy {
            code: 503,
            error: ErrorCode::BackendUnavailable.as_str(),
            message: format!("unavailable: {}", failing.join("; ")),
            request_id: context::current(),
            data: &checks,
        })
    }
}

#[derive(Serialize)]
pub struct VersionView {
    name: &'static str,
    version: &'static str,
    api: &'static str,
}

pub async fn version() -> Success<VersionView> {
    Success(VersionView {
        name: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        api: "v1",
    })
}

/// `GET /metrics` on the separate scrape listener (`server.metrics_listen`): no credentials,
/// that address is the protection (a private interface, or loopback).
pub async fn metrics_open(ctx: Data<Ctx>) -> crate::error::ApiResult<HttpResponse> {
    let text = blocking(move || health::metrics_text(&ctx)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}

/// No query parameters (an unknown one is refused, as everywhere).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// `GET /metrics`: Prometheus' text format, for admins.
pub async fn metrics(
    ctx: Data<Ctx>,
    caller: super::auth::Caller,
    _q: actix_web::web::Query<NoParams>,
) -> crate::error::ApiResult<HttpResponse> {
    caller.admin_only("read the metrics")?;
    let text = blocking(move || health::metrics_text(&ctx)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(text))
}
