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
