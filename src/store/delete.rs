//! Removing images, and the layers only they used, under the store's locks.

use std::collections::{HashMap, HashSet};

use storage_format::LayerRecord;

use super::Store;
use super::records;
use crate::error::{Error, Result};

/// What a removal did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    /// Images removed.
    pub images: Vec<String>,
    /// Layers removed.
    pub layers: Vec<String>,
}

impl Store {
    /// Removes the images with the given IDs, then every layer no remaining image or layer (including
    /// containers' layers) uses and that is not mounted.
    pub fn delete_images(&self, ids: &[String]) -> Result<DeleteReport> {
        let _w = self.writer()?;
        let layers_guard = self.layers_lock().lock_write()?;
        let images_guard = self.images_lock().lock_write()?;
        let (mut images, _) = self.read_images()?;
        let mut report = DeleteReport::default();
        let mut tops = Vec::new();
        for id in ids {
            if let Some(img) = images.remove(id) {
                report.images.push(id.clone());
                tops.extend(img.layer);
            }
        }
        if report.images.is_empty() {
            return Ok(report);
        }
        // The record goes first: a crash afterwards leaves unreferenced files, never a broken image.
        records::write(
            &self.images_dir().join("images.json"),
            &images,
            &images_guard,
        )?;
        for id in &report.images {
            let dir = self.images_dir().join(id);
            crate::fsutil::remove_all(&dir).map_err(|e| Error::io("removing", &dir, e))?;
        }
        let (mut layers, _) = self.read_layers()?;
        let mounted = self.mounted_layers();
        let mut keep: HashSet<String> = HashSet::new();
        for img in images.iter() {
            keep.extend(img.layer.iter().cloned());
            if let Some(serde_json::Value::Array(m)) = img.extra.get("mapped-layers") {
                keep.extend(m.iter().filter_map(|v| v.as_str().map(str::to_owned)));
            }
        }
        keep.extend(mounted);
        // Only the removed images' own layer chains are candidates.
        let mut candidates: HashSet<String> = HashSet::new();
        for top in tops {
            let mut next = Some(top);
            while let Some(id) = next {
                next = layers.get(&id).and_then(|l| l.parent.clone());
                if !candidates.insert(id) {
                    break;
                }
            }
        }
        // Repeatedly remove leaf layers nobody keeps.
        loop {
            let all: Vec<LayerRecord> = layers.iter().cloned().collect();
            let mut children: HashMap<&str, usize> = HashMap::new();
            for l in &all {
                if let Some(p) = &l.parent {
                    *children.entry(p.as_str()).or_default() += 1;
                }
            }
            let doomed: Vec<String> = all
                .iter()
                .filter(|l| {
                    candidates.contains(&l.id)
                        && !keep.contains(&l.id)
                        && !children.contains_key(l.id.as_str())
                        && l.names.is_empty()
                })
                .map(|l| l.id.clone())
                .collect();
            if doomed.is_empty() {
                break;
            }
            for id in doomed {
                layers.remove(&id);
                self.driver().remove(&id)?;
                let ts = self.tar_split_path(&id);
                crate::fsutil::remove_all(&ts).map_err(|e| Error::io("removing", &ts, e))?;
                report.layers.push(id);
            }
        }
        records::write(
            &self.layers_dir().join("layers.json"),
            &layers,
            &layers_guard,
        )?;
        drop(images_guard);
        Ok(report)
    }

    /// Layers podman has mounted (runroot `mountpoints.json`), which must not be removed.
    fn mounted_layers(&self) -> Vec<String> {
        let p = self
            .config()
            .runroot
            .join(format!("{}-layers", self.config().driver.name()))
            .join("mountpoints.json");
        let Ok(bytes) = std::fs::read(p) else {
            return Vec::new();
        };
        let Ok(serde_json::Value::Array(v)) = serde_json::from_slice::<serde_json::Value>(&bytes)
        else {
            return Vec::new();
        };
        v.iter()
            .filter(|m| m.get("count").and_then(|c| c.as_u64()).unwrap_or(0) > 0)
            .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_owned))
            .collect()
    }
}
