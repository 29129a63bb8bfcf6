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

crate::db::status_queries!(instance, Instance);
