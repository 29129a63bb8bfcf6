//! Memory of the real api-web binary (scripts/bench.sh rss): its resident set idle (after
//! start-up and a reconciliation pass) and with 50 live instances (goal: <= 50 MB idle).
//! Everything it made is removed at the end, also when it fails.

mod support;

use std::time::{Duration, Instant};
use support::*;

const INSTANCES: usize = 50;

fn rss_mib(pid: u32) -> (f64, f64) {
    (smaps_mib(pid, "Rss"), smaps_mib(pid, "Anonymous"))
}

fn main() {
    let (dbname, url, _conn) = new_db();
    let log = std::env::temp_dir().join(format!("{dbname}.log"));
    println!("api-web's log: {}", log.display());
    let cfg = config(&url);
    let server = Server::start(&url, &log);
    let (pid, addr) = (server.pid(), server.addr);
    let image = format!("rssimg-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut made = vec![];
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
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
