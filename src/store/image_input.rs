//! What the store is given to import and what it reports: the image (manifest, config, layers with
//! their DiffIDs, names), progress events, and the result.

use storage_format::Digest;

/// One layer of the image to import.
#[derive(Debug, Clone)]
pub struct LayerInput {
    /// The blob's digest, as the manifest names it.
    pub blob_digest: Digest,
    /// The blob's size, as the manifest gives it.
    pub blob_size: u64,
    /// The DiffID the config declares for this layer.
    pub diff_id: Digest,
    /// Where a zstd:chunked blob's TOC is, as its descriptor's annotations say.
    pub toc: Option<crate::layer::zstd_chunked_toc::TocRef>,
}

/// An image to import.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The manifest, byte for byte.
    pub manifest: Vec<u8>,
    /// Its digest.
    pub manifest_digest: Digest,
    /// The config, byte for byte.
    pub config: Vec<u8>,
    /// Its digest.
    pub config_digest: Digest,
    /// The config's `created`, if any.
    pub created: Option<String>,
    /// Layers, base first.
    pub layers: Vec<LayerInput>,
    /// Names to give the image (full references).
    pub names: Vec<String>,
}

/// Progress events of an import.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The plan: how many layers, how many to write.
    Plan {
        /// All layers of the image.
        total: usize,
        /// Layers that must be written.
        to_write: usize,
    },
    /// A layer's bytes so far.
    Bytes {
        /// Index of the layer.
        index: usize,
        /// Uncompressed bytes written.
        bytes: u64,
        /// Source bytes read: of the blob as the manifest sizes it (compressed), or the same as
        /// `bytes` for a source whose layers are not blobs.
        read: u64,
    },
    /// A layer is done.
    LayerDone {
        /// Index of the layer.
        index: usize,
        /// Whether it already existed.
        reused: bool,
    },
}

/// How far a producer is with one layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerBytes {
    /// Uncompressed bytes written into the layer.
    pub written: u64,
    /// Source bytes read (the compressed blob's, for blob sources).
    pub read: u64,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The image ID.
    pub image_id: String,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The names given.
    pub names: Vec<String>,
    /// Layers written.
    pub layers_written: usize,
    /// Layers reused.
    pub layers_reused: usize,
}
