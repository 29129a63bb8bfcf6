//! Images made from snapshots: a flat copy of one disk of a snapshot into the images pool,
//! made in the background with its progress on the image row, bootable by `instance/create`
//! as soon as it is `available`.
//!
//! The request checks the snapshot and the disk, then in one READ COMMITTED transaction:
//! holds the snapshot (still `available`: a write to its row, so a concurrent delete waits),
//! admits the image into the project's quota, inserts the row `creating` (progress 0, its
//! source named) and starts the operation `image.copy` on it. It answers that row. A thread
//! then copies the RBD snapshot (opened read-only, so a running guest is not disturbed) with
//! `Ceph::copy_snapshot`'s own extent-wise copy (librbd 16's `rbd_copy` loses a clone's parent
//! data), writes the progress at most every `PROGRESS_EVERY`, and ends the
//! row `available` with the snapshot's size. A copy that fails loses its partial RBD image and
//! ends the row `error`, saying why; when the partial image cannot be removed (Ceph gone) the
//! operation goes to the takeover, which removes it once Ceph answers.
//!
//! While an image is being copied from a snapshot, the snapshot refuses its delete (409
//! `snapshot_busy`, naming the image); the volumes it covers are held by the snapshot itself.
//!
//! A takeover (the copying process died) removes the partial RBD image and ends the row
//! `error`: the copy is not resumed (librbd cannot resume one), the user deletes the image and
//! asks again.

use super::images::{visibility, OsType};
use super::operations::{self, Op};
use super::{load, record, Ctx};
use crate::ceph::Removal;
use crate::db::images::{Image, ImageForm};
use crate::db::operations::Operation;
use crate::db::snapshots::{self as sq, Snapshot};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{ImageId, ImageStatus as St, SnapshotId, SnapshotStatus, VolumeId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operation kind (service::operations).
pub const COPY: &str = "image.copy";
/// Its one step.
pub const STEP: &str = "copying the snapshot";

/// How often, at most, the copy's progress is written to the row.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub struct FromSnapshot {
    pub snapshot_id: SnapshotId,
    /// Which disk of an instance snapshot (its root disk when `None`).
    pub volume_id: Option<VolumeId>,
    pub image_name: String,
    pub os_type: OsType,
    pub describe: String,
    pub project_id: String,
    pub public: bool,
}

/// The saved state of a copy.
#[derive(Serialize, Deserialize, Clone)]
struct Copying {
    snapshot_id: SnapshotId,
    volume_id: VolumeId,
}

fn snapshot_busy(id: &SnapshotId, why: &str) -> ApiError {
    ApiError::conflict(ErrorCode::SnapshotBusy, format!("snapshot {id} {why}"))
}

/// Checks the request, records the image `creating` and starts the copy in the background;
/// answers the row as recorded.
pub fn create_from_snapshot(ctx: Arc<Ctx>, req: FromSnapshot) -> ApiResult<Image> {
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    let snap = load::<Snapshot>(&mut conn, &req.snapshot_id)?;
    if snap.status != SnapshotStatus::Available {
        return Err(snapshot_busy(
            &snap.snapshot_id,
            &format!(
                "is {}; an image can be made only from an available one",
                snap.status
            ),
        ));
    }
    let cover = sq::covered(&mut conn, &snap.snapshot_id)?;
    let volume = match &req.volume_id {
        Some(v) => cover.iter().find(|c| &c.volume_id == v).ok_or_else(|| {
            let held: Vec<&str> = cover.iter().map(|c| c.volume_id.as_str()).collect();
            ApiError::conflict(
                ErrorCode::SnapshotMismatch,
                format!(
                    "volume {v} is not in snapshot {}: it holds {}",
                    snap.snapshot_id,
                    held.join(", ")
                ),
            )
        })?,
        // Root first: an instance snapshot's root disk, a volume snapshot's one volume.
        None => cover.first().ok_or_else(|| {
            ApiError::Internal(format!("snapshot {} covers no volume", snap.snapshot_id))
        })?,
    }
    .volume_id
    .clone();
    let vpool = &ctx.cfg.ceph.volumes_pool;
    let size = ctx
        .ceph
        .snapshot_size(vpool, volume.as_str(), snap.snapshot_id.as_str())
        .map_err(|e| {
            ApiError::unavailable(
                Backend::Ceph,
                format!(
                    "cannot read the RBD snapshot {vpool}/{volume}@{}: {e}",
                    snap.snapshot_id
                ),
            )
        })?;
    if size > super::images::MAX_IMAGE_SIZE {
        return Err(ApiError::unprocessable(
            ErrorCode::ImageSizeMismatch,
            format!(
                "the disk is {size} bytes, more than an image may be ({} bytes)",
                super::images::MAX_IMAGE_SIZE
            ),
        ));
    }
    let form = ImageForm {
        image_id: ImageId::generate(),
        image_name: req.image_name,
        image_size: size,
        os_type: req.os_type.as_str().to_string(),
        describe: req.describe,
        status: St::Creating,
        create_time: db::now(),
        project_id: req.project_id,
        visibility: visibility(req.public).into(),
        progress: Some(0),
        source_snapshot_id: Some(snap.snapshot_id.clone()),
        source_volume_id: Some(volume.clone()),
    };
    let state = Copying {
        snapshot_id: snap.snapshot_id.clone(),
        volume_id: volume,
    };
    let id = form.image_id.clone();
    let op = super::quotas::in_transaction(&mut conn, |c| {
        if !sq::hold_available(c, &state.snapshot_id, db::now())? {
            return Err(snapshot_busy(
                &state.snapshot_id,
                "stopped being available; retry when it is",
            ));
        }
        let ask = super::quotas::Ask {
            images: 1,
            ..Default::default()
        };
        super::quotas::admit(c, &form.project_id, &ask)?;
        db::images::insert(c, &form)?;
        operations::start(&ctx, c, COPY, id.as_str(), &state)
    })?;
    let row = load::<Image>(&mut conn, &id)?;
    drop(conn);
    let bg = ctx.clone();
    let spawned = crate::context::spawn_named(format!("copy-{id}"), move || {
        run(&bg, op, &id, &state, size)
    });
    if let Err(e) = spawned {
        // The operation went with the closure: its lease runs out and the takeover ends it.
        return Err(ApiError::Internal(format!(
            "could not start the copy: {e}; the image ends in error within {}s",
            ctx.cfg.operations.lease_secs + ctx.cfg.operations.takeover_interval_secs
        )));
    }
    Ok(row)
}

/// The copy, in its own thread, to its end.
fn run(ctx: &Ctx, op: Op, id: &ImageId, state: &Copying, size: u64) {
    let started = Instant::now();
    if op.save(ctx, STEP, state).is_err() {
        return op.finish(ctx, Err("could not save its first step"));
    }
    let r = copy(ctx, id, state);
    match r {
        Ok(()) => {
            let done = record(ctx, "recording a copied image", |c| {
                Ok(db::images::finish(c, id, size, None, db::now())?)
            });
            match done {
                Ok(true) => {
                    log::info!(
                        "image {id}: copied from snapshot {} ({size} bytes) in {} ms",
                        state.snapshot_id,
                        started.elapsed().as_millis()
                    );
                    op.finish(ctx, Ok(()));
                }
                // A takeover ended the row (this process had lost its lease): the copy is not
                // what the row says, so it goes.
                Ok(false) => {
                    let _ = ctx
                        .ceph
                        .remove_image(&ctx.cfg.ceph.images_pool, id.as_str());
                    op.finish(ctx, Err("the row was settled by another process"));
                }
                Err(e) => fail(
                    ctx,
                    op,
                    id,
                    &format!("the copy was made but not recorded ({e})"),
                ),
            }
        }
        Err(e) => fail(ctx, op, id, &e),
    }
}

/// Copies the snapshot into the images pool, writing the progress as it goes.
fn copy(ctx: &Ctx, id: &ImageId, state: &Copying) -> Result<(), String> {
    let owner = ctx.deployment().map_err(|e| e.to_string())?;
    let mut last = Instant::now();
    let mut shown = 0u8;
    let mut progress = |done: u64, total: u64| {
        // 99 at most: 100 is the row's `available`.
        let pct = done
            .saturating_mul(100)
            .checked_div(total)
            .unwrap_or(99)
            .min(99) as u8;
        if pct > shown && last.elapsed() >= PROGRESS_EVERY {
            shown = pct;
            last = Instant::now();
            // Progress is advice: a failed write is not a failed copy.
            let w = ctx
                .conn()
                .and_then(|mut c| Ok(db::images::set_progress(&mut c, id, pct, db::now())?));
            if let Err(e) = w {
                log::debug!("image {id}: progress {pct}% not recorded: {e}");
            }
        }
        true
    };
    ctx.ceph
        .copy_snapshot(
            &ctx.cfg.ceph.volumes_pool,
            state.volume_id.as_str(),
            state.snapshot_id.as_str(),
            &ctx.cfg.ceph.images_pool,
            id.as_str(),
            &owner,
            &mut progress,
        )
        .map_err(|e| format!("the copy from snapshot {} failed: {e}", state.snapshot_id))
}

/// A copy that failed: its partial RBD image removed and the row `error` saying why; when the
/// removal fails, the operation goes to the takeover (which removes it once Ceph answers).
pub fn fail(ctx: &Ctx, op: Op, id: &ImageId, why: &str) {
    log::warn!("image {id}: {why}");
    if let Err(e) = ctx
        .ceph
        .remove_image(&ctx.cfg.ceph.images_pool, id.as_str())
    {
        return op.abandon(
            ctx,
            &format!("{why}; its partial RBD image could not be removed ({e})"),
        );
    }
    let msg = format!("{why}; nothing was kept: delete this image and create it again");
    match record(ctx, "recording a failed copy", |c| {
        Ok(db::images::fail_copy(c, id, &msg, db::now())?)
    }) {
        Ok(_) => op.finish(ctx, Err(why)),
        Err(e) => op.abandon(ctx, &format!("{why}; the failure was not recorded ({e})")),
    }
}

/// Takes over a copy or an upload whose process died (or that handed itself over): a row
/// still `creating` loses its partial RBD image (and an upload its spool file, if this host
/// has it) and ends `error`.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = ImageId::new(op.resource_id.as_str());
    let _ = std::fs::remove_file(super::upload::spool_path(&id));
    let status = record(ctx, "reading the image", |c| {
        Ok(db::images::get(c, &id)?.map(|i| i.status))
    });
    match status {
        Ok(Some(St::Creating)) => {
            let why = op
                .error_message
                .clone()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "api-web stopped while making this image".into());
            let pool = &ctx.cfg.ceph.images_pool;
            match ctx.ceph.remove_image(pool, id.as_str()) {
                Ok(Removal::Removed | Removal::AlreadyGone) => {}
                Err(e) => {
                    // Retried by the next takeover pass.
                    return held.abandon(
                        ctx,
                        &format!("{why}; its partial RBD image could not be removed yet ({e})"),
                    );
                }
            }
            let msg = format!("{why}; nothing was kept: delete this image and create it again");
            match record(ctx, "recording an interrupted copy", |c| {
                Ok(db::images::fail_copy(c, &id, &msg, db::now())?)
            }) {
                Ok(_) => held.finish(ctx, Err(&msg)),
                Err(e) => log::warn!("operation {}: {e}", op.operation_id),
            }
        }
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// The 409 when images are being copied from `snap` (its delete would break them).
pub fn check_snapshot_free(c: &mut DbConn, snap: &SnapshotId) -> ApiResult<()> {
    let copying = db::images::copying_from(c, snap)?;
    if copying.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = copying.iter().map(|i| i.as_str()).collect();
    Err(snapshot_busy(
        snap,
        &format!(
            "is being copied into image {}; retry when the copy has ended",
            names.join(", ")
        ),
    ))
}
