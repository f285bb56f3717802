//! Writing a layer as zstd:chunked, the layout c/storage's `pkg/chunked` writes and reads: the tar
//! in zstd frames — every regular file's content a frame of its own (its compressed byte range
//! named in the TOC, so a reader can fetch just it), the headers and padding between them in
//! frames of their own — then three skippable frames: the zstd-compressed TOC (JSON: each
//! entry's type, name, mode, owner, time, size, link, device, xattrs, content digest and
//! offsets, and the tar-split's digest), the zstd-compressed tar-split (NDJSON, as c/storage
//! keeps it) and the 64-byte footer. Any zstd reader decodes the blob to the layer's tar; the
//! descriptor's annotations say where the TOC and tar-split are. Deterministic for the same tar.
//! (Files are not cut into rolling-checksum chunks: each is one frame.)

use std::collections::BTreeMap;
use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};
use storage_format::{Crc64, Digest, TarSplitWriter};

use super::tar_header::{EntryKind, TarHeader};
use super::tar_stream::{Event, TarStream};
use super::zstd_chunked_toc::{CHECKSUM_ANNOTATION, POSITION_ANNOTATION};
use crate::error::{Error, Result};

/// The annotation with the tar-split's position.
pub const TARSPLIT_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.tarsplit-position";
/// The zstd level (c/storage's default for zstd:chunked is 10; 3 keeps exports fast).
const LEVEL: i32 = 3;
/// The skippable frame's magic (`0x184D2A50`, little-endian).
const SKIPPABLE: [u8; 4] = [0x50, 0x2A, 0x4D, 0x18];
/// The footer's last eight bytes.
const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";

/// What was written.
#[derive(Debug, Clone)]
pub struct ChunkedBlob {
    /// The DiffID (sha256 of the tar).
    pub diff_id: Digest,
    /// The descriptor's annotations (TOC checksum and position, tar-split position).
    pub annotations: BTreeMap<String, String>,
}

/// A writer that counts what passes.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Bytes of the tar between file contents, gathered into one frame when the next content (or the
/// end) comes.
struct Meta {
    pending: Vec<u8>,
}

impl Meta {
    /// Writes the gathered bytes as a frame of their own.
    fn flush<W: Write>(&mut self, out: &mut Counting<W>) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frame = zstd::bulk::compress(&self.pending, LEVEL)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        out.write_all(&frame).map_err(write_err)?;
        self.pending.clear();
        Ok(())
    }
}

fn write_err(e: std::io::Error) -> Error {
    Error::Write {
        what: "the zstd:chunked blob".into(),
        source: e,
    }
}

/// The TOC's name for an entry kind.
fn toc_type(kind: EntryKind) -> Option<&'static str> {
    Some(match kind {
        EntryKind::Regular => "reg",
        EntryKind::HardLink => "hardlink",
        EntryKind::Symlink => "symlink",
        EntryKind::Directory => "dir",
        EntryKind::CharDevice => "char",
        EntryKind::BlockDevice => "block",
        EntryKind::Fifo => "fifo",
        _ => return None,
    })
}

/// Go's RFC 3339 with nanoseconds (trailing zeros trimmed), UTC, as Go marshals a time.
fn go_time(secs: i64, nsec: u32) -> String {
    use std::time::{Duration, UNIX_EPOCH};
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec.into())
    };
    storage_format::time::rfc3339_nano(t)
}

/// The TOC entry of `h` (its content's digest and compressed range when it has content).
fn toc_entry(h: &TarHeader, content: Option<(&Digest, u64, u64)>) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let kind = toc_type(h.kind)?;
    let mut e = serde_json::Map::new();
    e.insert("type".into(), kind.into());
    e.insert("name".into(), String::from_utf8_lossy(&h.name).into());
    if !h.linkname.is_empty() {
        e.insert(
            "linkName".into(),
            String::from_utf8_lossy(&h.linkname).into(),
        );
    }
    if h.mode != 0 {
        e.insert("mode".into(), h.mode.into());
    }
    if h.kind == EntryKind::Regular && h.size != 0 {
        e.insert("size".into(), h.size.into());
    }
    if h.uid != 0 {
        e.insert("uid".into(), h.uid.into());
    }
    if h.gid != 0 {
        e.insert("gid".into(), h.gid.into());
    }
    e.insert("modtime".into(), go_time(h.mtime, h.mtime_nsec).into());
    if h.devmajor != 0 {
        e.insert("devMajor".into(), h.devmajor.into());
    }
    if h.devminor != 0 {
        e.insert("devMinor".into(), h.devminor.into());
    }
    if !h.xattrs.is_empty() {
        let x: serde_json::Map<String, serde_json::Value> = h
            .xattrs
            .iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    base64::engine::general_purpose::STANDARD.encode(v).into(),
                )
            })
            .collect();
        e.insert("xattrs".into(), x.into());
    }
    if let Some((digest, offset, end)) = content {
        e.insert("digest".into(), digest.to_string().into());
        e.insert("offset".into(), offset.into());
        e.insert("endOffset".into(), end.into());
    }
    Some(e.into())
}

/// A skippable frame holding `data`.
fn skippable(data: &[u8]) -> Result<Vec<u8>> {
    let len = u32::try_from(data.len())
        .map_err(|_| Error::Unsupported("a zstd:chunked TOC or tar-split over 4 GiB".into()))?;
    let mut f = SKIPPABLE.to_vec();
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(data);
    Ok(f)
}

/// Writes the tar read from `tar` to `out` as a zstd:chunked blob; returns `out` and what the
/// descriptor needs.
pub fn write_zstd_chunked<R: Read, W: Write>(tar: R, out: W) -> Result<(W, ChunkedBlob)> {
    let mut out = Counting {
        inner: out,
        written: 0,
    };
    let mut stream = TarStream::new(tar);
    let mut meta = Meta {
        pending: Vec::new(),
    };
    let mut diff = Sha256::new();
    let mut split = TarSplitWriter::new(Vec::new());
    let mut entries: Vec<serde_json::Value> = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match stream.next_event()? {
            Event::Entry { raw, header } => {
                diff.update(&raw);
                meta.pending.extend_from_slice(&raw);
                split.segment(&raw)?;
                let (mut crc, mut sha) = (Crc64::new(), Sha256::new());
                let mut got = 0u64;
                let content = if header.kind == EntryKind::Regular && header.size > 0 {
                    // The content: a frame of its own.
                    meta.flush(&mut out)?;
                    let start = out.written;
                    let mut enc =
                        zstd::stream::write::Encoder::new(&mut out, LEVEL).map_err(write_err)?;
                    loop {
                        let n = stream.read_data(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        diff.update(chunk);
                        crc.update(chunk);
                        sha.update(chunk);
                        enc.write_all(chunk).map_err(write_err)?;
                        got += n as u64;
                    }
                    enc.finish().map_err(write_err)?;
                    let digest = Digest::from_sha256(sha.finalize().into());
                    Some((digest, start, out.written))
                } else {
                    // Content of other kinds (none, normally) stays with the headers.
                    loop {
                        let n = stream.read_data(&mut buf)?;
                        if n == 0 {
                            break;
                        }
                        let chunk = &buf[..n];
                        diff.update(chunk);
                        crc.update(chunk);
                        meta.pending.extend_from_slice(chunk);
                        got += n as u64;
                    }
                    None
                };
                split.file(&header.name, got, (got > 0).then(|| crc.finish()))?;
                if let Some(e) = toc_entry(&header, content.as_ref().map(|(d, s, e)| (d, *s, *e))) {
                    entries.push(e);
                }
            }
            Event::Trailer(t) => {
                diff.update(&t);
                meta.pending.extend_from_slice(&t);
                split.segment(&t)?;
            }
            Event::End => break,
        }
    }
    meta.flush(&mut out)?;
    let split = split.finish()?;
    let split_z =
        zstd::bulk::compress(&split, LEVEL).map_err(|e| Error::Internal(format!("zstd: {e}")))?;
    let toc = serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "entries": entries,
        "tarSplitDigest": Digest::of_bytes(&split_z).to_string(),
    }))
    .map_err(|e| Error::Internal(format!("the TOC: {e}")))?;
    let toc_z =
        zstd::bulk::compress(&toc, LEVEL).map_err(|e| Error::Internal(format!("zstd: {e}")))?;
    let toc_offset = out.written + 8;
    out.write_all(&skippable(&toc_z)?).map_err(write_err)?;
    let split_offset = out.written + 8;
    out.write_all(&skippable(&split_z)?).map_err(write_err)?;
    let mut footer = Vec::with_capacity(64);
    for v in [
        toc_offset,
        toc_z.len() as u64,
        toc.len() as u64,
        1,
        split_offset,
        split_z.len() as u64,
        split.len() as u64,
    ] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(FOOTER_MAGIC);
    out.write_all(&skippable(&footer)?).map_err(write_err)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(
        CHECKSUM_ANNOTATION.to_string(),
        Digest::of_bytes(&toc_z).to_string(),
    );
    annotations.insert(
        POSITION_ANNOTATION.to_string(),
        format!("{toc_offset}:{}:{}:1", toc_z.len(), toc.len()),
    );
    annotations.insert(
        TARSPLIT_POSITION_ANNOTATION.to_string(),
        format!("{split_offset}:{}:{}", split_z.len(), split.len()),
    );
    Ok((
        out.inner,
        ChunkedBlob {
            diff_id: Digest::from_sha256(diff.finalize().into()),
            annotations,
        },
    ))
}
