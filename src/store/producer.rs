//! The one interface every source implements: a producer of layers, each an entry stream fed into
//! the store's [`LayerSink`]. Adding a source means writing a producer, nothing else.

use storage_format::Digest;

use super::image_input::{ImageInput, LayerBytes, LayerInput};
use crate::error::Result;
use crate::layer::decompress::Compression;
use crate::layer::sink::LayerSink;

/// What producing a layer yields besides what the sink learnt.
#[derive(Debug)]
pub struct Produced {
    /// The DiffID of the stream, when the producer hashed it itself (a tar blob's, hashed where it
    /// is decompressed); `None` asks the sink's (see [`LayerProducer::sink_hashes`]).
    pub diff_id: Option<Digest>,
    /// The compression of the source blob (recorded in the layer record).
    pub compression: Compression,
    /// A zstd:chunked blob's checked TOC, stored with the layer as podman 5 stores it.
    pub toc: Option<crate::layer::zstd_chunked_toc::StoredToc>,
    /// The layer was pulled partially (a zstd:chunked blob's files, some taken from the store):
    /// its blob was never whole here, so its record names no compressed digest (as podman 5's
    /// partial pulls), and its TOC was checked file by file as it was written.
    pub partial: bool,
}

/// Produces layers: streams layer `index`'s entries into `sink`, in one pass.
pub trait LayerProducer: Sync {
    /// Whether the sink must compute the DiffID (the producer does not hash the stream itself).
    fn sink_hashes(&self, index: usize) -> bool;

    /// How often a layer that failed transiently (see [`crate::Error::is_transient`]) is written
    /// again, from an empty tree; the default never.
    fn retry(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy::none()
    }

    /// The layers about to be produced, in order (and no others): a producer may start fetching
    /// them ahead. The default ignores it.
    fn will_produce(&self, layers: &[&LayerInput]) {
        let _ = layers;
    }

    /// Feeds layer `index` (described by `layer`) into `sink`, trailer included; `progress` gets
    /// the bytes written and read so far. [`Error::StartOver`](crate::Error::StartOver): the
    /// layer is to be written again from an empty tree (a partial pull that failed half-way;
    /// the producer then pulls it whole).
    fn produce(
        &self,
        index: usize,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced>;

    /// The image to record once its layers exist, given each layer's uncompressed length (written
    /// now, or read from the layer already in the store). A producer that learns its layers' lengths
    /// only by writing them (a synthesized layer) returns its manifest here; the default keeps `input`.
    fn complete_image(&self, input: &ImageInput, diff_sizes: &[u64]) -> Result<Option<ImageInput>> {
        let _ = (input, diff_sizes);
        Ok(None)
    }
}
