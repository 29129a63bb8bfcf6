//! `/api/v1/host/*`: the hypervisor hosts (admins only).

use super::auth::Caller;
use super::views::HostView;
use super::{check, list_filter, paging, valid_id, valid_name, PageView, Success};
use crate::context::blocking;
use crate::error::ApiResult;
use crate::model::{HostId, HostStatus};
use crate::service::hosts::{self as svc, Change, NewHost, MAX_TAGS};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

fn valid_uri(s: &str) -> Result<(), validator::ValidationError> {
    if s.is_empty() || s.chars().count() > 512 {
        return Err(super::validation("must be 1 to 512 characters"));
    }
    Ok(())
}

fn valid_address(s: &str) -> Result<(), validator::ValidationError> {
    if s.trim().is_empty() || s.chars().count() > 255 || s.chars().any(char::is_whitespace) {
        return Err(super::validation(
            "must be 1 to 255 characters without white space",
        ));
    }
    Ok(())
}

fn valid_tags(tags: &[String]) -> Result<(), validator::ValidationError> {
    if tags.len() > MAX_TAGS {
        return Err(super::validation("at most 32 tags"));
    }
    if tags
        .iter()
        .any(|t| t.trim().is_empty() || t.chars().count() > 64)
    {
        return Err(super::validation("each tag must be 1 to 64 characters"));
    }
    Ok(())
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    /// `qemu+tcp://host/system`, `qemu+ssh://user@host/system`,
    /// `qemu+unix:///system?socket=...`.
    #[validate(custom(function = "valid_uri"))]
    uri: String,
    /// Default: the URI's server part, else the host name libvirt reports.
    #[validate(custom(function = "valid_name"))]
    host_name: Option<String>,
    /// What instances there show as `host_ip`; default: the URI's server address.
    #[validate(custom(function = "valid_address"))]
    address: Option<String>,
    #[serde(default)]
    #[validate(custom(function = "valid_tags"))]
    tags: Vec<String>,
    /// `false`: added in maintenance.
    enabled: Option<bool>,
    /// Placement's CPUs for this host in place of its own (0 or none: its own).
    cpu_capacity: Option<u32>,
    /// Placement's memory (MiB) for this host in place of its own (0 or none: its own).
    memory_capacity_mib: Option<u64>,
}

/// 0 says "the host's own figure".
fn capacity<T: PartialEq + Default>(v: Option<T>) -> Option<Option<T>> {
    v.map(|v| (v != T::default()).then_some(v))
}

pub async fn add(ctx: Data<Ctx>, caller: Caller, b: Json<AddBody>) -> ApiResult<Success<HostView>> {
    caller.admin_only("add hosts")?;
    check(&*b)?;
    let b = b.into_inner();
    let new = NewHost {
        uri: b.uri,
        host_name: b.host_name,
        address: b.address,
        tags: b.tags,
        enabled: b.enabled.unwrap_or(true),
        cpu_capacity: capacity(b.cpu_capacity).flatten(),
        memory_capacity_mib: capacity(b.memory_capacity_mib).flatten(),
    };
    let d = blocking(move || svc::add(&ctx, &new)).await?;
    Ok(Success(d.into()))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    /// `enabled` or `disabled`.
    status: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ListQuery>,
) -> ApiResult<Success<PageView<HostView>>> {
    caller.admin_only("list hosts")?;
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let filter = list_filter::<HostStatus>(q.filter_name, q.status, None)?;
    let (total, rows) = blocking(move || svc::list(&ctx, &filter, p)).await?;
    let items = rows.into_iter().map(HostView::from).collect();
    Ok(Success(PageView::new(total, p, items)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdParam {
    #[validate(custom(function = "valid_id"))]
    host_id: String,
}

pub async fn detail(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdParam>,
) -> ApiResult<Success<HostView>> {
    caller.admin_only("see hosts")?;
    check(&*q)?;
    let id = HostId::new(q.into_inner().host_id);
    let d = blocking(move || svc::detail(&ctx, &id)).await?;
    Ok(Success(d.into()))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[validate(custom(function = "valid_id"))]
    host_id: String,
    #[validate(custom(function = "valid_name"))]
    host_name: Option<String>,
    #[validate(custom(function = "valid_address"))]
    address: Option<String>,
    #[validate(custom(function = "valid_tags"))]
    tags: Option<Vec<String>>,
    /// `false`: maintenance (no new placements); `true`: back in service.
    enabled: Option<bool>,
    /// Placement's CPUs for this host in place of its own (0: its own again).
    cpu_capacity: Option<u32>,
    /// Placement's memory (MiB) for this host in place of its own (0: its own again).
    memory_capacity_mib: Option<u64>,
}

pub async fn update(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<UpdateBody>,
) -> ApiResult<Success<HostView>> {
    caller.admin_only("change hosts")?;
    check(&*b)?;
    let b = b.into_inner();
    let id = HostId::new(b.host_id);
    let ch = Change {
        host_name: b.host_name,
        address: b.address,
        tags: b.tags,
        enabled: b.enabled,
        cpu_capacity: capacity(b.cpu_capacity),
        memory_capacity_mib: capacity(b.memory_capacity_mib),
    };
    let d = blocking(move || svc::update(&ctx, &id, &ch)).await?;
    Ok(Success(d.into()))
}

#[derive(Serialize)]
pub struct RemovedView {
    host_id: HostId,
}

pub async fn remove(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<IdParam>,
) -> ApiResult<Success<RemovedView>> {
    caller.admin_only("remove hosts")?;
    check(&*b)?;
    let id = HostId::new(b.into_inner().host_id);
    let host_id = id.clone();
    blocking(move || svc::remove(&ctx, &id)).await?;
    Ok(Success(RemovedView { host_id }))
}

#[derive(Serialize)]
pub struct EvacuatedView {
    instance_id: crate::model::InstanceId,
    /// Where it runs now (`null` when it stayed).
    host_id: Option<HostId>,
    /// Why it stayed.
    error_message: Option<String>,
}

#[derive(Serialize)]
pub struct EvacuationView {
    host_id: HostId,
    instances: Vec<EvacuatedView>,
}

/// Moves every instance off the host (live when it runs), one at a time; answers when all have
/// moved or failed to.
pub async fn evacuate(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<IdParam>,
) -> ApiResult<Success<EvacuationView>> {
    caller.admin_only("evacuate hosts")?;
    check(&*b)?;
    let id = HostId::new(b.into_inner().host_id);
    let host_id = id.clone();
    let ctx = ctx.into_inner();
    let done = blocking(move || crate::service::instances::migrate::evacuate(ctx, &id)).await?;
    let instances = done
        .into_iter()
        .map(|(instance_id, r)| match r {
            Ok(h) => EvacuatedView {
                instance_id,
                host_id: Some(h),
                error_message: None,
            },
            Err(e) => EvacuatedView {
                instance_id,
                host_id: None,
                error_message: Some(e),
            },
        })
        .collect();
    Ok(Success(EvacuationView { host_id, instances }))
}
