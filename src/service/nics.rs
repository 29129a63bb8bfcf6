//! Network interfaces: a MAC (and optionally an IPv4 address) on a Linux bridge, attached to
//! instances as virtio NICs through the same hot-plug machinery as volumes (`hotplug`).
//!
//! MACs are generated as `network.mac_prefix` + 3 random octets (locally administered unicast),
//! unique by a unique index with retry. IPs come from the bridge's pool in config (next free),
//! or are given and checked against it. api-web only records addresses: no DHCP, no traffic.

use super::hotplug::{self, Pluggable};
use super::{fresh_id, load, Ctx, Resource};
use crate::config::{parse_mac_prefix, valid_bridge_name};
use crate::db::nics::{Nic, NicForm, NicUpdate};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::model::{InstanceId, Lifecycle, NicId, NicStatus as St};
use crate::virt::{DeviceKey, Fault, VirtError};
use crate::xml::devices::{to_xml, Interface};
use rand::Rng;
use std::collections::HashSet;
use std::net::Ipv4Addr;

pub struct NewNic {
    pub name: String,
    pub bridge: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub describe: String,
    /// Its project.
    pub project_id: String,
}

impl Resource for Nic {
    const NOT_FOUND: ErrorCode = ErrorCode::NetworkInterfaceNotFound;
}

/// A MAC as `aa:bb:cc:dd:ee:ff` (lowercase); `-` separators are accepted. Must be unicast and
/// not all zeros.
pub fn parse_mac(s: &str) -> ApiResult<String> {
    let bad = |why: &str| ApiError::invalid(format!("mac: {s:?} {why}"));
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
        return Err(bad("is not six two-digit hex octets"));
    }
    let mut octets = [0u8; 6];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| bad("is not hexadecimal"))?;
    }
    if octets[0] & 1 == 1 {
        return Err(bad("is a multicast address; a NIC needs a unicast one"));
    }
    if octets == [0; 6] {
        return Err(bad("is all zeros"));
    }
    Ok(octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn random_mac(prefix: [u8; 3]) -> String {
    let tail: [u8; 3] = rand::rng().random();
    prefix
        .iter()
        .chain(tail.iter())
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Which unique key an insert hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    Mac,
    Ip,
    Id,
}

/// Which unique key a duplicate hit: MySQL names the key (ours, from the migrations) in its
/// message; a duplicate of no named key is the primary key.
fn duplicate_of(e: &diesel::result::Error) -> Option<Taken> {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        ) => {
            let m = info.message();
            Some(if m.contains("uk_nic_mac") {
                Taken::Mac
            } else if m.contains("uk_nic_bridge_ip") {
                Taken::Ip
            } else {
                Taken::Id
            })
        }
        _ => None,
    }
}

/// The bridge a NIC goes on: given (and allowed by config) or the default one.
fn bridge_for(ctx: &Ctx, b: Option<&str>) -> ApiResult<String> {
    let net = &ctx.cfg.network;
    let Some(b) = b else {
        return Ok(net.default_bridge.clone());
    };
    if !valid_bridge_name(b) {
        return Err(ApiError::invalid(format!(
            "bridge: {b:?} is not an interface name (1 to 15 characters, no spaces, '/' or ':')"
        )));
    }
    if !net.bridges.iter().any(|x| x == b) {
        return Err(ApiError::unprocessable(
            ErrorCode::BridgeNotAllowed,
            format!(
                "bridge {b:?} is not one of the configured bridges: {}",
                net.bridges.join(", ")
            ),
        ));
    }
    Ok(b.to_string())
}

/// Checks a requested IP against the bridge's pool (if it has one).
fn check_ip(ctx: &Ctx, bridge: &str, ip: &str) -> ApiResult<String> {
    let addr: Ipv4Addr = ip
        .parse()
        .map_err(|_| ApiError::invalid(format!("ip: {ip:?} is not an IPv4 address")))?;
    if let Some(p) = ctx.cfg.network.pool_of(bridge) {
        if !(u32::from(p.first)..=u32::from(p.last)).contains(&u32::from(addr)) {
            return Err(ApiError::conflict(
                ErrorCode::IpOutsidePool,
                format!(
                    "ip {addr} is outside the pool of bridge {bridge} ({} - {})",
                    p.first, p.last
                ),
            ));
        }
    }
    Ok(addr.to_string())
}

/// The next free address of the bridge's pool, or None if it has no pool.
fn next_free_ip(
    ctx: &Ctx,
    conn: &mut DbConn,
    bridge: &str,
    skip: &HashSet<String>,
) -> ApiResult<Option<String>> {
    let Some(p) = ctx.cfg.network.pool_of(bridge) else {
        return Ok(None);
    };
    let used: HashSet<String> = db::nics::ips_on(conn, bridge)?.into_iter().collect();
    let mut free = (u32::from(p.first)..=u32::from(p.last))
        .map(|n| Ipv4Addr::from(n).to_string())
        .filter(|a| !used.contains(a) && !skip.contains(a));
    // The lowest free address, unless this request already lost a race for one: then a random
    // one of the next 64, so that many concurrent creates stop colliding on the same address.
    let pick = if skip.is_empty() {
        free.next()
    } else {
        let window: Vec<String> = free.take(64).collect();
        window
            .get(rand::random_range(0..window.len().max(1)))
            .cloned()
    };
    pick.map(Some).ok_or_else(|| {
        ApiError::conflict(
            ErrorCode::PoolExhausted,
            format!(
                "the address pool of bridge {bridge} ({} - {}) has no free address",
                p.first, p.last
            ),
        )
    })
}

/// What a create asked for, checked: the bridge, and the MAC and IP when given (each free now;
/// the unique keys still decide between two requests racing for it).
struct Wanted {
    bridge: String,
    mac: Option<String>,
    ip: Option<String>,
}

fn check_wanted(ctx: &Ctx, conn: &mut DbConn, req: &NewNic) -> ApiResult<Wanted> {
    let bridge = bridge_for(ctx, req.bridge.as_deref())?;
    let mac = req.mac.as_deref().map(parse_mac).transpose()?;
    if let Some(m) = &mac {
        if db::nics::mac_taken(conn, m)? {
            return Err(mac_in_use(m));
        }
    }
    let ip = req
        .ip
        .as_deref()
        .map(|ip| check_ip(ctx, &bridge, ip))
        .transpose()?;
    if let Some(ip) = &ip {
        if db::nics::ip_taken(conn, &bridge, ip)? {
            return Err(ip_in_use(ip, &bridge));
        }
    }
    Ok(Wanted { bridge, mac, ip })
}

/// Records a NIC: available, or reserved (`attaching`) for an instance being created. A
/// generated id, MAC or pool address that collides is drawn again.
pub fn insert_new(
    ctx: &Ctx,
    conn: &mut DbConn,
    req: NewNic,
    reserved_for: Option<&InstanceId>,
) -> ApiResult<Nic> {
    let want = check_wanted(ctx, conn, &req)?;
    let prefix = parse_mac_prefix(&ctx.cfg.network.mac_prefix)
        .ok_or_else(|| ApiError::Internal("network.mac_prefix is invalid".into()))?;
    let mut lost_ips = HashSet::new();
    let id = fresh_id("MAC/IP", 16, || {
        let ip = match &want.ip {
            Some(ip) => Some(ip.clone()),
            None => next_free_ip(ctx, conn, &want.bridge, &lost_ips)?,
        };
        let form = NicForm {
            network_interface_id: NicId::generate(),
            network_interface_name: req.name.clone(),
            mac: want.mac.clone().unwrap_or_else(|| random_mac(prefix)),
            ip: ip.clone(),
            bridge: want.bridge.clone(),
            status: if reserved_for.is_some() {
                St::Attaching
            } else {
                St::Available
            },
            instance_id: reserved_for.cloned(),
            describe: req.describe.clone(),
            create_time: db::now(),
            project_id: req.project_id.clone(),
            // Only instance create reserves a new NIC for an instance: its own, gone with it.
            delete_with_instance: reserved_for.is_some(),
        };
        let Err(e) = db::nics::insert(conn, &form) else {
            return Ok(Some(form.network_interface_id));
        };
        match duplicate_of(&e) {
            // Another request took the given MAC or IP between our check and the insert.
            Some(Taken::Mac) if want.mac.is_some() => Err(mac_in_use(&form.mac)),
            Some(Taken::Ip) if want.ip.is_some() => {
                Err(ip_in_use(&ip.unwrap_or_default(), &want.bridge))
            }
            // A generated MAC or id collided, or the pool's next address was just taken: retry.
            Some(Taken::Ip) => {
                lost_ips.insert(ip.unwrap_or_default());
                Ok(None)
            }
            Some(_) => Ok(None),
            None => Err(e.into()),
        }
    })?;
    // MySQL has no INSERT ... RETURNING: the row as stored (defaults, times) is read back.
    load(conn, &id)
}

fn ip_in_use(ip: &str, bridge: &str) -> ApiError {
    ApiError::conflict(
        ErrorCode::IpInUse,
        format!("ip {ip} is already used on bridge {bridge}"),
    )
}

fn mac_in_use(mac: &str) -> ApiError {
    ApiError::conflict(
        ErrorCode::MacInUse,
        format!("mac {mac} is already used by another NIC"),
    )
}

/// Makes an available NIC, within its project's NIC quota.
pub fn create(ctx: &Ctx, req: NewNic) -> ApiResult<Nic> {
    let ask = super::quotas::Ask {
        network_interfaces: 1,
        ..Default::default()
    };
    let mut conn = ctx.conn()?;
    let project = req.project_id.clone();
    super::quotas::in_transaction(&mut conn, |c| {
        super::quotas::admit(c, &project, &ask)?;
        insert_new(ctx, c, req, None)
    })
}

fn not_available(n: &Nic) -> ApiError {
    match n.status {
        St::Attached | St::Attaching | St::Detaching => ApiError::conflict(
            ErrorCode::NetworkInterfaceInUse,
            format!(
                "network interface {} is {} on instance {}",
                n.network_interface_id,
                n.status,
                n.instance_id.as_ref().map_or("?", |i| i.as_str())
            ),
        ),
        _ => ApiError::conflict(
            ErrorCode::NetworkInterfaceBusy,
            format!(
                "network interface {} is {}",
                n.network_interface_id, n.status
            ),
        ),
    }
}

pub fn interface(n: &Nic) -> Interface {
    Interface::bridge(&n.bridge, &n.mac)
}

impl Pluggable for Nic {
    const ATTACHING: St = St::Attaching;
    const ATTACHED: St = St::Attached;
    const DETACHING: St = St::Detaching;
    const CODE_NOT_ATTACHED: ErrorCode = ErrorCode::NetworkInterfaceNotAttached;
    const CODE_ATTACHED_ELSEWHERE: ErrorCode = ErrorCode::NetworkInterfaceAttachedElsewhere;

    const KIND_ATTACH: &'static str = "nic.attach";
    const KIND_DETACH: &'static str = "nic.detach";

    fn id_from(s: &str) -> NicId {
        NicId::new(s)
    }
    fn id(&self) -> &NicId {
        &self.network_interface_id
    }
    fn status(&self) -> St {
        self.status
    }
    fn instance_id(&self) -> Option<&InstanceId> {
        self.instance_id.as_ref()
    }
    fn device(&self, _ctx: &Ctx) -> ApiResult<(String, DeviceKey)> {
        let xml = to_xml(&interface(self))
            .map_err(|e| ApiError::Internal(format!("interface XML: {e}")))?;
        Ok((xml, DeviceKey::Mac(self.mac.clone())))
    }
    fn not_available(&self) -> ApiError {
        not_available(self)
    }
    fn mark_attached(conn: &mut DbConn, id: &NicId) -> ApiResult<bool> {
        St::Attaching.check(St::Attached)?;
        let done = NicUpdate::attached(db::now());
        Ok(db::nics::transition_with(conn, id, St::Attaching, &done)?)
    }
    fn release(conn: &mut DbConn, id: &NicId, from: St, msg: Option<&str>) -> ApiResult<bool> {
        from.check(St::Available)?;
        let released = NicUpdate::released(msg, db::now());
        Ok(db::nics::transition_with(conn, id, from, &released)?)
    }
    /// A host-side failure to plug a bridge NIC whose bridge the hypervisor does not have: a
    /// 422 naming the bridge (decided on libvirt's error code and its interface lookup).
    fn explain(&self, ctx: &Ctx, e: &VirtError) -> Option<ApiError> {
        if e.fault() != Some(Fault::System) {
            return None;
        }
        let hv = super::hosts::of_id(ctx, self.instance_id.as_ref()?).ok()?;
        if hv.has_interface(&self.bridge).ok()? {
            return None;
        }
        Some(ApiError::unprocessable(
            ErrorCode::BridgeMissing,
            format!(
                "bridge {} does not exist on the hypervisor ({})",
                self.bridge,
                e.message().trim().trim_end_matches('.')
            ),
        ))
    }
    fn after_change(conn: &mut DbConn, instance_id: &InstanceId) -> ApiResult<()> {
        Ok(db::instances::refresh_ip(conn, instance_id)?)
    }
}

pub fn attach(ctx: &Ctx, nic_id: &NicId, instance_id: &InstanceId) -> ApiResult<Nic> {
    let mut conn = ctx.conn()?;
    let n = load::<Nic>(&mut conn, nic_id)?;
    hotplug::instance_for_attach(&mut conn, instance_id)?;
    if n.status != St::Available {
        return Err(not_available(&n));
    }
    St::Available.check(St::Attaching)?;
    let reserve = NicUpdate::reserve(instance_id, db::now());
    if !db::nics::transition_with(&mut conn, nic_id, St::Available, &reserve)? {
        return Err(not_available(&load(&mut conn, nic_id)?));
    }
    drop(conn);
    hotplug::complete_attach::<Nic>(ctx, nic_id, instance_id)
}

pub fn detach(ctx: &Ctx, nic_id: &NicId, instance_id: &InstanceId) -> ApiResult<Nic> {
    let n = load::<Nic>(&mut ctx.conn()?, nic_id)?;
    hotplug::detach_resource(ctx, n, instance_id)
}

pub fn delete(ctx: &Ctx, nic_id: &NicId) -> ApiResult<()> {
    let mut conn = ctx.conn()?;
    let n = load::<Nic>(&mut conn, nic_id)?;
    if !matches!(n.status, St::Available | St::Error) {
        return Err(not_available(&n));
    }
    if !db::nics::delete_in_status(&mut conn, nic_id, n.status)? {
        return Err(not_available(&load(&mut conn, nic_id)?));
    }
    Ok(())
}

/// Start-up repair of NICs a crash left attaching or detaching (see `hotplug::reconcile`).
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut stale = db::nics::stale_in_status(&mut conn, St::Attaching, cutoff)?;
    stale.extend(db::nics::stale_in_status(&mut conn, St::Detaching, cutoff)?);
    hotplug::reconcile(ctx, &mut conn, stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("0A:70:69:00:00:01").unwrap(), "0a:70:69:00:00:01");
        assert_eq!(parse_mac("52-54-00-aa-bb-cc").unwrap(), "52:54:00:aa:bb:cc");
        for bad in [
            "01:00:5e:00:00:01",
            "ff:ff:ff:ff:ff:ff",
            "00:00:00:00:00:00",
            "52:54:00:aa:bb",
            "zz:54:00:aa:bb:cc",
            "5254.00aa.bbcc",
            "",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
        let m = random_mac([0x0a, 0x70, 0x69]);
        assert!(m.starts_with("0a:70:69:"));
        assert!(parse_mac(&m).is_ok());
    }
}
