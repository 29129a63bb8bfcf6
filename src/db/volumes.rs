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

pub fn get(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<Volume>> {
    volume::table
        .find(id)
        .select(Volume::as_select())
        .first(conn)
        .optional()
}

/// One page of volumes, newest first, filtered by name substring, status and instance.
pub fn list(
    conn: &mut MysqlConnection,
    name_contains: Option<&str>,
    status: Option<&str>,
    instance_id: Option<&str>,
    page: super::Page,
) -> QueryResult<(i64, Vec<Volume>)> {
    let mut filters = vec![];
    if let Some(f) = name_contains {
        filters.push((
            "volume_name LIKE ? ESCAPE '\\\\'",
            super::contains_pattern(f),
        ));
    }
    if let Some(s) = status {
        filters.push(("status = ?", s.to_string()));
    }
    if let Some(i) = instance_id {
        filters.push(("instance_id = ?", i.to_string()));
    }
    super::page_of(conn, "volume", "volume_id", &filters, page)
}

/// Compare-and-set `available -> attaching`, recording the instance and target device it goes
/// to. False if the volume was not available; a unique violation if the target is taken.
pub fn reserve(
    conn: &mut MysqlConnection,
    id: &str,
    instance_id: &str,
    target_dev: &str,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(
        volume::table
            .find(id)
            .filter(volume::status.eq("available")),
    )
    .set((
        volume::status.eq("attaching"),
        volume::instance_id.eq(Some(instance_id)),
        volume::target_dev.eq(Some(target_dev)),
        volume::error_message.eq(None::<String>),
        volume::update_time.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// `attaching -> in-use`, stamping the attach time.
pub fn attached(conn: &mut MysqlConnection, id: &str, now: u64) -> QueryResult<bool> {
    let n = diesel::update(
        volume::table
            .find(id)
            .filter(volume::status.eq("attaching")),
    )
    .set((
        volume::status.eq("in-use"),
        volume::attach_time.eq(Some(now)),
        volume::update_time.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// `from -> available`, forgetting the instance and the target device.
pub fn release(
    conn: &mut MysqlConnection,
    id: &str,
    from: &str,
    error_message: Option<&str>,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(volume::table.find(id).filter(volume::status.eq(from)))
        .set((
            volume::status.eq("available"),
            volume::instance_id.eq(None::<String>),
            volume::target_dev.eq(None::<String>),
            volume::attach_time.eq(None::<u64>),
            volume::error_message.eq(error_message),
            volume::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Target devices recorded for an instance's volumes.
pub fn targets_of(conn: &mut MysqlConnection, instance_id: &str) -> QueryResult<Vec<String>> {
    let t: Vec<Option<String>> = volume::table
        .filter(volume::instance_id.eq(instance_id))
        .select(volume::target_dev)
        .load(conn)?;
    Ok(t.into_iter().flatten().collect())
}

crate::db::status_queries!(volume, Volume);
