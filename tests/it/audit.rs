//! The audit log: every mutating request (credential, route, resource, outcome, error code),
//! every login, and every operation outcome (tied to its request by the request id); read by
//! admins (`audit/list`) and, per instance, by its project (`instance/actions`).

use crate::common::*;
use actix_web::test;
use api_web::api;
use api_web::service::auth::{self, Role};
use serde_json::{json, Value};

async fn audit(app: &impl App, query: &str) -> Vec<Value> {
    get(app, &format!("/api/v1/audit/list?page_size=100&{query}"))
        .await
        .ok()["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[actix_web::test]
async fn requests_logins_and_operations_are_audited() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let test_key = crate::instances::count(&t.db, "SELECT COUNT(*) AS n FROM api_key");
    assert_eq!(test_key, 1);

    let r = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "a", "volume_size": 1}),
    )
    .await;
    let rid = r.request_id.clone().unwrap();
    let v = r.ok()["volume_id"].as_str().unwrap().to_string();
    get(&app, &format!("/api/v1/volume/delete?volume_id={v}"))
        .await
        .ok();
    post(
        &app,
        "/api/v1/volume/delete",
        json!({"volume_id": "vol-00000000"}),
    )
    .await
    .assert_error(404, "volume_not_found");
    // A read is not audited.
    get(&app, "/api/v1/volume/list").await.ok();

    let rows = audit(&app, &format!("resource_id={v}")).await;
    let seen: Vec<(String, String)> = rows
        .iter()
        .rev()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("POST /api/v1/volume/create", "ok"),
        ("volume.create", "done"),
        ("GET /api/v1/volume/delete", "ok"),
        ("volume.delete", "done"),
    ];
    for w in want {
        assert!(
            seen.contains(&(w.0.to_string(), w.1.to_string())),
            "{w:?} missing from {seen:?}"
        );
    }
    let create = rows
        .iter()
        .find(|r| r["action"] == "POST /api/v1/volume/create")
        .unwrap();
    assert_eq!(create["request_id"], rid.as_str());
    assert!(
        create["credential"].as_str().unwrap().starts_with("key-"),
        "{create}"
    );
    assert_eq!(create["project_id"], "prj-00000000");
    let op = rows
        .iter()
        .find(|r| r["action"] == "volume.create")
        .unwrap();
    assert_eq!(
        op["request_id"],
        rid.as_str(),
        "an operation carries its request's id"
    );

    let failed = audit(&app, "outcome=error&action=POST%20/api/v1/volume/delete").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["error_code"], "volume_not_found");
    assert_eq!(failed[0]["resource_id"], "vol-00000000");
    assert!(audit(&app, "action=GET%20/api/v1/volume/list")
        .await
        .is_empty());

    // Logins, refused ones with the name they gave.
    send(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/auth/token")
            .set_json(json!({"user_name": "ghost", "password": "not a password"}))
            .to_request(),
    )
    .await
    .assert_error(401, "unauthorized");
    let logins = audit(&app, "action=POST%20/api/v1/auth/token").await;
    assert_eq!(logins.len(), 1);
    assert_eq!(logins[0]["user_name"], "ghost");
    assert_eq!(logins[0]["error_code"], "unauthorized");
    assert!(!logins[0].to_string().contains("not a password"));

    // Members may not read the log.
    let member = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "m",
        Role::Member,
        "default",
        None,
    )
    .unwrap()
    .secret;
    let r = send(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/audit/list")
            .insert_header(("authorization", format!("Bearer {member}")))
            .to_request(),
    )
    .await;
    r.assert_error(403, "forbidden");
}

/// An instance's history: its create and destroy requests and their operations' outcomes;
/// another project's member gets 404; an admin still reads it once the instance is gone.
#[actix_web::test]
async fn instance_actions_tell_an_instances_history() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = crate::instances::test_image(&app, &t).await;
    let id = crate::instances::create(&app, &image, "storied").await;
    crate::instances::wait_created(&app, &id).await;
    auth::create_project(&mut t.ctx.conn().unwrap(), "others").unwrap();
    let other = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "o",
        Role::Member,
        "others",
        None,
    )
    .unwrap()
    .secret;
    let uri = format!("/api/v1/instance/actions?instance_id={id}");
    send(
        &app,
        test::TestRequest::get()
            .uri(&uri)
            .insert_header(("authorization", format!("Bearer {other}")))
            .to_request(),
    )
    .await
    .assert_error(404, "instance_not_found");
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    let rows = get(&app, &uri).await.ok()["items"]
        .as_array()
        .unwrap()
        .clone();
    // Each request with its operation's outcome, tied by the request id (the outcome may be
    // written before the request's own record, which waits for the answer).
    for (request, operation) in [
        ("POST /api/v1/instance/create", "instance.create"),
        ("POST /api/v1/instance/destroy", "instance.destroy"),
    ] {
        let find = |a: &str| {
            rows.iter()
                .find(|r| r["action"] == a)
                .unwrap_or_else(|| panic!("{a} missing from {rows:?}"))
        };
        let (r, o) = (find(request), find(operation));
        assert_eq!(r["outcome"], "ok");
        assert_eq!(o["outcome"], "done");
        assert_eq!(r["request_id"], o["request_id"]);
        assert_eq!(r["resource_id"], id.as_str());
    }
    assert_eq!(rows.len(), 4, "{rows:?}");
    get(&app, "/api/v1/instance/actions?instance_id=i-00000000")
        .await
        .assert_error(404, "instance_not_found");
    crate::instances::drop_image(&app, &image).await;
}
