//! Partial pulls of zstd:chunked layers, as c/storage's `pkg/chunked` makes them: the TOC and the
//! tar-split are fetched by range and checked (the TOC against the digest its annotation gives,
//! the tar-split against the digest the TOC gives); each regular file whose content the store
//! already holds (found by the content digest the TOC names, in the TOCs stored with the store's
//! layers: [`LocalFiles`]) is read from there; of the others, the chunks the store holds (by the
//! chunk digests of stored zstd:chunked TOCs, as c/storage reuses them) are read from there too,
//! and the remaining frames are fetched in merged ranges and decoded. The layer's tar is rebuilt from the tar-split and those contents
//! ([`Rebuild`]), so the import writes the layer, its tar-split and its DiffID exactly as from the
//! whole blob, and the DiffID is checked against the config as c/storage checks it.
//!
//! Each fetched file's content is checked against its TOC digest as it is decoded; a file taken
//! from the store is vouched for by the TOC it was stored with and, with the whole layer, by the
//! DiffID. Anything that does not fit (no tar-split, a file the TOC and tar-split disagree on, a
//! registry that serves no ranges) is an error, and the caller pulls the whole blob.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::atomic::AtomicU64;

use sha2::{Digest as _, Sha256};
use storage_format::{Digest, TarSplitEntry, TarSplitReader};

pub use super::blob_ranges::OpenRange;
use super::blob_ranges::{Ranges, merge_ranges};
use super::hashing_writer::HashingWriter;
use super::zstd_chunked_files::{Chunk, FilesOf, RemoteFile, clean_name, name_key};
use super::zstd_chunked_toc::TocRef;
pub use super::zstd_chunked_toc::{TocBytes, TocEntry, sha256_bytes};
use crate::error::{Error, Result};

/// Files of the store found by the sha256 of their content.
pub trait LocalFiles: Sync {
    /// Whether the store has a file with this content.
    fn has(&self, digest: &[u8; 32]) -> bool;
    /// Opens one, checked to be a regular file of `size` bytes.
    fn open(&self, digest: &[u8; 32], size: u64) -> std::io::Result<std::fs::File>;
    /// Where one is (for read-ahead hints only: [`open`](Self::open) checks what it opens).
    fn path(&self, digest: &[u8; 32]) -> Option<std::path::PathBuf>;
    /// Whether the store has a chunk with this content (part of a file, as a zstd:chunked TOC
    /// cuts it); the default: no.
    fn has_chunk(&self, digest: &[u8; 32]) -> bool {
        let _ = digest;
        false
    }
    /// Opens the file holding one, at the chunk's start, checked to have `size` bytes there.
    fn open_chunk(&self, digest: &[u8; 32], size: u64) -> std::io::Result<std::fs::File> {
        let _ = (digest, size);
        Err(std::io::ErrorKind::NotFound.into())
    }
}

/// A zstd:chunked layer's TOC and tar-split, fetched and checked: what a partial pull needs.
#[derive(Debug)]
pub struct ChunkedLayer {
    files: Vec<RemoteFile>,
    /// The files' chunks, file after file.
    chunks: Vec<Chunk>,
    /// File indexes by a 64-bit hash of their cleaned name (not the name: a TOC may list a
    /// million). Two names of the TOC that collide make it "twice in the TOC" (a whole pull); a
    /// name of the tar-split that collides with another file's gets that file's content, which
    /// the DiffID check then refuses (a whole pull).
    by_name: HashMap<u64, u32>,
    /// The compressed tar-split, in an anonymous file.
    tar_split: std::fs::File,
    /// The uncompressed TOC (stored with the layer).
    pub manifest: TocBytes,
}

/// An error of a partial pull (the caller falls back to the whole blob).
pub(super) fn bad(why: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("a partial pull: {why}"))
}

/// Reads `n` bytes of `r` (a range's body).
fn read_exactly(mut r: impl Read, n: u64) -> Result<Vec<u8>> {
    let mut v = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    (&mut r)
        .take(n)
        .read_to_end(&mut v)
        .map_err(|e| Error::read("a range of the layer blob".to_string(), e))?;
    if v.len() as u64 != n {
        return Err(bad(format!("a range of {n} bytes came with {}", v.len())));
    }
    Ok(v)
}

/// Copies the `n` bytes of a range's body `r` into an anonymous file in `dir`; returns it and
/// their digest.
fn spill_range(r: impl Read, n: u64, dir: &std::path::Path) -> Result<(std::fs::File, Digest)> {
    let write_err = |e| Error::io("writing a temporary file in", dir, e);
    let file = tempfile::tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(64 * 1024, &file));
    let mut r = r.take(n);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = r
            .read(&mut buf)
            .map_err(|e| Error::read("a range of the layer blob".to_string(), e))?;
        if k == 0 {
            break;
        }
        std::io::Write::write_all(&mut out, &buf[..k]).map_err(write_err)?;
    }
    let (mut buffered, digest, got) = out.finish();
    if got != n {
        return Err(bad(format!("a range of {n} bytes came with {got}")));
    }
    std::io::Write::flush(&mut buffered).map_err(write_err)?;
    drop(buffered);
    Ok((file, digest))
}

impl ChunkedLayer {
    /// Fetches the TOC and tar-split `toc` places (one range when they are adjacent, as
    /// c/storage writes them) and checks them. The TOC is decompressed into an anonymous file
    /// in `spill_dir` (the store's filesystem) and read from there entry by entry: a TOC of a
    /// hundred thousand entries is tens of MB.
    pub fn fetch(
        toc: &TocRef,
        open: &OpenRange<'_>,
        spill_dir: &std::path::Path,
    ) -> Result<ChunkedLayer> {
        let (ts_off, ts_len, _) = toc
            .tar_split
            .ok_or_else(|| bad("the layer has no tar-split position"))?;
        // Decompressed and checked against the annotations as it arrives.
        let toc_error = |why: String| bad(format!("the TOC: {why}"));
        let ((tar_split, got), manifest) = if ts_off == toc.offset + toc.length + 8 {
            let mut body = open(toc.offset, ts_off + ts_len)?;
            let manifest = toc
                .decompress_to_file(&mut body, Some(spill_dir))
                .map_err(toc_error)?;
            read_exactly(&mut body, ts_off - toc.offset - toc.length)?;
            (spill_range(body, ts_len, spill_dir)?, manifest)
        } else {
            let body = open(toc.offset, toc.offset + toc.length)?;
            let manifest = toc
                .decompress_to_file(body, Some(spill_dir))
                .map_err(toc_error)?;
            (
                spill_range(open(ts_off, ts_off + ts_len)?, ts_len, spill_dir)?,
                manifest,
            )
        };
        let mut files = FilesOf::default();
        let split_digest = manifest
            .read(|e| files.push(&e))
            .map_err(|why| bad(format!("the TOC: {why}")))?;
        let want = split_digest.ok_or_else(|| bad("the TOC names no tar-split digest"))?;
        if got.as_str() != want {
            return Err(bad(format!("the tar-split is {got}, the TOC says {want}")));
        }
        let (files, chunks, by_name) = files.finish()?;
        Ok(ChunkedLayer {
            files,
            chunks,
            by_name,
            tar_split,
            manifest,
        })
    }

    /// The chunks of `f`.
    fn chunks_of(&self, f: &RemoteFile) -> &[Chunk] {
        let from = f.first as usize;
        self.chunks
            .get(from..from + f.count as usize)
            .unwrap_or_default()
    }

    /// What to take from the store and what to fetch.
    pub fn plan(&self, local: &dyn LocalFiles) -> Plan {
        let mut plan = Plan::default();
        let mut parts = Vec::new();
        for f in &self.files {
            let here = local.has(&f.digest);
            plan.local.push(here);
            if here {
                plan.local_files += 1;
                plan.local_bytes += f.size;
            } else {
                plan.remote_files += 1;
                // Chunks the store holds (of files that changed in part) are read from there.
                let chunks = self.chunks_of(f);
                let here: Vec<bool> = chunks
                    .iter()
                    .map(|c| !c.zeros && c.digest.is_some_and(|d| local.has_chunk(&d)))
                    .collect();
                for (c, _) in chunks.iter().zip(&here).filter(|(_, h)| **h) {
                    plan.local_chunks += 1;
                    plan.local_chunk_bytes += c.size;
                }
                parts.extend(
                    chunks
                        .iter()
                        .zip(&here)
                        .filter(|(c, h)| !c.zeros && !**h)
                        .map(|(c, _)| (c.offset, c.end)),
                );
                if here.iter().any(|h| *h) {
                    plan.chunks_here.insert(plan.local.len() - 1, here);
                }
            }
        }
        plan.ranges = merge_ranges(parts);
        plan.fetch_bytes = plan.ranges.iter().map(|(s, e)| e - s).sum();
        plan
    }

    /// The store's files the rebuild reads, in the order it reads them, with their sizes: what
    /// a [`ReadAhead`](super::read_ahead::ReadAhead) announces.
    pub fn local_files_in_order<'a>(
        &'a self,
        plan: &'a Plan,
        local: &'a dyn LocalFiles,
    ) -> impl Iterator<Item = (std::path::PathBuf, u64)> + 'a {
        self.files
            .iter()
            .zip(&plan.local)
            .filter(|(_, here)| **here)
            .filter_map(|(f, _)| Some((local.path(&f.digest)?, f.size)))
    }

    /// The layer's tar, rebuilt: read it once, to its end. `ra` is told the bytes of the store's
    /// files read.
    pub(crate) fn rebuild<'a>(
        &'a self,
        plan: &'a Plan,
        local: &'a dyn LocalFiles,
        open: &'a OpenRange<'a>,
        fetched: &'a AtomicU64,
        ra: &'a super::read_ahead::ReadAhead,
    ) -> Result<Rebuild<'a>> {
        let decoder = zstd::stream::read::Decoder::new(crate::fsutil::ReadAt::new(&self.tar_split))
            .map_err(|e| bad(format!("the tar-split: {e}")))?;
        Ok(Rebuild {
            layer: self,
            plan,
            local,
            entries: TarSplitReader::new(BufReader::new(decoder)),
            ranges: Some(Ranges::new(&plan.ranges, open, fetched)),
            cur: Cur::Next,
            files_seen: 0,
            ra,
        })
    }
}

/// What a partial pull takes from the store and what it fetches.
#[derive(Debug, Default)]
pub struct Plan {
    /// For each file of the TOC, whether the store has its content.
    local: Vec<bool>,
    /// The blob's ranges to fetch, sorted.
    ranges: Vec<(u64, u64)>,
    /// Their total length.
    pub fetch_bytes: u64,
    /// Files taken from the store, and their bytes.
    pub local_files: usize,
    /// Their total size.
    pub local_bytes: u64,
    /// Files fetched.
    pub remote_files: usize,
    /// For a fetched file some of whose chunks the store holds: which ones.
    chunks_here: HashMap<usize, Vec<bool>>,
    /// Chunks taken from the store, and their bytes.
    pub local_chunks: usize,
    /// Their total size.
    pub local_chunk_bytes: u64,
}

type ChunkDecoder<'a> = zstd::stream::read::Decoder<'static, BufReader<std::io::Take<Ranges<'a>>>>;

/// A fetched file being decoded.
struct Remote<'a> {
    file: usize,
    chunk: usize,
    /// Bytes of the current chunk still to come.
    left: u64,
    decoder: Option<ChunkDecoder<'a>>,
    /// The current chunk read from the store.
    stored: Option<std::io::Take<std::fs::File>>,
    sha: Sha256,
}

/// Where the rebuilt tar's next bytes come from.
enum Cur<'a> {
    /// The next tar-split entry.
    Next,
    /// A segment's raw bytes.
    Bytes(Vec<u8>, usize),
    /// A file of the store.
    Local(std::fs::File, u64),
    /// A fetched file.
    Remote(Box<Remote<'a>>),
}

/// The layer's tar rebuilt from its tar-split, the store's files and fetched frames.
pub struct Rebuild<'a> {
    layer: &'a ChunkedLayer,
    plan: &'a Plan,
    local: &'a dyn LocalFiles,
    entries: TarSplitReader<
        BufReader<zstd::stream::read::Decoder<'static, BufReader<crate::fsutil::ReadAt<'a>>>>,
    >,
    ranges: Option<Ranges<'a>>,
    cur: Cur<'a>,
    files_seen: usize,
    ra: &'a super::read_ahead::ReadAhead,
}

impl std::fmt::Debug for Rebuild<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rebuild")
            .field("files_seen", &self.files_seen)
            .finish_non_exhaustive()
    }
}

fn io_bad(why: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(bad(why))
}

impl Rebuild<'_> {
    /// The next entry of the tar-split as the source of the next bytes; `false` at the end.
    fn next_entry(&mut self) -> std::io::Result<bool> {
        let Some(entry) = self.entries.next() else {
            if self.files_seen != self.layer.files.len() {
                return Err(io_bad(format!(
                    "the tar-split has {} files with content, the TOC {}",
                    self.files_seen,
                    self.layer.files.len()
                )));
            }
            return Ok(false);
        };
        match entry.map_err(|e| io_bad(format!("the tar-split: {e}")))? {
            TarSplitEntry::Segment(b) => self.cur = Cur::Bytes(b, 0),
            TarSplitEntry::File { size: 0, .. } => {}
            TarSplitEntry::File { name, size, .. } => {
                let shown = || String::from_utf8_lossy(&name).into_owned();
                let i = clean_name(&name)
                    .and_then(|n| self.layer.by_name.get(&name_key(&n)).map(|&i| i as usize))
                    .filter(|&i| self.layer.files[i].size == size)
                    .ok_or_else(|| {
                        io_bad(format!("{} is not in the TOC with its size", shown()))
                    })?;
                self.files_seen += 1;
                let f = &self.layer.files[i];
                self.cur = if self.plan.local[i] {
                    let file = self
                        .local
                        .open(&f.digest, size)
                        .map_err(|e| io_bad(format!("{} from the store: {e}", shown())))?;
                    Cur::Local(file, size)
                } else {
                    Cur::Remote(Box::new(Remote {
                        file: i,
                        chunk: 0,
                        left: 0,
                        decoder: None,
                        stored: None,
                        sha: Sha256::new(),
                    }))
                };
                if let Cur::Remote(r) = &mut self.cur {
                    start_chunk(
                        r,
                        self.layer.chunks_of(&self.layer.files[i]),
                        &mut self.ranges,
                        self.plan,
                        self.local,
                    )?;
                }
            }
        }
        Ok(true)
    }
}

/// Starts chunk `r.chunk` of a file's `chunks`: read from the store when the plan says the
/// store holds it, else its frames opened for decoding (the ranges move into the decoder), or
/// zeros.
fn start_chunk<'a>(
    r: &mut Remote<'a>,
    chunks: &[Chunk],
    ranges: &mut Option<Ranges<'a>>,
    plan: &Plan,
    local: &dyn LocalFiles,
) -> std::io::Result<()> {
    let c = chunks
        .get(r.chunk)
        .ok_or_else(|| io_bad("a chunk past the file's"))?;
    r.left = c.size;
    let here = plan
        .chunks_here
        .get(&r.file)
        .is_some_and(|h| h.get(r.chunk) == Some(&true));
    if let (true, Some(d)) = (here, c.digest) {
        let file = local
            .open_chunk(&d, c.size)
            .map_err(|e| io_bad(format!("a chunk from the store: {e}")))?;
        r.stored = Some(file.take(c.size));
    } else if !c.zeros {
        let mut rs = ranges
            .take()
            .ok_or_else(|| std::io::Error::other(Error::Internal("ranges lost".into())))?;
        rs.seek_to(c.offset)?;
        r.decoder = Some(zstd::stream::read::Decoder::new(rs.take(c.end - c.offset))?);
    }
    Ok(())
}

impl Read for Rebuild<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.cur {
                Cur::Next => {
                    if !self.next_entry()? {
                        return Ok(0);
                    }
                }
                Cur::Bytes(b, pos) => {
                    if *pos < b.len() {
                        let n = (b.len() - *pos).min(buf.len());
                        buf[..n].copy_from_slice(&b[*pos..*pos + n]);
                        *pos += n;
                        return Ok(n);
                    }
                    self.cur = Cur::Next;
                }
                Cur::Local(file, left) => {
                    if *left == 0 {
                        self.cur = Cur::Next;
                        continue;
                    }
                    let max = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = file.read(&mut buf[..max])?;
                    if n == 0 {
                        return Err(io_bad("a file of the store is shorter than its TOC says"));
                    }
                    *left -= n as u64;
                    self.ra.consumed(n as u64);
                    return Ok(n);
                }
                Cur::Remote(r) => {
                    let f = &self.layer.files[r.file];
                    if r.left == 0 {
                        // The chunk is done: the ranges come back from its decoder.
                        if let Some(d) = r.decoder.take() {
                            self.ranges = Some(d.finish().into_inner().into_inner());
                        }
                        r.stored = None;
                        r.chunk += 1;
                        let chunks = self.layer.chunks_of(f);
                        if r.chunk < chunks.len() {
                            start_chunk(r, chunks, &mut self.ranges, self.plan, self.local)?;
                            continue;
                        }
                        let got: [u8; 32] = std::mem::take(&mut r.sha).finalize().into();
                        if got != f.digest {
                            return Err(io_bad(format!(
                                "a fetched file is {}, its TOC says {}",
                                Digest::from_sha256(got),
                                Digest::from_sha256(f.digest)
                            )));
                        }
                        self.cur = Cur::Next;
                        continue;
                    }
                    let max = usize::try_from(r.left).unwrap_or(usize::MAX).min(buf.len());
                    let n = match (r.stored.as_mut(), r.decoder.as_mut()) {
                        (Some(s), _) => s.read(&mut buf[..max])?,
                        (None, Some(d)) => d.read(&mut buf[..max])?,
                        (None, None) => {
                            let n = max.min(super::entry::ZEROS.len());
                            buf[..n].fill(0);
                            n
                        }
                    };
                    if n == 0 {
                        return Err(io_bad(
                            "a chunk (its frames, or the store's copy) has fewer bytes than the TOC says",
                        ));
                    }
                    r.sha.update(&buf[..n]);
                    r.left -= n as u64;
                    return Ok(n);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests() {
        let d = Digest::of_bytes(b"x");
        assert_eq!(
            sha256_bytes(d.as_str()).map(Digest::from_sha256),
            Some(d.clone())
        );
        assert!(sha256_bytes("sha512:00").is_none());
        assert_eq!(clean_name(b"./usr//bin/x"), Some(b"usr/bin/x".to_vec()));
        assert_eq!(clean_name(b"../x"), None);
    }
}
