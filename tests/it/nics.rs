//! NICs on the real stack: bridge NICs hot-plugged into booted TCG guests, seen by the guest by
//! their MAC.

use crate::client::{client, Client};
use crate::common::*;
use crate::instances::{count, create, drop_image, test_image, wait_console, wait_created};
use actix_web::test;
use api_web::api;
use api_web::api::views::NicView;
use serde_json::{json, Value};
use std::collections::BTreeSet;

async fn new_nic(app: &impl App, body: Value) -> Value {
    let r = post(app, "/api/v1/network/create", body).await;
    r.ok().clone()
}

/// MACs in a domain's persistent and live XML.
fn macs(instance: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (p, l) = domain_xmls(instance);
    let of = |d: api_web::xml::domain::ParsedDomain| {
        d.devices
            .interface
            .into_iter()
            .filter_map(|i| i.mac.map(|m| m.address.to_lowercase()))
            .collect()
    };
    (of(p), of(l))
}

/// Three NICs: drawn from the pool, on a named bridge, and with a given MAC and IP.
async fn three_nics(c: &Client<impl App>) -> [NicView; 3] {
    let a = c
        .nic_create(json!({"network_interface_name": "eth <a>"}))
        .await
        .good();
    let b = c
        .nic_create(json!({"network_interface_name": "b", "bridge": "apiwebbr0"}))
        .await
        .good();
    let given = c
        .nic_create(json!({"network_interface_name": "c", "mac": "0A-70-69-AA-BB-CC", "ip": "10.77.0.100", "describe": "given"}))
        .await
        .good();
    [a, b, given]
}

#[actix_web::test]
async fn nic_create_draws_mac_and_ip_or_takes_the_given_ones() {
    let t = TestApp::new();
    let c = client(&t).await;
    let [a, b, given] = three_nics(&c).await;
    assert!(a.network_interface_id.as_str().starts_with("eni-"));
    assert!(
        a.mac.starts_with("0a:70:69:") && a.mac.len() == 17,
        "{}",
        a.mac
    );
    assert_eq!(a.ip.as_deref(), Some("10.77.0.10"));
    assert_eq!(a.bridge, "apiwebbr0");
    assert_eq!(a.status.as_str(), "available");
    assert_eq!(b.ip.as_deref(), Some("10.77.0.11"));
    assert_eq!(given.mac, "0a:70:69:aa:bb:cc");
    assert_eq!(given.ip.as_deref(), Some("10.77.0.100"));
}

#[actix_web::test]
async fn nic_create_refuses_bad_input_and_taken_addresses() {
    let t = TestApp::new();
    let c = client(&t).await;
    three_nics(&c).await;
    let bad: Vec<(Value, u16, &str)> = vec![
        (
            json!({"network_interface_name": "x", "mac": "zz:70:69:aa:bb:cc"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "mac": "0a:70:69:aa:bb"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "mac": "01:00:5e:00:00:01"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "mac": "ff:ff:ff:ff:ff:ff"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "mac": "0a:70:69:aa:bb:cc"}),
            409,
            "mac_in_use",
        ),
        (
            json!({"network_interface_name": "x", "ip": "10.77.0.100"}),
            409,
            "ip_in_use",
        ),
        (
            json!({"network_interface_name": "x", "ip": "10.78.0.1"}),
            409,
            "ip_outside_pool",
        ),
        (
            json!({"network_interface_name": "x", "ip": "10.77.0.999"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "bridge": "br-unknown"}),
            422,
            "bridge_not_allowed",
        ),
        (
            json!({"network_interface_name": "x", "bridge": "a-very-long-bridge"}),
            400,
            "invalid_param",
        ),
        (
            json!({"network_interface_name": "x", "bridge": "br 0"}),
            400,
            "invalid_param",
        ),
        (json!({"network_interface_name": ""}), 400, "invalid_param"),
        (
            json!({"network_interface_name": "x", "vlan": 5}),
            400,
            "invalid_param",
        ),
    ];
    for (body, status, code) in bad {
        let r = c.nic_create(body.clone()).await;
        assert_eq!(r.resp.status.as_u16(), status, "{body}: {}", r.resp.body);
        r.error(status, code);
    }
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        3
    );
}

/// 40 NICs asked at once from one pool: every one gets an address, all different (the burst
/// benchmark once saw a 500 after 16 collisions on the same next address).
#[actix_web::test]
async fn concurrent_creates_all_get_an_address() {
    let t = TestApp::new();
    let c = client(&t).await;
    let calls = (0..40).map(|i| c.nic_create(json!({"network_interface_name": format!("n{i}")})));
    let answers = futures_util::future::join_all(calls).await;
    let ips: BTreeSet<String> = answers
        .iter()
        .map(|a| a.good().ip.expect("an address from the pool"))
        .collect();
    assert_eq!(ips.len(), 40);
}

#[actix_web::test]
async fn nic_list_and_search_filter_by_name_and_status() {
    let t = TestApp::new();
    let c = client(&t).await;
    three_nics(&c).await;
    for path in ["list", "search"] {
        let page = c
            .nics(path, &format!("filter_name={}", q("<a>")))
            .await
            .good();
        assert_eq!(page.total, 1, "{page:?}");
        assert_eq!(page.items[0].network_interface_name, "eth <a>");
        assert_eq!(page.items[0].instance_id, None);
    }
    assert_eq!(c.nics("list", "status=available").await.good().total, 3);
    c.nics("list", "status=up")
        .await
        .error(400, "invalid_param");
}

/// Delete releases the MAC and the IP.
#[actix_web::test]
async fn nic_delete_releases_its_mac_and_ip() {
    let t = TestApp::new();
    let c = client(&t).await;
    let [_, _, given] = three_nics(&c).await;
    let id = given.network_interface_id.as_str();
    c.nic_delete(id).await.good();
    c.nic_delete(id)
        .await
        .error(404, "network_interface_not_found");
    let again = c
        .nic_create(json!({"network_interface_name": "c2", "mac": "0a:70:69:aa:bb:cc", "ip": "10.77.0.100"}))
        .await
        .good();
    assert_eq!(again.ip.as_deref(), Some("10.77.0.100"));
}

#[actix_web::test]
async fn attach_and_detach_name_what_is_unknown() {
    let t = TestApp::new();
    let c = client(&t).await;
    c.nic_attach("eni-00000000", "i-00000000")
        .await
        .error(404, "network_interface_not_found");
    c.nic_detach("eni-00000000", "i-00000000")
        .await
        .error(404, "network_interface_not_found");
    let [a, _, _] = three_nics(&c).await;
    c.nic_attach(a.network_interface_id.as_str(), "i-00000000")
        .await
        .error(404, "instance_not_found");
}

#[actix_web::test]
async fn attach_detach_on_a_running_guest() {
    let t = TestApp::with_config(|c| c.network.bridges.push("nosuchbr9".into()));
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let inst = create(&app, &image, "nic host").await;
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    // The auto-made NIC: the guest sees its MAC, and its IP is the instance's.
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}"))
        .await
        .ok()
        .clone();
    let nics = d["network_interfaces"].as_array().unwrap();
    assert_eq!(nics.len(), 1, "{d}");
    assert_eq!(d["ip"], nics[0]["ip"]);
    let auto_mac = nics[0]["mac"].as_str().unwrap().to_string();
    wait_console(&app, &inst, &format!("mac={auto_mac}")).await;
    wait_console(&app, &inst, "API-WEB-GUEST-REPORT 1").await;

    let n = new_nic(&app, json!({"network_interface_name": "extra"})).await;
    let (nid, mac) = (
        n["network_interface_id"].as_str().unwrap().to_string(),
        n["mac"].as_str().unwrap().to_string(),
    );
    let body = json!({"network_interface_id": nid, "instance_id": inst});
    let r = post(&app, "/api/v1/network/attach", body.clone()).await;
    let a = r.ok();
    assert_eq!(a["status"], "attached");
    assert!(a["attach_time"].as_u64().is_some());
    wait_console(&app, &inst, &format!("mac={mac}")).await;
    let (p, l) = macs(&inst);
    assert!(p.contains(&mac) && l.contains(&mac), "{p:?} {l:?}");
    let r = get(&app, &format!("/api/v1/network/list?instance_id={inst}")).await;
    let d = r.ok();
    assert_eq!(d["total"], 2);
    assert_eq!(d["items"][0]["instance_name"], "nic host");

    post(&app, "/api/v1/network/attach", body.clone())
        .await
        .assert_error(409, "network_interface_in_use");
    post(
        &app,
        "/api/v1/network/delete",
        json!({"network_interface_id": nid}),
    )
    .await
    .assert_error(409, "network_interface_in_use");

    let r = post(&app, "/api/v1/network/detach", body.clone()).await;
    assert_eq!(r.ok()["status"], "available");
    let (p, l) = macs(&inst);
    assert!(!p.contains(&mac) && !l.contains(&mac), "{p:?} {l:?}");
    post(&app, "/api/v1/network/detach", body.clone())
        .await
        .assert_error(409, "network_interface_not_attached");

    // A bridge listed in config but missing on the hypervisor: 422 naming it, NIC unchanged.
    let m = new_nic(
        &app,
        json!({"network_interface_name": "lost", "bridge": "nosuchbr9"}),
    )
    .await;
    let mid = m["network_interface_id"].as_str().unwrap().to_string();
    let r = post(
        &app,
        "/api/v1/network/attach",
        json!({"network_interface_id": mid, "instance_id": inst}),
    )
    .await;
    r.assert_error(422, "bridge_missing");
    assert!(r.body["message"].as_str().unwrap().contains("nosuchbr9"));
    let r = get(&app, "/api/v1/network/list?filter_name=lost").await;
    assert_eq!(r.ok()["items"][0]["status"], "available");
    assert!(!macs(&inst).0.contains(m["mac"].as_str().unwrap()));

    // Attach to a stopped instance: persistent only, there after turnon.
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": inst, "force": true}),
    )
    .await
    .ok();
    post(&app, "/api/v1/network/attach", body.clone())
        .await
        .ok();
    assert!(macs(&inst).0.contains(&mac));
    post(
        &app,
        "/api/v1/instance/turnon",
        json!({"instance_id": inst}),
    )
    .await
    .ok();
    let (p, l) = macs(&inst);
    assert!(p.contains(&mac) && l.contains(&mac));

    // Destroy releases the NIC that existed before; the one create made goes with it.
    let r = post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst}),
    )
    .await;
    assert_eq!(r.ok()["released_network_interfaces"], 1);
    assert_eq!(r.ok()["deleted_network_interfaces"], 1);
    assert_eq!(
        get(&app, "/api/v1/network/list?status=available")
            .await
            .ok()["total"],
        2
    );
    drop_image(&app, &image).await;
}

#[actix_web::test]
async fn concurrent_attaches_have_one_winner() {
    let t = TestApp::with_config(|c| c.network.auto_nic = false);
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let a = create(&app, &image, "a").await;
    let b = create(&app, &image, "b").await;
    for i in [&a, &b] {
        assert_eq!(wait_created(&app, i).await["status"], "running");
        wait_console(&app, i, "API-WEB-GUEST-REPORT 1").await;
        assert!(macs(i).0.is_empty(), "auto_nic=false made a NIC");
    }
    let n = new_nic(&app, json!({"network_interface_name": "contested"})).await;
    let (nid, mac) = (
        n["network_interface_id"].as_str().unwrap().to_string(),
        n["mac"].as_str().unwrap().to_string(),
    );
    let reqs = (0..20).map(|i| {
        let inst = if i % 2 == 0 { &a } else { &b };
        post(
            &app,
            "/api/v1/network/attach",
            json!({"network_interface_id": nid, "instance_id": inst}),
        )
    });
    let answers = futures_util::future::join_all(reqs).await;
    let wins: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.status.as_u16() == 200)
        .collect();
    assert_eq!(wins.len(), 1);
    for r in answers.iter().filter(|r| r.status.as_u16() != 200) {
        r.assert_error(409, "network_interface_in_use");
    }
    let holders: usize = [&a, &b]
        .iter()
        .map(|i| {
            let (p, l) = macs(i);
            usize::from(p.contains(&mac)) + usize::from(l.contains(&mac))
        })
        .sum();
    assert_eq!(
        holders, 2,
        "exactly one domain, in its live and persistent XML"
    );
    let winner = wins[0].body["data"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let loser = if winner == a { &b } else { &a };
    post(
        &app,
        "/api/v1/network/detach",
        json!({"network_interface_id": nid, "instance_id": loser}),
    )
    .await
    .assert_error(409, "network_interface_attached_elsewhere");
    // The winner's instance now has that NIC's address.
    let d = get(
        &app,
        &format!("/api/v1/instance/detail?instance_id={winner}"),
    )
    .await;
    assert_eq!(d.ok()["ip"], n["ip"]);
    for i in [&a, &b] {
        post(
            &app,
            "/api/v1/instance/destroy",
            json!({"instance_id": i, "delete_attached": true}),
        )
        .await
        .ok();
    }
    assert_eq!(
        count(&t.db, "SELECT COUNT(*) AS n FROM network_interface"),
        0
    );
    drop_image(&app, &image).await;
}

/// Instance create with given NICs, and with the default bridge missing on the hypervisor.
#[actix_web::test]
async fn instance_create_with_nics() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let n1 = new_nic(
        &app,
        json!({"network_interface_name": "first", "ip": "10.77.0.42"}),
    )
    .await;
    let n1id = n1["network_interface_id"].as_str().unwrap();
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({"instance_name": "given nic", "image_id": image, "cpu": 1, "memory": 256, "network_interface_ids": [n1id]}),
    )
    .await;
    let inst = r.ok()["instance_id"].as_str().unwrap().to_string();
    assert_eq!(r.ok()["ip"], "10.77.0.42");
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    wait_console(&app, &inst, &format!("mac={}", n1["mac"].as_str().unwrap())).await;
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}")).await;
    assert_eq!(d.ok()["network_interfaces"].as_array().unwrap().len(), 1);
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({"instance_name": "x", "image_id": image, "cpu": 1, "memory": 256, "network_interface_ids": [n1id]}),
    )
    .await;
    r.assert_error(409, "network_interface_in_use");
    post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst}),
    )
    .await
    .ok();
    drop_image(&app, &image).await;

    // The default bridge does not exist on the hypervisor: placement finds no host with it
    // (the probe looks for every configured bridge), the create is refused naming the bridge,
    // and nothing is recorded.
    let t = TestApp::with_config(|c| {
        c.network.bridges.push("nosuchbr8".into());
        c.network.default_bridge = "nosuchbr8".into();
    });
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({"instance_name": "no bridge", "image_id": image, "cpu": 1, "memory": 256}),
    )
    .await;
    r.assert_error(409, "no_valid_host");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("has no bridge nosuchbr8"),
        "{}",
        r.body
    );
    for table in ["instance", "network_interface", "volume"] {
        assert_eq!(
            count(&t.db, &format!("SELECT COUNT(*) AS n FROM {table}")),
            0,
            "{table}"
        );
    }
    drop_image(&app, &image).await;
}
