//! `/api/v1/network/*` (seed-api.md section 3).

use super::auth::Caller;
use super::views::{InstanceNames, NicView};
use super::{
    check, list_attached, valid_describe, valid_id, valid_name, AttachedListQuery, PageView,
    Success,
};
use crate::context::blocking;
use crate::db::nics::Nic;
use crate::error::ApiResult;
use crate::model::{InstanceId, NicId};
use crate::service::auth::Access;
use crate::service::nics::{self as svc, NewNic};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<AttachedListQuery>,
) -> ApiResult<Success<PageView<NicView>>> {
    list_attached::<Nic, _>(ctx, caller, q, NicView::new).await
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

pub async fn create(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<CreateBody>,
) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let req = NewNic {
        name: b.network_interface_name,
        bridge: b.bridge,
        mac: b.mac,
        ip: b.ip,
        describe: b.describe.unwrap_or_default(),
        project_id: caller.project(),
    };
    let n = blocking(move || svc::create(&ctx, req)).await?;
    Ok(Success(NicView::new(n, &InstanceNames::new())))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AttachBody {
    #[validate(custom(function = "valid_id"))]
    network_interface_id: String,
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
}

pub async fn attach(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<AttachBody>,
) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let (n, i) = (
        NicId::new(b.network_interface_id),
        InstanceId::new(b.instance_id),
    );
    caller.may_plug::<Nic>(&ctx, &n, &i).await?;
    let n = blocking(move || svc::attach(&ctx, &n, &i)).await?;
    Ok(Success(NicView::new(n, &InstanceNames::new())))
}

pub async fn detach(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<AttachBody>,
) -> ApiResult<Success<NicView>> {
    check(&*body)?;
    let b = body.into_inner();
    let (n, i) = (
        NicId::new(b.network_interface_id),
        InstanceId::new(b.instance_id),
    );
    caller.may_plug::<Nic>(&ctx, &n, &i).await?;
    let n = blocking(move || svc::detach(&ctx, &n, &i)).await?;
    Ok(Success(NicView::new(n, &InstanceNames::new())))
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

pub async fn delete(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<IdBody>,
) -> ApiResult<Success<DeletedView>> {
    check(&*body)?;
    let id = body.into_inner().network_interface_id;
    let i = NicId::new(id.clone());
    caller.may::<Nic>(&ctx, &i, Access::Write).await?;
    blocking(move || svc::delete(&ctx, &i)).await?;
    Ok(Success(DeletedView {
        network_interface_id: id,
    }))
}
