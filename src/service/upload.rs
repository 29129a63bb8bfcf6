//! Image upload (the raw request body streamed into Ceph) and download (an image streamed back).
//!
//! An upload is the operation `image.upload` on a row `creating` (progress on the row, a
//! SHA-256 of the bytes received recorded at the end). The request handler passes the body on
//! in chunks over a bounded channel (`Chunk`) to the thread that runs `receive`, so memory stays
//! bounded whatever the size: a few chunks in the channel and `BUFFERS` 1 MiB write buffers.
//! - raw: its size is the body's Content-Length (required), checked before anything is made;
//!   the RBD image is created at that size and written as the bytes arrive (zero chunks
//!   skipped, so it stays thin).
//! - qcow2: its virtual size (header) is checked first; the file is spooled to a temporary file
//!   (qcow2 is not streamable: its tables point anywhere in the file), checked again by
//!   `qemu-img info` (no backing file, no external data file), then `qemu-img convert` writes
//!   it as raw into the RBD image.
//!
//! A failed or interrupted upload removes what it made (the RBD image, the spooled file) and
//! ends the row `error` saying why; if the RBD image cannot be removed then, the operation goes
//! to the takeover (`image_copy::recover`), which removes it once Ceph answers. A crash is the
//! same: the takeover, once the lease runs out.

use super::image_copy;
use super::image_format::Format;
use super::images::{visibility, OsType, MAX_IMAGE_SIZE};
use super::operations::{self, Op};
use super::{load, record, Ctx};
use crate::db;
use crate::db::images::{Image, ImageForm};
use crate::error::{ApiError, ApiResult, Backend, ErrorCode};
use crate::model::{ImageId, ImageStatus as St};
use actix_web::web::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The operation kind (service::operations).
pub const UPLOAD: &str = "image.upload";
/// Its steps: the body received (raw: into the RBD image; qcow2: into the spool file), then,
/// for qcow2, converted into the RBD image.
pub const RECEIVING: &str = "receiving the image";
pub const CONVERTING: &str = "converting the image";

/// Bytes written to Ceph at a time, by how many threads, from how many buffers (the memory a
/// raw upload holds: BUFFERS x WRITE_CHUNK, and librbd's copy of each write in flight). 1 MiB
/// (a quarter of an RBD object) keeps an upload's resident growth near 20 MiB; 2 MiB measured
/// +37 MiB for some 10-20% more throughput, 8 writers +33 MiB for none (README, Benchmarks).
const WRITE_CHUNK: usize = 1 << 20;
const WRITERS: usize = 4;
const BUFFERS: usize = WRITERS + 1;
/// How often, at most, the progress is written to the row.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// What `qemu-img info` may use on an untrusted file (as OpenStack does): address space and CPU.
const QEMU_IMG_INFO_LIMITS: [&str; 2] = ["--as=1073741824", "--cpu=30"];

/// What the request handler passes to `receive`.
pub enum Chunk {
    Data(Bytes),
    /// The body ended here.
    End,
    /// Reading the body failed (the client went away).
    Failed(String),
}

pub struct NewUpload {
    pub image_name: String,
    pub os_type: OsType,
    pub describe: String,
    pub project_id: String,
    pub public: bool,
    pub format: Format,
    /// The body's Content-Length, if it said.
    pub length: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Receiving {
    format: String,
}

/// The spool file of a qcow2 upload.
pub fn spool_path(id: &ImageId) -> PathBuf {
    std::env::temp_dir().join(format!("api-web-upload-{id}.qcow2"))
}

fn refused(why: impl Into<String>) -> ApiError {
    ApiError::unprocessable(ErrorCode::ImageFormatRefused, why)
}

/// The image's size once converted (raw: its length; qcow2: its virtual size), checked.
fn target_size(req: &NewUpload) -> ApiResult<u64> {
    let size = match &req.format {
        Format::Raw => req.length.ok_or_else(|| ApiError::Http {
            status: actix_web::http::StatusCode::LENGTH_REQUIRED,
            code: ErrorCode::LengthRequired,
            message: "a raw upload needs a Content-Length (its image's size); curl --data-binary @file sends one".into(),
        })?,
        Format::Qcow2 { virtual_size, .. } => *virtual_size,
    };
    if size > MAX_IMAGE_SIZE {
        return Err(ApiError::PayloadTooLarge(format!(
            "the image's size is {size} bytes, more than an image may be ({MAX_IMAGE_SIZE} bytes); nothing was written"
        )));
    }
    Ok(size)
}

/// Checks the size, records the row `creating` (progress 0) and starts its operation; for raw,
/// creates the RBD image at its size. Nothing is written to Ceph before the size is checked.
pub fn begin(ctx: &Ctx, req: &NewUpload) -> ApiResult<(Image, Op, u64)> {
    let size = target_size(req)?;
    ctx.ceph.ensure_up()?;
    let owner = ctx.deployment()?;
    let form = ImageForm {
        image_id: ImageId::generate(),
        image_name: req.image_name.clone(),
        image_size: size,
        os_type: req.os_type.as_str().to_string(),
        describe: req.describe.clone(),
        status: St::Creating,
        create_time: db::now(),
        project_id: req.project_id.clone(),
        visibility: visibility(req.public).into(),
        progress: Some(0),
        source_snapshot_id: None,
        source_volume_id: None,
    };
    let id = form.image_id.clone();
    let state = Receiving {
        format: req.format.name().into(),
    };
    let mut conn = ctx.conn()?;
    let op = super::quotas::in_transaction(&mut conn, |c| {
        let ask = super::quotas::Ask {
            images: 1,
            ..Default::default()
        };
        super::quotas::admit(c, &form.project_id, &ask)?;
        db::images::insert(c, &form)?;
        operations::start(ctx, c, UPLOAD, id.as_str(), &state)
    })?;
    if let Err(e) = op.save(ctx, RECEIVING, &state) {
        op.finish(ctx, Err(&e.to_string()));
        return Err(e);
    }
    if req.format == Format::Raw {
        let pool = &ctx.cfg.ceph.images_pool;
        if let Err(e) = ctx.ceph.create_image(pool, id.as_str(), size, &owner) {
            let why = format!("Ceph could not create the RBD image {pool}/{id}: {e}");
            fail(ctx, op, &id, &why);
            return Err(ApiError::unavailable(Backend::Ceph, why));
        }
    }
    let row = load::<Image>(&mut conn, &id)?;
    Ok((row, op, size))
}

/// Writes the progress of `id` now and then.
struct Progress<'a> {
    ctx: &'a Ctx,
    id: &'a ImageId,
    last: Instant,
    shown: u8,
}

impl Progress<'_> {
    fn new<'a>(ctx: &'a Ctx, id: &'a ImageId) -> Progress<'a> {
        Progress {
            ctx,
            id,
            last: Instant::now(),
            shown: 0,
        }
    }

    /// `pct` (at most 99: 100 is `available`).
    fn show(&mut self, pct: u64) {
        let pct = pct.min(99) as u8;
        if pct <= self.shown || self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.shown = pct;
        self.last = Instant::now();
        let w = self
            .ctx
            .conn()
            .and_then(|mut c| Ok(db::images::set_progress(&mut c, self.id, pct, db::now())?));
        if let Err(e) = w {
            log::debug!("image {}: progress {pct}% not recorded: {e}", self.id);
        }
    }
}

/// Receives the body (`rx`) into the image begun by `begin`, to its end: the row `available`
/// with its SHA-256, or `error` (what was made removed) and the error.
pub fn receive(
    ctx: &Ctx,
    op: Op,
    row: Image,
    format: Format,
    length: Option<u64>,
    size: u64,
    mut rx: tokio::sync::mpsc::Receiver<Chunk>,
) -> ApiResult<Image> {
    let id = row.image_id.clone();
    let started = Instant::now();
    let r = match format {
        Format::Raw => receive_raw(ctx, &id, size, &mut rx),
        Format::Qcow2 { .. } => receive_qcow2(ctx, &op, &id, length, size, &mut rx),
    };
    // The rest of the body is not wanted after a failure: the handler stops sending.
    drop(rx);
    give_back_memory();
    let sha = match r {
        Ok(sha) => sha,
        Err(e) => {
            fail(ctx, op, &id, &e.to_string());
            return Err(e);
        }
    };
    let done = record(ctx, "recording an uploaded image", |c| {
        Ok(db::images::finish(c, &id, size, Some(&sha), db::now())?)
    });
    match done {
        Ok(true) => {
            log::info!(
                "image {id}: uploaded ({size} bytes, sha256 {sha}) in {} ms",
                started.elapsed().as_millis()
            );
            op.finish(ctx, Ok(()));
            load(&mut ctx.conn()?, &id)
        }
        Ok(false) => {
            let _ = ctx
                .ceph
                .remove_image(&ctx.cfg.ceph.images_pool, id.as_str());
            op.finish(ctx, Err("the row was settled by another process"));
            Err(ApiError::Internal(format!(
                "image {id} was settled by another api-web process during the upload"
            )))
        }
        Err(e) => {
            fail(
                ctx,
                op,
                &id,
                &format!("the upload was received but not recorded ({e})"),
            );
            Err(e)
        }
    }
}

/// The next chunk of the body; `None` at its end.
fn next(rx: &mut tokio::sync::mpsc::Receiver<Chunk>) -> ApiResult<Option<Bytes>> {
    match rx.blocking_recv() {
        Some(Chunk::Data(b)) => Ok(Some(b)),
        Some(Chunk::End) => Ok(None),
        Some(Chunk::Failed(e)) => Err(ApiError::invalid(format!(
            "the upload was interrupted: {e}"
        ))),
        None => Err(ApiError::invalid(
            "the upload was interrupted: the client went away",
        )),
    }
}

/// A raw body into its RBD image; its SHA-256. This thread hashes the bytes and fills
/// `WRITE_CHUNK` buffers; `WRITERS` threads write them (librbd takes writes from several
/// threads, and one at a time would wait for each OSD round trip). `BUFFERS` buffers, reused,
/// are all the memory it holds, whatever the size.
fn receive_raw(
    ctx: &Ctx,
    id: &ImageId,
    size: u64,
    rx: &mut tokio::sync::mpsc::Receiver<Chunk>,
) -> ApiResult<String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc::sync_channel;
    use std::sync::Mutex;
    let pool = &ctx.cfg.ceph.images_pool;
    let ceph = |e: crate::ceph::CephError| {
        ApiError::unavailable(
            Backend::Ceph,
            format!("writing the RBD image {pool}/{id}: {e}"),
        )
    };
    let img = ctx.ceph.writer(pool, id.as_str()).map_err(ceph)?;
    let (free_tx, free) = sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        let _ = free_tx.send(Vec::with_capacity(WRITE_CHUNK));
    }
    let (work, work_rx) = sync_channel::<(u64, Vec<u8>)>(BUFFERS);
    let work_rx = Mutex::new(work_rx);
    let failed: Mutex<Option<crate::ceph::CephError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let writer = || loop {
        let job = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((at, mut buf)) = job else { return };
        // Zero chunks are skipped: the image stays thin.
        if !stop.load(Ordering::Relaxed) && buf.iter().any(|b| *b != 0) {
            if let Err(e) = img.write_at(at, &buf) {
                stop.store(true, Ordering::Relaxed);
                failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
            }
        }
        buf.clear();
        let _ = free_tx.send(buf);
    };
    let mut hash = Sha256::new();
    let mut progress = Progress::new(ctx, id);
    let received = std::thread::scope(|scope| -> ApiResult<()> {
        for _ in 0..WRITERS {
            scope.spawn(writer);
        }
        let work = work;
        let write_failed = || ApiError::Internal("a writer ended".into());
        let mut buf = free.recv().map_err(|_| write_failed())?;
        let (mut at, mut got) = (0u64, 0u64);
        while let Some(mut b) = next(rx)? {
            if stop.load(Ordering::Relaxed) {
                // The error is the writer's (below).
                return Ok(());
            }
            got += b.len() as u64;
            if got > size {
                return Err(ApiError::invalid(format!(
                    "the body is longer than its Content-Length ({size} bytes)"
                )));
            }
            hash.update(&b);
            while !b.is_empty() {
                let take = (WRITE_CHUNK - buf.len()).min(b.len());
                buf.extend_from_slice(&b.split_to(take));
                if buf.len() == WRITE_CHUNK {
                    let len = buf.len() as u64;
                    work.send((at, buf)).map_err(|_| write_failed())?;
                    at += len;
                    buf = free.recv().map_err(|_| write_failed())?;
                }
            }
            progress.show(got * 100 / size.max(1));
        }
        if got != size {
            return Err(ApiError::invalid(format!(
                "the upload ended after {got} of its {size} bytes"
            )));
        }
        if !buf.is_empty() {
            work.send((at, buf)).map_err(|_| write_failed())?;
        }
        Ok(())
        // `work` dropped here: the writers finish what is queued and end; the scope waits.
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(ceph(e));
    }
    received?;
    img.flush().map_err(ceph)?;
    Ok(hex(hash.finalize().as_slice()))
}

/// A qcow2 body spooled, checked and converted into its RBD image; its SHA-256 (of the qcow2
/// file as uploaded).
fn receive_qcow2(
    ctx: &Ctx,
    op: &Op,
    id: &ImageId,
    length: Option<u64>,
    size: u64,
    rx: &mut tokio::sync::mpsc::Receiver<Chunk>,
) -> ApiResult<String> {
    let path = spool_path(id);
    let spool_failed = |e: std::io::Error| {
        ApiError::Internal(format!(
            "cannot spool the upload to {}: {e}",
            path.display()
        ))
    };
    // A qcow2 file holds its virtual size and metadata; far more is not an image.
    let most = length.unwrap_or(size + size / 8 + (256 << 20));
    let mut file = std::fs::File::create(&path).map_err(spool_failed)?;
    let mut hash = Sha256::new();
    let mut got = 0u64;
    let mut progress = Progress::new(ctx, id);
    while let Some(b) = next(rx)? {
        got += b.len() as u64;
        if got > most {
            return Err(refused(format!(
                "the qcow2 file is larger than {most} bytes ({}); nothing was kept",
                if length.is_some() {
                    "its Content-Length"
                } else {
                    "its virtual size and metadata allow"
                }
            )));
        }
        hash.update(&b);
        file.write_all(&b).map_err(spool_failed)?;
        if let Some(l) = length {
            progress.show(got * 50 / l.max(1));
        }
    }
    if length.is_some_and(|l| l != got) {
        return Err(ApiError::invalid(format!(
            "the upload ended after {got} of its {} bytes",
            length.unwrap_or_default()
        )));
    }
    // No fsync: qemu-img reads it back from the page cache, and after a crash the spool is
    // thrown away (the takeover ends the upload `error`).
    file.flush().map_err(spool_failed)?;
    drop(file);
    inspect_qcow2(&path, size)?;
    op.save(
        ctx,
        CONVERTING,
        &Receiving {
            format: "qcow2".into(),
        },
    )?;
    convert(ctx, &path, id, &mut progress)?;
    let _ = std::fs::remove_file(&path);
    let owner = ctx.deployment()?;
    if let Err(e) = ctx
        .ceph
        .set_owner(&ctx.cfg.ceph.images_pool, id.as_str(), &owner)
    {
        log::warn!("image {id}: not marked with its deployment: {e}");
    }
    Ok(hex(hash.finalize().as_slice()))
}

/// `qemu-img info` of the spooled file, as qcow2 only (never probed) and under resource
/// limits: it must agree that there is no backing file and no external data file, and on the
/// virtual size.
fn inspect_qcow2(path: &std::path::Path, size: u64) -> ApiResult<()> {
    let out = Command::new("prlimit")
        .args(QEMU_IMG_INFO_LIMITS)
        .args(["qemu-img", "info", "-f", "qcow2", "--output=json"])
        .arg(path)
        .output()
        .map_err(|e| ApiError::Internal(format!("cannot run qemu-img info: {e}")))?;
    if !out.status.success() {
        return Err(refused(format!(
            "qemu-img cannot read the qcow2 file: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| ApiError::Internal(format!("qemu-img info answered no JSON: {e}")))?;
    if info.get("backing-filename").is_some() || info.get("full-backing-filename").is_some() {
        return Err(refused("the qcow2 image names a backing file"));
    }
    if info["format-specific"]["data"].get("data-file").is_some() {
        return Err(refused("the qcow2 image names an external data file"));
    }
    if info["virtual-size"].as_u64() != Some(size) {
        return Err(refused(format!(
            "the qcow2 header and qemu-img disagree on its size ({size} and {})",
            info["virtual-size"]
        )));
    }
    Ok(())
}

/// `qemu-img convert` of the spooled qcow2 into the RBD image (which it creates), its progress
/// (`-p`) shown as 50-99 %. It dies with api-web (PDEATHSIG).
fn convert(
    ctx: &Ctx,
    path: &std::path::Path,
    id: &ImageId,
    progress: &mut Progress,
) -> ApiResult<()> {
    let c = &ctx.cfg.ceph;
    let mut target = format!("rbd:{}/{id}:id={}:conf={}", c.images_pool, c.user, c.conf);
    if !c.keyring.is_empty() {
        target.push_str(&format!(":keyring={}", c.keyring));
    }
    let mut cmd = Command::new("qemu-img");
    // -W: writes in any order (the target is new, nobody reads it before the end).
    cmd.args(["convert", "-p", "-W", "-f", "qcow2", "-O", "raw"])
        .arg(path)
        .arg(&target)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::Internal(format!("cannot run qemu-img convert: {e}")))?;
    // "    (12.34/100%)\r" again and again.
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 256];
        let mut line = Vec::new();
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                if b == b'\r' || b == b'\n' {
                    let s = String::from_utf8_lossy(&line);
                    if let Some(p) = s
                        .trim()
                        .strip_prefix('(')
                        .and_then(|r| r.split('/').next())
                        .and_then(|v| v.parse::<f64>().ok())
                    {
                        progress.show(50 + (p as u64) / 2);
                    }
                    line.clear();
                } else {
                    line.push(b);
                }
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ApiError::Internal(format!("qemu-img convert: {e}")))?;
    if !out.status.success() {
        return Err(ApiError::unavailable(
            Backend::Ceph,
            format!(
                "qemu-img convert into the RBD image failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// Returns the memory freed by a transfer to the system. The buffers of a transfer are freed
/// in the arenas of the threads that made them (its writers, librbd's), which glibc keeps for
/// the next allocation there; each transfer runs on new threads, so without this every upload
/// would leave its peak behind in arenas no later one reuses.
fn give_back_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A failed upload: the spool file and the RBD image removed, the row `error` (or the
/// operation to the takeover when the RBD image cannot be removed now).
fn fail(ctx: &Ctx, op: Op, id: &ImageId, why: &str) {
    let _ = std::fs::remove_file(spool_path(id));
    image_copy::fail(ctx, op, id, why);
}

/// The RBD image of an `available` image, opened for reading, and its size.
pub fn open_for_download(ctx: &Ctx, id: &ImageId) -> ApiResult<(crate::ceph::ImageHandle, u64)> {
    ctx.ceph.ensure_up()?;
    let row = load::<Image>(&mut ctx.conn()?, id)?;
    if row.status != St::Available {
        return Err(ApiError::conflict(
            ErrorCode::ImageBusy,
            format!(
                "image {id} is {}; only an available image can be downloaded",
                row.status
            ),
        ));
    }
    let pool = &ctx.cfg.ceph.images_pool;
    let img = ctx.ceph.reader(pool, id.as_str()).map_err(|e| {
        ApiError::unavailable(
            Backend::Ceph,
            format!("cannot open the RBD image {pool}/{id}: {e}"),
        )
    })?;
    let size = ctx.ceph.image_size(pool, id.as_str())?;
    Ok((img, size))
}

/// Reads an image in `WRITE_CHUNK`s into `tx` until its end, the receiver goes away, or a read
/// fails (the stream then ends short of its Content-Length: the client sees it cut).
pub fn send_image(
    img: crate::ceph::ImageHandle,
    size: u64,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    send_chunks(img, size, &tx);
    give_back_memory();
}

fn send_chunks(
    img: crate::ceph::ImageHandle,
    size: u64,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(WRITE_CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        let r = img.read_at(at, &mut buf);
        let msg = match r {
            Ok(got) if got == n => Ok(Bytes::from(buf)),
            Ok(got) => Err(std::io::Error::other(format!(
                "short read: {got} of {n} bytes"
            ))),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        let failed = msg.is_err();
        if let Err(e) = &msg {
            log::warn!("download: {e}");
        }
        if tx.blocking_send(msg).is_err() || failed {
            return;
        }
        at += n as u64;
    }
}
