//! How each resource looks on the wire: one view per resource, used by every endpoint that
//! shows it (lists, details, and the answers of the calls that change it).

use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::volumes::Volume;
use crate::model::{
    ImageId, ImageStatus, InstanceId, InstanceStatus, NicId, NicStatus, VolumeId, VolumeStatus,
};
use serde::Serialize;
use std::collections::HashMap;

/// Names of the instances a page of volumes or NICs is attached to.
pub type InstanceNames = HashMap<InstanceId, String>;

fn message(m: Option<String>) -> Option<String> {
    m.filter(|m| !m.is_empty())
}

#[derive(Serialize)]
pub struct ImageView {
    image_id: ImageId,
    image_name: String,
    /// bytes
    image_size: u64,
    os_type: String,
    describe: String,
    status: ImageStatus,
    error_message: Option<String>,
    image_location: String,
    create_time: u64,
    update_time: u64,
}

impl ImageView {
    pub fn new(i: Image, pool: &str) -> Self {
        ImageView {
            image_location: format!("rbd:{pool}/{}", i.image_id),
            image_id: i.image_id,
            image_name: i.image_name,
            image_size: i.image_size,
            os_type: i.os_type,
            describe: i.describe,
            status: i.status,
            error_message: message(i.error_message),
            create_time: i.create_time,
            update_time: i.update_time,
        }
    }
}

#[derive(Serialize)]
pub struct InstanceView {
    instance_id: InstanceId,
    instance_name: String,
    status: InstanceStatus,
    ip: Option<String>,
    host_ip: String,
    cpu: u32,
    /// MiB
    memory: u64,
    image_id: ImageId,
    /// GiB
    root_size: Option<u64>,
    describe: String,
    progress: u8,
    progress_step: String,
    error_message: Option<String>,
    create_time: u64,
    update_time: u64,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        InstanceView {
            instance_id: i.instance_id,
            instance_name: i.instance_name,
            status: i.status,
            ip: i.ip,
            host_ip: i.host_ip,
            cpu: i.cpu,
            memory: i.memory,
            image_id: i.image_id,
            root_size: i.root_size,
            describe: i.describe,
            progress: i.progress,
            progress_step: i.progress_step,
            error_message: message(i.error_message),
            create_time: i.create_time,
            update_time: i.update_time,
        }
    }
}

#[derive(Serialize)]
pub struct VolumeView {
    volume_id: VolumeId,
    volume_name: String,
    /// GiB
    volume_size: u64,
    status: VolumeStatus,
    instance_id: Option<InstanceId>,
    instance_name: Option<String>,
    target_dev: Option<String>,
    is_root: bool,
    describe: String,
    error_message: Option<String>,
    attach_time: Option<u64>,
    create_time: u64,
    update_time: u64,
}

impl VolumeView {
    /// With the name of the instance it is attached to, when the caller knows it.
    pub fn new(v: Volume, names: &InstanceNames) -> Self {
        VolumeView {
            instance_name: v.instance_id.as_ref().and_then(|i| names.get(i).cloned()),
            volume_id: v.volume_id,
            volume_name: v.volume_name,
            volume_size: v.volume_size,
            status: v.status,
            instance_id: v.instance_id,
            target_dev: v.target_dev,
            is_root: v.is_root,
            describe: v.describe,
            error_message: message(v.error_message),
            attach_time: v.attach_time,
            create_time: v.create_time,
            update_time: v.update_time,
        }
    }
}

#[derive(Serialize)]
pub struct NicView {
    network_interface_id: NicId,
    network_interface_name: String,
    mac: String,
    ip: Option<String>,
    bridge: String,
    status: NicStatus,
    instance_id: Option<InstanceId>,
    instance_name: Option<String>,
    attach_time: Option<u64>,
    describe: String,
    error_message: Option<String>,
    create_time: u64,
}

impl NicView {
    /// With the name of the instance it is attached to, when the caller knows it.
    pub fn new(n: Nic, names: &InstanceNames) -> Self {
        NicView {
            instance_name: n.instance_id.as_ref().and_then(|i| names.get(i).cloned()),
            network_interface_id: n.network_interface_id,
            network_interface_name: n.network_interface_name,
            mac: n.mac,
            ip: n.ip,
            bridge: n.bridge,
            status: n.status,
            instance_id: n.instance_id,
            attach_time: n.attach_time,
            describe: n.describe,
            error_message: message(n.error_message),
            create_time: n.create_time,
        }
    }
}
