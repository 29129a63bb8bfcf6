//! Live migration between hosts that share the storage (Ceph RBD: no disk is copied).

use super::{Hypervisor, VirtError};
use virt::domain::MigrateParameters;
use virt::sys;

/// How a running migration stands: memory bytes sent and in all (libvirt's job info).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub processed: u64,
    pub total: u64,
}

impl Hypervisor {
    /// Live-migrates the running (or paused) domain `name` to `target`: persistent there,
    /// undefined here once it runs there. With `p2p` (`target_uri` must be a network URI this
    /// host's libvirtd can reach), this host's libvirtd drives the migration; else it is a
    /// managed one over api-web's two connections. QEMU's stream goes to `tcp://address` (the
    /// target's QEMU listens on `address`). Returns when it ended; on failure the domain still
    /// runs here (libvirt rolls back).
    pub fn migrate_live(
        &self,
        name: &str,
        target: &Hypervisor,
        address: &str,
        p2p: bool,
    ) -> Result<(), VirtError> {
        let params = || MigrateParameters {
            uri: Some(format!("tcp://{address}")),
            listen_address: Some(address.to_string()),
            ..Default::default()
        };
        let flags = sys::VIR_MIGRATE_LIVE
            | sys::VIR_MIGRATE_PERSIST_DEST
            | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
        if p2p {
            let uri = target.uri().to_string();
            return self.with_conn(|c| {
                let d = Self::domain(c, name)?;
                d.migrate_to_uri3(Some(&uri), params(), flags | sys::VIR_MIGRATE_PEER2PEER)
                    .map_err(|e| VirtError::op("migrate domain", e))
            });
        }
        self.with_conn(|c| {
            let d = Self::domain(c, name)?;
            target.with_conn(|dc| {
                d.migrate3(dc, params(), flags)
                    .map(|_| ())
                    .map_err(|e| VirtError::op("migrate domain", e))
            })
        })
    }

    /// The memory a running migration of `name` has sent, `None` when no job runs.
    pub fn migration_progress(&self, name: &str) -> Option<Progress> {
        self.with_conn(|c| {
            let d = Self::domain(c, name)?;
            let j = d
                .job_info()
                .map_err(|e| VirtError::op("read job info", e))?;
            Ok(
                (j.r#type != sys::VIR_DOMAIN_JOB_NONE as i32).then(|| Progress {
                    processed: j.data_processed.unwrap_or(0),
                    total: j.data_total.unwrap_or(0),
                }),
            )
        })
        .ok()
        .flatten()
    }

    /// Aborts the job (a migration) running on `name`.
    pub fn abort_job(&self, name: &str) -> Result<(), VirtError> {
        self.on_domain(name, "abort job", |d| {
            // SAFETY: `d` is a live domain handle for the duration of the call.
            let r = unsafe { sys::virDomainAbortJob(d.as_ptr()) };
            if r < 0 {
                Err(virt::error::Error::last_error())
            } else {
                Ok(())
            }
        })
    }
}
