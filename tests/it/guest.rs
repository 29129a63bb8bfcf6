//! The NoCloud config drive: what instance/create is told about the guest (hostname, SSH keys,
//! user data, each NIC's address) reaches it. Proved from the guest's console only: the test
//! image applies the network-config and prints what it applied; no traffic goes to a guest.

use crate::common::*;
use crate::instances::{count, create, drop_image, test_image, virsh, wait_console, wait_created};
use actix_web::test;
use api_web::api;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Instant;

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBn1n3v3Qq1i0W8m2d5Zt6JtJzq0rE1t0vT8T9h3QdYz";

async fn new_nic(app: &impl App, body: Value) -> Value {
    post(app, "/api/v1/network/create", body).await.ok().clone()
}

/// The interface the guest reported for `mac` (its `NIC <if> mac=<mac>` line).
fn iface_of(console: &str, mac: &str) -> String {
    console
        .lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("NIC ")?;
            let (dev, m) = rest.split_once(" mac=")?;
            (m.trim() == mac).then(|| dev.to_string())
        })
        .unwrap_or_else(|| panic!("the guest reported no NIC with MAC {mac}:\n{console}"))
}

fn has_line(console: &str, line: &str) -> bool {
    console.lines().any(|l| l.trim() == line)
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn drive_exists(t: &TestApp, id: &str) -> bool {
    rbd(&["info", &format!("{}/{id}.cidata", t.volumes_pool())]).0
}

#[actix_web::test]
async fn the_guest_learns_addresses_hostname_keys_and_user_data_from_its_config_drive() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;

    // Bad guest settings: 400 naming the field, nothing recorded or made.
    let base = json!({"instance_name": "bad", "image_id": image, "cpu": 1, "memory": 256});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, field) in [
        (with("hostname", json!("-bad-")), "hostname"),
        (with("hostname", json!("a..b")), "hostname"),
        (with("hostname", json!("x".repeat(64))), "hostname"),
        (
            with("ssh_authorized_keys", json!(["ssh-foo AAAA me"])),
            "ssh_authorized_keys[0]",
        ),
        (
            with(
                "ssh_authorized_keys",
                json!([KEY_A, "ssh-ed25519 not*base64"]),
            ),
            "ssh_authorized_keys[1]",
        ),
        (
            with("ssh_authorized_keys", json!([format!("{KEY_A}\n{KEY_B}")])),
            "ssh_authorized_keys[0]",
        ),
        (with("user_data", json!("a".repeat(49_153))), "user_data"),
    ] {
        let r = post(&app, "/api/v1/instance/create", body.clone()).await;
        r.assert_error(400, "invalid_param");
        let m = r.body["message"].as_str().unwrap();
        assert!(m.contains(field), "{body}: {m}");
    }
    // (The pools are shared with concurrent tests: what a refused create would have made
    // starts with a row, in this test's own database.)
    for table in ["instance", "volume", "network_interface"] {
        let n = count(&t.db, &format!("SELECT COUNT(*) AS n FROM {table}"));
        assert_eq!(n, 0, "{table}");
    }

    // One instance with everything given and two NICs (a drawn and a given address) ...
    let a = new_nic(&app, json!({"network_interface_name": "cfg-a"})).await;
    let b = new_nic(
        &app,
        json!({"network_interface_name": "cfg-b", "ip": "10.77.0.201"}),
    )
    .await;
    let user_data = "#cloud-config\nruncmd:\n  - [echo, \"h\u{e9}llo \\\"quoted\\\"\"]\n";
    let t0 = Instant::now();
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({
            "instance_name": "configured", "image_id": image, "cpu": 1, "memory": 256,
            "network_interface_ids": [a["network_interface_id"], b["network_interface_id"]],
            "hostname": "web-1.example.test",
            "user_data": user_data,
            "ssh_authorized_keys": [KEY_A, format!("  {KEY_B}  ")],
        }),
    )
    .await;
    let id = r.ok()["instance_id"].as_str().unwrap().to_string();
    // ... and one with nothing given: the hostname comes from its name.
    let plain = create(&app, &image, "My Web_Server 2").await;
    assert_eq!(wait_created(&app, &id).await["status"], "running");
    assert_eq!(wait_created(&app, &plain).await["status"], "running");

    // The drive is an RBD image next to the disks, a read-only CD-ROM in the domain.
    assert!(drive_exists(&t, &id));
    let (ok, xml) = virsh(&["dumpxml", &id]);
    assert!(ok, "{xml}");
    assert!(xml.contains("device='cdrom'"), "{xml}");
    assert!(
        xml.contains(&format!("name='{}/{id}.cidata'", t.volumes_pool())),
        "{xml}"
    );

    let out = wait_console(&app, &id, "API-WEB-GUEST-REPORT").await;
    eprintln!("configured guest reported after {:?}", t0.elapsed());
    assert!(has_line(&out, "CIDATA /dev/sr0 label=cidata"), "{out}");
    assert!(has_line(&out, "HOSTNAME web-1.example.test"), "{out}");
    assert!(has_line(&out, "SSH-KEYS 2"), "{out}");
    let ud = format!("USER-DATA sha256={}", sha256_hex(user_data.as_bytes()));
    assert!(has_line(&out, &ud), "{out}");
    for (n, prefix) in [(&a, 24), (&b, 24)] {
        let mac = n["mac"].as_str().unwrap();
        let dev = iface_of(&out, mac);
        let ip = n["ip"].as_str().unwrap();
        assert!(
            has_line(&out, &format!("NET {dev} ip={ip}/{prefix}")),
            "{out}"
        );
    }
    assert_eq!(b["ip"], "10.77.0.201");
    // The default route on the first NIC only.
    let first = iface_of(&out, a["mac"].as_str().unwrap());
    assert!(
        has_line(&out, &format!("ROUTE default via 10.77.0.1 dev {first}")),
        "{out}"
    );
    assert_eq!(out.matches("ROUTE ").count(), 1, "{out}");

    let out = wait_console(&app, &plain, "API-WEB-GUEST-REPORT").await;
    assert!(has_line(&out, "HOSTNAME my-web-server-2"), "{out}");
    assert!(has_line(&out, "SSH-KEYS 0"), "{out}");
    assert!(
        has_line(&out, &format!("USER-DATA sha256={}", sha256_hex(b""))),
        "{out}"
    );
    // The NIC made for it has its pool address.
    let nic = get(&app, &format!("/api/v1/network/list?instance_id={plain}")).await;
    let nic = nic.ok()["items"][0].clone();
    let dev = iface_of(&out, nic["mac"].as_str().unwrap());
    assert!(
        has_line(
            &out,
            &format!("NET {dev} ip={}/24", nic["ip"].as_str().unwrap())
        ),
        "{out}"
    );

    // Destroy removes the drive with the instance.
    for i in [&id, &plain] {
        post(&app, "/api/v1/instance/destroy", json!({"instance_id": i}))
            .await
            .ok();
        assert!(!drive_exists(&t, i), "{i}.cidata outlived its instance");
    }
    drop_image(&app, &image).await;
}
