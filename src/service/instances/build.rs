//! The background part of instance create: protected snapshot of the image, the root disk cloned
//! from it (recorded as the root volume), resized, data volume made, config drive written
//! (`guest`), domain defined and started, progress persisted after each step. A failed step
//! undoes every step before it and leaves the instance `error` with the reason.
//!
//! It runs as an operation (service::operations): before each side effect it saves what it is
//! about to make, so that when this process dies a takeover (`recover`) undoes exactly that and
//! gives back exactly what the create reserved (its NICs, its new data volume). A step that
//! fails while libvirt or Ceph is out is not undone here (the undo needs them too): the instance
//! stays `creating` and the takeover undoes it once they answer.

use super::create::{release_nics, release_reserved};
use super::guest::{self, GuestConfig};
use super::{console_path, set_status, BASE_SNAPSHOT};
use crate::db::images::{Image, ImageUpdate};
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::operations::Operation;
use crate::db::volumes::{Volume, VolumeForm};
use crate::db::{self, DbConn};
use crate::model::{InstanceId, InstanceStatus as St, NicId, VolumeId, VolumeStatus};
use crate::service::health::outage;
use crate::service::operations::{state_of, Op};
use crate::service::volumes::{self, GIB};
use crate::service::{load, nics, record, transition, Ctx, Pluggable};
use crate::xml::domain::{self, DomainSpec};
use diesel::Connection;
use serde::{Deserialize, Serialize};

/// The NICs a create attaches, in order, and which of them it made itself.
#[derive(Default, Serialize, Deserialize)]
pub struct BootNics {
    pub ids: Vec<NicId>,
    pub auto: Option<NicId>,
}

/// What a create step makes, saved before it makes it, so that a later failure (or a takeover)
/// can take it back; taking back what was never made is harmless.
#[derive(Serialize, Deserialize)]
enum Made {
    DataVolume(VolumeId),
    RootVolumeRow(VolumeId),
    RootClone(VolumeId),
    ConfigDrive(InstanceId),
    Domain(InstanceId),
    Running(InstanceId),
}

type Step<T = ()> = Result<T, String>;

/// The saved state of a create operation.
#[derive(Serialize, Deserialize)]
pub struct CreateState {
    nics: BootNics,
    made: Vec<Made>,
}

impl CreateState {
    pub fn new(nics: BootNics) -> Self {
        CreateState { nics, made: vec![] }
    }
    pub fn into_nics(self) -> BootNics {
        self.nics
    }
}

/// The running create: its operation and its saved state.
struct Build<'a> {
    ctx: &'a Ctx,
    op: &'a Op,
    st: CreateState,
}

impl Build<'_> {
    /// Saves that `m` is about to be made (a takeover undoes it), then lets the caller make it.
    fn about_to(&mut self, step: &str, m: Made) -> Step {
        self.st.made.push(m);
        self.op
            .save(self.ctx, step, &self.st)
            .map_err(|e| e.to_string())
    }
}

/// One MySQL write of the build, on its own connection (none is held across a Ceph or libvirt
/// call, so a burst of creates cannot starve the pool), retried while MySQL is unavailable.
fn write<T>(
    ctx: &Ctx,
    what: &str,
    f: impl FnMut(&mut DbConn) -> crate::error::ApiResult<T>,
) -> Step<T> {
    record(ctx, what, f).map_err(|e| format!("{what}: {e}"))
}

/// The deployment id that marks what the build makes.
fn owner(ctx: &Ctx) -> Step<String> {
    ctx.deployment()
        .map_err(|e| format!("reading the deployment id: {e}"))
}

/// Runs the build. Never panics into the void: every outcome lands in the row and ends the
/// operation.
pub fn run(
    ctx: &Ctx,
    id: &InstanceId,
    image: &Image,
    guest: &GuestConfig,
    state: CreateState,
    op: Op,
) {
    let mut b = Build {
        ctx,
        op: &op,
        st: state,
    };
    match steps(&mut b, id, image, guest) {
        Ok(()) => {
            log::info!("instance {id} is running");
            op.finish(ctx, Ok(()));
        }
        // A failed save: undo nothing, the takeover does it from the saved state.
        Err(e) if op.is_halted() => op.finish(ctx, Err(&e)),
        // The undo needs a backend that is out: the takeover undoes it once it answers.
        Err(e) if let Some(b) = outage(ctx) => {
            log::warn!(
                "instance {id}: creation stopped ({e}) while {} is out; undone once it answers",
                b.name()
            );
            op.abandon(ctx, &e);
        }
        Err(e) => {
            let st = b.st;
            let msg = fail(ctx, id, &st.nics, st.made, e);
            op.finish(ctx, Err(&msg));
        }
    }
}

/// Takes over a create whose process died: a `creating` instance is undone from the saved
/// state (what was made is removed, what was reserved given back) and left `error`; an instance
/// that got further (the create had finished) is left alone.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let st: CreateState = match state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    let status = record(ctx, "reading the instance", |c| {
        Ok(db::instances::get(c, &id)?.map(|i| i.status))
    });
    let why = op.error_message.clone().unwrap_or_else(|| {
        format!(
            "api-web stopped while creating this instance (at step \"{}\")",
            op.step
        )
    });
    match status {
        Ok(Some(St::Creating)) if outage(ctx).is_some() => return held.abandon(ctx, &why),
        Ok(Some(St::Creating)) => {}
        Ok(_) => return held.finish(ctx, Ok(())),
        Err(e) => {
            // Not settled: the lease of the claim runs out and the next pass tries again.
            log::warn!(
                "operation {}: cannot read instance {id}: {e}",
                op.operation_id
            );
            return;
        }
    }
    let why = format!("{why}; what the create had made was removed");
    let msg = fail(ctx, &id, &st.nics, st.made, why);
    held.finish(ctx, Err(&msg));
}

/// Undoes what was made, gives back what was reserved, records `error` with the reason;
/// returns the recorded message.
fn fail(ctx: &Ctx, id: &InstanceId, nics: &BootNics, made: Vec<Made>, e: String) -> String {
    let mut undo_failures = undo(ctx, made);
    let released = write(ctx, "giving back the reserved volumes and NICs", |c| {
        release_reserved(c, id);
        release_nics(c, nics);
        Ok(())
    });
    undo_failures.extend(released.err());
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
    let recorded = write(ctx, "recording the failure", |c| {
        c.transaction(|c| {
            db::instances::set_progress(c, id, 0, "failed", db::now())?;
            set_status(c, id, St::Creating, St::Error, Some(&msg))
        })
    });
    if let Err(e) = recorded {
        log::error!("instance {id}: cannot record the failure: {e}");
    }
    msg
}

fn undo(ctx: &Ctx, made: Vec<Made>) -> Vec<String> {
    let pool = &ctx.cfg.ceph.volumes_pool;
    let rm_image = |v: &VolumeId| {
        ctx.ceph
            .remove_image(pool, v.as_str())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let rm_row = |v: &VolumeId| {
        write(ctx, "removing a volume row", |c| {
            Ok(db::volumes::delete(c, v).map(|_| ())?)
        })
    };
    let mut failures = vec![];
    // Root clones that could not be removed (QEMU still holds one when libvirt failed to stop
    // the domain): their rows stay, so that the instance's destroy still finds and removes them.
    let mut kept = std::collections::HashSet::new();
    for m in made.into_iter().rev() {
        let r: Step = match &m {
            Made::Running(n) => on_host(ctx, n, |hv| hv.force_off(n.as_str())),
            Made::Domain(n) => on_host(ctx, n, |hv| hv.undefine(n.as_str())),
            Made::RootClone(v) => rm_image(v).inspect_err(|_| {
                kept.insert(v.clone());
            }),
            Made::RootVolumeRow(v) if kept.contains(v) => Ok(()),
            Made::RootVolumeRow(v) => rm_row(v),
            Made::ConfigDrive(i) => guest::remove(ctx, i).map_err(|e| e.to_string()),
            Made::DataVolume(v) => rm_image(v).and_then(|_| rm_row(v)),
        };
        if let Err(e) = r {
            failures.push(e);
        }
    }
    failures
}

/// `f` on the host of instance `id`.
fn on_host(
    ctx: &Ctx,
    id: &InstanceId,
    f: impl FnOnce(&crate::virt::Hypervisor) -> Result<(), crate::virt::VirtError>,
) -> Step {
    let hv = crate::service::hosts::of_id(ctx, id).map_err(|e| e.to_string())?;
    f(&hv).map_err(|e| e.to_string())
}

fn progress(ctx: &Ctx, id: &InstanceId, pct: u8, what: &str) -> Step {
    write(ctx, "recording progress", |c| {
        Ok(db::instances::set_progress(c, id, pct, what, db::now()).map(|_| ())?)
    })
}

fn steps(b: &mut Build, id: &InstanceId, image: &Image, g: &GuestConfig) -> Step {
    let ctx = b.ctx;
    let inst: Instance = write(ctx, "loading the instance", |c| load(c, id))?;
    progress(ctx, id, 10, "preparing the image snapshot")?;
    snapshot_image(ctx, image)?;
    progress(ctx, id, 30, "cloning the root disk")?;
    let root = clone_root(b, &inst, image)?;
    let data = make_data_volumes(b, id)?;
    let nics = nic_rows(ctx, &b.st.nics)?;
    progress(ctx, id, 55, "writing the config drive")?;
    b.about_to("writing the config drive", Made::ConfigDrive(id.clone()))?;
    config_drive(ctx, &inst, g, &nics)?;
    progress(ctx, id, 60, "defining the domain")?;
    b.about_to("defining the domain", Made::Domain(id.clone()))?;
    define(ctx, &inst, image, &root, &data, &nics)?;
    progress(ctx, id, 80, "starting")?;
    b.about_to("starting", Made::Running(id.clone()))?;
    crate::service::hosts::of(ctx, &inst)
        .map_err(|e| e.to_string())?
        .start(id.as_str())
        .map_err(|e| refused(&e, "the instance could not start", "starting the domain"))?;
    record_running(ctx, id, &data, &b.st.nics)
}

/// The protected snapshot root disks are cloned from (made once per image).
fn snapshot_image(ctx: &Ctx, image: &Image) -> Step {
    let pool = &ctx.cfg.ceph.images_pool;
    ctx.ceph
        .ensure_protected_snapshot(pool, image.image_id.as_str(), BASE_SNAPSHOT)
        .map_err(|e| format!("could not snapshot image {}: {e}", image.image_id))?;
    if image.snapshot_name.is_none() {
        let changes = ImageUpdate {
            snapshot_name: Some(BASE_SNAPSHOT.into()),
            ..Default::default()
        };
        write(ctx, "recording the image snapshot", |c| {
            Ok(db::images::update(c, &image.image_id, &changes)?)
        })?;
    }
    Ok(())
}

/// The root volume: recorded, cloned copy-on-write from the image's snapshot, grown to the
/// asked size, then `in-use`.
fn clone_root(b: &mut Build, inst: &Instance, image: &Image) -> Step<VolumeId> {
    let ctx = b.ctx;
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
        project_id: inst.project_id.clone(),
        delete_with_instance: true,
    };
    let vid = root.volume_id.clone();
    b.about_to(
        "recording the root volume",
        Made::RootVolumeRow(vid.clone()),
    )?;
    write(ctx, "recording the root volume", |c| {
        Ok(db::volumes::insert(c, &root)?)
    })?;
    b.about_to("cloning the root disk", Made::RootClone(vid.clone()))?;
    ctx.ceph
        .clone_image(
            &c.images_pool,
            image.image_id.as_str(),
            BASE_SNAPSHOT,
            &c.volumes_pool,
            vid.as_str(),
            &owner(ctx)?,
        )
        .map_err(|e| format!("could not clone the root disk: {e}"))?;
    let root_bytes = root.volume_size * GIB;
    if root_bytes > image.image_size {
        progress(ctx, &inst.instance_id, 45, "resizing the root disk")?;
        ctx.ceph
            .resize_image(&c.volumes_pool, vid.as_str(), root_bytes)
            .map_err(|e| format!("could not resize the root disk: {e}"))?;
    }
    write(ctx, "recording the root volume in use", |c| {
        transition::<Volume>(c, &vid, VolumeStatus::Creating, VolumeStatus::InUse, None)
    })?;
    Ok(vid)
}

/// Makes the RBD image of the new data volume (if one was asked for); returns every data
/// volume of the instance, in device order.
fn make_data_volumes(b: &mut Build, id: &InstanceId) -> Step<Vec<Volume>> {
    let ctx = b.ctx;
    let data: Vec<Volume> = write(ctx, "loading the volumes", |c| {
        Ok(db::volumes::of_instance(c, id)?)
    })?
    .into_iter()
    .filter(|v| !v.is_root)
    .collect();
    for v in data.iter().filter(|v| v.status == VolumeStatus::Creating) {
        progress(ctx, id, 50, "creating the data volume")?;
        b.about_to(
            "creating the data volume",
            Made::DataVolume(v.volume_id.clone()),
        )?;
        ctx.ceph
            .create_image(
                &ctx.cfg.ceph.volumes_pool,
                v.volume_id.as_str(),
                v.volume_size * GIB,
                &owner(ctx)?,
            )
            .map_err(|e| format!("could not create the data volume: {e}"))?;
        let (from, to) = (VolumeStatus::Creating, VolumeStatus::Attaching);
        write(ctx, "recording the data volume", |c| {
            transition::<Volume>(c, &v.volume_id, from, to, None)
        })?;
    }
    Ok(data)
}

/// The rows of the NICs the instance boots with, in order.
fn nic_rows(ctx: &Ctx, nics: &BootNics) -> Step<Vec<Nic>> {
    let mut rows = vec![];
    for n in &nics.ids {
        let row = write(ctx, "loading a network interface", |c| {
            Ok(db::nics::get(c, n)?)
        })?
        .ok_or_else(|| format!("network interface {n} vanished"))?;
        rows.push(row);
    }
    Ok(rows)
}

/// Writes the NoCloud drive: the host name (given, or made from the instance name), the user
/// data, the SSH keys and each NIC's address.
fn config_drive(ctx: &Ctx, inst: &Instance, g: &GuestConfig, nics: &[Nic]) -> Step {
    let id = &inst.instance_id;
    let hostname = g
        .hostname
        .clone()
        .unwrap_or_else(|| guest::default_hostname(&inst.instance_name, id));
    let files = guest::files(id, &hostname, g, nics, &ctx.cfg.network);
    let iso = guest::image(&files, db::now())?;
    guest::write(ctx, id, &iso, &owner(ctx)?)
}

/// Builds the domain XML from the OS template and defines the domain.
fn define(
    ctx: &Ctx,
    inst: &Instance,
    image: &Image,
    root: &VolumeId,
    data: &[Volume],
    boot_nics: &[Nic],
) -> Step {
    let c = &ctx.cfg;
    let mut disks = vec![volumes::disk(ctx, root, "vda")];
    for v in data {
        let target = v.target_dev.as_deref().unwrap_or("vdb");
        disks.push(volumes::disk(ctx, &v.volume_id, target));
    }
    disks.push(guest::cdrom(ctx, &inst.instance_id));
    let interfaces: Vec<_> = boot_nics.iter().map(nics::interface).collect();
    let uuid = uuid::Uuid::new_v4().to_string();
    let console = console_path(ctx, &inst.instance_id);
    let deployment = owner(ctx)?;
    let spec = DomainSpec {
        domain_type: &c.libvirt.domain_type,
        name: inst.instance_id.as_str(),
        uuid: &uuid,
        title: &inst.instance_name,
        description: &inst.describe,
        instance_id: inst.instance_id.as_str(),
        deployment: &deployment,
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
    let hv = crate::service::hosts::of(ctx, inst).map_err(|e| e.to_string())?;
    hv.define(&xml).map_err(|e| {
        refused(
            &e,
            "the hypervisor refused the domain",
            "defining the domain",
        )
    })
}

/// A libvirt failure in the user's words: a refusal, or libvirt not answering while `doing`.
fn refused(e: &crate::virt::VirtError, refusal: &str, doing: &str) -> String {
    if e.outcome_unknown() {
        format!("libvirt did not answer while {doing}: {}", e.message())
    } else {
        format!("{refusal}: {}", e.message())
    }
}

/// The domain runs: its volumes and NICs are attached, the instance `running` (one
/// transaction, so a reader never sees a running instance with volumes still `attaching`).
fn record_running(ctx: &Ctx, id: &InstanceId, data: &[Volume], nics: &BootNics) -> Step {
    let done = write(ctx, "recording the running instance", |c| {
        c.transaction(|c| {
            for v in data {
                Volume::mark_attached(c, &v.volume_id)?;
            }
            for n in &nics.ids {
                crate::db::nics::Nic::mark_attached(c, n)?;
            }
            db::instances::set_progress(c, id, 100, "running", db::now())?;
            set_status(c, id, St::Creating, St::Running, None)
        })
    })?;
    if done {
        Ok(())
    } else {
        Err("the instance changed state during creation".into())
    }
}
