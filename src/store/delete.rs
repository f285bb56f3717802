//! Removing images, and the layers only they used, under the store's locks — crash-safe.
//!
//! The order is c/storage's, so that a kill at any point leaves a store every reader accepts and the
//! next open finishes the job:
//!
//! 1. a journal (`bootc-image-deleting.json` in the layers directory) names the images and layers
//!    about to go;
//! 2. `images.json` without the images (nothing visible points at what follows any more), then the
//!    images' big-data directories;
//! 3. `layers.json` with the doomed layers flagged `incomplete` — from here on podman and we treat
//!    them as half-written and delete them at the next open;
//! 4. the layers' driver data and tar-splits;
//! 5. `layers.json` without them, then the journal goes.
//!
//! Recovery at open ([`Store::finish_interrupted_delete`]) reads the journal: layers it names that no
//! image, container, child layer or mount uses are flagged and removed, image directories it names
//! whose image is not in `images.json` are removed. A kill before step 2 thus deletes nothing
//! visible; a kill after it completes the delete.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use storage_format::{ImageRecord, LayerRecord, LockGuard, RecordFile};

use super::Store;
use super::records;
use crate::crashpoint::hit;
use crate::error::{Error, Result};

/// The journal of a delete in progress, in the layers directory.
pub(crate) const JOURNAL: &str = "bootc-image-deleting.json";

/// Unused layers younger than this are left alone by a sweep: another tool may be pulling an image
/// whose layers are committed one by one before its image record.
pub(crate) const SWEEP_GRACE: Duration = Duration::from_secs(10 * 60);

/// What a removal did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    /// Images removed.
    pub images: Vec<String>,
    /// Layers removed.
    pub layers: Vec<String>,
    /// Images that would have gone but stay because containers use them (ID, container IDs).
    pub kept_for_containers: Vec<(String, Vec<String>)>,
}

/// Which layers a removal considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Only the removed images' own layer chains (as `podman rmi`).
    Chains,
    /// Also every other layer nothing uses (GC), if older than [`SWEEP_GRACE`].
    Unused,
}

/// What an interrupted delete's journal names.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Journal {
    images: Vec<String>,
    layers: Vec<String>,
}

impl Journal {
    /// Whether the journal names the image or layer `id`.
    pub(crate) fn names(&self, id: &str) -> bool {
        self.images.iter().chain(&self.layers).any(|x| x == id)
    }
}

impl Store {
    /// Removes the images with the given IDs, then every layer of their chains that no remaining
    /// image, container or mount uses.
    pub fn delete_images(&self, ids: &[String]) -> Result<DeleteReport> {
        self.remove_images(ids, Sweep::Chains)
    }

    /// Removes the images with the given IDs and every layer nothing uses, including layers
    /// orphaned earlier (by an interrupted delete of another tool, say).
    pub(crate) fn collect_garbage(&self, ids: &[String]) -> Result<DeleteReport> {
        self.remove_images(ids, Sweep::Unused)
    }

    /// What [`Store::collect_garbage`] would remove now, without removing anything.
    pub(crate) fn garbage_plan(&self, ids: &[String]) -> Result<DeleteReport> {
        let _g = self.layers_lock().lock_read()?;
        let _i = self.images_lock().lock_read()?;
        let (layers, _) = self.read_layers()?;
        let (mut images, _) = self.read_images()?;
        self.plan_removal(&layers, &mut images, ids, Sweep::Unused)
    }

    /// Takes the images `ids` out of `images` and finds the layers to remove with them: their own
    /// chains, and with [`Sweep::Unused`] every other layer nothing uses.
    fn plan_removal(
        &self,
        layers: &RecordFile<LayerRecord>,
        images: &mut RecordFile<ImageRecord>,
        ids: &[String],
        sweep: Sweep,
    ) -> Result<DeleteReport> {
        let mut report = DeleteReport::default();
        let mut candidates: HashSet<String> = HashSet::new();
        for id in ids {
            if let Some(img) = images.remove(id) {
                report.images.push(id.clone());
                // The image's own chain.
                let mut next = img.layer;
                while let Some(id) = next {
                    next = layers.get(&id).and_then(|l| l.parent.clone());
                    if !candidates.insert(id) {
                        break;
                    }
                }
            }
        }
        if sweep == Sweep::Unused {
            candidates.extend(self.sweep_candidates(layers));
        }
        report.layers = self.doomed_layers(layers, images, candidates)?;
        Ok(report)
    }

    fn remove_images(&self, ids: &[String], sweep: Sweep) -> Result<DeleteReport> {
        let _w = self.writer()?;
        let layers_guard = self.layers_lock().lock_write()?;
        let images_guard = self.images_lock().lock_write()?;
        let (mut images, _) = self.read_images()?;
        let (mut layers, _) = self.read_layers()?;
        let report = self.plan_removal(&layers, &mut images, ids, sweep)?;
        if report.images.is_empty() && report.layers.is_empty() {
            return Ok(report);
        }
        self.remove_in_order(
            &mut layers,
            &images,
            &report.images,
            &report.layers,
            (&layers_guard, &images_guard),
        )?;
        drop(images_guard);
        Ok(report)
    }

    /// Removes, in the crash-safe order, the images `image_ids` (already taken out of `images`) and
    /// the layers `doomed` (children before parents). The caller holds both locks (`guards`).
    pub(crate) fn remove_in_order(
        &self,
        layers: &mut RecordFile<LayerRecord>,
        images: &RecordFile<ImageRecord>,
        image_ids: &[String],
        doomed: &[String],
        guards: (&LockGuard<'_>, &LockGuard<'_>),
    ) -> Result<()> {
        if image_ids.is_empty() && doomed.is_empty() {
            return Ok(());
        }
        let (layers_guard, images_guard) = guards;
        tracing::info!(
            images = image_ids.len(),
            layers = doomed.len(),
            "removing images and layers"
        );
        let journal = Journal {
            images: image_ids.to_vec(),
            layers: doomed.to_vec(),
        };
        self.write_journal(&journal)?;
        hit("delete:journal");
        if !image_ids.is_empty() {
            records::write(&self.images_dir().join("images.json"), images, images_guard)?;
            hit("delete:images-record");
            for id in image_ids {
                let dir = self.images_dir().join(id);
                crate::fsutil::remove_all(&dir).map_err(|e| Error::io("removing", &dir, e))?;
            }
            hit("delete:image-dirs");
        }
        self.remove_layers(layers, doomed, layers_guard)?;
        self.remove_journal()
    }

    /// Flags `doomed` incomplete and writes that, removes their data, then their records.
    fn remove_layers(
        &self,
        layers: &mut RecordFile<LayerRecord>,
        doomed: &[String],
        guard: &LockGuard<'_>,
    ) -> Result<()> {
        if doomed.is_empty() {
            return Ok(());
        }
        let path = self.layers_dir().join("layers.json");
        for id in doomed {
            if let Some(l) = layers.get_mut(id) {
                l.set_incomplete(true);
            }
        }
        records::write(&path, layers, guard)?;
        hit("delete:layers-flagged");
        for id in doomed {
            self.driver().remove(id)?;
            hit("delete:layer-data");
            let ts = self.tar_split_path(id);
            crate::fsutil::remove_all(&ts).map_err(|e| Error::io("removing", &ts, e))?;
            let bd = self.layer_big_data_dir(id);
            crate::fsutil::remove_all(&bd).map_err(|e| Error::io("removing", &bd, e))?;
            hit("delete:layer-tar-split");
        }
        for id in doomed {
            layers.remove(id);
        }
        records::write(&path, layers, guard)?;
        hit("delete:layers-record");
        Ok(())
    }

    fn journal_path(&self) -> PathBuf {
        self.layers_dir().join(JOURNAL)
    }

    fn write_journal(&self, journal: &Journal) -> Result<()> {
        let bytes = serde_json::to_vec(journal)
            .map_err(|e| Error::Internal(format!("encoding the delete journal: {e}")))?;
        super::atomic::atomic_write(&self.journal_path(), &bytes, 0o600)
    }

    fn remove_journal(&self) -> Result<()> {
        let p = self.journal_path();
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", &p, e)),
        }
    }

    /// The journal of an interrupted delete, if one is there (an unreadable one names nothing).
    pub(crate) fn pending_delete(&self) -> Result<Option<Journal>> {
        let p = self.journal_path();
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).unwrap_or_default())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading", &p, e)),
        }
    }

    /// Finishes a delete that was interrupted (the journal is there). The caller holds the layers
    /// lock; this takes the images lock. `layers` is updated and written.
    pub(crate) fn finish_interrupted_delete(
        &self,
        layers: &mut RecordFile<LayerRecord>,
        layers_guard: &LockGuard<'_>,
    ) -> Result<()> {
        let p = self.journal_path();
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &p, e)),
        };
        tracing::info!("finishing an interrupted delete ({})", p.display());
        // A journal we cannot read names nothing we can act on safely: drop it.
        let journal: Journal = serde_json::from_slice(&bytes).unwrap_or_default();
        let images_guard = self.images_lock().lock_write()?;
        let (images, _) = self.read_images()?;
        for id in &journal.images {
            if images.get(id).is_none() && storage_format::is_valid_id(id) {
                let dir = self.images_dir().join(id);
                crate::fsutil::remove_all(&dir).map_err(|e| Error::io("removing", &dir, e))?;
            }
        }
        let candidates = journal.layers.iter().cloned().collect();
        let doomed = self.doomed_layers(layers, &images, candidates)?;
        self.remove_layers(layers, &doomed, layers_guard)?;
        drop(images_guard);
        self.remove_journal()
    }

    /// Complete layers old enough to be swept if nothing uses them.
    fn sweep_candidates(&self, layers: &RecordFile<LayerRecord>) -> HashSet<String> {
        let now = SystemTime::now();
        layers
            .iter()
            .filter(|l| !l.is_incomplete())
            .filter(|l| {
                let age = |p: &Path| {
                    std::fs::symlink_metadata(p)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| now.duration_since(t).ok())
                };
                let age = age(&self.tar_split_path(&l.id))
                    .or_else(|| age(&self.driver().tree_path(&l.id)));
                age.is_none_or(|a| a >= SWEEP_GRACE)
            })
            .map(|l| l.id.clone())
            .collect()
    }

    /// Of `candidates`, the layers to remove: repeatedly the leaves that no image, container, mount
    /// or name keeps, in removal order (children before parents).
    pub(crate) fn doomed_layers(
        &self,
        layers: &RecordFile<LayerRecord>,
        images: &RecordFile<ImageRecord>,
        candidates: HashSet<String>,
    ) -> Result<Vec<String>> {
        let mut keep: HashSet<String> = HashSet::new();
        for img in images.iter() {
            keep.extend(img.layer.iter().cloned());
            if let Some(serde_json::Value::Array(m)) = img.extra.get("mapped-layers") {
                keep.extend(m.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
        keep.extend(self.mounted_layers()?);
        keep.extend(self.container_layers()?);
        let mut alive: HashMap<&str, &LayerRecord> =
            layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut doomed = Vec::new();
        loop {
            let mut children: HashMap<&str, usize> = HashMap::new();
            for l in alive.values() {
                if let Some(p) = &l.parent {
                    *children.entry(p.as_str()).or_default() += 1;
                }
            }
            let mut leaves: Vec<&str> = alive
                .values()
                .filter(|l| {
                    candidates.contains(&l.id)
                        && !keep.contains(&l.id)
                        && !children.contains_key(l.id.as_str())
                        && l.names.is_empty()
                })
                .map(|l| l.id.as_str())
                .collect();
            if leaves.is_empty() {
                break;
            }
            leaves.sort_unstable();
            for id in leaves {
                alive.remove(id);
                doomed.push(id.to_string());
            }
        }
        Ok(doomed)
    }

    /// Layers podman has mounted (runroot `mountpoints.json`), which must not be removed.
    fn mounted_layers(&self) -> Result<Vec<String>> {
        let p = self
            .config()
            .runroot
            .join(format!("{}-layers", self.config().driver.name()))
            .join("mountpoints.json");
        json_ids(
            &p,
            |m| m.get("count").and_then(|c| c.as_u64()).unwrap_or(0) > 0,
            "id",
        )
    }

    /// The read-write layers of podman's containers (`<driver>-containers/containers.json`).
    pub(crate) fn container_layers(&self) -> Result<Vec<String>> {
        json_ids(&self.containers_json(), |_| true, "layer")
    }

    /// `<graphroot>/<driver>-containers/containers.json`, podman's container records.
    pub(crate) fn containers_json(&self) -> PathBuf {
        self.config()
            .graphroot
            .join(format!("{}-containers", self.config().driver.name()))
            .join("containers.json")
    }
}

/// The string `field` of every object of the JSON array in `path` that `pick` accepts; nothing if
/// the file is missing. A file we cannot read or parse is an error: what it protects is unknown.
pub(crate) fn json_ids(
    path: &Path,
    pick: impl Fn(&serde_json::Value) -> bool,
    field: &str,
) -> Result<Vec<String>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Array(v)) => Ok(v
            .iter()
            .filter(|m| pick(m))
            .filter_map(|m| m.get(field).and_then(|i| i.as_str()).map(str::to_owned))
            .collect()),
        _ if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
        _ => Err(Error::Store(format!(
            "{} is not a JSON list: nothing is removed while it cannot be read; check it with podman",
            path.display()
        ))),
    }
}
