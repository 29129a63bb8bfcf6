//! Volumes on the real stack: RBD images hot-plugged into booted TCG guests, seen by the guest
//! through their `<serial>`.

use crate::client::client;
use crate::common::*;
use crate::instances::{count, create, drop_image, test_image, wait_console, wait_created};
use actix_web::test;
use api_web::api;
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub async fn new_volume(app: &impl App, name: &str, gib: u64) -> String {
    let r = post(
        app,
        "/api/v1/volume/create",
        json!({"volume_name": name, "volume_size": gib}),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["status"], "available");
    d["volume_id"].as_str().unwrap().to_string()
}

/// Disk serials in a domain's persistent and live XML.
pub fn serials(instance: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (p, l) = domain_xmls(instance);
    let of = |d: api_web::xml::domain::ParsedDomain| {
        d.devices
            .disk
            .into_iter()
            .filter_map(|d| d.serial)
            .collect()
    };
    (of(p), of(l))
}

/// What MySQL says is attached to each instance equals what libvirt holds: `in-use` volumes are
/// in the persistent and the live XML; a `detaching` one may still be in the live XML only (the
/// guest has not released it); nothing else is anywhere.
pub fn assert_consistent(t: &TestApp) {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        a: String,
        #[diesel(sql_type = Text)]
        b: String,
    }
    let mut conn = t.db.conn();
    let instances: Vec<Row> =
        diesel::sql_query("SELECT instance_id AS a, status AS b FROM instance")
            .load(&mut conn)
            .unwrap();
    for i in instances {
        assert!(
            !matches!(i.b.as_str(), "creating" | "destroying"),
            "{} is {}",
            i.a,
            i.b
        );
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT volume_id AS a, status AS b FROM volume WHERE instance_id = ?",
        )
        .bind::<Text, _>(&i.a)
        .load(&mut conn)
        .unwrap();
        let in_use: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.b == "in-use")
            .map(|r| r.a.clone())
            .collect();
        let detaching: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.b == "detaching")
            .map(|r| r.a.clone())
            .collect();
        let (persistent, live) = serials(&i.a);
        assert_eq!(persistent, in_use, "persistent XML of {} vs MySQL", i.a);
        assert!(
            in_use.is_subset(&live),
            "live XML of {} lacks {:?}",
            i.a,
            in_use.difference(&live).collect::<Vec<_>>()
        );
        let extra: Vec<_> = live
            .difference(&in_use)
            .filter(|s| !detaching.contains(*s))
            .collect();
        assert!(
            extra.is_empty(),
            "live XML of {} holds {extra:?}, unknown to MySQL",
            i.a
        );
    }
}

#[actix_web::test]
async fn volume_create_refuses_bad_input() {
    let t = TestApp::new();
    let c = client(&t).await;
    for body in [
        json!({"volume_name": "x", "volume_size": 0}),
        json!({"volume_name": "x", "volume_size": 65537}),
        json!({"volume_name": "", "volume_size": 1}),
        json!({"volume_name": "x"}),
        json!({"volume_name": "x", "volume_size": "1G"}),
        json!({"volume_name": "x", "volume_size": 1, "pool": "images"}),
    ] {
        c.volume_create_with(body).await.error(400, "invalid_param");
    }
}

#[actix_web::test]
async fn volume_create_makes_its_rbd_image_and_lists_it() {
    let t = TestApp::new();
    let c = client(&t).await;
    let name = "data <'&\"> ; DROP TABLE volume";
    let id = c.volume_create(name, 2).await.volume_id.to_string();
    assert!(id.starts_with("vol-") && id.len() == 12);
    assert_eq!(
        rbd_size(&format!("{}/{id}", t.volumes_pool())),
        Some(2 << 30)
    );
    let page = c.volumes("status=available").await.good();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].volume_name, name);
    assert_eq!(page.items[0].volume_size, 2);
    assert_eq!(page.items[0].instance_id, None);
    let page = c
        .volumes(&format!("filter_name={}", q("drop table")))
        .await
        .good();
    assert_eq!(page.total, 1);
    assert_eq!(c.volumes("status=in-use").await.good().total, 0);
    c.volumes("status=mounted")
        .await
        .error(400, "invalid_param");
    c.volumes("page_size=0").await.error(400, "invalid_param");
}

/// The design's GET delete, and POST; an RBD image gone behind our back is not an error.
#[actix_web::test]
async fn volume_delete_by_get_or_post_removes_the_rbd_image() {
    let t = TestApp::new();
    let c = client(&t).await;
    let vpool = t.volumes_pool();
    let id = c.volume_create("v", 1).await.volume_id.to_string();
    assert_eq!(c.volume_delete_get(&id).await.good()["file"], "removed");
    assert_eq!(rbd_size(&format!("{vpool}/{id}")), None);
    c.volume_delete_get(&id)
        .await
        .error(404, "volume_not_found");
    let id = c.volume_create("vanishing", 1).await.volume_id.to_string();
    rbd_ok(&["rm", &format!("{vpool}/{id}")]);
    assert_eq!(c.volume_delete(&id).await.good()["file"], "already_gone");
}

#[actix_web::test]
async fn mount_and_unmount_name_what_is_unknown() {
    let t = TestApp::new();
    let c = client(&t).await;
    for path in ["mount", "unmount"] {
        let uri = format!("/api/v1/volume/{path}");
        c.post::<Value>(
            &uri,
            json!({"volume_id": "vol-00000000", "instance_id": "i-00000000"}),
        )
        .await
        .error(404, "volume_not_found");
        c.post::<Value>(&uri, json!({"volume_id": "vol-00000000"}))
            .await
            .error(400, "invalid_param");
    }
    let id = c.volume_create("orphan", 1).await.volume_id.to_string();
    c.volume_mount(&id, "i-00000000")
        .await
        .error(404, "instance_not_found");
    c.volume_delete_get(&id).await.good();
}

#[actix_web::test]
async fn mount_and_unmount_on_a_running_guest() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let inst = create(&app, &image, "host").await;
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    wait_console(&app, &inst, "API-WEB-GUEST-REPORT 1").await;
    let vol = new_volume(&app, "data", 1).await;

    let r = post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["status"], "in-use");
    assert_eq!(d["instance_id"], inst.as_str());
    assert_eq!(d["target_dev"], "vdb");
    // The guest sees a new disk whose serial is the volume_id; both XMLs hold it.
    wait_console(&app, &inst, &format!("serial={vol}")).await;
    let (persistent, live) = serials(&inst);
    assert!(persistent.contains(&vol) && live.contains(&vol));
    assert_consistent(&t);
    let r = get(&app, &format!("/api/v1/volume/list?instance_id={inst}")).await;
    let items = r.ok()["items"].as_array().unwrap().clone();
    let mine = items
        .iter()
        .find(|v| v["volume_id"] == vol.as_str())
        .unwrap();
    assert_eq!(mine["instance_name"], "host");

    // A crash mid-mount (the disk is in libvirt) or mid-unmount (it is not) is repaired at
    // start-up from libvirt's truth.
    let ghost = new_volume(&app, "ghost", 1).await;
    t.db.conn()
        .batch_execute(&format!(
            "UPDATE volume SET status = 'attaching', update_time = 1 WHERE volume_id = '{vol}'; \
             UPDATE volume SET status = 'detaching', instance_id = '{inst}', target_dev = 'vdc', \
               update_time = 1 WHERE volume_id = '{ghost}';"
        ))
        .unwrap();
    assert_eq!(
        api_web::service::volumes::reconcile(&t.ctx, 600).unwrap(),
        2
    );
    let status_of = |d: &Value, id: &str| {
        d["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["volume_id"] == id)
            .unwrap()["status"]
            .clone()
    };
    let d = get(&app, "/api/v1/volume/list").await.ok().clone();
    assert_eq!(status_of(&d, &vol), "in-use");
    assert_eq!(status_of(&d, &ghost), "available");
    assert_consistent(&t);
    get(&app, &format!("/api/v1/volume/delete?volume_id={ghost}"))
        .await
        .ok();

    // Conflicts, each with its stable code.
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await
    .assert_error(409, "volume_in_use");
    get(&app, &format!("/api/v1/volume/delete?volume_id={vol}"))
        .await
        .assert_error(409, "volume_in_use");
    let root = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}"))
        .await
        .ok()["volumes"][0]["volume_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &app,
        "/api/v1/volume/unmount",
        json!({"volume_id": root, "instance_id": inst}),
    )
    .await
    .assert_error(409, "volume_is_root");
    get(&app, &format!("/api/v1/volume/delete?volume_id={root}"))
        .await
        .assert_error(409, "volume_is_root");
    post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": root, "instance_id": inst}),
    )
    .await
    .assert_error(409, "volume_is_root");

    let r = post(
        &app,
        "/api/v1/volume/unmount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await;
    let d = r.ok();
    assert_eq!(d["status"], "available");
    assert_eq!(d["instance_id"], Value::Null);
    let (persistent, live) = serials(&inst);
    assert!(
        !persistent.contains(&vol) && !live.contains(&vol),
        "{persistent:?} {live:?}"
    );
    assert_consistent(&t);
    // The guest saw it go: its latest report no longer lists the disk. (A report taken while
    // the kernel was removing the disk may still name it, half read: `size=` empty; the next
    // one follows within 0.3 s.)
    wait_console(&app, &inst, "API-WEB-GUEST-REPORT 3").await;
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = get(
            &app,
            &format!("/api/v1/instance/console?instance_id={inst}"),
        )
        .await;
        let out = r.ok()["output"].as_str().unwrap().to_string();
        let last = out
            .rsplit("API-WEB-GUEST-REPORT")
            .nth(1)
            .unwrap_or("")
            .to_string();
        if !last.contains(&vol) {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the guest still lists {vol}: {last}"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    post(
        &app,
        "/api/v1/volume/unmount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await
    .assert_error(409, "volume_not_attached");

    // Mount to a stopped instance: persistent only, present after turnon.
    post(
        &app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": inst, "force": true}),
    )
    .await
    .ok();
    let r = post(
        &app,
        "/api/v1/volume/mount",
        json!({"volume_id": vol, "instance_id": inst}),
    )
    .await;
    assert_eq!(r.ok()["status"], "in-use");
    assert!(serials(&inst).0.contains(&vol));
    assert_consistent(&t);
    let before = get(
        &app,
        &format!("/api/v1/instance/console?instance_id={inst}"),
    )
    .await
    .ok()["output"]
        .as_str()
        .unwrap()
        .matches("API-WEB-GUEST-BOOTED")
        .count();
    post(
        &app,
        "/api/v1/instance/turnon",
        json!({"instance_id": inst}),
    )
    .await
    .ok();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let out = get(
            &app,
            &format!("/api/v1/instance/console?instance_id={inst}"),
        )
        .await
        .ok()["output"]
            .as_str()
            .unwrap()
            .to_string();
        let boots: Vec<&str> = out.split("API-WEB-GUEST-BOOTED").collect();
        if boots.len() > before + 1 && boots.last().unwrap().contains(&format!("serial={vol}")) {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "second boot never showed {vol}:\n{out}"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Destroy releases (does not delete) the data volume.
    let r = post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst}),
    )
    .await;
    assert_eq!(r.ok()["released_volumes"], 1);
    let r = get(&app, "/api/v1/volume/list").await;
    assert_eq!(r.ok()["items"][0]["status"], "available");
    get(&app, &format!("/api/v1/volume/delete?volume_id={vol}"))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// 20 concurrent mounts of one volume to two instances: exactly one wins, and exactly one disk
/// with that serial exists in libvirt.
#[actix_web::test]
async fn concurrent_mounts_have_one_winner() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let a = create(&app, &image, "a").await;
    let b = create(&app, &image, "b").await;
    for i in [&a, &b] {
        assert_eq!(wait_created(&app, i).await["status"], "running");
    }
    let vol = new_volume(&app, "contested", 1).await;
    let reqs = (0..20).map(|i| {
        let inst = if i % 2 == 0 { &a } else { &b };
        post(
            &app,
            "/api/v1/volume/mount",
            json!({"volume_id": vol, "instance_id": inst}),
        )
    });
    let answers = futures_util::future::join_all(reqs).await;
    let wins: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.status.as_u16() == 200)
        .collect();
    assert_eq!(
        wins.len(),
        1,
        "{:?}",
        answers.iter().map(|r| &r.body).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status.as_u16() != 200) {
        assert_eq!(r.status.as_u16(), 409, "{}", r.body);
        assert!(
            matches!(r.body["error"].as_str(), Some("volume_in_use")),
            "{}",
            r.body
        );
    }
    let winner = wins[0].body["data"]["instance_id"]
        .as_str()
        .unwrap()
        .to_string();
    let loser = if winner == a { &b } else { &a };
    let holders: usize = [&a, &b]
        .iter()
        .map(|i| {
            let (p, l) = serials(i);
            usize::from(p.contains(&vol) || l.contains(&vol))
        })
        .sum();
    assert_eq!(holders, 1);
    assert_consistent(&t);
    post(
        &app,
        "/api/v1/volume/unmount",
        json!({"volume_id": vol, "instance_id": loser}),
    )
    .await
    .assert_error(409, "volume_attached_elsewhere");
    // Mounted while the guests were still booting: the unplug request may reach a guest that
    // cannot answer yet. Then the volume stays `detaching` and a later unmount finishes it.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pending = 0;
    loop {
        let body = json!({"volume_id": vol, "instance_id": winner});
        let r = post(&app, "/api/v1/volume/unmount", body).await;
        if r.status.as_u16() == 200 {
            break;
        }
        r.assert_error(409, "detach_pending");
        assert_consistent(&t);
        pending += 1;
        // `detaching` while the unplug is pending, or `in-use` again once reconciliation found
        // the guest kept the disk (the next unmount asks again).
        let v = get(&app, "/api/v1/volume/list").await;
        let status = v.ok()["items"][0]["status"].clone();
        assert!(
            status == "detaching" || status == "in-use",
            "volume is {status} after a pending unmount"
        );
        assert!(std::time::Instant::now() < end, "unmount never completed");
    }
    eprintln!("unmount needed {pending} retries");
    assert_consistent(&t);
    for i in [&a, &b] {
        post(&app, "/api/v1/instance/destroy", json!({"instance_id": i}))
            .await
            .ok();
    }
    get(&app, &format!("/api/v1/volume/delete?volume_id={vol}"))
        .await
        .ok();
    drop_image(&app, &image).await;
}

/// Instance create with existing volumes and a new data volume: attached at boot, in order.
#[actix_web::test]
async fn instance_create_attaches_volumes_at_boot() {
    let t = TestApp::new();
    let app = test::init_service(api::app(t.ctx.clone())).await;
    let image = test_image(&app, &t).await;
    let v1 = new_volume(&app, "first", 1).await;
    let r = post(
        &app,
        "/api/v1/instance/create",
        json!({"instance_name": "with disks", "image_id": image, "cpu": 1, "memory": 256,
               "volume_ids": [v1], "data_volume_size": 2}),
    )
    .await;
    let inst = r.ok()["instance_id"].as_str().unwrap().to_string();
    // Reserved at once: nobody else can take it meanwhile.
    let v = get(&app, "/api/v1/volume/list?filter_name=first").await;
    assert_ne!(v.ok()["items"][0]["status"], "available");
    assert_eq!(wait_created(&app, &inst).await["status"], "running");
    let d = get(&app, &format!("/api/v1/instance/detail?instance_id={inst}")).await;
    let vols = d.ok()["volumes"].as_array().unwrap().clone();
    assert_eq!(vols.len(), 3, "{vols:?}");
    assert_eq!(vols[1]["volume_id"], v1.as_str());
    assert_eq!(vols[1]["target_dev"], "vdb");
    assert_eq!(vols[2]["target_dev"], "vdc");
    assert_eq!(vols[2]["volume_size"], 2);
    let v2 = vols[2]["volume_id"].as_str().unwrap().to_string();
    let out = wait_console(&app, &inst, &format!("serial={v2}")).await;
    assert!(out.contains(&format!("serial={v1}")), "{out}");
    assert_consistent(&t);
    // Bad references are refused before anything is made.
    for (ids, status, code) in [
        (json!([v1]), 409, "volume_in_use"),
        (json!(["vol-00000000"]), 404, "volume_not_found"),
        (json!(["x", "x"]), 400, "invalid_param"),
    ] {
        let r = post(
            &app,
            "/api/v1/instance/create",
            json!({"instance_name": "no", "image_id": image, "cpu": 1, "memory": 256, "volume_ids": ids}),
        )
        .await;
        r.assert_error(status, code);
    }
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM instance"), 1);
    assert_eq!(vols[1]["delete_with_instance"], false);
    assert_eq!(vols[2]["delete_with_instance"], true);
    // Destroy deletes the volume create made and gives back the one that existed before.
    let r = post(
        &app,
        "/api/v1/instance/destroy",
        json!({"instance_id": inst}),
    )
    .await;
    assert_eq!(r.ok()["deleted_volumes"], 1);
    assert_eq!(r.ok()["released_volumes"], 1);
    assert_eq!(rbd_size(&format!("{}/{v2}", t.volumes_pool())), None);
    assert_eq!(
        rbd_size(&format!("{}/{v1}", t.volumes_pool())),
        Some(1 << 30)
    );
    let v = get(&app, "/api/v1/volume/list?filter_name=first").await;
    assert_eq!(v.ok()["items"][0]["status"], "available");
    assert_eq!(count(&t.db, "SELECT COUNT(*) AS n FROM volume"), 1);
    get(&app, &format!("/api/v1/volume/delete?volume_id={v1}"))
        .await
        .ok();
    drop_image(&app, &image).await;
}
