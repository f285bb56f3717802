//! Layers as streams of tar entries: reading tar with its raw bytes, decompression, and the layer sink
//! that writes tar-split, DiffID and tree in one pass.

pub mod blob_ranges;
pub mod decompress;
pub mod entry;
pub mod file_digests;
pub mod gzip_members;
pub(crate) mod hashing_writer;
pub mod kept_range;
mod page_buf;
pub mod path;
pub mod pipe;
pub(crate) mod read_ahead;
pub mod shared_bytes;
pub mod sink;
pub mod tar_build;
pub mod tar_header;
pub mod tar_stream;
pub mod toc_out;
pub mod tree_writer;
mod zstd_chunked_files;
pub mod zstd_chunked_partial;
pub mod zstd_chunked_toc;
pub mod zstd_chunked_writer;

use std::io::Read;

use storage_format::Digest;

use crate::error::Result;

/// Something that can open blobs by digest (an OCI layout, an archive, another store).
pub trait BlobSource: Sync {
    /// Opens the blob `digest` for reading from its start.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;

    /// The blobs about to be opened, in order (a source may ask for them ahead); no others will
    /// be. The default ignores it.
    fn will_fetch(&self, digests: &[Digest]) {
        let _ = digests;
    }

    /// Whether [`open_range`](Self::open_range) may serve ranges (the default: no).
    fn serves_ranges(&self) -> bool {
        false
    }

    /// Opens bytes `start..end` of blob `digest` (what a partial pull of a zstd:chunked layer
    /// reads); `None` when the source does not serve ranges (the default), and an error when this
    /// blob's cannot be had.
    fn open_range(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Option<Result<Box<dyn Read + Send>>> {
        let _ = (digest, start, end);
        None
    }
}
