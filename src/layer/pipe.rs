//! Runs a reader on its own thread, so decompression overlaps with writing files; optionally a
//! third thread hashes the same bytes (a layer's DiffID), so neither of the other two carries it.

use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::ScopedJoinHandle;

use sha2::{Digest as _, Sha256};
use storage_format::Digest;

/// Chunk size handed between the threads.
const CHUNK: usize = 512 * 1024;
/// Chunks in flight: bounds memory to a few MiB whatever the image size.
const DEPTH: usize = 4;

/// A chunk shared by the reader and the hasher.
type Chunk = Arc<Vec<u8>>;

/// The reading end: yields what the producer thread read.
#[derive(Debug)]
pub struct PipeReader {
    rx: Receiver<std::io::Result<Chunk>>,
    /// Buffers handed back to the producer for reuse (no allocation and zeroing per chunk).
    back: SyncSender<Vec<u8>>,
    current: Chunk,
    pos: usize,
    done: bool,
}

/// Hands `used` back to the producer when nobody else holds it.
fn recycle(back: &SyncSender<Vec<u8>>, used: Chunk) {
    if let Ok(v) = Arc::try_unwrap(used)
        && v.capacity() > 0
    {
        let _ = back.try_send(v);
    }
}

/// Starts pumping `source` into a bounded channel on a thread of `scope`; returns the reading end.
pub fn spawn_pump<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: R,
) -> PipeReader {
    start(scope, source, None)
}

/// Like [`spawn_pump`], and a thread of `scope` hashes every byte `source` yields: its handle
/// gives the SHA-256 and length of the whole stream once the stream has ended.
pub fn spawn_pump_hashed<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    source: R,
) -> (PipeReader, ScopedJoinHandle<'scope, (Digest, u64)>) {
    let (htx, hrx) = sync_channel::<Chunk>(DEPTH);
    let reader = start(scope, source, Some(htx));
    let back = reader.back.clone();
    let hasher = scope.spawn(move || {
        let mut sha = Sha256::new();
        let mut size = 0u64;
        for chunk in hrx {
            sha.update(chunk.as_slice());
            size += chunk.len() as u64;
            recycle(&back, chunk);
        }
        (Digest::from_sha256(sha.finalize().into()), size)
    });
    (reader, hasher)
}

fn start<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut source: R,
    hasher: Option<SyncSender<Chunk>>,
) -> PipeReader {
    let (tx, rx): (SyncSender<std::io::Result<Chunk>>, _) = sync_channel(DEPTH);
    let (back, returned) = sync_channel::<Vec<u8>>(2 * DEPTH + 2);
    scope.spawn(move || {
        loop {
            let mut buf = returned.try_recv().unwrap_or_default();
            buf.resize(CHUNK, 0);
            let mut filled = 0;
            // Fill the chunk (decoders return small reads).
            let res = loop {
                match source.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == buf.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            let end = filled == 0;
            let chunk = Arc::new(buf);
            if filled > 0
                && let Some(h) = &hasher
                && h.send(chunk.clone()).is_err()
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
        current: Arc::new(Vec::new()),
        pos: 0,
        done: false,
    }
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
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
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
