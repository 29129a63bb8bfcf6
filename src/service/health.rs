//! Reachability of each backend, checked independently; and the probes that let requests
//! needing a backend that does not answer fail at once (503 naming it) instead of each waiting
//! for its own timeout.

use super::Ctx;
use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub struct Check {
    pub ok: bool,
    pub detail: String,
}

fn check(r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check { ok: true, detail },
        Err(detail) => Check { ok: false, detail },
    }
}

pub fn mysql(ctx: &Ctx) -> Check {
    check(
        ctx.db
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| c.batch_execute("SELECT 1").map_err(|e| e.to_string()))
            .map(|_| "reachable".to_string()),
    )
}

pub fn libvirt(ctx: &Ctx) -> Check {
    check(ctx.hv.check().map_err(|e| e.to_string()))
}

/// The monitors and the OSDs of both pools, with the probe's short timeouts.
pub fn ceph(ctx: &Ctx) -> Check {
    let pools = ceph_pools(ctx);
    check(
        ctx.ceph
            .probe(&pools)
            .map(|_| format!("reachable, pools {} answer", pools.join(" and ")))
            .map_err(|e| e.to_string()),
    )
}

fn ceph_pools(ctx: &Ctx) -> [&str; 2] {
    [
        ctx.cfg.ceph.images_pool.as_str(),
        ctx.cfg.ceph.volumes_pool.as_str(),
    ]
}

/// How often each backend is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A probe still unanswered after this counts as a failure (its backend hangs).
pub const PROBE_WAIT: Duration = Duration::from_millis(1500);

/// One backend's probe: a thread that checks it every `PROBE_EVERY`, and a watcher that calls
/// a check hanging past `PROBE_WAIT` a failure.
struct Probe {
    name: &'static str,
    /// When the running check started; `None` between checks.
    running_since: Mutex<Option<Instant>>,
    /// What the last verdict was, to log changes only.
    down: Mutex<bool>,
}

/// Starts the probes of MySQL and Ceph (libvirt needs none: a refused connection fails at
/// once, and keepalives close a hung one). They end when `ctx` is dropped.
pub fn start_probes(ctx: &Arc<Ctx>) {
    let mut mysql: Option<MysqlConnection> = None;
    spawn_probe(
        ctx,
        "mysql",
        move |ctx| probe_mysql(ctx, &mut mysql),
        |ctx, why| *ctx.db_down.lock().unwrap_or_else(|p| p.into_inner()) = why,
    );
    spawn_probe(
        ctx,
        "ceph",
        |ctx| ctx.ceph.probe(&ceph_pools(ctx)).map_err(|e| e.to_string()),
        |ctx, why| ctx.ceph.set_down(why),
    );
}

/// `SELECT 1` over a connection of the probe's own, so a busy pool does not look like an outage.
fn probe_mysql(ctx: &Ctx, conn: &mut Option<MysqlConnection>) -> Result<(), String> {
    if conn.is_none() {
        *conn = Some(MysqlConnection::establish(&ctx.cfg.database.url).map_err(|e| e.to_string())?);
    }
    let r = conn
        .as_mut()
        .map_or(Ok(()), |c| c.batch_execute("SELECT 1"))
        .map_err(|e| e.to_string());
    if r.is_err() {
        *conn = None;
    }
    r
}

fn spawn_probe(
    ctx: &Arc<Ctx>,
    name: &'static str,
    mut check: impl FnMut(&Ctx) -> Result<(), String> + Send + 'static,
    apply: fn(&Ctx, Option<String>),
) {
    let probe = Arc::new(Probe {
        name,
        running_since: Mutex::new(None),
        down: Mutex::new(false),
    });
    let (weak, p) = (Arc::downgrade(ctx), probe.clone());
    let _ = crate::context::spawn_named(format!("probe-{name}"), move || loop {
        let Some(ctx) = weak.upgrade() else {
            return;
        };
        *p.running_since.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let r = check(&ctx);
        *p.running_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
        p.verdict(&ctx, r.err(), apply);
        drop(ctx);
        std::thread::sleep(PROBE_EVERY);
    });
    let weak: Weak<Ctx> = Arc::downgrade(ctx);
    let _ = crate::context::spawn_named(format!("probe-{name}-watch"), move || loop {
        std::thread::sleep(Duration::from_millis(250));
        let Some(ctx) = weak.upgrade() else {
            return;
        };
        let since = *probe
            .running_since
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if since.is_some_and(|t| t.elapsed() > PROBE_WAIT) {
            let why = format!("no answer within {} ms", PROBE_WAIT.as_millis());
            probe.verdict(&ctx, Some(why), apply);
        }
    });
}

impl Probe {
    fn verdict(&self, ctx: &Ctx, why: Option<String>, apply: fn(&Ctx, Option<String>)) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match (&why, *down) {
            (Some(w), false) => log::error!("{} is not answering: {w}", self.name),
            (None, true) => log::warn!("{} answers again", self.name),
            _ => {}
        }
        *down = why.is_some();
        apply(ctx, why);
    }
}

/// The backend an operation's undo or remaining steps need that is out now (libvirt not
/// reachable, or Ceph's probe failing); `None` when both answer. A step that failed
/// during such an outage is handed to the takeover (`Op::abandon`) rather than recorded as a
/// failure: its outcome is unknown until the backend answers, and the takeover settles it then.
pub fn outage(ctx: &Ctx) -> Option<crate::error::Backend> {
    use crate::error::Backend;
    if ctx.hv.ping().is_err() {
        return Some(Backend::Libvirt);
    }
    if ctx.ceph.ensure_up().is_err() {
        return Some(Backend::Ceph);
    }
    None
}

/// The metrics of this process in Prometheus' text format, with what is gathered at each scrape:
/// rows by status (two queries' worth of work per table, over the status index), backend
/// health, pool usage and reconciliation's counters.
pub fn metrics_text(ctx: &Ctx) -> crate::error::ApiResult<String> {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &ctx.metrics;
    let mut conn = ctx.conn()?;
    m.resources.reset();
    for kind in super::RESOURCES {
        for (status, n) in crate::db::count_by_status(&mut conn, kind.table)? {
            m.resources.with_label_values(&[kind.table, &status]).set(n);
        }
    }
    drop(conn);
    let up = |b: bool| i64::from(b);
    let db_up = ctx.db_down.lock().map(|d| d.is_none()).unwrap_or(false);
    m.backend_up.with_label_values(&["mysql"]).set(up(db_up));
    m.backend_up
        .with_label_values(&["ceph"])
        .set(up(ctx.ceph.ensure_up().is_ok()));
    m.backend_up
        .with_label_values(&["libvirt"])
        .set(up(ctx.hv.is_connected()));
    let pool = ctx.db.state();
    m.pool_connections
        .with_label_values(&["idle"])
        .set(pool.idle_connections.into());
    m.pool_connections
        .with_label_values(&["in_use"])
        .set((pool.connections - pool.idle_connections).into());
    m.pool_connections
        .with_label_values(&["max"])
        .set(ctx.db.max_size().into());
    let r = &ctx.reconciler;
    for (what, v) in [
        ("passes", &r.passes),
        ("repairs", &r.repairs),
        ("reported", &r.reported),
        ("orphans_removed", &r.orphans_removed),
        ("last_pass_us", &r.last_pass_us),
    ] {
        m.reconcile
            .with_label_values(&[what])
            .set(v.load(Relaxed) as i64);
    }
    m.render().map_err(crate::error::ApiError::Internal)
}
