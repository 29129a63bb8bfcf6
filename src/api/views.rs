//! How each resource looks on the wire: one view per resource, used by every endpoint that
//! shows it (lists, details, and the answers of the calls that change it). They also deserialize,
//! so the integration tests read answers as these types; `views_are_pinned` fixes their fields.

use crate::db::images::Image;
use crate::db::instances::Instance;
use crate::db::nics::Nic;
use crate::db::snapshots::Covered;
use crate::db::volumes::Volume;
use crate::model::{
    HostId, HostStatus, ImageId, ImageStatus, InstanceId, InstanceStatus, NicId, NicStatus,
    SnapshotId, SnapshotStatus, VolumeId, VolumeStatus,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Names of the instances a page of volumes or NICs is attached to.
pub type InstanceNames = HashMap<InstanceId, String>;

fn message(m: Option<String>) -> Option<String> {
    m.filter(|m| !m.is_empty())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageView {
    pub image_id: ImageId,
    pub image_name: String,
    /// bytes
    pub image_size: u64,
    pub os_type: String,
    pub describe: String,
    pub status: ImageStatus,
    pub error_message: Option<String>,
    pub image_location: String,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
    /// `public` (every project may boot it) or `private` (its project's only).
    pub visibility: String,
    /// Percent done of the copy that makes it (`images/create_from_snapshot`), while it runs.
    pub progress: Option<u8>,
    /// The snapshot (and its volume) it was copied from, if any.
    pub source_snapshot_id: Option<SnapshotId>,
    pub source_volume_id: Option<VolumeId>,
    /// SHA-256 (hex) of the file an upload received.
    pub sha256: Option<String>,
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
            project_id: i.project_id,
            visibility: i.visibility,
            progress: i.progress,
            source_snapshot_id: i.source_snapshot_id,
            source_volume_id: i.source_volume_id,
            sha256: i.sha256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance_id: InstanceId,
    pub instance_name: String,
    pub status: InstanceStatus,
    pub ip: Option<String>,
    pub host_ip: String,
    pub host_id: HostId,
    pub cpu: u32,
    /// MiB
    pub memory: u64,
    pub image_id: ImageId,
    /// GiB
    pub root_size: Option<u64>,
    pub describe: String,
    pub progress: u8,
    pub progress_step: String,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
}

impl From<Instance> for InstanceView {
    fn from(i: Instance) -> Self {
        InstanceView {
            instance_id: i.instance_id,
            instance_name: i.instance_name,
            status: i.status,
            ip: i.ip,
            host_ip: i.host_ip,
            host_id: i.host_id,
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
            project_id: i.project_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeView {
    pub volume_id: VolumeId,
    pub volume_name: String,
    /// GiB
    pub volume_size: u64,
    pub status: VolumeStatus,
    pub instance_id: Option<InstanceId>,
    pub instance_name: Option<String>,
    pub target_dev: Option<String>,
    pub is_root: bool,
    /// Made by instance/create for its instance: destroyed with it unless detached first.
    pub delete_with_instance: bool,
    pub describe: String,
    pub error_message: Option<String>,
    pub attach_time: Option<u64>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
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
            delete_with_instance: v.delete_with_instance,
            describe: v.describe,
            error_message: message(v.error_message),
            attach_time: v.attach_time,
            create_time: v.create_time,
            update_time: v.update_time,
            project_id: v.project_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NicView {
    pub network_interface_id: NicId,
    pub network_interface_name: String,
    pub mac: String,
    pub ip: Option<String>,
    pub bridge: String,
    pub status: NicStatus,
    pub instance_id: Option<InstanceId>,
    pub instance_name: Option<String>,
    pub attach_time: Option<u64>,
    /// Made by instance/create for its instance: destroyed with it unless detached first.
    pub delete_with_instance: bool,
    pub describe: String,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub project_id: String,
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
            delete_with_instance: n.delete_with_instance,
            describe: n.describe,
            error_message: message(n.error_message),
            create_time: n.create_time,
            project_id: n.project_id,
        }
    }
}

/// One volume a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotVolumeView {
    pub volume_id: VolumeId,
    /// GiB when the snapshot was taken (a restore gives the volume this size back).
    pub volume_size: u64,
    pub is_root: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotView {
    pub snapshot_id: SnapshotId,
    pub snapshot_name: String,
    /// An instance snapshot: every disk of this instance, taken together.
    pub instance_id: Option<InstanceId>,
    /// A volume snapshot: this volume alone.
    pub volume_id: Option<VolumeId>,
    pub status: SnapshotStatus,
    /// How long the guest was suspended while its disks were snapshotted (a running instance).
    pub suspended_ms: Option<u64>,
    pub volumes: Vec<SnapshotVolumeView>,
    pub error_message: Option<String>,
    pub create_time: u64,
    pub update_time: u64,
    pub project_id: String,
}

impl SnapshotView {
    pub fn new(d: crate::service::snapshots::Detail) -> Self {
        let s = d.snapshot;
        SnapshotView {
            snapshot_id: s.snapshot_id,
            snapshot_name: s.snapshot_name,
            instance_id: s.instance_id,
            volume_id: s.volume_id,
            status: s.status,
            suspended_ms: s.suspended_ms,
            volumes: d
                .volumes
                .into_iter()
                .map(|c: Covered| SnapshotVolumeView {
                    volume_id: c.volume_id,
                    volume_size: c.volume_size,
                    is_root: c.is_root,
                })
                .collect(),
            error_message: message(s.error_message),
            create_time: s.create_time,
            update_time: s.update_time,
            project_id: s.project_id,
        }
    }
}

/// A hypervisor host: what an admin set, what its last probe found, what runs there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host_id: HostId,
    pub host_name: String,
    pub uri: String,
    pub address: String,
    /// `enabled`, or `disabled` (maintenance: nothing new is placed there).
    pub status: HostStatus,
    /// The last probe reached it (probes run every 5 s).
    pub online: bool,
    /// When a probe last reached it (Unix seconds).
    pub last_contact: Option<u64>,
    /// Why the last probe failed.
    pub error_message: Option<String>,
    pub host_uuid: Option<String>,
    /// It is `libvirt.uri` of the configuration.
    pub configured: bool,
    pub arch: String,
    pub cpu_model: String,
    pub cpu_sockets: u32,
    pub cpu_cores: u32,
    pub cpu_threads: u32,
    pub cpus: u32,
    pub memory_mib: u64,
    pub memory_free_mib: u64,
    pub libvirt_version: String,
    pub qemu_version: String,
    pub machine_types: Vec<String>,
    pub firmware: Vec<String>,
    pub kvm: bool,
    /// The configured bridges it has (placement puts NICs only where their bridge is).
    pub bridges: Vec<String>,
    /// An admin's capacity in place of `cpus` / `memory_mib` (`null`: the host's own).
    pub cpu_capacity: Option<u32>,
    pub memory_capacity_mib: Option<u64>,
    /// What placement allows here in all (capacity times `placement.*_allocation_ratio`).
    pub vcpus_limit: u64,
    pub memory_limit_mib: u64,
    pub tags: Vec<String>,
    pub instances: u64,
    pub allocated_vcpus: u64,
    pub allocated_memory_mib: u64,
    pub create_time: u64,
    pub update_time: u64,
}

impl From<crate::service::hosts::Detail> for HostView {
    fn from(d: crate::service::hosts::Detail) -> Self {
        use crate::service::hosts::strings;
        let h = d.host;
        HostView {
            host_id: h.host_id,
            host_name: h.host_name,
            uri: h.uri,
            address: h.address,
            status: h.status,
            online: h.online,
            last_contact: h.last_contact,
            error_message: message(h.error_message),
            host_uuid: h.host_uuid,
            configured: d.configured,
            arch: h.arch,
            cpu_model: h.cpu_model,
            cpu_sockets: h.cpu_sockets,
            cpu_cores: h.cpu_cores,
            cpu_threads: h.cpu_threads,
            cpus: h.cpus,
            memory_mib: h.memory_mib,
            memory_free_mib: h.memory_free_mib,
            libvirt_version: h.libvirt_version,
            qemu_version: h.qemu_version,
            machine_types: strings(&h.machine_types),
            firmware: strings(&h.firmware),
            kvm: h.kvm,
            bridges: strings(&h.bridges),
            cpu_capacity: h.cpu_capacity,
            memory_capacity_mib: h.memory_capacity_mib,
            vcpus_limit: d.limits.0,
            memory_limit_mib: d.limits.1,
            tags: strings(&h.tags),
            instances: d.allocated.instances,
            allocated_vcpus: d.allocated.vcpus,
            allocated_memory_mib: d.allocated.memory_mib,
            create_time: h.create_time,
            update_time: h.update_time,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn keys(v: impl Serialize) -> Vec<String> {
        match serde_json::to_value(v).unwrap() {
            Value::Object(o) => o.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    /// The wire names of every view: a rename here breaks the portal and the curl scripts.
    #[test]
    fn views_are_pinned() {
        let image = ImageView {
            image_id: ImageId::new("ami-1"),
            image_name: "n".into(),
            image_size: 1,
            os_type: "Linux".into(),
            describe: String::new(),
            status: ImageStatus::Available,
            error_message: None,
            image_location: "rbd:p/ami-1".into(),
            create_time: 0,
            update_time: 0,
            project_id: "prj-1".into(),
            visibility: "public".into(),
            progress: None,
            source_snapshot_id: None,
            source_volume_id: None,
            sha256: None,
        };
        assert_eq!(
            keys(&image).join(","),
            "create_time,describe,error_message,image_id,image_location,image_name,image_size,os_type,progress,project_id,sha256,source_snapshot_id,source_volume_id,status,update_time,visibility"
        );
        let instance = InstanceView {
            instance_id: InstanceId::new("i-1"),
            instance_name: "n".into(),
            status: InstanceStatus::Running,
            ip: None,
            host_ip: "h".into(),
            host_id: HostId::new("host-1"),
            cpu: 1,
            memory: 1,
            image_id: ImageId::new("ami-1"),
            root_size: None,
            describe: String::new(),
            progress: 100,
            progress_step: "running".into(),
            error_message: None,
            create_time: 0,
            update_time: 0,
            project_id: "prj-1".into(),
        };
        assert_eq!(
            keys(&instance).join(","),
            "cpu,create_time,describe,error_message,host_id,host_ip,image_id,instance_id,instance_name,ip,memory,progress,progress_step,project_id,root_size,status,update_time"
        );
        let volume = VolumeView {
            volume_id: VolumeId::new("vol-1"),
            volume_name: "n".into(),
            volume_size: 1,
            status: VolumeStatus::InUse,
            instance_id: None,
            instance_name: None,
            target_dev: None,
            is_root: false,
            delete_with_instance: false,
            describe: String::new(),
            error_message: None,
            attach_time: None,
            create_time: 0,
            update_time: 0,
            project_id: "prj-1".into(),
        };
        assert_eq!(
            keys(&volume).join(","),
            "attach_time,create_time,delete_with_instance,describe,error_message,instance_id,instance_name,is_root,project_id,status,target_dev,update_time,volume_id,volume_name,volume_size"
        );
        let nic = NicView {
            network_interface_id: NicId::new("eni-1"),
            network_interface_name: "n".into(),
            mac: "m".into(),
            ip: None,
            bridge: "b".into(),
            status: NicStatus::Attached,
            instance_id: None,
            instance_name: None,
            attach_time: None,
            delete_with_instance: false,
            describe: String::new(),
            error_message: None,
            create_time: 0,
            project_id: "prj-1".into(),
        };
        assert_eq!(
            keys(&nic).join(","),
            "attach_time,bridge,create_time,delete_with_instance,describe,error_message,instance_id,instance_name,ip,mac,network_interface_id,network_interface_name,project_id,status"
        );
        let snapshot = SnapshotView {
            snapshot_id: SnapshotId::new("snap-1"),
            snapshot_name: "n".into(),
            instance_id: None,
            volume_id: None,
            status: SnapshotStatus::Available,
            suspended_ms: None,
            volumes: vec![],
            error_message: None,
            create_time: 0,
            update_time: 0,
            project_id: "prj-1".into(),
        };
        assert_eq!(
            keys(&snapshot).join(","),
            "create_time,error_message,instance_id,project_id,snapshot_id,snapshot_name,status,suspended_ms,update_time,volume_id,volumes"
        );
        let host = HostView {
            host_id: HostId::new("host-1"),
            host_name: "h".into(),
            uri: "qemu:///system".into(),
            address: "127.0.0.1".into(),
            status: HostStatus::Enabled,
            online: true,
            last_contact: None,
            error_message: None,
            host_uuid: None,
            configured: true,
            arch: String::new(),
            cpu_model: String::new(),
            cpu_sockets: 1,
            cpu_cores: 1,
            cpu_threads: 1,
            cpus: 1,
            memory_mib: 1,
            memory_free_mib: 1,
            libvirt_version: String::new(),
            qemu_version: String::new(),
            machine_types: vec![],
            firmware: vec![],
            kvm: false,
            bridges: vec![],
            cpu_capacity: None,
            memory_capacity_mib: None,
            vcpus_limit: 0,
            memory_limit_mib: 0,
            tags: vec![],
            instances: 0,
            allocated_vcpus: 0,
            allocated_memory_mib: 0,
            create_time: 0,
            update_time: 0,
        };
        assert_eq!(
            keys(&host).join(","),
            "address,allocated_memory_mib,allocated_vcpus,arch,bridges,configured,cpu_capacity,cpu_cores,cpu_model,cpu_sockets,cpu_threads,cpus,create_time,error_message,firmware,host_id,host_name,host_uuid,instances,kvm,last_contact,libvirt_version,machine_types,memory_capacity_mib,memory_free_mib,memory_limit_mib,memory_mib,online,qemu_version,status,tags,update_time,uri,vcpus_limit"
        );
        // And each reads back as itself (the tests rely on it).
        let back: VolumeView =
            serde_json::from_value(serde_json::to_value(&volume).unwrap()).unwrap();
        assert_eq!(back, volume);
        assert_eq!(serde_json::to_value(VolumeStatus::InUse).unwrap(), "in-use");
    }
}
