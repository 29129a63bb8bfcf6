//! Every mutating request into the audit log (`service::audit`), after its answer: the
//! credential that asked, the route, the resource it named (from its body or query, or for a
//! create from its answer), and how it ended (`ok`, or `error` with the error code). Also the
//! audit endpoints: `audit/list` (admins) and `instance/actions` (an instance's history).

use super::auth::Caller;
use super::middleware::{read_body, refuse};
use super::{check, paging, valid_id, PageView, Success};
use crate::context::blocking;
use crate::db::audit::{AuditFilter, AuditRow};
use crate::db::instances::Instance;
use crate::error::ApiResult;
use crate::model::InstanceId;
use crate::service::audit::{self as svc, Entry};
use crate::service::auth::{Access, Principal};
use crate::service::Ctx;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web::{self, Data, Query};
use actix_web::HttpMessage;
use serde::Deserialize;
use validator::Validate;

/// The fields that name a request's resource, in the order they are looked for.
const ID_FIELDS: &[&str] = &[
    "instance_id",
    "volume_id",
    "network_interface_id",
    "snapshot_id",
    "image_id",
    "project_id",
];

/// A call that changes something: every POST, and the design's `GET /volume/delete`.
fn mutating(req: &ServiceRequest) -> bool {
    req.method() == actix_web::http::Method::POST || req.path() == "/api/v1/volume/delete"
}

fn id_in(v: &serde_json::Value) -> Option<String> {
    ID_FIELDS
        .iter()
        .find_map(|f| v.get(f).and_then(|x| x.as_str()).map(str::to_string))
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !mutating(&req) || req.path() == "/api/v1/auth/token" {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let principal = req.extensions().get::<Principal>().cloned();
    let action = format!(
        "{} {}",
        req.method(),
        req.match_pattern()
            .unwrap_or_else(|| req.path().to_string())
    );
    // The body is read here and handed on unchanged (bounded by the same limit the handler has);
    // an upload's body is the image, streamed by its handler, and is not read here.
    let streamed = req.path() == super::images::UPLOAD_PATH;
    let body = if streamed {
        web::Bytes::new()
    } else {
        match read_body(&mut req).await {
            Ok(b) => b,
            Err(e) => return Ok(refuse(req, e)),
        }
    };
    let mut named = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| id_in(&v));
    if named.is_none() {
        let query: serde_json::Map<String, serde_json::Value> =
            web::Query::<serde_json::Map<String, serde_json::Value>>::from_query(
                req.query_string(),
            )
            .map(|q| q.into_inner())
            .unwrap_or_default();
        named = id_in(&serde_json::Value::Object(query));
    }
    if !streamed {
        req.set_payload(actix_http::Payload::from(body));
    }
    let ctx = req.app_data::<Data<Ctx>>().cloned();
    let res = next.call(req).await?.map_into_boxed_body();
    let Some(ctx) = ctx else {
        return Ok(res);
    };
    // The answer is read to learn the outcome (and a create's new id), then handed on.
    let (http_req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let answer = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let ok = head.status().is_success();
    // A create names what it made in its answer; other calls name their resource in the request.
    let made = answer.as_ref().and_then(|a| id_in(&a["data"]));
    let resource_id = if http_req.path().ends_with("/create") {
        made.or(named)
    } else {
        named.or(made)
    };
    let error_code = (!ok)
        .then(|| {
            answer
                .as_ref()
                .and_then(|a| a["error"].as_str().map(str::to_string))
        })
        .flatten();
    let entry = Entry {
        action,
        resource_id,
        outcome: if ok { "ok" } else { "error" },
        error_code,
        principal,
        user_name: None,
    };
    let _ = blocking(move || -> ApiResult<()> {
        svc::record(&ctx, entry);
        Ok(())
    })
    .await;
    Ok(ServiceResponse::new(
        http_req,
        head.set_body(BoxBody::new(bytes)),
    ))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(custom(function = "super::valid_filter_id"))]
    project_id: Option<String>,
    /// A key id (`key-...`) or user id (`usr-...`).
    #[validate(custom(function = "super::valid_filter_id"))]
    credential: Option<String>,
    /// `POST /api/v1/instance/create`, or an operation's kind (`instance.create`).
    #[validate(length(max = 128, message = "must be at most 128 characters"))]
    action: Option<String>,
    #[validate(custom(function = "super::valid_filter_id"))]
    resource_id: Option<String>,
    #[validate(length(max = 128, message = "must be at most 128 characters"))]
    request_id: Option<String>,
    /// `ok`, `error`, `done`, `failed`, `handed_over`.
    #[validate(length(max = 16, message = "must be at most 16 characters"))]
    outcome: Option<String>,
    /// Unix milliseconds, inclusive.
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

/// `GET /api/v1/audit/list` (admins): the log, newest first, filtered and paged.
pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ListQuery>,
) -> ApiResult<Success<PageView<AuditRow>>> {
    caller.admin_only("read the audit log")?;
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let f = AuditFilter {
        project_id: nonempty(q.project_id),
        credential: nonempty(q.credential),
        action: nonempty(q.action),
        resource_id: nonempty(q.resource_id),
        request_id: nonempty(q.request_id),
        outcome: nonempty(q.outcome),
        since_ms: q.since_ms,
        until_ms: q.until_ms,
    };
    let (total, rows) = blocking(move || svc::list(&ctx, &f, p)).await?;
    Ok(Success(PageView::new(total, p, rows)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ActionsQuery {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

/// `GET /api/v1/instance/actions?instance_id=`: what was done to an instance (requests and
/// operation outcomes), newest first; visible to its project.
pub async fn instance_actions(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ActionsQuery>,
) -> ApiResult<Success<PageView<AuditRow>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let id = InstanceId::new(q.into_inner().instance_id);
    // A member: the instance must exist in its project. An admin also reads the history of an
    // instance destroyed since.
    if !caller.is_admin() {
        caller.may::<Instance>(&ctx, &id, Access::Read).await?;
    }
    let f = AuditFilter {
        resource_id: Some(id.to_string()),
        ..Default::default()
    };
    let (total, rows) = blocking(move || svc::list(&ctx, &f, p)).await?;
    if total == 0 && caller.is_admin() {
        return Err(crate::service::not_found::<Instance>(&id));
    }
    Ok(Success(PageView::new(total, p, rows)))
}
