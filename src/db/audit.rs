//! Rows of `audit_log`: insert and the filtered, paged read. No rules here: `service::audit`
//! decides what is written.

use super::schema::audit_log;
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = audit_log)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct AuditRow {
    pub audit_id: u64,
    /// Unix milliseconds.
    pub time_ms: u64,
    pub request_id: String,
    /// The key (`key-...`) or user (`usr-...`) that asked; none for an operation's outcome.
    pub credential: Option<String>,
    pub user_name: Option<String>,
    pub project_id: Option<String>,
    /// `POST /api/v1/instance/create`, or an operation's kind (`instance.create`).
    pub action: String,
    pub resource_id: Option<String>,
    /// `ok` / `error` for a request; `done` / `failed` / `handed_over` for an operation.
    pub outcome: String,
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = audit_log)]
pub struct AuditForm {
    pub time_ms: u64,
    pub request_id: String,
    pub credential: Option<String>,
    pub user_name: Option<String>,
    pub project_id: Option<String>,
    pub action: String,
    pub resource_id: Option<String>,
    pub outcome: String,
    pub error_code: Option<String>,
}

pub fn insert(conn: &mut MysqlConnection, row: &AuditForm) -> QueryResult<()> {
    diesel::insert_into(audit_log::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// What a read of the log may filter on; `None` does not filter.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub project_id: Option<String>,
    pub credential: Option<String>,
    pub action: Option<String>,
    pub resource_id: Option<String>,
    pub request_id: Option<String>,
    pub outcome: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

/// One page, newest first, and the total matching.
pub fn list(
    conn: &mut MysqlConnection,
    f: &AuditFilter,
    page: super::Page,
) -> QueryResult<(i64, Vec<AuditRow>)> {
    let filtered = || {
        let mut q = audit_log::table.into_boxed();
        if let Some(v) = &f.project_id {
            q = q.filter(audit_log::project_id.eq(v.clone()));
        }
        if let Some(v) = &f.credential {
            q = q.filter(audit_log::credential.eq(v.clone()));
        }
        if let Some(v) = &f.action {
            q = q.filter(audit_log::action.eq(v.clone()));
        }
        if let Some(v) = &f.resource_id {
            q = q.filter(audit_log::resource_id.eq(v.clone()));
        }
        if let Some(v) = &f.request_id {
            q = q.filter(audit_log::request_id.eq(v.clone()));
        }
        if let Some(v) = &f.outcome {
            q = q.filter(audit_log::outcome.eq(v.clone()));
        }
        if let Some(v) = f.since_ms {
            q = q.filter(audit_log::time_ms.ge(v));
        }
        if let Some(v) = f.until_ms {
            q = q.filter(audit_log::time_ms.le(v));
        }
        q
    };
    let total: i64 = filtered().count().get_result(conn)?;
    let rows = filtered()
        .order(audit_log::audit_id.desc())
        .limit(page.limit)
        .offset(page.offset)
        .select(AuditRow::as_select())
        .load(conn)?;
    Ok((total, rows))
}
