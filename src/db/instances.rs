//! Rows of `instance`.

use super::schema::instance;
use diesel::prelude::*;

/// (instance_id, instance_name) of the instances booted from an image.
pub fn using_image(
    conn: &mut MysqlConnection,
    image_id: &str,
) -> QueryResult<Vec<(String, String)>> {
    instance::table
        .filter(instance::image_id.eq(image_id))
        .select((instance::instance_id, instance::instance_name))
        .order(instance::instance_id)
        .load(conn)
}
