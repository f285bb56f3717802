//! Pulling a deployment's logically bound images into bootc's store, all or nothing: each from
//! bootc's store already (kept), the default store (copied, files shared), or its source (fetched:
//! opened in parallel, written in one transaction).

use std::collections::HashSet;

use super::bound_images::{BoundImage, resolve_pull, store_name};
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::source::image_proxy::FetchOptions;
use crate::store::image_input::{LayerInput, Progress};
use crate::store::{Store, lookup};

/// Where a bound image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// bootc's store has it already.
    Present,
    /// The default store has it (this image ID): copied natively, its files shared.
    DefaultStore(String),
    /// Fetched: from its registry, or the layout or archive the unit names.
    Fetched,
}

/// One bound image and what pulling it means.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Planned {
    /// The image as the unit names it.
    pub image: BoundImage,
    /// Its name in bootc's store.
    pub name: String,
    /// Where it comes from.
    pub origin: Origin,
}

impl Planned {
    /// Where it comes from, for people: bootc's store, the default store, its registry or its
    /// reference.
    pub fn from(&self) -> String {
        match &self.origin {
            Origin::Present => "already in bootc's store".to_string(),
            Origin::DefaultStore(id) => {
                format!("the default store (image {})", &id[..12.min(id.len())])
            }
            Origin::Fetched => match resolve_pull(&self.image.image) {
                Ok((ImageRef::Docker(_), _)) => format!("its registry (docker://{})", self.name),
                _ => self.image.image.clone(),
            },
        }
    }
}

/// Where each of `images` would come from: bootc's store `dst`, else the default store (when it
/// holds it and the unit does not name a layout or archive), else its source.
pub fn plan(dst: &Store, default: Option<&Store>, images: &[BoundImage]) -> Result<Vec<Planned>> {
    let stored = dst.images()?;
    let default_images = match default.map(Store::images) {
        Some(Ok(images)) => images,
        Some(Err(e)) => {
            tracing::warn!("reading the default store's images: {e}; fetching from the sources");
            Vec::new()
        }
        None => Vec::new(),
    };
    images
        .iter()
        .map(|b| {
            let name = store_name(&b.image).map_err(|e| named(b, e))?;
            // A layout or archive the unit names is read from there, never from the default store.
            let local = matches!(
                resolve_pull(&b.image),
                Ok((ImageRef::OciDir { .. } | ImageRef::OciArchive { .. }, _))
            );
            let origin = if lookup::find_image(&stored, &name).is_ok() {
                Origin::Present
            } else if !local && let Ok(found) = lookup::find_image(&default_images, &b.image) {
                Origin::DefaultStore(found.id.clone())
            } else {
                Origin::Fetched
            };
            Ok(Planned {
                image: b.clone(),
                name,
                origin,
            })
        })
        .collect()
}

/// An error about bound image `b`, naming it and its unit.
fn named(b: &BoundImage, e: Error) -> Error {
    Error::Context {
        what: format!("bound image {} ({})", b.image, b.source),
        source: Box::new(e),
    }
}

/// Pulls what `plan` says into `dst`, all or nothing: fetched images opened in parallel and
/// written in one transaction (`layers` is told their layers first, `progress` the import's
/// events), then the default store's copied; on any failure the images this pull added are
/// removed. Returns the IDs of the images it added.
pub fn pull_all(
    dst: &Store,
    default: Option<&Store>,
    plan: &[Planned],
    fetch: &FetchOptions,
    layers: &dyn Fn(&[LayerInput]),
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<String>> {
    let before: HashSet<String> = dst.images()?.into_iter().map(|i| i.id).collect();
    let to_fetch: Vec<&Planned> = plan
        .iter()
        .filter(|p| p.origin == Origin::Fetched)
        .collect();
    let opened = crate::parallel::map_in_order(&to_fetch, 4, |p| {
        let (source, _) = resolve_pull(&p.image.image).map_err(|e| named(&p.image, e))?;
        let mut o = crate::source::open_with(&source, fetch).map_err(|e| named(&p.image, e))?;
        o.image.names = vec![p.name.clone()];
        Ok(o)
    });
    let opened: Vec<crate::source::OpenedSource> = opened.into_iter().collect::<Result<_>>()?;
    let mut added: Vec<String> = Vec::new();
    if !opened.is_empty() {
        let producers: Vec<_> = opened
            .iter()
            .map(|o| {
                crate::source::blob_layers::BlobLayers::new(o.blobs.as_ref(), o.retry)
                    .partial_into(dst)
            })
            .collect();
        let items: Vec<crate::store::import::ImportItem<'_>> = opened
            .iter()
            .zip(&producers)
            .map(|(o, p)| crate::store::import::ImportItem {
                input: &o.image,
                producer: p,
            })
            .collect();
        let all: Vec<LayerInput> = opened.iter().flat_map(|o| o.image.layers.clone()).collect();
        layers(&all);
        let reports = dst.import_all(&items, progress)?;
        added.extend(
            reports
                .into_iter()
                .map(|r| r.image_id)
                .filter(|id| !before.contains(id)),
        );
    }
    let copied = (|| -> Result<()> {
        for p in plan {
            let Origin::DefaultStore(id) = &p.origin else {
                continue;
            };
            let src =
                default.ok_or_else(|| Error::Store("the default store is gone".to_string()))?;
            let copied = dst
                .copy_image_from(
                    src,
                    id,
                    &crate::store::copy::CopyOptions {
                        names: vec![p.name.clone()],
                        verify: false,
                    },
                )
                .map_err(|e| named(&p.image, e))?;
            if !before.contains(&copied.image_id) {
                added.push(copied.image_id);
            }
        }
        Ok(())
    })();
    if let Err(e) = copied {
        // All or nothing: take back what this run added (the copy's error is the one to tell).
        if let Err(undo) = dst.delete_images(&added) {
            tracing::warn!("removing the images this pull added: {undo}");
        }
        return Err(e);
    }
    Ok(added)
}
