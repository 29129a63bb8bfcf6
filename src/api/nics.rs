//! `/api/v1/network/*` (seed-api.md section 3).

use super::{check, paging, valid_describe, valid_id, valid_name, PageView, Success};
use crate::context::blocking;
use crate::db::nics::Nic;
use crate::error::ApiResult;
use crate::service::nics::{self as svc, NewNic};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Serialize)]
pub struct NicView {
    network_interface_id: String,
    network_interface_name: String,
    mac: String,
    ip: Option<String>,
    bridge: String,
    status: String,
    instance_id: Option<String>,
    instance_name: Option<String>,
    attach_time: Option<u64>,
    describe: String,
    error_message: Option<String>,
    create_time: u64,
}

impl NicView {
    fn new(n: Nic, instance_name: Option<String>) -> Self {
        NicView {
            network_interface_id: n.network_interface_id,
            network_interface_name: n.network_interface_name,
            mac: n.mac,
            ip: n.ip,
            bridge: n.bridge,
            status: n.status,
            instance_id: n.instance_id,
            instance_name,
            attach_time: n.attach_time,
            describe: n.describe,
            error_message: n.error_message.filter(|m| !m.is_empty()),
            create_time: n.create_time,
        }
    }
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    status: Option<String>,
    instance_id: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list(ctx: Data<Ctx>, q: Query<ListQuery>) -> ApiResult<Success<PageView<NicView>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let filter = q.filter_name.filter(|f| !f.is_empty());
    let status = q.status.filter(|s| !s.is_empty());
    let inst = q.instance_id.filter(|s| !s.is_empty());
    let (total, rows, names) = blocking(move || {
        svc::list(
            &ctx,
            filter.as_deref(),
            status.as_deref(),
            inst.as_deref(),
            p,
        )
    })
    .await?;
    let items = rows
        .into_iter()
        .map(|n| {
            let name = n.instance_id.as_ref().and_then(|i| names.get(i).cloned());
            NicView::new(n, name)
        })
        .collect();
    Ok(Success(PageView::new(total, p, items)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[validate(custom(function = "valid_name"))]
    network_interface_name: String,
    bridge: Option<String>,
    mac: Option<String>,
    ip: Option<String>,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

pub async fn create(ctx: Data<Ctx>, body: Json<CreateBody>) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let req = NewNic {
        name: b.network_interface_name,
        bridge: b.bridge,
        mac: b.mac,
        ip: b.ip,
        describe: b.describe.unwrap_or_default(),
    };
    let n = blocking(move || svc::create(&ctx, req)).await?;
    Ok(Success(NicView::new(n, None)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    #[validate(custom(function = "valid_id"))]
    network_interface_id: String,
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
}

pub async fn attach(ctx: Data<Ctx>, body: Json<AttachBody>) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let n = blocking(move || svc::attach(&ctx, &b.network_interface_id, &b.instance_id)).await?;
    Ok(Success(NicView::new(n, None)))
}

pub async fn detach(ctx: Data<Ctx>, body: Json<AttachBody>) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let n = blocking(move || svc::detach(&ctx, &b.network_interface_id, &b.instance_id)).await?;
    Ok(Success(NicView::new(n, None)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdBody {
    #[validate(custom(function = "valid_id"))]
    network_interface_id: String,
}

#[derive(Serialize)]
pub struct DeletedView {
    network_interface_id: String,
}

pub async fn delete(ctx: Data<Ctx>, body: Json<IdBody>) -> ApiResult<Success<DeletedView>> {
    check(&*body)?;
    let id = body.into_inner().network_interface_id;
    let i = id.clone();
    blocking(move || svc::delete(&ctx, &i)).await?;
    Ok(Success(DeletedView {
        network_interface_id: id,
    }))
}
