//! Checking a whole store (ours or podman's) and repairing it: what `podman system check` does,
//! with the crash-safe delete order of [`delete`](super::delete).
//!
//! The check reads under the read locks and changes nothing: every complete layer is rebuilt from
//! its tar-split and files and must give its DiffID ([`Store::verify_layer`]); parents, tar-splits
//! and driver data must exist; every image's layer chain must be there and sound, and its big-data
//! files must have their recorded sizes and digests; directories and files without a record are
//! orphans. The repair removes damaged images, then damaged layers (and the layers above them),
//! then orphans, and reports what it removed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;
use storage_format::{ImageRecord, LayerRecord, RecordFile, big_data_file_name, is_valid_id};

use super::Store;
use crate::error::{Error, Result};

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Problem {
    /// A layer whose data does not rebuild its tar, or whose record points at something missing.
    DamagedLayer {
        /// The layer ID.
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// A layer record flagged `incomplete`: an interrupted write or delete.
    IncompleteLayer {
        /// The layer ID.
        id: String,
    },
    /// An image whose layers or big data are missing or damaged.
    DamagedImage {
        /// The image ID.
        id: String,
        /// What is wrong.
        detail: String,
    },
    /// A directory or file of the store that no record owns.
    Orphan {
        /// Its path.
        path: PathBuf,
    },
    /// Part of a delete that was interrupted (its journal is there): the next open for writing
    /// finishes it.
    InterruptedDelete {
        /// The layer or image, or the path left behind.
        what: String,
    },
    /// Files a layer's tree has that its tar-split does not name (overlay only).
    ExtraFiles {
        /// The layer ID.
        id: String,
        /// The first few of those paths.
        paths: Vec<String>,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::DamagedLayer { id, detail } => write!(f, "damaged layer {id}: {detail}"),
            Problem::IncompleteLayer { id } => {
                write!(f, "incomplete layer {id}: an interrupted write or delete")
            }
            Problem::DamagedImage { id, detail } => write!(f, "damaged image {id}: {detail}"),
            Problem::Orphan { path } => write!(f, "orphan {}", path.display()),
            Problem::InterruptedDelete { what } => {
                write!(f, "{what}: part of an interrupted delete")
            }
            Problem::ExtraFiles { id, paths } => write!(
                f,
                "damaged layer {id}: its tree has files its tar-split does not name ({})",
                paths.join(", ")
            ),
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Layers checked.
    pub layers_checked: usize,
    /// Images checked.
    pub images_checked: usize,
    /// What was found, sorted.
    pub problems: Vec<Problem>,
    /// What an interrupted write or delete left (incomplete layers, a delete's journal, an image
    /// directory without a record): not damage — the next open of the store for writing (any
    /// pull, copy, rm, or a repair) finishes or removes it, as podman does. Sorted.
    pub pending: Vec<Problem>,
}

/// What a repair removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Images removed.
    pub images: Vec<String>,
    /// Layers removed.
    pub layers: Vec<String>,
    /// Orphaned paths removed.
    pub orphans: Vec<PathBuf>,
    /// Damaged layers left because something still uses them: a container (remove it with
    /// podman) or a mount.
    pub kept_in_use: Vec<String>,
}

impl Store {
    /// The store's orphans, each as a problem and whether it is pending (part of an interrupted
    /// delete, or an image directory a killed copy left, which the next open for writing removes).
    fn classified_orphans(
        &self,
        layers: &RecordFile<LayerRecord>,
        images: &RecordFile<ImageRecord>,
        journal_names: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(Problem, bool)>> {
        let images_dir = self.images_dir();
        Ok(self
            .orphans(layers, images)?
            .into_iter()
            .map(|path| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let id = name.strip_suffix(".tar-split.gz").unwrap_or(&name);
                if journal_names(id) {
                    let what = path.display().to_string();
                    (Problem::InterruptedDelete { what }, true)
                } else {
                    let pending = path.parent() == Some(images_dir.as_path());
                    (Problem::Orphan { path }, pending)
                }
            })
            .collect())
    }

    /// What is wrong with the complete layer `l` (its parent, data, tar-split, or the tar they
    /// rebuild), if anything; a container's read-write layer is not rebuilt.
    fn layer_fault_detail(
        &self,
        l: &LayerRecord,
        by_id: &HashMap<&str, &LayerRecord>,
        containers: &HashSet<String>,
    ) -> Option<String> {
        if let Some(p) = l.parent.as_deref().filter(|p| !by_id.contains_key(p)) {
            Some(format!("its parent {p} does not exist"))
        } else if !self.driver().tree_path(&l.id).is_dir() {
            Some("its data directory is missing".to_string())
        } else if containers.contains(&l.id) {
            // A container's read-write layer changes as the container runs: not rebuilt.
            None
        } else if !self.tar_split_path(&l.id).is_file() {
            Some("its tar-split is missing".to_string())
        } else {
            match self.verify_layer(l) {
                Ok(()) => None,
                Err(Error::Damaged { detail, .. }) => Some(detail),
                Err(e) => Some(e.to_string()),
            }
        }
    }
}

/// What is wrong below the layer `top`: a damaged layer (`bad`: ID → why) or a missing one in
/// its chain, or a chain that loops.
fn chain_fault(
    top: &str,
    bad: &HashMap<String, String>,
    by_id: &HashMap<&str, &LayerRecord>,
) -> Option<String> {
    let mut next = Some(top.to_string());
    let mut steps = 0;
    while let Some(id) = next {
        if let Some(why) = bad.get(&id) {
            return Some(format!("its layer {id} is damaged ({why})"));
        }
        let Some(rec) = by_id.get(id.as_str()) else {
            return Some(format!("its layer {id} does not exist"));
        };
        next = rec.parent.clone();
        steps += 1;
        if steps > by_id.len() {
            return Some("its layer chain loops".into());
        }
    }
    None
}

/// A layer found wrong: part of an interrupted delete when its journal names it (`true`: pending),
/// else damage.
fn layer_fault(id: &str, detail: String, in_journal: bool) -> (bool, Problem) {
    if in_journal {
        (
            true,
            Problem::InterruptedDelete {
                what: format!("layer {id}"),
            },
        )
    } else {
        (
            false,
            Problem::DamagedLayer {
                id: id.to_string(),
                detail,
            },
        )
    }
}

impl Store {
    /// Checks the whole store without changing it.
    pub fn check(&self) -> Result<CheckReport> {
        let _l = self.layers_lock().lock_read()?;
        let _i = self.images_lock().lock_read()?;
        let (layers, _) = self.read_layers()?;
        let (images, _) = self.read_images()?;
        self.check_records(&layers, &images)
    }

    fn check_records(
        &self,
        layers: &RecordFile<LayerRecord>,
        images: &RecordFile<ImageRecord>,
    ) -> Result<CheckReport> {
        let mut problems = BTreeSet::new();
        let mut pending = BTreeSet::new();
        let journal = self.pending_delete()?;
        let journal_names = |id: &str| journal.as_ref().is_some_and(|j| j.names(id));
        if journal.is_some() {
            pending.insert(Problem::InterruptedDelete {
                what: format!(
                    "the journal {}",
                    self.layers_dir().join(super::delete::JOURNAL).display()
                ),
            });
        }
        let containers: HashSet<String> = self.container_layers()?.into_iter().collect();
        let by_id: HashMap<&str, &LayerRecord> =
            layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut bad_layers: HashMap<String, String> = HashMap::new();
        for l in layers.iter() {
            if l.is_incomplete() {
                pending.insert(Problem::IncompleteLayer { id: l.id.clone() });
                bad_layers.insert(l.id.clone(), "it is incomplete".into());
                continue;
            }
            let detail = self.layer_fault_detail(l, &by_id, &containers);
            // A tree with files the tar-split does not name shows them in every container
            // (overlay only: a vfs tree holds the layers below it too).
            if detail.is_none()
                && self.config().driver == super::DriverKind::Overlay
                && !containers.contains(&l.id)
                && let Ok(extra) = self.extra_files(l)
                && !extra.is_empty()
            {
                bad_layers.insert(
                    l.id.clone(),
                    "its tree has files its tar-split does not name".into(),
                );
                problems.insert(Problem::ExtraFiles {
                    id: l.id.clone(),
                    paths: extra,
                });
                continue;
            }
            if let Some(detail) = detail {
                bad_layers.insert(l.id.clone(), detail.clone());
                let (list, p) = layer_fault(&l.id, detail, journal_names(&l.id));
                if list { &mut pending } else { &mut problems }.insert(p);
            }
        }
        // A layer above a damaged one is damaged too (its tree is mounted over it).
        let chain_fault = |top: &str| chain_fault(top, &bad_layers, &by_id);
        for l in layers.iter() {
            if !bad_layers.contains_key(&l.id)
                && let Some(why) = l.parent.as_deref().and_then(chain_fault)
            {
                let detail = format!("it is above a damaged layer: {why}");
                let (list, p) = layer_fault(&l.id, detail, journal_names(&l.id));
                if list { &mut pending } else { &mut problems }.insert(p);
            }
        }
        for img in images.iter() {
            let detail = match img.layer.as_deref() {
                Some(top) => chain_fault(top),
                None => None,
            }
            .or_else(|| self.big_data_fault(img));
            if let Some(detail) = detail {
                problems.insert(Problem::DamagedImage {
                    id: img.id.clone(),
                    detail,
                });
            }
        }
        for (path, is_pending) in self.classified_orphans(layers, images, &journal_names)? {
            if is_pending {
                pending.insert(path);
            } else {
                problems.insert(path);
            }
        }
        Ok(CheckReport {
            layers_checked: layers.len(),
            images_checked: images.len(),
            problems: problems.into_iter().collect(),
            pending: pending.into_iter().collect(),
        })
    }

    /// What is wrong with an image's big-data files, if anything.
    fn big_data_fault(&self, img: &ImageRecord) -> Option<String> {
        let dir = self.images_dir().join(&img.id);
        for key in &img.big_data_names {
            let p = dir.join(big_data_file_name(key));
            let Ok(bytes) = std::fs::read(&p) else {
                return Some(format!("its {key:?} data is missing"));
            };
            if let Some(size) = img.big_data_sizes.get(key).and_then(|v| v.as_u64())
                && size != bytes.len() as u64
            {
                return Some(format!(
                    "its {key:?} data is {} bytes, not {size}",
                    bytes.len()
                ));
            }
            if let Some(d) = img.big_data_digests.get(key).and_then(|v| v.as_str())
                && storage_format::Digest::parse(d)
                    .is_ok_and(|want| want != storage_format::Digest::of_bytes(&bytes))
            {
                return Some(format!("its {key:?} data does not match {d}"));
            }
        }
        None
    }

    /// Store entries no record owns: layer directories, tar-splits, image directories, overlay
    /// short links to nothing.
    fn orphans(
        &self,
        layers: &RecordFile<LayerRecord>,
        images: &RecordFile<ImageRecord>,
    ) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let ids = |dir: &std::path::Path| -> Vec<(String, PathBuf)> {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let driver_dir = match self.config().driver {
            super::DriverKind::Overlay => self.config().graphroot.join("overlay"),
            super::DriverKind::Vfs => self.config().graphroot.join("vfs/dir"),
        };
        // Layers c/storage keeps elsewhere (volatile and transient container layers) are not orphans.
        let mut known: HashSet<String> = layers.iter().map(|l| l.id.clone()).collect();
        known.extend(self.volatile_layer_ids()?);
        for (name, path) in ids(&driver_dir) {
            if is_valid_id(&name) && !known.contains(&name) {
                out.push(path);
            }
        }
        for (name, path) in ids(&self.layers_dir()) {
            if let Some(id) = name.strip_suffix(".tar-split.gz")
                && is_valid_id(id)
                && !known.contains(id)
            {
                out.push(path);
            } else if is_valid_id(&name) && path.is_dir() && !known.contains(name.as_str()) {
                // A layer's big-data directory (a zstd:chunked TOC) without its layer.
                out.push(path);
            }
        }
        for (name, path) in ids(&self.images_dir()) {
            if is_valid_id(&name) && path.is_dir() && images.get(&name).is_none() {
                out.push(path);
            }
        }
        if self.config().driver == super::DriverKind::Overlay {
            for (_, path) in ids(&driver_dir.join(storage_format::LINK_DIR)) {
                if std::fs::metadata(&path).is_err() && path.symlink_metadata().is_ok() {
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    /// IDs of the layers recorded in c/storage's `volatile-layers.json` files (graph root and run
    /// root) and used by containers.
    fn volatile_layer_ids(&self) -> Result<Vec<String>> {
        let mut ids = self.container_layers()?;
        let name = format!("{}-layers", self.config().driver.name());
        for dir in [self.layers_dir(), self.config().runroot.join(&name)] {
            let p = dir.join("volatile-layers.json");
            let (file, _) = super::records::read::<LayerRecord>(&p)?;
            ids.extend(file.iter().map(|l| l.id.clone()));
        }
        Ok(ids)
    }

    /// Checks the store and removes what is damaged, crash-safely: damaged images first, then
    /// damaged layers nothing else uses (and layers above them), then orphans. Returns the check
    /// made before the repair and what was removed.
    pub fn repair(&self) -> Result<(CheckReport, RepairReport)> {
        let _w = self.writer()?;
        let layers_guard = self.layers_lock().lock_write()?;
        let images_guard = self.images_lock().lock_write()?;
        let (mut layers, _) = self.read_layers()?;
        let (mut images, _) = self.read_images()?;
        let report = self.check_records(&layers, &images)?;
        let mut repaired = RepairReport::default();
        let mut damaged: HashSet<String> = HashSet::new();
        for p in report.problems.iter().chain(&report.pending) {
            match p {
                Problem::DamagedImage { id, .. } => repaired.images.push(id.clone()),
                Problem::DamagedLayer { id, .. }
                | Problem::IncompleteLayer { id }
                | Problem::ExtraFiles { id, .. } => {
                    damaged.insert(id.clone());
                }
                _ => {}
            }
        }
        for id in &repaired.images {
            images.remove(id);
        }
        // The damaged layers nothing uses any more, children first; what a container (or a
        // mount) still uses stays, with the layers under it.
        let order = self.doomed_layers(&layers, &images, damaged.clone())?;
        repaired.kept_in_use = damaged
            .into_iter()
            .filter(|id| !order.contains(id))
            .collect();
        repaired.kept_in_use.sort();
        self.remove_in_order(
            &mut layers,
            &images,
            &repaired.images,
            &order,
            (&layers_guard, &images_guard),
        )?;
        repaired.layers = order;
        for p in report.problems.iter().chain(&report.pending) {
            if let Problem::Orphan { path } = p {
                crate::fsutil::remove_all(path).map_err(|e| Error::io("removing", path, e))?;
                repaired.orphans.push(path.clone());
            }
        }
        Ok((report, repaired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_serialize() {
        let r = CheckReport {
            layers_checked: 1,
            images_checked: 2,
            problems: vec![
                Problem::Orphan {
                    path: PathBuf::from("/x"),
                },
                Problem::DamagedLayer {
                    id: "a".into(),
                    detail: "b".into(),
                },
            ],
            pending: vec![Problem::IncompleteLayer { id: "c".into() }],
        };
        let v = serde_json::json!({"store": PathBuf::from("/s"), "problems": r.problems, "n": r.layers_checked});
        let s = serde_json::to_string_pretty(&v).unwrap_or_default();
        assert!(s.contains("\"kind\": \"orphan\""), "{s}");
    }
}
