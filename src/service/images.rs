//! Images: RBD images in the images pool, one row each.
//!
//! Create: row `creating` -> RBD create -> row `available`; a failure removes what was made.
//! Register: adopts an RBD image that has no row (its real size is recorded).
//! Delete: row `available -> deleting` -> refuse if clones or instances depend on it -> optionally
//! remove the RBD image -> delete the row; a failure puts the row back to `available`.

use super::backed::{self, RbdBacked};
use super::operations::{self, Op};
use super::{load, transition, Ctx, Resource};
use crate::ceph::Removal;
use crate::db::images::{Image, ImageForm, ImageUpdate};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::ids::valid_image_id;
use crate::model::{ImageId, ImageStatus as St};

/// Biggest image we create: 64 TiB.
pub const MAX_IMAGE_SIZE: u64 = 64 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsType {
    Linux,
    Windows,
}

impl OsType {
    pub fn parse(s: &str) -> ApiResult<OsType> {
        match s {
            "Linux" => Ok(OsType::Linux),
            // "Window" is the original design's own spelling, which the portal sends.
            "Windows" | "Window" => Ok(OsType::Windows),
            other => Err(ApiError::invalid(format!(
                "os_type: {other:?} is not one of \"Linux\", \"Windows\""
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Linux => "Linux",
            OsType::Windows => "Windows",
        }
    }
}

pub struct NewImage {
    pub image_name: String,
    pub image_size: u64,
    pub os_type: OsType,
    pub describe: String,
    /// Its project.
    pub project_id: String,
    /// Every project may boot it (an admin's image), or its project only.
    pub public: bool,
}

pub struct Registration {
    pub image_id: String,
    pub image_name: String,
    pub image_size: u64,
    pub os_type: OsType,
    pub describe: String,
    /// Its project (registered images are public: only admins register).
    pub project_id: String,
}

#[derive(Default)]
pub struct Changes {
    pub image_name: Option<String>,
    pub os_type: Option<OsType>,
    pub describe: Option<String>,
}

/// What happened to the RBD image on delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    Kept,
    Removed,
    AlreadyGone,
}

impl Resource for Image {
    const NOT_FOUND: ErrorCode = ErrorCode::ImageNotFound;
}

pub fn create(ctx: &Ctx, req: NewImage) -> ApiResult<Image> {
    if req.image_size == 0 || req.image_size > MAX_IMAGE_SIZE {
        return Err(ApiError::invalid(format!(
            "image_size: must be between 1 and {MAX_IMAGE_SIZE} bytes"
        )));
    }
    let form = || ImageForm {
        image_id: ImageId::generate(),
        image_name: req.image_name.clone(),
        image_size: req.image_size,
        os_type: req.os_type.as_str().to_string(),
        describe: req.describe.clone(),
        status: St::Creating,
        create_time: db::now(),
        project_id: req.project_id.clone(),
        visibility: visibility(req.public).into(),
        progress: None,
        source_snapshot_id: None,
        source_volume_id: None,
    };
    backed::create(ctx, form, req.image_size)
}

impl RbdBacked for Image {
    type Form = ImageForm;
    const CREATING: St = St::Creating;
    const AVAILABLE: St = St::Available;
    const DELETING: St = St::Deleting;
    const KIND_CREATE: &'static str = "image.create";
    const KIND_DELETE: &'static str = "image.delete";
    fn id_from(s: &str) -> ImageId {
        ImageId::new(s)
    }
    fn status_of(&self) -> St {
        self.status
    }
    fn pool(ctx: &Ctx) -> &str {
        &ctx.cfg.ceph.images_pool
    }
    fn id_of(form: &ImageForm) -> &ImageId {
        &form.image_id
    }
    fn ask(form: &ImageForm) -> (&str, super::quotas::Ask) {
        let ask = super::quotas::Ask {
            images: 1,
            ..Default::default()
        };
        (&form.project_id, ask)
    }
    fn insert(conn: &mut DbConn, form: &ImageForm) -> diesel::QueryResult<()> {
        db::images::insert(conn, form)
    }
}

pub fn register(ctx: &Ctx, req: Registration) -> ApiResult<Image> {
    if !valid_image_id(&req.image_id) {
        return Err(ApiError::invalid(
            "image_id: 1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    ctx.ceph.ensure_up()?;
    let pool = &ctx.cfg.ceph.images_pool;
    let id = ImageId::new(req.image_id);
    let mut conn = ctx.conn()?;
    if db::images::get(&mut conn, &id)?.is_some() {
        return Err(already_registered(&id));
    }
    let size = match ctx.ceph.image_size(pool, id.as_str()) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Err(ApiError::not_found(
                ErrorCode::ImageNotInPool,
                format!("there is no RBD image {pool}/{id} to register"),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if req.image_size != size {
        return Err(ApiError::unprocessable(
            ErrorCode::ImageSizeMismatch,
            format!(
                "image_size {} disagrees with the RBD image's real size {size} bytes",
                req.image_size
            ),
        ));
    }
    let form = ImageForm {
        image_id: id.clone(),
        image_name: req.image_name,
        image_size: size,
        os_type: req.os_type.as_str().to_string(),
        describe: req.describe,
        status: St::Available,
        create_time: db::now(),
        project_id: req.project_id,
        visibility: visibility(true).into(),
        progress: None,
        source_snapshot_id: None,
        source_volume_id: None,
    };
    let ask = super::quotas::Ask {
        images: 1,
        ..Default::default()
    };
    super::quotas::in_transaction(&mut conn, |c| {
        super::quotas::admit(c, &form.project_id, &ask)?;
        match db::images::insert(c, &form) {
            Ok(()) => Ok(()),
            Err(e) if db::is_unique_violation(&e) => Err(already_registered(&id)),
            Err(e) => Err(e.into()),
        }
    })?;
    load(&mut conn, &id)
}

/// An image's `visibility`.
pub fn visibility(public: bool) -> &'static str {
    if public {
        db::images::PUBLIC
    } else {
        "private"
    }
}

fn already_registered(id: &ImageId) -> ApiError {
    ApiError::conflict(
        ErrorCode::ImageAlreadyRegistered,
        format!("image {id} is already registered"),
    )
}

/// RBD images of the images pool that have no row, sorted.
pub fn unregistered(ctx: &Ctx) -> ApiResult<Vec<String>> {
    let mut in_pool = ctx.ceph.list_images(&ctx.cfg.ceph.images_pool)?;
    let mut conn = ctx.conn()?;
    let known: std::collections::HashSet<ImageId> =
        db::images::all_ids(&mut conn)?.into_iter().collect();
    in_pool.retain(|n| !known.contains(n.as_str()));
    in_pool.sort();
    Ok(in_pool)
}

pub fn get(ctx: &Ctx, id: &ImageId) -> ApiResult<Image> {
    load(&mut ctx.conn()?, id)
}

pub fn update(ctx: &Ctx, id: &ImageId, ch: Changes) -> ApiResult<Image> {
    if ch.image_name.is_none() && ch.os_type.is_none() && ch.describe.is_none() {
        return Err(ApiError::invalid(
            "nothing to update: give at least one of image_name, os_type, describe",
        ));
    }
    let mut conn = ctx.conn()?;
    let changes = ImageUpdate {
        image_name: ch.image_name,
        os_type: ch.os_type.map(|o| o.as_str().to_string()),
        describe: ch.describe,
        update_time: Some(db::now()),
        ..Default::default()
    };
    // MySQL counts only rows it changed; load to tell "unknown id" from "same values".
    db::images::update(&mut conn, id, &changes)?;
    load(&mut conn, id)
}

/// Unregisters an image: `available | error -> deleting`, refused (and put back) while clones or
/// instances depend on it, then the RBD image if `del_file`, then the row.
pub fn delete(ctx: &Ctx, id: &ImageId, del_file: bool) -> ApiResult<FileOutcome> {
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    let row = load::<Image>(&mut conn, id)?;
    let from = row.status;
    if from == St::Deleting {
        return finish_interrupted_delete(ctx, &mut conn, id);
    }
    let claim = |c: &mut DbConn| {
        if !matches!(from, St::Available | St::Error)
            || !transition::<Image>(c, id, from, St::Deleting, None)?
        {
            return Err(busy(id, &format!("is {from}; retry when it is available")));
        }
        Ok(())
    };
    let op =
        operations::claim_and_start(ctx, &mut conn, Image::KIND_DELETE, id.as_str(), &(), claim)?;
    let r = delete_claimed(ctx, &mut conn, &op, id, from, del_file);
    op.conclude(ctx, r)
}

/// The delete's steps once the row is `deleting` and the operation started.
fn delete_claimed(
    ctx: &Ctx,
    conn: &mut DbConn,
    op: &Op,
    id: &ImageId,
    from: St,
    del_file: bool,
) -> ApiResult<FileOutcome> {
    let restore = |conn: &mut DbConn, err: &str| {
        if let Err(e) = transition::<Image>(conn, id, St::Deleting, from, Some(err)) {
            log::error!("image {id}: could not restore status {from} after a failed delete: {e}");
        }
    };
    if let Err(e) = refuse_if_used(ctx, conn, id) {
        restore(conn, "");
        return Err(e);
    }
    op.save(ctx, "removing the RBD image", &())?;
    let outcome = match remove_file(ctx, id, del_file) {
        Ok(o) => o,
        Err((e, msg)) => {
            restore(conn, &msg);
            return Err(e);
        }
    };
    match db::images::delete_in_status(conn, id, St::Deleting) {
        Ok(_) => Ok(outcome),
        Err(e) => {
            let file = match outcome {
                FileOutcome::Kept => "the RBD image is kept",
                _ => "the RBD image is already removed",
            };
            Err(ApiError::unavailable(
                Backend::Database,
                format!(
                    "{file} but the row of image {id} could not be deleted ({e}); retry the delete"
                ),
            ))
        }
    }
}

fn busy(id: &ImageId, what: &str) -> ApiError {
    ApiError::conflict(ErrorCode::ImageBusy, format!("image {id} {what}"))
}

/// 409 naming what depends on the image: instances recorded against it, and any clone Ceph
/// knows of (also one made by something else than api-web).
fn refuse_if_used(ctx: &Ctx, conn: &mut DbConn, id: &ImageId) -> ApiResult<()> {
    let mut names: Vec<String> = db::instances::using_image(conn, id)?
        .into_iter()
        .map(|(iid, name)| format!("instance {iid} ({name})"))
        .collect();
    for c in ctx.ceph.children(&ctx.cfg.ceph.images_pool, id.as_str())? {
        if !names.iter().any(|n| n.contains(&c.image)) {
            names.push(format!("clone {}/{}", c.pool, c.image));
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(
        ErrorCode::ImageHasClones,
        format!(
            "image {id} is in use by {}; nothing was removed",
            names.join(", ")
        ),
    ))
}

/// Removes the RBD image if asked; on failure, the error and the message the row keeps.
fn remove_file(ctx: &Ctx, id: &ImageId, del_file: bool) -> Result<FileOutcome, (ApiError, String)> {
    if !del_file {
        return Ok(FileOutcome::Kept);
    }
    let pool = &ctx.cfg.ceph.images_pool;
    match ctx.ceph.remove_image(pool, id.as_str()) {
        Ok(Removal::Removed) => Ok(FileOutcome::Removed),
        Ok(Removal::AlreadyGone) => Ok(FileOutcome::AlreadyGone),
        Err(e) => Err((
            ApiError::unavailable(
                Backend::Ceph,
                format!("could not remove the RBD image {pool}/{id} ({e}); the image is kept and registered"),
            ),
            format!("delete failed: {e}"),
        )),
    }
}

/// A row left `deleting` by a delete whose last step failed: if its RBD image is gone, the only
/// step left is dropping the row; if the image is still there another delete is under way.
fn finish_interrupted_delete(ctx: &Ctx, conn: &mut DbConn, id: &ImageId) -> ApiResult<FileOutcome> {
    let busy = || busy(id, "is being deleted by another request");
    match ctx.ceph.image_size(&ctx.cfg.ceph.images_pool, id.as_str()) {
        Ok(_) => Err(busy()),
        Err(e) if e.is_not_found() => {
            if db::images::delete_in_status(conn, id, St::Deleting)? {
                Ok(FileOutcome::AlreadyGone)
            } else {
                Err(busy())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Start-up repair of images left half-done by a crash: a row `creating` for longer than
/// `older_than_secs` loses its RBD image and its row; a row `deleting` goes back to `available`
/// if its RBD image still exists, else its row goes. Returns how many rows were repaired.
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for row in db::images::stale_in_status(&mut conn, St::Creating, cutoff)? {
        fixed += usize::from(backed::repair_creating::<Image>(
            ctx,
            &mut conn,
            &row.image_id,
        )?);
    }
    for row in db::images::stale_in_status(&mut conn, St::Deleting, cutoff)? {
        fixed += usize::from(backed::repair_deleting::<Image>(
            ctx,
            &mut conn,
            &row.image_id,
        )?);
    }
    Ok(fixed)
}
