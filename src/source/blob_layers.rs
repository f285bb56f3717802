//! Layers that come as tar blobs (`oci:` layouts and archives, registries through the proxy): each blob is
//! decompressed on its own thread, its digest and size checked against the manifest, and its tar
//! stream fed entry by entry into the sink.

use crate::error::{Error, Result};
use crate::layer::BlobSource;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::layer::decompress::{Compression, decompress_buffered};
use crate::layer::pipe::{spawn_hasher, spawn_pump, spawn_pump_hashed};
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::feed_tar;
use crate::layer::zstd_chunked_toc::StoredToc;
use crate::store::image_input::{LayerBytes, LayerInput};
use crate::store::producer::{LayerProducer, Produced};

/// Layers that come as (compressed) tar blobs.
#[derive(Debug)]
pub(crate) struct BlobLayers<'a> {
    /// Where the blobs are.
    blobs: &'a dyn BlobSource,
    /// How often a layer whose blob failed to arrive is written again.
    retry: super::retry::RetryPolicy,
    /// zstd:chunked layers pulled partially, with the files of this store.
    partial: Option<super::partial_pull::PartialPulls<'a>>,
}

impl<'a> BlobLayers<'a> {
    /// Layers from `blobs`, each fetched whole.
    pub(crate) fn new(blobs: &'a dyn BlobSource, retry: super::retry::RetryPolicy) -> Self {
        BlobLayers {
            blobs,
            retry,
            partial: None,
        }
    }

    /// zstd:chunked layers pulled partially where `blobs` serves ranges: the files `store`
    /// holds are taken from it.
    pub(crate) fn partial_into(self, store: &'a crate::store::Store) -> Self {
        BlobLayers {
            partial: Some(super::partial_pull::PartialPulls::new(store)),
            ..self
        }
    }
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

    fn will_produce(&self, layers: &[&LayerInput]) {
        // A layer that may be pulled partially is not fetched whole ahead.
        let digests: Vec<_> = layers
            .iter()
            .filter(|l| {
                self.partial
                    .as_ref()
                    .is_none_or(|p| !p.may_apply(self.blobs, l))
            })
            .map(|l| l.blob_digest.clone())
            .collect();
        self.blobs.will_fetch(&digests);
    }

    fn produce(
        &self,
        _index: usize,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced> {
        if let Some(p) = &self.partial
            && let Some(produced) = p.produce(self.blobs, layer, sink, progress)?
        {
            return Ok(produced);
        }
        let blob = self.blobs.open_blob(&layer.blob_digest)?;
        let read_bytes = Arc::new(AtomicU64::new(0));
        // Decompression runs on its own thread, the entries are written on this one (and the
        // tree's file thread), and both the blob's digest and the DiffID are hashed on another:
        // with two cores, the scheduler balances them (inflate alone keeps one core busy). An
        // uncompressed blob's DiffID is its own digest.
        let (compression, hashes) = std::thread::scope(|s| -> Result<_> {
            let keep = layer.toc.as_ref().map(|t| t.range());
            let (blob, feed, hasher) = spawn_hasher(s, blob, read_bytes.clone(), keep);
            let (compression, reader) = decompress_buffered(blob, Some(&feed))?;
            let report = |written| {
                let read = read_bytes.load(Ordering::Relaxed);
                progress(LayerBytes { written, read });
            };
            let pipe = if compression == Compression::None {
                drop(feed);
                spawn_pump(s, reader)
            } else {
                spawn_pump_hashed(s, reader, feed)
            };
            feed_tar(pipe, sink, report)?;
            let hashes = hasher
                .join()
                .map_err(|_| Error::Internal("the blob hasher panicked".into()))?;
            Ok((compression, hashes))
        })?;
        let (blob_digest, blob_size) = hashes.blob.clone();
        let (diff_id, diff_size) = hashes.stream.unwrap_or_else(|| hashes.blob.clone());
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
        if let Some((member, expected, actual)) = hashes.bad_member {
            return Err(Error::DigestMismatch {
                what: format!(
                    "CRC-32 of gzip member {member} of layer blob {}",
                    layer.blob_digest
                ),
                expected: format!("{expected:08x}"),
                actual: format!("{actual:08x}"),
            });
        }
        progress(LayerBytes {
            written: sink.size(),
            read: blob_size,
        });
        // A zstd:chunked TOC, checked (the blob's digest already was); one that does not check
        // is ignored, as c/storage ignores it.
        let toc = match (&layer.toc, hashes.kept.as_ref()) {
            (Some(t), Some(bytes)) if compression == Compression::Zstd => {
                match t.decompress_to_file(bytes.reader(), None) {
                    Ok(manifest) => Some(StoredToc {
                        digest: t.checksum.clone(),
                        manifest,
                    }),
                    Err(why) => {
                        tracing::warn!(layer = %layer.blob_digest, "the zstd:chunked TOC is ignored: {why}");
                        None
                    }
                }
            }
            (Some(_), None) if compression == Compression::Zstd => {
                tracing::warn!(layer = %layer.blob_digest, "the zstd:chunked TOC is ignored: it could not be kept aside (a temporary file failed)");
                None
            }
            _ => None,
        };
        Ok(Produced {
            diff_id: Some(diff_id),
            compression,
            toc,
            partial: false,
        })
    }
}
