//! Backends that crash under api-web: libvirtd, MariaDB and the Ceph OSD are killed (SIGKILL,
//! by `scripts/dev-stack.sh kill`) in the middle of operations, then started again. Each test
//! checks what users see meanwhile (503 naming the backend within 2 s, unrelated requests still
//! answered) and that afterwards MySQL, libvirt and Ceph agree with no row left transitional.
//!
//! They stop daemons every other test uses, so each first takes the stack alone
//! (`common::stack_alone`): it waits until the tests running now end, and no other test starts
//! until it is done.

use crate::common::*;
use crate::instances::{
    count, create, domain_exists, drop_image, test_image, virsh, wait_created, wait_for,
};
use crate::operations::ApiWeb;
use crate::volumes::{assert_consistent, new_volume, serials};
use actix_web::test;
use api_web::api;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `scripts/dev-stack.sh <args>`; panics when it fails.
fn stack(args: &[&str]) {
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-stack.sh"))
            .args(args)
            .output()
            .expect("run scripts/dev-stack.sh");
    assert!(
        out.status.success(),
        "dev-stack.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Asks the child process to create an instance (1 vCPU, 128 MiB); its id, once accepted.
fn create_in(child: &ApiWeb, image: &str, name: &str) -> String {
    let r = child
        .call(
            "POST",
            "/api/v1/instance/create",
            &json!({"instance_name": name, "image_id": image, "cpu": 1, "memory": 128}).to_string(),
        )
        .expect("create answers");
    r["data"]["instance_id"]
        .as_str()
        .expect("accepted")
        .to_string()
}

/// Brings every daemon back even when the test fails half-way.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        stack(&["up"]);
    }
}

/// A request's answer within 2 s, with its status.
async fn timed(app: &impl App, uri: &str) -> (u16, Value) {
    let t0 = Instant::now();
    let r = get(app, uri).await;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{uri} took {:?}",
        t0.elapsed()
    );
    (r.status.as_u16(), r.body.clone())
}

/// Waits until `f` holds, at most `secs`.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < end, "after {secs} s: {what}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of(t: &TestApp, table: &str, key: &str, id: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct S {
        #[diesel(sql_type = diesel::sql_types::Text)]
        status: String,
    }
    diesel::sql_query(format!("SELECT status FROM {table} WHERE {key} = '{id}'"))
        .get_result::<S>(&mut t.db.conn())
        .map(|s| s.status)
        .unwrap_or_else(|_| "gone".into())
}

/// libvirtd killed while a mount waits at its `plugging` step, then started again:
/// - meanwhile /healthz names libvirt within 2 s, a power action answers 503
///   `libvirt_unavailable` within 2 s, and lists still answer;
/// - the mount answers 503 and its volume is settled from the domain's XML once libvirtd is
///   back (the takeover), not left `attaching`;
/// - api-web reconnects by itself and libvirt's events flow again: a `virsh destroy` reaches
///   the row within 2 s with the periodic pass switched off.
#[actix_web::test]
async fn libvirtd_killed_mid_attach_and_restarted() {
    let _alone = stack_alone();
    let t = TestApp::with_config(|c| c.operations.reconcile_interval_secs = 600);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let inst = create(&app, &image, "survivor").await;
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    let vol = new_volume(&app, "data", 1).await;
    let child = ApiWeb::start(&t, "volume.attach:plugging=sleep(2000)");
    let _restore = Restore;
    let mounted = std::thread::scope(|s| {
        let m = s.spawn(|| {
            child.call(
                "POST",
                "/api/v1/volume/mount",
                &json!({"volume_id": vol, "instance_id": inst}).to_string(),
            )
        });
        std::thread::sleep(Duration::from_millis(700));
        stack(&["kill", "libvirtd"]);
        m.join().unwrap()
    });
    let mounted = mounted.expect("the mount answers");
    assert_eq!(mounted["error"], "libvirt_unavailable", "{mounted}");
    let (code, h) = timed(&app, "/healthz").await;
    assert_eq!(
        (code, &h["data"]["libvirt"]["ok"]),
        (503, &json!(false)),
        "{h}"
    );
    let t0 = Instant::now();
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": inst}),
    )
    .await
    .assert_error(503, "libvirt_unavailable");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(timed(&app, "/api/v1/volume/list").await.0, 200);

    stack(&["up"]);
    until(20, "the volume settled from the domain XML", || {
        status_of(&t, "volume", "volume_id", &vol) == "available"
    })
    .await;
    let (persistent, live) = serials(&inst);
    assert!(!persistent.contains(&vol) && !live.contains(&vol));
    until(10, "reconnected by itself", || t.ctx.hv.is_connected()).await;
    assert_eq!(status_of(&t, "instance", "instance_id", &inst), "running");
    let (ok, text) = virsh(&["destroy", &inst]);
    assert!(ok, "{text}");
    let t0 = Instant::now();
    wait_for(&app, &inst, 2, |d| d["status"] == "stopped").await;
    println!(
        "after a libvirtd restart, virsh destroy -> row in {:?}",
        t0.elapsed()
    );
    // And the normal path works again.
    let r = post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await;
    assert_eq!(r.ok()["status"], "in-use");
    assert_consistent(&t);
    drop(child);
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst, "delete_attached": true}),
    )
    .await
    .ok();
    assert!(!domain_exists(&inst));
    drop_image(&app, &image).await;
}

/// libvirtd killed while a create waits before defining its domain and a destroy waits before
/// undefining its domain; started again 3 s later. Neither is recorded as failed while libvirt
/// is out (the create stays `creating`, the destroy answers 503 `libvirt_unavailable` and stays
/// `destroying`): their outcome needs libvirt, so both go to the takeover, which settles them
/// once libvirtd answers: the create undone to `error` with the reason, the destroy finished.
#[actix_web::test]
async fn libvirtd_killed_mid_create_and_mid_destroy() {
    let _alone = stack_alone();
    let t = TestApp::with_config(|c| c.operations.reconcile_interval_secs = 600);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let doomed = create(&app, &image, "doomed").await;
    assert_eq!(wait_created(&app, &doomed).await["status"], "running");
    let roots = |id: &str| -> Vec<String> {
        let d = crate::operations::volumes_of(&t, id);
        assert!(!d.is_empty(), "instance {id} has a root volume row");
        d
    };
    let doomed_root = roots(&doomed);
    let child = ApiWeb::start(
        &t,
        "instance.create:defining_the_domain=sleep(6000);instance.destroy:undefining_the_domain=sleep(3000)",
    );
    let _restore = Restore;
    let cut = create_in(&child, &image, "cut");
    child.wait_failpoint("instance.create:defining_the_domain", 30);
    let cut_root = roots(&cut);
    let destroyed = std::thread::scope(|s| {
        let d = s.spawn(|| {
            child.call(
                "POST",
                "/api/v1/instance/destroy",
                &json!({"instance_id": doomed}).to_string(),
            )
        });
        child.wait_failpoint("instance.destroy:undefining_the_domain", 30);
        stack(&["kill", "libvirtd"]);
        d.join().unwrap()
    });
    let destroyed = destroyed.expect("the destroy answers");
    assert_eq!(destroyed["error"], "libvirt_unavailable", "{destroyed}");
    assert!(
        destroyed["message"]
            .as_str()
            .unwrap_or("")
            .contains("goes on by itself"),
        "{destroyed}"
    );
    // The create's define fails too (its sleep ends); wait until it has been handed over,
    // then a few takeover passes more: neither moves while libvirt is out.
    until(10, "the create handed to the takeover", || {
        crate::operations::released(&t, &cut)
    })
    .await;
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_of(&t, "instance", "instance_id", &cut), "creating");
    assert_eq!(
        status_of(&t, "instance", "instance_id", &doomed),
        "destroying"
    );

    let t0 = Instant::now();
    stack(&["up"]);
    until(30, "the destroy finished", || {
        status_of(&t, "instance", "instance_id", &doomed) == "gone"
    })
    .await;
    let d = wait_for(&app, &cut, 30, |d| d["status"] != "creating").await;
    println!(
        "libvirtd back -> both settled in {:?}; the create: {}",
        t0.elapsed(),
        d["error_message"]
    );
    assert_eq!(d["status"], "error", "{d}");
    let msg = d["error_message"].as_str().unwrap();
    assert!(msg.contains("libvirt") && msg.contains("removed"), "{msg}");
    for id in [&cut, &doomed] {
        assert!(!domain_exists(id), "{id}");
    }
    for v in doomed_root.iter().chain(&cut_root) {
        assert_eq!(rbd_size(&format!("{}/{v}", t.volumes_pool())), None, "{v}");
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(running_operations(&t), 0);
    drop(child);
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": cut}),
    )
    .await
    .ok();
    drop_image(&app, &image).await;
}

/// MariaDB killed while a destroy waits between its libvirt and Ceph steps, and started again
/// 3 s later: meanwhile requests that need MySQL answer 503 `database_unavailable` within 2 s;
/// the destroy carries on (each write retried) and ends with nothing left anywhere.
#[actix_web::test]
async fn mariadb_killed_mid_destroy() {
    let _alone = stack_alone();
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let inst = create(&app, &image, "doomed").await;
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    let root = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}"))
        .await
        .ok()["volumes"][0]["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    let child = ApiWeb::start(&t, "instance.destroy:removing_disks=sleep(1500)");
    let _restore = Restore;
    let destroyed = std::thread::scope(|s| {
        let d = s.spawn(|| {
            child.call(
                "POST",
                "/api/v1/instance/destroy",
                &json!({"instance_id": inst}).to_string(),
            )
        });
        std::thread::sleep(Duration::from_millis(800));
        stack(&["kill", "mariadb"]);
        let t0 = Instant::now();
        let r = child
            .call("GET", "/api/v1/volume/list", "")
            .expect("an answer");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert_eq!(r["error"], "database_unavailable", "{r}");
        std::thread::sleep(Duration::from_secs(3));
        stack(&["up"]);
        d.join().unwrap()
    });
    let destroyed = destroyed.expect("the destroy answers");
    assert_eq!(destroyed["code"], 0, "{destroyed}");
    assert!(!domain_exists(&inst));
    assert_eq!(rbd_size(&format!("{}/{root}", t.volumes_pool())), None);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(running_operations(&t), 0);
    drop(child);
    drop_image(&app, &image).await;
}

/// The Ceph OSD killed while a create is under way, and started again 3 s later: meanwhile
/// /healthz names Ceph and requests that need it answer 503 `ceph_unavailable` within 2 s
/// while lists answer; the create ends `running` or `error` with a message, never stuck; and
/// destroy then leaves no RBD image behind.
#[actix_web::test]
async fn ceph_osd_killed_mid_create() {
    let _alone = stack_alone();
    // Short librados timeouts in this process: a call caught by the outage must give up.
    let t = TestApp::with_config(|c| c.ceph.op_timeout_secs = 2);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let _restore = Restore;
    let child = ApiWeb::start(&t, "instance.create:cloning_the_root_disk=sleep(1500)");
    let inst = create_in(&child, &image, "cut");
    std::thread::sleep(Duration::from_millis(300));
    stack(&["kill", "ceph-osd"]);
    let t0 = Instant::now();
    let mut h;
    loop {
        h = timed(&app, "/healthz").await;
        if h.1["data"]["ceph"]["ok"] == json!(false) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "healthz still says ceph ok: {}",
            h.1
        );
    }
    println!("OSD killed -> /healthz names ceph after {:?}", t0.elapsed());
    let t1 = Instant::now();
    post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "v", "volume_size": 1}),
    )
    .await
    .assert_error(503, "ceph_unavailable");
    assert!(t1.elapsed() < Duration::from_secs(2), "{:?}", t1.elapsed());
    assert_eq!(timed(&app, "/api/v1/instance/list").await.0, 200);
    // A call that needs the OSD (librbd opens the image: its header, its watch) gives up
    // within the op timeout instead of waiting for the OSD.
    let t2 = Instant::now();
    let images = t.ctx.cfg.ceph.images_pool.clone();
    let read = t.ctx.ceph.image_size(&images, &image);
    println!(
        "image read during the outage: {read:?} after {:?}",
        t2.elapsed()
    );
    assert!(read.is_err(), "{read:?}");
    assert!(t2.elapsed() < Duration::from_secs(4), "{:?}", t2.elapsed());
    stack(&["up"]);
    // A restarted OSD serves I/O only once the crashed interval's read lease ran out (about
    // 16 s): wait for a real read of the image, not only for the OSD to be up.
    until(60, "ceph serves reads again", || {
        t.ctx.ceph.ensure_up().is_ok() && t.ctx.ceph.image_size(&images, &image).is_ok()
    })
    .await;
    // The create caught by the outage ends, either way, with nothing stuck.
    let d = wait_for(&app, &inst, 60, |d| d["status"] != "creating").await;
    println!(
        "create during the outage ended {} ({})",
        d["status"], d["error_message"]
    );
    assert!(d["status"] == "error" || d["status"] == "running", "{d}");
    if d["status"] == "error" {
        assert!(!d["error_message"].as_str().unwrap_or("").is_empty(), "{d}");
    }
    drop(child);
    let detail = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}")).await;
    let roots: Vec<String> = detail.ok()["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["volume_id"].as_str().unwrap().to_string())
        .collect();
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst}),
    )
    .await
    .ok();
    assert!(!domain_exists(&inst));
    for r in roots {
        assert_eq!(rbd_size(&format!("{}/{r}", t.volumes_pool())), None, "{r}");
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    drop_image(&app, &image).await;
}
