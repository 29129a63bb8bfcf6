//! The background part of instance create: protected snapshot of the image, the root disk cloned
//! from it (recorded as the root volume), resized, data volume made, domain defined and started,
//! progress persisted after each step. A failed step undoes every step before it and leaves the
//! instance `error` with the reason.

use super::create::{release_nics, release_reserved};
use super::{console_path, set_status, BASE_SNAPSHOT};
use crate::db::images::{Image, ImageUpdate};
use crate::db::instances::Instance;
use crate::db::volumes::{Volume, VolumeForm};
use crate::db::{self, DbConn};
use crate::model::{InstanceId, InstanceStatus as St, NicId, VolumeId, VolumeStatus};
use crate::service::volumes::{self, GIB};
use crate::service::{load, nics, transition, Ctx, Pluggable};
use crate::xml::domain::{self, DomainSpec};
use diesel::Connection;

/// The NICs a create attaches, in order, and which of them it made itself.
#[derive(Default)]
pub struct BootNics {
    pub ids: Vec<NicId>,
    pub auto: Option<NicId>,
}

/// What a create step made, so that a later failure can take it back.
enum Made {
    DataVolume(VolumeId),
    RootVolumeRow(VolumeId),
    RootClone(VolumeId),
    Domain(InstanceId),
    Running(InstanceId),
}

type Step<T = ()> = Result<T, String>;

/// Runs the build. Never panics into the void: every outcome lands in the row.
pub fn run(ctx: &Ctx, id: &InstanceId, image: &Image, nics: BootNics) {
    let mut conn = match ctx.conn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("instance {id}: cannot reach MySQL to create it: {e}");
            return;
        }
    };
    let mut made = vec![];
    match steps(ctx, &mut conn, id, image, &nics, &mut made) {
        Ok(()) => log::info!("instance {id} is running"),
        Err(e) => fail(ctx, &mut conn, id, &nics, made, e),
    }
}

/// Undoes what was made, gives back what was reserved, records `error` with the reason.
fn fail(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &InstanceId,
    nics: &BootNics,
    made: Vec<Made>,
    e: String,
) {
    let undo_failures = undo(ctx, conn, made);
    release_reserved(conn, id);
    release_nics(conn, nics);
    let _ = std::fs::remove_file(console_path(ctx, id));
    let mut msg = e;
    if !undo_failures.is_empty() {
        msg = format!(
            "{msg}; cleaning up also failed: {}",
            undo_failures.join("; ")
        );
    }
    log::warn!("instance {id}: creation failed: {msg}");
    // One transaction: a poll sees `creating` at its last step or `error` at `failed`, never
    // `creating` at `failed` with its progress gone back to 0.
    let recorded = conn.transaction(|c| {
        db::instances::set_progress(c, id, 0, "failed", db::now())?;
        set_status(c, id, St::Creating, St::Error, Some(&msg))
    });
    if let Err(e) = recorded {
        log::error!("instance {id}: cannot record the failure: {e}");
    }
}

fn undo(ctx: &Ctx, conn: &mut DbConn, made: Vec<Made>) -> Vec<String> {
    let pool = &ctx.cfg.ceph.volumes_pool;
    let rm_image = |v: &VolumeId| {
        ctx.ceph
            .remove_image(pool, v.as_str())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let mut failures = vec![];
    for m in made.into_iter().rev() {
        let r: Step = match &m {
            Made::Running(n) => ctx.hv.force_off(n.as_str()).map_err(|e| e.to_string()),
            Made::Domain(n) => ctx.hv.undefine(n.as_str()).map_err(|e| e.to_string()),
            Made::RootClone(v) => rm_image(v),
            Made::RootVolumeRow(v) => db::volumes::delete(conn, v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Made::DataVolume(v) => rm_image(v).and_then(|_| {
                db::volumes::delete(conn, v)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }),
        };
        if let Err(e) = r {
            failures.push(e);
        }
    }
    failures
}

fn progress(conn: &mut DbConn, id: &InstanceId, pct: u8, what: &str) -> Step {
    db::instances::set_progress(conn, id, pct, what, db::now())
        .map(|_| ())
        .map_err(|e| format!("recording progress: {e}"))
}

fn steps(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &InstanceId,
    image: &Image,
    nics: &BootNics,
    made: &mut Vec<Made>,
) -> Step {
    let inst: Instance = load(conn, id).map_err(|e| e.to_string())?;
    progress(conn, id, 10, "preparing the image snapshot")?;
    snapshot_image(ctx, conn, image)?;
    progress(conn, id, 30, "cloning the root disk")?;
    let root = clone_root(ctx, conn, &inst, image, made)?;
    let data = make_data_volumes(ctx, conn, id, made)?;
    progress(conn, id, 60, "defining the domain")?;
    define(ctx, conn, &inst, image, &root, &data, nics)?;
    made.push(Made::Domain(id.clone()));
    progress(conn, id, 80, "starting")?;
    ctx.hv
        .start(id.as_str())
        .map_err(|e| format!("the instance could not start: {}", e.message()))?;
    made.push(Made::Running(id.clone()));
    record_running(conn, id, &data, nics)
}

/// The protected snapshot root disks are cloned from (made once per image).
fn snapshot_image(ctx: &Ctx, conn: &mut DbConn, image: &Image) -> Step {
    let pool = &ctx.cfg.ceph.images_pool;
    ctx.ceph
        .ensure_protected_snapshot(pool, image.image_id.as_str(), BASE_SNAPSHOT)
        .map_err(|e| format!("could not snapshot image {}: {e}", image.image_id))?;
    if image.snapshot_name.is_none() {
        let changes = ImageUpdate {
            snapshot_name: Some(BASE_SNAPSHOT.into()),
            ..Default::default()
        };
        db::images::update(conn, &image.image_id, &changes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The root volume: recorded, cloned copy-on-write from the image's snapshot, grown to the
/// asked size, then `in-use`.
fn clone_root(
    ctx: &Ctx,
    conn: &mut DbConn,
    inst: &Instance,
    image: &Image,
    made: &mut Vec<Made>,
) -> Step<VolumeId> {
    let c = &ctx.cfg.ceph;
    let now = db::now();
    let root = VolumeForm {
        volume_id: VolumeId::generate(),
        volume_name: format!("root of {}", inst.instance_id),
        volume_size: inst.root_size.unwrap_or(1),
        status: VolumeStatus::Creating,
        instance_id: Some(inst.instance_id.clone()),
        is_root: true,
        target_dev: Some("vda".into()),
        describe: String::new(),
        attach_time: Some(now),
        create_time: now,
    };
    let vid = root.volume_id.clone();
    db::volumes::insert(conn, &root).map_err(|e| format!("recording the root volume: {e}"))?;
    made.push(Made::RootVolumeRow(vid.clone()));
    ctx.ceph
        .clone_image(
            &c.images_pool,
            image.image_id.as_str(),
            BASE_SNAPSHOT,
            &c.volumes_pool,
            vid.as_str(),
        )
        .map_err(|e| format!("could not clone the root disk: {e}"))?;
    made.push(Made::RootClone(vid.clone()));
    let root_bytes = root.volume_size * GIB;
    if root_bytes > image.image_size {
        progress(conn, &inst.instance_id, 45, "resizing the root disk")?;
        ctx.ceph
            .resize_image(&c.volumes_pool, vid.as_str(), root_bytes)
            .map_err(|e| format!("could not resize the root disk: {e}"))?;
    }
    transition::<Volume>(
        conn,
        &vid,
        VolumeStatus::Creating,
        VolumeStatus::InUse,
        None,
    )
    .map_err(|e| e.to_string())?;
    Ok(vid)
}

/// Makes the RBD image of the new data volume (if one was asked for); returns every data
/// volume of the instance, in device order.
fn make_data_volumes(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &InstanceId,
    made: &mut Vec<Made>,
) -> Step<Vec<Volume>> {
    let data: Vec<Volume> = db::volumes::of_instance(conn, id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|v| !v.is_root)
        .collect();
    for v in data.iter().filter(|v| v.status == VolumeStatus::Creating) {
        progress(conn, id, 50, "creating the data volume")?;
        made.push(Made::DataVolume(v.volume_id.clone()));
        ctx.ceph
            .create_image(
                &ctx.cfg.ceph.volumes_pool,
                v.volume_id.as_str(),
                v.volume_size * GIB,
            )
            .map_err(|e| format!("could not create the data volume: {e}"))?;
        let (from, to) = (VolumeStatus::Creating, VolumeStatus::Attaching);
        transition::<Volume>(conn, &v.volume_id, from, to, None).map_err(|e| e.to_string())?;
    }
    Ok(data)
}

/// Builds the domain XML from the OS template and defines the domain.
fn define(
    ctx: &Ctx,
    conn: &mut DbConn,
    inst: &Instance,
    image: &Image,
    root: &VolumeId,
    data: &[Volume],
    nics: &BootNics,
) -> Step {
    let c = &ctx.cfg;
    let mut disks = vec![volumes::disk(ctx, root, "vda")];
    for v in data {
        let target = v.target_dev.as_deref().unwrap_or("vdb");
        disks.push(volumes::disk(ctx, &v.volume_id, target));
    }
    let mut interfaces = vec![];
    for n in &nics.ids {
        let row = db::nics::get(conn, n)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("network interface {n} vanished"))?;
        interfaces.push(nics::interface(&row));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let console = console_path(ctx, &inst.instance_id);
    let spec = DomainSpec {
        domain_type: &c.libvirt.domain_type,
        name: inst.instance_id.as_str(),
        uuid: &uuid,
        title: &inst.instance_name,
        description: &inst.describe,
        instance_id: inst.instance_id.as_str(),
        memory_mib: inst.memory,
        vcpu: inst.cpu,
        machine: &c.libvirt.machine,
        emulator: &c.libvirt.emulator,
        disks: &disks,
        interfaces: &interfaces,
        console_log: &console,
    };
    let xml = domain::build(ctx.templates.for_os(&image.os_type), &spec)
        .map_err(|e| format!("could not build the domain XML: {e}"))?;
    ctx.hv
        .define(&xml)
        .map_err(|e| format!("the hypervisor refused the domain: {}", e.message()))
}

/// The domain runs: its volumes and NICs are attached, the instance `running`.
fn record_running(conn: &mut DbConn, id: &InstanceId, data: &[Volume], nics: &BootNics) -> Step {
    for v in data {
        Volume::mark_attached(conn, &v.volume_id).map_err(|e| e.to_string())?;
    }
    for n in &nics.ids {
        crate::db::nics::Nic::mark_attached(conn, n).map_err(|e| e.to_string())?;
    }
    progress(conn, id, 100, "running")?;
    match set_status(conn, id, St::Creating, St::Running, None) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the instance changed state during creation".into()),
        Err(e) => Err(format!("recording the running instance: {e}")),
    }
}
