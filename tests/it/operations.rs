//! Operations survive their process. The real api-web binary runs as a child process, held at
//! one step of an instance create by a failpoint, then:
//! - killed with SIGKILL: the in-process app on the same database (another api-web process)
//!   takes the create over when its lease runs out and undoes it, giving back what it took;
//! - stopped with SIGTERM: it stops taking requests, lets the create finish, then exits.

use crate::common::*;
use crate::instances::{count, domain_exists, domstate, drop_image, test_image, wait_for};
use actix_web::test;
use api_web::api;
use api_web::db::operations::{self as q, Operation, OperationForm};
use api_web::db::Page;
use api_web::model::{OperationId, OperationStatus};
use api_web::service::operations::{now_ms, take_over};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The api-web binary as a child process on a free loopback port, killed when dropped.
pub struct ApiWeb {
    child: Child,
    addr: String,
    /// Its stderr (the log, with `failpoint` at info: where it stands).
    log: std::path::PathBuf,
}

impl ApiWeb {
    pub fn start(t: &TestApp, failpoints: &str) -> ApiWeb {
        Self::start_with(t, failpoints, &[])
    }

    /// With more environment (`API_WEB_CONFIG`, ...).
    pub fn start_with(t: &TestApp, failpoints: &str, env: &[(&str, &str)]) -> ApiWeb {
        if !cfg!(feature = "failpoints") {
            panic!("these tests need the failpoints feature: run them through scripts/test.sh");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("{}.log", unique("api-web-child")));
        let child = Command::new(env!("CARGO_BIN_EXE_api-web"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("serve")
            .env("DATABASE_URL", &t.db.url)
            .env("API_WEB_LISTEN", &addr)
            .env("FAILPOINTS", failpoints)
            .env("RUST_LOG", "warn,failpoint=info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the api-web binary");
        let mut me = ApiWeb { child, addr, log };
        let end = Instant::now() + Duration::from_secs(30);
        while me.call("GET", "/healthz", "").is_none() {
            assert!(Instant::now() < end, "api-web did not start listening");
            assert!(
                me.child.try_wait().unwrap().is_none(),
                "api-web exited at start-up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> Option<Value> {
        http(&self.addr, TEST_KEY, method, path, body)
    }

    /// With another credential (an API key or a login token).
    pub fn call_as(&self, key: &str, method: &str, path: &str, body: &str) -> Option<Value> {
        http(&self.addr, key, method, path, body)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// What it has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process logged that it reached failpoint `at` (`<kind>:<step>`).
    pub fn wait_failpoint(&self, at: &str, secs: u64) {
        let want = format!("reached {at}");
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(&want) {
                return;
            }
            assert!(
                Instant::now() < end,
                "api-web never reached failpoint {at}; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

/// One HTTP/1.1 request (connection: close): the answer's JSON, or None if nothing answered.
fn http(addr: &str, key: &str, method: &str, path: &str, body: &str) -> Option<Value> {
    http_bytes(addr, key, method, path, body.as_bytes())
}

/// `http` with any body (an upload's file).
pub fn http_bytes(addr: &str, key: &str, method: &str, path: &str, body: &[u8]) -> Option<Value> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .ok()?;
    s.write_all(body).ok()?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).ok()? > 0 && line != "\r\n" {
        line.clear();
    }
    let mut out = String::new();
    r.read_to_string(&mut out).ok()?;
    serde_json::from_str(&out).ok()
}

impl Drop for ApiWeb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The volume ids recorded on an instance (its root volume first among them).
pub fn volumes_of(t: &TestApp, instance: &str) -> Vec<String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct V {
        #[diesel(sql_type = diesel::sql_types::Text)]
        volume_id: String,
    }
    diesel::sql_query(format!(
        "SELECT volume_id FROM volume WHERE instance_id = '{instance}' ORDER BY is_root DESC"
    ))
    .load::<V>(&mut t.db.conn())
    .unwrap()
    .into_iter()
    .map(|v| v.volume_id)
    .collect()
}

/// Whether the running operation on `resource` was handed to the takeover (`Op::abandon`):
/// it carries the reason.
pub fn released(t: &TestApp, resource: &str) -> bool {
    operations(t).into_iter().any(|o| {
        o.resource_id == resource
            && o.status == OperationStatus::Running
            && o.error_message.is_some()
    })
}

/// An instance made by the in-process app, `running` (its guest need not have booted).
async fn running_instance(app: &impl App, image: &str, name: &str) -> String {
    let r = post(
        app,
        "/api/v1/instance/create",
        json!({"instance_name": name, "image_id": image, "cpu": 1, "memory": 128}),
    )
    .await;
    let id = r.ok()["instance_id"].as_str().unwrap().to_string();
    wait_for(app, &id, 90, |d| d["status"] == "running").await;
    id
}

/// How long after a kill a takeover must have settled an operation: the lease, one takeover
/// interval, and 5 s.
fn takeover_bound(t: &TestApp) -> Duration {
    let ops = &t.ctx.cfg.operations;
    Duration::from_secs(ops.lease_secs + ops.takeover_interval_secs + 5)
}

/// Waits (from `since`, at most `bound`) until `done`; returns how long it took.
fn settled_within(
    since: Instant,
    bound: Duration,
    what: &str,
    done: impl Fn() -> bool,
) -> Duration {
    while !done() {
        assert!(
            since.elapsed() <= bound,
            "{what}: not settled within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = since.elapsed();
    println!("kill -9 during {what}: settled after {took:?}");
    took
}

/// The operations in this test's database, read through the product's own list query.
fn operations(t: &TestApp) -> Vec<Operation> {
    let page = Page {
        offset: 0,
        limit: 1000,
    };
    api_web::db::list::<Operation>(&mut t.db.conn(), &Default::default(), page)
        .unwrap()
        .1
}

/// The running operation of `kind` (on `resource`, when given), if there is one.
fn running(t: &TestApp, kind: &str, resource: Option<&str>) -> Option<Operation> {
    operations(t).into_iter().find(|o| {
        o.status == OperationStatus::Running
            && o.kind == kind
            && resource.is_none_or(|r| o.resource_id == r)
    })
}

/// The status of the (only) operation on `resource`.
fn operation_status(t: &TestApp, resource: &str) -> String {
    let op = operations(t)
        .into_iter()
        .find(|o| o.resource_id == resource);
    op.expect("an operation").status.to_string()
}

/// Sends a request that will not be answered (the process is held, then killed).
pub fn send_and_forget(child: &ApiWeb, method: &'static str, path: &'static str, body: String) {
    send_bytes_and_forget(child, method, path, body.into_bytes());
}

/// `send_and_forget` with any body (an upload's file).
pub fn send_bytes_and_forget(
    child: &ApiWeb,
    method: &'static str,
    path: &'static str,
    body: Vec<u8>,
) {
    let addr = child.addr.clone();
    std::thread::spawn(move || http_bytes(&addr, TEST_KEY, method, path, &body));
}

/// Waits until the operation of `kind` on `resource` is held at `step`.
fn wait_step(t: &TestApp, kind: &str, resource: &str, step: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    while running(t, kind, Some(resource)).map(|o| o.step).as_deref() != Some(step) {
        assert!(Instant::now() < end, "{kind} never reached {step:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// kill -9 while a create is under way (domain defined, root clone made, NIC reserved): the
/// create is undone by another process within the lease plus a few seconds, and nothing it took
/// is kept: no domain, no clone, no volume row, no NIC (the one it made for itself is deleted).
#[actix_web::test]
async fn a_create_whose_process_was_killed_is_undone_by_another() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let child = ApiWeb::start(&t, "instance.create:starting=sleep(120000)");
    let body = json!({"instance_name": "killed", "image_id": image, "cpu": 1, "memory": 128});
    let r = child
        .call("POST", "/api/v1/instance/create", &body.to_string())
        .unwrap();
    let id = r["data"]["instance_id"].as_str().unwrap().to_string();
    wait_for(&app, &id, 60, |d| d["step"] == "starting").await;
    assert!(domain_exists(&id));
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        1
    );
    drop(child); // SIGKILL
    let killed = Instant::now();

    let d = wait_for(&app, &id, 60, |d| d["status"] != "creating").await;
    let took = killed.elapsed();
    let bound = takeover_bound(&t);
    assert!(took <= bound, "settled after {took:?} (bound {bound:?})");
    assert_eq!(d["status"], "error", "{d}");
    let msg = d["error_message"].as_str().unwrap();
    assert!(msg.contains("api-web stopped while creating"), "{msg}");
    assert!(!domain_exists(&id));
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        0
    );
    assert_eq!(operation_status(&t, &id), "failed");
    println!("kill -9 at step starting: settled after {took:?}");

    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// kill -9 during a turnoff (held before the ACPI press) and during a destroy (held after the
/// domain is gone, before the disks): another process settles each within the lease plus a few
/// seconds, from what libvirt holds. The turnoff leaves the instance as libvirt has it (running),
/// the destroy is carried to its end.
#[actix_web::test]
async fn a_turnoff_and_a_destroy_whose_process_was_killed_are_settled_by_another() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = running_instance(&app, &image, "victim").await;
    let bound = takeover_bound(&t);

    let child = ApiWeb::start(
        &t,
        "instance.turnoff:shutting_down_the_domain=sleep(120000);instance.destroy:removing_disks=sleep(120000)",
    );
    let body = json!({"instance_id": id}).to_string();
    send_and_forget(&child, "POST", "/api/v1/instance/turnoff", body.clone());
    wait_step(&t, "instance.turnoff", &id, "shutting down the domain");
    drop(child);
    let killed = Instant::now();
    let d = wait_for(&app, &id, 60, |d| d["status"] != "stopping").await;
    assert!(
        killed.elapsed() <= bound,
        "turnoff settled after {:?}",
        killed.elapsed()
    );
    assert_eq!(d["status"], "running", "{d}");
    assert_eq!(domstate(&id), "running");
    println!(
        "kill -9 during turnoff: settled after {:?}",
        killed.elapsed()
    );

    let child = ApiWeb::start(&t, "instance.destroy:removing_disks=sleep(120000)");
    send_and_forget(&child, "POST", "/api/v1/instance/destroy", body);
    wait_step(&t, "instance.destroy", &id, "removing disks");
    assert!(!domain_exists(&id));
    drop(child);
    let killed = Instant::now();
    let end = killed + bound;
    loop {
        let r = get(&app, &format!("/api/v1/instance/detail?instance_id={id}")).await;
        if r.status.as_u16() == 404 {
            break;
        }
        assert!(Instant::now() < end, "destroy not finished: {}", r.body);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "kill -9 during destroy: finished after {:?}",
        killed.elapsed()
    );
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    // The NIC the create made goes with the instance, as a destroy without delete_attached does.
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        0
    );
    assert_eq!(running_operations(&t), 0);
    drop_image(&app, &image).await;
}

/// kill -9 during a mount (held before the plug) and an unmount (held before the unplug): the
/// volume's row takes what the instance's persistent XML holds, within the lease plus a few
/// seconds, instead of staying `attaching`/`detaching` where both mount and unmount answer 409.
#[actix_web::test]
async fn a_mount_and_an_unmount_whose_process_was_killed_are_settled_by_another() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let id = running_instance(&app, &image, "host").await;
    // Stopped: plug and unplug touch only the persistent XML, no guest is involved.
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await
    .ok();
    let r = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "v", "volume_size": 1}),
    )
    .await;
    let vol = r.ok()["volume_id"].as_str().unwrap().to_string();
    let body = json!({"volume_id": vol, "instance_id": id}).to_string();
    let bound = takeover_bound(&t);
    let volume_status = |t: &TestApp| {
        count(
            &t.db,
            "SELECT COUNT(*) AS n FROM volume WHERE is_root = 0 AND status = 'in-use'",
        )
    };
    let settled = |t: &TestApp| {
        count(
            &t.db,
            "SELECT COUNT(*) AS n FROM volume WHERE status IN ('attaching', 'detaching')",
        ) == 0
    };

    let child = ApiWeb::start(&t, "volume.attach:plugging=sleep(120000)");
    send_and_forget(&child, "POST", "/api/v1/volume/mount", body.clone());
    wait_step(&t, "volume.attach", &vol, "plugging");
    drop(child);
    settled_within(Instant::now(), bound, "mount", || settled(&t));
    assert_eq!(volume_status(&t), 0, "never plugged: available again");

    post(
        &app,
        "/api/v1/volume/mount",
        serde_json::from_str(&body).unwrap(),
    )
    .await
    .ok();
    let child = ApiWeb::start(&t, "volume.detach:unplugging=sleep(120000)");
    send_and_forget(&child, "POST", "/api/v1/volume/unmount", body);
    wait_step(&t, "volume.detach", &vol, "unplugging");
    drop(child);
    let killed = Instant::now();
    while !settled(&t) {
        assert!(killed.elapsed() <= bound, "unmount not settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "kill -9 during unmount: settled after {:?}",
        killed.elapsed()
    );
    assert_eq!(volume_status(&t), 1, "never unplugged: still in use");

    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": id, "delete_attached": true}),
    )
    .await
    .ok();
    drop_image(&app, &image).await;
}

/// kill -9 during an image create (held after the row, before the RBD image) and a volume
/// delete (held before the RBD image goes): the create is undone (no row, no RBD image), the
/// delete is undone (the volume is available again, its RBD image kept), each within the lease
/// plus a few seconds.
#[actix_web::test]
async fn an_image_create_and_a_volume_delete_whose_process_was_killed_are_settled() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let bound = takeover_bound(&t);
    let child = ApiWeb::start(
        &t,
        "image.create:creating_the_RBD_image=sleep(120000);volume.delete:removing_the_RBD_image=sleep(120000)",
    );
    send_and_forget(
        &child,
        "POST",
        "/api/v1/images/create",
        json!({"image_name": "doomed", "image_size": 1 << 20, "os_type": "Linux"}).to_string(),
    );
    let end = Instant::now() + Duration::from_secs(30);
    let image = loop {
        if let Some(op) = running(&t, "image.create", None) {
            break op.resource_id;
        }
        assert!(Instant::now() < end, "image create never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_step(&t, "image.create", &image, "creating the RBD image");
    let r = post(
        &app,
        "/api/v1/volume/create",
        json!({"volume_name": "kept", "volume_size": 1}),
    )
    .await;
    let vol = r.ok()["volume_id"].as_str().unwrap().to_string();
    let body = json!({"volume_id": vol}).to_string();
    send_and_forget(&child, "POST", "/api/v1/volume/delete", body);
    wait_step(&t, "volume.delete", &vol, "removing the RBD image");
    drop(child);
    let killed = Instant::now();
    let settled = |t: &TestApp| {
        count(&t.db, "SELECT COUNT(*) AS n FROM image") == 0
            && count(
                &t.db,
                "SELECT COUNT(*) AS n FROM volume WHERE status = 'available'",
            ) == 1
    };
    while !settled(&t) {
        assert!(killed.elapsed() <= bound, "not settled");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "kill -9 during image create and volume delete: settled after {:?}",
        killed.elapsed()
    );
    assert_eq!(rbd_size(&format!("{}/{image}", t.images_pool())), None);
    assert_eq!(
        rbd_size(&format!("{}/{vol}", t.volumes_pool())),
        Some(1 << 30)
    );
    assert_eq!(running_operations(&t), 0);
}

/// SIGTERM while a create is under way: api-web stops taking requests, lets the create
/// finish, then exits; the instance is running and its operation done.
#[actix_web::test]
async fn sigterm_lets_a_running_create_finish() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let mut child = ApiWeb::start(&t, "instance.create:starting=sleep(3000)");
    let body = json!({"instance_name": "graceful", "image_id": image, "cpu": 1, "memory": 128});
    let r = child
        .call("POST", "/api/v1/instance/create", &body.to_string())
        .unwrap();
    let id = r["data"]["instance_id"].as_str().unwrap().to_string();
    wait_for(&app, &id, 60, |d| d["step"] == "starting").await;
    child.signal(libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "api-web did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    let d = wait_for(&app, &id, 1, |_| true).await;
    assert_eq!(d["status"], "running", "{d}");
    assert_eq!(operation_status(&t, &id), "done");

    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// Two processes looking at one expired operation: exactly one takes it over.
#[actix_web::test]
async fn an_expired_operation_is_taken_over_once() {
    // Background takeovers out of the way: only the two passes below look.
    let a = TestApp::with_config(|c| {
        c.operations.lease_secs = 3600;
        c.operations.takeover_interval_secs = 3600;
    });
    let b = TestApp::with_db(&a);
    let id = OperationId::generate();
    let form = OperationForm {
        operation_id: id.clone(),
        kind: "test.unknown".into(),
        resource_id: "nothing".into(),
        status: OperationStatus::Running,
        step: "somewhere".into(),
        state: "{}".into(),
        owner: Some("a dead process".into()),
        lease_until_ms: Some(now_ms() - 1),
        create_time: api_web::db::now(),
    };
    q::insert(&mut a.db.conn(), &form).unwrap();
    let (ca, cb) = (a.ctx.clone(), b.ctx.clone());
    let ta = std::thread::spawn(move || take_over(&ca).unwrap());
    let tb = std::thread::spawn(move || take_over(&cb).unwrap());
    let claimed = ta.join().unwrap() + tb.join().unwrap();
    assert_eq!(claimed, 1);
    let op = q::get(&mut a.db.conn(), &id).unwrap().unwrap();
    assert_eq!(op.status, OperationStatus::Failed);
    assert!(op.error_message.unwrap().contains("no takeover is known"));
    assert_eq!(op.owner, None);
}

/// An owner whose lease ran out (renewals lost: a MySQL partition, a stalled process) takes no
/// further step, even before another process claims the operation: its save fails, the
/// operation is halted, and its end hands it to the takeover instead of recording an outcome.
/// A save with a live lease renews it.
#[actix_web::test]
async fn an_owner_whose_lease_ran_out_takes_no_further_step() {
    let t = TestApp::with_config(|c| {
        c.operations.lease_secs = 3600;
        c.operations.takeover_interval_secs = 3600;
    });
    let ctx = &t.ctx;
    let kind = api_web::service::instances::TURNON;
    let op =
        api_web::service::operations::start(ctx, &mut ctx.conn().unwrap(), kind, "nothing", &())
            .unwrap();
    let lease = |t: &TestApp| {
        q::get(&mut t.db.conn(), &op.id)
            .unwrap()
            .unwrap()
            .lease_until_ms
            .unwrap()
    };
    // A live lease: the save goes through and pushes the lease on.
    set_lease(&t, &op.id, now_ms() + 1_000);
    op.save(ctx, "starting the domain", &()).unwrap();
    assert!(
        lease(&t) > now_ms() + 3_000_000,
        "the save renews the lease"
    );
    assert!(!op.is_halted());
    // The lease ran out, nobody has claimed it yet: the owner still may not go on.
    set_lease(&t, &op.id, now_ms() - 1);
    let e = op.save(ctx, "starting the domain", &()).unwrap_err();
    assert!(e.to_string().contains("lost its lease"), "{e}");
    assert!(op.is_halted());
    let id = op.id.clone();
    op.finish(ctx, Err("the domain could not start"));
    let row = q::get(&mut t.db.conn(), &id).unwrap().unwrap();
    assert_eq!(row.status, OperationStatus::Running, "left to the takeover");
    assert_eq!(row.lease_until_ms, Some(0), "released at once");
    let why = row.error_message.unwrap_or_default();
    assert!(why.contains("halted after a failed save"), "{why}");
    assert_eq!(row.step, "starting the domain");
}

fn set_lease(t: &TestApp, id: &OperationId, until_ms: u64) {
    use api_web::db::schema::operation::dsl as o;
    use diesel::prelude::*;
    diesel::update(o::operation.find(id))
        .set(o::lease_until_ms.eq(until_ms))
        .execute(&mut t.db.conn())
        .unwrap();
}

/// A transaction MariaDB rolls back to break a deadlock is told apart from an outage
/// (`ApiError::is_deadlock`), so that a claim that lost one runs again instead of answering 503.
#[actix_web::test]
async fn a_real_deadlock_is_recognised() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let db = TestDb::migrated();
    db.conn()
        .batch_execute(
            "CREATE TABLE crossed (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; \
             INSERT INTO crossed VALUES (1, 0), (2, 0)",
        )
        .unwrap();
    let gate = std::sync::Barrier::new(2);
    // Each locks one row, then wants the other's. (Prepared statements, as diesel's query
    // builder sends them: only those carry MySQL's error number.)
    let run = |first: i32, second: i32| {
        use diesel::RunQueryDsl;
        let mut c = db.conn();
        let bump = |c: &mut diesel::MysqlConnection, id: i32| {
            diesel::sql_query("UPDATE crossed SET v = v + 1 WHERE id = ?")
                .bind::<diesel::sql_types::Integer, _>(id)
                .execute(c)
        };
        c.transaction::<(), api_web::error::ApiError, _>(|c| {
            bump(c, first)?;
            gate.wait();
            bump(c, second)?;
            Ok(())
        })
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(1, 2));
        let b = s.spawn(|| run(2, 1));
        (a.join().unwrap(), b.join().unwrap())
    });
    let victim = match (a, b) {
        (Err(e), Ok(())) | (Ok(()), Err(e)) => e,
        other => panic!("expected one deadlock victim: {other:?}"),
    };
    assert!(victim.is_deadlock(), "{victim}");
    assert!(!api_web::error::ApiError::unavailable(
        api_web::error::Backend::Database,
        "MySQL: Lost connection"
    )
    .is_deadlock());
}
