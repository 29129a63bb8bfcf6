//! Start and stop: `stopped -> starting -> running` and `running -> stopping -> stopped`, each a
//! compare-and-set first, then libvirt, then the truth libvirt reports.

use super::{busy, in_error, set_status};
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::DbConn;
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{InstanceId, InstanceStatus as St};
use crate::service::operations::{self, Op};
use crate::service::{load, record, Ctx};
use crate::virt::{Power, Shutdown};
use std::time::Duration;

/// Claims the instance for a power change: it must be `from` (else the 409 that says why), and
/// this request must win the compare-and-set to `to`.
fn claim(conn: &mut DbConn, id: &InstanceId, from: St, to: St) -> ApiResult<()> {
    let inst = load::<Instance>(conn, id)?;
    match inst.status {
        s if s == from => {}
        St::Running => {
            return Err(ApiError::conflict(
                ErrorCode::InstanceRunning,
                format!("instance {id} is already running"),
            ))
        }
        St::Stopped => {
            return Err(ApiError::conflict(
                ErrorCode::InstanceStopped,
                format!("instance {id} is already stopped"),
            ))
        }
        St::Error => return Err(in_error(id)),
        _ => return Err(busy(&inst)),
    }
    if !set_status(conn, id, from, to, None)? {
        return Err(busy(&load(conn, id)?));
    }
    Ok(())
}

/// Claims the instance for a power change and starts its operation (one transaction).
fn begin(ctx: &Ctx, id: &InstanceId, from: St, to: St, kind: &str) -> ApiResult<Op> {
    operations::claim_and_start(ctx, &mut ctx.conn()?, kind, id.as_str(), &(), |c| {
        claim(c, id, from, to)
    })
}

/// Takes over a turnon or turnoff whose process died: the row takes what libvirt says.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let from = if op.kind == super::TURNON {
        St::Starting
    } else {
        St::Stopping
    };
    let to = match ctx.hv.power(id.as_str()) {
        Ok(Some(Power::Running)) => St::Running,
        Ok(_) => St::Stopped,
        Err(e) => {
            // Not settled: the claim's lease runs out and a later pass tries again.
            log::warn!("operation {}: libvirt: {e}", op.operation_id);
            return;
        }
    };
    let r = record(ctx, "settling a power change", |c| {
        set_status(c, &id, from, to, None)
    });
    match r {
        Ok(_) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

pub fn turnon(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    let op = begin(ctx, id, St::Stopped, St::Starting, super::TURNON)?;
    let r = start(ctx, &op, id);
    op.conclude(ctx, r)
}

fn start(ctx: &Ctx, op: &Op, id: &InstanceId) -> ApiResult<Instance> {
    op.save(ctx, "starting the domain", &())?;
    let started = ctx.hv.start(id.as_str()).or_else(|e| {
        // Started behind our back: the truth is "running".
        match ctx.hv.power(id.as_str()) {
            Ok(Some(Power::Running)) => Ok(()),
            _ => Err(e),
        }
    });
    match started {
        Ok(()) => record(ctx, "recording a turnon", |c| {
            set_status(c, id, St::Starting, St::Running, None)?;
            load(c, id)
        }),
        Err(e) if e.is_no_domain() => Err(vanished(ctx, id, St::Starting)),
        Err(e) => {
            let msg = format!("the instance could not start: {}", e.message());
            record(ctx, "recording a failed turnon", |c| {
                set_status(c, id, St::Starting, St::Stopped, Some(&msg))
            })?;
            Err(ApiError::unavailable(Backend::Libvirt, msg))
        }
    }
}

/// `running -> stopping -> stopped`. No MySQL connection is held while the guest shuts down
/// (up to `shutdown_timeout_secs`): a few slow guests must not starve everyone else's requests.
pub fn turnoff(ctx: &Ctx, id: &InstanceId, force: bool) -> ApiResult<Instance> {
    let op = begin(ctx, id, St::Running, St::Stopping, super::TURNOFF)?;
    let r = stop(ctx, &op, id, force);
    op.conclude(ctx, r)
}

/// The instance's domain is gone from libvirt (undefined behind our back): not an outage. The
/// row goes `error` saying so, and the answer is the 409 that says what to do.
fn vanished(ctx: &Ctx, id: &InstanceId, from: St) -> ApiError {
    let msg = super::vanished_message(id);
    if let Err(e) = record(ctx, "recording a vanished domain", |c| {
        set_status(c, id, from, St::Error, Some(&msg))
    }) {
        log::error!("instance {id}: cannot record its vanished domain: {e}");
    }
    ApiError::conflict(ErrorCode::InstanceError, msg)
}

fn stop(ctx: &Ctx, op: &Op, id: &InstanceId, force: bool) -> ApiResult<Instance> {
    op.save(ctx, "shutting down the domain", &())?;
    let lv = &ctx.cfg.libvirt;
    let timeout = Duration::from_secs(lv.shutdown_timeout_secs);
    let retry = Duration::from_secs(lv.shutdown_retry_secs);
    let name = id.as_str();
    let outcome = match ctx.hv.power(name) {
        Ok(None) => return Err(vanished(ctx, id, St::Stopping)),
        // Powered off behind our back (from inside the guest): the truth is "stopped".
        Ok(Some(Power::Stopped)) => Ok(Shutdown::Stopped),
        _ if force => ctx.hv.force_off(name).map(|_| Shutdown::Stopped),
        _ => ctx.hv.shutdown(name, timeout, retry),
    };
    let settle = |to: St| {
        record(ctx, "recording a turnoff", |c| {
            set_status(c, id, St::Stopping, to, None)?;
            load(c, id)
        })
    };
    match outcome {
        Ok(Shutdown::Stopped) => settle(St::Stopped),
        Ok(Shutdown::StillRunning) => {
            settle(St::Running)?;
            Err(ApiError::conflict(
                ErrorCode::InstanceStillRunning,
                format!(
                    "instance {id} did not power off within {}s of ACPI shutdown presses every {}s; retry, or use force=true to cut its power",
                    timeout.as_secs(),
                    retry.as_secs()
                ),
            ))
        }
        Err(e) => {
            let truth = match ctx.hv.power(name) {
                Ok(Some(Power::Running)) | Err(_) => St::Running,
                Ok(_) => St::Stopped,
            };
            settle(truth)?;
            Err(ApiError::unavailable(
                Backend::Libvirt,
                format!("could not stop instance {id}: {}", e.message()),
            ))
        }
    }
}
