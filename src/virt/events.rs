//! libvirt's domain events, as `Event` values on a channel.
//!
//! virt 0.5 runs libvirt's default event loop but does not wrap
//! `virConnectDomainEventRegisterAny`; this is that wrapper. An event is a fast path only: a
//! device detached while the domain was paused raises none (see infra-recipes), so whoever
//! acts on one reads libvirt again, and a periodic pass catches whatever no event told.

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;
use virt::connect::Connect;
use virt::sys;

/// What libvirt told about a domain, or about the connection itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The domain was defined, undefined, started, stopped, paused, resumed or crashed: its
    /// power state may have changed. `detail` is libvirt's reason number within `change`.
    Lifecycle {
        domain: String,
        change: Change,
        detail: i32,
    },
    /// The guest released a hot-unplugged device (by its libvirt alias, such as `virtio-disk1`).
    DeviceRemoved { domain: String, alias: String },
    /// A device was added to the running domain.
    DeviceAdded { domain: String, alias: String },
    /// The guest rebooted itself.
    Reboot { domain: String },
    /// A disk reported an I/O error; `action` is libvirt's `VIR_DOMAIN_EVENT_IO_ERROR_*`.
    IoError {
        domain: String,
        device: String,
        action: i32,
    },
    /// A connection opened and subscribed: whatever happened before it was not seen.
    Connected,
    /// The connection closed (libvirtd stopped, restarted, or stopped answering keepalives):
    /// no events arrive until the next connection.
    Disconnected,
}

/// `virDomainEventType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Defined,
    Undefined,
    Started,
    Suspended,
    Resumed,
    Stopped,
    Shutdown,
    PmSuspended,
    Crashed,
    Other(i32),
}

impl Change {
    fn of(n: c_int) -> Change {
        match n as sys::virDomainEventType {
            sys::VIR_DOMAIN_EVENT_DEFINED => Change::Defined,
            sys::VIR_DOMAIN_EVENT_UNDEFINED => Change::Undefined,
            sys::VIR_DOMAIN_EVENT_STARTED => Change::Started,
            sys::VIR_DOMAIN_EVENT_SUSPENDED => Change::Suspended,
            sys::VIR_DOMAIN_EVENT_RESUMED => Change::Resumed,
            sys::VIR_DOMAIN_EVENT_STOPPED => Change::Stopped,
            sys::VIR_DOMAIN_EVENT_SHUTDOWN => Change::Shutdown,
            sys::VIR_DOMAIN_EVENT_PMSUSPENDED => Change::PmSuspended,
            sys::VIR_DOMAIN_EVENT_CRASHED => Change::Crashed,
            _ => Change::Other(n),
        }
    }
}

/// Where the callbacks deliver: the subscriber's channel, and a counter of device removals
/// that a waiting unplug sleeps on.
#[derive(Default)]
pub(super) struct Hub {
    tx: Mutex<Option<Sender<Event>>>,
    removals: Mutex<u64>,
    removed: Condvar,
    /// REBOOT events per domain, which a waiting reboot sleeps on (an entry per domain that
    /// ever rebooted while this process ran: a few bytes each).
    reboots: Mutex<std::collections::HashMap<String, u64>>,
    rebooted: Condvar,
    /// Domains an event named since the inventory last asked (`take_stale`).
    stale: Mutex<Stale>,
}

/// What the inventory's cache of domain XML can no longer trust.
#[derive(Default)]
struct Stale {
    /// False until the first `take_stale`, and again after a connection opened or closed
    /// (events may have been missed): then nothing cached can be trusted.
    valid: bool,
    domains: std::collections::HashSet<String>,
}

impl Event {
    /// The domain an event is about.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Event::Lifecycle { domain, .. }
            | Event::DeviceRemoved { domain, .. }
            | Event::DeviceAdded { domain, .. }
            | Event::Reboot { domain }
            | Event::IoError { domain, .. } => Some(domain),
            Event::Connected | Event::Disconnected => None,
        }
    }
}

impl Hub {
    pub(super) fn set_subscriber(&self, tx: Sender<Event>) {
        *self.tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(tx);
    }

    pub(super) fn send(&self, ev: Event) {
        {
            let mut st = self.stale.lock().unwrap_or_else(|p| p.into_inner());
            match ev.domain() {
                Some(d) => {
                    st.domains.insert(d.to_string());
                }
                None => st.valid = false,
            }
        }
        if let Event::DeviceRemoved { .. } = ev {
            *self.removals.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            self.removed.notify_all();
        }
        if let Event::Reboot { domain } = &ev {
            let mut r = self.reboots.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry(domain.clone()).or_default() += 1;
            self.rebooted.notify_all();
        }
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            // A subscriber that went away simply misses events.
            let _ = tx.send(ev);
        }
    }

    /// The domains events named since the last call (and forgets them); `None` when nothing
    /// cached can be trusted (the first call, or a connection opened or closed since).
    pub(super) fn take_stale(&self) -> Option<std::collections::HashSet<String>> {
        let mut st = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        let domains = std::mem::take(&mut st.domains);
        if !st.valid {
            st.valid = true;
            return None;
        }
        Some(domains)
    }

    /// Marks domains as changed, as an event would.
    pub(super) fn mark_stale(&self, names: impl IntoIterator<Item = String>) {
        let mut st = self.stale.lock().unwrap_or_else(|p| p.into_inner());
        st.domains.extend(names);
    }

    /// How many device removals were seen so far.
    pub(super) fn removals(&self) -> u64 {
        *self.removals.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many reboots (and resets) of `domain` were seen so far.
    pub(super) fn reboots(&self, domain: &str) -> u64 {
        let r = self.reboots.lock().unwrap_or_else(|p| p.into_inner());
        r.get(domain).copied().unwrap_or(0)
    }

    /// Sleeps until `domain` rebooted after `seen`, at most `at_most`: whether it did.
    pub(super) fn wait_reboot(&self, domain: &str, seen: u64, at_most: Duration) -> bool {
        let g = self.reboots.lock().unwrap_or_else(|p| p.into_inner());
        let count =
            |r: &std::collections::HashMap<String, u64>| r.get(domain).copied().unwrap_or(0);
        match self
            .rebooted
            .wait_timeout_while(g, at_most, |r| count(r) == seen)
        {
            Ok((r, _)) => count(&r) != seen,
            Err(_) => false,
        }
    }

    /// Sleeps until a device removal after `seen`, or `at_most`.
    pub(super) fn wait_removal(&self, seen: u64, at_most: Duration) {
        let g = self.removals.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .removed
            .wait_timeout_while(g, at_most, |n| *n == seen)
            .map(|_| ());
    }
}

static LOOP: Once = Once::new();
static LOOP_OK: AtomicBool = AtomicBool::new(false);

/// Registers libvirt's default event loop and runs it on its own thread, once per process.
/// Must happen before the first connection opens, or that connection gets neither events nor
/// keepalives. `false` when libvirt refused (then api-web polls).
pub(super) fn start_loop() -> bool {
    LOOP.call_once(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            log::warn!(
                "libvirt event loop unavailable, polling only: {}",
                e.message()
            );
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| loop {
                if let Err(e) = virt::event::event_run_default_impl() {
                    log::error!("libvirt event loop: {}", e.message());
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        LOOP_OK.store(spawned.is_ok(), Ordering::SeqCst);
    });
    LOOP_OK.load(Ordering::SeqCst)
}

/// Seconds between keepalive probes, and how many may go unanswered before libvirt closes the
/// connection: a hung libvirtd is seen within about 20 s and every call waiting on it fails.
/// (A stopped or restarted libvirtd closes the socket and is seen at once.) 1 s x 2 closed
/// the connection under load: with 50 guests starting on 2 cores libvirtd answered a probe
/// late, and 48 of 50 creates failed with "connection closed due to keepalive timeout".
const KEEPALIVE_INTERVAL: c_int = 5;
const KEEPALIVE_COUNT: u32 = 3;

/// The domain events api-web listens to.
const EVENTS: [sys::virDomainEventID; 5] = [
    sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE,
    sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
    sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
    sys::VIR_DOMAIN_EVENT_ID_REBOOT,
    sys::VIR_DOMAIN_EVENT_ID_IO_ERROR,
];

/// A connection's event registrations, undone when the connection is dropped.
pub(super) struct Subscription {
    ids: Vec<c_int>,
    close: bool,
}

/// Turns on keepalives and subscribes `hub` to `conn`'s domain events and to its closing.
/// A registration libvirt refuses is logged and skipped: the poll fallbacks still hold.
pub(super) fn subscribe(conn: &Connect, hub: &Arc<Hub>) -> Subscription {
    // SAFETY: `conn` is open; each registration gets its own reference to `hub`, released by
    // `release` when libvirt drops the callback (deregistration or connection close).
    unsafe {
        let ptr = conn.as_ptr();
        if sys::virConnectSetKeepAlive(ptr, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT) < 0 {
            log::warn!("libvirt keepalive not available on this connection");
        }
        let mut ids = vec![];
        for id in EVENTS {
            let opaque = Arc::into_raw(hub.clone()) as *mut c_void;
            let n = sys::virConnectDomainEventRegisterAny(
                ptr,
                std::ptr::null_mut(),
                id as c_int,
                callback(id),
                opaque,
                Some(release),
            );
            if n < 0 {
                release(opaque);
                log::warn!("libvirt refused to subscribe to domain event {id}");
            } else {
                ids.push(n);
            }
        }
        let opaque = Arc::into_raw(hub.clone()) as *mut c_void;
        let close =
            sys::virConnectRegisterCloseCallback(ptr, Some(on_close), opaque, Some(release)) == 0;
        if !close {
            release(opaque);
        }
        Subscription { ids, close }
    }
}

/// Undoes `subscribe`. On a dead connection libvirt forgets the callbacks locally even when it
/// cannot tell the daemon; errors are of no use here.
pub(super) fn unsubscribe(conn: &Connect, sub: &Subscription) {
    // SAFETY: `conn` is the connection `sub` was made on, still referenced.
    unsafe {
        let ptr = conn.as_ptr();
        for id in &sub.ids {
            sys::virConnectDomainEventDeregisterAny(ptr, *id);
        }
        if sub.close {
            sys::virConnectUnregisterCloseCallback(ptr, Some(on_close));
        }
    }
}

/// libvirt's generic callback type stands for every event's own signature (libvirt's
/// `VIR_DOMAIN_EVENT_CALLBACK` cast); each is called with the arguments of its event id.
fn callback(id: sys::virDomainEventID) -> sys::virConnectDomainEventGenericCallback {
    type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);
    type Lifecycle = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        c_int,
        c_int,
        *mut c_void,
    ) -> c_int;
    type Device =
        unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *const c_char, *mut c_void);
    type IoError = unsafe extern "C" fn(
        sys::virConnectPtr,
        sys::virDomainPtr,
        *const c_char,
        *const c_char,
        c_int,
        *mut c_void,
    );
    // SAFETY: function pointers of the same ABI; libvirt calls each with its event's arguments.
    unsafe {
        Some(match id {
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE => {
                std::mem::transmute::<Lifecycle, Generic>(on_lifecycle)
            }
            sys::VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED => {
                std::mem::transmute::<Device, Generic>(on_device_removed)
            }
            sys::VIR_DOMAIN_EVENT_ID_DEVICE_ADDED => {
                std::mem::transmute::<Device, Generic>(on_device_added)
            }
            sys::VIR_DOMAIN_EVENT_ID_IO_ERROR => {
                std::mem::transmute::<IoError, Generic>(on_io_error)
            }
            _ => on_reboot,
        })
    }
}

unsafe fn hub<'a>(opaque: *mut c_void) -> &'a Hub {
    &*(opaque as *const Hub)
}

unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

unsafe fn name(dom: sys::virDomainPtr) -> String {
    text(sys::virDomainGetName(dom))
}

unsafe extern "C" fn on_lifecycle(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    hub(opaque).send(Event::Lifecycle {
        domain: name(dom),
        change: Change::of(event),
        detail,
    });
    0
}

unsafe extern "C" fn on_device_removed(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    hub(opaque).send(Event::DeviceRemoved {
        domain: name(dom),
        alias: text(alias),
    });
}

unsafe extern "C" fn on_device_added(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    alias: *const c_char,
    opaque: *mut c_void,
) {
    hub(opaque).send(Event::DeviceAdded {
        domain: name(dom),
        alias: text(alias),
    });
}

unsafe extern "C" fn on_reboot(_: sys::virConnectPtr, dom: sys::virDomainPtr, opaque: *mut c_void) {
    hub(opaque).send(Event::Reboot { domain: name(dom) });
}

unsafe extern "C" fn on_io_error(
    _: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    _path: *const c_char,
    alias: *const c_char,
    action: c_int,
    opaque: *mut c_void,
) {
    hub(opaque).send(Event::IoError {
        domain: name(dom),
        device: text(alias),
        action,
    });
}

unsafe extern "C" fn on_close(_: sys::virConnectPtr, _reason: c_int, opaque: *mut c_void) {
    hub(opaque).send(Event::Disconnected);
}

/// Releases the reference to the hub that a registration held.
unsafe extern "C" fn release(opaque: *mut c_void) {
    drop(Arc::from_raw(opaque as *const Hub));
}
