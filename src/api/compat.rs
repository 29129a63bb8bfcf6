//! What the seed portal sends, made into what the handlers read: a GET's cache-buster
//! parameter `_` (jQuery's `cache: false`) is dropped, and a POST body sent as
//! `application/x-www-form-urlencoded` becomes the JSON object the route's OpenAPI schema
//! describes (integers, booleans and arrays typed as the schema says; repeated keys, or
//! `key[]`, make an array).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Per POST path: each body field's JSON type (`integer`, `boolean`, `array`, `string`...).
static FIELD_TYPES: LazyLock<HashMap<String, HashMap<String, String>>> = LazyLock::new(|| {
    let spec: Value = serde_json::from_str(super::OPENAPI).unwrap_or_default();
    let mut out = HashMap::new();
    for (path, ops) in spec["paths"].as_object().into_iter().flatten() {
        let props =
            &ops["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"];
        let Some(props) = props.as_object() else {
            continue;
        };
        let types = props
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v["type"].as_str().unwrap_or("string").to_string(),
                )
            })
            .collect();
        out.insert(path.clone(), types);
    }
    out
});

/// Without the `_` parameter (its value is never read).
fn without_cache_buster(query: &str) -> Option<String> {
    let parts: Vec<&str> = query.split('&').collect();
    let kept: Vec<&str> = parts
        .iter()
        .copied()
        .filter(|p| *p != "_" && !p.starts_with("_="))
        .collect();
    (kept.len() != parts.len()).then(|| kept.join("&"))
}

/// A form body as the JSON object of `types` (a value that does not parse as its type is kept
/// as a string, and the handler's own check names it).
pub fn form_to_json(body: &[u8], types: Option<&HashMap<String, String>>) -> Value {
    let mut obj = Map::new();
    for (k, v) in form_urlencoded::parse(body) {
        let key = k.strip_suffix("[]").unwrap_or(&k).to_string();
        let kind = types
            .and_then(|t| t.get(&key))
            .map(String::as_str)
            .unwrap_or("string");
        let value = match kind {
            "integer" => v
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(v.as_ref())),
            "boolean" => match v.as_ref() {
                "true" | "1" | "on" => Value::Bool(true),
                "false" | "0" | "off" => Value::Bool(false),
                other => Value::from(other),
            },
            _ => Value::from(v.as_ref()),
        };
        if kind == "array" {
            match obj.entry(key).or_insert_with(|| Value::Array(vec![])) {
                Value::Array(a) => {
                    if value != "" {
                        a.push(value)
                    }
                }
                other => *other = Value::Array(vec![value]),
            }
        } else {
            obj.insert(key, value);
        }
    }
    Value::Object(obj)
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(q) = without_cache_buster(req.query_string()) {
        let path = req.path().to_string();
        let uri = if q.is_empty() {
            path
        } else {
            format!("{path}?{q}")
        };
        if let Ok(uri) = uri.parse::<actix_web::http::Uri>() {
            // Only the query changes: routing (on the path) is unaffected.
            req.head_mut().uri = uri;
        }
    }
    let form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // An upload's body is the image itself (curl --data-binary says it is a form).
    if form
        && req.method() == actix_web::http::Method::POST
        && req.path() != super::images::UPLOAD_PATH
    {
        let body = match super::middleware::read_body(&mut req).await {
            Ok(b) => b,
            Err(e) => return Ok(super::middleware::refuse(req, e)),
        };
        let json = form_to_json(&body, FIELD_TYPES.get(req.path()));
        let bytes = web::Bytes::from(serde_json::to_vec(&json).unwrap_or_default());
        req.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        req.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(bytes.len()),
        );
        req.set_payload(actix_http::Payload::from(bytes));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_buster_goes_and_nothing_else() {
        assert_eq!(
            without_cache_buster("a=1&_=1795000000000"),
            Some("a=1".into())
        );
        assert_eq!(without_cache_buster("_=1"), Some(String::new()));
        assert_eq!(without_cache_buster("a=1&_x=2"), None);
        assert_eq!(without_cache_buster(""), None);
    }

    #[test]
    fn a_form_takes_the_types_of_the_schema() {
        let types = FIELD_TYPES
            .get("/api/v1/instance/create")
            .expect("in the spec");
        let v = form_to_json(
            b"instance_name=web+1&image_id=ami-1&cpu=2&memory=512&volume_ids=vol-1&volume_ids=vol-2&network_interface_ids[]=eni-1&describe=123",
            Some(types),
        );
        assert_eq!(
            v,
            serde_json::json!({"instance_name": "web 1", "image_id": "ami-1", "cpu": 2,
                "memory": 512, "volume_ids": ["vol-1", "vol-2"],
                "network_interface_ids": ["eni-1"], "describe": "123"})
        );
        let types = FIELD_TYPES.get("/api/v1/instance/destroy").unwrap();
        let v = form_to_json(b"instance_id=i-1&delete_attached=true", Some(types));
        assert_eq!(
            v,
            serde_json::json!({"instance_id": "i-1", "delete_attached": true})
        );
    }
}
