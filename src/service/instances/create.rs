//! Instance create, the part a request waits for: check the request, record the instance
//! (`creating`), reserve its volumes and NICs so that no one else takes them, and start the
//! background build. Anything refused here leaves nothing behind.

use super::build::{self, BootNics};
use super::{MAX_CPU, MAX_MEMORY_MIB, MAX_ROOT_GIB, MIN_MEMORY_MIB};
use crate::db::images::Image;
use crate::db::instances::{Instance, InstanceForm};
use crate::db::nics::{Nic, NicUpdate};
use crate::db::volumes::{Volume, VolumeForm, VolumeUpdate};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{
    ImageId, ImageStatus, InstanceId, InstanceStatus as St, NicId, NicStatus, VolumeId,
    VolumeStatus,
};
use crate::service::auth::{self, Owned};
use crate::service::quotas;
use crate::service::volumes::{GIB, MAX_VOLUME_GIB};
use crate::service::{fresh_id, hosts, load, nics, operations, placement, Ctx, ID_TRIES};
use std::sync::Arc;

pub struct NewInstance {
    pub instance_name: String,
    pub image_id: ImageId,
    pub cpu: u32,
    pub memory: u64,
    pub root_size: Option<u64>,
    pub describe: String,
    /// Existing available volumes to attach at boot, in this order (vdb, vdc...).
    pub volume_ids: Vec<VolumeId>,
    /// GiB of a new data volume to create and attach after them.
    pub data_volume_size: Option<u64>,
    /// Existing available NICs to attach at boot, in this order; none: one is made on the
    /// default bridge (if `network.auto_nic`).
    pub network_interface_ids: Vec<NicId>,
    /// Its project (and that of the root disk, the new data volume and the NIC it makes).
    pub project_id: String,
    /// Host name, user data and SSH keys for the config drive.
    pub guest: super::GuestConfig,
    /// The host an admin pinned it to (else placement chooses).
    pub host_id: Option<crate::model::HostId>,
}

/// Disk devices of data volumes, in attach order (vda is the root disk).
pub const DATA_TARGETS: [&str; 25] = [
    "vdb", "vdc", "vdd", "vde", "vdf", "vdg", "vdh", "vdi", "vdj", "vdk", "vdl", "vdm", "vdn",
    "vdo", "vdp", "vdq", "vdr", "vds", "vdt", "vdu", "vdv", "vdw", "vdx", "vdy", "vdz",
];

pub fn create(ctx: Arc<Ctx>, req: NewInstance) -> ApiResult<Instance> {
    validate(&req)?;
    // Ceph down: refused now, rather than accepted and failed in the background (a host that
    // does not answer is placement's: it is not chosen).
    ctx.ceph.ensure_up()?;
    hosts::configured(&ctx)?;
    let mut conn = ctx.conn()?;
    let bridges = check_devices(&ctx, &mut conn, &req)?;
    let image = bootable_image(&mut conn, &req)?;
    let ask = quota_ask(&ctx, &req, &image);
    let need = placement::Need {
        vcpus: req.cpu,
        memory_mib: req.memory,
        bridges,
    };
    // The quota check, the host's reservation, the row and the device reservations in one
    // transaction: concurrent creates of a project pass the check one at a time, concurrent
    // creates on a host take its room one at a time, and a failure anywhere leaves nothing.
    let mut tries = 0;
    let (id, nics, host) = loop {
        let placed = quotas::in_transaction(&mut conn, |c| {
            quotas::admit(c, &req.project_id, &ask)?;
            let host = placement::reserve(&ctx, c, &need, req.host_id.as_ref())?;
            let id = insert(c, &req, &image, &host)?;
            reserve_volumes(c, &id, &req)?;
            let nics = reserve_nics(&ctx, c, &id, &req).map_err(|(e, _)| e)?;
            Ok((id, nics, host))
        });
        match placed {
            // Every host in service found offline (or not reached yet: a fresh database's
            // first host): the probe may lag; ask them now, once, holding no connection.
            Err(e) if e.code() == ErrorCode::LibvirtUnavailable && tries == 0 => {
                tries += 1;
                drop(conn);
                hosts::probe_now(&ctx, |h| !h.online)?;
                conn = ctx.conn()?;
            }
            r => break r?,
        }
    };
    // The chosen host must answer now: else refused at once, rather than failed in the build.
    if let Err(e) = hosts::connection_of(&ctx, &host).ping() {
        unrecord(&mut conn, &id, &nics);
        return Err(e.into());
    }
    // From here the create is an operation: if this process dies, another one undoes it.
    let state = build::CreateState::new(nics);
    let op = match operations::start(&ctx, &mut conn, super::CREATE, id.as_str(), &state) {
        Ok(op) => op,
        Err(e) => {
            unrecord(&mut conn, &id, &state.into_nics());
            return Err(e);
        }
    };
    let (bg, bid, guest) = (ctx.clone(), id.clone(), req.guest);
    let spawned = crate::context::spawn_named(format!("create-{id}"), move || {
        build::run(&bg, &bid, &image, &guest, state, op)
    });
    if let Err(e) = spawned {
        // The operation went with the closure: no longer renewed, it is taken over (undone)
        // once its lease runs out.
        return Err(ApiError::Internal(format!(
            "could not start the creation: {e}; it is undone within {}s",
            ctx.cfg.operations.lease_secs + ctx.cfg.operations.takeover_interval_secs
        )));
    }
    // As recorded, with the first NIC's address.
    load(&mut conn, &id)
}

pub(super) fn bounded(name: &str, v: u64, min: u64, max: u64, unit: &str) -> ApiResult<()> {
    if (min..=max).contains(&v) {
        return Ok(());
    }
    Err(ApiError::invalid(format!(
        "{name}: must be between {min} and {max}{unit}"
    )))
}

/// The request's own limits, before anything is read.
fn validate(req: &NewInstance) -> ApiResult<()> {
    bounded("cpu", req.cpu.into(), 1, MAX_CPU.into(), "")?;
    bounded("memory", req.memory, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB")?;
    if let Some(r) = req.root_size {
        bounded("root_size", r, 1, MAX_ROOT_GIB, " GiB")?;
    }
    if let Some(g) = req.data_volume_size {
        bounded("data_volume_size", g, 1, MAX_VOLUME_GIB, " GiB")?;
    }
    let wanted = req.volume_ids.len() + usize::from(req.data_volume_size.is_some());
    if wanted > DATA_TARGETS.len() {
        return Err(ApiError::invalid(format!(
            "volume_ids: at most {} data volumes",
            DATA_TARGETS.len()
        )));
    }
    no_repeats("volume_ids", &req.volume_ids)?;
    no_repeats("network_interface_ids", &req.network_interface_ids)?;
    super::guest::validate(&req.guest)
}

fn no_repeats<T: PartialEq + std::fmt::Display>(name: &str, items: &[T]) -> ApiResult<()> {
    for (i, v) in items.iter().enumerate() {
        if items[..i].contains(v) {
            return Err(ApiError::invalid(format!("{name}: {v} is given twice")));
        }
    }
    Ok(())
}

/// The given NICs and volumes exist and are free (the reservation later makes sure of it).
/// Checks the volumes and NICs given; returns the bridges the instance's NICs plug into (the
/// default one for the NIC create makes).
fn check_devices(ctx: &Ctx, conn: &mut DbConn, req: &NewInstance) -> ApiResult<Vec<String>> {
    let mut bridges: Vec<String> = vec![];
    if req.network_interface_ids.is_empty() && ctx.cfg.network.auto_nic {
        bridges.push(ctx.cfg.network.default_bridge.clone());
    }
    for n in &req.network_interface_ids {
        let nic = in_project::<Nic>(conn, n, &req.project_id)?;
        if !bridges.contains(&nic.bridge) {
            bridges.push(nic.bridge.clone());
        }
        if nic.status != NicStatus::Available {
            return Err(ApiError::conflict(
                ErrorCode::NetworkInterfaceInUse,
                format!(
                    "network interface {n} is {} and cannot be attached to a new instance",
                    nic.status
                ),
            ));
        }
    }
    for v in &req.volume_ids {
        let vol = in_project::<Volume>(conn, v, &req.project_id)?;
        if vol.is_root || vol.status != VolumeStatus::Available {
            return Err(ApiError::conflict(
                ErrorCode::VolumeInUse,
                format!(
                    "volume {v} is {} and cannot be attached to a new instance",
                    vol.status
                ),
            ));
        }
    }
    Ok(bridges)
}

/// A row the new instance's project may use (another project's is as unknown as a missing
/// one, a public image is everyone's).
fn in_project<R: Owned>(conn: &mut DbConn, id: &R::Id, project: &str) -> ApiResult<R> {
    auth::check_access(conn, Some(project), id, auth::Access::Read)
}

/// The image (public, or of the instance's project), available, and not larger than the root
/// disk asked for.
fn bootable_image(conn: &mut DbConn, req: &NewInstance) -> ApiResult<Image> {
    let image = in_project::<Image>(conn, &req.image_id, &req.project_id)?;
    if image.status != ImageStatus::Available {
        return Err(ApiError::conflict(
            ErrorCode::ImageBusy,
            format!(
                "image {} is {}; an instance needs an available image",
                image.image_id, image.status
            ),
        ));
    }
    let image_gib = image_gib(&image);
    if let Some(r) = req.root_size.filter(|r| *r < image_gib) {
        return Err(ApiError::unprocessable(
            ErrorCode::RootSizeTooSmall,
            format!("root_size {r} GiB is smaller than the image ({image_gib} GiB)"),
        ));
    }
    Ok(image)
}

/// What the create takes of its project's quota: the instance, its root disk and new data
/// volume, and the NIC it makes when none is given.
fn quota_ask(ctx: &Ctx, req: &NewInstance, image: &Image) -> quotas::Ask {
    let root = req.root_size.unwrap_or_else(|| image_gib(image));
    let data = req.data_volume_size.unwrap_or(0);
    quotas::Ask {
        instances: 1,
        vcpus: req.cpu.into(),
        memory_mib: req.memory,
        volumes: u64::from(req.data_volume_size.is_some()),
        volume_gib: root + data,
        network_interfaces: u64::from(
            req.network_interface_ids.is_empty() && ctx.cfg.network.auto_nic,
        ),
        images: 0,
    }
}

fn image_gib(image: &Image) -> u64 {
    image.image_size.div_ceil(GIB).max(1)
}

/// Records the instance `creating` under a fresh id.
fn insert(
    conn: &mut DbConn,
    req: &NewInstance,
    image: &Image,
    host: &crate::db::hosts::Host,
) -> ApiResult<InstanceId> {
    fresh_id("instance id", ID_TRIES, || {
        let form = InstanceForm {
            instance_id: InstanceId::generate(),
            instance_name: req.instance_name.clone(),
            status: St::Creating,
            host_ip: host.address.clone(),
            host_id: host.host_id.clone(),
            cpu: req.cpu,
            memory: req.memory,
            image_id: image.image_id.clone(),
            root_size: Some(req.root_size.unwrap_or_else(|| image_gib(image))),
            describe: req.describe.clone(),
            progress_step: "queued".into(),
            create_time: db::now(),
            project_id: req.project_id.clone(),
        };
        match db::instances::insert(conn, &form) {
            Ok(()) => Ok(Some(form.instance_id)),
            Err(e) if db::is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
}

/// Reserves the given volumes for the new instance (`available -> attaching`, so no one else
/// takes them meanwhile) and records the new data volume (`creating`), in device order.
fn reserve_volumes(conn: &mut DbConn, id: &InstanceId, req: &NewInstance) -> ApiResult<()> {
    let (volume_ids, data_gib) = (&req.volume_ids, req.data_volume_size);
    let now = db::now();
    for (v, target) in volume_ids.iter().zip(DATA_TARGETS) {
        let reserve = VolumeUpdate::reserve(id, target, now);
        if !db::volumes::transition_with(conn, v, VolumeStatus::Available, &reserve)? {
            return Err(ApiError::conflict(
                ErrorCode::VolumeInUse,
                format!("volume {v} was taken by another request"),
            ));
        }
    }
    if let Some(gib) = data_gib {
        let form = VolumeForm {
            volume_id: VolumeId::generate(),
            volume_name: format!("data of {id}"),
            volume_size: gib,
            status: VolumeStatus::Creating,
            instance_id: Some(id.clone()),
            is_root: false,
            target_dev: Some(DATA_TARGETS[volume_ids.len()].to_string()),
            describe: String::new(),
            attach_time: None,
            create_time: now,
            project_id: req.project_id.clone(),
            delete_with_instance: true,
        };
        db::volumes::insert(conn, &form)?;
    }
    Ok(())
}

/// Gives back the existing volumes a failed create had reserved, and drops the rows of data
/// volumes it had not started making (those it made are removed by their own undo).
pub fn release_reserved(conn: &mut DbConn, id: &InstanceId) {
    let vols = db::volumes::of_instance(conn, id).unwrap_or_default();
    for v in vols.iter().filter(|v| !v.is_root) {
        let r = if v.status == VolumeStatus::Creating {
            db::volumes::delete(conn, &v.volume_id).map(|_| ())
        } else {
            let released = VolumeUpdate::released(None, db::now());
            db::volumes::transition_with(conn, &v.volume_id, VolumeStatus::Attaching, &released)
                .map(|_| ())
        };
        if let Err(e) = r {
            log::error!("instance {id}: cannot release volume {}: {e}", v.volume_id);
        }
    }
}

/// Reserves the given NICs (`available -> attaching`), or makes one on the default bridge when
/// none is given and `network.auto_nic` is on; records the first one's IP as the instance's.
/// On failure, says which NICs it had already reserved.
fn reserve_nics(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &InstanceId,
    req: &NewInstance,
) -> Result<BootNics, (ApiError, BootNics)> {
    let given = &req.network_interface_ids;
    let mut out = BootNics::default();
    for n in given {
        let reserve = NicUpdate::reserve(id, db::now());
        match db::nics::transition_with(conn, n, NicStatus::Available, &reserve) {
            Ok(true) => out.ids.push(n.clone()),
            Ok(false) => {
                let e = ApiError::conflict(
                    ErrorCode::NetworkInterfaceInUse,
                    format!("network interface {n} was taken by another request"),
                );
                return Err((e, out));
            }
            Err(e) => return Err((e.into(), out)),
        }
    }
    if given.is_empty() && ctx.cfg.network.auto_nic {
        let req = nics::NewNic {
            name: format!("nic of {id}"),
            bridge: None,
            mac: None,
            ip: None,
            describe: format!("made with instance {id}"),
            project_id: req.project_id.clone(),
        };
        match nics::insert_new(ctx, conn, req, Some(id)) {
            Ok(nic) => {
                out.ids.push(nic.network_interface_id.clone());
                out.auto = Some(nic.network_interface_id);
            }
            Err(e) => return Err((e, out)),
        }
    }
    if let Some(first) = out.ids.first() {
        let ip = db::nics::get(conn, first).ok().flatten().and_then(|n| n.ip);
        if let Err(e) = db::instances::set_ip(conn, id, ip.as_deref()) {
            return Err((e.into(), out));
        }
    }
    Ok(out)
}

/// Undoes what `create` recorded before its operation started: the NICs and volumes it
/// reserved, the row, and the host's reservation (one transaction for the last two).
fn unrecord(conn: &mut DbConn, id: &InstanceId, nics: &BootNics) {
    release_nics(conn, nics);
    release_reserved(conn, id);
    let r = quotas::in_transaction(conn, |c| {
        if let Some(i) = db::instances::get(c, id)? {
            if db::instances::delete_in_status(c, id, St::Creating)? {
                db::hosts::release(c, &i.host_id, i.cpu, i.memory)?;
            }
        }
        Ok(())
    });
    if let Err(e) = r {
        log::error!("instance {id}: cannot remove its row after a refused create: {e}");
    }
}

/// Gives back NICs a failed create reserved, and deletes the one it made.
pub fn release_nics(conn: &mut DbConn, nics: &BootNics) {
    for n in &nics.ids {
        let r = if nics.auto.as_ref() == Some(n) {
            db::nics::delete_in_status(conn, n, NicStatus::Attaching)
        } else {
            let released = NicUpdate::released(None, db::now());
            db::nics::transition_with(conn, n, NicStatus::Attaching, &released)
        };
        if let Err(e) = r {
            log::error!("cannot release network interface {n}: {e}");
        }
    }
}
