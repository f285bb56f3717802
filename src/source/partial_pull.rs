//! Partial pulls in an import: a zstd:chunked layer (its TOC and tar-split placed by its
//! annotations) from a source that serves ranges (a registry) is rebuilt from the files the
//! store already holds and the frames of the others
//! ([`crate::layer::zstd_chunked_partial`]), when the store holds any of them. Anything that
//! keeps a layer from being pulled partially before its tree is touched means the whole blob is
//! fetched as usual; a failure half-way ([`Error::StartOver`]) means the layer is written again,
//! whole.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::Digest;
use crate::error::{Error, ErrorClass, Result};
use crate::layer::BlobSource;
use crate::layer::decompress::Compression;
use crate::layer::pipe::{spawn_hasher, spawn_pump};
use crate::layer::read_ahead::{ReadAhead, StopOnDrop};
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::feed_tar;
use crate::layer::zstd_chunked_partial::ChunkedLayer;
use crate::layer::zstd_chunked_toc::StoredToc;
use crate::store::Store;
use crate::store::content_index::ContentIndex;
use crate::store::image_input::{LayerBytes, LayerInput};
use crate::store::producer::Produced;

/// How far the read-ahead of the store's files runs ahead of the rebuild.
const READ_AHEAD_LEAD: u64 = 64 << 20;

/// The partial pulls of one import into a store.
#[derive(Debug)]
pub(crate) struct PartialPulls<'a> {
    store: &'a Store,
    /// The store's files by content, indexed when first needed.
    index: OnceLock<ContentIndex>,
    /// Layers whose partial pull failed half-way: pulled whole now.
    whole: Mutex<HashSet<Digest>>,
}

impl<'a> PartialPulls<'a> {
    /// Partial pulls into `store`.
    pub(crate) fn new(store: &'a Store) -> Self {
        PartialPulls {
            store,
            index: OnceLock::new(),
            whole: Mutex::default(),
        }
    }

    /// The store's files by content (the import holds the layers lock: the records are read
    /// as they are).
    fn index(&self) -> &ContentIndex {
        self.index.get_or_init(|| match self.store.read_layers() {
            Ok((file, _)) => ContentIndex::of_layers(self.store, file.iter()),
            Err(e) => {
                tracing::debug!(error = %e, "no partial pulls: the layers cannot be read");
                ContentIndex::default()
            }
        })
    }

    /// Whether `layer` may be pulled partially from `blobs`.
    pub(crate) fn may_apply(&self, blobs: &dyn BlobSource, layer: &LayerInput) -> bool {
        layer.toc.as_ref().is_some_and(|t| t.tar_split.is_some())
            && blobs.serves_ranges()
            && self
                .whole
                .lock()
                .is_ok_and(|w| !w.contains(&layer.blob_digest))
            && (self.index().len() > 0 || self.index().chunks() > 0)
    }

    /// Writes `layer` into `sink` partially, if it may be; `Ok(None)`: pull it whole (nothing
    /// was written).
    pub(crate) fn produce(
        &self,
        blobs: &dyn BlobSource,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Option<Produced>> {
        let Some(toc) = layer.toc.as_ref().filter(|_| self.may_apply(blobs, layer)) else {
            return Ok(None);
        };
        let digest = &layer.blob_digest;
        let open = |start: u64, end: u64| {
            blobs.open_range(digest, start, end).unwrap_or_else(|| {
                Err(Error::Unsupported(format!(
                    "blob {digest} served whole only"
                )))
            })
        };
        let chunked = match ChunkedLayer::fetch(toc, &open, &self.store.config().graphroot) {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(layer = %digest, "pulled whole: {e}");
                return Ok(None);
            }
        };
        let index = self.index();
        let plan = chunked.plan(index);
        if plan.local_files == 0 && plan.local_chunks == 0 {
            tracing::info!(layer = %digest, "pulled whole: the store has none of its files");
            return Ok(None);
        }
        tracing::info!(
            layer = %digest,
            from_store = plan.local_files,
            from_store_bytes = plan.local_bytes,
            chunks_from_store = plan.local_chunks,
            chunk_bytes_from_store = plan.local_chunk_bytes,
            fetched_files = plan.remote_files,
            fetched_bytes = plan.fetch_bytes,
            blob_bytes = layer.blob_size,
            "pulling partially"
        );
        let metadata = toc.length + toc.tar_split.map_or(0, |t| t.1);
        let fetched = AtomicU64::new(metadata);
        // A helper asks the kernel for the store's files ahead of the rebuild (a cold disk gets
        // many reads at once).
        let ra = ReadAhead::new(READ_AHEAD_LEAD);
        let rebuilt = std::thread::scope(|s| -> Result<(Digest, u64)> {
            let _stop = StopOnDrop(&ra);
            s.spawn(|| ra.run(chunked.local_files_in_order(&plan, index)));
            let rebuild = chunked.rebuild(&plan, index, &open, &fetched, &ra)?;
            // The rebuilt tar is hashed as it is read (the DiffID) and fed to the sink.
            let (tar, feed, hasher) = spawn_hasher(s, rebuild, Arc::new(AtomicU64::new(0)), None);
            drop(feed);
            let report = |written| {
                let read = fetched.load(Ordering::Relaxed);
                progress(LayerBytes { written, read });
            };
            // Every fetched file is checked against its TOC digest as it is decoded: the sink
            // need not hash them again.
            sink.without_toc();
            feed_tar(spawn_pump(s, tar), sink, report)?;
            let hashes = hasher
                .join()
                .map_err(|_| Error::Internal("the DiffID hasher panicked".into()))?;
            Ok(hashes.blob)
        });
        let diff_id = match rebuilt {
            Ok((d, size)) if size == sink.size() && d == layer.diff_id => d,
            Ok((d, _)) => {
                return Err(self.start_over(
                    digest,
                    Error::DigestMismatch {
                        what: format!("layer {digest} rebuilt partially: DiffID in the config"),
                        expected: layer.diff_id.to_string(),
                        actual: d.to_string(),
                    },
                ));
            }
            // The store's own failures (a full disk) end the import; the source's (a range
            // refused, a file that does not match its TOC) mean the layer is pulled whole.
            Err(e) if matches!(e.class(), ErrorClass::Storage | ErrorClass::Internal) => {
                return Err(e);
            }
            Err(e) => return Err(self.start_over(digest, e)),
        };
        progress(LayerBytes {
            written: sink.size(),
            read: fetched.load(Ordering::Relaxed),
        });
        Ok(Some(Produced {
            diff_id: Some(diff_id),
            compression: Compression::Zstd,
            toc: Some(StoredToc {
                digest: toc.checksum.clone(),
                manifest: chunked.manifest,
            }),
            partial: true,
        }))
    }

    /// `e` as the reason to write layer `digest` again, whole.
    fn start_over(&self, digest: &Digest, e: Error) -> Error {
        if let Ok(mut w) = self.whole.lock() {
            w.insert(digest.clone());
        }
        let mut why = format!("a partial pull failed: {e}");
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            why.push_str(&format!(": {c}"));
            cause = c.source();
        }
        Error::StartOver(Box::new(Error::Unsupported(why)))
    }
}
