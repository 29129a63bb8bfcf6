//! Reachability of each backend, checked independently.

use super::Ctx;
use diesel::connection::SimpleConnection;

pub struct Check {
    pub ok: bool,
    pub detail: String,
}

fn check(r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check { ok: true, detail },
        Err(detail) => Check { ok: false, detail },
    }
}

pub fn mysql(ctx: &Ctx) -> Check {
    check(
        ctx.db
            .get()
            .map_err(|e| e.to_string())
            .and_then(|mut c| c.batch_execute("SELECT 1").map_err(|e| e.to_string()))
            .map(|_| "reachable".to_string()),
    )
}

pub fn libvirt(ctx: &Ctx) -> Check {
    check(ctx.hv.check().map_err(|e| e.to_string()))
}

pub fn ceph(ctx: &Ctx) -> Check {
    let pools = [
        ctx.cfg.ceph.images_pool.as_str(),
        ctx.cfg.ceph.volumes_pool.as_str(),
    ];
    check(
        ctx.ceph
            .check(&pools)
            .map(|_| format!("reachable, pools {} present", pools.join(" and ")))
            .map_err(|e| e.to_string()),
    )
}
