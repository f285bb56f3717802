//! Copying from the default store (podman's) into bootc's, shared by pull-from-default-storage,
//! set-unified and bound images: the stores reached through one mount so files can be hardlinked,
//! in a private mount namespace when a mount must change.

use anyhow::Context;

use super::Cli;
use bootc_image::bootc::storage;
use bootc_image::copy::{CopyOptions, Sharing};
use bootc_image::store::{Store, lookup};

/// The counts of a copy, as the summary names them.
struct Report {
    layers_copied: usize,
    layers_reused: usize,
}

/// The names the copy gets: the name the user typed (as podman's `image push IMG …IMG` keeps it), or
/// all of the source's names when the image was named by ID.
fn names_for(found: &storage_format::ImageRecord, typed: &str) -> Vec<String> {
    match lookup::matched_name(found, typed) {
        Some(n) => vec![n],
        None => found.names.clone(),
    }
}

/// Copies `image` from the default store into bootc's store; returns a one-line summary and the
/// same as JSON.
pub fn pull(cli: &Cli, image: &str, verify: bool) -> anyhow::Result<(String, serde_json::Value)> {
    let started = std::time::Instant::now();
    let src_cfg = source_config(cli)?;
    let src = Store::open_read_only(src_cfg.clone())
        .with_context(|| format!("opening the default store {}", src_cfg.graphroot.display()))?;
    let images = src.images()?;
    let found = lookup::find_image(&images, image)
        .with_context(|| format!("in the default store {}", src_cfg.graphroot.display()))?;
    let sysroot = cli.sysroot();
    let (dst, _) = storage::ensure(&sysroot)
        .with_context(|| format!("opening bootc's store {}", sysroot.storage_path().display()))?;
    let names = names_for(found, image);
    let id = found.id.clone();
    let opts = CopyOptions::default()
        .with_names(names.clone())
        .with_verify(verify);
    let copied = bootc_image::copy::open_stored(src, &id, &opts)
        .and_then(|o| o.copy_into(&dst, &()))
        .with_context(|| format!("copying {image} into bootc's store"))?;
    let shown = names
        .first()
        .cloned()
        .unwrap_or_else(|| copied.image_id.clone());
    let method = match &copied.sharing {
        Sharing::Store(stats) => stats.method(),
        _ => "copy",
    };
    let how = match method {
        "hardlink" => "hardlinked",
        "reflink" => "reflinked",
        _ => "copied",
    };
    let report = Report {
        layers_copied: copied.layers_written,
        layers_reused: copied.layers_reused,
    };
    let json = serde_json::json!({
        "name": shown,
        "image_id": copied.image_id,
        "digest": copied.manifest_digest.to_string(),
        "layers_copied": report.layers_copied,
        "layers_reused": report.layers_reused,
        "method": if report.layers_copied == 0 { "none" } else { how },
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    });
    if report.layers_copied == 0 {
        return Ok((
            format!(
                "Copied {shown} (all {} already present)",
                super::output::count(report.layers_reused as u64, "layer")
            ),
            json,
        ));
    }
    Ok((
        format!(
            "Copied {shown} ({} {how}, {} reused)",
            super::output::count(report.layers_copied as u64, "layer"),
            report.layers_reused
        ),
        json,
    ))
}

/// The default store's configuration, its root reached through the mount of bootc's store when the
/// two are different mounts of one filesystem (a booted system's `/var` and `/sysroot`), so layers
/// can be hardlinked (see [`bootc_image::bootc::mountns::path_through_mount_of`]).
fn source_config(cli: &Cli) -> anyhow::Result<bootc_image::store::StoreConfig> {
    let mut src = cli.store_config()?;
    if let Some(through) = bootc_image::bootc::mountns::path_through_mount_of(
        &cli.sysroot().storage_path(),
        &src.graphroot,
    ) {
        src.graphroot = through;
    }
    Ok(src)
}

/// Re-runs the command in a private mount namespace when the stores' `overlay/` directories are bind
/// mounts (podman leaves them so), or bootc's store is on a read-only mount (`/sysroot` on a booted
/// system), so files can be hardlinked and bootc's store written; returns whether it did.
pub fn ran_in_private_namespace(cli: &Cli) -> anyhow::Result<bool> {
    let src = source_config(cli)?;
    let dst = cli.sysroot().storage_path();
    let dirs = vec![src.graphroot.join(src.driver.name()), dst.join("overlay")];
    let remount: Vec<_> = bootc_image::bootc::mountns::read_only_mount_of(&dst)
        .into_iter()
        .collect();
    super::ran_in_private_namespace(&dirs, &remount)
}
