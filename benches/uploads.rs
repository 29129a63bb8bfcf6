//! Image upload and download benchmark on the real stack (run by scripts/bench.sh):
//! - a 1 GiB raw file of random bytes, and the same as qcow2, uploaded to the real api-web
//!   binary over plain HTTP on loopback (`images/upload`, Content-Length, the body streamed);
//! - api-web's resident memory sampled every 20 ms during each upload: the peak over the
//!   idle figure before the first (the goal: bounded, at most 32 MiB, whatever the size);
//! - the same files put into Ceph by hand, the way an operator would: `rbd import` for raw,
//!   `qemu-img convert -f qcow2 -O raw <file> rbd:...` for qcow2; ratios against those;
//! - `images/download` of the 1 GiB image, its time and memory.
//!
//! The qcow2 conversion is done by a `qemu-img` child process, whose memory is its own, not
//! api-web's; the figure here is api-web's process only.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const SIZE: u64 = 1 << 30;
const ROUNDS: usize = 3;

/// api-web's peak Rss (MiB) while `f` runs, sampled every 20 ms.
fn peak_rss<T>(pid: u32, f: impl FnOnce() -> T) -> (T, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak: f64 = 0.0;
        while !s.load(Ordering::Relaxed) {
            peak = peak.max(smaps_mib(pid, "Rss"));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak.max(smaps_mib(pid, "Rss"))
    });
    let out = f();
    stop.store(true, Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

/// Reads one HTTP response: status and body (Content-Length framed).
fn response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut len = 0u64;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = Vec::new();
    r.take(len).read_to_end(&mut body).unwrap();
    (status, body)
}

/// Uploads `file` (streamed from disk in 1 MiB writes); answers the image_id.
fn upload(addr: std::net::SocketAddr, file: &std::path::Path, name: &str) -> String {
    let len = std::fs::metadata(file).unwrap().len();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/v1/images/upload?image_name={name}&os_type=Linux HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {BENCH_KEY}\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut f = std::fs::File::open(file).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).unwrap();
    }
    let (status, body) = response(&mut BufReader::new(s));
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["data"]["status"], "available", "{body}");
    v["data"]["image_id"].as_str().unwrap().to_string()
}

/// Downloads the image and checks its length; answers it.
fn download(addr: std::net::SocketAddr, id: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET /api/v1/images/download?image_id={id} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {BENCH_KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::with_capacity(1 << 20, s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains(" 200 "), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
    }
    std::io::copy(&mut r, &mut std::io::sink()).unwrap()
}

/// `rbd` as api-web's Ceph user.
fn rbd(c: &api_web::config::CephConfig) -> Command {
    let mut cmd = Command::new("rbd");
    cmd.args(["--conf", &c.conf, "--id", &c.user]);
    if !c.keyring.is_empty() {
        cmd.args(["--keyring", &c.keyring]);
    }
    cmd
}

fn main() {
    let (dbname, url, _conn) = new_db();
    let log = std::env::temp_dir().join(format!("{dbname}.log"));
    println!("api-web's log: {}", log.display());
    let cfg = config(&url);
    let c = cfg.ceph.clone();
    let dir = std::env::temp_dir().join(format!("{dbname}-files"));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("random.raw");
    let qcow2 = dir.join("random.qcow2");
    run(Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", raw.display()),
        "bs=4M",
        &format!("count={}", SIZE >> 22),
        "status=none",
    ]));
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .args([&raw, &qcow2]));
    println!(
        "files: {} MiB raw of random bytes, {} MiB as qcow2",
        SIZE >> 20,
        std::fs::metadata(&qcow2).unwrap().len() >> 20
    );
    let server = Server::start(&url, &log);
    let pid = server.pid();
    let mut http = Http::connect(server.addr);
    let mut made: Vec<String> = vec![];
    let hand_names: Vec<String> = (0..ROUNDS)
        .map(|i| format!("upbench-{}-{i}", &dbname[6..14]))
        .collect();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Start-up, the first reconcile passes and the backend probes are behind it.
        std::thread::sleep(Duration::from_secs(8));
        let idle = smaps_mib(pid, "Rss");
        println!("api-web Rss idle: {idle:.1} MiB");
        let mut rows = vec![];
        for (fmt, file) in [("raw", &raw), ("qcow2", &qcow2)] {
            let mut api = vec![];
            let mut hand = vec![];
            let mut peaks = vec![];
            for (i, hand_name) in hand_names.iter().enumerate() {
                let t = Instant::now();
                let (id, peak) = peak_rss(pid, || upload(server.addr, file, &format!("b{fmt}{i}")));
                api.push(t.elapsed());
                peaks.push(peak - idle);
                made.push(id.clone());
                let body = format!(r#"{{"image_id":"{id}","del_file":true}}"#);
                let (s, b) = http.call("POST", "/api/v1/images/delete", Some(&body));
                assert_eq!(s, 200, "{b}");
                made.pop();

                let spec = format!("{}/{hand_name}", c.images_pool);
                let t = Instant::now();
                if fmt == "raw" {
                    run(rbd(&c).args([
                        "import",
                        "--no-progress",
                        &raw.display().to_string(),
                        &spec,
                    ]));
                } else {
                    let mut target = format!("rbd:{spec}:id={}:conf={}", c.user, c.conf);
                    if !c.keyring.is_empty() {
                        target.push_str(&format!(":keyring={}", c.keyring));
                    }
                    run(Command::new("qemu-img")
                        .args(["convert", "-f", "qcow2", "-O", "raw"])
                        .arg(&qcow2)
                        .arg(&target));
                }
                hand.push(t.elapsed());
                run(rbd(&c).args(["rm", "--no-progress", &spec]));
            }
            println!("--- 1 GiB of random bytes as {fmt}, {ROUNDS} rounds");
            let a = report(&format!("images/upload ({fmt})"), &mut api);
            let h = report(
                if fmt == "raw" {
                    "rbd import (by hand)"
                } else {
                    "qemu-img convert to rbd: (by hand)"
                },
                &mut hand,
            );
            let peak = peaks.iter().cloned().fold(0.0, f64::max);
            println!("api-web Rss over idle during the upload: max {peak:.1} MiB (goal <= 32)");
            rows.push((fmt, a, h, peak));
        }

        // Download: one uploaded image read back three times.
        let id = upload(server.addr, &raw, "bdl");
        made.push(id.clone());
        let mut lat = vec![];
        let mut peaks = vec![];
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let (n, peak) = peak_rss(pid, || download(server.addr, &id));
            lat.push(t.elapsed());
            peaks.push(peak - idle);
            assert_eq!(n, SIZE);
        }
        println!("--- images/download of a 1 GiB image, {ROUNDS} rounds");
        let d = report("images/download", &mut lat);
        let dpeak = peaks.iter().cloned().fold(0.0, f64::max);
        println!("api-web Rss over idle during the download: max {dpeak:.1} MiB");

        println!("--- summary");
        for (fmt, a, h, peak) in rows {
            println!(
                "upload {fmt:<6} p50 {a:>7.0} ms ({:>4.0} MB/s)  by hand {h:>7.0} ms  ratio {:.2}  Rss peak +{peak:.1} MiB",
                SIZE as f64 / 1e6 / (a / 1000.0),
                a / h
            );
        }
        println!(
            "download       p50 {d:>7.0} ms ({:>4.0} MB/s)  Rss peak +{dpeak:.1} MiB",
            SIZE as f64 / 1e6 / (d / 1000.0)
        );
    }));
    for id in &made {
        let body = format!(r#"{{"image_id":"{id}","del_file":true}}"#);
        http.call("POST", "/api/v1/images/delete", Some(&body));
    }
    for name in &hand_names {
        let _ = rbd(&c)
            .args(["rm", "--no-progress"])
            .arg(format!("{}/{name}", c.images_pool))
            .output();
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    drop_db(&dbname);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
