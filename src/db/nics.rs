//! Rows of `network_interface`: the row, its insert form and its update form.

use super::schema::network_interface as nic;
use crate::model::{InstanceId, NicId, NicStatus};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = nic)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Nic {
    pub network_interface_id: NicId,
    pub network_interface_name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub bridge: String,
    pub status: NicStatus,
    pub instance_id: Option<InstanceId>,
    pub describe: String,
    pub error_message: Option<String>,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
    /// Made by instance/create for its instance: destroyed with it (cleared on detach).
    pub delete_with_instance: bool,
}

/// A new NIC row (available, or reserved for an instance being created).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = nic)]
pub struct NicForm {
    pub network_interface_id: NicId,
    pub network_interface_name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub bridge: String,
    pub status: NicStatus,
    pub instance_id: Option<InstanceId>,
    pub describe: String,
    pub create_time: u64,
    pub project_id: String,
    /// Made by instance/create for its instance: destroyed with it (cleared on detach).
    pub delete_with_instance: bool,
}

/// A status change with the columns that go with it (see `VolumeUpdate`).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = nic)]
pub struct NicUpdate {
    pub status: NicStatus,
    pub instance_id: Option<Option<InstanceId>>,
    pub attach_time: Option<Option<u64>>,
    pub error_message: Option<Option<String>>,
    pub delete_with_instance: Option<bool>,
    pub update_time: u64,
}

impl NicUpdate {
    fn to(status: NicStatus, now: u64) -> Self {
        NicUpdate {
            status,
            instance_id: None,
            attach_time: None,
            error_message: None,
            delete_with_instance: None,
            update_time: now,
        }
    }
    /// `-> attaching` to `instance`.
    pub fn reserve(instance: &InstanceId, now: u64) -> Self {
        NicUpdate {
            instance_id: Some(Some(instance.clone())),
            error_message: Some(None),
            ..Self::to(NicStatus::Attaching, now)
        }
    }
    /// `-> attached`, stamping the attach time.
    pub fn attached(now: u64) -> Self {
        NicUpdate {
            attach_time: Some(Some(now)),
            ..Self::to(NicStatus::Attached, now)
        }
    }
    /// `-> available`, forgetting the instance.
    pub fn released(error_message: Option<&str>, now: u64) -> Self {
        NicUpdate {
            instance_id: Some(None),
            attach_time: Some(None),
            error_message: Some(error_message.map(crate::db::fit_message)),
            delete_with_instance: Some(false),
            ..Self::to(NicStatus::Available, now)
        }
    }
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

/// The NICs of an instance, in attach order.
pub fn of_instance(conn: &mut MysqlConnection, instance_id: &InstanceId) -> QueryResult<Vec<Nic>> {
    of_instances(conn, std::slice::from_ref(instance_id))
}

/// The NICs of several instances at once (lists: no query per row).
pub fn of_instances(conn: &mut MysqlConnection, ids: &[InstanceId]) -> QueryResult<Vec<Nic>> {
    nic::table
        .filter(nic::instance_id.eq_any(ids))
        .order((nic::attach_time.asc(), nic::create_time.asc()))
        .select(Nic::as_select())
        .load(conn)
}

/// Releases the NICs of an instance whose domain is gone: `available` again.
pub fn release_all_of(
    conn: &mut MysqlConnection,
    instance_id: &InstanceId,
    now: u64,
) -> QueryResult<usize> {
    let mut released = NicUpdate::released(None, now);
    released.error_message = None;
    diesel::update(nic::table.filter(nic::instance_id.eq(instance_id)))
        .set(&released)
        .execute(conn)
}

/// Deletes the NICs instance create made for the instance (`delete_with_instance`).
pub fn delete_made_for(conn: &mut MysqlConnection, instance_id: &InstanceId) -> QueryResult<usize> {
    diesel::delete(
        nic::table
            .filter(nic::instance_id.eq(instance_id))
            .filter(nic::delete_with_instance.eq(true)),
    )
    .execute(conn)
}

/// Deletes an instance's NICs (destroy with delete_attached).
pub fn delete_all_of(conn: &mut MysqlConnection, instance_id: &InstanceId) -> QueryResult<usize> {
    diesel::delete(nic::table.filter(nic::instance_id.eq(instance_id))).execute(conn)
}

crate::db::table_queries!(
    nic,
    "network_interface",
    Nic,
    NicForm,
    NicId,
    NicStatus,
    id = "network_interface_id",
    name = "network_interface_name",
    update = NicUpdate
);
