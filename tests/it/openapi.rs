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
            // GETs, and POSTs whose body is not JSON (an upload), take query parameters.
            let in_query = op.get("parameters").is_some() || method == "get";
            let (names, required): (BTreeSet<String>, bool) = if in_query {
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
            } else if in_query {
                post(&app, &format!("{path}?zzz=1"), json!({})).await
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

/// Every length limit the document states is enforced: for each string parameter or field with a
/// `maxLength` (ids in lists too), a request with every required field valid and that one a
/// character too long answers 400 `invalid_param` naming it.
#[actix_web::test]
async fn spec_length_limits_are_enforced() {
    let t = TestApp::new();
    let app = actix_test::init_service(api::app(t.ctx.clone())).await;
    let spec = spec();
    let dummy = |s: &Value| -> Value {
        match s["type"].as_str() {
            Some("integer") => json!(s["minimum"].as_u64().unwrap_or(1)),
            Some("boolean") => json!(false),
            Some("array") => json!([]),
            _ => match s["enum"].as_array() {
                Some(e) => e[0].clone(),
                None => json!("x"),
            },
        }
    };
    let mut checked = 0;
    let mut failures = vec![];
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if method == "get" || op.get("parameters").is_some() {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                for target in &params {
                    let Some(max) = target["schema"]["maxLength"].as_u64() else {
                        continue;
                    };
                    let name = target["name"].as_str().unwrap();
                    let mut q = vec![format!("{name}={}", "a".repeat(max as usize + 1))];
                    for p in params
                        .iter()
                        .filter(|p| p["required"] == true && p["name"] != name)
                    {
                        let v = dummy(&p["schema"]);
                        let v = v.as_str().map(str::to_string).unwrap_or(v.to_string());
                        q.push(format!("{}={v}", p["name"].as_str().unwrap()));
                    }
                    let url = format!("{path}?{}", q.join("&"));
                    let r = if method == "get" {
                        get(&app, &url).await
                    } else {
                        post(&app, &url, json!({})).await
                    };
                    let msg = r.body["message"].as_str().unwrap_or_default();
                    if r.body["error"] != "invalid_param" || !msg.contains(name) {
                        failures.push(format!("{method} {path} {name}: {}", r.body));
                    }
                    checked += 1;
                }
            } else {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                let Some(props) = schema["properties"].as_object() else {
                    continue;
                };
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                    .unwrap_or_default();
                for (name, s) in props {
                    let (max, in_list) =
                        match (s["maxLength"].as_u64(), s["items"]["maxLength"].as_u64()) {
                            (Some(m), _) => (m, false),
                            (None, Some(m)) => (m, true),
                            _ => continue,
                        };
                    let long = "a".repeat(max as usize + 1);
                    let mut body = serde_json::Map::new();
                    for r in &required {
                        body.insert(r.to_string(), dummy(&props[*r]));
                    }
                    body.insert(
                        name.clone(),
                        if in_list { json!([long]) } else { json!(long) },
                    );
                    let r = post(&app, path, Value::Object(body)).await;
                    let msg = r.body["message"].as_str().unwrap_or_default();
                    if r.body["error"] != "invalid_param" || !msg.contains(name.as_str()) {
                        failures.push(format!("POST {path} {name}: {}", r.body));
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "limits stated but not enforced:\n{}",
        failures.join("\n")
    );
    assert!(checked > 50, "{checked}");
}
