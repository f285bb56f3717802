//! A writer that hashes what it writes on a thread of its own: the bytes go out at once, a copy
//! of them (in 256 KiB buffers, at most three in flight) to the hashing thread, so SHA-256 runs on
//! the other core while this one reads the next file.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use sha2::{Digest as _, Sha256};

use crate::Digest;
use crate::error::{Error, Result};

/// Bytes per buffer handed to the hashing thread.
const CHUNK: usize = 256 << 10;

/// Writes into `out`, hashes on another thread.
pub(crate) struct HashedWriter<'a, W: Write> {
    out: &'a mut W,
    buf: Vec<u8>,
    to_hash: Option<SyncSender<Vec<u8>>>,
    spent: Receiver<Vec<u8>>,
    hasher: Option<JoinHandle<[u8; 32]>>,
    len: u64,
}

impl<'a, W: Write> HashedWriter<'a, W> {
    /// A writer into `out`; its hashing thread started.
    pub(crate) fn new(out: &'a mut W) -> Result<Self> {
        let (to_hash, chunks) = sync_channel::<Vec<u8>>(3);
        let (give_back, spent) = sync_channel::<Vec<u8>>(4);
        let hasher = std::thread::Builder::new()
            .name("proxy-hash".into())
            .spawn(move || {
                let mut sha = Sha256::new();
                for mut chunk in chunks {
                    sha.update(&chunk);
                    chunk.clear();
                    let _ = give_back.try_send(chunk);
                }
                sha.finalize().into()
            })
            .map_err(|e| Error::io("starting", "a hashing thread", e))?;
        Ok(HashedWriter {
            out,
            buf: Vec::with_capacity(CHUNK),
            to_hash: Some(to_hash),
            spent,
            hasher: Some(hasher),
            len: 0,
        })
    }

    /// Hands the buffer to the hashing thread, taking a spent one (or a new one) in its place.
    fn send(&mut self) -> std::io::Result<()> {
        let next = self
            .spent
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        match &self.to_hash {
            Some(tx) => tx
                .send(full)
                .map_err(|_| std::io::Error::other("the hashing thread ended early")),
            None => Err(std::io::Error::other("the writer was finished")),
        }
    }

    /// The digest and length of everything written.
    pub(crate) fn finish(mut self) -> Result<(Digest, u64)> {
        if !self.buf.is_empty() {
            self.send()
                .map_err(|e| Error::Internal(format!("hashing a blob: {e}")))?;
        }
        drop(self.to_hash.take());
        let hash = self
            .hasher
            .take()
            .ok_or_else(|| Error::Internal("the hashing thread is gone".into()))?
            .join()
            .map_err(|_| Error::Internal("the hashing thread panicked".into()))?;
        Ok((Digest::from_sha256(hash), self.len))
    }
}

impl<W: Write> Write for HashedWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.len += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let take = rest.len().min(CHUNK - self.buf.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.buf.len() == CHUNK {
                self.send()?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Drop for HashedWriter<'_, W> {
    fn drop(&mut self) {
        // An unfinished writer (an error on the way): the thread ends when its channel closes.
        drop(self.to_hash.take());
        if let Some(h) = self.hasher.take() {
            let _ = h.join();
        }
    }
}
