//! Memory of the real api-web binary (scripts/bench.sh rss): its resident set idle (after
//! start-up and a reconciliation pass) and with 50 live instances (goal: <= 50 MB idle).
//! Everything it made is removed at the end, also when it fails.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const INSTANCES: usize = 50;

/// A field of `/proc/<pid>/smaps_rollup` in MiB: `Rss` (what VmRSS says), `Anonymous` (heap,
/// stacks, buffers: what api-web itself holds), the rest is mapped library code.
fn mib(pid: u32, field: &str) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb: f64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn rss_mib(pid: u32) -> (f64, f64) {
    (mib(pid, "Rss"), mib(pid, "Anonymous"))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let (dbname, url, _conn) = new_db();
    let log = std::env::temp_dir().join(format!("{dbname}.log"));
    println!("api-web's log: {}", log.display());
    let cfg = config(&url);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_api-web"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env("API_WEB_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let pid = server.0.id();
    let image = format!("rssimg-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut made = vec![];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "api-web did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut http = Http::connect(addr);
        // Start-up, the first passes and the backend probes are behind it.
        std::thread::sleep(Duration::from_secs(12));
        let idle = rss_mib(pid);
        register_test_image(&mut http, &cfg, &image);
        for _ in 0..INSTANCES {
            let body =
                format!(r#"{{"instance_name":"rss","image_id":"{image}","cpu":1,"memory":128}}"#);
            let (s, b) = http.call("POST", "/api/v1/instance/create", Some(&body));
            assert_eq!(s, 200, "{b}");
            made.push(
                json(&b)["data"]["instance_id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
        let t0 = Instant::now();
        let mut failed = 0;
        for id in &made {
            loop {
                let (_, b) = http.call(
                    "GET",
                    &format!("/api/v1/instance/progress?instance_id={id}"),
                    None,
                );
                let st = json(&b)["data"]["status"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if st == "running" {
                    break;
                }
                if st != "creating" {
                    println!("{id} ended {st}: {b}");
                    failed += 1;
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(900), "{id} never ran");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        // Lists, details and a few reconciliation passes over the 50.
        for _ in 0..20 {
            http.call("GET", "/api/v1/instance/list?page_size=100", None);
        }
        std::thread::sleep(Duration::from_secs(12));
        let live = rss_mib(pid);
        println!("api-web resident memory (Rss, of which anonymous), release build:");
        println!(
            "  idle (after start-up and passes)    {:6.1} MiB, {:5.1} MiB anonymous  (goal <= 50 MB = 47.7 MiB)",
            idle.0, idle.1
        );
        println!(
            "  with {INSTANCES} instances ({} running)       {:6.1} MiB, {:5.1} MiB anonymous",
            INSTANCES - failed,
            live.0,
            live.1
        );
    }));
    let alive = std::net::TcpStream::connect(addr).is_ok();
    println!("api-web still serving: {alive}");
    let mut http = Http::connect(addr);
    for id in &made {
        let body = format!(r#"{{"instance_id":"{id}","delete_attached":true}}"#);
        let (s, b) = http.call("POST", "/api/v1/instance/destroy", Some(&body));
        if s != 200 {
            eprintln!("destroy {id}: {b}");
        }
    }
    let body = format!(r#"{{"image_id":"{image}","del_file":true}}"#);
    http.call("POST", "/api/v1/images/delete", Some(&body));
    drop(server);
    drop_db(&dbname);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
