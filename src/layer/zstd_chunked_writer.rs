//! Writing a layer as zstd:chunked, the layout c/storage's `pkg/chunked` writes and reads: the tar
//! in zstd frames — every regular file's content a frame of its own (its compressed byte range
//! named in the TOC, so a reader can fetch just it), the headers and padding between them in
//! frames of their own — then three skippable frames: the zstd-compressed TOC (JSON: each
//! entry's type, name, mode, owner, time, size, link, device, xattrs, content digest and
//! offsets, and the tar-split's digest), the zstd-compressed tar-split (NDJSON, as c/storage
//! keeps it) and the 64-byte footer. Any zstd reader decodes the blob to the layer's tar; the
//! descriptor's annotations say where the TOC and tar-split are. Deterministic for the same tar.
//! A file's content is cut as c/storage cuts it: where a rolling checksum (bup's, 64-byte window)
//! has its low 16 bits set (about 64 KiB chunks), and around runs of 1024 or more zeros (`zeros`
//! chunks), each chunk a frame with its own digest, so a changed part of a big file is fetched
//! alone; unlike c/storage, a data chunk is also cut at 8 MiB, so that content the checksum never
//! cuts is not held whole.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};
use storage_format::{Crc64, Digest, TarSplitWriter};

use super::tar_header::{EntryKind, TarHeader};
use super::tar_stream::{Event, TarStream};
pub use super::zstd_chunked_toc::TARSPLIT_POSITION_ANNOTATION;
use super::zstd_chunked_toc::{CHECKSUM_ANNOTATION, POSITION_ANNOTATION, toc_entry_fields};
use crate::error::{Error, Result};

/// Headers gathered at most before they are written as a frame (many entries without content
/// in a row: directories, links).
const META_FRAME: usize = 1 << 20;
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

/// The TOC entries of `h`: its own (its content's digest and compressed range when it has
/// content) and, when the content was cut into several chunks, one `chunk` entry for each after
/// the first (the first's fields on the entry itself), as c/storage writes them.
fn toc_entry(
    h: &TarHeader,
    content: Option<(&Digest, &Chunker)>,
) -> Option<Vec<serde_json::Value>> {
    let mut e = toc_entry_fields(h)?;
    let Some((digest, c)) = content else {
        return Some(vec![e.into()]);
    };
    e.insert("digest".into(), digest.to_string().into());
    e.insert("offset".into(), c.start.into());
    e.insert("endOffset".into(), c.end.into());
    let mut out = vec![e];
    if c.chunks.len() > 1 {
        for (i, ch) in c.chunks.iter().enumerate() {
            if i > 0 {
                let mut x = serde_json::Map::new();
                x.insert("type".into(), "chunk".into());
                x.insert("name".into(), String::from_utf8_lossy(&h.name).into());
                if ch.chunk_offset != 0 {
                    x.insert("chunkOffset".into(), ch.chunk_offset.into());
                }
                out.push(x);
            }
            let x = &mut out[i];
            x.insert("offset".into(), ch.offset.into());
            x.insert("chunkSize".into(), ch.size.into());
            x.insert("chunkDigest".into(), ch.digest.to_string().into());
            if ch.zeros {
                x.insert("chunkType".into(), "zeros".into());
            }
        }
    }
    Some(out.into_iter().map(serde_json::Value::from).collect())
}

/// A window of the rolling checksum c/storage cuts file contents with (bup's, as Perkeep has it).
const WINDOW: usize = 64;
/// The checksum's character offset.
const CHAR_OFFSET: u32 = 31;
/// A cut where the low bits of `s2` are all ones (about 64 KiB chunks).
const ROLLSUM_BITS: u32 = 16;
/// Zero runs at least this long are `zeros` chunks of their own.
const HOLE: u64 = 1024;
/// The longest chunk held before it is cut regardless of the checksum.
const MAX_CHUNK: usize = 8 << 20;

/// The rolling checksum.
struct RollSum {
    s1: u32,
    s2: u32,
    window: [u8; WINDOW],
    at: usize,
}

impl RollSum {
    fn new() -> RollSum {
        RollSum {
            s1: WINDOW as u32 * CHAR_OFFSET,
            s2: WINDOW as u32 * (WINDOW as u32 - 1) * CHAR_OFFSET,
            window: [0; WINDOW],
            at: 0,
        }
    }

    fn roll(&mut self, ch: u8) {
        let drop = u32::from(self.window[self.at]);
        self.s1 = self.s1.wrapping_add(u32::from(ch)).wrapping_sub(drop);
        self.s2 = self
            .s2
            .wrapping_add(self.s1)
            .wrapping_sub((WINDOW as u32).wrapping_mul(drop + CHAR_OFFSET));
        self.window[self.at] = ch;
        self.at = (self.at + 1) & (WINDOW - 1);
    }

    fn on_split(&self) -> bool {
        let mask = (1u32 << ROLLSUM_BITS) - 1;
        self.s2 & mask == mask
    }
}

/// One chunk of a file's content.
struct Chunk {
    /// Where it starts in the content.
    chunk_offset: u64,
    /// Where its frame starts in the blob.
    offset: u64,
    size: u64,
    digest: Digest,
    /// A run of zeros.
    zeros: bool,
}

/// Cuts one file's content into chunks, each its own zstd frame.
struct Chunker {
    sum: RollSum,
    /// The uncompressed bytes of the chunk being gathered.
    frame: Vec<u8>,
    /// Where the current chunk starts in the content.
    chunk_start: u64,
    /// Zeros seen and not yet placed in a chunk.
    zeros: u64,
    chunks: Vec<Chunk>,
    /// The blob offsets of the first frame and after the last.
    start: u64,
    end: u64,
}

impl Chunker {
    fn new() -> Chunker {
        Chunker {
            sum: RollSum::new(),
            frame: Vec::new(),
            chunk_start: 0,
            zeros: 0,
            chunks: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// Ends the data chunk being gathered (nothing when it is empty) as a frame of `out`.
    fn cut<W: Write>(&mut self, out: &mut Counting<W>) -> Result<()> {
        let size = self.frame.len() as u64;
        if size == 0 {
            return Ok(());
        }
        let offset = out.written;
        if self.chunks.is_empty() {
            self.start = offset;
        }
        let frame = zstd::bulk::compress(&self.frame, LEVEL)
            .map_err(|e| Error::Internal(format!("zstd: {e}")))?;
        out.write_all(&frame).map_err(write_err)?;
        self.end = out.written;
        self.chunks.push(Chunk {
            chunk_offset: self.chunk_start,
            offset,
            size,
            digest: Digest::of_bytes(&self.frame),
            zeros: false,
        });
        self.frame.clear();
        self.chunk_start += size;
        Ok(())
    }

    /// One byte of data (not of a hole). A chunk is also cut at [`MAX_CHUNK`], so that content
    /// the checksum never cuts (a run of one byte value) is not held whole.
    fn data<W: Write>(&mut self, b: u8, out: &mut Counting<W>) -> Result<()> {
        self.frame.push(b);
        self.sum.roll(b);
        if self.sum.on_split() || self.frame.len() >= MAX_CHUNK {
            self.cut(out)?;
        }
        Ok(())
    }

    /// Places the zeros seen: a hole chunk of their own when long enough, else data.
    fn place_zeros<W: Write>(&mut self, out: &mut Counting<W>) -> Result<()> {
        let n = std::mem::take(&mut self.zeros);
        if n >= HOLE {
            // The data before the hole ends its chunk; the hole is one chunk. (Past a window of
            // zeros the checksum no longer changes: rolling 64 of them is rolling them all.)
            self.cut(out)?;
            for _ in 0..n.min(WINDOW as u64) {
                self.sum.roll(0);
            }
            self.zero_chunk(n, out)?;
        } else {
            for _ in 0..n {
                self.data(0, out)?;
            }
        }
        Ok(())
    }

    /// A hole of `n` zeros as one `zeros` chunk: its zstd frame written and hashed streaming, so
    /// a long hole needs no memory.
    fn zero_chunk<W: Write>(&mut self, n: u64, out: &mut Counting<W>) -> Result<()> {
        let offset = out.written;
        if self.chunks.is_empty() {
            self.start = offset;
        }
        let mut enc = zstd::stream::write::Encoder::new(&mut *out, LEVEL).map_err(write_err)?;
        let zeros = vec![0u8; MAX_CHUNK.min(usize::try_from(n).unwrap_or(MAX_CHUNK))];
        let mut sha = Sha256::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            enc.write_all(&zeros[..k]).map_err(write_err)?;
            sha.update(&zeros[..k]);
            left -= k as u64;
        }
        enc.finish().map_err(write_err)?;
        self.end = out.written;
        self.chunks.push(Chunk {
            chunk_offset: self.chunk_start,
            offset,
            size: n,
            digest: Digest::from_sha256(sha.finalize().into()),
            zeros: true,
        });
        self.chunk_start += n;
        Ok(())
    }

    /// More content.
    fn feed<W: Write>(&mut self, bytes: &[u8], out: &mut Counting<W>) -> Result<()> {
        for &b in bytes {
            if b == 0 {
                self.zeros += 1;
                continue;
            }
            if self.zeros > 0 {
                self.place_zeros(out)?;
            }
            self.data(b, out)?;
        }
        Ok(())
    }

    /// The end of the content.
    fn finish<W: Write>(&mut self, out: &mut Counting<W>) -> Result<()> {
        self.place_zeros(out)?;
        self.cut(out)
    }
}

/// Reads the current entry's content through `buf`, each piece to `f`; returns its length.
fn each_piece<R: Read>(
    stream: &mut TarStream<R>,
    buf: &mut [u8],
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let mut got = 0u64;
    loop {
        let n = stream.read_data(buf)?;
        if n == 0 {
            return Ok(got);
        }
        f(&buf[..n])?;
        got += n as u64;
    }
}

/// A part of the blob (the TOC, the tar-split) zstd-compressed as it is made, into an anonymous
/// temporary file: its plain length counted, the compressed bytes hashed.
struct Spooled {
    enc: zstd::stream::write::Encoder<
        'static,
        super::hashing_writer::HashingWriter<std::io::BufWriter<std::fs::File>>,
    >,
    plain: u64,
}

/// A [`Spooled`] part, compressed and complete.
struct SpooledDone {
    file: std::fs::File,
    /// The compressed bytes' digest and length.
    digest: Digest,
    compressed: u64,
    /// The uncompressed length.
    plain: u64,
}

impl Spooled {
    fn new() -> Result<Spooled> {
        let file = tempfile::tempfile().map_err(|e| Error::Io {
            what: "creating a temporary file in",
            path: std::env::temp_dir(),
            source: e,
        })?;
        let out = super::hashing_writer::HashingWriter::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            file,
        ));
        Ok(Spooled {
            enc: zstd::stream::write::Encoder::new(out, LEVEL).map_err(write_err)?,
            plain: 0,
        })
    }

    fn finish(self) -> Result<SpooledDone> {
        let out = self.enc.finish().map_err(write_err)?;
        let (buf, digest, compressed) = out.finish();
        let file = buf.into_inner().map_err(|e| write_err(e.into_error()))?;
        Ok(SpooledDone {
            file,
            digest,
            compressed,
            plain: self.plain,
        })
    }
}

impl Write for Spooled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.enc.write(buf)?;
        self.plain += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.enc.flush()
    }
}

impl SpooledDone {
    /// Writes the part to `out` as a skippable frame.
    fn copy_skippable(&self, out: &mut impl Write) -> Result<()> {
        let len = u32::try_from(self.compressed)
            .map_err(|_| Error::Unsupported("a zstd:chunked TOC or tar-split over 4 GiB".into()))?;
        out.write_all(&SKIPPABLE).map_err(write_err)?;
        out.write_all(&len.to_le_bytes()).map_err(write_err)?;
        let copied =
            std::io::copy(&mut crate::fsutil::ReadAt::new(&self.file), out).map_err(write_err)?;
        if copied != self.compressed {
            return Err(Error::Internal(format!(
                "a temporary file gave {copied} bytes of {}",
                self.compressed
            )));
        }
        Ok(())
    }
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
    // The tar-split and the TOC compressed as they are made, into temporary files (tens of MB
    // each for a layer of a million entries), copied into the blob at the end.
    let mut split = TarSplitWriter::new(Spooled::new()?);
    let mut toc = Spooled::new()?;
    toc.write_all(br#"{"version":1,"entries":["#)
        .map_err(write_err)?;
    let mut toc_entries = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match stream.next_event()? {
            Event::Entry { raw, header } => {
                diff.update(&raw);
                meta.pending.extend_from_slice(&raw);
                if meta.pending.len() >= META_FRAME {
                    meta.flush(&mut out)?;
                }
                split.segment(&raw)?;
                let (mut crc, mut sha) = (Crc64::new(), Sha256::new());
                let got;
                let content = if header.kind == EntryKind::Regular && header.size > 0 {
                    // The content: frames of its own, cut where c/storage cuts it.
                    meta.flush(&mut out)?;
                    let mut c = Chunker::new();
                    got = each_piece(&mut stream, &mut buf, |piece| {
                        diff.update(piece);
                        crc.update(piece);
                        sha.update(piece);
                        c.feed(piece, &mut out)
                    })?;
                    c.finish(&mut out)?;
                    Some((Digest::from_sha256(sha.finalize().into()), c))
                } else {
                    // Content of other kinds (none, normally) stays with the headers.
                    got = each_piece(&mut stream, &mut buf, |piece| {
                        diff.update(piece);
                        crc.update(piece);
                        meta.pending.extend_from_slice(piece);
                        Ok(())
                    })?;
                    None
                };
                split.file(&header.name, got, (got > 0).then(|| crc.finish()))?;
                for e in toc_entry(&header, content.as_ref().map(|(d, c)| (d, c)))
                    .into_iter()
                    .flatten()
                {
                    if toc_entries > 0 {
                        toc.write_all(b",").map_err(write_err)?;
                    }
                    serde_json::to_writer(&mut toc, &e).map_err(|e| write_err(e.into()))?;
                    toc_entries += 1;
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
    let split = split.finish()?.finish()?;
    write!(toc, r#"],"tarSplitDigest":"{}"}}"#, split.digest).map_err(write_err)?;
    let toc = toc.finish()?;
    let toc_offset = out.written + 8;
    toc.copy_skippable(&mut out)?;
    let split_offset = out.written + 8;
    split.copy_skippable(&mut out)?;
    let split_len = split.plain;
    let (toc_z_len, toc_len) = (toc.compressed, toc.plain);
    let mut footer = Vec::with_capacity(64);
    for v in [
        toc_offset,
        toc_z_len,
        toc_len,
        1,
        split_offset,
        split.compressed,
        split_len,
    ] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(FOOTER_MAGIC);
    out.write_all(&skippable(&footer)?).map_err(write_err)?;
    let mut annotations = BTreeMap::new();
    annotations.insert(CHECKSUM_ANNOTATION.to_string(), toc.digest.to_string());
    annotations.insert(
        POSITION_ANNOTATION.to_string(),
        format!("{toc_offset}:{toc_z_len}:{toc_len}:1"),
    );
    annotations.insert(
        TARSPLIT_POSITION_ANNOTATION.to_string(),
        format!("{split_offset}:{}:{split_len}", split.compressed),
    );
    Ok((
        out.inner,
        ChunkedBlob {
            diff_id: Digest::from_sha256(diff.finalize().into()),
            annotations,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes no rolling checksum finds structure in (xorshift).
    fn noise(n: usize, mut x: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn chunks_as_cut_and_framed() {
        let content = [noise(1 << 20, 7), vec![0u8; 4096], noise(10_000, 9)].concat();
        let mut out = Counting {
            inner: Vec::new(),
            written: 0,
        };
        let mut c = Chunker::new();
        for piece in content.chunks(4096) {
            c.feed(piece, &mut out).expect("feed");
        }
        c.finish(&mut out).expect("finish");
        // About one cut per 64 KiB of noise, a hole, and the rest.
        assert!(c.chunks.len() > 6, "{} chunks", c.chunks.len());
        assert_eq!(c.chunks.iter().filter(|k| k.zeros).count(), 1);
        let mut at = 0u64;
        for k in &c.chunks {
            assert_eq!(k.chunk_offset, at, "contiguous");
            let data = zstd::stream::decode_all(&out.inner[k.offset as usize..]).expect("frames");
            let mine = &content[at as usize..(at + k.size) as usize];
            assert!(
                data.starts_with(mine),
                "the frame at {} holds the chunk",
                k.offset
            );
            assert_eq!(Digest::of_bytes(mine), k.digest);
            at += k.size;
        }
        assert_eq!(at, content.len() as u64);
        assert_eq!(
            zstd::stream::decode_all(&out.inner[..]).expect("all"),
            content
        );
    }
}
