//! `/metrics` scrape time with 10,000 instance rows, each with its root volume row
//! (scripts/bench.sh metrics; goal <= 50 ms), after some traffic so that the request series
//! exist.

mod support;

use support::*;

const ROWS: usize = 10_000;
const SCRAPES: usize = 200;

fn main() {
    let (dbname, url, mut conn) = new_db();
    insert_instance_rows(&mut conn, ROWS, "m");
    let mut cfg = config(&url);
    // The rows have no domains: keep reconciliation from marking them while we measure.
    cfg.operations.reconcile_interval_secs = 3600;
    let (_ctx, addr) = serve(cfg);
    let mut http = Http::connect(addr);
    for i in 0..500 {
        let path = format!("/api/v1/instance/detail?instance_id=i-m{:07x}", i % ROWS);
        http.call("GET", &path, None);
        http.call("GET", "/api/v1/volume/list", None);
    }
    let mut lat = vec![];
    let mut size = 0;
    for _ in 0..SCRAPES {
        lat.push(timed(|| {
            let (s, body) = http.call("GET", "/metrics", None);
            assert_eq!(s, 200);
            size = body.len();
        }));
    }
    println!("--- {ROWS} instance rows and their root volumes; scrape of {size} bytes");
    report("/metrics scrape (goal <= 50 ms)", &mut lat);
    drop_db(&dbname);
}
