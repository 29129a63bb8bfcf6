//! libvirt events benchmark on the real stack (scripts/bench.sh events): how long an
//! out-of-band change takes to reach the instance's row. A booted guest is stopped with
//! `virsh destroy` and started with `virsh start`, 20 times each; the clock starts before the
//! virsh command and stops when `instance/progress` shows the new status (polled every 2 ms).
//! The periodic pass is pushed out of the way (600 s): only events can make it fast.
//! With API_WEB_LIBVIRT_EVENTS=false and a 1 s pass, the same figures show the poll-only path.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const CYCLES: usize = 20;

fn main() {
    let (dbname, url, _conn) = new_db();
    let mut cfg = config(&url);
    cfg.operations.reconcile_interval_secs = if cfg.libvirt.events { 600 } else { 1 };
    println!(
        "libvirt.events = {}, reconcile_interval_secs = {}",
        cfg.libvirt.events, cfg.operations.reconcile_interval_secs
    );
    let (ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let image = format!("bench-{}-ev", std::process::id());
    register_test_image(&mut http, &cfg, &image);
    let inst = boot_guest(&mut http, &ctx, &image);
    let uri = cfg.libvirt.uri.clone();
    let progress = format!("/api/v1/instance/progress?instance_id={inst}");
    // (from before the command, from when the command returned)
    let reach = |http: &mut Http, cmd: &str, status: &str| {
        let t = Instant::now();
        run(Command::new("virsh").args(["-c", &uri, cmd, &inst]));
        let returned = Instant::now();
        loop {
            let (s, b) = http.call("GET", &progress, None);
            assert_eq!(s, 200, "{b}");
            if json(&b)["data"]["status"] == status {
                return (t.elapsed(), returned.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{cmd}: row never {status}: {b}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let (mut stop, mut start, mut stop_after, mut start_after) = (vec![], vec![], vec![], vec![]);
    for _ in 0..CYCLES {
        let (all, after) = reach(&mut http, "destroy", "stopped");
        stop.push(all);
        stop_after.push(after);
        let (all, after) = reach(&mut http, "start", "running");
        start.push(all);
        start_after.push(after);
    }
    println!("--- out-of-band change -> row, {CYCLES} each");
    report("virsh destroy -> row stopped", &mut stop);
    report("  ... after virsh returned", &mut stop_after);
    report("virsh start -> row running", &mut start);
    report("  ... after virsh returned", &mut start_after);
    teardown_guest(&mut http, &inst, &image);
    drop_db(&dbname);
}
