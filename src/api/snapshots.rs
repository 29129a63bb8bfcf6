//! `/api/v1/snapshot/*` and `/api/v1/instance/restore`: snapshots of an instance's disks or of
//! one volume, and an instance rolled back to one.

use super::auth::Caller;
use super::views::{InstanceNames, InstanceView, SnapshotView, VolumeView};
use super::{
    check, list_filter, paging, valid_id, valid_name, AttachedListQuery, PageView, Success,
};
use crate::context::blocking;
use crate::db::instances::Instance;
use crate::db::snapshots::Snapshot;
use crate::db::volumes::Volume;
use crate::error::{ApiError, ApiResult};
use crate::model::{InstanceId, SnapshotId, SnapshotStatus, VolumeId};
use crate::service::auth::Access;
use crate::service::snapshots::{self as svc, Source};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[validate(custom(function = "valid_name"))]
    snapshot_name: String,
    /// Every disk of this instance, taken together...
    #[validate(custom(function = "valid_id"))]
    instance_id: Option<String>,
    /// ...or this volume alone (exactly one of the two).
    #[validate(custom(function = "valid_id"))]
    volume_id: Option<String>,
}

pub async fn create(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<CreateBody>,
) -> ApiResult<Success<SnapshotView>> {
    check(&*body)?;
    let b = body.into_inner();
    let source = match (b.instance_id, b.volume_id) {
        (Some(i), None) => {
            let i = InstanceId::new(i);
            caller.may::<Instance>(&ctx, &i, Access::Write).await?;
            Source::Instance(i)
        }
        (None, Some(v)) => {
            let v = VolumeId::new(v);
            caller.may::<Volume>(&ctx, &v, Access::Write).await?;
            Source::Volume(v)
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of instance_id (every disk of the instance) and volume_id (one volume)",
            ))
        }
    };
    let d = blocking(move || svc::create(&ctx, &source, &b.snapshot_name)).await?;
    Ok(Success(SnapshotView::new(d)))
}

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<AttachedListQuery>,
) -> ApiResult<Success<PageView<SnapshotView>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let mut filter = list_filter::<SnapshotStatus>(q.filter_name, q.status, q.instance_id)?;
    filter.project_id = caller.list_project(q.project_id)?;
    let (total, rows) = blocking(move || svc::list(&ctx, &filter, p)).await?;
    let items = rows.into_iter().map(SnapshotView::new).collect();
    Ok(Success(PageView::new(total, p, items)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdParam {
    #[validate(custom(function = "valid_id"))]
    snapshot_id: String,
}

pub async fn detail(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdParam>,
) -> ApiResult<Success<SnapshotView>> {
    check(&*q)?;
    let id = SnapshotId::new(q.into_inner().snapshot_id);
    caller.may::<Snapshot>(&ctx, &id, Access::Read).await?;
    let d = blocking(move || svc::detail(&ctx, &id)).await?;
    Ok(Success(SnapshotView::new(d)))
}

#[derive(Serialize)]
pub struct DeletedView {
    snapshot_id: SnapshotId,
}

pub async fn delete(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<IdParam>,
) -> ApiResult<Success<DeletedView>> {
    check(&*b)?;
    let id = SnapshotId::new(b.into_inner().snapshot_id);
    caller.may::<Snapshot>(&ctx, &id, Access::Write).await?;
    let snapshot_id = id.clone();
    blocking(move || svc::delete(&ctx, &id)).await?;
    Ok(Success(DeletedView { snapshot_id }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    #[validate(custom(function = "valid_id"))]
    snapshot_id: String,
}

pub async fn restore(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<RestoreBody>,
) -> ApiResult<Success<InstanceView>> {
    check(&*b)?;
    let b = b.into_inner();
    let (i, s) = (
        InstanceId::new(b.instance_id),
        SnapshotId::new(b.snapshot_id),
    );
    caller.may::<Instance>(&ctx, &i, Access::Write).await?;
    caller.may::<Snapshot>(&ctx, &s, Access::Read).await?;
    let row = blocking(move || svc::restore(&ctx, &i, &s)).await?;
    Ok(Success(row.into()))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct VolumeRestoreBody {
    #[validate(custom(function = "valid_id"))]
    volume_id: String,
    #[validate(custom(function = "valid_id"))]
    snapshot_id: String,
}

pub async fn restore_volume(
    ctx: Data<Ctx>,
    caller: Caller,
    b: Json<VolumeRestoreBody>,
) -> ApiResult<Success<VolumeView>> {
    check(&*b)?;
    let b = b.into_inner();
    let (v, s) = (VolumeId::new(b.volume_id), SnapshotId::new(b.snapshot_id));
    caller.may::<Volume>(&ctx, &v, Access::Write).await?;
    caller.may::<Snapshot>(&ctx, &s, Access::Read).await?;
    let row = blocking(move || svc::restore_volume(&ctx, &v, &s)).await?;
    Ok(Success(VolumeView::new(row, &InstanceNames::new())))
}
