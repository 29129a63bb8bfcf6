//! MySQL: the pool, the embedded migrations, and small query functions per table.
//! No business rules here: callers decide what a result means.

pub mod audit;
pub mod auth;
pub mod hosts;
pub mod images;
pub mod instances;
pub mod nics;
pub mod operations;
pub mod quotas;
pub mod schema;
pub mod snapshots;
pub mod volumes;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Text};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

/// The queries every table shares, typed by its id and status: insert, get, compare-and-set
/// status transitions (how racing requests get exactly one winner, also across processes),
/// delete-if-in-status, the rows a crash left in a status, and `Table` for the generic list.
/// `$table` is the diesel table module (in scope), `$name` the SQL table, `$row` its row struct,
/// `$form` its insert form, `$update` (when given) an update form that sets the status itself.
macro_rules! table_queries {
    (
        $table:ident, $name:literal, $row:ty, $form:ty, $id:ty, $status:ty,
        id = $id_col:literal, name = $name_col:literal $(, update = $update:ty)?
    ) => {
        impl crate::db::Table for $row {
            type Id = $id;
            type Status = $status;
            const TABLE: &'static str = $name;
            const ID: &'static str = $id_col;
            const NAME: &'static str = $name_col;
            fn get(
                conn: &mut diesel::MysqlConnection,
                id: &$id,
            ) -> diesel::QueryResult<Option<Self>> {
                get(conn, id)
            }
            fn transition(
                conn: &mut diesel::MysqlConnection,
                id: &$id,
                from: $status,
                to: $status,
                error_message: Option<&str>,
                now: u64,
            ) -> diesel::QueryResult<bool> {
                transition(conn, id, from, to, error_message, now)
            }
            fn delete_in_status(
                conn: &mut diesel::MysqlConnection,
                id: &$id,
                status: $status,
            ) -> diesel::QueryResult<bool> {
                delete_in_status(conn, id, status)
            }
        }

        /// Inserts a new row (update_time = create_time); a unique violation is a taken key.
        pub fn insert(conn: &mut diesel::MysqlConnection, form: &$form) -> diesel::QueryResult<()> {
            use diesel::prelude::*;
            diesel::insert_into($table::table)
                .values((form, $table::update_time.eq(form.create_time)))
                .execute(conn)
                .map(|_| ())
        }

        pub fn get(
            conn: &mut diesel::MysqlConnection,
            id: &$id,
        ) -> diesel::QueryResult<Option<$row>> {
            use diesel::prelude::*;
            $table::table
                .find(id)
                .select(<$row>::as_select())
                .first(conn)
                .optional()
        }

        /// Compare-and-set of the status (with a message, or none): true if this call made the
        /// transition. The caller has checked it against the state machine.
        pub fn transition(
            conn: &mut diesel::MysqlConnection,
            id: &$id,
            from: $status,
            to: $status,
            error_message: Option<&str>,
            now: u64,
        ) -> diesel::QueryResult<bool> {
            use diesel::prelude::*;
            let n = diesel::update($table::table.find(id).filter($table::status.eq(from)))
                .set((
                    $table::status.eq(to),
                    $table::error_message.eq(error_message.map(crate::db::fit_message)),
                    $table::update_time.eq(now),
                ))
                .execute(conn)?;
            Ok(n == 1)
        }

        $(
        /// Compare-and-set `from -> changes.status` with the other columns of `changes`: true if
        /// this call made it. The caller has checked the transition against the state machine.
        pub fn transition_with(
            conn: &mut diesel::MysqlConnection,
            id: &$id,
            from: $status,
            changes: &$update,
        ) -> diesel::QueryResult<bool> {
            use diesel::prelude::*;
            let n = diesel::update($table::table.find(id).filter($table::status.eq(from)))
                .set(changes)
                .execute(conn)?;
            Ok(n == 1)
        }
        )?

        /// Deletes the row if it is in `status`: true if this call deleted it.
        pub fn delete_in_status(
            conn: &mut diesel::MysqlConnection,
            id: &$id,
            status: $status,
        ) -> diesel::QueryResult<bool> {
            use diesel::prelude::*;
            let n = diesel::delete($table::table.find(id).filter($table::status.eq(status)))
                .execute(conn)?;
            Ok(n == 1)
        }

        /// Every row: a reconciliation pass reads the table once.
        pub fn all(conn: &mut diesel::MysqlConnection) -> diesel::QueryResult<Vec<$row>> {
            use diesel::prelude::*;
            $table::table.select(<$row>::as_select()).load(conn)
        }

        /// Rows in `status` untouched since before `older_than` and held by no running
        /// operation (work a crash interrupted; an operation's own takeover settles the rest).
        pub fn stale_in_status(
            conn: &mut diesel::MysqlConnection,
            status: $status,
            older_than: u64,
        ) -> diesel::QueryResult<Vec<$row>> {
            use diesel::prelude::*;
            let unowned = format!(
                "{} NOT IN (SELECT resource_id FROM operation WHERE status = '{}')",
                $id_col,
                crate::model::OperationStatus::Running
            );
            $table::table
                .filter($table::status.eq(status))
                .filter($table::update_time.lt(older_than))
                .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&unowned))
                .select(<$row>::as_select())
                .load(conn)
        }
    };
}
pub(crate) use table_queries;

/// Characters an `error_message` column holds (VARCHAR(2048)).
pub const MESSAGE_CHARS: usize = 2048;

/// A message cut to fit its column, so that recording an outcome never fails for its length.
pub fn fit_message(m: &str) -> String {
    if m.chars().count() <= MESSAGE_CHARS {
        return m.to_string();
    }
    let mut out: String = m.chars().take(MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

/// What the generic code knows of a table (lists, loads): its SQL names and its typed id and
/// status. Implemented by `table_queries!`.
pub trait Table: Sized + QueryableByName<diesel::mysql::Mysql> + 'static {
    type Id: std::fmt::Display;
    type Status: crate::model::Lifecycle;
    const TABLE: &'static str;
    const ID: &'static str;
    /// The column `filter_name` matches.
    const NAME: &'static str;
    fn get(conn: &mut MysqlConnection, id: &Self::Id) -> QueryResult<Option<Self>>;
    /// Compare-and-set of the status (see `table_queries!`).
    fn transition(
        conn: &mut MysqlConnection,
        id: &Self::Id,
        from: Self::Status,
        to: Self::Status,
        error_message: Option<&str>,
        now: u64,
    ) -> QueryResult<bool>;
    /// Deletes the row if it is in `status`: true if this call deleted it.
    fn delete_in_status(
        conn: &mut MysqlConnection,
        id: &Self::Id,
        status: Self::Status,
    ) -> QueryResult<bool>;
}

/// What a list may filter on; `None` does not filter.
#[derive(Debug, Clone)]
pub struct ListFilter<S> {
    /// Substring of the name column.
    pub name_contains: Option<String>,
    pub status: Option<S>,
    /// Only rows attached to this instance (volumes, NICs).
    pub instance_id: Option<crate::model::InstanceId>,
    /// Only rows of this project...
    pub project_id: Option<String>,
    /// ...and the public ones (images).
    pub public_too: bool,
}

impl<S> Default for ListFilter<S> {
    fn default() -> Self {
        ListFilter {
            name_contains: None,
            status: None,
            instance_id: None,
            project_id: None,
            public_too: false,
        }
    }
}

/// One page of a table, newest first, and the total matching the filter.
pub fn list<T: Table>(
    conn: &mut MysqlConnection,
    f: &ListFilter<T::Status>,
    page: Page,
) -> QueryResult<(i64, Vec<T>)> {
    use crate::model::Lifecycle;
    let mut filters: Vec<(String, String)> = vec![];
    if let Some(n) = &f.name_contains {
        filters.push((
            format!("`{}` LIKE ? ESCAPE '\\\\'", T::NAME),
            contains_pattern(n),
        ));
    }
    if let Some(s) = f.status {
        filters.push(("status = ?".into(), s.as_str().to_string()));
    }
    if let Some(i) = &f.instance_id {
        filters.push(("instance_id = ?".into(), i.to_string()));
    }
    if let Some(p) = &f.project_id {
        let sql = if f.public_too {
            format!("(project_id = ? OR visibility = '{}')", images::PUBLIC)
        } else {
            "project_id = ?".to_string()
        };
        filters.push((sql, p.clone()));
    }
    page_of(conn, T::TABLE, T::ID, &filters, page)
}

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub type DbPool = Pool<ConnectionManager<MysqlConnection>>;
pub type DbConn = PooledConnection<ConnectionManager<MysqlConnection>>;
pub type PoolError = diesel::r2d2::PoolError;

/// A pool that does not connect until asked (so the service starts with MySQL down and
/// /healthz says so); a request waits at most `timeout` for a connection.
pub fn pool(url: &str, size: u32, timeout: Duration) -> DbPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(timeout)
        .test_on_check_out(true)
        .build_unchecked(ConnectionManager::<MysqlConnection>::new(url))
}

/// Applies pending migrations. A database made by an older sql/api_web.sql (tables present, no
/// migration records) is adopted: its first migration is recorded as applied. The script of
/// today records its migrations itself.
pub fn migrate(conn: &mut MysqlConnection) -> Result<Vec<String>, String> {
    adopt_script_schema(conn).map_err(|e| format!("adopting existing tables: {e}"))?;
    let done = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| e.to_string())?;
    Ok(done.iter().map(|v| v.to_string()).collect())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn table_exists(conn: &mut MysqlConnection, name: &str) -> QueryResult<bool> {
    let c: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
    )
    .bind::<Text, _>(name)
    .get_result(conn)?;
    Ok(c.n > 0)
}

/// The version diesel records for the first migration (its directory name's leading digits).
const FIRST_MIGRATION: &str = "20261123000001";

fn adopt_script_schema(conn: &mut MysqlConnection) -> QueryResult<()> {
    if table_exists(conn, "__diesel_schema_migrations")? || !table_exists(conn, "image")? {
        return Ok(());
    }
    log::info!(
        "tables made by sql/api_web.sql found: recording migration {FIRST_MIGRATION} as applied"
    );
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (\
           version VARCHAR(50) PRIMARY KEY NOT NULL, \
           run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )?;
    diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES (?)")
        .bind::<Text, _>(FIRST_MIGRATION)
        .execute(conn)?;
    Ok(())
}

#[derive(QueryableByName)]
struct Deployment {
    #[diesel(sql_type = Text)]
    deployment_id: String,
}

/// This database's deployment id: the one row of `deployment` (made again, with a new random
/// id, if someone deleted it).
pub fn deployment_id(conn: &mut MysqlConnection) -> QueryResult<String> {
    let read = |c: &mut MysqlConnection| {
        diesel::sql_query("SELECT deployment_id FROM deployment WHERE id = 1")
            .get_result::<Deployment>(c)
            .optional()
    };
    if let Some(d) = read(conn)? {
        return Ok(d.deployment_id);
    }
    diesel::sql_query(
        "INSERT IGNORE INTO deployment (id, deployment_id, create_time) \
         VALUES (1, UUID(), UNIX_TIMESTAMP())",
    )
    .execute(conn)?;
    read(conn)?
        .map(|d| d.deployment_id)
        .ok_or(diesel::result::Error::NotFound)
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A LIKE pattern matching `s` as a substring, with LIKE's own metacharacters escaped.
pub fn contains_pattern(s: &str) -> String {
    let mut p = String::with_capacity(s.len() + 2);
    p.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// True for a duplicate-key error (a generated id that collided, a racing insert).
pub fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// One page of `table`, newest first, and the total matching `filters` (SQL conditions with one
/// `?` each, bound to the paired text, ANDed together; built only by `list` from constants).
///
/// The page is a deferred join: the inner query pages over ids alone (covered by the table's
/// `(create_time, <id>)` index when nothing filters), so only the page's rows are read and sorted
/// in full. Sorting every full row for a deep page cost 12-23 ms at 10,000 rows.
fn page_of<T>(
    conn: &mut MysqlConnection,
    table: &'static str,
    id: &'static str,
    filters: &[(String, String)],
    page: Page,
) -> QueryResult<(i64, Vec<T>)>
where
    T: QueryableByName<diesel::mysql::Mysql> + 'static,
{
    let cond = if filters.is_empty() {
        String::new()
    } else {
        let parts: Vec<&str> = filters.iter().map(|(c, _)| c.as_str()).collect();
        format!("WHERE {}", parts.join(" AND "))
    };
    let mut count =
        diesel::sql_query(format!("SELECT COUNT(*) AS n FROM `{table}` {cond}")).into_boxed();
    for (_, v) in filters {
        count = count.bind::<Text, _>(v.clone());
    }
    let total = count.get_result::<Count>(conn)?.n;
    let order = format!("ORDER BY create_time DESC, `{id}` DESC");
    let mut rows = diesel::sql_query(format!(
        "SELECT t.* FROM `{table}` t JOIN (SELECT `{id}` FROM `{table}` {cond} {order} LIMIT ? OFFSET ?) k \
         USING (`{id}`) {order}"
    ))
    .into_boxed();
    for (_, v) in filters {
        rows = rows.bind::<Text, _>(v.clone());
    }
    let rows = rows
        .bind::<BigInt, _>(page.limit)
        .bind::<BigInt, _>(page.offset)
        .load(conn)?;
    Ok((total, rows))
}

/// Paging as SQL wants it.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub offset: i64,
    pub limit: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_fit_their_column() {
        assert_eq!(fit_message("short"), "short");
        let exact = "é".repeat(MESSAGE_CHARS);
        assert_eq!(fit_message(&exact), exact);
        let long = fit_message(&"é".repeat(MESSAGE_CHARS + 500));
        assert_eq!(long.chars().count(), MESSAGE_CHARS);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn like_metacharacters_are_escaped() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
    }

    fn migration_versions() -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .map(|d| d.split('_').next().unwrap().replace('-', ""))
                .collect();
        v.sort();
        v
    }

    /// The operator's script records every migration it embodies (checklist: a new migration
    /// changes sql/api_web.sql too; the integration test compares the tables).
    #[test]
    fn schema_script_records_every_migration() {
        let script = include_str!("../../sql/api_web.sql");
        for v in migration_versions() {
            assert!(
                script.contains(&format!("('{v}')")),
                "sql/api_web.sql does not record migration {v}: add its tables and its version"
            );
        }
    }

    #[test]
    fn first_migration_version_matches_the_directory() {
        let dirs: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        let mut versions: Vec<String> = dirs
            .iter()
            .map(|d| d.split('_').next().unwrap().replace('-', ""))
            .collect();
        versions.sort();
        assert_eq!(versions[0], FIRST_MIGRATION);
    }
}

#[derive(QueryableByName)]
struct StatusCount {
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Rows of `table` by status (`table` is one of ours, never a caller's word).
pub fn count_by_status(
    conn: &mut MysqlConnection,
    table: &'static str,
) -> QueryResult<Vec<(String, i64)>> {
    let rows: Vec<StatusCount> = diesel::sql_query(format!(
        "SELECT status, COUNT(*) AS n FROM `{table}` GROUP BY status"
    ))
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
}
