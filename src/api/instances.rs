//! `/api/v1/instance/*` (seed-api.md section 4).

use super::auth::Caller;
use super::views::{ImageView, InstanceNames, InstanceView, NicView, VolumeView};
use super::{check, list_filter, paging, valid_describe, valid_id, valid_name, PageView, Success};
use crate::context::blocking;
use crate::db::instances::Instance;
use crate::error::ApiResult;
use crate::model::{ImageId, InstanceId, InstanceStatus, NicId, VolumeId};
use crate::service::auth::Access;
use crate::service::hosts::HostState;
use crate::service::instances::{self as svc, NewInstance};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Serialize)]
pub struct ListItem {
    #[serde(flatten)]
    instance: InstanceView,
    /// `up`, `maintenance`, `unreachable` (the host does not answer: the instance is not lost,
    /// calls on it answer 503 until it is back) or `unknown`.
    host_status: HostState,
    volumes: Vec<VolumeId>,
    network_interfaces: Vec<NicId>,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    status: Option<String>,
    /// Admins: only this project's instances (a member sees its own project's).
    #[validate(custom(function = "super::valid_filter_id"))]
    project_id: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ListQuery>,
) -> ApiResult<Success<PageView<ListItem>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let mut filter = list_filter::<InstanceStatus>(q.filter_name, q.status, None)?;
    filter.project_id = caller.list_project(q.project_id)?;
    let (total, rows) = blocking(move || svc::list(&ctx, &filter, p)).await?;
    let items = rows
        .into_iter()
        .map(|l| ListItem {
            host_status: l.host,
            instance: l.instance.into(),
            volumes: l.volumes.into_iter().map(|v| v.volume_id).collect(),
            network_interfaces: l.nics.into_iter().map(|n| n.network_interface_id).collect(),
        })
        .collect();
    Ok(Success(PageView::new(total, p, items)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdQuery {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
}

#[derive(Serialize)]
pub struct DetailView {
    #[serde(flatten)]
    instance: InstanceView,
    /// As in instance/list.
    host_status: HostState,
    image: Option<ImageView>,
    volumes: Vec<VolumeView>,
    network_interfaces: Vec<NicView>,
}

pub async fn detail(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdQuery>,
) -> ApiResult<Success<DetailView>> {
    check(&*q)?;
    let id = InstanceId::new(q.into_inner().instance_id);
    let c = ctx.clone();
    // A read: checked on the row it reads (no query more), like `Caller::may`.
    let d = blocking(move || svc::detail(&c, &id)).await?;
    caller.sees(&d.instance)?;
    let names: InstanceNames = [(
        d.instance.instance_id.clone(),
        d.instance.instance_name.clone(),
    )]
    .into();
    Ok(Success(DetailView {
        host_status: d.host,
        instance: d.instance.into(),
        image: d
            .image
            .map(|i| ImageView::new(i, &ctx.cfg.ceph.images_pool)),
        volumes: d
            .volumes
            .into_iter()
            .map(|v| VolumeView::new(v, &names))
            .collect(),
        network_interfaces: d
            .nics
            .into_iter()
            .map(|n| NicView::new(n, &names))
            .collect(),
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[validate(custom(function = "valid_name"))]
    instance_name: String,
    #[validate(custom(function = "valid_id"))]
    image_id: String,
    cpu: u32,
    /// MiB
    memory: u64,
    /// GiB
    root_size: Option<u64>,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
    /// Existing available volumes attached at boot, in order.
    #[serde(default)]
    #[validate(custom(function = "super::valid_ids"))]
    volume_ids: Vec<String>,
    /// GiB of a new data volume created and attached with the instance.
    data_volume_size: Option<u64>,
    /// Existing available NICs attached at boot, in order (none: one is made).
    #[serde(default)]
    #[validate(custom(function = "super::valid_ids"))]
    network_interface_ids: Vec<String>,
    /// The guest's host name (none: made from instance_name).
    hostname: Option<String>,
    /// cloud-init user data, passed to the guest byte for byte.
    user_data: Option<String>,
    /// authorized_keys lines for the guest.
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    /// Admins: the host to create it on (else placement chooses).
    #[validate(custom(function = "valid_id"))]
    host_id: Option<String>,
}

pub async fn create(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<CreateBody>,
) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let b = body.into_inner();
    if b.host_id.is_some() {
        caller.admin_only("choose an instance's host")?;
    }
    let req = NewInstance {
        host_id: b.host_id.map(crate::model::HostId::new),
        instance_name: b.instance_name,
        image_id: ImageId::new(b.image_id),
        cpu: b.cpu,
        memory: b.memory,
        root_size: b.root_size,
        describe: b.describe.unwrap_or_default(),
        volume_ids: b.volume_ids.into_iter().map(VolumeId::new).collect(),
        data_volume_size: b.data_volume_size,
        network_interface_ids: b
            .network_interface_ids
            .into_iter()
            .map(NicId::new)
            .collect(),
        project_id: caller.project(),
        guest: svc::GuestConfig {
            hostname: b.hostname,
            user_data: b.user_data,
            ssh_authorized_keys: b.ssh_authorized_keys,
        },
    };
    let ctx = ctx.into_inner();
    let row = blocking(move || svc::create(ctx, req)).await?;
    Ok(Success(row.into()))
}

#[derive(Serialize)]
pub struct ProgressView {
    instance_id: InstanceId,
    status: InstanceStatus,
    progress: u8,
    step: String,
    error_message: Option<String>,
}

pub async fn progress(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdQuery>,
) -> ApiResult<Success<ProgressView>> {
    check(&*q)?;
    let id = InstanceId::new(q.into_inner().instance_id);
    let i = blocking(move || svc::get(&ctx, &id)).await?;
    caller.sees(&i)?;
    Ok(Success(ProgressView {
        instance_id: i.instance_id,
        status: i.status,
        progress: i.progress,
        step: i.progress_step,
        error_message: i.error_message.filter(|m| !m.is_empty()),
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct TurnoffBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    #[serde(default)]
    force: bool,
}

pub async fn turnoff(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<TurnoffBody>,
) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = InstanceId::new(b.instance_id);
    caller.may::<Instance>(&ctx, &id, Access::Write).await?;
    let i = blocking(move || svc::turnoff(&ctx, &id, b.force)).await?;
    Ok(Success(i.into()))
}

/// Turnon, pause, resume and reset: the instance alone.
macro_rules! power_handler {
    ($($name:ident),+) => {$(
        pub async fn $name(
            ctx: Data<Ctx>,
            caller: Caller,
            body: Json<IdBody>,
        ) -> ApiResult<Success<InstanceView>> {
            check(&*body)?;
            let id = InstanceId::new(body.into_inner().instance_id);
            caller.may::<Instance>(&ctx, &id, Access::Write).await?;
            let i = blocking(move || svc::$name(&ctx, &id)).await?;
            Ok(Success(i.into()))
        }
    )+};
}
power_handler!(turnon, pause, resume, reset);

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct MigrateBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    /// Where to (else placement chooses among the other hosts).
    #[validate(custom(function = "valid_id"))]
    target_host_id: Option<String>,
}

/// Admins: moves the instance to another host, live when it runs; answers at once
/// (`migrating`; instance/progress follows it).
pub async fn migrate(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<MigrateBody>,
) -> ApiResult<Success<InstanceView>> {
    caller.admin_only("migrate instances")?;
    check(&*body)?;
    let b = body.into_inner();
    let id = InstanceId::new(b.instance_id);
    let target = b.target_host_id.map(crate::model::HostId::new);
    let ctx = ctx.into_inner();
    let i = blocking(move || svc::migrate::migrate(ctx, &id, target)).await?;
    Ok(Success(i.into()))
}

#[derive(Serialize)]
pub struct RebootView {
    #[serde(flatten)]
    instance: InstanceView,
    /// `acpi`, `acpi_unconfirmed` (events off) or `reset`.
    rebooted_by: svc::Rebooted,
}

pub async fn reboot(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<TurnoffBody>,
) -> ApiResult<Success<RebootView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = InstanceId::new(b.instance_id);
    caller.may::<Instance>(&ctx, &id, Access::Write).await?;
    let (i, how) = blocking(move || svc::reboot(&ctx, &id, b.force)).await?;
    Ok(Success(RebootView {
        instance: i.into(),
        rebooted_by: how,
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    #[validate(custom(function = "valid_name"))]
    instance_name: Option<String>,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
    cpu: Option<u32>,
    /// MiB
    memory: Option<u64>,
}

pub async fn update(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<UpdateBody>,
) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = InstanceId::new(b.instance_id);
    caller.may::<Instance>(&ctx, &id, Access::Write).await?;
    let ch = svc::Changes {
        instance_name: b.instance_name,
        describe: b.describe,
        cpu: b.cpu,
        memory: b.memory,
    };
    let i = blocking(move || svc::update(&ctx, &id, ch)).await?;
    Ok(Success(i.into()))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DestroyBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    #[serde(default)]
    delete_attached: bool,
}

#[derive(Serialize)]
pub struct DestroyedView {
    instance_id: String,
    released_volumes: usize,
    released_network_interfaces: usize,
    deleted_volumes: usize,
    deleted_network_interfaces: usize,
}

pub async fn destroy(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<DestroyBody>,
) -> ApiResult<Success<DestroyedView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = InstanceId::new(b.instance_id.clone());
    caller.may::<Instance>(&ctx, &id, Access::Write).await?;
    let d = blocking(move || svc::destroy(&ctx, &id, b.delete_attached)).await?;
    Ok(Success(DestroyedView {
        instance_id: b.instance_id,
        released_volumes: d.released_volumes,
        released_network_interfaces: d.released_nics,
        deleted_volumes: d.deleted_volumes,
        deleted_network_interfaces: d.deleted_nics,
    }))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    /// How much of the end of the console to return (default 64 KiB, at most 1 MiB).
    #[validate(range(min = 1, max = 1048576, message = "must be between 1 and 1048576"))]
    tail_bytes: Option<u64>,
}

#[derive(Serialize)]
pub struct ConsoleView {
    instance_id: String,
    output: String,
}

pub async fn console(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ConsoleQuery>,
) -> ApiResult<Success<ConsoleView>> {
    check(&*q)?;
    let q = q.into_inner();
    let id = InstanceId::new(q.instance_id.clone());
    caller.may::<Instance>(&ctx, &id, Access::Read).await?;
    let max = q.tail_bytes.unwrap_or(65536);
    let output = blocking(move || svc::console(&ctx, &id, max)).await?;
    Ok(Success(ConsoleView {
        instance_id: q.instance_id,
        output,
    }))
}
