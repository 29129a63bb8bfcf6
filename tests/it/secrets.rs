//! No secret leaks: the real binary, logging at debug, is driven through keys, logins (right
//! and wrong), resource calls and refusals; then no response, log line, `check-config` output
//! or admin command output (but `create-key`'s one line) holds an API key, a password, a login
//! token (outside the login answer that hands it out), the token signing key, the cephx key or
//! the database password.

use crate::common::*;
use crate::operations::ApiWeb;
use std::process::Command;

fn admin(t: &TestApp, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_api-web"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("DATABASE_URL", &t.db.url)
        .env("RUST_LOG", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        writeln!(child.stdin.take().unwrap(), "{s}").unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cephx key of the service's Ceph user, from its keyring.
fn cephx_key() -> String {
    let conf = std::fs::read_to_string(env("CEPH_CONF")).unwrap();
    let pattern = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("keyring = "))
        .expect("a keyring in ceph.conf")
        .to_string();
    let path = pattern.replace("$name", "client.api-web");
    let keyring = std::fs::read_to_string(&path).unwrap();
    keyring
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .expect("a key in the keyring")
        .to_string()
}

#[actix_web::test]
async fn no_secret_reaches_a_response_or_a_log_line() {
    let t = TestApp::new();
    let password = "s3cret horse battery staple";
    let signing = "sign1ng-key-sign1ng-key-sign1ng-key-0123";
    let mut seen = String::new();
    let (ok, out, err) = admin(&t, &["admin", "create-key", "--name", "leak-test"], None);
    assert!(ok, "{err}");
    let key = out.lines().last().unwrap().to_string();
    seen.push_str(&err);
    seen.push_str(&out.replace(&key, "<the key, shown once>"));
    let (ok, out, err) = admin(
        &t,
        &["admin", "create-user", "--name", "leaky"],
        Some(password),
    );
    assert!(ok, "{err}");
    seen.push_str(&out);
    seen.push_str(&err);
    let (ok, out, err) = admin(&t, &["check-config"], None);
    assert!(ok, "{err}");
    seen.push_str(&out);
    seen.push_str(&err);

    let child = ApiWeb::start_with(
        &t,
        "",
        &[("RUST_LOG", "debug"), ("API_WEB_TOKEN_SECRET", signing)],
    );
    let mut answers = vec![];
    let mut call = |key: &str, method: &str, path: &str, body: &str| {
        let r = child.call_as(key, method, path, body).unwrap_or_default();
        answers.push(r.to_string());
        r
    };
    call(&key, "GET", "/api/v1/instance/list", "");
    let v = call(
        &key,
        "POST",
        "/api/v1/volume/create",
        r#"{"volume_name":"s","volume_size":1}"#,
    );
    let vid = v["data"]["volume_id"].as_str().unwrap().to_string();
    call(
        &key,
        "POST",
        "/api/v1/volume/delete",
        &format!(r#"{{"volume_id":"{vid}"}}"#),
    );
    call(
        "awk_0000000000000000000000000000000000000000000000000000000000000000",
        "GET",
        "/api/v1/volume/list",
        "",
    );
    call(&format!("{key}x"), "GET", "/api/v1/volume/list", "");
    call(
        "",
        "POST",
        "/api/v1/auth/token",
        &format!(r#"{{"user_name":"leaky","password":"{password}x"}}"#),
    );
    call(
        "",
        "POST",
        "/api/v1/auth/token",
        &format!(r#"{{"user_name":"nobody","password":"{password}"}}"#),
    );
    // The one answer that hands the token out is not searched.
    let login = child
        .call_as(
            "",
            "POST",
            "/api/v1/auth/token",
            &format!(r#"{{"user_name":"leaky","password":"{password}"}}"#),
        )
        .unwrap_or_default();
    let token = login["data"]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    call(&token, "GET", "/api/v1/instance/list", "");
    call(&format!("{token}x"), "GET", "/api/v1/instance/list", "");
    call(&key, "GET", "/api/v1/audit/list?page_size=100", "");
    call(&key, "GET", "/healthz", "");
    let metrics = std::process::Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {key}")])
        .arg(format!("http://{}/metrics", child_addr(&child)))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(metrics.contains("api_web_http_requests_total"), "{metrics}");
    seen.push_str(&metrics);
    seen.push_str(&answers.join("\n"));
    seen.push_str(&child.log_text());
    assert!(
        child.log_text().contains("DEBUG") || child.log_text().contains("debug"),
        "logged at debug"
    );

    let secrets = [
        ("the API key", key[4..].to_string()),
        ("the password", password.to_string()),
        ("the login token", token.clone()),
        (
            "the token's signature",
            token.rsplit('.').next().unwrap().to_string(),
        ),
        ("the token signing key", signing.to_string()),
        ("the cephx key", cephx_key()),
        ("the database password", "api_web:api_web@".to_string()),
    ];
    for (what, s) in secrets {
        assert!(!seen.contains(&s), "{what} leaked");
    }
}

fn child_addr(child: &ApiWeb) -> String {
    child.addr().to_string()
}
