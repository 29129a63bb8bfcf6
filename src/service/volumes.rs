//! Volumes: RBD images in the volumes pool, attached to instances as virtio disks whose
//! `<serial>` is the volume_id.
//!
//! Every transition is a compare-and-set in MySQL, so of racing requests exactly one wins, also
//! across api-web processes. Mount: `available -> attaching` (recording instance and target
//! device) -> hot-plug -> `in-use`; a failure goes back to `available` with the reason.
//! Unmount: `in-use -> detaching` -> unplug, confirmed in the live XML -> `available`; a guest
//! that holds on leaves the volume `detaching`, and a later unmount carries on.

use super::backed::{self, RbdBacked};
use super::hotplug::{self, Pluggable};
use super::operations;
use super::{load, transition, Ctx, Resource};
use crate::db::instances::Instance;
use crate::db::volumes::{Volume, VolumeForm, VolumeUpdate};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{InstanceId, Lifecycle, VolumeId, VolumeStatus as St};
use crate::virt::DeviceKey;
use crate::xml::devices::{to_xml, Disk, RbdAccess};

pub const GIB: u64 = 1 << 30;
pub const MAX_VOLUME_GIB: u64 = 65536;

impl Resource for Volume {
    const NOT_FOUND: ErrorCode = ErrorCode::VolumeNotFound;
}

fn root_refusal(v: &Volume, what: &str) -> ApiError {
    ApiError::conflict(
        ErrorCode::VolumeIsRoot,
        format!(
            "volume {} is the root disk of instance {}; it cannot be {what} on its own (destroy the instance)",
            v.volume_id,
            v.instance_id.as_ref().map_or("?", |i| i.as_str())
        ),
    )
}

/// The disk XML of a volume at `target`.
pub fn disk(ctx: &Ctx, volume_id: &VolumeId, target: &str) -> Disk {
    let c = &ctx.cfg.ceph;
    let access = RbdAccess {
        mon_hosts: &c.mon_hosts,
        user: &c.qemu_user,
        secret_uuid: &c.secret_uuid,
    };
    let id = volume_id.as_str();
    Disk::rbd(&access, &c.volumes_pool, id, target, id)
}

/// Makes a new volume of `size_gib` (row `creating` -> RBD image -> `available`); a failure
/// removes what was made.
pub fn create(
    ctx: &Ctx,
    name: &str,
    size_gib: u64,
    describe: &str,
    project_id: &str,
) -> ApiResult<Volume> {
    if size_gib == 0 || size_gib > MAX_VOLUME_GIB {
        return Err(ApiError::invalid(format!(
            "volume_size: must be between 1 and {MAX_VOLUME_GIB} GiB"
        )));
    }
    let form = || VolumeForm {
        volume_id: VolumeId::generate(),
        volume_name: name.to_string(),
        volume_size: size_gib,
        status: St::Creating,
        instance_id: None,
        is_root: false,
        target_dev: None,
        describe: describe.to_string(),
        attach_time: None,
        create_time: db::now(),
        project_id: project_id.to_string(),
        delete_with_instance: false,
    };
    backed::create(ctx, form, size_gib * GIB)
}

impl RbdBacked for Volume {
    type Form = VolumeForm;
    const CREATING: St = St::Creating;
    const AVAILABLE: St = St::Available;
    const DELETING: St = St::Deleting;
    const KIND_CREATE: &'static str = "volume.create";
    const KIND_DELETE: &'static str = "volume.delete";
    fn id_from(s: &str) -> VolumeId {
        VolumeId::new(s)
    }
    fn status_of(&self) -> St {
        self.status
    }
    fn pool(ctx: &Ctx) -> &str {
        &ctx.cfg.ceph.volumes_pool
    }
    fn id_of(form: &VolumeForm) -> &VolumeId {
        &form.volume_id
    }
    fn ask(form: &VolumeForm) -> (&str, super::quotas::Ask) {
        let ask = super::quotas::Ask {
            volumes: 1,
            volume_gib: form.volume_size,
            ..Default::default()
        };
        (&form.project_id, ask)
    }
    fn insert(conn: &mut DbConn, form: &VolumeForm) -> diesel::QueryResult<()> {
        db::volumes::insert(conn, form)
    }
}

/// The first of vdb..vdz that neither MySQL nor libvirt uses on the instance.
fn free_target(used: &[String]) -> Option<String> {
    (b'b'..=b'z')
        .map(|c| format!("vd{}", c as char))
        .find(|t| !used.iter().any(|u| u == t))
}

/// Reserves a volume for an instance (`available -> attaching` with a free target device).
fn reserve(ctx: &Ctx, conn: &mut DbConn, v: &Volume, inst: &Instance) -> ApiResult<String> {
    St::Available.check(St::Attaching)?;
    let mut used = db::volumes::targets_of(conn, &inst.instance_id)?;
    match super::hosts::of(ctx, inst)?.disk_targets(inst.instance_id.as_str()) {
        Ok(t) => used.extend(t),
        Err(e) if e.is_no_domain() => {}
        Err(e) => return Err(e.into()),
    }
    loop {
        let target = free_target(&used).ok_or_else(|| {
            ApiError::conflict(
                ErrorCode::NoFreeDevice,
                format!(
                    "instance {} has no free disk device (vdb..vdz)",
                    inst.instance_id
                ),
            )
        })?;
        let reserve = VolumeUpdate::reserve(&inst.instance_id, &target, db::now());
        match db::volumes::transition_with(conn, &v.volume_id, St::Available, &reserve) {
            Ok(true) => return Ok(target),
            Ok(false) => return Err(not_available(&load(conn, &v.volume_id)?)),
            // Another mount to this instance took the device first: the next one.
            Err(e) if db::is_unique_violation(&e) => used.push(target),
            Err(e) => return Err(e.into()),
        }
    }
}

fn not_available(v: &Volume) -> ApiError {
    match v.status {
        St::InUse | St::Attaching | St::Detaching => ApiError::conflict(
            ErrorCode::VolumeInUse,
            format!(
                "volume {} is {} on instance {}",
                v.volume_id,
                v.status,
                v.instance_id.as_ref().map_or("?", |i| i.as_str())
            ),
        ),
        _ => ApiError::conflict(
            ErrorCode::VolumeBusy,
            format!(
                "volume {} is {}; retry when it is available",
                v.volume_id, v.status
            ),
        ),
    }
}

impl Pluggable for Volume {
    const ATTACHING: St = St::Attaching;
    const ATTACHED: St = St::InUse;
    const DETACHING: St = St::Detaching;
    const CODE_NOT_ATTACHED: ErrorCode = ErrorCode::VolumeNotAttached;
    const CODE_ATTACHED_ELSEWHERE: ErrorCode = ErrorCode::VolumeAttachedElsewhere;

    const KIND_ATTACH: &'static str = "volume.attach";
    const KIND_DETACH: &'static str = "volume.detach";

    fn id_from(s: &str) -> VolumeId {
        VolumeId::new(s)
    }
    fn id(&self) -> &VolumeId {
        &self.volume_id
    }
    fn status(&self) -> St {
        self.status
    }
    fn instance_id(&self) -> Option<&InstanceId> {
        self.instance_id.as_ref()
    }
    fn device(&self, ctx: &Ctx) -> ApiResult<(String, DeviceKey)> {
        let target = self.target_dev.as_deref().unwrap_or("vdb");
        let xml = to_xml(&disk(ctx, &self.volume_id, target))
            .map_err(|e| ApiError::Internal(format!("disk XML: {e}")))?;
        Ok((xml, DeviceKey::DiskSerial(self.volume_id.to_string())))
    }
    fn not_available(&self) -> ApiError {
        not_available(self)
    }
    fn mark_attached(conn: &mut DbConn, id: &VolumeId) -> ApiResult<bool> {
        St::Attaching.check(St::InUse)?;
        let done = VolumeUpdate::attached(db::now());
        Ok(db::volumes::transition_with(
            conn,
            id,
            St::Attaching,
            &done,
        )?)
    }
    fn release(conn: &mut DbConn, id: &VolumeId, from: St, msg: Option<&str>) -> ApiResult<bool> {
        from.check(St::Available)?;
        let released = VolumeUpdate::released(msg, db::now());
        Ok(db::volumes::transition_with(conn, id, from, &released)?)
    }
}

pub fn mount(ctx: &Ctx, volume_id: &VolumeId, instance_id: &InstanceId) -> ApiResult<Volume> {
    // QEMU opens the RBD image as the disk is plugged: with the OSDs gone it would hang there.
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    let v = load::<Volume>(&mut conn, volume_id)?;
    let inst = hotplug::instance_for_attach(&mut conn, instance_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "mounted"));
    }
    if v.status != St::Available {
        return Err(not_available(&v));
    }
    reserve(ctx, &mut conn, &v, &inst)?;
    drop(conn);
    hotplug::complete_attach::<Volume>(ctx, volume_id, instance_id)
}

pub fn unmount(ctx: &Ctx, volume_id: &VolumeId, instance_id: &InstanceId) -> ApiResult<Volume> {
    let v = load::<Volume>(&mut ctx.conn()?, volume_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "unmounted"));
    }
    hotplug::detach_resource(ctx, v, instance_id)
}

pub fn delete(ctx: &Ctx, volume_id: &VolumeId) -> ApiResult<crate::ceph::Removal> {
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    let v = load::<Volume>(&mut conn, volume_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "deleted"));
    }
    let from = v.status;
    if !matches!(from, St::Available | St::Error) {
        return Err(not_available(&v));
    }
    let claim = |c: &mut DbConn| {
        // Locked first: a snapshot of the volume (which locks it too) is either committed and
        // seen here, or waits and then finds the volume gone.
        db::volumes::lock(c, volume_id)?;
        super::snapshots::check_volume_free(c, volume_id)?;
        if !transition::<Volume>(c, volume_id, from, St::Deleting, None)? {
            return Err(not_available(&load(c, volume_id)?));
        }
        Ok(())
    };
    let kind = Volume::KIND_DELETE;
    let op = operations::claim_and_start(ctx, &mut conn, kind, volume_id.as_str(), &(), claim)?;
    let r = op
        .save(ctx, "removing the RBD image", &())
        .and_then(|_| remove(ctx, &mut conn, volume_id, from));
    op.conclude(ctx, r)
}

/// The delete's steps once the row is `deleting`: the RBD image, then the row.
fn remove(
    ctx: &Ctx,
    conn: &mut DbConn,
    volume_id: &VolumeId,
    from: St,
) -> ApiResult<crate::ceph::Removal> {
    let removal = match ctx
        .ceph
        .remove_image(&ctx.cfg.ceph.volumes_pool, volume_id.as_str())
    {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("could not remove the RBD image: {e}");
            let _ = transition::<Volume>(conn, volume_id, St::Deleting, from, Some(&msg));
            return Err(ApiError::unavailable(
                Backend::Ceph,
                format!("{msg}; the volume is kept"),
            ));
        }
    };
    db::volumes::delete_in_status(conn, volume_id, St::Deleting)?;
    Ok(removal)
}

/// Grows a volume (a data volume or a root disk) to `size_gib`: the RBD image, then, when the
/// volume is plugged into a domain that runs (or is paused), libvirt's block resize so the guest
/// sees the new size at once, then the row. `available` or `in-use` only; the volume_gib quota
/// counts the growth.
///
/// All of it happens under the volume row's lock: a mount, unmount or delete waits for it. That
/// lock is held across Ceph and libvirt, which the design otherwise avoids; here both calls are
/// short and bounded (growing an RBD image changes only its header; a librbd op gives up after
/// `rados_osd_op_timeout`; block resize is one QMP command). A crash after the RBD resize
/// leaves the image larger than the row says; the same resize again completes it.
pub fn resize(ctx: &Ctx, volume_id: &VolumeId, size_gib: u64) -> ApiResult<Volume> {
    if size_gib == 0 || size_gib > MAX_VOLUME_GIB {
        return Err(ApiError::invalid(format!(
            "volume_size must be between 1 and {MAX_VOLUME_GIB} GiB"
        )));
    }
    ctx.ceph.ensure_up()?;
    let mut conn = ctx.conn()?;
    super::quotas::in_transaction(&mut conn, |c| {
        let v = db::volumes::lock(c, volume_id)?
            .ok_or_else(|| super::not_found::<Volume>(volume_id))?;
        if !matches!(v.status, St::Available | St::InUse) {
            return Err(not_available(&v));
        }
        if size_gib <= v.volume_size {
            return Err(ApiError::unprocessable(
                ErrorCode::VolumeCannotShrink,
                format!(
                    "volume {volume_id} is {} GiB; a resize only grows it (asked for {size_gib} GiB)",
                    v.volume_size
                ),
            ));
        }
        let ask = super::quotas::Ask {
            volume_gib: size_gib - v.volume_size,
            ..Default::default()
        };
        super::quotas::admit(c, &v.project_id, &ask)?;
        let pool = &ctx.cfg.ceph.volumes_pool;
        ctx.ceph
            .resize_image(pool, volume_id.as_str(), size_gib * GIB)
            .map_err(|e| {
                ApiError::unavailable(
                    Backend::Ceph,
                    format!("could not resize the RBD image of volume {volume_id}: {e}"),
                )
            })?;
        if let (St::InUse, Some(inst), Some(target)) = (v.status, &v.instance_id, &v.target_dev) {
            let hv = super::hosts::of_id(ctx, inst)?;
            let live = crate::virt::active(hv.power(inst.as_str()).map_err(|e| {
                ApiError::unavailable(Backend::Libvirt, format!("libvirt: {}", e.message()))
            })?);
            if live {
                hv.block_resize(inst.as_str(), target, size_gib * GIB)
                    .map_err(|e| {
                        ApiError::unavailable(
                            Backend::Libvirt,
                            format!(
                                "the RBD image of volume {volume_id} is {size_gib} GiB, but instance {inst} was not told: {}; resize again to retry",
                                e.message()
                            ),
                        )
                    })?;
            }
        }
        db::volumes::set_size(c, volume_id, size_gib, db::now())?;
        load(c, volume_id)
    })
}

/// Start-up repair of volumes a crash left half-done: `creating` and `deleting` as
/// `backed::repair_*`, `attaching` and `detaching` from the instance's XML (`hotplug::reconcile`).
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for row in db::volumes::stale_in_status(&mut conn, St::Creating, cutoff)? {
        fixed += usize::from(backed::repair_creating::<Volume>(
            ctx,
            &mut conn,
            &row.volume_id,
        )?);
    }
    for row in db::volumes::stale_in_status(&mut conn, St::Deleting, cutoff)? {
        fixed += usize::from(backed::repair_deleting::<Volume>(
            ctx,
            &mut conn,
            &row.volume_id,
        )?);
    }
    let mut stale = db::volumes::stale_in_status(&mut conn, St::Attaching, cutoff)?;
    stale.extend(db::volumes::stale_in_status(
        &mut conn,
        St::Detaching,
        cutoff,
    )?);
    Ok(fixed + hotplug::reconcile(ctx, &mut conn, stale)?)
}

#[cfg(test)]
mod tests {
    use super::free_target;

    #[test]
    fn targets() {
        assert_eq!(free_target(&["vda".into()]).as_deref(), Some("vdb"));
        assert_eq!(
            free_target(&["vda".into(), "vdb".into(), "vdd".into()]).as_deref(),
            Some("vdc")
        );
        let all: Vec<String> = (b'a'..=b'z').map(|c| format!("vd{}", c as char)).collect();
        assert_eq!(free_target(&all), None);
    }
}
