//! Rows of `network_interface`.

use super::schema::network_interface as nic;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = nic)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Nic {
    pub network_interface_id: String,
    pub network_interface_name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub bridge: String,
    pub status: String,
    pub instance_id: Option<String>,
    pub describe: String,
    pub error_message: Option<String>,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub update_time: u64,
}

/// Inserts; a unique violation names a taken MAC or (bridge, IP) - or a taken id.
pub fn insert(conn: &mut MysqlConnection, row: &Nic) -> QueryResult<()> {
    diesel::insert_into(nic::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn get(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<Nic>> {
    nic::table
        .find(id)
        .select(Nic::as_select())
        .first(conn)
        .optional()
}

pub fn mac_taken(conn: &mut MysqlConnection, mac: &str) -> QueryResult<bool> {
    let n: i64 = nic::table
        .filter(nic::mac.eq(mac))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

pub fn ip_taken(conn: &mut MysqlConnection, bridge: &str, ip: &str) -> QueryResult<bool> {
    let n: i64 = nic::table
        .filter(nic::bridge.eq(bridge))
        .filter(nic::ip.eq(ip))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Addresses in use on a bridge.
pub fn ips_on(conn: &mut MysqlConnection, bridge: &str) -> QueryResult<Vec<String>> {
    let v: Vec<Option<String>> = nic::table
        .filter(nic::bridge.eq(bridge))
        .select(nic::ip)
        .load(conn)?;
    Ok(v.into_iter().flatten().collect())
}

pub fn list(
    conn: &mut MysqlConnection,
    name_contains: Option<&str>,
    status: Option<&str>,
    instance_id: Option<&str>,
    page: super::Page,
) -> QueryResult<(i64, Vec<Nic>)> {
    let mut filters = vec![];
    if let Some(f) = name_contains {
        filters.push((
            "network_interface_name LIKE ? ESCAPE '\\\\'",
            super::contains_pattern(f),
        ));
    }
    if let Some(s) = status {
        filters.push(("status = ?", s.to_string()));
    }
    if let Some(i) = instance_id {
        filters.push(("instance_id = ?", i.to_string()));
    }
    super::page_of(
        conn,
        "network_interface",
        "network_interface_id",
        &filters,
        page,
    )
}

/// `available -> attaching`, recording the instance. False if the NIC was not available.
pub fn reserve(
    conn: &mut MysqlConnection,
    id: &str,
    instance_id: &str,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(nic::table.find(id).filter(nic::status.eq("available")))
        .set((
            nic::status.eq("attaching"),
            nic::instance_id.eq(Some(instance_id)),
            nic::error_message.eq(None::<String>),
            nic::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// `attaching -> attached`, stamping the attach time.
pub fn attached(conn: &mut MysqlConnection, id: &str, now: u64) -> QueryResult<bool> {
    let n = diesel::update(nic::table.find(id).filter(nic::status.eq("attaching")))
        .set((
            nic::status.eq("attached"),
            nic::attach_time.eq(Some(now)),
            nic::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// `from -> available`, forgetting the instance.
pub fn release(
    conn: &mut MysqlConnection,
    id: &str,
    from: &str,
    error_message: Option<&str>,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(nic::table.find(id).filter(nic::status.eq(from)))
        .set((
            nic::status.eq("available"),
            nic::instance_id.eq(None::<String>),
            nic::attach_time.eq(None::<u64>),
            nic::error_message.eq(error_message),
            nic::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// The NICs of an instance, in attach order.
pub fn of_instance(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<Vec<Nic>> {
    nic::table
        .filter(nic::instance_id.eq(instance_id))
        .order((nic::attach_time.asc(), nic::create_time.asc()))
        .select(Nic::as_select())
        .load(conn)
}

/// The NICs of several instances at once (lists: no query per row).
pub fn of_instances(conn: &mut MysqlConnection, ids: &[String]) -> QueryResult<Vec<Nic>> {
    nic::table
        .filter(nic::instance_id.eq_any(ids))
        .order((nic::attach_time.asc(), nic::create_time.asc()))
        .select(Nic::as_select())
        .load(conn)
}

/// Releases an instance's NICs in MySQL (its domain is gone): `available` again.
pub fn release_all_of(
    conn: &mut MysqlConnection,
    instance_id: &str,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(nic::table.filter(nic::instance_id.eq(instance_id)))
        .set((
            nic::status.eq("available"),
            nic::instance_id.eq(None::<String>),
            nic::attach_time.eq(None::<u64>),
            nic::update_time.eq(now),
        ))
        .execute(conn)
}

/// Deletes an instance's NICs (destroy with delete_attached).
pub fn delete_all_of(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<usize> {
    diesel::delete(nic::table.filter(nic::instance_id.eq(instance_id))).execute(conn)
}

crate::db::status_queries!(nic, Nic);
