//! Kill at every step: the real api-web binary runs as a child process, is held at one failpoint
//! of one operation (`operations::STEPS`, and `finishing` of each kind), and is killed there
//! with SIGKILL. The in-process app on the same database (another api-web process) takes the
//! operation over when the lease runs out. Then nothing may be left transitional or running past
//! the lease plus 5 s, and a reconciliation pass must find zero drift: MySQL agrees with the
//! persistent and live XML of every domain and with the RBD images of both pools, and nothing
//! this deployment made is left without a row.
//!
//! CI runs `SUBSET` (every kind once); `API_WEB_KILL_SWEEP=full scripts/test.sh --test it sweep`
//! runs every kill point, `API_WEB_KILL_SWEEP=<kind>:<step>[,...]` the ones named.

use crate::client::{client, Client};
use crate::common::*;
use crate::instances::{count, domain_exists, test_image, wait_for};
use crate::operations::{send_and_forget, send_bytes_and_forget, ApiWeb};
use api_web::service::operations::{FINISHING, STEPS};
use api_web::service::reconcile::{self, Orphan};
use diesel::prelude::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Kill points CI runs: each kind of operation once, at a step that makes something or at its
/// end (`finishing`: everything made and recorded, the operation not ended).
const SUBSET: &[&str] = &[
    "instance.create:writing_the_config_drive",
    "instance.create:defining_the_domain",
    "instance.create:finishing",
    "instance.destroy:removing_disks",
    "instance.turnon:starting_the_domain",
    "instance.turnoff:finishing",
    "instance.pause:suspending_the_domain",
    "instance.migrate:migrating",
    "snapshot.create:resuming_the_domain",
    "snapshot.delete:removing_the_RBD_snapshots",
    "instance.restore:rolling_back_the_disks",
    "volume.restore:rolling_back_the_volume",
    "image.copy:copying_the_snapshot",
    "image.upload:converting_the_image",
    "volume.attach:plugging",
    "volume.detach:finishing",
    "nic.attach:finishing",
    "nic.detach:unplugging",
    "image.create:creating_the_RBD_image",
    "volume.create:finishing",
    "image.delete:removing_the_RBD_image",
    "volume.delete:finishing",
];

/// Short leases: a kill is settled within seconds.
const LEASE_SECS: u64 = 3;
const TAKEOVER_SECS: u64 = 1;

fn failpoint(kind: &str, step: &str) -> String {
    format!("{kind}:{}", step.replace(' ', "_"))
}

/// Every kill point: each saved step of each kind, and its `finishing`.
fn every_point() -> Vec<(String, String)> {
    let mut out = vec![];
    for (kind, steps) in STEPS {
        for step in steps.iter().chain([&FINISHING]) {
            out.push((kind.to_string(), step.to_string()));
        }
    }
    out
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
}

fn ids(t: &TestApp, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<Id>(&mut t.db.conn())
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// Running operations and rows in a transitional status.
fn unsettled(t: &TestApp) -> i64 {
    count(
        &t.db,
        "SELECT (SELECT COUNT(*) FROM operation WHERE status = 'running') \
         + (SELECT COUNT(*) FROM instance WHERE status IN ('creating', 'destroying', 'starting', 'stopping', 'pausing', 'resuming', 'migrating', 'rebooting', 'snapshotting', 'restoring')) \
         + (SELECT COUNT(*) FROM snapshot WHERE status IN ('creating', 'deleting', 'restoring')) \
         + (SELECT COUNT(*) FROM volume WHERE status IN ('creating', 'deleting', 'attaching', 'detaching', 'restoring')) \
         + (SELECT COUNT(*) FROM network_interface WHERE status IN ('attaching', 'detaching')) \
         + (SELECT COUNT(*) FROM image WHERE status IN ('creating', 'deleting')) AS n",
    )
}

/// The request a kill point interrupts, with what it needs made first.
struct Request {
    path: &'static str,
    body: Value,
    /// A body that is a file (an upload), sent instead of `body`.
    file: Option<Vec<u8>>,
}

async fn running_instance<A: App>(c: &Client<A>, image: &str) -> String {
    let r = c
        .post::<Value>(
            "/api/v1/instance/create",
            json!({"instance_name": "sweep", "image_id": image, "cpu": 1, "memory": 128}),
        )
        .await
        .good();
    let id = r["instance_id"].as_str().unwrap().to_string();
    wait_for(&c.app, &id, 90, |d| d["status"] == "running").await;
    id
}

async fn stopped_instance<A: App>(c: &Client<A>, image: &str) -> String {
    let id = running_instance(c, image).await;
    c.post::<Value>(
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await
    .good();
    id
}

async fn prepare<A: App>(c: &Client<A>, kind: &str, step: &str, image: &str) -> Request {
    if kind == "image.upload" {
        return Request {
            path: "/api/v1/images/upload?image_name=swept&os_type=Linux",
            body: Value::Null,
            file: Some(crate::uploads::test_qcow2()),
        };
    }
    let (path, body) = match kind {
        "instance.create" => {
            let v = c.volume_create("given", 1).await.volume_id.to_string();
            (
                "/api/v1/instance/create",
                json!({"instance_name": "swept", "image_id": image, "cpu": 1, "memory": 128,
                       "volume_ids": [v], "data_volume_size": 1}),
            )
        }
        "instance.destroy" => {
            let id = running_instance(c, image).await;
            ("/api/v1/instance/destroy", json!({"instance_id": id}))
        }
        "instance.migrate" => {
            // A second host (the dev stack's first extra libvirtd), once per database, in
            // maintenance: the other kill points' instances stay on the configured host (their
            // checks ask its libvirtd); the migration pins it as its target.
            let uri = env("API_WEB_EXTRA_HOST_URIS");
            let uri = uri
                .split_whitespace()
                .next()
                .expect("scripts/dev-stack.sh up --hosts 2")
                .to_string();
            let hosts: Value = c.get("/api/v1/host/list").await.good();
            let known = hosts["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["uri"] == uri.as_str())
                .map(|h| h["host_id"].as_str().unwrap().to_string());
            let target = match known {
                Some(h) => h,
                None => {
                    let h: Value = c
                        .post("/api/v1/host/add", json!({"uri": uri, "enabled": false}))
                        .await
                        .good();
                    h["host_id"].as_str().unwrap().to_string()
                }
            };
            let id = if step == "moving the definition" {
                stopped_instance(c, image).await
            } else {
                running_instance(c, image).await
            };
            (
                "/api/v1/instance/migrate",
                json!({"instance_id": id, "target_host_id": target}),
            )
        }
        "instance.turnon" => {
            let id = stopped_instance(c, image).await;
            ("/api/v1/instance/turnon", json!({"instance_id": id}))
        }
        "instance.turnoff" => {
            let id = running_instance(c, image).await;
            (
                "/api/v1/instance/turnoff",
                json!({"instance_id": id, "force": true}),
            )
        }
        "instance.pause" | "instance.reboot" | "instance.reset" => {
            let id = running_instance(c, image).await;
            let path = match kind {
                "instance.pause" => "/api/v1/instance/pause",
                "instance.reboot" => "/api/v1/instance/reboot",
                _ => "/api/v1/instance/reset",
            };
            (path, json!({"instance_id": id}))
        }
        "instance.resume" => {
            let id = running_instance(c, image).await;
            c.post::<Value>("/api/v1/instance/pause", json!({"instance_id": id}))
                .await
                .good();
            ("/api/v1/instance/resume", json!({"instance_id": id}))
        }
        "volume.attach" | "volume.detach" => {
            let id = stopped_instance(c, image).await;
            let v = c.volume_create("plugged", 1).await.volume_id.to_string();
            if kind == "volume.detach" {
                c.volume_mount(&v, &id).await.good();
            }
            let path = if kind == "volume.attach" {
                "/api/v1/volume/mount"
            } else {
                "/api/v1/volume/unmount"
            };
            (path, json!({"volume_id": v, "instance_id": id}))
        }
        "nic.attach" | "nic.detach" => {
            let id = stopped_instance(c, image).await;
            let n = c
                .nic_create(json!({"network_interface_name": "plugged"}))
                .await
                .good()
                .network_interface_id
                .to_string();
            if kind == "nic.detach" {
                c.nic_attach(&n, &id).await.good();
            }
            let path = if kind == "nic.attach" {
                "/api/v1/network/attach"
            } else {
                "/api/v1/network/detach"
            };
            (path, json!({"network_interface_id": n, "instance_id": id}))
        }
        "image.create" => (
            "/api/v1/images/create",
            json!({"image_name": "swept", "image_size": 1 << 20, "os_type": "Linux"}),
        ),
        "volume.create" => (
            "/api/v1/volume/create",
            json!({"volume_name": "swept", "volume_size": 1}),
        ),
        "image.delete" => {
            let r = c
                .post::<Value>(
                    "/api/v1/images/create",
                    json!({"image_name": "doomed", "image_size": 1 << 20, "os_type": "Linux"}),
                )
                .await
                .good();
            (
                "/api/v1/images/delete",
                json!({"image_id": r["image_id"], "del_file": true}),
            )
        }
        "volume.delete" => {
            let v = c.volume_create("doomed", 1).await.volume_id.to_string();
            ("/api/v1/volume/delete", json!({"volume_id": v}))
        }
        "snapshot.create" => {
            let id = running_instance(c, image).await;
            (
                "/api/v1/snapshot/create",
                json!({"instance_id": id, "snapshot_name": "swept"}),
            )
        }
        "snapshot.delete" => {
            let v = c.volume_create("held", 1).await.volume_id.to_string();
            let s = c
                .post::<Value>(
                    "/api/v1/snapshot/create",
                    json!({"volume_id": v, "snapshot_name": "doomed"}),
                )
                .await
                .good();
            (
                "/api/v1/snapshot/delete",
                json!({"snapshot_id": s["snapshot_id"]}),
            )
        }
        "instance.restore" => {
            let id = stopped_instance(c, image).await;
            let s = c
                .post::<Value>(
                    "/api/v1/snapshot/create",
                    json!({"instance_id": id, "snapshot_name": "kept"}),
                )
                .await
                .good();
            (
                "/api/v1/instance/restore",
                json!({"instance_id": id, "snapshot_id": s["snapshot_id"]}),
            )
        }
        "volume.restore" => {
            let v = c.volume_create("rolled", 1).await.volume_id.to_string();
            let s = c
                .post::<Value>(
                    "/api/v1/snapshot/create",
                    json!({"volume_id": v, "snapshot_name": "then"}),
                )
                .await
                .good();
            c.post::<Value>(
                "/api/v1/volume/resize",
                json!({"volume_id": v, "volume_size": 2}),
            )
            .await
            .good();
            (
                "/api/v1/volume/restore",
                json!({"volume_id": v, "snapshot_id": s["snapshot_id"]}),
            )
        }
        "image.copy" => {
            let v = c.volume_create("copied", 1).await.volume_id.to_string();
            let s = c
                .post::<Value>(
                    "/api/v1/snapshot/create",
                    json!({"volume_id": v, "snapshot_name": "source"}),
                )
                .await
                .good();
            (
                "/api/v1/images/create_from_snapshot",
                json!({"snapshot_id": s["snapshot_id"], "image_name": "copy", "os_type": "Linux"}),
            )
        }
        other => panic!("the sweep does not know how to run a {other}: add it to prepare()"),
    };
    Request {
        path,
        body,
        file: None,
    }
}

/// Removes every row (and so what it names) but the test image, through the API.
async fn wipe<A: App>(c: &Client<A>, t: &TestApp, image: &str) {
    for id in ids(t, "SELECT snapshot_id AS id FROM snapshot") {
        c.post::<Value>("/api/v1/snapshot/delete", json!({"snapshot_id": id}))
            .await
            .good();
    }
    for id in ids(t, "SELECT instance_id AS id FROM instance") {
        c.post::<Value>(
            "/api/v1/instance/destroy",
            json!({"instance_id": id, "delete_attached": true}),
        )
        .await
        .good();
    }
    for id in ids(t, "SELECT volume_id AS id FROM volume") {
        c.volume_delete(&id).await.good();
    }
    for id in ids(
        t,
        "SELECT network_interface_id AS id FROM network_interface",
    ) {
        c.nic_delete(&id).await.good();
    }
    for id in ids(
        t,
        &format!("SELECT image_id AS id FROM image WHERE image_id <> '{image}'"),
    ) {
        c.post::<Value>(
            "/api/v1/images/delete",
            json!({"image_id": id, "del_file": true}),
        )
        .await
        .good();
    }
}

/// Zero drift: a pass over settled rows repairs nothing and reports nothing, and no domain or
/// RBD image marked as this deployment's is without a row.
fn assert_no_drift(t: &TestApp, at: &str) {
    std::thread::sleep(Duration::from_millis(1100));
    let r = reconcile::pass(&t.ctx).unwrap();
    assert!(r.repaired.is_empty(), "{at}: drift repaired: {r:#?}");
    assert!(r.unrepaired.is_empty(), "{at}: drift: {r:#?}");
    let mine = t.ctx.deployment().unwrap();
    // (Pools and libvirt are shared with concurrent tests: their images are orphans here, but
    // not marked with this database's deployment.)
    let leaked: Vec<&Orphan> = r
        .orphans
        .iter()
        .filter(|o| match o {
            Orphan::Domain { .. } => true,
            Orphan::Rbd { pool, name } => {
                t.ctx.ceph.owner(pool, name).ok().flatten().as_deref() == Some(mine.as_str())
            }
        })
        .collect();
    assert!(leaked.is_empty(), "{at}: left without a row: {leaked:?}");
}

/// What each kind must come to after its takeover, beyond zero drift.
fn assert_outcome(t: &TestApp, kind: &str, step: &str, req: &Request) {
    let at = failpoint(kind, step);
    match kind {
        "instance.create" => {
            let rows = ids(t, "SELECT instance_id AS id FROM instance");
            assert_eq!(rows.len(), 1, "{at}");
            let id = &rows[0];
            let status = ids(
                t,
                &format!("SELECT status AS id FROM instance WHERE instance_id = '{id}'"),
            );
            if step == FINISHING {
                // Everything was made and recorded: the takeover keeps it.
                assert_eq!(status, ["running"], "{at}");
            } else {
                // Undone: no domain; the given volume available again; the new data volume,
                // the root volume, the config drive and the NIC the create made are gone.
                assert_eq!(status, ["error"], "{at}");
                assert!(!domain_exists(id), "{at}: domain kept");
                let drive = format!("{}/{id}.cidata", t.volumes_pool());
                assert!(!rbd(&["info", &drive]).0, "{at}: config drive {drive} kept");
                let vols = ids(t, "SELECT status AS id FROM volume");
                assert_eq!(vols, ["available"], "{at}: volumes {vols:?}");
                assert_eq!(
                    count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
                    0,
                    "{at}"
                );
            }
        }
        "instance.destroy" => {
            assert_eq!(
                count(&t.db, "SELECT COUNT(*) AS n FROM instance"),
                0,
                "{at}"
            );
            let id = req.body["instance_id"].as_str().unwrap();
            assert!(!domain_exists(id), "{at}");
        }
        "snapshot.create" => {
            let id = req.body["instance_id"].as_str().unwrap();
            let status = ids(t, "SELECT status AS id FROM snapshot");
            let want = if step == FINISHING {
                "available"
            } else {
                "error"
            };
            assert_eq!(status, [want], "{at}");
            // The guest runs again, and an undone snapshot left no RBD snapshot behind.
            let inst = ids(
                t,
                &format!("SELECT status AS id FROM instance WHERE instance_id = '{id}'"),
            );
            assert_eq!(inst, ["running"], "{at}");
            assert_eq!(crate::instances::domstate(id), "running", "{at}");
            let kept = count(&t.db, "SELECT COUNT(*) AS n FROM snapshot_volume");
            assert_eq!(kept, if step == FINISHING { 1 } else { 0 }, "{at}");
            for v in ids(t, "SELECT volume_id AS id FROM volume") {
                let (_, out) = rbd(&["snap", "ls", &format!("{}/{v}", t.volumes_pool())]);
                assert_eq!(out.contains("snap-"), step == FINISHING, "{at}: {out}");
            }
        }
        "snapshot.delete" => {
            assert_eq!(
                count(&t.db, "SELECT COUNT(*) AS n FROM snapshot"),
                0,
                "{at}"
            );
            for v in ids(t, "SELECT volume_id AS id FROM volume") {
                let (_, out) = rbd(&["snap", "ls", &format!("{}/{v}", t.volumes_pool())]);
                assert!(!out.contains("snap-"), "{at}: {out}");
            }
        }
        "instance.restore" => {
            let id = req.body["instance_id"].as_str().unwrap();
            let inst = ids(
                t,
                &format!("SELECT status AS id FROM instance WHERE instance_id = '{id}'"),
            );
            assert_eq!(inst, ["stopped"], "{at}");
            let snap = ids(t, "SELECT status AS id FROM snapshot");
            assert_eq!(snap, ["available"], "{at}");
        }
        "volume.restore" => {
            // Rolled back to its 1 GiB, in the row and in Ceph.
            let v = req.body["volume_id"].as_str().unwrap();
            let row = ids(
                t,
                &format!("SELECT CONCAT(status, ' ', volume_size) AS id FROM volume WHERE volume_id = '{v}'"),
            );
            assert_eq!(row, ["available 1"], "{at}");
            assert_eq!(
                rbd_size(&format!("{}/{v}", t.volumes_pool())),
                Some(1 << 30),
                "{at}"
            );
        }
        "image.upload" => {
            // Killed before the end: the image is error with no RBD image and no spool file;
            // at `finishing` it is available.
            let rows = ids(
                t,
                "SELECT CONCAT(image_id, ' ', status) AS id FROM image WHERE image_name = 'swept'",
            );
            assert_eq!(rows.len(), 1, "{at}: {rows:?}");
            let (img, status) = rows[0].split_once(' ').unwrap();
            let exists = crate::common::rbd_size(&format!("{}/{img}", t.images_pool())).is_some();
            if step == FINISHING {
                assert_eq!((status, exists), ("available", true), "{at}");
            } else {
                assert_eq!((status, exists), ("error", false), "{at}");
            }
            let spool = api_web::service::upload::spool_path(&api_web::model::ImageId::new(img));
            assert!(!spool.exists(), "{at}: {} left", spool.display());
        }
        "image.copy" => {
            // Killed before its copy ended: the image is error with no RBD image; at
            // `finishing` it is available.
            let rows = ids(
                t,
                "SELECT CONCAT(image_id, ' ', status) AS id FROM image WHERE source_snapshot_id IS NOT NULL",
            );
            assert_eq!(rows.len(), 1, "{at}: {rows:?}");
            let (img, status) = rows[0].split_once(' ').unwrap();
            let exists = crate::common::rbd_size(&format!("{}/{img}", t.images_pool())).is_some();
            if step == FINISHING {
                assert_eq!((status, exists), ("available", true), "{at}");
            } else {
                assert_eq!((status, exists), ("error", false), "{at}");
            }
        }
        _ => {}
    }
}

/// One kill point: prepare, start the child held there, kill it, wait for the takeover, check.
/// Returns the time from the kill to settled.
async fn kill_at<A: App>(
    c: &Client<A>,
    t: &TestApp,
    image: &str,
    config: &str,
    kind: &str,
    step: &str,
) -> Duration {
    let at = failpoint(kind, step);
    let req = prepare(c, kind, step, image).await;
    // What `prepare` made is settled (a create's operation ends a moment after its row says
    // `running`).
    let end = Instant::now() + Duration::from_secs(10);
    while unsettled(t) > 0 {
        assert!(Instant::now() < end, "{at}: unsettled before the kill");
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let child = ApiWeb::start_with(
        t,
        &format!("{at}=sleep(120000)"),
        &[("API_WEB_CONFIG", config)],
    );
    match &req.file {
        Some(f) => send_bytes_and_forget(&child, "POST", req.path, f.clone()),
        None => send_and_forget(&child, "POST", req.path, req.body.to_string()),
    }
    child.wait_failpoint(&at, 90);
    drop(child); // SIGKILL
    let killed = Instant::now();
    let bound = Duration::from_secs(LEASE_SECS + TAKEOVER_SECS + 5);
    while unsettled(t) > 0 {
        assert!(
            killed.elapsed() <= bound,
            "{at}: still unsettled {bound:?} after the kill"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let took = killed.elapsed();
    assert_outcome(t, kind, step, &req);
    assert_no_drift(t, &at);
    wipe(c, t, image).await;
    took
}

#[actix_web::test]
async fn kill_at_every_step_leaves_no_drift() {
    let chosen = std::env::var("API_WEB_KILL_SWEEP").unwrap_or_default();
    let points: Vec<(String, String)> = if chosen == "full" {
        every_point()
    } else {
        let all = every_point();
        let named: Vec<&str> = if chosen.is_empty() {
            SUBSET.to_vec()
        } else {
            chosen.split(',').map(str::trim).collect()
        };
        named
            .iter()
            .map(|p| {
                all.iter()
                    .find(|(k, s)| failpoint(k, s) == *p)
                    .unwrap_or_else(|| panic!("{p} is no kill point (operations::STEPS)"))
                    .clone()
            })
            .collect()
    };
    let t = TestApp::with_config(|c| {
        c.operations.lease_secs = LEASE_SECS;
        c.operations.takeover_interval_secs = TAKEOVER_SECS;
        c.operations.reconcile_interval_secs = 3600;
    });
    // The child's configuration: the same short lease, no periodic pass of its own.
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
    let mut config = String::new();
    for line in base.lines() {
        let line = match line.split('=').next().map(str::trim) {
            Some("lease_secs") => format!("lease_secs = {LEASE_SECS}"),
            Some("takeover_interval_secs") => format!("takeover_interval_secs = {TAKEOVER_SECS}"),
            Some("reconcile_interval_secs") => "reconcile_interval_secs = 3600".to_string(),
            _ => line.to_string(),
        };
        config.push_str(&line);
        config.push('\n');
    }
    let config_path = std::env::temp_dir().join(format!("{}.toml", unique("sweep-config")));
    std::fs::write(&config_path, config).unwrap();
    let c = client(&t).await;
    let image = test_image(&c.app, &t).await;
    let mut times = vec![];
    for (kind, step) in &points {
        let took = kill_at(&c, &t, &image, config_path.to_str().unwrap(), kind, step).await;
        println!(
            "kill -9 at {}: settled after {took:?}",
            failpoint(kind, step)
        );
        times.push(took);
    }
    times.sort();
    println!(
        "{} kill points ({}): settled after p50 {:?}, max {:?} (lease {LEASE_SECS} s)",
        points.len(),
        match chosen.as_str() {
            "full" => "full sweep",
            "" => "CI subset",
            _ => "the points named",
        },
        times[times.len() / 2],
        times.last().unwrap()
    );
    let _ = std::fs::remove_file(&config_path);
    crate::instances::drop_image(&c.app, &image).await;
}

/// 20 destroys of one instance at the same moment, over real HTTP to a real api-web process:
/// one does it, every other is told the instance is busy or gone, and nothing is left behind.
#[actix_web::test]
async fn twenty_concurrent_destroys_of_one_instance() {
    let t = TestApp::new();
    let c = client(&t).await;
    let image = test_image(&c.app, &t).await;
    let id = running_instance(&c, &image).await;
    let detail = c
        .get::<Value>(&format!("/api/v1/instance/detail?instance_id={id}"))
        .await
        .good();
    let root = detail["volumes"][0]["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    let server = ApiWeb::start(&t, "");
    let body = json!({"instance_id": id}).to_string();
    let gate = std::sync::Barrier::new(20);
    let answers: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                s.spawn(|| {
                    gate.wait();
                    server
                        .call("POST", "/api/v1/instance/destroy", &body)
                        .expect("an answer")
                })
            })
            .collect();
        calls.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let done = answers.iter().filter(|a| a["code"] == 0).count();
    for a in &answers {
        assert!(
            a["code"] == 0 || a["error"] == "instance_busy" || a["error"] == "instance_not_found",
            "{a}"
        );
    }
    println!(
        "20 concurrent destroys: {done} did it, {} busy, {} not found",
        answers
            .iter()
            .filter(|a| a["error"] == "instance_busy")
            .count(),
        answers
            .iter()
            .filter(|a| a["error"] == "instance_not_found")
            .count()
    );
    assert!(done >= 1, "{answers:?}");
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert!(!domain_exists(&id));
    assert_eq!(rbd_size(&format!("{}/{root}", t.volumes_pool())), None);
    assert_eq!(unsettled(&t), 0);
    assert_no_drift(&t, "after 20 destroys");
    drop(server);
    wipe(&c, &t, &image).await;
    crate::instances::drop_image(&c.app, &image).await;
}
