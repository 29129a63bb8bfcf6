//! Image API benchmark on the real stack (run by scripts/bench.sh, which brings the stack up):
//! - `images/list` latency over 10,000 rows, page_size 100, through real HTTP on loopback;
//! - image create / delete latency through the API against the design's own method
//!   (`qemu-img create -f rbd` and `rbd rm`), in the same run, as ratios.

mod support;

use api_web::db::{self, images::ImageForm};
use api_web::model::{ImageId, ImageStatus};
use diesel::Connection;
use std::process::Command;
use std::time::Instant;
use support::*;

const ROWS: usize = 10_000;
const LIST_REQUESTS: usize = 1_000;
const CYCLES: usize = 20;

fn main() {
    let (dbname, url, mut conn) = new_db();

    // 10,000 rows (list never touches Ceph, so rows without RBD images measure it fairly).
    let t = Instant::now();
    let now = db::now();
    conn.transaction(|conn| {
        for i in 0..ROWS {
            let form = ImageForm {
                image_id: ImageId::new(format!("ami-b{i:07x}")),
                image_name: format!("bench image {i}"),
                image_size: 1 << 30,
                os_type: "Linux".into(),
                describe: "a row of the list benchmark".into(),
                status: ImageStatus::Available,
                create_time: now - (i as u64),
                project_id: "prj-00000000".into(),
                visibility: "public".into(),
                progress: None,
                source_snapshot_id: None,
                source_volume_id: None,
            };
            db::images::insert(conn, &form)?;
        }
        diesel::QueryResult::Ok(())
    })
    .unwrap();
    println!(
        "inserted {ROWS} image rows in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let cfg = config(&url);
    let pool = cfg.ceph.images_pool.clone();
    let (_ctx, addr) = serve(cfg);
    let mut http = Http::connect(addr);

    // Warm-up (pool connections, caches).
    for _ in 0..50 {
        http.call("GET", "/api/v1/images/list?page_size=100", None);
    }
    let mut lat = Vec::with_capacity(LIST_REQUESTS);
    for i in 0..LIST_REQUESTS {
        let page = 1 + (i * 37) % (ROWS / 100);
        let path = format!("/api/v1/images/list?page_size=100&page_num={page}");
        lat.push(timed(|| {
            let (s, b) = http.call("GET", &path, None);
            assert_eq!(s, 200, "{b}");
            assert!(b.contains("\"total\":10000"));
        }));
    }
    println!("--- images/list over {ROWS} rows, page_size 100, HTTP keep-alive on loopback");
    report("images/list (page 1..100)", &mut lat);
    let mut lat = Vec::with_capacity(LIST_REQUESTS);
    for i in 0..LIST_REQUESTS {
        let path = format!(
            "/api/v1/images/list?page_size=100&filter_name=image%20{}",
            i % 10
        );
        lat.push(timed(|| {
            let (s, _) = http.call("GET", &path, None);
            assert_eq!(s, 200);
        }));
    }
    report("images/list with filter_name (substring)", &mut lat);

    // Create / delete: API vs the design's commands, interleaved in one run.
    let conf = env("CEPH_CONF");
    let (mut api_c, mut api_d, mut cli_c, mut cli_d) = (vec![], vec![], vec![], vec![]);
    for i in 0..CYCLES {
        let body = r#"{"image_name":"bench create","image_size":1073741824,"os_type":"Linux"}"#;
        let mut id = String::new();
        api_c.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/images/create", Some(body));
            assert_eq!(s, 200, "{b}");
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            id = v["data"]["image_id"].as_str().unwrap().to_string();
        }));
        let body = format!(r#"{{"image_id":"{id}","del_file":true}}"#);
        api_d.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/images/delete", Some(&body));
            assert_eq!(s, 200, "{b}");
        }));
        let name = format!("bench-cli-{}-{i}", std::process::id());
        cli_c.push(timed(|| {
            run(Command::new("qemu-img").args([
                "create",
                "-q",
                "-f",
                "rbd",
                &format!("rbd:{pool}/{name}:conf={conf}"),
                "1G",
            ]))
        }));
        cli_d.push(timed(|| {
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "rm",
                "--no-progress",
                &format!("{pool}/{name}"),
            ]))
        }));
    }
    println!("--- create/delete of a 1 GiB image, {CYCLES} cycles, same run");
    let a = report("api images/create", &mut api_c);
    let b = report("qemu-img create -f rbd (design's method)", &mut cli_c);
    println!(
        "{:<44} {:.2}x (api / design; < 1 is faster)",
        "create ratio (p50)",
        a / b
    );
    let a = report("api images/delete del_file=true", &mut api_d);
    let b = report("rbd rm (design's method)", &mut cli_d);
    println!(
        "{:<44} {:.2}x (api / design; < 1 is faster)",
        "delete ratio (p50)",
        a / b
    );

    drop_db(&dbname);
}
