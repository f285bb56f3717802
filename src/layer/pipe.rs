//! Runs a reader on its own thread, so decompression overlaps with writing files.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Chunk size handed between the threads.
const CHUNK: usize = 512 * 1024;
/// Chunks in flight: bounds memory to a few MiB whatever the image size.
const DEPTH: usize = 4;

/// The reading end: yields what the producer thread read.
#[derive(Debug)]
pub struct PipeReader {
    rx: Receiver<std::io::Result<Vec<u8>>>,
    /// Buffers handed back to the producer for reuse (no allocation and zeroing per chunk).
    back: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

/// Starts pumping `source` into a bounded channel on a thread of `scope`; returns the reading end.
pub fn spawn_pump<'scope, R: Read + Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    mut source: R,
) -> PipeReader {
    let (tx, rx): (SyncSender<std::io::Result<Vec<u8>>>, _) = sync_channel(DEPTH);
    let (back, returned) = sync_channel::<Vec<u8>>(DEPTH + 2);
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
            match res {
                Ok(()) => {
                    if tx.send(Ok(buf)).is_err() || end {
                        return;
                    }
                }
                Err(e) => {
                    if filled > 0 && tx.send(Ok(buf)).is_err() {
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
        current: Vec::new(),
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
                    if used.capacity() > 0 {
                        let _ = self.back.try_send(used);
                    }
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
