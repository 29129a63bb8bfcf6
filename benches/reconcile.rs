//! Reconciliation pass benchmark on the real stack (scripts/bench.sh reconcile): N instance rows
//! (API_WEB_BENCH_ROWS, default 10000), each with a defined (not running) libvirt domain that
//! holds its root disk and its NIC, a root volume row with its RBD image, and a NIC row. Prints
//! the time to make them, the duration of a cold pass (every domain's XML read: the first
//! pass, or the first after libvirtd reconnects) and of steady passes (XML read again only for
//! domains an event named and a rolling 1/12: goal <= 2 s at 10,000), and `instance/list`
//! latency with no pass running and with passes back to back.
//! Everything it made is removed at the end (domains, RBD images, the database), also when it
//! fails; a run that was killed is cleaned up by the next one (its deployment id is kept in
//! `target/bench-reconcile.deployment`, with its database, while it runs).

mod support;

use api_web::model::{InstanceId, NicId, VolumeId};
use api_web::xml::devices::{Disk, Interface, RbdAccess};
use api_web::xml::domain::{build, DomainSpec};
use diesel::connection::SimpleConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const THREADS: usize = 8;
/// Steady passes: enough for the rolling refresh to read every domain again once.
const PASSES: usize = api_web::virt::REFRESH_INVENTORIES + 1;

fn par<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    let chunk = items.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let f = &f;
            s.spawn(move || part.iter().for_each(f));
        }
    });
}

struct Row {
    inst: InstanceId,
    vol: VolumeId,
    nic: NicId,
    mac: String,
}

fn main() {
    let n: usize = std::env::var("API_WEB_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (dbname, url, mut conn) = new_db();
    let mut cfg = config(&url);
    // The bench runs the passes itself.
    cfg.operations.reconcile_interval_secs = 3600;
    let (ctx, addr) = serve(cfg.clone());
    let deployment = ctx.deployment().unwrap();
    let marker =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-reconcile.deployment");
    if let Ok(old) = std::fs::read_to_string(&marker) {
        let mut lines = old.lines();
        if let Some(d) = lines.next() {
            remove_leftovers(&ctx, d.trim());
        }
        if let Some(db) = lines.next() {
            let _ = std::panic::catch_unwind(|| drop_db(db.trim()));
        }
    }
    std::fs::write(&marker, format!("{deployment}\n{dbname}\n")).unwrap();
    // Ids have 32 random bits: at 10,000 a repeat is likely, and the service would retry it.
    let mut seen = std::collections::HashSet::new();
    let mut fresh = |make: &dyn Fn() -> String| loop {
        let id = make();
        if seen.insert(id.clone()) {
            return id;
        }
    };
    let rows: Vec<Row> = (0..n)
        .map(|i| Row {
            inst: InstanceId::new(fresh(&|| InstanceId::generate().to_string())),
            vol: VolumeId::new(fresh(&|| VolumeId::generate().to_string())),
            nic: NicId::new(fresh(&|| NicId::generate().to_string())),
            mac: format!(
                "0a:70:69:{:02x}:{:02x}:{:02x}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ),
        })
        .collect();
    println!("{n} instances, each with a defined domain, a root RBD image and a NIC");

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        measure(&ctx, &cfg, &mut conn, addr, &deployment, &rows)
    }));
    let t = Instant::now();
    let c = &cfg.ceph;
    par(&rows, |r| {
        let _ = ctx.hv.undefine(r.inst.as_str());
        let _ = ctx.ceph.remove_image(&c.volumes_pool, r.vol.as_str());
    });
    println!("removed them in {:.1} s", t.elapsed().as_secs_f64());
    drop_db(&dbname);
    let _ = std::fs::remove_file(&marker);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}

/// Removes the domains and volume images that a killed run marked with `deployment`.
fn remove_leftovers(ctx: &api_web::service::Ctx, deployment: &str) {
    let t = Instant::now();
    let domains: Vec<String> = ctx
        .hv
        .inventory(THREADS, &|n| InstanceId::is_generated(n))
        .unwrap()
        .into_iter()
        .filter(|d| d.deployment.as_deref() == Some(deployment))
        .map(|d| d.name)
        .collect();
    par(&domains, |d| {
        let _ = ctx.hv.undefine(d);
    });
    let pool = &ctx.cfg.ceph.volumes_pool;
    let images: Vec<String> = ctx.ceph.list_images(pool).unwrap();
    par(&images, |i| {
        if VolumeId::is_generated(i)
            && ctx.ceph.owner(pool, i).ok().flatten().as_deref() == Some(deployment)
        {
            let _ = ctx.ceph.remove_image(pool, i);
        }
    });
    println!(
        "removed what a killed run left ({} domains) in {:.1} s",
        domains.len(),
        t.elapsed().as_secs_f64()
    );
}

fn measure(
    ctx: &api_web::service::Ctx,
    cfg: &api_web::config::Config,
    conn: &mut diesel::MysqlConnection,
    addr: std::net::SocketAddr,
    deployment: &str,
    rows: &[Row],
) {
    let n = rows.len();
    let t = Instant::now();
    let c = &cfg.ceph;
    par(rows, |r| {
        ctx.ceph
            .create_image(&c.volumes_pool, r.vol.as_str(), 1 << 20, deployment)
            .unwrap()
    });
    println!("made {n} RBD images in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let access = RbdAccess {
        mon_hosts: &c.mon_hosts,
        user: &c.qemu_user,
        secret_uuid: &c.secret_uuid,
    };
    let template = ctx.templates.for_os("Linux").to_string();
    par(rows, |r| {
        let disks = [Disk::rbd(
            &access,
            &c.volumes_pool,
            r.vol.as_str(),
            "vda",
            r.vol.as_str(),
        )];
        let ifs = [Interface::bridge(&cfg.network.default_bridge, &r.mac)];
        let uuid = uuid::Uuid::new_v4().to_string();
        let spec = DomainSpec {
            domain_type: &cfg.libvirt.domain_type,
            name: r.inst.as_str(),
            uuid: &uuid,
            title: "bench",
            description: "",
            instance_id: r.inst.as_str(),
            deployment,
            memory_mib: 64,
            vcpu: 1,
            machine: &cfg.libvirt.machine,
            emulator: &cfg.libvirt.emulator,
            disks: &disks,
            interfaces: &ifs,
            console_log: "/dev/null",
        };
        ctx.hv.define(&build(&template, &spec).unwrap()).unwrap();
    });
    println!("defined {n} domains in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let old = api_web::db::now() - 60;
    for part in rows.chunks(1000) {
        let mut inst = vec![];
        let mut vol = vec![];
        let mut nic = vec![];
        for r in part {
            inst.push(format!(
                "('{}', 'bench', 'stopped', '10.0.0.1', 'h', 'host-00000000', 1, 64, 'ami-00000000', 1, 100, 'done', {old}, {old})",
                r.inst
            ));
            vol.push(format!(
                "('{}', 'root', 1, 'in-use', '{}', 1, 'vda', {old}, {old}, {old})",
                r.vol, r.inst
            ));
            nic.push(format!(
                "('{}', 'eth', '{}', '{}', 'attached', '{}', {old}, {old}, {old})",
                r.nic, r.mac, cfg.network.default_bridge, r.inst
            ));
        }
        conn.batch_execute(&format!(
            "INSERT INTO instance (instance_id, instance_name, status, ip, host_ip, host_id, cpu, memory, image_id, root_size, progress, progress_step, create_time, update_time) VALUES {};
             INSERT INTO volume (volume_id, volume_name, volume_size, status, instance_id, is_root, target_dev, attach_time, create_time, update_time) VALUES {};
             INSERT INTO network_interface (network_interface_id, network_interface_name, mac, bridge, status, instance_id, attach_time, create_time, update_time) VALUES {};",
            inst.join(","),
            vol.join(","),
            nic.join(",")
        ))
        .unwrap();
    }
    println!(
        "inserted {} rows in {:.1} s",
        3 * n,
        t.elapsed().as_secs_f64()
    );

    let mut http = Http::connect(addr);
    let list = |http: &mut Http| {
        timed(|| {
            let (s, b) = http.call("GET", "/api/v1/instance/list?page_size=100", None);
            assert_eq!(s, 200, "{b}");
        })
    };
    let mut quiet: Vec<Duration> = (0..200).map(|_| list(&mut http)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut http = Http::connect(addr);
            let mut v = vec![];
            while !stop.load(Ordering::Relaxed) {
                v.push(list(&mut http));
            }
            v
        })
    };
    // Cold: every domain's XML read (the first pass, or the first after a reconnect).
    let mut cold = vec![];
    for _ in 0..3 {
        ctx.hv.forget(rows.iter().map(|r| r.inst.to_string()));
        let r = api_web::service::reconcile::pass(ctx).unwrap();
        assert!(r.repaired.is_empty() && r.unrepaired.is_empty());
        cold.push(r.took);
    }
    let mut passes = vec![];
    for _ in 0..PASSES {
        let r = api_web::service::reconcile::pass(ctx).unwrap();
        assert!(r.domains >= n, "{} domains", r.domains);
        assert!(
            r.repaired.is_empty(),
            "{:?}",
            &r.repaired[..r.repaired.len().min(5)]
        );
        assert!(
            r.unrepaired.is_empty(),
            "{:?}",
            &r.unrepaired[..r.unrepaired.len().min(5)]
        );
        passes.push(r.took);
    }
    stop.store(true, Ordering::Relaxed);
    let mut busy = lister.join().unwrap();
    println!("--- a reconciliation pass over {n} instances (+{n} volumes, +{n} NICs)");
    report("cold pass (every domain's XML read)", &mut cold);
    report("pass, steady (goal <= 2 s at 10,000)", &mut passes);
    report("instance/list, no pass running", &mut quiet);
    report("instance/list, passes back to back", &mut busy);
}
