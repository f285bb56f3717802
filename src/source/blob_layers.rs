//! Layers that come as tar blobs (`oci:` layouts and archives, registries through the proxy): each blob is
//! decompressed on its own thread, its digest and size checked against the manifest, and its tar
//! stream fed entry by entry into the sink.

use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::layer::decompress::{Compression, HashingReader, decompressor};
use crate::layer::pipe::{spawn_pump, spawn_pump_hashed};
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::feed_tar;
use crate::store::image_input::{LayerBytes, LayerInput};
use crate::store::producer::{LayerProducer, Produced};

/// Layers that come as (compressed) tar blobs.
#[derive(Debug, Clone, Copy)]
pub struct BlobLayers<'a> {
    /// Where the blobs are.
    pub blobs: &'a dyn BlobSource,
    /// How often a layer whose blob failed to arrive is written again.
    pub retry: super::retry::RetryPolicy,
}

impl std::fmt::Debug for dyn BlobSource + '_ {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobSource")
    }
}

impl LayerProducer for BlobLayers<'_> {
    fn sink_hashes(&self, _index: usize) -> bool {
        false
    }

    fn retry(&self) -> super::retry::RetryPolicy {
        self.retry
    }

    fn produce(
        &self,
        _index: usize,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced> {
        let blob = self.blobs.open_blob(&layer.blob_digest)?;
        let (hashing, hash_state) = HashingReader::new(blob);
        let (hashing, read_bytes) = hashing.counted();
        let (compression, reader) = decompressor(hashing)?;
        // Decompression runs on its own thread, the entries are written on this one, and the
        // DiffID is hashed on a third: with two cores, the scheduler balances the three (inflate
        // alone keeps one core busy). An uncompressed blob's DiffID is its own digest.
        let hashed = compression != Compression::None;
        let diff = std::thread::scope(|s| -> Result<_> {
            let report = |written| {
                let read = read_bytes.load(std::sync::atomic::Ordering::Relaxed);
                progress(LayerBytes { written, read });
            };
            if hashed {
                let (pipe, hasher) = spawn_pump_hashed(s, reader);
                feed_tar(pipe, sink, report)?;
                let diff = hasher
                    .join()
                    .map_err(|_| Error::Internal("the DiffID hasher panicked".into()))?;
                Ok(Some(diff))
            } else {
                feed_tar(spawn_pump(s, reader), sink, report)?;
                Ok(None)
            }
        })?;
        let (blob_digest, blob_size) = hash_state
            .lock()
            .map_err(|_| Error::Internal("hash state poisoned".into()))?
            .result();
        let (diff_id, diff_size) = diff.unwrap_or_else(|| (blob_digest.clone(), blob_size));
        if diff_size != sink.size() {
            return Err(Error::Internal(format!(
                "layer stream length {diff_size} differs from the {} bytes parsed",
                sink.size()
            )));
        }
        if blob_digest != layer.blob_digest {
            return Err(Error::DigestMismatch {
                what: "layer blob".into(),
                expected: layer.blob_digest.to_string(),
                actual: blob_digest.to_string(),
            });
        }
        if blob_size != layer.blob_size {
            return Err(Error::SizeMismatch {
                what: format!("layer blob {}", layer.blob_digest),
                expected: layer.blob_size,
                found: blob_size,
            });
        }
        progress(LayerBytes {
            written: sink.size(),
            read: blob_size,
        });
        Ok(Produced {
            diff_id: Some(diff_id),
            compression,
        })
    }
}
