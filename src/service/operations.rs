//! Operations that survive their process. A long operation (an instance create today; the
//! others are to move here) is a row in `operation` owned by the process that runs it, with a
//! lease that process renews every third of the lease. The operation saves its step and its state
//! (what it has made or reserved, as JSON) before each side effect. When the owner dies (kill -9,
//! a lost host, a MySQL partition longer than the lease), the lease runs out. Any api-web
//! process on the database then claims the operation with a compare-and-set, so exactly one
//! does, and finishes or undoes it from the saved state and what libvirt and Ceph hold.
//!
//! Graceful shutdown waits for this process's operations (`wait_idle`) before it exits.

use super::backed::RbdBacked;
use super::{record, Ctx, Pluggable};
use crate::db::images::Image;
use crate::db::nics::Nic;
use crate::db::operations::{self as q, Operation, OperationForm};
use crate::db::volumes::Volume;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use crate::model::{OperationId, OperationStatus};
use diesel::Connection;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// This process as an owner of operations, and the ones it runs now.
pub struct Runner {
    /// `host/pid/random`: unique per process start.
    pub owner: String,
    pub lease: Duration,
    /// Operations alive in this process. Only these are renewed: one whose thread died without
    /// ending it (a panic) stops being renewed, expires, and is taken over like a crash.
    live: Arc<Mutex<HashSet<OperationId>>>,
    /// When this process last forgot old ended operations (hourly, not every takeover pass).
    purged: Mutex<Option<Instant>>,
}

impl Runner {
    pub fn new(lease: Duration) -> Runner {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Runner {
            owner: format!(
                "{host}/{}/{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ),
            lease,
            live: Arc::default(),
            purged: Mutex::new(None),
        }
    }

    /// How many operations this process runs now.
    pub fn in_flight(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    /// True at most once an hour: time to forget ended operations.
    fn purge_due(&self) -> bool {
        let Ok(mut last) = self.purged.lock() else {
            return false;
        };
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(3600)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn live_ids(&self) -> Vec<OperationId> {
        self.live
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn until_ms(&self) -> u64 {
        now_ms() + self.lease.as_millis() as u64
    }

    fn guard(&self, id: &OperationId) -> InFlight {
        if let Ok(mut l) = self.live.lock() {
            l.insert(id.clone());
        }
        InFlight(self.live.clone(), id.clone())
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Keeps an operation in this process's live set while it lives.
struct InFlight(Arc<Mutex<HashSet<OperationId>>>, OperationId);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut l) = self.0.lock() {
            l.remove(&self.1);
        }
    }
}

/// Every step an operation saves, by kind. With `finishing` (every side effect made and the
/// outcome recorded, the operation not yet ended) these are the failpoints `<kind>:<step>` (spaces
/// as `_`) where the kill sweep (`tests/it/sweep.rs`) kills the process. In builds with
/// failpoints, `Op::save` refuses a step missing here, so the sweep cannot miss a new one.
pub const STEPS: &[(&str, &[&str])] = &[
    (
        super::instances::migrate::MIGRATE,
        &["migrating", "moving the definition"],
    ),
    (
        super::instances::CREATE,
        &[
            "recording the root volume",
            "cloning the root disk",
            "creating the data volume",
            "writing the config drive",
            "defining the domain",
            "starting",
        ],
    ),
    (
        super::instances::DESTROY,
        &[
            "stopping the domain",
            "undefining the domain",
            "removing disks",
            "releasing volumes and NICs",
        ],
    ),
    (super::instances::TURNON, &["starting the domain"]),
    (super::instances::TURNOFF, &["shutting down the domain"]),
    (super::instances::PAUSE, &["suspending the domain"]),
    (super::instances::RESUME, &["resuming the domain"]),
    (super::instances::REBOOT, &["rebooting the domain"]),
    (super::instances::RESET, &["resetting the domain"]),
    (
        super::snapshots::CREATE,
        &[
            "suspending the domain",
            "taking the RBD snapshots",
            "resuming the domain",
        ],
    ),
    (super::snapshots::DELETE, &["removing the RBD snapshots"]),
    (super::snapshots::RESTORE, &["rolling back the disks"]),
    (
        super::snapshots::RESTORE_VOLUME,
        &["rolling back the volume"],
    ),
    (Volume::KIND_ATTACH, &["plugging"]),
    (Volume::KIND_DETACH, &["unplugging"]),
    (Nic::KIND_ATTACH, &["plugging"]),
    (Nic::KIND_DETACH, &["unplugging"]),
    (Image::KIND_CREATE, &["creating the RBD image"]),
    (super::image_copy::COPY, &[super::image_copy::STEP]),
    (
        super::upload::UPLOAD,
        &[super::upload::RECEIVING, super::upload::CONVERTING],
    ),
    (
        <Volume as RbdBacked>::KIND_CREATE,
        &["creating the RBD image"],
    ),
    (Image::KIND_DELETE, &["removing the RBD image"]),
    (
        <Volume as RbdBacked>::KIND_DELETE,
        &["removing the RBD image"],
    ),
];

/// The failpoint step of `Op::finish`.
pub const FINISHING: &str = "finishing";

/// The failpoint `<kind>:<step>`: logged (target `failpoint`, level info) when reached, so that
/// a test knows where the process it is about to kill stands.
#[cfg(feature = "failpoints")]
fn failpoint(kind: &str, step: &str) {
    let at = format!("{kind}:{}", step.replace(' ', "_"));
    log::info!(target: "failpoint", "reached {at}");
    fail::fail_point!(&at);
}

/// An operation this process holds. Dropped without `finish` (a panic), it stays `running` in
/// MySQL until its lease runs out and a takeover settles it: what a crash does too.
pub struct Op {
    pub id: OperationId,
    pub kind: String,
    /// The row it works on.
    pub resource_id: String,
    /// Set when a save failed: this process may no longer hold the operation (its lease ran
    /// out, or MySQL stopped answering), so it takes no further step, undoes nothing and
    /// records nothing. Whoever holds the operation next settles it from the last saved state,
    /// which names everything made so far (a step is saved before its side effect).
    halted: AtomicBool,
    /// When this process took it (its start, or its takeover), for its duration metric.
    started: Instant,
    _counted: InFlight,
}

/// Claims a row with `claim` (its compare-and-set into a transitional status) and starts the
/// operation that owns it, in one transaction: no transitional row is ever without an owner.
pub fn claim_and_start(
    ctx: &Ctx,
    conn: &mut DbConn,
    kind: &str,
    resource_id: &str,
    state: &impl Serialize,
    mut claim: impl FnMut(&mut DbConn) -> ApiResult<()>,
) -> ApiResult<Op> {
    // Concurrent claims of one row can deadlock in InnoDB; the victim's transaction is rolled
    // back whole and runs again (found by 20 concurrent destroys of one instance).
    let mut tries = 0;
    loop {
        let r = conn.transaction(|c| {
            claim(c)?;
            start(ctx, c, kind, resource_id, state)
        });
        match r {
            Err(e) if e.is_deadlock() && tries < DEADLOCK_RETRIES => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5 * tries));
            }
            r => return r,
        }
    }
}

/// How many times a claim that lost a deadlock runs again.
const DEADLOCK_RETRIES: u64 = 5;

/// Starts an operation on `resource_id`, owned and leased by this process.
pub fn start(
    ctx: &Ctx,
    conn: &mut DbConn,
    kind: &str,
    resource_id: &str,
    state: &impl Serialize,
) -> ApiResult<Op> {
    let form = OperationForm {
        operation_id: OperationId::generate(),
        kind: kind.to_string(),
        resource_id: resource_id.to_string(),
        status: OperationStatus::Running,
        step: "started".into(),
        state: to_json(state)?,
        owner: Some(ctx.ops.owner.clone()),
        lease_until_ms: Some(ctx.ops.until_ms()),
        create_time: db::now(),
    };
    q::insert(conn, &form)?;
    Ok(Op::held(
        ctx,
        form.operation_id,
        form.kind,
        form.resource_id,
    ))
}

fn to_json(state: &impl Serialize) -> ApiResult<String> {
    serde_json::to_string(state).map_err(|e| ApiError::Internal(format!("operation state: {e}")))
}

impl Op {
    fn held(ctx: &Ctx, id: OperationId, kind: String, resource_id: String) -> Op {
        Op {
            _counted: ctx.ops.guard(&id),
            id,
            kind,
            resource_id,
            halted: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Saves the step about to be taken and the state that lets a takeover undo it (save
    /// before the side effect: an undo tolerates what was never made), and renews the lease, so
    /// that the side effect starts with a whole lease ahead of it. Fails when this process no
    /// longer holds a live lease on the operation (it ran out, whether or not another process
    /// took the operation over yet) or MySQL does not answer: the operation is then halted
    /// (`is_halted`) and its caller must stop at once, undoing nothing.
    pub fn save(&self, ctx: &Ctx, step: &str, state: &impl Serialize) -> ApiResult<()> {
        // A failpoint after every saved step, named `<kind>:<step>` (e.g.
        // FAILPOINTS='instance.create:starting=sleep(60000)'), for the kill tests.
        #[cfg(feature = "failpoints")]
        assert!(
            STEPS
                .iter()
                .any(|(k, steps)| *k == self.kind && steps.contains(&step)),
            "operation step {:?} of {} is missing from operations::STEPS",
            step,
            self.kind
        );
        let json = to_json(state)?;
        let held = record(ctx, "saving an operation's progress", |c| {
            Ok(q::save(
                c,
                &self.id,
                &ctx.ops.owner,
                q::Progress {
                    step,
                    state: &json,
                    now: db::now(),
                    now_ms: now_ms(),
                    until_ms: ctx.ops.until_ms(),
                },
            )?)
        });
        match held {
            Ok(true) => {}
            Ok(false) => {
                self.halted.store(true, Ordering::SeqCst);
                return Err(lost(&self.id));
            }
            Err(e) => {
                self.halted.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        #[cfg(feature = "failpoints")]
        failpoint(&self.kind, step);
        Ok(())
    }

    /// Its outcome, into the metrics and the audit log.
    fn measure(&self, ctx: &Ctx, outcome: &'static str) {
        ctx.metrics
            .operation(&self.kind, outcome, self.started.elapsed().as_secs_f64());
        super::audit::operation(ctx, &self.kind, &self.resource_id, outcome);
    }

    /// A save failed: the caller stops where it is and leaves the operation to the takeover.
    pub fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Ends the operation with a request's outcome and passes the outcome on.
    pub fn conclude<T>(self, ctx: &Ctx, r: ApiResult<T>) -> ApiResult<T> {
        match &r {
            Ok(_) => self.finish(ctx, Ok(())),
            Err(e) => self.finish(ctx, Err(&e.to_string())),
        }
        r
    }

    /// Hands the operation to the takeover (its lease ends now) when its outcome cannot be
    /// known here: a backend stopped answering in the middle of a step. The takeover retries
    /// every `takeover_interval_secs` until it can settle the operation from what the backends
    /// hold. `why` stays on the operation (`error_message`) for the takeover to pass on.
    pub fn abandon(self, ctx: &Ctx, why: &str) {
        log::warn!("operation {}: handed to the takeover: {why}", self.id);
        self.measure(ctx, "handed_over");
        let r = record(ctx, "releasing an operation", |c| {
            Ok(q::release(c, &self.id, &ctx.ops.owner, why)?)
        });
        if let Err(e) = r {
            log::error!(
                "operation {}: cannot release it ({e}); its lease runs out",
                self.id
            );
        }
    }

    /// Ends the operation: `Ok` is `done`, `Err(message)` is `failed` (after its undo). A halted
    /// operation is not ended here: it is released to the takeover (if it is still ours).
    pub fn finish(self, ctx: &Ctx, outcome: Result<(), &str>) {
        if self.is_halted() {
            let why = outcome.err().unwrap_or("halted");
            return self.abandon(ctx, &format!("halted after a failed save: {why}"));
        }
        #[cfg(feature = "failpoints")]
        failpoint(&self.kind, FINISHING);
        let (to, msg) = match outcome {
            Ok(()) => (OperationStatus::Done, None),
            Err(m) => (OperationStatus::Failed, Some(m)),
        };
        self.measure(ctx, to.as_str());
        let r = record(ctx, "ending an operation", |c| {
            Ok(q::finish(c, &self.id, &ctx.ops.owner, to, msg, db::now())?)
        });
        match r {
            Ok(true) => {}
            Ok(false) => log::warn!("operation {}: ended, but no longer ours", self.id),
            Err(e) => log::error!("operation {}: cannot record its end: {e}", self.id),
        }
    }
}

fn lost(id: &OperationId) -> ApiError {
    ApiError::Internal(format!(
        "operation {id}: this process lost its lease (another took the operation over)"
    ))
}

/// The saved state of an operation, read back.
pub fn state_of<T: DeserializeOwned>(op: &Operation) -> ApiResult<T> {
    serde_json::from_str(&op.state).map_err(|e| {
        ApiError::Internal(format!(
            "operation {}: unreadable state ({e}): {}",
            op.operation_id, op.state
        ))
    })
}

/// Starts the background loops of this process: libvirt's events (`watch`), the backend probes
/// (`health`), lease renewal (a
/// third of the lease), takeover of expired operations (`operations.takeover_interval_secs`)
/// and the reconciliation pass (`reconcile`, every `operations.reconcile_interval_secs`).
/// They end when `ctx` is dropped.
pub fn start_background(ctx: &Arc<Ctx>) {
    super::watch::start(ctx);
    super::health::start_probes(ctx);
    super::hosts::start_probes(ctx);
    let renew_every = ctx.ops.lease / 3;
    let weak = Arc::downgrade(ctx);
    let _ = crate::context::spawn_named("operation-leases".into(), move || {
        every(&weak, renew_every, |ctx| {
            let live = ctx.ops.live_ids();
            if live.is_empty() {
                return;
            }
            let r = record(ctx, "renewing operation leases", |c| {
                Ok(q::renew(c, &ctx.ops.owner, &live, ctx.ops.until_ms())?)
            });
            if let Err(e) = r {
                log::error!("cannot renew operation leases: {e}");
            }
        })
    });
    let observe_every = Duration::from_secs(ctx.cfg.operations.reconcile_interval_secs);
    let weak = Arc::downgrade(ctx);
    let wake = ctx.reconciler.waker();
    let _ = crate::context::spawn_named("reconcile".into(), move || {
        // One pass at start-up (what a crash or a stop left behind), then one per interval,
        // and one at once whenever the event thread rings (a reconnect to libvirtd).
        let mut why = "start-up";
        loop {
            let Some(ctx) = weak.upgrade() else {
                return;
            };
            super::reconcile::run(&ctx, why);
            drop(ctx);
            why = if wake.wait(observe_every) {
                "connected to libvirt"
            } else {
                "periodic"
            };
        }
    });
    let interval = Duration::from_secs(ctx.cfg.operations.takeover_interval_secs);
    let weak = Arc::downgrade(ctx);
    let _ = crate::context::spawn_named("operation-takeover".into(), move || {
        every(&weak, interval, |ctx| {
            if let Err(e) = take_over(ctx) {
                log::warn!("operation takeover skipped: {e}");
            }
        })
    });
}

/// Runs `f` every `period` while the context lives.
fn every(ctx: &Weak<Ctx>, period: Duration, f: impl Fn(&Ctx)) {
    loop {
        std::thread::sleep(period);
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        f(&ctx);
    }
}

/// Claims every expired operation this pass can and settles each in its own thread; returns how
/// many it claimed. Ended operations older than a day are forgotten.
pub fn take_over(ctx: &Ctx) -> ApiResult<usize> {
    let claimed = claim_expired(ctx)?;
    let n = claimed.len();
    // Settled here, one after another, with no connection held: a takeover pass is rare and
    // short next to the lease, and the renewal loop keeps the claimed leases alive meanwhile.
    for (held, op) in claimed {
        settle(ctx, held, &op);
    }
    Ok(n)
}

/// Claims every expired operation this process can (the others went to faster processes);
/// once an hour also forgets ended operations older than a day.
fn claim_expired(ctx: &Ctx) -> ApiResult<Vec<(Op, Operation)>> {
    let mut conn = ctx.conn()?;
    let mut claimed = vec![];
    for op in q::expired(&mut conn, now_ms())? {
        let mine = q::claim(
            &mut conn,
            &op.operation_id,
            &ctx.ops.owner,
            now_ms(),
            ctx.ops.until_ms(),
        )?;
        if !mine {
            continue;
        }
        log::warn!(
            "operation {} ({} of {}, at step {:?}): its owner {} stopped renewing; taking it over",
            op.operation_id,
            op.kind,
            op.resource_id,
            op.step,
            op.owner.as_deref().unwrap_or("?")
        );
        let held = Op::held(
            ctx,
            op.operation_id.clone(),
            op.kind.clone(),
            op.resource_id.clone(),
        );
        claimed.push((held, op));
    }
    if ctx.ops.purge_due() {
        q::purge(&mut conn, db::now().saturating_sub(86_400))?;
    }
    Ok(claimed)
}

/// Finishes or undoes a claimed operation by its kind.
fn settle(ctx: &Ctx, held: Op, op: &Operation) {
    match op.kind.as_str() {
        super::instances::CREATE => super::instances::build::recover(ctx, held, op),
        super::instances::DESTROY => super::instances::destroy::recover(ctx, held, op),
        super::instances::migrate::MIGRATE => super::instances::migrate::recover(ctx, held, op),
        k if super::instances::power::ACTIONS.iter().any(|a| a.kind == k) => {
            super::instances::power::recover(ctx, held, op)
        }
        super::snapshots::CREATE => super::snapshots::recover_create(ctx, held, op),
        super::snapshots::DELETE => super::snapshots::recover_delete(ctx, held, op),
        super::snapshots::RESTORE => super::snapshots::recover_restore(ctx, held, op),
        super::snapshots::RESTORE_VOLUME => super::snapshots::recover_volume_restore(ctx, held, op),
        super::image_copy::COPY | super::upload::UPLOAD => {
            super::image_copy::recover(ctx, held, op)
        }
        k if k == Image::KIND_CREATE || k == Image::KIND_DELETE => {
            super::backed::recover::<Image>(ctx, held, op)
        }
        k if k == <Volume as RbdBacked>::KIND_CREATE || k == <Volume as RbdBacked>::KIND_DELETE => {
            super::backed::recover::<Volume>(ctx, held, op)
        }
        k if k == Volume::KIND_ATTACH || k == Volume::KIND_DETACH => {
            super::hotplug::recover::<Volume>(ctx, held, op)
        }
        k if k == Nic::KIND_ATTACH || k == Nic::KIND_DETACH => {
            super::hotplug::recover::<Nic>(ctx, held, op)
        }
        other => {
            let msg = format!("no takeover is known for operations of kind {other:?}");
            log::error!("operation {}: {msg}", op.operation_id);
            held.finish(ctx, Err(&msg));
        }
    }
}

/// Waits until this process runs no operation, or `grace` has passed; returns how many still
/// run (their leases will run out and another process will settle them).
pub fn wait_idle(ctx: &Ctx, grace: Duration) -> usize {
    let end = Instant::now() + grace;
    loop {
        let n = ctx.ops.in_flight();
        if n == 0 || Instant::now() >= end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Start-up repair: every operation whose lease has run out is taken over now (the `older than`
/// of the other resources does not apply: the lease says who still works).
pub fn reconcile(ctx: &Ctx, _older_than_secs: u64) -> ApiResult<usize> {
    take_over(ctx)
}
