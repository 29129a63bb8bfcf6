//! Volumes: RBD images in the volumes pool, attached to instances as virtio disks whose
//! `<serial>` is the volume_id.
//!
//! Every transition is a compare-and-set in MySQL, so of racing requests exactly one wins, also
//! across api-web processes. Mount: `available -> attaching` (recording instance and target
//! device) -> hot-plug -> `in-use`; a failure goes back to `available` with the reason.
//! Unmount: `in-use -> detaching` -> unplug, confirmed in the live XML -> `available`; a guest
//! that holds on leaves the volume `detaching`, and a later unmount carries on.

use super::hotplug::{self, Pluggable};
use super::state::volume as st;
use super::{Ctx, Paging};
use crate::db::instances::Instance;
use crate::db::volumes::Volume;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend};
use crate::ids;
use crate::virt::DeviceKey;
use crate::xml::devices::{to_xml, Disk, RbdAccess};
use std::collections::HashMap;

const GIB: u64 = 1 << 30;
pub const MAX_VOLUME_GIB: u64 = 65536;

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("volume_not_found", format!("volume {id} does not exist"))
}

fn load(conn: &mut DbConn, id: &str) -> ApiResult<Volume> {
    db::volumes::get(conn, id)?.ok_or_else(|| not_found(id))
}

fn check(from: &str, to: &str) -> ApiResult<()> {
    if st::valid_transition(from, to) {
        Ok(())
    } else {
        Err(ApiError::Internal(format!(
            "illegal volume transition {from} -> {to}"
        )))
    }
}

fn root_refusal(v: &Volume, what: &str) -> ApiError {
    ApiError::conflict(
        "volume_is_root",
        format!(
            "volume {} is the root disk of instance {}; it cannot be {what} on its own (destroy the instance)",
            v.volume_id,
            v.instance_id.as_deref().unwrap_or("?")
        ),
    )
}

/// The disk XML of a data volume at `target`.
pub fn disk_xml(ctx: &Ctx, volume_id: &str, target: &str) -> ApiResult<String> {
    let c = &ctx.cfg.ceph;
    let access = RbdAccess {
        mon_hosts: &c.mon_hosts,
        user: &c.qemu_user,
        secret_uuid: &c.secret_uuid,
    };
    to_xml(&Disk::rbd(
        &access,
        &c.volumes_pool,
        volume_id,
        target,
        volume_id,
    ))
    .map_err(|e| ApiError::Internal(format!("disk XML: {e}")))
}

/// Makes a new volume of `size_gib` (row `creating` -> RBD image -> `available`); a failure
/// removes what was made.
pub fn create(ctx: &Ctx, name: &str, size_gib: u64, describe: &str) -> ApiResult<Volume> {
    if size_gib == 0 || size_gib > MAX_VOLUME_GIB {
        return Err(ApiError::invalid(format!(
            "volume_size: must be between 1 and {MAX_VOLUME_GIB} GiB"
        )));
    }
    let pool = &ctx.cfg.ceph.volumes_pool;
    let mut conn = ctx.conn()?;
    for _ in 0..8 {
        let now = db::now();
        let row = Volume {
            volume_id: ids::new_id(ids::VOLUME),
            volume_name: name.to_string(),
            volume_size: size_gib,
            status: st::CREATING.into(),
            instance_id: None,
            is_root: false,
            target_dev: None,
            describe: describe.to_string(),
            error_message: None,
            attach_time: None,
            create_time: now,
            update_time: now,
        };
        match db::volumes::insert(&mut conn, &row) {
            Ok(()) => {}
            Err(e) if db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        let id = &row.volume_id;
        if let Err(e) = ctx.ceph.create_image(pool, id, size_gib * GIB) {
            let undo = db::volumes::delete_in_status(&mut conn, id, st::CREATING);
            if e.already_exists() && matches!(undo, Ok(true)) {
                continue;
            }
            let kept = match undo {
                Ok(_) => "nothing was kept".to_string(),
                Err(u) => format!("removing the volume row also failed ({u})"),
            };
            return Err(ApiError::unavailable(
                Backend::Ceph,
                format!("Ceph could not create the RBD image {pool}/{id}: {e}; {kept}"),
            ));
        }
        check(st::CREATING, st::AVAILABLE)?;
        match db::volumes::transition(&mut conn, id, st::CREATING, st::AVAILABLE, None, db::now()) {
            Ok(true) => return load(&mut conn, id),
            outcome => {
                let why = match outcome {
                    Err(e) => e.to_string(),
                    _ => "the row changed under us".into(),
                };
                let removed = ctx.ceph.remove_image(pool, id).map(|_| ());
                let _ = db::volumes::delete_in_status(&mut conn, id, st::CREATING);
                let kept = match removed {
                    Ok(()) => "the RBD image was removed again".to_string(),
                    Err(e) => format!("removing the RBD image also failed ({e})"),
                };
                return Err(ApiError::unavailable(
                    Backend::Database,
                    format!("the RBD image {pool}/{id} was created but recording it failed ({why}); {kept}"),
                ));
            }
        }
    }
    Err(ApiError::Internal(
        "could not find a free volume id after 8 tries".into(),
    ))
}

/// A page of volumes, and the names of the instances they are attached to.
pub fn list(
    ctx: &Ctx,
    name_contains: Option<&str>,
    status: Option<&str>,
    instance_id: Option<&str>,
    paging: Paging,
) -> ApiResult<(i64, Vec<Volume>, HashMap<String, String>)> {
    if let Some(s) = status {
        if !st::ALL.contains(&s) {
            return Err(ApiError::invalid(format!(
                "status: {s:?} is not one of {}",
                st::ALL.join(", ")
            )));
        }
    }
    let mut conn = ctx.conn()?;
    let (total, rows) = db::volumes::list(
        &mut conn,
        name_contains,
        status,
        instance_id,
        paging.to_db(),
    )?;
    let ids: Vec<String> = rows.iter().filter_map(|v| v.instance_id.clone()).collect();
    let names = db::instances::names_of(&mut conn, &ids)?;
    Ok((total, rows, names))
}

/// The first of vdb..vdz that neither MySQL nor libvirt uses on the instance.
fn free_target(used: &[String]) -> Option<String> {
    (b'b'..=b'z')
        .map(|c| format!("vd{}", c as char))
        .find(|t| !used.iter().any(|u| u == t))
}

/// Reserves a volume for an instance (`available -> attaching` with a free target device).
fn reserve(ctx: &Ctx, conn: &mut DbConn, v: &Volume, inst: &Instance) -> ApiResult<String> {
    check(st::AVAILABLE, st::ATTACHING)?;
    let mut used = db::volumes::targets_of(conn, &inst.instance_id)?;
    match ctx.hv.disk_targets(&inst.instance_id) {
        Ok(t) => used.extend(t),
        Err(e) if e.is_no_domain() => {}
        Err(e) => return Err(e.into()),
    }
    loop {
        let target = free_target(&used).ok_or_else(|| {
            ApiError::conflict(
                "no_free_device",
                format!(
                    "instance {} has no free disk device (vdb..vdz)",
                    inst.instance_id
                ),
            )
        })?;
        match db::volumes::reserve(conn, &v.volume_id, &inst.instance_id, &target, db::now()) {
            Ok(true) => return Ok(target),
            Ok(false) => {
                let now = load(conn, &v.volume_id)?;
                return Err(not_available(&now));
            }
            // Another mount to this instance took the device first: the next one.
            Err(e) if db::is_unique_violation(&e) => used.push(target),
            Err(e) => return Err(e.into()),
        }
    }
}

fn not_available(v: &Volume) -> ApiError {
    match v.status.as_str() {
        st::IN_USE | st::ATTACHING | st::DETACHING => ApiError::conflict(
            "volume_in_use",
            format!(
                "volume {} is {} on instance {}",
                v.volume_id,
                v.status,
                v.instance_id.as_deref().unwrap_or("?")
            ),
        ),
        _ => ApiError::conflict(
            "volume_busy",
            format!(
                "volume {} is {}; retry when it is available",
                v.volume_id, v.status
            ),
        ),
    }
}

impl Pluggable for Volume {
    const LABEL: &'static str = "volume";
    const ATTACHING: &'static str = st::ATTACHING;
    const ATTACHED: &'static str = st::IN_USE;
    const DETACHING: &'static str = st::DETACHING;
    const CODE_NOT_ATTACHED: &'static str = "volume_not_attached";
    const CODE_ATTACHED_ELSEWHERE: &'static str = "volume_attached_elsewhere";

    fn id(&self) -> &str {
        &self.volume_id
    }
    fn status(&self) -> &str {
        &self.status
    }
    fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }
    fn load(conn: &mut DbConn, id: &str) -> ApiResult<Self> {
        load(conn, id)
    }
    fn device(&self, ctx: &Ctx) -> ApiResult<(String, DeviceKey)> {
        let target = self.target_dev.as_deref().unwrap_or("vdb");
        Ok((
            disk_xml(ctx, &self.volume_id, target)?,
            DeviceKey::DiskSerial(self.volume_id.clone()),
        ))
    }
    fn not_available(&self) -> ApiError {
        not_available(self)
    }
    fn transition(
        conn: &mut DbConn,
        id: &str,
        from: &str,
        to: &str,
        msg: Option<&str>,
    ) -> ApiResult<bool> {
        if from != to {
            check(from, to)?;
        }
        Ok(db::volumes::transition(conn, id, from, to, msg, db::now())?)
    }
    fn mark_attached(conn: &mut DbConn, id: &str) -> ApiResult<bool> {
        check(st::ATTACHING, st::IN_USE)?;
        Ok(db::volumes::attached(conn, id, db::now())?)
    }
    fn release(conn: &mut DbConn, id: &str, from: &str, msg: Option<&str>) -> ApiResult<bool> {
        check(from, st::AVAILABLE)?;
        Ok(db::volumes::release(conn, id, from, msg, db::now())?)
    }
}

pub fn mount(ctx: &Ctx, volume_id: &str, instance_id: &str) -> ApiResult<Volume> {
    let mut conn = ctx.conn()?;
    let v = load(&mut conn, volume_id)?;
    let inst = hotplug::instance_for_attach(&mut conn, instance_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "mounted"));
    }
    if v.status != st::AVAILABLE {
        return Err(not_available(&v));
    }
    reserve(ctx, &mut conn, &v, &inst)?;
    hotplug::complete_attach::<Volume>(ctx, &mut conn, volume_id, instance_id)
}

pub fn unmount(ctx: &Ctx, volume_id: &str, instance_id: &str) -> ApiResult<Volume> {
    let mut conn = ctx.conn()?;
    let v = load(&mut conn, volume_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "unmounted"));
    }
    hotplug::detach_resource(ctx, &mut conn, v, instance_id)
}

pub fn delete(ctx: &Ctx, volume_id: &str) -> ApiResult<crate::ceph::Removal> {
    let mut conn = ctx.conn()?;
    let v = load(&mut conn, volume_id)?;
    if v.is_root {
        return Err(root_refusal(&v, "deleted"));
    }
    let from = v.status.as_str();
    if !matches!(from, st::AVAILABLE | st::ERROR) {
        return Err(not_available(&v));
    }
    check(from, st::DELETING)?;
    if !db::volumes::transition(&mut conn, volume_id, from, st::DELETING, None, db::now())? {
        return Err(not_available(&load(&mut conn, volume_id)?));
    }
    let removal = match ctx.ceph.remove_image(&ctx.cfg.ceph.volumes_pool, volume_id) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("could not remove the RBD image: {e}");
            let _ = db::volumes::transition(
                &mut conn,
                volume_id,
                st::DELETING,
                from,
                Some(&msg),
                db::now(),
            );
            return Err(ApiError::unavailable(
                Backend::Ceph,
                format!("{msg}; the volume is kept"),
            ));
        }
    };
    db::volumes::delete_in_status(&mut conn, volume_id, st::DELETING)?;
    Ok(removal)
}

/// Start-up repair of volumes a crash left attaching or detaching (see `hotplug::reconcile`).
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut stale = db::volumes::stale_in_status(&mut conn, st::ATTACHING, cutoff)?;
    stale.extend(db::volumes::stale_in_status(
        &mut conn,
        st::DETACHING,
        cutoff,
    )?);
    hotplug::reconcile(ctx, &mut conn, stale)
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
