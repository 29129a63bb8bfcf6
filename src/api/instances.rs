//! `/api/v1/instance/*` (seed-api.md section 4).

use super::{check, paging, valid_describe, valid_id, valid_name, PageView, Success};
use crate::context::blocking;
use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::volumes::Volume;
use crate::error::ApiResult;
use crate::service::instances::{self as svc, NewInstance};
use crate::service::Ctx;
use actix_web::web::{Data, Json, Query};
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Serialize)]
pub struct InstanceView {
    instance_id: String,
    instance_name: String,
    status: String,
    ip: Option<String>,
    host_ip: String,
    cpu: u32,
    /// MiB
    memory: u64,
    image_id: String,
    /// GiB
    root_size: Option<u64>,
    describe: String,
    progress: u8,
    progress_step: String,
    error_message: Option<String>,
    create_time: u64,
    update_time: u64,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        InstanceView {
            instance_id: i.instance_id,
            instance_name: i.instance_name,
            status: i.status,
            ip: i.ip,
            host_ip: i.host_ip,
            cpu: i.cpu,
            memory: i.memory,
            image_id: i.image_id,
            root_size: i.root_size,
            describe: i.describe,
            progress: i.progress,
            progress_step: i.progress_step,
            error_message: i.error_message.filter(|m| !m.is_empty()),
            create_time: i.create_time,
            update_time: i.update_time,
        }
    }
}

#[derive(Serialize)]
pub struct VolumeView {
    volume_id: String,
    volume_name: String,
    /// GiB
    volume_size: u64,
    instance_id: Option<String>,
    status: String,
    is_root: bool,
    target_dev: Option<String>,
    describe: String,
    create_time: u64,
}

impl From<Volume> for VolumeView {
    fn from(v: Volume) -> Self {
        VolumeView {
            volume_id: v.volume_id,
            volume_name: v.volume_name,
            volume_size: v.volume_size,
            instance_id: v.instance_id,
            status: v.status,
            is_root: v.is_root,
            target_dev: v.target_dev,
            describe: v.describe,
            create_time: v.create_time,
        }
    }
}

#[derive(Serialize)]
pub struct NicView {
    network_interface_id: String,
    network_interface_name: String,
    instance_id: String,
    mac: String,
    ip: Option<String>,
    bridge: String,
    status: String,
    create_time: u64,
}

fn nic_view(instance_id: &str, n: Nic) -> NicView {
    NicView {
        network_interface_id: n.network_interface_id,
        network_interface_name: n.network_interface_name,
        instance_id: instance_id.to_string(),
        mac: n.mac,
        ip: n.ip,
        bridge: n.bridge,
        status: n.status,
        create_time: n.create_time,
    }
}

#[derive(Serialize)]
pub struct ImageBrief {
    image_id: String,
    image_name: String,
    image_location: String,
    image_size: u64,
    os_type: String,
    describe: String,
    create_time: u64,
}

fn image_brief(i: Image, pool: &str) -> ImageBrief {
    ImageBrief {
        image_location: format!("rbd:{pool}/{}", i.image_id),
        image_id: i.image_id,
        image_name: i.image_name,
        image_size: i.image_size,
        os_type: i.os_type,
        describe: i.describe,
        create_time: i.create_time,
    }
}

#[derive(Serialize)]
pub struct ListItem {
    #[serde(flatten)]
    instance: InstanceView,
    volumes: Vec<String>,
    network_interfaces: Vec<String>,
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    status: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list(ctx: Data<Ctx>, q: Query<ListQuery>) -> ApiResult<Success<PageView<ListItem>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let filter = q.filter_name.filter(|f| !f.is_empty());
    let status = q.status.filter(|s| !s.is_empty());
    let (total, rows) =
        blocking(move || svc::list(&ctx, filter.as_deref(), status.as_deref(), p)).await?;
    let items = rows
        .into_iter()
        .map(|l| ListItem {
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
    image: Option<ImageBrief>,
    volumes: Vec<VolumeView>,
    network_interfaces: Vec<NicView>,
}

pub async fn detail(ctx: Data<Ctx>, q: Query<IdQuery>) -> ApiResult<Success<DetailView>> {
    check(&*q)?;
    let id = q.into_inner().instance_id;
    let c = ctx.clone();
    let d = blocking(move || svc::detail(&c, &id)).await?;
    let iid = d.instance.instance_id.clone();
    Ok(Success(DetailView {
        instance: d.instance.into(),
        image: d.image.map(|i| image_brief(i, &ctx.cfg.ceph.images_pool)),
        volumes: d.volumes.into_iter().map(VolumeView::from).collect(),
        network_interfaces: d.nics.into_iter().map(|n| nic_view(&iid, n)).collect(),
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
    volume_ids: Vec<String>,
    /// GiB of a new data volume created and attached with the instance.
    data_volume_size: Option<u64>,
    /// Existing available NICs attached at boot, in order (none: one is made).
    #[serde(default)]
    network_interface_ids: Vec<String>,
}

pub async fn create(ctx: Data<Ctx>, body: Json<CreateBody>) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let b = body.into_inner();
    let req = NewInstance {
        instance_name: b.instance_name,
        image_id: b.image_id,
        cpu: b.cpu,
        memory: b.memory,
        root_size: b.root_size,
        describe: b.describe.unwrap_or_default(),
        volume_ids: b.volume_ids,
        data_volume_size: b.data_volume_size,
        network_interface_ids: b.network_interface_ids,
    };
    let ctx = ctx.into_inner();
    let row = blocking(move || svc::create(ctx, req)).await?;
    Ok(Success(row.into()))
}

#[derive(Serialize)]
pub struct ProgressView {
    instance_id: String,
    status: String,
    progress: u8,
    step: String,
    error_message: Option<String>,
}

pub async fn progress(ctx: Data<Ctx>, q: Query<IdQuery>) -> ApiResult<Success<ProgressView>> {
    check(&*q)?;
    let id = q.into_inner().instance_id;
    let i = blocking(move || svc::get(&ctx, &id)).await?;
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

pub async fn turnon(ctx: Data<Ctx>, body: Json<IdBody>) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let id = body.into_inner().instance_id;
    let i = blocking(move || svc::turnon(&ctx, &id)).await?;
    Ok(Success(i.into()))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct TurnoffBody {
    #[validate(custom(function = "valid_id"))]
    instance_id: String,
    #[serde(default)]
    force: bool,
}

pub async fn turnoff(ctx: Data<Ctx>, body: Json<TurnoffBody>) -> ApiResult<Success<InstanceView>> {
    check(&*body)?;
    let b = body.into_inner();
    let i = blocking(move || svc::turnoff(&ctx, &b.instance_id, b.force)).await?;
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

pub async fn destroy(ctx: Data<Ctx>, body: Json<DestroyBody>) -> ApiResult<Success<DestroyedView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = b.instance_id.clone();
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

pub async fn console(ctx: Data<Ctx>, q: Query<ConsoleQuery>) -> ApiResult<Success<ConsoleView>> {
    check(&*q)?;
    let q = q.into_inner();
    let id = q.instance_id.clone();
    let max = q.tail_bytes.unwrap_or(65536);
    let output = blocking(move || svc::console(&ctx, &id, max)).await?;
    Ok(Success(ConsoleView {
        instance_id: q.instance_id,
        output,
    }))
}
