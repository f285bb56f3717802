//! Writing an image into the store: layer IDs from the DiffIDs, existing layers reused, new ones
//! written by a producer through a `LayerSink` each (one worker per core on overlay), all inside
//! the one transaction of `txn.rs` (c/storage's order and locks, all or nothing).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use storage_format::{Digest, LayerRecord, TarSplitWriter, ids, now_rfc3339_nano};

use super::Store;
use super::image_input::{ImageInput, ImportReport, LayerBytes, LayerInput, Progress};
use super::producer::LayerProducer;
use super::txn::{LayerTxn, TxnKind};
use crate::crashpoint::hit;
use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::sink::{LayerSink, LayerSummary};
use crate::layer::tree_writer::TreeWriter;

/// Each layer's uncompressed length: from `written`, else from its record in `layers`.
fn diff_sizes(
    ids_: &[String],
    layers: &storage_format::RecordFile<storage_format::LayerRecord>,
    written: &[Written],
) -> Result<Vec<u64>> {
    ids_.iter()
        .map(|id| {
            if let Some(w) = written.iter().find(|w| ids_[w.index] == *id) {
                return Ok(w.summary.diff_size);
            }
            layers
                .get(id)
                .and_then(|r| r.diff_size)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    Error::Internal(format!("layer {id} has no recorded uncompressed size"))
                })
        })
        .collect()
}

/// Result of writing one layer.
#[derive(Debug)]
struct Written {
    index: usize,
    summary: LayerSummary,
    diff_id: Digest,
    compression: Compression,
    tar_split_tmp: std::path::PathBuf,
}

impl Store {
    /// Imports an image whose layers `producer` writes; `input.layers` must carry their DiffIDs.
    pub fn import_with(
        &self,
        input: &ImageInput,
        producer: &dyn LayerProducer,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportReport> {
        crate::reference::check_stored_names(&input.names)?;
        // Layer IDs follow c/image's rule, from the config's DiffIDs.
        let mut ids_: Vec<String> = Vec::with_capacity(input.layers.len());
        for l in &input.layers {
            let id = ids::layer_id(ids_.last().map(String::as_str), &l.diff_id);
            ids_.push(id);
        }
        let mut txn = LayerTxn::begin(self, TxnKind::Import)?;
        let mut to_write = Vec::new();
        let mut seen = HashSet::new();
        for (i, id) in ids_.iter().enumerate() {
            if txn.layers().get(id).is_none() && seen.insert(id.clone()) {
                to_write.push(i);
            }
        }
        progress(Progress::Plan {
            total: ids_.len(),
            to_write: to_write.len(),
        });
        tracing::info!(
            layers = ids_.len(),
            to_write = to_write.len(),
            "importing image {}",
            input.manifest_digest
        );
        if to_write.is_empty() {
            for i in 0..ids_.len() {
                progress(Progress::LayerDone {
                    index: i,
                    reused: true,
                });
            }
        }
        // 1. Records flagged incomplete, so an interruption is cleaned up by the next opener.
        let created = now_rfc3339_nano();
        let records = to_write
            .iter()
            .map(|&i| LayerRecord {
                id: ids_[i].clone(),
                parent: (i > 0).then(|| ids_[i - 1].clone()),
                created: Some(created.clone()),
                ..Default::default()
            })
            .collect();
        txn.add_incomplete(records)?;
        // 2. Driver directories and entries.
        let written = if to_write.is_empty() {
            Vec::new()
        } else {
            match self.write_layers(input, producer, &ids_, &to_write, progress) {
                Ok(w) => w,
                Err(e) => return Err(txn.abort(e)),
            }
        };
        if !to_write.is_empty() {
            hit("import:layers-written");
        }
        let completed = diff_sizes(&ids_, txn.layers(), &written)
            .and_then(|sizes| producer.complete_image(input, &sizes));
        let completed = match completed {
            Ok(c) => c,
            Err(e) => return Err(txn.abort(e)),
        };
        let input = completed.as_ref().unwrap_or(input);
        // 3. Data durable (with --sync), tar-splits renamed, records complete.
        let fill = |id: &str, rec: &mut LayerRecord| -> Result<()> {
            let w = written
                .iter()
                .find(|w| ids_[w.index] == id)
                .ok_or_else(|| Error::Internal(format!("layer {id} was not written")))?;
            let l = &input.layers[w.index];
            rec.compressed_diff_digest = Some(l.blob_digest.to_string());
            rec.compressed_size = Some(i64::try_from(l.blob_size).unwrap_or(i64::MAX));
            rec.diff_digest = Some(w.diff_id.to_string());
            rec.diff_size = Some(i64::try_from(w.summary.diff_size).unwrap_or(i64::MAX));
            let code = w.compression.storage_code();
            rec.compression = (code != 0).then_some(code);
            rec.uidset = w.summary.uids.iter().copied().collect();
            rec.gidset = w.summary.gids.iter().copied().collect();
            Ok(())
        };
        if let Err(e) = txn.complete(fill) {
            return Err(txn.abort(e));
        }
        // 4. The image: big data, then its record.
        let report = txn.commit_image(input, ids_.last().cloned())?;
        Ok(ImportReport {
            layers_written: to_write.len(),
            layers_reused: ids_.len() - to_write.len(),
            ..report
        })
    }

    fn write_layers(
        &self,
        input: &ImageInput,
        producer: &dyn LayerProducer,
        ids_: &[String],
        to_write: &[usize],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<Written>> {
        let driver = self.driver();
        // vfs copies the parent's tree, so its layers go one after another; overlay layers are independent.
        let parallel = driver.kind() == super::DriverKind::Overlay;
        let workers = if parallel {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(to_write.len())
                .max(1)
        } else {
            1
        };
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Result<Written>>> = Mutex::new(Vec::new());
        // Overlay needs the parent's link file: create every driver dir first, in order.
        if parallel {
            for &i in to_write {
                driver.create(&ids_[i], (i > 0).then(|| ids_[i - 1].as_str()))?;
            }
        }
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        if failed.load(Ordering::SeqCst) {
                            return;
                        }
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&i) = to_write.get(k) else { return };
                        let r = (|| {
                            if !parallel {
                                driver.create(&ids_[i], (i > 0).then(|| ids_[i - 1].as_str()))?;
                            }
                            self.write_one_layer(i, &input.layers[i], &ids_[i], producer, progress)
                                .map_err(|e| match e {
                                    e @ Error::DigestMismatch { .. } => e,
                                    e => Error::Layer {
                                        digest: input.layers[i].blob_digest.to_string(),
                                        source: Box::new(e),
                                    },
                                })
                        })();
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        } else {
                            progress(Progress::LayerDone {
                                index: i,
                                reused: false,
                            });
                        }
                        if let Ok(mut v) = results.lock() {
                            v.push(r);
                        }
                    }
                });
            }
        });
        for (i, _) in ids_.iter().enumerate() {
            if !to_write.contains(&i) {
                progress(Progress::LayerDone {
                    index: i,
                    reused: true,
                });
            }
        }
        let results = results
            .into_inner()
            .map_err(|_| Error::Internal("worker panicked".into()))?;
        let mut out = Vec::new();
        let mut first_err = None;
        for r in results {
            match r {
                Ok(w) => out.push(w),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            for w in &out {
                let _ = std::fs::remove_file(&w.tar_split_tmp);
            }
            return Err(e);
        }
        if out.len() != to_write.len() {
            return Err(Error::Internal("a layer worker did not finish".into()));
        }
        Ok(out)
    }

    fn write_one_layer(
        &self,
        index: usize,
        layer: &LayerInput,
        id: &str,
        producer: &dyn LayerProducer,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Written> {
        let tmp = LayerTxn::tar_split_tmp(self, id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        let gz = super::gzip_out::GzipOut::new(std::io::BufWriter::with_capacity(128 * 1024, file))
            .map_err(|e| Error::io("writing", &tmp, e))?;
        let mut ts = TarSplitWriter::new(gz);
        let mut tree = TreeWriter::new(
            &self.driver().tree_path(id),
            self.driver().kind().whiteouts(),
        )?;
        let read = AtomicU64::new(0);
        let mut sink = LayerSink::new(&mut tree, &mut ts);
        if producer.sink_hashes(index) {
            sink = sink.with_diff_id();
        }
        let produced = producer.produce(index, layer, &mut sink, &|b: LayerBytes| {
            read.store(b.read, Ordering::Relaxed);
            progress(Progress::Bytes {
                index,
                bytes: b.written,
                read: b.read,
            })
        })?;
        let (summary, sink_diff_id) = sink.finish();
        let diff_id = produced
            .diff_id
            .or(sink_diff_id)
            .ok_or_else(|| Error::Internal("a layer without a DiffID".into()))?;
        // The last count is the layer's whole uncompressed size.
        progress(Progress::Bytes {
            index,
            bytes: summary.diff_size,
            read: read.load(Ordering::Relaxed),
        });
        tree.finish()?;
        let gz = ts.finish()?;
        let buf = gz.finish().map_err(|e| Error::io("writing", &tmp, e))?;
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("writing", &tmp, e.into_error()))?;
        // Durable only together with the tree (syncfs below), as in c/storage 1.43, which does not sync
        // tar-splits at all: a lone fsync here would cost a disk wait per layer and guarantee nothing.
        if self.config().sync_filesystem {
            file.sync_data()
                .map_err(|e| Error::io("syncing", &tmp, e))?;
        }
        drop(file);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::io("chmod", &tmp, e))?;
        }
        if diff_id != layer.diff_id {
            return Err(Error::DigestMismatch {
                what: format!(
                    "layer {} (uncompressed) DiffID in the config",
                    layer.blob_digest
                ),
                expected: layer.diff_id.to_string(),
                actual: diff_id.to_string(),
            });
        }
        Ok(Written {
            index,
            summary,
            diff_id,
            compression: produced.compression,
            tar_split_tmp: tmp,
        })
    }
}
