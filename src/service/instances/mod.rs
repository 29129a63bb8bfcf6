//! Instances: a libvirt domain booting by BIOS from a copy-on-write RBD clone of its image.
//!
//! By concern: `create` checks and reserves, then `build` takes the steps in the background;
//! `power` starts and stops; `destroy` removes; `console` reads the serial log; `guest` makes
//! the config drive (NoCloud `cidata`) a new instance boots with. Reading and start-up repair
//! are here.

pub mod build;
mod console;
mod create;
pub mod destroy;
pub mod guest;
pub mod migrate;
pub mod power;
mod update;

/// The operation kind of an instance create (service::operations).
pub const CREATE: &str = "instance.create";
/// The operation kind of an instance destroy.
pub const DESTROY: &str = "instance.destroy";
/// The operation kinds of turnon and turnoff.
pub const TURNON: &str = "instance.turnon";
pub const TURNOFF: &str = "instance.turnoff";
/// The operation kinds of pause, resume, reboot and reset.
pub const PAUSE: &str = "instance.pause";
pub const RESUME: &str = "instance.resume";
pub const REBOOT: &str = "instance.reboot";
pub const RESET: &str = "instance.reset";

pub use console::console;
pub use create::{create, NewInstance};
pub use destroy::{destroy, Destroyed};
pub use guest::GuestConfig;
pub use power::{pause, reboot, reset, resume, turnoff, turnon, Rebooted};
pub use update::{update, Changes};

use super::hosts::HostState;
use super::{load, transition, Ctx, Resource};
use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::volumes::Volume;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{InstanceId, InstanceStatus as St};
use crate::virt::Power;
use std::collections::HashMap;

/// Name of the protected snapshot of an image that root disks are cloned from.
pub const BASE_SNAPSHOT: &str = "api-web-base";
pub const MAX_CPU: u32 = 64;
pub const MIN_MEMORY_MIB: u64 = 64;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
pub const MAX_ROOT_GIB: u64 = 65536;

impl Resource for Instance {
    const NOT_FOUND: ErrorCode = ErrorCode::InstanceNotFound;
}

/// An instance with what hangs from it.
pub struct Detail {
    pub instance: Instance,
    pub host: HostState,
    pub image: Option<Image>,
    pub volumes: Vec<Volume>,
    pub nics: Vec<Nic>,
}

/// An instance of a list, with its volumes and NICs.
pub struct Listed {
    pub instance: Instance,
    pub host: HostState,
    pub volumes: Vec<Volume>,
    pub nics: Vec<Nic>,
}

pub fn console_path(ctx: &Ctx, id: &InstanceId) -> String {
    format!(
        "{}/{id}.console.log",
        ctx.cfg.libvirt.console_log_dir.trim_end_matches('/')
    )
}

/// 409 for an instance in a transitional status.
fn busy(inst: &Instance) -> ApiError {
    ApiError::conflict(
        ErrorCode::InstanceBusy,
        format!(
            "instance {} is {}; retry when it has finished",
            inst.instance_id, inst.status
        ),
    )
}

fn in_error(id: &InstanceId) -> ApiError {
    ApiError::conflict(
        ErrorCode::InstanceError,
        format!("instance {id} is in error; destroy it"),
    )
}

/// Moves an instance between statuses, checked against its state machine.
fn set_status(
    conn: &mut DbConn,
    id: &InstanceId,
    from: St,
    to: St,
    err: Option<&str>,
) -> ApiResult<bool> {
    transition::<Instance>(conn, id, from, to, err)
}

pub fn get(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    load(&mut ctx.conn()?, id)
}

/// A page of instances with the volumes and NICs of each (two more queries, not one per row).
pub fn list(
    ctx: &Ctx,
    filter: &db::ListFilter<St>,
    paging: super::Paging,
) -> ApiResult<(i64, Vec<Listed>)> {
    let mut conn = ctx.conn()?;
    let (total, rows) = db::list::<Instance>(&mut conn, filter, paging.to_db())?;
    let ids: Vec<InstanceId> = rows.iter().map(|r| r.instance_id.clone()).collect();
    let mut vols: HashMap<InstanceId, Vec<Volume>> = HashMap::new();
    for v in db::volumes::of_instances(&mut conn, &ids)? {
        if let Some(i) = v.instance_id.clone() {
            vols.entry(i).or_default().push(v);
        }
    }
    let mut nics: HashMap<InstanceId, Vec<Nic>> = HashMap::new();
    for n in db::nics::of_instances(&mut conn, &ids)? {
        if let Some(i) = n.instance_id.clone() {
            nics.entry(i).or_default().push(n);
        }
    }
    let hosts: HashMap<_, _> = db::hosts::all(&mut conn)?
        .into_iter()
        .map(|h| (h.host_id.clone(), h))
        .collect();
    let out = rows
        .into_iter()
        .map(|r| Listed {
            host: HostState::of(hosts.get(&r.host_id)),
            volumes: vols.remove(&r.instance_id).unwrap_or_default(),
            nics: nics.remove(&r.instance_id).unwrap_or_default(),
            instance: r,
        })
        .collect();
    Ok((total, out))
}

pub fn detail(ctx: &Ctx, id: &InstanceId) -> ApiResult<Detail> {
    let mut conn = ctx.conn()?;
    let instance = load::<Instance>(&mut conn, id)?;
    let image = db::images::get(&mut conn, &instance.image_id)?;
    let volumes = db::volumes::of_instance(&mut conn, id)?;
    let nics = db::nics::of_instance(&mut conn, id)?;
    let host = HostState::of(db::hosts::get(&mut conn, &instance.host_id)?.as_ref());
    Ok(Detail {
        instance,
        host,
        image,
        volumes,
        nics,
    })
}

/// Start-up repair of instances whose work a crash interrupted (untouched for `older_than_secs`):
/// `creating` and `destroying` become `error` (a destroy then cleans up whatever exists);
/// a power change in flight (`starting`, `stopping`, `pausing`, ...) takes the state libvirt reports.
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for (from, msg) in [
        (
            St::Creating,
            "api-web stopped while creating this instance; destroy it to clean up",
        ),
        (
            St::Destroying,
            "api-web stopped while destroying this instance; retry the destroy",
        ),
    ] {
        for row in db::instances::stale_in_status(&mut conn, from, cutoff)? {
            if set_status(&mut conn, &row.instance_id, from, St::Error, Some(msg))? {
                log::warn!("reconcile: instance {} {from} -> error", row.instance_id);
                fixed += 1;
            }
        }
    }
    for &from in <St as crate::model::Lifecycle>::ALL
        .iter()
        .filter(|s| s.is_power_change())
    {
        for row in db::instances::stale_in_status(&mut conn, from, cutoff)? {
            let hv = crate::service::hosts::of(ctx, &row)?;
            let to = match hv.power(row.instance_id.as_str())? {
                Some(p) => power::status_of(p),
                None => St::Stopped,
            };
            if set_status(&mut conn, &row.instance_id, from, to, None)? {
                log::warn!("reconcile: instance {} {from} -> {to}", row.instance_id);
                fixed += 1;
            }
        }
    }
    Ok(fixed)
}

/// What an instance whose domain was removed outside api-web says.
pub(crate) fn vanished_message(id: &InstanceId) -> String {
    format!(
        "the domain of instance {id} no longer exists in libvirt (removed outside api-web); destroy the instance"
    )
}

/// Where a settled row (`running`, `paused` or `stopped`) goes when libvirt reports `power` (`None`: no
/// such domain), with its message; `None` when it already agrees.
pub(crate) fn follow(
    id: &InstanceId,
    from: St,
    power: Option<Power>,
) -> Option<(St, Option<String>)> {
    match power {
        None => Some((St::Error, Some(vanished_message(id)))),
        Some(p) if power::status_of(p) != from => Some((power::status_of(p), None)),
        Some(_) => None,
    }
}

/// The fast path of reconciliation's power comparison (`reconcile::pass`), for one instance that a libvirt event named: a settled row that
/// no operation holds takes the power state libvirt reports now (read after the row, so a
/// concurrent turnon/turnoff makes the compare-and-set fail rather than be undone). Returns
/// whether the row changed; an id with no row (another database's domain) changes nothing.
pub fn observe_one(ctx: &Ctx, id: &InstanceId) -> ApiResult<bool> {
    let mut conn = ctx.conn()?;
    let Some(row) = db::instances::get(&mut conn, id)? else {
        return Ok(false);
    };
    let from = row.status;
    if !from.is_settled() || crate::db::operations::is_busy(&mut conn, id.as_str())? {
        return Ok(false);
    }
    drop(conn);
    let hv = crate::service::hosts::of(ctx, &row)?;
    let power = hv.power(id.as_str())?;
    // Gone from its host: perhaps moved to another one outside api-web.
    if power.is_none() {
        if let Some((h, p)) = crate::service::hosts::find_elsewhere(ctx, &row)? {
            return crate::service::hosts::record_found(ctx, &row, &h, p);
        }
    }
    let Some((to, msg)) = follow(id, from, power) else {
        return Ok(false);
    };
    let changed = crate::service::record(ctx, "recording a power change", |c| {
        set_status(c, id, from, to, msg.as_deref())
    })?;
    if changed {
        log::warn!("libvirt event: instance {id} {from} -> {to}: libvirt says so");
    }
    Ok(changed)
}
