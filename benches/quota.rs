//! 50 clients ask `instance/create` at the same moment against a quota of 10 instances
//! (scripts/bench.sh quota): how many are accepted (must be exactly 10), how many refused with
//! 409 `quota_exceeded`, and the time until every client had its answer. Then it destroys
//! what it made.

mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use support::*;

const CLIENTS: usize = 50;
const LIMIT: usize = 10;

fn main() {
    let (dbname, url, _conn) = new_db();
    let cfg = config(&url);
    let (_ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let image = format!("quota-{}", std::process::id());
    register_test_image(&mut http, &cfg, &image);
    let body = format!(r#"{{"project_id":"prj-00000000","instances":{LIMIT}}}"#);
    let (s, b) = http.call("POST", "/api/v1/quotas/update", Some(&body));
    assert_eq!(s, 200, "{b}");

    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let answers = Arc::new(Mutex::new(vec![]));
    let mut threads = vec![];
    for i in 0..CLIENTS {
        let (barrier, answers, image) = (barrier.clone(), answers.clone(), image.clone());
        threads.push(std::thread::spawn(move || {
            let mut h = Http::connect(addr);
            let body = format!(
                r#"{{"instance_name":"quota {i}","image_id":"{image}","cpu":1,"memory":128}}"#
            );
            barrier.wait();
            let t = Instant::now();
            let (status, b) = h.call("POST", "/api/v1/instance/create", Some(&body));
            answers.lock().unwrap().push((status, t.elapsed(), b));
        }));
    }
    barrier.wait();
    let t0 = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let all = t0.elapsed();
    let answers = answers.lock().unwrap();
    let accepted: Vec<String> = answers
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, b)| json(b)["data"]["instance_id"].as_str().unwrap().to_string())
        .collect();
    let refused = answers
        .iter()
        .filter(|(s, _, b)| *s == 409 && json(b)["error"] == "quota_exceeded")
        .count();
    let mut lat: Vec<Duration> = answers.iter().map(|(_, d, _)| *d).collect();
    println!(
        "{CLIENTS} concurrent creates, quota {LIMIT}: {} accepted, {refused} refused (quota_exceeded), {} other",
        accepted.len(),
        CLIENTS - accepted.len() - refused
    );
    report("create answer", &mut lat);
    println!(
        "every client answered after {:.1} ms",
        all.as_secs_f64() * 1000.0
    );
    assert_eq!(accepted.len(), LIMIT);

    // Clean up: wait for each to settle, then destroy it.
    for id in &accepted {
        let end = Instant::now() + Duration::from_secs(600);
        loop {
            let (_, b) = http.call(
                "GET",
                &format!("/api/v1/instance/progress?instance_id={id}"),
                None,
            );
            if json(&b)["data"]["status"] != "creating" || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let body = format!(r#"{{"instance_id":"{id}","delete_attached":true}}"#);
        http.call("POST", "/api/v1/instance/destroy", Some(&body));
    }
    let body = format!(r#"{{"image_id":"{image}","del_file":true}}"#);
    http.call("POST", "/api/v1/images/delete", Some(&body));
    drop_db(&dbname);
}
