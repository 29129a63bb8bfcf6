//! Test harness: a fresh MySQL database per test, the real app in-process on the real backends
//! (MariaDB, libvirtd, Ceph of scripts/dev-stack.sh), and the `rbd` CLI as an independent witness
//! of what Ceph holds. Run through scripts/test.sh, which brings the stack up and sets the
//! environment; without it every test fails loudly (nothing is skipped).

#![allow(dead_code)]

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::{test, web};
use api_web::config::Config;
use api_web::service::Ctx;
use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection};
use serde_json::Value;
use std::process::Command;

pub fn env(k: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| {
        panic!("{k} is not set: run the tests through scripts/test.sh (it starts the dev stack)")
    })
}

/// Who uses the dev stack now. Every test that uses it holds a shared claim (its `TestDb` holds
/// one); an outage test (tests/it/outages.rs), which kills the stack's daemons, holds it alone.
/// A test already holding a claim gets another at once, so a test that makes two `TestDb`s
/// cannot deadlock behind a waiting outage test; new tests wait while one waits or runs.
struct Gate {
    shared: usize,
    alone: bool,
    waiting_alone: usize,
}

static GATE: std::sync::Mutex<Gate> = std::sync::Mutex::new(Gate {
    shared: 0,
    alone: false,
    waiting_alone: 0,
});
static GATE_TURN: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    /// Claims this test thread holds: shared ones, and whether it holds the stack alone.
    static HELD: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

/// A claim on the dev stack, given back when dropped.
pub struct StackClaim {
    alone: bool,
}

fn gate() -> std::sync::MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A shared claim on the dev stack; `None` for a thread that holds it alone already.
pub fn stack_shared() -> Option<StackClaim> {
    let (shared, alone) = HELD.get();
    if alone {
        return None;
    }
    let mut g = gate();
    if shared == 0 {
        while g.alone || g.waiting_alone > 0 {
            g = GATE_TURN.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
    g.shared += 1;
    HELD.set((shared + 1, false));
    Some(StackClaim { alone: false })
}

/// The dev stack for this test alone: waits until every running test has given its claim back.
pub fn stack_alone() -> StackClaim {
    assert_eq!(
        HELD.get(),
        (0, false),
        "take the stack alone before any other claim"
    );
    let mut g = gate();
    g.waiting_alone += 1;
    while g.alone || g.shared > 0 {
        g = GATE_TURN.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    g.waiting_alone -= 1;
    g.alone = true;
    HELD.set((0, true));
    StackClaim { alone: true }
}

impl Drop for StackClaim {
    fn drop(&mut self) {
        let mut g = gate();
        let (shared, _) = HELD.get();
        if self.alone {
            g.alone = false;
            HELD.set((0, false));
        } else {
            g.shared -= 1;
            HELD.set((shared - 1, false));
        }
        GATE_TURN.notify_all();
    }
}

/// A database of its own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
    server_url: String,
    /// Dropped after the database (fields drop after `Drop::drop`).
    _claim: Option<StackClaim>,
}

impl TestDb {
    pub fn new() -> TestDb {
        let claim = stack_shared();
        let server_url = env("API_WEB_TEST_DATABASE_URL");
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut c = MysqlConnection::establish(&server_url).expect("connect to the test MariaDB");
        c.batch_execute(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .unwrap();
        TestDb {
            url: format!("{server_url}/{name}"),
            name,
            server_url,
            _claim: claim,
        }
    }

    pub fn conn(&self) -> MysqlConnection {
        MysqlConnection::establish(&self.url).unwrap()
    }

    /// Migrated, with the admin key `TEST_KEY` that the request helpers send.
    pub fn migrated() -> TestDb {
        let db = TestDb::new();
        api_web::db::migrate(&mut db.conn()).unwrap();
        install_test_key(&mut db.conn(), TEST_KEY, "admin");
        db
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.server_url.is_empty() {
            return;
        }
        if let Ok(mut c) = MysqlConnection::establish(&self.server_url) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS `{}`", self.name));
        }
    }
}

/// The admin key of every test database (`TestDb::migrated`); the request helpers send it.
pub const TEST_KEY: &str = "awk_7e577e577e577e577e577e577e577e577e577e577e577e577e577e577e577e57";

/// `Authorization: Bearer TEST_KEY`.
pub fn auth() -> (&'static str, String) {
    ("authorization", format!("Bearer {TEST_KEY}"))
}

/// Stores a key with a known secret in the default project (tests only: real keys are random).
pub fn install_test_key(conn: &mut MysqlConnection, secret: &str, role: &str) -> String {
    let key_id = format!("key-{:08x}", rand::random::<u32>());
    api_web::db::auth::insert_key(
        conn,
        &api_web::db::auth::ApiKey {
            key_id: key_id.clone(),
            key_name: format!("test {role}"),
            key_hash: api_web::service::auth::hash(secret),
            role: role.into(),
            project_id: "prj-00000000".into(),
            expire_time: None,
            revoke_time: None,
            create_time: api_web::db::now(),
        },
    )
    .unwrap();
    key_id
}

/// Operations still `running` in the test's database.
pub fn running_operations(t: &TestApp) -> i64 {
    crate::instances::count(
        &t.db,
        "SELECT COUNT(*) AS n FROM operation WHERE status = 'running'",
    )
}

/// The configuration of the dev stack (defaults + the environment scripts/test.sh exports).
pub fn stack_config(db_url: &str) -> Config {
    let mut cfg = Config::default();
    cfg.apply_env(|k| std::env::var(k).ok()).unwrap();
    cfg.database.url = db_url.to_string();
    cfg.database.pool_size = 4;
    cfg.validate().expect("dev stack configuration");
    cfg
}

/// The context with its background loops (operation leases and takeover), as `serve` runs it.
fn started(ctx: Ctx) -> web::Data<Ctx> {
    let ctx = web::Data::new(ctx);
    api_web::service::operations::start_background(&ctx.clone().into_inner());
    ctx
}

pub struct TestApp {
    pub db: TestDb,
    pub ctx: web::Data<Ctx>,
}

impl TestApp {
    pub fn new() -> TestApp {
        Self::with_config(|_| {})
    }

    pub fn with_config(tweak: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::migrated();
        let mut cfg = stack_config(&db.url);
        tweak(&mut cfg);
        TestApp {
            ctx: started(Ctx::new(cfg).unwrap()),
            db,
        }
    }

    /// A second app on the same database: what a restarted (or another) api-web process sees.
    pub fn with_db(other: &TestApp) -> TestApp {
        let cfg = other.ctx.cfg.clone();
        TestApp {
            ctx: started(Ctx::new(cfg).unwrap()),
            db: TestDb {
                name: other.db.name.clone(),
                url: other.db.url.clone(),
                // Only the first owner drops the database.
                server_url: String::new(),
                _claim: stack_shared(),
            },
        }
    }

    /// Removes from libvirt and Ceph whatever this test's rows still name, so that a failing
    /// test leaves no domain, clone or image behind on the shared machine.
    fn clean_backends(&self) {
        use diesel::prelude::*;
        use diesel::sql_types::Text;
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = Text)]
            id: String,
        }
        let Ok(mut c) = MysqlConnection::establish(&self.db.url) else {
            return;
        };
        let ids = |c: &mut MysqlConnection, sql: &str| -> Vec<String> {
            diesel::sql_query(sql)
                .load::<Id>(c)
                .map(|v| v.into_iter().map(|i| i.id).collect())
                .unwrap_or_default()
        };
        // Every resource that owns something in libvirt or Ceph is removed below; a new one
        // fails here until it is added.
        for kind in api_web::service::RESOURCES {
            assert!(
                [
                    "instance",
                    "volume",
                    "image",
                    "network_interface",
                    "operation",
                    "snapshot",
                    "host"
                ]
                .contains(&kind.table),
                "clean_backends does not know what a {} row owns in libvirt or Ceph",
                kind.table
            );
        }
        // A host row owns nothing: its libvirtd belongs to the dev stack.
        // NICs live only in domain XML: undefining the domains removes them.
        // An instance also owns its config drive, an RBD image in the volumes pool.
        // Each instance's domain is on its host (an interrupted migration may leave one on
        // another: every host is asked).
        let uris = ids(&mut c, "SELECT uri AS id FROM host");
        for i in ids(&mut c, "SELECT instance_id AS id FROM instance") {
            for uri in &uris {
                let hv = self.ctx.hosts.get(uri);
                let _ = hv.force_off(&i);
                let _ = hv.undefine(&i);
            }
            let _ = self.ctx.ceph.remove_image(
                &self.ctx.cfg.ceph.volumes_pool,
                &api_web::service::instances::guest::drive_name(&api_web::model::InstanceId::new(
                    i.as_str(),
                )),
            );
        }
        // Snapshots are RBD snapshots of volumes: removing a volume's image removes them.
        for v in ids(&mut c, "SELECT volume_id AS id FROM volume") {
            let _ = self
                .ctx
                .ceph
                .remove_image(&self.ctx.cfg.ceph.volumes_pool, &v);
        }
        for i in ids(&mut c, "SELECT image_id AS id FROM image") {
            let _ = self
                .ctx
                .ceph
                .remove_image(&self.ctx.cfg.ceph.images_pool, &i);
        }
    }

    pub fn images_pool(&self) -> String {
        self.ctx.cfg.ceph.images_pool.clone()
    }
    pub fn volumes_pool(&self) -> String {
        self.ctx.cfg.ceph.volumes_pool.clone()
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub request_id: Option<String>,
}

impl Resp {
    /// Asserts an error answer: HTTP status, stable code, and the envelope's fields.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["error"], code, "{}", self.body);
        assert_eq!(self.body["code"], status, "{}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
        assert_eq!(
            self.body["request_id"].as_str(),
            self.request_id.as_deref(),
            "{}",
            self.body
        );
    }

    /// Asserts success and returns `data`.
    #[track_caller]
    pub fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert_eq!(self.body["code"], 0, "{}", self.body);
        assert_eq!(self.body["message"], "success", "{}", self.body);
        &self.body["data"]
    }
}

/// The app under test, as actix's test service: every helper takes `&impl App`.
pub trait App:
    Service<actix_http::Request, Response = ServiceResponse<Self::Body>, Error = actix_web::Error>
{
    type Body: MessageBody;
}

impl<S, B> App for S
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Body = B;
}

pub async fn send(app: &impl App, req: actix_http::Request) -> Resp {
    let res = test::call_service(app, req).await;
    let status = res.status();
    let request_id = res
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = test::read_body(res).await;
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    Resp {
        status,
        body,
        request_id,
    }
}

pub async fn get(app: &impl App, uri: &str) -> Resp {
    send(
        app,
        test::TestRequest::get()
            .uri(uri)
            .insert_header(auth())
            .to_request(),
    )
    .await
}

pub async fn post(app: &impl App, uri: &str, body: Value) -> Resp {
    send(
        app,
        test::TestRequest::post()
            .uri(uri)
            .insert_header(auth())
            .set_json(body)
            .to_request(),
    )
    .await
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // A second app on the same database leaves the cleaning to the first.
        if !self.db.server_url.is_empty() {
            self.clean_backends();
        }
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `rbd` CLI as admin against the dev cluster: (success, stdout, stderr).
pub fn rbd_out(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("rbd")
        .arg("--conf")
        .arg(env("CEPH_CONF"))
        .args(args)
        .output()
        .expect("run rbd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `rbd` CLI: (success, stdout and stderr together) for messages.
pub fn rbd(args: &[&str]) -> (bool, String) {
    let (ok, out, err) = rbd_out(args);
    (ok, format!("{out}{err}"))
}

#[track_caller]
pub fn rbd_ok(args: &[&str]) -> String {
    let (ok, text) = rbd(args);
    assert!(ok, "rbd {args:?}: {text}");
    text
}

/// Size in bytes of an RBD image, or None if it does not exist.
pub fn rbd_size(spec: &str) -> Option<u64> {
    let (ok, out, err) = rbd_out(&["info", "--format", "json", spec]);
    if !ok {
        assert!(err.contains("No such file"), "rbd info {spec}: {err}");
        return None;
    }
    let v: Value = serde_json::from_str(&out).unwrap();
    v["size"].as_u64()
}

/// A domain's persistent and live XML, parsed (the live one is the persistent one when the
/// domain is not running).
pub fn domain_xmls(
    instance: &str,
) -> (
    api_web::xml::domain::ParsedDomain,
    api_web::xml::domain::ParsedDomain,
) {
    let dump = |inactive: bool| {
        let mut args = vec!["-c".to_string(), env("LIBVIRT_URI"), "dumpxml".to_string()];
        if inactive {
            args.push("--inactive".into());
        }
        args.push(instance.to_string());
        let out = Command::new("virsh").args(&args).output().unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "virsh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        api_web::xml::domain::parse(&xml).unwrap()
    };
    let state = Command::new("virsh")
        .args(["-c", &env("LIBVIRT_URI"), "domstate", instance])
        .output()
        .unwrap();
    let running = String::from_utf8_lossy(&state.stdout).trim() == "running";
    (dump(true), dump(!running))
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
