//! A writer that hashes (SHA-256) and counts what goes through it: a blob's digest and length
//! while it is written out (an export's compressed layer, a blob the proxy streams).

use std::io::Write;

use sha2::{Digest as _, Sha256};

use crate::Digest;

/// Writes into `inner`, hashing and counting.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W> HashingWriter<W> {
    /// A writer into `inner`.
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            sha: Sha256::new(),
            len: 0,
        }
    }

    /// The inner writer, the digest and the length of all that was written.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest::from_sha256(self.sha.finalize().into()),
            self.len,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
