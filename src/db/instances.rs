//! Rows of `instance`.

use super::schema::{instance, network_interface};
use super::{contains_pattern, Page};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = instance)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Instance {
    pub instance_id: String,
    pub instance_name: String,
    pub status: String,
    pub ip: Option<String>,
    pub host_ip: String,
    pub host: String,
    pub cpu: u32,
    pub memory: u64,
    pub image_id: String,
    pub root_size: Option<u64>,
    pub domain_uuid: Option<String>,
    pub describe: String,
    pub progress: u8,
    pub progress_step: String,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
}

pub fn insert(conn: &mut MysqlConnection, row: &Instance) -> QueryResult<()> {
    diesel::insert_into(instance::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn get(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<Instance>> {
    instance::table
        .find(id)
        .select(Instance::as_select())
        .first(conn)
        .optional()
}

/// One page, newest first, filtered by name substring and exact status.
pub fn list(
    conn: &mut MysqlConnection,
    name_contains: Option<&str>,
    status: Option<&str>,
    page: Page,
) -> QueryResult<(i64, Vec<Instance>)> {
    let mut filters = vec![];
    if let Some(f) = name_contains {
        filters.push(("instance_name LIKE ? ESCAPE '\\\\'", contains_pattern(f)));
    }
    if let Some(s) = status {
        filters.push(("status = ?", s.to_string()));
    }
    super::page_of(conn, "instance", "instance_id", &filters, page)
}

/// Records progress of a long operation.
pub fn set_progress(
    conn: &mut MysqlConnection,
    id: &str,
    pct: u8,
    step: &str,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(instance::table.find(id))
        .set((
            instance::progress.eq(pct),
            instance::progress_step.eq(step),
            instance::update_time.eq(now),
        ))
        .execute(conn)
}

pub fn set_domain_uuid(conn: &mut MysqlConnection, id: &str, uuid: &str) -> QueryResult<usize> {
    diesel::update(instance::table.find(id))
        .set(instance::domain_uuid.eq(Some(uuid)))
        .execute(conn)
}

/// Compare-and-set of the status: true if this call made the transition.
pub fn transition(
    conn: &mut MysqlConnection,
    id: &str,
    from: &str,
    to: &str,
    error_message: Option<&str>,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(instance::table.find(id).filter(instance::status.eq(from)))
        .set((
            instance::status.eq(to),
            instance::error_message.eq(error_message),
            instance::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

pub fn delete_in_status(conn: &mut MysqlConnection, id: &str, status: &str) -> QueryResult<bool> {
    let n = diesel::delete(instance::table.find(id).filter(instance::status.eq(status)))
        .execute(conn)?;
    Ok(n == 1)
}

/// (instance_id, instance_name) of the instances booted from an image.
pub fn using_image(
    conn: &mut MysqlConnection,
    image_id: &str,
) -> QueryResult<Vec<(String, String)>> {
    instance::table
        .filter(instance::image_id.eq(image_id))
        .select((instance::instance_id, instance::instance_name))
        .order(instance::instance_id)
        .load(conn)
}

/// Rows in `status` untouched since before `older_than` (work interrupted by a crash).
pub fn stale_in_status(
    conn: &mut MysqlConnection,
    status: &str,
    older_than: u64,
) -> QueryResult<Vec<Instance>> {
    instance::table
        .filter(instance::status.eq(status))
        .filter(instance::update_time.lt(older_than))
        .select(Instance::as_select())
        .load(conn)
}

/// What an instance shows of each of its NICs.
#[derive(Debug, Clone, Queryable)]
pub struct NicRow {
    pub network_interface_id: String,
    pub network_interface_name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub bridge: String,
    pub status: String,
    pub create_time: u64,
}

type NicColumns = (
    network_interface::network_interface_id,
    network_interface::network_interface_name,
    network_interface::mac,
    network_interface::ip,
    network_interface::bridge,
    network_interface::status,
    network_interface::create_time,
);

const NIC_COLUMNS: NicColumns = (
    network_interface::network_interface_id,
    network_interface::network_interface_name,
    network_interface::mac,
    network_interface::ip,
    network_interface::bridge,
    network_interface::status,
    network_interface::create_time,
);

pub fn nics_of(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<Vec<NicRow>> {
    network_interface::table
        .filter(network_interface::instance_id.eq(instance_id))
        .select(NIC_COLUMNS)
        .order(network_interface::attach_time.asc())
        .load(conn)
}

/// Releases an instance's NICs in MySQL (the domain is gone): `available` again.
pub fn release_nics(conn: &mut MysqlConnection, instance_id: &str, now: u64) -> QueryResult<usize> {
    diesel::update(network_interface::table.filter(network_interface::instance_id.eq(instance_id)))
        .set((
            network_interface::status.eq("available"),
            network_interface::instance_id.eq(None::<String>),
            network_interface::attach_time.eq(None::<u64>),
            network_interface::update_time.eq(now),
        ))
        .execute(conn)
}

/// NICs of several instances at once, each with its instance id (lists: no query per row).
pub fn nics_of_instances(
    conn: &mut MysqlConnection,
    ids: &[String],
) -> QueryResult<Vec<(String, NicRow)>> {
    let rows: Vec<(Option<String>, NicRow)> = network_interface::table
        .filter(network_interface::instance_id.eq_any(ids))
        .select((network_interface::instance_id, NIC_COLUMNS))
        .order(network_interface::attach_time.asc())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(iid, n)| (iid.unwrap_or_default(), n))
        .collect())
}

/// Deletes an instance's NICs (destroy with delete_attached).
pub fn delete_nics(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<usize> {
    diesel::delete(network_interface::table.filter(network_interface::instance_id.eq(instance_id)))
        .execute(conn)
}

/// instance_id -> instance_name for the given ids (lists of volumes and NICs).
pub fn names_of(
    conn: &mut MysqlConnection,
    ids: &[String],
) -> QueryResult<std::collections::HashMap<String, String>> {
    let rows: Vec<(String, String)> = instance::table
        .filter(instance::instance_id.eq_any(ids))
        .select((instance::instance_id, instance::instance_name))
        .load(conn)?;
    Ok(rows.into_iter().collect())
}

pub fn set_ip(
    conn: &mut MysqlConnection,
    instance_id: &str,
    ip: Option<&str>,
) -> QueryResult<usize> {
    diesel::update(instance::table.find(instance_id))
        .set(instance::ip.eq(ip))
        .execute(conn)
}

/// Keeps an instance's `ip` on one of its NICs: unchanged while the NIC holding it stays,
/// else the earliest attached NIC's address (or NULL).
pub fn refresh_ip(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<()> {
    let current: Option<String> = instance::table
        .find(instance_id)
        .select(instance::ip)
        .first(conn)
        .optional()?
        .flatten();
    let ips: Vec<Option<String>> = network_interface::table
        .filter(network_interface::instance_id.eq(instance_id))
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
    set_ip(conn, instance_id, ips.first().map(String::as_str)).map(|_| ())
}
