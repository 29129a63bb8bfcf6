//! scripts/ceph-provision.sh against the dev cluster: dry run changes nothing; a real run makes
//! the pools, least-privilege users, keyrings and the libvirt secret; a second run is harmless.

use crate::common::*;
use std::process::Command;

fn script(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/ceph-provision.sh"
    ))
    .args(args)
    .env("CEPH_CONF", env("CEPH_CONF"))
    .output()
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ceph(args: &[&str]) -> String {
    let out = Command::new("ceph")
        .arg("--conf")
        .arg(env("CEPH_CONF"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ceph {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn virsh(args: &[&str]) -> (bool, String) {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(env("LIBVIRT_URI"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Removes what a provisioning run made, whatever the test's outcome.
struct Cleanup {
    pools: Vec<String>,
    users: Vec<String>,
    secret: Option<String>,
    dir: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let conf = env("CEPH_CONF");
        for p in &self.pools {
            let _ = Command::new("ceph")
                .args([
                    "--conf",
                    &conf,
                    "osd",
                    "pool",
                    "rm",
                    p,
                    p,
                    "--yes-i-really-really-mean-it",
                ])
                .output();
        }
        for u in &self.users {
            let _ = Command::new("ceph")
                .args(["--conf", &conf, "auth", "del", u])
                .output();
        }
        if let Some(s) = &self.secret {
            let _ = virsh(&["secret-undefine", s]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn help_explains_each_step() {
    let (ok, out, _) = script(&["--help"]);
    assert!(ok);
    for step in [
        "pools",
        "rbd init",
        "users",
        "keyrings",
        "secret",
        "snippet",
        "--dry-run",
        "--pg-num",
    ] {
        assert!(out.contains(step), "--help does not mention {step}");
    }
    let (ok, _, err) = script(&["--bogus"]);
    assert!(!ok);
    assert!(err.contains("unknown option"), "{err}");
    let (ok, _, err) = script(&["--pg-num", "zero", "--dry-run"]);
    assert!(!ok && err.contains("PG counts"), "{err}");
}

#[test]
fn provisions_pools_users_keyrings_and_secret() {
    let _stack = stack_shared();
    let s = unique("pv");
    let (img, vol, api, qemu) = (
        format!("{s}-img"),
        format!("{s}-vol"),
        format!("{s}-api"),
        format!("{s}-qemu"),
    );
    let dir = std::env::temp_dir().join(&s);
    let mut cleanup = Cleanup {
        pools: vec![img.clone(), vol.clone()],
        users: vec![format!("client.{api}"), format!("client.{qemu}")],
        secret: None,
        dir: dir.clone(),
    };
    let d = dir.to_string_lossy().into_owned();
    let args = [
        "--images-pool",
        &img,
        "--volumes-pool",
        &vol,
        "--api-user",
        &api,
        "--qemu-user",
        &qemu,
        "--keyring-dir",
        &d,
        "--images-pg",
        "8",
        "--volumes-pg",
        "4",
    ];

    // Dry run: prints the commands, changes nothing.
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let (ok, out, err) = script(&dry);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("osd pool create {img} 8 8")), "{out}");
    assert!(out.contains(&format!("osd pool create {vol} 4 4")), "{out}");
    assert!(
        out.contains("secret-define") && out.contains("secret-set-value"),
        "{out}"
    );
    let pools = ceph(&["osd", "pool", "ls"]);
    assert!(!pools.lines().any(|p| p == img), "dry run created a pool");
    assert!(!dir.exists(), "dry run wrote keyrings");

    // Real run, twice.
    let mut snippet = String::new();
    for _ in 0..2 {
        let (ok, out, err) = script(&args);
        assert!(ok, "{err}");
        snippet = out;
    }
    let pools = ceph(&["osd", "pool", "ls"]);
    assert!(
        pools.lines().any(|p| p == img) && pools.lines().any(|p| p == vol),
        "{pools}"
    );
    assert!(ceph(&["osd", "pool", "application", "get", &img]).contains("rbd"));
    assert_eq!(
        ceph(&["osd", "pool", "get", &vol, "pg_num"]).trim(),
        "pg_num: 4"
    );
    let caps = ceph(&["auth", "get", &format!("client.{qemu}")]);
    assert!(
        caps.contains(&format!(
            "profile rbd pool={vol}, profile rbd-read-only pool={img}"
        )),
        "{caps}"
    );
    let caps = ceph(&["auth", "get", &format!("client.{api}")]);
    assert!(
        caps.contains(&format!("profile rbd pool={img}, profile rbd pool={vol}")),
        "{caps}"
    );

    // The snippet names what was made, and its secret holds the QEMU user's key.
    let uuid = snippet
        .lines()
        .find_map(|l| l.strip_prefix("secret_uuid = \""))
        .map(|l| l.trim_end_matches('"').to_string())
        .expect("snippet has secret_uuid");
    cleanup.secret = Some(uuid.clone());
    assert!(snippet.contains(&format!("images_pool = \"{img}\"")));
    assert!(snippet.contains(&format!("user = \"{api}\"")));
    assert!(snippet.contains("mon_hosts = [\"127.0.0.1:"), "{snippet}");
    // The secret is private (libvirt never hands its value back), so check what it is for.
    let (ok, xml) = virsh(&["secret-dumpxml", &uuid]);
    assert!(ok, "secret {uuid} not defined");
    assert!(
        xml.contains("private='yes'") || xml.contains("private=\"yes\""),
        "{xml}"
    );
    assert!(
        xml.contains(&format!("<name>client.{qemu} secret</name>")),
        "{xml}"
    );
    let (ok, _) = virsh(&["secret-get-value", &uuid]);
    assert!(!ok, "a private secret's value must not be readable");
    // One secret, reused by the second run.
    let (_, list) = virsh(&["secret-list"]);
    assert_eq!(
        list.matches(&format!("client.{qemu} secret")).count(),
        1,
        "{list}"
    );

    // The keyrings work, with exactly the privileges intended.
    let kr = |u: &str| {
        dir.join(format!("ceph.client.{u}.keyring"))
            .to_string_lossy()
            .into_owned()
    };
    let rbd_as = |u: &str, args: &[&str]| {
        Command::new("rbd")
            .args(["--conf", &env("CEPH_CONF"), "--id", u, "--keyring", &kr(u)])
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(rbd_as(
        &api,
        &["create", "--size", "1M", &format!("{img}/probe")]
    ));
    assert!(
        rbd_as(&qemu, &["info", &format!("{img}/probe")]),
        "QEMU may read images"
    );
    assert!(
        !rbd_as(&qemu, &["create", "--size", "1M", &format!("{img}/nope")]),
        "QEMU must not write images"
    );
    assert!(
        rbd_as(&qemu, &["create", "--size", "1M", &format!("{vol}/probe")]),
        "QEMU may write volumes"
    );
    drop(cleanup);
}
