//! Rows whose id names an RBD image in one pool (images, volumes). Both are made the same way:
//! the row first (`creating`, so a crash leaves a trace reconciliation finds), then the RBD
//! image, then `available`; a failed step undoes the ones before it and the error says whether
//! that undo worked.
//!
//! Create and delete run as operations (service::operations). A takeover undoes a create that
//! its process left `creating`, and settles a delete left `deleting` from what Ceph holds
//! (`repair_creating`, `repair_deleting`, which start-up repair uses too).

use super::operations::{self, Op};
use super::{fresh_id, load, transition, Ctx, Resource, ID_TRIES};
use crate::db::operations::Operation;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend};
use crate::model::Lifecycle;

/// A resource kept as a row plus an RBD image of the same name.
pub trait RbdBacked: Resource {
    /// Its insert form.
    type Form;
    const CREATING: Self::Status;
    const AVAILABLE: Self::Status;
    const DELETING: Self::Status;
    /// Operation kinds of its create and delete.
    const KIND_CREATE: &'static str;
    const KIND_DELETE: &'static str;
    /// The pool its RBD images live in.
    fn pool(ctx: &Ctx) -> &str;
    fn id_of(form: &Self::Form) -> &Self::Id;
    fn insert(conn: &mut DbConn, form: &Self::Form) -> diesel::QueryResult<()>;
    /// The project a new row goes to and what it takes of its quota.
    fn ask(form: &Self::Form) -> (&str, super::quotas::Ask);
    /// Its id from an operation's `resource_id`.
    fn id_from(s: &str) -> Self::Id;
    fn status_of(&self) -> Self::Status;
}

/// Makes a row from `form()` and its RBD image of `bytes`. A fresh id is drawn when the id is
/// taken by a row or by an RBD image nobody registered. Each MySQL step checks a connection
/// out for itself: none is held while Ceph works.
pub fn create<R: RbdBacked>(
    ctx: &Ctx,
    mut form: impl FnMut() -> R::Form,
    bytes: u64,
) -> ApiResult<R>
where
    R::Id: Clone,
{
    ctx.ceph.ensure_up()?;
    let (id, op) = fresh_id(
        &format!("{} id", <R::Status as Lifecycle>::RESOURCE),
        ID_TRIES,
        || {
            let form = form();
            let id = R::id_of(&form).clone();
            let op = {
                // Back to the pool before Ceph is called.
                let conn = &mut ctx.conn()?;
                // The quota check and the insert in one transaction (`quotas`).
                let inserted = super::quotas::in_transaction(conn, |c| {
                    let (project, ask) = R::ask(&form);
                    super::quotas::admit(c, project, &ask)?;
                    match R::insert(c, &form) {
                        Ok(()) => Ok(true),
                        Err(e) if db::is_unique_violation(&e) => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                })?;
                if !inserted {
                    return Ok(None);
                }
                match operations::start(ctx, conn, R::KIND_CREATE, &id.to_string(), &()) {
                    Ok(op) => op,
                    Err(e) => {
                        let _ = R::delete_in_status(conn, &id, R::CREATING);
                        return Err(e);
                    }
                }
            };
            let made = op
                .save(ctx, "creating the RBD image", &())
                .and_then(|_| make_rbd_image::<R>(ctx, &id, bytes));
            match made {
                Ok(true) => Ok(Some((id, op))),
                // The name was taken in Ceph: the row is gone again, a fresh id is tried.
                Ok(false) => {
                    op.finish(ctx, Ok(()));
                    Ok(None)
                }
                Err(e) => {
                    op.finish(ctx, Err(&e.to_string()));
                    Err(e)
                }
            }
        },
    )?;
    let r = record_created::<R>(ctx, &id);
    op.conclude(ctx, r)
}

/// Creates the RBD image of a row just recorded `creating`. `Ok(false)`: an RBD image already
/// had that name; the row is gone again and a fresh id should be tried.
fn make_rbd_image<R: RbdBacked>(ctx: &Ctx, id: &R::Id, bytes: u64) -> ApiResult<bool> {
    let pool = R::pool(ctx);
    let owner = ctx.deployment()?;
    let Err(e) = ctx.ceph.create_image(pool, &id.to_string(), bytes, &owner) else {
        return Ok(true);
    };
    let undo = ctx
        .conn()
        .and_then(|mut c| Ok(R::delete_in_status(&mut c, id, R::CREATING)?));
    if e.already_exists() && matches!(undo, Ok(true)) {
        return Ok(false);
    }
    Err(undo_failed(
        Backend::Ceph,
        format!("Ceph could not create the RBD image {pool}/{id}: {e}"),
        undo.map(|_| ()),
        format!(
            "the {} row {id} could not be removed",
            <R::Status as Lifecycle>::RESOURCE
        ),
    ))
}

/// `creating -> available` once the RBD image exists; if that cannot be recorded, the RBD image
/// and the row go again.
fn record_created<R: RbdBacked>(ctx: &Ctx, id: &R::Id) -> ApiResult<R> {
    let done = ctx.conn().and_then(|mut c| {
        if transition::<R>(&mut c, id, R::CREATING, R::AVAILABLE, None)? {
            load(&mut c, id).map(Some)
        } else {
            Ok(None)
        }
    });
    let why = match done {
        Ok(Some(r)) => return Ok(r),
        Ok(None) => "the row changed under us".to_string(),
        Err(e) => e.to_string(),
    };
    let pool = R::pool(ctx);
    let undo = ctx
        .ceph
        .remove_image(pool, &id.to_string())
        .map(|_| ())
        .map_err(ApiError::from)
        .and_then(|_| {
            let mut c = ctx.conn()?;
            Ok(R::delete_in_status(&mut c, id, R::CREATING).map(|_| ())?)
        });
    Err(undo_failed(
        Backend::Database,
        format!("the RBD image {pool}/{id} was created but recording it failed ({why})"),
        undo,
        format!(
            "{} {id} is left in status creating and will be cleaned up by reconciliation",
            <R::Status as Lifecycle>::RESOURCE
        ),
    ))
}

/// The error of a failed step, saying whether its undo worked and, if not, what is left.
fn undo_failed<E: std::fmt::Display>(
    backend: Backend,
    what: String,
    undo: Result<(), E>,
    left: String,
) -> ApiError {
    match undo {
        Ok(()) => ApiError::unavailable(backend, format!("{what}; nothing was kept")),
        Err(e) => ApiError::unavailable(
            backend,
            format!("{what}; undoing it also failed ({e}): {left}"),
        ),
    }
}

/// A row left `creating` by a create that did not finish: its RBD image (if any) and its row
/// go. True if this call removed the row.
pub fn repair_creating<R: RbdBacked>(ctx: &Ctx, conn: &mut DbConn, id: &R::Id) -> ApiResult<bool> {
    ctx.ceph.remove_image(R::pool(ctx), &id.to_string())?;
    let removed = R::delete_in_status(conn, id, R::CREATING)?;
    if removed {
        log::warn!(
            "repair: removed half-created {} {id}",
            <R::Status as Lifecycle>::RESOURCE
        );
    }
    Ok(removed)
}

/// A row left `deleting` by a delete that did not finish: back to available while its RBD
/// image exists (the delete can be asked again), else the row goes. True if this call changed
/// the row.
pub fn repair_deleting<R: RbdBacked>(ctx: &Ctx, conn: &mut DbConn, id: &R::Id) -> ApiResult<bool> {
    let what = <R::Status as Lifecycle>::RESOURCE;
    match ctx.ceph.image_size(R::pool(ctx), &id.to_string()) {
        Ok(_) => {
            let back = transition::<R>(conn, id, R::DELETING, R::AVAILABLE, None)?;
            if back {
                log::warn!("repair: {what} {id} back to available (its RBD image is still there)");
            }
            Ok(back)
        }
        Err(e) if e.is_not_found() => {
            let gone = R::delete_in_status(conn, id, R::DELETING)?;
            if gone {
                log::warn!("repair: finished deleting {what} {id}");
            }
            Ok(gone)
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes over a create or a delete whose process died (`repair_creating`/`repair_deleting`
/// by the operation's kind).
pub fn recover<R: RbdBacked>(ctx: &Ctx, held: Op, op: &Operation) {
    let id = R::id_from(&op.resource_id);
    let repaired = ctx.conn().and_then(|mut c| {
        let Some(row) = R::get(&mut c, &id)? else {
            return Ok(false);
        };
        let status = row.status_of();
        if op.kind == R::KIND_CREATE && status == R::CREATING {
            repair_creating::<R>(ctx, &mut c, &id)
        } else if op.kind == R::KIND_DELETE && status == R::DELETING {
            repair_deleting::<R>(ctx, &mut c, &id)
        } else {
            Ok(false)
        }
    });
    match repaired {
        Ok(_) => held.finish(ctx, Ok(())),
        // Not settled: the claim's lease runs out and a later pass tries again.
        Err(e) => log::warn!("operation {}: {e}", op.operation_id),
    }
}
