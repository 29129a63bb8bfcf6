//! Instances: a libvirt domain booting by BIOS from a copy-on-write RBD clone of its image.
//!
//! Create records the instance (`creating`) and answers at once; a background thread then takes
//! the steps (protected snapshot of the image, clone into the volumes pool recorded as the root
//! volume, resize, define, start), persisting progress after each. A failed step undoes every
//! step before it and leaves the instance `error` with the reason.

use super::state::instance as st;
use super::{Ctx, Paging};
use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::volumes::Volume;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend};
use crate::ids;
use crate::virt::{Power, Shutdown};
use crate::xml::devices::{Disk, RbdAccess};
use crate::xml::domain::{self, DomainSpec};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Name of the protected snapshot of an image that root disks are cloned from.
pub const BASE_SNAPSHOT: &str = "api-web-base";
const GIB: u64 = 1 << 30;
pub const MAX_CPU: u32 = 64;
pub const MIN_MEMORY_MIB: u64 = 64;
pub const MAX_MEMORY_MIB: u64 = 1 << 20;
pub const MAX_ROOT_GIB: u64 = 65536;

pub struct NewInstance {
    pub instance_name: String,
    pub image_id: String,
    pub cpu: u32,
    pub memory: u64,
    pub root_size: Option<u64>,
    pub describe: String,
    /// Existing available volumes to attach at boot, in this order (vdb, vdc...).
    pub volume_ids: Vec<String>,
    /// GiB of a new data volume to create and attach after them.
    pub data_volume_size: Option<u64>,
    /// Existing available NICs to attach at boot, in this order; none: one is made on the
    /// default bridge (if `network.auto_nic`).
    pub network_interface_ids: Vec<String>,
}

/// The NICs a create attaches, in order, and which of them it made itself.
struct BootNics {
    ids: Vec<String>,
    auto: Option<String>,
}

/// An instance with what hangs from it.
pub struct Detail {
    pub instance: Instance,
    pub image: Option<Image>,
    pub volumes: Vec<Volume>,
    pub nics: Vec<Nic>,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "instance_not_found",
        format!("instance {id} does not exist"),
    )
}

fn load(conn: &mut DbConn, id: &str) -> ApiResult<Instance> {
    db::instances::get(conn, id)?.ok_or_else(|| not_found(id))
}

fn transition(
    conn: &mut DbConn,
    id: &str,
    from: &str,
    to: &str,
    err: Option<&str>,
) -> ApiResult<bool> {
    if !st::valid_transition(from, to) {
        return Err(ApiError::Internal(format!(
            "illegal instance transition {from} -> {to}"
        )));
    }
    Ok(db::instances::transition(
        conn,
        id,
        from,
        to,
        err,
        db::now(),
    )?)
}

pub fn console_path(ctx: &Ctx, id: &str) -> String {
    format!(
        "{}/{id}.console.log",
        ctx.cfg.libvirt.console_log_dir.trim_end_matches('/')
    )
}

pub fn create(ctx: Arc<Ctx>, req: NewInstance) -> ApiResult<Instance> {
    if req.cpu == 0 || req.cpu > MAX_CPU {
        return Err(ApiError::invalid(format!(
            "cpu: must be between 1 and {MAX_CPU}"
        )));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&req.memory) {
        return Err(ApiError::invalid(format!(
            "memory: must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB} MiB"
        )));
    }
    if let Some(r) = req.root_size {
        if r == 0 || r > MAX_ROOT_GIB {
            return Err(ApiError::invalid(format!(
                "root_size: must be between 1 and {MAX_ROOT_GIB} GiB"
            )));
        }
    }
    if let Some(g) = req.data_volume_size {
        if g == 0 || g > super::volumes::MAX_VOLUME_GIB {
            return Err(ApiError::invalid(format!(
                "data_volume_size: must be between 1 and {} GiB",
                super::volumes::MAX_VOLUME_GIB
            )));
        }
    }
    let wanted = req.volume_ids.len() + usize::from(req.data_volume_size.is_some());
    if wanted > DATA_TARGETS.len() {
        return Err(ApiError::invalid(format!(
            "volume_ids: at most {} data volumes",
            DATA_TARGETS.len()
        )));
    }
    for (i, v) in req.volume_ids.iter().enumerate() {
        if req.volume_ids[..i].contains(v) {
            return Err(ApiError::invalid(format!("volume_ids: {v} is given twice")));
        }
    }
    for (i, n) in req.network_interface_ids.iter().enumerate() {
        if req.network_interface_ids[..i].contains(n) {
            return Err(ApiError::invalid(format!(
                "network_interface_ids: {n} is given twice"
            )));
        }
    }
    let mut conn = ctx.conn()?;
    for n in &req.network_interface_ids {
        let nic = db::nics::get(&mut conn, n)?.ok_or_else(|| {
            ApiError::not_found(
                "network_interface_not_found",
                format!("network interface {n} does not exist"),
            )
        })?;
        if nic.status != super::state::nic::AVAILABLE {
            return Err(ApiError::conflict(
                "network_interface_in_use",
                format!(
                    "network interface {n} is {} and cannot be attached to a new instance",
                    nic.status
                ),
            ));
        }
    }
    for v in &req.volume_ids {
        let vol = db::volumes::get(&mut conn, v)?.ok_or_else(|| {
            ApiError::not_found("volume_not_found", format!("volume {v} does not exist"))
        })?;
        if vol.is_root || vol.status != super::state::volume::AVAILABLE {
            return Err(ApiError::conflict(
                "volume_in_use",
                format!(
                    "volume {v} is {} and cannot be attached to a new instance",
                    vol.status
                ),
            ));
        }
    }
    let image = db::images::get(&mut conn, &req.image_id)?.ok_or_else(|| {
        ApiError::not_found(
            "image_not_found",
            format!("image {} does not exist", req.image_id),
        )
    })?;
    if image.status != super::state::image::AVAILABLE {
        return Err(ApiError::conflict(
            "image_busy",
            format!(
                "image {} is {}; an instance needs an available image",
                image.image_id, image.status
            ),
        ));
    }
    let image_gib = image.image_size.div_ceil(GIB).max(1);
    if let Some(r) = req.root_size {
        if r < image_gib {
            return Err(ApiError::unprocessable(
                "root_size_too_small",
                format!("root_size {r} GiB is smaller than the image ({image_gib} GiB)"),
            ));
        }
    }
    let now = db::now();
    let mut row = Instance {
        instance_id: String::new(),
        instance_name: req.instance_name,
        status: st::CREATING.into(),
        ip: None,
        host_ip: ctx.cfg.libvirt.host_ip.clone(),
        host: ctx.cfg.libvirt.uri.clone(),
        cpu: req.cpu,
        memory: req.memory,
        image_id: image.image_id.clone(),
        root_size: Some(req.root_size.unwrap_or(image_gib)),
        describe: req.describe,
        progress: 0,
        progress_step: "queued".into(),
        error_message: None,
        create_time: now,
        update_time: now,
    };
    let mut inserted = false;
    for _ in 0..8 {
        row.instance_id = ids::new_id(ids::INSTANCE);
        match db::instances::insert(&mut conn, &row) {
            Ok(()) => {
                inserted = true;
                break;
            }
            Err(e) if db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    if !inserted {
        return Err(ApiError::Internal(
            "could not find a free instance id after 8 tries".into(),
        ));
    }
    if let Err(e) = reserve_volumes(
        &mut conn,
        &row.instance_id,
        &req.volume_ids,
        req.data_volume_size,
    ) {
        release_reserved(&mut conn, &row.instance_id);
        let _ = db::instances::delete_in_status(&mut conn, &row.instance_id, st::CREATING);
        return Err(e);
    }
    let nics = match reserve_nics(
        &ctx,
        &mut conn,
        &row.instance_id,
        &req.network_interface_ids,
    ) {
        Ok(n) => n,
        Err((e, partial)) => {
            release_nics(&mut conn, &partial);
            release_reserved(&mut conn, &row.instance_id);
            let _ = db::instances::delete_in_status(&mut conn, &row.instance_id, st::CREATING);
            return Err(e);
        }
    };
    let (bg, id) = (ctx.clone(), row.instance_id.clone());
    let spawned = crate::context::spawn_named(format!("create-{id}"), move || {
        build(&bg, &id, &image, nics)
    });
    if let Err(e) = spawned {
        let msg = format!("could not start the creation: {e}");
        transition(
            &mut conn,
            &row.instance_id,
            st::CREATING,
            st::ERROR,
            Some(&msg),
        )?;
        return Err(ApiError::Internal(msg));
    }
    // As recorded, with the first NIC's address.
    load(&mut conn, &row.instance_id)
}

/// Disk devices of data volumes, in attach order (vda is the root disk).
const DATA_TARGETS: [&str; 25] = [
    "vdb", "vdc", "vdd", "vde", "vdf", "vdg", "vdh", "vdi", "vdj", "vdk", "vdl", "vdm", "vdn",
    "vdo", "vdp", "vdq", "vdr", "vds", "vdt", "vdu", "vdv", "vdw", "vdx", "vdy", "vdz",
];

/// Reserves the given volumes for the new instance (`available -> attaching`, so no one else
/// takes them meanwhile) and records the new data volume (`creating`), in device order.
fn reserve_volumes(
    conn: &mut DbConn,
    id: &str,
    volume_ids: &[String],
    data_gib: Option<u64>,
) -> ApiResult<()> {
    let now = db::now();
    for (v, target) in volume_ids.iter().zip(DATA_TARGETS) {
        if !db::volumes::reserve(conn, v, id, target, now)? {
            return Err(ApiError::conflict(
                "volume_in_use",
                format!("volume {v} was taken by another request"),
            ));
        }
    }
    if let Some(gib) = data_gib {
        let row = Volume {
            volume_id: ids::new_id(ids::VOLUME),
            volume_name: format!("data of {id}"),
            volume_size: gib,
            status: super::state::volume::CREATING.into(),
            instance_id: Some(id.to_string()),
            is_root: false,
            target_dev: Some(DATA_TARGETS[volume_ids.len()].to_string()),
            describe: String::new(),
            error_message: None,
            attach_time: None,
            create_time: now,
            update_time: now,
        };
        db::volumes::insert(conn, &row)?;
    }
    Ok(())
}

/// Gives back the existing volumes a failed create had reserved, and drops the rows of data
/// volumes it had not started making (those it made are removed by their own undo).
fn release_reserved(conn: &mut DbConn, id: &str) {
    let now = db::now();
    let vols = db::volumes::of_instance(conn, id).unwrap_or_default();
    for v in vols.iter().filter(|v| !v.is_root) {
        let r = if v.status == super::state::volume::CREATING {
            db::volumes::delete(conn, &v.volume_id).map(|_| ())
        } else {
            db::volumes::release(
                conn,
                &v.volume_id,
                super::state::volume::ATTACHING,
                None,
                now,
            )
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
    id: &str,
    given: &[String],
) -> Result<BootNics, (ApiError, BootNics)> {
    let mut out = BootNics {
        ids: vec![],
        auto: None,
    };
    for n in given {
        match db::nics::reserve(conn, n, id, db::now()) {
            Ok(true) => out.ids.push(n.clone()),
            Ok(false) => {
                let e = ApiError::conflict(
                    "network_interface_in_use",
                    format!("network interface {n} was taken by another request"),
                );
                return Err((e, out));
            }
            Err(e) => return Err((e.into(), out)),
        }
    }
    if given.is_empty() && ctx.cfg.network.auto_nic {
        let req = super::nics::NewNic {
            name: format!("nic of {id}"),
            bridge: None,
            mac: None,
            ip: None,
            describe: format!("made with instance {id}"),
        };
        match super::nics::insert_new(ctx, conn, req, Some(id)) {
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

/// Gives back NICs a failed create reserved, and deletes the one it made.
fn release_nics(conn: &mut DbConn, nics: &BootNics) {
    let ist = super::state::nic::ATTACHING;
    for n in &nics.ids {
        let r = if nics.auto.as_ref() == Some(n) {
            db::nics::delete_in_status(conn, n, ist)
        } else {
            db::nics::release(conn, n, ist, None, db::now())
        };
        if let Err(e) = r {
            log::error!("cannot release network interface {n}: {e}");
        }
    }
}

/// What a create step made, so that a later failure can take it back.
enum Made {
    DataVolume(String),
    RootVolumeRow(String),
    RootClone(String),
    Domain(String),
    Running(String),
}

fn undo(ctx: &Ctx, conn: &mut DbConn, made: Vec<Made>) -> Vec<String> {
    let mut failures = vec![];
    for m in made.into_iter().rev() {
        let r: Result<(), String> = match &m {
            Made::Running(n) => ctx.hv.force_off(n).map_err(|e| e.to_string()),
            Made::Domain(n) => ctx.hv.undefine(n).map_err(|e| e.to_string()),
            Made::RootClone(v) => ctx
                .ceph
                .remove_image(&ctx.cfg.ceph.volumes_pool, v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Made::RootVolumeRow(v) => db::volumes::delete(conn, v)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Made::DataVolume(v) => ctx
                .ceph
                .remove_image(&ctx.cfg.ceph.volumes_pool, v)
                .map(|_| ())
                .map_err(|e| e.to_string())
                .and_then(|_| {
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

/// The background part of create. Never panics into the void: every outcome lands in the row.
fn build(ctx: &Ctx, id: &str, image: &Image, nics: BootNics) {
    let mut conn = match ctx.conn() {
        Ok(c) => c,
        Err(e) => {
            log::error!("instance {id}: cannot reach MySQL to create it: {e}");
            return;
        }
    };
    let mut made = vec![];
    match build_steps(ctx, &mut conn, id, image, &nics, &mut made) {
        Ok(()) => log::info!("instance {id} is running"),
        Err(e) => {
            let undo_failures = undo(ctx, &mut conn, made);
            release_reserved(&mut conn, id);
            release_nics(&mut conn, &nics);
            let _ = std::fs::remove_file(console_path(ctx, id));
            let mut msg = e;
            if !undo_failures.is_empty() {
                msg = format!(
                    "{msg}; cleaning up also failed: {}",
                    undo_failures.join("; ")
                );
            }
            log::warn!("instance {id}: creation failed: {msg}");
            let _ = db::instances::set_progress(&mut conn, id, 0, "failed", db::now());
            if let Err(e) = transition(&mut conn, id, st::CREATING, st::ERROR, Some(&msg)) {
                log::error!("instance {id}: cannot record the failure: {e}");
            }
        }
    }
}

fn build_steps(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &str,
    image: &Image,
    nics: &BootNics,
    made: &mut Vec<Made>,
) -> Result<(), String> {
    let c = &ctx.cfg;
    let inst = db::instances::get(conn, id)
        .map_err(|e| e.to_string())?
        .ok_or("the instance row vanished")?;
    let step = |conn: &mut DbConn, pct: u8, what: &str| {
        db::instances::set_progress(conn, id, pct, what, db::now())
            .map(|_| ())
            .map_err(|e| format!("recording progress: {e}"))
    };

    step(conn, 10, "preparing the image snapshot")?;
    ctx.ceph
        .ensure_protected_snapshot(&c.ceph.images_pool, &image.image_id, BASE_SNAPSHOT)
        .map_err(|e| format!("could not snapshot image {}: {e}", image.image_id))?;
    if image.snapshot_name.is_none() {
        db::images::set_snapshot(conn, &image.image_id, BASE_SNAPSHOT)
            .map_err(|e| e.to_string())?;
    }

    step(conn, 30, "cloning the root disk")?;
    let now = db::now();
    let root = Volume {
        volume_id: ids::new_id(ids::VOLUME),
        volume_name: format!("root of {id}"),
        volume_size: inst.root_size.unwrap_or(1),
        status: "creating".into(),
        instance_id: Some(id.to_string()),
        is_root: true,
        target_dev: Some("vda".into()),
        describe: String::new(),
        error_message: None,
        attach_time: Some(now),
        create_time: now,
        update_time: now,
    };
    db::volumes::insert(conn, &root).map_err(|e| format!("recording the root volume: {e}"))?;
    made.push(Made::RootVolumeRow(root.volume_id.clone()));
    ctx.ceph
        .clone_image(
            &c.ceph.images_pool,
            &image.image_id,
            BASE_SNAPSHOT,
            &c.ceph.volumes_pool,
            &root.volume_id,
        )
        .map_err(|e| format!("could not clone the root disk: {e}"))?;
    made.push(Made::RootClone(root.volume_id.clone()));
    let root_bytes = root.volume_size * GIB;
    if root_bytes > image.image_size {
        step(conn, 45, "resizing the root disk")?;
        ctx.ceph
            .resize_image(&c.ceph.volumes_pool, &root.volume_id, root_bytes)
            .map_err(|e| format!("could not resize the root disk: {e}"))?;
    }
    db::volumes::transition(conn, &root.volume_id, "creating", "in-use", None, db::now())
        .map_err(|e| e.to_string())?;

    let data: Vec<Volume> = db::volumes::of_instance(conn, id)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|v| !v.is_root)
        .collect();
    for v in data
        .iter()
        .filter(|v| v.status == super::state::volume::CREATING)
    {
        step(conn, 50, "creating the data volume")?;
        made.push(Made::DataVolume(v.volume_id.clone()));
        ctx.ceph
            .create_image(&c.ceph.volumes_pool, &v.volume_id, v.volume_size * GIB)
            .map_err(|e| format!("could not create the data volume: {e}"))?;
        db::volumes::transition(
            conn,
            &v.volume_id,
            super::state::volume::CREATING,
            super::state::volume::ATTACHING,
            None,
            db::now(),
        )
        .map_err(|e| e.to_string())?;
    }

    step(conn, 60, "defining the domain")?;
    let access = RbdAccess {
        mon_hosts: &c.ceph.mon_hosts,
        user: &c.ceph.qemu_user,
        secret_uuid: &c.ceph.secret_uuid,
    };
    let mut disks = vec![Disk::rbd(
        &access,
        &c.ceph.volumes_pool,
        &root.volume_id,
        "vda",
        &root.volume_id,
    )];
    for v in &data {
        let target = v.target_dev.as_deref().unwrap_or("vdb");
        disks.push(Disk::rbd(
            &access,
            &c.ceph.volumes_pool,
            &v.volume_id,
            target,
            &v.volume_id,
        ));
    }
    let mut interfaces = vec![];
    for n in &nics.ids {
        let row = db::nics::get(conn, n)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("network interface {n} vanished"))?;
        interfaces.push(crate::xml::devices::Interface::bridge(
            &row.bridge,
            &row.mac,
        ));
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    let console = console_path(ctx, id);
    let spec = DomainSpec {
        domain_type: &c.libvirt.domain_type,
        name: id,
        uuid: &uuid,
        title: &inst.instance_name,
        description: &inst.describe,
        instance_id: id,
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
        .map_err(|e| format!("the hypervisor refused the domain: {}", e.message()))?;
    made.push(Made::Domain(id.to_string()));

    step(conn, 80, "starting")?;
    ctx.hv
        .start(id)
        .map_err(|e| format!("the instance could not start: {}", e.message()))?;
    made.push(Made::Running(id.to_string()));

    for v in &data {
        db::volumes::attached(conn, &v.volume_id, db::now()).map_err(|e| e.to_string())?;
    }
    for n in &nics.ids {
        db::nics::attached(conn, n, db::now()).map_err(|e| e.to_string())?;
    }
    db::instances::set_progress(conn, id, 100, "running", db::now()).map_err(|e| e.to_string())?;
    match transition(conn, id, st::CREATING, st::RUNNING, None) {
        Ok(true) => Ok(()),
        Ok(false) => Err("the instance changed state during creation".into()),
        Err(e) => Err(format!("recording the running instance: {e}")),
    }
}

pub fn get(ctx: &Ctx, id: &str) -> ApiResult<Instance> {
    load(&mut ctx.conn()?, id)
}

/// An instance of a list, with its volumes and NICs.
pub struct Listed {
    pub instance: Instance,
    pub volumes: Vec<Volume>,
    pub nics: Vec<Nic>,
}

/// A page of instances with the volumes and NICs of each (two more queries, not one per row).
pub fn list(
    ctx: &Ctx,
    name_contains: Option<&str>,
    status: Option<&str>,
    paging: Paging,
) -> ApiResult<(i64, Vec<Listed>)> {
    if let Some(s) = status {
        if !st::ALL.contains(&s) {
            return Err(ApiError::invalid(format!(
                "status: {s:?} is not one of {}",
                st::ALL.join(", ")
            )));
        }
    }
    let mut conn = ctx.conn()?;
    let (total, rows) = db::instances::list(&mut conn, name_contains, status, paging.to_db())?;
    let ids: Vec<String> = rows.iter().map(|r| r.instance_id.clone()).collect();
    let mut vols: HashMap<String, Vec<Volume>> = HashMap::new();
    for v in db::volumes::of_instances(&mut conn, &ids)? {
        vols.entry(v.instance_id.clone().unwrap_or_default())
            .or_default()
            .push(v);
    }
    let mut nics: HashMap<String, Vec<Nic>> = HashMap::new();
    for n in db::nics::of_instances(&mut conn, &ids)? {
        nics.entry(n.instance_id.clone().unwrap_or_default())
            .or_default()
            .push(n);
    }
    let out = rows
        .into_iter()
        .map(|r| Listed {
            volumes: vols.remove(&r.instance_id).unwrap_or_default(),
            nics: nics.remove(&r.instance_id).unwrap_or_default(),
            instance: r,
        })
        .collect();
    Ok((total, out))
}

pub fn detail(ctx: &Ctx, id: &str) -> ApiResult<Detail> {
    let mut conn = ctx.conn()?;
    let instance = load(&mut conn, id)?;
    let image = db::images::get(&mut conn, &instance.image_id)?;
    let volumes = db::volumes::of_instance(&mut conn, id)?;
    let nics = db::nics::of_instance(&mut conn, id)?;
    Ok(Detail {
        instance,
        image,
        volumes,
        nics,
    })
}

fn busy(inst: &Instance) -> ApiError {
    ApiError::conflict(
        "instance_busy",
        format!(
            "instance {} is {}; retry when it has finished",
            inst.instance_id, inst.status
        ),
    )
}

pub fn turnon(ctx: &Ctx, id: &str) -> ApiResult<Instance> {
    let mut conn = ctx.conn()?;
    let inst = load(&mut conn, id)?;
    match inst.status.as_str() {
        st::STOPPED => {}
        st::RUNNING => {
            return Err(ApiError::conflict(
                "instance_running",
                format!("instance {id} is already running"),
            ))
        }
        st::ERROR => {
            return Err(ApiError::conflict(
                "instance_error",
                format!("instance {id} is in error; destroy it"),
            ))
        }
        _ => return Err(busy(&inst)),
    }
    if !transition(&mut conn, id, st::STOPPED, st::STARTING, None)? {
        return Err(busy(&load(&mut conn, id)?));
    }
    let started = ctx.hv.start(id).or_else(|e| {
        // Started behind our back: the truth is "running".
        match ctx.hv.power(id) {
            Ok(Some(Power::Running)) => Ok(()),
            _ => Err(e),
        }
    });
    match started {
        Ok(()) => {
            transition(&mut conn, id, st::STARTING, st::RUNNING, None)?;
            load(&mut conn, id)
        }
        Err(e) => {
            let msg = format!("the instance could not start: {}", e.message());
            transition(&mut conn, id, st::STARTING, st::STOPPED, Some(&msg))?;
            Err(ApiError::unavailable(Backend::Libvirt, msg))
        }
    }
}

pub fn turnoff(ctx: &Ctx, id: &str, force: bool) -> ApiResult<Instance> {
    let mut conn = ctx.conn()?;
    let inst = load(&mut conn, id)?;
    match inst.status.as_str() {
        st::RUNNING => {}
        st::STOPPED => {
            return Err(ApiError::conflict(
                "instance_stopped",
                format!("instance {id} is already stopped"),
            ))
        }
        st::ERROR => {
            return Err(ApiError::conflict(
                "instance_error",
                format!("instance {id} is in error; destroy it"),
            ))
        }
        _ => return Err(busy(&inst)),
    }
    if !transition(&mut conn, id, st::RUNNING, st::STOPPING, None)? {
        return Err(busy(&load(&mut conn, id)?));
    }
    let timeout = Duration::from_secs(ctx.cfg.libvirt.shutdown_timeout_secs);
    let outcome = if force {
        ctx.hv.force_off(id).map(|_| Shutdown::Stopped)
    } else {
        match ctx.hv.power(id) {
            // Powered off behind our back (from inside the guest): the truth is "stopped".
            Ok(Some(Power::Stopped)) | Ok(None) => Ok(Shutdown::Stopped),
            _ => ctx.hv.shutdown(id, timeout),
        }
    };
    match outcome {
        Ok(Shutdown::Stopped) => {
            transition(&mut conn, id, st::STOPPING, st::STOPPED, None)?;
            load(&mut conn, id)
        }
        Ok(Shutdown::StillRunning) => {
            transition(&mut conn, id, st::STOPPING, st::RUNNING, None)?;
            Err(ApiError::conflict(
                "instance_still_running",
                format!(
                    "instance {id} did not power off within {}s of the ACPI shutdown; retry, or use force=true to cut its power",
                    timeout.as_secs()
                ),
            ))
        }
        Err(e) => {
            let truth = match ctx.hv.power(id) {
                Ok(Some(Power::Running)) => st::RUNNING,
                Ok(_) => st::STOPPED,
                Err(_) => st::RUNNING,
            };
            transition(&mut conn, id, st::STOPPING, truth, None)?;
            Err(ApiError::unavailable(
                Backend::Libvirt,
                format!("could not stop instance {id}: {}", e.message()),
            ))
        }
    }
}

/// What a destroy removed, for the answer.
pub struct Destroyed {
    pub released_volumes: usize,
    pub released_nics: usize,
    pub deleted_volumes: usize,
    pub deleted_nics: usize,
}

pub fn destroy(ctx: &Ctx, id: &str, delete_attached: bool) -> ApiResult<Destroyed> {
    let mut conn = ctx.conn()?;
    let inst = load(&mut conn, id)?;
    let from = inst.status.as_str();
    if !matches!(from, st::RUNNING | st::STOPPED | st::ERROR) {
        return Err(busy(&inst));
    }
    if !transition(&mut conn, id, from, st::DESTROYING, None)? {
        return Err(busy(&load(&mut conn, id)?));
    }
    match destroy_steps(ctx, &mut conn, id, delete_attached) {
        Ok(d) => Ok(d),
        Err((step, e)) => {
            let msg = format!("destroy stopped while {step}: {e}; retry the destroy");
            if let Err(e2) = transition(&mut conn, id, st::DESTROYING, st::ERROR, Some(&msg)) {
                log::error!("instance {id}: cannot record the failed destroy: {e2}");
            }
            Err(match e {
                ApiError::Unavailable { backend, .. } => ApiError::unavailable(backend, msg),
                _ => ApiError::Internal(msg),
            })
        }
    }
}

fn destroy_steps(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &str,
    delete_attached: bool,
) -> Result<Destroyed, (&'static str, ApiError)> {
    let vpool = &ctx.cfg.ceph.volumes_pool;
    ctx.hv
        .force_off(id)
        .map_err(|e| ("stopping the domain", e.into()))?;
    ctx.hv
        .undefine(id)
        .map_err(|e| ("undefining the domain", e.into()))?;
    let volumes = db::volumes::of_instance(conn, id).map_err(|e| ("reading volumes", e.into()))?;
    let mut deleted_volumes = 0;
    for v in volumes.iter().filter(|v| v.is_root || delete_attached) {
        ctx.ceph
            .remove_image(vpool, &v.volume_id)
            .map_err(|e| ("removing a disk from Ceph", e.into()))?;
        db::volumes::delete(conn, &v.volume_id).map_err(|e| ("deleting a volume row", e.into()))?;
        if !v.is_root {
            deleted_volumes += 1;
        }
    }
    let now = db::now();
    let released_volumes = db::volumes::release_data_volumes(conn, id, now)
        .map_err(|e| ("releasing volumes", e.into()))?;
    let (released_nics, deleted_nics) = if delete_attached {
        let n = db::nics::delete_all_of(conn, id).map_err(|e| ("deleting NICs", e.into()))?;
        (0, n)
    } else {
        let n =
            db::nics::release_all_of(conn, id, now).map_err(|e| ("releasing NICs", e.into()))?;
        (n, 0)
    };
    db::instances::delete_in_status(conn, id, st::DESTROYING)
        .map_err(|e| ("deleting the instance row", e.into()))?;
    let _ = std::fs::remove_file(console_path(ctx, id));
    Ok(Destroyed {
        released_volumes,
        released_nics,
        deleted_volumes,
        deleted_nics,
    })
}

/// The last `max_bytes` of the instance's serial console (carriage returns removed).
pub fn console(ctx: &Ctx, id: &str, max_bytes: u64) -> ApiResult<String> {
    use std::io::{Read, Seek, SeekFrom};
    load(&mut ctx.conn()?, id)?;
    let path = console_path(ctx, id);
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => {
            return Err(ApiError::unavailable(
                Backend::Libvirt,
                format!("cannot read the console log {path}: {e}"),
            ))
        }
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max_bytes);
    let mut buf = Vec::new();
    f.seek(SeekFrom::Start(start))
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(|e| ApiError::unavailable(Backend::Libvirt, format!("cannot read {path}: {e}")))?;
    Ok(String::from_utf8_lossy(&buf).replace('\r', ""))
}

/// Start-up repair of instances whose work a crash interrupted (untouched for `older_than_secs`):
/// `creating` and `destroying` become `error` (a destroy then cleans up whatever exists);
/// `starting` / `stopping` take the state libvirt reports.
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut fixed = 0;
    for (from, msg) in [
        (
            st::CREATING,
            "api-web stopped while creating this instance; destroy it to clean up",
        ),
        (
            st::DESTROYING,
            "api-web stopped while destroying this instance; retry the destroy",
        ),
    ] {
        for row in db::instances::stale_in_status(&mut conn, from, cutoff)? {
            if db::instances::transition(
                &mut conn,
                &row.instance_id,
                from,
                st::ERROR,
                Some(msg),
                db::now(),
            )? {
                log::warn!("reconcile: instance {} {from} -> error", row.instance_id);
                fixed += 1;
            }
        }
    }
    for from in [st::STARTING, st::STOPPING] {
        for row in db::instances::stale_in_status(&mut conn, from, cutoff)? {
            let to = match ctx.hv.power(&row.instance_id)? {
                Some(Power::Running) => st::RUNNING,
                _ => st::STOPPED,
            };
            if db::instances::transition(&mut conn, &row.instance_id, from, to, None, db::now())? {
                log::warn!("reconcile: instance {} {from} -> {to}", row.instance_id);
                fixed += 1;
            }
        }
    }
    Ok(fixed)
}
