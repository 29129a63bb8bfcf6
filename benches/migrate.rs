//! Live migration benchmark (scripts/bench.sh migrate): a booted 256 MiB TCG guest moves
//! between the configured host and the dev stack's second libvirtd, there and back, by
//! `instance/migrate` and by hand with `virsh migrate --live` (the same ways: peer-to-peer to
//! the TCP host, managed back to the local socket), interleaved. Prints the total time of each
//! (request to settled row for the API; the virsh command for the hand-run) and the guest's
//! downtime libvirt measured (`virsh domjobinfo --completed` on the target).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const ROUNDS: usize = 5;

fn virsh(uri: &str, args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// libvirt's downtime of the last completed migration of `name`, read on `uri` (ms).
fn downtime_ms(uri: &str, name: &str) -> Option<f64> {
    let out = Command::new("virsh")
        .args(["-c", uri, "domjobinfo", "--completed", name])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.trim_start().starts_with("Total downtime:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn api_migrate(http: &mut Http, inst: &str) -> Duration {
    let t0 = Instant::now();
    let body = format!(r#"{{"instance_id":"{inst}"}}"#);
    let (s, b) = http.call("POST", "/api/v1/instance/migrate", Some(&body));
    if s != 200 {
        let (_, d) = http.call(
            "GET",
            &format!("/api/v1/instance/detail?instance_id={inst}"),
            None,
        );
        panic!("{b}\n{d}");
    }
    loop {
        let (_, b) = http.call(
            "GET",
            &format!("/api/v1/instance/progress?instance_id={inst}"),
            None,
        );
        let p = json(&b);
        if p["data"]["status"] != "migrating" {
            assert_eq!(p["data"]["status"], "running", "{b}");
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let _ = env_logger::try_init();
    let uri2 = env("API_WEB_EXTRA_HOST_URIS")
        .split_whitespace()
        .next()
        .expect("run scripts/bench.sh migrate (it starts a second host)")
        .to_string();
    let (dbname, url, _conn) = new_db();
    let mut cfg = config(&url);
    cfg.operations.reconcile_interval_secs = 3600;
    let uri1 = cfg.libvirt.uri.clone();
    let (ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let (s, b) = http.call(
        "POST",
        "/api/v1/host/add",
        Some(&format!(r#"{{"uri":"{uri2}","host_name":"bench-2"}}"#)),
    );
    assert_eq!(s, 200, "{b}");
    let host2 = json(&b)["data"]["host_id"].as_str().unwrap().to_string();
    let image = format!("bench-mig-{}", std::process::id());
    register_test_image(&mut http, &cfg, &image);
    let inst = boot_guest(&mut http, &ctx, &image);
    let row_host = |ctx: &api_web::service::Ctx| {
        api_web::service::load::<api_web::db::instances::Instance>(
            &mut ctx.conn().unwrap(),
            &api_web::model::InstanceId::new(inst.as_str()),
        )
        .unwrap()
        .host_id
        .to_string()
    };
    // The guest starts wherever placement put it: first to the configured host, if needed.
    if row_host(&ctx) == host2 {
        api_migrate(&mut http, &inst);
    }
    let (mut api_there, mut api_back, mut hand_there, mut hand_back) =
        (vec![], vec![], vec![], vec![]);
    let (mut dt_api, mut dt_hand) = (vec![], vec![]);
    let mig = [
        "--migrateuri",
        "tcp://127.0.0.1",
        "--listen-address",
        "127.0.0.1",
    ];
    for _ in 0..ROUNDS {
        api_there.push(api_migrate(&mut http, &inst));
        dt_api.extend(downtime_ms(&uri2, &inst));
        api_back.push(api_migrate(&mut http, &inst));
        dt_api.extend(downtime_ms(&uri1, &inst));
        // By hand, the same ways: p2p to the TCP host, managed back.
        let t0 = Instant::now();
        let mut a = vec![
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            &inst,
            &uri2,
        ];
        a.extend(mig);
        virsh(&uri1, &a);
        hand_there.push(t0.elapsed());
        dt_hand.extend(downtime_ms(&uri2, &inst));
        let t0 = Instant::now();
        let mut a = vec![
            "migrate",
            "--live",
            "--persistent",
            "--undefinesource",
            &inst,
            &uri1,
        ];
        a.extend(mig);
        virsh(&uri2, &a);
        hand_back.push(t0.elapsed());
        dt_hand.extend(downtime_ms(&uri1, &inst));
    }
    println!("booted 256 MiB TCG guest, {ROUNDS} rounds there and back:");
    let a1 = report("instance/migrate to the TCP host (p2p)", &mut api_there);
    let h1 = report("virsh migrate --live --p2p (same)", &mut hand_there);
    let a2 = report("instance/migrate back (managed)", &mut api_back);
    let h2 = report("virsh migrate --live back (managed)", &mut hand_back);
    println!(
        "ratio API/hand: there {:.2}x, back {:.2}x",
        a1 / h1,
        a2 / h2
    );
    let p = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            "n/a".to_string()
        } else {
            format!(
                "p50 {:.0} ms, max {:.0} ms (n={})",
                v[v.len() / 2],
                v[v.len() - 1],
                v.len()
            )
        }
    };
    println!(
        "guest downtime (libvirt): API {}; by hand {}",
        p(&mut dt_api),
        p(&mut dt_hand)
    );
    teardown_guest(&mut http, &inst, &image);
    drop(ctx);
    drop_db(&dbname);
}
