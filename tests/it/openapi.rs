//! openapi.json is true: it names exactly the routes the route table serves, with exactly the
//! parameters each handler accepts, and what it marks required is required.

use crate::common::*;
use actix_web::test as actix_test;
use api_web::api;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// (path, method) pairs of the route table the app registers.
fn served_routes() -> BTreeSet<(String, String)> {
    api::ROUTES
        .iter()
        .map(|(m, p)| (p.to_string(), m.to_string()))
        .collect()
}

fn spec() -> Value {
    serde_json::from_str(api::OPENAPI).unwrap()
}

#[test]
fn spec_names_exactly_the_routes() {
    let spec = spec();
    let mut documented = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.insert((path.clone(), m.clone()));
        }
    }
    let served = served_routes();
    assert!(served.len() > 25, "{served:?}");
    assert_eq!(documented, served);
}

/// The names serde lists in "unknown field `zzz`, expected one of `a`, `b`".
fn accepted(message: &str) -> BTreeSet<String> {
    let Some(i) = message.find("expected") else {
        return BTreeSet::new();
    };
    message[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[actix_web::test]
async fn spec_parameters_match_the_handlers() {
    let t = TestApp::new();
    let app = actix_test::init_service(api::app(t.ctx.clone())).await;
    let spec = spec();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let (names, required): (BTreeSet<String>, bool) = if method == "get" {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                (
                    params
                        .iter()
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect(),
                    params.iter().any(|p| p["required"] == true),
                )
            } else {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                (
                    schema["properties"]
                        .as_object()
                        .map(|o| o.keys().cloned().collect())
                        .unwrap_or_default(),
                    schema["required"].as_array().is_some_and(|r| !r.is_empty()),
                )
            };
            // An unknown name is refused, and the refusal lists the names accepted.
            let r = if method == "get" {
                get(&app, &format!("{path}?zzz=1")).await
            } else {
                post(&app, path, json!({"zzz": 1})).await
            };
            if names.is_empty() {
                // Takes no parameters (healthz, version, openapi.json).
                continue;
            }
            r.assert_error(400, "invalid_param");
            let msg = r.body["message"].as_str().unwrap();
            assert_eq!(accepted(msg), names, "{method} {path}: {msg}");
            // Nothing given: 400 exactly when something is required.
            let r = if method == "get" {
                get(&app, path).await
            } else {
                post(&app, path, json!({})).await
            };
            if required {
                r.assert_error(400, "invalid_param");
            } else {
                assert_eq!(r.status.as_u16(), 200, "{method} {path}: {}", r.body);
            }
        }
    }
    let r = get(&app, "/api/v1/openapi.json").await;
    assert_eq!(r.body["openapi"], "3.0.3");
}
