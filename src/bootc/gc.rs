//! Garbage collection of bootc's store: keep exactly the images some deployment binds or boots.

use std::collections::BTreeSet;

use super::sysroot::Sysroot;
use super::{bound_images, deployments};
use crate::error::Result;
use crate::store::Store;
use crate::store::delete::DeleteReport;

/// The names that keep images alive: every deployment's bound images and host image name.
pub fn roots(sysroot: &Sysroot) -> Result<BTreeSet<String>> {
    let mut roots = BTreeSet::new();
    for d in deployments::list(sysroot)? {
        for b in bound_images::read(&d.root)? {
            // A name podman could not parse names no stored image.
            roots.extend(bound_images::store_name(&b.image).ok());
        }
        if let Some(name) = d.image_name() {
            roots.insert(crate::reference::normalize(&name).unwrap_or(name));
        }
    }
    Ok(roots)
}

/// Removes every image none of whose names is a root (untagged images too), and their unused layers.
/// An image a container uses (podman run on bootc's store) stays, as `podman rmi` keeps it: the
/// report names it and its containers.
pub fn collect(store: &Store, roots: &BTreeSet<String>, dry_run: bool) -> Result<DeleteReport> {
    let mut garbage = Vec::new();
    let mut kept = Vec::new();
    for img in store.images()? {
        if img.names.iter().any(|n| roots.contains(n)) {
            continue;
        }
        let containers = store.containers_of_image(&img.id)?;
        if containers.is_empty() {
            garbage.push(img.id);
        } else {
            kept.push((img.id, containers));
        }
    }
    let mut report = if dry_run {
        store.garbage_plan(&garbage)?
    } else {
        store.collect_garbage(&garbage)?
    };
    report.kept_for_containers = kept;
    Ok(report)
}
