//! The audit log: every mutating request (who, what, on which resource, how it ended) and every
//! operation outcome (with the request id of the request that started it). A record that cannot
//! be written (MySQL down) is logged whole at target `audit`, so it is not lost.

use super::auth::Principal;
use super::{Ctx, Paging};
use crate::db::audit::{self as q, AuditFilter, AuditForm, AuditRow};
use crate::error::ApiResult;

/// What one record says, beyond its time and request id.
pub struct Entry {
    pub action: String,
    pub resource_id: Option<String>,
    pub outcome: &'static str,
    pub error_code: Option<String>,
    pub principal: Option<Principal>,
    /// A name given instead of a principal (a failed login's user name).
    pub user_name: Option<String>,
}

pub fn record(ctx: &Ctx, e: Entry) {
    let p = e.principal.as_ref();
    let form = AuditForm {
        time_ms: super::operations::now_ms(),
        request_id: crate::context::current(),
        credential: p.map(|p| p.key_id.clone()),
        user_name: p.map(|p| p.key_name.clone()).or(e.user_name),
        project_id: p.map(|p| p.project_id.clone()),
        action: e.action,
        resource_id: e.resource_id,
        outcome: e.outcome.to_string(),
        error_code: e.error_code,
    };
    let r = ctx.conn().and_then(|mut c| Ok(q::insert(&mut c, &form)?));
    if let Err(err) = r {
        log::error!(target: "audit", "cannot write the audit record ({err}): {form:?}");
    }
}

/// An operation's outcome (`done`, `failed`, `handed_over`).
pub fn operation(ctx: &Ctx, kind: &str, resource_id: &str, outcome: &'static str) {
    record(
        ctx,
        Entry {
            action: kind.to_string(),
            resource_id: Some(resource_id.to_string()),
            outcome,
            error_code: None,
            principal: None,
            user_name: None,
        },
    );
}

pub fn list(ctx: &Ctx, f: &AuditFilter, p: Paging) -> ApiResult<(i64, Vec<AuditRow>)> {
    Ok(q::list(&mut *ctx.conn()?, f, p.to_db())?)
}
