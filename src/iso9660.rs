//! A minimal ISO 9660 writer with Joliet names, in memory: one root directory of small files,
//! which is what a NoCloud config drive (`cidata`) is. No loop device, no mount, no external
//! tool. Layout, in 2048-byte sectors:
//!
//! ```text
//! 0-15  system area (zeros)     16 primary volume descriptor    17 Joliet supplementary one
//! 18    terminator              19-22 path tables (primary L, M; Joliet L, M)
//! 23    primary root directory  24 Joliet root directory        25.. the files, each from a
//!                                                               sector boundary
//! ```
//!
//! The primary directory carries ISO 9660 level 1 names (`META_DAT.;1`); Linux, cloud-init and
//! Windows read the Joliet names (`meta-data`), which are the real ones.

const SECTOR: usize = 2048;
const PVD: usize = 16;
const SVD: usize = 17;
const TERMINATOR: usize = 18;
const PATH_TABLES: usize = 19;
const ROOT: usize = 23;
const JOLIET_ROOT: usize = 24;
const FIRST_FILE: usize = 25;
/// A root directory must fit one sector: 2048 bytes hold `.`, `..` and about 30 short names.
const MAX_FILES: usize = 16;
const MAX_NAME: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IsoError {
    #[error("at most {MAX_FILES} files")]
    TooManyFiles,
    #[error("file name {0:?}: 1-{MAX_NAME} characters of a-z, 0-9, '-', '_' and '.'")]
    BadName(String),
    #[error("file name {0:?} is given twice")]
    Duplicate(String),
    #[error("the volume label must be 1-16 ASCII letters, digits or '_'")]
    BadLabel,
}

/// An ISO 9660 image labelled `label` holding `files` (name, content) in its root directory;
/// `when` (seconds since the epoch, UTC) dates the volume and every file.
pub fn build(label: &str, files: &[(&str, &[u8])], when: u64) -> Result<Vec<u8>, IsoError> {
    if label.is_empty()
        || label.len() > 16
        || !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(IsoError::BadLabel);
    }
    if files.len() > MAX_FILES {
        return Err(IsoError::TooManyFiles);
    }
    for (i, (name, _)) in files.iter().enumerate() {
        let ok = (1..=MAX_NAME).contains(&name.len())
            && name
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'));
        if !ok {
            return Err(IsoError::BadName(name.to_string()));
        }
        if files[..i].iter().any(|(n, _)| n == name) {
            return Err(IsoError::Duplicate(name.to_string()));
        }
    }
    // Where each file starts, in the order given.
    let mut extents = Vec::with_capacity(files.len());
    let mut next = FIRST_FILE;
    for (_, data) in files {
        extents.push(next);
        next += data.len().div_ceil(SECTOR).max(1);
    }
    let total = next;
    let mut img = vec![0u8; total * SECTOR];
    let date = Date::from_epoch(when);

    let entries = |joliet: bool| -> Vec<(Vec<u8>, usize, usize)> {
        let mut v: Vec<(Vec<u8>, usize, usize)> = files
            .iter()
            .zip(&extents)
            .map(|((name, data), &at)| {
                let id = if joliet {
                    joliet_name(name)
                } else {
                    primary_name(name)
                };
                (id, at, data.len())
            })
            .collect();
        // Directory records are sorted by identifier (ECMA-119 9.3).
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let primary = entries(false);
    if primary.windows(2).any(|w| w[0].0 == w[1].0) {
        // Two names that differ only past their level-1 8.3 form (`meta-data1`, `meta-data2`):
        // the Joliet names still differ, but the primary directory cannot hold both.
        return Err(IsoError::Duplicate(
            "two names with the same 8.3 form".into(),
        ));
    }
    write_directory(&mut img, ROOT, &primary, &date);
    write_directory(&mut img, JOLIET_ROOT, &entries(true), &date);
    write_path_tables(&mut img);
    write_descriptor(&mut img, PVD, label, total, ROOT, PATH_TABLES, &date, false);
    write_descriptor(
        &mut img,
        SVD,
        label,
        total,
        JOLIET_ROOT,
        PATH_TABLES + 2,
        &date,
        true,
    );
    let t = &mut img[TERMINATOR * SECTOR..];
    t[0] = 255;
    t[1..6].copy_from_slice(b"CD001");
    t[6] = 1;
    for ((_, data), &at) in files.iter().zip(&extents) {
        img[at * SECTOR..at * SECTOR + data.len()].copy_from_slice(data);
    }
    Ok(img)
}

/// Level 1: at most 8 characters, a dot, at most 3 of extension, `;1`; upper case, `_` for the
/// rest.
fn primary_name(name: &str) -> Vec<u8> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let d = |s: &str, n: usize| -> String {
        s.bytes()
            .take(n)
            .map(|b| match b {
                b'a'..=b'z' => (b - 32) as char,
                b'0'..=b'9' => b as char,
                _ => '_',
            })
            .collect()
    };
    format!("{}.{};1", d(stem, 8), d(ext, 3)).into_bytes()
}

/// Joliet: UCS-2 big endian, with the `;1` version.
fn joliet_name(name: &str) -> Vec<u8> {
    format!("{name};1")
        .encode_utf16()
        .flat_map(u16::to_be_bytes)
        .collect()
}

/// ECMA-119 8.4.26.1: 17 bytes of digits, hundredths and a 15-minute offset (0: UTC); and
/// 9.1.5: 7 bytes (years since 1900, month, day, hour, minute, second, offset).
struct Date {
    y: u32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
}

impl Date {
    fn from_epoch(secs: u64) -> Date {
        // Howard Hinnant's civil_from_days.
        let days = (secs / 86_400) as i64;
        let rem = (secs % 86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let mo = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let y = (yoe + era * 400 + i64::from(mo <= 2)) as u32;
        Date {
            y,
            mo,
            d,
            h: rem / 3600,
            mi: rem / 60 % 60,
            s: rem % 60,
        }
    }
    fn long(&self) -> [u8; 17] {
        let mut out = [0u8; 17];
        let s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}00",
            self.y, self.mo, self.d, self.h, self.mi, self.s
        );
        out[..16].copy_from_slice(s.as_bytes());
        out
    }
    fn short(&self) -> [u8; 7] {
        [
            (self.y.saturating_sub(1900)).min(255) as u8,
            self.mo as u8,
            self.d as u8,
            self.h as u8,
            self.mi as u8,
            self.s as u8,
            0,
        ]
    }
}

fn both16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_le_bytes());
    b[2..4].copy_from_slice(&v.to_be_bytes());
}

fn both32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_le_bytes());
    b[4..8].copy_from_slice(&v.to_be_bytes());
}

/// One directory record; returns its length.
fn record(out: &mut [u8], id: &[u8], extent: usize, len: usize, dir: bool, date: &Date) -> usize {
    let n = 33 + id.len() + (id.len() + 1) % 2;
    out[0] = n as u8;
    both32(&mut out[2..], extent as u32);
    both32(&mut out[10..], len as u32);
    out[18..25].copy_from_slice(&date.short());
    out[25] = if dir { 2 } else { 0 };
    both16(&mut out[28..], 1);
    out[32] = id.len() as u8;
    out[33..33 + id.len()].copy_from_slice(id);
    n
}

fn write_directory(img: &mut [u8], at: usize, files: &[(Vec<u8>, usize, usize)], date: &Date) {
    let sec = &mut img[at * SECTOR..(at + 1) * SECTOR];
    let mut p = record(sec, &[0], at, SECTOR, true, date);
    p += record(&mut sec[p..], &[1], at, SECTOR, true, date);
    for (id, extent, len) in files {
        p += record(&mut sec[p..], id, *extent, *len, false, date);
    }
}

/// Path tables of the one (root) directory: L (little endian) and M (big endian), for the
/// primary tree and then for the Joliet one.
fn write_path_tables(img: &mut [u8]) {
    for (i, root) in [ROOT, ROOT, JOLIET_ROOT, JOLIET_ROOT]
        .into_iter()
        .enumerate()
    {
        let t = &mut img[(PATH_TABLES + i) * SECTOR..];
        t[0] = 1;
        if i % 2 == 0 {
            t[2..6].copy_from_slice(&(root as u32).to_le_bytes());
            t[6..8].copy_from_slice(&1u16.to_le_bytes());
        } else {
            t[2..6].copy_from_slice(&(root as u32).to_be_bytes());
            t[6..8].copy_from_slice(&1u16.to_be_bytes());
        }
    }
}

/// A text field: ASCII padded with spaces, or (Joliet) UCS-2 big endian padded with spaces.
fn text(out: &mut [u8], s: &str, joliet: bool) {
    if joliet {
        let units: Vec<u16> = s.encode_utf16().collect();
        for (i, c) in out.chunks_exact_mut(2).enumerate() {
            c.copy_from_slice(&units.get(i).copied().unwrap_or(0x20).to_be_bytes());
        }
    } else {
        for (i, b) in out.iter_mut().enumerate() {
            *b = s.as_bytes().get(i).copied().unwrap_or(b' ');
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write_descriptor(
    img: &mut [u8],
    at: usize,
    label: &str,
    total: usize,
    root: usize,
    path_table: usize,
    date: &Date,
    joliet: bool,
) {
    let d = &mut img[at * SECTOR..(at + 1) * SECTOR];
    d[0] = if joliet { 2 } else { 1 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    text(&mut d[8..40], "LINUX", joliet);
    text(&mut d[40..72], label, joliet);
    both32(&mut d[80..], total as u32);
    if joliet {
        // UCS-2 level 3.
        d[88..91].copy_from_slice(b"%/E");
    }
    both16(&mut d[120..], 1);
    both16(&mut d[124..], 1);
    both16(&mut d[128..], SECTOR as u16);
    both32(&mut d[132..], 10);
    d[140..144].copy_from_slice(&(path_table as u32).to_le_bytes());
    d[148..152].copy_from_slice(&((path_table + 1) as u32).to_be_bytes());
    let mut r = [0u8; 34];
    record(&mut r, &[0], root, SECTOR, true, date);
    d[156..190].copy_from_slice(&r);
    for (from, to) in [(190, 318), (318, 446), (446, 574)] {
        text(&mut d[from..to], "", joliet);
    }
    text(&mut d[574..702], "API-WEB", joliet);
    for (from, to) in [(702, 739), (739, 776), (776, 813)] {
        text(&mut d[from..to], "", joliet);
    }
    let long = date.long();
    d[813..830].copy_from_slice(&long);
    d[830..847].copy_from_slice(&long);
    let mut never = [b'0'; 17];
    never[16] = 0;
    d[847..864].copy_from_slice(&never);
    d[864..881].copy_from_slice(&long);
    d[881] = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32le(b: &[u8]) -> usize {
        u32::from_le_bytes(b[..4].try_into().unwrap()) as usize
    }

    /// Reads a root directory back: (identifier, extent, length) of each file record.
    fn read_dir(img: &[u8], at: usize) -> Vec<(Vec<u8>, usize, usize)> {
        let sec = &img[at * SECTOR..(at + 1) * SECTOR];
        let mut out = vec![];
        let mut p = 0;
        while p < SECTOR && sec[p] != 0 {
            let n = sec[p] as usize;
            let id = sec[p + 33..p + 33 + sec[p + 32] as usize].to_vec();
            out.push((id, u32le(&sec[p + 2..]), u32le(&sec[p + 10..])));
            p += n;
        }
        out
    }

    #[test]
    fn descriptors_directories_and_data_are_where_the_standard_puts_them() {
        let big = vec![7u8; 5000];
        let files: [(&str, &[u8]); 3] = [
            ("user-data", b"#cloud-config\n"),
            ("meta-data", &big),
            ("network-config", b"{}"),
        ];
        let img = build("cidata", &files, 1_765_000_000).unwrap();
        // 25 fixed sectors, then 1 + 3 + 1 sectors of files.
        assert_eq!(img.len(), 30 * SECTOR);
        let pvd = &img[PVD * SECTOR..];
        assert_eq!(&pvd[..7], b"\x01CD001\x01");
        assert_eq!(&pvd[40..46], b"cidata");
        assert_eq!(u32le(&pvd[80..]), 30);
        assert_eq!(&pvd[84..88], &30u32.to_be_bytes());
        // 2025-12-06 05:46:40 UTC.
        assert_eq!(&pvd[813..829], b"2025120605464000");
        let svd = &img[SVD * SECTOR..];
        assert_eq!(&svd[..7], b"\x02CD001\x01");
        assert_eq!(&svd[88..91], b"%/E");
        assert_eq!(&svd[40..52], &joliet_name("cidata")[..12]);
        assert_eq!(img[TERMINATOR * SECTOR], 255);

        let joliet = read_dir(&img, JOLIET_ROOT);
        let names: Vec<String> = joliet[2..]
            .iter()
            .map(|(id, _, _)| {
                let u: Vec<u16> = id
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16(&u).unwrap()
            })
            .collect();
        assert_eq!(names, ["meta-data;1", "network-config;1", "user-data;1"]);
        let primary = read_dir(&img, ROOT);
        let names: Vec<&[u8]> = primary[2..].iter().map(|(id, _, _)| &id[..]).collect();
        assert_eq!(names, [&b"META_DAT.;1"[..], b"NETWORK_.;1", b"USER_DAT.;1"]);
        for (name, data) in files {
            let id = joliet_name(name);
            let (_, at, len) = joliet.iter().find(|(i, _, _)| *i == id).unwrap();
            assert_eq!(&img[at * SECTOR..at * SECTOR + len], data, "{name}");
            // Both trees point at the same bytes.
            assert!(primary.iter().any(|(_, a, l)| a == at && l == len));
        }
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(build("", &[], 0), Err(IsoError::BadLabel));
        assert_eq!(build("ci data", &[], 0), Err(IsoError::BadLabel));
        let e = build("cidata", &[("Meta", b"")], 0).unwrap_err();
        assert_eq!(e, IsoError::BadName("Meta".into()));
        let e = build("cidata", &[("a", b""), ("a", b"")], 0).unwrap_err();
        assert_eq!(e, IsoError::Duplicate("a".into()));
        assert!(build("cidata", &[("meta-data1", b""), ("meta-data2", b"")], 0).is_err());
        let many: Vec<(String, &[u8])> = (0..17).map(|i| (format!("f{i}"), &b""[..])).collect();
        let many: Vec<(&str, &[u8])> = many.iter().map(|(n, d)| (n.as_str(), *d)).collect();
        assert_eq!(build("cidata", &many, 0), Err(IsoError::TooManyFiles));
    }

    #[test]
    fn an_empty_file_still_has_its_own_sector() {
        let img = build("cidata", &[("user-data", b""), ("meta-data", b"x")], 0).unwrap();
        let dir = read_dir(&img, JOLIET_ROOT);
        assert_eq!(dir[2].1, 26); // meta-data sorts first, at the second file sector
        assert_eq!(dir[3].1, 25);
        assert_eq!(dir[3].2, 0);
    }
}
