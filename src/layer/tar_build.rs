//! Tar header bytes for entries a producer builds itself (an image built from a directory): a
//! ustar header, preceded by a PAX extended header for what ustar cannot hold (long names and link
//! targets, large ids and sizes, extended attributes; one with an empty value is left out, as Go's
//! reader, and so c/storage, takes an empty PAX value for no attribute). Deterministic: the same header gives the
//! same bytes (no user or group names, no access times, whole-second mtimes).

use super::tar_header::{BLOCK, EntryKind, TarHeader};

/// The largest value of an 8-byte octal field (7 digits).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// The largest value of a 12-byte octal field (11 digits).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// Writes `v` as zero-padded octal with a NUL into `field`.
fn octal(field: &mut [u8], v: u64) {
    let digits = field.len() - 1;
    let s = format!("{v:0digits$o}");
    let s = s.as_bytes();
    // A value too wide is carried by a PAX record; the field then holds its low digits.
    field[..digits].copy_from_slice(&s[s.len() - digits..]);
    field[digits] = 0;
}

/// One PAX record: `<length> <key>=<value>\n`, the length counting itself.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len = len.to_string().len() + rest;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Splits a name into ustar's prefix (≤ 155) and name (≤ 100) at a `/`, if it can be. Not at
/// a leading `/`: an empty prefix reads back without it (Go's `splitUSTARPath` refuses that
/// split too, and the name goes to a PAX record).
fn split_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= 100 {
        return Some((&[], name));
    }
    let start = name.len().saturating_sub(101).max(1);
    (start..name.len().min(156))
        .filter(|&i| name[i] == b'/')
        .map(|i| (&name[..i], &name[i + 1..]))
        .find(|(p, n)| p.len() <= 155 && n.len() <= 100 && !n.is_empty())
}

/// A ustar header block.
fn block(h: &TarHeader, name: &[u8], typeflag: u8, size: u64) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let (prefix, short) = split_name(name).unwrap_or((&[], &name[..name.len().min(100)]));
    b[..short.len()].copy_from_slice(short);
    octal(&mut b[100..108], u64::from(h.mode & 0o7777));
    octal(&mut b[108..116], h.uid.min(MAX_OCTAL_8));
    octal(&mut b[116..124], h.gid.min(MAX_OCTAL_8));
    octal(&mut b[124..136], size.min(MAX_OCTAL_12));
    octal(
        &mut b[136..148],
        u64::try_from(h.mtime).unwrap_or(0).min(MAX_OCTAL_12),
    );
    b[156] = typeflag;
    let link = &h.linkname[..h.linkname.len().min(100)];
    b[157..157 + link.len()].copy_from_slice(link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    if matches!(h.kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
        octal(&mut b[329..337], u64::from(h.devmajor));
        octal(&mut b[337..345], u64::from(h.devminor));
    }
    b[345..345 + prefix.len()].copy_from_slice(prefix);
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    let s = format!("{sum:06o}\0 ");
    b[148..156].copy_from_slice(s.as_bytes());
    b
}

/// The header bytes of `h` (the size field from `h.size` for regular files, 0 otherwise): a PAX
/// header when needed, then the ustar header.
pub fn header_bytes(h: &TarHeader) -> Vec<u8> {
    let typeflag = match h.kind {
        EntryKind::Regular => b'0',
        EntryKind::HardLink => b'1',
        EntryKind::Symlink => b'2',
        EntryKind::CharDevice => b'3',
        EntryKind::BlockDevice => b'4',
        EntryKind::Directory => b'5',
        EntryKind::Fifo => b'6',
        EntryKind::GlobalHeader => b'g',
    };
    let size = if h.kind == EntryKind::Regular {
        h.size
    } else {
        0
    };
    let mut records = Vec::new();
    if split_name(&h.name).is_none() {
        pax_record(&mut records, b"path", &h.name);
    }
    if h.linkname.len() > 100 {
        pax_record(&mut records, b"linkpath", &h.linkname);
    }
    if h.uid > MAX_OCTAL_8 {
        pax_record(&mut records, b"uid", h.uid.to_string().as_bytes());
    }
    if h.gid > MAX_OCTAL_8 {
        pax_record(&mut records, b"gid", h.gid.to_string().as_bytes());
    }
    if size > MAX_OCTAL_12 {
        pax_record(&mut records, b"size", size.to_string().as_bytes());
    }
    // (An empty value is no xattr to Go's reader, and so to c/storage: none is written.)
    let mut xattrs: Vec<&(Vec<u8>, Vec<u8>)> =
        h.xattrs.iter().filter(|(_, v)| !v.is_empty()).collect();
    xattrs.sort();
    for (k, v) in xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax_record(&mut records, &key, v);
    }
    let mut out = Vec::with_capacity(BLOCK * 3);
    if !records.is_empty() {
        let pax = TarHeader::new(
            b"././@PaxHeader".to_vec(),
            EntryKind::Regular,
            0o644,
            records.len() as u64,
            h.mtime,
        );
        out.extend_from_slice(&block(&pax, &pax.name, b'x', records.len() as u64));
        let padded = records.len().div_ceil(BLOCK) * BLOCK;
        records.resize(padded, 0);
        out.extend_from_slice(&records);
    }
    out.extend_from_slice(&block(h, &h.name, typeflag, size));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar_stream::parse_built_header;

    fn header(name: &[u8], kind: EntryKind) -> TarHeader {
        let mut h = TarHeader::new(name.to_vec(), kind, 0o4755, 5, 1_700_000_000);
        h.uid = 1000;
        h.gid = 100;
        h
    }

    /// What we write, our reader (Go's rules) reads back the same.
    #[test]
    fn round_trips() {
        let long = [b'd'; 120]
            .iter()
            .copied()
            .chain(*b"/")
            .chain([b'f'; 90])
            .collect::<Vec<u8>>();
        let very_long = vec![b'x'; 300];
        // 101 bytes whose only `/` leads (found by the fuzz smoke test): not split there.
        let leading = [&b"/null"[..], &[b'd'; 96]].concat();
        let mut with_xattrs = header(b"usr/bin/ping", EntryKind::Regular);
        with_xattrs.xattrs = vec![
            (b"security.capability".to_vec(), vec![1, 0, 0, 2, 0x20]),
            (b"user.a".to_vec(), b"v".to_vec()),
        ];
        with_xattrs.uid = 5_000_000;
        let mut link = header(b"a/link", EntryKind::Symlink);
        link.linkname = vec![b'y'; 150];
        let mut dev = header(b"dev/null", EntryKind::CharDevice);
        dev.devmajor = 1;
        dev.devminor = 3;
        for h in [
            header(b"etc/hosts", EntryKind::Regular),
            header(&long, EntryKind::Regular),
            header(&very_long, EntryKind::Directory),
            header(&leading, EntryKind::Regular),
            with_xattrs,
            link,
            dev,
        ] {
            let bytes = header_bytes(&h);
            assert_eq!(bytes.len() % BLOCK, 0);
            let back = parse_built_header(&bytes).expect("parses");
            assert_eq!(back.name, h.name);
            assert_eq!(back.kind, h.kind);
            assert_eq!(back.mode, h.mode);
            assert_eq!((back.uid, back.gid), (h.uid, h.gid));
            assert_eq!(back.mtime, h.mtime);
            assert_eq!(back.linkname, h.linkname);
            assert_eq!((back.devmajor, back.devminor), (h.devmajor, h.devminor));
            let mut x = h.xattrs.clone();
            x.sort();
            assert_eq!(back.xattrs, x);
            if h.kind == EntryKind::Regular {
                assert_eq!(back.size, h.size);
            }
        }
    }

    #[test]
    fn pax_length_counts_itself() {
        for n in 85..100 {
            let mut r = Vec::new();
            pax_record(&mut r, b"path", &vec![b'a'; n]);
            let space = r.iter().position(|&b| b == b' ').expect("space");
            let len: usize = std::str::from_utf8(&r[..space])
                .expect("digits")
                .parse()
                .expect("number");
            assert_eq!(len, r.len(), "value of {n} bytes");
        }
    }
}
