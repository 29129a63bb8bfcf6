//! `instance/migrate` and `host/evacuate`: an instance moves to another host. The disks are
//! Ceph RBD images every host reaches, so nothing but the guest moves: a running (or paused)
//! guest live, its memory copied while it runs (libvirt: live, persistent on the target,
//! undefined on the source; peer-to-peer when the target's URI is a network one the source's
//! libvirtd can reach, else managed over api-web's two connections), a stopped one by defining
//! its persistent XML on the target and undefining it on the source. Volumes and NICs stay as
//! they are (the same XML).
//!
//! The claim (`running | paused | stopped -> migrating`) and the target's reservation
//! (placement, any host but the source, or the admin's `target_host_id`) are one transaction;
//! the operation `instance.migrate` saves both hosts. The instance's `progress` follows the
//! memory copied; a live migration still running after `libvirt.migration_timeout_secs` is
//! aborted (the guest stays on the source, running). At the end the row follows where the
//! domain really is (`settle`): on the target, the row moves there and the source's
//! reservation is given back; on the source, the target's is; on both (a copy the migration
//! left), the running one wins and the other is removed. A takeover after a crash does the same.

use super::power::status_of;
use super::{busy, in_error, set_status};
use crate::db::hosts::Host;
use crate::db::instances::Instance;
use crate::db::operations::Operation;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{HostId, InstanceId, InstanceStatus as St};
use crate::service::operations::{self, Op};
use crate::service::{hosts, load, not_found, placement, quotas, record, Ctx};
use crate::virt::{active, Hypervisor};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const MIGRATE: &str = "instance.migrate";

/// What a migration's operation saves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateState {
    /// The status it was claimed from.
    pub from: St,
    pub source: HostId,
    pub target: HostId,
    pub live: bool,
}

/// Claims the instance and reserves its target, starts the operation and the migration on a
/// thread of its own; answers the row (`migrating`) at once.
pub fn migrate(ctx: Arc<Ctx>, id: &InstanceId, target: Option<HostId>) -> ApiResult<Instance> {
    let mut conn = ctx.conn()?;
    let state = std::cell::RefCell::new(None::<MigrateState>);
    let op = operations::claim_and_start(&ctx, &mut conn, MIGRATE, id.as_str(), &state, |c| {
        *state.borrow_mut() = Some(claim(&ctx, c, id, target.as_ref())?);
        Ok(())
    })?;
    let st = state
        .into_inner()
        .ok_or_else(|| ApiError::Internal("migration claimed without a state".into()))?;
    let (bg, bid) = (ctx.clone(), id.clone());
    let spawned = crate::context::spawn_named(format!("migrate-{id}"), move || {
        run(&bg, &bid, &st, op);
    });
    if let Err(e) = spawned {
        return Err(ApiError::Internal(format!(
            "could not start the migration: {e}; it is settled within {}s",
            ctx.cfg.operations.lease_secs + ctx.cfg.operations.takeover_interval_secs
        )));
    }
    load(&mut conn, id)
}

/// In the claim's transaction: the row locked, settled, moved to `migrating`, and the target's
/// room reserved.
fn claim(
    ctx: &Ctx,
    c: &mut DbConn,
    id: &InstanceId,
    target: Option<&HostId>,
) -> ApiResult<MigrateState> {
    let inst = db::instances::lock(c, id)?.ok_or_else(|| not_found::<Instance>(id))?;
    match inst.status {
        St::Running | St::Paused | St::Stopped => {}
        St::Error => return Err(in_error(id)),
        _ => return Err(busy(&inst)),
    }
    if target == Some(&inst.host_id) {
        return Err(ApiError::invalid(format!(
            "target_host_id: instance {id} is on host {} already",
            inst.host_id
        )));
    }
    let mut bridges: Vec<String> = vec![];
    for n in db::nics::of_instance(c, id)? {
        if !bridges.contains(&n.bridge) {
            bridges.push(n.bridge);
        }
    }
    let need = placement::Need {
        vcpus: inst.cpu,
        memory_mib: inst.memory,
        bridges,
    };
    let host = placement::reserve_except(ctx, c, &need, target, Some(&inst.host_id))?;
    if !set_status(c, id, inst.status, St::Migrating, None)? {
        return Err(busy(&load(c, id)?));
    }
    Ok(MigrateState {
        from: inst.status,
        source: inst.host_id,
        target: host.host_id,
        live: inst.status != St::Stopped,
    })
}

fn run(ctx: &Ctx, id: &InstanceId, st: &MigrateState, op: Op) {
    let done = steps(ctx, &op, id, st);
    if op.is_halted() {
        // The lease ran out: the takeover settles it from the saved state.
        return op.finish(ctx, done.as_ref().map(|_| ()).map_err(String::as_str));
    }
    let why = done.as_ref().err().map(String::as_str);
    if let Some(w) = why {
        log::warn!("instance {id}: migration to host {} failed: {w}", st.target);
    }
    match settle(ctx, id, st, why) {
        Ok(_) => op.finish(ctx, done.as_ref().map(|_| ()).map_err(String::as_str)),
        // Not settled: its lease runs out and the takeover settles it.
        Err(e) => log::warn!("instance {id}: migration not settled: {e}"),
    }
}

fn steps(ctx: &Ctx, op: &Op, id: &InstanceId, st: &MigrateState) -> Result<(), String> {
    let s = |e: ApiError| e.to_string();
    let src = hosts::connection(ctx, &st.source).map_err(s)?;
    let dst = hosts::connection(ctx, &st.target).map_err(s)?;
    let target = load::<Host>(&mut ctx.conn().map_err(s)?, &st.target).map_err(s)?;
    let name = id.as_str();
    if !st.live {
        op.save(ctx, "moving the definition", st).map_err(s)?;
        let xml = src.xml(name, true).map_err(|e| e.to_string())?;
        dst.define(&xml).map_err(|e| e.to_string())?;
        src.undefine(name).map_err(|e| e.to_string())?;
        return Ok(());
    }
    op.save(ctx, "migrating", st).map_err(s)?;
    let p2p = network_uri(&target.uri);
    let timeout = Duration::from_secs(ctx.cfg.libvirt.migration_timeout_secs);
    let deadline = Instant::now() + timeout;
    let mut first: Option<String> = None;
    loop {
        let ended = AtomicBool::new(false);
        let aborted = AtomicBool::new(false);
        let r = std::thread::scope(|scope| {
            scope.spawn(|| watch(ctx, id, &src, deadline, &ended, &aborted));
            let r = src.migrate_live(name, &dst, &target.address, p2p);
            ended.store(true, Ordering::Relaxed);
            r
        });
        let why = match r {
            Ok(()) => return Ok(()),
            Err(_) if aborted.load(Ordering::Relaxed) => {
                return Err(format!(
                    "the live migration did not end within {}s (libvirt.migration_timeout_secs) and was aborted; the guest stays on host {}",
                    timeout.as_secs(),
                    st.source
                ))
            }
            Err(e) => format!("libvirt: {}", e.message()),
        };
        // libvirt rolled back: the guest runs on the source alone. A failure of the moment
        // (a port, a busy daemon) is tried once more; the second failure is the answer.
        let rolled_back =
            active(src.power(name).ok().flatten()) && dst.power(name).ok().flatten().is_none();
        match first {
            None if rolled_back && Instant::now() < deadline => {
                log::warn!(
                    "instance {id}: live migration to host {} failed ({why}); trying once more",
                    st.target
                );
                first = Some(why);
                std::thread::sleep(Duration::from_secs(1));
            }
            None => return Err(why),
            Some(f) => return Err(format!("{why} (and before, {f})")),
        }
    }
}

/// While the migration runs: its progress into the row every half second, and its abort once
/// `deadline` has passed.
fn watch(
    ctx: &Ctx,
    id: &InstanceId,
    src: &Hypervisor,
    deadline: Instant,
    ended: &AtomicBool,
    aborted: &AtomicBool,
) {
    let mut last = None;
    let mut ticks: u64 = 0;
    while !ended.load(Ordering::Relaxed) {
        // Short naps: the migration's end must not wait for this thread.
        std::thread::sleep(Duration::from_millis(50));
        ticks += 1;
        if ended.load(Ordering::Relaxed) {
            return;
        }
        let late = Instant::now() >= deadline;
        if !ticks.is_multiple_of(10) && !late {
            continue;
        }
        if late {
            aborted.store(true, Ordering::Relaxed);
            if let Err(e) = src.abort_job(id.as_str()) {
                log::warn!("instance {id}: cannot abort its migration: {}", e.message());
            }
            return;
        }
        let Some(p) = src.migration_progress(id.as_str()) else {
            continue;
        };
        // Memory is sent again as the guest dirties it: the share of the first round, capped.
        let pct = (p.processed.saturating_mul(100) / p.total.max(1)).min(99) as u8;
        if last != Some(pct) {
            last = Some(pct);
            let step = format!(
                "migrating: {} of {} MiB of memory sent",
                p.processed >> 20,
                p.total >> 20
            );
            let _ = record(ctx, "recording migration progress", |c| {
                Ok(db::instances::set_progress(c, id, pct, &step, db::now())?)
            });
        }
    }
}

/// `qemu+tcp://`, `qemu+tls://`, `qemu+ssh://`: a URI another host's libvirtd can use.
fn network_uri(uri: &str) -> bool {
    ["qemu+tcp://", "qemu+tls://", "qemu+ssh://"]
        .iter()
        .any(|p| uri.starts_with(p) && !uri[p.len()..].starts_with('/'))
}

/// Where the migration left the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Landed {
    Target,
    Source,
    Nowhere,
}

/// The row follows where the domain is (see the module's description); `why` is the failure
/// recorded on the row when it stayed. Returns where it is.
fn settle(ctx: &Ctx, id: &InstanceId, st: &MigrateState, why: Option<&str>) -> ApiResult<Landed> {
    let src = hosts::connection(ctx, &st.source)?;
    let dst = hosts::connection(ctx, &st.target)?;
    let name = id.as_str();
    let on_src = src.power(name)?;
    let on_dst = dst.power(name)?;
    let landed = match (on_src, on_dst) {
        (None, Some(_)) => Landed::Target,
        (Some(_), None) => Landed::Source,
        (None, None) => Landed::Nowhere,
        // A copy on each: the one that runs is the guest.
        (Some(s), Some(d)) => {
            if active(Some(d)) && !active(Some(s)) {
                src.force_off(name)?;
                src.undefine(name)?;
                Landed::Target
            } else {
                dst.force_off(name)?;
                dst.undefine(name)?;
                Landed::Source
            }
        }
    };
    let power = match landed {
        Landed::Target => dst.power(name)?,
        Landed::Source => src.power(name)?,
        Landed::Nowhere => None,
    };
    let (to, msg) = match power {
        Some(p) => (status_of(p), why.map(str::to_string)),
        None => (St::Error, Some(super::vanished_message(id))),
    };
    let address = match landed {
        Landed::Target => Some(load::<Host>(&mut ctx.conn()?, &st.target)?.address),
        _ => None,
    };
    record(ctx, "recording where the instance is", |c| {
        quotas::in_transaction(c, |c| {
            let Some(inst) = db::instances::get(c, id)? else {
                return Ok(());
            };
            if inst.status != St::Migrating {
                return Ok(());
            }
            let given_back = match &address {
                Some(ip) => {
                    db::instances::set_host(c, id, St::Migrating, None, &st.target, ip, db::now())?;
                    &st.source
                }
                None => &st.target,
            };
            db::hosts::release(c, given_back, inst.cpu, inst.memory)?;
            db::instances::set_progress(c, id, 100, "migrated", db::now())?;
            set_status(c, id, St::Migrating, to, msg.as_deref())?;
            Ok(())
        })
    })?;
    match landed {
        Landed::Target => log::info!("instance {id} now runs on host {}", st.target),
        Landed::Source => log::info!("instance {id} stays on host {}", st.source),
        Landed::Nowhere => log::warn!("instance {id}: no host has its domain after a migration"),
    }
    Ok(landed)
}

/// Takes over a migration whose process died: a migration job still running on the source is
/// aborted, then the row follows where the domain is.
pub fn recover(ctx: &Ctx, held: Op, op: &Operation) {
    let id = InstanceId::new(op.resource_id.as_str());
    let st: Option<MigrateState> = match operations::state_of(op) {
        Ok(s) => s,
        Err(e) => return held.finish(ctx, Err(&e.to_string())),
    };
    let Some(st) = st else {
        return held.finish(ctx, Ok(()));
    };
    let r = (|| -> ApiResult<()> {
        let status = load::<Instance>(&mut ctx.conn()?, &id)?.status;
        if status != St::Migrating {
            return Ok(());
        }
        let src = hosts::connection(ctx, &st.source)?;
        if src.migration_progress(id.as_str()).is_some() {
            let _ = src.abort_job(id.as_str());
            std::thread::sleep(Duration::from_secs(1));
        }
        let why = format!(
            "api-web stopped while migrating this instance to host {} (at step \"{}\")",
            st.target, op.step
        );
        settle(ctx, &id, &st, Some(&why))?;
        Ok(())
    })();
    match r {
        Ok(()) => held.finish(ctx, Ok(())),
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}

/// Live-migrates (or moves, when stopped) every instance off a host, one at a time, each to
/// where placement puts it; returns, per instance, where it went or why not. The host is
/// usually taken into maintenance first, so that nothing new lands there meanwhile.
pub fn evacuate(
    ctx: Arc<Ctx>,
    host: &HostId,
) -> ApiResult<Vec<(InstanceId, Result<HostId, String>)>> {
    load::<Host>(&mut ctx.conn()?, host)?;
    let ids: Vec<InstanceId> = db::instances::on_host(&mut *ctx.conn()?, host)?;
    let mut out = vec![];
    for id in ids {
        let r = migrate(ctx.clone(), &id, None).and_then(|_| wait_moved(&ctx, &id, host));
        out.push((id, r.map_err(|e| e.to_string())));
    }
    Ok(out)
}

/// Waits until the migration of an instance that was on `source` ends: the host it is on
/// then, or why it stayed.
fn wait_moved(ctx: &Ctx, id: &InstanceId, source: &HostId) -> ApiResult<HostId> {
    let limit = Duration::from_secs(ctx.cfg.libvirt.migration_timeout_secs + 60);
    let t0 = Instant::now();
    loop {
        let i = load::<Instance>(&mut ctx.conn()?, id)?;
        if i.status != St::Migrating {
            if i.host_id != *source {
                return Ok(i.host_id);
            }
            let why = i.error_message.unwrap_or_else(|| "it stayed".into());
            return Err(ApiError::conflict(ErrorCode::InstanceBusy, why));
        }
        if t0.elapsed() > limit {
            return Err(ApiError::conflict(
                ErrorCode::InstanceBusy,
                format!("instance {id} is still migrating"),
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_to_peer_only_to_network_uris() {
        assert!(network_uri("qemu+tcp://127.0.0.1:26502/system"));
        assert!(network_uri("qemu+ssh://root@h2/system"));
        assert!(!network_uri("qemu:///system"));
        assert!(!network_uri("qemu+unix:///system?socket=/x"));
        assert!(!network_uri("qemu+tcp:///system"));
    }
}
