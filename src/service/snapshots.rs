//! Snapshots: of every disk of an instance taken together, or of one volume on its own. Each
//! covered volume gets an RBD snapshot named after the snapshot_id; `snapshot_volume` lists
//! them with each volume's size then.
//!
//! An instance snapshot is crash-consistent across its disks: a running guest is suspended
//! (its vCPUs stop, so no disk is written) from before the first RBD snapshot to after the
//! last, and resumed; `suspended_ms` records how long. A paused or stopped guest writes nothing
//! anyway. A volume snapshot is one RBD snapshot, atomic on its own: its guest runs on.
//!
//! Create, delete and the restores (of an instance, of one volume) are operations
//! (`service::operations`): a takeover undoes a create (its RBD snapshots removed, the guest
//! resumed, the snapshot `error`), carries a delete on, and takes a restore's rollbacks again
//! (a rollback is idempotent).
//!
//! A snapshot stops what would break it: deleting a volume it covers, destroying its instance
//! (409 naming the snapshots); a restore waits for nothing (the instance is stopped) and a
//! delete of the snapshot waits for the restore (`restoring`).

use super::instances::power::status_of;
use super::operations::{self, state_of, Op};
use super::{load, record, transition, Ctx, Resource};
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::snapshots::{self as q, Covered, Snapshot, SnapshotForm};
use crate::db::volumes::Volume;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{
    InstanceId, InstanceStatus as Is, SnapshotId, SnapshotStatus as St, VolumeId,
    VolumeStatus as Vs,
};
use crate::virt::Power;
use diesel::Connection;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// The operation kinds (service::operations).
pub const CREATE: &str = "snapshot.create";
pub const DELETE: &str = "snapshot.delete";
pub const RESTORE: &str = "instance.restore";
pub const RESTORE_VOLUME: &str = "volume.restore";

impl Resource for Snapshot {
    const NOT_FOUND: ErrorCode = ErrorCode::SnapshotNotFound;
}

/// What a snapshot is of.
#[derive(Debug, Clone)]
pub enum Source {
    Instance(InstanceId),
    Volume(VolumeId),
}

/// A snapshot with the volumes it covers.
pub struct Detail {
    pub snapshot: Snapshot,
    pub volumes: Vec<Covered>,
}

/// The saved state of a snapshot create.
#[derive(Serialize, Deserialize, Default, Clone)]
struct Taking {
    snapshot_id: Option<SnapshotId>,
    /// The instance's status before (instance snapshots): where its row goes back to when
    /// libvirt cannot say.
    from: Option<String>,
    /// The guest was running and is (or is about to be) suspended by this operation.
    suspended: bool,
    volumes: Vec<VolumeId>,
}

/// The saved state of a snapshot delete and of a restore.
#[derive(Serialize, Deserialize)]
struct Of {
    snapshot_id: SnapshotId,
}

fn busy(s: &Snapshot) -> ApiError {
    ApiError::conflict(
        ErrorCode::SnapshotBusy,
        format!(
            "snapshot {} is {}; {}",
            s.snapshot_id,
            s.status,
            match s.status {
                St::Error => "only a delete is possible",
                _ => "retry when it has finished",
            }
        ),
    )
}

fn ceph_failed(what: String) -> ApiError {
    ApiError::unavailable(Backend::Ceph, what)
}

fn pool(ctx: &Ctx) -> &str {
    &ctx.cfg.ceph.volumes_pool
}

pub fn detail(ctx: &Ctx, id: &SnapshotId) -> ApiResult<Detail> {
    let mut conn = ctx.conn()?;
    let snapshot = load::<Snapshot>(&mut conn, id)?;
    let volumes = q::covered(&mut conn, id)?;
    Ok(Detail { snapshot, volumes })
}

/// A page of snapshots, each with its volumes (one more query, not one per row).
pub fn list(
    ctx: &Ctx,
    filter: &db::ListFilter<St>,
    paging: super::Paging,
) -> ApiResult<(i64, Vec<Detail>)> {
    let mut conn = ctx.conn()?;
    let (total, rows) = db::list::<Snapshot>(&mut conn, filter, paging.to_db())?;
    let ids: Vec<SnapshotId> = rows.iter().map(|r| r.snapshot_id.clone()).collect();
    let mut cover = q::covered_by(&mut conn, &ids)?;
    let out = rows
        .into_iter()
        .map(|snapshot| {
            let (mine, rest) = cover
                .drain(..)
                .partition(|c| c.snapshot_id == snapshot.snapshot_id);
            cover = rest;
            Detail {
                snapshot,
                volumes: mine,
            }
        })
        .collect();
    Ok((total, out))
}

/// The 409 for an instance that cannot be snapshotted now.
fn instance_refusal(inst: &Instance) -> ApiError {
    let id = &inst.instance_id;
    match inst.status {
        Is::Error => ApiError::conflict(
            ErrorCode::InstanceError,
            format!("instance {id} is in error; destroy it"),
        ),
        s => ApiError::conflict(
            ErrorCode::InstanceBusy,
            format!("instance {id} is {s}; retry when it has finished"),
        ),
    }
}

/// In the claim's transaction: the instance `running | paused | stopped -> snapshotting` with
/// every volume of it `in-use`, the snapshot row and what it covers.
fn claim_instance(
    c: &mut DbConn,
    id: &InstanceId,
    form: &SnapshotForm,
    state: &mut Taking,
) -> ApiResult<()> {
    let inst = load::<Instance>(c, id)?;
    if !inst.status.is_settled() {
        return Err(instance_refusal(&inst));
    }
    let vols = db::volumes::of_instance(c, id)?;
    if let Some(v) = vols.iter().find(|v| v.status != Vs::InUse) {
        return Err(ApiError::conflict(
            ErrorCode::VolumeBusy,
            format!(
                "volume {} of instance {id} is {}; retry when it has finished",
                v.volume_id, v.status
            ),
        ));
    }
    if !transition::<Instance>(c, id, inst.status, Is::Snapshotting, None)? {
        return Err(instance_refusal(&load(c, id)?));
    }
    let form = SnapshotForm {
        instance_id: Some(id.clone()),
        project_id: inst.project_id.clone(),
        ..form.clone()
    };
    insert(c, &form, &vols)?;
    state.from = Some(inst.status.as_str().to_string());
    state.suspended = inst.status == Is::Running;
    state.volumes = vols.into_iter().map(|v| v.volume_id).collect();
    Ok(())
}

/// In the claim's transaction: the volume (locked, so a delete waits) `available | in-use`,
/// the snapshot row and what it covers.
fn claim_volume(
    c: &mut DbConn,
    id: &VolumeId,
    form: &SnapshotForm,
    state: &mut Taking,
) -> ApiResult<()> {
    let v = db::volumes::lock(c, id)?.ok_or_else(|| super::not_found::<Volume>(id))?;
    if !matches!(v.status, Vs::Available | Vs::InUse) {
        return Err(ApiError::conflict(
            ErrorCode::VolumeBusy,
            format!(
                "volume {id} is {}; retry when it is available or in-use",
                v.status
            ),
        ));
    }
    let form = SnapshotForm {
        volume_id: Some(id.clone()),
        project_id: v.project_id.clone(),
        ..form.clone()
    };
    insert(c, &form, std::slice::from_ref(&v))?;
    state.volumes = vec![v.volume_id];
    Ok(())
}

fn insert(c: &mut DbConn, form: &SnapshotForm, vols: &[Volume]) -> ApiResult<()> {
    q::insert(c, form)?;
    let cover: Vec<Covered> = vols
        .iter()
        .map(|v| Covered {
            snapshot_id: form.snapshot_id.clone(),
            volume_id: v.volume_id.clone(),
            volume_size: v.volume_size,
            is_root: v.is_root,
        })
        .collect();
    q::cover(c, &cover)?;
    Ok(())
}

/// Takes a snapshot of an instance's disks or of one volume; answers when it is `available`
/// (or the error that left it `error`, its RBD snapshots removed).
pub fn create(ctx: &Ctx, source: &Source, name: &str) -> ApiResult<Detail> {
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    let id = super::fresh_id("snapshot id", 5, || {
        let id = SnapshotId::generate();
        Ok(q::get(&mut conn, &id)?.is_none().then_some(id))
    })?;
    let form = SnapshotForm {
        snapshot_id: id.clone(),
        snapshot_name: name.to_string(),
        instance_id: None,
        volume_id: None,
        status: St::Creating,
        create_time: db::now(),
        project_id: String::new(),
    };
    // What a takeover needs if this process dies right after the claim: which snapshot, and
    // whether it is of an instance (nothing is suspended before a save says so).
    let init = Taking {
        snapshot_id: Some(id.clone()),
        from: matches!(source, Source::Instance(_)).then(String::new),
        ..Default::default()
    };
    let mut state = init.clone();
    let resource = match source {
        Source::Instance(i) => i.as_str(),
        Source::Volume(v) => v.as_str(),
    };
    let op =
        operations::claim_and_start(ctx, &mut conn, CREATE, resource, &init, |c| match source {
            Source::Instance(i) => claim_instance(c, i, &form, &mut state),
            Source::Volume(v) => claim_volume(c, v, &form, &mut state),
        })?;
    drop(conn);
    let r = take(ctx, &op, &state, &id);
    match r {
        Ok(ms) => {
            let done = record(ctx, "recording a snapshot", |c| {
                c.transaction(|c| {
                    if let Some(ms) = ms {
                        q::set_suspended(c, &id, ms)?;
                    }
                    transition::<Snapshot>(c, &id, St::Creating, St::Available, None)?;
                    settle_instance(ctx, c, source, &state)
                })
            });
            let r = done.and_then(|_| detail(ctx, &id));
            end(ctx, op, r)
        }
        Err(e) if op.is_halted() => {
            // This process may no longer hold the operation: undo nothing but the suspension
            // (the takeover resumes too; resuming twice is harmless).
            resume_if_suspended(ctx, source, &state);
            op.conclude(ctx, Err(e))
        }
        Err(e) => {
            let msg = format!("the snapshot failed: {e}");
            if !undo(ctx, source, &state, &id, &msg) {
                // The undo is not recorded: the takeover undoes it again and records it.
                op.abandon(ctx, &msg);
                return Err(e);
            }
            op.conclude(ctx, Err(e))
        }
    }
}

/// Ends a taken-over `held` with `r`, unless MySQL could not record the outcome: then its lease
/// runs out and a later takeover pass tries again.
fn taken_over(ctx: &Ctx, held: Op, r: ApiResult<()>) {
    match r {
        Ok(()) => held.finish(ctx, Ok(())),
        Err(ApiError::Unavailable {
            backend: Backend::Database,
            message,
        }) => log::warn!("operation {}: not settled: {message}", held.id),
        Err(e) => held.finish(ctx, Err(&e.to_string())),
    }
}

/// Ends `op` with `r`, or hands it to the takeover when MySQL could not record the outcome
/// (its rows may still be transitional; the takeover settles them once MySQL answers).
fn end<T>(ctx: &Ctx, op: Op, r: ApiResult<T>) -> ApiResult<T> {
    match r {
        Err(e)
            if !op.is_halted()
                && matches!(
                    e,
                    ApiError::Unavailable {
                        backend: Backend::Database,
                        ..
                    }
                ) =>
        {
            op.abandon(ctx, &e.to_string());
            Err(e)
        }
        r => op.conclude(ctx, r),
    }
}

/// The steps: suspend a running guest, one RBD snapshot per volume, resume. Returns how long
/// the guest was suspended.
fn take(ctx: &Ctx, op: &Op, state: &Taking, id: &SnapshotId) -> ApiResult<Option<u64>> {
    let name = match &state.from {
        Some(_) => op.resource_id.as_str(),
        None => "",
    };
    let mut since = None;
    // The instance is claimed (`snapshotting`): its host cannot change meanwhile.
    let hv = match &state.from {
        Some(_) => Some(super::hosts::of_id(ctx, &InstanceId::new(name))?),
        None => None,
    };
    if let (true, Some(hv)) = (state.suspended, &hv) {
        op.save(ctx, "suspending the domain", state)?;
        match hv.power(name) {
            Ok(Some(Power::Running)) => {
                hv.suspend(name).map_err(|e| {
                    ApiError::unavailable(
                        Backend::Libvirt,
                        format!("could not suspend instance {name}: {}", e.message()),
                    )
                })?;
                since = Some(Instant::now());
            }
            // Paused or stopped meanwhile: it writes nothing either way.
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ApiError::conflict(
                    ErrorCode::InstanceError,
                    super::instances::vanished_message(&InstanceId::new(name)),
                ))
            }
            Err(e) => {
                return Err(ApiError::unavailable(
                    Backend::Libvirt,
                    format!("libvirt: {}", e.message()),
                ))
            }
        }
    }
    op.save(ctx, "taking the RBD snapshots", state)?;
    // All at once: each waits for the monitors to allocate its snapshot id (an OSD map
    // commit, up to `paxos_propose_interval`), and concurrent ones share a commit.
    let failed: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = state
            .volumes
            .iter()
            .map(|v| {
                s.spawn(move || {
                    ctx.ceph
                        .create_snapshot(pool(ctx), v.as_str(), id.as_str())
                        .map_err(|e| format!("could not snapshot volume {v}: {e}"))
                })
            })
            .collect();
        calls
            .into_iter()
            .filter_map(|c| match c.join() {
                Ok(r) => r.err(),
                Err(_) => Some("an RBD snapshot call panicked".to_string()),
            })
            .collect()
    });
    if !failed.is_empty() {
        return Err(ceph_failed(failed.join("; ")));
    }
    let (Some(since), Some(hv)) = (since, hv) else {
        return Ok(None);
    };
    op.save(ctx, "resuming the domain", state)?;
    hv.resume(name).map_err(|e| {
        ApiError::unavailable(
            Backend::Libvirt,
            format!(
                "the RBD snapshots are taken, but instance {name} could not be resumed: {}",
                e.message()
            ),
        )
    })?;
    Ok(Some(since.elapsed().as_millis() as u64))
}

/// An instance row `snapshotting` takes what libvirt reports (where it was, when libvirt cannot
/// say: the reconciliation pass corrects it).
fn settle_instance(ctx: &Ctx, c: &mut DbConn, source: &Source, state: &Taking) -> ApiResult<()> {
    let Source::Instance(id) = source else {
        return Ok(());
    };
    let from = state
        .from
        .as_deref()
        .and_then(Is::parse)
        .unwrap_or(Is::Stopped);
    let power = super::hosts::of_id(ctx, id).and_then(|hv| Ok(hv.power(id.as_str())?));
    let (to, msg) = match power {
        Ok(Some(p)) => (status_of(p), None),
        Ok(None) => (Is::Error, Some(super::instances::vanished_message(id))),
        Err(_) => (from, None),
    };
    transition::<Instance>(c, id, Is::Snapshotting, to, msg.as_deref())?;
    Ok(())
}

/// Resumes a guest this operation suspended (if it still is paused).
fn resume_if_suspended(ctx: &Ctx, source: &Source, state: &Taking) {
    let Source::Instance(id) = source else {
        return;
    };
    if !state.suspended {
        return;
    }
    let Ok(hv) = super::hosts::of_id(ctx, id) else {
        return;
    };
    if let Ok(Some(Power::Paused)) = hv.power(id.as_str()) {
        if let Err(e) = hv.resume(id.as_str()) {
            log::error!(
                "instance {id}: cannot resume it after a failed snapshot: {}",
                e.message()
            );
        }
    }
}

/// A failed create: the guest resumed, its RBD snapshots removed (those that cannot be stay
/// covered, for the snapshot's delete to remove), the snapshot `error` saying why, the
/// instance back to what libvirt reports. False when MySQL could not record it.
fn undo(ctx: &Ctx, source: &Source, state: &Taking, id: &SnapshotId, msg: &str) -> bool {
    resume_if_suspended(ctx, source, state);
    let volumes: Vec<VolumeId> = match record(ctx, "reading a snapshot's volumes", |c| {
        Ok(q::covered(c, id)?)
    }) {
        Ok(cover) => cover.into_iter().map(|c| c.volume_id).collect(),
        Err(e) => {
            log::error!("snapshot {id}: cannot read its volumes to undo it: {e}");
            return false;
        }
    };
    let mut kept = vec![];
    for v in &volumes {
        if let Err(e) = ctx.ceph.remove_snapshot(pool(ctx), v.as_str(), id.as_str()) {
            log::warn!("snapshot {id}: cannot remove the RBD snapshot of volume {v}: {e}");
            kept.push(v.clone());
        }
    }
    let r = record(ctx, "recording a failed snapshot", |c| {
        c.transaction(|c| {
            for v in volumes.iter().filter(|v| !kept.contains(v)) {
                q::uncover(c, id, v)?;
            }
            transition::<Snapshot>(c, id, St::Creating, St::Error, Some(msg))?;
            settle_instance(ctx, c, source, state)
        })
    });
    if let Err(e) = r {
        log::error!("snapshot {id}: cannot record its failure: {e}");
        return false;
    }
    true
}

/// Takes over a create whose process died: a snapshot still `creating` is undone.
pub fn recover_create(ctx: &Ctx, held: Op, op: &Operation) {
    let state: Taking = match state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    let source = match state.from {
        Some(_) => Source::Instance(InstanceId::new(op.resource_id.as_str())),
        None => Source::Volume(VolumeId::new(op.resource_id.as_str())),
    };
    // Saved before the claim's state was known: nothing was made.
    let Some(id) = state.snapshot_id.clone() else {
        return held.finish(ctx, Ok(()));
    };
    let status = record(ctx, "reading the snapshot", |c| {
        Ok(q::get(c, &id)?.map(|s| s.status))
    });
    match status {
        Ok(Some(St::Creating)) => {
            let recorded = undo(
                ctx,
                &source,
                &state,
                &id,
                "api-web stopped while taking this snapshot; its RBD snapshots were removed: delete it",
            );
            if recorded {
                held.finish(ctx, Err("undone after its process stopped"));
            }
            // Else its lease runs out and a later pass undoes it again.
        }
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// `available | error -> deleting`, every RBD snapshot removed, the row gone. A failure puts
/// the row back, saying why.
pub fn delete(ctx: &Ctx, id: &SnapshotId) -> ApiResult<()> {
    ctx.ceph.ensure_up()?;
    let mut from = St::Available;
    let state = Of {
        snapshot_id: id.clone(),
    };
    let op =
        operations::claim_and_start(ctx, &mut ctx.conn()?, DELETE, id.as_str(), &state, |c| {
            let s = load::<Snapshot>(c, id)?;
            if !matches!(s.status, St::Available | St::Error) {
                return Err(busy(&s));
            }
            from = s.status;
            if !transition::<Snapshot>(c, id, s.status, St::Deleting, None)? {
                return Err(busy(&load(c, id)?));
            }
            // After the write above: a copy that held the snapshot first has committed its row.
            super::image_copy::check_snapshot_free(c, id)
        })?;
    let r = op
        .save(ctx, "removing the RBD snapshots", &state)
        .and_then(|_| remove(ctx, id, from));
    end(ctx, op, r)
}

/// The delete's steps once the row is `deleting`.
fn remove(ctx: &Ctx, id: &SnapshotId, from: St) -> ApiResult<()> {
    let cover = q::covered(&mut *ctx.conn()?, id)?;
    for c in &cover {
        if let Err(e) = ctx
            .ceph
            .remove_snapshot(pool(ctx), c.volume_id.as_str(), id.as_str())
        {
            let msg = format!(
                "could not remove the RBD snapshot of volume {}: {e}",
                c.volume_id
            );
            let _ = record(ctx, "recording a failed snapshot delete", |conn| {
                transition::<Snapshot>(conn, id, St::Deleting, from, Some(&msg))
            });
            return Err(ceph_failed(format!("{msg}; the snapshot is kept")));
        }
        record(ctx, "recording a removed RBD snapshot", |conn| {
            Ok(q::uncover(conn, id, &c.volume_id)?)
        })?;
    }
    record(ctx, "deleting the snapshot", |c| {
        c.transaction(|c| Ok(q::delete_with_cover(c, id, St::Deleting)?))
    })?;
    Ok(())
}

/// Takes over a delete whose process died: a row still `deleting` is deleted to the end.
pub fn recover_delete(ctx: &Ctx, held: Op, op: &Operation) {
    let id = SnapshotId::new(op.resource_id.as_str());
    match record(ctx, "reading the snapshot", |c| {
        Ok(q::get(c, &id)?.map(|s| s.status))
    }) {
        Ok(Some(St::Deleting)) => taken_over(ctx, held, remove(ctx, &id, St::Error)),
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// The names of `ids`, for a 409.
fn names(ids: &[SnapshotId]) -> String {
    ids.iter()
        .map(|i| i.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The 409 when snapshots cover `volume` (its delete would remove them).
pub fn check_volume_free(c: &mut DbConn, volume: &VolumeId) -> ApiResult<()> {
    let held = q::covering(c, std::slice::from_ref(volume))?;
    if held.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(
        ErrorCode::VolumeHasSnapshots,
        format!(
            "volume {volume} is held by snapshots {}; delete them first",
            names(&held)
        ),
    ))
}

/// The 409 when snapshots of the instance, or of volumes its destroy deletes, exist.
pub fn check_instance_free(c: &mut DbConn, id: &InstanceId, deleted: &[VolumeId]) -> ApiResult<()> {
    let mut held = q::of_instance(c, id)?;
    held.extend(q::covering(c, deleted)?);
    held.sort();
    held.dedup();
    if held.is_empty() {
        return Ok(());
    }
    Err(ApiError::conflict(
        ErrorCode::InstanceHasSnapshots,
        format!(
            "instance {id} (or a volume its destroy deletes) has snapshots {}; delete them first",
            names(&held)
        ),
    ))
}

/// What differs between the volumes of an instance now and those a snapshot holds, or `None`.
fn difference(now: &[VolumeId], then: &[VolumeId]) -> Option<String> {
    let missing: Vec<&str> = then
        .iter()
        .filter(|v| !now.contains(v))
        .map(|v| v.as_str())
        .collect();
    let extra: Vec<&str> = now
        .iter()
        .filter(|v| !then.contains(v))
        .map(|v| v.as_str())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return None;
    }
    let mut parts = vec![];
    if !missing.is_empty() {
        parts.push(format!(
            "not attached now but in the snapshot: {}",
            missing.join(", ")
        ));
    }
    if !extra.is_empty() {
        parts.push(format!(
            "attached now but not in the snapshot: {}",
            extra.join(", ")
        ));
    }
    Some(parts.join("; "))
}

/// In the claim's transaction: the instance `stopped -> restoring` and the snapshot
/// `available -> restoring`, after checking that the snapshot is of this instance and that it
/// holds exactly the volumes attached now.
fn claim_restore(c: &mut DbConn, id: &InstanceId, snap: &SnapshotId) -> ApiResult<()> {
    let inst = load::<Instance>(c, id)?;
    let s = load::<Snapshot>(c, snap)?;
    if s.instance_id.as_ref() != Some(id) {
        let of = match (&s.instance_id, &s.volume_id) {
            (Some(i), _) => format!("of instance {i}"),
            (None, Some(v)) => format!("of volume {v} alone"),
            _ => "of nothing".to_string(),
        };
        return Err(ApiError::conflict(
            ErrorCode::SnapshotMismatch,
            format!("snapshot {snap} is {of}, not of instance {id}"),
        ));
    }
    let msg = |what: &str| format!("instance {id} is {}; {what}", inst.status);
    match inst.status {
        Is::Stopped => {}
        Is::Running => {
            return Err(ApiError::conflict(
                ErrorCode::InstanceRunning,
                msg("a restore needs it stopped (turn it off first)"),
            ))
        }
        Is::Paused => {
            return Err(ApiError::conflict(
                ErrorCode::InstancePaused,
                msg("a restore needs it stopped (turn it off first)"),
            ))
        }
        _ => return Err(instance_refusal(&inst)),
    }
    if s.status != St::Available {
        return Err(busy(&s));
    }
    let vols = db::volumes::of_instance(c, id)?;
    let now: Vec<VolumeId> = vols.iter().map(|v| v.volume_id.clone()).collect();
    let then: Vec<VolumeId> = q::covered(c, snap)?
        .into_iter()
        .map(|c| c.volume_id)
        .collect();
    if let Some(d) = difference(&now, &then) {
        return Err(ApiError::conflict(
            ErrorCode::SnapshotMismatch,
            format!("instance {id} does not have the volumes of snapshot {snap}: {d}"),
        ));
    }
    if let Some(v) = vols.iter().find(|v| v.status != Vs::InUse) {
        return Err(ApiError::conflict(
            ErrorCode::VolumeBusy,
            format!(
                "volume {} is {}; retry when it has finished",
                v.volume_id, v.status
            ),
        ));
    }
    if !transition::<Instance>(c, id, Is::Stopped, Is::Restoring, None)? {
        return Err(instance_refusal(&load(c, id)?));
    }
    if !transition::<Snapshot>(c, snap, St::Available, St::Restoring, None)? {
        return Err(busy(&load(c, snap)?));
    }
    Ok(())
}

/// Rolls every disk of a stopped instance back to a snapshot of it: `stopped -> restoring ->
/// stopped`, each volume's data and size as they were.
pub fn restore(ctx: &Ctx, id: &InstanceId, snap: &SnapshotId) -> ApiResult<Instance> {
    ctx.ceph.ensure_up()?;
    let state = Of {
        snapshot_id: snap.clone(),
    };
    let op =
        operations::claim_and_start(ctx, &mut ctx.conn()?, RESTORE, id.as_str(), &state, |c| {
            claim_restore(c, id, snap)
        })?;
    let r = op
        .save(ctx, "rolling back the disks", &state)
        .and_then(|_| roll_back_instance(ctx, id, snap))
        .and_then(|_| load(&mut ctx.conn()?, id));
    end(ctx, op, r)
}

fn roll_back_instance(ctx: &Ctx, id: &InstanceId, snap: &SnapshotId) -> ApiResult<()> {
    let cover = q::covered(&mut *ctx.conn()?, snap)?;
    roll_back(ctx, snap, &cover, |c, msg| {
        transition::<Instance>(c, id, Is::Restoring, Is::Stopped, msg)
    })
}

/// A restore's steps once the rows are `restoring`: the rollback of each of `cover`, then the
/// sizes, the snapshot `available` and `settle` (the restored row leaves `restoring`) in one
/// transaction. A failed rollback settles the row saying so (its disks may be partly rolled
/// back; the same restore again completes it).
fn roll_back(
    ctx: &Ctx,
    snap: &SnapshotId,
    cover: &[Covered],
    settle: impl Fn(&mut DbConn, Option<&str>) -> ApiResult<bool>,
) -> ApiResult<()> {
    for c in cover {
        if let Err(e) = ctx
            .ceph
            .rollback(pool(ctx), c.volume_id.as_str(), snap.as_str())
        {
            let msg = format!(
                "the restore from snapshot {snap} stopped at volume {}: {e}; the disks may be partly rolled back: restore again",
                c.volume_id
            );
            record(ctx, "recording a failed restore", |conn| {
                conn.transaction(|conn| {
                    transition::<Snapshot>(conn, snap, St::Restoring, St::Available, None)?;
                    settle(conn, Some(&msg))
                })
            })?;
            return Err(ceph_failed(msg));
        }
    }
    record(ctx, "recording a restore", |conn| {
        conn.transaction(|conn| {
            for c in cover {
                db::volumes::set_size(conn, &c.volume_id, c.volume_size, db::now())?;
            }
            transition::<Snapshot>(conn, snap, St::Restoring, St::Available, None)?;
            settle(conn, None)
        })
    })?;
    Ok(())
}

/// Takes over a restore whose process died: an instance still `restoring` has every rollback
/// taken again.
pub fn recover_restore(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let state: Of = match state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    match record(ctx, "reading the instance", |c| {
        Ok(db::instances::get(c, &id)?.map(|i| i.status))
    }) {
        Ok(Some(Is::Restoring)) => {
            taken_over(ctx, held, roll_back_instance(ctx, &id, &state.snapshot_id))
        }
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// In the claim's transaction: the volume (locked) `available -> restoring` and the snapshot
/// `available -> restoring`, after checking that the snapshot holds the volume.
fn claim_volume_restore(c: &mut DbConn, id: &VolumeId, snap: &SnapshotId) -> ApiResult<()> {
    let v = db::volumes::lock(c, id)?.ok_or_else(|| super::not_found::<Volume>(id))?;
    let s = load::<Snapshot>(c, snap)?;
    let cover = q::covered(c, snap)?;
    if !cover.iter().any(|c| &c.volume_id == id) {
        let held: Vec<&str> = cover.iter().map(|c| c.volume_id.as_str()).collect();
        return Err(ApiError::conflict(
            ErrorCode::SnapshotMismatch,
            format!(
                "snapshot {snap} does not hold volume {id} (it holds {})",
                held.join(", ")
            ),
        ));
    }
    match v.status {
        Vs::Available => {}
        Vs::InUse | Vs::Attaching | Vs::Detaching => {
            return Err(ApiError::conflict(
                ErrorCode::VolumeInUse,
                format!(
                    "volume {id} is {} on instance {}; unmount it first (or restore the instance)",
                    v.status,
                    v.instance_id.as_ref().map_or("?", |i| i.as_str())
                ),
            ))
        }
        other => {
            return Err(ApiError::conflict(
                ErrorCode::VolumeBusy,
                format!("volume {id} is {other}; retry when it is available"),
            ))
        }
    }
    if s.status != St::Available {
        return Err(busy(&s));
    }
    if !transition::<Volume>(c, id, Vs::Available, Vs::Restoring, None)? {
        return Err(ApiError::conflict(
            ErrorCode::VolumeBusy,
            format!("volume {id} changed meanwhile; retry"),
        ));
    }
    if !transition::<Snapshot>(c, snap, St::Available, St::Restoring, None)? {
        return Err(busy(&load(c, snap)?));
    }
    Ok(())
}

/// Rolls one available volume back to a snapshot that holds it (its own, or an instance
/// snapshot it was part of): `available -> restoring -> available`, its data and size as then.
pub fn restore_volume(ctx: &Ctx, id: &VolumeId, snap: &SnapshotId) -> ApiResult<Volume> {
    ctx.ceph.ensure_up()?;
    let state = Of {
        snapshot_id: snap.clone(),
    };
    let op = operations::claim_and_start(
        ctx,
        &mut ctx.conn()?,
        RESTORE_VOLUME,
        id.as_str(),
        &state,
        |c| claim_volume_restore(c, id, snap),
    )?;
    let r = op
        .save(ctx, "rolling back the volume", &state)
        .and_then(|_| roll_back_volume(ctx, id, snap))
        .and_then(|_| load(&mut ctx.conn()?, id));
    end(ctx, op, r)
}

fn roll_back_volume(ctx: &Ctx, id: &VolumeId, snap: &SnapshotId) -> ApiResult<()> {
    let cover: Vec<Covered> = q::covered(&mut *ctx.conn()?, snap)?
        .into_iter()
        .filter(|c| &c.volume_id == id)
        .collect();
    roll_back(ctx, snap, &cover, |c, msg| {
        transition::<Volume>(c, id, Vs::Restoring, Vs::Available, msg)
    })
}

/// Takes over a volume restore whose process died: a volume still `restoring` is rolled back
/// again.
pub fn recover_volume_restore(ctx: &Ctx, held: Op, op: &Operation) {
    let id = VolumeId::new(op.resource_id.as_str());
    let state: Of = match state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    match record(ctx, "reading the volume", |c| {
        Ok(db::volumes::get(c, &id)?.map(|v| v.status))
    }) {
        Ok(Some(Vs::Restoring)) => {
            taken_over(ctx, held, roll_back_volume(ctx, &id, &state.snapshot_id))
        }
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// Start-up repair: a snapshot `deleting` with no operation is deleted to the end; the others
/// are their operations' (the takeover settles them).
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for row in q::stale_in_status(&mut conn, St::Deleting, cutoff)? {
        if db::operations::is_busy(&mut conn, row.snapshot_id.as_str())? {
            continue;
        }
        if remove(ctx, &row.snapshot_id, St::Error).is_ok() {
            fixed += 1;
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::difference;
    use crate::model::VolumeId;

    #[test]
    fn differences_name_both_sides() {
        let v = |s: &str| VolumeId::new(s);
        assert_eq!(difference(&[v("a"), v("b")], &[v("b"), v("a")]), None);
        assert_eq!(
            difference(&[v("a"), v("c")], &[v("a"), v("b")]).unwrap(),
            "not attached now but in the snapshot: b; attached now but not in the snapshot: c"
        );
    }
}
