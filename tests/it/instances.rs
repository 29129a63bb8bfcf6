//! Instances on the real stack: TCG guests booting by BIOS from RBD clones of the test image.

use crate::common::*;
use actix_web::test;
use api_web::api;
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// Imports the test image (scripts/build-test-image.sh) under a unique name and registers it.
pub async fn test_image(app: &impl App, t: &TestApp) -> String {
    let path = env("API_WEB_TEST_IMAGE");
    let name = unique("testimg");
    rbd_ok(&[
        "import",
        "--no-progress",
        &path,
        &format!("{}/{name}", t.images_pool()),
    ]);
    let size = std::fs::metadata(&path).unwrap().len();
    let r = post(
        app,
        "/api/v1/images/register",
        json!({"image_id": name, "image_name": "test image", "image_size": size, "os_type": "Linux"}),
    )
    .await;
    r.ok();
    name
}

/// Removes the test image (after its instances are gone).
pub async fn drop_image(app: &impl App, image: &str) {
    let r = post(
        app,
        "/api/v1/images/delete",
        json!({"image_id": image, "del_file": true}),
    )
    .await;
    assert_eq!(r.ok()["file"], "removed");
}

/// Polls progress until the instance leaves `creating`; returns the last progress answer.
pub async fn wait_created(app: &impl App, id: &str) -> Value {
    let end = Instant::now() + Duration::from_secs(90);
    let mut last_pct = 0;
    loop {
        let r = get(app, &format!("/api/v1/instance/progress?instance_id={id}")).await;
        let d = r.ok().clone();
        let pct = d["progress"].as_u64().unwrap();
        if d["status"] != "creating" {
            return d;
        }
        assert!(pct >= last_pct, "progress went back: {d}");
        last_pct = pct;
        assert!(Instant::now() < end, "still creating after 90 s: {d}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the console shows `needle`; returns the console text.
pub async fn wait_console(app: &impl App, id: &str, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let r = get(app, &format!("/api/v1/instance/console?instance_id={id}")).await;
        let out = r.ok()["output"].as_str().unwrap().to_string();
        if out.contains(needle) {
            return out;
        }
        assert!(
            Instant::now() < end,
            "console never showed {needle:?}:\n{out}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(env("LIBVIRT_URI"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub fn domain_exists(name: &str) -> bool {
    let (ok, text) = virsh(&["dominfo", name]);
    assert!(ok || text.contains("failed to get domain"), "{text}");
    ok
}

pub fn domstate(name: &str) -> String {
    virsh(&["domstate", name]).1.trim().to_string()
}

/// RBD clones hanging from the image's base snapshot.
fn clones_of(pool: &str, image: &str) -> Vec<String> {
    let (ok, out, err) = rbd_out(&["children", &format!("{pool}/{image}@api-web-base")]);
    if !ok {
        assert!(
            err.contains("No such file") || err.contains("snapshot"),
            "{err}"
        );
        return vec![];
    }
    out.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn count(db: &TestDb, sql: &str) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(sql)
        .get_result::<N>(&mut db.conn())
        .unwrap()
        .n
}

pub async fn create(app: &impl App, image: &str, name: &str) -> String {
    let r = post(
        app,
        "/api/v1/instance/create",
        json!({"instance_name": name, "image_id": image, "cpu": 1, "memory": 256, "describe": "it"}),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["status"], "creating");
    d["instance_id"].as_str().unwrap().to_string()
}

#[actix_web::test]
async fn boot_power_cycle_and_destroy() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let name = "web <1> & 'quoted'";
    let id = create(&app, &image, name).await;
    assert!(id.starts_with("i-") && id.len() == 10, "{id}");

    let p = wait_created(&app, &id).await;
    assert_eq!(p["status"], "running", "{p}");
    assert_eq!(p["progress"], 100);
    // The guest really booted from its RBD root disk: it reports the disk's serial.
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={id}")).await;
    let d = d.ok().clone();
    assert_eq!(d["instance_name"], name);
    assert_eq!(d["image"]["image_id"], image.as_str());
    assert_eq!(d["host_ip"], t.ctx.cfg.libvirt.host_ip.as_str());
    let root = d["volumes"][0]["volume_id"].as_str().unwrap().to_string();
    assert_eq!(d["volumes"][0]["is_root"], true);
    assert_eq!(d["volumes"][0]["volume_size"], 1);
    let out = wait_console(&app, &id, &format!("serial={root}")).await;
    assert!(out.contains("API-WEB-GUEST-BOOTED"), "{out}");
    assert_eq!(
        clones_of(&t.images_pool(), &image),
        vec![format!("{}/{root}", t.volumes_pool())]
    );
    assert_eq!(domstate(&id), "running");
    // The domain carries our metadata and the user's text only where it belongs.
    let (_, xml) = virsh(&["dumpxml", "--inactive", &id]);
    let parsed = api_web::xml::domain::parse(&xml).unwrap();
    assert_eq!(parsed.metadata.unwrap().instance.unwrap().id, id);
    assert_eq!(parsed.title.as_deref(), Some(name));
    // The root disk and the config drive.
    assert_eq!(parsed.devices.disk.len(), 2);
    assert_eq!(
        parsed.devices.disk[0].serial.as_deref(),
        Some(root.as_str())
    );
    let drive = format!("{}/{id}.cidata", t.volumes_pool());
    assert_eq!(parsed.devices.disk[1].serial, None);
    assert!(xml.contains("device='cdrom'"), "{xml}");
    assert!(xml.contains(&format!("name='{drive}'")), "{xml}");
    assert!(rbd(&["info", &drive]).0);

    // A live instance pins its image.
    post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": image, "del_file": true}),
    )
    .await
    .assert_error(409, "image_has_clones");

    let r = post(&app, "/api/v1/instance/turnoff", json!({"instance_id": id})).await;
    assert_eq!(r.ok()["status"], "stopped");
    assert_eq!(domstate(&id), "shut off");
    post(&app, "/api/v1/instance/turnoff", json!({"instance_id": id}))
        .await
        .assert_error(409, "instance_stopped");
    let r = post(&app, "/api/v1/instance/turnon", json!({"instance_id": id})).await;
    assert_eq!(r.ok()["status"], "running");
    assert_eq!(domstate(&id), "running");
    post(&app, "/api/v1/instance/turnon", json!({"instance_id": id}))
        .await
        .assert_error(409, "instance_running");
    // Pressed while the guest is still booting (it ignores the button until its init runs):
    // turnoff presses again every shutdown_retry_secs, so it still powers off.
    let t0 = Instant::now();
    let r = post(&app, "/api/v1/instance/turnoff", json!({"instance_id": id})).await;
    assert_eq!(r.ok()["status"], "stopped", "after {:?}", t0.elapsed());
    assert_eq!(domstate(&id), "shut off");

    // The original design's spelling.
    let r = post(&app, "/api/v1/instance/destory", json!({"instance_id": id})).await;
    assert_eq!(r.ok()["instance_id"], id.as_str());
    assert!(!domain_exists(&id));
    assert_eq!(rbd_size(&format!("{}/{root}", t.volumes_pool())), None);
    assert!(
        !rbd(&["info", &drive]).0,
        "the config drive outlived its instance"
    );
    assert!(clones_of(&t.images_pool(), &image).is_empty());
    get(&app, &format!("/api/v1/instance/detail?instance_id={id}"))
        .await
        .assert_error(404, "instance_not_found");
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    drop_image(&app, &image).await;
}

#[actix_web::test]
async fn create_rejects_bad_input() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let ok = json!({"instance_name": "x", "image_id": image, "cpu": 1, "memory": 256});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let cases = vec![
        (
            with("image_id", json!("ami-00000000")),
            404,
            "image_not_found",
        ),
        (with("cpu", json!(0)), 400, "invalid_param"),
        (with("cpu", json!(65)), 400, "invalid_param"),
        (with("cpu", json!(-1)), 400, "invalid_param"),
        (with("memory", json!(1)), 400, "invalid_param"),
        (with("memory", json!("256")), 400, "invalid_param"),
        (with("root_size", json!(0)), 400, "invalid_param"),
        (with("instance_name", json!("")), 400, "invalid_param"),
        (
            with("instance_name", json!("n".repeat(256))),
            400,
            "invalid_param",
        ),
        (with("volume", json!("x")), 400, "invalid_param"),
        // Found by fuzzing: XML cannot carry U+FFFF, so libvirt would refuse the domain and
        // quote it whole; refused here instead, before anything is made.
        (
            with("describe", json!(format!("{}\u{FFFF}", "d".repeat(3999)))),
            400,
            "invalid_param",
        ),
        (
            with("instance_name", json!("web\u{FDD0}")),
            400,
            "invalid_param",
        ),
        (
            json!({"image_id": image, "cpu": 1, "memory": 256}),
            400,
            "invalid_param",
        ),
    ];
    for (body, status, code) in cases {
        let r = post(&app, "/api/v1/instance/create", body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        r.assert_error(status, code);
    }
    // A 64 GiB image does not fit a 1 GiB root disk.
    let big = unique("big");
    rbd_ok(&[
        "create",
        "--size",
        "64G",
        &format!("{}/{big}", t.images_pool()),
    ]);
    let reg = json!({"image_id": big, "image_name": "big", "image_size": 64u64 << 30, "os_type": "Linux"});
    post(&app, "/api/v1/images/register", reg).await.ok();
    let b = json!({"instance_name": "x", "image_id": big, "cpu": 1, "memory": 256, "root_size": 1});
    post(&app, "/api/v1/instance/create", b)
        .await
        .assert_error(422, "root_size_too_small");
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    for id in ["i-00000000", ""] {
        let code = if id.is_empty() {
            (400, "invalid_param")
        } else {
            (404, "instance_not_found")
        };
        for path in ["progress", "detail", "console"] {
            get(&app, &format!("/api/v1/instance/{path}?instance_id={id}"))
                .await
                .assert_error(code.0, code.1);
        }
        for path in ["turnon", "turnoff", "destroy", "destory"] {
            post(
                &app,
                &format!("/api/v1/instance/{path}"),
                json!({"instance_id": id}),
            )
            .await
            .assert_error(code.0, code.1);
        }
    }
    get(&app, "/api/v1/instance/list?status=sleeping")
        .await
        .assert_error(400, "invalid_param");
    drop_image(&app, &image).await;
    drop_image(&app, &big).await;
}

/// A template the hypervisor rejects, once at define and once at start: nothing is left.
#[actix_web::test]
async fn libvirt_failure_mid_create_leaves_nothing() {
    for (broken, at) in [
        ("<on_crash>explode</on_crash>", "refused the domain"),
        ("<cpu mode='custom' match='exact'><model fallback='forbid'>NoSuchCpuModel</model></cpu>", "could not start"),
    ] {
        let dir = std::env::temp_dir().join(unique("tpl"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("linux.xml"), format!("<domain>{broken}</domain>")).unwrap();
        std::fs::write(dir.join("windows.xml"), "<domain/>").unwrap();
        let d = dir.to_string_lossy().into_owned();
        let t = TestApp::with_config(|c| c.libvirt.template_dir = d);
        let app = test::init_service(api::app(t.ctx.clone())).await;
        let image = test_image(&app, &t).await;
        let id = create(&app, &image, "doomed").await;
        let p = wait_created(&app, &id).await;
        assert_eq!(p["status"], "error", "{p}");
        let msg = p["error_message"].as_str().unwrap();
        assert!(msg.contains(at), "{msg}");
        assert!(!domain_exists(&id));
        assert!(clones_of(&t.images_pool(), &image).is_empty());
        assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
        // An instance in error can be destroyed; power actions tell the user to.
        post(&app, "/api/v1/instance/turnon", json!({"instance_id": id}))
            .await
            .assert_error(409, "instance_error");
        post(&app, "/api/v1/instance/destroy", json!({"instance_id": id})).await.ok();
        assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
        drop_image(&app, &image).await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A domain removed behind our back, a guest that ignores the power button, and progress read
/// by a freshly started api-web (the state lives in MySQL, not in memory).
#[actix_web::test]
async fn truth_wins_over_stale_state() {
    let t = TestApp::with_config(|c| c.libvirt.shutdown_timeout_secs = 1);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = create(&app, &image, "stubborn").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    // Right after start the guest has no ACPI handler yet: the button press is lost.
    let r = post(&app, "/api/v1/instance/turnoff", json!({"instance_id": id})).await;
    r.assert_error(409, "instance_still_running");
    assert!(r.body["message"].as_str().unwrap().contains("force=true"));
    let p = get(&app, &format!("/api/v1/instance/progress?instance_id={id}")).await;
    assert_eq!(p.ok()["status"], "running", "{}", p.body);
    let r = post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await;
    assert_eq!(r.ok()["status"], "stopped", "{}", r.body);
    assert_eq!(domstate(&id), "shut off");

    // Another api-web process (new state, same database) sees the same instance.
    let t2 = TestApp::with_db(&t);
    let app2 = test::init_service(api::app(t2.ctx.clone())).await;
    let p = get(
        &app2,
        &format!("/api/v1/instance/progress?instance_id={id}"),
    )
    .await;
    assert_eq!(p.ok()["status"], "stopped", "{}", p.body);
    assert_eq!(p.ok()["progress"], 100, "{}", p.body);

    // The domain vanishes behind our back: turnon says so (409, not an outage) and marks the
    // instance error; destroy still cleans everything.
    let (ok, text) = virsh(&["undefine", &id]);
    assert!(ok, "{text}");
    let r = post(&app2, "/api/v1/instance/turnon", json!({"instance_id": id})).await;
    r.assert_error(409, "instance_error");
    // Said by turnon, or by the reconciliation pass if it looked first.
    let p = get(
        &app2,
        &format!("/api/v1/instance/progress?instance_id={id}"),
    )
    .await;
    assert_eq!(p.ok()["status"], "error", "{}", p.body);
    let msg = p.ok()["error_message"].as_str().unwrap().to_string();
    assert!(msg.contains("no longer exists"), "{msg}");
    post(
        &app2,
        "/api/v1/instance/destroy",
        json!({"instance_id": id}),
    )
    .await
    .ok();
    assert!(clones_of(&t.images_pool(), &image).is_empty());
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);

    // Work a crash interrupted is resolved at start-up.
    let id2 = create(&app, &image, "interrupted").await;
    assert_eq!(wait_created(&app, &id2).await["status"], "running");
    t.db.conn()
        .batch_execute(&format!(
            "UPDATE instance SET status = 'stopping', update_time = 1 WHERE instance_id = '{id2}'"
        ))
        .unwrap();
    assert_eq!(
        api_web::service::instances::reconcile(&t.ctx, 600).unwrap(),
        1
    );
    let p = get(
        &app,
        &format!("/api/v1/instance/progress?instance_id={id2}"),
    )
    .await;
    assert_eq!(p.ok()["status"], "running", "{}", p.body);
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": id2}),
    )
    .await
    .ok();
    drop_image(&app, &image).await;
}

/// Power changes made outside api-web reach the row within the reconciliation interval, and a
/// domain undefined outside it marks the instance error.
#[actix_web::test]
async fn out_of_band_changes_reach_the_row() {
    // The periodic pass is pushed out of the way: only libvirt's events can make it in time.
    let t = TestApp::with_config(|c| c.operations.reconcile_interval_secs = 600);
    out_of_band_scenario(&t, 2, true).await;
}

/// With `libvirt.events` off, the periodic pass alone makes rows follow libvirt.
#[actix_web::test]
async fn out_of_band_changes_reach_the_row_without_events() {
    let t = TestApp::with_config(|c| {
        c.libvirt.events = false;
        c.operations.reconcile_interval_secs = 1;
    });
    out_of_band_scenario(&t, 15, false).await;
}

/// `virsh destroy`, `virsh start` and `virsh undefine` behind the API's back each reach the
/// row within `secs`; the vanished instance says so and destroy still cleans it up. With
/// `guest_poweroff`, first the booted guest powers itself off (its init answers the ACPI button
/// that `virsh shutdown` presses behind the API's back).
async fn out_of_band_scenario(t: &TestApp, secs: u64, guest_poweroff: bool) {
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, t).await;
    let id = create(&app, &image, "watched").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    if guest_poweroff {
        wait_console(&app, &id, "API-WEB-GUEST-BOOTED").await;
        // The guest takes its time to power off; the row follows once it has. A press that
        // comes before the guest listens is lost: pressed again every 5 s, as turnoff does.
        let end = Instant::now() + Duration::from_secs(90);
        let mut pressed = Instant::now() - Duration::from_secs(5);
        while domstate(&id) != "shut off" {
            assert!(Instant::now() < end, "the guest did not power off");
            if pressed.elapsed() >= Duration::from_secs(5) {
                let (ok, text) = virsh(&["shutdown", &id]);
                assert!(ok || domstate(&id) == "shut off", "{text}");
                pressed = Instant::now();
            }
            actix_web::rt::time::sleep(Duration::from_millis(20)).await;
        }
        let t0 = Instant::now();
        wait_for(&app, &id, secs, |d| d["status"] == "stopped").await;
        println!("guest poweroff -> row stopped after {:?}", t0.elapsed());
        let (ok, text) = virsh(&["start", &id]);
        assert!(ok, "{text}");
        wait_for(&app, &id, secs, |d| d["status"] == "running").await;
    }
    let (ok, text) = virsh(&["destroy", &id]);
    assert!(ok, "{text}");
    let t0 = Instant::now();
    wait_for(&app, &id, secs, |d| d["status"] == "stopped").await;
    println!("virsh destroy -> row stopped after {:?}", t0.elapsed());
    let (ok, text) = virsh(&["start", &id]);
    assert!(ok, "{text}");
    let t0 = Instant::now();
    wait_for(&app, &id, secs, |d| d["status"] == "running").await;
    println!("virsh start -> row running after {:?}", t0.elapsed());
    virsh(&["destroy", &id]);
    let (ok, text) = virsh(&["undefine", &id]);
    assert!(ok, "{text}");
    let d = wait_for(&app, &id, secs, |d| d["status"] == "error").await;
    assert!(
        d["error_message"]
            .as_str()
            .unwrap()
            .contains("no longer exists"),
        "{d}"
    );
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    drop_image(&app, &image).await;
}

/// Polls the instance's row (through the in-process app) until `done` says so.
pub async fn wait_for(app: &impl App, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = get(app, &format!("/api/v1/instance/progress?instance_id={id}")).await;
        let d = r.ok().clone();
        if done(&d) {
            return d;
        }
        assert!(Instant::now() < end, "after {secs} s: {d}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// libvirtd unreachable: create is refused at once with 503 naming libvirt, and nothing is kept.
#[actix_web::test]
async fn create_is_refused_while_libvirt_is_down() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let down = TestApp::with_config(|c| {
        c.database.url = t.db.url.clone();
        c.libvirt.uri = "qemu+tcp://127.0.0.1:9/system".into();
    });
    let app_down = test::init_service(api::app(down.ctx.clone())).await;
    // The database's other host (`t`'s, which answers) in maintenance: the only host in service
    // is the one that does not answer.
    let page = get(&app, "/api/v1/host/list").await;
    let first = page.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["uri"] == t.ctx.cfg.libvirt.uri.as_str())
        .expect("t's host")["host_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": first, "enabled": false}),
    )
    .await
    .ok();
    let t0 = Instant::now();
    let r = post(
        &app_down,
        "/api/v1/instance/create",
        json!({"instance_name": "x", "image_id": image, "cpu": 1, "memory": 128}),
    )
    .await;
    r.assert_error(503, "libvirt_unavailable");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        0
    );
    drop_image(&app, &image).await;
}

#[actix_web::test]
async fn list_search_and_detail() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let tag = unique("ls");
    let a = create(&app, &image, &format!("{tag} alpha")).await;
    let b = create(&app, &image, &format!("{tag} beta")).await;
    for id in [&a, &b] {
        assert_eq!(wait_created(&app, id).await["status"], "running");
    }
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": b, "force": true}),
    )
    .await
    .ok();
    for path in ["list", "search"] {
        let r = get(
            &app,
            &format!("/api/v1/instance/{path}?filter_name={}", q(&tag)),
        )
        .await;
        let d = r.ok();
        assert_eq!(d["total"], 2, "{d}");
        let item = &d["items"][0];
        assert_eq!(item["volumes"].as_array().unwrap().len(), 1, "{item}");
        // One NIC made on the default bridge (network.auto_nic).
        assert_eq!(
            item["network_interfaces"].as_array().unwrap().len(),
            1,
            "{item}"
        );
    }
    let r = get(
        &app,
        &format!(
            "/api/v1/instance/list?filter_name={}&status=stopped",
            q(&tag)
        ),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["total"], 1);
    assert_eq!(d["items"][0]["instance_id"], b.as_str());
    let r = get(&app, "/api/v1/instance/list?page_size=1&page_num=2").await;
    assert_eq!(r.ok()["items"].as_array().unwrap().len(), 1);
    get(&app, "/api/v1/instance/list?page_size=0")
        .await
        .assert_error(400, "invalid_param");
    for id in [&a, &b] {
        post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
            .await
            .ok();
    }
    drop_image(&app, &image).await;
}

/// The Windows template (Hyper-V enlightenments, local clock, tablet, VGA + VNC on loopback) is
/// accepted by the hypervisor and boots: the test image registered as a Windows image.
#[actix_web::test]
async fn windows_template_boots() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let path = env("API_WEB_TEST_IMAGE");
    let name = unique("winimg");
    rbd_ok(&[
        "import",
        "--no-progress",
        &path,
        &format!("{}/{name}", t.images_pool()),
    ]);
    let size = std::fs::metadata(&path).unwrap().len();
    let r = post(
        &app,
        "/api/v1/images/register",
        json!({"image_id": name, "image_name": "windows-ish", "image_size": size, "os_type": "Windows"}),
    )
    .await;
    r.ok();
    let id = create(&app, &name, "win").await;
    let p = wait_created(&app, &id).await;
    assert_eq!(p["status"], "running", "{p}");
    wait_console(&app, &id, "API-WEB-GUEST-BOOTED").await;
    let (_, xml) = virsh(&["dumpxml", "--inactive", &id]);
    assert!(
        xml.contains("<hyperv")
            && xml.contains("offset='localtime'")
            && xml.contains("type='tablet'"),
        "{xml}"
    );
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    drop_image(&app, &name).await;
}
