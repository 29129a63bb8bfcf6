//! The rest of an instance's life on one booted guest: pause and resume, reboot and reset
//! (seen on the guest's console), update of its name, description, vCPUs and memory, and
//! pauses made outside api-web reaching the row through libvirt's events.

use crate::common::*;
use crate::instances::{
    create, domstate, drop_image, test_image, virsh, wait_console, wait_created, wait_for,
};
use actix_web::test;
use api_web::api;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOTED: &str = "API-WEB-GUEST-BOOTED";

async fn console(app: &impl App, id: &str) -> String {
    let r = get(app, &format!("/api/v1/instance/console?instance_id={id}")).await;
    r.ok()["output"].as_str().unwrap().to_string()
}

/// Waits until the console shows `n` boots.
async fn wait_boots(app: &impl App, id: &str, n: usize) {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let out = console(app, id).await;
        if out.matches(BOOTED).count() >= n {
            return;
        }
        assert!(Instant::now() < end, "never booted {n} times:\n{out}");
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn act(app: &impl App, path: &str, body: Value) -> Value {
    post(app, &format!("/api/v1/instance/{path}"), body)
        .await
        .ok()
        .clone()
}

fn inactive_xml(id: &str) -> api_web::xml::domain::ParsedDomain {
    let (ok, xml) = virsh(&["dumpxml", "--inactive", id]);
    assert!(ok, "{xml}");
    api_web::xml::domain::parse(&xml).unwrap()
}

#[actix_web::test]
async fn pause_resume_reboot_reset_and_update() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = create(&app, &image, "life").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    wait_console(&app, &id, "API-WEB-GUEST-REPORT").await;
    let i = json!({"instance_id": id});

    // Pause: the vCPUs stop; devices cannot be plugged meanwhile.
    let t0 = Instant::now();
    assert_eq!(act(&app, "pause", i.clone()).await["status"], "paused");
    eprintln!("pause took {:?}", t0.elapsed());
    assert_eq!(domstate(&id), "paused");
    post(&app, "/api/v1/instance/pause", i.clone())
        .await
        .assert_error(409, "instance_paused");
    post(&app, "/api/v1/instance/reboot", i.clone())
        .await
        .assert_error(409, "instance_paused");
    let vol = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "later", "volume_size": 1}),
    )
    .await
    .ok()["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": id}),
    )
    .await
    .assert_error(409, "instance_paused");
    let l = get(&app, "/api/v1/instance/list?status=paused").await;
    assert_eq!(l.ok()["total"], 1);
    // Resume.
    assert_eq!(act(&app, "resume", i.clone()).await["status"], "running");
    assert_eq!(domstate(&id), "running");
    post(&app, "/api/v1/instance/resume", i.clone())
        .await
        .assert_error(409, "instance_running");

    // Reboot by the ACPI button: the guest boots again, libvirt reports it.
    let t0 = Instant::now();
    let r = act(&app, "reboot", i.clone()).await;
    eprintln!("ACPI reboot confirmed after {:?}", t0.elapsed());
    assert_eq!(r["status"], "running");
    assert_eq!(r["rebooted_by"], "acpi");
    wait_boots(&app, &id, 2).await;
    // Reset, and reboot with force: each a hard reset, at once.
    let r = act(&app, "reset", i.clone()).await;
    assert_eq!(r["status"], "running");
    wait_boots(&app, &id, 3).await;
    let r = act(&app, "reboot", json!({"instance_id": id, "force": true})).await;
    assert_eq!(r["rebooted_by"], "reset");
    wait_boots(&app, &id, 4).await;
    assert_eq!(domstate(&id), "running");

    // Update: the name and description at any time, into the domain's title and description.
    let name = "renamed <&> 'x'";
    let r = act(
        &app,
        "update",
        json!({"instance_id": id, "instance_name": name, "describe": "new words"}),
    )
    .await;
    assert_eq!(r["instance_name"], name);
    assert_eq!(r["describe"], "new words");
    let d = inactive_xml(&id);
    assert_eq!(d.title.as_deref(), Some(name));
    let (_, live) = virsh(&["dumpxml", &id]);
    let live = api_web::xml::domain::parse(&live).unwrap();
    assert_eq!(live.title.as_deref(), Some(name));
    assert_eq!(live.description.as_deref(), Some("new words"));
    // vCPUs and memory only while stopped.
    post(
        &app,
        "/api/v1/instance/update",
        json!({"instance_id": id, "cpu": 2}),
    )
    .await
    .assert_error(409, "instance_running");
    for bad in [json!({"cpu": 0}), json!({"memory": 1}), json!({"cpu": 65})] {
        let mut b = bad.clone();
        b["instance_id"] = json!(id);
        post(&app, "/api/v1/instance/update", b)
            .await
            .assert_error(400, "invalid_param");
    }
    post(
        &app,
        "/api/v1/instance/update",
        json!({"instance_id": id, "flavor": "big"}),
    )
    .await
    .assert_error(400, "invalid_param");

    // A pause outside api-web reaches the row through the events; turnoff of a paused
    // instance resumes it for the ACPI button.
    let (ok, out) = virsh(&["suspend", &id]);
    assert!(ok, "{out}");
    wait_for(&app, &id, 10, |d| d["status"] == "paused").await;
    let (ok, out) = virsh(&["resume", &id]);
    assert!(ok, "{out}");
    wait_for(&app, &id, 10, |d| d["status"] == "running").await;
    act(&app, "pause", i.clone()).await;
    let r = act(&app, "turnoff", i.clone()).await;
    assert_eq!(r["status"], "stopped");
    assert_eq!(domstate(&id), "shut off");
    post(&app, "/api/v1/instance/pause", i.clone())
        .await
        .assert_error(409, "instance_stopped");
    post(&app, "/api/v1/instance/reset", i.clone())
        .await
        .assert_error(409, "instance_stopped");

    let r = act(
        &app,
        "update",
        json!({"instance_id": id, "cpu": 2, "memory": 192}),
    )
    .await;
    assert_eq!(r["cpu"], 2);
    assert_eq!(r["memory"], 192);
    let (_, xml) = virsh(&["dumpxml", "--inactive", &id]);
    assert!(xml.contains(">2</vcpu>"), "{xml}");
    assert!(xml.contains("<memory unit='KiB'>196608</memory>"), "{xml}");
    // Smaller again (the maximum follows down), then it boots with what the row says.
    let r = act(
        &app,
        "update",
        json!({"instance_id": id, "memory": 160, "cpu": 1}),
    )
    .await;
    assert_eq!(r["memory"], 160);
    let (_, xml) = virsh(&["dumpxml", "--inactive", &id]);
    assert!(xml.contains(">1</vcpu>"), "{xml}");
    assert!(xml.contains("<memory unit='KiB'>163840</memory>"), "{xml}");
    assert_eq!(act(&app, "turnon", i.clone()).await["status"], "running");
    wait_boots(&app, &id, 5).await;

    let r = post(&app, "/api/v1/instance/destroy", i.clone()).await;
    r.ok();
    get(&app, &format!("/api/v1/volume/delete?volume_id={vol}"))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// Quotas cover a bigger shape: vCPUs asked for by an update count like a create's.
#[actix_web::test]
async fn update_counts_against_the_quota() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = create(&app, &image, "q").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    let i = json!({"instance_id": id, "force": true});
    let project = act(&app, "turnoff", i).await["project_id"].clone();
    post(
        &app,
        "/api/v1/quotas/update",
        json!({"project_id": project, "vcpus": 1}),
    )
    .await
    .ok();
    post(
        &app,
        "/api/v1/instance/update",
        json!({"instance_id": id, "cpu": 2}),
    )
    .await
    .assert_error(409, "quota_exceeded");
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={id}")).await;
    assert_eq!(d.ok()["cpu"], 1);
    let (_, xml) = virsh(&["dumpxml", "--inactive", &id]);
    assert!(xml.contains(">1</vcpu>"), "{xml}");
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// Grow a volume while the guest runs: the guest reports the new size without a reboot.
#[actix_web::test]
async fn online_volume_resize_reaches_the_guest() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = create(&app, &image, "grow").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    let vol = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "data", "volume_size": 1}),
    )
    .await
    .ok()["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    // An available volume grows in Ceph alone.
    let r = post(
        &app,
        "/api/v1/volume/resize",
        json!({"volume_id": vol, "volume_size": 2}),
    )
    .await;
    assert_eq!(r.ok()["volume_size"], 2);
    let spec = format!("{}/{vol}", t.volumes_pool());
    assert_eq!(rbd_size(&spec), Some(2 << 30));
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": id}),
    )
    .await
    .ok();
    let sectors = |gib: u64| format!("serial={vol} size={}", gib * (1 << 30) / 512);
    wait_console(&app, &id, &sectors(2)).await;
    // In use by a running guest: QEMU is told, the guest sees it.
    let t0 = Instant::now();
    let r = post(
        &app,
        "/api/v1/volume/resize",
        json!({"volume_id": vol, "volume_size": 3}),
    )
    .await;
    assert_eq!(r.ok()["volume_size"], 3);
    assert_eq!(r.ok()["status"], "in-use");
    wait_console(&app, &id, &sectors(3)).await;
    eprintln!(
        "online resize: the guest reported the new size {:?} after the request",
        t0.elapsed()
    );
    assert_eq!(rbd_size(&spec), Some(3 << 30));
    // Only growth, within the quota, with clear errors.
    for size in [3, 2] {
        post(
            &app,
            "/api/v1/volume/resize",
            json!({"volume_id": vol, "volume_size": size}),
        )
        .await
        .assert_error(422, "volume_cannot_shrink");
    }
    post(
        &app,
        "/api/v1/volume/resize",
        json!({"volume_id": vol, "volume_size": 0}),
    )
    .await
    .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/volume/resize",
        json!({"volume_id": "vol-00000000", "volume_size": 9}),
    )
    .await
    .assert_error(404, "volume_not_found");
    let project = get(&app, &format!("/api/v1/instance/detail?instance_id={id}"))
        .await
        .ok()["project_id"]
        .clone();
    post(
        &app,
        "/api/v1/quotas/update",
        json!({"project_id": project, "volume_gib": 4}),
    )
    .await
    .ok();
    post(
        &app,
        "/api/v1/volume/resize",
        json!({"volume_id": vol, "volume_size": 5}),
    )
    .await
    .assert_error(409, "quota_exceeded");
    assert_eq!(rbd_size(&spec), Some(3 << 30));
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": id, "delete_attached": true}),
    )
    .await
    .ok();
    drop_image(&app, &image).await;
}
