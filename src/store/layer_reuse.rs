//! Reusing a layer the store already holds under another parent: the same blob and DiffID (the
//! layers above a changed one in an update, an image rebased) is copied from the store's own
//! layer — tree reflinked or copied, tar-split copied — instead of fetched, as c/image reuses a
//! layer by its DiffID. Overlay only; plain layers only.

use std::collections::HashMap;

use storage_format::{Digest, LayerRecord};

use super::Store;
use super::import::{ImportItem, Slot, Written};
use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::sink::LayerSummary;

/// For the layers to write whose blob the store holds already as a complete layer under another
/// parent (same blob digest, same DiffID: a layer above a changed one, or an image rebased), that
/// layer: it is copied from there instead of fetched, as c/image reuses a layer by its DiffID.
/// Overlay only (a vfs layer holds its parent's files too).
pub(super) fn local_copies(
    store: &Store,
    items: &[ImportItem<'_>],
    slots: &[Slot],
    to_write: &[usize],
    layers: &storage_format::RecordFile<LayerRecord>,
) -> HashMap<usize, LayerRecord> {
    let mut out = HashMap::new();
    if store.driver().kind() != super::DriverKind::Overlay {
        return out;
    }
    for &g in to_write {
        let l = &items[slots[g].item].input.layers[slots[g].layer];
        let (blob, diff) = (l.blob_digest.to_string(), l.diff_id.to_string());
        // Only a plain layer: complete, its tar-split there, no ID-mapped copy (c/storage's
        // uidmap/gidmap layers hold their files elsewhere), and a zstd:chunked one only as a tree
        // (`{"format":0}`, not c/storage's flat composefs layout) with its TOC at hand.
        let plain = |r: &LayerRecord| {
            !r.is_incomplete()
                && ["uidmap", "gidmap"].iter().all(|k| {
                    r.extra
                        .get(*k)
                        .is_none_or(|v| v.as_array().is_none_or(|a| a.is_empty()))
                })
                && (!r.extra.contains_key("toc-digest") || store.stored_toc(r).is_some())
                && store.tar_split_path(&r.id).is_file()
        };
        let found = layers.iter().find(|r| {
            r.diff_digest.as_deref() == Some(diff.as_str())
                && (r.compressed_diff_digest.as_deref() == Some(blob.as_str()) || blob == diff)
                && plain(r)
        });
        if let Some(r) = found {
            out.insert(g, r.clone());
        }
    }
    if !out.is_empty() {
        tracing::info!(
            layers = out.len(),
            "copying layers the store holds under another parent"
        );
    }
    out
}

impl Store {
    /// Layer `id` (an overlay diff, empty) made a copy of `rec`'s: its tree copied (reflinked
    /// where the file system can), its tar-split copied to `tmp`; nothing fetched. The blob it
    /// stands for is `rec`'s compressed one, or (`blob_is_diff`) the uncompressed tar.
    pub(super) fn copy_local_layer(
        &self,
        index: usize,
        id: &str,
        rec: &LayerRecord,
        blob_is_diff: bool,
        tmp: &std::path::Path,
    ) -> Result<Written> {
        let driver = self.driver();
        // A zstd:chunked layer's TOC goes along (the same blob, the same files) — not to a layer
        // whose blob is the plain tar.
        let toc = if blob_is_diff {
            None
        } else {
            self.stored_toc(rec)
        };
        if let Some(t) = &toc {
            self.write_toc(id, &t.manifest)?;
        }
        // Else a TOC that names the files only (ours, or a zstd:chunked one whose blob is not this
        // layer's) goes along as one of our own: the same files, the same digests.
        let own_toc = match &toc {
            Some(_) => false,
            None => match self.stored_manifest(rec) {
                Some(m) => {
                    self.write_toc(id, &m)?;
                    true
                }
                None => false,
            },
        };
        // The empty diff directory the driver made gives way to the copy (which keeps the
        // source's root owner, mode and xattrs, as the same tar wrote them).
        let tree = driver.tree_path(id);
        std::fs::remove_dir(&tree).map_err(|e| Error::io("replacing", &tree, e))?;
        super::tree_copy::copy_tree_with(
            &driver.tree_path(&rec.id),
            &driver.tree_path(id),
            super::tree_copy::CopyMode::Copy,
        )?;
        let from = self.tar_split_path(&rec.id);
        std::fs::copy(&from, tmp).map_err(|e| Error::io("copying tar-split", &from, e))?;
        let diff_id = Digest::parse(rec.diff_digest.as_deref().unwrap_or_default())?;
        let diff_size = rec
            .diff_size
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| Error::Internal(format!("layer {} has no recorded size", rec.id)))?;
        Ok(Written {
            index,
            summary: LayerSummary {
                diff_size,
                uids: rec.uidset.iter().copied().collect(),
                gids: rec.gidset.iter().copied().collect(),
                entries: 0,
            },
            diff_id,
            compression: if blob_is_diff {
                Compression::None
            } else {
                rec.compression
                    .and_then(Compression::from_storage_code)
                    .unwrap_or(Compression::None)
            },
            tar_split_tmp: tmp.to_path_buf(),
            toc,
            partial: false,
            own_toc,
        })
    }
}
