//! Business rules, one module per resource: validation beyond syntax, state transitions, the order
//! of side effects (record intent in MySQL, act on Ceph/libvirt, record the outcome) and the undo
//! of a half-done step. Services are synchronous: the API layer runs them off the executor.

pub mod health;
pub mod hotplug;
pub mod images;
pub mod instances;
pub mod nics;
pub mod state;
pub mod volumes;

use crate::ceph::Ceph;
use crate::config::Config;
use crate::db::{self, DbConn, DbPool};
use crate::error::ApiResult;
use crate::virt::Hypervisor;
use crate::xml::templates::Templates;
use std::time::Duration;

/// Everything a service needs; shared by all requests.
pub struct Ctx {
    pub cfg: Config,
    pub db: DbPool,
    pub ceph: Ceph,
    pub hv: Hypervisor,
    pub templates: Templates,
}

impl Ctx {
    /// Reads the domain templates (a broken one is an error naming it) and connects to nothing
    /// yet: each backend connects on first use.
    pub fn new(cfg: Config) -> Result<Ctx, String> {
        let templates = Templates::load(&cfg.libvirt.template_dir)?;
        let db = db::pool(
            &cfg.database.url,
            cfg.database.pool_size,
            Duration::from_secs(cfg.database.connect_timeout_secs),
        );
        let ceph = Ceph::new(&cfg.ceph);
        let hv = Hypervisor::new(&cfg.libvirt.uri);
        Ok(Ctx {
            cfg,
            db,
            ceph,
            hv,
            templates,
        })
    }

    pub fn conn(&self) -> ApiResult<DbConn> {
        Ok(self.db.get()?)
    }
}

/// One page of a list: `page_num` from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging {
    pub page_num: u32,
    pub page_size: u32,
}

impl Paging {
    pub fn to_db(self) -> db::Page {
        db::Page {
            offset: (i64::from(self.page_num) - 1) * i64::from(self.page_size),
            limit: i64::from(self.page_size),
        }
    }
}
