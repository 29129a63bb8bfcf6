//! Continuous reconciliation: one pass compares every settled row with what libvirt and Ceph
//! hold, repairs what it can prove, reports what it cannot, and watches orphans.
//!
//! A pass reads the backends first (every domain with its persistent and live devices, the RBD
//! images of both pools) and the rows second. Rows are made before what they name in libvirt
//! and Ceph and removed after it, so an object without a row is never one being made; and a
//! row is compared only when it was last changed before the inventory began and no operation
//! holds it, so a request finishing during the pass is never "repaired" back.
//!
//! - Power: a settled instance takes the state libvirt reports; one whose domain is gone goes
//!   `error` saying so (`instances::follow`).
//! - Devices: a volume or NIC recorded on an instance whose domain holds it in neither XML is
//!   given back (`available`); one the domain holds while its row says `available` is recorded
//!   attached. What cannot be proved (a device in only one of the two XMLs, a device held by
//!   two instances, a root disk missing, a row whose RBD image is gone) is reported.
//! - Orphans: domains marked with this deployment's id, RBD images with an id-shaped name and
//!   no row, and config drives (`<instance_id>.cidata`) whose instance has no row. With
//!   `operations.orphan_grace_secs` > 0, an orphan still there after the grace is removed, if
//!   it carries this deployment's mark (RBD image metadata, domain metadata).
//!
//! Every repair and every new finding is a log line naming the resource and the reason, and a
//! counter (`Reconciler`).

use super::{instances, transition, Ctx};
use crate::ceph::Removal;
use crate::db::hosts::Host;
use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::{Nic, NicUpdate};
use crate::db::volumes::{Volume, VolumeUpdate};
use crate::db::{self, DbConn};
use crate::error::ApiResult;
use crate::model::HostId;
use crate::model::{
    ImageId, ImageStatus, InstanceId, InstanceStatus, Lifecycle, NicId, NicStatus, VolumeId,
    VolumeStatus,
};
use crate::virt::{DomainView, Hypervisor, Power};
use diesel::Connection;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How many threads read domain XML in a pass. libvirtd serves at most 5 calls of one client
/// at a time (`max_client_requests`): one stays free for requests and events.
const READERS: usize = 4;

/// The domains a pass reads: those named like an instance id (rows name only such, and
/// only such can be our orphans). Other domains on the host are not read at all.
fn ours(name: &str) -> bool {
    InstanceId::is_generated(name)
}

/// Something a pass found, named by resource and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// "instance", "volume", "network interface", "image", "domain" (a domain no row names).
    pub resource: &'static str,
    pub id: String,
    pub what: String,
}

/// An object in libvirt or Ceph that no row names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Orphan {
    /// A domain marked with this deployment's id, on a host.
    Domain { name: String, host: HostId },
    /// An RBD image whose name has the shape of one of our ids.
    Rbd { pool: String, name: String },
}

impl std::fmt::Display for Orphan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Orphan::Domain { name, host } => write!(f, "domain {name} on host {host}"),
            Orphan::Rbd { pool, name } => write!(f, "RBD image {pool}/{name}"),
        }
    }
}

/// What one pass did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub repaired: Vec<Finding>,
    /// Drift the pass could not prove how to repair.
    pub unrepaired: Vec<Finding>,
    pub orphans: Vec<Orphan>,
    /// Orphans removed by this pass (past the grace).
    pub removed: Vec<Orphan>,
    /// Rows compared (instances, volumes, NICs, images).
    pub rows: usize,
    pub domains: usize,
    /// Hosts whose domains could not be read, with why: their instances were not compared.
    pub hosts_skipped: Vec<(HostId, String)>,
    /// Why the Ceph part was skipped, if it was.
    pub ceph_skipped: Option<String>,
    pub took: Duration,
}

/// The reconciler's memory between passes, and its counters.
#[derive(Default)]
pub struct Reconciler {
    pub passes: AtomicU64,
    pub repairs: AtomicU64,
    /// Findings reported (each counted once, when first seen).
    pub reported: AtomicU64,
    pub orphans_removed: AtomicU64,
    /// Duration of the last pass, in microseconds.
    pub last_pass_us: AtomicU64,
    /// When each orphan was first seen (forgotten once it is gone).
    seen: Mutex<HashMap<Orphan, Instant>>,
    /// Findings of the last pass: a finding is logged when it appears, not on every pass.
    known: Mutex<HashSet<Finding>>,
    /// Rung to run a pass before the interval is up.
    wake: Arc<Wake>,
}

impl Reconciler {
    /// Asks the reconciliation loop for a pass now (after a reconnect to libvirtd), without
    /// waiting for it: the caller (the event thread) must stay free.
    pub fn wake(&self) {
        self.wake.ring();
    }

    /// What the reconciliation loop waits on.
    pub fn waker(&self) -> Arc<Wake> {
        self.wake.clone()
    }
}

impl Drop for Reconciler {
    /// The loop waiting on `wake` notices that its context is gone at once.
    fn drop(&mut self) {
        self.wake.ring();
    }
}

/// A doorbell: `wait` returns when rung or when its period is up.
#[derive(Default)]
pub struct Wake {
    rung: Mutex<bool>,
    bell: Condvar,
}

impl Wake {
    pub fn ring(&self) {
        *self.rung.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.bell.notify_all();
    }

    /// Waits up to `period`; returns whether it was rung (and forgets the ring).
    pub fn wait(&self, period: Duration) -> bool {
        let rung = self.rung.lock().unwrap_or_else(|p| p.into_inner());
        let (mut rung, _) = self
            .bell
            .wait_timeout_while(rung, period, |r| !*r)
            .unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *rung)
    }
}

/// Everything a pass compares, read in one go.
struct Rows {
    instances: Vec<Instance>,
    volumes: Vec<Volume>,
    nics: Vec<Nic>,
    images: Vec<Image>,
    busy: HashSet<String>,
    /// Instances on a host whose domains could not be read: not compared.
    unread: HashSet<InstanceId>,
}

fn read_rows(conn: &mut DbConn) -> ApiResult<Rows> {
    Ok(Rows {
        instances: db::instances::all(conn)?,
        volumes: db::volumes::all(conn)?,
        nics: db::nics::all(conn)?,
        images: db::images::all(conn)?,
        busy: db::operations::busy_resources(conn)?.into_iter().collect(),
        unread: HashSet::new(),
    })
}

/// The domains of every host the pass reads: the hosts that answered last (`online`), the
/// configured one and any never contacted yet; each host read on a thread of its own.
struct Inventory {
    /// Per host that answered: its connection and its domains.
    read: HashMap<HostId, (Arc<Hypervisor>, Vec<DomainView>)>,
    skipped: Vec<(HostId, String)>,
}

impl Inventory {
    fn take(ctx: &Ctx, hosts: &[Host], first: &HostId) -> ApiResult<Inventory> {
        let todo: Vec<(HostId, Arc<Hypervisor>)> = hosts
            .iter()
            .filter(|h| h.online || h.last_contact.is_none() || h.host_id == *first)
            .map(|h| (h.host_id.clone(), ctx.hosts.get(&h.uri)))
            .collect();
        let mut inv = Inventory {
            read: HashMap::new(),
            skipped: hosts
                .iter()
                .filter(|h| !todo.iter().any(|(id, _)| *id == h.host_id))
                .map(|h| {
                    let why = h.error_message.clone();
                    (h.host_id.clone(), why.unwrap_or_else(|| "offline".into()))
                })
                .collect(),
        };
        let answers: Vec<_> = std::thread::scope(|s| {
            let calls: Vec<_> = todo
                .into_iter()
                .map(|(id, hv)| s.spawn(move || (id, hv.inventory(READERS, &ours), hv)))
                .collect();
            calls.into_iter().filter_map(|c| c.join().ok()).collect()
        });
        let mut first_error = None;
        for (id, got, hv) in answers {
            match got {
                Ok(domains) => {
                    inv.read.insert(id, (hv, domains));
                }
                Err(e) => {
                    inv.skipped.push((id, e.message().to_string()));
                    first_error.get_or_insert(e);
                }
            }
        }
        // Not one host answered (a one-host setup with libvirtd down): no pass.
        match first_error {
            Some(e) if inv.read.is_empty() => Err(e.into()),
            _ => Ok(inv),
        }
    }

    /// Reads again, from libvirt itself, the domains `names` on every host read (where the
    /// inventory answers from its cache).
    fn refresh(&mut self, names: &HashSet<String>) -> ApiResult<bool> {
        let mut any = false;
        for (hv, domains) in self.read.values_mut() {
            if hv.caches() {
                hv.forget(names.iter().cloned());
                *domains = hv.inventory(READERS, &ours)?;
                any = true;
            }
        }
        Ok(any)
    }

    fn count(&self) -> usize {
        self.read.values().map(|(_, d)| d.len()).sum()
    }

    /// The domains the rows are compared with: each instance's on its own host; and the
    /// instances whose own host (read) does not have their domain while another host does
    /// (moved outside api-web, or by a migration a crash cut short), with that host and the
    /// domain's power there. A domain on its row's host and on another too is a finding.
    fn placed(
        &self,
        rows: &Rows,
        plans: &mut Vec<Plan>,
    ) -> (Vec<DomainView>, Vec<(InstanceId, HostId, Power)>) {
        let host_of: HashMap<&str, &HostId> = rows
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), &i.host_id))
            .collect();
        let has: HashSet<(&HostId, &str)> = self
            .read
            .iter()
            .flat_map(|(h, (_, ds))| ds.iter().map(move |d| (h, d.name.as_str())))
            .collect();
        let mut out = vec![];
        let mut found = vec![];
        for (host, (_, domains)) in &self.read {
            for d in domains {
                match host_of.get(d.name.as_str()) {
                    Some(h) if *h == host => out.push(d.clone()),
                    Some(h) => {
                        if rows.busy.contains(d.name.as_str()) {
                            continue;
                        }
                        if self.read.contains_key(*h) && !has.contains(&(*h, d.name.as_str())) {
                            found.push((InstanceId::new(d.name.as_str()), host.clone(), d.power));
                            continue;
                        }
                        let what = format!(
                            "defined on host {host}, but instance {} is recorded on host {h} (which has it too)",
                            d.name
                        );
                        plans.push(Plan::new(&d.name, finding("domain", &d.name, what), None));
                    }
                    None => {}
                }
            }
        }
        (out, found)
    }
}

/// One pass: see the module's description. Fails only when libvirt or MySQL cannot be read; with
/// Ceph down the pass does everything but the RBD comparison (`ceph_skipped`).
pub fn pass(ctx: &Ctx) -> ApiResult<Report> {
    let t0 = Instant::now();
    let started = db::now();
    let deployment = ctx.deployment()?;
    let first = super::hosts::configured(ctx)?;
    let hosts = db::hosts::all(&mut *ctx.conn()?)?;
    let mut inv = Inventory::take(ctx, &hosts, &first)?;
    let pools = [
        ctx.cfg.ceph.images_pool.clone(),
        ctx.cfg.ceph.volumes_pool.clone(),
    ];
    let rbd = ctx
        .ceph
        .ensure_up()
        .map_err(|e| e.to_string())
        .and_then(|_| {
            let mut out = HashMap::new();
            for p in &pools {
                let names: HashSet<String> = ctx
                    .ceph
                    .list_images(p)
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .collect();
                out.insert(p.clone(), names);
            }
            Ok(out)
        });
    let mut rows = read_rows(&mut ctx.conn()?)?;
    rows.unread = rows
        .instances
        .iter()
        .filter(|i| !inv.read.contains_key(&i.host_id))
        .map(|i| i.instance_id.clone())
        .collect();
    let mut r = Report {
        rows: rows.instances.len() + rows.volumes.len() + rows.nics.len() + rows.images.len(),
        domains: inv.count(),
        ..Default::default()
    };
    // A row changed in the second the inventory began or later may describe a change the
    // inventory did not see yet: the next pass takes it.
    let settled = |update_time: u64| update_time < started;
    let mut plans = vec![];
    let (domains, mut found) = inv.placed(&rows, &mut plans);
    rows.unread
        .extend(found.iter().map(|(id, _, _)| id.clone()));
    plans.extend(plan(&rows, &domains, &settled));
    // The inventory may have answered from its cache: every domain a repair or a report
    // would rest on is read again first, and the plan made again on what it holds now.
    if !plans.is_empty() {
        let names: HashSet<String> = plans.iter().map(|p| p.domain.clone()).collect();
        if inv.refresh(&names)? {
            plans.clear();
            let (domains, again) = inv.placed(&rows, &mut plans);
            rows.unread
                .extend(again.iter().map(|(id, _, _)| id.clone()));
            found = again;
            plans.extend(plan(&rows, &domains, &settled));
        }
    }
    for p in plans {
        apply(ctx, p, &mut r);
    }
    // Instances found on another host than their row's: recorded there.
    for (id, host, power) in found {
        let (Some(inst), Some(to)) = (
            rows.instances.iter().find(|i| i.instance_id == id),
            hosts.iter().find(|h| h.host_id == host),
        ) else {
            continue;
        };
        if !inst.status.is_settled() || !settled(inst.update_time) {
            continue;
        }
        let what = format!(
            "its domain is on host {host}, not on host {} its row names: recorded there",
            inst.host_id
        );
        match super::hosts::record_found(ctx, inst, to, power) {
            Ok(true) => r.repaired.push(finding("instance", &id, what)),
            Ok(false) => {}
            Err(e) => r.unrepaired.push(finding(
                "instance",
                &id,
                format!("{what} (the repair failed: {e})"),
            )),
        }
    }
    // Placement's reservations against the instance rows they stand for.
    match db::hosts::resum(&mut *ctx.conn()?) {
        Ok(fixed) => r.repaired.extend(fixed.into_iter().map(|h| {
            let what = format!(
                "reserved {} vCPUs and {} MiB, its instance rows hold {} and {}: set to theirs",
                h.was.0, h.was.1, h.now.0, h.now.1
            );
            finding("host", &h.host_id, what)
        })),
        Err(e) => r.unrepaired.push(finding(
            "host",
            "*",
            format!("placement's reservations could not be compared: {e}"),
        )),
    }
    let instance_ids: HashSet<&str> = rows
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    let mut orphans: Vec<Orphan> = vec![];
    for (host, (_, domains)) in &inv.read {
        orphans.extend(
            domains
                .iter()
                .filter(|d| d.deployment.as_deref() == Some(deployment.as_str()))
                .filter(|d| !instance_ids.contains(d.name.as_str()))
                .map(|d| Orphan::Domain {
                    name: d.name.clone(),
                    host: host.clone(),
                }),
        );
    }
    r.hosts_skipped = std::mem::take(&mut inv.skipped);
    match rbd {
        Ok(rbd) => orphans.extend(storage(ctx, &rows, &rbd, &settled, &mut r)),
        Err(e) => r.ceph_skipped = Some(e),
    }
    orphans.sort();
    r.orphans = orphans;
    cleanup(ctx, &deployment, &mut r);
    r.took = t0.elapsed();
    account(ctx, &r);
    Ok(r)
}

/// Runs a pass and logs its failure; what the periodic loop and a reconnect call.
pub fn run(ctx: &Ctx, why: &str) -> Option<Report> {
    match pass(ctx) {
        Ok(r) => {
            log::debug!(
                "reconciliation ({why}): {} rows, {} domains, {} repaired, {} unrepaired, {} orphans, {:?}",
                r.rows,
                r.domains,
                r.repaired.len(),
                r.unrepaired.len(),
                r.orphans.len(),
                r.took
            );
            Some(r)
        }
        Err(e) => {
            log::warn!("reconciliation ({why}) skipped: {e}");
            None
        }
    }
}

/// Counts the pass and logs what is new: every repair, a finding or an orphan the first time
/// it is seen (and once more when it is gone).
fn account(ctx: &Ctx, r: &Report) {
    let c = &ctx.reconciler;
    c.passes.fetch_add(1, Ordering::Relaxed);
    c.repairs
        .fetch_add(r.repaired.len() as u64, Ordering::Relaxed);
    c.orphans_removed
        .fetch_add(r.removed.len() as u64, Ordering::Relaxed);
    c.last_pass_us
        .store(r.took.as_micros() as u64, Ordering::Relaxed);
    for f in &r.repaired {
        log::warn!("reconcile: {} {}: {}; repaired", f.resource, f.id, f.what);
    }
    for o in &r.removed {
        log::warn!("reconcile: orphan {o} removed (no row names it)");
    }
    let mut known = c.known.lock().unwrap_or_else(|p| p.into_inner());
    let now: HashSet<Finding> = r.unrepaired.iter().cloned().collect();
    for f in now.difference(&known) {
        c.reported.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "reconcile: {} {}: {}; not repaired (needs an operator)",
            f.resource,
            f.id,
            f.what
        );
    }
    for f in known.difference(&now) {
        log::info!("reconcile: {} {}: resolved ({})", f.resource, f.id, f.what);
    }
    *known = now;
}

fn finding(resource: &'static str, id: impl ToString, what: impl Into<String>) -> Finding {
    Finding {
        resource,
        id: id.to_string(),
        what: what.into(),
    }
}

/// A repair a pass can prove.
enum Fix {
    Power {
        id: InstanceId,
        from: InstanceStatus,
        to: InstanceStatus,
        msg: Option<String>,
    },
    ReleaseVolume {
        id: VolumeId,
        inst: InstanceId,
    },
    AdoptVolume {
        id: VolumeId,
        inst: InstanceId,
        target: String,
    },
    ReleaseNic {
        id: NicId,
        inst: InstanceId,
    },
    AdoptNic {
        id: NicId,
        inst: InstanceId,
    },
}

/// A finding about the domain `domain`, with its repair (`None`: reported only).
struct Plan {
    domain: String,
    finding: Finding,
    fix: Option<Fix>,
}

impl Plan {
    fn new(domain: impl ToString, finding: Finding, fix: Option<Fix>) -> Plan {
        Plan {
            domain: domain.to_string(),
            finding,
            fix,
        }
    }
}

/// What to repair and report, from the rows and the domains as the inventory gave them.
fn plan(rows: &Rows, domains: &[DomainView], settled: &dyn Fn(u64) -> bool) -> Vec<Plan> {
    let by_name: HashMap<&str, &DomainView> =
        domains.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut plans = vec![];
    for d in domains {
        if let Some(why) = &d.unreadable {
            let f = finding("domain", &d.name, format!("its XML cannot be read: {why}"));
            plans.push(Plan::new(&d.name, f, None));
        }
    }
    power(rows, &by_name, settled, &mut plans);
    devices(rows, &by_name, settled, &mut plans);
    plans
}

/// Writes a repair (a compare-and-set that another request won is no repair) or records the
/// report; a failed write is reported.
fn apply(ctx: &Ctx, p: Plan, r: &mut Report) {
    let Some(fix) = p.fix else {
        r.unrepaired.push(p.finding);
        return;
    };
    let done = ctx.conn().and_then(|mut c| {
        let c = &mut c;
        match &fix {
            Fix::Power { id, from, to, msg } => {
                transition::<Instance>(c, id, *from, *to, msg.as_deref())
            }
            Fix::ReleaseVolume { id, inst } => release_volume(c, id, inst),
            Fix::AdoptVolume { id, inst, target } => adopt_volume(c, id, inst, target),
            Fix::ReleaseNic { id, inst } => release_nic(c, id, inst),
            Fix::AdoptNic { id, inst } => adopt_nic(c, id, inst),
        }
    });
    match done {
        Ok(true) => r.repaired.push(p.finding),
        Ok(false) => {}
        Err(e) => r.unrepaired.push(Finding {
            what: format!("{} (the repair failed: {e})", p.finding.what),
            ..p.finding
        }),
    }
}

/// Settled instances take the power state libvirt reports.
fn power(
    rows: &Rows,
    by_name: &HashMap<&str, &DomainView>,
    settled: &dyn Fn(u64) -> bool,
    plans: &mut Vec<Plan>,
) {
    for i in &rows.instances {
        let id = &i.instance_id;
        let from = i.status;
        if !from.is_settled()
            || !settled(i.update_time)
            || rows.busy.contains(id.as_str())
            || rows.unread.contains(id)
        {
            continue;
        }
        let power = by_name.get(id.as_str()).map(|d| d.power);
        let Some((to, msg)) = instances::follow(id, from, power) else {
            continue;
        };
        let f = finding(
            "instance",
            id,
            format!("{from} -> {to}: libvirt says {}", said(power)),
        );
        let fix = Fix::Power {
            id: id.clone(),
            from,
            to,
            msg,
        };
        plans.push(Plan::new(id, f, Some(fix)));
    }
}

fn said(p: Option<Power>) -> &'static str {
    match p {
        Some(Power::Running) => "it runs",
        Some(Power::Paused) => "it is paused",
        Some(Power::Stopped) => "it is shut off",
        None => "there is no such domain",
    }
}

/// Where a device stands in a domain: in its persistent definition, in its running guest.
struct Held {
    persistent: bool,
    /// `None` when the guest does not run.
    live: Option<bool>,
}

impl Held {
    fn anywhere(&self) -> bool {
        self.persistent || self.live == Some(true)
    }
}

/// Volumes and NICs against the devices of the domains.
fn devices(
    rows: &Rows,
    by_name: &HashMap<&str, &DomainView>,
    settled: &dyn Fn(u64) -> bool,
    plans: &mut Vec<Plan>,
) {
    // The instances whose domains can be compared: settled, free, with a persistent domain.
    let comparable: HashMap<&InstanceId, &DomainView> = rows
        .instances
        .iter()
        .filter(|i| i.status.is_settled())
        .filter(|i| settled(i.update_time) && !rows.busy.contains(i.instance_id.as_str()))
        .filter_map(|i| {
            let d = by_name.get(i.instance_id.as_str())?;
            d.persistent.as_ref()?;
            Some((&i.instance_id, *d))
        })
        .collect();
    let free = |id: &str, update_time: u64| settled(update_time) && !rows.busy.contains(id);

    // Rows that say attached: does the domain hold them?
    for v in &rows.volumes {
        let (Some(inst), VolumeStatus::InUse) = (&v.instance_id, v.status) else {
            continue;
        };
        let Some(d) = comparable.get(inst) else {
            continue;
        };
        if !free(v.volume_id.as_str(), v.update_time) {
            continue;
        }
        let held = held(d, |x| x.disk(v.volume_id.as_str()).is_some());
        let id = &v.volume_id;
        if !held.anywhere() {
            if v.is_root {
                let f = finding(
                    "volume",
                    id,
                    format!("the root disk of instance {inst} is in neither its persistent nor its live XML"),
                );
                plans.push(Plan::new(inst, f, None));
                continue;
            }
            let f = finding(
                "volume",
                id,
                format!(
                    "in-use on instance {inst}, whose domain holds it in neither XML: released"
                ),
            );
            let f2 = Fix::ReleaseVolume {
                id: id.clone(),
                inst: inst.clone(),
            };
            plans.push(Plan::new(inst, f, Some(f2)));
        } else if let Some(f) = one_sided("volume", id.as_str(), inst, &held) {
            plans.push(Plan::new(inst, f, None));
        }
    }
    for n in &rows.nics {
        let (Some(inst), NicStatus::Attached) = (&n.instance_id, n.status) else {
            continue;
        };
        let Some(d) = comparable.get(inst) else {
            continue;
        };
        if !free(n.network_interface_id.as_str(), n.update_time) {
            continue;
        }
        let held = held(d, |x| x.has_mac(&n.mac));
        let id = &n.network_interface_id;
        if !held.anywhere() {
            let f = finding(
                "network interface",
                id,
                format!("attached to instance {inst}, whose domain holds its MAC {} in neither XML: released", n.mac),
            );
            let f2 = Fix::ReleaseNic {
                id: id.clone(),
                inst: inst.clone(),
            };
            plans.push(Plan::new(inst, f, Some(f2)));
        } else if let Some(f) = one_sided("network interface", id.as_str(), inst, &held) {
            plans.push(Plan::new(inst, f, None));
        }
    }

    // Devices the domains hold: does a row say so?
    let volumes: HashMap<&str, &Volume> = rows
        .volumes
        .iter()
        .map(|v| (v.volume_id.as_str(), v))
        .collect();
    let nics: HashMap<String, &Nic> = rows
        .nics
        .iter()
        .map(|n| (n.mac.to_ascii_lowercase(), n))
        .collect();
    for (inst, d) in &comparable {
        let mut disks: Vec<(&str, &str)> = vec![];
        let mut macs: Vec<&str> = vec![];
        for x in d.persistent.iter().chain(d.live.iter()) {
            for (serial, target) in &x.disks {
                if !disks.iter().any(|(s, _)| s == serial) {
                    disks.push((serial, target));
                }
            }
            for m in &x.macs {
                if !macs.contains(&m.as_str()) {
                    macs.push(m);
                }
            }
        }
        for (serial, target) in disks {
            match volumes.get(serial) {
                None if VolumeId::is_generated(serial) => {
                    let what = format!("its domain holds disk {serial}, which no volume row names");
                    plans.push(Plan::new(inst, finding("instance", inst, what), None));
                }
                None => {}
                Some(v) if v.instance_id.as_ref() == Some(*inst) => {}
                Some(v) if v.status == VolumeStatus::Available && v.instance_id.is_none() => {
                    if !free(serial, v.update_time) {
                        continue;
                    }
                    let f = finding(
                        "volume",
                        serial,
                        format!("available, but the domain of instance {inst} holds it as {target}: recorded in-use there"),
                    );
                    let f2 = Fix::AdoptVolume {
                        id: v.volume_id.clone(),
                        inst: (*inst).clone(),
                        target: target.to_string(),
                    };
                    plans.push(Plan::new(inst, f, Some(f2)));
                }
                Some(v) => {
                    if !free(serial, v.update_time) {
                        continue;
                    }
                    let f = finding(
                        "volume",
                        serial,
                        format!(
                            "{} on instance {}, but the domain of instance {inst} holds it too",
                            v.status,
                            v.instance_id.as_ref().map_or("none", |i| i.as_str())
                        ),
                    );
                    plans.push(Plan::new(inst, f, None))
                }
            }
        }
        for mac in macs {
            let Some(n) = nics.get(mac) else {
                continue;
            };
            if n.instance_id.as_ref() == Some(*inst)
                || !free(n.network_interface_id.as_str(), n.update_time)
            {
                continue;
            }
            let id = &n.network_interface_id;
            if n.status == NicStatus::Available && n.instance_id.is_none() {
                let f = finding(
                    "network interface",
                    id,
                    format!("available, but the domain of instance {inst} holds its MAC {mac}: recorded attached there"),
                );
                let f2 = Fix::AdoptNic {
                    id: id.clone(),
                    inst: (*inst).clone(),
                };
                plans.push(Plan::new(inst, f, Some(f2)));
            } else {
                let f = finding(
                    "network interface",
                    id,
                    format!(
                        "{} on instance {}, but the domain of instance {inst} holds its MAC {mac} too",
                        n.status,
                        n.instance_id.as_ref().map_or("none", |i| i.as_str())
                    ),
                );
                plans.push(Plan::new(inst, f, None));
            }
        }
    }
}

fn held(d: &DomainView, has: impl Fn(&crate::virt::Devices) -> bool) -> Held {
    Held {
        persistent: d.persistent.as_ref().is_some_and(&has),
        live: d.live.as_ref().map(&has),
    }
}

/// A device in only one of the two XMLs of a running domain: reported, not repaired (plugging
/// or unplugging a guest's device is the user's call).
fn one_sided(resource: &'static str, id: &str, inst: &InstanceId, h: &Held) -> Option<Finding> {
    let what = match (h.persistent, h.live) {
        (true, Some(false)) => format!(
            "attached to instance {inst} in its persistent definition only: the running guest does not have it until it restarts"
        ),
        (false, Some(true)) => format!(
            "attached to the running guest of instance {inst} only: it leaves at the guest's next stop"
        ),
        _ => return None,
    };
    Some(finding(resource, id, what))
}

fn release_volume(c: &mut DbConn, id: &VolumeId, inst: &InstanceId) -> ApiResult<bool> {
    let msg =
        format!("released by reconciliation: the domain of instance {inst} no longer held it");
    c.transaction(|c| {
        if !transition::<Volume>(c, id, VolumeStatus::InUse, VolumeStatus::Detaching, None)? {
            return Ok(false);
        }
        VolumeStatus::Detaching.check(VolumeStatus::Available)?;
        let u = VolumeUpdate::released(Some(&msg), db::now());
        Ok(db::volumes::transition_with(
            c,
            id,
            VolumeStatus::Detaching,
            &u,
        )?)
    })
}

fn release_nic(c: &mut DbConn, id: &NicId, inst: &InstanceId) -> ApiResult<bool> {
    let msg =
        format!("released by reconciliation: the domain of instance {inst} no longer held it");
    c.transaction(|c| {
        if !transition::<Nic>(c, id, NicStatus::Attached, NicStatus::Detaching, None)? {
            return Ok(false);
        }
        NicStatus::Detaching.check(NicStatus::Available)?;
        let u = NicUpdate::released(Some(&msg), db::now());
        let done = db::nics::transition_with(c, id, NicStatus::Detaching, &u)?;
        db::instances::refresh_ip(c, inst)?;
        Ok(done)
    })
}

fn adopt_volume(c: &mut DbConn, id: &VolumeId, inst: &InstanceId, target: &str) -> ApiResult<bool> {
    c.transaction(|c| {
        VolumeStatus::Available.check(VolumeStatus::Attaching)?;
        let now = db::now();
        let reserve = VolumeUpdate::reserve(inst, target, now);
        if !db::volumes::transition_with(c, id, VolumeStatus::Available, &reserve)? {
            return Ok(false);
        }
        VolumeStatus::Attaching.check(VolumeStatus::InUse)?;
        let done = VolumeUpdate::attached(now);
        Ok(db::volumes::transition_with(
            c,
            id,
            VolumeStatus::Attaching,
            &done,
        )?)
    })
}

fn adopt_nic(c: &mut DbConn, id: &NicId, inst: &InstanceId) -> ApiResult<bool> {
    c.transaction(|c| {
        NicStatus::Available.check(NicStatus::Attaching)?;
        let now = db::now();
        if !db::nics::transition_with(c, id, NicStatus::Available, &NicUpdate::reserve(inst, now))?
        {
            return Ok(false);
        }
        NicStatus::Attaching.check(NicStatus::Attached)?;
        let done =
            db::nics::transition_with(c, id, NicStatus::Attaching, &NicUpdate::attached(now))?;
        db::instances::refresh_ip(c, inst)?;
        Ok(done)
    })
}

/// Rows against the RBD images of both pools; returns the orphan images.
fn storage(
    ctx: &Ctx,
    rows: &Rows,
    rbd: &HashMap<String, HashSet<String>>,
    settled: &dyn Fn(u64) -> bool,
    r: &mut Report,
) -> Vec<Orphan> {
    let (ipool, vpool) = (&ctx.cfg.ceph.images_pool, &ctx.cfg.ceph.volumes_pool);
    let empty = HashSet::new();
    let in_images = rbd.get(ipool).unwrap_or(&empty);
    let in_volumes = rbd.get(vpool).unwrap_or(&empty);
    for v in &rows.volumes {
        // A volume being made or removed has its image come and go under its operation.
        let steady = !matches!(v.status, VolumeStatus::Creating | VolumeStatus::Deleting);
        if steady
            && settled(v.update_time)
            && !rows.busy.contains(v.volume_id.as_str())
            && !in_volumes.contains(v.volume_id.as_str())
        {
            r.unrepaired.push(finding(
                "volume",
                &v.volume_id,
                format!(
                    "{}: its RBD image {vpool}/{} is missing",
                    v.status, v.volume_id
                ),
            ));
        }
    }
    for i in &rows.images {
        if i.status == ImageStatus::Available
            && settled(i.update_time)
            && !rows.busy.contains(i.image_id.as_str())
            && !in_images.contains(i.image_id.as_str())
        {
            r.unrepaired.push(finding(
                "image",
                &i.image_id,
                format!(
                    "available, but its RBD image {ipool}/{} is missing",
                    i.image_id
                ),
            ));
        }
    }
    let volume_ids: HashSet<&str> = rows.volumes.iter().map(|v| v.volume_id.as_str()).collect();
    let image_ids: HashSet<&str> = rows.images.iter().map(|i| i.image_id.as_str()).collect();
    let mut out = vec![];
    let mut orphans =
        |pool: &str, names: &HashSet<String>, ours: fn(&str) -> bool, rows: &HashSet<&str>| {
            for n in names {
                if ours(n) && !rows.contains(n.as_str()) {
                    out.push(Orphan::Rbd {
                        pool: pool.to_string(),
                        name: n.clone(),
                    });
                }
            }
        };
    orphans(vpool, in_volumes, VolumeId::is_generated, &volume_ids);
    orphans(ipool, in_images, ImageId::is_generated, &image_ids);
    // Config drives (`<instance_id>.cidata`) live in the volumes pool and belong to an instance.
    let instance_ids: HashSet<&str> = rows
        .instances
        .iter()
        .map(|i| i.instance_id.as_str())
        .collect();
    for n in in_volumes {
        if let Some(id) = instances::guest::drive_of(n) {
            if !instance_ids.contains(id.as_str()) {
                out.push(Orphan::Rbd {
                    pool: vpool.to_string(),
                    name: n.clone(),
                });
            }
        }
    }
    out
}

/// Forgets orphans that are gone, remembers new ones, and past `operations.orphan_grace_secs`
/// (0: never) removes those that carry this deployment's mark and still have no row.
fn cleanup(ctx: &Ctx, deployment: &str, r: &mut Report) {
    let grace = ctx.cfg.operations.orphan_grace_secs;
    let due: Vec<Orphan> = {
        let mut seen = ctx
            .reconciler
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.retain(|o, _| r.orphans.contains(o));
        let now = Instant::now();
        for o in &r.orphans {
            seen.entry(o.clone()).or_insert_with(|| {
                log::warn!(
                    "reconcile: orphan {o}: no row names it{}",
                    if grace == 0 {
                        " (orphan cleanup is off: operations.orphan_grace_secs)".to_string()
                    } else {
                        format!("; removed in {grace}s if it stays so")
                    }
                );
                now
            });
        }
        if grace == 0 {
            return;
        }
        seen.iter()
            .filter(|(_, t)| t.elapsed() >= Duration::from_secs(grace))
            .map(|(o, _)| o.clone())
            .collect()
    };
    for o in due {
        match remove_orphan(ctx, deployment, &o) {
            Ok(true) => {
                ctx.reconciler
                    .seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&o);
                r.removed.push(o);
            }
            Ok(false) => {}
            Err(e) => log::warn!("reconcile: orphan {o} not removed: {e}"),
        }
    }
}

/// Removes one orphan if it still has no row and carries this deployment's mark.
fn remove_orphan(ctx: &Ctx, deployment: &str, o: &Orphan) -> ApiResult<bool> {
    match o {
        Orphan::Domain { name, host } => {
            let id = InstanceId::new(name.as_str());
            let mut conn = ctx.conn()?;
            if db::instances::get(&mut conn, &id)?.is_some() {
                return Ok(false);
            }
            drop(conn);
            // The mark was checked by the pass that listed it (only marked domains are listed).
            let hv = super::hosts::connection(ctx, host)?;
            hv.force_off(name)?;
            hv.undefine(name)?;
            Ok(true)
        }
        Orphan::Rbd { pool, name } => {
            let mut conn = ctx.conn()?;
            let has_row = if let Some(id) = instances::guest::drive_of(name) {
                db::instances::get(&mut conn, &id)?.is_some()
            } else if pool == &ctx.cfg.ceph.volumes_pool {
                db::volumes::get(&mut conn, &VolumeId::new(name.as_str()))?.is_some()
            } else {
                db::images::get(&mut conn, &ImageId::new(name.as_str()))?.is_some()
            };
            drop(conn);
            if has_row {
                return Ok(false);
            }
            match ctx.ceph.owner(pool, name) {
                Ok(Some(d)) if d == deployment => {}
                Ok(_) => return Ok(false),
                Err(e) if e.is_not_found() => return Ok(true),
                Err(e) => return Err(e.into()),
            }
            match ctx.ceph.remove_image(pool, name)? {
                Removal::Removed | Removal::AlreadyGone => Ok(true),
            }
        }
    }
}
