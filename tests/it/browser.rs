//! A real browser (headless Chromium) on a page of another origin calls the API with an API key:
//! from an origin in `server.cors_origins` its GET and its JSON POST (preflighted) go through
//! and it reads the answers; from any other origin the browser blocks the calls.

use crate::common::*;
use crate::operations::ApiWeb;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// The page: two calls to the API, their outcome reported back to the page's own server.
fn page(api: &str) -> String {
    format!(
        r#"<!doctype html><html><body><script>
const api = "http://{api}";
const auth = {{"Authorization": "Bearer {TEST_KEY}"}};
async function run() {{
  const out = [];
  try {{
    const r = await fetch(api + "/api/v1/volume/list", {{headers: auth}});
    const j = await r.json();
    out.push("GET " + r.status + " total=" + j.data.total + " id=" + (r.headers.get("x-request-id") ? "yes" : "no"));
  }} catch (e) {{ out.push("GET blocked"); }}
  try {{
    const r = await fetch(api + "/api/v1/volume/create", {{method: "POST",
      headers: Object.assign({{"Content-Type": "application/json"}}, auth),
      body: JSON.stringify({{volume_name: "from-a-browser", volume_size: 1}})}});
    const j = await r.json();
    out.push("POST " + r.status + " " + j.data.volume_name);
  }} catch (e) {{ out.push("POST blocked"); }}
  await fetch("/report", {{method: "POST", body: out.join("; ")}});
}}
run();
</script></body></html>"#
    )
}

/// Serves `html` (read at each request: the API's port is known only later) on a free loopback
/// port; what the page reports comes out of the receiver.
fn serve_page(html: Arc<Mutex<String>>) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut len = 0;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let reply = if line.starts_with("POST /report") {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                String::new()
            } else {
                html.lock().unwrap().clone()
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (port, rx)
}

/// Opens `url` in headless Chromium and waits for the page's report.
fn browse(url: &str, report: &mpsc::Receiver<String>) -> String {
    let profile = std::env::temp_dir().join(unique("chromium-profile"));
    let mut chromium = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("chromium (scripts/dev-stack.sh installs it)");
    let got = report.recv_timeout(Duration::from_secs(60));
    let _ = chromium.kill();
    let _ = chromium.wait();
    let _ = std::fs::remove_dir_all(&profile);
    got.expect("the page reported within 60 s")
}

#[actix_web::test]
async fn a_browser_page_on_an_allowed_origin_calls_the_api() {
    let t = TestApp::new();
    // The API's address first, so that the pages can name it.
    let html = Arc::new(Mutex::new(String::new()));
    let (allowed_port, allowed_report) = serve_page(html.clone());
    let (other_port, other_report) = serve_page(html.clone());
    let allowed = format!("http://127.0.0.1:{allowed_port}");
    let child = ApiWeb::start_with(&t, "", &[("API_WEB_CORS_ORIGINS", &allowed)]);
    *html.lock().unwrap() = page(child.addr());
    let t0 = Instant::now();
    let ok = browse(&format!("{allowed}/"), &allowed_report);
    println!("allowed origin: {ok} ({:?})", t0.elapsed());
    assert!(ok.contains("GET 200 total=0 id=yes"), "{ok}");
    assert!(ok.contains("POST 200 from-a-browser"), "{ok}");
    let blocked = browse(&format!("http://127.0.0.1:{other_port}/"), &other_report);
    println!("other origin: {blocked}");
    assert_eq!(blocked, "GET blocked; POST blocked");
    // Only the allowed page's POST made a volume.
    assert_eq!(
        crate::instances::count(&t.db, "SELECT COUNT(*) AS n FROM volume"),
        1
    );
    let id = {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct V {
            #[diesel(sql_type = diesel::sql_types::Text)]
            volume_id: String,
        }
        diesel::sql_query("SELECT volume_id FROM volume")
            .get_result::<V>(&mut t.db.conn())
            .unwrap()
            .volume_id
    };
    child
        .call(
            "POST",
            "/api/v1/volume/delete",
            &format!(r#"{{"volume_id":"{id}"}}"#),
        )
        .expect("an answer");
}
