//! Instance benchmark on the real stack (scripts/bench.sh instances):
//! - create -> `running` and create -> guest boot marker on the console, p50 over 10 instances,
//!   against the same steps by hand in the same run (`rbd snap`/`rbd clone`, a NoCloud drive by
//!   `genisoimage` + `rbd import`, `virsh define` + `virsh start`), as ratios; for a 1 GiB and a
//!   20 GiB (sparse) image, to show that create time does not grow with the image size
//!   (copy-on-write clones copy no data); and create -> the guest has read its config drive;
//! - list / detail latency over 10,000 instance rows.
//!
//! Guests run one at a time (TCG on 2 cores: parallel guests would measure CPU contention).

mod support;

use api_web::model::InstanceId;
use api_web::xml::devices::{Disk, RbdAccess};
use api_web::xml::domain::{build, DomainSpec};
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

const N: usize = 10;
const ROWS: usize = 10_000;
const REQUESTS: usize = 1_000;
const MARKER: &str = "API-WEB-GUEST-BOOTED";
/// The test image prints this once it has read its config drive.
const CONFIGURED: &str = "CIDATA /dev/sr0 label=cidata";

fn wait_file(path: &str, needle: &str, t0: Instant) -> Duration {
    loop {
        if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no {needle} in {path}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn main() {
    let (dbname, url, mut conn) = new_db();
    let cfg = config(&url);
    let (ctx, addr) = serve(cfg.clone());
    let mut http = Http::connect(addr);
    let conf = env("CEPH_CONF");
    let img_path = env("API_WEB_TEST_IMAGE");
    let (ipool, vpool) = (cfg.ceph.images_pool.clone(), cfg.ceph.volumes_pool.clone());
    let tag = std::process::id();

    for gib in [1u64, 20] {
        // The test image, grown (sparsely) to the size under test, registered.
        let image = format!("bench-{tag}-{gib}g");
        run(Command::new("rbd").args([
            "--conf",
            &conf,
            "import",
            "--no-progress",
            &img_path,
            &format!("{ipool}/{image}"),
        ]));
        run(Command::new("rbd").args([
            "--conf",
            &conf,
            "resize",
            "--no-progress",
            "--size",
            &format!("{gib}G"),
            &format!("{ipool}/{image}"),
        ]));
        let body = format!(
            r#"{{"image_id":"{image}","image_name":"bench","image_size":{},"os_type":"Linux"}}"#,
            gib << 30
        );
        let (s, b) = http.call("POST", "/api/v1/images/register", Some(&body));
        assert_eq!(s, 200, "{b}");

        let (mut api_run, mut api_mark, mut api_conf) = (vec![], vec![], vec![]);
        // By hand: the design's commands, same XML shape, same snapshot reused.
        let (mut man_run, mut man_mark, mut man_conf) = (vec![], vec![], vec![]);
        let tmp = std::env::temp_dir().join(format!("bench-{tag}"));
        std::fs::create_dir_all(&tmp).unwrap();
        let snap = format!("{ipool}/{image}@api-web-base");
        // API and by hand alternate, so that drift on the machine favours neither.
        for i in 0..N {
            let body = format!(
                r#"{{"instance_name":"bench {i}","image_id":"{image}","cpu":1,"memory":256}}"#
            );
            let t0 = Instant::now();
            let (s, b) = http.call("POST", "/api/v1/instance/create", Some(&body));
            assert_eq!(s, 200, "{b}");
            let id = json(&b)["data"]["instance_id"]
                .as_str()
                .unwrap()
                .to_string();
            loop {
                let (_, b) = http.call(
                    "GET",
                    &format!("/api/v1/instance/progress?instance_id={id}"),
                    None,
                );
                let st = json(&b)["data"]["status"].as_str().unwrap().to_string();
                if st == "running" {
                    break;
                }
                assert_eq!(st, "creating", "{b}");
                std::thread::sleep(Duration::from_millis(10));
            }
            api_run.push(t0.elapsed());
            let console =
                api_web::service::instances::console_path(&ctx, &InstanceId::new(id.as_str()));
            api_mark.push(wait_file(&console, MARKER, t0));
            api_conf.push(wait_file(&console, CONFIGURED, t0));
            let (s, b) = http.call(
                "POST",
                "/api/v1/instance/destroy",
                Some(&format!(r#"{{"instance_id":"{id}"}}"#)),
            );
            assert_eq!(s, 200, "{b}");
            let (name, vol) = (
                format!("bench-manual-{tag}-{gib}-{i}"),
                format!("bench-manual-{tag}-{gib}-{i}"),
            );
            let console = format!("{}/{name}.console.log", cfg.libvirt.console_log_dir);
            let _ = std::fs::remove_file(&console);
            let access = RbdAccess {
                mon_hosts: &cfg.ceph.mon_hosts,
                user: &cfg.ceph.qemu_user,
                secret_uuid: &cfg.ceph.secret_uuid,
            };
            let drive = format!("{vol}.cidata");
            let disks = [
                Disk::rbd(&access, &vpool, &vol, "vda", &vol),
                Disk::rbd_cdrom(&access, &vpool, &drive, "hdc", "ide"),
            ];
            let seed = tmp.join(&name);
            std::fs::create_dir_all(&seed).unwrap();
            std::fs::write(
                seed.join("meta-data"),
                format!("{{\"instance-id\": \"{name}\", \"local-hostname\": \"manual\"}}\n"),
            )
            .unwrap();
            std::fs::write(seed.join("user-data"), "").unwrap();
            std::fs::write(
                seed.join("network-config"),
                "{\"version\": 2, \"ethernets\": {}}\n",
            )
            .unwrap();
            let iso = tmp.join(format!("{name}.iso"));
            let uuid = uuid::Uuid::new_v4().to_string();
            let spec = DomainSpec {
                domain_type: &cfg.libvirt.domain_type,
                name: &name,
                uuid: &uuid,
                title: "manual",
                description: "",
                instance_id: &name,
                deployment: "bench-manual",
                memory_mib: 256,
                vcpu: 1,
                machine: &cfg.libvirt.machine,
                emulator: &cfg.libvirt.emulator,
                disks: &disks,
                interfaces: &[],
                console_log: &console,
            };
            let xml = build(&ctx.templates.linux, &spec).unwrap();
            let xml_path = tmp.join(format!("{name}.xml"));
            std::fs::write(&xml_path, xml).unwrap();
            let t0 = Instant::now();
            // The snapshot exists already (the API's runs made it), as it would for the 2nd+
            // instance of an image; `rbd snap ls` stands in for checking it.
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "snap",
                "ls",
                &format!("{ipool}/{image}"),
            ]));
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "clone",
                &snap,
                &format!("{vpool}/{vol}"),
            ]));
            // The config drive as the NoCloud docs make it, then into the pool.
            run(Command::new("genisoimage")
                .args(["-quiet", "-output", iso.to_str().unwrap()])
                .args(["-volid", "cidata", "-joliet", "-rock"])
                .arg(&seed));
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "import",
                "--no-progress",
                iso.to_str().unwrap(),
                &format!("{vpool}/{drive}"),
            ]));
            run(Command::new("virsh").args([
                "-c",
                &cfg.libvirt.uri,
                "define",
                xml_path.to_str().unwrap(),
            ]));
            run(Command::new("virsh").args(["-c", &cfg.libvirt.uri, "start", &name]));
            man_run.push(t0.elapsed());
            man_mark.push(wait_file(&console, MARKER, t0));
            man_conf.push(wait_file(&console, CONFIGURED, t0));
            run(Command::new("virsh").args(["-c", &cfg.libvirt.uri, "destroy", &name]));
            run(Command::new("virsh").args(["-c", &cfg.libvirt.uri, "undefine", &name]));
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "rm",
                "--no-progress",
                &format!("{vpool}/{vol}"),
            ]));
            run(Command::new("rbd").args([
                "--conf",
                &conf,
                "rm",
                "--no-progress",
                &format!("{vpool}/{drive}"),
            ]));
            let _ = std::fs::remove_file(&console);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        println!("--- {gib} GiB image (sparse), {N} instances each, one at a time");
        let a = report("api create -> running", &mut api_run);
        let m = report("by hand clone+define+start -> started", &mut man_run);
        println!(
            "{:<44} {:.2}x (api / by hand)",
            "ratio to running (p50)",
            a / m
        );
        let a = report("api create -> guest marker", &mut api_mark);
        let m = report("by hand -> guest marker", &mut man_mark);
        println!(
            "{:<44} {:.2}x (api / by hand)",
            "ratio to guest marker (p50)",
            a / m
        );
        let a = report("api create -> guest read its config drive", &mut api_conf);
        let m = report("by hand -> guest read its config drive", &mut man_conf);
        println!(
            "{:<44} {:.2}x (api / by hand)",
            "ratio to config drive read (p50)",
            a / m
        );
        let (s, b) = http.call(
            "POST",
            "/api/v1/images/delete",
            Some(&format!(r#"{{"image_id":"{image}","del_file":true}}"#)),
        );
        assert_eq!(s, 200, "{b}");
    }

    // 10,000 instance rows (each with a root volume row), no domains: list and detail read MySQL only.
    insert_instance_rows(&mut conn, ROWS, "b");
    for _ in 0..50 {
        http.call("GET", "/api/v1/instance/list?page_size=100", None);
    }
    println!("--- {ROWS} instance rows, HTTP keep-alive on loopback");
    let mut lat = vec![];
    for i in 0..REQUESTS {
        let path = format!(
            "/api/v1/instance/list?page_size=100&page_num={}",
            1 + (i * 37) % 100
        );
        lat.push(timed(|| assert_eq!(http.call("GET", &path, None).0, 200)));
    }
    report("instance/list page_size 100", &mut lat);
    let mut lat = vec![];
    for i in 0..REQUESTS {
        let path = "/api/v1/instance/list?page_size=100&status=stopped".to_string()
            + if i % 2 == 0 {
                "&filter_name=instance%201"
            } else {
                ""
            };
        lat.push(timed(|| assert_eq!(http.call("GET", &path, None).0, 200)));
    }
    report("instance/list status (+ name) filter", &mut lat);
    let mut lat = vec![];
    for i in 0..REQUESTS {
        let path = format!(
            "/api/v1/instance/detail?instance_id=i-b{:07x}",
            (i * 7919) % ROWS
        );
        lat.push(timed(|| assert_eq!(http.call("GET", &path, None).0, 200)));
    }
    report("instance/detail", &mut lat);
    drop_db(&dbname);
}
