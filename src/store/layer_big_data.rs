//! A layer's big data: files in c/storage's `overlay-layers/<id>/` (names as for images), which
//! podman 5 keeps for a zstd:chunked layer (its TOC, see [`crate::layer::zstd_chunked_toc`]).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use crate::layer::toc_out::TocOut;

use super::Store;
use crate::error::{Error, Result};

/// Our own TOC being written into a layer's big-data directory.
pub(super) type OwnTocOut = TocOut<std::io::BufWriter<std::fs::File>>;

impl Store {
    /// The directory of layer `id`'s big data (c/storage's `overlay-layers/<id>/`).
    pub(crate) fn layer_big_data_dir(&self, id: &str) -> std::path::PathBuf {
        self.layers_dir().join(id)
    }

    /// Layer `id`'s big-data directory, made (0700, as c/storage makes it) if missing.
    pub(super) fn create_layer_big_data_dir(&self, id: &str) -> Result<std::path::PathBuf> {
        let dir = self.layer_big_data_dir(id);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(Error::io("creating", &dir, e)),
        }
    }

    /// Writes layer `id`'s big data `items` (key, bytes), each file named as c/storage names it.
    fn write_layer_big_data(&self, id: &str, items: &[(&str, &[u8])]) -> Result<()> {
        let dir = self.create_layer_big_data_dir(id)?;
        for (key, bytes) in items {
            super::atomic::atomic_write(
                &dir.join(storage_format::big_data_file_name(key)),
                bytes,
                0o600,
            )?;
        }
        Ok(())
    }

    /// Stores a TOC (a zstd:chunked one, or our own) with layer `id`, as podman 5 stores it: the
    /// uncompressed TOC, and the layer data saying the layer is a tree.
    pub(super) fn write_toc(
        &self,
        id: &str,
        manifest: &crate::layer::zstd_chunked_toc::TocBytes,
    ) -> Result<()> {
        use crate::layer::zstd_chunked_toc as z;
        let dir = self.create_layer_big_data_dir(id)?;
        super::atomic::atomic_write_with(
            &dir.join(storage_format::big_data_file_name(z::MANIFEST_KEY)),
            0o600,
            &mut |w| manifest.write_to(w),
        )?;
        self.write_layer_big_data(id, &[(z::LAYER_DATA_KEY, z::LAYER_DATA)])
    }

    /// A TOC of our own for layer `id`, written to a temporary file in its big-data directory
    /// (see [`crate::layer::toc_out`]); [`Self::store_own_toc`] makes it the layer's.
    pub(super) fn own_toc_out(&self, id: &str) -> Result<(OwnTocOut, std::path::PathBuf)> {
        let path = self
            .create_layer_big_data_dir(id)?
            .join(format!("{}toc", super::atomic::TEMP_PREFIX));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("creating", &path, e))?;
        let out = TocOut::new(std::io::BufWriter::with_capacity(64 * 1024, file))?;
        Ok((out, path))
    }

    /// Makes the TOC written to `path` layer `id`'s `zstd-chunked-manifest`, with the layer data
    /// saying the layer is a tree.
    pub(super) fn store_own_toc(
        &self,
        id: &str,
        toc: OwnTocOut,
        path: &std::path::Path,
    ) -> Result<()> {
        use crate::layer::zstd_chunked_toc as z;
        let file = toc
            .finish()?
            .into_inner()
            .map_err(|e| Error::io("writing", path, e.into_error()))?;
        if self.config().sync_filesystem {
            file.sync_data()
                .map_err(|e| Error::io("syncing", path, e))?;
        }
        drop(file);
        let dir = self.layer_big_data_dir(id);
        let to = dir.join(storage_format::big_data_file_name(z::MANIFEST_KEY));
        std::fs::rename(path, &to).map_err(|e| Error::io("renaming", path, e))?;
        self.write_layer_big_data(id, &[(z::LAYER_DATA_KEY, z::LAYER_DATA)])
    }

    /// Layer `rec`'s TOC as stored for a tree (a zstd:chunked one or ours), whatever its
    /// `toc-digest`: what c/storage's layers cache reads to find files by content.
    pub(super) fn stored_manifest(
        &self,
        rec: &storage_format::LayerRecord,
    ) -> Option<crate::layer::zstd_chunked_toc::TocBytes> {
        let names = rec.extra.get("big-data-names")?.as_array()?;
        let key = crate::layer::zstd_chunked_toc::MANIFEST_KEY;
        if !names.iter().any(|n| n.as_str() == Some(key)) {
            return None;
        }
        self.tree_manifest(&rec.id)
    }

    /// Layer `rec`'s zstd:chunked TOC, when it has one stored as a tree's (`toc-digest`, the
    /// `zstd-chunked-manifest` big data, `zstd-chunked-layer-data` saying `{"format":0}`).
    pub(super) fn stored_toc(
        &self,
        rec: &storage_format::LayerRecord,
    ) -> Option<crate::layer::zstd_chunked_toc::StoredToc> {
        let digest = storage_format::Digest::parse(rec.extra.get("toc-digest")?.as_str()?).ok()?;
        Some(crate::layer::zstd_chunked_toc::StoredToc {
            digest,
            manifest: self.tree_manifest(&rec.id)?,
        })
    }

    /// Layer `id`'s `zstd-chunked-manifest` big data, when its `zstd-chunked-layer-data` says
    /// the layer is a tree (`{"format":0}`): the file, open (a TOC may be tens of MB; it is
    /// read entry by entry).
    fn tree_manifest(&self, id: &str) -> Option<crate::layer::zstd_chunked_toc::TocBytes> {
        use crate::layer::zstd_chunked_toc as toc;
        let dir = self.layer_big_data_dir(id);
        let read =
            |key: &str| std::fs::read(dir.join(storage_format::big_data_file_name(key))).ok();
        let data: serde_json::Value = serde_json::from_slice(&read(toc::LAYER_DATA_KEY)?).ok()?;
        if data.get("format").and_then(serde_json::Value::as_u64) != Some(0) {
            return None;
        }
        std::fs::File::open(dir.join(storage_format::big_data_file_name(toc::MANIFEST_KEY)))
            .ok()
            .map(toc::TocBytes)
    }
}
