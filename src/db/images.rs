//! Rows of `image`: the row, its insert form and its update form.

use super::schema::image;
use crate::model::{ImageId, ImageStatus, SnapshotId, VolumeId};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = image)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Image {
    pub image_id: ImageId,
    pub image_name: String,
    pub image_size: u64,
    pub os_type: String,
    pub describe: String,
    pub status: ImageStatus,
    pub error_message: Option<String>,
    pub snapshot_name: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
    /// `public` (every project may boot it) or `private` (its project's only).
    pub visibility: String,
    /// Percent done of the copy that makes it (`None` when none runs).
    pub progress: Option<u8>,
    /// The snapshot it is (being) copied from...
    pub source_snapshot_id: Option<SnapshotId>,
    /// ...and the volume of that snapshot.
    pub source_volume_id: Option<VolumeId>,
    /// SHA-256 (hex) of the file an upload received.
    pub sha256: Option<String>,
}

/// The `visibility` of an image every project may boot (else `private`: its project's only).
pub const PUBLIC: &str = "public";

/// A new image row (no message, no snapshot yet).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = image)]
pub struct ImageForm {
    pub image_id: ImageId,
    pub image_name: String,
    pub image_size: u64,
    pub os_type: String,
    pub describe: String,
    pub status: ImageStatus,
    pub create_time: u64,
    pub project_id: String,
    /// `public` (every project may boot it) or `private` (its project's only).
    pub visibility: String,
    /// Percent done of the copy that makes it (copies only).
    pub progress: Option<u8>,
    pub source_snapshot_id: Option<SnapshotId>,
    pub source_volume_id: Option<VolumeId>,
}

/// Fields an update may change; `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = image)]
pub struct ImageUpdate {
    pub image_name: Option<String>,
    pub os_type: Option<String>,
    pub describe: Option<String>,
    pub snapshot_name: Option<String>,
    pub update_time: Option<u64>,
}

pub fn all_ids(conn: &mut MysqlConnection) -> QueryResult<Vec<ImageId>> {
    image::table.select(image::image_id).load(conn)
}

pub fn update(
    conn: &mut MysqlConnection,
    id: &ImageId,
    changes: &ImageUpdate,
) -> QueryResult<usize> {
    diesel::update(image::table.find(id))
        .set(changes)
        .execute(conn)
}

crate::db::table_queries!(
    image,
    "image",
    Image,
    ImageForm,
    ImageId,
    ImageStatus,
    id = "image_id",
    name = "image_name"
);

/// `creating -> available` of a copied or uploaded image, with its real size and (an upload)
/// the SHA-256 of what was received; false if the row is no longer `creating` (a takeover
/// settled it).
pub fn finish(
    conn: &mut MysqlConnection,
    id: &ImageId,
    size: u64,
    sha256: Option<&str>,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(
        image::table
            .find(id)
            .filter(image::status.eq(ImageStatus::Creating)),
    )
    .set((
        image::status.eq(ImageStatus::Available),
        image::image_size.eq(size),
        image::sha256.eq(sha256),
        image::progress.eq(None::<u8>),
        image::error_message.eq(None::<String>),
        image::update_time.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// `creating -> error` of a copy that failed, saying why; false if the row is no longer
/// `creating`.
pub fn fail_copy(
    conn: &mut MysqlConnection,
    id: &ImageId,
    msg: &str,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(
        image::table
            .find(id)
            .filter(image::status.eq(ImageStatus::Creating)),
    )
    .set((
        image::status.eq(ImageStatus::Error),
        image::progress.eq(None::<u8>),
        image::error_message.eq(Some(crate::db::fit_message(msg))),
        image::update_time.eq(now),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Records how far the copy of a `creating` image is.
pub fn set_progress(
    conn: &mut MysqlConnection,
    id: &ImageId,
    pct: u8,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(
        image::table
            .find(id)
            .filter(image::status.eq(ImageStatus::Creating)),
    )
    .set((image::progress.eq(Some(pct)), image::update_time.eq(now)))
    .execute(conn)
}

/// Images being copied from snapshot `snap`, read with a locking read (the latest committed
/// rows, whatever the transaction's snapshot): what a delete of the snapshot must wait for.
pub fn copying_from(conn: &mut MysqlConnection, snap: &SnapshotId) -> QueryResult<Vec<ImageId>> {
    image::table
        .filter(image::source_snapshot_id.eq(snap))
        .filter(image::status.eq(ImageStatus::Creating))
        .select(image::image_id)
        .for_update()
        .load(conn)
}
