//! Rows of `image`: the row, its insert form and its update form.

use super::schema::image;
use crate::model::{ImageId, ImageStatus};
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
