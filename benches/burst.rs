//! Burst benchmark on the real stack (scripts/bench.sh burst): 50 clients ask `instance/create`
//! at the same moment, against the default pool size.
//! Prints:
//! - the answers by HTTP status, accepted creates per second, and the create answer p50/p99;
//! - `instance/list` latency during the burst;
//! - how many instances end `running`, how many `error`, and how many are still `creating`
//!   after 15 minutes (stuck; the goal is 0);
//! - create -> `running` per instance (p50/p99) and how long until every one has settled. On
//!   2 cores, 50 TCG guests booting at once make each QEMU start slow: this is CPU, not a stall.
//!
//! Then it destroys everything it made.

mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use support::*;

const CLIENTS: usize = 50;

fn main() {
    let (dbname, url, _conn) = new_db();
    let cfg = config(&url);
    println!(
        "pool_size={} (default), {CLIENTS} concurrent creates",
        cfg.database.pool_size
    );
    let (_ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let image = format!("burst-{}", std::process::id());
    register_test_image(&mut http, &cfg, &image);

    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    let answers = Arc::new(Mutex::new(vec![]));
    let burst_over = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = vec![];
    for i in 0..CLIENTS {
        let (barrier, answers, image) = (barrier.clone(), answers.clone(), image.clone());
        threads.push(std::thread::spawn(move || {
            let body = format!(
                r#"{{"instance_name":"burst {i}","image_id":"{image}","cpu":1,"memory":128}}"#
            );
            let answer = create_at(addr, &body, &barrier);
            answers.lock().unwrap().push(answer);
        }));
    }
    // list latency while the burst and its background work run
    let lister = {
        let over = burst_over.clone();
        std::thread::spawn(move || {
            let mut h = Http::connect(addr);
            let mut lat = vec![];
            while !over.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let (s, b) = h.call("GET", "/api/v1/instance/list?page_size=100", None);
                assert_eq!(s, 200, "{b}");
                lat.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            lat
        })
    };
    barrier.wait();
    let t0 = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let burst = t0.elapsed();
    let answers = Arc::try_unwrap(answers).unwrap().into_inner().unwrap();
    let mut by_status = std::collections::BTreeMap::new();
    for (s, _, _, b) in &answers {
        *by_status.entry(*s).or_insert(0) += 1;
        if *s != 200 {
            println!("  answer {s}: {b}");
        }
    }
    let accepted: Vec<String> = answers.iter().filter_map(|a| a.2.clone()).collect();
    let mut took: Vec<Duration> = answers.iter().map(|a| a.1).collect();
    println!("answers by status: {by_status:?}");
    println!(
        "accepted {} in {:.2} s: {:.0} accepted/s",
        accepted.len(),
        burst.as_secs_f64(),
        accepted.len() as f64 / burst.as_secs_f64()
    );
    report("create answer", &mut took);

    // Until every accepted instance has left `creating`, or 15 minutes.
    let mut to_running: std::collections::HashMap<String, Duration> = Default::default();
    let settle_end = Instant::now() + Duration::from_secs(900);
    let (settled_after, running, error, creating) = loop {
        let (s, b) = http.call("GET", "/api/v1/instance/list?page_size=1000", None);
        assert_eq!(s, 200, "{b}");
        let items = json(&b)["data"]["items"].as_array().unwrap().clone();
        for i in &items {
            if i["status"] == "running" {
                let id = i["instance_id"].as_str().unwrap().to_string();
                to_running.entry(id).or_insert_with(|| t0.elapsed());
            }
        }
        let running = items.iter().filter(|i| i["status"] == "running").count();
        let error = items.iter().filter(|i| i["status"] == "error").count();
        let creating = items.iter().filter(|i| i["status"] == "creating").count();
        if creating == 0 || Instant::now() > settle_end {
            break (t0.elapsed(), running, error, creating);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tr: Vec<Duration> = to_running.values().copied().collect();
    if !tr.is_empty() {
        report("create -> running (from the burst)", &mut tr);
    }
    burst_over.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut list_lat = lister.join().unwrap();
    report("instance/list during the burst", &mut list_lat);
    println!(
        "after {:.1} s: running={running} error={error} still creating (stuck)={creating}",
        settled_after.as_secs_f64()
    );
    let (s, b) = http.call(
        "GET",
        "/api/v1/instance/list?status=error&page_size=5",
        None,
    );
    if s == 200 {
        for i in json(&b)["data"]["items"].as_array().unwrap() {
            println!("  error: {}", i["error_message"]);
        }
    }

    // Clean up: destroy everything (10 at a time), then the image.
    for (id, b) in destroy_all(addr, accepted) {
        println!("  not destroyed: {id}: {b}");
    }
    let body = format!(r#"{{"image_id":"{image}","del_file":true}}"#);
    let (s, b) = http.call("POST", "/api/v1/images/delete", Some(&body));
    assert_eq!(s, 200, "{b}");
    drop_db(&dbname);
}
