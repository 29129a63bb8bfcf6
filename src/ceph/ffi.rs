//! The few librados / librbd C functions api-web uses (Ceph 16 "pacific" headers:
//! /usr/include/rados/librados.h, /usr/include/rbd/librbd.h). Linked by build.rs.
#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, size_t};

pub type rados_t = *mut c_void;
pub type rados_ioctx_t = *mut c_void;
pub type rbd_image_t = *mut c_void;
/// `rbd_snap_create2` flag: do not ask the image's watchers (QEMU) to quiesce first.
pub const RBD_SNAP_CREATE_SKIP_QUIESCE: u32 = 1 << 0;
/// `int (*)(uint64_t offset, uint64_t total, void *ptr)`: a non-zero return cancels.
pub type librbd_progress_fn_t = extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int;

#[repr(C)]
pub struct rbd_image_spec_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
}

#[repr(C)]
pub struct rbd_snap_info_t {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

#[repr(C)]
pub struct rbd_linked_image_spec_t {
    pub pool_id: i64,
    pub pool_name: *mut c_char,
    pub pool_namespace: *mut c_char,
    pub image_id: *mut c_char,
    pub image_name: *mut c_char,
    pub trash: bool,
}

extern "C" {
    pub fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    pub fn rados_stat(
        io: rados_ioctx_t,
        oid: *const c_char,
        psize: *mut u64,
        pmtime: *mut libc::time_t,
    ) -> c_int;

    pub fn rbd_create(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        order: *mut c_int,
    ) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    pub fn rbd_list2(
        io: rados_ioctx_t,
        images: *mut rbd_image_spec_t,
        max_images: *mut size_t,
    ) -> c_int;
    pub fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num_images: size_t);
    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;
    pub fn rbd_read2(
        image: rbd_image_t,
        ofs: u64,
        len: size_t,
        buf: *mut c_char,
        op_flags: c_int,
    ) -> isize;
    pub fn rbd_write2(
        image: rbd_image_t,
        ofs: u64,
        len: size_t,
        buf: *const c_char,
        op_flags: c_int,
    ) -> isize;
    pub fn rbd_flush(image: rbd_image_t) -> c_int;
    pub fn rbd_diff_iterate2(
        image: rbd_image_t,
        fromsnapname: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: extern "C" fn(offset: u64, len: size_t, exists: c_int, arg: *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;
    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut size_t,
    ) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    pub fn rbd_snap_list(
        image: rbd_image_t,
        snaps: *mut rbd_snap_info_t,
        max_snaps: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_create2(
        image: rbd_image_t,
        snap_name: *const c_char,
        flags: u32,
        cb: Option<librbd_progress_fn_t>,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_snap_remove(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_set(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_rollback(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut rbd_linked_image_spec_t,
        max_images: *mut size_t,
    ) -> c_int;
    pub fn rbd_linked_image_spec_list_cleanup(
        images: *mut rbd_linked_image_spec_t,
        num_images: size_t,
    );
    pub fn rbd_clone(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        features: u64,
        c_order: *mut c_int,
    ) -> c_int;
}
