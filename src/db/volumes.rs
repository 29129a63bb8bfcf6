//! Rows of `volume` (data volumes, and instances' root disks with `is_root`).

use super::schema::volume;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = volume)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Volume {
    pub volume_id: String,
    pub volume_name: String,
    pub volume_size: u64,
    pub status: String,
    pub instance_id: Option<String>,
    pub is_root: bool,
    pub target_dev: Option<String>,
    pub describe: String,
    pub error_message: Option<String>,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub update_time: u64,
}

pub fn insert(conn: &mut MysqlConnection, row: &Volume) -> QueryResult<()> {
    diesel::insert_into(volume::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn delete(conn: &mut MysqlConnection, id: &str) -> QueryResult<usize> {
    diesel::delete(volume::table.find(id)).execute(conn)
}

pub fn set_status(
    conn: &mut MysqlConnection,
    id: &str,
    status: &str,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(volume::table.find(id))
        .set((volume::status.eq(status), volume::update_time.eq(now)))
        .execute(conn)
}

/// The volumes of an instance, root first, then by device.
pub fn of_instance(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<Vec<Volume>> {
    volume::table
        .filter(volume::instance_id.eq(instance_id))
        .order((volume::is_root.desc(), volume::target_dev.asc()))
        .select(Volume::as_select())
        .load(conn)
}

/// The volumes of several instances at once (lists: no query per row).
pub fn of_instances(conn: &mut MysqlConnection, ids: &[String]) -> QueryResult<Vec<Volume>> {
    volume::table
        .filter(volume::instance_id.eq_any(ids))
        .order((volume::is_root.desc(), volume::target_dev.asc()))
        .select(Volume::as_select())
        .load(conn)
}

/// Detaches every data volume of an instance in MySQL (the domain is gone): `available` again.
pub fn release_data_volumes(
    conn: &mut MysqlConnection,
    instance_id: &str,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(
        volume::table
            .filter(volume::instance_id.eq(instance_id))
            .filter(volume::is_root.eq(false)),
    )
    .set((
        volume::status.eq("available"),
        volume::instance_id.eq(None::<String>),
        volume::target_dev.eq(None::<String>),
        volume::attach_time.eq(None::<u64>),
        volume::update_time.eq(now),
    ))
    .execute(conn)
}
