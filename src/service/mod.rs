//! Business rules, one module per resource: validation beyond syntax, state transitions, the order
//! of side effects (record intent in MySQL, act on Ceph/libvirt, record the outcome) and the undo
//! of a half-done step. Services are synchronous: the API layer runs them off the executor.

pub mod audit;
pub mod auth;
pub mod backed;
pub mod health;
pub mod hosts;
pub mod hotplug;
pub mod image_copy;
pub mod image_format;
pub mod images;
pub mod instances;
pub mod nics;
pub mod operations;
pub mod placement;
pub mod quotas;
pub mod reconcile;
pub mod snapshots;
pub mod upload;
pub mod volumes;
pub mod watch;

pub use hotplug::Pluggable;

use crate::ceph::Ceph;
use crate::config::Config;
use crate::db::{self, DbConn, DbPool, ListFilter, Table};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::Lifecycle;
use crate::virt::Hypervisor;
use crate::xml::templates::Templates;
use std::time::Duration;

/// Everything a service needs; shared by all requests.
pub struct Ctx {
    pub cfg: Config,
    pub db: DbPool,
    pub ceph: Ceph,
    /// The configured host's connection (`libvirt.uri`).
    pub hv: std::sync::Arc<Hypervisor>,
    /// Every host's connection, by URI (the configured one is `hv`).
    pub hosts: crate::virt::Hosts,
    /// The host row of `libvirt.uri`, recorded on first use (`hosts::configured`).
    first_host: std::sync::OnceLock<crate::model::HostId>,
    /// Host URIs by host id (a host's URI never changes), for `hosts::connection`.
    host_uris: std::sync::Mutex<std::collections::HashMap<crate::model::HostId, String>>,
    pub templates: Templates,
    /// This process as the owner of long operations.
    pub ops: operations::Runner,
    /// Why the health probe last found MySQL not answering; `None` while it answers.
    pub db_down: std::sync::Mutex<Option<String>>,
    /// This database's deployment id, read once (`deployment`).
    deployment: std::sync::OnceLock<String>,
    /// The continuous reconciliation's counters and the orphans it watches.
    pub reconciler: reconcile::Reconciler,
    /// API keys (and login tokens' users) verified lately.
    pub keys: auth::KeyCache,
    /// The signing key of login tokens.
    pub token_key: auth::TokenKey,
    /// What `/metrics` shows.
    pub metrics: crate::metrics::Metrics,
    /// Requests per credential and per address.
    pub limits: crate::limits::Limits,
}

impl Ctx {
    /// Reads the domain templates (a broken one is an error naming it) and connects to nothing
    /// yet: each backend connects on first use.
    pub fn new(cfg: Config) -> Result<Ctx, String> {
        let templates = Templates::load(&cfg.libvirt.template_dir)?;
        let db = db::pool(
            &cfg.database.url,
            cfg.database.pool_size,
            Duration::from_secs(cfg.database.connect_timeout_secs),
        );
        let ceph = Ceph::new(&cfg.ceph);
        let hv = std::sync::Arc::new(Hypervisor::new(&cfg.libvirt.uri, cfg.libvirt.events));
        let hosts = crate::virt::Hosts::new(hv.clone());
        let ops = operations::Runner::new(Duration::from_secs(cfg.operations.lease_secs));
        Ok(Ctx {
            ops,
            db_down: std::sync::Mutex::new(None),
            deployment: std::sync::OnceLock::new(),
            reconciler: reconcile::Reconciler::default(),
            keys: auth::KeyCache::default(),
            token_key: auth::TokenKey::new(&cfg.auth.token_secret),
            metrics: crate::metrics::Metrics::new(),
            limits: crate::limits::Limits::new(&cfg.rate_limit),
            cfg,
            db,
            ceph,
            hv,
            hosts,
            first_host: std::sync::OnceLock::new(),
            host_uris: Default::default(),
            templates,
        })
    }

    /// A pooled connection; at once 503 `database_unavailable` while the health probe finds
    /// MySQL not answering, else within `database.connect_timeout_secs`.
    pub fn conn(&self) -> ApiResult<DbConn> {
        if let Some(why) = self
            .db_down
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(ApiError::unavailable(
                crate::error::Backend::Database,
                format!("MySQL is not answering ({why}); retry when /healthz says mysql ok"),
            ));
        }
        Ok(self.db.get()?)
    }

    /// The database's deployment id (`db::deployment_id`), which marks the domains and RBD
    /// images this deployment makes; read from MySQL once.
    pub fn deployment(&self) -> ApiResult<String> {
        if let Some(d) = self.deployment.get() {
            return Ok(d.clone());
        }
        let mut conn = self.conn()?;
        let d = db::deployment_id(&mut conn)?;
        Ok(self.deployment.get_or_init(|| d).clone())
    }
}

/// One page of a list: `page_num` from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page_num: u32,
    pub page_size: u32,
}

impl Paging {
    pub fn to_db(self) -> db::Page {
        db::Page {
            offset: (i64::from(self.page_num) - 1) * i64::from(self.page_size),
            limit: i64::from(self.page_size),
        }
    }
}

/// A kind of resource, for the work that visits every one: start-up repair (`main.rs`), and in
/// the tests the check that every table is here and the removal of what rows name in libvirt
/// and Ceph. A new resource adds one line to `RESOURCES`; a test fails until it does.
pub struct Kind {
    /// Its MySQL table.
    pub table: &'static str,
    /// Settles the rows a crash left transitional, untouched for at least the given seconds.
    pub reconcile: fn(&Ctx, u64) -> ApiResult<usize>,
}

/// Every resource, in repair order: hosts before what runs on them, images before the instances booted from them, instances
/// before the volumes and NICs attached to them.
pub const RESOURCES: &[Kind] = &[
    Kind {
        table: "host",
        reconcile: hosts::reconcile,
    },
    Kind {
        table: "image",
        reconcile: images::reconcile,
    },
    Kind {
        table: "instance",
        reconcile: instances::reconcile,
    },
    Kind {
        table: "volume",
        reconcile: volumes::reconcile,
    },
    Kind {
        table: "network_interface",
        reconcile: nics::reconcile,
    },
    Kind {
        table: "snapshot",
        reconcile: snapshots::reconcile,
    },
    Kind {
        table: "operation",
        reconcile: operations::reconcile,
    },
];

/// A resource the services load by id: a table whose unknown id answers 404 with its own code.
pub trait Resource: Table {
    const NOT_FOUND: ErrorCode;
}

/// The 404 of a resource: "`<resource>` `<id>` does not exist".
pub fn not_found<R: Resource>(id: impl std::fmt::Display) -> ApiError {
    ApiError::not_found(
        R::NOT_FOUND,
        format!("{} {id} does not exist", <R::Status as Lifecycle>::RESOURCE),
    )
}

/// The row of `id`, or its resource's 404.
pub fn load<R: Resource>(conn: &mut DbConn, id: &R::Id) -> ApiResult<R> {
    R::get(conn, id)?.ok_or_else(|| not_found::<R>(id))
}

/// Moves a row between statuses, checked against its state machine (the same status again
/// only updates the message); false if another request won.
pub fn transition<R: Table>(
    conn: &mut DbConn,
    id: &R::Id,
    from: R::Status,
    to: R::Status,
    message: Option<&str>,
) -> ApiResult<bool> {
    if from != to {
        from.check(to)?;
    }
    Ok(R::transition(conn, id, from, to, message, db::now())?)
}

/// How long `record` keeps trying to write an outcome before it gives up and leaves the row to
/// reconciliation.
pub const RECORD_PATIENCE: Duration = Duration::from_secs(30);

/// Writes the outcome of work that already happened in libvirt or Ceph, on a fresh connection,
/// retrying with backoff while MySQL is unavailable (pool busy, server gone, deadlock) for up
/// to `RECORD_PATIENCE`: a passing outage must not leave the row transitional. Any other error
/// returns at once.
pub fn record<T>(
    ctx: &Ctx,
    what: &str,
    mut write: impl FnMut(&mut DbConn) -> ApiResult<T>,
) -> ApiResult<T> {
    let end = std::time::Instant::now() + RECORD_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let e = match ctx.conn().and_then(|mut c| write(&mut c)) {
            Ok(t) => return Ok(t),
            Err(e) => e,
        };
        let transient = matches!(
            e,
            ApiError::Unavailable {
                backend: crate::error::Backend::Database,
                ..
            }
        );
        if !transient || std::time::Instant::now() + pause > end {
            return Err(e);
        }
        log::warn!("{what}: MySQL failed ({e}); retrying in {pause:?}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(4));
    }
}

/// How many random ids an insert tries before it gives up (8 collisions in a row among 2^32
/// ids means something else is wrong).
pub const ID_TRIES: usize = 8;

/// Runs `attempt` until it does not collide: `Ok(None)` from it means "the random id (or MAC,
/// address...) was taken, try a fresh one".
pub fn fresh_id<T>(
    what: &str,
    tries: usize,
    mut attempt: impl FnMut() -> ApiResult<Option<T>>,
) -> ApiResult<T> {
    for _ in 0..tries {
        if let Some(t) = attempt()? {
            return Ok(t);
        }
    }
    Err(ApiError::Internal(format!(
        "could not find a free {what} after {tries} tries"
    )))
}

/// One page of a resource, newest first, and the total matching the filter.
pub fn list<R: Resource>(
    ctx: &Ctx,
    filter: &ListFilter<R::Status>,
    paging: Paging,
) -> ApiResult<(i64, Vec<R>)> {
    let mut conn = ctx.conn()?;
    Ok(db::list::<R>(&mut conn, filter, paging.to_db())?)
}

/// A page of a resource that attaches to instances (volumes, NICs), with the names of the
/// instances on the page (one more query, not one per row).
pub fn list_attached<R: Pluggable>(
    ctx: &Ctx,
    filter: &ListFilter<<R as Table>::Status>,
    paging: Paging,
) -> ApiResult<(
    i64,
    Vec<R>,
    std::collections::HashMap<crate::model::InstanceId, String>,
)> {
    let mut conn = ctx.conn()?;
    let (total, rows) = db::list::<R>(&mut conn, filter, paging.to_db())?;
    let ids: Vec<_> = rows
        .iter()
        .filter_map(|r| r.instance_id().cloned())
        .collect();
    let names = db::instances::names_of(&mut conn, &ids)?;
    Ok((total, rows, names))
}
