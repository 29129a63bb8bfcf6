//! What an uploaded file is, by its content (never by its name): raw or qcow2, accepted; every
//! other disk format or archive api-web can name, refused with a message that says what it is.
//! A qcow2 header is read here too, and refused when it names a backing file or an external
//! data file (either would make QEMU open a file of the host's choosing: a known image-format
//! attack) or is encrypted.

/// Bytes of a file's start `sniff` wants (it reads what it is given, at most this).
pub const HEAD: usize = 4096;

/// The smallest raw image: one sector.
pub const MIN_RAW: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    Raw,
    Qcow2 { version: u32, virtual_size: u64 },
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 { .. } => "qcow2",
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// Known formats and archives that are not raw, by their magic at an offset.
const OTHERS: &[(usize, &[u8], &str)] = &[
    (0, b"KDMV", "a VMDK image (convert it to qcow2 or raw)"),
    (0, b"# Disk DescriptorFile", "a VMDK descriptor"),
    (0, b"COWD", "a VMDK (ESX COW) image"),
    (0, b"vhdxfile", "a VHDX image (convert it to qcow2 or raw)"),
    (0, b"conectix", "a VHD image (convert it to qcow2 or raw)"),
    (
        0x40,
        &[0x7f, 0x10, 0xda, 0xbe],
        "a VDI image (convert it to qcow2 or raw)",
    ),
    (0, b"QED\0", "a QED image"),
    (0, b"LUKS\xba\xbe", "a LUKS-encrypted image"),
    (0, &[0x1f, 0x8b], "a gzip archive (decompress it first)"),
    (
        0,
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        "an xz archive (decompress it first)",
    ),
    (
        0,
        &[0x28, 0xb5, 0x2f, 0xfd],
        "a zstd archive (decompress it first)",
    ),
    (0, b"BZh", "a bzip2 archive (decompress it first)"),
    (0, b"PK\x03\x04", "a zip archive (unpack it first)"),
    (
        0,
        &[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c],
        "a 7z archive (unpack it first)",
    ),
    (0x101, b"ustar", "a tar archive (unpack it first)"),
];

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
/// qcow2 v3 incompatible feature bit: the guest data lives in an external data file.
const QCOW2_EXTERNAL_DATA: u64 = 1 << 2;

/// What the file whose first bytes are `head` (`HEAD` of them, or the whole file if shorter)
/// is; `Err` says why it is refused.
pub fn sniff(head: &[u8]) -> Result<Format, String> {
    if head.starts_with(QCOW_MAGIC) {
        return qcow2(head);
    }
    for (at, magic, what) in OTHERS {
        if head.len() >= at + magic.len() && &head[*at..at + magic.len()] == *magic {
            return Err(format!(
                "the file is {what}; only raw and qcow2 images are accepted"
            ));
        }
    }
    if head.len() < MIN_RAW {
        return Err(format!(
            "the file is {} bytes: a raw disk image is at least one {MIN_RAW}-byte sector",
            head.len()
        ));
    }
    Ok(Format::Raw)
}

/// A qcow2 header: version 2 or 3, no backing file, no external data file, not encrypted.
fn qcow2(h: &[u8]) -> Result<Format, String> {
    if h.len() < 72 {
        return Err("the file starts like qcow2 but its header is cut short".into());
    }
    let version = be32(h, 4);
    if !(2..=3).contains(&version) {
        return Err(format!(
            "the file is qcow version {version}; only qcow2 (versions 2 and 3) and raw are accepted"
        ));
    }
    if be64(h, 8) != 0 {
        return Err(
            "the qcow2 image names a backing file; upload a standalone image (qemu-img convert -O qcow2 flattens it)"
                .into(),
        );
    }
    if be32(h, 32) != 0 {
        return Err("the qcow2 image is encrypted; upload it decrypted".into());
    }
    if version == 3 {
        if h.len() < 104 {
            return Err("the file starts like qcow2 v3 but its header is cut short".into());
        }
        if be64(h, 72) & QCOW2_EXTERNAL_DATA != 0 {
            return Err(
                "the qcow2 image keeps its data in an external data file; upload a standalone image"
                    .into(),
            );
        }
    }
    let virtual_size = be64(h, 24);
    if virtual_size == 0 {
        return Err("the qcow2 image has a virtual size of 0".into());
    }
    Ok(Format::Qcow2 {
        version,
        virtual_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2_header(version: u32, backing: u64, crypt: u32, incompat: u64, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&size.to_be_bytes());
        h[32..36].copy_from_slice(&crypt.to_be_bytes());
        h[72..80].copy_from_slice(&incompat.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        h
    }

    #[test]
    fn raw_and_qcow2_are_accepted() {
        assert_eq!(sniff(&[0u8; 512]), Ok(Format::Raw));
        let mut mbr = vec![0u8; 4096];
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        assert_eq!(sniff(&mbr), Ok(Format::Raw));
        assert_eq!(
            sniff(&qcow2_header(3, 0, 0, 0, 1 << 30)),
            Ok(Format::Qcow2 {
                version: 3,
                virtual_size: 1 << 30
            })
        );
        assert!(matches!(
            sniff(&qcow2_header(2, 0, 0, 0, 4096)),
            Ok(Format::Qcow2 { version: 2, .. })
        ));
    }

    #[test]
    fn dangerous_qcow2_is_refused() {
        let e = sniff(&qcow2_header(3, 0x200, 0, 0, 1 << 30)).unwrap_err();
        assert!(e.contains("backing file"), "{e}");
        let e = sniff(&qcow2_header(3, 0, 0, QCOW2_EXTERNAL_DATA, 1 << 30)).unwrap_err();
        assert!(e.contains("external data file"), "{e}");
        let e = sniff(&qcow2_header(2, 0, 1, 0, 1 << 30)).unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
        let e = sniff(&qcow2_header(1, 0, 0, 0, 1 << 30)).unwrap_err();
        assert!(e.contains("qcow version 1"), "{e}");
        assert!(sniff(&qcow2_header(3, 0, 0, 0, 1 << 30)[..50]).is_err());
    }

    #[test]
    fn other_formats_are_named() {
        let mut vmdk = vec![0u8; 1024];
        vmdk[..4].copy_from_slice(b"KDMV");
        assert!(sniff(&vmdk).unwrap_err().contains("VMDK"));
        let mut vdi = vec![0u8; 1024];
        vdi[0x40..0x44].copy_from_slice(&[0x7f, 0x10, 0xda, 0xbe]);
        assert!(sniff(&vdi).unwrap_err().contains("VDI"));
        let mut gz = vec![0u8; 1024];
        gz[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert!(sniff(&gz).unwrap_err().contains("gzip"));
        let e = sniff(b"hello").unwrap_err();
        assert!(e.contains("5 bytes"), "{e}");
    }
}
