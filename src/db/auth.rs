//! Rows of `project`, `api_key` and `api_user`. No rules here: `service::auth` decides.

use super::schema::{api_key, api_user, project};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = project)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Project {
    pub project_id: String,
    pub project_name: String,
    pub create_time: u64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_key)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct ApiKey {
    pub key_id: String,
    pub key_name: String,
    /// SHA-256 of the secret, lowercase hex.
    pub key_hash: String,
    pub role: String,
    pub project_id: String,
    pub expire_time: Option<u64>,
    pub revoke_time: Option<u64>,
    pub create_time: u64,
}

pub fn insert_project(conn: &mut MysqlConnection, p: &Project) -> QueryResult<()> {
    diesel::insert_into(project::table)
        .values(p)
        .execute(conn)
        .map(|_| ())
}

pub fn project_by_name(conn: &mut MysqlConnection, name: &str) -> QueryResult<Option<Project>> {
    project::table
        .filter(project::project_name.eq(name))
        .select(Project::as_select())
        .first(conn)
        .optional()
}

pub fn insert_key(conn: &mut MysqlConnection, k: &ApiKey) -> QueryResult<()> {
    diesel::insert_into(api_key::table)
        .values(k)
        .execute(conn)
        .map(|_| ())
}

/// The key whose secret hashes to `hash`, revoked or not.
pub fn key_by_hash(conn: &mut MysqlConnection, hash: &str) -> QueryResult<Option<ApiKey>> {
    api_key::table
        .filter(api_key::key_hash.eq(hash))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()
}

/// Keys not yet revoked whose id or name is `which`.
pub fn live_keys_named(conn: &mut MysqlConnection, which: &str) -> QueryResult<Vec<ApiKey>> {
    api_key::table
        .filter(api_key::key_id.eq(which).or(api_key::key_name.eq(which)))
        .filter(api_key::revoke_time.is_null())
        .select(ApiKey::as_select())
        .load(conn)
}

/// Revokes a key (if it is not revoked yet); true if it was live.
pub fn revoke(conn: &mut MysqlConnection, key_id: &str, now: u64) -> QueryResult<bool> {
    let n = diesel::update(
        api_key::table
            .find(key_id)
            .filter(api_key::revoke_time.is_null()),
    )
    .set(api_key::revoke_time.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_user)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct User {
    pub user_id: String,
    pub user_name: String,
    /// argon2, as a PHC string.
    pub password_hash: String,
    pub role: String,
    pub project_id: String,
    pub disable_time: Option<u64>,
    pub create_time: u64,
}

pub fn insert_user(conn: &mut MysqlConnection, u: &User) -> QueryResult<()> {
    diesel::insert_into(api_user::table)
        .values(u)
        .execute(conn)
        .map(|_| ())
}

pub fn user_by_name(conn: &mut MysqlConnection, name: &str) -> QueryResult<Option<User>> {
    api_user::table
        .filter(api_user::user_name.eq(name))
        .select(User::as_select())
        .first(conn)
        .optional()
}

pub fn user_by_id(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<User>> {
    api_user::table
        .find(id)
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// Disables a user (if enabled); true if it was enabled.
pub fn disable_user(conn: &mut MysqlConnection, name: &str, now: u64) -> QueryResult<bool> {
    let n = diesel::update(
        api_user::table
            .filter(api_user::user_name.eq(name))
            .filter(api_user::disable_time.is_null()),
    )
    .set(api_user::disable_time.eq(now))
    .execute(conn)?;
    Ok(n == 1)
}

pub fn project_by_id(conn: &mut MysqlConnection, id: &str) -> QueryResult<Option<Project>> {
    project::table
        .find(id)
        .select(Project::as_select())
        .first(conn)
        .optional()
}
