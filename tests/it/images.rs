//! The image API on the real stack.

use crate::common::*;
use actix_web::test;
use api_web::api;
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

async fn create_image(app: &impl App, name: &str, size: u64) -> Value {
    let r = post(
        app,
        "/api/v1/images/create",
        json!({"image_name": name, "image_size": size, "os_type": "Linux", "describe": "test image"}),
    )
    .await;
    r.ok().clone()
}

#[actix_web::test]
async fn create_inspect_update_delete_round_trip() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let pool = t.images_pool();

    let img = create_image(&app, "round trip", GIB).await;
    let id = img["image_id"].as_str().unwrap().to_string();
    assert!(id.starts_with("ami-") && id.len() == 12, "{id}");
    assert_eq!(img["image_size"], GIB);
    assert_eq!(img["os_type"], "Linux");
    assert_eq!(img["status"], "available");
    assert_eq!(img["describe"], "test image");
    assert_eq!(img["image_location"], format!("rbd:{pool}/{id}"));
    assert!(img["create_time"].as_u64().unwrap() > 1_700_000_000);
    // Ceph really holds it, with the asked size.
    assert_eq!(rbd_size(&format!("{pool}/{id}")), Some(GIB));

    let got = get(&app, &format!("/api/v1/images/inspect?image_id={id}")).await;
    assert_eq!(got.ok(), &img);

    // Update changes only the fields given.
    let up = post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "describe": "new words"}),
    )
    .await;
    let up = up.ok();
    assert_eq!(up["describe"], "new words");
    assert_eq!(up["image_name"], "round trip");
    assert_eq!(up["os_type"], "Linux");
    let up = post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "os_type": "Windows", "image_name": "renamed"}),
    )
    .await;
    let up = up.ok();
    assert_eq!(up["os_type"], "Windows");
    assert_eq!(up["image_name"], "renamed");
    assert_eq!(up["describe"], "new words");

    let del = post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await;
    assert_eq!(del.ok()["file"], "removed");
    assert_eq!(rbd_size(&format!("{pool}/{id}")), None);
    get(&app, &format!("/api/v1/images/inspect?image_id={id}"))
        .await
        .assert_error(404, "image_not_found");
    post(&app, "/api/v1/images/delete", json!({"image_id": id}))
        .await
        .assert_error(404, "image_not_found");
}

#[actix_web::test]
async fn create_rejects_bad_input() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let ok = json!({"image_name": "x", "image_size": GIB, "os_type": "Linux"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = ok.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (without("image_name"), 400, "invalid_param"),
        (without("image_size"), 400, "invalid_param"),
        (without("os_type"), 400, "invalid_param"),
        (with("image_size", json!("1G")), 400, "invalid_param"),
        (with("image_size", json!(-1)), 400, "invalid_param"),
        (with("image_size", json!(1.5)), 400, "invalid_param"),
        (with("image_size", json!(0)), 400, "invalid_param"),
        (with("image_size", json!(u64::MAX)), 400, "invalid_param"),
        (with("image_name", json!(42)), 400, "invalid_param"),
        (with("image_name", json!("")), 400, "invalid_param"),
        (with("image_name", json!("   ")), 400, "invalid_param"),
        (
            with("image_name", json!("a".repeat(256))),
            400,
            "invalid_param",
        ),
        (
            with("image_name", json!("line\nbreak")),
            400,
            "invalid_param",
        ),
        (with("os_type", json!("linux")), 400, "invalid_param"),
        (with("os_type", json!("FreeBSD")), 400, "invalid_param"),
        (
            with("describe", json!("d".repeat(4097))),
            400,
            "invalid_param",
        ),
        (with("unknown_field", json!(1)), 400, "invalid_param"),
        (json!([1, 2]), 400, "invalid_param"),
    ];
    for (body, status, code) in cases {
        let r = post(&app, "/api/v1/images/create", body.clone()).await;
        assert_eq!(r.status.as_u16(), status, "{body}: {}", r.body);
        r.assert_error(status, code);
    }
    // Not JSON at all.
    let r = send(
        &app,
        test::TestRequest::post()
            .insert_header(auth())
            .uri("/api/v1/images/create")
            .insert_header(("content-type", "application/json"))
            .set_payload("{\"image_name\": ")
            .to_request(),
    )
    .await;
    r.assert_error(400, "invalid_json");
    let r = send(
        &app,
        test::TestRequest::post()
            .insert_header(auth())
            .uri("/api/v1/images/create")
            .to_request(),
    )
    .await;
    r.assert_error(400, "invalid_json");
    // Nothing was created by any of that.
    let list = get(&app, "/api/v1/images/list").await;
    assert_eq!(list.ok()["total"], 0);
}

#[actix_web::test]
async fn names_with_markup_and_sql_are_stored_verbatim() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let names = [
        "<script>alert('x')</script> & \"quotes\"",
        "'; DROP TABLE image; --",
        "100% _wild_ \\ back",
        "ünïcødé 名前",
        &"n".repeat(255),
    ];
    for name in names {
        let img = create_image(&app, name, 4 << 20).await;
        let id = img["image_id"].as_str().unwrap();
        assert_eq!(img["image_name"], name);
        let got = get(&app, &format!("/api/v1/images/inspect?image_id={id}")).await;
        assert_eq!(got.ok()["image_name"], name);
        let d = json!({"image_id": id, "describe": name});
        assert_eq!(
            post(&app, "/api/v1/images/update", d).await.ok()["describe"],
            name
        );
    }
    // The table survived, and LIKE metacharacters in a filter match literally.
    let r = get(
        &app,
        &format!("/api/v1/images/list?filter_name={}", q("0% _w")),
    )
    .await;
    let data = r.ok();
    assert_eq!(data["total"], 1, "{data}");
    assert_eq!(data["items"][0]["image_name"], "100% _wild_ \\ back");
    let r = get(&app, &format!("/api/v1/images/list?filter_name={}", q("%"))).await;
    assert_eq!(r.ok()["total"], 1);
    let r = get(&app, "/api/v1/images/list?page_size=100").await;
    assert_eq!(r.ok()["total"], names.len());
    for item in r.ok()["items"].as_array().unwrap() {
        let id = item["image_id"].as_str().unwrap();
        post(
            &app,
            "/api/v1/images/delete",
            json!({"image_id": id, "del_file": true}),
        )
        .await
        .ok();
    }
}

#[actix_web::test]
async fn list_filters_and_pages() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let tag = unique("pg");
    let mut ids = vec![];
    for i in 0..5 {
        let img = create_image(&app, &format!("{tag} number {i}"), 1 << 20).await;
        ids.push(img["image_id"].as_str().unwrap().to_string());
    }
    create_image(&app, "someone else", 1 << 20).await;

    let r = get(
        &app,
        &format!("/api/v1/images/list?filter_name={}&page_size=2", q(&tag)),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["total"], 5);
    assert_eq!(d["page_num"], 1);
    assert_eq!(d["page_size"], 2);
    assert_eq!(d["items"].as_array().unwrap().len(), 2);
    // Case-insensitive ("fuzzy") match.
    let upper = tag.to_uppercase();
    let r = get(
        &app,
        &format!("/api/v1/images/list?filter_name={}", q(&upper)),
    )
    .await;
    assert_eq!(r.ok()["total"], 5);
    // Pages cover every row exactly once.
    let mut seen = vec![];
    for page in 1..=3 {
        let r = get(
            &app,
            &format!(
                "/api/v1/images/list?filter_name={}&page_size=2&page_num={page}",
                q(&tag)
            ),
        )
        .await;
        for it in r.ok()["items"].as_array().unwrap() {
            seen.push(it["image_id"].as_str().unwrap().to_string());
        }
    }
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    let r = get(
        &app,
        &format!("/api/v1/images/list?filter_name={}&page_num=9", q(&tag)),
    )
    .await;
    assert_eq!(r.ok()["items"].as_array().unwrap().len(), 0);
    assert_eq!(r.ok()["total"], 5);
    // The defaults.
    let r = get(&app, "/api/v1/images/list").await;
    assert_eq!(r.ok()["page_size"], 20);
    assert_eq!(r.ok()["total"], 6);

    for bad in [
        "page_size=0",
        "page_size=1001",
        "page_num=0",
        "page_size=abc",
        "page_num=-1",
        "page_size=",
        "pagesize=10",
        &format!("filter_name={}", "f".repeat(256)),
    ] {
        get(&app, &format!("/api/v1/images/list?{bad}"))
            .await
            .assert_error(400, "invalid_param");
    }
    get(&app, "/api/v1/images/list?page_size=1000").await.ok();
    for id in ids {
        post(
            &app,
            "/api/v1/images/delete",
            json!({"image_id": id, "del_file": true}),
        )
        .await
        .ok();
    }
}

#[actix_web::test]
async fn inspect_and_update_errors() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    get(&app, "/api/v1/images/inspect?image_id=ami-00000000")
        .await
        .assert_error(404, "image_not_found");
    get(&app, "/api/v1/images/inspect")
        .await
        .assert_error(400, "invalid_param");
    get(&app, "/api/v1/images/inspect?image_id=")
        .await
        .assert_error(400, "invalid_param");
    get(&app, "/api/v1/images/inspect?id=ami-1")
        .await
        .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": "ami-00000000", "describe": "x"}),
    )
    .await
    .assert_error(404, "image_not_found");
    let img = create_image(&app, "upd", 1 << 20).await;
    let id = img["image_id"].as_str().unwrap();
    post(&app, "/api/v1/images/update", json!({"image_id": id}))
        .await
        .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "os_type": "Plan9"}),
    )
    .await
    .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "image_name": ""}),
    )
    .await
    .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "image_size": 5}),
    )
    .await
    .assert_error(400, "invalid_param");
    // Setting the same values again is fine.
    let same = post(
        &app,
        "/api/v1/images/update",
        json!({"image_id": id, "image_name": "upd"}),
    )
    .await;
    assert_eq!(same.ok()["image_name"], "upd");
    post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": "yes"}),
    )
    .await
    .assert_error(400, "invalid_param");
    post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await
    .ok();
}

#[actix_web::test]
async fn register_an_unregistered_rbd_image() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let pool = t.images_pool();
    let name = unique("reg");
    let spec = format!("{pool}/{name}");
    rbd_ok(&["create", "--size", "64M", &spec]);
    let size = 64u64 << 20;

    let listed = |r: &Resp| {
        r.ok()["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["image_id"] == name.as_str())
    };
    let r = get(&app, "/api/v1/unregister_images/list?page_size=1000").await;
    assert!(listed(&r), "{}", r.body);

    let body = |size: u64| json!({"image_id": name, "image_name": "registered", "image_size": size, "os_type": "Linux"});
    post(&app, "/api/v1/images/register", body(size + 512))
        .await
        .assert_error(422, "image_size_mismatch");
    let reg = post(&app, "/api/v1/images/register", body(size)).await;
    let d = reg.ok();
    assert_eq!(d["image_id"], name.as_str());
    assert_eq!(d["image_size"], size);
    assert_eq!(d["status"], "available");
    post(&app, "/api/v1/images/register", body(size))
        .await
        .assert_error(409, "image_already_registered");
    let r = get(&app, "/api/v1/unregister_images/list?page_size=1000").await;
    assert!(!listed(&r));

    // Unregister without the file: the RBD image stays and is unregistered again.
    let del = post(&app, "/api/v1/images/delete", json!({"image_id": name})).await;
    assert_eq!(del.ok()["file"], "kept");
    assert_eq!(rbd_size(&spec), Some(size));
    let r = get(&app, "/api/v1/unregister_images/list?page_size=1000").await;
    assert!(listed(&r));

    // Not in the pool, and names outside the charset.
    let missing =
        json!({"image_id": unique("none"), "image_name": "x", "image_size": 1, "os_type": "Linux"});
    post(&app, "/api/v1/images/register", missing)
        .await
        .assert_error(404, "image_not_in_pool");
    for bad in ["a/b", "x@snap", "-lead", "has space"] {
        let b = json!({"image_id": bad, "image_name": "x", "image_size": 1, "os_type": "Linux"});
        post(&app, "/api/v1/images/register", b)
            .await
            .assert_error(400, "invalid_param");
    }
    let b = json!({"image_id": name, "image_name": "x", "image_size": size, "os_type": "Solaris"});
    post(&app, "/api/v1/images/register", b)
        .await
        .assert_error(400, "invalid_param");
    let b = json!({"image_id": name, "image_name": "x", "os_type": "Linux"});
    post(&app, "/api/v1/images/register", b)
        .await
        .assert_error(400, "invalid_param");
    get(&app, "/api/v1/unregister_images/list?page_size=0")
        .await
        .assert_error(400, "invalid_param");
    rbd_ok(&["rm", &spec]);
}

#[actix_web::test]
async fn delete_refuses_an_image_with_clones_and_removes_nothing() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let (pool, vpool) = (t.images_pool(), t.volumes_pool());
    let img = create_image(&app, "parent", 32 << 20).await;
    let id = img["image_id"].as_str().unwrap().to_string();
    let snap = format!("{pool}/{id}@base");
    let clone = unique("clone");
    rbd_ok(&["snap", "create", &snap]);
    rbd_ok(&["snap", "protect", &snap]);
    rbd_ok(&["clone", &snap, &format!("{vpool}/{clone}")]);

    for del_file in [true, false] {
        let r = post(
            &app,
            "/api/v1/images/delete",
            json!({"image_id": id, "del_file": del_file}),
        )
        .await;
        r.assert_error(409, "image_has_clones");
        let msg = r.body["message"].as_str().unwrap();
        assert!(msg.contains(&format!("{vpool}/{clone}")), "{msg}");
    }
    // Nothing was removed, and the row is usable again.
    let got = get(&app, &format!("/api/v1/images/inspect?image_id={id}")).await;
    assert_eq!(got.ok()["status"], "available");
    assert_eq!(rbd_size(&format!("{pool}/{id}")), Some(32 << 20));

    rbd_ok(&["rm", &format!("{vpool}/{clone}")]);
    // With the clone gone, delete also removes the (protected) snapshot and the image.
    let r = post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await;
    assert_eq!(r.ok()["file"], "removed");
    assert_eq!(rbd_size(&format!("{pool}/{id}")), None);
}

#[actix_web::test]
async fn an_image_removed_behind_our_back() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let pool = t.images_pool();
    let img = create_image(&app, "vanishing", 1 << 20).await;
    let id = img["image_id"].as_str().unwrap().to_string();
    rbd_ok(&["rm", &format!("{pool}/{id}")]);
    // Inspect answers from MySQL.
    let got = get(&app, &format!("/api/v1/images/inspect?image_id={id}")).await;
    assert_eq!(got.ok()["image_id"], id.as_str());
    let r = post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["file"], "already_gone");
    assert!(d["message"].as_str().unwrap().contains("already gone"));
    get(&app, &format!("/api/v1/images/inspect?image_id={id}"))
        .await
        .assert_error(404, "image_not_found");
}

/// Ceph fails: the row recorded first is removed again.
#[actix_web::test]
async fn create_failing_in_ceph_leaves_no_row() {
    let t = TestApp::with_config(|c| c.ceph.images_pool = "no-such-pool".into());
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let r = post(
        &app,
        "/api/v1/images/create",
        json!({"image_name": "doomed", "image_size": 1 << 20, "os_type": "Linux"}),
    )
    .await;
    r.assert_error(503, "ceph_unavailable");
    // Either the row was recorded, Ceph failed and the row went again; or the health probe
    // (which asks the missing pool too) had already marked Ceph down and nothing was started.
    let m = r.body["message"].as_str().unwrap();
    assert!(
        m.contains("nothing was kept") || m.contains("Ceph is not answering"),
        "{}",
        r.body
    );
    assert_eq!(get(&app, "/api/v1/images/list").await.ok()["total"], 0);
}

/// MySQL fails after Ceph succeeded: the RBD image is removed again, and the error says so.
#[actix_web::test]
async fn create_failing_in_mysql_after_ceph_leaves_no_rbd_image() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    t.db.conn()
        .batch_execute(
            "CREATE TRIGGER fail_available BEFORE UPDATE ON image FOR EACH ROW \
             IF NEW.status = 'available' THEN \
               SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'; \
             END IF",
        )
        .unwrap();
    let r = post(
        &app,
        "/api/v1/images/create",
        json!({"image_name": "doomed", "image_size": 1 << 20, "os_type": "Linux"}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.body);
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.contains("was created but recording it failed"), "{msg}");
    assert!(msg.contains("nothing was kept"), "{msg}");
    let id = msg
        .split(['/', ' '])
        .find(|w| w.starts_with("ami-"))
        .expect("the error names the image");
    assert_eq!(rbd_size(&format!("{}/{id}", t.images_pool())), None);
    assert_eq!(get(&app, "/api/v1/images/list").await.ok()["total"], 0);
}

/// MySQL fails after the RBD image was removed: the row stays `deleting` (not `available`: its
/// file is gone), the error says so, and a retry finishes the job.
#[actix_web::test]
async fn delete_failing_in_mysql_after_ceph_can_be_retried() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let img = create_image(&app, "half", 1 << 20).await;
    let id = img["image_id"].as_str().unwrap().to_string();
    t.db.conn()
        .batch_execute(
            "CREATE TRIGGER fail_delete BEFORE DELETE ON image FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected failure'",
        )
        .unwrap();
    let r = post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await;
    r.assert_error(503, "database_unavailable");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("already removed"),
        "{}",
        r.body
    );
    assert_eq!(rbd_size(&format!("{}/{id}", t.images_pool())), None);
    let got = get(&app, &format!("/api/v1/images/inspect?image_id={id}")).await;
    assert_eq!(got.ok()["status"], "deleting");
    t.db.conn()
        .batch_execute("DROP TRIGGER fail_delete")
        .unwrap();
    let r = post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await;
    assert_eq!(r.ok()["file"], "already_gone");
    get(&app, &format!("/api/v1/images/inspect?image_id={id}"))
        .await
        .assert_error(404, "image_not_found");
}

/// Rows a crash left half-done are repaired at start-up: `creating` loses its RBD image and row,
/// `deleting` with its image present goes back to `available`.
#[actix_web::test]
async fn reconciliation_repairs_half_done_rows() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let pool = t.images_pool();
    let a = create_image(&app, "crashed while creating", 1 << 20).await;
    let b = create_image(&app, "crashed while deleting", 1 << 20).await;
    let (a, b) = (
        a["image_id"].as_str().unwrap(),
        b["image_id"].as_str().unwrap(),
    );
    t.db.conn()
        .batch_execute(&format!(
            "UPDATE image SET status = 'creating', update_time = 1 WHERE image_id = '{a}'; \
             UPDATE image SET status = 'deleting', update_time = 1 WHERE image_id = '{b}';"
        ))
        .unwrap();
    // A delete racing a live one is refused.
    post(&app, "/api/v1/images/delete", json!({"image_id": b}))
        .await
        .assert_error(409, "image_busy");
    assert_eq!(api_web::service::images::reconcile(&t.ctx, 600).unwrap(), 2);
    get(&app, &format!("/api/v1/images/inspect?image_id={a}"))
        .await
        .assert_error(404, "image_not_found");
    assert_eq!(rbd_size(&format!("{pool}/{a}")), None);
    let got = get(&app, &format!("/api/v1/images/inspect?image_id={b}")).await;
    assert_eq!(got.ok()["status"], "available");
    post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": b, "del_file": true}),
    )
    .await
    .ok();
}
