//! Rows whose id names an RBD image in one pool (images, volumes). Both are made the same way:
//! the row first (`creating`, so a crash leaves a trace reconciliation finds), then the RBD
//! image, then `available`; a failed step undoes the ones before it and the error says whether
//! that undo worked.

use super::{fresh_id, load, transition, Ctx, Resource, ID_TRIES};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, Backend};
use crate::model::Lifecycle;

/// A resource kept as a row plus an RBD image of the same name.
pub trait RbdBacked: Resource {
    /// Its insert form.
    type Form;
    const CREATING: Self::Status;
    const AVAILABLE: Self::Status;
    /// The pool its RBD images live in.
    fn pool(ctx: &Ctx) -> &str;
    fn id_of(form: &Self::Form) -> &Self::Id;
    fn insert(conn: &mut DbConn, form: &Self::Form) -> diesel::QueryResult<()>;
}

/// Makes a row from `form()` and its RBD image of `bytes`. A fresh id is drawn when the id is
/// taken by a row or by an RBD image nobody registered.
pub fn create<R: RbdBacked>(
    ctx: &Ctx,
    conn: &mut DbConn,
    mut form: impl FnMut() -> R::Form,
    bytes: u64,
) -> ApiResult<R>
where
    R::Id: Clone,
{
    let id = fresh_id(
        &format!("{} id", <R::Status as Lifecycle>::RESOURCE),
        ID_TRIES,
        || {
            let form = form();
            let id = R::id_of(&form).clone();
            match R::insert(conn, &form) {
                Ok(()) => make_rbd_image::<R>(ctx, conn, &id, bytes).map(|made| made.then_some(id)),
                Err(e) if db::is_unique_violation(&e) => Ok(None),
                Err(e) => Err(e.into()),
            }
        },
    )?;
    record_created::<R>(ctx, conn, &id)
}

/// Creates the RBD image of a row just recorded `creating`. `Ok(false)`: an RBD image already
/// had that name; the row is gone again and a fresh id should be tried.
fn make_rbd_image<R: RbdBacked>(
    ctx: &Ctx,
    conn: &mut DbConn,
    id: &R::Id,
    bytes: u64,
) -> ApiResult<bool> {
    let pool = R::pool(ctx);
    let Err(e) = ctx.ceph.create_image(pool, &id.to_string(), bytes) else {
        return Ok(true);
    };
    let undo = R::delete_in_status(conn, id, R::CREATING);
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
fn record_created<R: RbdBacked>(ctx: &Ctx, conn: &mut DbConn, id: &R::Id) -> ApiResult<R> {
    let why = match transition::<R>(conn, id, R::CREATING, R::AVAILABLE, None) {
        Ok(true) => return load(conn, id),
        Ok(false) => "the row changed under us".to_string(),
        Err(e) => e.to_string(),
    };
    let pool = R::pool(ctx);
    let undo = ctx
        .ceph
        .remove_image(pool, &id.to_string())
        .map(|_| ())
        .map_err(ApiError::from)
        .and_then(|_| Ok(R::delete_in_status(conn, id, R::CREATING).map(|_| ())?));
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
