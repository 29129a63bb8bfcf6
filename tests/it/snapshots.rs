//! Snapshots: of an instance's three disks taken together while its guest runs (suspended for
//! the duration), of one volume alone, what they stop (a volume delete, a destroy), and a
//! restore that rolls every disk back (data and size), and an image copied from a snapshot,
//! checked in MySQL, libvirt and Ceph.

use crate::client::client;
use crate::common::*;
use crate::instances::{domstate, drop_image, test_image, wait_console, wait_created, wait_for};
use api_web::api::views::{SnapshotView, VolumeView};
use serde_json::{json, Value};
use std::time::Instant;

/// The names of an RBD image's snapshots.
fn rbd_snaps(spec: &str) -> Vec<String> {
    let out = rbd_ok(&["snap", "ls", "--format", "json", spec]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// SHA-256 of an image's (or a snapshot's) whole content, exported through the CLI.
fn content_hash(spec: &str) -> String {
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; rbd --conf '{}' export --no-progress '{spec}' - | sha256sum",
            env("CEPH_CONF")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "export {spec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn p50(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

#[actix_web::test]
async fn instance_snapshot_guards_and_restore() {
    let t = TestApp::new();
    let c = client(&t).await;
    let app = &c.app;
    let image = test_image(app, &t).await;
    let pool = t.volumes_pool();
    // Three disks: the root disk (1 GiB), a volume given to the create, one it makes.
    let given = c.volume_create("given", 1).await.volume_id.to_string();
    let r = c
        .post::<Value>(
            "/api/v1/instance/create",
            json!({"instance_name": "snap", "image_id": image, "cpu": 1, "memory": 256,
                   "root_size": 1, "volume_ids": [given], "data_volume_size": 1}),
        )
        .await
        .good();
    let id = r["instance_id"].as_str().unwrap().to_string();
    assert_eq!(wait_created(app, &id).await["status"], "running");
    wait_console(app, &id, &format!("serial={given}")).await;
    let vols: Vec<VolumeView> = c
        .get::<crate::client::Page<VolumeView>>(&format!("/api/v1/volume/list?instance_id={id}"))
        .await
        .good()
        .items;
    assert_eq!(vols.len(), 3);
    let root = vols
        .iter()
        .find(|v| v.is_root)
        .unwrap()
        .volume_id
        .to_string();

    // Of the running guest: every disk at once, the guest suspended meanwhile and running after.
    let (mut suspended, mut total) = (vec![], vec![]);
    let mut snaps: Vec<SnapshotView> = vec![];
    for n in 0..5 {
        let t0 = Instant::now();
        let s = c
            .post::<SnapshotView>(
                "/api/v1/snapshot/create",
                json!({"instance_id": id, "snapshot_name": format!("s{n}")}),
            )
            .await
            .good();
        total.push(t0.elapsed().as_millis() as u64);
        assert_eq!(s.status.as_str(), "available");
        assert_eq!(s.volumes.len(), 3);
        assert!(s.volumes[0].is_root);
        suspended.push(s.suspended_ms.expect("a running guest is suspended"));
        assert_eq!(domstate(&id), "running");
        snaps.push(s);
    }
    eprintln!(
        "instance snapshot of 3 disks: guest suspended p50 {} ms (all: {suspended:?}); request p50 {} ms (all: {total:?})",
        p50(&mut suspended.clone()),
        p50(&mut total.clone())
    );
    let d = c
        .get::<Value>(&format!("/api/v1/instance/detail?instance_id={id}"))
        .await
        .good();
    assert_eq!(d["status"], "running");
    let s = snaps.remove(0);
    let sid = s.snapshot_id.to_string();
    for v in &vols {
        let spec = format!("{pool}/{}", v.volume_id);
        let on = rbd_snaps(&spec);
        assert!(on.contains(&sid), "{spec}: {on:?}");
    }
    // The others go: their RBD snapshots with them.
    for s in &snaps {
        c.post::<Value>(
            "/api/v1/snapshot/delete",
            json!({"snapshot_id": s.snapshot_id}),
        )
        .await
        .good();
        for v in &vols {
            let on = rbd_snaps(&format!("{pool}/{}", v.volume_id));
            assert!(!on.contains(&s.snapshot_id.to_string()), "{on:?}");
        }
    }
    c.get::<Value>(&format!(
        "/api/v1/snapshot/detail?snapshot_id={}",
        snaps[0].snapshot_id
    ))
    .await
    .error(404, "snapshot_not_found");
    let l = c
        .get::<crate::client::Page<SnapshotView>>(&format!(
            "/api/v1/snapshot/list?instance_id={id}"
        ))
        .await
        .good();
    assert_eq!(l.total, 1);
    assert_eq!(l.items[0].snapshot_id.to_string(), sid);

    // What the snapshot stops, and a restore of a running guest.
    let msg = c
        .post::<Value>("/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .error(409, "instance_has_snapshots");
    assert!(msg.contains(&sid), "{msg}");
    let restore = json!({"instance_id": id, "snapshot_id": sid});
    c.post::<Value>("/api/v1/instance/restore", restore.clone())
        .await
        .error(409, "instance_running");
    c.post::<Value>(
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await
    .good();

    // Changes after the snapshot: data on the root disk, a bigger volume.
    let root_spec = format!("{pool}/{root}");
    rbd_ok(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "65536",
        "--io-total",
        "1048576",
        &root_spec,
    ]);
    let then = content_hash(&format!("{root_spec}@{sid}"));
    assert_ne!(content_hash(&root_spec), then);
    c.post::<Value>(
        "/api/v1/volume/resize",
        json!({"volume_id": given, "volume_size": 2}),
    )
    .await
    .good();

    // The volumes attached now must be the snapshot's: a detached one is named.
    c.volume_unmount(&given, &id).await.good();
    let msg = c
        .post::<Value>("/api/v1/instance/restore", restore.clone())
        .await
        .error(409, "snapshot_mismatch");
    assert!(msg.contains(&given), "{msg}");
    // A volume snapshot of its own, which is not the instance's; both hold the volume.
    let vs = c
        .post::<SnapshotView>(
            "/api/v1/snapshot/create",
            json!({"volume_id": given, "snapshot_name": "alone"}),
        )
        .await
        .good();
    assert_eq!(vs.instance_id, None);
    assert_eq!(vs.suspended_ms, None);
    c.post::<Value>(
        "/api/v1/instance/restore",
        json!({"instance_id": id, "snapshot_id": vs.snapshot_id}),
    )
    .await
    .error(409, "snapshot_mismatch");
    let msg = c
        .volume_delete(&given)
        .await
        .error(409, "volume_has_snapshots");
    assert!(
        msg.contains(&sid) && msg.contains(vs.snapshot_id.as_str()),
        "{msg}"
    );
    c.volume_mount(&given, &id).await.good();

    // Restore: every disk's data and size as they were.
    let t0 = Instant::now();
    let r = c
        .post::<Value>("/api/v1/instance/restore", restore.clone())
        .await
        .good();
    eprintln!("restore of 3 disks (root 1 GiB) took {:?}", t0.elapsed());
    assert_eq!(r["status"], "stopped");
    assert!(r["error_message"].is_null(), "{r}");
    assert_eq!(content_hash(&root_spec), then);
    assert_eq!(rbd_size(&format!("{pool}/{given}")), Some(1 << 30));
    let v = c
        .get::<crate::client::Page<VolumeView>>(&format!("/api/v1/volume/list?instance_id={id}"))
        .await
        .good();
    let g = v
        .items
        .iter()
        .find(|v| v.volume_id.as_str() == given)
        .unwrap();
    assert_eq!(g.volume_size, 1);
    let s = c
        .get::<SnapshotView>(&format!("/api/v1/snapshot/detail?snapshot_id={sid}"))
        .await
        .good();
    assert_eq!(s.status.as_str(), "available");
    // The restored guest boots.
    c.post::<Value>("/api/v1/instance/turnon", json!({"instance_id": id}))
        .await
        .good();
    wait_for(app, &id, 30, |d| d["status"] == "running").await;
    assert_eq!(domstate(&id), "running");

    // Snapshots deleted, the destroy goes through.
    for s in [sid.as_str(), vs.snapshot_id.as_str()] {
        c.post::<Value>("/api/v1/snapshot/delete", json!({"snapshot_id": s}))
            .await
            .good();
    }
    assert!(rbd_snaps(&root_spec).is_empty());
    c.post::<Value>(
        "/api/v1/instance/destroy",
        json!({"instance_id": id, "delete_attached": true}),
    )
    .await
    .good();
    assert_eq!(rbd_size(&root_spec), None);
    drop_image(app, &image).await;
}

/// Bad input and wrong states, without a guest.
#[actix_web::test]
async fn snapshot_requests_are_checked() {
    let t = TestApp::new();
    let c = client(&t).await;
    let v = c.volume_create("v", 1).await.volume_id.to_string();
    for body in [
        json!({"snapshot_name": "x"}),
        json!({"snapshot_name": "x", "volume_id": v, "instance_id": "i-00000000"}),
        json!({"snapshot_name": "", "volume_id": v}),
        json!({"snapshot_name": "x", "volume_id": v, "extra": 1}),
    ] {
        c.post::<Value>("/api/v1/snapshot/create", body)
            .await
            .error(400, "invalid_param");
    }
    c.post::<Value>(
        "/api/v1/snapshot/create",
        json!({"snapshot_name": "x", "instance_id": "i-00000000"}),
    )
    .await
    .error(404, "instance_not_found");
    c.post::<Value>(
        "/api/v1/snapshot/create",
        json!({"snapshot_name": "x", "volume_id": "vol-00000000"}),
    )
    .await
    .error(404, "volume_not_found");
    c.post::<Value>(
        "/api/v1/snapshot/delete",
        json!({"snapshot_id": "snap-00000000"}),
    )
    .await
    .error(404, "snapshot_not_found");
    c.post::<Value>(
        "/api/v1/instance/restore",
        json!({"instance_id": "i-00000000", "snapshot_id": "snap-00000000"}),
    )
    .await
    .error(404, "instance_not_found");
    c.get::<Value>("/api/v1/snapshot/list?status=nonsense")
        .await
        .error(400, "invalid_param");

    // A volume snapshot: an RBD snapshot, listed, holding the volume until it is deleted.
    let s = c
        .post::<SnapshotView>(
            "/api/v1/snapshot/create",
            json!({"snapshot_name": "one", "volume_id": v}),
        )
        .await
        .good();
    assert_eq!(s.volume_id.as_ref().map(|v| v.as_str()), Some(v.as_str()));
    assert_eq!(s.volumes.len(), 1);
    assert_eq!(s.volumes[0].volume_size, 1);
    let spec = format!("{}/{v}", t.volumes_pool());
    assert_eq!(rbd_snaps(&spec), vec![s.snapshot_id.to_string()]);
    let l = c
        .get::<crate::client::Page<SnapshotView>>(
            "/api/v1/snapshot/list?filter_name=on&status=available",
        )
        .await
        .good();
    assert_eq!(l.total, 1);
    c.volume_delete(&v).await.error(409, "volume_has_snapshots");

    // A volume rolled back to it: data and size as then.
    let then = content_hash(&format!("{spec}@{}", s.snapshot_id));
    rbd_ok(&[
        "bench",
        "--io-type",
        "write",
        "--io-size",
        "65536",
        "--io-total",
        "1048576",
        &spec,
    ]);
    assert_ne!(content_hash(&spec), then);
    c.post::<Value>(
        "/api/v1/volume/resize",
        json!({"volume_id": v, "volume_size": 2}),
    )
    .await
    .good();
    let restore = json!({"volume_id": v, "snapshot_id": s.snapshot_id});
    let r = c
        .post::<VolumeView>("/api/v1/volume/restore", restore.clone())
        .await
        .good();
    assert_eq!(r.status.as_str(), "available");
    assert_eq!(r.volume_size, 1);
    assert_eq!(rbd_size(&spec), Some(1 << 30));
    assert_eq!(content_hash(&spec), then);
    // Only with a snapshot that holds it.
    let other = c.volume_create("other", 1).await.volume_id.to_string();
    let msg = c
        .post::<Value>(
            "/api/v1/volume/restore",
            json!({"volume_id": other, "snapshot_id": s.snapshot_id}),
        )
        .await
        .error(409, "snapshot_mismatch");
    assert!(msg.contains(&other), "{msg}");
    c.post::<Value>(
        "/api/v1/volume/restore",
        json!({"volume_id": v, "snapshot_id": "snap-00000000"}),
    )
    .await
    .error(404, "snapshot_not_found");

    c.post::<Value>(
        "/api/v1/snapshot/delete",
        json!({"snapshot_id": s.snapshot_id}),
    )
    .await
    .good();
    assert!(rbd_snaps(&spec).is_empty());
    c.volume_delete(&v).await.good();
    c.volume_delete(&other).await.good();
}

/// Polls an image until it leaves `creating`; returns its last view and every progress seen.
async fn wait_copied(app: &impl App, id: &str) -> (Value, Vec<u64>) {
    let end = Instant::now() + std::time::Duration::from_secs(120);
    let mut seen = vec![];
    loop {
        let r = get(app, &format!("/api/v1/images/inspect?image_id={id}")).await;
        let v = r.ok().clone();
        if v["status"] != "creating" {
            return (v, seen);
        }
        let p = v["progress"]
            .as_u64()
            .expect("a copy under way shows its progress");
        assert!(p <= 99, "{v}");
        if seen.last() != Some(&p) {
            seen.push(p);
        }
        assert!(Instant::now() < end, "image {id} still creating: {v}");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// An image made from the root disk of a running guest's snapshot: a flat copy (no parent) with
/// the snapshot's content and size, shown with its progress and source, that instance/create
/// boots at once; the snapshot cannot be deleted while an image is copied from it.
#[actix_web::test]
async fn image_from_snapshot_is_a_flat_copy_that_boots() {
    let t = TestApp::new();
    let c = client(&t).await;
    let app = &c.app;
    let image = test_image(app, &t).await;
    let (vpool, ipool) = (t.volumes_pool(), t.images_pool());
    let r = c
        .post::<Value>(
            "/api/v1/instance/create",
            json!({"instance_name": "origin", "image_id": image, "cpu": 1, "memory": 256,
                   "root_size": 1, "data_volume_size": 1}),
        )
        .await
        .good();
    let id = r["instance_id"].as_str().unwrap().to_string();
    assert_eq!(wait_created(app, &id).await["status"], "running");
    wait_console(app, &id, "API-WEB-GUEST-BOOTED").await;
    let s = c
        .post::<SnapshotView>(
            "/api/v1/snapshot/create",
            json!({"instance_id": id, "snapshot_name": "golden"}),
        )
        .await
        .good();
    let sid = s.snapshot_id.to_string();
    let root = s.volumes[0].volume_id.to_string();
    let data = s.volumes[1].volume_id.to_string();

    // Bad input.
    let from = |extra: Value| {
        let mut b = json!({"snapshot_id": sid, "image_name": "from-snap", "os_type": "Linux"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let path = "/api/v1/images/create_from_snapshot";
    for bad in [
        json!({"snapshot_id": sid, "image_name": "x"}),
        from(json!({"os_type": "Plan9"})),
        from(json!({"image_name": ""})),
        from(json!({"extra": 1})),
    ] {
        c.post::<Value>(path, bad).await.error(400, "invalid_param");
    }
    c.post::<Value>(path, from(json!({"snapshot_id": "snap-00000000"})))
        .await
        .error(404, "snapshot_not_found");
    let other = c.volume_create("elsewhere", 1).await.volume_id.to_string();
    let msg = c
        .post::<Value>(path, from(json!({"volume_id": other})))
        .await
        .error(409, "snapshot_mismatch");
    assert!(msg.contains(&other) && msg.contains(&root), "{msg}");
    c.volume_delete(&other).await.good();

    // The root disk (default), copied while the guest runs on.
    let t0 = Instant::now();
    let made = c.post::<Value>(path, from(json!({}))).await.good();
    let img = made["image_id"].as_str().unwrap().to_string();
    assert_eq!(made["status"], "creating", "{made}");
    assert_eq!(made["progress"], 0);
    assert_eq!(made["source_snapshot_id"], sid.as_str());
    assert_eq!(made["source_volume_id"], root.as_str());
    assert_eq!(made["image_size"], 1u64 << 30);
    let (done, seen) = wait_copied(app, &img).await;
    eprintln!(
        "image from the snapshot of a 1 GiB root disk: available after {:?} (progress seen: {seen:?})",
        t0.elapsed()
    );
    assert_eq!(done["status"], "available", "{done}");
    assert!(
        done["progress"].is_null() && done["error_message"].is_null(),
        "{done}"
    );
    assert_eq!(domstate(&id), "running");
    // Ceph: flat, the snapshot's size and content, marked as this deployment's.
    let spec = format!("{ipool}/{img}");
    let info: Value = serde_json::from_str(&rbd_ok(&["info", "--format", "json", &spec])).unwrap();
    assert!(info.get("parent").is_none(), "not flat: {info}");
    assert_eq!(info["size"], 1u64 << 30);
    assert_eq!(
        content_hash(&spec),
        content_hash(&format!("{vpool}/{root}@{sid}"))
    );
    assert_eq!(
        t.ctx.ceph.owner(&ipool, &img).unwrap(),
        Some(t.ctx.deployment().unwrap())
    );

    // Bootable at once.
    let r = c
        .post::<Value>(
            "/api/v1/instance/create",
            json!({"instance_name": "offspring", "image_id": img, "cpu": 1, "memory": 256}),
        )
        .await
        .good();
    let child = r["instance_id"].as_str().unwrap().to_string();
    assert_eq!(wait_created(app, &child).await["status"], "running");
    wait_console(app, &child, "API-WEB-GUEST-BOOTED").await;

    // Another disk, by another api-web process held before its copy: the snapshot refuses its
    // delete meanwhile, naming the image.
    let held = crate::operations::ApiWeb::start(&t, "image.copy:copying_the_snapshot=sleep(3000)");
    let r = held
        .call(
            "POST",
            path,
            &from(json!({"volume_id": data, "image_name": "data-copy"})).to_string(),
        )
        .expect("an answer");
    let second = r["data"]["image_id"]
        .as_str()
        .expect("an image")
        .to_string();
    held.wait_failpoint("image.copy:copying_the_snapshot", 30);
    let msg = c
        .post::<Value>("/api/v1/snapshot/delete", json!({"snapshot_id": sid}))
        .await
        .error(409, "snapshot_busy");
    assert!(msg.contains(&second), "{msg}");
    let (done, _) = wait_copied(app, &second).await;
    assert_eq!(done["status"], "available", "{done}");
    assert_eq!(done["source_volume_id"], data.as_str());
    drop(held);

    // Now the snapshot goes; the images stay, depending on nothing.
    c.post::<Value>("/api/v1/snapshot/delete", json!({"snapshot_id": sid}))
        .await
        .good();
    for i in [&child, &id] {
        c.post::<Value>(
            "/api/v1/instance/destroy",
            json!({"instance_id": i, "delete_attached": true}),
        )
        .await
        .good();
    }
    drop_image(app, &img).await;
    drop_image(app, &second).await;
    drop_image(app, &image).await;
}
