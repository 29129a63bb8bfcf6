//! Update: `instance_name` and `describe` at any time (the row and the domain's `<title>` /
//! `<description>`), `cpu` and `memory` only while the instance is stopped (the persistent
//! definition; counted against the project's quota).
//!
//! The vCPU and memory change happens under the row's lock (`SELECT ... FOR UPDATE`, a few ms
//! of libvirt config calls on a stopped domain): a turnon's compare-and-set waits for it, so the
//! domain never starts between the check and the change. libvirt is changed first, the row
//! second: a libvirt refusal changes nothing.

use super::create::bounded;
use super::{busy, in_error, MAX_CPU, MAX_MEMORY_MIB, MIN_MEMORY_MIB};
use crate::db::instances::{Instance, InstanceUpdate};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{InstanceId, InstanceStatus as St};
use crate::service::quotas::{self, Ask};
use crate::service::{load, not_found, Ctx};

/// What an update changes; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct Changes {
    pub instance_name: Option<String>,
    pub describe: Option<String>,
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
}

pub fn update(ctx: &Ctx, id: &InstanceId, ch: Changes) -> ApiResult<Instance> {
    if let Some(cpu) = ch.cpu {
        bounded("cpu", cpu.into(), 1, MAX_CPU.into(), "")?;
    }
    if let Some(m) = ch.memory {
        bounded("memory", m, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB")?;
    }
    let mut conn = ctx.conn()?;
    let row = load::<Instance>(&mut conn, id)?;
    let reshape =
        ch.cpu.is_some_and(|c| c != row.cpu) || ch.memory.is_some_and(|m| m != row.memory);
    if reshape {
        shape(ctx, &mut conn, id, &ch)?;
    }
    let renamed = ch
        .instance_name
        .as_ref()
        .is_some_and(|n| *n != row.instance_name)
        || ch.describe.as_ref().is_some_and(|d| *d != row.describe);
    if renamed {
        let title = ch.instance_name.as_deref().unwrap_or(&row.instance_name);
        let description = ch.describe.as_deref().unwrap_or(&row.describe);
        // A create still before its define writes the row's (new) text into the domain.
        match crate::service::hosts::of(ctx, &row)?.set_title(id.as_str(), title, description) {
            Ok(()) => {}
            Err(e) if e.is_no_domain() => {}
            Err(e) => {
                return Err(ApiError::unavailable(
                    Backend::Libvirt,
                    format!("could not rename instance {id}: {}", e.message()),
                ))
            }
        }
        let changes = InstanceUpdate {
            instance_name: ch.instance_name,
            describe: ch.describe,
            update_time: Some(db::now()),
            ..Default::default()
        };
        if db::instances::update(&mut conn, id, &changes)? == 0 {
            return Err(not_found::<Instance>(id));
        }
    }
    load(&mut conn, id)
}

/// The vCPU and memory change of a stopped instance, under its row lock and its quota.
fn shape(ctx: &Ctx, conn: &mut DbConn, id: &InstanceId, ch: &Changes) -> ApiResult<()> {
    quotas::in_transaction(conn, |c| {
        let row = db::instances::lock(c, id)?.ok_or_else(|| not_found::<Instance>(id))?;
        let why = |s: St| {
            format!("instance {id} is {s}; cpu and memory change only while it is stopped: turn it off first")
        };
        match row.status {
            St::Stopped => {}
            s @ St::Running => return Err(ApiError::conflict(ErrorCode::InstanceRunning, why(s))),
            s @ St::Paused => return Err(ApiError::conflict(ErrorCode::InstancePaused, why(s))),
            St::Error => return Err(in_error(id)),
            _ => return Err(busy(&row)),
        }
        let cpu = ch.cpu.unwrap_or(row.cpu);
        let memory = ch.memory.unwrap_or(row.memory);
        let ask = Ask {
            vcpus: u64::from(cpu.saturating_sub(row.cpu)),
            memory_mib: memory.saturating_sub(row.memory),
            ..Default::default()
        };
        quotas::admit(c, &row.project_id, &ask)?;
        crate::service::placement::resize(
            ctx,
            c,
            &row.host_id,
            (row.cpu, row.memory),
            (cpu, memory),
        )?;
        let hv = crate::service::hosts::of(ctx, &row)?;
        hv.set_shape(id.as_str(), cpu, memory).map_err(|e| {
            if e.is_no_domain() {
                ApiError::conflict(ErrorCode::InstanceError, super::vanished_message(id))
            } else {
                ApiError::unavailable(
                    Backend::Libvirt,
                    format!(
                        "could not change the vCPUs and memory of instance {id}: {}",
                        e.message()
                    ),
                )
            }
        })?;
        let changes = InstanceUpdate {
            cpu: Some(cpu),
            memory: Some(memory),
            update_time: Some(db::now()),
            ..Default::default()
        };
        db::instances::update(c, id, &changes)?;
        Ok(())
    })
}
