//! Guest configuration: the NoCloud config drive every new instance boots with. An ISO 9660
//! image labelled `cidata` (made in memory by `crate::iso9660`: no loop device, no tool) holding
//! `meta-data` (instance id, hostname, SSH keys), `user-data` (the request's, byte for byte) and
//! `network-config` (version 2: each NIC by MAC with its address, prefix, gateway and DNS from
//! its bridge's pool), stored as the RBD image `<instance_id>.cidata` in the volumes pool (shared
//! storage, like the disks) and attached as a read-only CD-ROM. cloud-init's NoCloud source
//! reads it; so does the test image (`scripts/build-test-image.sh`).
//!
//! meta-data and network-config are JSON, which is YAML: values are escaped by construction.
//! The drive is written once, at create: NICs attached later are not in it (cloud-init reads it
//! at first boot only).

use crate::config::NetworkConfig;
use crate::db::nics::Nic;
use crate::error::{ApiError, ApiResult};
use crate::model::InstanceId;
use crate::service::Ctx;
use crate::xml::devices::{Disk, RbdAccess};
use base64::Engine;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// The volume label cloud-init's NoCloud source looks for.
pub const LABEL: &str = "cidata";
/// RBD name of an instance's config drive: `<instance_id>` + this.
pub const DRIVE_SUFFIX: &str = ".cidata";
/// Largest `user_data`, in bytes (the JSON body limit, `server.body_limit`, must allow it).
pub const MAX_USER_DATA: usize = 49_152;
pub const MAX_KEYS: usize = 32;
const MAX_KEY_LEN: usize = 16_384;
/// Key types OpenSSH accepts in authorized_keys (without options).
const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// What instance/create was told about the guest.
#[derive(Debug, Default, Clone)]
pub struct GuestConfig {
    /// None: made from the instance name (`default_hostname`).
    pub hostname: Option<String>,
    pub user_data: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
}

/// The request's guest settings, checked before anything is recorded.
pub fn validate(g: &GuestConfig) -> ApiResult<()> {
    if let Some(h) = &g.hostname {
        valid_hostname(h).map_err(|why| ApiError::invalid(format!("hostname: {why}")))?;
    }
    if let Some(u) = &g.user_data {
        if u.len() > MAX_USER_DATA {
            return Err(ApiError::invalid(format!(
                "user_data: {} bytes, at most {MAX_USER_DATA}",
                u.len()
            )));
        }
    }
    if g.ssh_authorized_keys.len() > MAX_KEYS {
        return Err(ApiError::invalid(format!(
            "ssh_authorized_keys: at most {MAX_KEYS} keys"
        )));
    }
    for (i, k) in g.ssh_authorized_keys.iter().enumerate() {
        valid_key(k)
            .map_err(|why| ApiError::invalid(format!("ssh_authorized_keys[{i}]: {why}")))?;
    }
    Ok(())
}

/// RFC 1123: dot-separated labels of 1-63 letters, digits and '-', not starting or ending
/// with '-'; 253 characters in all.
fn valid_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() || h.len() > 253 {
        return Err("1-253 characters".into());
    }
    for label in h.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{label:?} is not a host name label (1-63 letters, digits or '-', not at either end)"
            ));
        }
    }
    Ok(())
}

/// One authorized_keys line: `<type> <base64 key> [comment]`, the key's blob naming the same
/// type (a truncated or pasted-wrong key is refused here rather than silently not working).
fn valid_key(k: &str) -> Result<(), String> {
    if k.len() > MAX_KEY_LEN {
        return Err(format!("at most {MAX_KEY_LEN} characters"));
    }
    if k.chars().any(|c| c.is_control()) {
        return Err("one line, no control characters".into());
    }
    let mut parts = k.split_whitespace();
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return Err(
            "expected \"<type> <key> [comment]\", e.g. \"ssh-ed25519 AAAA... me@laptop\"".into(),
        );
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(format!(
            "key type {kind:?} is not one of {} (authorized_keys options are not accepted)",
            KEY_TYPES.join(", ")
        ));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| "the key is not valid base64".to_string())?;
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(kind.as_bytes()) {
        return Err(format!("the key's data is not a {kind} key"));
    }
    Ok(())
}

/// A host name from an instance name: lower case, runs of anything but letters and digits
/// made one '-', at most 63 characters; the instance id when nothing is left.
pub fn default_hostname(instance_name: &str, id: &InstanceId) -> String {
    let mut out = String::new();
    for c in instance_name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.chars().take(63).collect();
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        id.as_str().to_string()
    } else {
        out.to_string()
    }
}

pub fn drive_name(id: &InstanceId) -> String {
    format!("{id}{DRIVE_SUFFIX}")
}

/// The instance whose config drive an RBD image named `name` is (a generated instance id).
pub fn drive_of(name: &str) -> Option<InstanceId> {
    name.strip_suffix(DRIVE_SUFFIX)
        .filter(|i| InstanceId::is_generated(i))
        .map(InstanceId::new)
}

#[derive(Serialize)]
struct MetaData<'a> {
    #[serde(rename = "instance-id")]
    instance_id: &'a str,
    #[serde(rename = "local-hostname")]
    local_hostname: &'a str,
    #[serde(rename = "public-keys")]
    public_keys: Vec<&'a str>,
}

/// The three files of the drive.
pub fn files(
    id: &InstanceId,
    hostname: &str,
    g: &GuestConfig,
    nics: &[Nic],
    net: &NetworkConfig,
) -> Vec<(&'static str, Vec<u8>)> {
    let meta = MetaData {
        instance_id: id.as_str(),
        local_hostname: hostname,
        public_keys: g.ssh_authorized_keys.iter().map(|k| k.trim()).collect(),
    };
    vec![
        ("meta-data", pretty(&meta)),
        (
            "user-data",
            g.user_data.clone().unwrap_or_default().into_bytes(),
        ),
        ("network-config", pretty(&network_config(nics, net))),
    ]
}

/// Pretty JSON and a final newline (one value per line: easy to read on the guest).
fn pretty<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).unwrap_or_default();
    out.push(b'\n');
    out
}

/// cloud-init network config version 2: each NIC matched by its MAC, with its address and the
/// pool's prefix, or DHCP when it has none; the default route on the first NIC whose pool has a
/// gateway.
fn network_config(nics: &[Nic], net: &NetworkConfig) -> Value {
    let mut ethernets = Map::new();
    let mut routed = false;
    for (i, n) in nics.iter().enumerate() {
        let pool = net.pool_of(&n.bridge);
        let mut e = Map::new();
        e.insert(
            "match".into(),
            json!({ "macaddress": n.mac.to_ascii_lowercase() }),
        );
        match (&n.ip, pool) {
            (Some(ip), Some(p)) => {
                e.insert("addresses".into(), json!([format!("{ip}/{}", p.prefix)]));
                if let Some(g) = p.gateway.filter(|_| !routed) {
                    routed = true;
                    e.insert(
                        "routes".into(),
                        json!([{ "to": "0.0.0.0/0", "via": g.to_string() }]),
                    );
                }
                if !p.nameservers.is_empty() {
                    let ns: Vec<String> = p.nameservers.iter().map(|a| a.to_string()).collect();
                    e.insert("nameservers".into(), json!({ "addresses": ns }));
                }
            }
            // An address on a bridge without a pool: no prefix is known; a host route.
            (Some(ip), None) => {
                e.insert("addresses".into(), json!([format!("{ip}/32")]));
            }
            (None, _) => {
                e.insert("dhcp4".into(), json!(true));
            }
        }
        ethernets.insert(format!("nic{i}"), Value::Object(e));
    }
    json!({ "version": 2, "ethernets": ethernets })
}

/// The ISO image of the drive.
pub fn image(files: &[(&'static str, Vec<u8>)], when: u64) -> Result<Vec<u8>, String> {
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    crate::iso9660::build(LABEL, &refs, when).map_err(|e| format!("building the config drive: {e}"))
}

/// Stores the drive as its RBD image, marked as this deployment's.
pub fn write(ctx: &Ctx, id: &InstanceId, iso: &[u8], owner: &str) -> Result<(), String> {
    let pool = &ctx.cfg.ceph.volumes_pool;
    let name = drive_name(id);
    let fail = |e: crate::ceph::CephError| format!("could not write the config drive: {e}");
    ctx.ceph
        .create_image(pool, &name, iso.len() as u64, owner)
        .map_err(fail)?;
    let h = ctx.ceph.writer(pool, &name).map_err(fail)?;
    h.write_at(0, iso).map_err(fail)?;
    h.flush().map_err(fail)
}

/// Removes the drive (gone already is fine). The drive has no snapshots or clones, so EBUSY
/// means a client still watches it (the QEMU of a domain just stopped, another process reading
/// it): asked again for up to 5 s.
pub fn remove(ctx: &Ctx, id: &InstanceId) -> Result<(), crate::ceph::CephError> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match ctx
            .ceph
            .remove_image(&ctx.cfg.ceph.volumes_pool, &drive_name(id))
        {
            Err(e) if e.errno() == Some(libc::EBUSY) && std::time::Instant::now() < end => {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            r => return r.map(|_| ()),
        }
    }
}

/// The drive as a CD-ROM: IDE on the `pc` machine, SATA (its built-in AHCI) on `q35`.
pub fn cdrom(ctx: &Ctx, id: &InstanceId) -> Disk {
    let c = &ctx.cfg.ceph;
    let access = RbdAccess {
        mon_hosts: &c.mon_hosts,
        user: &c.qemu_user,
        secret_uuid: &c.secret_uuid,
    };
    let (dev, bus) = if ctx.cfg.libvirt.machine.contains("q35") {
        ("sda", "sata")
    } else {
        ("hdc", "ide")
    };
    Disk::rbd_cdrom(&access, &c.volumes_pool, &drive_name(id), dev, bus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";

    fn nic(mac: &str, ip: Option<&str>, bridge: &str) -> Nic {
        Nic {
            network_interface_id: crate::model::NicId::new("eni-1"),
            network_interface_name: "n".into(),
            mac: mac.into(),
            ip: ip.map(String::from),
            bridge: bridge.into(),
            status: crate::model::NicStatus::Attaching,
            instance_id: None,
            describe: String::new(),
            error_message: None,
            attach_time: None,
            create_time: 0,
            update_time: 0,
            project_id: "p".into(),
            delete_with_instance: false,
        }
    }

    #[test]
    fn keys_hostnames_and_user_data_are_checked() {
        let ok = GuestConfig {
            hostname: Some("web-1.example.org".into()),
            user_data: Some("#cloud-config\n".into()),
            ssh_authorized_keys: vec![ED25519.into()],
        };
        validate(&ok).unwrap();
        let bad = |g: GuestConfig, needle: &str| {
            let e = validate(&g).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        for h in ["", "-a", "a-", "a..b", "a_b", "a b", &"x".repeat(64)] {
            bad(
                GuestConfig {
                    hostname: Some(h.into()),
                    ..Default::default()
                },
                "hostname",
            );
        }
        let key = |k: &str| GuestConfig {
            ssh_authorized_keys: vec![ED25519.into(), k.into()],
            ..Default::default()
        };
        bad(key("ssh-ed25519"), "ssh_authorized_keys[1]: expected");
        bad(key("ssh-dsa AAAA"), "key type \"ssh-dsa\"");
        bad(
            key("command=\"x\" ssh-ed25519 AAAA"),
            "options are not accepted",
        );
        bad(key("ssh-ed25519 !!!"), "not valid base64");
        // An RSA blob labelled ed25519.
        bad(
            key("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB"),
            "not a ssh-ed25519 key",
        );
        bad(key(&format!("{ED25519}\nssh-rsa AAAA")), "one line");
        bad(
            GuestConfig {
                user_data: Some("x".repeat(MAX_USER_DATA + 1)),
                ..Default::default()
            },
            "user_data",
        );
    }

    #[test]
    fn default_hostnames_come_from_the_name() {
        let id = InstanceId::new("i-0000abcd");
        assert_eq!(
            default_hostname("My Web  Server #1", &id),
            "my-web-server-1"
        );
        assert_eq!(default_hostname("--", &id), "i-0000abcd");
        assert_eq!(default_hostname("数据库", &id), "i-0000abcd");
        assert_eq!(default_hostname(&"a".repeat(80), &id).len(), 63);
        assert_eq!(drive_of("i-0000abcd.cidata"), Some(id.clone()));
        assert_eq!(drive_of("vol-0000abcd"), None);
        assert_eq!(drive_of("x.cidata"), None);
    }

    #[test]
    fn network_config_gives_each_nic_its_address_and_one_default_route() {
        let net = NetworkConfig::default();
        let nics = [
            nic("0A:70:69:00:00:01", Some("10.77.0.10"), "apiwebbr0"),
            nic("0a:70:69:00:00:02", Some("10.77.0.11"), "apiwebbr0"),
            nic("0a:70:69:00:00:03", None, "apiwebbr0"),
            nic("0a:70:69:00:00:04", Some("192.0.2.7"), "other"),
        ];
        let v = network_config(&nics, &net);
        assert_eq!(
            v,
            json!({"version": 2, "ethernets": {
                "nic0": {"match": {"macaddress": "0a:70:69:00:00:01"}, "addresses": ["10.77.0.10/24"],
                         "routes": [{"to": "0.0.0.0/0", "via": "10.77.0.1"}]},
                "nic1": {"match": {"macaddress": "0a:70:69:00:00:02"}, "addresses": ["10.77.0.11/24"]},
                "nic2": {"match": {"macaddress": "0a:70:69:00:00:03"}, "dhcp4": true},
                "nic3": {"match": {"macaddress": "0a:70:69:00:00:04"}, "addresses": ["192.0.2.7/32"]},
            }})
        );
        let g = GuestConfig {
            hostname: None,
            user_data: Some("#!/bin/sh\necho hi\n".into()),
            ssh_authorized_keys: vec![format!("  {ED25519} ")],
        };
        let f = files(&InstanceId::new("i-1"), "web", &g, &nics[..1], &net);
        let meta: Value = serde_json::from_slice(&f[0].1).unwrap();
        assert_eq!(
            meta,
            json!({"instance-id": "i-1", "local-hostname": "web", "public-keys": [ED25519]})
        );
        assert_eq!(f[1].1, b"#!/bin/sh\necho hi\n");
        assert_eq!(f[2].0, "network-config");
    }
}
