//! Snapshot benchmark on the real stack (scripts/bench.sh snapshots):
//! - image from the snapshot of a 1 GiB volume whose every byte is written (random data, by
//!   `rbd bench`), through `images/create_from_snapshot` until the image is `available`, against
//!   the hand-run `rbd export vol@snap - | rbd import - image` of the same snapshot, interleaved;
//! - volume restore (rollback of that 1 GiB volume) through `volume/restore`, against
//!   `rbd snap rollback` by hand.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const ROUNDS: usize = 3;

fn main() {
    let (dbname, url, _conn) = new_db();
    let cfg = config(&url);
    let (_ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let conf = env("CEPH_CONF");
    let (vpool, ipool) = (cfg.ceph.volumes_pool.clone(), cfg.ceph.images_pool.clone());
    let tag = std::process::id();
    let rbd = |args: &[&str]| run(Command::new("rbd").arg("--conf").arg(&conf).args(args));

    let (s, b) = http.call(
        "POST",
        "/api/v1/volume/create",
        Some(r#"{"volume_name":"bench-full","volume_size":1}"#),
    );
    assert_eq!(s, 200, "{b}");
    let vol = json(&b)["data"]["volume_id"].as_str().unwrap().to_string();
    let spec = format!("{vpool}/{vol}");
    // Every byte written, not zeros: a copy must move the whole GiB.
    rbd(&[
        "bench",
        "--io-type",
        "write",
        "--io-pattern",
        "seq",
        "--io-size",
        "4M",
        "--io-total",
        "1G",
        "--rbd-cache=false",
        &spec,
    ]);
    let body = format!(r#"{{"volume_id":"{vol}","snapshot_name":"bench"}}"#);
    let (s, b) = http.call("POST", "/api/v1/snapshot/create", Some(&body));
    assert_eq!(s, 200, "{b}");
    let snap = json(&b)["data"]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let (mut api, mut man) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let mut image = String::new();
        api.push(timed(|| {
            let body = format!(
                r#"{{"snapshot_id":"{snap}","image_name":"bench-{round}","os_type":"Linux"}}"#
            );
            let (s, b) = http.call("POST", "/api/v1/images/create_from_snapshot", Some(&body));
            assert_eq!(s, 200, "{b}");
            image = json(&b)["data"]["image_id"].as_str().unwrap().to_string();
            loop {
                let (s, b) = http.call(
                    "GET",
                    &format!("/api/v1/images/inspect?image_id={image}"),
                    None,
                );
                assert_eq!(s, 200, "{b}");
                match json(&b)["data"]["status"].as_str().unwrap() {
                    "creating" => std::thread::sleep(Duration::from_millis(20)),
                    "available" => break,
                    other => panic!("copy ended {other}: {b}"),
                }
            }
        }));
        let body = format!(r#"{{"image_id":"{image}","del_file":true}}"#);
        let (s, b) = http.call("POST", "/api/v1/images/delete", Some(&body));
        assert_eq!(s, 200, "{b}");

        let by_hand = format!("{ipool}/bench-man-{tag}-{round}");
        man.push(timed(|| {
            let ok = Command::new("bash")
                .arg("-c")
                .arg(format!(
                    "set -o pipefail; rbd --conf '{conf}' export --no-progress '{spec}@{snap}' - | rbd --conf '{conf}' import --no-progress - '{by_hand}'"
                ))
                .stdout(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "export | import failed");
        }));
        rbd(&["rm", "--no-progress", &by_hand]);
    }
    let a = report("image from snapshot, 1 GiB written (API)", &mut api);
    let m = report("rbd export @snap | rbd import (by hand)", &mut man);
    println!(
        "image from snapshot: API {:.0} MB/s, by hand {:.0} MB/s; API/hand = {:.2}",
        1024.0 / (a / 1000.0),
        1024.0 / (m / 1000.0),
        a / m
    );

    let (mut api, mut man) = (vec![], vec![]);
    let body = format!(r#"{{"volume_id":"{vol}","snapshot_id":"{snap}"}}"#);
    for _ in 0..ROUNDS {
        api.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/volume/restore", Some(&body));
            assert_eq!(s, 200, "{b}");
        }));
        man.push(timed(|| {
            rbd(&[
                "snap",
                "rollback",
                "--no-progress",
                &format!("{spec}@{snap}"),
            ])
        }));
    }
    report("volume restore, 1 GiB written (API)", &mut api);
    report("rbd snap rollback (by hand)", &mut man);

    let (s, b) = http.call(
        "POST",
        "/api/v1/snapshot/delete",
        Some(&format!(r#"{{"snapshot_id":"{snap}"}}"#)),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = http.call(
        "POST",
        "/api/v1/volume/delete",
        Some(&format!(r#"{{"volume_id":"{vol}"}}"#)),
    );
    assert_eq!(s, 200, "{b}");
    drop_db(&dbname);
}
