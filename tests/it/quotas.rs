//! Quotas per project: set by admins, shown to the project, and exact under concurrency (the
//! check and the insert share one transaction under the project's quota lock).

use crate::common::*;
use actix_web::test;
use api_web::api;
use api_web::service::auth::{self, Role};
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::time::Instant;

async fn call(app: &impl App, key: &str, method: &str, uri: &str, body: Option<Value>) -> Resp {
    let req = match method {
        "get" => test::TestRequest::get(),
        _ => test::TestRequest::post(),
    }
    .uri(uri)
    .insert_header(("authorization", format!("Bearer {key}")));
    let req = match body {
        Some(b) => req.set_json(b),
        None => req,
    };
    send(app, req.to_request()).await
}

/// 50 volume creates at once against a quota of 10 volumes: exactly 10 made, 40 refused with
/// 409 `quota_exceeded` naming the quota; 8 instance creates at once against a quota of 2
/// instances: exactly 2 accepted. Members see their quota and cannot set it; `null` lifts a
/// limit.
#[actix_web::test]
async fn quotas_hold_under_concurrency() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = crate::instances::test_image(&app, &t).await;
    let project = auth::create_project(&mut t.ctx.conn().unwrap(), "quota-q").unwrap();
    let member = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "m",
        Role::Member,
        "quota-q",
        None,
    )
    .unwrap()
    .secret;
    let pid = project.project_id.clone();

    let r = call(&app, &member, "get", "/api/v1/quotas", None).await;
    assert_eq!(
        r.ok()["limits"]["volumes"],
        Value::Null,
        "no limit by default"
    );
    call(
        &app,
        &member,
        "post",
        "/api/v1/quotas/update",
        Some(json!({"project_id": pid, "volumes": 100})),
    )
    .await
    .assert_error(403, "forbidden");
    let r = post(
        &app,
        "/api/v1/quotas/update",
        json!({"project_id": pid, "volumes": 10, "instances": 2}),
    )
    .await;
    assert_eq!(r.ok()["limits"]["volumes"], 10);
    post(
        &app,
        "/api/v1/quotas/update",
        json!({"project_id": "prj-nothing"}),
    )
    .await
    .assert_error(400, "invalid_param");

    let t0 = Instant::now();
    let answers = join_all((0..50).map(|i| {
        call(
            &app,
            &member,
            "post",
            "/api/v1/volume/create",
            Some(json!({"volume_name": format!("q{i}"), "volume_size": 1})),
        )
    }))
    .await;
    println!(
        "50 volume creates against a quota of 10 answered in {:?}",
        t0.elapsed()
    );
    let made: Vec<String> = answers
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["data"]["volume_id"].as_str().unwrap().to_string())
        .collect();
    let refused: Vec<&Resp> = answers.iter().filter(|r| r.status == 409).collect();
    let other: Vec<&Value> = answers
        .iter()
        .filter(|r| r.status != 200 && r.status != 409)
        .map(|r| &r.body)
        .collect();
    assert!(other.is_empty(), "{other:?}");
    assert_eq!((made.len(), refused.len()), (10, 40));
    for r in refused {
        assert_eq!(r.body["error"], "quota_exceeded", "{}", r.body);
        let m = r.body["message"].as_str().unwrap();
        assert!(
            m.contains("volumes") && m.contains("limited to 10") && m.contains("10 in use"),
            "{m}"
        );
    }
    let r = call(&app, &member, "get", "/api/v1/quotas", None).await;
    assert_eq!(r.ok()["usage"]["volumes"], 10, "{}", r.body);
    assert_eq!(r.ok()["usage"]["volume_gib"], 10, "{}", r.body);

    let answers = join_all((0..8).map(|i| {
        call(
            &app,
            &member,
            "post",
            "/api/v1/instance/create",
            Some(json!({"instance_name": format!("q{i}"), "image_id": image, "cpu": 1, "memory": 128})),
        )
    }))
    .await;
    let accepted: Vec<String> = answers
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.body["data"]["instance_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        accepted.len(),
        2,
        "{:?}",
        answers
            .iter()
            .map(|r| (r.status, r.body["error"].clone()))
            .collect::<Vec<_>>()
    );
    assert!(answers
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.body["error"] == "quota_exceeded"));

    // Lifted: one more fits.
    post(
        &app,
        "/api/v1/quotas/update",
        json!({"project_id": pid, "volumes": null}),
    )
    .await
    .ok();
    call(
        &app,
        &member,
        "post",
        "/api/v1/volume/create",
        Some(json!({"volume_name": "q-extra", "volume_size": 1})),
    )
    .await
    .ok();

    for i in &accepted {
        crate::instances::wait_created(&app, i).await;
        call(
            &app,
            &member,
            "post",
            "/api/v1/instance/destroy",
            Some(json!({"instance_id": i, "delete_attached": true})),
        )
        .await
        .ok();
    }
    let all = call(
        &app,
        &member,
        "get",
        "/api/v1/volume/list?page_size=100",
        None,
    )
    .await;
    for v in all.ok()["items"].as_array().unwrap() {
        call(
            &app,
            &member,
            "post",
            "/api/v1/volume/delete",
            Some(json!({"volume_id": v["volume_id"]})),
        )
        .await
        .ok();
    }
    crate::instances::drop_image(&app, &image).await;
}
