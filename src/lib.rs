//! api-web: a libvirt + Ceph RBD cloud control plane. Layers, each knowing only those below:
//! `api` (HTTP) -> `service` (rules, side-effect order, compensation) -> `db` / `virt` / `ceph`.

pub mod api;
pub mod ceph;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod iso9660;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod service;
pub mod virt;
pub mod xml;
