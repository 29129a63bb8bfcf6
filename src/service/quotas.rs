//! Quotas per project: instances, vCPUs, memory, data volumes, volume GiB (data volumes and
//! root disks), NICs and images. A create asks for what it adds (`Ask`); `admit` checks it
//! against the project's limits under the lock of the project's `quota` row, counting the usage
//! from the resource rows, in the transaction that then inserts the new rows (`in_transaction`):
//! concurrent creates of one project pass one at a time, so exactly as many fit as the limit
//! allows, and usage cannot drift from what the rows say.

use crate::db::quotas::{self as q, Quota, Usage};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, ErrorCode};
use diesel::connection::SimpleConnection;
use diesel::Connection;

/// What a create adds to its project.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    pub instances: u64,
    pub vcpus: u64,
    pub memory_mib: u64,
    pub volumes: u64,
    pub volume_gib: u64,
    pub network_interfaces: u64,
    pub images: u64,
}

/// (name, limit, usage, asked) for each quota.
fn lines(q: &Quota, u: &Usage, a: &Ask) -> [(&'static str, Option<u64>, u64, u64); 7] {
    let n = |v: i64| v.max(0) as u64;
    [
        ("instances", q.instances, n(u.instances), a.instances),
        ("vcpus", q.vcpus, n(u.vcpus), a.vcpus),
        ("memory_mib", q.memory_mib, n(u.memory_mib), a.memory_mib),
        ("volumes", q.volumes, n(u.volumes), a.volumes),
        ("volume_gib", q.volume_gib, n(u.volume_gib), a.volume_gib),
        (
            "network_interfaces",
            q.network_interfaces,
            n(u.network_interfaces),
            a.network_interfaces,
        ),
        ("images", q.images, n(u.images), a.images),
    ]
}

/// Checks `ask` against `project`'s quota; call it first in the transaction that inserts what
/// is asked for (`in_transaction`). Over a limit: 409 `quota_exceeded` naming the quota, its
/// limit and the usage.
pub fn admit(conn: &mut DbConn, project: &str, ask: &Ask) -> ApiResult<()> {
    let limited = |q: &Quota| {
        lines(q, &Usage::default(), ask)
            .iter()
            .any(|(_, limit, _, want)| limit.is_some() && *want > 0)
    };
    // No limit on what is asked for: nothing to count, no lock to wait for.
    if !q::get(conn, project)?.is_some_and(|q| limited(&q)) {
        return Ok(());
    }
    let quota = q::lock(conn, project, db::now())?;
    if !limited(&quota) {
        return Ok(());
    }
    let usage = q::usage(conn, project)?;
    for (name, limit, used, want) in lines(&quota, &usage, ask) {
        if let Some(limit) = limit.filter(|l| want > 0 && used + want > *l) {
            return Err(ApiError::conflict(
                ErrorCode::QuotaExceeded,
                format!(
                    "quota exceeded: {name} of project {project} is limited to {limit}, {used} in use, this request needs {want}"
                ),
            ));
        }
    }
    Ok(())
}

/// Runs `f` in one READ COMMITTED transaction: a quota check must count what the creates that
/// held the lock before it committed, not a snapshot older than its lock.
pub fn in_transaction<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> ApiResult<T>,
) -> ApiResult<T> {
    conn.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")?;
    conn.transaction(f)
}

/// A project's limits and what it holds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub project_id: String,
    pub limits: Limits,
    pub usage: Limits,
}

/// One number per quota (`None` in limits: no limit).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub instances: Option<u64>,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub volumes: Option<u64>,
    pub volume_gib: Option<u64>,
    pub network_interfaces: Option<u64>,
    pub images: Option<u64>,
}

pub fn report(ctx: &super::Ctx, project: &str) -> ApiResult<Report> {
    let mut conn = ctx.conn()?;
    let quota = q::get(&mut conn, project)?.unwrap_or_default();
    let u = q::usage(&mut conn, project)?;
    let n = |v: i64| Some(v.max(0) as u64);
    Ok(Report {
        project_id: project.to_string(),
        limits: Limits {
            instances: quota.instances,
            vcpus: quota.vcpus,
            memory_mib: quota.memory_mib,
            volumes: quota.volumes,
            volume_gib: quota.volume_gib,
            network_interfaces: quota.network_interfaces,
            images: quota.images,
        },
        usage: Limits {
            instances: n(u.instances),
            vcpus: n(u.vcpus),
            memory_mib: n(u.memory_mib),
            volumes: n(u.volumes),
            volume_gib: n(u.volume_gib),
            network_interfaces: n(u.network_interfaces),
            images: n(u.images),
        },
    })
}

/// A change of limits: `None` leaves a limit as it is, `Some(None)` lifts it.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub instances: Option<Option<u64>>,
    pub vcpus: Option<Option<u64>>,
    pub memory_mib: Option<Option<u64>>,
    pub volumes: Option<Option<u64>>,
    pub volume_gib: Option<Option<u64>>,
    pub network_interfaces: Option<Option<u64>>,
    pub images: Option<Option<u64>>,
}

/// Sets limits of a project (lowering one below the usage is allowed: nothing is taken away,
/// only new creates are refused).
pub fn update(ctx: &super::Ctx, project: &str, ch: Change) -> ApiResult<Report> {
    let mut conn = ctx.conn()?;
    in_transaction(&mut conn, |c| {
        if crate::db::auth::project_by_id(c, project)?.is_none() {
            return Err(ApiError::invalid(format!(
                "no project has the id {project:?}"
            )));
        }
        let mut quota = q::lock(c, project, db::now())?;
        let set = |slot: &mut Option<u64>, v: Option<Option<u64>>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut quota.instances, ch.instances);
        set(&mut quota.vcpus, ch.vcpus);
        set(&mut quota.memory_mib, ch.memory_mib);
        set(&mut quota.volumes, ch.volumes);
        set(&mut quota.volume_gib, ch.volume_gib);
        set(&mut quota.network_interfaces, ch.network_interfaces);
        set(&mut quota.images, ch.images);
        quota.update_time = db::now();
        q::put(c, &quota)?;
        Ok(())
    })?;
    report(ctx, project)
}
