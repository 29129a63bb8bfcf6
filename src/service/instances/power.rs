//! Power: turnon, turnoff, pause, resume, reboot and reset. Each claims the instance with a
//! compare-and-set into its transitional status (`starting`, `stopping`, `pausing`, `resuming`,
//! `rebooting`) inside an operation, asks libvirt, and then records what libvirt reports, not
//! what was asked: a guest that powered itself off meanwhile is `stopped`, whatever the call.

use super::{busy, in_error, set_status};
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::DbConn;
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{InstanceId, InstanceStatus as St};
use crate::service::operations::{self, Op};
use crate::service::{hosts, load, record, Ctx};
use crate::virt::{Hypervisor, Power, Shutdown, VirtError};
use std::time::{Duration, Instant};

/// One power action: the statuses it starts from, the status that claims the instance while
/// it runs, its operation kind and the one step it saves before calling libvirt.
pub struct Action {
    pub verb: &'static str,
    pub kind: &'static str,
    pub from: &'static [St],
    pub via: St,
    pub step: &'static str,
}

pub const TURNON: Action = Action {
    verb: "turnon",
    kind: super::TURNON,
    from: &[St::Stopped],
    via: St::Starting,
    step: "starting the domain",
};
pub const TURNOFF: Action = Action {
    verb: "turnoff",
    kind: super::TURNOFF,
    from: &[St::Running, St::Paused],
    via: St::Stopping,
    step: "shutting down the domain",
};
pub const PAUSE: Action = Action {
    verb: "pause",
    kind: super::PAUSE,
    from: &[St::Running],
    via: St::Pausing,
    step: "suspending the domain",
};
pub const RESUME: Action = Action {
    verb: "resume",
    kind: super::RESUME,
    from: &[St::Paused],
    via: St::Resuming,
    step: "resuming the domain",
};
pub const REBOOT: Action = Action {
    verb: "reboot",
    kind: super::REBOOT,
    from: &[St::Running],
    via: St::Rebooting,
    step: "rebooting the domain",
};
pub const RESET: Action = Action {
    verb: "reset",
    kind: super::RESET,
    from: &[St::Running],
    via: St::Rebooting,
    step: "resetting the domain",
};

/// Every power action (their kinds are what `recover` takes over).
pub const ACTIONS: &[&Action] = &[&TURNON, &TURNOFF, &PAUSE, &RESUME, &REBOOT, &RESET];

/// The status a settled row takes for what libvirt reports.
pub(crate) fn status_of(p: Power) -> St {
    match p {
        Power::Running => St::Running,
        Power::Paused => St::Paused,
        Power::Stopped => St::Stopped,
    }
}

/// Claims the instance for `a`: it must be in one of `a.from` (else the 409 that says why), and
/// this request must win the compare-and-set to `a.via`.
fn claim(conn: &mut DbConn, id: &InstanceId, a: &Action) -> ApiResult<()> {
    let inst = load::<Instance>(conn, id)?;
    let s = inst.status;
    if !a.from.contains(&s) {
        let wanted = a
            .from
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let msg = format!("instance {id} is {s}; {} needs it {wanted}", a.verb);
        return Err(match s {
            St::Running => ApiError::conflict(ErrorCode::InstanceRunning, msg),
            St::Stopped => ApiError::conflict(ErrorCode::InstanceStopped, msg),
            St::Paused => ApiError::conflict(ErrorCode::InstancePaused, msg),
            St::Error => in_error(id),
            _ => busy(&inst),
        });
    }
    if !set_status(conn, id, s, a.via, None)? {
        return Err(busy(&load(conn, id)?));
    }
    Ok(())
}

/// Claims the instance for `a` and starts its operation (one transaction).
fn begin(ctx: &Ctx, id: &InstanceId, a: &Action) -> ApiResult<Op> {
    operations::claim_and_start(ctx, &mut ctx.conn()?, a.kind, id.as_str(), &(), |c| {
        claim(c, id, a)
    })
}

/// Takes over a power action whose process died: a row still in a power change takes what
/// libvirt says.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let r = (|| -> ApiResult<()> {
        let from = load::<Instance>(&mut ctx.conn()?, &id)?.status;
        if !from.is_power_change() {
            return Ok(());
        }
        let power = hosts::of_id(ctx, &id)?.power(id.as_str()).map_err(|e| {
            ApiError::unavailable(Backend::Libvirt, format!("libvirt: {}", e.message()))
        })?;
        let (to, msg) = match power {
            Some(p) => (status_of(p), None),
            None => (St::Error, Some(super::vanished_message(&id))),
        };
        record(ctx, "settling a power change", |c| {
            set_status(c, &id, from, to, msg.as_deref())
        })?;
        Ok(())
    })();
    match r {
        Ok(()) => held.finish(ctx, Ok(())),
        // Not settled: the claim's lease runs out and a later pass tries again.
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// Runs `a` on the instance: the claim, then `act` (which returns how the action went, with the
/// domain's power now known), then the row takes what libvirt reports.
fn run(
    ctx: &Ctx,
    id: &InstanceId,
    a: &Action,
    act: impl FnOnce(&Hypervisor, &str) -> ApiResult<()>,
) -> ApiResult<Instance> {
    let op = begin(ctx, id, a)?;
    let r = (|| {
        // Claimed: its host cannot change while this runs.
        let hv = hosts::of_id(ctx, id)?;
        op.save(ctx, a.step, &())?;
        let name = id.as_str();
        let done = match hv.power(name) {
            Ok(None) => return Err(vanished(ctx, id, a.via)),
            Ok(Some(_)) => act(&hv, name),
            // libvirt does not answer: nothing was asked of it; the row goes back (settle).
            Err(e) => Err(libvirt(e)),
        };
        // A call libvirt refused stays on the row for the user to read (`error_message`).
        let said = done
            .as_ref()
            .err()
            .filter(|e| e.code().status() == 503)
            .map(|e| e.to_string());
        settle(ctx, &hv, id, a, said.as_deref())?;
        done?;
        load(&mut ctx.conn()?, id)
    })();
    op.conclude(ctx, r)
}

/// The row leaves `a.via` for what libvirt reports now (where the action started when libvirt
/// cannot say: the next reconciliation pass corrects it).
fn settle(
    ctx: &Ctx,
    hv: &Hypervisor,
    id: &InstanceId,
    a: &Action,
    said: Option<&str>,
) -> ApiResult<()> {
    let via = a.via;
    let (to, msg) = match hv.power(id.as_str()) {
        Ok(Some(p)) => (status_of(p), said.map(str::to_string)),
        Ok(None) => (St::Error, Some(super::vanished_message(id))),
        Err(_) => (a.from[0], None),
    };
    record(ctx, "recording a power change", |c| {
        set_status(c, id, via, to, msg.as_deref())
    })?;
    Ok(())
}

fn libvirt(e: VirtError) -> ApiError {
    ApiError::unavailable(Backend::Libvirt, format!("libvirt: {}", e.message()))
}

/// The 503 of a libvirt call of `a` that failed.
fn refused(id: &InstanceId, a: &Action, e: VirtError) -> ApiError {
    ApiError::unavailable(
        Backend::Libvirt,
        format!("could not {} instance {id}: {}", a.verb, e.message()),
    )
}

/// A libvirt call of `a` that failed: unless the domain already is where `a` leads (done
/// behind our back), its 503.
fn failed(
    hv: &Hypervisor,
    id: &InstanceId,
    a: &Action,
    e: VirtError,
    goal: Power,
) -> ApiResult<()> {
    if hv.power(id.as_str()).ok().flatten() == Some(goal) {
        return Ok(());
    }
    Err(refused(id, a, e))
}

pub fn turnon(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    run(ctx, id, &TURNON, |hv, name| {
        hv.start(name)
            .or_else(|e| failed(hv, id, &TURNON, e, Power::Running))
    })
}

/// `running | paused -> stopping -> stopped`. A paused guest cannot hear the ACPI button, so it
/// is resumed first (unless `force`). No MySQL connection is held while the guest shuts down
/// (up to `shutdown_timeout_secs`): a few slow guests must not starve everyone else's requests.
pub fn turnoff(ctx: &Ctx, id: &InstanceId, force: bool) -> ApiResult<Instance> {
    let lv = &ctx.cfg.libvirt;
    let timeout = Duration::from_secs(lv.shutdown_timeout_secs);
    let retry = Duration::from_secs(lv.shutdown_retry_secs);
    run(ctx, id, &TURNOFF, |hv, name| {
        let power = hv.power(name).map_err(libvirt)?;
        let outcome = match power {
            // Powered off behind our back (from inside the guest): the truth is "stopped".
            None | Some(Power::Stopped) => Ok(Shutdown::Stopped),
            _ if force => hv.force_off(name).map(|_| Shutdown::Stopped),
            Some(Power::Paused) => hv
                .resume(name)
                .and_then(|_| hv.shutdown(name, timeout, retry)),
            Some(Power::Running) => hv.shutdown(name, timeout, retry),
        };
        match outcome {
            Ok(Shutdown::Stopped) => Ok(()),
            Ok(Shutdown::StillRunning) => Err(ApiError::conflict(
                ErrorCode::InstanceStillRunning,
                format!(
                    "instance {id} did not power off within {}s of ACPI shutdown presses every {}s; retry, or use force=true to cut its power",
                    timeout.as_secs(),
                    retry.as_secs()
                ),
            )),
            Err(e) => failed(hv, id, &TURNOFF, e, Power::Stopped),
        }
    })
}

/// `running -> pausing -> paused`: the vCPUs stop, memory and devices stay.
pub fn pause(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    run(ctx, id, &PAUSE, |hv, name| {
        match hv.power(name).map_err(libvirt)? {
            Some(Power::Running) => hv
                .suspend(name)
                .or_else(|e| failed(hv, id, &PAUSE, e, Power::Paused)),
            // Paused or stopped behind our back: the row takes that.
            _ => Ok(()),
        }
    })
}

/// `paused -> resuming -> running`.
pub fn resume(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    run(ctx, id, &RESUME, |hv, name| {
        match hv.power(name).map_err(libvirt)? {
            Some(Power::Paused) => hv
                .resume(name)
                .or_else(|e| failed(hv, id, &RESUME, e, Power::Running)),
            _ => Ok(()),
        }
    })
}

/// How a reboot was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rebooted {
    /// The guest rebooted on the ACPI button (libvirt reported the reset).
    Acpi,
    /// The ACPI button was pressed; with libvirt events off nothing can confirm the reboot.
    AcpiUnconfirmed,
    /// A hard reset: asked for (`force`, `instance/reset`) or after the guest ignored the
    /// button for `shutdown_timeout_secs`.
    Reset,
}

/// `running -> rebooting -> running`: the ACPI button (pressed again every
/// `shutdown_retry_secs`, as a guest still booting ignores it) until libvirt reports the
/// guest's reset, falling back to a hard reset after `shutdown_timeout_secs`; `force` resets
/// at once.
pub fn reboot(ctx: &Ctx, id: &InstanceId, force: bool) -> ApiResult<(Instance, Rebooted)> {
    let lv = &ctx.cfg.libvirt;
    let timeout = Duration::from_secs(lv.shutdown_timeout_secs);
    let retry = Duration::from_secs(lv.shutdown_retry_secs);
    let mut how = Rebooted::Reset;
    let i = run(ctx, id, &REBOOT, |hv, name| {
        if force {
            return hv.reset(name).map_err(|e| refused(id, &REBOOT, e));
        }
        let Some(seen) = hv.reboots(name) else {
            how = Rebooted::AcpiUnconfirmed;
            return hv.reboot(name).map_err(|e| refused(id, &REBOOT, e));
        };
        let end = Instant::now() + timeout;
        loop {
            hv.reboot(name).map_err(|e| refused(id, &REBOOT, e))?;
            let left = end.saturating_duration_since(Instant::now());
            if hv.await_reboot(name, seen, left.min(retry)) {
                how = Rebooted::Acpi;
                return Ok(());
            }
            if Instant::now() >= end {
                log::warn!(
                    "instance {id}: the guest ignored the ACPI reboot for {}s; resetting it",
                    timeout.as_secs()
                );
                return hv.reset(name).map_err(|e| refused(id, &REBOOT, e));
            }
        }
    })?;
    Ok((i, how))
}

/// `running -> rebooting -> running` by the reset button, at once.
pub fn reset(ctx: &Ctx, id: &InstanceId) -> ApiResult<Instance> {
    run(ctx, id, &RESET, |hv, name| {
        hv.reset(name).map_err(|e| refused(id, &RESET, e))
    })
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
