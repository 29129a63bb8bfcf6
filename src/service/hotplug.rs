//! The attach/detach machinery shared by volumes and NICs: which instances can take a device,
//! hot-plug (live + persistent when running, persistent only when stopped) and unplug confirmed
//! in the live XML with a bounded wait, with libvirt's failures turned into API errors.
//! The resources' own state machines stay in their modules.

use super::operations::{self, Op};
use super::{load, record, transition, Ctx, Resource};
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::DbConn;
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{InstanceId, InstanceStatus, Lifecycle};
use crate::virt::{DeviceKey, Unplug, VirtError};
use diesel::Connection;
use std::time::Duration;

/// Where a device stands after a detach.
pub enum Attachment {
    Gone,
    /// The guest still holds it; the message says so and what to do.
    Pending(String),
}

/// An instance that can take a device now: running or stopped (not paused).
pub fn instance_for_attach(conn: &mut DbConn, id: &InstanceId) -> ApiResult<Instance> {
    let inst = load::<Instance>(conn, id)?;
    match inst.status {
        InstanceStatus::Running | InstanceStatus::Stopped => Ok(inst),
        // A paused guest cannot acknowledge an unplug (it would stay pending) nor see a plug.
        InstanceStatus::Paused => Err(ApiError::conflict(
            ErrorCode::InstancePaused,
            format!("instance {id} is paused; resume it before plugging or unplugging devices"),
        )),
        InstanceStatus::Error => Err(ApiError::conflict(
            ErrorCode::InstanceError,
            format!("instance {id} is in error; destroy it"),
        )),
        other => Err(ApiError::conflict(
            ErrorCode::InstanceBusy,
            format!("instance {id} is {other}; retry when it has finished"),
        )),
    }
}

/// libvirt's refusal as the user's error: unreachable libvirt is a 503, a refused device a 422
/// carrying libvirt's own words.
pub fn refused(e: VirtError) -> ApiError {
    match e {
        VirtError::Connect { .. } => e.into(),
        VirtError::Op { ref message, .. } => {
            let m = message.trim().trim_end_matches('.').to_string();
            ApiError::unprocessable(
                ErrorCode::AttachFailed,
                format!("the hypervisor refused the device: {m}"),
            )
        }
    }
}

/// Unplugs a device and waits (bounded) for the guest to release it.
fn detach(
    ctx: &Ctx,
    instance_id: &InstanceId,
    device_xml: &str,
    key: &DeviceKey,
) -> Result<Attachment, Failure> {
    let timeout = Duration::from_secs(ctx.cfg.libvirt.detach_timeout_secs);
    let hv = super::hosts::of_id(ctx, instance_id)?;
    match hv.unplug(instance_id.as_str(), device_xml, key, timeout) {
        Ok(Unplug::Gone) => Ok(Attachment::Gone),
        Ok(Unplug::StillInLiveXml) => Ok(Attachment::Pending(format!(
            "the guest of instance {instance_id} has not released the device within {}s; it stays detaching until it does: retry the request",
            timeout.as_secs()
        ))),
        // No domain, no device.
        Err(e) if e.is_no_domain() => Ok(Attachment::Gone),
        Err(e) if e.outcome_unknown() => Err(Failure::unknown(&e, "detach")),
        Err(e) => Err(ApiError::unavailable(Backend::Libvirt, e.to_string()).into()),
    }
}

/// Why an attach or detach failed: with a known outcome (it did not happen, or was undone),
/// or with libvirt gone in the middle, so that only the domain's XML can tell later.
enum Failure {
    Known(ApiError),
    Unknown(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Known(e)
    }
}

impl Failure {
    fn unknown(e: &VirtError, what: &str) -> Failure {
        Failure::Unknown(ApiError::unavailable(
            Backend::Libvirt,
            format!(
                "libvirt stopped answering during the {what} ({}); the device's row follows the domain's XML as soon as libvirt answers again",
                e.message()
            ),
        ))
    }
}

/// Ends `op` with the outcome of its flow; an unknown one is handed to the takeover, which
/// settles the row from the domain's XML once libvirt answers (`recover`).
fn conclude<P>(ctx: &Ctx, op: Op, r: Result<P, Failure>) -> ApiResult<P> {
    match r {
        Err(Failure::Unknown(e)) => {
            op.abandon(ctx, &e.to_string());
            Err(e)
        }
        Err(Failure::Known(e)) => op.conclude(ctx, Err(e)),
        Ok(p) => op.conclude(ctx, Ok(p)),
    }
}

/// The MySQL side of a resource that plugs into instances (a volume, a NIC): its statuses, its
/// error codes and its device. The flows below are written once against it.
pub trait Pluggable: Resource {
    /// The status of a reserved resource being plugged.
    const ATTACHING: Self::Status;
    /// The status of a plugged resource ("in-use", "attached").
    const ATTACHED: Self::Status;
    const DETACHING: Self::Status;
    const CODE_NOT_ATTACHED: ErrorCode;
    const CODE_ATTACHED_ELSEWHERE: ErrorCode;
    /// Operation kinds of its attach and detach (service::operations).
    const KIND_ATTACH: &'static str;
    const KIND_DETACH: &'static str;

    fn id(&self) -> &Self::Id;
    /// Its id from an operation's `resource_id`.
    fn id_from(s: &str) -> Self::Id;
    fn status(&self) -> Self::Status;
    fn instance_id(&self) -> Option<&InstanceId>;
    /// The device XML and how to find it in a domain's XML.
    fn device(&self, ctx: &Ctx) -> ApiResult<(String, DeviceKey)>;
    /// The 409 for a resource not in a state to be taken or given back.
    fn not_available(&self) -> ApiError;
    /// `ATTACHING -> ATTACHED`, stamping the attach time.
    fn mark_attached(conn: &mut DbConn, id: &Self::Id) -> ApiResult<bool>;
    /// `from -> available`, forgetting the instance.
    fn release(
        conn: &mut DbConn,
        id: &Self::Id,
        from: Self::Status,
        msg: Option<&str>,
    ) -> ApiResult<bool>;
    /// A libvirt refusal in this resource's terms (NICs name a missing bridge); `None` leaves
    /// it to the general rule (`refused`).
    fn explain(&self, _ctx: &Ctx, _e: &VirtError) -> Option<ApiError> {
        None
    }
    /// Bookkeeping on the instance after a change (NICs keep its `ip` on one of them).
    fn after_change(_conn: &mut DbConn, _instance_id: &InstanceId) -> ApiResult<()> {
        Ok(())
    }
}

fn label<P: Pluggable>() -> &'static str {
    <P::Status as Lifecycle>::RESOURCE
}

/// Plugs a resource its caller has reserved (`ATTACHING`, instance recorded) into the instance,
/// then records it `ATTACHED`. A refused plug gives the resource back with the reason; a plug
/// that cannot be recorded is unplugged again, so that MySQL and libvirt agree. No MySQL
/// connection is held while libvirt works.
pub fn complete_attach<P: Pluggable>(
    ctx: &Ctx,
    id: &P::Id,
    instance_id: &InstanceId,
) -> ApiResult<P> {
    let op = operations::start(ctx, &mut ctx.conn()?, P::KIND_ATTACH, &id.to_string(), &())?;
    let r = plug::<P>(ctx, &op, id, instance_id);
    conclude(ctx, op, r)
}

fn plug<P: Pluggable>(
    ctx: &Ctx,
    op: &Op,
    id: &P::Id,
    instance_id: &InstanceId,
) -> Result<P, Failure> {
    let p = load::<P>(&mut ctx.conn()?, id)?;
    let (xml, key) = p.device(ctx)?;
    op.save(ctx, "plugging", &())?;
    let give_back = |why: &str| {
        let r = record(ctx, "giving back a device", |c| {
            P::release(c, id, P::ATTACHING, Some(why))
        });
        if let Err(e) = r {
            log::error!(
                "{} {id}: cannot return to available after a failed attach: {e}",
                label::<P>()
            );
        }
    };
    let hv = super::hosts::of_id(ctx, instance_id)?;
    if let Err(e) = hv.plug(instance_id.as_str(), &xml, &key) {
        if e.outcome_unknown() {
            return Err(Failure::unknown(&e, "attach"));
        }
        let e = p.explain(ctx, &e).unwrap_or_else(|| refused(e));
        give_back(&e.to_string());
        return Err(e.into());
    }
    let marked = record(ctx, "recording an attach", |c| {
        c.transaction(|c| {
            if !P::mark_attached(c, id)? {
                return Ok(false);
            }
            P::after_change(c, instance_id)?;
            Ok(true)
        })
    });
    let why = match marked {
        Ok(true) => return Ok(load::<P>(&mut ctx.conn()?, id)?),
        Ok(false) => "the row changed under us".to_string(),
        Err(e) => e.to_string(),
    };
    let t = Duration::from_secs(ctx.cfg.libvirt.detach_timeout_secs);
    let undone = hv.unplug(instance_id.as_str(), &xml, &key, t);
    give_back(&why);
    Err(ApiError::unavailable(
        Backend::Database,
        format!(
            "the {} was attached but recording it failed ({why}); detaching it again: {undone:?}",
            label::<P>()
        ),
    )
    .into())
}

/// Unplugs a resource from the instance it is recorded on: `ATTACHED -> DETACHING`, unplug
/// confirmed in the live XML, then available. A guest that holds on leaves it `DETACHING` with a
/// 409 `detach_pending`; calling again carries on from there. No MySQL connection is held
/// during the (bounded) wait for the guest.
pub fn detach_resource<P: Pluggable>(ctx: &Ctx, p: P, instance_id: &InstanceId) -> ApiResult<P> {
    let id = p.id();
    {
        let conn = &mut ctx.conn()?;
        load::<Instance>(conn, instance_id)?;
        if p.instance_id() != Some(instance_id) {
            return Err(match p.instance_id() {
                Some(other) => ApiError::conflict(
                    P::CODE_ATTACHED_ELSEWHERE,
                    format!(
                        "{} {id} is attached to instance {other}, not {instance_id}",
                        label::<P>()
                    ),
                ),
                None => ApiError::conflict(
                    P::CODE_NOT_ATTACHED,
                    format!("{} {id} is not attached to any instance", label::<P>()),
                ),
            });
        }
        if p.status() != P::ATTACHED && p.status() != P::DETACHING {
            return Err(p.not_available());
        }
    }
    let claim = |c: &mut DbConn| {
        if p.status() == P::ATTACHED && !transition::<P>(c, id, P::ATTACHED, P::DETACHING, None)? {
            return Err(load::<P>(c, id)?.not_available());
        }
        Ok(())
    };
    let op = operations::claim_and_start(
        ctx,
        &mut ctx.conn()?,
        P::KIND_DETACH,
        &id.to_string(),
        &(),
        claim,
    )?;
    let r = unplug::<P>(ctx, &op, &p, instance_id);
    conclude(ctx, op, r)
}

fn unplug<P: Pluggable>(ctx: &Ctx, op: &Op, p: &P, instance_id: &InstanceId) -> Result<P, Failure> {
    let id = p.id();
    let (xml, key) = p.device(ctx)?;
    op.save(ctx, "unplugging", &())?;
    match detach(ctx, instance_id, &xml, &key)? {
        Attachment::Gone => Ok(record(ctx, "recording a detach", |c| {
            c.transaction(|c| {
                P::release(c, id, P::DETACHING, None)?;
                P::after_change(c, instance_id)
            })?;
            load::<P>(c, id)
        })?),
        Attachment::Pending(msg) => {
            record(ctx, "recording a pending detach", |c| {
                transition::<P>(c, id, P::DETACHING, P::DETACHING, Some(&msg))
            })?;
            Err(ApiError::conflict(ErrorCode::DetachPending, msg).into())
        }
    }
}

/// Takes over an attach or detach whose process died: the row takes what the instance's
/// persistent XML holds (`reconcile` for that one row).
pub fn recover<P: Pluggable>(ctx: &Ctx, held: Op, op: &Operation) {
    let id = P::id_from(&op.resource_id);
    let settled = record(ctx, "settling a hot-plug", |c| {
        let Some(p) = P::get(c, &id)? else {
            return Ok(0);
        };
        if p.status() != P::ATTACHING && p.status() != P::DETACHING {
            return Ok(0);
        }
        reconcile(ctx, c, vec![p])
    });
    match settled {
        Ok(_) => held.finish(ctx, Ok(())),
        // Not settled: the claim's lease runs out and a later pass tries again.
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// Start-up repair of resources a crash left `ATTACHING` or `DETACHING` (rows untouched for a
/// while): the instance's persistent XML is the truth. Holding the device -> `ATTACHED`; not
/// holding it (or no domain) -> available. Returns how many rows were repaired.
pub fn reconcile<P: Pluggable>(ctx: &Ctx, conn: &mut DbConn, stale: Vec<P>) -> ApiResult<usize> {
    let mut fixed = 0;
    for p in stale {
        let Some(inst) = p.instance_id() else {
            continue;
        };
        let (_, key) = p.device(ctx)?;
        let held = match super::hosts::of_id(ctx, inst)?.xml(inst.as_str(), true) {
            Ok(xml) => key.is_in(&xml)?,
            Err(e) if e.is_no_domain() => false,
            Err(e) => return Err(e.into()),
        };
        let from = p.status();
        let done = match (held, from == P::ATTACHING) {
            (true, true) => P::mark_attached(conn, p.id())?,
            (true, false) => transition::<P>(conn, p.id(), P::DETACHING, P::ATTACHED, None)?,
            (false, _) => P::release(conn, p.id(), from, None)?,
        };
        if done {
            log::warn!(
                "reconcile: {} {} was {from}; libvirt says {}",
                label::<P>(),
                p.id(),
                if held { "attached" } else { "not attached" }
            );
            fixed += 1;
        }
    }
    Ok(fixed)
}
