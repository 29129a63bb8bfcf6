//! NIC benchmark on the real stack (scripts/bench.sh nics): attach / detach on a running guest,
//! 25 cycles, against `virsh attach-interface` / `detach-interface --live --config` by hand,
//! interleaved, as ratios. The API's detach returns once the NIC is gone from the live XML;
//! the by-hand figure is given as returned and as confirmed the same way.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const CYCLES: usize = 25;

fn main() {
    let (dbname, url, _conn) = new_db();
    let mut cfg = config(&url);
    cfg.network.auto_nic = false;
    let (ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let uri = cfg.libvirt.uri.clone();
    let bridge = cfg.network.default_bridge.clone();
    let tag = std::process::id();

    // A booted guest.
    let image = format!("bench-{tag}-nic");
    register_test_image(&mut http, &cfg, &image);
    let inst = boot_guest(&mut http, &ctx, &image);

    let (s, b) = http.call(
        "POST",
        "/api/v1/network/create",
        Some(r#"{"network_interface_name":"bench"}"#),
    );
    assert_eq!(s, 200, "{b}");
    let nid = json(&b)["data"]["network_interface_id"]
        .as_str()
        .unwrap()
        .to_string();
    let man_mac = "0a:70:69:fe:ed:01";
    let virsh = |args: &[&str]| run(Command::new("virsh").arg("-c").arg(&uri).args(args));
    let in_live = |mac: &str| {
        let out = Command::new("virsh")
            .args(["-c", &uri, "dumpxml", &inst])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(mac)
    };

    let (mut aa, mut ad, mut ma, mut md, mut mdc) = (vec![], vec![], vec![], vec![], vec![]);
    let body = format!(r#"{{"network_interface_id":"{nid}","instance_id":"{inst}"}}"#);
    for _ in 0..CYCLES {
        aa.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/network/attach", Some(&body));
            assert_eq!(s, 200, "{b}");
        }));
        ad.push(timed(|| {
            let (s, b) = http.call("POST", "/api/v1/network/detach", Some(&body));
            assert_eq!(s, 200, "{b}");
        }));
        ma.push(timed(|| {
            virsh(&[
                "attach-interface",
                &inst,
                "--type",
                "bridge",
                "--source",
                &bridge,
                "--mac",
                man_mac,
                "--model",
                "virtio",
                "--live",
                "--config",
            ])
        }));
        let t = Instant::now();
        virsh(&[
            "detach-interface",
            &inst,
            "--type",
            "bridge",
            "--mac",
            man_mac,
            "--live",
            "--config",
        ]);
        md.push(t.elapsed());
        while in_live(man_mac) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "guest never released {man_mac}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        mdc.push(t.elapsed());
    }
    println!("--- NIC attach/detach on a running TCG guest, {CYCLES} cycles, interleaved");
    let a = report("api network/attach", &mut aa);
    let m = report("virsh attach-interface --live --config", &mut ma);
    println!("{:<44} {:.2}x (api / by hand)", "attach ratio (p50)", a / m);
    let a = report("api network/detach (confirmed)", &mut ad);
    let m = report("virsh detach-interface --live --config", &mut md);
    let c = report("  ... + polling until gone from live XML", &mut mdc);
    println!(
        "{:<44} {:.2}x vs returned, {:.2}x vs confirmed",
        "detach ratio (p50)",
        a / m,
        a / c
    );

    teardown_guest(&mut http, &inst, &image);
    let body = format!(r#"{{"network_interface_id":"{nid}"}}"#);
    let (s, b) = http.call("POST", "/api/v1/network/delete", Some(&body));
    assert_eq!(s, 200, "{b}");
    drop_db(&dbname);
}
