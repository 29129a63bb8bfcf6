//! The request context, below every other module: the id of the request being served (on its
//! async task, on the blocking threads its services run on, and on background threads a request
//! starts), and the helpers that carry it across threads. It depends on nothing in the crate,
//! so `error`, `logging`, the services and the API can all use it without a cycle.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static TASK_ID: String;
}

thread_local! {
    static THREAD_ID: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The id of the request being served on this task or blocking thread, if any.
pub fn current_opt() -> Option<String> {
    TASK_ID
        .try_with(|id| id.clone())
        .ok()
        .or_else(|| THREAD_ID.with(|t| t.borrow().clone()))
}

/// The id of the request being served ("" outside a request).
pub fn current() -> String {
    current_opt().unwrap_or_default()
}

/// Runs `fut` as the request `id` (the HTTP middleware wraps each request in it).
pub async fn scope<F: Future>(id: String, fut: F) -> F::Output {
    TASK_ID.scope(id, fut).await
}

/// Runs `f` with `id` as the current request id (for background work started by a request).
pub fn with_id<T>(id: Option<String>, f: impl FnOnce() -> T) -> T {
    let before = THREAD_ID.with(|t| std::mem::replace(&mut *t.borrow_mut(), id));
    let out = f();
    THREAD_ID.with(|t| *t.borrow_mut() = before);
    out
}

/// A blocking task that did not return (it panicked or was cancelled).
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct TaskFailed(String);

/// Runs blocking work (diesel, librbd, libvirt) on the blocking pool, carrying the request id.
pub async fn blocking<T, E, F>(f: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    let id = current_opt();
    tokio::task::spawn_blocking(move || with_id(id, f))
        .await
        .map_err(|e| E::from(TaskFailed(e.to_string())))?
}

/// Starts a named background thread that carries the current request id.
pub fn spawn_named(
    name: String,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let id = current_opt();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || with_id(id, f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_id_restores_the_outer_id() {
        assert_eq!(current_opt(), None);
        with_id(Some("outer".into()), || {
            with_id(Some("inner".into()), || assert_eq!(current(), "inner"));
            assert_eq!(current(), "outer");
        });
        assert_eq!(current_opt(), None);
    }

    #[tokio::test]
    async fn blocking_carries_the_task_id() {
        let seen = scope("req-1".into(), async {
            blocking::<_, TaskFailed, _>(|| Ok(current())).await
        })
        .await
        .unwrap();
        assert_eq!(seen, "req-1");
    }
}
