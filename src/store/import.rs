//! Writing an image into the store: layer IDs from the DiffIDs, existing layers reused, new ones
//! written by a producer through a `LayerSink` each (one worker per core on overlay), all inside
//! the one transaction of `txn.rs` (c/storage's order and locks, all or nothing).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use storage_format::{Digest, LayerRecord, TarSplitWriter, ids, now_rfc3339_nano};

use super::Store;
use super::image_input::{ImageInput, ImportReport, LayerBytes, LayerInput, Progress};
use super::producer::{LayerProducer, Produced};
use super::txn::{LayerTxn, TxnKind};
use crate::crashpoint::hit;
use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::file_digests::FileDigests;
use crate::layer::sink::{LayerSink, LayerSummary};
use crate::layer::tree_writer::TreeWriter;
use crate::layer::zstd_chunked_toc::{self, StoredToc};

/// One image of an import and who writes its layers.
#[derive(Clone, Copy)]
pub(crate) struct ImportItem<'a> {
    /// The image; its layers must carry their DiffIDs.
    pub input: &'a ImageInput,
    /// Writes its new layers.
    pub producer: &'a dyn LayerProducer,
}

impl std::fmt::Debug for ImportItem<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportItem")
            .field("input", &self.input.manifest_digest)
            .finish_non_exhaustive()
    }
}

/// A layer of the import: of which image, which of its layers, its ID and parent's.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) item: usize,
    pub(super) layer: usize,
    pub(super) id: String,
    pub(super) parent: Option<String>,
}

/// Result of writing one layer.
#[derive(Debug)]
pub(super) struct Written {
    pub(super) index: usize,
    pub(super) summary: LayerSummary,
    pub(super) diff_id: Digest,
    pub(super) compression: Compression,
    pub(super) tar_split_tmp: std::path::PathBuf,
    /// A zstd:chunked TOC stored with the layer (its big data is written already).
    pub(super) toc: Option<StoredToc>,
    /// Pulled partially: no whole blob was seen (see [`Produced::partial`]).
    pub(super) partial: bool,
    /// A TOC of our own stored with the layer (it came without one: see
    /// [`toc_out`](crate::layer::toc_out)); its big data is written already.
    pub(super) own_toc: bool,
}

/// The uncompressed length of layer `id`: as written now, else from its record in `layers`.
fn diff_size(
    id: &str,
    slots: &[Slot],
    layers: &storage_format::RecordFile<LayerRecord>,
    written: &[Written],
) -> Result<u64> {
    if let Some(w) = written.iter().find(|w| slots[w.index].id == id) {
        return Ok(w.summary.diff_size);
    }
    layers
        .get(id)
        .and_then(|r| r.diff_size)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| Error::Internal(format!("layer {id} has no recorded uncompressed size")))
}

impl Store {
    /// Imports an image whose layers `producer` writes; `input.layers` must carry their DiffIDs.
    pub fn import_with(
        &self,
        input: &ImageInput,
        producer: &dyn LayerProducer,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportReport> {
        let mut reports = self.import_all(&[ImportItem { input, producer }], progress)?;
        reports
            .pop()
            .ok_or_else(|| Error::Internal("an import without its report".into()))
    }

    /// Imports several images in one transaction, all or nothing: their new layers written together
    /// (a layer they share once), then every image recorded in one write of images.json. Progress
    /// events number the layers of all images in turn (the second image's first layer follows the
    /// first image's last).
    pub(crate) fn import_all(
        &self,
        items: &[ImportItem<'_>],
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Vec<ImportReport>> {
        let slots = slots_of(items)?;
        let mut txn = LayerTxn::begin(self, TxnKind::Import)?;
        let to_write = plan_writes(items, &slots, txn.layers(), progress);
        let local = super::layer_reuse::local_copies(self, items, &slots, &to_write, txn.layers());
        // Each producer learns which of its layers it will be asked for, in order.
        for (n, item) in items.iter().enumerate() {
            let mine: Vec<&super::image_input::LayerInput> = to_write
                .iter()
                .filter(|&&g| slots[g].item == n && !local.contains_key(&g))
                .map(|&g| &item.input.layers[slots[g].layer])
                .collect();
            item.producer.will_produce(&mine);
        }
        // 1. Records flagged incomplete, so an interruption is cleaned up by the next opener.
        let created = now_rfc3339_nano();
        let records = to_write
            .iter()
            .map(|&g| LayerRecord {
                id: slots[g].id.clone(),
                parent: slots[g].parent.clone(),
                created: Some(created.clone()),
                ..Default::default()
            })
            .collect();
        txn.add_incomplete(records)?;
        // 2. Driver directories and entries.
        let written = if to_write.is_empty() {
            Vec::new()
        } else {
            match self.write_layers(items, &slots, &to_write, &local, progress) {
                Ok(w) => w,
                Err(e) => return Err(txn.abort(e)),
            }
        };
        if !to_write.is_empty() {
            hit("import:layers-written");
        }
        // Producers that learn their layers' lengths by writing them complete their image now.
        let completed = match completed_images(items, &slots, txn.layers(), &written) {
            Ok(c) => c,
            Err(e) => return Err(txn.abort(e)),
        };
        let inputs: Vec<&ImageInput> = items
            .iter()
            .zip(&completed)
            .map(|(item, c)| c.as_ref().unwrap_or(item.input))
            .collect();
        // 3. Data durable (with --sync), tar-splits renamed, records complete.
        let fill = |id: &str, rec: &mut LayerRecord| -> Result<()> {
            let w = written
                .iter()
                .find(|w| slots[w.index].id == id)
                .ok_or_else(|| Error::Internal(format!("layer {id} was not written")))?;
            let slot = &slots[w.index];
            fill_record(rec, w, &inputs[slot.item].layers[slot.layer]);
            Ok(())
        };
        if let Err(e) = txn.complete(fill) {
            return Err(txn.abort(e));
        }
        // 4. The images: big data, then their records, in one write.
        let tops: Vec<(&ImageInput, Option<String>)> = inputs
            .iter()
            .enumerate()
            .map(|(n, input)| {
                let top = slots.iter().rfind(|s| s.item == n).map(|s| s.id.clone());
                (*input, top)
            })
            .collect();
        let reports = txn.commit_images(&tops)?;
        Ok(with_counts(reports, &slots, &to_write))
    }

    fn write_layers(
        &self,
        items: &[ImportItem<'_>],
        slots: &[Slot],
        to_write: &[usize],
        local: &HashMap<usize, LayerRecord>,
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
        // Overlay needs the parent's link file: create every driver dir first, in order (a parent
        // always comes before its children in `to_write`).
        if parallel {
            for &g in to_write {
                driver.create(&slots[g].id, slots[g].parent.as_deref())?;
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
                        let Some(&g) = to_write.get(k) else { return };
                        let slot = &slots[g];
                        let item = &items[slot.item];
                        let r = self.write_slot(
                            g,
                            slot,
                            item,
                            local.get(&g),
                            progress,
                            (parallel, workers == 1),
                        );
                        if r.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        } else {
                            progress(Progress::LayerDone {
                                index: g,
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
        for g in 0..slots.len() {
            if !to_write.contains(&g) {
                progress(Progress::LayerDone {
                    index: g,
                    reused: true,
                });
            }
        }
        let results = results
            .into_inner()
            .map_err(|_| Error::Internal("worker panicked".into()))?;
        all_written(results, to_write.len())
    }

    /// Writes the layer of `slot` (index `g`) from its item's producer — or from `local`, a layer
    /// of the store with the same blob under another parent — retried as the producer says, each
    /// try from an empty tree, never half a layer. `(parallel, single)`: the driver dirs were
    /// made beforehand (overlay), and this is the only worker.
    fn write_slot(
        &self,
        g: usize,
        slot: &Slot,
        item: &ImportItem<'_>,
        local: Option<&LayerRecord>,
        progress: &(dyn Fn(Progress) + Sync),
        (parallel, single): (bool, bool),
    ) -> Result<Written> {
        let driver = self.driver();
        let layer = &item.input.layers[slot.layer];
        if !parallel {
            driver.create(&slot.id, slot.parent.as_deref())?;
        }
        let mode = driver.tree_mode(&slot.id)?;
        // The store's own copy first; should it fail, the layer is fetched as any other.
        if let Some(rec) = local {
            let tmp = LayerTxn::tar_split_tmp(self, &slot.id);
            let blob_is_diff = layer.blob_digest == layer.diff_id;
            match self.copy_local_layer(g, &slot.id, rec, blob_is_diff, &tmp) {
                Ok(w) => return Ok(w),
                Err(e) => {
                    tracing::warn!(layer = %slot.id, from = %rec.id, error = %e, "copying the store's own layer failed; fetching it");
                    let _ = std::fs::remove_file(&tmp);
                    let _ = crate::fsutil::remove_all(&self.layer_big_data_dir(&slot.id));
                    driver.reset_tree(&slot.id, slot.parent.as_deref(), mode)?;
                }
            }
        }
        let mut first = true;
        item.producer
            .retry()
            .run(&format!("layer {}", layer.blob_digest), || {
                if !std::mem::take(&mut first) {
                    driver.reset_tree(&slot.id, slot.parent.as_deref(), mode)?;
                }
                match self.write_one_layer(g, slot, layer, item.producer, progress, single) {
                    // A partial pull that failed half-way: once more from an empty tree, whole
                    // (nothing beside the tree was written yet: the TOC's big data comes after
                    // the producer).
                    Err(Error::StartOver(why)) => {
                        tracing::warn!(layer = %layer.blob_digest, "{why}; pulling the whole layer");
                        driver.reset_tree(&slot.id, slot.parent.as_deref(), mode)?;
                        self.write_one_layer(g, slot, layer, item.producer, progress, single)
                    }
                    r => r,
                }
            })
            .map_err(|e| match e {
                e @ Error::DigestMismatch { .. } => e,
                e => Error::Layer {
                    digest: layer.blob_digest.to_string(),
                    source: Box::new(e),
                },
            })
    }

    fn write_one_layer(
        &self,
        index: usize,
        slot: &Slot,
        layer: &LayerInput,
        producer: &dyn LayerProducer,
        progress: &(dyn Fn(Progress) + Sync),
        solo: bool,
    ) -> Result<Written> {
        let id = slot.id.as_str();
        let tmp = LayerTxn::tar_split_tmp(self, id);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io("creating", &tmp, e))?;
        let gz = super::gzip_out::GzipOut::new(std::io::BufWriter::with_capacity(128 * 1024, file))
            .map_err(|e| Error::io("writing", &tmp, e))?;
        let mut ts =
            TarSplitWriter::new(gz).spill_in(tmp.parent().unwrap_or(std::path::Path::new(".")));
        let mut tree = TreeWriter::new(
            &self.driver().tree_path(id),
            self.driver().kind().whiteouts(),
        )?
        .with_file_thread(solo);
        let read = AtomicU64::new(0);
        // A layer that comes without a TOC gets one of ours, written beside its records; a
        // zstd:chunked one's files are listed with their digests, to check its TOC by.
        let mut own_toc = match &layer.toc {
            None => Some(self.own_toc_out(id)?),
            Some(_) => None,
        };
        let mut digests = FileDigests::default();
        let mut sink = LayerSink::new(&mut tree, &mut ts);
        if producer.sink_hashes(slot.layer) {
            sink = sink.with_diff_id();
        }
        match &mut own_toc {
            Some((t, _)) => sink = sink.with_toc(t),
            None => sink = sink.with_toc(&mut digests),
        }
        let produced = producer.produce(slot.layer, layer, &mut sink, &|b: LayerBytes| {
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
        // A zstd:chunked TOC: kept only if its digests are the files' (podman reuses files by
        // them); its big data beside the layer's records before the layer is complete (an
        // interrupted import removes it with the layer).
        let Produced {
            mut toc,
            partial,
            compression,
            ..
        } = produced;
        if let Some(t) = &toc
            && !partial
            && let Err(why) =
                zstd_chunked_toc::matches_digests(&t.manifest, std::mem::take(&mut digests))
        {
            tracing::warn!(layer = %layer.blob_digest, "the zstd:chunked TOC is not kept: {why}");
            toc = None;
        }
        if let Some(t) = &toc {
            self.write_toc(id, &t.manifest)?;
        }
        let own_toc = match own_toc {
            Some((t, path)) => {
                self.store_own_toc(id, t, &path)?;
                true
            }
            None => false,
        };
        Ok(Written {
            index,
            summary,
            diff_id,
            compression,
            tar_split_tmp: tmp,
            toc,
            partial,
            own_toc,
        })
    }
}

/// A written layer's record made complete: its blob, its DiffID and size, its compression, the
/// IDs its files use.
fn fill_record(rec: &mut LayerRecord, w: &Written, l: &LayerInput) {
    // A partial pull never saw the whole blob: no compressed digest, size or compression (as
    // podman 5 records its partial pulls).
    if !w.partial {
        rec.compressed_diff_digest = Some(l.blob_digest.to_string());
        rec.compressed_size = Some(i64::try_from(l.blob_size).unwrap_or(i64::MAX));
        let code = w.compression.storage_code();
        rec.compression = (code != 0).then_some(code);
    }
    rec.diff_digest = Some(w.diff_id.to_string());
    rec.diff_size = Some(i64::try_from(w.summary.diff_size).unwrap_or(i64::MAX));
    rec.uidset = w.summary.uids.iter().copied().collect();
    rec.gidset = w.summary.gids.iter().copied().collect();
    // As podman 5 records a layer it pulled partially: the TOC's digest and its big data. Our
    // own TOC has the big data only (no compressed TOC was ever here).
    if let Some(t) = &w.toc {
        rec.extra.insert(
            "toc-digest".into(),
            serde_json::Value::from(t.digest.to_string()),
        );
    }
    if w.toc.is_some() || w.own_toc {
        rec.extra.insert(
            "big-data-names".into(),
            serde_json::json!([
                zstd_chunked_toc::MANIFEST_KEY,
                zstd_chunked_toc::LAYER_DATA_KEY
            ]),
        );
    }
}

/// The workers' results: every layer written, or the first error (the temporary tar-splits of
/// the layers that were written removed).
fn all_written(results: Vec<Result<Written>>, expected: usize) -> Result<Vec<Written>> {
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
    if out.len() != expected {
        return Err(Error::Internal("a layer worker did not finish".into()));
    }
    Ok(out)
}

/// Each item's image as its producer completes it now that its layers' lengths are known
/// (`None`: the image as given).
fn completed_images(
    items: &[ImportItem<'_>],
    slots: &[Slot],
    layers: &storage_format::RecordFile<LayerRecord>,
    written: &[Written],
) -> Result<Vec<Option<ImageInput>>> {
    items
        .iter()
        .enumerate()
        .map(|(n, item)| {
            let sizes = slots
                .iter()
                .filter(|s| s.item == n)
                .map(|s| diff_size(&s.id, slots, layers, written))
                .collect::<Result<Vec<u64>>>()?;
            item.producer.complete_image(item.input, &sizes)
        })
        .collect()
}

/// Which slots this import writes (layers the store lacks, each once), told to `progress` as the
/// plan (and, when none, every layer as reused) and logged.
fn plan_writes(
    items: &[ImportItem<'_>],
    slots: &[Slot],
    layers: &storage_format::RecordFile<LayerRecord>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Vec<usize> {
    let mut to_write = Vec::new();
    let mut seen = HashSet::new();
    for (g, slot) in slots.iter().enumerate() {
        if layers.get(&slot.id).is_none() && seen.insert(slot.id.clone()) {
            to_write.push(g);
        }
    }
    progress(Progress::Plan {
        total: slots.len(),
        to_write: to_write.len(),
    });
    let digests: Vec<String> = items
        .iter()
        .map(|i| i.input.manifest_digest.to_string())
        .collect();
    tracing::info!(
        images = items.len(),
        layers = slots.len(),
        to_write = to_write.len(),
        "importing image{} {}",
        if items.len() == 1 { "" } else { "s" },
        digests.join(", ")
    );
    if to_write.is_empty() {
        for g in 0..slots.len() {
            progress(Progress::LayerDone {
                index: g,
                reused: true,
            });
        }
    }
    to_write
}

/// Every layer of every item, in turn, with its ID by c/image's rule (from the config's DiffIDs
/// and the parent's ID); the names each image is to get are checked first.
fn slots_of(items: &[ImportItem<'_>]) -> Result<Vec<Slot>> {
    let mut slots: Vec<Slot> = Vec::new();
    for (n, item) in items.iter().enumerate() {
        crate::reference::check_stored_names(&item.input.names)?;
        let mut parent: Option<String> = None;
        for (k, l) in item.input.layers.iter().enumerate() {
            let id = ids::layer_id(parent.as_deref(), &l.diff_id);
            slots.push(Slot {
                item: n,
                layer: k,
                id: id.clone(),
                parent: parent.replace(id),
            });
        }
    }
    Ok(slots)
}

/// Each image's report with how many of its layers this import wrote and how many it reused.
fn with_counts(
    reports: Vec<ImportReport>,
    slots: &[Slot],
    to_write: &[usize],
) -> Vec<ImportReport> {
    reports
        .into_iter()
        .enumerate()
        .map(|(n, report)| {
            let mine: Vec<usize> = (0..slots.len()).filter(|&g| slots[g].item == n).collect();
            let new = mine.iter().filter(|g| to_write.contains(g)).count();
            ImportReport {
                layers_written: new,
                layers_reused: mine.len() - new,
                ..report
            }
        })
        .collect()
}
