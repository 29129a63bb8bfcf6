//! Credentials: every route but the public ones refuses a request without a live API key; keys
//! come from `api-web admin`, are stored only as hashes, and stop working when revoked or
//! expired; a cross-site "simple" request cannot act; CORS allows the configured origins only.

use crate::common::*;
use actix_web::test;
use api_web::api;
use api_web::db::auth as q;
use api_web::service::auth::{self, Role};

fn request(method: &str, path: &str) -> test::TestRequest {
    match method {
        "get" => test::TestRequest::get(),
        "post" => test::TestRequest::post(),
        other => panic!("method {other}"),
    }
    .uri(path)
}

/// Walks the route table: without credentials, with a malformed header, with an unknown key and
/// with a revoked one, every non-public route answers 401 `unauthorized` (asking for a Bearer
/// token) before it looks at anything else; the public ones answer without credentials.
#[actix_web::test]
async fn every_route_refuses_a_request_without_a_live_key() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let revoked = "awk_0000000000000000000000000000000000000000000000000000000000000bad";
    let id = install_test_key(&mut t.db.conn(), revoked, "admin");
    q::revoke(&mut t.db.conn(), &id, api_web::db::now()).unwrap();
    let unknown = "awk_1111111111111111111111111111111111111111111111111111111111111111";
    let headers: [Option<String>; 5] = [
        None,
        Some(TEST_KEY.to_string()),
        Some("Basic YWRtaW46YWRtaW4=".to_string()),
        Some(format!("Bearer {unknown}")),
        Some(format!("Bearer {revoked}")),
    ];
    let mut checked = 0;
    for (method, path) in api::ROUTES {
        let public = ["/healthz", "/api/v1/version", "/api/v1/auth/token"].contains(path);
        for h in &headers {
            let mut req = request(method, path);
            if let Some(h) = h {
                req = req.insert_header(("authorization", h.as_str()));
            }
            let res = test::call_service(&app, req.to_request()).await;
            let status = res.status().as_u16();
            if public {
                assert_ne!(status, 401, "{method} {path} is public");
                continue;
            }
            assert_eq!(status, 401, "{method} {path} with {h:?}");
            let challenge = res.headers().get("www-authenticate").cloned();
            let body: serde_json::Value = test::read_body_json(res).await;
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(body["request_id"].is_string(), "{body}");
            assert_eq!(challenge.unwrap(), "Bearer realm=\"api-web\"");
            checked += 1;
        }
    }
    assert!(checked >= 5 * 30, "{checked}");
    // An unknown path is refused before it is looked up.
    get_raw(&app, "/api/v1/nothing/here", None)
        .await
        .assert_error(401, "unauthorized");
    // And the test key itself works.
    assert_eq!(get(&app, "/api/v1/instance/list").await.status, 200);
}

async fn get_raw(app: &impl App, uri: &str, key: Option<&str>) -> Resp {
    let mut req = test::TestRequest::get().uri(uri);
    if let Some(k) = key {
        req = req.insert_header(("authorization", format!("Bearer {k}")));
    }
    send(app, req.to_request()).await
}

/// What a web page on another site can send without CORS (a form post as text/plain, no
/// Authorization header) makes nothing: before credentials, such a post created a volume.
#[actix_web::test]
async fn a_cross_site_simple_post_cannot_act() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let res = send(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/volume/create")
            .insert_header(("content-type", "text/plain"))
            .insert_header(("origin", "http://evil.example"))
            .set_payload(r#"{"volume_name":"csrf","volume_size":1}"#)
            .to_request(),
    )
    .await;
    res.assert_error(401, "unauthorized");
    let n = crate::instances::count(&t.db, "SELECT COUNT(*) AS n FROM volume");
    assert_eq!(n, 0);
}

/// `api-web admin`: a project, an admin key printed alone on the last line and stored only as
/// its hash, member keys refused for now, a key that works until it is revoked; an expired key
/// is refused.
#[actix_web::test]
async fn admin_commands_make_keys_that_work_until_revoked() {
    let t = TestApp::new();
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_api-web"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("admin")
            .args(args)
            .env("DATABASE_URL", &t.db.url)
            .output()
            .expect("run api-web admin");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = admin(&["create-project", "--name", "team-a"]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = admin(&["create-project", "--name", "team-a"]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, out, err) = admin(&[
        "create-key",
        "--name",
        "ci",
        "--role",
        "admin",
        "--project",
        "team-a",
    ]);
    assert!(ok, "{out}{err}");
    let key = out.lines().last().unwrap().trim().to_string();
    assert!(key.starts_with("awk_") && key.len() == 68, "{out}");
    assert!(!err.contains(&key), "the secret goes to stdout only");
    let (ok, _, err) = admin(&["create-key", "--name", "m", "--role", "member"]);
    assert!(!ok && err.contains("members come with"), "{err}");
    let (ok, _, err) = admin(&["create-key", "--name", "x", "--project", "nope"]);
    assert!(!ok && err.contains("no project named"), "{err}");
    // Stored as its hash only.
    let n = crate::instances::count(
        &t.db,
        &format!(
            "SELECT COUNT(*) AS n FROM api_key WHERE key_hash = '{}'",
            auth::hash(&key)
        ),
    );
    assert_eq!(n, 1);
    let n = crate::instances::count(
        &t.db,
        &format!("SELECT COUNT(*) AS n FROM api_key WHERE CONCAT_WS('|', key_id, key_name, key_hash) LIKE '%{}%'", &key[4..]),
    );
    assert_eq!(n, 0);

    let app = test::init_service(api::app(t.ctx.clone())).await;
    assert_eq!(
        get_raw(&app, "/api/v1/volume/list", Some(&key))
            .await
            .status,
        200
    );
    let (ok, out, err) = admin(&["revoke-key", "ci"]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    // The process that verified the key remembers it at most KEY_CACHE_TTL; a fresh one at once.
    let fresh = TestApp::with_db(&t);
    let app2 = test::init_service(api::app(fresh.ctx.clone())).await;
    get_raw(&app2, "/api/v1/volume/list", Some(&key))
        .await
        .assert_error(401, "unauthorized");
    actix_web::rt::time::sleep(auth::KEY_CACHE_TTL).await;
    get_raw(&app, "/api/v1/volume/list", Some(&key))
        .await
        .assert_error(401, "unauthorized");
    let (ok, _, err) = admin(&["revoke-key", "ci"]);
    assert!(!ok && err.contains("no live key"), "{err}");

    // A key whose expiry has passed.
    let k = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "short",
        Role::Admin,
        "default",
        Some(api_web::db::now() - 1),
    )
    .unwrap();
    get_raw(&app2, "/api/v1/volume/list", Some(&k.secret))
        .await
        .assert_error(401, "unauthorized");
}

/// With `server.cors_origins`, a browser page on a listed origin gets its preflight answered
/// (Authorization allowed) and can read answers, refusals included; other origins get no
/// allowing headers. With none configured (the default), no origin is allowed.
#[actix_web::test]
async fn cors_allows_the_configured_origins_only() {
    let portal = "http://portal.test:8080";
    let t = TestApp::with_config(|c| c.server.cors_origins = vec![portal.into()]);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let preflight = |origin: &str| {
        test::TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/api/v1/volume/create")
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", "POST"))
            .insert_header((
                "access-control-request-headers",
                "authorization,content-type",
            ))
            .to_request()
    };
    let res = test::call_service(&app, preflight(portal)).await;
    assert!(res.status().is_success(), "{:?}", res.status());
    let h = res.headers();
    assert_eq!(h.get("access-control-allow-origin").unwrap(), portal);
    let allowed = h
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let res = test::call_service(&app, preflight("http://evil.example")).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());

    for key in [Some(TEST_KEY), None] {
        let mut req = test::TestRequest::get()
            .uri("/api/v1/volume/list")
            .insert_header(("origin", portal));
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status().as_u16(), if key.is_some() { 200 } else { 401 });
        assert_eq!(
            res.headers().get("access-control-allow-origin").unwrap(),
            portal
        );
    }

    let none = TestApp::new();
    let app = test::init_service(api::app(none.ctx.clone())).await;
    let res = test::call_service(&app, preflight(portal)).await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

/// `api-web admin create-user` (password on standard input, argon2-hashed), then the portal's
/// login: `POST /api/v1/auth/token` without credentials answers a signed token and its expiry;
/// the token works as `Authorization: Bearer`; a wrong password, an unknown user, a tampered,
/// foreign or expired token are refused with 401.
#[actix_web::test]
async fn a_user_logs_in_and_calls_with_the_token() {
    let secret = "a-signing-key-of-at-least-32-characters!";
    let t = TestApp::with_config(|c| c.auth.token_secret = secret.into());
    let create_user = |name: &str, password: &str, extra: &[&str]| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_api-web"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["admin", "create-user", "--name", name])
            .args(extra)
            .env("DATABASE_URL", &t.db.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(password),
            "the password is never echoed: {text}"
        );
        (out.status.success(), text)
    };
    let (ok, text) = create_user("alice", "correct horse battery", &[]);
    assert!(ok, "{text}");
    let (ok, text) = create_user("alice", "another password", &[]);
    assert!(!ok && text.contains("exists already"), "{text}");
    let (ok, text) = create_user("bob", "short", &[]);
    assert!(!ok && text.contains("at least 8"), "{text}");
    let (ok, text) = create_user("carol", "long enough pw", &["--role", "member"]);
    assert!(!ok && text.contains("members come with"), "{text}");
    let stored = crate::instances::count(
        &t.db,
        "SELECT COUNT(*) AS n FROM api_user WHERE password_hash LIKE '$argon2id$%' AND password_hash NOT LIKE '%horse%'",
    );
    assert_eq!(stored, 1);

    let app = test::init_service(api::app(t.ctx.clone())).await;
    let login = |name: &str, password: &str| {
        test::TestRequest::post()
            .uri("/api/v1/auth/token")
            .set_json(serde_json::json!({"user_name": name, "password": password}))
            .to_request()
    };
    let r = send(&app, login("alice", "correct horse battery")).await;
    let d = r.ok().clone();
    assert_eq!(d["token_type"], "Bearer", "{d}");
    let now = api_web::db::now();
    let exp = d["expires_at"].as_u64().unwrap();
    assert!(exp >= now + 3590 && exp <= now + 3601, "{d}");
    let token = d["token"].as_str().unwrap().to_string();
    assert_eq!(
        get_raw(&app, "/api/v1/instance/list", Some(&token))
            .await
            .status,
        200
    );
    for (name, pw) in [
        ("alice", "wrong horse battery"),
        ("nobody", "correct horse battery"),
    ] {
        let r = send(&app, login(name, pw)).await;
        r.assert_error(401, "unauthorized");
        assert_eq!(r.body["message"], "wrong user name or password");
    }
    send(
        &app,
        test::TestRequest::post()
            .uri("/api/v1/auth/token")
            .set_json(serde_json::json!({"user_name": "alice"}))
            .to_request(),
    )
    .await
    .assert_error(400, "invalid_param");

    // Tampered: one character of the signature changed.
    let mut bad = token.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    get_raw(&app, "/api/v1/instance/list", Some(&bad))
        .await
        .assert_error(401, "unauthorized");
    // Signed by another deployment's key.
    let other = TestApp::with_config(|c| {
        c.auth.token_secret = "another-signing-key-of-32-characters-or-more".into()
    });
    let app2 = test::init_service(api::app(other.ctx.clone())).await;
    get_raw(&app2, "/api/v1/instance/list", Some(&token))
        .await
        .assert_error(401, "unauthorized");
    // Expired: the same claims with a past expiry, signed with the right key.
    let (h, rest) = token.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let _ = h;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap();
    claims["exp"] = serde_json::json!(now - 5);
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    get_raw(&app, "/api/v1/instance/list", Some(&expired))
        .await
        .assert_error(401, "unauthorized");

    // Disabled: no more logins, and the token stops working (a fresh process at once, this one
    // once its cache forgets the user).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_api-web"))
        .args(["admin", "disable-user", "alice"])
        .env("DATABASE_URL", &t.db.url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    send(&app, login("alice", "correct horse battery"))
        .await
        .assert_error(401, "unauthorized");
    actix_web::rt::time::sleep(api_web::service::auth::KEY_CACHE_TTL).await;
    get_raw(&app, "/api/v1/instance/list", Some(&token))
        .await
        .assert_error(401, "unauthorized");
}
