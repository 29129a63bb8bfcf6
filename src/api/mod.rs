//! HTTP only: the route table, request parsing, response views, errors as JSON.
//! Handlers validate input, call a service off the executor, and shape the answer.

mod audit;
pub mod auth;
mod compat;
mod health;
mod hosts;
mod images;
mod instances;
mod middleware;
mod nics;
mod quotas;
mod snapshots;
pub mod views;
mod volumes;

use crate::error::{ApiError, ApiResult};
use crate::service::{Ctx, Paging};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpRequest, HttpResponse, Responder};
use serde::Serialize;
use std::collections::BTreeMap;
use validator::{Validate, ValidationErrors};

/// Largest page a list returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
pub const DEFAULT_PAGE_SIZE: u32 = 20;

/// Declares the route table once, as data (`ROUTES`, read by the OpenAPI test and the docs) and as
/// the actix registration (`routes`), so the two cannot disagree. Methods of one path share one
/// resource: a path asked with a method it does not serve answers 405.
macro_rules! route_table {
    ($( $path:literal => $( $method:ident $handler:path ),+ ; )*) => {
        /// Every (method, path) the app serves.
        pub const ROUTES: &[(&str, &str)] = &[$($( (stringify!($method), $path), )+)*];

        /// Registers `ROUTES` with their handlers.
        pub fn routes(cfg: &mut web::ServiceConfig) {
            $( cfg.service(web::resource($path)$( .route(web::$method().to($handler)) )+); )*
        }
    };
}

route_table! {
    "/healthz" => get health::healthz;
    "/api/v1/version" => get health::version;
    "/metrics" => get health::metrics;
    "/api/v1/openapi.json" => get openapi;
    "/api/v1/auth/token" => post auth::token;
    "/api/v1/images/list" => get images::list;
    "/api/v1/images/inspect" => get images::inspect;
    "/api/v1/images/create" => post images::create;
    "/api/v1/images/create_from_snapshot" => post images::create_from_snapshot;
    "/api/v1/images/upload" => post images::upload;
    "/api/v1/images/download" => get images::download;
    "/api/v1/images/register" => post images::register;
    "/api/v1/images/update" => post images::update;
    "/api/v1/images/delete" => post images::delete;
    "/api/v1/unregister_images/list" => get images::unregistered;
    "/api/v1/instance/list" => get instances::list;
    "/api/v1/instance/search" => get instances::list;
    "/api/v1/instance/detail" => get instances::detail;
    "/api/v1/instance/create" => post instances::create;
    "/api/v1/instance/progress" => get instances::progress;
    "/api/v1/instance/turnon" => post instances::turnon;
    "/api/v1/instance/turnoff" => post instances::turnoff;
    "/api/v1/instance/pause" => post instances::pause;
    "/api/v1/instance/resume" => post instances::resume;
    "/api/v1/instance/reboot" => post instances::reboot;
    "/api/v1/instance/reset" => post instances::reset;
    "/api/v1/instance/migrate" => post instances::migrate;
    "/api/v1/instance/update" => post instances::update;
    "/api/v1/instance/restore" => post snapshots::restore;
    // "destory" is the original design's spelling, kept for its clients.
    "/api/v1/instance/destroy" => post instances::destroy;
    "/api/v1/instance/destory" => post instances::destroy;
    "/api/v1/instance/console" => get instances::console;
    "/api/v1/instance/actions" => get audit::instance_actions;
    "/api/v1/volume/list" => get volumes::list;
    "/api/v1/volume/create" => post volumes::create;
    "/api/v1/volume/mount" => post volumes::mount;
    "/api/v1/volume/unmount" => post volumes::unmount;
    "/api/v1/volume/resize" => post volumes::resize;
    "/api/v1/volume/restore" => post snapshots::restore_volume;
    // The design deletes with a GET (the portal calls it so); POST is accepted too.
    "/api/v1/volume/delete" => get volumes::delete_get, post volumes::delete_post;
    "/api/v1/snapshot/create" => post snapshots::create;
    "/api/v1/snapshot/list" => get snapshots::list;
    "/api/v1/snapshot/detail" => get snapshots::detail;
    "/api/v1/snapshot/delete" => post snapshots::delete;
    "/api/v1/network/list" => get nics::list;
    "/api/v1/network/search" => get nics::list;
    "/api/v1/network/create" => post nics::create;
    "/api/v1/network/attach" => post nics::attach;
    "/api/v1/network/detach" => post nics::detach;
    "/api/v1/network/delete" => post nics::delete;
    "/api/v1/quotas" => get quotas::show;
    "/api/v1/quotas/update" => post quotas::update;
    "/api/v1/audit/list" => get audit::list;
    "/api/v1/host/add" => post hosts::add;
    "/api/v1/host/list" => get hosts::list;
    "/api/v1/host/detail" => get hosts::detail;
    "/api/v1/host/update" => post hosts::update;
    "/api/v1/host/remove" => post hosts::remove;
    "/api/v1/host/evacuate" => post hosts::evacuate;
}

/// The whole application: state, parsers that answer in our envelope, routes, middleware.
pub fn app(
    ctx: web::Data<Ctx>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let limit = ctx.cfg.server.body_limit;
    let origins = &ctx.cfg.server.cors_origins;
    let cors = actix_web::middleware::Condition::new(!origins.is_empty(), cors(origins));
    App::new()
        .app_data(ctx)
        .app_data(
            web::JsonConfig::default()
                .limit(limit)
                // curl -d sends form content type: read the body as JSON whatever it says.
                .content_type_required(false)
                .error_handler(|e, _| json_error(e).into()),
        )
        .app_data(web::PayloadConfig::default().limit(limit))
        .app_data(web::QueryConfig::default().error_handler(|e, _| query_error(e).into()))
        .configure(routes)
        .default_service(web::to(no_route))
        // Innermost first: the audit of mutating requests (it needs the caller), the seed
        // portal's forms and cache-busters made plain (`compat`), credentials,
        // then CORS (a preflight is answered before credentials are asked for, and a refusal
        // still carries the CORS headers a browser needs to read it), then request ids, the
        // access log, the metrics and the JSON envelope around everything.
        .wrap(from_fn(audit::middleware))
        .wrap(from_fn(compat::middleware))
        .wrap(from_fn(auth::require))
        .wrap(cors)
        .wrap(from_fn(middleware::middleware))
}

/// The separate scrape listener's app (`server.metrics_listen`): `GET /metrics` only, without
/// credentials.
pub fn metrics_app(
    ctx: web::Data<Ctx>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(ctx)
        .route("/metrics", web::get().to(health::metrics_open))
        .default_service(web::to(no_route))
}

/// CORS for the configured origins only (`server.cors_origins`). With none it is not mounted:
/// a browser's preflight then gets no allowing headers, so no cross-origin page can call.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers([
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::CONTENT_TYPE,
            middleware::HEADER,
        ])
        .expose_headers([middleware::HEADER])
        .max_age(3600);
    for o in origins {
        c = c.allowed_origin(o);
    }
    c
}

/// The OpenAPI description of this API (openapi.json; a test keeps it and the routes in step).
pub const OPENAPI: &str = include_str!("../../openapi.json");

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

async fn no_route(req: HttpRequest) -> ApiResult<HttpResponse> {
    Err(ApiError::RouteNotFound(format!(
        "{} {}",
        req.method(),
        req.path()
    )))
}

fn json_error(e: JsonPayloadError) -> ApiError {
    match e {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge(format!("request body larger than {limit} bytes"))
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::InvalidParam(e.to_string()),
        JsonPayloadError::Deserialize(e) => {
            ApiError::InvalidJson(format!("body is not valid JSON: {e}"))
        }
        other => ApiError::InvalidJson(other.to_string()),
    }
}

fn query_error(e: QueryPayloadError) -> ApiError {
    match e {
        QueryPayloadError::Deserialize(e) => ApiError::InvalidParam(format!("query string: {e}")),
        other => ApiError::InvalidParam(format!("query string: {other}")),
    }
}

/// Validator's errors as one message naming each bad field.
pub fn check(v: &impl Validate) -> ApiResult<()> {
    v.validate()
        .map_err(|e| ApiError::InvalidParam(describe_errors(&e)))
}

fn describe_errors(e: &ValidationErrors) -> String {
    let fields: BTreeMap<_, _> = e.field_errors().into_iter().collect();
    fields
        .iter()
        .map(|(field, errs)| {
            let what: Vec<String> = errs
                .iter()
                .map(|er| {
                    er.message
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| er.code.to_string())
                })
                .collect();
            format!("{field}: {}", what.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Paging from optional query parameters: page_num from 1, page_size 1..=1000 (default 20).
pub fn paging(page_num: Option<u32>, page_size: Option<u32>) -> ApiResult<Paging> {
    let page_num = page_num.unwrap_or(1);
    let page_size = page_size.unwrap_or(DEFAULT_PAGE_SIZE);
    if page_num == 0 {
        return Err(ApiError::invalid("page_num: pages are numbered from 1"));
    }
    if page_size == 0 || page_size > MAX_PAGE_SIZE {
        return Err(ApiError::invalid(format!(
            "page_size: must be between 1 and {MAX_PAGE_SIZE}"
        )));
    }
    Ok(Paging {
        page_num,
        page_size,
    })
}

/// The filter of a list from its optional query parameters (empty ones do not filter); an
/// unknown status is a 400 naming the statuses there are.
pub fn list_filter<S: crate::model::Lifecycle>(
    filter_name: Option<String>,
    status: Option<String>,
    instance_id: Option<String>,
) -> ApiResult<crate::db::ListFilter<S>> {
    let status = match status.filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(S::parse(&s).ok_or_else(|| {
            ApiError::invalid(format!("status: {s:?} is not one of {}", S::names()))
        })?),
    };
    Ok(crate::db::ListFilter {
        name_contains: filter_name.filter(|f| !f.is_empty()),
        status,
        instance_id: instance_id
            .filter(|s| !s.is_empty())
            .map(crate::model::InstanceId::new),
        ..Default::default()
    })
}

/// The query of a list of what belongs to instances (volumes, NICs, snapshots).
#[derive(serde::Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AttachedListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    status: Option<String>,
    /// Only what is attached to (snapshots: taken of) this instance.
    #[validate(custom(function = "valid_filter_id"))]
    instance_id: Option<String>,
    /// Admins: only this project's (a member sees its own project's).
    #[validate(custom(function = "valid_filter_id"))]
    project_id: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

/// A page of volumes or NICs, each shown with `view` (which names its instance).
pub async fn list_attached<R, V>(
    ctx: web::Data<Ctx>,
    caller: auth::Caller,
    q: web::Query<AttachedListQuery>,
    view: fn(R, &views::InstanceNames) -> V,
) -> ApiResult<Success<PageView<V>>>
where
    R: crate::service::Pluggable + Send + 'static,
{
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let mut filter =
        list_filter::<<R as crate::db::Table>::Status>(q.filter_name, q.status, q.instance_id)?;
    filter.project_id = caller.list_project(q.project_id)?;
    let (total, rows, names) =
        crate::context::blocking(move || crate::service::list_attached::<R>(&ctx, &filter, p))
            .await?;
    let items = rows.into_iter().map(|r| view(r, &names)).collect();
    Ok(Success(PageView::new(total, p, items)))
}

/// A success: `{"code":0,"message":"success","data":...,"request_id":"..."}`.
pub struct Success<T>(pub T);

#[derive(Serialize)]
struct Envelope<T> {
    code: u16,
    message: &'static str,
    data: T,
    request_id: String,
}

impl<T: Serialize> Responder for Success<T> {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _req: &HttpRequest) -> HttpResponse {
        HttpResponse::Ok().json(Envelope {
            code: 0,
            message: "success",
            data: self.0,
            request_id: crate::context::current(),
        })
    }
}

/// A page of a list.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PageView<T> {
    pub total: i64,
    pub page_num: u32,
    pub page_size: u32,
    pub items: Vec<T>,
}

impl<T> PageView<T> {
    pub fn new(total: i64, p: Paging, items: Vec<T>) -> Self {
        PageView {
            total,
            page_num: p.page_num,
            page_size: p.page_size,
            items,
        }
    }
}

// ---------------------------------------------------------------- field validators

/// A display name: 1-255 characters, not only spaces, no control characters. Anything else
/// (`<>&'"`, quotes, SQL metacharacters, non-ASCII) is stored and returned verbatim.
pub fn valid_name(s: &str) -> Result<(), validator::ValidationError> {
    let n = s.chars().count();
    if n == 0 || s.trim().is_empty() {
        return Err(validation("must not be empty"));
    }
    if n > 255 {
        return Err(validation("must be at most 255 characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(validation("must not contain control characters"));
    }
    no_noncharacters(s)
}

/// A Unicode non-character (U+FFFE, U+FFFF, U+FDD0..U+FDEF and the last two of every plane):
/// XML cannot carry it, so libvirt refuses a domain whose title or description has one.
fn is_noncharacter(c: char) -> bool {
    let n = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
}

fn no_noncharacters(s: &str) -> Result<(), validator::ValidationError> {
    match s.chars().find(|c| is_noncharacter(*c)) {
        Some(c) => Err(validator::ValidationError::new("invalid").with_message(
            format!(
                "must not contain U+{:04X} (a Unicode non-character XML cannot carry)",
                u32::from(c)
            )
            .into(),
        )),
        None => Ok(()),
    }
}

/// A description: at most 4096 characters; newlines and tabs allowed, other controls not.
pub fn valid_describe(s: &str) -> Result<(), validator::ValidationError> {
    if s.chars().count() > 4096 {
        return Err(validation("must be at most 4096 characters"));
    }
    if s.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(validation(
            "must not contain control characters other than newline and tab",
        ));
    }
    no_noncharacters(s)
}

/// An id a list filters on: at most 128 characters (empty: no filter).
pub fn valid_filter_id(s: &str) -> Result<(), validator::ValidationError> {
    if s.chars().count() > 128 {
        return Err(validation("must be at most 128 characters"));
    }
    Ok(())
}

/// Ids in a list: each 1-128 characters.
pub fn valid_ids(ids: &[String]) -> Result<(), validator::ValidationError> {
    if ids.iter().any(|s| s.is_empty() || s.chars().count() > 128) {
        return Err(validation("each must be 1 to 128 characters"));
    }
    Ok(())
}

/// An id parameter: 1-128 characters (unknown ids are a 404 later, not a 400).
pub fn valid_id(s: &str) -> Result<(), validator::ValidationError> {
    if s.is_empty() || s.chars().count() > 128 {
        return Err(validation("must be 1 to 128 characters"));
    }
    Ok(())
}

fn validation(msg: &'static str) -> validator::ValidationError {
    validator::ValidationError::new("invalid").with_message(msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paging_bounds() {
        assert_eq!(
            paging(None, None).unwrap(),
            Paging {
                page_num: 1,
                page_size: 20
            }
        );
        assert_eq!(
            paging(Some(3), Some(1000)).unwrap(),
            Paging {
                page_num: 3,
                page_size: 1000
            }
        );
        assert!(paging(Some(0), None).is_err());
        assert!(paging(None, Some(0)).is_err());
        assert!(paging(None, Some(1001)).is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("web-1").is_ok());
        assert!(valid_name("</title><x a='\"&'>; DROP TABLE image; --").is_ok());
        assert!(valid_name(&"é".repeat(255)).is_ok());
        assert!(valid_name(&"é".repeat(256)).is_err());
        assert!(valid_name("").is_err());
        assert!(valid_name("   ").is_err());
        assert!(valid_name("a\nb").is_err());
        assert!(valid_name("a\0b").is_err());
        assert!(valid_describe("line 1\nline 2\ttab").is_ok());
        assert!(valid_describe("bell\u{7}").is_err());
        assert!(valid_describe(&"x".repeat(4097)).is_err());
        // What XML cannot carry is refused before it reaches libvirt.
        let fuzzed = format!("{}\u{FFFF}", "d".repeat(3999));
        assert!(valid_describe(&fuzzed).is_err());
        for c in ['\u{FFFE}', '\u{FDD0}', '\u{1FFFF}', '\u{10FFFE}'] {
            assert!(valid_name(&format!("a{c}")).is_err(), "{c:?}");
            assert!(valid_describe(&format!("a{c}")).is_err(), "{c:?}");
        }
        assert!(valid_name("emoji \u{1F600} and \u{FFFD}").is_ok());
    }
}
