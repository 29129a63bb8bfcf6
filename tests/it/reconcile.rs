//! Continuous reconciliation on the real stack: drift made behind the API's back with `virsh`
//! and `rbd` is repaired when it can be proved, reported when it cannot, and orphans marked as
//! this deployment's are removed after their grace (and only those).

use crate::client::client;
use crate::common::*;
use crate::instances::{count, create, drop_image, test_image, virsh, wait_created};
use api_web::model::VolumeId;
use api_web::service::reconcile::{self, Orphan, Report};
use api_web::xml::devices::{to_xml, Interface};
use diesel::connection::SimpleConnection;
use serde_json::json;
use std::time::Duration;

/// A pass that compares every row changed so far: rows changed in the second the pass begins
/// are left to the next one.
fn settled_pass(t: &TestApp) -> Report {
    std::thread::sleep(Duration::from_millis(1100));
    reconcile::pass(&t.ctx).unwrap()
}

/// Passes until one finds something. An edit of a stopped domain's definition raises no
/// libvirt event, so the inventory's cache sees it when it reads that domain again: within
/// `REFRESH_INVENTORIES` passes.
fn pass_until_found(t: &TestApp) -> (Report, usize) {
    std::thread::sleep(Duration::from_millis(1100));
    for n in 1..=2 * api_web::virt::REFRESH_INVENTORIES + 2 {
        let r = reconcile::pass(&t.ctx).unwrap();
        if !r.repaired.is_empty() || !r.unrepaired.is_empty() {
            return (r, n);
        }
    }
    panic!("no pass found the drift");
}

fn repaired(r: &Report, id: &str) -> String {
    r.repaired
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("{id} not repaired: {r:#?}"))
        .what
        .clone()
}

fn status_is(t: &TestApp, table: &str, key: &str, id: &str, status: &str) -> bool {
    count(
        &t.db,
        &format!("SELECT COUNT(*) AS n FROM {table} WHERE {key} = '{id}' AND status = '{status}'"),
    ) == 1
}

fn attach_by_hand(instance: &str, device_xml: &str) {
    let path = std::env::temp_dir().join(format!("{}.xml", unique("device")));
    std::fs::write(&path, device_xml).unwrap();
    let (ok, text) = virsh(&[
        "attach-device",
        instance,
        path.to_str().unwrap(),
        "--config",
    ]);
    let _ = std::fs::remove_file(&path);
    assert!(ok, "{text}");
}

#[actix_web::test]
async fn drift_behind_the_apis_back_is_repaired_or_reported() {
    // The periodic pass stays out of the way: the test runs each pass itself.
    let t = TestApp::with_config(|c| {
        c.operations.reconcile_interval_secs = 3600;
        c.operations.orphan_grace_secs = 1;
    });
    let c = client(&t).await;
    let image = test_image(&c.app, &t).await;
    let id = create(&c.app, &image, "drifting").await;
    assert_eq!(wait_created(&c.app, &id).await["status"], "running");
    post(
        &c.app,
        "/api/v1/instance/turnoff",
        json!({"instance_id": id, "force": true}),
    )
    .await
    .ok();
    let mounted = c.volume_create("mounted", 1).await.volume_id.to_string();
    let loose = c.volume_create("loose", 1).await.volume_id.to_string();
    let imageless = c.volume_create("imageless", 1).await.volume_id.to_string();
    c.volume_mount(&mounted, &id).await.good();
    let attached = c
        .nic_create(json!({"network_interface_name": "attached"}))
        .await
        .good();
    let spare = c
        .nic_create(json!({"network_interface_name": "spare"}))
        .await
        .good();
    c.nic_attach(attached.network_interface_id.as_str(), &id)
        .await
        .good();

    // Nothing drifted yet: a pass repairs nothing.
    let r = settled_pass(&t);
    assert!(r.repaired.is_empty(), "{r:#?}");
    assert!(r.unrepaired.is_empty(), "{r:#?}");

    // Behind the API's back: a mounted disk and an attached NIC taken out of the domain, an
    // available volume and NIC put in.
    let (ok, text) = virsh(&["detach-disk", &id, "vdb", "--config"]);
    assert!(ok, "{text}");
    let (ok, text) = virsh(&[
        "detach-interface",
        &id,
        "bridge",
        "--mac",
        &attached.mac,
        "--config",
    ]);
    assert!(ok, "{text}");
    let disk = api_web::service::volumes::disk(&t.ctx, &VolumeId::new(loose.as_str()), "vdc");
    attach_by_hand(&id, &to_xml(&disk).unwrap());
    let nic = Interface::bridge(&spare.bridge, &spare.mac);
    attach_by_hand(&id, &to_xml(&nic).unwrap());
    let (r, n) = pass_until_found(&t);
    println!("drift found by pass {n}");
    assert!(repaired(&r, &mounted).contains("released"), "{r:#?}");
    assert!(repaired(&r, &loose).contains("recorded in-use"), "{r:#?}");
    assert!(
        repaired(&r, attached.network_interface_id.as_str()).contains("released"),
        "{r:#?}"
    );
    assert!(
        repaired(&r, spare.network_interface_id.as_str()).contains("recorded attached"),
        "{r:#?}"
    );
    assert_eq!(r.repaired.len(), 4, "{r:#?}");
    assert!(r.unrepaired.is_empty(), "{r:#?}");
    assert!(status_is(&t, "volume", "volume_id", &mounted, "available"));
    assert_eq!(
        count(
            &t.db,
            &format!(
                "SELECT COUNT(*) AS n FROM volume WHERE volume_id = '{loose}' \
                 AND status = 'in-use' AND instance_id = '{id}' AND target_dev = 'vdc'"
            )
        ),
        1
    );
    let nic_id = |n: &api_web::api::views::NicView| n.network_interface_id.to_string();
    assert!(status_is(
        &t,
        "network_interface",
        "network_interface_id",
        &nic_id(&attached),
        "available"
    ));
    assert!(status_is(
        &t,
        "network_interface",
        "network_interface_id",
        &nic_id(&spare),
        "attached"
    ));
    assert!(
        t.ctx
            .reconciler
            .repairs
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 4
    );

    // A volume whose RBD image vanished cannot be repaired: it is reported. What was repaired
    // stays so; what could not be stays reported.
    rbd_ok(&[
        "rm",
        "--no-progress",
        &format!("{}/{imageless}", t.volumes_pool()),
    ]);
    let r = settled_pass(&t);
    assert!(r.repaired.is_empty(), "{r:#?}");
    assert_eq!(r.unrepaired.len(), 1, "{r:#?}");
    assert_eq!(r.unrepaired[0].id, imageless);
    assert!(r.unrepaired[0].what.contains("is missing"), "{r:#?}");
    let r = settled_pass(&t);
    assert!(r.repaired.is_empty(), "{r:#?}");
    assert_eq!(r.unrepaired.len(), 1, "{r:#?}");
    // The repaired rows work through the API: the adopted volume unmounts from the domain.
    c.volume_unmount(&loose, &id).await.good();

    // Orphans: the instance's row (and its root disk's) removed by hand leaves a marked domain
    // and a marked RBD clone; an id-named RBD image made by hand carries no mark.
    let root: String = {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct V {
            #[diesel(sql_type = diesel::sql_types::Text)]
            volume_id: String,
        }
        diesel::sql_query(format!(
            "SELECT volume_id FROM volume WHERE instance_id = '{id}' AND is_root"
        ))
        .get_result::<V>(&mut t.db.conn())
        .unwrap()
        .volume_id
    };
    let foreign = VolumeId::generate().to_string();
    rbd_ok(&[
        "create",
        "--size",
        "1M",
        &format!("{}/{foreign}", t.volumes_pool()),
    ]);
    t.db.conn()
        .batch_execute(&format!(
            "DELETE FROM volume WHERE volume_id = '{root}'; \
             UPDATE network_interface SET status = 'available', instance_id = NULL WHERE instance_id = '{id}'; \
             DELETE FROM instance WHERE instance_id = '{id}'"
        ))
        .unwrap();
    let r = settled_pass(&t);
    let vpool = t.volumes_pool();
    let img = |name: &str| Orphan::Rbd {
        pool: vpool.clone(),
        name: name.to_string(),
    };
    // The instance's config drive is its instance's: an orphan once that row is gone.
    let drive = format!("{id}.cidata");
    let first = api_web::service::hosts::configured(&t.ctx).unwrap();
    let domain = Orphan::Domain {
        name: id.clone(),
        host: first,
    };
    for o in [domain.clone(), img(&root), img(&foreign), img(&drive)] {
        assert!(r.orphans.contains(&o), "{o} not listed: {r:#?}");
    }
    assert!(r.removed.is_empty(), "removed before the grace: {r:#?}");
    let r = settled_pass(&t);
    assert!(r.removed.contains(&domain), "{r:#?}");
    assert!(r.removed.contains(&img(&root)), "{r:#?}");
    assert!(r.removed.contains(&img(&drive)), "{r:#?}");
    assert!(
        !r.removed.contains(&img(&foreign)),
        "an unmarked image was removed: {r:#?}"
    );
    assert!(!crate::instances::domain_exists(&id));
    assert!(!rbd(&["info", &format!("{vpool}/{root}")]).0);
    assert!(!rbd(&["info", &format!("{vpool}/{drive}")]).0);
    // (The pools and libvirt are shared with concurrent tests, whose images are orphans here.)
    let r = settled_pass(&t);
    assert!(r.orphans.contains(&img(&foreign)), "{r:#?}");
    assert!(!r.orphans.contains(&img(&root)), "{r:#?}");
    assert!(!r.orphans.contains(&domain), "{r:#?}");

    rbd_ok(&["rm", "--no-progress", &format!("{vpool}/{foreign}")]);
    for v in [&mounted, &loose, &imageless] {
        c.volume_delete(v).await.good();
    }
    for n in [&attached, &spare] {
        c.nic_delete(n.network_interface_id.as_str()).await.good();
    }
    drop_image(&c.app, &image).await;
}
