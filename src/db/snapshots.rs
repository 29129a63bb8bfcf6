//! Rows of `snapshot` and `snapshot_volume`: a snapshot and the volumes it covers.

use super::schema::{snapshot, snapshot_volume};
use crate::model::{InstanceId, SnapshotId, SnapshotStatus, VolumeId};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = snapshot)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Snapshot {
    pub snapshot_id: SnapshotId,
    pub snapshot_name: String,
    /// An instance snapshot: every disk of this instance.
    pub instance_id: Option<InstanceId>,
    /// A volume snapshot: this volume alone.
    pub volume_id: Option<VolumeId>,
    pub status: SnapshotStatus,
    /// How long the guest was suspended while the RBD snapshots were taken.
    pub suspended_ms: Option<u64>,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = snapshot)]
pub struct SnapshotForm {
    pub snapshot_id: SnapshotId,
    pub snapshot_name: String,
    pub instance_id: Option<InstanceId>,
    pub volume_id: Option<VolumeId>,
    pub status: SnapshotStatus,
    pub create_time: u64,
    pub project_id: String,
}

/// One volume a snapshot covers, with its size (GiB) when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = snapshot_volume)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Covered {
    pub snapshot_id: SnapshotId,
    pub volume_id: VolumeId,
    pub volume_size: u64,
    pub is_root: bool,
}

pub fn cover(conn: &mut MysqlConnection, rows: &[Covered]) -> QueryResult<usize> {
    diesel::insert_into(snapshot_volume::table)
        .values(rows)
        .execute(conn)
}

/// The volumes a snapshot covers, root first.
pub fn covered(conn: &mut MysqlConnection, id: &SnapshotId) -> QueryResult<Vec<Covered>> {
    snapshot_volume::table
        .filter(snapshot_volume::snapshot_id.eq(id))
        .order((
            snapshot_volume::is_root.desc(),
            snapshot_volume::volume_id.asc(),
        ))
        .select(Covered::as_select())
        .load(conn)
}

/// The volumes of several snapshots at once (lists: no query per row).
pub fn covered_by(conn: &mut MysqlConnection, ids: &[SnapshotId]) -> QueryResult<Vec<Covered>> {
    snapshot_volume::table
        .filter(snapshot_volume::snapshot_id.eq_any(ids))
        .order((
            snapshot_volume::is_root.desc(),
            snapshot_volume::volume_id.asc(),
        ))
        .select(Covered::as_select())
        .load(conn)
}

/// The snapshots that cover any of `volumes` (what a delete of them would break).
pub fn covering(conn: &mut MysqlConnection, volumes: &[VolumeId]) -> QueryResult<Vec<SnapshotId>> {
    snapshot_volume::table
        .filter(snapshot_volume::volume_id.eq_any(volumes))
        .select(snapshot_volume::snapshot_id)
        .distinct()
        .order(snapshot_volume::snapshot_id.asc())
        .load(conn)
}

/// Deletes a snapshot row in `status` and its covered volumes (one transaction by the caller).
pub fn delete_with_cover(
    conn: &mut MysqlConnection,
    id: &SnapshotId,
    status: SnapshotStatus,
) -> QueryResult<bool> {
    diesel::delete(snapshot_volume::table.filter(snapshot_volume::snapshot_id.eq(id)))
        .execute(conn)?;
    delete_in_status(conn, id, status)
}

/// Forgets that a snapshot covers a volume (its RBD snapshot is gone).
pub fn uncover(
    conn: &mut MysqlConnection,
    id: &SnapshotId,
    volume: &VolumeId,
) -> QueryResult<usize> {
    diesel::delete(
        snapshot_volume::table
            .filter(snapshot_volume::snapshot_id.eq(id))
            .filter(snapshot_volume::volume_id.eq(volume)),
    )
    .execute(conn)
}

/// The snapshots of an instance (what its destroy would break).
pub fn of_instance(conn: &mut MysqlConnection, id: &InstanceId) -> QueryResult<Vec<SnapshotId>> {
    snapshot::table
        .filter(snapshot::instance_id.eq(id))
        .select(snapshot::snapshot_id)
        .order(snapshot::snapshot_id.asc())
        .load(conn)
}

/// Records how long the guest was suspended.
pub fn set_suspended(conn: &mut MysqlConnection, id: &SnapshotId, ms: u64) -> QueryResult<usize> {
    diesel::update(snapshot::table.find(id))
        .set(snapshot::suspended_ms.eq(Some(ms)))
        .execute(conn)
}

crate::db::table_queries!(
    snapshot,
    "snapshot",
    Snapshot,
    SnapshotForm,
    SnapshotId,
    SnapshotStatus,
    id = "snapshot_id",
    name = "snapshot_name"
);

/// Touches an `available` snapshot (a locking write: a concurrent delete of it waits for this
/// transaction); false if it is not `available`.
pub fn hold_available(conn: &mut MysqlConnection, id: &SnapshotId, now: u64) -> QueryResult<bool> {
    let n = diesel::update(
        snapshot::table
            .find(id)
            .filter(snapshot::status.eq(SnapshotStatus::Available)),
    )
    .set(snapshot::update_time.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}
