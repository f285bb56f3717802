//! Parsing of tar headers (ustar, GNU, PAX) while keeping every raw byte.
//!
//! We parse tar ourselves rather than through a tar crate because the tar-split needs the exact bytes
//! of every header, PAX record and padding block, and a layer tar must be read exactly once.

use crate::error::{Error, Result};

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// The kind of a tar entry, after PAX/GNU extension headers have been folded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (type `0` or `\0`, or `7` contiguous).
    Regular,
    /// A hard link to an earlier entry (type `1`).
    HardLink,
    /// A symbolic link (type `2`).
    Symlink,
    /// A character device (type `3`).
    CharDevice,
    /// A block device (type `4`).
    BlockDevice,
    /// A directory (type `5`).
    Directory,
    /// A named pipe (type `6`).
    Fifo,
    /// A PAX global header (type `g`): recorded in the tar-split, nothing is written.
    GlobalHeader,
}

impl EntryKind {
    /// Whether entries of this kind never carry data, whatever their size field says.
    pub(crate) fn header_only(self) -> bool {
        !matches!(self, EntryKind::Regular)
    }
}

/// A tar entry's metadata, as Go's `archive/tar` would report it.
#[derive(Debug, Clone)]
pub struct TarHeader {
    /// The entry name (PAX `path` or GNU long name override the header's name/prefix).
    pub name: Vec<u8>,
    /// The entry kind.
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Data size in bytes (0 for header-only kinds).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time (PAX only).
    pub mtime_nsec: u32,
    /// Access time from PAX `atime` or the GNU header, if any.
    pub atime: Option<(i64, u32)>,
    /// Change time from PAX `ctime` or the GNU header, if any.
    pub ctime: Option<(i64, u32)>,
    /// The header's mode field whole (type bits included, as some old tars have them).
    pub raw_mode: i64,
    /// Link target (hard or symbolic).
    pub linkname: Vec<u8>,
    /// Device major number.
    pub devmajor: u32,
    /// Device minor number.
    pub devminor: u32,
    /// Extended attributes from PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl TarHeader {
    /// A header of `kind` named `name`, root-owned, with no link, device or extended attributes
    /// (a producer fills in the rest).
    pub fn new(name: Vec<u8>, kind: EntryKind, mode: u32, size: u64, mtime: i64) -> TarHeader {
        TarHeader {
            name,
            kind,
            mode,
            uid: 0,
            gid: 0,
            size,
            mtime,
            mtime_nsec: 0,
            atime: None,
            ctime: None,
            raw_mode: i64::from(mode),
            linkname: Vec::new(),
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
        }
    }
}

/// Computes the checksum of a header block the way tar does (unsigned and signed sums).
fn checksums(block: &[u8; BLOCK]) -> (i64, i64) {
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    (unsigned, signed)
}

/// Returns the bytes of a NUL-terminated field.
fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// Parses a numeric field: octal (space/NUL padded) or GNU base-256.
pub(crate) fn parse_numeric(field: &[u8]) -> Result<i64> {
    if let Some(&first) = field.first()
        && first & 0x80 != 0
    {
        // base-256: big-endian two's complement with the top bit as the marker
        let negative = first & 0x40 != 0;
        let mut value: i128 = i128::from(first & 0x7f);
        if negative {
            value = i128::from(first | 0x80) - 256;
        }
        for &b in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(i128::from(b)))
                .ok_or_else(|| Error::malformed_tar("numeric field overflows"))?;
            if value > i128::from(i64::MAX) || value < i128::from(i64::MIN) {
                return Err(Error::malformed_tar("numeric field overflows"));
            }
        }
        return i64::try_from(value).map_err(|_| Error::malformed_tar("numeric field overflows"));
    }
    let s = cstr(field);
    let s =
        std::str::from_utf8(s).map_err(|_| Error::malformed_tar("numeric field is not ASCII"))?;
    let s = s.trim_matches(|c| c == ' ' || c == '\0');
    if s.is_empty() {
        return Ok(0);
    }
    i64::from_str_radix(s, 8).map_err(|_| Error::malformed_tar(format!("bad octal field {s:?}")))
}

/// The header format a block declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    V7,
    Ustar,
    Gnu,
}

/// A parsed raw header block, before extensions are applied.
#[derive(Debug)]
pub struct RawHeader {
    /// Type flag byte.
    pub typeflag: u8,
    /// Name (with the ustar prefix joined, when the format has one).
    pub name: Vec<u8>,
    /// Link name.
    pub linkname: Vec<u8>,
    /// Mode field.
    pub mode: i64,
    /// Uid field.
    pub uid: i64,
    /// Gid field.
    pub gid: i64,
    /// Size field.
    pub size: i64,
    /// Mtime field.
    pub mtime: i64,
    /// GNU atime field, if present.
    pub atime: Option<i64>,
    /// GNU ctime field, if present.
    pub ctime: Option<i64>,
    /// Device major.
    pub devmajor: i64,
    /// Device minor.
    pub devminor: i64,
}

impl RawHeader {
    /// Parses one 512-byte header block, verifying its checksum.
    pub fn parse(block: &[u8; BLOCK]) -> Result<RawHeader> {
        let recorded = parse_numeric(&block[148..156])?;
        let (unsigned, signed) = checksums(block);
        if recorded != unsigned && recorded != signed {
            return Err(Error::malformed_tar("header checksum mismatch"));
        }
        let magic = &block[257..263];
        let version = &block[263..265];
        let format = if magic == b"ustar\0" && version == b"00" {
            Format::Ustar
        } else if magic == b"ustar " && version == b" \0" {
            Format::Gnu
        } else {
            Format::V7
        };
        let mut name = cstr(&block[0..100]).to_vec();
        if format == Format::Ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut full = prefix.to_vec();
                full.push(b'/');
                full.extend_from_slice(&name);
                name = full;
            }
        }
        let (devmajor, devminor) = if format == Format::V7 {
            (0, 0)
        } else {
            (
                parse_numeric(&block[329..337])?,
                parse_numeric(&block[337..345])?,
            )
        };
        let (atime, ctime) = if format == Format::Gnu {
            let a = parse_numeric(&block[345..357])?;
            let c = parse_numeric(&block[357..369])?;
            ((a != 0).then_some(a), (c != 0).then_some(c))
        } else {
            (None, None)
        };
        Ok(RawHeader {
            typeflag: block[156],
            name,
            linkname: cstr(&block[157..257]).to_vec(),
            mode: parse_numeric(&block[100..108])?,
            uid: parse_numeric(&block[108..116])?,
            gid: parse_numeric(&block[116..124])?,
            size: parse_numeric(&block[124..136])?,
            mtime: parse_numeric(&block[136..148])?,
            atime,
            ctime,
            devmajor,
            devminor,
        })
    }
}

/// Extension records gathered from PAX (`x`) and GNU (`L`, `K`) headers for the next entry.
#[derive(Debug, Default)]
pub struct Extensions {
    /// PAX records in order.
    pub pax: Vec<(Vec<u8>, Vec<u8>)>,
    /// GNU long name.
    pub long_name: Option<Vec<u8>>,
    /// GNU long link name.
    pub long_link: Option<Vec<u8>>,
}

/// Parses the data of a PAX extended header into its records.
pub(crate) fn parse_pax(data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut records = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        // Trailing NUL padding is tolerated.
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| Error::malformed_tar("PAX record without length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::malformed_tar("PAX record length is not a number"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(Error::malformed_tar("PAX record length out of range"));
        }
        let record = &rest[space + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| Error::malformed_tar("PAX record without '='"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        // Go's validPAXRecord: a key, without NUL; names without NUL in their values.
        let names_a_path = matches!(key, b"path" | b"linkpath" | b"uname" | b"gname");
        if key.is_empty() || key.contains(&0) || (names_a_path && value.contains(&0)) {
            return Err(Error::malformed_tar(format!(
                "invalid PAX record {:?}",
                String::from_utf8_lossy(key)
            )));
        }
        // Go keeps records in a map: a repeated key replaces the earlier value.
        records.retain(|(k, _): &(Vec<u8>, Vec<u8>)| k.as_slice() != key);
        records.push((key.to_vec(), value.to_vec()));
        rest = &rest[len..];
    }
    Ok(records)
}

/// Parses a PAX time value ("seconds[.fraction]").
fn parse_pax_time(v: &[u8]) -> Result<(i64, u32)> {
    let s = std::str::from_utf8(v).map_err(|_| Error::malformed_tar("PAX time is not ASCII"))?;
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let negative = secs.starts_with('-');
    let secs: i64 = secs
        .parse()
        .map_err(|_| Error::malformed_tar(format!("bad PAX time {s:?}")))?;
    let mut nanos: u32 = 0;
    let mut scale = 100_000_000u32;
    for c in frac.bytes().take(9) {
        if !c.is_ascii_digit() {
            return Err(Error::malformed_tar(format!("bad PAX time {s:?}")));
        }
        nanos += u32::from(c - b'0') * scale;
        scale /= 10;
    }
    if negative && nanos > 0 {
        return Ok((secs - 1, 1_000_000_000 - nanos));
    }
    Ok((secs, nanos))
}

fn parse_pax_int(v: &[u8], what: &str) -> Result<i64> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::malformed_tar(format!("bad PAX {what}")))
}

/// Folds a raw header and the extensions that preceded it into the entry Go would report.
pub fn resolve(raw: RawHeader, ext: Extensions) -> Result<TarHeader> {
    let mut name = raw.name;
    let mut linkname = raw.linkname;
    let mut size = raw.size;
    let mut uid = raw.uid;
    let mut gid = raw.gid;
    let mut mtime = (raw.mtime, 0u32);
    let mut atime = raw.atime.map(|a| (a, 0u32));
    let mut ctime = raw.ctime.map(|c| (c, 0u32));
    let mut xattrs = Vec::new();
    for (k, v) in ext.pax {
        // Go's mergePAX: an empty value keeps the header's own (ustar) value, and an empty
        // xattr is not an xattr.
        if v.is_empty() {
            continue;
        }
        match k.as_slice() {
            b"path" => name = v,
            b"linkpath" => linkname = v,
            b"size" => size = parse_pax_int(&v, "size")?,
            b"uid" => uid = parse_pax_int(&v, "uid")?,
            b"gid" => gid = parse_pax_int(&v, "gid")?,
            b"mtime" => mtime = parse_pax_time(&v)?,
            b"atime" => atime = Some(parse_pax_time(&v)?),
            b"ctime" => ctime = Some(parse_pax_time(&v)?),
            k if k.starts_with(b"SCHILY.xattr.") => {
                xattrs.push((k[b"SCHILY.xattr.".len()..].to_vec(), v));
            }
            k if k.starts_with(b"GNU.sparse.") => {
                return Err(Error::Unsupported(
                    "sparse files in a layer tar (GNU.sparse PAX records)".into(),
                ));
            }
            _ => {}
        }
    }
    // Go applies the GNU long name and link after the PAX records.
    if let Some(n) = ext.long_name.filter(|n| !n.is_empty()) {
        name = n;
    }
    if let Some(l) = ext.long_link.filter(|l| !l.is_empty()) {
        linkname = l;
    }
    let kind = match raw.typeflag {
        b'0' | b'\0' | b'7' => {
            if raw.typeflag == b'\0' && name.ends_with(b"/") {
                EntryKind::Directory
            } else {
                EntryKind::Regular
            }
        }
        b'1' => EntryKind::HardLink,
        b'2' => EntryKind::Symlink,
        b'3' => EntryKind::CharDevice,
        b'4' => EntryKind::BlockDevice,
        b'5' => EntryKind::Directory,
        b'6' => EntryKind::Fifo,
        b'g' => EntryKind::GlobalHeader,
        b'S' => {
            return Err(Error::Unsupported("GNU sparse files in a layer tar".into()));
        }
        other => {
            return Err(Error::malformed_tar(format!(
                "unsupported entry type {:?} for {}",
                other as char,
                String::from_utf8_lossy(&name)
            )));
        }
    };
    let to_u64 = |v: i64, what: &str| {
        u64::try_from(v).map_err(|_| Error::malformed_tar(format!("negative {what}")))
    };
    let size = to_u64(size, "size")?;
    Ok(TarHeader {
        name,
        kind,
        mode: u32::try_from(raw.mode & 0o7777).unwrap_or(0),
        raw_mode: raw.mode,
        uid: to_u64(uid, "uid")?,
        gid: to_u64(gid, "gid")?,
        size,
        mtime: mtime.0,
        mtime_nsec: mtime.1,
        atime,
        ctime,
        linkname,
        devmajor: u32::try_from(raw.devmajor).unwrap_or(0),
        devminor: u32::try_from(raw.devminor).unwrap_or(0),
        xattrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_numeric(b"0000644\0").unwrap(), 0o644);
        assert_eq!(parse_numeric(b"     12 ").unwrap(), 0o12);
        assert_eq!(parse_numeric(b"\0\0\0\0").unwrap(), 0);
        let mut b256 = [0u8; 12];
        b256[0] = 0x80;
        b256[11] = 0x01;
        b256[10] = 0x02;
        assert_eq!(parse_numeric(&b256).unwrap(), 0x0201);
    }

    #[test]
    fn pax_records() {
        let data = b"30 mtime=1700000000.123456789\n20 path=a/very/long\n";
        let r = parse_pax(data).unwrap();
        assert_eq!(r[0].0, b"mtime");
        assert_eq!(
            parse_pax_time(&r[0].1).unwrap(),
            (1_700_000_000, 123_456_789)
        );
        assert_eq!(r[1].1, b"a/very/long");
        assert!(parse_pax(b"99 path=x\n").is_err());
    }
}
