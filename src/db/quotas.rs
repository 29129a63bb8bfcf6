//! Rows of `quota` and the usage counts they are checked against. No rules here:
//! `service::quotas` decides.

use super::schema::quota;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

/// A project's limits (`None`: no limit).
#[derive(Debug, Clone, Default, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = quota)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Quota {
    pub project_id: String,
    pub instances: Option<u64>,
    pub vcpus: Option<u64>,
    pub memory_mib: Option<u64>,
    pub volumes: Option<u64>,
    pub volume_gib: Option<u64>,
    pub network_interfaces: Option<u64>,
    pub images: Option<u64>,
    pub update_time: u64,
}

/// What a project holds now, counted from the resource rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, QueryableByName)]
pub struct Usage {
    #[diesel(sql_type = BigInt)]
    pub instances: i64,
    #[diesel(sql_type = BigInt)]
    pub vcpus: i64,
    #[diesel(sql_type = BigInt)]
    pub memory_mib: i64,
    /// Data volumes (root disks are counted with their instances).
    #[diesel(sql_type = BigInt)]
    pub volumes: i64,
    /// GiB of data volumes and of instances' root disks.
    #[diesel(sql_type = BigInt)]
    pub volume_gib: i64,
    #[diesel(sql_type = BigInt)]
    pub network_interfaces: i64,
    #[diesel(sql_type = BigInt)]
    pub images: i64,
}

/// Locks the project's quota row (made with no limits if missing) until the transaction ends,
/// and returns it: every create of the project that checks its quota waits here for the one
/// before it to commit.
pub fn lock(conn: &mut MysqlConnection, project: &str, now: u64) -> QueryResult<Quota> {
    let locked = |c: &mut MysqlConnection| {
        quota::table
            .find(project)
            .select(Quota::as_select())
            .for_update()
            .first(c)
            .optional()
    };
    // Only a missing row is inserted first: an INSERT IGNORE of an existing row takes a shared
    // lock, and two of those both waiting to upgrade to the exclusive one deadlock.
    if let Some(q) = locked(conn)? {
        return Ok(q);
    }
    diesel::sql_query("INSERT IGNORE INTO quota (project_id, update_time) VALUES (?, ?)")
        .bind::<Text, _>(project)
        .bind::<diesel::sql_types::Unsigned<BigInt>, _>(now)
        .execute(conn)?;
    locked(conn)?.ok_or(diesel::result::Error::NotFound)
}

/// The project's limits (none if it never had a row).
pub fn get(conn: &mut MysqlConnection, project: &str) -> QueryResult<Option<Quota>> {
    quota::table
        .find(project)
        .select(Quota::as_select())
        .first(conn)
        .optional()
}

/// Sets a project's limits (the row is made if missing).
pub fn put(conn: &mut MysqlConnection, q: &Quota) -> QueryResult<()> {
    diesel::replace_into(quota::table)
        .values(q)
        .execute(conn)
        .map(|_| ())
}

/// What `project` holds now (every row counts, whatever its status: a `creating` or `error`
/// row holds its place until it is deleted).
pub fn usage(conn: &mut MysqlConnection, project: &str) -> QueryResult<Usage> {
    diesel::sql_query(
        "SELECT \
           (SELECT COUNT(*) FROM instance WHERE project_id = ?) AS instances, \
           (SELECT CAST(COALESCE(SUM(cpu), 0) AS SIGNED) FROM instance WHERE project_id = ?) AS vcpus, \
           (SELECT CAST(COALESCE(SUM(memory), 0) AS SIGNED) FROM instance WHERE project_id = ?) AS memory_mib, \
           (SELECT COUNT(*) FROM volume WHERE project_id = ? AND is_root = 0) AS volumes, \
           (SELECT CAST(COALESCE(SUM(volume_size), 0) AS SIGNED) FROM volume WHERE project_id = ? AND is_root = 0) \
             + (SELECT CAST(COALESCE(SUM(root_size), 0) AS SIGNED) FROM instance WHERE project_id = ?) AS volume_gib, \
           (SELECT COUNT(*) FROM network_interface WHERE project_id = ?) AS network_interfaces, \
           (SELECT COUNT(*) FROM image WHERE project_id = ?) AS images",
    )
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .bind::<Text, _>(project)
    .get_result(conn)
}
