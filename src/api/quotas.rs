//! `/api/v1/quotas`: a project's limits and usage; admins set them.

use super::auth::Caller;
use super::{check, valid_id, Success};
use crate::context::blocking;
use crate::error::ApiResult;
use crate::service::quotas::{self as svc, Change, Report};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Deserializer};
use validator::Validate;

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Admins: this project (default: the admin's own).
    #[validate(custom(function = "valid_id"))]
    project_id: Option<String>,
}

pub async fn show(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ShowQuery>,
) -> ApiResult<Success<Report>> {
    check(&*q)?;
    let project = caller
        .list_project(q.into_inner().project_id)?
        .unwrap_or_else(|| caller.project());
    let r = blocking(move || svc::report(&ctx, &project)).await?;
    Ok(Success(r))
}

/// A field that may be absent (`None`: unchanged), `null` (`Some(None)`: no limit) or a number.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[validate(custom(function = "valid_id"))]
    project_id: String,
    #[serde(default, deserialize_with = "present")]
    instances: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    vcpus: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    memory_mib: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    volumes: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    volume_gib: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    network_interfaces: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    images: Option<Option<u64>>,
}

pub async fn update(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<UpdateBody>,
) -> ApiResult<Success<Report>> {
    caller.admin_only("set quotas")?;
    check(&*body)?;
    let b = body.into_inner();
    let ch = Change {
        instances: b.instances,
        vcpus: b.vcpus,
        memory_mib: b.memory_mib,
        volumes: b.volumes,
        volume_gib: b.volume_gib,
        network_interfaces: b.network_interfaces,
        images: b.images,
    };
    let project = b.project_id;
    let r = blocking(move || svc::update(&ctx, &project, ch)).await?;
    Ok(Success(r))
}
