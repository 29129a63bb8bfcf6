//! RBD images in Ceph: the only module that talks to Ceph.
//!
//! It keeps one librados connection open for the life of the process (connecting costs 12-14 ms,
//! a CLI call about 40 ms; an RBD create over an open connection about 7 ms) and opens an I/O
//! context per call. The connection is made on first use, and dropped (to be remade) when an
//! operation reports that the cluster went away. Every function blocks: call them off the async
//! executor. Callers never see librados types, only these functions, so the access path can change
//! without touching them.

mod ffi;

use crate::config::CephConfig;
use libc::c_int;
use std::ffi::{CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum CephError {
    #[error("cannot connect to the Ceph cluster of {conf} as client.{user}: {reason}")]
    Connect {
        conf: String,
        user: String,
        reason: String,
    },
    #[error("Ceph: {op} {target} failed: {reason} (errno {errno})")]
    Op {
        op: &'static str,
        target: String,
        errno: i32,
        reason: String,
    },
    #[error("Ceph: invalid name {0:?}")]
    BadName(String),
    /// The health probe found the cluster not answering: calls fail at once instead of
    /// waiting for librados' timeouts.
    #[error("Ceph is not answering ({0}); retry when /healthz says ceph ok")]
    Down(String),
}

impl CephError {
    fn op(op: &'static str, target: &str, ret: c_int) -> CephError {
        let errno = -ret;
        CephError::Op {
            op,
            target: target.to_string(),
            errno,
            reason: std::io::Error::from_raw_os_error(errno)
                .to_string()
                .split(" (os error")
                .next()
                .unwrap_or_default()
                .to_string(),
        }
    }
    pub fn errno(&self) -> Option<i32> {
        match self {
            CephError::Op { errno, .. } => Some(*errno),
            _ => None,
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.errno() == Some(libc::ENOENT)
    }
    pub fn already_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
    /// The cluster is unreachable or has dropped us: the next call should reconnect.
    fn connection_lost(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ETIMEDOUT | libc::ENOTCONN | libc::ESHUTDOWN | libc::ECONNREFUSED)
        )
    }
}

type Result<T> = std::result::Result<T, CephError>;

/// What `remove_image` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Removed,
    AlreadyGone,
}

/// A clone of one of an image's snapshots: `pool/image` and the snapshot it hangs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub pool: String,
    pub image: String,
    pub snapshot: String,
}

struct Cluster(ffi::rados_t);
// librados handles are thread-safe; we only share the handle, never an ioctx across threads.
unsafe impl Send for Cluster {}
unsafe impl Sync for Cluster {}
impl Drop for Cluster {
    fn drop(&mut self) {
        unsafe { ffi::rados_shutdown(self.0) }
    }
}

struct IoCtx(ffi::rados_ioctx_t);
impl IoCtx {
    /// An I/O context on `pool`.
    fn create(cluster: &Cluster, pool: &str) -> Result<IoCtx> {
        let p = cstr(pool)?;
        let mut io: ffi::rados_ioctx_t = ptr::null_mut();
        let r = unsafe { ffi::rados_ioctx_create(cluster.0, p.as_ptr(), &mut io) };
        if r < 0 {
            return Err(CephError::op("open pool", pool, r));
        }
        Ok(IoCtx(io))
    }
}
impl Drop for IoCtx {
    fn drop(&mut self) {
        unsafe { ffi::rados_ioctx_destroy(self.0) }
    }
}

struct Image(ffi::rbd_image_t);
impl Drop for Image {
    fn drop(&mut self) {
        unsafe {
            ffi::rbd_close(self.0);
        }
    }
}

/// An open image (`Ceph::writer`, `Ceph::reader`). Fields drop in order: the image before
/// its I/O context, the context before the connection.
pub struct ImageHandle {
    img: Image,
    _io: IoCtx,
    _cluster: Arc<Cluster>,
    target: String,
}
// librbd image handles are thread-safe: an upload writes through one from several threads.
unsafe impl Send for ImageHandle {}
unsafe impl Sync for ImageHandle {}

impl ImageHandle {
    /// Writes `buf` at `offset`.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let w = unsafe { ffi::rbd_write2(self.img.0, offset, buf.len(), buf.as_ptr().cast(), 0) };
        if w < 0 {
            return Err(CephError::op("write", &self.target, w as c_int));
        }
        Ok(())
    }

    /// Reads up to `buf.len()` bytes at `offset`; how many were read.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let r =
            unsafe { ffi::rbd_read2(self.img.0, offset, buf.len(), buf.as_mut_ptr().cast(), 0) };
        if r < 0 {
            return Err(CephError::op("read", &self.target, r as c_int));
        }
        Ok(r as usize)
    }

    /// Waits until what was written is stored.
    pub fn flush(&self) -> Result<()> {
        let r = unsafe { ffi::rbd_flush(self.img.0) };
        if r < 0 {
            return Err(CephError::op("flush", &self.target, r));
        }
        Ok(())
    }
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| CephError::BadName(s.to_string()))
}

pub struct Ceph {
    conf: String,
    user: String,
    keyring: String,
    op_timeout_secs: u64,
    cluster: Mutex<Option<Arc<Cluster>>>,
    /// The probe's own connection, with short timeouts.
    probe_cluster: Mutex<Option<Arc<Cluster>>>,
    /// Why the last probe failed; `None` while the cluster answers.
    down: Mutex<Option<String>>,
}

/// librados timeouts of the health probe's connection (seconds): a stopped OSD shows as a
/// failed probe within this, where the service's own connection waits `op_timeout_secs`.
const PROBE_TIMEOUT_SECS: u64 = 1;

/// Bytes a copy reads and writes at a time (an RBD object).
const COPY_CHUNK: usize = 4 << 20;
/// Threads a copy reads and writes with (each with one chunk in flight).
const COPY_THREADS: usize = 4;

/// An open image's handle, used from the copy's threads at once (librbd is thread-safe).
#[derive(Clone, Copy)]
struct SharedImage(ffi::rbd_image_t);
unsafe impl Send for SharedImage {}
unsafe impl Sync for SharedImage {}
impl SharedImage {
    /// (A method, so that closures capture the whole, thread-safe value, not its pointer.)
    fn get(self) -> ffi::rbd_image_t {
        self.0
    }
}

/// The image metadata key that names the deployment that made an image.
pub const OWNER_KEY: &str = "api-web.deployment";

/// The object the probe asks the OSDs about; it never exists, and "no such object" is the
/// answer of a healthy cluster.
const PROBE_OBJECT: &str = "api-web-health-probe";

impl Ceph {
    /// Does not connect: the first operation does (so the service starts with Ceph down, and
    /// /healthz says so).
    pub fn new(cfg: &CephConfig) -> Ceph {
        Ceph {
            conf: cfg.conf.clone(),
            user: cfg.user.clone(),
            keyring: cfg.keyring.clone(),
            op_timeout_secs: cfg.op_timeout_secs,
            cluster: Mutex::new(None),
            probe_cluster: Mutex::new(None),
            down: Mutex::new(None),
        }
    }

    /// Records what the health probe found: while `Some(reason)`, `ensure_up` fails at once.
    pub fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// `Err(Down)` while the probe finds the cluster not answering. Requests that need Ceph
    /// ask this first and answer 503 at once; calls themselves are not gated (a probe that
    /// failed only because the cluster was slow must not fail work already under way: librados'
    /// own timeouts bound it).
    pub fn ensure_up(&self) -> Result<()> {
        match self.down.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            Some(why) => Err(CephError::Down(why)),
            None => Ok(()),
        }
    }

    fn connect(&self) -> Result<Arc<Cluster>> {
        self.connect_with(&self.cluster, self.op_timeout_secs)
    }

    fn connect_with(
        &self,
        slot: &Mutex<Option<Arc<Cluster>>>,
        timeout_secs: u64,
    ) -> Result<Arc<Cluster>> {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let fail = |what: &str, ret: c_int| CephError::Connect {
            conf: self.conf.clone(),
            user: self.user.clone(),
            reason: format!(
                "{what}: {}",
                std::io::Error::from_raw_os_error(-ret)
                    .to_string()
                    .split(" (os error")
                    .next()
                    .unwrap_or_default()
            ),
        };
        let id = cstr(&self.user)?;
        let mut handle: ffi::rados_t = ptr::null_mut();
        let r = unsafe { ffi::rados_create(&mut handle, id.as_ptr()) };
        if r < 0 {
            return Err(fail("rados_create", r));
        }
        let cluster = Cluster(handle);
        let conf = cstr(&self.conf)?;
        let r = unsafe { ffi::rados_conf_read_file(cluster.0, conf.as_ptr()) };
        if r < 0 {
            return Err(fail("reading the conf file", r));
        }
        let t = timeout_secs.to_string();
        let mut opts = vec![
            ("client_mount_timeout", t.as_str()),
            ("rados_mon_op_timeout", t.as_str()),
            ("rados_osd_op_timeout", t.as_str()),
            // librados logs to stderr by default; the service logs its own errors.
            ("log_to_stderr", "false"),
            ("err_to_stderr", "false"),
            ("log_file", ""),
        ];
        if !self.keyring.is_empty() {
            opts.push(("keyring", self.keyring.as_str()));
        }
        for (k, v) in opts {
            let (k, v) = (cstr(k)?, cstr(v)?);
            let r = unsafe { ffi::rados_conf_set(cluster.0, k.as_ptr(), v.as_ptr()) };
            if r < 0 {
                return Err(fail("setting options", r));
            }
        }
        let r = unsafe { ffi::rados_connect(cluster.0) };
        if r < 0 {
            return Err(fail("connecting", r));
        }
        let cluster = Arc::new(cluster);
        *slot = Some(cluster.clone());
        Ok(cluster)
    }

    /// Runs `f` with an I/O context on `pool`; forgets the connection if the cluster went away.
    fn with_pool<T>(&self, pool: &str, f: impl FnOnce(&IoCtx) -> Result<T>) -> Result<T> {
        let cluster = self.connect()?;
        let io = IoCtx::create(&cluster, pool)?;
        let out = f(&io);
        if let Err(e) = &out {
            if e.connection_lost() {
                *self.cluster.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        out
    }

    fn open(io: &IoCtx, pool: &str, name: &str) -> Result<Image> {
        Self::open_with(ffi::rbd_open, io, pool, name)
    }

    /// Opens an image only to read it. A read-only open registers no watch, so it never makes a
    /// concurrent remove of the image fail with EBUSY ("image has watchers"), as a read-write
    /// open would (another api-web process reading an orphan's mark while a destroy removes it).
    fn open_read_only(io: &IoCtx, pool: &str, name: &str) -> Result<Image> {
        Self::open_with(ffi::rbd_open_read_only, io, pool, name)
    }

    fn open_with(
        how: unsafe extern "C" fn(
            ffi::rados_ioctx_t,
            *const libc::c_char,
            *mut ffi::rbd_image_t,
            *const libc::c_char,
        ) -> c_int,
        io: &IoCtx,
        pool: &str,
        name: &str,
    ) -> Result<Image> {
        let n = cstr(name)?;
        let mut img: ffi::rbd_image_t = ptr::null_mut();
        let r = unsafe { how(io.0, n.as_ptr(), &mut img, ptr::null()) };
        if r < 0 {
            return Err(CephError::op("open image", &format!("{pool}/{name}"), r));
        }
        Ok(Image(img))
    }

    /// Whether the monitors and the OSDs of `pools` answer within `PROBE_TIMEOUT_SECS`: asks
    /// each pool for an object that does not exist, over a connection of its own (the service's
    /// connection waits much longer). "No such object" is a healthy answer.
    pub fn probe(&self, pools: &[&str]) -> Result<()> {
        let forget = |e: CephError| {
            *self.probe_cluster.lock().unwrap_or_else(|p| p.into_inner()) = None;
            e
        };
        let cluster = self.connect_with(&self.probe_cluster, PROBE_TIMEOUT_SECS)?;
        let obj = cstr(PROBE_OBJECT)?;
        for pool in pools {
            let io = IoCtx::create(&cluster, pool).map_err(forget)?;
            let (mut size, mut mtime) = (0u64, 0 as libc::time_t);
            let r = unsafe { ffi::rados_stat(io.0, obj.as_ptr(), &mut size, &mut mtime) };
            if r < 0 && -r != libc::ENOENT {
                return Err(forget(CephError::op(
                    "stat a probe object in pool",
                    pool,
                    r,
                )));
            }
        }
        Ok(())
    }

    /// A new RBD image (format 2, the cluster's default features), marked as made by `owner`
    /// (see `mark`). EEXIST if the name is taken.
    pub fn create_image(&self, pool: &str, name: &str, size: u64, owner: &str) -> Result<()> {
        let n = cstr(name)?;
        self.with_pool(pool, |io| {
            let mut order: c_int = 0;
            let r = unsafe { ffi::rbd_create(io.0, n.as_ptr(), size, &mut order) };
            if r < 0 {
                return Err(CephError::op("create image", &format!("{pool}/{name}"), r));
            }
            Self::mark(io, pool, name, owner);
            Ok(())
        })
    }

    /// Records in the image's metadata (`OWNER_KEY`) which deployment made it, so that
    /// reconciliation removes only its own orphans. A failure only logs: an unmarked image is
    /// reported as an orphan but never removed.
    fn mark(io: &IoCtx, pool: &str, name: &str, owner: &str) {
        let r = Self::open(io, pool, name).and_then(|img| {
            let (k, v) = (cstr(OWNER_KEY)?, cstr(owner)?);
            let r = unsafe { ffi::rbd_metadata_set(img.0, k.as_ptr(), v.as_ptr()) };
            if r < 0 {
                return Err(CephError::op("set metadata", &format!("{pool}/{name}"), r));
            }
            Ok(())
        });
        if let Err(e) = r {
            log::warn!("RBD image {pool}/{name} is not marked with its deployment: {e}");
        }
    }

    /// The deployment that made an image (`mark`); `None` for an image without the mark.
    pub fn owner(&self, pool: &str, name: &str) -> Result<Option<String>> {
        let k = cstr(OWNER_KEY)?;
        self.with_pool(pool, |io| {
            let img = Self::open_read_only(io, pool, name)?;
            let mut buf = vec![0u8; 64];
            loop {
                let mut len: libc::size_t = buf.len();
                let r = unsafe {
                    ffi::rbd_metadata_get(img.0, k.as_ptr(), buf.as_mut_ptr().cast(), &mut len)
                };
                if r == -libc::ENOENT {
                    return Ok(None);
                }
                if r == -libc::ERANGE && len > buf.len() {
                    buf.resize(len, 0);
                    continue;
                }
                if r < 0 {
                    return Err(CephError::op("get metadata", &format!("{pool}/{name}"), r));
                }
                let s = CStr::from_bytes_until_nul(&buf)
                    .map(|c| c.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return Ok(Some(s));
            }
        })
    }

    /// Names of the RBD images in a pool.
    pub fn list_images(&self, pool: &str) -> Result<Vec<String>> {
        self.with_pool(pool, |io| {
            let mut max: libc::size_t = 64;
            loop {
                let mut specs: Vec<ffi::rbd_image_spec_t> = Vec::with_capacity(max);
                let mut n = max;
                let r = unsafe { ffi::rbd_list2(io.0, specs.as_mut_ptr(), &mut n) };
                if r == -libc::ERANGE {
                    max = n.max(max * 2);
                    continue;
                }
                if r < 0 {
                    return Err(CephError::op("list images", pool, r));
                }
                unsafe { specs.set_len(n) };
                let names = specs
                    .iter()
                    .map(|s| {
                        unsafe { CStr::from_ptr(s.name) }
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                unsafe { ffi::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
                return Ok(names);
            }
        })
    }

    /// Size in bytes of an image (ENOENT if there is none).
    pub fn image_size(&self, pool: &str, name: &str) -> Result<u64> {
        self.with_pool(pool, |io| {
            let img = Self::open_read_only(io, pool, name)?;
            let mut size = 0u64;
            let r = unsafe { ffi::rbd_get_size(img.0, &mut size) };
            if r < 0 {
                return Err(CephError::op("stat image", &format!("{pool}/{name}"), r));
            }
            Ok(size)
        })
    }

    fn snapshots(img: &Image, target: &str) -> Result<Vec<String>> {
        let mut max: c_int = 16;
        loop {
            let mut snaps: Vec<ffi::rbd_snap_info_t> = Vec::with_capacity(max as usize + 1);
            let mut n = max;
            let r = unsafe { ffi::rbd_snap_list(img.0, snaps.as_mut_ptr(), &mut n) };
            if r == -libc::ERANGE {
                max = n.max(max * 2);
                continue;
            }
            if r < 0 {
                return Err(CephError::op("list snapshots", target, r));
            }
            unsafe { snaps.set_len(r as usize) };
            let names = snaps
                .iter()
                .map(|s| {
                    unsafe { CStr::from_ptr(s.name) }
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            unsafe { ffi::rbd_snap_list_end(snaps.as_mut_ptr()) };
            return Ok(names);
        }
    }

    /// Every copy-on-write clone of any snapshot of the image (empty if the image is gone).
    pub fn children(&self, pool: &str, name: &str) -> Result<Vec<Child>> {
        let target = format!("{pool}/{name}");
        self.with_pool(pool, |io| {
            let img = match Self::open_read_only(io, pool, name) {
                Ok(i) => i,
                Err(e) if e.is_not_found() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for snap in Self::snapshots(&img, &target)? {
                let s = cstr(&snap)?;
                let r = unsafe { ffi::rbd_snap_set(img.0, s.as_ptr()) };
                if r < 0 {
                    return Err(CephError::op("select snapshot", &target, r));
                }
                let mut max: libc::size_t = 16;
                loop {
                    let mut specs: Vec<ffi::rbd_linked_image_spec_t> = Vec::with_capacity(max);
                    let mut n = max;
                    let r = unsafe { ffi::rbd_list_children3(img.0, specs.as_mut_ptr(), &mut n) };
                    if r == -libc::ERANGE {
                        max = n.max(max * 2);
                        continue;
                    }
                    if r < 0 {
                        return Err(CephError::op("list clones", &target, r));
                    }
                    unsafe { specs.set_len(n) };
                    for c in &specs {
                        let pool = unsafe { CStr::from_ptr(c.pool_name) }.to_string_lossy();
                        let image = unsafe { CStr::from_ptr(c.image_name) }.to_string_lossy();
                        out.push(Child {
                            pool: pool.into_owned(),
                            image: image.into_owned(),
                            snapshot: snap.clone(),
                        });
                    }
                    unsafe { ffi::rbd_linked_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Removes an image and its snapshots (unprotecting them). Fails with EBUSY while a snapshot
    /// has clones; an image that is already gone is reported, not an error.
    pub fn remove_image(&self, pool: &str, name: &str) -> Result<Removal> {
        let target = format!("{pool}/{name}");
        let n = cstr(name)?;
        self.with_pool(pool, |io| {
            match Self::open(io, pool, name) {
                Ok(img) => {
                    for snap in Self::snapshots(&img, &target)? {
                        Self::drop_snapshot(&img, &cstr(&snap)?, &target)?;
                    }
                }
                // Gone, or half-removed by an interrupted removal (still listed in the pool's
                // directory or its parent's children): rbd_remove below clears what is left.
                Err(e) if e.is_not_found() => {
                    let r = unsafe { ffi::rbd_remove(io.0, n.as_ptr()) };
                    return match r {
                        0 => Ok(Removal::AlreadyGone),
                        r if r == -libc::ENOENT => Ok(Removal::AlreadyGone),
                        r => Err(CephError::op("remove image", &target, r)),
                    };
                }
                Err(e) => return Err(e),
            }
            let r = unsafe { ffi::rbd_remove(io.0, n.as_ptr()) };
            match r {
                0 => Ok(Removal::Removed),
                r if r == -libc::ENOENT => Ok(Removal::AlreadyGone),
                r => Err(CephError::op("remove image", &target, r)),
            }
        })
    }

    /// Creates and protects snapshot `snap` of an image unless it already exists and is protected.
    pub fn ensure_protected_snapshot(&self, pool: &str, name: &str, snap: &str) -> Result<()> {
        let target = format!("{pool}/{name}@{snap}");
        let s = cstr(snap)?;
        self.with_pool(pool, |io| {
            let img = Self::open(io, pool, name)?;
            if !Self::snapshots(&img, &target)?.iter().any(|x| x == snap) {
                let r = unsafe { ffi::rbd_snap_create(img.0, s.as_ptr()) };
                if r < 0 && r != -libc::EEXIST {
                    return Err(CephError::op("create snapshot", &target, r));
                }
            }
            let mut protected: c_int = 0;
            let r = unsafe { ffi::rbd_snap_is_protected(img.0, s.as_ptr(), &mut protected) };
            if r < 0 {
                return Err(CephError::op("inspect snapshot", &target, r));
            }
            if protected == 0 {
                let r = unsafe { ffi::rbd_snap_protect(img.0, s.as_ptr()) };
                // EBUSY: another process protected it between our check and now.
                if r < 0 && r != -libc::EBUSY {
                    return Err(CephError::op("protect snapshot", &target, r));
                }
            }
            Ok(())
        })
    }

    /// Copy-on-write clone of `parent_pool/parent@snap` as `child_pool/child` (no data copied).
    /// The child is marked as made by `owner` (see `mark`).
    pub fn clone_image(
        &self,
        parent_pool: &str,
        parent: &str,
        snap: &str,
        child_pool: &str,
        child: &str,
        owner: &str,
    ) -> Result<()> {
        // layering, exclusive-lock, object-map, fast-diff, deep-flatten: the pacific default.
        const FEATURES: u64 = 1 | 4 | 8 | 16 | 32;
        let (p, s, c) = (cstr(parent)?, cstr(snap)?, cstr(child)?);
        let target = format!("{parent_pool}/{parent}@{snap} -> {child_pool}/{child}");
        self.with_pool(parent_pool, |pio| {
            self.with_pool(child_pool, |cio| {
                let mut order: c_int = 0;
                let r = unsafe {
                    ffi::rbd_clone(
                        pio.0,
                        p.as_ptr(),
                        s.as_ptr(),
                        cio.0,
                        c.as_ptr(),
                        FEATURES,
                        &mut order,
                    )
                };
                if r < 0 {
                    return Err(CephError::op("clone image", &target, r));
                }
                Self::mark(cio, child_pool, child, owner);
                Ok(())
            })
        })
    }

    /// Takes snapshot `snap` of an image (done already is not an error). librbd asks the
    /// image's exclusive-lock owner (a running QEMU) to take it, so the snapshot is a point in
    /// the writes QEMU has sent. It does not ask QEMU to quiesce first (librbd's default): QEMU
    /// has no quiesce hook, and librbd then waits about a second per image for an answer that
    /// never comes; the caller suspends the guest instead.
    pub fn create_snapshot(&self, pool: &str, name: &str, snap: &str) -> Result<()> {
        let target = format!("{pool}/{name}@{snap}");
        let s = cstr(snap)?;
        self.with_pool(pool, |io| {
            let img = Self::open(io, pool, name)?;
            let r = unsafe {
                ffi::rbd_snap_create2(
                    img.0,
                    s.as_ptr(),
                    ffi::RBD_SNAP_CREATE_SKIP_QUIESCE,
                    None,
                    ptr::null_mut(),
                )
            };
            if r < 0 && r != -libc::EEXIST {
                return Err(CephError::op("create snapshot", &target, r));
            }
            Ok(())
        })
    }

    /// Removes snapshot `snap` of an image (unprotecting it first); a snapshot or an image that
    /// is already gone is reported, not an error.
    pub fn remove_snapshot(&self, pool: &str, name: &str, snap: &str) -> Result<Removal> {
        let target = format!("{pool}/{name}@{snap}");
        let s = cstr(snap)?;
        self.with_pool(pool, |io| {
            let img = match Self::open(io, pool, name) {
                Ok(i) => i,
                Err(e) if e.is_not_found() => return Ok(Removal::AlreadyGone),
                Err(e) => return Err(e),
            };
            Self::drop_snapshot(&img, &s, &target)
        })
    }

    /// Removes one snapshot of an open image, unprotecting it first; one that is gone is
    /// reported, not an error.
    fn drop_snapshot(img: &Image, s: &CStr, target: &str) -> Result<Removal> {
        let mut protected: c_int = 0;
        let r = unsafe { ffi::rbd_snap_is_protected(img.0, s.as_ptr(), &mut protected) };
        if r == -libc::ENOENT {
            return Ok(Removal::AlreadyGone);
        }
        if r < 0 {
            return Err(CephError::op("inspect snapshot", target, r));
        }
        if protected != 0 {
            let r = unsafe { ffi::rbd_snap_unprotect(img.0, s.as_ptr()) };
            if r < 0 {
                return Err(CephError::op("unprotect snapshot", target, r));
            }
        }
        match unsafe { ffi::rbd_snap_remove(img.0, s.as_ptr()) } {
            0 => Ok(Removal::Removed),
            r if r == -libc::ENOENT => Ok(Removal::AlreadyGone),
            r => Err(CephError::op("remove snapshot", target, r)),
        }
    }

    /// Rolls an image's data and size back to snapshot `snap`. Nobody may have the image open
    /// for writing (a stopped domain); taking it again gives the same result.
    pub fn rollback(&self, pool: &str, name: &str, snap: &str) -> Result<()> {
        let target = format!("{pool}/{name}@{snap}");
        let s = cstr(snap)?;
        self.with_pool(pool, |io| {
            let img = Self::open(io, pool, name)?;
            let r = unsafe { ffi::rbd_snap_rollback(img.0, s.as_ptr()) };
            if r < 0 {
                return Err(CephError::op("roll back to snapshot", &target, r));
            }
            Ok(())
        })
    }

    /// Size in bytes of snapshot `snap` of an image.
    pub fn snapshot_size(&self, pool: &str, name: &str, snap: &str) -> Result<u64> {
        let target = format!("{pool}/{name}@{snap}");
        self.with_pool(pool, |io| {
            let img = Self::open_snapshot(io, name, snap, &target)?;
            let mut size = 0u64;
            let r = unsafe { ffi::rbd_get_size(img.0, &mut size) };
            if r < 0 {
                return Err(CephError::op("stat snapshot", &target, r));
            }
            Ok(size)
        })
    }

    /// An image opened read-only at snapshot `snap`: it takes no lock, so a running QEMU that
    /// holds the image's exclusive lock is not disturbed.
    fn open_snapshot(io: &IoCtx, name: &str, snap: &str, target: &str) -> Result<Image> {
        let (n, s) = (cstr(name)?, cstr(snap)?);
        let mut img: ffi::rbd_image_t = ptr::null_mut();
        let r = unsafe { ffi::rbd_open_read_only(io.0, n.as_ptr(), &mut img, s.as_ptr()) };
        if r < 0 {
            return Err(CephError::op("open snapshot", target, r));
        }
        Ok(Image(img))
    }

    /// Copies snapshot `snap` of `src_pool/src` into a new image `dst_pool/dst` of the same
    /// size, marked as made by `owner`. The copy is flat: it reads through the source's parent
    /// (a root disk is a clone of its image), so it depends on nothing. Only the extents that
    /// hold data (in the image or its parent) are read, and zero chunks are not written, so a
    /// mostly empty disk copies fast and stays thin.
    ///
    /// (librbd's own `rbd_copy` is not used: in Ceph 16 a copy from a snapshot of a clone
    /// leaves out the parent's data, an image of zeros; `rbd cp` shows the same.)
    ///
    /// `progress(done, total)` (bytes of data extents) is called every 50 ms while the copy
    /// runs, on the calling thread; returning false cancels the copy (ECANCELED). A copy that fails leaves what it wrote: the caller
    /// removes `dst`. EEXIST if `dst` exists.
    #[allow(clippy::too_many_arguments)]
    pub fn copy_snapshot(
        &self,
        src_pool: &str,
        src: &str,
        snap: &str,
        dst_pool: &str,
        dst: &str,
        owner: &str,
        progress: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<()> {
        let target = format!("{src_pool}/{src}@{snap} -> {dst_pool}/{dst}");
        let d = cstr(dst)?;
        self.with_pool(src_pool, |sio| {
            let from = Self::open_snapshot(sio, src, snap, &target)?;
            let mut size = 0u64;
            let r = unsafe { ffi::rbd_get_size(from.0, &mut size) };
            if r < 0 {
                return Err(CephError::op("stat snapshot", &target, r));
            }
            let extents = Self::data_extents(&from, size, &target)?;
            let total: u64 = extents.iter().map(|e| e.1).sum();
            self.with_pool(dst_pool, |dio| {
                let mut order: c_int = 0;
                let r = unsafe { ffi::rbd_create(dio.0, d.as_ptr(), size, &mut order) };
                if r < 0 {
                    return Err(CephError::op("create image", &target, r));
                }
                Self::mark(dio, dst_pool, dst, owner);
                let to = Self::open(dio, dst_pool, dst)?;
                // The chunks, shared out among COPY_THREADS threads (librbd's image handles
                // take I/O from several threads); this thread reports the progress.
                let chunks: Vec<(u64, usize)> = extents
                    .iter()
                    .flat_map(|&(start, len)| {
                        (start..start + len).step_by(COPY_CHUNK).map(move |off| {
                            (off, (start + len - off).min(COPY_CHUNK as u64) as usize)
                        })
                    })
                    .collect();
                let next = AtomicUsize::new(0);
                let done = AtomicU64::new(0);
                let stop = AtomicBool::new(false);
                let failed: Mutex<Option<CephError>> = Mutex::new(None);
                let (src_img, dst_img) = (SharedImage(from.0), SharedImage(to.0));
                let worker = || {
                    let mut buf = vec![0u8; COPY_CHUNK];
                    while !stop.load(Ordering::Relaxed) {
                        let Some(&(off, n)) = chunks.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return;
                        };
                        let r = unsafe {
                            ffi::rbd_read2(src_img.get(), off, n, buf.as_mut_ptr().cast(), 0)
                        };
                        let err = if r < 0 {
                            Some(CephError::op("read snapshot", &target, r as c_int))
                        } else {
                            let chunk = &buf[..r as usize];
                            let w = if chunk.iter().any(|b| *b != 0) {
                                unsafe {
                                    ffi::rbd_write2(
                                        dst_img.get(),
                                        off,
                                        chunk.len(),
                                        chunk.as_ptr().cast(),
                                        0,
                                    )
                                }
                            } else {
                                0
                            };
                            (w < 0).then(|| CephError::op("write copy", &target, w as c_int))
                        };
                        if let Some(e) = err {
                            stop.store(true, Ordering::Relaxed);
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            return;
                        }
                        done.fetch_add(n as u64, Ordering::Relaxed);
                    }
                };
                std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..COPY_THREADS).map(|_| scope.spawn(worker)).collect();
                    while !workers.iter().all(|w| w.is_finished()) {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        if !stop.load(Ordering::Relaxed)
                            && !progress(done.load(Ordering::Relaxed), total)
                        {
                            stop.store(true, Ordering::Relaxed);
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(CephError::op(
                                    "copy snapshot",
                                    &target,
                                    -libc::ECANCELED,
                                ));
                        }
                    }
                });
                if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
                    return Err(e);
                }
                progress(total, total);
                let r = unsafe { ffi::rbd_flush(to.0) };
                if r < 0 {
                    return Err(CephError::op("flush copy", &target, r));
                }
                Ok(())
            })
        })
    }

    /// The extents `(offset, length)` of an open image that hold data, in it or in its parent,
    /// merged where they touch.
    fn data_extents(img: &Image, size: u64, target: &str) -> Result<Vec<(u64, u64)>> {
        extern "C" fn add(
            off: u64,
            len: libc::size_t,
            exists: c_int,
            arg: *mut libc::c_void,
        ) -> c_int {
            // SAFETY: `arg` is the vector below, alive for the whole call.
            let out = unsafe { &mut *(arg as *mut Vec<(u64, u64)>) };
            if exists != 0 {
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == off => last.1 += len as u64,
                    _ => out.push((off, len as u64)),
                }
            }
            0
        }
        let mut out: Vec<(u64, u64)> = vec![];
        let r = unsafe {
            ffi::rbd_diff_iterate2(
                img.0,
                ptr::null(),
                0,
                size,
                1,
                1,
                add,
                (&mut out as *mut Vec<(u64, u64)>).cast(),
            )
        };
        if r < 0 {
            return Err(CephError::op("list the extents of", target, r));
        }
        Ok(out)
    }

    /// An image opened for writing at offsets (an upload): the connection, the pool's I/O
    /// context and the image stay open until it is dropped.
    pub fn writer(&self, pool: &str, name: &str) -> Result<ImageHandle> {
        self.handle(pool, name, false)
    }

    /// An image opened read-only (a download).
    pub fn reader(&self, pool: &str, name: &str) -> Result<ImageHandle> {
        self.handle(pool, name, true)
    }

    fn handle(&self, pool: &str, name: &str, read_only: bool) -> Result<ImageHandle> {
        let cluster = self.connect()?;
        let io = IoCtx::create(&cluster, pool)?;
        let img = if read_only {
            Self::open_read_only(&io, pool, name)?
        } else {
            Self::open(&io, pool, name)?
        };
        Ok(ImageHandle {
            img,
            _io: io,
            _cluster: cluster,
            target: format!("{pool}/{name}"),
        })
    }

    /// Marks an image made by another program (`qemu-img convert`) as this deployment's.
    pub fn set_owner(&self, pool: &str, name: &str, owner: &str) -> Result<()> {
        self.with_pool(pool, |io| {
            let img = Self::open(io, pool, name)?;
            let (k, v) = (cstr(OWNER_KEY)?, cstr(owner)?);
            let r = unsafe { ffi::rbd_metadata_set(img.0, k.as_ptr(), v.as_ptr()) };
            if r < 0 {
                return Err(CephError::op("set metadata", &format!("{pool}/{name}"), r));
            }
            Ok(())
        })
    }

    /// Grows (or shrinks) an image to `size` bytes.
    pub fn resize_image(&self, pool: &str, name: &str, size: u64) -> Result<()> {
        self.with_pool(pool, |io| {
            let img = Self::open(io, pool, name)?;
            let r = unsafe { ffi::rbd_resize(img.0, size) };
            if r < 0 {
                return Err(CephError::op("resize image", &format!("{pool}/{name}"), r));
            }
            Ok(())
        })
    }
}
