//! Image upload and download: the test image uploaded raw and as qcow2 (told by content, the
//! qcow2 converted to raw in RBD), each booted; downloaded back byte for byte; other formats,
//! dangerous qcow2 files, a missing length and an interrupted upload refused or undone, with
//! MySQL and Ceph checked.

use crate::common::*;
use crate::instances::{drop_image, wait_console, wait_created};
use actix_web::test;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The test image (raw) as bytes.
pub fn test_raw() -> Vec<u8> {
    std::fs::read(env("API_WEB_TEST_IMAGE")).unwrap()
}

/// The test image converted to qcow2 (v3) by qemu-img, as bytes.
pub fn test_qcow2() -> Vec<u8> {
    static Q: OnceLock<Vec<u8>> = OnceLock::new();
    Q.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("{}.qcow2", unique("upload")));
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(env("API_WEB_TEST_IMAGE"))
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let b = std::fs::read(&out).unwrap();
        let _ = std::fs::remove_file(&out);
        b
    })
    .clone()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn upload(app: &impl App, query: &str, body: Vec<u8>) -> Resp {
    send(
        app,
        test::TestRequest::post()
            .uri(&format!("/api/v1/images/upload?{query}"))
            .insert_header(auth())
            .insert_header(("content-type", "application/x-www-form-urlencoded"))
            .set_payload(body)
            .to_request(),
    )
    .await
}

/// Asserts an error answer; its message.
fn error(r: Resp, status: u16, code: &str) -> String {
    r.assert_error(status, code);
    r.body["message"].as_str().unwrap().to_string()
}

async fn download(app: &impl App, id: &str) -> Vec<u8> {
    let res = test::call_service(
        app,
        test::TestRequest::get()
            .uri(&format!("/api/v1/images/download?image_id={id}"))
            .insert_header(auth())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers().get("content-type").unwrap().to_str().unwrap(),
        "application/octet-stream"
    );
    test::read_body(res).await.to_vec()
}

/// Boots an instance from `image` and waits until its guest says it booted; destroys it.
async fn boots(app: &impl App, image: &str) {
    let r = post(
        app,
        "/api/v1/instance/create",
        json!({"instance_name": "uploaded", "image_id": image, "cpu": 1, "memory": 256}),
    )
    .await;
    let id = r.ok()["instance_id"].as_str().unwrap().to_string();
    assert_eq!(wait_created(app, &id).await["status"], "running");
    wait_console(app, &id, "API-WEB-GUEST-BOOTED").await;
    post(app, "/api/v1/instance/destroy", json!({"instance_id": id}))
        .await
        .ok();
}

#[actix_web::test]
async fn raw_and_qcow2_uploads_boot_and_download_back() {
    let t = TestApp::new();
    let app = test::init_service(api_web::api::app(t.ctx.clone())).await;
    let pool = t.images_pool();
    let raw = test_raw();
    for (name, body) in [("raw", raw.clone()), ("qcow2", test_qcow2())] {
        let t0 = Instant::now();
        let r = upload(
            &app,
            &format!("image_name={name}&os_type=Linux"),
            body.clone(),
        )
        .await;
        let v = r.ok().clone();
        eprintln!(
            "upload of the {} MiB test image as {name} ({} bytes): {:?}",
            raw.len() >> 20,
            body.len(),
            t0.elapsed()
        );
        let id = v["image_id"].as_str().unwrap().to_string();
        assert_eq!(v["status"], "available", "{v}");
        assert!(v["progress"].is_null(), "{v}");
        assert_eq!(v["image_size"], raw.len() as u64, "{v}");
        assert_eq!(v["sha256"], sha(&body), "{v}");
        // Ceph holds the raw image, flat, marked as this deployment's.
        assert_eq!(rbd_size(&format!("{pool}/{id}")), Some(raw.len() as u64));
        assert_eq!(
            t.ctx.ceph.owner(&pool, &id).unwrap(),
            Some(t.ctx.deployment().unwrap())
        );
        // Back, byte for byte (raw, whatever was uploaded).
        let back = download(&app, &id).await;
        assert_eq!(back.len(), raw.len());
        assert!(back == raw, "{name}: the download differs from the image");
        boots(&app, &id).await;
        drop_image(&app, &id).await;
    }
}

#[actix_web::test]
async fn bad_uploads_are_refused_and_leave_nothing() {
    let t = TestApp::new();
    let app = test::init_service(api_web::api::app(t.ctx.clone())).await;
    let q = "image_name=bad&os_type=Linux";
    let count = || crate::instances::count(&t.db, "SELECT COUNT(*) AS n FROM image");
    // Other formats, named.
    let mut vmdk = vec![0u8; 4096];
    vmdk[..4].copy_from_slice(b"KDMV");
    let mut gz = vec![0u8; 4096];
    gz[..2].copy_from_slice(&[0x1f, 0x8b]);
    for (body, what) in [(vmdk, "VMDK"), (gz, "gzip"), (b"tiny".to_vec(), "4 bytes")] {
        let msg = error(upload(&app, q, body).await, 422, "image_format_refused");
        assert!(msg.contains(what), "{msg}");
    }
    // A qcow2 naming a backing file (made by qemu-img itself), and one with an external data
    // file: refused by their header before anything is made.
    let dir = std::env::temp_dir().join(unique("qcow"));
    std::fs::create_dir_all(&dir).unwrap();
    let base = dir.join("base.qcow2");
    let over = dir.join("over.qcow2");
    let ext = dir.join("ext.qcow2");
    for args in [
        vec!["create", "-f", "qcow2", base.to_str().unwrap(), "64M"],
        vec![
            "create",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            over.to_str().unwrap(),
        ],
        vec![
            "create",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={}", dir.join("ext.data").display()),
            ext.to_str().unwrap(),
            "64M",
        ],
    ] {
        let st = std::process::Command::new("qemu-img")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    }
    let msg = error(
        upload(&app, q, std::fs::read(&over).unwrap()).await,
        422,
        "image_format_refused",
    );
    assert!(msg.contains("backing file"), "{msg}");
    let msg = error(
        upload(&app, q, std::fs::read(&ext).unwrap()).await,
        422,
        "image_format_refused",
    );
    assert!(msg.contains("external data file"), "{msg}");
    // A qcow2 whose virtual size is beyond the limit: refused from its header (413).
    let huge = dir.join("huge.qcow2");
    let st = std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2", huge.to_str().unwrap(), "65T"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let r = upload(&app, q, std::fs::read(&huge).unwrap()).await;
    assert_eq!(r.status.as_u16(), 413, "{:?}", r.body);
    assert!(r.body["message"]
        .as_str()
        .unwrap()
        .contains("nothing was written"));
    let _ = std::fs::remove_dir_all(&dir);
    // Bad parameters.
    upload(&app, "image_name=x&os_type=Plan9", vec![0u8; 512])
        .await
        .assert_error(400, "invalid_param");
    upload(&app, "os_type=Linux", vec![0u8; 512])
        .await
        .assert_error(400, "invalid_param");
    assert_eq!(count(), 0);
    // An unknown image, and download refused while not available.
    let res = test::call_service(
        &app,
        test::TestRequest::get()
            .uri("/api/v1/images/download?image_id=ami-00000000")
            .insert_header(auth())
            .to_request(),
    )
    .await;
    assert_eq!(res.status(), 404);

    // Over real HTTP to a real api-web process: a raw upload without a length is refused
    // (411), and one cut off half-way leaves an `error` row and no RBD image.
    let child = crate::operations::ApiWeb::start(&t, "");
    let mut s = std::net::TcpStream::connect(child.addr()).unwrap();
    write!(
        s,
        "POST /api/v1/images/upload?{q} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TEST_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n200\r\n{}\r\n0\r\n\r\n",
        "a".repeat(512)
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 411"), "{answer}");
    assert!(answer.contains("length_required"), "{answer}");
    let raw = test_raw();
    let mut s = std::net::TcpStream::connect(child.addr()).unwrap();
    write!(
        s,
        "POST /api/v1/images/upload?image_name=cut&os_type=Linux HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TEST_KEY}\r\nContent-Length: {}\r\n\r\n",
        raw.len()
    )
    .unwrap();
    s.write_all(&raw[..raw.len() / 2]).unwrap();
    // The row exists (creating) while the body comes in; then the client goes away.
    let end = Instant::now() + Duration::from_secs(30);
    while count() == 0 {
        assert!(Instant::now() < end, "no row for the upload");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    let end = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let r = get(&app, "/api/v1/images/list?filter_name=cut").await;
        let items = r.ok()["items"].as_array().unwrap().clone();
        let v: Value = items[0].clone();
        if v["status"] != "creating" {
            break v;
        }
        assert!(Instant::now() < end, "still creating: {v}");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row["status"], "error", "{row}");
    assert!(
        row["error_message"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{row}"
    );
    let id = row["image_id"].as_str().unwrap();
    assert_eq!(rbd_size(&format!("{}/{id}", t.images_pool())), None);
    // The error row is deleted like any other.
    post(
        &app,
        "/api/v1/images/delete",
        json!({"image_id": id, "del_file": true}),
    )
    .await
    .ok();
    assert_eq!(count(), 0);
}
