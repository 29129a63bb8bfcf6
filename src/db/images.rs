//! Rows of `image`.

use super::schema::image;
use super::{contains_pattern, Page};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = image)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Image {
    pub image_id: String,
    pub image_name: String,
    pub image_size: u64,
    pub os_type: String,
    pub describe: String,
    pub status: String,
    pub error_message: Option<String>,
    pub snapshot_name: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
}

/// Fields an update may change; `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = image)]
pub struct ImageChanges {
    pub image_name: Option<String>,
    pub os_type: Option<String>,
    pub describe: Option<String>,
    pub update_time: Option<u64>,
}

pub fn insert(conn: &mut MysqlConnection, row: &Image) -> QueryResult<()> {
    diesel::insert_into(image::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

pub fn get(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<Image>> {
    image::table
        .find(id)
        .select(Image::as_select())
        .first(conn)
        .optional()
}

/// One page, newest first, and the total matching the filter.
pub fn list(
    conn: &mut MysqlConnection,
    name_contains: Option<&str>,
    page: Page,
) -> QueryResult<(i64, Vec<Image>)> {
    let mut filters = vec![];
    if let Some(f) = name_contains {
        filters.push(("image_name LIKE ? ESCAPE '\\\\'", contains_pattern(f)));
    }
    super::page_of(conn, "image", "image_id", &filters, page)
}

pub fn all_ids(conn: &mut MysqlConnection) -> QueryResult<Vec<String>> {
    image::table.select(image::image_id).load(conn)
}

pub fn update(conn: &mut MysqlConnection, id: &str, changes: &ImageChanges) -> QueryResult<usize> {
    diesel::update(image::table.find(id))
        .set(changes)
        .execute(conn)
}

pub fn set_snapshot(conn: &mut MysqlConnection, id: &str, snap: &str) -> QueryResult<usize> {
    diesel::update(image::table.find(id))
        .set(image::snapshot_name.eq(Some(snap)))
        .execute(conn)
}

crate::db::status_queries!(image, Image);
