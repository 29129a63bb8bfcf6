//! Hosts: the configured libvirt.uri is the first host, probed for its facts; a second libvirtd
//! (scripts/dev-stack.sh up --hosts 2) is added by URI, taken into maintenance and removed;
//! its libvirtd killed, it is reported offline (its instance shown unreachable, not lost), and
//! back online when started again; bad URIs, unreachable hosts and a second URI of a known
//! libvirtd are refused. Placement across the two hosts (spread, pins, maintenance, no room),
//! concurrent reservations, live and cold migration there and back with the guest still
//! running, a move made behind api-web's back, and evacuation.

use crate::common::*;
use actix_web::test;
use api_web::api::views::{HostView, InstanceView};
use api_web::api::{self, PageView};
use api_web::service::auth::{self, Role};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn host_of(r: &Resp) -> HostView {
    serde_json::from_value(r.ok().clone()).unwrap()
}

async fn hosts(app: &impl App, query: &str) -> PageView<HostView> {
    let r = get(app, &format!("/api/v1/host/list?{query}")).await;
    serde_json::from_value(r.ok().clone()).unwrap()
}

/// Waits until a probe has reached the host and recorded its facts.
async fn probed(app: &impl App, id: &str) -> HostView {
    until_host(app, id, |h| h.online && h.host_uuid.is_some() && h.cpus > 0).await
}

fn virsh_uuid(uri: &str) -> String {
    let out = std::process::Command::new("virsh")
        .args(["-c", uri, "capabilities"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let a = text.find("<uuid>").expect("capabilities have a uuid") + 6;
    let b = text[a..].find("</uuid>").unwrap() + a;
    text[a..b].to_string()
}

#[actix_web::test]
async fn the_configured_host_comes_first_with_its_facts() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let uri = t.ctx.cfg.libvirt.uri.clone();
    let page = hosts(&app, "").await;
    assert_eq!(page.total, 1, "{:?}", page.items);
    let first = &page.items[0];
    assert!(first.configured);
    assert_eq!(first.uri, uri);
    assert_eq!(first.status.as_str(), "enabled");
    assert_eq!(first.address, t.ctx.cfg.libvirt.host_ip);
    assert!(first.host_id.as_str().starts_with("host-"));

    // The probe fills in what libvirt reports (virsh says the same).
    let h = probed(&app, first.host_id.as_str()).await;
    assert_eq!(h.host_uuid.as_deref(), Some(virsh_uuid(&uri).as_str()));
    assert!(h.memory_mib > 0 && h.memory_free_mib > 0 && h.memory_free_mib <= h.memory_mib);
    assert!(
        h.cpus >= 1 && h.cpu_sockets * h.cpu_cores * h.cpu_threads >= 1,
        "{h:?}"
    );
    assert_eq!(h.arch, "x86_64");
    assert!(h.libvirt_version.starts_with("9."), "{h:?}");
    assert!(!h.qemu_version.is_empty());
    assert!(
        h.machine_types.contains(&t.ctx.cfg.libvirt.machine),
        "{:?}",
        h.machine_types
    );
    assert!(h.last_contact.is_some() && h.error_message.is_none());

    // An instance is recorded on it, and counted there.
    let image = crate::instances::test_image(&app, &t).await;
    let id = crate::instances::create(&app, &image, "on-first").await;
    let i: InstanceView = serde_json::from_value(
        get(&app, &format!("/api/v1/instance/detail?instance_id={id}"))
            .await
            .ok()
            .clone(),
    )
    .unwrap();
    assert_eq!(i.host_id, h.host_id);
    let h = host_of(&get(&app, &format!("/api/v1/host/detail?host_id={}", h.host_id)).await);
    assert_eq!(
        (h.instances, h.allocated_vcpus, h.allocated_memory_mib),
        (1, 1, 256)
    );

    // Maintenance and back; a rename; tags.
    let r = post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": h.host_id, "enabled": false, "host_name": "first", "tags": ["ssd", "rack-1"]}),
    )
    .await;
    let u = host_of(&r);
    assert_eq!(u.status.as_str(), "disabled");
    assert_eq!(u.host_name, "first");
    assert_eq!(u.tags, ["ssd", "rack-1"]);
    assert_eq!(hosts(&app, "status=disabled").await.total, 1);
    assert_eq!(hosts(&app, "status=enabled").await.total, 0);
    assert_eq!(hosts(&app, "filter_name=fir").await.total, 1);
    let r = post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": h.host_id, "enabled": true}),
    )
    .await;
    assert_eq!(host_of(&r).status.as_str(), "enabled");

    // The configured host is not removed (instances are created there), nor one with instances.
    let r = post(&app, "/api/v1/host/remove", json!({"host_id": h.host_id})).await;
    r.assert_error(409, "host_in_use");

    // Refused: not a QEMU system URI; the URI known already; a second URI of the same
    // libvirtd (found by its host UUID); one that does not answer; an unknown id.
    for bad in [
        "10.0.0.2",
        "xen:///system",
        "qemu:///session",
        "test:///default",
    ] {
        post(&app, "/api/v1/host/add", json!({"uri": bad}))
            .await
            .assert_error(400, "invalid_param");
    }
    post(&app, "/api/v1/host/add", json!({"uri": uri}))
        .await
        .assert_error(409, "host_exists");
    let r = post(
        &app,
        "/api/v1/host/add",
        json!({"uri": "qemu+unix:///system?socket=/run/libvirt/libvirt-sock", "host_name": "again"}),
    )
    .await;
    r.assert_error(409, "host_exists");
    assert!(
        r.body["message"].as_str().unwrap().contains("host UUID"),
        "{}",
        r.body
    );
    let started = Instant::now();
    let r = post(
        &app,
        "/api/v1/host/add",
        json!({"uri": "qemu+tcp://127.0.0.1:1/system"}),
    )
    .await;
    r.assert_error(422, "host_unreachable");
    assert!(started.elapsed() < Duration::from_secs(16));
    assert_eq!(hosts(&app, "").await.total, 1, "nothing recorded");
    get(&app, "/api/v1/host/detail?host_id=host-00000000")
        .await
        .assert_error(404, "host_not_found");
    post(
        &app,
        "/api/v1/host/add",
        json!({"uri": "qemu+tcp://127.0.0.1:1/system", "tags": [""]}),
    )
    .await
    .assert_error(400, "invalid_param");

    // Members see no hosts.
    let member = member_key(&t);
    let req = test::TestRequest::get()
        .uri("/api/v1/host/list")
        .insert_header(("authorization", format!("Bearer {member}")))
        .to_request();
    send(&app, req).await.assert_error(403, "forbidden");

    // Destroyed once built: a create still building when the test ends would define its
    // domain after the cleanup, left behind on the shared host.
    crate::instances::wait_created(&app, &id).await;
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
    crate::instances::drop_image(&app, &image).await;
}

/// A member's API key in project "default" (members may not see hosts or pin instances).
fn member_key(t: &TestApp) -> String {
    auth::create_key(
        &mut t.ctx.conn().unwrap(),
        "m",
        Role::Member,
        "default",
        None,
    )
    .unwrap()
    .secret
}

/// Runs scripts/dev-stack.sh (to stop or start an extra host).
fn dev_stack(args: &[&str]) {
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/dev-stack.sh"))
            .args(args)
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "dev-stack.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host once `ok` holds for it (probes run every 5 s; within 20 s).
async fn until_host(app: &impl App, id: &str, ok: impl Fn(&HostView) -> bool) -> HostView {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let h = host_of(&get(app, &format!("/api/v1/host/detail?host_id={id}")).await);
        if ok(&h) {
            return h;
        }
        assert!(Instant::now() < until, "host never got there: {h:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An instance's status and `host_status`, as instance/list shows them (instance/detail says
/// the same).
async fn shown(app: &impl App, id: &str) -> (String, String) {
    let l = get(app, "/api/v1/instance/list?page_size=100").await;
    let i = l.ok()["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance_id"] == id)
        .unwrap_or_else(|| panic!("{id} listed: {}", l.body))
        .clone();
    let d = get(app, &format!("/api/v1/instance/detail?instance_id={id}")).await;
    assert_eq!(d.ok()["host_status"], i["host_status"], "{}", d.body);
    (
        i["status"].as_str().unwrap().to_string(),
        i["host_status"].as_str().unwrap().to_string(),
    )
}

/// The first extra libvirtd of the dev stack (`up --hosts 2`).
fn second_host_uri() -> String {
    let uris = env("API_WEB_EXTRA_HOST_URIS");
    uris.split_whitespace()
        .next()
        .unwrap_or_else(|| {
            panic!("no extra host: run scripts/dev-stack.sh up --hosts 2 (scripts/test.sh does)")
        })
        .to_string()
}

#[actix_web::test]
async fn a_second_host_is_added_by_uri_and_removed_when_empty() {
    // It kills the second libvirtd, which the placement tests use.
    let _alone = stack_alone();
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let uri = second_host_uri();
    let first = hosts(&app, "").await.items.remove(0);
    let r = post(
        &app,
        "/api/v1/host/add",
        json!({"uri": uri, "host_name": "second", "tags": ["rack-2"], "enabled": false}),
    )
    .await;
    let h = host_of(&r);
    // Its facts are read at once; it is its own libvirtd (another host UUID).
    assert!(h.online, "{h:?}");
    assert!(!h.configured);
    assert_eq!(h.status.as_str(), "disabled");
    assert_eq!(h.host_name, "second");
    assert_eq!(h.address, "127.0.0.1");
    assert_eq!(h.tags, ["rack-2"]);
    assert_eq!(h.host_uuid.as_deref(), Some(virsh_uuid(&uri).as_str()));
    assert_ne!(
        h.host_uuid,
        probed(&app, first.host_id.as_str()).await.host_uuid
    );
    assert!(h.cpus > 0 && h.memory_mib > 0 && !h.machine_types.is_empty());
    assert_eq!(h.instances, 0);

    let page = hosts(&app, "").await;
    assert_eq!(page.total, 2);
    // The same libvirtd by its socket, added twice at once: refused both times by its host
    // UUID (the one registered by TCP above), nothing recorded.
    let socket = format!(
        "qemu+unix:///system?socket={}/hosts/h2/run/libvirt-sock",
        env("API_WEB_STACK_DIR")
    );
    let (a, b) = futures_util::future::join(
        post(
            &app,
            "/api/v1/host/add",
            json!({"uri": socket, "host_name": "by-socket-a"}),
        ),
        post(
            &app,
            "/api/v1/host/add",
            json!({"uri": socket.replace("?", "?no_verify=1&"), "host_name": "by-socket-b"}),
        ),
    )
    .await;
    a.assert_error(409, "host_exists");
    b.assert_error(409, "host_exists");
    assert_eq!(hosts(&app, "").await.total, 2);
    // Again, under another name: the same URI.
    post(
        &app,
        "/api/v1/host/add",
        json!({"uri": uri, "host_name": "other"}),
    )
    .await
    .assert_error(409, "host_exists");
    // Renaming the first to the second's name.
    post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": first.host_id, "host_name": "second"}),
    )
    .await
    .assert_error(409, "host_exists");

    // The probe keeps it current.
    let before = h.last_contact.unwrap();
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let now = host_of(&get(&app, &format!("/api/v1/host/detail?host_id={}", h.host_id)).await);
        if now.last_contact.unwrap() > before {
            assert!(now.online);
            break;
        }
        assert!(Instant::now() < until, "no probe recorded");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // An instance there (pinned: the host is in maintenance), shown with its host's state.
    let image = crate::instances::test_image(&app, &t).await;
    let on = instance_of(&create_on(&app, &image, "on-second", Some(h.host_id.as_str())).await);
    let on = on.instance_id.to_string();
    assert_eq!(
        crate::instances::wait_created(&app, &on).await["status"],
        "running"
    );
    assert_eq!(
        shown(&app, &on).await,
        ("running".into(), "maintenance".into())
    );

    // Its libvirtd dies: the probe reports it offline with libvirt's reason, the facts as last
    // read; started again, it is back online by itself.
    dev_stack(&["kill", "host2"]);
    let killed = Instant::now();
    let down = until_host(&app, h.host_id.as_str(), |h| !h.online).await;
    eprintln!(
        "host offline {:?} after its libvirtd was killed",
        killed.elapsed()
    );
    assert!(down.error_message.is_some(), "{down:?}");
    assert_eq!(down.host_uuid, h.host_uuid);
    assert!(down.cpus > 0);
    // Its instance is unreachable, not lost: its row stays running, a call on it answers 503
    // (nothing changed), the reconciliation pass skips the host and names it instead of
    // marking the instance error.
    assert_eq!(
        shown(&app, &on).await,
        ("running".into(), "unreachable".into())
    );
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": on, "force": true}),
    )
    .await
    .assert_error(503, "libvirt_unavailable");
    let r = api_web::service::reconcile::pass(&t.ctx).unwrap();
    assert!(
        r.hosts_skipped.iter().any(|(id, _)| *id == h.host_id),
        "{r:#?}"
    );
    assert!(r.unrepaired.iter().all(|f| f.id != on), "{r:#?}");
    assert_eq!(
        shown(&app, &on).await,
        ("running".into(), "unreachable".into())
    );
    dev_stack(&["up", "--hosts", "2"]);
    let started = Instant::now();
    let up = until_host(&app, h.host_id.as_str(), |h| h.online).await;
    eprintln!(
        "host online {:?} after its libvirtd was started",
        started.elapsed()
    );
    assert!(up.error_message.is_none(), "{up:?}");
    // Its guest ran on through the outage (QEMU outlives libvirtd) and is reachable again.
    assert_eq!(
        shown(&app, &on).await,
        ("running".into(), "maintenance".into())
    );
    assert_eq!(domstate(&uri, &on).as_deref(), Some("running"));
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": on}))
        .await
        .ok();
    crate::instances::drop_image(&app, &image).await;

    let r = post(&app, "/api/v1/host/remove", json!({"host_id": h.host_id})).await;
    assert_eq!(r.ok()["host_id"], h.host_id.as_str());
    get(&app, &format!("/api/v1/host/detail?host_id={}", h.host_id))
        .await
        .assert_error(404, "host_not_found");
    post(&app, "/api/v1/host/remove", json!({"host_id": h.host_id}))
        .await
        .assert_error(404, "host_not_found");
    assert_eq!(hosts(&app, "").await.total, 1);

    // Added again by TCP and by socket at once: one host, whichever wins; the other is refused.
    let (a, b) = futures_util::future::join(
        post(
            &app,
            "/api/v1/host/add",
            json!({"uri": uri, "host_name": "by-tcp"}),
        ),
        post(
            &app,
            "/api/v1/host/add",
            json!({"uri": socket, "host_name": "by-socket"}),
        ),
    )
    .await;
    let won: Vec<&Resp> = [&a, &b].into_iter().filter(|r| r.status == 200).collect();
    assert_eq!(won.len(), 1, "{} / {}", a.body, b.body);
    let lost = if a.status == 200 { &b } else { &a };
    assert_eq!(
        (lost.status.as_u16(), lost.body["error"].as_str()),
        (409, Some("host_exists")),
        "{} / {}",
        a.body,
        b.body
    );
    let page = hosts(&app, "").await;
    assert_eq!(page.total, 2);
    let id = won[0].body["data"]["host_id"].as_str().unwrap().to_string();
    post(&app, "/api/v1/host/remove", json!({"host_id": id}))
        .await
        .ok();
}

/// `virsh -c uri domstate name`, or `None` when the host has no such domain.
fn domstate(uri: &str, name: &str) -> Option<String> {
    let out = std::process::Command::new("virsh")
        .args(["-c", uri, "domstate", name])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the host row has reserved: (vcpus_used, memory_used_mib).
fn reserved(t: &TestApp, id: &str) -> (u32, u64) {
    let h = api_web::service::load::<api_web::db::hosts::Host>(
        &mut t.ctx.conn().unwrap(),
        &api_web::model::HostId::new(id),
    )
    .unwrap();
    (h.vcpus_used, h.memory_used_mib)
}

async fn create_on(app: &impl App, image: &str, name: &str, pin: Option<&str>) -> Resp {
    let mut body = json!({"instance_name": name, "image_id": image, "cpu": 1, "memory": 256});
    if let Some(h) = pin {
        body["host_id"] = json!(h);
    }
    post(app, "/api/v1/instance/create", body).await
}

fn instance_of(r: &Resp) -> InstanceView {
    serde_json::from_value(r.ok().clone()).unwrap()
}

/// Two hosts with room for two 1-vCPU instances each (their capacity set by an admin: both
/// libvirtds report this one machine): spread puts the first two on different hosts, every
/// operation then goes to the instance's own host; a pin past a host's room, a host in
/// maintenance and full hosts are refused with the reason per host; destroys give the room
/// back.
#[actix_web::test]
async fn instances_are_placed_across_hosts_pinned_and_kept_off_hosts_in_maintenance() {
    let t = TestApp::with_config(|c| {
        c.placement.cpu_allocation_ratio = 1.0;
        c.placement.memory_allocation_ratio = 1.0;
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let uri2 = second_host_uri();
    let first = hosts(&app, "").await.items.remove(0);
    let r = post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": first.host_id, "cpu_capacity": 2, "memory_capacity_mib": 1024}),
    )
    .await;
    let f = host_of(&r);
    assert_eq!((f.vcpus_limit, f.memory_limit_mib), (2, 1024));
    let r = post(
        &app,
        "/api/v1/host/add",
        json!({"uri": uri2, "host_name": "second", "cpu_capacity": 2, "memory_capacity_mib": 1024}),
    )
    .await;
    let second = host_of(&r);
    assert!(
        second.bridges.contains(&t.ctx.cfg.network.default_bridge),
        "{second:?}"
    );
    let image = crate::instances::test_image(&app, &t).await;

    // Spread: one on each host.
    let a = instance_of(&create_on(&app, &image, "a", None).await);
    let b = instance_of(&create_on(&app, &image, "b", None).await);
    let mut placed = [a.host_id.to_string(), b.host_id.to_string()];
    placed.sort();
    let mut both = [first.host_id.to_string(), second.host_id.to_string()];
    both.sort();
    assert_eq!(placed, both, "spread placed both on one host");
    let (on2, on1) = if b.host_id == second.host_id {
        (b.clone(), a.clone())
    } else {
        (a.clone(), b.clone())
    };
    for i in [&a, &b] {
        let p = crate::instances::wait_created(&app, i.instance_id.as_str()).await;
        assert_eq!(p["status"], "running", "{p}");
    }
    // Each domain is on its own host only.
    let uri1 = t.ctx.cfg.libvirt.uri.clone();
    let id2 = on2.instance_id.as_str();
    assert_eq!(domstate(&uri2, id2).as_deref(), Some("running"));
    assert_eq!(domstate(&uri1, id2), None);
    assert_eq!(domstate(&uri2, on1.instance_id.as_str()), None);
    assert_eq!(reserved(&t, second.host_id.as_str()), (1, 256));
    // Power goes to the second host.
    let r = post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": id2, "force": true}),
    )
    .await;
    assert_eq!(r.ok()["status"], "stopped");
    assert_eq!(domstate(&uri2, id2).as_deref(), Some("shut off"));
    // A change behind api-web's back on the second host reaches the row (its events, or the
    // reconciliation pass, which reads every host).
    let (ok, _) = (
        std::process::Command::new("virsh")
            .args(["-c", &uri2, "start", id2])
            .status()
            .unwrap()
            .success(),
        (),
    );
    assert!(ok);
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let d = get(&app, &format!("/api/v1/instance/detail?instance_id={id2}")).await;
        if d.ok()["status"] == "running" {
            break;
        }
        if Instant::now() > until {
            api_web::service::reconcile::pass(&t.ctx).unwrap();
        }
        assert!(
            Instant::now() < until + Duration::from_secs(2),
            "never running: {}",
            d.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A pin past the host's room: 1 of 2 vCPUs free, 2 asked.
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({"instance_name": "big", "image_id": image, "cpu": 2, "memory": 256, "host_id": second.host_id}),
    )
    .await;
    r.assert_error(409, "no_valid_host");
    let msg = r.body["message"].as_str().unwrap().to_string();
    assert!(msg.contains("1 of 2 vCPUs free"), "{msg}");
    // Only admins pin.
    let member = member_key(&t);
    let req = test::TestRequest::post()
        .uri("/api/v1/instance/create")
        .insert_header(("authorization", format!("Bearer {member}")))
        .set_json(json!({"instance_name": "p", "image_id": image, "cpu": 1, "memory": 256, "host_id": second.host_id}))
        .to_request();
    send(&app, req).await.assert_error(403, "forbidden");

    // Maintenance: nothing new on the second host; the next goes to the first, then no room.
    post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": second.host_id, "enabled": false}),
    )
    .await
    .ok();
    let c = instance_of(&create_on(&app, &image, "c", None).await);
    assert_eq!(c.host_id, first.host_id);
    let r = create_on(&app, &image, "d", None).await;
    r.assert_error(409, "no_valid_host");
    let msg = r.body["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("disabled (maintenance)") && msg.contains("0 of 2 vCPUs free"),
        "{msg}"
    );
    assert_eq!(reserved(&t, first.host_id.as_str()), (2, 512));
    // An admin may still pin onto a host in maintenance (room permitting).
    let pinned = instance_of(&create_on(&app, &image, "e", Some(second.host_id.as_str())).await);
    assert_eq!(pinned.host_id, second.host_id);
    assert_eq!(reserved(&t, second.host_id.as_str()), (2, 512));

    for i in [&a, &b, &c, &pinned] {
        let id = i.instance_id.as_str();
        let p = crate::instances::wait_created(&app, id).await;
        assert_eq!(p["status"], "running", "{p}");
        post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
            .await
            .ok();
    }
    assert_eq!(domstate(&uri2, id2), None, "destroyed on its host");
    assert_eq!(reserved(&t, first.host_id.as_str()), (0, 0));
    assert_eq!(reserved(&t, second.host_id.as_str()), (0, 0));
    let r = post(
        &app,
        "/api/v1/host/remove",
        json!({"host_id": second.host_id}),
    )
    .await;
    r.ok();
}

/// Reservations are compare-and-sets in MySQL: 24 placements at once (each on its own
/// connection, as from several replicas) onto hosts with room for 5 and 3 take exactly 8.
#[actix_web::test]
async fn concurrent_placements_never_overcommit_a_host() {
    // No periodic pass: the test runs one itself, below.
    let t = TestApp::with_config(|c| {
        c.placement.cpu_allocation_ratio = 1.0;
        c.operations.reconcile_interval_secs = 600;
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let first = hosts(&app, "").await.items.remove(0);
    post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": first.host_id, "cpu_capacity": 5}),
    )
    .await
    .ok();
    let second = host_of(
        &post(
            &app,
            "/api/v1/host/add",
            json!({"uri": second_host_uri(), "cpu_capacity": 3}),
        )
        .await,
    );
    probed(&app, first.host_id.as_str()).await;
    let need = api_web::service::placement::Need {
        vcpus: 1,
        memory_mib: 64,
        bridges: vec![],
    };
    let got: Vec<Option<String>> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..24)
            .map(|_| {
                s.spawn(|| {
                    let mut c = t.ctx.conn().unwrap();
                    // The reservation with the row it stands for, as instance create does.
                    api_web::service::quotas::in_transaction(&mut c, |c| {
                        let h = api_web::service::placement::reserve(&t.ctx, c, &need, None)?;
                        let form = api_web::db::instances::InstanceForm {
                            instance_id: api_web::model::InstanceId::generate(),
                            instance_name: "placed".into(),
                            status: api_web::model::InstanceStatus::Creating,
                            host_ip: h.address.clone(),
                            host_id: h.host_id.clone(),
                            cpu: need.vcpus,
                            memory: need.memory_mib,
                            image_id: api_web::model::ImageId::new("img-00000000"),
                            root_size: None,
                            describe: String::new(),
                            progress_step: "queued".into(),
                            create_time: 0,
                            project_id: "default".into(),
                        };
                        api_web::db::instances::insert(c, &form)?;
                        Ok(h)
                    })
                    .ok()
                    .map(|h| h.host_id.to_string())
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let on = |id: &str| got.iter().filter(|g| g.as_deref() == Some(id)).count();
    assert_eq!(on(first.host_id.as_str()), 5, "{got:?}");
    assert_eq!(on(second.host_id.as_str()), 3, "{got:?}");
    assert_eq!(reserved(&t, first.host_id.as_str()), (5, 320));
    assert_eq!(reserved(&t, second.host_id.as_str()), (3, 192));
    // A reservation changed behind api-web's back: a reconciliation pass sets it back to its
    // instance rows' sum and counts the repair (a pass may also run by itself meanwhile).
    let repairs_before = t.ctx.reconciler.repairs.load(Ordering::Relaxed);
    diesel::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE host SET vcpus_used = 0, memory_used_mib = 9999 WHERE host_id = '{}'",
            first.host_id
        )),
        &mut *t.ctx.conn().unwrap(),
    )
    .unwrap();
    let r = api_web::service::reconcile::pass(&t.ctx).unwrap();
    let repairs = t.ctx.reconciler.repairs.load(Ordering::Relaxed) - repairs_before;
    assert_eq!(repairs, 1, "{r:#?}");
    assert_eq!(reserved(&t, first.host_id.as_str()), (5, 320));
    // The rows go (they name no domain), and their reservations with them.
    diesel::RunQueryDsl::execute(
        diesel::sql_query("DELETE FROM instance"),
        &mut *t.ctx.conn().unwrap(),
    )
    .unwrap();
    api_web::service::reconcile::pass(&t.ctx).unwrap();
    assert_eq!(reserved(&t, first.host_id.as_str()), (0, 0));
    assert_eq!(reserved(&t, second.host_id.as_str()), (0, 0));
    post(
        &app,
        "/api/v1/host/remove",
        json!({"host_id": second.host_id}),
    )
    .await
    .ok();
}

/// The instance's host, from its row.
fn host_id_of(t: &TestApp, id: &str) -> String {
    api_web::service::load::<api_web::db::instances::Instance>(
        &mut t.ctx.conn().unwrap(),
        &api_web::model::InstanceId::new(id),
    )
    .unwrap()
    .host_id
    .to_string()
}

/// Waits until the instance is no longer `migrating`; returns its progress view.
async fn migrated(app: &impl App, id: &str) -> serde_json::Value {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let p = get(app, &format!("/api/v1/instance/progress?instance_id={id}")).await;
        let p = p.ok().clone();
        if p["status"] != "migrating" {
            return p;
        }
        assert!(Instant::now() < end, "still migrating: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A booted guest migrates live to the second host (peer-to-peer: a TCP URI) and back
/// (managed: the configured host's URI is a local socket), keeps running, and its console keeps
/// answering on the target: a volume mounted there (the mount goes to its new host) shows up in
/// the guest's report. Stopped, it moves cold. Both hosts' XML, the rows and the reservations
/// agree after each move; a host with it is emptied by host/evacuate.
#[actix_web::test]
async fn a_booted_guest_migrates_live_and_back_and_a_host_is_evacuated() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let uri1 = t.ctx.cfg.libvirt.uri.clone();
    let uri2 = second_host_uri();
    let first = hosts(&app, "").await.items.remove(0);
    let second = host_of(
        &post(
            &app,
            "/api/v1/host/add",
            json!({"uri": uri2, "host_name": "second"}),
        )
        .await,
    );
    let image = crate::instances::test_image(&app, &t).await;
    let i = instance_of(&create_on(&app, &image, "mover", Some(first.host_id.as_str())).await);
    let id = i.instance_id.to_string();
    assert_eq!(
        crate::instances::wait_created(&app, &id).await["status"],
        "running"
    );
    crate::instances::wait_console(&app, &id, "API-WEB-GUEST-REPORT 1").await;

    // Live to the second host.
    let t0 = Instant::now();
    let r = post(
        &app,
        "/api/v1/instance/migrate",
        json!({"instance_id": id, "target_host_id": second.host_id}),
    )
    .await;
    assert_eq!(r.ok()["status"], "migrating", "{}", r.body);
    let p = migrated(&app, &id).await;
    eprintln!("live migration to the second host took {:?}", t0.elapsed());
    assert_eq!(p["status"], "running", "{p}");
    assert_eq!(host_id_of(&t, &id), second.host_id.as_str(), "{p}");
    assert_eq!(domstate(&uri2, &id).as_deref(), Some("running"));
    assert_eq!(domstate(&uri1, &id), None, "undefined on the source");
    assert_eq!(reserved(&t, second.host_id.as_str()), (1, 256));
    assert_eq!(reserved(&t, first.host_id.as_str()), (0, 0));
    // The guest runs on: a volume mounted now (on its new host) shows in its next report.
    let vol = crate::volumes::new_volume(&app, "after-move", 1).await;
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": id}),
    )
    .await
    .ok();
    crate::instances::wait_console(&app, &id, "API-WEB-GUEST-REPORT 2").await;
    let out = crate::instances::wait_console(&app, &id, &format!("serial={vol}")).await;
    assert!(
        out.contains("API-WEB-GUEST-BOOTED"),
        "one console across both hosts"
    );

    // Back, live (placement picks the only other host).
    let r = post(&app, "/api/v1/instance/migrate", json!({"instance_id": id})).await;
    r.ok();
    let p = migrated(&app, &id).await;
    assert_eq!(p["status"], "running", "{p}");
    assert_eq!(host_id_of(&t, &id), first.host_id.as_str(), "{p}");
    assert_eq!(domstate(&uri1, &id).as_deref(), Some("running"));
    assert_eq!(domstate(&uri2, &id), None);
    let r = api_web::service::reconcile::pass(&t.ctx).unwrap();
    assert!(
        r.unrepaired.iter().all(|f| f.id != id),
        "drift after migrating: {r:#?}"
    );

    // Moved behind api-web's back (virsh migrate --live): the row follows to where the domain
    // runs (libvirt's events, or the pass that reads every host), with its reservation.
    let ok = std::process::Command::new("virsh")
        .args([
            "-c",
            &uri1,
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            &id,
            &uri2,
            "--migrateuri",
            "tcp://127.0.0.1",
            "--listen-address",
            "127.0.0.1",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "virsh migrate");
    let until = Instant::now() + Duration::from_secs(15);
    while host_id_of(&t, &id) != second.host_id.as_str() {
        if Instant::now() > until - Duration::from_secs(5) {
            api_web::service::reconcile::pass(&t.ctx).unwrap();
        }
        assert!(Instant::now() < until, "the row never followed the domain");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={id}")).await;
    assert_eq!(d.ok()["status"], "running", "{}", d.body);
    assert_eq!(reserved(&t, second.host_id.as_str()), (1, 256));
    assert_eq!(reserved(&t, first.host_id.as_str()), (0, 0));
    post(&app, "/api/v1/instance/migrate", json!({"instance_id": id}))
        .await
        .ok();
    assert_eq!(migrated(&app, &id).await["status"], "running");
    assert_eq!(host_id_of(&t, &id), first.host_id.as_str());

    // Refused: to where it is.
    post(
        &app,
        "/api/v1/instance/migrate",
        json!({"instance_id": id, "target_host_id": first.host_id}),
    )
    .await
    .assert_error(400, "invalid_param");

    // Stopped: it moves cold, and starts on the second host.
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await
    .ok();
    post(&app, "/api/v1/instance/migrate", json!({"instance_id": id}))
        .await
        .ok();
    let p = migrated(&app, &id).await;
    assert_eq!(p["status"], "stopped", "{p}");
    assert_eq!(domstate(&uri2, &id).as_deref(), Some("shut off"));
    assert_eq!(domstate(&uri1, &id), None);
    let r = post(&app, "/api/v1/instance/turnon", json!({"instance_id": id})).await;
    assert_eq!(r.ok()["status"], "running");
    assert_eq!(domstate(&uri2, &id).as_deref(), Some("running"));

    // Evacuation: the second host in maintenance, then emptied (live, to the first).
    post(
        &app,
        "/api/v1/host/update",
        json!({"host_id": second.host_id, "enabled": false}),
    )
    .await
    .ok();
    let r = post(
        &app,
        "/api/v1/host/evacuate",
        json!({"host_id": second.host_id}),
    )
    .await;
    let e = r.ok().clone();
    assert_eq!(e["instances"][0]["instance_id"], id.as_str(), "{e}");
    assert_eq!(e["instances"][0]["host_id"], first.host_id.as_str(), "{e}");
    assert_eq!(
        host_of(
            &get(
                &app,
                &format!("/api/v1/host/detail?host_id={}", second.host_id)
            )
            .await
        )
        .instances,
        0
    );
    assert_eq!(domstate(&uri1, &id).as_deref(), Some("running"));
    post(
        &app,
        "/api/v1/host/remove",
        json!({"host_id": second.host_id}),
    )
    .await
    .ok();
    post(&app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
}
