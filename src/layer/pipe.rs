//! Runs a reader on its own thread, so decompression overlaps with writing files; optionally a
//! third thread hashes what goes through: the blob as it is read (its digest) and the stream it
//! decompresses to (the layer's DiffID, and the CRC-32 of each gzip member), so neither of the
//! other two carries a hash.

use std::io::{BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::ScopedJoinHandle;

use sha2::{Digest as _, Sha256};
use storage_format::Digest;

use super::entry::ContentRead;
use super::gzip_members::{CrcCheck, MemberCrcs, MemberEnd};
use super::page_buf::PageBuf;
use super::shared_bytes::{Chunk, SharedBytes, recycle};

/// Chunk size handed between the threads.
const CHUNK: usize = 512 * 1024;
/// Chunks in flight: bounds memory to a few MiB whatever the image size. Eight (4 MiB) carry the
/// decoder through a region of small files, where writing is slower than decoding (four: the
/// one-layer Debian import 1.5 % slower, 2 MB less resident).
const DEPTH: usize = 8;
/// Size of the reads from a blob.
const BLOB_CHUNK: usize = 64 * 1024;
/// Chunks waiting for the hasher (blob and stream together): about 4 ms of the decoder's output,
/// a scheduler's time slice. Four busy threads share two cores; with 6, the decoder — the critical
/// path — slept whenever the hasher waited for a core (400 ms of 1.1 s in `perf sched`), and the
/// one-layer import took 3–5 % longer.
const HASH_DEPTH: usize = 16;
/// Stream chunks the tree writer's file thread may hold (files' content shared with it, see
/// [`SharedBytes`]): its queue's 4 MiB and the piece being gathered, plus the chunks at the ends.
const FILE_HELD: usize = 11;
/// Idle stream chunks kept for reuse: as many as can be alive at once (in the pipe, being filled,
/// the reader's, waiting for the hasher, held by the file thread), so none is unmapped and mapped
/// again mid-layer.
const STREAM_IDLE: usize = DEPTH + 2 + HASH_DEPTH + FILE_HELD;
/// Idle blob chunks kept for reuse: as many as can be alive at once (waiting for the hasher, the
/// decoder's and the one being read).
const BLOB_IDLE: usize = HASH_DEPTH + 2;

/// A chunk for the hasher, and which stream it belongs to.
enum ToHash {
    /// Bytes of the blob, as read.
    Blob(Chunk),
    /// Bytes of the stream the blob decompresses to.
    Stream(Chunk),
    /// The stream is decoded from gzip members: compute the CRC-32 of each (sent before any of
    /// the stream's bytes).
    Members,
    /// A gzip member ended.
    MemberEnd(MemberEnd),
}

/// What the hasher computed, once both streams ended.
#[derive(Debug)]
pub struct Hashes {
    /// SHA-256 and length of the blob.
    pub blob: (Digest, u64),
    /// SHA-256 and length of the decompressed stream, when one was fed ([`StreamFeed`]).
    pub stream: Option<(Digest, u64)>,
    /// The first gzip member whose CRC-32 did not match its trailer, when the hasher checked them
    /// ([`StreamFeed::gzip_crc_check`]): its number (from 1), the trailer's CRC and the data's.
    /// Bytes after the last member's end, or an end the stream never reached, count as a member
    /// whose trailer says 0 (the decoder fails first on such input).
    pub bad_member: Option<(u64, u32, u32)>,
    /// The blob's bytes in the range asked to be kept aside ([`spawn_hasher`]'s `keep`).
    pub kept: Option<super::kept_range::Kept>,
}

/// A pool of buffers: the sending half returns them, the receiving half reuses them (no mapping
/// per chunk). Buffers the pool has no room for, and those left when the layer ends, are unmapped.
struct Pool {
    back: SyncSender<PageBuf>,
    returned: Receiver<PageBuf>,
}

impl Pool {
    /// A pool keeping at most `idle` buffers for reuse.
    fn new(idle: usize) -> Pool {
        let (back, returned) = sync_channel::<PageBuf>(idle);
        Pool { back, returned }
    }

    /// An empty buffer of `capacity` bytes, reused when one came back.
    fn take(&self, capacity: usize) -> std::io::Result<PageBuf> {
        match self.returned.try_recv() {
            Ok(mut buf) if buf.capacity() >= capacity => {
                buf.clear();
                Ok(buf)
            }
            _ => PageBuf::with_capacity(capacity),
        }
    }
}

/// The reading end: yields what the producer thread read.
#[derive(Debug)]
pub struct PipeReader {
    rx: Receiver<std::io::Result<Chunk>>,
    /// Buffers handed back to the producer for reuse.
    back: SyncSender<PageBuf>,
    current: Chunk,
    pos: usize,
    done: bool,
}

/// Starts pumping `source` into a bounded channel on a thread of `scope`; returns the reading end.
pub(crate) fn spawn_pump<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: R,
) -> PipeReader {
    start(scope, source, None, Pool::new(STREAM_IDLE))
}

/// Like [`spawn_pump`], and every chunk also goes to the hasher of `feed` (the DiffID).
pub fn spawn_pump_hashed<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: R,
    feed: StreamFeed,
) -> PipeReader {
    start(scope, source, Some(feed.tx), feed.pool)
}

/// Where a pump sends the decompressed stream's chunks to be hashed.
pub struct StreamFeed {
    tx: SyncSender<ToHash>,
    pool: Pool,
}

impl std::fmt::Debug for StreamFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamFeed")
    }
}

impl StreamFeed {
    /// Has the hasher check the CRC-32 of every gzip member the stream is decoded from (off the
    /// decoding thread): give the result to the gzip decoder, before it decodes anything.
    pub(crate) fn gzip_crc_check(&self) -> std::io::Result<CrcCheck> {
        let stopped = || std::io::Error::other("the stream hasher stopped");
        self.tx.send(ToHash::Members).map_err(|_| stopped())?;
        let tx = self.tx.clone();
        Ok(CrcCheck::Deferred(Box::new(move |end| {
            tx.send(ToHash::MemberEnd(end)).map_err(|_| stopped())
        })))
    }
}

/// Starts the hasher on a thread of `scope`: returns the blob reader that feeds it (read through
/// it, as a [`BufRead`], everything the blob has), the feed for the decompressed stream (give it
/// to [`spawn_pump_hashed`], or drop it when the blob is not compressed), and the hasher's handle.
/// `read` counts the blob's bytes as they are read (progress, from any thread).
/// `keep` (`offset`, `length`): a range of the blob's bytes to keep aside (a zstd:chunked TOC).
pub fn spawn_hasher<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    blob: R,
    read: Arc<AtomicU64>,
    keep: Option<(u64, u64)>,
) -> (HashedBlob<R>, StreamFeed, ScopedJoinHandle<'scope, Hashes>) {
    let (tx, rx) = sync_channel::<ToHash>(HASH_DEPTH);
    let blob_pool = Pool::new(BLOB_IDLE);
    let stream_pool = Pool::new(STREAM_IDLE);
    let blob_back = blob_pool.back.clone();
    let stream_back = stream_pool.back.clone();
    let hasher = scope.spawn(move || {
        let (mut blob_sha, mut blob_size) = (Sha256::new(), 0u64);
        let mut stream: Option<(Sha256, u64)> = None;
        let mut members: Option<MemberCrcs> = None;
        let mut kept = keep.map(|(start, len)| super::kept_range::KeptRange::new(start, len));
        for msg in rx {
            match msg {
                ToHash::Blob(c) => {
                    if let Some(k) = kept.as_mut() {
                        k.chunk(blob_size, &c[..]);
                    }
                    blob_sha.update(&c[..]);
                    blob_size += c.len() as u64;
                    recycle(&blob_back, c);
                }
                ToHash::Stream(c) => {
                    let (sha, size) = stream.get_or_insert_with(|| (Sha256::new(), 0));
                    sha.update(&c[..]);
                    *size += c.len() as u64;
                    if let Some(m) = members.as_mut() {
                        m.update(&c[..]);
                    }
                    recycle(&stream_back, c);
                }
                ToHash::Members => members = Some(MemberCrcs::default()),
                ToHash::MemberEnd(e) => {
                    if let Some(m) = members.as_mut() {
                        m.told(e);
                    }
                }
            }
        }
        Hashes {
            blob: (Digest::from_sha256(blob_sha.finalize().into()), blob_size),
            stream: stream.map(|(sha, size)| (Digest::from_sha256(sha.finalize().into()), size)),
            bad_member: members.and_then(MemberCrcs::result),
            kept: kept.and_then(super::kept_range::KeptRange::finish),
        }
    });
    let reader = HashedBlob {
        inner: blob,
        tx: tx.clone(),
        pool: blob_pool,
        current: Arc::default(),
        pos: 0,
        read,
    };
    (
        reader,
        StreamFeed {
            tx,
            pool: stream_pool,
        },
        hasher,
    )
}

/// A blob read in chunks that the hasher also gets (see [`spawn_hasher`]).
pub struct HashedBlob<R> {
    inner: R,
    tx: SyncSender<ToHash>,
    pool: Pool,
    current: Chunk,
    pos: usize,
    read: Arc<AtomicU64>,
}

impl<R> std::fmt::Debug for HashedBlob<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashedBlob").finish_non_exhaustive()
    }
}

impl<R: Read> BufRead for HashedBlob<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.current.len() {
            let mut buf = self.pool.take(BLOB_CHUNK)?;
            let n = loop {
                match self.inner.read(buf.spare_mut()) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            buf.advance(n);
            self.read.fetch_add(n as u64, Ordering::Relaxed);
            let chunk = Arc::new(buf);
            if n > 0 && self.tx.send(ToHash::Blob(chunk.clone())).is_err() {
                return Err(std::io::Error::other("the blob hasher stopped"));
            }
            let used = std::mem::replace(&mut self.current, chunk);
            recycle(&self.pool.back, used);
            self.pos = 0;
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.current.len());
    }
}

impl<R: Read> Read for HashedBlob<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        read_buffered(self, out)
    }
}

/// `Read` of a reader that is a [`BufRead`] first: a copy out of its buffer.
fn read_buffered(r: &mut impl BufRead, out: &mut [u8]) -> std::io::Result<usize> {
    let avail = r.fill_buf()?;
    let n = out.len().min(avail.len());
    out[..n].copy_from_slice(&avail[..n]);
    r.consume(n);
    Ok(n)
}

fn start<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut source: R,
    hasher: Option<SyncSender<ToHash>>,
    pool: Pool,
) -> PipeReader {
    let (tx, rx): (SyncSender<std::io::Result<Chunk>>, _) = sync_channel(DEPTH);
    let back = pool.back.clone();
    scope.spawn(move || {
        loop {
            let mut buf = match pool.take(CHUNK) {
                Ok(b) => b,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            // Fill the chunk (decoders return small reads).
            let res = loop {
                match source.read(buf.spare_mut()) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        buf.advance(n);
                        if buf.spare_mut().is_empty() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            let filled = buf.len();
            let end = filled == 0;
            let chunk = Arc::new(buf);
            // The end too (an empty chunk), so that an empty stream has its digest.
            if (filled > 0 || (end && res.is_ok()))
                && let Some(h) = &hasher
                && h.send(ToHash::Stream(chunk.clone())).is_err()
            {
                return;
            }
            match res {
                Ok(()) => {
                    if tx.send(Ok(chunk)).is_err() || end {
                        return;
                    }
                }
                Err(e) => {
                    if filled > 0 && tx.send(Ok(chunk)).is_err() {
                        return;
                    }
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        }
    });
    PipeReader {
        rx,
        back,
        current: Arc::default(),
        pos: 0,
        done: false,
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(&[]);
            }
            match self.rx.recv() {
                Ok(Ok(buf)) => {
                    if buf.is_empty() {
                        self.done = true;
                    }
                    let used = std::mem::replace(&mut self.current, buf);
                    recycle(&self.back, used);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(&[]);
                }
            }
        }
        Ok(&self.current[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.current.len());
    }
}

impl ContentRead for PipeReader {
    fn share(&mut self, n: usize) -> Option<SharedBytes> {
        let end = self.pos.checked_add(n)?;
        SharedBytes::new(&self.current, self.pos, end, &self.back)
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        read_buffered(self, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `blob` through the hasher and the pump as a layer import does: the stream, and
    /// what the hasher found.
    fn through_pipe(blob: Vec<u8>) -> (std::io::Result<Vec<u8>>, Hashes) {
        std::thread::scope(|s| {
            let read = Arc::new(AtomicU64::new(0));
            let (blob, feed, hasher) = spawn_hasher(s, std::io::Cursor::new(blob), read, None);
            let (_, reader) = super::super::decompress::decompress_buffered(blob, Some(&feed))
                .expect("a gzip header");
            let mut pipe = spawn_pump_hashed(s, reader, feed);
            let mut out = Vec::new();
            let r = pipe.read_to_end(&mut out).map(|_| out);
            drop(pipe);
            (r, hasher.join().expect("the hasher"))
        })
    }

    #[test]
    fn gzip_members_checked_by_the_hasher() {
        // Member ends inside a chunk, exactly at a chunk's end, and an empty member.
        let parts: [Vec<u8>; 4] = [
            (0..300_000u32).map(|i| (i % 251) as u8).collect(),
            (0..(2 * CHUNK as u32 - 300_000))
                .map(|i| (i % 13) as u8)
                .collect(),
            Vec::new(),
            b"tail".to_vec(),
        ];
        let blob: Vec<u8> = parts.iter().flat_map(|p| gz(p)).collect();
        let (out, hashes) = through_pipe(blob.clone());
        assert_eq!(out.unwrap(), parts.concat());
        assert_eq!(hashes.bad_member, None);
        assert_eq!(
            hashes.stream.map(|s| s.1),
            Some(parts.concat().len() as u64)
        );

        // The third member's CRC is wrong (its length is right): found by the hasher.
        let sizes: Vec<usize> = parts.iter().map(|p| gz(p).len()).collect();
        let mut bad = blob;
        let third_end = sizes[0] + sizes[1] + sizes[2];
        bad[third_end - 8] ^= 0x40;
        let (out, hashes) = through_pipe(bad);
        assert_eq!(out.unwrap(), parts.concat());
        let (member, _, actual) = hashes.bad_member.expect("a bad member");
        assert_eq!((member, actual), (3, 0));
    }
}
