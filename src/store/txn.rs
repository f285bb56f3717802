//! The one store transaction that adds layers and an image (an import, a store-to-store copy):
//! c/storage's lock order, records flagged `incomplete` before any data, tar-splits written as
//! temp files and renamed, records completed, then the image committed — or everything rolled
//! back. The ordering rules of `docs/architecture.md` ("The rules") are enforced here only.

use std::path::PathBuf;

use storage_format::{
    Digest, ImageRecord, LayerRecord, LockGuard, RecordFile, big_data_file_name, ids,
    now_rfc3339_nano,
};

use super::Store;
use super::atomic::atomic_write;
use super::image_input::{ImageInput, ImportReport};
use super::records;
use crate::crashpoint::hit;
use crate::error::{Error, Result};

/// Which transaction: names its crash points (`import:…`, `copy:…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnKind {
    /// Layers written from a producer's entries.
    Import,
    /// Layers copied from another store.
    Copy,
}

impl TxnKind {
    fn point(self, step: Step) -> &'static str {
        match (self, step) {
            (TxnKind::Import, Step::Incomplete) => "import:layers-incomplete",
            (TxnKind::Import, Step::Renamed) => "import:tar-split-renamed",
            (TxnKind::Import, Step::Complete) => "import:layers-complete",
            (TxnKind::Copy, Step::Incomplete) => "copy:layers-incomplete",
            (TxnKind::Copy, Step::Renamed) => "copy:tar-split-renamed",
            (TxnKind::Copy, Step::Complete) => "copy:layers-complete",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Incomplete,
    Renamed,
    Complete,
}

/// How far the transaction's records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing written yet.
    Open,
    /// layers.json names the new layers, flagged `incomplete`.
    Incomplete,
    /// layers.json says they are complete.
    Complete,
    /// The image is committed (or everything was rolled back): nothing to undo.
    Done,
}

/// A transaction on a store's layers and images; rolled back on drop unless committed.
pub(crate) struct LayerTxn<'s> {
    store: &'s Store,
    kind: TxnKind,
    // Declared before the writer: fields drop in order, so the file lock (which belongs to the
    // whole process) is released before another thread of ours may take the writer and lock again.
    guard: LockGuard<'s>,
    _writer: std::sync::MutexGuard<'s, ()>,
    layers_json: PathBuf,
    layers: RecordFile<LayerRecord>,
    original: Option<Vec<u8>>,
    added: Vec<String>,
    state: State,
}

impl std::fmt::Debug for LayerTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerTxn")
            .field("kind", &self.kind)
            .field("added", &self.added)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<'s> LayerTxn<'s> {
    /// Begins: this process's writer, then the layers lock (images later, as c/storage), and
    /// layers.json as it is.
    pub(crate) fn begin(store: &'s Store, kind: TxnKind) -> Result<LayerTxn<'s>> {
        let writer = store.writer()?;
        let guard = store.layers_lock().lock_write()?;
        let (layers, original) = store.read_layers()?;
        Ok(LayerTxn {
            store,
            kind,
            _writer: writer,
            guard,
            layers_json: store.layers_dir().join("layers.json"),
            layers,
            original,
            added: Vec::new(),
            state: State::Open,
        })
    }

    /// The store's layer records (with this transaction's).
    pub(crate) fn layers(&self) -> &RecordFile<LayerRecord> {
        &self.layers
    }

    /// The temp file a new layer's tar-split is written to; renamed by [`Self::complete`].
    pub(crate) fn tar_split_tmp(store: &Store, id: &str) -> PathBuf {
        store
            .layers_dir()
            .join(format!("{}{id}.tar-split.gz", super::atomic::TEMP_PREFIX))
    }

    /// Records the new layers, flagged `incomplete` (so an interruption is cleaned up by the next
    /// opener, podman included), before any of their data exists.
    pub(crate) fn add_incomplete(&mut self, records: Vec<LayerRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut added = Vec::new();
        for mut rec in records {
            rec.set_incomplete(true);
            added.push(rec.id.clone());
            self.layers.push(rec);
        }
        // layers.json is replaced atomically: if that fails, it is as it was and nothing is to undo.
        records::write(&self.layers_json, &self.layers, &self.guard)?;
        self.added = added;
        self.state = State::Incomplete;
        hit(self.kind.point(Step::Incomplete));
        Ok(())
    }

    /// Once every new layer's tree and tar-split temp file exist: makes the data durable (with
    /// `sync_filesystem`), renames the tar-splits into place, lets `fill` complete each record, and
    /// writes layers.json with none of them `incomplete`.
    pub(crate) fn complete(
        &mut self,
        mut fill: impl FnMut(&str, &mut LayerRecord) -> Result<()>,
    ) -> Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let config = self.store.config();
        if config.sync_filesystem {
            let root = crate::fsutil::open_dir(&config.graphroot)
                .map_err(|e| Error::io("opening", &config.graphroot, std::io::Error::from(e)))?;
            rustix::fs::syncfs(&root)
                .map_err(|e| Error::io("syncing", &config.graphroot, std::io::Error::from(e)))?;
        }
        for id in &self.added {
            let tmp = Self::tar_split_tmp(self.store, id);
            let final_path = self.store.tar_split_path(id);
            std::fs::rename(&tmp, &final_path)
                .map_err(|e| Error::io("renaming", &final_path, e))?;
            hit(self.kind.point(Step::Renamed));
            let rec = self
                .layers
                .get_mut(id)
                .ok_or_else(|| Error::Internal(format!("layer {id} vanished")))?;
            rec.set_incomplete(false);
            fill(id, rec)?;
        }
        records::write(&self.layers_json, &self.layers, &self.guard)?;
        self.state = State::Complete;
        hit(self.kind.point(Step::Complete));
        Ok(())
    }

    /// Writes the image's big data and record under the images lock (the layers lock still
    /// held) and ends the transaction; on failure everything is rolled back.
    pub(crate) fn commit_image(
        self,
        input: &ImageInput,
        top: Option<String>,
    ) -> Result<ImportReport> {
        let mut reports = self.commit_images(&[(input, top)])?;
        reports
            .pop()
            .ok_or_else(|| Error::Internal("a commit without its report".into()))
    }

    /// Writes the images' big data, then all their records in one write of images.json, and ends
    /// the transaction; on failure everything is rolled back (no image becomes visible).
    pub(crate) fn commit_images(
        mut self,
        images: &[(&ImageInput, Option<String>)],
    ) -> Result<Vec<ImportReport>> {
        match self.store.commit_images(images, &self.guard) {
            Ok(r) => {
                self.state = State::Done;
                Ok(r)
            }
            Err(e) => Err(self.abort(e)),
        }
    }

    /// Rolls back after `e`; returns `e`, or the rollback's own error if it failed too.
    pub(crate) fn abort(mut self, e: Error) -> Error {
        match self.rollback() {
            Ok(()) => e,
            Err(r) => r,
        }
    }

    /// Undoes what was written. While the new records say `incomplete` their data goes first
    /// (freeing the space restoring layers.json may need on a full disk); once they say complete,
    /// the records as they were go first. Either way no complete record ever names missing data.
    fn rollback(&mut self) -> Result<()> {
        let state = std::mem::replace(&mut self.state, State::Done);
        if matches!(state, State::Open | State::Done) && self.added.is_empty() {
            return Ok(());
        }
        if state == State::Complete {
            records::write_bytes(&self.layers_json, self.original.as_deref(), &self.guard)?;
        }
        for id in &self.added {
            self.store.driver().remove(id)?;
            let _ = std::fs::remove_file(self.store.tar_split_path(id));
            let _ = std::fs::remove_file(Self::tar_split_tmp(self.store, id));
            let _ = crate::fsutil::remove_all(&self.store.layer_big_data_dir(id));
        }
        if state != State::Complete && !self.added.is_empty() {
            records::write_bytes(&self.layers_json, self.original.as_deref(), &self.guard)?;
        }
        Ok(())
    }
}

impl Drop for LayerTxn<'_> {
    fn drop(&mut self) {
        if self.state != State::Done
            && let Err(e) = self.rollback()
        {
            tracing::warn!("rolling back a store transaction: {e}");
        }
    }
}

impl Store {
    /// Writes the big data and the image records (the layers lock is held by the caller): each
    /// image's big data first, then one write of images.json that adds them all.
    fn commit_images(
        &self,
        images: &[(&ImageInput, Option<String>)],
        _layers: &storage_format::LockGuard<'_>,
    ) -> Result<Vec<ImportReport>> {
        let mut created_dirs = Vec::new();
        let result = (|| -> Result<Vec<ImportReport>> {
            for (input, _) in images {
                let dir = self.images_dir().join(ids::image_id(&input.config_digest));
                if !dir.exists() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dir)
                        .map_err(|e| Error::io("creating directory", &dir, e))?;
                    created_dirs.push(dir.clone());
                }
                for (key, data, _) in big_data(input) {
                    atomic_write(&dir.join(big_data_file_name(&key)), data, 0o600)?;
                    hit("image:big-data");
                }
            }
            let guard = self.images_lock().lock_write()?;
            let images_json = self.images_dir().join("images.json");
            let (mut records_, _) = self.read_images()?;
            let mut reports = Vec::new();
            for (input, top) in images {
                add_image(&mut records_, input, top.clone());
                reports.push(ImportReport {
                    image_id: ids::image_id(&input.config_digest),
                    manifest_digest: input.manifest_digest.clone(),
                    names: input.names.clone(),
                    layers_written: 0,
                    layers_reused: 0,
                });
            }
            records::write(&images_json, &records_, &guard)?;
            hit("image:record");
            Ok(reports)
        })();
        if result.is_err() {
            for dir in created_dirs {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        result
    }
}

/// The big data items of an image: its config, and its manifest under both keys.
fn big_data(input: &ImageInput) -> [(String, &[u8], &Digest); 3] {
    [
        (
            input.config_digest.to_string(),
            &input.config,
            &input.config_digest,
        ),
        (
            format!("manifest-{}", input.manifest_digest),
            &input.manifest,
            &input.manifest_digest,
        ),
        (
            "manifest".to_string(),
            &input.manifest,
            &input.manifest_digest,
        ),
    ]
}

/// Adds `input` to the image records (or its names and big data to its record): names are unique
/// across the store, so other images holding them lose them.
fn add_image(images: &mut RecordFile<ImageRecord>, input: &ImageInput, top: Option<String>) {
    let image_id = ids::image_id(&input.config_digest);
    let holders: Vec<String> = images
        .iter()
        .filter(|img| img.id != image_id && img.names.iter().any(|n| input.names.contains(n)))
        .map(|img| img.id.clone())
        .collect();
    for h in holders {
        if let Some(img) = images.get_mut(&h) {
            for n in &input.names {
                img.remove_name(n);
            }
        }
    }
    if images.get(&image_id).is_none() {
        images.push(ImageRecord {
            id: image_id.clone(),
            digest: Some(input.manifest_digest.to_string()),
            layer: top,
            metadata: Some(format!(
                "{{\"signatures-sizes\":{{\"{}\":[]}}}}",
                input.manifest_digest
            )),
            created: Some(input.created.clone().unwrap_or_else(now_rfc3339_nano)),
            ..Default::default()
        });
    }
    if let Some(rec) = images.get_mut(&image_id) {
        for n in &input.names {
            rec.add_name(n);
        }
        for (key, data, digest) in big_data(input) {
            rec.set_big_data(&key, i64::try_from(data.len()).unwrap_or(i64::MAX), digest);
        }
    }
}
