//! libvirt: the only module that talks to the hypervisor.
//!
//! One connection per host, opened on first use and reopened when libvirt reports it dead.
//! Every function blocks: call them off the async executor.

mod events;
mod host;
mod migrate;

pub use events::{Change, Event};
pub use host::{Facts, Hosts};
pub use migrate::Progress;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;

/// What libvirt reported, in the terms api-web decides on (libvirt's numeric codes, never its
/// English text, which changes between versions and locales).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// No domain of that name (`VIR_ERR_NO_DOMAIN`).
    NoDomain,
    /// No host interface of that name (`VIR_ERR_NO_INTERFACE`).
    NoInterface,
    /// The host's OS refused (a tap device, a bridge, a file): `VIR_ERR_SYSTEM_ERROR`.
    System,
    /// QEMU's monitor refused or failed a command (`VIR_ERR_INTERNAL_ERROR`,
    /// `VIR_ERR_OPERATION_FAILED`), e.g. a device_del while an earlier one is pending.
    Monitor,
    /// The request does not fit the domain's state (`VIR_ERR_OPERATION_INVALID`).
    Invalid,
    /// The connection broke during the call (libvirtd stopped, keepalive timeout): whether
    /// libvirt did it is unknown; read the domain again when it answers.
    Lost,
    /// Anything else; the message says what.
    Other,
    /// Our own check after libvirt answered (a device not in the XML, XML we cannot parse).
    Unconfirmed,
}

impl Fault {
    fn of(e: &virt::error::Error) -> Fault {
        use virt::error::ErrorDomain;
        if e.domain().known() == Some(ErrorDomain::Rpc) {
            return Fault::Lost;
        }
        match e.code().known() {
            Some(ErrorNumber::Rpc | ErrorNumber::NoConnect | ErrorNumber::InvalidConn) => {
                Fault::Lost
            }
            Some(ErrorNumber::NoDomain) => Fault::NoDomain,
            Some(ErrorNumber::NoInterface) => Fault::NoInterface,
            Some(ErrorNumber::SystemError) => Fault::System,
            Some(ErrorNumber::InternalError | ErrorNumber::OperationFailed) => Fault::Monitor,
            Some(ErrorNumber::OperationInvalid) => Fault::Invalid,
            _ => Fault::Other,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt: {op} failed: {message}")]
    Op {
        op: &'static str,
        fault: Fault,
        message: String,
    },
}

impl VirtError {
    fn op(op: &'static str, e: virt::error::Error) -> VirtError {
        VirtError::Op {
            op,
            fault: Fault::of(&e),
            message: brief(e.message()),
        }
    }
    fn unconfirmed(op: &'static str, message: impl Into<String>) -> VirtError {
        VirtError::Op {
            op,
            fault: Fault::Unconfirmed,
            message: message.into(),
        }
    }
    /// The kind of failure; `None` when libvirt could not be reached at all.
    pub fn fault(&self) -> Option<Fault> {
        match self {
            VirtError::Connect { .. } => None,
            VirtError::Op { fault, .. } => Some(*fault),
        }
    }
    /// Whether libvirt may or may not have done what was asked: the connection failed (before
    /// or during the call: a call made on a connection that died after an earlier call of the
    /// same flow cannot be told apart).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.fault(), None | Some(Fault::Lost))
    }
    /// The domain does not exist.
    pub fn is_no_domain(&self) -> bool {
        self.fault() == Some(Fault::NoDomain)
    }
    /// libvirt's own words, for a user-facing message.
    pub fn message(&self) -> &str {
        match self {
            VirtError::Connect { message, .. } | VirtError::Op { message, .. } => message,
        }
    }
}

/// Longest libvirt message passed on to users (and rows).
const MESSAGE_CHARS: usize = 300;

/// libvirt's words without the XML it sometimes quotes whole (a rejected domain's definition
/// runs to kilobytes and repeats the user's own text), and at most `MESSAGE_CHARS` long.
fn brief(m: &str) -> String {
    let cut = ["<?xml", "<domain", "<disk", "<interface", "<devices"]
        .iter()
        .filter_map(|tag| m.find(tag))
        .min()
        .map(|i| format!("{} (XML left out)", m[..i].trim_end()))
        .unwrap_or_else(|| m.to_string());
    if cut.chars().count() <= MESSAGE_CHARS {
        return cut;
    }
    let mut out: String = cut.chars().take(MESSAGE_CHARS - 1).collect();
    out.push('…');
    out
}

/// Whether a domain runs. `Paused`: its QEMU process lives, its vCPUs do not run (suspended by
/// api-web or outside it, or by QEMU on an I/O error); it is active, so devices plug live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Running,
    Paused,
    Stopped,
}

impl Power {
    /// A QEMU process exists (running or paused): live XML, live hot-plug.
    pub fn is_active(self) -> bool {
        !matches!(self, Power::Stopped)
    }

    /// The power of a domain from its state.
    fn of(d: &Domain) -> Result<Power, virt::error::Error> {
        use virt::domain::DomainState as S;
        use virt::enumutil::Enum;
        let (state, _) = d.state()?;
        Ok(match state {
            Enum::Known(S::Shutoff | S::Crashed) => Power::Stopped,
            Enum::Known(S::Paused | S::PMSuspended) => Power::Paused,
            // Running, blocked, being shut down, or a state this libvirt is newer than.
            _ if d.is_active()? => Power::Running,
            _ => Power::Stopped,
        })
    }
}

/// Whether `power` (of a domain that may be missing) is a live QEMU process.
pub fn active(power: Option<Power>) -> bool {
    power.is_some_and(Power::is_active)
}

/// What a bounded wait for a guest to power off found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Stopped,
    StillRunning,
}

const UNDEFINE_ALL: u32 = virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | virt::sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    | virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM;

pub struct Hypervisor {
    uri: String,
    conn: Mutex<Option<Arc<Session>>>,
    /// Where domain events go; `None` when api-web polls only.
    hub: Option<Arc<events::Hub>>,
    /// The last inventory's domains with when each was read (kept only with events on).
    inventory: Mutex<std::collections::HashMap<String, (DomainView, Instant)>>,
}

/// An open connection with its event subscription, undone before the connection closes.
struct Session {
    conn: Connect,
    sub: Option<events::Subscription>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(sub) = &self.sub {
            events::unsubscribe(&self.conn, sub);
        }
    }
}

static SILENCE: Once = Once::new();

impl Hypervisor {
    /// Does not connect: the first call does. With `events`, libvirt's event loop runs and
    /// every connection subscribes to domain events (see `subscribe`) and keepalives.
    pub fn new(uri: &str, events: bool) -> Hypervisor {
        // Without this libvirt prints every error to stderr as well as returning it.
        SILENCE.call_once(virt::error::clear_error_callback);
        let hub = (events && events::start_loop()).then(|| Arc::new(events::Hub::default()));
        Hypervisor {
            uri: uri.to_string(),
            conn: Mutex::new(None),
            hub,
            inventory: Mutex::default(),
        }
    }

    /// Sends every domain event, and the connection's opening and closing, to `tx` (the one
    /// subscriber; a second call replaces the first). `false` when events are off: then only
    /// the periodic pass sees out-of-band changes.
    pub fn subscribe(&self, tx: std::sync::mpsc::Sender<Event>) -> bool {
        match &self.hub {
            Some(h) => {
                h.set_subscriber(tx);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the open connection, opening (or reopening a dead) one first. The lock is
    /// held only to find or open the connection: libvirt connections are thread-safe, and one
    /// slow call (a hot-unplug, a hung storage backend) must not hold up every other.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, VirtError>,
    ) -> Result<T, VirtError> {
        let session = {
            let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(s) if s.conn.is_alive().unwrap_or(false) => s.clone(),
                _ => {
                    // Dropping the last reference closes it.
                    slot.take();
                    let s = Arc::new(self.open()?);
                    *slot = Some(s.clone());
                    if let Some(h) = &self.hub {
                        h.send(Event::Connected);
                    }
                    s
                }
            }
        };
        f(&session.conn)
    }

    /// Whether a connection is open and alive (no attempt to open one).
    pub fn is_connected(&self) -> bool {
        let slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .is_some_and(|s| s.conn.is_alive().unwrap_or(false))
    }

    fn open(&self) -> Result<Session, VirtError> {
        let conn = Connect::open(Some(&self.uri)).map_err(|e| VirtError::Connect {
            uri: self.uri.clone(),
            message: e.message().to_string(),
        })?;
        let sub = self.hub.as_ref().map(|h| events::subscribe(&conn, h));
        Ok(Session { conn, sub })
    }

    /// Reachability: the hypervisor's version, as "QEMU 7.2.0 via libvirt 9.0.0".
    pub fn check(&self) -> Result<String, VirtError> {
        self.with_conn(|c| {
            let hv = c.hyp_version().map_err(|e| VirtError::op("version", e))?;
            let lib = c.lib_version().map_err(|e| VirtError::op("version", e))?;
            let v = host::version;
            let driver = c.driver_type().unwrap_or_else(|_| "hypervisor".into());
            Ok(format!("{driver} {} via libvirt {}", v(hv), v(lib)))
        })
    }
}

impl Hypervisor {
    fn domain(c: &Connect, name: &str) -> Result<Domain, VirtError> {
        c.lookup_domain_by_name(name)
            .map_err(|e| VirtError::op("look up domain", e))
    }

    /// Defines (persists) a domain from its XML.
    pub fn define(&self, xml: &str) -> Result<(), VirtError> {
        self.with_conn(|c| {
            c.define_domain_xml(xml)
                .map(|_| ())
                .map_err(|e| VirtError::op("define domain", e))
        })
    }

    pub fn start(&self, name: &str) -> Result<(), VirtError> {
        self.with_conn(|c| {
            Self::domain(c, name)?
                .create()
                .map_err(|e| VirtError::op("start domain", e))
        })
    }

    /// Running, paused or stopped; `None` if there is no such domain.
    pub fn power(&self, name: &str) -> Result<Option<Power>, VirtError> {
        self.with_conn(|c| match Self::domain(c, name) {
            Ok(d) => Power::of(&d)
                .map(Some)
                .map_err(|e| VirtError::op("domain state", e)),
            Err(e) if e.is_no_domain() => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// Every domain libvirt knows (defined or transient), by name, with whether it runs: one
    /// call for a whole reconciliation pass.
    pub fn power_states(&self) -> Result<std::collections::HashMap<String, Power>, VirtError> {
        self.with_conn(|c| {
            let mut out = std::collections::HashMap::new();
            let all = c
                .list_all_domains(0)
                .map_err(|e| VirtError::op("list domains", e))?;
            for d in all {
                let name = d.name().map_err(|e| VirtError::op("domain name", e))?;
                // A domain that vanished between the list and the look is simply absent.
                if let Ok(p) = Power::of(&d) {
                    out.insert(name, p);
                }
            }
            Ok(out)
        })
    }

    /// Connects (or finds the connection alive): `Err` when libvirt cannot be reached.
    pub fn ping(&self) -> Result<(), VirtError> {
        self.with_conn(|_| Ok(()))
    }

    /// Presses the ACPI power button, again every `retry` while the guest runs (a guest still
    /// booting ignores a press), until it powers off or `timeout` passes.
    pub fn shutdown(
        &self,
        name: &str,
        timeout: Duration,
        retry: Duration,
    ) -> Result<Shutdown, VirtError> {
        let press = || {
            self.with_conn(|c| {
                Self::domain(c, name)?
                    .shutdown()
                    .map_err(|e| VirtError::op("shut down domain", e))
            })
        };
        press()?;
        let start = Instant::now();
        let mut next_press = start + retry;
        loop {
            if !active(self.power(name)?) {
                return Ok(Shutdown::Stopped);
            }
            let now = Instant::now();
            if now >= start + timeout {
                return Ok(Shutdown::StillRunning);
            }
            if now >= next_press {
                // It may have powered off between the look and the press: the next look says.
                if let Err(e) = press() {
                    if active(self.power(name)?) {
                        return Err(e);
                    }
                }
                next_press = now + retry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Powers a domain off at once (no guest cooperation). A stopped or missing domain is fine.
    pub fn force_off(&self, name: &str) -> Result<(), VirtError> {
        self.with_conn(|c| {
            let d = match Self::domain(c, name) {
                Ok(d) => d,
                Err(e) if e.is_no_domain() => return Ok(()),
                Err(e) => return Err(e),
            };
            if d.is_active()
                .map_err(|e| VirtError::op("domain state", e))?
            {
                if let Err(e) = d.destroy() {
                    // It may have stopped by itself meanwhile.
                    if d.is_active().unwrap_or(true) {
                        return Err(VirtError::op("destroy domain", e));
                    }
                }
            }
            Ok(())
        })
    }

    /// Removes a domain's definition (it must be stopped). A missing domain is fine.
    pub fn undefine(&self, name: &str) -> Result<(), VirtError> {
        self.with_conn(|c| match Self::domain(c, name) {
            Ok(d) => d
                .undefine_flags(UNDEFINE_ALL)
                .map_err(|e| VirtError::op("undefine domain", e)),
            Err(e) if e.is_no_domain() => Ok(()),
            Err(e) => Err(e),
        })
    }

    /// Runs `f` on the named domain (a missing one is `Fault::NoDomain`), naming the call.
    fn on_domain(
        &self,
        name: &str,
        call: &'static str,
        f: impl FnOnce(&Domain) -> Result<(), virt::error::Error>,
    ) -> Result<(), VirtError> {
        self.with_conn(|c| f(&Self::domain(c, name)?).map_err(|e| VirtError::op(call, e)))
    }

    /// Stops the domain's vCPUs (its memory stays in QEMU).
    pub fn suspend(&self, name: &str) -> Result<(), VirtError> {
        self.on_domain(name, "suspend domain", |d| d.suspend())
    }

    pub fn resume(&self, name: &str) -> Result<(), VirtError> {
        self.on_domain(name, "resume domain", |d| d.resume())
    }

    /// Asks the guest to reboot by the ACPI power button: QEMU resets the machine when the
    /// guest powers off instead of ending (libvirt's "fake reboot"). Returns at once.
    pub fn reboot(&self, name: &str) -> Result<(), VirtError> {
        self.on_domain(name, "reboot domain", |d| {
            d.reboot(virt::sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        })
    }

    /// Resets the machine at once, as the reset button does (no guest cooperation).
    pub fn reset(&self, name: &str) -> Result<(), VirtError> {
        self.on_domain(name, "reset domain", |d| d.reset())
    }

    /// Reboots and resets of the guest seen so far (libvirt's REBOOT event); `None` without
    /// events.
    pub fn reboots(&self, name: &str) -> Option<u64> {
        self.hub.as_ref().map(|h| h.reboots(name))
    }

    /// Waits until the guest's reboot count passes `seen`, at most `timeout`: whether it did.
    pub fn await_reboot(&self, name: &str, seen: u64, timeout: Duration) -> bool {
        match &self.hub {
            Some(h) => h.wait_reboot(name, seen, timeout),
            None => false,
        }
    }

    /// Sets the domain's `<title>` and `<description>` in its persistent definition and, while
    /// it runs, its live one (libvirt escapes the text).
    pub fn set_title(&self, name: &str, title: &str, description: &str) -> Result<(), VirtError> {
        let flags = if active(self.power(name)?) {
            AFFECT_LIVE | AFFECT_CONFIG
        } else {
            AFFECT_CONFIG
        };
        self.on_domain(name, "set domain metadata", |d| {
            d.set_metadata(
                virt::sys::VIR_DOMAIN_METADATA_TITLE as i32,
                Some(title),
                None,
                None,
                flags,
            )?;
            d.set_metadata(
                virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32,
                Some(description),
                None,
                None,
                flags,
            )
        })
    }

    /// Sets the vCPU count and memory (MiB) of a stopped domain's persistent definition: the
    /// maximum first, so that the current value fits under it whether it grows or shrinks.
    pub fn set_shape(&self, name: &str, cpu: u32, memory_mib: u64) -> Result<(), VirtError> {
        let kib = memory_mib * 1024;
        self.on_domain(name, "set domain vCPUs and memory", |d| {
            let max = virt::sys::VIR_DOMAIN_VCPU_MAXIMUM | AFFECT_CONFIG;
            d.set_vcpus_flags(cpu, max)?;
            d.set_vcpus_flags(cpu, AFFECT_CONFIG)?;
            d.set_memory_flags(kib, virt::sys::VIR_DOMAIN_MEM_MAXIMUM | AFFECT_CONFIG)?;
            d.set_memory_flags(kib, AFFECT_CONFIG)
        })
    }

    /// Tells a running domain's QEMU that the disk with this target (`vdb`) is now `bytes`
    /// long, so the guest sees the new size at once.
    pub fn block_resize(&self, name: &str, target: &str, bytes: u64) -> Result<(), VirtError> {
        self.on_domain(name, "resize block device", |d| {
            d.block_resize(target, bytes, virt::sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        })
    }

    /// The live XML (`inactive` = false) or the persistent one.
    pub fn xml(&self, name: &str, inactive: bool) -> Result<String, VirtError> {
        let flags = if inactive {
            virt::sys::VIR_DOMAIN_XML_INACTIVE
        } else {
            0
        };
        self.with_conn(|c| {
            Self::domain(c, name)?
                .xml_desc(flags)
                .map_err(|e| VirtError::op("read domain XML", e))
        })
    }
}

/// The devices of one domain XML that reconciliation compares with the rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Devices {
    /// `(serial, target dev)` of every disk with a serial (api-web's disks carry their volume id).
    pub disks: Vec<(String, String)>,
    /// MACs of the interfaces, lower case.
    pub macs: Vec<String>,
}

impl Devices {
    fn of(
        xml: &str,
    ) -> Result<(Devices, Option<crate::xml::domain::ParsedInstanceMeta>), VirtError> {
        let d = crate::xml::domain::parse(xml)
            .map_err(|e| VirtError::unconfirmed("parse domain XML", e.to_string()))?;
        let devices = Devices {
            disks: d
                .devices
                .disk
                .into_iter()
                .filter_map(|k| Some((k.serial?, k.target.map(|t| t.dev).unwrap_or_default())))
                .collect(),
            macs: d
                .devices
                .interface
                .into_iter()
                .filter_map(|i| Some(i.mac?.address.to_ascii_lowercase()))
                .collect(),
        };
        Ok((devices, d.metadata.and_then(|m| m.instance)))
    }

    /// The target dev of the disk with this serial.
    pub fn disk(&self, serial: &str) -> Option<&str> {
        self.disks
            .iter()
            .find(|(s, _)| s == serial)
            .map(|(_, t)| t.as_str())
    }

    pub fn has_mac(&self, mac: &str) -> bool {
        self.macs.iter().any(|m| m.eq_ignore_ascii_case(mac))
    }
}

/// One domain as a reconciliation pass sees it.
#[derive(Debug, Clone)]
pub struct DomainView {
    pub name: String,
    pub power: Power,
    /// The persistent definition's devices; `None` for a transient domain.
    pub persistent: Option<Devices>,
    /// The running guest's devices; `None` when it does not run.
    pub live: Option<Devices>,
    /// The deployment id in api-web's metadata; `None` for a domain without it (made by hand,
    /// by another tool, or by api-web before deployments were marked).
    pub deployment: Option<String>,
    /// Why its XML could not be read or parsed (then `persistent`, `live` and `deployment`
    /// are `None` and say nothing): one such domain does not stop the others being compared.
    pub unreadable: Option<String>,
}

/// With events on, every domain is read again at least once in this many inventories, even
/// without an event naming it: edits of a stopped domain's definition (`virsh attach-device
/// --config`, `virsh edit`) raise no event.
pub const REFRESH_INVENTORIES: usize = 12;

impl Hypervisor {
    /// Every domain with its power state and the devices of its persistent and live XML.
    ///
    /// Power and persistence come from three list calls. The XML of a domain (one call for a
    /// stopped domain, two for a running one) is the expensive part; with events on it is read
    /// again only for domains that are new, changed power, were named by an event since the
    /// last inventory, or are among the 1/`REFRESH_INVENTORIES` read longest ago. With events
    /// off, or after a reconnect, every XML is read. Reads run on `threads` threads over the
    /// one connection. Only domains whose name `wanted` accepts are read. A domain that
    /// vanishes while it is read is left out; one whose XML libvirt refuses or we cannot parse
    /// is listed `unreadable`. Fails only when the listing fails or the connection breaks.
    pub fn inventory(
        &self,
        threads: usize,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<DomainView>, VirtError> {
        // Taken before the lists: an event during the reads marks its domain for the next time.
        let stale = self.hub.as_ref().and_then(|h| h.take_stale());
        let (domains, active, paused, transient) = self.with_conn(|c| {
            let list = |flags| {
                c.list_all_domains(flags)
                    .map_err(|e| VirtError::op("list domains", e))
            };
            let names = |flags| -> Result<std::collections::HashSet<String>, VirtError> {
                Ok(list(flags)?.iter().filter_map(|d| d.name().ok()).collect())
            };
            Ok((
                list(0)?,
                names(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?,
                names(virt::sys::VIR_CONNECT_LIST_DOMAINS_PAUSED)?,
                names(virt::sys::VIR_CONNECT_LIST_DOMAINS_TRANSIENT)?,
            ))
        })?;
        let mut listed = Vec::with_capacity(domains.len());
        for d in domains {
            let Ok(name) = d.name() else { continue };
            if !wanted(&name) {
                continue;
            }
            let power = if paused.contains(&name) {
                Power::Paused
            } else if active.contains(&name) {
                Power::Running
            } else {
                Power::Stopped
            };
            let persistent = !transient.contains(&name);
            listed.push((d, name, power, persistent));
        }
        let cache = self.inventory.lock().unwrap_or_else(|p| p.into_inner());
        let mut refresh: std::collections::HashSet<String> = Default::default();
        if let Some(stale) = &stale {
            // The slice read longest ago.
            let mut by_age: Vec<(&String, &Instant)> =
                cache.iter().map(|(n, (_, t))| (n, t)).collect();
            by_age.sort_by_key(|(_, t)| **t);
            let slice = cache.len().div_ceil(REFRESH_INVENTORIES);
            refresh.extend(by_age.into_iter().take(slice).map(|(n, _)| n.clone()));
            refresh.extend(stale.iter().cloned());
        }
        let (mut keep, mut read) = (vec![], vec![]);
        for (d, name, power, persistent) in listed {
            let cached = stale.is_some().then(|| cache.get(&name)).flatten();
            match cached {
                Some((v, _))
                    if !refresh.contains(&name)
                        && v.unreadable.is_none()
                        && v.power == power
                        && v.persistent.is_some() == persistent =>
                {
                    keep.push(v.clone())
                }
                _ => read.push((d, name, power, persistent)),
            }
        }
        drop(cache);
        let fresh = Self::read_domains(&read, threads)?;
        let now = Instant::now();
        let mut cache = self.inventory.lock().unwrap_or_else(|p| p.into_inner());
        if self.hub.is_some() {
            let listed: std::collections::HashSet<&str> = keep
                .iter()
                .chain(fresh.iter())
                .map(|v| v.name.as_str())
                .collect();
            cache.retain(|n, _| listed.contains(n.as_str()));
            for v in &fresh {
                cache.insert(v.name.clone(), (v.clone(), now));
            }
        }
        keep.extend(fresh);
        Ok(keep)
    }

    /// Whether `inventory` may answer from its cache (events on).
    pub fn caches(&self) -> bool {
        self.hub.is_some()
    }

    /// Makes the next `inventory` read these domains' XML again.
    pub fn forget(&self, names: impl IntoIterator<Item = String>) {
        if let Some(h) = &self.hub {
            h.mark_stale(names);
        }
    }

    /// Reads the XML of `domains` on up to `threads` threads.
    fn read_domains(
        domains: &[(Domain, String, Power, bool)],
        threads: usize,
    ) -> Result<Vec<DomainView>, VirtError> {
        /// One XML of a domain: `Ok(None)` when the domain is gone, `Err(Ok(why))` when it
        /// cannot be read or parsed, `Err(Err(_))` when the connection broke.
        type Read<T> = Result<Option<T>, Result<String, VirtError>>;
        fn xml(
            d: &Domain,
            flags: u32,
        ) -> Read<(Devices, Option<crate::xml::domain::ParsedInstanceMeta>)> {
            match d.xml_desc(flags) {
                Ok(x) => Devices::of(&x).map(Some).map_err(|e| Ok(e.to_string())),
                Err(e) => match Fault::of(&e) {
                    Fault::NoDomain => Ok(None),
                    Fault::Lost => Err(Err(VirtError::op("read domain XML", e))),
                    _ => Err(Ok(VirtError::op("read domain XML", e).to_string())),
                },
            }
        }
        let read = |(d, name, power, persistent): &(Domain, String, Power, bool)| -> Result<Option<DomainView>, VirtError> {
            let mut view = DomainView {
                name: name.clone(),
                power: *power,
                persistent: None,
                live: None,
                deployment: None,
                unreadable: None,
            };
            let both = || -> Read<DomainView> {
                let mut v = view.clone();
                let mut meta = None;
                if *persistent {
                    let Some((devs, m)) = xml(d, virt::sys::VIR_DOMAIN_XML_INACTIVE)? else {
                        return Ok(None);
                    };
                    v.persistent = Some(devs);
                    meta = m;
                }
                if power.is_active() {
                    let Some((devs, m)) = xml(d, 0)? else {
                        return Ok(None);
                    };
                    v.live = Some(devs);
                    meta = meta.or(m);
                }
                v.deployment = meta.and_then(|m| m.deployment);
                Ok(Some(v))
            };
            match both() {
                Ok(v) => Ok(v),
                Err(Ok(why)) => {
                    view.unreadable = Some(why);
                    Ok(Some(view))
                }
                Err(Err(e)) => Err(e),
            }
        };
        if domains.is_empty() {
            return Ok(vec![]);
        }
        let threads = threads.clamp(1, 32).min(domains.len());
        let chunk = domains.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = domains
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut out = Vec::with_capacity(part.len());
                        for d in part {
                            if let Some(v) = read(d)? {
                                out.push(v);
                            }
                        }
                        Ok::<_, VirtError>(out)
                    })
                })
                .collect();
            let mut all = Vec::with_capacity(domains.len());
            for h in handles {
                let part = h
                    .join()
                    .map_err(|_| VirtError::unconfirmed("read domains", "a reader panicked"))??;
                all.extend(part);
            }
            Ok(all)
        })
    }
}

/// How a device is recognised in a domain's XML: disks by `<serial>`, NICs by MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKey {
    DiskSerial(String),
    Mac(String),
}

impl DeviceKey {
    /// Whether a domain XML holds the device.
    pub fn is_in(&self, xml: &str) -> Result<bool, VirtError> {
        let d = crate::xml::domain::parse(xml)
            .map_err(|e| VirtError::unconfirmed("parse domain XML", e.to_string()))?;
        Ok(match self {
            DeviceKey::DiskSerial(s) => d
                .devices
                .disk
                .iter()
                .any(|x| x.serial.as_deref() == Some(s)),
            DeviceKey::Mac(m) => d.devices.interface.iter().any(|x| {
                x.mac
                    .as_ref()
                    .is_some_and(|a| a.address.eq_ignore_ascii_case(m))
            }),
        })
    }
}

/// Where a device is, after an unplug and its bounded wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplug {
    /// In neither the live nor the persistent XML.
    Gone,
    /// Removed from the persistent XML, but the guest has not released it yet.
    StillInLiveXml,
}

const AFFECT_LIVE: u32 = virt::sys::VIR_DOMAIN_AFFECT_LIVE;
const AFFECT_CONFIG: u32 = virt::sys::VIR_DOMAIN_AFFECT_CONFIG;

impl Hypervisor {
    /// Hot-plugs a device: into the running domain and its persistent definition, or only the
    /// definition when the domain is stopped. Confirms the device in each XML it applied to.
    pub fn plug(&self, name: &str, device_xml: &str, key: &DeviceKey) -> Result<(), VirtError> {
        let running = active(self.power(name)?);
        let flags = if running {
            AFFECT_LIVE | AFFECT_CONFIG
        } else {
            AFFECT_CONFIG
        };
        self.with_conn(|c| {
            Self::domain(c, name)?
                .attach_device_flags(device_xml, flags)
                .map_err(|e| VirtError::op("attach device", e))
        })?;
        let in_config = key.is_in(&self.xml(name, true)?)?;
        let in_live = !running || key.is_in(&self.xml(name, false)?)?;
        if in_config && in_live {
            Ok(())
        } else {
            Err(VirtError::unconfirmed(
                "attach device",
                "libvirt reported success but the device is not in the domain XML",
            ))
        }
    }

    /// Unplugs a device from the persistent definition and, if the domain runs, from the live
    /// one, then waits up to `timeout` for the guest to release it: hot-unplug is asynchronous
    /// and libvirt's success says nothing. Safe to repeat while an unplug is pending.
    pub fn unplug(
        &self,
        name: &str,
        device_xml: &str,
        key: &DeviceKey,
        timeout: Duration,
    ) -> Result<Unplug, VirtError> {
        if key.is_in(&self.xml(name, true)?)? {
            self.with_conn(|c| {
                Self::domain(c, name)?
                    .detach_device_flags(device_xml, AFFECT_CONFIG)
                    .map_err(|e| VirtError::op("detach device", e))
            })?;
        }
        if !active(self.power(name)?) {
            return Ok(Unplug::Gone);
        }
        let mut seen = self.removals();
        if key.is_in(&self.xml(name, false)?)? {
            let asked = self.with_conn(|c| {
                Self::domain(c, name)?
                    .detach_device_flags(device_xml, AFFECT_LIVE)
                    .map_err(|e| VirtError::op("detach device", e))
            });
            match asked {
                // QEMU refuses a second device_del while the guest still works on the first
                // (a retry of a pending detach): the device is still in the live XML, so wait
                // for the guest like the first request did.
                Err(e) if e.fault() == Some(Fault::Monitor) => {
                    log::info!("{name}: unplug already pending ({})", e.message())
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
        }
        let end = Instant::now() + timeout;
        loop {
            // The domain may stop meanwhile: then its live XML is its persistent one.
            let live = match self.power(name)? {
                Some(p) if p.is_active() => self.xml(name, false)?,
                _ => return Ok(Unplug::Gone),
            };
            if !key.is_in(&live)? {
                return Ok(Unplug::Gone);
            }
            let now = Instant::now();
            if now >= end {
                return Ok(Unplug::StillInLiveXml);
            }
            seen = self.await_removal(seen, end - now);
        }
    }

    /// Device removals seen so far (0 without events).
    fn removals(&self) -> u64 {
        self.hub.as_ref().map_or(0, |h| h.removals())
    }

    /// Sleeps until the next DEVICE_REMOVED event after `seen` (any domain's: the caller reads
    /// its XML again), at most `left`. The event is the fast path; a look every 500 ms stays
    /// because a removal can go unannounced. Without events, a look every 50 ms.
    fn await_removal(&self, seen: u64, left: Duration) -> u64 {
        match &self.hub {
            Some(h) => {
                h.wait_removal(seen, left.min(Duration::from_millis(500)));
                h.removals()
            }
            None => {
                std::thread::sleep(left.min(Duration::from_millis(50)));
                0
            }
        }
    }

    /// Whether the host has a network interface (a bridge) of this name, as libvirt's
    /// interface driver on the hypervisor sees it.
    pub fn has_interface(&self, name: &str) -> Result<bool, VirtError> {
        self.with_conn(|c| match c.lookup_interface_by_name(name) {
            Ok(_) => Ok(true),
            Err(e) if Fault::of(&e) == Fault::NoInterface => Ok(false),
            Err(e) => Err(VirtError::op("look up interface", e)),
        })
    }

    /// Target devices (`vda`, `vdb`...) of the disks in the persistent and the live XML.
    pub fn disk_targets(&self, name: &str) -> Result<Vec<String>, VirtError> {
        let mut out = vec![];
        let mut xmls = vec![self.xml(name, true)?];
        if active(self.power(name)?) {
            xmls.push(self.xml(name, false)?);
        }
        for x in xmls {
            let d = crate::xml::domain::parse(&x)
                .map_err(|e| VirtError::unconfirmed("parse domain XML", e.to_string()))?;
            out.extend(
                d.devices
                    .disk
                    .into_iter()
                    .filter_map(|k| k.target.map(|t| t.dev)),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libvirt_messages_are_brief() {
        assert_eq!(brief("domain is not running"), "domain is not running");
        let quoted = format!(
            "XML error: invalid character in <domain type='qemu'><description>{}</description></domain>",
            "d".repeat(4000)
        );
        assert_eq!(
            brief(&quoted),
            "XML error: invalid character in (XML left out)"
        );
        let long = brief(&"x".repeat(5000));
        assert_eq!(long.chars().count(), MESSAGE_CHARS);
    }
}
