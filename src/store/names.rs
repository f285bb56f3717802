//! Image names: tagging and untagging under the images lock, names unique across the store.

use super::Store;
use super::records;
use crate::error::{Error, Result};

impl Store {
    /// Adds `names` (each already normalized) to the image `id`; an image that had one of them loses
    /// it, as with `podman tag`.
    pub fn tag_image(&self, id: &str, names: &[String]) -> Result<()> {
        crate::reference::check_stored_names(names)?;
        let _w = self.writer()?;
        let guard = self.images_lock().lock_write()?;
        let (mut images, _) = self.read_images()?;
        let Some(img) = images.get(id) else {
            return Err(Error::not_found(
                id.to_string(),
                format!("image {id} is not in the store"),
            ));
        };
        crate::reference::check_name_digests(names, &crate::reference::record_digests(img))?;
        let holders: Vec<String> = images
            .iter()
            .filter(|i| i.id != id && i.names.iter().any(|n| names.contains(n)))
            .map(|i| i.id.clone())
            .collect();
        for h in holders {
            if let Some(img) = images.get_mut(&h) {
                for n in names {
                    img.remove_name(n);
                }
            }
        }
        if let Some(img) = images.get_mut(id) {
            for n in names {
                img.add_name(n);
            }
        }
        records::write(&self.images_dir().join("images.json"), &images, &guard)
    }

    /// Removes `name` from the image `id`'s names (the image stays, as with `podman untag`).
    pub fn untag_image(&self, id: &str, name: &str) -> Result<()> {
        let _w = self.writer()?;
        let guard = self.images_lock().lock_write()?;
        let (mut images, _) = self.read_images()?;
        let Some(img) = images.get_mut(id) else {
            return Err(Error::not_found(
                id.to_string(),
                format!("image {id} is not in the store"),
            ));
        };
        img.remove_name(name);
        records::write(&self.images_dir().join("images.json"), &images, &guard)
    }

    /// The containers (their IDs) whose image is `id`, from `<driver>-containers/containers.json`.
    pub fn containers_of_image(&self, id: &str) -> Result<Vec<String>> {
        super::delete::json_ids(
            &self.containers_json(),
            |c| c.get("image").and_then(|i| i.as_str()) == Some(id),
            "id",
        )
    }
}
