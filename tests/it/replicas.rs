//! Several api-web replicas on one database, as behind the README's nginx example: two real
//! api-web processes (the binary, `serve`) share one `api_web` database. Either answers any
//! request about what the other made, and when one is killed (SIGKILL) in the middle of an
//! instance create, the other takes the create over once its lease runs out and undoes it.
//!
//! The test process's own context (it imports the image and reads the database) is kept out of
//! the way: its takeover and reconciliation loops wait an hour, so only the surviving replica
//! can be the one that settles the killed create.

use crate::common::*;
use crate::instances::{count, domain_exists, drop_image, test_image};
use crate::operations::ApiWeb;
use actix_web::test;
use api_web::api;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// `instance/progress` through a replica until `done` holds (at most `secs`); the last answer.
fn wait_on(replica: &ApiWeb, id: &str, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let p = replica
            .call(
                "GET",
                &format!("/api/v1/instance/progress?instance_id={id}"),
                "",
            )
            .expect("the replica answers");
        if done(&p["data"]) {
            return p["data"].clone();
        }
        assert!(Instant::now() < end, "after {secs} s: {p}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_via(replica: &ApiWeb, image: &str, name: &str) -> String {
    let body = json!({"instance_name": name, "image_id": image, "cpu": 1, "memory": 128});
    let r = replica
        .call("POST", "/api/v1/instance/create", &body.to_string())
        .expect("create answers");
    r["data"]["instance_id"]
        .as_str()
        .unwrap_or_else(|| panic!("create refused: {r}"))
        .to_string()
}

#[actix_web::test]
async fn two_replicas_answer_for_each_other_and_one_killed_mid_create_is_covered() {
    let t = TestApp::with_config(|c| {
        c.operations.lease_secs = 3600;
        c.operations.takeover_interval_secs = 3600;
        c.operations.reconcile_interval_secs = 3600;
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    // Replica A holds every create at its "starting" step (domain defined, disks made, NIC
    // reserved); replica B runs as shipped.
    let a = ApiWeb::start(&t, "instance.create:starting=sleep(120000)");
    let b = ApiWeb::start(&t, "");

    // What B makes, A answers for: in its list and its detail, while it builds and once it runs.
    let made_by_b = create_via(&b, &image, "made-by-b");
    let listed = a
        .call("GET", "/api/v1/instance/list?page_size=100", "")
        .unwrap();
    assert!(
        listed["data"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance_id"] == made_by_b.as_str()),
        "A lists B's instance: {listed}"
    );
    let d = wait_on(&a, &made_by_b, 120, |d| d["status"] != "creating");
    assert_eq!(d["status"], "running", "{d}");

    // A accepts a create and is killed half-way; B, which never saw the request, settles it.
    let killed = create_via(&a, &image, "killed-with-a");
    wait_on(&b, &killed, 60, |d| d["step"] == "starting");
    assert!(domain_exists(&killed));
    let a_owner = format!("/{}/", a.pid());
    drop(a); // SIGKILL
    let t0 = Instant::now();
    let d = wait_on(&b, &killed, 60, |d| d["status"] != "creating");
    let took = t0.elapsed();
    let ops = api_web::config::Config::default().operations;
    let bound = Duration::from_secs(ops.lease_secs + ops.takeover_interval_secs + 5);
    assert!(took <= bound, "settled after {took:?} (bound {bound:?})");
    assert_eq!(d["status"], "error", "{d}");
    let msg = d["error_message"].as_str().unwrap_or_default();
    assert!(msg.contains("api-web stopped while creating"), "{msg}");
    assert!(
        !domain_exists(&killed),
        "the killed create's domain is undone"
    );
    let log = b.log_text();
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!("instance.create of {killed}")) && l.contains("taking it over")
        })
        .unwrap_or_else(|| panic!("B took the create over; B's log:\n{log}"));
    assert!(line.contains(&a_owner), "from A ({a_owner}): {line}");
    println!("replica killed mid-create: the other settled it after {took:?}");

    // B goes on serving: both destroyed through it, nothing left of either.
    for id in [&made_by_b, &killed] {
        let r = b
            .call(
                "POST",
                "/api/v1/instance/destroy",
                &json!({"instance_id": id}).to_string(),
            )
            .unwrap();
        assert_eq!(r["code"], 0, "{r}");
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 0);
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 0);
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        0
    );
    drop(b);
    drop_image(&app, &image).await;
}
