//! Hypervisor hosts: the inventory (add by libvirt URI, list, detail, update, remove when
//! empty), the configured `libvirt.uri` as the first host, and the probe that keeps each host's
//! `online`, `last_contact` and facts true.
//!
//! A host is identified by its URI and by libvirt's host UUID (two URIs reaching one libvirtd
//! are refused as one host; a URI that starts reaching another libvirtd is reported offline).

use super::{load, Ctx, Resource};
use crate::db::hosts::{self as q, Allocated, Contact, Host, HostForm, HostUpdate};
use crate::db::{self, DbConn, ListFilter, Table};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{HostId, HostStatus};
use crate::virt::{Facts, Hypervisor};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

impl Resource for Host {
    const NOT_FOUND: ErrorCode = ErrorCode::HostNotFound;
}

/// How often every host is probed.
pub const PROBE_EVERY: Duration = Duration::from_secs(5);
/// Every this many probes a reachable host's facts are read again in full (versions change on
/// an upgrade, machine types with QEMU); in between only its free memory.
const FULL_EVERY: u64 = 12;
/// How long `host/add` waits for a new host to answer.
const ADD_DEADLINE: Duration = Duration::from_secs(15);
const ID_TRIES: usize = 5;
pub const MAX_TAGS: usize = 32;

/// How an instance's host stands, shown with the instance (`host_status` in instance/list and
/// instance/detail, as Nova's): on a host that does not answer, an instance is `unreachable`,
/// not lost: its row stays as it was, calls on it answer 503 until the host is back, and the
/// reconciliation pass leaves it alone meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Online and enabled.
    Up,
    /// Online, in maintenance (no new instances; what runs there runs on).
    Maintenance,
    /// It answered once and does not now (`online` false since its last probe).
    Unreachable,
    /// Not reached yet (a new database before the first probe), or no such host row.
    Unknown,
}

impl HostState {
    pub fn of(h: Option<&Host>) -> HostState {
        match h {
            None => HostState::Unknown,
            Some(h) if !h.online && h.last_contact.is_none() => HostState::Unknown,
            Some(h) if !h.online => HostState::Unreachable,
            Some(h) if h.status == HostStatus::Disabled => HostState::Maintenance,
            Some(_) => HostState::Up,
        }
    }
}

/// A host row with what runs there.
#[derive(Debug, Clone)]
pub struct Detail {
    pub host: Host,
    pub allocated: Allocated,
    /// It is `libvirt.uri` (it cannot be removed).
    pub configured: bool,
    /// What placement allows on it (vCPUs, memory MiB).
    pub limits: (u64, u64),
}

/// What `host/add` asks for.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub uri: String,
    pub host_name: Option<String>,
    pub address: Option<String>,
    pub tags: Vec<String>,
    pub enabled: bool,
    /// Placement's capacity in place of the host's own CPUs and memory (`None`: its own).
    pub cpu_capacity: Option<u32>,
    pub memory_capacity_mib: Option<u64>,
}

/// What `host/update` changes (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub host_name: Option<String>,
    pub address: Option<String>,
    pub tags: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// `Some(None)`: back to the host's own figure.
    pub cpu_capacity: Option<Option<u32>>,
    pub memory_capacity_mib: Option<Option<u64>>,
}

/// Refuses a URI api-web cannot use as a host: QEMU's system instance over a local socket,
/// TCP, TLS or SSH.
pub fn check_uri(uri: &str) -> ApiResult<()> {
    let schemes = ["qemu", "qemu+unix", "qemu+tcp", "qemu+tls", "qemu+ssh"];
    let bad = |why: &str| {
        ApiError::invalid(format!(
            "uri: {uri:?} {why} (e.g. qemu+tcp://10.0.0.2/system, qemu+ssh://root@10.0.0.2/system, \
             qemu+unix:///system?socket=/run/libvirt/libvirt-sock)"
        ))
    };
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| bad("is not a libvirt URI"))?;
    if !schemes.contains(&scheme) {
        return Err(bad(&format!(
            "uses {scheme:?}: one of {} is needed",
            schemes.join(", ")
        )));
    }
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path != "/system" {
        return Err(bad("does not name QEMU's system instance (path /system)"));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains white space"));
    }
    Ok(())
}

/// The server part of a URI (`qemu+tcp://10.0.0.2:16509/system` -> `10.0.0.2:16509`, without a
/// user), `None` for a local one.
fn server_of(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let server = rest.split('/').next().unwrap_or("");
    let server = server.rsplit('@').next().unwrap_or(server);
    (!server.is_empty()).then(|| server.to_string())
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn tags_json(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".into())
}

/// A JSON array column as strings (an unreadable one as none).
pub fn strings(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The bridges api-web may plug NICs into (`network.bridges` and the default one): what a
/// probe looks for on each host.
fn bridges(ctx: &Ctx) -> Vec<String> {
    let n = &ctx.cfg.network;
    let mut out = n.bridges.clone();
    if !out.contains(&n.default_bridge) {
        out.push(n.default_bridge.clone());
    }
    out
}

fn contact_of(f: &Facts, now: u64) -> Contact {
    let mut machines = f.machine_types.clone();
    // The column holds 4096 characters: the newest machine types sort last, keep those.
    while tags_json(&machines).len() > 4096 {
        machines.remove(0);
    }
    Contact {
        host_uuid: (!f.host_uuid.is_empty()).then(|| f.host_uuid.clone()),
        online: true,
        last_contact: Some(now),
        error_message: Some(None),
        arch: f.arch.clone(),
        cpu_model: f.cpu_model.clone(),
        cpu_sockets: f.cpu_sockets,
        cpu_cores: f.cpu_cores,
        cpu_threads: f.cpu_threads,
        cpus: f.cpus,
        memory_mib: f.memory_mib,
        memory_free_mib: f.memory_free_mib,
        libvirt_version: f.libvirt_version.clone(),
        qemu_version: f.qemu_version.clone(),
        machine_types: tags_json(&machines),
        firmware: tags_json(&f.firmware),
        kvm: f.kvm,
        bridges: tags_json(&f.bridges),
        update_time: now,
    }
}

/// The connection to a host (the configured host's is `Ctx::hv`).
pub fn connection(ctx: &Ctx, id: &HostId) -> ApiResult<Arc<Hypervisor>> {
    let known = ctx
        .host_uris
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)
        .cloned();
    match known {
        Some(uri) => Ok(ctx.hosts.get(&uri)),
        None => Ok(connection_of(ctx, &load::<Host>(&mut ctx.conn()?, id)?)),
    }
}

/// The connection to a host whose row is at hand (no query; its URI remembered).
pub fn connection_of(ctx: &Ctx, host: &Host) -> Arc<Hypervisor> {
    ctx.host_uris
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(host.host_id.clone(), host.uri.clone());
    ctx.hosts.get(&host.uri)
}

/// The connection to the host an instance row names: where every operation on it goes.
pub fn of(ctx: &Ctx, inst: &crate::db::instances::Instance) -> ApiResult<Arc<Hypervisor>> {
    connection(ctx, &inst.host_id)
}

/// `of` for an instance known by id (its row read for its host).
pub fn of_id(ctx: &Ctx, id: &crate::model::InstanceId) -> ApiResult<Arc<Hypervisor>> {
    let inst = load::<crate::db::instances::Instance>(&mut ctx.conn()?, id)?;
    of(ctx, &inst)
}

/// Where a settled instance whose domain its own host does not have really is: the other
/// online hosts are asked (a migration done outside api-web, or one a crash cut short).
/// Returns the host and the domain's power there.
pub fn find_elsewhere(
    ctx: &Ctx,
    inst: &crate::db::instances::Instance,
) -> ApiResult<Option<(Host, crate::virt::Power)>> {
    let others: Vec<Host> = q::all(&mut *ctx.conn()?)?
        .into_iter()
        .filter(|h| h.online && h.host_id != inst.host_id)
        .collect();
    for h in others {
        if let Ok(Some(p)) = connection_of(ctx, &h).power(inst.instance_id.as_str()) {
            return Ok(Some((h, p)));
        }
    }
    Ok(None)
}

/// Records a settled instance on the host its domain was found on (`find_elsewhere`), its
/// status what libvirt says there, its reservation moved with it: one transaction,
/// compare-and-set on its host and status. Returns whether the row changed.
pub fn record_found(
    ctx: &Ctx,
    inst: &crate::db::instances::Instance,
    to: &Host,
    power: crate::virt::Power,
) -> ApiResult<bool> {
    let id = &inst.instance_id;
    let status = super::instances::power::status_of(power);
    let changed = super::record(ctx, "recording where the instance is", |c| {
        super::quotas::in_transaction(c, |c| {
            if !crate::db::instances::set_host(
                c,
                id,
                inst.status,
                Some(&inst.host_id),
                &to.host_id,
                &to.address,
                db::now(),
            )? {
                return Ok(false);
            }
            q::release(c, &inst.host_id, inst.cpu, inst.memory)?;
            q::add(c, &to.host_id, inst.cpu, inst.memory)?;
            if status != inst.status {
                super::transition::<crate::db::instances::Instance>(
                    c,
                    id,
                    inst.status,
                    status,
                    None,
                )?;
            }
            Ok(true)
        })
    })?;
    if changed {
        log::warn!(
            "instance {id}: its domain is on host {} (the row said host {}): recorded there, {status}",
            to.host_id,
            inst.host_id
        );
    }
    Ok(changed)
}

/// The id of the host of `libvirt.uri`, recorded on first use (a fresh database gets it at
/// once; a database migrated from one host has it from the migration). Cached: the configured
/// host cannot be removed.
pub fn configured(ctx: &Ctx) -> ApiResult<HostId> {
    if let Some(id) = ctx.first_host.get() {
        return Ok(id.clone());
    }
    let mut conn = ctx.conn()?;
    let uri = ctx.cfg.libvirt.uri.clone();
    let id = match q::by_uri(&mut conn, &uri)? {
        Some(h) => h.host_id,
        None => {
            let base = server_of(&uri).unwrap_or_else(local_hostname);
            record_first(ctx, &mut conn, &uri, &base)?
        }
    };
    Ok(ctx.first_host.get_or_init(|| id).clone())
}

fn record_first(ctx: &Ctx, conn: &mut DbConn, uri: &str, base: &str) -> ApiResult<HostId> {
    for n in 1..=ID_TRIES {
        let name = if n == 1 {
            base.to_string()
        } else {
            format!("{base}-{n}")
        };
        let form = HostForm {
            host_id: HostId::generate(),
            host_name: name,
            uri: uri.to_string(),
            address: ctx.cfg.libvirt.host_ip.clone(),
            status: HostStatus::Enabled,
            tags: "[]".into(),
            cpu_capacity: None,
            memory_capacity_mib: None,
            create_time: db::now(),
        };
        match q::insert(conn, &form) {
            Ok(()) => {
                log::info!("recorded libvirt.uri {uri} as host {}", form.host_id);
                return Ok(form.host_id);
            }
            Err(e) if db::is_unique_violation(&e) => {
                // Another replica recorded it meanwhile, or the name (or id) is taken.
                if let Some(h) = q::by_uri(conn, uri)? {
                    return Ok(h.host_id);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal(format!(
        "could not record {uri} as a host under a free name"
    )))
}

/// Runs `f` on its own thread and waits at most `deadline` (a host that does not answer TCP
/// must not hold a request for minutes).
fn within<T: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = crate::context::spawn_named("host-contact".into(), move || {
        let _ = tx.send(f());
    });
    if spawned.is_err() {
        return None;
    }
    rx.recv_timeout(deadline).ok()
}

fn unreachable(uri: &str, why: &str) -> ApiError {
    ApiError::unprocessable(
        ErrorCode::HostUnreachable,
        format!("libvirt at {uri} does not answer: {why}"),
    )
}

/// Adds a host: checks the URI, reads its facts (it must answer within 15 s), refuses one
/// already known by URI, name or host UUID, records it.
pub fn add(ctx: &Ctx, new: &NewHost) -> ApiResult<Detail> {
    check_uri(&new.uri)?;
    let mut conn = ctx.conn()?;
    if let Some(h) = q::by_uri(&mut conn, &new.uri)? {
        return Err(ApiError::conflict(
            ErrorCode::HostExists,
            format!(
                "{} is host {} ({}) already",
                new.uri, h.host_id, h.host_name
            ),
        ));
    }
    let hv = ctx.hosts.get(&new.uri);
    let facts = {
        let hv = hv.clone();
        let kind = ctx.cfg.libvirt.domain_type.clone();
        let bridges = bridges(ctx);
        within(ADD_DEADLINE, move || hv.facts(&kind, &bridges))
    };
    let facts = match facts {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            ctx.hosts.forget(&new.uri);
            return Err(unreachable(&new.uri, e.message()));
        }
        None => {
            ctx.hosts.forget(&new.uri);
            return Err(unreachable(&new.uri, "no answer within 15 s"));
        }
    };
    let id = HostId::generate();
    if let Some(h) = q::by_uuid(&mut conn, &facts.host_uuid, &id)? {
        return Err(ApiError::conflict(
            ErrorCode::HostExists,
            format!(
                "{} reaches the libvirtd of host {} ({}, {}): its host UUID is {}",
                new.uri, h.host_id, h.host_name, h.uri, facts.host_uuid
            ),
        ));
    }
    let name = new
        .host_name
        .clone()
        .or_else(|| server_of(&new.uri))
        .unwrap_or_else(|| facts.hostname.clone());
    let form = HostForm {
        host_id: id.clone(),
        host_name: name.clone(),
        uri: new.uri.clone(),
        address: new
            .address
            .clone()
            .or_else(|| server_of(&new.uri).map(|s| s.split(':').next().unwrap_or("").to_string()))
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| ctx.cfg.libvirt.host_ip.clone()),
        status: if new.enabled {
            HostStatus::Enabled
        } else {
            HostStatus::Disabled
        },
        tags: tags_json(&new.tags),
        cpu_capacity: new.cpu_capacity,
        memory_capacity_mib: new.memory_capacity_mib,
        create_time: db::now(),
    };
    match q::insert(&mut conn, &form) {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                ErrorCode::HostExists,
                format!(
                    "a host named {name:?}, at {}, or with host UUID {} exists",
                    new.uri, facts.host_uuid
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    match q::contact(&mut conn, &id, &contact_of(&facts, db::now())) {
        Ok(_) => {}
        Err(e) if db::is_unique_violation(&e) => {
            // Another add of the same libvirtd under another URI won meanwhile.
            Host::delete_in_status(&mut conn, &id, form.status)?;
            return Err(ApiError::conflict(
                ErrorCode::HostExists,
                format!(
                    "{} reaches a libvirtd just added under another URI (host UUID {})",
                    new.uri, facts.host_uuid
                ),
            ));
        }
        Err(e) => {
            let _ = Host::delete_in_status(&mut conn, &id, form.status);
            return Err(e.into());
        }
    }
    log::info!("added host {id} ({name}) at {}", new.uri);
    detail(ctx, &id)
}

pub fn detail(ctx: &Ctx, id: &HostId) -> ApiResult<Detail> {
    let mut conn = ctx.conn()?;
    let host = load::<Host>(&mut conn, id)?;
    let allocated = q::allocated(&mut conn, std::slice::from_ref(id))?
        .remove(id)
        .unwrap_or_default();
    let configured = host.uri == ctx.cfg.libvirt.uri;
    Ok(Detail {
        limits: super::placement::limits(&host, &ctx.cfg.placement),
        host,
        allocated,
        configured,
    })
}

/// One page of hosts with what runs on each (two queries).
pub fn list(
    ctx: &Ctx,
    filter: &ListFilter<HostStatus>,
    paging: super::Paging,
) -> ApiResult<(i64, Vec<Detail>)> {
    // The configured host is listed from the first call on, also on a fresh database.
    configured(ctx)?;
    let mut conn = ctx.conn()?;
    let (total, rows) = db::list::<Host>(&mut conn, filter, paging.to_db())?;
    let ids: Vec<HostId> = rows.iter().map(|h| h.host_id.clone()).collect();
    let mut allocated = q::allocated(&mut conn, &ids)?;
    let items = rows
        .into_iter()
        .map(|host| Detail {
            limits: super::placement::limits(&host, &ctx.cfg.placement),
            allocated: allocated.remove(&host.host_id).unwrap_or_default(),
            configured: host.uri == ctx.cfg.libvirt.uri,
            host,
        })
        .collect();
    Ok((total, items))
}

/// Renames, re-addresses, re-tags, enables or disables (maintenance) a host.
pub fn update(ctx: &Ctx, id: &HostId, ch: &Change) -> ApiResult<Detail> {
    let mut conn = ctx.conn()?;
    let host = load::<Host>(&mut conn, id)?;
    let u = HostUpdate {
        host_name: ch.host_name.clone(),
        address: ch.address.clone(),
        tags: ch.tags.as_deref().map(tags_json),
        cpu_capacity: ch.cpu_capacity,
        memory_capacity_mib: ch.memory_capacity_mib,
        update_time: Some(db::now()),
    };
    match q::update(&mut conn, id, &u) {
        Ok(_) => {}
        Err(e) if db::is_unique_violation(&e) => {
            return Err(ApiError::conflict(
                ErrorCode::HostExists,
                format!(
                    "a host named {:?} exists",
                    ch.host_name.as_deref().unwrap_or_default()
                ),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(enabled) = ch.enabled {
        let to = if enabled {
            HostStatus::Enabled
        } else {
            HostStatus::Disabled
        };
        if host.status != to {
            // Concurrent updates to the same status: either one's compare-and-set is enough.
            Host::transition(
                &mut conn,
                id,
                host.status,
                to,
                host.error_message.as_deref(),
                db::now(),
            )?;
            log::info!("host {id} is now {to}");
        }
    }
    detail(ctx, id)
}

/// Removes a host no instance row names (not the configured one).
pub fn remove(ctx: &Ctx, id: &HostId) -> ApiResult<()> {
    let mut conn = ctx.conn()?;
    let host = load::<Host>(&mut conn, id)?;
    if host.uri == ctx.cfg.libvirt.uri {
        return Err(ApiError::conflict(
            ErrorCode::HostInUse,
            format!(
                "host {id} is libvirt.uri ({}), where api-web creates instances; change the \
                 configuration first",
                host.uri
            ),
        ));
    }
    let deleted = super::quotas::in_transaction(&mut conn, |c| Ok(q::delete_if_empty(c, id)?))?;
    match deleted {
        None => Err(super::not_found::<Host>(id)),
        Some(false) => {
            let n = q::allocated(&mut conn, std::slice::from_ref(id))?
                .remove(id)
                .unwrap_or_default()
                .instances;
            Err(ApiError::conflict(
                ErrorCode::HostInUse,
                format!("host {id} still has {n} instance(s): migrate or destroy them first"),
            ))
        }
        Some(true) => {
            ctx.host_uris
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            ctx.hosts.forget(&host.uri);
            log::info!("removed host {id} ({})", host.host_name);
            Ok(())
        }
    }
}

/// Hosts have no transitional status: nothing to settle after a crash.
pub fn reconcile(_ctx: &Ctx, _older_than_secs: u64) -> ApiResult<usize> {
    Ok(0)
}

/// One probe of one host: full facts on first contact, after it was offline and every
/// `FULL_EVERY` rounds; else its free memory only.
fn probe(ctx: &Ctx, host: &Host, hv: &Hypervisor, full: bool) -> ApiResult<()> {
    let mut conn = ctx.conn()?;
    let now = db::now();
    let full = full || !host.online || host.host_uuid.is_none() || !hv.is_connected();
    if !full {
        return match hv.free_memory_mib() {
            Ok(free) => Ok(q::seen(&mut conn, &host.host_id, free, now).map(|_| ())?),
            Err(e) => Ok(q::lost(&mut conn, &host.host_id, e.message(), now).map(|_| ())?),
        };
    }
    match hv.facts(&ctx.cfg.libvirt.domain_type, &bridges(ctx)) {
        Ok(f) => {
            if let Some(known) = host.host_uuid.as_deref().filter(|u| *u != f.host_uuid) {
                let why = format!(
                    "{} now reaches another libvirtd (host UUID {}, registered {known}); \
                     its instances are not there",
                    host.uri, f.host_uuid
                );
                q::lost(&mut conn, &host.host_id, &why, now)?;
                return Ok(());
            }
            if let Some(other) = q::by_uuid(&mut conn, &f.host_uuid, &host.host_id)? {
                let why = format!(
                    "{} reaches the libvirtd of host {} ({})",
                    host.uri, other.host_id, other.uri
                );
                q::lost(&mut conn, &host.host_id, &why, now)?;
                return Ok(());
            }
            q::contact(&mut conn, &host.host_id, &contact_of(&f, now))?;
            Ok(())
        }
        Err(e) => Ok(q::lost(&mut conn, &host.host_id, e.message(), now).map(|_| ())?),
    }
}

/// Probes now, fully, the hosts `which` picks (each on its own thread; waits at most 5 s in
/// all): what placement does for hosts never reached yet, and for hosts found offline when no
/// other can take an instance (the periodic probe may lag by `PROBE_EVERY`). Returns how many
/// were probed.
pub fn probe_now(ctx: &Arc<Ctx>, which: impl Fn(&Host) -> bool) -> ApiResult<usize> {
    let hosts: Vec<Host> = q::all(&mut *ctx.conn()?)?
        .into_iter()
        .filter(which)
        .collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for host in &hosts {
        let (ctx, host, tx) = (ctx.clone(), host.clone(), tx.clone());
        let _ = crate::context::spawn_named(format!("probe-{}", host.host_id), move || {
            let hv = ctx.hosts.get(&host.uri);
            if let Err(e) = probe(&ctx, &host, &hv, true) {
                log::debug!("probe of host {} not recorded: {e}", host.host_id);
            }
            let _ = tx.send(());
        });
    }
    drop(tx);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    for _ in &hosts {
        if rx
            .recv_timeout(end.saturating_duration_since(std::time::Instant::now()))
            .is_err()
        {
            break;
        }
    }
    Ok(hosts.len())
}

/// Probes every host each `PROBE_EVERY`, each on a thread of its own (one that does not answer
/// holds up only itself; a host whose last probe still runs is skipped).
pub fn start_probes(ctx: &Arc<Ctx>) {
    let weak: Weak<Ctx> = Arc::downgrade(ctx);
    let busy: Arc<Mutex<HashSet<HostId>>> = Arc::default();
    let _ = crate::context::spawn_named("host-probes".into(), move || {
        let mut round: u64 = 0;
        loop {
            let Some(ctx) = weak.upgrade() else {
                return;
            };
            if let Err(e) = probe_all(&ctx, &busy, round.is_multiple_of(FULL_EVERY)) {
                log::debug!("host probes skipped: {e}");
            }
            drop(ctx);
            round += 1;
            std::thread::sleep(PROBE_EVERY);
        }
    });
}

fn probe_all(ctx: &Arc<Ctx>, busy: &Arc<Mutex<HashSet<HostId>>>, full: bool) -> ApiResult<()> {
    configured(ctx)?;
    let hosts = {
        let mut conn = ctx.conn()?;
        q::all(&mut conn)?
    };
    for host in hosts {
        let id = host.host_id.clone();
        if !busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone())
        {
            continue;
        }
        let hv = ctx.hosts.get(&host.uri);
        let (ctx, busy) = (ctx.clone(), busy.clone());
        let spawned = crate::context::spawn_named(format!("probe-{id}"), move || {
            if let Err(e) = probe(&ctx, &host, &hv, full) {
                log::debug!("probe of host {id} not recorded: {e}");
            }
            busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
        if spawned.is_err() {
            log::warn!("cannot start a host probe thread");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_of_qemu_system_instances_only() {
        for ok in [
            "qemu:///system",
            "qemu+tcp://10.0.0.2/system",
            "qemu+tcp://127.0.0.1:26501/system",
            "qemu+ssh://root@10.0.0.2/system",
            "qemu+unix:///system?socket=/run/h2/libvirt-sock",
            "qemu+tls://h2.example/system",
        ] {
            check_uri(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "10.0.0.2",
            "xen:///system",
            "test:///default",
            "qemu:///session",
            "qemu+tcp://10.0.0.2/",
            "qemu+tcp://10.0.0.2/system ",
        ] {
            assert!(check_uri(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn server_part_of_a_uri() {
        assert_eq!(server_of("qemu:///system"), None);
        assert_eq!(
            server_of("qemu+ssh://root@10.0.0.2/system").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            server_of("qemu+tcp://127.0.0.1:26501/system").as_deref(),
            Some("127.0.0.1:26501")
        );
        assert_eq!(server_of("qemu+unix:///system?socket=/x"), None);
    }
}
