//! A layer's big data: files in c/storage's `overlay-layers/<id>/` (names as for images), which
//! podman 5 keeps for a zstd:chunked layer (its TOC, see [`crate::layer::zstd_chunked_toc`]).

use super::Store;
use crate::error::{Error, Result};

impl Store {
    /// The directory of layer `id`'s big data (c/storage's `overlay-layers/<id>/`).
    pub(crate) fn layer_big_data_dir(&self, id: &str) -> std::path::PathBuf {
        self.layers_dir().join(id)
    }

    /// Writes layer `id`'s big data `items` (key, bytes), each file named as c/storage names it.
    pub(super) fn write_layer_big_data(&self, id: &str, items: &[(&str, &[u8])]) -> Result<()> {
        let dir = self.layer_big_data_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        for (key, bytes) in items {
            super::atomic::atomic_write(
                &dir.join(storage_format::big_data_file_name(key)),
                bytes,
                0o600,
            )?;
        }
        Ok(())
    }
}
