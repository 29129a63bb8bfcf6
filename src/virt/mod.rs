//! libvirt: the only module that talks to the hypervisor.
//!
//! One connection per host, opened on first use and reopened when libvirt reports it dead.
//! Every function blocks: call them off the async executor.

use std::sync::{Mutex, Once};
use virt::connect::Connect;

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt: {op} failed: {message}")]
    Op { op: &'static str, message: String },
}

impl VirtError {
    fn op(op: &'static str, e: virt::error::Error) -> VirtError {
        VirtError::Op {
            op,
            message: e.message().to_string(),
        }
    }
}

pub struct Hypervisor {
    uri: String,
    conn: Mutex<Option<Connect>>,
}

static SILENCE: Once = Once::new();

impl Hypervisor {
    /// Does not connect: the first call does.
    pub fn new(uri: &str) -> Hypervisor {
        // Without this libvirt prints every error to stderr as well as returning it.
        SILENCE.call_once(virt::error::clear_error_callback);
        Hypervisor {
            uri: uri.to_string(),
            conn: Mutex::new(None),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Runs `f` on the open connection, opening (or reopening a dead) one first.
    pub fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, VirtError>,
    ) -> Result<T, VirtError> {
        let mut slot = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let alive = slot
            .as_ref()
            .map(|c| c.is_alive().unwrap_or(false))
            .unwrap_or(false);
        if !alive {
            // Dropping closes it (virConnectClose fails only on an invalid pointer).
            slot.take();
            let c = Connect::open(Some(&self.uri)).map_err(|e| VirtError::Connect {
                uri: self.uri.clone(),
                message: e.message().to_string(),
            })?;
            *slot = Some(c);
        }
        let conn = slot.as_ref().ok_or_else(|| VirtError::Connect {
            uri: self.uri.clone(),
            message: "no connection".into(),
        })?;
        f(conn)
    }

    /// Reachability: the hypervisor's version, as "QEMU 7.2.0 via libvirt 9.0.0".
    pub fn check(&self) -> Result<String, VirtError> {
        self.with_conn(|c| {
            let hv = c.hyp_version().map_err(|e| VirtError::op("version", e))?;
            let lib = c.lib_version().map_err(|e| VirtError::op("version", e))?;
            let v = |n: u32| format!("{}.{}.{}", n / 1_000_000, (n / 1000) % 1000, n % 1000);
            let driver = c.driver_type().unwrap_or_else(|_| "hypervisor".into());
            Ok(format!("{driver} {} via libvirt {}", v(hv), v(lib)))
        })
    }
}
