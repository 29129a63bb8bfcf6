//! libvirt's events to rows: the fast path of the truth.
//!
//! A lifecycle event (a guest that powered itself off, `virsh destroy`, `virsh undefine`, a QEMU
//! crash) makes its instance's row follow libvirt within a second (`instances::observe_one`).
//! When the connection closes (libvirtd stopped or restarted), this reconnects by itself and,
//! once connected, has the reconciliation thread run a whole pass for whatever happened unseen
//! (never on this thread: a pass takes long next to an event). The periodic
//! pass (`reconcile::pass`) stays the sure path: an event can be missed.

use super::{instances, Ctx};
use crate::model::InstanceId;
use crate::virt::{Change, Event, Hypervisor};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a lost connection to libvirtd is tried again.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Subscribes to the events of every connection `ctx.hosts` makes that has them (today the
/// configured host's; `virt::Hosts::get` says why the others do not) and handles each on a
/// thread of its own; does nothing when `libvirt.events` is off. A thread ends when its
/// connection is dropped.
pub fn start(ctx: &Arc<Ctx>) {
    let weak = Arc::downgrade(ctx);
    ctx.hosts.on_open(move |hv| watch(&weak, hv));
}

fn watch(weak: &Weak<Ctx>, hv: &Arc<Hypervisor>) {
    let (tx, rx) = mpsc::channel();
    if !hv.subscribe(tx) {
        log::debug!(
            "no libvirt events from {}: out-of-band changes reach rows by the periodic pass",
            hv.uri()
        );
        return;
    }
    let (weak, hv) = (weak.clone(), Arc::downgrade(hv));
    let _ = crate::context::spawn_named("libvirt-watch".into(), move || {
        // Events flow only on an open connection: open it now, not at the first request.
        reconnect(&weak, &hv);
        for ev in rx {
            let closed = ev == Event::Disconnected;
            let Some(ctx) = weak.upgrade() else {
                return;
            };
            handle(&ctx, ev);
            drop(ctx);
            if closed {
                reconnect(&weak, &hv);
            }
        }
    });
}

fn handle(ctx: &Ctx, ev: Event) {
    match ev {
        Event::Lifecycle { domain, change, .. } => {
            if !domain.starts_with(InstanceId::PREFIX) || matches!(change, Change::Defined) {
                return;
            }
            let id = InstanceId::new(domain);
            if let Err(e) = instances::observe_one(ctx, &id) {
                log::warn!("libvirt event for instance {id} ({change:?}) not applied: {e}");
            }
        }
        Event::Reboot { domain } => log::info!("instance {domain}: the guest rebooted itself"),
        Event::IoError {
            domain,
            device,
            action,
        } => log::warn!("instance {domain}: disk {device} reported an I/O error (action {action})"),
        Event::DeviceRemoved { domain, alias } => {
            log::debug!("instance {domain}: device {alias} removed")
        }
        Event::DeviceAdded { domain, alias } => {
            log::debug!("instance {domain}: device {alias} added")
        }
        // The pass runs on the reconciliation thread: events keep flowing meanwhile.
        Event::Connected => {
            log::info!("connected to libvirt; a reconciliation pass follows");
            ctx.reconciler.wake();
        }
        Event::Disconnected => {
            log::warn!("the connection to libvirt closed; reconnecting every {RECONNECT_EVERY:?}")
        }
    }
}

/// Opens a connection, again every `RECONNECT_EVERY` until one opens or the context or the
/// host's connection ends.
fn reconnect(weak: &Weak<Ctx>, hv: &Weak<Hypervisor>) {
    loop {
        let (Some(ctx), Some(hv)) = (weak.upgrade(), hv.upgrade()) else {
            return;
        };
        if hv.ping().is_ok() {
            return;
        }
        drop((ctx, hv));
        std::thread::sleep(RECONNECT_EVERY);
    }
}
