//! Store-to-store image copies without a tar round trip: each missing layer's tree is hardlinked (or
//! reflinked, or copied) from the source store and its tar-split copied as it is, so IDs, DiffIDs and
//! digests stay identical and the source store is never changed.

use storage_format::{Digest, ImageRecord, LayerRecord, big_data_file_name};

use super::Store;
use super::image_input::ImageInput;
use super::tree_copy::{CopyMode, CopyStats, copy_tree_with};
use super::txn::{LayerTxn, TxnKind};
use crate::crashpoint::hit;
use crate::error::{Error, Result};

/// What a store-to-store copy did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// The image ID (the same in both stores).
    pub image_id: String,
    /// The manifest digest.
    pub manifest_digest: String,
    /// Names given in the destination.
    pub names: Vec<String>,
    /// Layers copied.
    pub layers_copied: usize,
    /// Layers the destination already had.
    pub layers_reused: usize,
    /// How the files got there.
    pub stats: CopyStats,
}

/// Options of a copy.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Names to give the image in the destination; empty = the source's names.
    pub names: Vec<String>,
    /// Rebuild each copied layer's tar from its tar-split and files and check its DiffID first.
    pub verify: bool,
}

/// Reads one big-data item (config, manifest …) of an image.
pub fn read_big_data(store: &Store, image: &ImageRecord, key: &str) -> Result<Vec<u8>> {
    let p = store
        .images_dir()
        .join(&image.id)
        .join(big_data_file_name(key));
    std::fs::read(&p).map_err(|e| Error::io("reading image data", &p, e))
}

impl Store {
    /// The trees (shared where the file system allows) and tar-splits of `layers` from `src`, into
    /// this store's driver directories and temporary tar-splits; `stats` counts how.
    fn copy_layers(
        &self,
        src: &Store,
        layers: &[&LayerRecord],
        stats: &mut CopyStats,
    ) -> Result<()> {
        for l in layers {
            self.driver()
                .create_with(&l.id, l.parent.as_deref(), false)?;
            let s = copy_tree_with(
                &src.driver().tree_path(&l.id),
                &self.driver().tree_path(&l.id),
                CopyMode::Link,
            )?;
            stats.add(s);
            hit("copy:layer-tree");
            let from = src.tar_split_path(&l.id);
            let tmp = LayerTxn::tar_split_tmp(self, &l.id);
            std::fs::copy(&from, &tmp).map_err(|e| Error::io("copying tar-split", &from, e))?;
            // The layer's big data its record lists (a zstd:chunked TOC).
            let names = big_data_names(l);
            if !names.is_empty() {
                let (from, to) = (
                    src.layer_big_data_dir(&l.id),
                    self.create_layer_big_data_dir(&l.id)?,
                );
                for name in names {
                    let file = big_data_file_name(&name);
                    std::fs::copy(from.join(&file), to.join(&file))
                        .map_err(|e| Error::io("copying layer data", from.join(&file), e))?;
                }
            }
        }
        Ok(())
    }

    /// Copies the image `image_id` from `src` into this store.
    pub fn copy_image_from(
        &self,
        src: &Store,
        image_id: &str,
        opts: &CopyOptions,
    ) -> Result<CopyReport> {
        crate::reference::check_stored_names(&opts.names)?;
        let same = std::fs::canonicalize(&src.config().graphroot).ok()
            == std::fs::canonicalize(&self.config().graphroot).ok();
        if same {
            return Err(Error::Store(
                "source and destination are the same store".into(),
            ));
        }
        if src.config().driver != self.config().driver {
            return Err(Error::Unsupported(format!(
                "copying between stores of different drivers ({} and {})",
                src.config().driver.name(),
                self.config().driver.name()
            )));
        }
        // Hold the source's read locks for the whole copy: nobody changes what we link to.
        let _src_layers = src.layers_lock().lock_read()?;
        let _src_images = src.images_lock().lock_read()?;
        let (src_images, _) = src.read_images()?;
        let image = src_images.get(image_id).cloned().ok_or_else(|| {
            Error::not_found(
                image_id.to_string(),
                format!("image {image_id} is not in the source store"),
            )
        })?;
        crate::reference::check_name_digests(
            &opts.names,
            &crate::reference::record_digests(&image),
        )?;
        let (src_layers, _) = src.read_layers()?;
        let chain = layer_chain(&src_layers, &image)?;
        let manifest = read_big_data(src, &image, "manifest")?;
        let manifest_digest = match &image.digest {
            Some(d) => Digest::parse(d)?,
            None => Digest::of_bytes(&manifest),
        };
        let config_digest = Digest::parse(&format!("sha256:{}", image.id))?;
        let config = read_big_data(src, &image, config_digest.as_str())?;
        let names = if opts.names.is_empty() {
            image.names.clone()
        } else {
            opts.names.clone()
        };
        let input = ImageInput {
            manifest,
            manifest_digest,
            config,
            config_digest,
            created: image.created.clone(),
            layers: Vec::new(),
            names: names.clone(),
        };

        let mut txn = LayerTxn::begin(self, TxnKind::Copy)?;
        let to_copy: Vec<&LayerRecord> = chain
            .iter()
            .filter(|l| txn.layers().get(&l.id).is_none())
            .collect();
        if opts.verify {
            for l in &to_copy {
                src.verify_layer(l)?;
            }
        }
        let records = to_copy.iter().map(|l| fresh_record(l)).collect();
        txn.add_incomplete(records)?;
        let mut stats = CopyStats::default();
        let copied = self
            .copy_layers(src, &to_copy, &mut stats)
            .and_then(|()| txn.complete(|_, _| Ok(())));
        if let Err(e) = copied {
            return Err(txn.abort(e));
        }
        txn.commit_image(&input, image.layer.clone())?;
        Ok(CopyReport {
            image_id: image.id.clone(),
            manifest_digest: input.manifest_digest.to_string(),
            names,
            layers_copied: to_copy.len(),
            layers_reused: chain.len() - to_copy.len(),
            stats,
        })
    }
}

/// The layer chain of `image` in the source's records, base first; a missing or incomplete layer
/// is refused.
pub(crate) fn layer_chain(
    src_layers: &storage_format::RecordFile<LayerRecord>,
    image: &storage_format::ImageRecord,
) -> Result<Vec<LayerRecord>> {
    let mut chain: Vec<LayerRecord> = Vec::new();
    let mut next = image.layer.clone();
    while let Some(id) = next {
        let l = src_layers.get(&id).cloned().ok_or_else(|| {
            Error::Store(format!(
                "layer {id} of image {} is missing from the source store: the source is damaged",
                image.id
            ))
        })?;
        if l.is_incomplete() {
            return Err(Error::InvalidInput(format!(
                "layer {id} of the source store is incomplete"
            )));
        }
        next = l.parent.clone();
        chain.push(l);
        if chain.len() > 500 {
            return Err(Error::InvalidInput("layer chain deeper than 500".into()));
        }
    }
    chain.reverse();
    Ok(chain)
}

/// The record a copied layer gets: the source's identity and sizes (and a zstd:chunked TOC's
/// digest and big-data names, whose files are copied too), none of its store-local state (flags,
/// mount counts).
fn fresh_record(l: &LayerRecord) -> LayerRecord {
    LayerRecord {
        id: l.id.clone(),
        parent: l.parent.clone(),
        created: l.created.clone(),
        compressed_diff_digest: l.compressed_diff_digest.clone(),
        compressed_size: l.compressed_size,
        diff_digest: l.diff_digest.clone(),
        diff_size: l.diff_size,
        compression: l.compression,
        uidset: l.uidset.clone(),
        gidset: l.gidset.clone(),
        // A zstd:chunked layer's TOC, whose big data is copied with it.
        extra: l
            .extra
            .iter()
            .filter(|(k, _)| *k == "toc-digest" || *k == "big-data-names")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    }
}

/// The big-data keys a layer record lists.
fn big_data_names(l: &LayerRecord) -> Vec<String> {
    l.extra
        .get("big-data-names")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
