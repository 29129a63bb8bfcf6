//! Destroy: `running | paused | stopped | error -> destroying`, then power off, undefine, remove
//! what instance create made for the instance (root disk, the volume from `data_volume_size`,
//! the NIC made when none was given), give back the volumes and NICs that existed before and
//! were attached (or delete them too with `delete_attached`), drop the row. A failed step leaves the instance `error` saying where it stopped; a retry goes on. A
//! step that failed while libvirt or Ceph is out leaves it `destroying` instead: the takeover
//! carries on once the backend answers.
//!
//! It runs as an operation: every step is safe to take again, so when this process dies a
//! takeover (`recover`) simply takes the remaining steps.

use super::{busy, console_path, guest, set_status};
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use crate::model::{InstanceId, InstanceStatus as St};
use crate::service::health::outage;
use crate::service::operations::{self, state_of, Op};
use crate::service::{load, record, Ctx};
use diesel::Connection;
use serde::{Deserialize, Serialize};

/// What a destroy removed, for the answer.
pub struct Destroyed {
    pub released_volumes: usize,
    pub released_nics: usize,
    pub deleted_volumes: usize,
    pub deleted_nics: usize,
}

/// The saved state of a destroy operation.
#[derive(Serialize, Deserialize)]
struct DestroyState {
    delete_attached: bool,
}

pub fn destroy(ctx: &Ctx, id: &InstanceId, delete_attached: bool) -> ApiResult<Destroyed> {
    ctx.ceph.ensure_up()?;
    let state = DestroyState { delete_attached };
    let op = operations::claim_and_start(
        ctx,
        &mut ctx.conn()?,
        super::DESTROY,
        id.as_str(),
        &state,
        |c| claim(c, id, delete_attached),
    )?;
    conclude(ctx, id, op, &state)
}

/// Takes the steps and records how it ended, in the row and in the operation.
fn conclude(ctx: &Ctx, id: &InstanceId, op: Op, state: &DestroyState) -> ApiResult<Destroyed> {
    match steps(ctx, &op, id, state) {
        Ok(d) => {
            op.finish(ctx, Ok(()));
            Ok(d)
        }
        // A failed save: the row stays `destroying` and the takeover carries on.
        Err((_, e)) if op.is_halted() => {
            op.finish(ctx, Err(&e.to_string()));
            Err(e)
        }
        // A backend is out: the row stays `destroying` and the takeover carries on once it
        // answers (every step is safe to take again).
        Err((step, e)) if let Some(b) = outage(ctx) => {
            let msg = format!(
                "destroy paused while {step}: {e}; it goes on by itself once {} answers again",
                b.name()
            );
            op.abandon(ctx, &msg);
            Err(ApiError::unavailable(b, msg))
        }
        Err((step, e)) => {
            let msg = format!("destroy stopped while {step}: {e}; retry the destroy");
            let recorded = record(ctx, "recording a failed destroy", |c| {
                set_status(c, id, St::Destroying, St::Error, Some(&msg))
            });
            if let Err(e2) = recorded {
                log::error!("instance {id}: cannot record the failed destroy: {e2}");
            }
            op.finish(ctx, Err(&msg));
            Err(match e {
                ApiError::Unavailable { backend, .. } => ApiError::unavailable(backend, msg),
                _ => ApiError::Internal(msg),
            })
        }
    }
}

/// Takes over a destroy whose process died: a `destroying` instance is destroyed to the end.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let state: DestroyState = match state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    match record(ctx, "reading the instance", |c| {
        Ok(db::instances::get(c, &id)?.map(|i| i.status))
    }) {
        Ok(Some(St::Destroying)) if outage(ctx).is_some() => {
            let why = op.error_message.as_deref().unwrap_or("a backend is out");
            held.abandon(ctx, why);
        }
        Ok(Some(St::Destroying)) => {
            let _ = conclude(ctx, &id, held, &state);
        }
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!(
            "operation {}: cannot read instance {id}: {e}",
            op.operation_id
        ),
    }
}

/// `running | paused | stopped | error -> destroying`, or the 409 that says why not (also
/// when snapshots of the instance, or of a volume the destroy deletes, exist).
fn claim(conn: &mut DbConn, id: &InstanceId, delete_attached: bool) -> ApiResult<()> {
    let inst = load::<Instance>(conn, id)?;
    let from = inst.status;
    if !(from.is_settled() || from == St::Error) {
        return Err(busy(&inst));
    }
    let deleted: Vec<_> = db::volumes::of_instance(conn, id)?
        .into_iter()
        .filter(|v| v.is_root || v.delete_with_instance || delete_attached)
        .map(|v| v.volume_id)
        .collect();
    crate::service::snapshots::check_instance_free(conn, id, &deleted)?;
    if !set_status(conn, id, from, St::Destroying, None)? {
        return Err(busy(&load(conn, id)?));
    }
    Ok(())
}

type Failed = (&'static str, ApiError);

fn at<E: Into<ApiError>>(step: &'static str) -> impl FnOnce(E) -> Failed {
    move |e| (step, e.into())
}

/// The steps, each MySQL write on its own connection (none held across libvirt or Ceph), each
/// saved before it is taken.
fn steps(ctx: &Ctx, op: &Op, id: &InstanceId, state: &DestroyState) -> Result<Destroyed, Failed> {
    let delete_attached = state.delete_attached;
    let name = id.as_str();
    let step = |what: &'static str| op.save(ctx, what, state).map_err(at(what));
    step("stopping the domain")?;
    // Claimed: its host cannot change while this runs.
    let hv = crate::service::hosts::of_id(ctx, id).map_err(at("stopping the domain"))?;
    hv.force_off(name).map_err(at("stopping the domain"))?;
    step("undefining the domain")?;
    hv.undefine(name).map_err(at("undefining the domain"))?;
    step("removing disks")?;
    let deleted_volumes = remove_disks(ctx, id, delete_attached)?;
    step("releasing volumes and NICs")?;
    let now = db::now();
    // The rest is MySQL only: one transaction, so nothing is released twice or half.
    let (released_volumes, released_nics, deleted_nics) =
        record(ctx, "releasing what the instance held", |c| {
            c.transaction(|c| {
                let vols = db::volumes::release_data_volumes(c, id, now)?;
                let (released, deleted) = if delete_attached {
                    (0, db::nics::delete_all_of(c, id)?)
                } else {
                    let made = db::nics::delete_made_for(c, id)?;
                    (db::nics::release_all_of(c, id, now)?, made)
                };
                if let Some(i) = db::instances::get(c, id)? {
                    if db::instances::delete_in_status(c, id, St::Destroying)? {
                        db::hosts::release(c, &i.host_id, i.cpu, i.memory)?;
                    }
                }
                Ok((vols, released, deleted))
            })
        })
        .map_err(at(
            "releasing volumes and NICs and deleting the instance row",
        ))?;
    let _ = std::fs::remove_file(console_path(ctx, id));
    Ok(Destroyed {
        released_volumes,
        released_nics,
        deleted_volumes,
        deleted_nics,
    })
}

/// Removes the root disk, the data volumes instance create made (`delete_with_instance`), and
/// with `delete_attached` every other data volume, from Ceph and MySQL; returns how many data
/// volumes went.
fn remove_disks(ctx: &Ctx, id: &InstanceId, delete_attached: bool) -> Result<usize, Failed> {
    let pool = &ctx.cfg.ceph.volumes_pool;
    let volumes = record(ctx, "reading volumes", |c| {
        Ok(db::volumes::of_instance(c, id)?)
    })
    .map_err(at("reading volumes"))?;
    guest::remove(ctx, id).map_err(at("removing the config drive from Ceph"))?;
    let mut deleted = 0;
    for v in volumes
        .iter()
        .filter(|v| v.is_root || v.delete_with_instance || delete_attached)
    {
        ctx.ceph
            .remove_image(pool, v.volume_id.as_str())
            .map_err(at("removing a disk from Ceph"))?;
        record(ctx, "deleting a volume row", |c| {
            Ok(db::volumes::delete(c, &v.volume_id)?)
        })
        .map_err(at("deleting a volume row"))?;
        if !v.is_root {
            deleted += 1;
        }
    }
    Ok(deleted)
}
