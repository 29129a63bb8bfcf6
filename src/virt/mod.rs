//! libvirt: the only module that talks to the hypervisor.
//!
//! One connection per host, opened on first use and reopened when libvirt reports it dead.
//! Every function blocks: call them off the async executor.

use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;

#[derive(Debug, thiserror::Error)]
pub enum VirtError {
    #[error("cannot connect to libvirt at {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt: {op} failed: {message}")]
    Op {
        op: &'static str,
        message: String,
        no_domain: bool,
    },
}

impl VirtError {
    fn op(op: &'static str, e: virt::error::Error) -> VirtError {
        VirtError::Op {
            op,
            no_domain: e.code() == virt::error::ErrorNumberEnum::from(ErrorNumber::NoDomain),
            message: e.message().to_string(),
        }
    }
    /// The domain does not exist.
    pub fn is_no_domain(&self) -> bool {
        matches!(
            self,
            VirtError::Op {
                no_domain: true,
                ..
            }
        )
    }
    /// libvirt's own words, for a user-facing message.
    pub fn message(&self) -> &str {
        match self {
            VirtError::Connect { message, .. } | VirtError::Op { message, .. } => message,
        }
    }
}

/// Whether a domain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Running,
    Stopped,
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

    /// Running or stopped; `None` if there is no such domain.
    pub fn power(&self, name: &str) -> Result<Option<Power>, VirtError> {
        self.with_conn(|c| match Self::domain(c, name) {
            Ok(d) => match d.is_active() {
                Ok(true) => Ok(Some(Power::Running)),
                Ok(false) => Ok(Some(Power::Stopped)),
                Err(e) => Err(VirtError::op("domain state", e)),
            },
            Err(e) if e.is_no_domain() => Ok(None),
            Err(e) => Err(e),
        })
    }

    /// Presses the ACPI power button, then waits up to `timeout` for the guest to power off.
    pub fn shutdown(&self, name: &str, timeout: Duration) -> Result<Shutdown, VirtError> {
        self.with_conn(|c| {
            Self::domain(c, name)?
                .shutdown()
                .map_err(|e| VirtError::op("shut down domain", e))
        })?;
        let end = Instant::now() + timeout;
        loop {
            if self.power(name)? != Some(Power::Running) {
                return Ok(Shutdown::Stopped);
            }
            if Instant::now() >= end {
                return Ok(Shutdown::StillRunning);
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
