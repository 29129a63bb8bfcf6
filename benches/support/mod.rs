//! Helpers shared by the benchmarks: a keep-alive HTTP/1.1 client, percentiles, a database and
//! the real server on a loopback port.
#![allow(dead_code)]

use actix_web::{web, HttpServer};
use api_web::config::Config;
use api_web::{api, service::Ctx};
use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

/// The admin key of every bench database (`new_db`), sent by `Http`.
pub const BENCH_KEY: &str = "awk_be0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0cbe0c";

pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| panic!("{k} unset: run scripts/bench.sh"))
}

/// A minimal keep-alive HTTP/1.1 client: enough for JSON requests to our own server.
pub struct Http {
    addr: std::net::SocketAddr,
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Http {
    pub fn connect(addr: std::net::SocketAddr) -> Http {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Http {
            addr,
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// One request; reconnects once if the server closed an idle keep-alive connection.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        match self.try_call(method, path, body) {
            Ok(r) => r,
            Err(_) => {
                *self = Http::connect(self.addr);
                self.try_call(method, path, body).unwrap()
            }
        }
    }

    fn try_call(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> std::io::Result<(u16, String)> {
        let body = body.unwrap_or("");
        write!(
            self.w,
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {BENCH_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.r.read_line(&mut line)?;
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut buf = vec![0; len];
        self.r.read_exact(&mut buf)?;
        Ok((status, String::from_utf8_lossy(&buf).into_owned()))
    }
}

pub fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1000.0
}

pub fn report(name: &str, v: &mut [Duration]) -> f64 {
    let p50 = pct(v, 0.50);
    println!(
        "{name:<44} n={:<5} p50={p50:>8.2} ms  p99={:>8.2} ms  max={:>8.2} ms",
        v.len(),
        pct(v, 0.99),
        pct(v, 1.0)
    );
    p50
}

pub fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh database with the schema; dropped by `drop_db`.
pub fn new_db() -> (String, String, MysqlConnection) {
    let server_url = env("API_WEB_TEST_DATABASE_URL");
    let name = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = MysqlConnection::establish(&server_url).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .unwrap();
    let url = format!("{server_url}/{name}");
    let mut conn = MysqlConnection::establish(&url).unwrap();
    api_web::db::migrate(&mut conn).unwrap();
    api_web::db::auth::insert_key(
        &mut conn,
        &api_web::db::auth::ApiKey {
            key_id: "key-0000be0c".into(),
            key_name: "bench".into(),
            key_hash: api_web::service::auth::hash(BENCH_KEY),
            role: "admin".into(),
            project_id: "prj-00000000".into(),
            expire_time: None,
            revoke_time: None,
            create_time: api_web::db::now(),
        },
    )
    .unwrap();
    (name, url, conn)
}

pub fn drop_db(name: &str) {
    let mut admin = MysqlConnection::establish(&env("API_WEB_TEST_DATABASE_URL")).unwrap();
    admin
        .batch_execute(&format!("DROP DATABASE `{name}`"))
        .unwrap();
}

/// The dev stack's configuration on database `url`.
pub fn config(url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.apply_env(|k| std::env::var(k).ok()).unwrap();
    cfg.database.url = url.to_string();
    // The benchmarks measure the work, not the rate limits.
    cfg.rate_limit.per_credential_per_sec = 0;
    cfg.rate_limit.per_address_per_sec = 0;
    // Bursts of 50 one-vCPU creates: a 2-core dev host takes 32 vCPUs at the default ratio.
    cfg.placement.cpu_allocation_ratio = 64.0;
    cfg.validate().unwrap();
    cfg
}

/// Serves the real app on a free loopback port; returns the context and the address.
pub fn serve(cfg: Config) -> (web::Data<Ctx>, std::net::SocketAddr) {
    let ctx = web::Data::new(Ctx::new(cfg).unwrap());
    api_web::service::operations::start_background(&ctx.clone().into_inner());
    let c = ctx.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let srv = HttpServer::new(move || api::app(c.clone()))
                .workers(2)
                .bind("127.0.0.1:0")
                .unwrap();
            tx.send(srv.addrs()[0]).unwrap();
            srv.run().await.unwrap();
        })
    });
    (ctx, rx.recv().unwrap())
}

/// The real api-web binary, serving database `url` on a free loopback port; killed when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
}

impl Server {
    /// Starts it (its log in `log`) and waits until it accepts connections.
    pub fn start(url: &str, log: &std::path::Path) -> Server {
        Self::start_with(url, log, &[])
    }

    /// `start` with more environment (`API_WEB_CONFIG`, ...).
    pub fn start_with(url: &str, log: &std::path::Path, env: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_api-web"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .env("DATABASE_URL", url)
            .env("API_WEB_LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child, addr };
        let t0 = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "api-web did not start (its log: {})",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/<pid>/smaps_rollup` in MiB: `Rss` (what VmRSS says), `Anonymous` (heap,
/// stacks, buffers: what the process itself holds), the rest is mapped library code.
pub fn smaps_mib(pid: u32, field: &str) -> f64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let kb: f64 = rollup
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

pub fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap()
}

/// Imports the test image (API_WEB_TEST_IMAGE) as `images_pool/name` and registers it.
pub fn register_test_image(http: &mut Http, cfg: &Config, name: &str) {
    let img = env("API_WEB_TEST_IMAGE");
    let spec = format!("{}/{name}", cfg.ceph.images_pool);
    run(Command::new("rbd").args([
        "--conf",
        &cfg.ceph.conf,
        "import",
        "--no-progress",
        &img,
        &spec,
    ]));
    let size = std::fs::metadata(&img).unwrap().len();
    let body = format!(
        r#"{{"image_id":"{name}","image_name":"bench","image_size":{size},"os_type":"Linux"}}"#
    );
    let (s, b) = http.call("POST", "/api/v1/images/register", Some(&body));
    assert_eq!(s, 200, "{b}");
}

/// Creates an instance from `image` and waits until its guest has booted and reported its
/// devices; returns the instance_id.
pub fn boot_guest(http: &mut Http, ctx: &Ctx, image: &str) -> String {
    let body = format!(r#"{{"instance_name":"bench","image_id":"{image}","cpu":1,"memory":256}}"#);
    let (s, b) = http.call("POST", "/api/v1/instance/create", Some(&body));
    assert_eq!(s, 200, "{b}");
    let inst = json(&b)["data"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let console = api_web::service::instances::console_path(
        ctx,
        &api_web::model::InstanceId::new(inst.as_str()),
    );
    let t0 = Instant::now();
    while !std::fs::read_to_string(&console).is_ok_and(|c| c.contains("API-WEB-GUEST-REPORT 1")) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "guest did not boot"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    inst
}

/// Destroys the instance with what is attached, and deletes the image with its RBD image.
pub fn teardown_guest(http: &mut Http, inst: &str, image: &str) {
    let body = format!(r#"{{"instance_id":"{inst}","delete_attached":true}}"#);
    let (s, b) = http.call("POST", "/api/v1/instance/destroy", Some(&body));
    assert_eq!(s, 200, "{b}");
    let body = format!(r#"{{"image_id":"{image}","del_file":true}}"#);
    let (s, b) = http.call("POST", "/api/v1/images/delete", Some(&body));
    assert_eq!(s, 200, "{b}");
}

/// `n` instance rows (`i-<tag><7 hex>`, every third stopped), each with its root volume row, in
/// one transaction; no domains: what list, detail and scrape benchmarks read from MySQL only.
pub fn insert_instance_rows(conn: &mut MysqlConnection, n: usize, tag: &str) {
    use api_web::db::{self, instances::InstanceForm, volumes::VolumeForm};
    use api_web::model::{HostId, ImageId, InstanceId, InstanceStatus, VolumeId, VolumeStatus};
    let now = db::now();
    conn.transaction(|conn| {
        for i in 0..n {
            let id = InstanceId::new(format!("i-{tag}{i:07x}"));
            db::instances::insert(
                conn,
                &InstanceForm {
                    instance_id: id.clone(),
                    instance_name: format!("bench instance {i}"),
                    status: if i % 3 == 0 {
                        InstanceStatus::Stopped
                    } else {
                        InstanceStatus::Running
                    },
                    host_ip: "127.0.0.1".into(),
                    host_id: HostId::new("host-00000000"),
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
                    volume_id: VolumeId::new(format!("vol-{tag}{i:07x}")),
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
                    delete_with_instance: true,
                },
            )?;
        }
        diesel::QueryResult::Ok(())
    })
    .unwrap();
}

/// One client of a burst: connects, waits at `barrier`, asks `instance/create` with `body`;
/// the answer's status, how long it took, the instance id when accepted, and the body.
pub fn create_at(
    addr: std::net::SocketAddr,
    body: &str,
    barrier: &std::sync::Barrier,
) -> (u16, Duration, Option<String>, String) {
    let mut h = Http::connect(addr);
    barrier.wait();
    let t = Instant::now();
    let (status, b) = h.call("POST", "/api/v1/instance/create", Some(body));
    let took = t.elapsed();
    let id = (status == 200).then(|| {
        json(&b)["data"]["instance_id"]
            .as_str()
            .unwrap()
            .to_string()
    });
    (status, took, id, b)
}

/// Destroys every instance with what is attached (10 at a time), retrying for up to 15 minutes
/// while one is still being built; returns those not destroyed, with the last answer.
pub fn destroy_all(addr: std::net::SocketAddr, ids: Vec<String>) -> Vec<(String, String)> {
    let ids = std::sync::Arc::new(std::sync::Mutex::new(ids));
    let failed = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let mut cleaners = vec![];
    for _ in 0..10 {
        let (ids, failed) = (ids.clone(), failed.clone());
        cleaners.push(std::thread::spawn(move || {
            let mut h = Http::connect(addr);
            loop {
                let Some(id) = ids.lock().unwrap().pop() else {
                    return;
                };
                let body = format!(r#"{{"instance_id":"{id}","delete_attached":true}}"#);
                let mut last = None;
                for _ in 0..900 {
                    let (s, b) = h.call("POST", "/api/v1/instance/destroy", Some(&body));
                    if s == 200 || s == 404 {
                        last = None;
                        break;
                    }
                    last = Some(b);
                    std::thread::sleep(Duration::from_secs(1));
                }
                if let Some(b) = last {
                    failed.lock().unwrap().push((id, b));
                }
            }
        }));
    }
    for c in cleaners {
        c.join().unwrap();
    }
    let failed = failed.lock().unwrap().clone();
    failed
}
