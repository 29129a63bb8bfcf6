//! Rows of `instance`: the row, its insert form and its update form.

use super::schema::{instance, network_interface};
use crate::model::{HostId, ImageId, InstanceId, InstanceStatus};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = instance)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Instance {
    pub instance_id: InstanceId,
    pub instance_name: String,
    pub status: InstanceStatus,
    pub ip: Option<String>,
    pub host_ip: String,
    /// The host the domain lives on.
    pub host_id: HostId,
    pub cpu: u32,
    pub memory: u64,
    pub image_id: ImageId,
    pub root_size: Option<u64>,
    pub describe: String,
    pub progress: u8,
    pub progress_step: String,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
}

/// A new instance row (progress 0, no address yet).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = instance)]
pub struct InstanceForm {
    pub instance_id: InstanceId,
    pub instance_name: String,
    pub status: InstanceStatus,
    pub host_ip: String,
    pub host_id: HostId,
    pub cpu: u32,
    pub memory: u64,
    pub image_id: ImageId,
    pub root_size: Option<u64>,
    pub describe: String,
    pub progress_step: String,
    pub create_time: u64,
    pub project_id: String,
}

/// Fields an update may change; `None` leaves a column as it is (`Some(None)` sets NULL).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = instance)]
pub struct InstanceUpdate {
    pub instance_name: Option<String>,
    pub describe: Option<String>,
    pub cpu: Option<u32>,
    pub memory: Option<u64>,
    pub progress: Option<u8>,
    pub progress_step: Option<String>,
    pub ip: Option<Option<String>>,
    pub update_time: Option<u64>,
}

pub fn update(
    conn: &mut MysqlConnection,
    id: &InstanceId,
    changes: &InstanceUpdate,
) -> QueryResult<usize> {
    diesel::update(instance::table.find(id))
        .set(changes)
        .execute(conn)
}

/// Records the instance on host `to` (its `host_ip` that host's address) if its row is still
/// in `status` (and, with `from`, on that host): a compare-and-set. A finished migration
/// (`migrating`, the caller then moves the status on in the same transaction) and a domain
/// found on another host (moved outside api-web) both come here.
#[allow(clippy::too_many_arguments)]
pub fn set_host(
    conn: &mut MysqlConnection,
    id: &InstanceId,
    status: crate::model::InstanceStatus,
    from: Option<&crate::model::HostId>,
    to: &crate::model::HostId,
    host_ip: &str,
    now: u64,
) -> QueryResult<bool> {
    let mut q = diesel::update(instance::table)
        .filter(instance::instance_id.eq(id))
        .filter(instance::status.eq(status))
        .into_boxed();
    if let Some(from) = from {
        q = q.filter(instance::host_id.eq(from));
    }
    let n = q
        .set((
            instance::host_id.eq(to),
            instance::host_ip.eq(host_ip),
            instance::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// The ids of the instances on a host, oldest first.
pub fn on_host(
    conn: &mut MysqlConnection,
    host: &crate::model::HostId,
) -> QueryResult<Vec<InstanceId>> {
    instance::table
        .filter(instance::host_id.eq(host))
        .order((instance::create_time.asc(), instance::instance_id.asc()))
        .select(instance::instance_id)
        .load(conn)
}

/// The row, locked until the transaction ends (`SELECT ... FOR UPDATE`): a power change's
/// compare-and-set waits for it.
pub fn lock(conn: &mut MysqlConnection, id: &InstanceId) -> QueryResult<Option<Instance>> {
    instance::table
        .find(id)
        .select(Instance::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// Records progress of a long operation.
pub fn set_progress(
    conn: &mut MysqlConnection,
    id: &InstanceId,
    pct: u8,
    step: &str,
    now: u64,
) -> QueryResult<usize> {
    let changes = InstanceUpdate {
        progress: Some(pct),
        progress_step: Some(step.to_string()),
        update_time: Some(now),
        ..Default::default()
    };
    update(conn, id, &changes)
}

/// (instance_id, instance_name) of the instances booted from an image.
pub fn using_image(
    conn: &mut MysqlConnection,
    image_id: &ImageId,
) -> QueryResult<Vec<(InstanceId, String)>> {
    instance::table
        .filter(instance::image_id.eq(image_id))
        .select((instance::instance_id, instance::instance_name))
        .order(instance::instance_id)
        .load(conn)
}

/// instance_id -> instance_name for the given ids (lists of volumes and NICs).
pub fn names_of(
    conn: &mut MysqlConnection,
    ids: &[InstanceId],
) -> QueryResult<std::collections::HashMap<InstanceId, String>> {
    let rows: Vec<(InstanceId, String)> = instance::table
        .filter(instance::instance_id.eq_any(ids))
        .select((instance::instance_id, instance::instance_name))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

pub fn set_ip(conn: &mut MysqlConnection, id: &InstanceId, ip: Option<&str>) -> QueryResult<usize> {
    let changes = InstanceUpdate {
        ip: Some(ip.map(str::to_string)),
        ..Default::default()
    };
    update(conn, id, &changes)
}

/// Keeps an instance's `ip` on one of its NICs: unchanged while the NIC holding it stays,
/// else the earliest attached NIC's address (or NULL).
pub fn refresh_ip(conn: &mut MysqlConnection, id: &InstanceId) -> QueryResult<()> {
    let current: Option<String> = instance::table
        .find(id)
        .select(instance::ip)
        .first(conn)
        .optional()?
        .flatten();
    let ips: Vec<Option<String>> = network_interface::table
        .filter(network_interface::instance_id.eq(id))
        .order((
            network_interface::attach_time.asc(),
            network_interface::create_time.asc(),
        ))
        .select(network_interface::ip)
        .load(conn)?;
    let ips: Vec<String> = ips.into_iter().flatten().collect();
    if current.as_ref().is_some_and(|c| ips.contains(c)) {
        return Ok(());
    }
    set_ip(conn, id, ips.first().map(String::as_str)).map(|_| ())
}

crate::db::table_queries!(
    instance,
    "instance",
    Instance,
    InstanceForm,
    InstanceId,
    InstanceStatus,
    id = "instance_id",
    name = "instance_name"
);
