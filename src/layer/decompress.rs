//! Blob decompression (gzip, zstd, none) with the blob's own digest computed on the way.

use std::io::{BufRead, Read};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use storage_format::Digest;

use super::gzip_members::{CrcCheck, GzipMembers};
use super::pipe::StreamFeed;
use crate::error::{Error, Result};

/// The compression of a layer blob, with c/storage's `compression` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// An uncompressed tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The number c/storage records in `compression` (`archive.Compression`).
    pub(crate) fn storage_code(self) -> i32 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 2,
            Compression::Zstd => 4,
        }
    }

    /// The compression c/storage's number `code` records, if it is one of ours.
    pub(crate) fn from_storage_code(code: i32) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            2 => Some(Compression::Gzip),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// Recognizes the compression from the first bytes of a blob.
    pub(crate) fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// The digest and size of the bytes that went through a [`HashingReader`].
#[derive(Debug, Default)]
pub(crate) struct HashState {
    sha: Sha256,
    size: u64,
}

impl HashState {
    /// The digest and size so far.
    pub fn result(&self) -> (Digest, u64) {
        (
            Digest::from_sha256(self.sha.clone().finalize().into()),
            self.size,
        )
    }
}

/// A reader that hashes everything read through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    state: Arc<Mutex<HashState>>,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; the returned handle yields the digest later.
    pub fn new(inner: R) -> (Self, Arc<Mutex<HashState>>) {
        let state = Arc::new(Mutex::new(HashState::default()));
        (
            HashingReader {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut s) = self.state.lock() {
            s.sha.update(&buf[..n]);
            s.size += n as u64;
        }
        Ok(n)
    }
}

/// Opens a decompressing reader over a buffered blob reader, sniffing its compression. With
/// `hasher`, the hasher that gets the decoded stream checks each gzip member's CRC-32 (off the
/// decoding thread); without, the reader checks it.
pub fn decompress_buffered<R: BufRead + Send + 'static>(
    mut buffered: R,
    hasher: Option<&StreamFeed>,
) -> Result<(Compression, Box<dyn Read + Send>)> {
    let head = buffered
        .fill_buf()
        .map_err(|e| Error::read("layer blob", e))?;
    let compression = Compression::sniff(head);
    let reader: Box<dyn Read + Send> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => {
            let check = match hasher {
                Some(feed) => feed
                    .gzip_crc_check()
                    .map_err(|e| Error::read("gzip layer blob", e))?,
                None => CrcCheck::Inline,
            };
            Box::new(
                GzipMembers::new(buffered, check).map_err(|e| Error::read("gzip layer blob", e))?,
            )
        }
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::read("zstd layer blob", e))?,
        ),
    };
    Ok((compression, reader))
}
