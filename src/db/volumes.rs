//! Rows of `volume` (data volumes, and instances' root disks with `is_root`): the row, its
//! insert form and its update form.

use super::schema::volume;
use crate::model::{InstanceId, VolumeId, VolumeStatus};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = volume)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Volume {
    pub volume_id: VolumeId,
    pub volume_name: String,
    pub volume_size: u64,
    pub status: VolumeStatus,
    pub instance_id: Option<InstanceId>,
    pub is_root: bool,
    pub target_dev: Option<String>,
    pub describe: String,
    pub error_message: Option<String>,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
    /// Made by instance/create for its instance: destroyed with it (cleared on detach).
    pub delete_with_instance: bool,
}

/// A new volume row (a data volume, or an instance's root disk or data volume reserved for it).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = volume)]
pub struct VolumeForm {
    pub volume_id: VolumeId,
    pub volume_name: String,
    pub volume_size: u64,
    pub status: VolumeStatus,
    pub instance_id: Option<InstanceId>,
    pub is_root: bool,
    pub target_dev: Option<String>,
    pub describe: String,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub project_id: String,
    /// Made by instance/create for its instance: destroyed with it (cleared on detach).
    pub delete_with_instance: bool,
}

/// The row, locked until the transaction ends (`SELECT ... FOR UPDATE`): a mount, unmount or
/// delete's compare-and-set waits for it.
pub fn lock(conn: &mut MysqlConnection, id: &VolumeId) -> QueryResult<Option<Volume>> {
    volume::table
        .find(id)
        .select(Volume::as_select())
        .for_update()
        .first(conn)
        .optional()
}

/// A new size (GiB), with the update time.
pub fn set_size(
    conn: &mut MysqlConnection,
    id: &VolumeId,
    gib: u64,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(volume::table.find(id))
        .set((volume::volume_size.eq(gib), volume::update_time.eq(now)))
        .execute(conn)
}

/// A status change with the columns that go with it; `None` leaves a column as it is,
/// `Some(None)` sets NULL. Applied by `transition_with` as a compare-and-set.
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = volume)]
pub struct VolumeUpdate {
    pub status: VolumeStatus,
    pub instance_id: Option<Option<InstanceId>>,
    pub target_dev: Option<Option<String>>,
    pub attach_time: Option<Option<u64>>,
    pub error_message: Option<Option<String>>,
    pub delete_with_instance: Option<bool>,
    pub update_time: u64,
}

impl VolumeUpdate {
    fn to(status: VolumeStatus, now: u64) -> Self {
        VolumeUpdate {
            status,
            instance_id: None,
            target_dev: None,
            attach_time: None,
            error_message: None,
            delete_with_instance: None,
            update_time: now,
        }
    }
    /// `-> attaching` to `instance` at `target` (a unique violation: the target is taken).
    pub fn reserve(instance: &InstanceId, target: &str, now: u64) -> Self {
        VolumeUpdate {
            instance_id: Some(Some(instance.clone())),
            target_dev: Some(Some(target.to_string())),
            error_message: Some(None),
            ..Self::to(VolumeStatus::Attaching, now)
        }
    }
    /// `-> in-use`, stamping the attach time.
    pub fn attached(now: u64) -> Self {
        VolumeUpdate {
            attach_time: Some(Some(now)),
            ..Self::to(VolumeStatus::InUse, now)
        }
    }
    /// `-> available`, forgetting the instance and the target device.
    pub fn released(error_message: Option<&str>, now: u64) -> Self {
        VolumeUpdate {
            instance_id: Some(None),
            target_dev: Some(None),
            attach_time: Some(None),
            error_message: Some(error_message.map(crate::db::fit_message)),
            delete_with_instance: Some(false),
            ..Self::to(VolumeStatus::Available, now)
        }
    }
}

pub fn delete(conn: &mut MysqlConnection, id: &VolumeId) -> QueryResult<usize> {
    diesel::delete(volume::table.find(id)).execute(conn)
}

/// The volumes of an instance, root first, then by device.
pub fn of_instance(
    conn: &mut MysqlConnection,
    instance_id: &InstanceId,
) -> QueryResult<Vec<Volume>> {
    of_instances(conn, std::slice::from_ref(instance_id))
}

/// The volumes of several instances at once (lists: no query per row).
pub fn of_instances(conn: &mut MysqlConnection, ids: &[InstanceId]) -> QueryResult<Vec<Volume>> {
    volume::table
        .filter(volume::instance_id.eq_any(ids))
        .order((volume::is_root.desc(), volume::target_dev.asc()))
        .select(Volume::as_select())
        .load(conn)
}

/// Detaches every data volume of an instance whose domain is gone: whatever status a volume
/// had, it is attached to nothing now, so `available`.
pub fn release_data_volumes(
    conn: &mut MysqlConnection,
    instance_id: &InstanceId,
    now: u64,
) -> QueryResult<usize> {
    let mut released = VolumeUpdate::released(None, now);
    released.error_message = None;
    diesel::update(
        volume::table
            .filter(volume::instance_id.eq(instance_id))
            .filter(volume::is_root.eq(false)),
    )
    .set(&released)
    .execute(conn)
}

/// Target devices recorded for an instance's volumes.
pub fn targets_of(
    conn: &mut MysqlConnection,
    instance_id: &InstanceId,
) -> QueryResult<Vec<String>> {
    let t: Vec<Option<String>> = volume::table
        .filter(volume::instance_id.eq(instance_id))
        .select(volume::target_dev)
        .load(conn)?;
    Ok(t.into_iter().flatten().collect())
}

crate::db::table_queries!(
    volume,
    "volume",
    Volume,
    VolumeForm,
    VolumeId,
    VolumeStatus,
    id = "volume_id",
    name = "volume_name",
    update = VolumeUpdate
);
