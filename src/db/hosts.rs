//! Rows of `host`: the hypervisors instances run on, with what their last probe found.

use super::schema::{host, instance};
use crate::model::{HostId, HostStatus};
use diesel::prelude::*;

#[derive(Debug, Clone, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = host)]
#[diesel(check_for_backend(diesel::mysql::Mysql))]
pub struct Host {
    pub host_id: HostId,
    pub host_name: String,
    pub uri: String,
    /// What instances on it show as `host_ip`.
    pub address: String,
    pub host_uuid: Option<String>,
    pub status: HostStatus,
    pub online: bool,
    pub last_contact: Option<u64>,
    /// Why the last probe failed (`None` while it answers).
    pub error_message: Option<String>,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_sockets: u32,
    pub cpu_cores: u32,
    pub cpu_threads: u32,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    pub libvirt_version: String,
    pub qemu_version: String,
    /// JSON array of strings.
    pub machine_types: String,
    /// JSON array of strings.
    pub firmware: String,
    pub kvm: bool,
    /// An admin's capacity in place of `cpus` (`None`: `cpus`).
    pub cpu_capacity: Option<u32>,
    /// An admin's capacity in place of `memory_mib` (`None`: `memory_mib`).
    pub memory_capacity_mib: Option<u64>,
    /// What placement reserved for the instances here (their rows' sum).
    pub vcpus_used: u32,
    pub memory_used_mib: u64,
    /// JSON array: the configured bridges the host has.
    pub bridges: String,
    /// JSON array of strings.
    pub tags: String,
    pub create_time: u64,
    pub update_time: u64,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = host)]
pub struct HostForm {
    pub host_id: HostId,
    pub host_name: String,
    pub uri: String,
    pub address: String,
    pub status: HostStatus,
    pub tags: String,
    pub cpu_capacity: Option<u32>,
    pub memory_capacity_mib: Option<u64>,
    pub create_time: u64,
}

/// What a probe that reached the host writes (all facts; they change when libvirt or QEMU is
/// upgraded, memory free at every probe).
#[derive(Debug, Clone, AsChangeset)]
#[diesel(table_name = host)]
pub struct Contact {
    pub host_uuid: Option<String>,
    pub online: bool,
    pub last_contact: Option<u64>,
    pub error_message: Option<Option<String>>,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_sockets: u32,
    pub cpu_cores: u32,
    pub cpu_threads: u32,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    pub libvirt_version: String,
    pub qemu_version: String,
    pub machine_types: String,
    pub firmware: String,
    pub kvm: bool,
    pub bridges: String,
    pub update_time: u64,
}

/// What an admin may change; `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = host)]
pub struct HostUpdate {
    pub host_name: Option<String>,
    pub address: Option<String>,
    pub tags: Option<String>,
    pub cpu_capacity: Option<Option<u32>>,
    pub memory_capacity_mib: Option<Option<u64>>,
    pub update_time: Option<u64>,
}

pub fn by_uri(conn: &mut MysqlConnection, uri: &str) -> QueryResult<Option<Host>> {
    host::table
        .filter(host::uri.eq(uri))
        .select(Host::as_select())
        .first(conn)
        .optional()
}

/// The host with this libvirt host UUID, but `except`.
pub fn by_uuid(
    conn: &mut MysqlConnection,
    uuid: &str,
    except: &HostId,
) -> QueryResult<Option<Host>> {
    host::table
        .filter(host::host_uuid.eq(uuid))
        .filter(host::host_id.ne(except))
        .select(Host::as_select())
        .first(conn)
        .optional()
}

pub fn contact(conn: &mut MysqlConnection, id: &HostId, c: &Contact) -> QueryResult<usize> {
    diesel::update(host::table.find(id)).set(c).execute(conn)
}

/// A probe that did not reach the host: offline, saying why (the facts stay as last read).
pub fn lost(conn: &mut MysqlConnection, id: &HostId, why: &str, now: u64) -> QueryResult<usize> {
    diesel::update(host::table.find(id))
        .set((
            host::online.eq(false),
            host::error_message.eq(Some(crate::db::fit_message(why))),
            host::update_time.eq(now),
        ))
        .execute(conn)
}

/// A probe that reached it and found only the free memory changed.
pub fn seen(
    conn: &mut MysqlConnection,
    id: &HostId,
    free_mib: u64,
    now: u64,
) -> QueryResult<usize> {
    diesel::update(host::table.find(id))
        .set((
            host::online.eq(true),
            host::last_contact.eq(Some(now)),
            host::error_message.eq(None::<String>),
            host::memory_free_mib.eq(free_mib),
        ))
        .execute(conn)
}

pub fn update(conn: &mut MysqlConnection, id: &HostId, u: &HostUpdate) -> QueryResult<usize> {
    diesel::update(host::table.find(id)).set(u).execute(conn)
}

/// Reserves `vcpus` and `memory_mib` on the host if both still fit under the limits (and, with
/// `enabled_only`, the host is enabled): one compare-and-set, so concurrent creates, in this
/// process or another, never take more than the limits. Runs in the caller's transaction
/// (which inserts or changes the instance row it is for). Returns whether it reserved.
pub fn reserve(
    conn: &mut MysqlConnection,
    id: &HostId,
    vcpus: u32,
    memory_mib: u64,
    limits: (u64, u64),
    enabled_only: bool,
) -> QueryResult<bool> {
    let (Some(vcpus_max), Some(memory_max)) = (
        limits.0.checked_sub(vcpus.into()),
        limits.1.checked_sub(memory_mib),
    ) else {
        return Ok(false);
    };
    let vcpus_max = u32::try_from(vcpus_max).unwrap_or(u32::MAX);
    let mut q = diesel::update(host::table)
        .filter(host::host_id.eq(id))
        .filter(host::vcpus_used.le(vcpus_max))
        .filter(host::memory_used_mib.le(memory_max))
        .into_boxed();
    if enabled_only {
        q = q.filter(host::status.eq(HostStatus::Enabled));
    }
    let n = q
        .set((
            host::vcpus_used.eq(host::vcpus_used + vcpus),
            host::memory_used_mib.eq(host::memory_used_mib + memory_mib),
        ))
        .execute(conn)?;
    Ok(n == 1)
}

/// Counts an instance found running on a host behind placement's back (moved outside
/// api-web): no capacity check, it is there already.
pub fn add(
    conn: &mut MysqlConnection,
    id: &HostId,
    vcpus: u32,
    memory_mib: u64,
) -> QueryResult<usize> {
    diesel::update(host::table.find(id))
        .set((
            host::vcpus_used.eq(host::vcpus_used + vcpus),
            host::memory_used_mib.eq(host::memory_used_mib + memory_mib),
        ))
        .execute(conn)
}

/// Gives back what `reserve` took (an instance row deleted or moved away); never below 0.
pub fn release(
    conn: &mut MysqlConnection,
    id: &HostId,
    vcpus: u32,
    memory_mib: u64,
) -> QueryResult<usize> {
    use diesel::sql_types::{Text, Unsigned};
    diesel::sql_query(
        "UPDATE host SET vcpus_used = IF(vcpus_used > ?, vcpus_used - ?, 0), \
           memory_used_mib = IF(memory_used_mib > ?, memory_used_mib - ?, 0) \
         WHERE host_id = ?",
    )
    .bind::<Unsigned<diesel::sql_types::Integer>, _>(vcpus)
    .bind::<Unsigned<diesel::sql_types::Integer>, _>(vcpus)
    .bind::<Unsigned<diesel::sql_types::BigInt>, _>(memory_mib)
    .bind::<Unsigned<diesel::sql_types::BigInt>, _>(memory_mib)
    .bind::<Text, _>(id.as_str())
    .execute(conn)
}

/// A host whose reservations `resum` set to its instances' sum: (vCPUs, MiB) before, after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resummed {
    pub host_id: HostId,
    pub was: (u64, u64),
    pub now: (u64, u64),
}

/// Hosts whose reservations are not their instance rows' sum, set to it (a repair: every
/// path that changes an instance row changes its host's reservation in the same
/// transaction, so only a change behind api-web's back leaves them apart). Returns the hosts
/// repaired.
pub fn resum(conn: &mut MysqlConnection) -> QueryResult<Vec<Resummed>> {
    // A migration holds room on its target that no row names yet: not drift. Compared again
    // once no instance migrates.
    let migrating: i64 = instance::table
        .filter(instance::status.eq(crate::model::InstanceStatus::Migrating))
        .count()
        .get_result(conn)?;
    if migrating > 0 {
        return Ok(vec![]);
    }
    let hosts = all(conn)?;
    let ids: Vec<HostId> = hosts.iter().map(|h| h.host_id.clone()).collect();
    let sums = allocated(conn, &ids)?;
    let mut out = vec![];
    for h in hosts {
        let a = sums.get(&h.host_id).copied().unwrap_or_default();
        let was = (u64::from(h.vcpus_used), h.memory_used_mib);
        if was == (a.vcpus, a.memory_mib) {
            continue;
        }
        // Compare-and-set on what was read: a create meanwhile changed both, and is right.
        let n = diesel::update(host::table)
            .filter(host::host_id.eq(&h.host_id))
            .filter(host::vcpus_used.eq(h.vcpus_used))
            .filter(host::memory_used_mib.eq(h.memory_used_mib))
            .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
                "(SELECT COALESCE(SUM(cpu), 0) FROM instance WHERE host_id = host.host_id) = {} \
                 AND (SELECT COALESCE(SUM(memory), 0) FROM instance WHERE host_id = host.host_id) = {} \
                 AND NOT EXISTS (SELECT 1 FROM instance WHERE status = '{}')",
                a.vcpus,
                a.memory_mib,
                crate::model::InstanceStatus::Migrating.as_str()
            )))
            .set((
                host::vcpus_used.eq(u32::try_from(a.vcpus).unwrap_or(u32::MAX)),
                host::memory_used_mib.eq(a.memory_mib),
            ))
            .execute(conn)?;
        if n == 1 {
            out.push(Resummed {
                host_id: h.host_id,
                was,
                now: (a.vcpus, a.memory_mib),
            });
        }
    }
    Ok(out)
}

/// What runs on each host: instances, their vCPUs and memory (MiB), from the instance rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocated {
    pub instances: u64,
    pub vcpus: u64,
    pub memory_mib: u64,
}

#[derive(QueryableByName)]
struct AllocatedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    host_id: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    instances: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    vcpus: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    memory_mib: i64,
}

/// `Allocated` of the given hosts (one query for a whole list page).
pub fn allocated(
    conn: &mut MysqlConnection,
    ids: &[HostId],
) -> QueryResult<std::collections::HashMap<HostId, Allocated>> {
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let marks = vec!["?"; ids.len()].join(", ");
    let mut q = diesel::sql_query(format!(
        "SELECT host_id, COUNT(*) AS instances, CAST(COALESCE(SUM(cpu), 0) AS SIGNED) AS vcpus, \
           CAST(COALESCE(SUM(memory), 0) AS SIGNED) AS memory_mib \
         FROM instance WHERE host_id IN ({marks}) GROUP BY host_id"
    ))
    .into_boxed();
    for id in ids {
        q = q.bind::<diesel::sql_types::Text, _>(id.as_str().to_string());
    }
    let rows: Vec<AllocatedRow> = q.load(conn)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(rows
        .into_iter()
        .map(|r| {
            let a = Allocated {
                instances: n(r.instances),
                vcpus: n(r.vcpus),
                memory_mib: n(r.memory_mib),
            };
            (HostId::new(r.host_id), a)
        })
        .collect())
}

/// Deletes the host if no instance row names it, under the host row's lock (what a placement
/// onto it takes too): true if deleted; the caller runs it in a transaction.
pub fn delete_if_empty(conn: &mut MysqlConnection, id: &HostId) -> QueryResult<Option<bool>> {
    let locked: Option<HostId> = host::table
        .find(id)
        .select(host::host_id)
        .for_update()
        .first(conn)
        .optional()?;
    if locked.is_none() {
        return Ok(None);
    }
    let n: i64 = instance::table
        .filter(instance::host_id.eq(id))
        .count()
        .get_result(conn)?;
    if n > 0 {
        return Ok(Some(false));
    }
    diesel::delete(host::table.find(id)).execute(conn)?;
    Ok(Some(true))
}

crate::db::table_queries!(
    host,
    "host",
    Host,
    HostForm,
    HostId,
    HostStatus,
    id = "host_id",
    name = "host_name"
);
