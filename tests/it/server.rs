//! Server behaviour shared by every endpoint: envelope, request ids, actix's own errors, health.

use crate::common::*;
use actix_web::test;
use api_web::api;
use serde_json::json;

#[actix_web::test]
async fn healthz_reports_each_backend() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let r = get(&app, "/healthz").await;
    let d = r.ok();
    for b in ["mysql", "libvirt", "ceph"] {
        assert_eq!(d[b]["ok"], true, "{b}: {d}");
    }
    assert!(d["libvirt"]["detail"].as_str().unwrap().contains("libvirt"));
}

#[actix_web::test]
async fn healthz_names_the_failing_backend() {
    // Ceph alone down: a conf whose monitor nobody listens on.
    let dir = std::env::temp_dir().join(unique("cephconf"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("ceph.conf");
    std::fs::write(
        &conf,
        "[global]\nmon host = 127.0.0.1:9\nauth client required = cephx\n",
    )
    .unwrap();
    let t = TestApp::with_config(|c| {
        c.ceph.conf = conf.to_string_lossy().into_owned();
        c.ceph.op_timeout_secs = 2;
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let r = get(&app, "/healthz").await;
    r.assert_error(503, "backend_unavailable");
    let msg = r.body["message"].as_str().unwrap();
    assert!(msg.contains("ceph"), "{msg}");
    assert!(
        !msg.contains("mysql") && !msg.contains("libvirt ("),
        "{msg}"
    );
    assert_eq!(r.body["data"]["mysql"]["ok"], true);
    assert_eq!(r.body["data"]["libvirt"]["ok"], true);
    assert_eq!(r.body["data"]["ceph"]["ok"], false);

    // MySQL and libvirt down too.
    let t = TestApp::with_config(|c| {
        c.ceph.conf = conf.to_string_lossy().into_owned();
        c.ceph.op_timeout_secs = 2;
        c.database.url = "mysql://nobody:x@127.0.0.1:9/none".into();
        c.database.connect_timeout_secs = 1;
        c.libvirt.uri = "qemu+tcp://127.0.0.1:9/system".into();
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let r = get(&app, "/healthz").await;
    r.assert_error(503, "backend_unavailable");
    let msg = r.body["message"].as_str().unwrap();
    for b in ["mysql (", "libvirt (", "ceph ("] {
        assert!(msg.contains(b), "{b}: {msg}");
    }
    // And an API call answers 503 naming MySQL rather than hanging or panicking.
    get(&app, "/api/v1/images/list")
        .await
        .assert_error(503, "database_unavailable");
    std::fs::remove_dir_all(dir).unwrap();
}

#[actix_web::test]
async fn request_id_is_echoed_or_generated() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let r = send(
        &app,
        test::TestRequest::get()
            .insert_header(auth())
            .uri("/api/v1/version")
            .insert_header(("x-request-id", "portal-42"))
            .to_request(),
    )
    .await;
    assert_eq!(r.request_id.as_deref(), Some("portal-42"));
    assert_eq!(r.body["request_id"], "portal-42");
    let d = r.ok();
    assert_eq!(d["name"], "api-web");
    assert_eq!(d["api"], "v1");
    // Generated when absent or unusable, and in error bodies too.
    let r = send(
        &app,
        test::TestRequest::get()
            .insert_header(auth())
            .uri("/api/v1/images/inspect?image_id=ami-00000000")
            .insert_header(("x-request-id", "has space"))
            .to_request(),
    )
    .await;
    let id = r.request_id.clone().unwrap();
    assert_eq!(id.len(), 32);
    r.assert_error(404, "image_not_found");
}

#[actix_web::test]
async fn actix_errors_use_the_envelope() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    get(&app, "/api/v1/no/such/route")
        .await
        .assert_error(404, "route_not_found");
    get(&app, "/").await.assert_error(404, "route_not_found");
    get(&app, "/api/v1/images/create")
        .await
        .assert_error(405, "method_not_allowed");
    post(&app, "/api/v1/images/list", json!({}))
        .await
        .assert_error(405, "method_not_allowed");
    let big = "x".repeat(t.ctx.cfg.server.body_limit + 1);
    post(&app, "/api/v1/images/create", json!({"image_name": big}))
        .await
        .assert_error(413, "payload_too_large");
}

/// What the seed portal sends: a jQuery cache-buster `_` on GETs, form-encoded POST bodies
/// (typed as the route's schema says), and `os_type` "Window".
#[actix_web::test]
async fn the_seed_portals_requests_are_understood() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let form = |uri: &str, body: &str| {
        test::TestRequest::post()
            .uri(uri)
            .insert_header(auth())
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body.to_string())
            .to_request()
    };
    let r = send(
        &app,
        form(
            "/api/v1/volume/create",
            "volume_name=from+a+form&volume_size=1",
        ),
    )
    .await;
    let v = r.ok().clone();
    assert_eq!(v["volume_size"], 1);
    assert_eq!(v["volume_name"], "from a form");
    let r = get(&app, "/api/v1/volume/list?_=1795000000000&page_size=5").await;
    assert_eq!(r.ok()["total"], 1);
    get(&app, "/api/v1/volume/list?_").await.ok();
    let r = send(
        &app,
        form(
            "/api/v1/images/create",
            "image_name=w&image_size=1048576&os_type=Window",
        ),
    )
    .await;
    let img = r.ok().clone();
    assert_eq!(img["os_type"], "Windows");
    // A form's bad value is still named by the handler's own check.
    send(
        &app,
        form("/api/v1/volume/create", "volume_name=x&volume_size=big"),
    )
    .await
    .assert_error(400, "invalid_param");
    let r = send(
        &app,
        form(
            "/api/v1/volume/delete",
            &format!("volume_id={}", v["volume_id"].as_str().unwrap()),
        ),
    )
    .await;
    r.ok();
    post(
        &app,
        "/api/v1/images/delete",
        serde_json::json!({"image_id": img["image_id"], "del_file": true}),
    )
    .await
    .ok();
}
