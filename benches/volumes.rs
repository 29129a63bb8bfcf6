//! Volume benchmark on the real stack (scripts/bench.sh volumes):
//! - mount / unmount on a running guest, 20+ cycles, against `virsh attach-device` /
//!   `detach-device --live --config` with the same disk XML by hand, interleaved, as ratios.
//!   The API's unmount returns only once the guest has released the disk; `virsh detach-device`
//!   returns before that, so the by-hand figure is given both as returned and as confirmed
//!   (polling `virsh domblklist` until the disk is gone);
//! - volume create / delete against `qemu-img create -f rbd` / `rbd rm`.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const CYCLES: usize = 25;

fn main() {
    let (dbname, url, _conn) = new_db();
    let cfg = config(&url);
    let (ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let conf = env("CEPH_CONF");
    let vpool = cfg.ceph.volumes_pool.clone();
    let uri = cfg.libvirt.uri.clone();
    let tag = std::process::id();

    // A booted guest.
    let image = format!("bench-{tag}-vol");
    register_test_image(&mut http, &cfg, &image);
    let inst = boot_guest(&mut http, &ctx, &image);

    // The API's volume, and one for the hand-run commands with the same XML shape.
    let (s, b) = http.call(
        "POST",
        "/api/v1/volume/create",
        Some(r#"{"volume_name":"bench","volume_size":1}"#),
    );
    assert_eq!(s, 200, "{b}");
    let vol = json(&b)["data"]["volume_id"].as_str().unwrap().to_string();
    let man = format!("bench-man-{tag}");
    run(Command::new("rbd").args([
        "--conf",
        &conf,
        "create",
        "--size",
        "1G",
        &format!("{vpool}/{man}"),
    ]));
    let xml_path = std::env::temp_dir().join(format!("{man}.xml"));
    std::fs::write(
        &xml_path,
        api_web::xml::devices::to_xml(&api_web::service::volumes::disk(
            &ctx,
            &api_web::model::VolumeId::new(man.as_str()),
            "vdc",
        ))
        .unwrap(),
    )
    .unwrap();
    let xml = xml_path.to_str().unwrap().to_string();
    let virsh = |args: &[&str]| run(Command::new("virsh").arg("-c").arg(&uri).args(args));
    let in_live = |serial: &str| {
        let out = Command::new("virsh")
            .args(["-c", &uri, "dumpxml", &inst])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("<serial>{serial}</serial>"))
    };

    let (mut am, mut au, mut mm, mut mu, mut muc) = (vec![], vec![], vec![], vec![], vec![]);
    let mbody = format!(r#"{{"volume_id":"{vol}","instance_id":"{inst}"}}"#);
    for _ in 0..CYCLES {
        am.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/volume/mount", Some(&mbody));
            assert_eq!(s, 200, "{b}");
        }));
        au.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/volume/unmount", Some(&mbody));
            assert_eq!(s, 200, "{b}");
        }));
        mm.push(timed(|| {
            virsh(&["attach-device", &inst, &xml, "--live", "--config"])
        }));
        let t = Instant::now();
        virsh(&["detach-device", &inst, &xml, "--live", "--config"]);
        mu.push(t.elapsed());
        while in_live(&man) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "guest never released {man}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        muc.push(t.elapsed());
    }
    println!("--- mount/unmount on a running TCG guest, {CYCLES} cycles, interleaved");
    let a = report("api volume/mount", &mut am);
    let m = report("virsh attach-device --live --config", &mut mm);
    println!("{:<44} {:.2}x (api / by hand)", "mount ratio (p50)", a / m);
    let a = report("api volume/unmount (confirmed)", &mut au);
    let m = report("virsh detach-device --live --config", &mut mu);
    let c = report("  ... + polling until gone from live XML", &mut muc);
    println!(
        "{:<44} {:.2}x vs returned, {:.2}x vs confirmed",
        "unmount ratio (p50)",
        a / m,
        a / c
    );

    // Create / delete of 1 GiB volumes.
    let (mut ac, mut ad, mut qc, mut rd) = (vec![], vec![], vec![], vec![]);
    for i in 0..CYCLES {
        let mut id = String::new();
        ac.push(timed(|| {
            let (s, b) = http.call(
                "POST",
                "/api/v1/volume/create",
                Some(r#"{"volume_name":"c","volume_size":1}"#),
            );
            assert_eq!(s, 200, "{b}");
            id = json(&b)["data"]["volume_id"].as_str().unwrap().to_string();
        }));
        ad.push(timed(|| {
            let (s, b) = http.call(
                "GET",
                &format!("/api/v1/volume/delete?volume_id={id}"),
                None,
            );
            assert_eq!(s, 200, "{b}");
        }));
        let name = format!("{vpool}/bench-qi-{tag}-{i}");
        qc.push(timed(|| {
            run(Command::new("qemu-img").args([
                "create",
                "-q",
                "-f",
                "rbd",
                &format!("rbd:{name}:conf={conf}"),
                "1G",
            ]))
        }));
        rd.push(timed(|| {
            run(Command::new("rbd").args(["--conf", &conf, "rm", "--no-progress", &name]))
        }));
    }
    println!("--- volume create/delete 1 GiB, {CYCLES} cycles, interleaved");
    let a = report("api volume/create", &mut ac);
    let b = report("qemu-img create -f rbd", &mut qc);
    println!("{:<44} {:.2}x (api / by hand)", "create ratio (p50)", a / b);
    let a = report("api volume/delete", &mut ad);
    let b = report("rbd rm", &mut rd);
    println!("{:<44} {:.2}x (api / by hand)", "delete ratio (p50)", a / b);

    // Clean up.
    teardown_guest(&mut http, &inst, &image);
    let (s, b) = http.call(
        "GET",
        &format!("/api/v1/volume/delete?volume_id={vol}"),
        None,
    );
    assert_eq!(s, 200, "{b}");
    run(Command::new("rbd").args([
        "--conf",
        &conf,
        "rm",
        "--no-progress",
        &format!("{vpool}/{man}"),
    ]));
    let _ = std::fs::remove_file(&xml_path);
    drop_db(&dbname);
}
