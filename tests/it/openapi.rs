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

/// The OpenAPI document lists every error code the API answers (`x-error-codes`, and the enum of
/// the error envelope's `error`), each with its HTTP status and its doc comment from
/// `ErrorCode`: one list, checked both ways.
#[test]
fn spec_lists_every_error_code_with_its_status_and_doc() {
    use api_web::error::{documented, ErrorCode};
    let spec = spec();
    let listed: Vec<(String, u64, String)> = spec["x-error-codes"]
        .as_array()
        .expect("x-error-codes")
        .iter()
        .map(|c| {
            (
                c["code"].as_str().unwrap().to_string(),
                c["status"].as_u64().unwrap(),
                c["description"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, u64, String)> = documented()
        .into_iter()
        .map(|(c, doc)| (c.as_str().to_string(), u64::from(c.status()), doc))
        .collect();
    assert_eq!(
        want.len(),
        ErrorCode::ALL.len(),
        "a code without its doc line"
    );
    assert_eq!(
        listed, want,
        "openapi.json x-error-codes and ErrorCode disagree"
    );
    let enumerated: Vec<&str> = spec["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(enumerated, codes);
}
