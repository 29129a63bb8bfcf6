//! Rows of `operation`: the row, its insert form, and the lease queries (renew, expired, claim,
//! save, finish). No rules here: `service::operations` decides.

use super::schema::operation;
use crate::model::{OperationId, OperationStatus};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = operation)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Operation {
    pub operation_id: OperationId,
    pub kind: String,
    pub resource_id: String,
    pub status: OperationStatus,
    pub step: String,
    pub state: String,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
}

/// A new operation, owned and leased by the process that starts it.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = operation)]
pub struct OperationForm {
    pub operation_id: OperationId,
    pub kind: String,
    pub resource_id: String,
    pub status: OperationStatus,
    pub step: String,
    pub state: String,
    pub owner: Option<String>,
    pub lease_until_ms: Option<u64>,
    pub create_time: u64,
}

type Running = diesel::dsl::Eq<operation::status, OperationStatus>;

/// Running and owned by `owner`.
fn held_by(owner: &str) -> diesel::dsl::And<Running, diesel::dsl::Eq<operation::owner, &str>> {
    operation::status
        .eq(OperationStatus::Running)
        .and(operation::owner.eq(owner))
}

/// Running with a lease that ran out before `now_ms` (or never had one).
fn expired_at(
    now_ms: u64,
) -> diesel::dsl::And<
    Running,
    diesel::dsl::Or<
        diesel::dsl::Lt<operation::lease_until_ms, u64>,
        diesel::dsl::IsNull<operation::lease_until_ms>,
    >,
> {
    operation::status.eq(OperationStatus::Running).and(
        operation::lease_until_ms
            .lt(now_ms)
            .or(operation::lease_until_ms.is_null()),
    )
}

/// Extends the leases `owner` holds on the running operations `ids`; returns how many.
pub fn renew(
    conn: &mut MysqlConnection,
    owner: &str,
    ids: &[OperationId],
    until_ms: u64,
) -> QueryResult<usize> {
    diesel::update(
        operation::table
            .filter(operation::operation_id.eq_any(ids))
            .filter(held_by(owner)),
    )
    .set(operation::lease_until_ms.eq(until_ms))
    .execute(conn)
}

/// Running operations whose lease ran out before `now_ms` (their owner died or lost MySQL).
pub fn expired(conn: &mut MysqlConnection, now_ms: u64) -> QueryResult<Vec<Operation>> {
    operation::table
        .filter(expired_at(now_ms))
        .order(operation::create_time)
        .select(Operation::as_select())
        .load(conn)
}

/// Takes over an expired operation: true for exactly one of any number of processes asking.
pub fn claim(
    conn: &mut MysqlConnection,
    id: &OperationId,
    owner: &str,
    now_ms: u64,
    until_ms: u64,
) -> QueryResult<bool> {
    let n = diesel::update(operation::table.find(id).filter(expired_at(now_ms)))
        .set((
            operation::owner.eq(owner),
            operation::lease_until_ms.eq(until_ms),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Gives up `owner`'s lease on a running operation at once, noting `why` in its
/// `error_message`: the next takeover pass claims it and settles it from what the backends hold.
pub fn release(
    conn: &mut MysqlConnection,
    id: &OperationId,
    owner: &str,
    why: &str,
) -> QueryResult<bool> {
    let n = diesel::update(operation::table.find(id).filter(held_by(owner)))
        .set((
            operation::lease_until_ms.eq(0u64),
            operation::error_message.eq(super::fit_message(why)),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// What a step saves.
pub struct Progress<'a> {
    pub step: &'a str,
    pub state: &'a str,
    /// Unix seconds, for `update_time`.
    pub now: u64,
    /// Unix milliseconds: the lease must not have run out before this.
    pub now_ms: u64,
    /// The renewed lease.
    pub until_ms: u64,
}

/// Records progress (the step and the state) and renews the lease, if `owner` still holds the
/// operation and its lease has not run out (an expired lease may be claimed by another process
/// at any moment: its owner must not take another step).
pub fn save(
    conn: &mut MysqlConnection,
    id: &OperationId,
    owner: &str,
    p: Progress,
) -> QueryResult<bool> {
    let n = diesel::update(
        operation::table
            .find(id)
            .filter(held_by(owner))
            .filter(operation::lease_until_ms.ge(p.now_ms)),
    )
    .set((
        operation::step.eq(p.step),
        operation::state.eq(p.state),
        operation::update_time.eq(p.now),
        operation::lease_until_ms.eq(p.until_ms),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// Ends an operation `owner` holds (`done` or `failed`), giving up the lease.
pub fn finish(
    conn: &mut MysqlConnection,
    id: &OperationId,
    owner: &str,
    to: OperationStatus,
    error_message: Option<&str>,
    now: u64,
) -> QueryResult<bool> {
    let n = diesel::update(operation::table.find(id).filter(held_by(owner)))
        .set((
            operation::status.eq(to),
            operation::error_message.eq(error_message.map(super::fit_message)),
            operation::owner.eq(None::<String>),
            operation::lease_until_ms.eq(None::<u64>),
            operation::update_time.eq(now),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// The resources that have a running operation (reconciliation leaves them to their owner).
pub fn busy_resources(conn: &mut MysqlConnection) -> QueryResult<Vec<String>> {
    operation::table
        .filter(operation::status.eq(OperationStatus::Running))
        .select(operation::resource_id)
        .load(conn)
}

/// Whether a running operation holds this resource.
pub fn is_busy(conn: &mut MysqlConnection, resource: &str) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        operation::table
            .filter(operation::status.eq(OperationStatus::Running))
            .filter(operation::resource_id.eq(resource)),
    ))
    .get_result(conn)
}

/// Forgets ended operations last touched before `before` (unix seconds).
pub fn purge(conn: &mut MysqlConnection, before: u64) -> QueryResult<usize> {
    diesel::delete(
        operation::table
            .filter(operation::status.ne(OperationStatus::Running))
            .filter(operation::update_time.lt(before)),
    )
    .execute(conn)
}

crate::db::table_queries!(
    operation,
    "operation",
    Operation,
    OperationForm,
    OperationId,
    OperationStatus,
    id = "operation_id",
    name = "kind"
);
