//! libvirt device XML, one struct per element; optional attributes are left out when
//! absent. Serialised by quick-xml, which escapes every text and attribute value.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "disk")]
pub struct Disk {
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(rename = "@device")]
    pub device: String,
    pub driver: Driver,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    pub source: DiskSource,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Driver {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(rename = "@cache", default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(rename = "@username")]
    pub username: String,
    pub secret: AuthSecret,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthSecret {
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(rename = "@uuid")]
    pub uuid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskSource {
    #[serde(rename = "@protocol")]
    pub protocol: String,
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(default)]
    pub host: Vec<Host>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Host {
    #[serde(rename = "@name")]
    pub name: String,
    #[serde(rename = "@port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "@dev")]
    pub dev: String,
    #[serde(rename = "@bus")]
    pub bus: String,
}

/// Where QEMU finds an RBD image and how it authenticates.
#[derive(Debug, Clone)]
pub struct RbdAccess<'a> {
    pub mon_hosts: &'a [String],
    pub user: &'a str,
    pub secret_uuid: &'a str,
}

impl Disk {
    /// A virtio RBD disk `pool/image`, cephx through the libvirt secret, `<serial>` naming it.
    pub fn rbd(access: &RbdAccess, pool: &str, image: &str, dev: &str, serial: &str) -> Disk {
        let host = access
            .mon_hosts
            .iter()
            .filter_map(|h| crate::config::parse_host_port(h))
            .map(|(name, port)| Host {
                name: name.to_string(),
                port: Some(port),
            })
            .collect();
        Disk {
            kind: "network".into(),
            device: "disk".into(),
            driver: Driver {
                name: "qemu".into(),
                kind: "raw".into(),
                cache: Some("none".into()),
            },
            auth: Some(Auth {
                username: access.user.to_string(),
                secret: AuthSecret {
                    kind: "ceph".into(),
                    uuid: access.secret_uuid.to_string(),
                },
            }),
            source: DiskSource {
                protocol: "rbd".into(),
                name: format!("{pool}/{image}"),
                host,
            },
            target: Target {
                dev: dev.to_string(),
                bus: "virtio".into(),
            },
            serial: Some(serial.to_string()),
        }
    }
}

impl Disk {
    /// A read-only CD-ROM reading the RBD image `pool/image` (a config drive), on `bus`
    /// (`ide` for the `pc` machine, `sata` for `q35`).
    pub fn rbd_cdrom(access: &RbdAccess, pool: &str, image: &str, dev: &str, bus: &str) -> Disk {
        let mut d = Disk::rbd(access, pool, image, dev, image);
        d.device = "cdrom".into();
        d.target.bus = bus.to_string();
        d.serial = None;
        d
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename = "interface")]
pub struct Interface {
    #[serde(rename = "@type")]
    pub kind: String,
    pub mac: Mac,
    pub source: BridgeSource,
    pub model: Model,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mac {
    #[serde(rename = "@address")]
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgeSource {
    #[serde(rename = "@bridge")]
    pub bridge: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    #[serde(rename = "@type")]
    pub kind: String,
}

impl Interface {
    /// A virtio NIC on a Linux bridge.
    pub fn bridge(bridge: &str, mac: &str) -> Interface {
        Interface {
            kind: "bridge".into(),
            mac: Mac {
                address: mac.to_string(),
            },
            source: BridgeSource {
                bridge: bridge.to_string(),
            },
            model: Model {
                kind: "virtio".into(),
            },
        }
    }
}

/// Serialises a device; quick-xml escapes all values.
pub fn to_xml<T: Serialize>(v: &T) -> Result<String, quick_xml::SeError> {
    quick_xml::se::to_string(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> (Vec<String>, RbdAccess<'static>) {
        let hosts: &'static [String] = Box::leak(Box::new(["127.0.0.1:16789".to_string()]));
        (
            hosts.to_vec(),
            RbdAccess {
                mon_hosts: hosts,
                user: "libvirt",
                secret_uuid: "8d3b6f2a-51c4-4e0b-9c1f-a9e0c0de0a01",
            },
        )
    }

    #[test]
    fn rbd_disk_snapshot_and_round_trip() {
        let (_, a) = access();
        let d = Disk::rbd(&a, "volumes", "vol-1a2b3c4d", "vdb", "vol-1a2b3c4d");
        let xml = to_xml(&d).unwrap();
        assert_eq!(
            xml,
            "<disk type=\"network\" device=\"disk\">\
             <driver name=\"qemu\" type=\"raw\" cache=\"none\"/>\
             <auth username=\"libvirt\"><secret type=\"ceph\" uuid=\"8d3b6f2a-51c4-4e0b-9c1f-a9e0c0de0a01\"/></auth>\
             <source protocol=\"rbd\" name=\"volumes/vol-1a2b3c4d\"><host name=\"127.0.0.1\" port=\"16789\"/></source>\
             <target dev=\"vdb\" bus=\"virtio\"/>\
             <serial>vol-1a2b3c4d</serial></disk>"
        );
        let back: Disk = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn interface_snapshot_and_round_trip() {
        let i = Interface::bridge("apiwebbr0", "52:54:00:aa:bb:02");
        let xml = to_xml(&i).unwrap();
        assert_eq!(
            xml,
            "<interface type=\"bridge\"><mac address=\"52:54:00:aa:bb:02\"/>\
             <source bridge=\"apiwebbr0\"/><model type=\"virtio\"/></interface>"
        );
        let back: Interface = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(back, i);
    }

    #[test]
    fn values_are_escaped() {
        let evil = "br\"/><evil a='1'>&";
        let i = Interface::bridge(evil, "52:54:00:aa:bb:02");
        let xml = to_xml(&i).unwrap();
        assert!(
            xml.contains("<source bridge=\"br&quot;/&gt;&lt;evil a='1'&gt;&amp;\"/>"),
            "{xml}"
        );
        let back: Interface = quick_xml::de::from_str(&xml).unwrap();
        assert_eq!(back.source.bridge, evil);
    }
}
