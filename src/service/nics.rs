//! Network interfaces: a MAC (and optionally an IPv4 address) on a Linux bridge, attached to
//! instances as virtio NICs through the same hot-plug machinery as volumes (`hotplug`).
//!
//! MACs are generated as `network.mac_prefix` + 3 random octets (locally administered unicast),
//! unique by a unique index with retry. IPs come from the bridge's pool in config (next free),
//! or are given and checked against it. api-web only records addresses: no DHCP, no traffic.

use super::hotplug::{self, Pluggable};
use super::state::nic as st;
use super::{Ctx, Paging};
use crate::config::{parse_mac_prefix, valid_bridge_name};
use crate::db::nics::Nic;
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::virt::{DeviceKey, Fault, VirtError};
use crate::xml::devices::{to_xml, Interface};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

pub struct NewNic {
    pub name: String,
    pub bridge: Option<String>,
    pub mac: Option<String>,
    pub ip: Option<String>,
    pub describe: String,
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "network_interface_not_found",
        format!("network interface {id} does not exist"),
    )
}

fn load(conn: &mut DbConn, id: &str) -> ApiResult<Nic> {
    db::nics::get(conn, id)?.ok_or_else(|| not_found(id))
}

fn check(from: &str, to: &str) -> ApiResult<()> {
    if st::valid_transition(from, to) {
        Ok(())
    } else {
        Err(ApiError::Internal(format!(
            "illegal NIC transition {from} -> {to}"
        )))
    }
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

/// Which unique key a duplicate hit (MySQL names it in the message).
fn duplicate_of(e: &diesel::result::Error) -> Option<&'static str> {
    match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            info,
        ) => {
            let m = info.message();
            Some(if m.contains("uk_nic_mac") {
                "mac"
            } else if m.contains("uk_nic_bridge_ip") {
                "ip"
            } else {
                "id"
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
            "bridge_not_allowed",
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
                "ip_outside_pool",
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
    (u32::from(p.first)..=u32::from(p.last))
        .map(|n| Ipv4Addr::from(n).to_string())
        .find(|a| !used.contains(a) && !skip.contains(a))
        .map(Some)
        .ok_or_else(|| {
            ApiError::conflict(
                "pool_exhausted",
                format!(
                    "the address pool of bridge {bridge} ({} - {}) has no free address",
                    p.first, p.last
                ),
            )
        })
}

/// Records a NIC. `status`/`instance_id` let instance create make one already reserved.
pub fn insert_new(
    ctx: &Ctx,
    conn: &mut DbConn,
    req: NewNic,
    reserved_for: Option<&str>,
) -> ApiResult<Nic> {
    let bridge = bridge_for(ctx, req.bridge.as_deref())?;
    let given_mac = req.mac.as_deref().map(parse_mac).transpose()?;
    if let Some(m) = &given_mac {
        if db::nics::mac_taken(conn, m)? {
            return Err(ApiError::conflict(
                "mac_in_use",
                format!("mac {m} is already used by another NIC"),
            ));
        }
    }
    let given_ip = req
        .ip
        .as_deref()
        .map(|ip| check_ip(ctx, &bridge, ip))
        .transpose()?;
    if let Some(ip) = &given_ip {
        if db::nics::ip_taken(conn, &bridge, ip)? {
            return Err(ApiError::conflict(
                "ip_in_use",
                format!("ip {ip} is already used on bridge {bridge}"),
            ));
        }
    }
    let prefix = parse_mac_prefix(&ctx.cfg.network.mac_prefix)
        .ok_or_else(|| ApiError::Internal("network.mac_prefix is invalid".into()))?;
    let mut lost_ips = HashSet::new();
    for _ in 0..16 {
        let now = db::now();
        let ip = match &given_ip {
            Some(ip) => Some(ip.clone()),
            None => next_free_ip(ctx, conn, &bridge, &lost_ips)?,
        };
        let row = Nic {
            network_interface_id: ids::new_id(ids::NIC),
            network_interface_name: req.name.clone(),
            mac: given_mac.clone().unwrap_or_else(|| random_mac(prefix)),
            ip: ip.clone(),
            bridge: bridge.clone(),
            status: if reserved_for.is_some() {
                st::ATTACHING
            } else {
                st::AVAILABLE
            }
            .into(),
            instance_id: reserved_for.map(str::to_string),
            describe: req.describe.clone(),
            error_message: None,
            attach_time: None,
            create_time: now,
            update_time: now,
        };
        match db::nics::insert(conn, &row) {
            Ok(()) => return Ok(row),
            Err(e) => match duplicate_of(&e) {
                // Another request took the given MAC or IP between our check and the insert.
                Some("mac") if given_mac.is_some() => {
                    return Err(ApiError::conflict(
                        "mac_in_use",
                        format!("mac {} is already used", row.mac),
                    ))
                }
                Some("ip") if given_ip.is_some() => {
                    return Err(ApiError::conflict(
                        "ip_in_use",
                        format!("ip {} is already used", ip.unwrap_or_default()),
                    ))
                }
                // A generated MAC or id collided, or the pool's next address was just taken: retry.
                Some("ip") => {
                    lost_ips.insert(ip.unwrap_or_default());
                }
                Some(_) => {}
                None => return Err(e.into()),
            },
        }
    }
    Err(ApiError::Internal(
        "could not find a free MAC/IP after 16 tries".into(),
    ))
}

pub fn create(ctx: &Ctx, req: NewNic) -> ApiResult<Nic> {
    let mut conn = ctx.conn()?;
    insert_new(ctx, &mut conn, req, None)
}

pub fn list(
    ctx: &Ctx,
    name_contains: Option<&str>,
    status: Option<&str>,
    instance_id: Option<&str>,
    paging: Paging,
) -> ApiResult<(i64, Vec<Nic>, HashMap<String, String>)> {
    if let Some(s) = status {
        if !st::ALL.contains(&s) {
            return Err(ApiError::invalid(format!(
                "status: {s:?} is not one of {}",
                st::ALL.join(", ")
            )));
        }
    }
    let mut conn = ctx.conn()?;
    let (total, rows) = db::nics::list(
        &mut conn,
        name_contains,
        status,
        instance_id,
        paging.to_db(),
    )?;
    let ids: Vec<String> = rows.iter().filter_map(|n| n.instance_id.clone()).collect();
    let names = db::instances::names_of(&mut conn, &ids)?;
    Ok((total, rows, names))
}

fn not_available(n: &Nic) -> ApiError {
    match n.status.as_str() {
        st::ATTACHED | st::ATTACHING | st::DETACHING => ApiError::conflict(
            "network_interface_in_use",
            format!(
                "network interface {} is {} on instance {}",
                n.network_interface_id,
                n.status,
                n.instance_id.as_deref().unwrap_or("?")
            ),
        ),
        _ => ApiError::conflict(
            "network_interface_busy",
            format!(
                "network interface {} is {}",
                n.network_interface_id, n.status
            ),
        ),
    }
}

pub fn interface_xml(n: &Nic) -> ApiResult<String> {
    to_xml(&Interface::bridge(&n.bridge, &n.mac))
        .map_err(|e| ApiError::Internal(format!("interface XML: {e}")))
}

impl Pluggable for Nic {
    const LABEL: &'static str = "network interface";
    const ATTACHING: &'static str = st::ATTACHING;
    const ATTACHED: &'static str = st::ATTACHED;
    const DETACHING: &'static str = st::DETACHING;
    const CODE_NOT_ATTACHED: &'static str = "network_interface_not_attached";
    const CODE_ATTACHED_ELSEWHERE: &'static str = "network_interface_attached_elsewhere";

    fn id(&self) -> &str {
        &self.network_interface_id
    }
    fn status(&self) -> &str {
        &self.status
    }
    fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }
    fn load(conn: &mut DbConn, id: &str) -> ApiResult<Self> {
        load(conn, id)
    }
    fn device(&self, _ctx: &Ctx) -> ApiResult<(String, DeviceKey)> {
        Ok((interface_xml(self)?, DeviceKey::Mac(self.mac.clone())))
    }
    fn not_available(&self) -> ApiError {
        not_available(self)
    }
    fn transition(
        conn: &mut DbConn,
        id: &str,
        from: &str,
        to: &str,
        msg: Option<&str>,
    ) -> ApiResult<bool> {
        if from != to {
            check(from, to)?;
        }
        Ok(db::nics::transition(conn, id, from, to, msg, db::now())?)
    }
    fn mark_attached(conn: &mut DbConn, id: &str) -> ApiResult<bool> {
        check(st::ATTACHING, st::ATTACHED)?;
        Ok(db::nics::attached(conn, id, db::now())?)
    }
    fn release(conn: &mut DbConn, id: &str, from: &str, msg: Option<&str>) -> ApiResult<bool> {
        check(from, st::AVAILABLE)?;
        Ok(db::nics::release(conn, id, from, msg, db::now())?)
    }
    /// A host-side failure to plug a bridge NIC whose bridge the hypervisor does not have: a
    /// 422 naming the bridge (decided on libvirt's error code and its interface lookup).
    fn explain(&self, ctx: &Ctx, e: &VirtError) -> Option<ApiError> {
        if e.fault() != Some(Fault::System) || ctx.hv.has_interface(&self.bridge).ok()? {
            return None;
        }
        Some(ApiError::unprocessable(
            "bridge_missing",
            format!(
                "bridge {} does not exist on the hypervisor ({})",
                self.bridge,
                e.message().trim().trim_end_matches('.')
            ),
        ))
    }
    fn after_change(conn: &mut DbConn, instance_id: &str) -> ApiResult<()> {
        Ok(db::instances::refresh_ip(conn, instance_id)?)
    }
}

pub fn attach(ctx: &Ctx, nic_id: &str, instance_id: &str) -> ApiResult<Nic> {
    let mut conn = ctx.conn()?;
    let n = load(&mut conn, nic_id)?;
    hotplug::instance_for_attach(&mut conn, instance_id)?;
    if n.status != st::AVAILABLE {
        return Err(not_available(&n));
    }
    check(st::AVAILABLE, st::ATTACHING)?;
    if !db::nics::reserve(&mut conn, nic_id, instance_id, db::now())? {
        return Err(not_available(&load(&mut conn, nic_id)?));
    }
    hotplug::complete_attach::<Nic>(ctx, &mut conn, nic_id, instance_id)
}

pub fn detach(ctx: &Ctx, nic_id: &str, instance_id: &str) -> ApiResult<Nic> {
    let mut conn = ctx.conn()?;
    let n = load(&mut conn, nic_id)?;
    hotplug::detach_resource(ctx, &mut conn, n, instance_id)
}

pub fn delete(ctx: &Ctx, nic_id: &str) -> ApiResult<()> {
    let mut conn = ctx.conn()?;
    let n = load(&mut conn, nic_id)?;
    if !matches!(n.status.as_str(), st::AVAILABLE | st::ERROR) {
        return Err(not_available(&n));
    }
    if !db::nics::delete_in_status(&mut conn, nic_id, &n.status)? {
        return Err(not_available(&load(&mut conn, nic_id)?));
    }
    Ok(())
}

/// Start-up repair of NICs a crash left attaching or detaching (see `hotplug::reconcile`).
pub fn reconcile(ctx: &Ctx, older_than_secs: u64) -> ApiResult<usize> {
    let mut conn = ctx.conn()?;
    let cutoff = db::now().saturating_sub(older_than_secs);
    let mut stale = db::nics::stale_in_status(&mut conn, st::ATTACHING, cutoff)?;
    stale.extend(db::nics::stale_in_status(&mut conn, st::DETACHING, cutoff)?);
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
