//! Images: RBD images in the images pool, one row each.
//!
//! Create: row `creating` -> RBD create -> row `available`; a failure removes what was made.
//! Register: adopts an RBD image that has no row (its real size is recorded).
//! Delete: row `available -> deleting` -> refuse if clones or instances depend on it -> optionally
//! remove the RBD image -> delete the row; a failure puts the row back to `available`.

use super::state::image as st;
use super::{Ctx, Paging};
use crate::ceph::Removal;
use crate::db::images::{Image, ImageChanges};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use crate::ids;

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
            "Windows" => Ok(OsType::Windows),
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
}

pub struct Registration {
    pub image_id: String,
    pub image_name: String,
    pub image_size: u64,
    pub os_type: OsType,
    pub describe: String,
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

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("image_not_found", format!("image {id} does not exist"))
}

fn load(conn: &mut DbConn, id: &str) -> ApiResult<Image> {
    db::images::get(conn, id)?.ok_or_else(|| not_found(id))
}

/// Moves an image between statuses, checking the state machine; false if another request won.
fn transition(
    conn: &mut DbConn,
    id: &str,
    from: &str,
    to: &str,
    err: Option<&str>,
) -> ApiResult<bool> {
    if !st::valid_transition(from, to) {
        return Err(ApiError::Internal(format!(
            "illegal image transition {from} -> {to}"
        )));
    }
    Ok(db::images::transition(conn, id, from, to, err, db::now())?)
}

pub fn create(ctx: &Ctx, req: NewImage) -> ApiResult<Image> {
    if req.image_size == 0 || req.image_size > MAX_IMAGE_SIZE {
        return Err(ApiError::invalid(format!(
            "image_size: must be between 1 and {MAX_IMAGE_SIZE} bytes"
        )));
    }
    let pool = &ctx.cfg.ceph.images_pool;
    let mut conn = ctx.conn()?;
    // A random id can collide with a row or with an RBD image nobody registered: retry both.
    for _ in 0..8 {
        let now = db::now();
        let row = Image {
            image_id: ids::new_id(ids::IMAGE),
            image_name: req.image_name.clone(),
            image_size: req.image_size,
            os_type: req.os_type.as_str().to_string(),
            describe: req.describe.clone(),
            status: st::CREATING.to_string(),
            error_message: None,
            snapshot_name: None,
            create_time: now,
            update_time: now,
        };
        match db::images::insert(&mut conn, &row) {
            Ok(()) => {}
            Err(e) if db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let id = row.image_id.clone();
        if let Err(e) = ctx.ceph.create_image(pool, &id, req.image_size) {
            let undo = db::images::delete_in_status(&mut conn, &id, st::CREATING);
            if e.already_exists() && matches!(undo, Ok(true)) {
                continue;
            }
            return Err(undo_failed(
                format!("Ceph could not create the RBD image {pool}/{id}: {e}"),
                undo.map(|_| ()),
                format!("the image row {id} could not be removed"),
            ));
        }
        match transition(&mut conn, &id, st::CREATING, st::AVAILABLE, None) {
            Ok(true) => return load(&mut conn, &id),
            outcome => {
                let why = match outcome {
                    Err(e) => e.to_string(),
                    _ => "the row changed under us".to_string(),
                };
                let undo = ctx
                    .ceph
                    .remove_image(pool, &id)
                    .map(|_| ())
                    .map_err(ApiError::from)
                    .and_then(|_| {
                        db::images::delete_in_status(&mut conn, &id, st::CREATING)
                            .map(|_| ())
                            .map_err(ApiError::from)
                    });
                return Err(undo_failed(
                    format!("the RBD image {pool}/{id} was created but recording it failed ({why})"),
                    undo,
                    format!("image {id} is left in status creating and will be cleaned up by reconciliation"),
                ));
            }
        }
    }
    Err(ApiError::Internal(
        "could not find a free image id after 8 tries".into(),
    ))
}

/// Builds the error of a failed step, saying whether its undo worked.
fn undo_failed<E: std::fmt::Display>(what: String, undo: Result<(), E>, left: String) -> ApiError {
    match undo {
        Ok(()) => ApiError::unavailable(
            crate::error::Backend::Ceph,
            format!("{what}; nothing was kept"),
        ),
        Err(e) => ApiError::unavailable(
            crate::error::Backend::Ceph,
            format!("{what}; undoing it also failed ({e}): {left}"),
        ),
    }
}

pub fn register(ctx: &Ctx, req: Registration) -> ApiResult<Image> {
    if !ids::valid_image_id(&req.image_id) {
        return Err(ApiError::invalid(
            "image_id: 1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit",
        ));
    }
    let pool = &ctx.cfg.ceph.images_pool;
    let mut conn = ctx.conn()?;
    if db::images::get(&mut conn, &req.image_id)?.is_some() {
        return Err(already_registered(&req.image_id));
    }
    let size = match ctx.ceph.image_size(pool, &req.image_id) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Err(ApiError::not_found(
                "image_not_in_pool",
                format!("there is no RBD image {pool}/{} to register", req.image_id),
            ))
        }
        Err(e) => return Err(e.into()),
    };
    if req.image_size != size {
        return Err(ApiError::unprocessable(
            "image_size_mismatch",
            format!(
                "image_size {} disagrees with the RBD image's real size {size} bytes",
                req.image_size
            ),
        ));
    }
    let now = db::now();
    let row = Image {
        image_id: req.image_id.clone(),
        image_name: req.image_name,
        image_size: size,
        os_type: req.os_type.as_str().to_string(),
        describe: req.describe,
        status: st::AVAILABLE.to_string(),
        error_message: None,
        snapshot_name: None,
        create_time: now,
        update_time: now,
    };
    match db::images::insert(&mut conn, &row) {
        Ok(()) => Ok(row),
        Err(e) if db::is_unique_violation(&e) => Err(already_registered(&req.image_id)),
        Err(e) => Err(e.into()),
    }
}

fn already_registered(id: &str) -> ApiError {
    ApiError::conflict(
        "image_already_registered",
        format!("image {id} is already registered"),
    )
}

/// RBD images of the images pool that have no row, sorted.
pub fn unregistered(ctx: &Ctx) -> ApiResult<Vec<String>> {
    let mut in_pool = ctx.ceph.list_images(&ctx.cfg.ceph.images_pool)?;
    let mut conn = ctx.conn()?;
    let known: std::collections::HashSet<String> =
        db::images::all_ids(&mut conn)?.into_iter().collect();
    in_pool.retain(|n| !known.contains(n));
    in_pool.sort();
    Ok(in_pool)
}

pub fn list(
    ctx: &Ctx,
    name_contains: Option<&str>,
    paging: Paging,
) -> ApiResult<(i64, Vec<Image>)> {
    let mut conn = ctx.conn()?;
    Ok(db::images::list(&mut conn, name_contains, paging.to_db())?)
}

pub fn get(ctx: &Ctx, id: &str) -> ApiResult<Image> {
    load(&mut ctx.conn()?, id)
}

pub fn update(ctx: &Ctx, id: &str, ch: Changes) -> ApiResult<Image> {
    if ch.image_name.is_none() && ch.os_type.is_none() && ch.describe.is_none() {
        return Err(ApiError::invalid(
            "nothing to update: give at least one of image_name, os_type, describe",
        ));
    }
    let mut conn = ctx.conn()?;
    let changes = ImageChanges {
        image_name: ch.image_name,
        os_type: ch.os_type.map(|o| o.as_str().to_string()),
        describe: ch.describe,
        update_time: Some(db::now()),
    };
    // MySQL counts only rows it changed; load to tell "unknown id" from "same values".
    db::images::update(&mut conn, id, &changes)?;
    load(&mut conn, id)
}

pub fn delete(ctx: &Ctx, id: &str, del_file: bool) -> ApiResult<FileOutcome> {
    let pool = &ctx.cfg.ceph.images_pool;
    let mut conn = ctx.conn()?;
    let row = load(&mut conn, id)?;
    let from = row.status.as_str();
    if from == st::DELETING {
        return finish_interrupted_delete(ctx, &mut conn, id);
    }
    if !(from == st::AVAILABLE || from == st::ERROR)
        || !transition(&mut conn, id, from, st::DELETING, None)?
    {
        return Err(ApiError::conflict(
            "image_busy",
            format!("image {id} is {}; retry when it is available", row.status),
        ));
    }
    let restore = |conn: &mut DbConn, err: &str| {
        if let Err(e) = db::images::transition(conn, id, st::DELETING, from, Some(err), db::now()) {
            log::error!("image {id}: could not restore status {from} after a failed delete: {e}");
        }
    };
    // Dependents: instances recorded against it, and any clone Ceph knows of (also one made by
    // something else than api-web).
    let dependents = (|| -> ApiResult<Vec<String>> {
        let mut names: Vec<String> = db::instances::using_image(&mut conn, id)?
            .into_iter()
            .map(|(iid, name)| format!("instance {iid} ({name})"))
            .collect();
        for c in ctx.ceph.children(pool, id)? {
            let clone = format!("{}/{}", c.pool, c.image);
            if !names.iter().any(|n| n.contains(&c.image)) {
                names.push(format!("clone {clone}"));
            }
        }
        Ok(names)
    })();
    match dependents {
        Ok(d) if d.is_empty() => {}
        Ok(d) => {
            restore(&mut conn, "");
            return Err(ApiError::conflict(
                "image_has_clones",
                format!(
                    "image {id} is in use by {}; nothing was removed",
                    d.join(", ")
                ),
            ));
        }
        Err(e) => {
            restore(&mut conn, "");
            return Err(e);
        }
    }
    let outcome = if del_file {
        match ctx.ceph.remove_image(pool, id) {
            Ok(Removal::Removed) => FileOutcome::Removed,
            Ok(Removal::AlreadyGone) => FileOutcome::AlreadyGone,
            Err(e) => {
                restore(&mut conn, &format!("delete failed: {e}"));
                return Err(ApiError::unavailable(
                    crate::error::Backend::Ceph,
                    format!("could not remove the RBD image {pool}/{id} ({e}); the image is kept and registered"),
                ));
            }
        }
    } else {
        FileOutcome::Kept
    };
    match db::images::delete_in_status(&mut conn, id, st::DELETING) {
        Ok(_) => Ok(outcome),
        Err(e) => {
            let file = match outcome {
                FileOutcome::Kept => "the RBD image is kept",
                _ => "the RBD image is already removed",
            };
            Err(ApiError::unavailable(
                crate::error::Backend::Database,
                format!(
                    "{file} but the row of image {id} could not be deleted ({e}); retry the delete"
                ),
            ))
        }
    }
}

/// A row left `deleting` by a delete whose last step failed: if its RBD image is gone, the only
/// step left is dropping the row; if the image is still there another delete is under way.
fn finish_interrupted_delete(ctx: &Ctx, conn: &mut DbConn, id: &str) -> ApiResult<FileOutcome> {
    let busy = || {
        ApiError::conflict(
            "image_busy",
            format!("image {id} is being deleted by another request"),
        )
    };
    match ctx.ceph.image_size(&ctx.cfg.ceph.images_pool, id) {
        Ok(_) => Err(busy()),
        Err(e) if e.is_not_found() => {
            if db::images::delete_in_status(conn, id, st::DELETING)? {
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
    let pool = &ctx.cfg.ceph.images_pool;
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for row in db::images::stale_in_status(&mut conn, st::CREATING, cutoff)? {
        ctx.ceph.remove_image(pool, &row.image_id)?;
        if db::images::delete_in_status(&mut conn, &row.image_id, st::CREATING)? {
            log::warn!("reconcile: removed half-created image {}", row.image_id);
            fixed += 1;
        }
    }
    for row in db::images::stale_in_status(&mut conn, st::DELETING, cutoff)? {
        match ctx.ceph.image_size(pool, &row.image_id) {
            Ok(_) => {
                if transition(&mut conn, &row.image_id, st::DELETING, st::AVAILABLE, None)? {
                    log::warn!("reconcile: image {} back to available", row.image_id);
                    fixed += 1;
                }
            }
            Err(e) if e.is_not_found() => {
                if db::images::delete_in_status(&mut conn, &row.image_id, st::DELETING)? {
                    log::warn!("reconcile: finished deleting image {}", row.image_id);
                    fixed += 1;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(fixed)
}
