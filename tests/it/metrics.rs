//! `GET /metrics`: Prometheus text for admins only, counting requests by route pattern (never
//! by raw path), operations by kind and outcome, rows by status, and backend health.

use crate::common::*;
use actix_web::test;
use api_web::api;
use api_web::service::auth::{self, Role};
use serde_json::json;

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[actix_web::test]
async fn metrics_count_requests_operations_and_rows_for_admins() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let member = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "m",
        Role::Member,
        "default",
        None,
    )
    .unwrap()
    .secret;
    let scrape = |key: Option<String>| {
        let mut req = test::TestRequest::get().uri("/metrics");
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        req.to_request()
    };
    let r = test::call_service(&app, scrape(None)).await;
    assert_eq!(r.status(), 401);
    let r = test::call_service(&app, scrape(Some(member))).await;
    assert_eq!(r.status(), 403);

    let v = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "m", "volume_size": 1}),
    )
    .await;
    let id = v.ok()["volume_id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        get(&app, "/api/v1/volume/list").await.ok();
    }
    get(&app, "/api/v1/instance/detail?instance_id=i-00000000")
        .await
        .assert_error(404, "instance_not_found");

    let r = test::call_service(&app, scrape(Some(TEST_KEY.into()))).await;
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(test::read_body(r).await.to_vec()).unwrap();
    let http = "api_web_http_requests_total";
    assert_eq!(
        sample(
            &text,
            http,
            &[
                "route=\"/api/v1/volume/list\"",
                "status=\"200\"",
                "method=\"GET\""
            ]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            http,
            &["route=\"/api/v1/instance/detail\"", "status=\"404\""]
        ),
        Some(1.0)
    );
    assert!(
        !text.contains("i-00000000"),
        "routes are patterns, never raw paths or ids"
    );
    assert!(sample(
        &text,
        "api_web_http_request_duration_seconds_count",
        &["route=\"/api/v1/volume/create\""]
    )
    .is_some());
    assert_eq!(
        sample(
            &text,
            "api_web_http_requests_total",
            &["status=\"401\"", "route=\"/metrics\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "api_web_operations_total",
            &["kind=\"volume.create\"", "outcome=\"done\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "api_web_resources",
            &["resource=\"volume\"", "status=\"available\""]
        ),
        Some(1.0)
    );
    for b in ["mysql", "ceph", "libvirt"] {
        assert!(
            sample(&text, "api_web_backend_up", &[&format!("backend=\"{b}\"")]).is_some(),
            "{b}"
        );
    }
    assert_eq!(
        sample(&text, "api_web_backend_up", &["backend=\"mysql\""]),
        Some(1.0)
    );
    assert!(sample(&text, "api_web_db_pool_connections", &["state=\"max\""]).is_some());
    assert!(sample(&text, "api_web_reconcile", &["what=\"passes\""]).is_some());
    // No secret in the scrape.
    assert!(!text.contains(TEST_KEY) && !text.contains("api_web:api_web"));
    post(&app, "/api/v1/volume/delete", json!({"volume_id": id}))
        .await
        .ok();
}

/// `GET path` on `addr` with no credentials: the status and the body.
fn raw_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// With `server.metrics_listen`, the real binary also serves `/metrics` there without
/// credentials (and nothing else), while the API's `/metrics` still wants an admin.
#[actix_web::test]
async fn a_separate_scrape_listener_serves_metrics_only() {
    let t = TestApp::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let scrape = format!("127.0.0.1:{port}");
    let child =
        crate::operations::ApiWeb::start_with(&t, "", &[("API_WEB_METRICS_LISTEN", &scrape)]);
    child
        .call("GET", "/api/v1/volume/list", "")
        .expect("the API answers");
    let (status, text) = raw_get(&scrape, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        sample(
            &text,
            "api_web_http_requests_total",
            &["route=\"/api/v1/volume/list\""]
        ) == Some(1.0),
        "{text}"
    );
    assert_eq!(raw_get(&scrape, "/api/v1/volume/list").0, 404);
    assert_eq!(raw_get(child.addr(), "/metrics").0, 401);
}
