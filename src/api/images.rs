//! `/api/v1/images/*` and `/api/v1/unregister_images/list` (seed-api.md section 1).

use super::auth::Caller;
use super::views::ImageView;
use super::{check, list_filter, paging, valid_describe, valid_id, valid_name, PageView, Success};
use crate::context::blocking;
use crate::db::images::Image;
use crate::db::snapshots::Snapshot;
use crate::error::ApiResult;
use crate::error::{ApiError, ErrorCode};
use crate::model::{ImageId, ImageStatus, SnapshotId, VolumeId};
use crate::service::auth::Access;
use crate::service::image_copy::{self, FromSnapshot};
use crate::service::image_format;
use crate::service::images::{self as svc, Changes, FileOutcome, NewImage, OsType, Registration};
use crate::service::upload::{self, Chunk, NewUpload};
use crate::service::Ctx;
use actix_web::http::header;
use actix_web::web::{BytesMut, Data, Json, Payload, Query};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use validator::Validate;

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[validate(length(max = 255, message = "must be at most 255 characters"))]
    filter_name: Option<String>,
    /// Admins: only this project's images (a member sees its project's and the public ones).
    #[validate(custom(function = "super::valid_filter_id"))]
    project_id: Option<String>,
    page_num: Option<u32>,
    page_size: Option<u32>,
}

pub async fn list(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<ListQuery>,
) -> ApiResult<Success<PageView<ImageView>>> {
    check(&*q)?;
    let p = paging(q.page_num, q.page_size)?;
    let q = q.into_inner();
    let mut filter = list_filter::<ImageStatus>(q.filter_name, None, None)?;
    filter.project_id = caller.list_project(q.project_id)?;
    filter.public_too = !caller.is_admin();
    let (total, rows) = {
        let ctx = ctx.clone();
        blocking(move || crate::service::list::<Image>(&ctx, &filter, p)).await?
    };
    let pool = &ctx.cfg.ceph.images_pool;
    let items = rows.into_iter().map(|r| ImageView::new(r, pool)).collect();
    Ok(Success(PageView::new(total, p, items)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct IdQuery {
    #[validate(custom(function = "valid_id"))]
    image_id: String,
}

pub async fn inspect(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdQuery>,
) -> ApiResult<Success<ImageView>> {
    check(&*q)?;
    let id = ImageId::new(q.into_inner().image_id);
    caller.may::<Image>(&ctx, &id, Access::Read).await?;
    let c = ctx.clone();
    let row = blocking(move || svc::get(&c, &id)).await?;
    Ok(Success(ImageView::new(row, &ctx.cfg.ceph.images_pool)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[validate(custom(function = "valid_name"))]
    image_name: String,
    image_size: u64,
    os_type: String,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

pub async fn create(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<CreateBody>,
) -> ApiResult<Success<ImageView>> {
    check(&*body)?;
    let b = body.into_inner();
    let req = NewImage {
        image_name: b.image_name,
        image_size: b.image_size,
        os_type: OsType::parse(&b.os_type)?,
        describe: b.describe.unwrap_or_default(),
        project_id: caller.project(),
        public: caller.is_admin(),
    };
    let c = ctx.clone();
    let row = blocking(move || svc::create(&c, req)).await?;
    Ok(Success(ImageView::new(row, &ctx.cfg.ceph.images_pool)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct FromSnapshotBody {
    #[validate(custom(function = "valid_id"))]
    snapshot_id: String,
    /// Which disk of an instance snapshot (default: its root disk).
    #[validate(custom(function = "valid_id"))]
    volume_id: Option<String>,
    #[validate(custom(function = "valid_name"))]
    image_name: String,
    os_type: String,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

/// Answers the image `creating` at once; the copy goes on in the background (`progress`).
pub async fn create_from_snapshot(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<FromSnapshotBody>,
) -> ApiResult<Success<ImageView>> {
    check(&*body)?;
    let b = body.into_inner();
    let snapshot_id = SnapshotId::new(b.snapshot_id);
    caller
        .may::<Snapshot>(&ctx, &snapshot_id, Access::Read)
        .await?;
    let req = FromSnapshot {
        snapshot_id,
        volume_id: b.volume_id.map(VolumeId::new),
        image_name: b.image_name,
        os_type: OsType::parse(&b.os_type)?,
        describe: b.describe.unwrap_or_default(),
        project_id: caller.project(),
        public: caller.is_admin(),
    };
    let pool = ctx.cfg.ceph.images_pool.clone();
    let c = ctx.into_inner();
    let row = blocking(move || image_copy::create_from_snapshot(c, req)).await?;
    Ok(Success(ImageView::new(row, &pool)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    #[validate(custom(function = "valid_name"))]
    image_name: String,
    image_size: u64,
    os_type: String,
    #[validate(custom(function = "valid_id"))]
    image_id: String,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

pub async fn register(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<RegisterBody>,
) -> ApiResult<Success<ImageView>> {
    caller.admin_only("register images")?;
    check(&*body)?;
    let b = body.into_inner();
    let req = Registration {
        image_id: b.image_id,
        image_name: b.image_name,
        image_size: b.image_size,
        os_type: OsType::parse(&b.os_type)?,
        describe: b.describe.unwrap_or_default(),
        project_id: caller.project(),
    };
    let c = ctx.clone();
    let row = blocking(move || svc::register(&c, req)).await?;
    Ok(Success(ImageView::new(row, &ctx.cfg.ceph.images_pool)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    #[validate(custom(function = "valid_id"))]
    image_id: String,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
    os_type: Option<String>,
    #[validate(custom(function = "valid_name"))]
    image_name: Option<String>,
}

pub async fn update(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<UpdateBody>,
) -> ApiResult<Success<ImageView>> {
    check(&*body)?;
    let b = body.into_inner();
    caller
        .may::<Image>(&ctx, &ImageId::new(b.image_id.clone()), Access::Write)
        .await?;
    let changes = Changes {
        image_name: b.image_name,
        os_type: b.os_type.as_deref().map(OsType::parse).transpose()?,
        describe: b.describe,
    };
    let id = ImageId::new(b.image_id);
    let c = ctx.clone();
    let row = blocking(move || svc::update(&c, &id, changes)).await?;
    Ok(Success(ImageView::new(row, &ctx.cfg.ceph.images_pool)))
}

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    #[validate(custom(function = "valid_id"))]
    image_id: String,
    #[serde(default)]
    del_file: bool,
}

#[derive(Serialize)]
pub struct DeletedView {
    image_id: String,
    /// "kept", "removed" or "already_gone".
    file: &'static str,
    message: String,
}

pub async fn delete(
    ctx: Data<Ctx>,
    caller: Caller,
    body: Json<DeleteBody>,
) -> ApiResult<Success<DeletedView>> {
    check(&*body)?;
    let b = body.into_inner();
    let id = ImageId::new(b.image_id.clone());
    caller.may::<Image>(&ctx, &id, Access::Write).await?;
    let outcome = blocking(move || svc::delete(&ctx, &id, b.del_file)).await?;
    let (file, message) = match outcome {
        FileOutcome::Kept => ("kept", "image unregistered; its RBD image is kept"),
        FileOutcome::Removed => ("removed", "image unregistered and its RBD image removed"),
        FileOutcome::AlreadyGone => (
            "already_gone",
            "image unregistered; its RBD image was already gone",
        ),
    };
    Ok(Success(DeletedView {
        image_id: b.image_id,
        file,
        message: message.to_string(),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnregisteredQuery {
    page_num: Option<u32>,
    page_size: Option<u32>,
}

#[derive(Serialize)]
pub struct UnregisteredView {
    image_id: String,
}

pub async fn unregistered(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<UnregisteredQuery>,
) -> ApiResult<Success<PageView<UnregisteredView>>> {
    caller.admin_only("list the RBD images of the pool")?;
    let p = paging(q.page_num, q.page_size)?;
    let names = blocking(move || svc::unregistered(&ctx)).await?;
    let total = names.len() as i64;
    let items = names
        .into_iter()
        .skip(p.to_db().offset as usize)
        .take(p.page_size as usize)
        .map(|image_id| UnregisteredView { image_id })
        .collect();
    Ok(Success(PageView::new(total, p, items)))
}

/// The path whose POST body is the image itself (read as a stream: the audit and the form
/// compatibility leave it alone).
pub const UPLOAD_PATH: &str = "/api/v1/images/upload";

#[derive(Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    #[validate(custom(function = "valid_name"))]
    image_name: String,
    os_type: String,
    #[validate(custom(function = "valid_describe"))]
    describe: Option<String>,
}

/// `POST /api/v1/images/upload?image_name=...&os_type=...`: the body is the image (raw or
/// qcow2, told by its content), streamed into Ceph; answers the image once it is `available`.
pub async fn upload(
    ctx: Data<Ctx>,
    caller: Caller,
    req: HttpRequest,
    q: Query<UploadQuery>,
    mut body: Payload,
) -> ApiResult<Success<ImageView>> {
    check(&*q)?;
    let q = q.into_inner();
    let os_type = OsType::parse(&q.os_type)?;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Its first bytes say what it is, before anything is made.
    let mut head = BytesMut::new();
    let mut ended = false;
    while head.len() < image_format::HEAD {
        match body.next().await {
            Some(Ok(b)) => head.extend_from_slice(&b),
            Some(Err(e)) => {
                return Err(ApiError::invalid(format!(
                    "the upload was interrupted: {e}"
                )))
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let format = image_format::sniff(&head[..head.len().min(image_format::HEAD)])
        .map_err(|why| ApiError::unprocessable(ErrorCode::ImageFormatRefused, why))?;
    let new = NewUpload {
        image_name: q.image_name,
        os_type,
        describe: q.describe.unwrap_or_default(),
        project_id: caller.project(),
        public: caller.is_admin(),
        format: format.clone(),
        length,
    };
    let c = ctx.clone().into_inner();
    let (row, op, size) = blocking(move || upload::begin(&c, &new)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    let c = ctx.clone().into_inner();
    let work = blocking(move || upload::receive(&c, op, row, format, length, size, rx));
    let feed = async move {
        if tx.send(Chunk::Data(head.freeze())).await.is_err() {
            return;
        }
        if !ended {
            while let Some(item) = body.next().await {
                let chunk = match item {
                    Ok(b) => Chunk::Data(b),
                    Err(e) => {
                        let _ = tx.send(Chunk::Failed(e.to_string())).await;
                        return;
                    }
                };
                // The receiver gone: the upload failed; the rest of the body is not read.
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
        let _ = tx.send(Chunk::End).await;
    };
    let ((), row) = futures_util::future::join(feed, work).await;
    Ok(Success(ImageView::new(row?, &ctx.cfg.ceph.images_pool)))
}

/// `GET /api/v1/images/download?image_id=...`: the image's bytes (raw), streamed from Ceph.
pub async fn download(
    ctx: Data<Ctx>,
    caller: Caller,
    q: Query<IdQuery>,
) -> ApiResult<HttpResponse> {
    check(&*q)?;
    let id = ImageId::new(q.into_inner().image_id);
    caller.may::<Image>(&ctx, &id, Access::Read).await?;
    let c = ctx.clone().into_inner();
    let name = id.to_string();
    let (img, size) = blocking(move || upload::open_for_download(&c, &id)).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    crate::context::spawn_named(format!("download-{name}"), move || {
        upload::send_image(img, size, tx)
    })
    .map_err(|e| ApiError::Internal(format!("cannot start the download: {e}")))?;
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}.raw\""),
        ))
        .no_chunking(size)
        .streaming(stream))
}
