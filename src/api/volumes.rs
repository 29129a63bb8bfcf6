//! `/api/v1/volume/*` (seed-api.md section 2).

use super::auth::Caller;
use super::views::{InstanceNames, VolumeView};
use super::{
    check, list_attached, valid_describe, valid_id, valid_name, AttachedListQuery, PageView,
    Success,
};
use crate::ceph::Removal;
use crate::context::blocking;
use crate::db::volumes::Volume;
use crate::error::ApiResult;
use crate::model::{InstanceId, VolumeId};
use crate::service::auth::Access;
use crate::service::volumes as svc;
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<AttachedListQuery>,
) -> ApiResult<Success<PageView<VolumeView>>> {
    list_attached::<Volume, _>(ctx, caller, q, VolumeView::new).await
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[validate(custom(function = "valid_name"))]
    volume_name: String,
    /// GiB
    volume_size: u64,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

pub async fn create(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<CreateBody>,
) -> ApiResult<Success<VolumeView>> {
    check(&*body)?;
    let b = body.into_inner();
    let project = caller.project();
    let v = blocking(move || {
        svc::create(
            &ctx,
            &b.volume_name,
            b.volume_size,
            b.describe.as_deref().unwrap_or(""),
            &project,
        )
    })
    .await?;
    Ok(Success(VolumeView::new(v, &InstanceNames::new())))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct MountBody {
    #[validate(custom(function = "valid_id"))]
    volume_id: String,
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
}

pub async fn mount(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<MountBody>,
) -> ApiResult<Success<VolumeView>> {
    check(&*body)?;
    let b = body.into_inner();
    let (v, i) = (VolumeId::new(b.volume_id), InstanceId::new(b.instance_id));
    caller.may_plug::<Volume>(&ctx, &v, &i).await?;
    let v = blocking(move || svc::mount(&ctx, &v, &i)).await?;
    Ok(Success(VolumeView::new(v, &InstanceNames::new())))
}

pub async fn unmount(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<MountBody>,
) -> ApiResult<Success<VolumeView>> {
    check(&*body)?;
    let b = body.into_inner();
    let (v, i) = (VolumeId::new(b.volume_id), InstanceId::new(b.instance_id));
    caller.may_plug::<Volume>(&ctx, &v, &i).await?;
    let v = blocking(move || svc::unmount(&ctx, &v, &i)).await?;
    Ok(Success(VolumeView::new(v, &InstanceNames::new())))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ResizeBody {
    #[validate(custom(function = "valid_id"))]
    volume_id: String,
    /// GiB, more than now.
    volume_size: u64,
}

pub async fn resize(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<ResizeBody>,
) -> ApiResult<Success<VolumeView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = VolumeId::new(b.volume_id);
    caller.may::<Volume>(&ctx, &id, Access::Write).await?;
    let v = blocking(move || svc::resize(&ctx, &id, b.volume_size)).await?;
    Ok(Success(VolumeView::new(v, &InstanceNames::new())))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdParam {
    #[validate(custom(function = "valid_id"))]
    volume_id: String,
}

#[derive(Serialize)]
pub struct DeletedView {
    volume_id: String,
    /// "removed" or "already_gone" (the RBD image had vanished behind our back).
    file: &'static str,
}

async fn delete(ctx: Data<Ctx>, caller: Caller, p: IdParam) -> ApiResult<Success<DeletedView>> {
    check(&p)?;
    let id = VolumeId::new(p.volume_id.clone());
    caller.may::<Volume>(&ctx, &id, Access::Write).await?;
    let r = blocking(move || svc::delete(&ctx, &id)).await?;
    Ok(Success(DeletedView {
        volume_id: p.volume_id,
        file: match r {
            Removal::Removed => "removed",
            Removal::AlreadyGone => "already_gone",
        },
    }))
}

/// `GET /volume/delete?volume_id=...`: the original design's form, kept for the portal.
pub async fn delete_get(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdParam>,
) -> ApiResult<Success<DeletedView>> {
    delete(ctx, caller, q.into_inner()).await
}

pub async fn delete_post(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<IdParam>,
) -> ApiResult<Success<DeletedView>> {
    delete(ctx, caller, b.into_inner()).await
}
