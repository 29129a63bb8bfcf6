//! The attach/detach machinery shared by volumes and NICs: which instances can take a device,
//! hot-plug (live + persistent when running, persistent only when stopped) and unplug confirmed
//! in the live XML with a bounded wait, with libvirt's failures turned into API errors.
//! The resources' own state machines stay in their modules.

use super::state::instance as ist;
use super::Ctx;
use crate::db::instances::Instance;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use crate::virt::{DeviceKey, Unplug, VirtError};
use std::time::Duration;

/// Where a device stands after a detach.
pub enum Attachment {
    Gone,
    /// The guest still holds it; the message says so and what to do.
    Pending(String),
}

pub fn instance_exists(conn: &mut DbConn, id: &str) -> ApiResult<Instance> {
    db::instances::get(conn, id)?.ok_or_else(|| {
        ApiError::not_found(
            "instance_not_found",
            format!("instance {id} does not exist"),
        )
    })
}

/// An instance that can take a device now: running or stopped.
pub fn instance_for_attach(conn: &mut DbConn, id: &str) -> ApiResult<Instance> {
    let inst = instance_exists(conn, id)?;
    match inst.status.as_str() {
        ist::RUNNING | ist::STOPPED => Ok(inst),
        ist::ERROR => Err(ApiError::conflict(
            "instance_error",
            format!("instance {id} is in error; destroy it"),
        )),
        other => Err(ApiError::conflict(
            "instance_busy",
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
                "attach_failed",
                format!("the hypervisor refused the device: {m}"),
            )
        }
    }
}

pub fn attach(ctx: &Ctx, instance_id: &str, device_xml: &str, key: &DeviceKey) -> ApiResult<()> {
    ctx.hv.plug(instance_id, device_xml, key).map_err(refused)
}

pub fn detach(
    ctx: &Ctx,
    instance_id: &str,
    device_xml: &str,
    key: &DeviceKey,
) -> ApiResult<Attachment> {
    let timeout = Duration::from_secs(ctx.cfg.libvirt.detach_timeout_secs);
    match ctx.hv.unplug(instance_id, device_xml, key, timeout) {
        Ok(Unplug::Gone) => Ok(Attachment::Gone),
        Ok(Unplug::StillInLiveXml) => Ok(Attachment::Pending(format!(
            "the guest of instance {instance_id} has not released the device within {}s; it stays detaching until it does: retry the request",
            timeout.as_secs()
        ))),
        // No domain, no device.
        Err(e) if e.is_no_domain() => Ok(Attachment::Gone),
        Err(e @ VirtError::Connect { .. }) => Err(e.into()),
        Err(e) => Err(ApiError::unavailable(crate::error::Backend::Libvirt, e.to_string())),
    }
}
