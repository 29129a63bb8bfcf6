//! `/metrics` scrape time with 10,000 instance rows, each with its root volume row
//! (scripts/bench.sh metrics; goal <= 50 ms), after some traffic so that the request series
//! exist.

mod support;

use api_web::db::{self, instances::InstanceForm, volumes::VolumeForm};
use api_web::model::{ImageId, InstanceId, InstanceStatus, VolumeId, VolumeStatus};
use diesel::Connection;
use support::*;

const ROWS: usize = 10_000;
const SCRAPES: usize = 200;

fn main() {
    let (dbname, url, mut conn) = new_db();
    let now = db::now();
    conn.transaction(|conn| {
        for i in 0..ROWS {
            let id = InstanceId::new(format!("i-m{i:07x}"));
            db::instances::insert(
                conn,
                &InstanceForm {
                    instance_id: id.clone(),
                    instance_name: format!("metrics instance {i}"),
                    status: if i % 3 == 0 {
                        InstanceStatus::Stopped
                    } else {
                        InstanceStatus::Running
                    },
                    host_ip: "127.0.0.1".into(),
                    host: "qemu:///system".into(),
                    cpu: 1,
                    memory: 256,
                    image_id: ImageId::new("ami-bench"),
                    root_size: Some(1),
                    describe: "bench".into(),
                    progress_step: "running".into(),
                    create_time: now - i as u64,
                    project_id: "prj-00000000".into(),
                },
            )?;
            db::volumes::insert(
                conn,
                &VolumeForm {
                    volume_id: VolumeId::new(format!("vol-m{i:07x}")),
                    volume_name: format!("root of {id}"),
                    volume_size: 1,
                    status: VolumeStatus::InUse,
                    instance_id: Some(id),
                    is_root: true,
                    target_dev: Some("vda".into()),
                    describe: String::new(),
                    attach_time: Some(now),
                    create_time: now,
                    project_id: "prj-00000000".into(),
                },
            )?;
        }
        diesel::QueryResult::Ok(())
    })
    .unwrap();
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
