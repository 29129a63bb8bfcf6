// librbd and librados (Debian: librbd-dev, librados-dev) back the ceph module.
fn main() {
    println!("cargo:rustc-link-lib=rbd");
    println!("cargo:rustc-link-lib=rados");
}
