//! Placement: which host a new instance goes to.
//!
//! Filter, then weigh, then reserve. A host passes when it is enabled (an admin's pin may name a
//! host in maintenance), online (its last probe reached it), has every bridge the instance's
//! NICs need, and has room: its reservations (`vcpus_used`, `memory_used_mib`) plus what is
//! asked stay within its limits (`limits`: its CPUs times `placement.cpu_allocation_ratio`, its
//! memory less `reserved_host_memory_mib` times `memory_allocation_ratio`, or an admin's
//! capacity in their place). The hosts that pass are weighed (`placement.weigher`: `spread`
//! puts the instance where most memory is free, `pack` where least is), and the first whose
//! compare-and-set reservation wins takes it (`db::hosts::reserve`), in the transaction that
//! inserts the instance row: two creates racing for the last room, in one process or two,
//! never both get it; the loser tries the next host.
//!
//! Nothing fits: 409 `no_valid_host`, saying per host why not. Every host in service (not in
//! maintenance) fails only because it does not answer: 503 `libvirt_unavailable` (an outage,
//! worth a retry).

use super::Ctx;
use crate::config::{PlacementConfig, Weigher};
use crate::db::hosts::{self as q, Host};
use crate::db::DbConn;
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{HostId, HostStatus};

/// What an instance needs of its host.
#[derive(Debug, Clone, Default)]
pub struct Need {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Bridges its NICs plug into.
    pub bridges: Vec<String>,
}

/// What placement allows on a host in all: (vCPUs, memory MiB).
pub fn limits(h: &Host, cfg: &PlacementConfig) -> (u64, u64) {
    let cpus = h.cpu_capacity.unwrap_or(h.cpus);
    let memory = match h.memory_capacity_mib {
        Some(m) => m,
        None => h.memory_mib.saturating_sub(cfg.reserved_host_memory_mib),
    };
    (
        (f64::from(cpus) * cfg.cpu_allocation_ratio).floor() as u64,
        (memory as f64 * cfg.memory_allocation_ratio).floor() as u64,
    )
}

/// Why a host fails a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    Disabled,
    Offline(String),
    NoBridge(String),
    Cpu { free: u64, limit: u64 },
    Memory { free: u64, limit: u64 },
}

impl Unfit {
    fn offline(&self) -> bool {
        matches!(self, Unfit::Offline(_))
    }
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Disabled => write!(f, "disabled (maintenance)"),
            Unfit::Offline(why) => write!(f, "offline ({why})"),
            Unfit::NoBridge(b) => write!(f, "has no bridge {b}"),
            Unfit::Cpu { free, limit } => write!(f, "{free} of {limit} vCPUs free"),
            Unfit::Memory { free, limit } => write!(f, "{free} of {limit} MiB free"),
        }
    }
}

/// The first filter `h` fails for `need` (`pinned`: an admin named it, maintenance or not).
pub fn unfit(h: &Host, need: &Need, cfg: &PlacementConfig, pinned: bool) -> Option<Unfit> {
    if h.status != HostStatus::Enabled && !pinned {
        return Some(Unfit::Disabled);
    }
    if !h.online {
        let why = h.error_message.clone();
        return Some(Unfit::Offline(
            why.unwrap_or_else(|| "not reached yet".into()),
        ));
    }
    if !need.bridges.is_empty() {
        let has = super::hosts::strings(&h.bridges);
        if let Some(b) = need.bridges.iter().find(|b| !has.contains(b)) {
            return Some(Unfit::NoBridge(b.clone()));
        }
    }
    let (vcpus, memory) = limits(h, cfg);
    let free_vcpus = vcpus.saturating_sub(h.vcpus_used.into());
    if free_vcpus < u64::from(need.vcpus) {
        return Some(Unfit::Cpu {
            free: free_vcpus,
            limit: vcpus,
        });
    }
    let free_memory = memory.saturating_sub(h.memory_used_mib);
    if free_memory < need.memory_mib {
        return Some(Unfit::Memory {
            free: free_memory,
            limit: memory,
        });
    }
    None
}

/// The hosts that can take `need`, best first, or why each cannot (pure: the unit tests and
/// the benchmark call it on rows of their own).
pub fn rank<'a>(
    hosts: &'a [Host],
    need: &Need,
    cfg: &PlacementConfig,
    pin: Option<&HostId>,
) -> Result<Vec<&'a Host>, Vec<(&'a Host, Unfit)>> {
    rank_except(hosts, need, cfg, pin, None)
}

/// `rank` without the host `except` (where a migrating instance is).
pub fn rank_except<'a>(
    hosts: &'a [Host],
    need: &Need,
    cfg: &PlacementConfig,
    pin: Option<&HostId>,
    except: Option<&HostId>,
) -> Result<Vec<&'a Host>, Vec<(&'a Host, Unfit)>> {
    let mut fit = vec![];
    let mut unfit_ = vec![];
    for h in hosts {
        if pin.is_some_and(|p| *p != h.host_id) || except == Some(&h.host_id) {
            continue;
        }
        match unfit(h, need, cfg, pin.is_some()) {
            None => fit.push(h),
            Some(why) => unfit_.push((h, why)),
        }
    }
    if fit.is_empty() {
        return Err(unfit_);
    }
    let free = |h: &Host| {
        let (v, m) = limits(h, cfg);
        (
            m.saturating_sub(h.memory_used_mib),
            v.saturating_sub(h.vcpus_used.into()),
        )
    };
    match cfg.weigher {
        Weigher::Spread => {
            fit.sort_by(|a, b| free(b).cmp(&free(a)).then(a.host_id.cmp(&b.host_id)))
        }
        Weigher::Pack => fit.sort_by(|a, b| free(a).cmp(&free(b)).then(a.host_id.cmp(&b.host_id))),
    }
    Ok(fit)
}

/// Where nothing fits: the 409 naming every host with its reason, or the 503 when every host
/// fails only because it does not answer.
fn refusal(need: &Need, why: &[(&Host, Unfit)], pin: Option<&HostId>) -> ApiError {
    if let Some(p) = pin {
        if why.is_empty() {
            return super::not_found::<Host>(p);
        }
    }
    let each = why
        .iter()
        .map(|(h, u)| format!("{} ({}): {u}", h.host_id, h.host_name))
        .collect::<Vec<_>>()
        .join("; ");
    let asked = format!("{} vCPUs and {} MiB", need.vcpus, need.memory_mib);
    // Hosts in maintenance aside, no host answers: an outage.
    let serving: Vec<&Unfit> = why
        .iter()
        .map(|(_, u)| u)
        .filter(|u| **u != Unfit::Disabled)
        .collect();
    if !serving.is_empty() && serving.iter().all(|u| u.offline()) {
        return ApiError::unavailable(
            Backend::Libvirt,
            format!("no host answers to place {asked} on: {each}"),
        );
    }
    if why.is_empty() {
        return ApiError::conflict(
            ErrorCode::NoValidHost,
            format!("no host can take {asked}: there are no hosts"),
        );
    }
    ApiError::conflict(
        ErrorCode::NoValidHost,
        format!("no host can take {asked}: {each}"),
    )
}

/// Chooses a host for `need` and reserves it there, in the caller's transaction (which then
/// inserts the instance row naming it). A host that lost its room to a concurrent create
/// between the read and the compare-and-set is skipped for the next; when every candidate
/// lost, the hosts are read again (a few times).
pub fn reserve(ctx: &Ctx, conn: &mut DbConn, need: &Need, pin: Option<&HostId>) -> ApiResult<Host> {
    reserve_except(ctx, conn, need, pin, None)
}

/// `reserve` on any host but `except` (a migration's target).
pub fn reserve_except(
    ctx: &Ctx,
    conn: &mut DbConn,
    need: &Need,
    pin: Option<&HostId>,
    except: Option<&HostId>,
) -> ApiResult<Host> {
    let cfg = &ctx.cfg.placement;
    for _ in 0..RETRIES {
        let hosts = q::all(conn)?;
        let ranked =
            rank_except(&hosts, need, cfg, pin, except).map_err(|why| refusal(need, &why, pin))?;
        for h in ranked {
            let lim = limits(h, cfg);
            if q::reserve(
                conn,
                &h.host_id,
                need.vcpus,
                need.memory_mib,
                lim,
                pin.is_none(),
            )? {
                return Ok(h.clone());
            }
        }
    }
    Err(ApiError::conflict(
        ErrorCode::NoValidHost,
        format!(
            "no host could be reserved for {} vCPUs and {} MiB: concurrent creates took the room {RETRIES} times; retry",
            need.vcpus, need.memory_mib
        ),
    ))
}

/// How many times `reserve` reads the hosts again after losing every race.
const RETRIES: usize = 5;

/// Changes an instance's reservation on its host from `was` to `now` (vCPUs, MiB), in the
/// caller's transaction: growing is a compare-and-set against the host's limits (maintenance
/// or not: the instance is there already), shrinking always succeeds.
pub fn resize(
    ctx: &Ctx,
    conn: &mut DbConn,
    host: &HostId,
    was: (u32, u64),
    now: (u32, u64),
) -> ApiResult<()> {
    let h = super::load::<Host>(conn, host)?;
    q::release(conn, host, was.0, was.1)?;
    let lim = limits(&h, &ctx.cfg.placement);
    if q::reserve(conn, host, now.0, now.1, lim, false)? {
        return Ok(());
    }
    Err(ApiError::conflict(
        ErrorCode::NoValidHost,
        format!(
            "host {host} ({}) has no room for {} vCPUs and {} MiB (limits {} vCPUs, {} MiB; {} and {} reserved by others)",
            h.host_name,
            now.0,
            now.1,
            lim.0,
            lim.1,
            h.vcpus_used.saturating_sub(was.0),
            h.memory_used_mib.saturating_sub(was.1)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, cpus: u32, memory_mib: u64, used: (u32, u64)) -> Host {
        Host {
            host_id: HostId::new(id),
            host_name: id.into(),
            uri: format!("qemu+tcp://{id}/system"),
            address: "10.0.0.1".into(),
            host_uuid: None,
            status: HostStatus::Enabled,
            online: true,
            last_contact: Some(1),
            error_message: None,
            arch: "x86_64".into(),
            cpu_model: String::new(),
            cpu_sockets: 1,
            cpu_cores: cpus,
            cpu_threads: 1,
            cpus,
            memory_mib,
            memory_free_mib: memory_mib,
            libvirt_version: String::new(),
            qemu_version: String::new(),
            machine_types: "[]".into(),
            firmware: "[]".into(),
            kvm: false,
            cpu_capacity: None,
            memory_capacity_mib: None,
            vcpus_used: used.0,
            memory_used_mib: used.1,
            bridges: r#"["br0"]"#.into(),
            tags: "[]".into(),
            create_time: 1,
            update_time: 1,
        }
    }

    fn cfg(weigher: Weigher) -> PlacementConfig {
        PlacementConfig {
            cpu_allocation_ratio: 2.0,
            memory_allocation_ratio: 1.0,
            reserved_host_memory_mib: 1024,
            weigher,
        }
    }

    fn need(vcpus: u32, memory_mib: u64) -> Need {
        Need {
            vcpus,
            memory_mib,
            bridges: vec!["br0".into()],
        }
    }

    fn ids(r: &[&Host]) -> Vec<String> {
        r.iter().map(|h| h.host_id.to_string()).collect()
    }

    #[test]
    fn limits_take_the_ratios_the_reserve_and_an_admins_capacity() {
        let c = cfg(Weigher::Spread);
        let mut h = host("a", 4, 9216, (0, 0));
        assert_eq!(limits(&h, &c), (8, 8192));
        h.cpu_capacity = Some(1);
        h.memory_capacity_mib = Some(2048);
        assert_eq!(limits(&h, &c), (2, 2048));
        // Less memory than the reserve: nothing to place, no underflow.
        let tiny = host("b", 1, 512, (0, 0));
        assert_eq!(limits(&tiny, &c).1, 0);
    }

    #[test]
    fn spread_takes_the_most_free_memory_pack_the_least() {
        let hosts = [
            host("a", 8, 9216, (2, 6000)),
            host("b", 8, 9216, (2, 1000)),
            host("c", 8, 9216, (2, 3000)),
        ];
        let n = need(1, 512);
        let spread = rank(&hosts, &n, &cfg(Weigher::Spread), None).unwrap();
        assert_eq!(ids(&spread), ["b", "c", "a"]);
        let pack = rank(&hosts, &n, &cfg(Weigher::Pack), None).unwrap();
        assert_eq!(ids(&pack), ["a", "c", "b"]);
    }

    #[test]
    fn filters_say_why_per_host() {
        let mut off = host("off", 8, 9216, (0, 0));
        off.online = false;
        off.error_message = Some("connection refused".into());
        let mut maint = host("maint", 8, 9216, (0, 0));
        maint.status = HostStatus::Disabled;
        let mut nobr = host("nobr", 8, 9216, (0, 0));
        nobr.bridges = "[]".into();
        let full_cpu = host("cpu", 1, 9216, (2, 0));
        let full_mem = host("mem", 8, 2048, (0, 768));
        let hosts = [off, maint, nobr, full_cpu, full_mem];
        let why = rank(&hosts, &need(1, 512), &cfg(Weigher::Spread), None).unwrap_err();
        let said: Vec<String> = why
            .iter()
            .map(|(h, u)| format!("{}: {u}", h.host_id))
            .collect();
        assert_eq!(
            said,
            [
                "off: offline (connection refused)",
                "maint: disabled (maintenance)",
                "nobr: has no bridge br0",
                "cpu: 0 of 2 vCPUs free",
                "mem: 256 of 1024 MiB free",
            ]
        );
        let e = refusal(&need(1, 512), &why, None);
        assert_eq!(e.code(), ErrorCode::NoValidHost);
        // Only unreachable hosts: an outage, not a lack of room.
        let e = refusal(&need(1, 512), &why[..1], None);
        assert_eq!(e.code().status(), 503);
    }

    #[test]
    fn a_pin_names_one_host_even_in_maintenance_but_not_past_its_room() {
        let mut maint = host("maint", 8, 9216, (0, 0));
        maint.status = HostStatus::Disabled;
        let hosts = [host("a", 8, 9216, (0, 0)), maint];
        let c = cfg(Weigher::Spread);
        let pin = HostId::new("maint");
        assert_eq!(
            ids(&rank(&hosts, &need(1, 512), &c, Some(&pin)).unwrap()),
            ["maint"]
        );
        let why = rank(&hosts, &need(64, 512), &c, Some(&pin)).unwrap_err();
        assert_eq!(why.len(), 1);
        let unknown = HostId::new("nope");
        let why = rank(&hosts, &need(1, 512), &c, Some(&unknown)).unwrap_err();
        assert_eq!(
            refusal(&need(1, 512), &why, Some(&unknown)).code(),
            ErrorCode::HostNotFound
        );
    }
}
