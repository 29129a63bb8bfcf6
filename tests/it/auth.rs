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
    let (ok, out, err) = admin(&[
        "create-key",
        "--name",
        "m",
        "--role",
        "member",
        "--project",
        "team-a",
    ]);
    assert!(
        ok && out.lines().last().unwrap().starts_with("awk_"),
        "{out}{err}"
    );
    let (ok, _, err) = admin(&["create-key", "--name", "m", "--role", "owner"]);
    assert!(!ok && err.contains("admin or member"), "{err}");
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
    assert!(ok, "{text}");
    let stored = crate::instances::count(
        &t.db,
        "SELECT COUNT(*) AS n FROM api_user WHERE password_hash LIKE '$argon2id$%' AND password_hash NOT LIKE '%horse%'",
    );
    assert_eq!(stored, 2, "alice and carol, as argon2id hashes");

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

async fn call_as(
    app: &impl App,
    key: &str,
    method: &str,
    uri: &str,
    body: Option<serde_json::Value>,
) -> Resp {
    let mut req = request(method, uri).insert_header(("authorization", format!("Bearer {key}")));
    if let Some(b) = body {
        req = req.set_json(b);
    }
    send(app, req.to_request()).await
}

/// Two projects' members and an admin: each member lists, sees and changes its own project's
/// volumes, NICs, images and instances only (another project's answer 404 as if missing, lists
/// leave them out); public images are bootable by all and changed by admins only; what an
/// instance makes (root disk, NIC) is of its project; admin-only calls answer 403 to members;
/// an admin lists every project or one, and cannot plug one project's volume into another's
/// instance.
#[actix_web::test]
async fn a_member_sees_and_touches_only_its_project() {
    use serde_json::json;
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = crate::instances::test_image(&app, &t).await; // public: an admin's
    let mut conn = t.ctx.conn().unwrap();
    for p in ["team-a", "team-b"] {
        auth::create_project(&mut conn, p).unwrap();
    }
    let key = |p: &str| {
        auth::create_key(&mut t.ctx.conn().unwrap(), p, Role::Member, p, None)
            .unwrap()
            .secret
    };
    let (a, b) = (key("team-a"), key("team-b"));
    let pa = q::project_by_name(&mut conn, "team-a")
        .unwrap()
        .unwrap()
        .project_id;
    let id_of = |r: &Resp, field: &str| r.ok()[field].as_str().unwrap().to_string();

    let va = call_as(
        &app,
        &a,
        "post",
        "/api/v1/volume/create",
        Some(json!({"volume_name": "va", "volume_size": 1})),
    )
    .await;
    assert_eq!(va.ok()["project_id"], pa.as_str());
    let va = id_of(&va, "volume_id");
    let vb = id_of(
        &call_as(
            &app,
            &b,
            "post",
            "/api/v1/volume/create",
            Some(json!({"volume_name": "vb", "volume_size": 1})),
        )
        .await,
        "volume_id",
    );
    let nb = id_of(
        &call_as(
            &app,
            &b,
            "post",
            "/api/v1/network/create",
            Some(json!({"network_interface_name": "nb"})),
        )
        .await,
        "network_interface_id",
    );

    // Lists: own project only; an admin every project, or one.
    let ids = |r: Resp, field: &str| -> Vec<String> {
        r.ok()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i[field].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(
            call_as(&app, &a, "get", "/api/v1/volume/list", None).await,
            "volume_id"
        ),
        vec![va.clone()]
    );
    assert_eq!(
        ids(
            call_as(&app, &b, "get", "/api/v1/volume/list", None).await,
            "volume_id"
        ),
        vec![vb.clone()]
    );
    assert_eq!(
        ids(
            call_as(&app, &a, "get", "/api/v1/network/list", None).await,
            "network_interface_id"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(get(&app, "/api/v1/volume/list").await, "volume_id").len(),
        2
    );
    assert_eq!(
        ids(
            get(&app, &format!("/api/v1/volume/list?project_id={pa}")).await,
            "volume_id"
        ),
        vec![va.clone()]
    );
    call_as(
        &app,
        &a,
        "get",
        "/api/v1/volume/list?project_id=prj-00000000",
        None,
    )
    .await
    .assert_error(403, "forbidden");
    // The public image is everyone's to see and boot, an admin's to change.
    assert_eq!(
        ids(
            call_as(&app, &a, "get", "/api/v1/images/list", None).await,
            "image_id"
        ),
        vec![image.clone()]
    );
    call_as(
        &app,
        &a,
        "get",
        &format!("/api/v1/images/inspect?image_id={image}"),
        None,
    )
    .await
    .ok();
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/images/update",
        Some(json!({"image_id": image, "describe": "mine"})),
    )
    .await
    .assert_error(403, "forbidden");
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/images/register",
        Some(json!({"image_id": "x", "image_name": "x", "image_size": 1, "os_type": "Linux"})),
    )
    .await
    .assert_error(403, "forbidden");
    call_as(&app, &a, "get", "/api/v1/unregister_images/list", None)
        .await
        .assert_error(403, "forbidden");

    // Another project's rows are as missing as unknown ones.
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/volume/delete",
        Some(json!({"volume_id": vb})),
    )
    .await
    .assert_error(404, "volume_not_found");
    call_as(
        &app,
        &a,
        "get",
        &format!("/api/v1/volume/delete?volume_id={vb}"),
        None,
    )
    .await
    .assert_error(404, "volume_not_found");
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/network/delete",
        Some(json!({"network_interface_id": nb})),
    )
    .await
    .assert_error(404, "network_interface_not_found");

    // A member's instance: booted from the public image, with its own volume; another
    // project's NIC or volume is unknown to it.
    let create = |extra: serde_json::Value| {
        let mut body = json!({"instance_name": "ia", "image_id": image, "cpu": 1, "memory": 128});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/instance/create",
        Some(create(json!({"network_interface_ids": [nb]}))),
    )
    .await
    .assert_error(404, "network_interface_not_found");
    call_as(
        &app,
        &a,
        "post",
        "/api/v1/instance/create",
        Some(create(json!({"volume_ids": [vb]}))),
    )
    .await
    .assert_error(404, "volume_not_found");
    let ia = id_of(
        &call_as(
            &app,
            &a,
            "post",
            "/api/v1/instance/create",
            Some(create(json!({"volume_ids": [va]}))),
        )
        .await,
        "instance_id",
    );
    assert_eq!(
        crate::instances::wait_created(&app, &ia).await["status"],
        "running"
    );
    let detail = call_as(
        &app,
        &a,
        "get",
        &format!("/api/v1/instance/detail?instance_id={ia}"),
        None,
    )
    .await;
    let d = detail.ok();
    assert_eq!(d["project_id"], pa.as_str());
    for v in d["volumes"].as_array().unwrap() {
        assert_eq!(v["project_id"], pa.as_str(), "{v}");
    }
    for n in d["network_interfaces"].as_array().unwrap() {
        assert_eq!(n["project_id"], pa.as_str(), "{n}");
    }
    for (m, uri) in [
        ("get", format!("/api/v1/instance/detail?instance_id={ia}")),
        ("get", format!("/api/v1/instance/progress?instance_id={ia}")),
        ("get", format!("/api/v1/instance/console?instance_id={ia}")),
    ] {
        call_as(&app, &b, m, &uri, None)
            .await
            .assert_error(404, "instance_not_found");
    }
    for uri in [
        "/api/v1/instance/turnoff",
        "/api/v1/instance/turnon",
        "/api/v1/instance/destroy",
    ] {
        call_as(&app, &b, "post", uri, Some(json!({"instance_id": ia})))
            .await
            .assert_error(404, "instance_not_found");
    }
    call_as(
        &app,
        &b,
        "post",
        "/api/v1/volume/unmount",
        Some(json!({"volume_id": va, "instance_id": ia})),
    )
    .await
    .assert_error(404, "volume_not_found");
    call_as(
        &app,
        &b,
        "post",
        "/api/v1/volume/mount",
        Some(json!({"volume_id": vb, "instance_id": ia})),
    )
    .await
    .assert_error(404, "instance_not_found");
    assert_eq!(
        ids(
            call_as(&app, &b, "get", "/api/v1/instance/list", None).await,
            "instance_id"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(
            call_as(&app, &a, "get", "/api/v1/instance/list", None).await,
            "instance_id"
        ),
        vec![ia.clone()]
    );
    // An admin reaches it, but cannot plug its own project's volume into it.
    let vd = id_of(
        &post(
            &app,
            "/api/v1/volume/create",
            json!({"volume_name": "vd", "volume_size": 1}),
        )
        .await,
        "volume_id",
    );
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vd, "instance_id": ia}),
    )
    .await
    .assert_error(400, "invalid_param");
    get(&app, &format!("/api/v1/instance/detail?instance_id={ia}"))
        .await
        .ok();

    let r = call_as(
        &app,
        &a,
        "post",
        "/api/v1/instance/destroy",
        Some(json!({"instance_id": ia, "delete_attached": true})),
    )
    .await;
    r.ok();
    for (key, v) in [(b.as_str(), &vb), (TEST_KEY, &vd)] {
        call_as(
            &app,
            key,
            "post",
            "/api/v1/volume/delete",
            Some(json!({"volume_id": v})),
        )
        .await
        .ok();
    }
    call_as(
        &app,
        &b,
        "post",
        "/api/v1/network/delete",
        Some(json!({"network_interface_id": nb})),
    )
    .await
    .ok();
    crate::instances::drop_image(&app, &image).await;
}

/// Token buckets: a credential's burst, then 429 `rate_limited` with `Retry-After`, while
/// another credential goes on; an address's burst limits even requests without credentials.
#[actix_web::test]
async fn rate_limits_answer_429_with_retry_after() {
    let t = TestApp::with_config(|c| {
        c.rate_limit.per_credential_per_sec = 1;
        c.rate_limit.per_credential_burst = 3;
        c.rate_limit.per_address_per_sec = 1;
        c.rate_limit.per_address_burst = 5;
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let other = auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "o",
        Role::Admin,
        "default",
        None,
    )
    .unwrap()
    .secret;
    let call = |key: Option<&str>, peer: &str| {
        let mut req = test::TestRequest::get()
            .uri("/api/v1/volume/list")
            .peer_addr(peer.parse().unwrap());
        if let Some(k) = key {
            req = req.insert_header(("authorization", format!("Bearer {k}")));
        }
        req.to_request()
    };
    for i in 0..3 {
        let r = test::call_service(&app, call(Some(TEST_KEY), &format!("10.0.0.{i}:1"))).await;
        assert_eq!(r.status(), 200);
    }
    let r = test::call_service(&app, call(Some(TEST_KEY), "10.0.0.9:1")).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    let body: serde_json::Value = test::read_body_json(r).await;
    assert_eq!(body["error"], "rate_limited", "{body}");
    let r = test::call_service(&app, call(Some(&other), "10.0.0.8:1")).await;
    assert_eq!(r.status(), 200, "another credential is not held up");

    for _ in 0..5 {
        let r = test::call_service(&app, call(None, "192.0.2.7:1")).await;
        assert_eq!(r.status(), 401);
    }
    let r = test::call_service(&app, call(None, "192.0.2.7:1")).await;
    assert_eq!(
        r.status(),
        429,
        "an address's flood is cut before its credentials are read"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = test::call_service(&app, call(Some(TEST_KEY), "10.0.0.10:1")).await;
    assert_eq!(r.status(), 200, "a token back after a second");
}
