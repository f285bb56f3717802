//! `export`: the oracle. ostree-ext's own `container::store::export` of a stored image to an OCI
//! layout, which is what upstream `bootc image copy-to-storage` runs before `skopeo copy`.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, anyhow, ensure};
use ostree_ext::container::store::{self, ExportToOCIOpts};
use ostree_ext::container::{ImageReference, OstreeImageReference, Transport};

use crate::commit::path_str;
use crate::oci;
use crate::sysroot::open_sysroot_repo;

/// Parses `ostree-unverified-registry:NAME`-style references, or plain image references
/// (`docker://NAME`, `registry:NAME`, `oci:DIR`, …).
fn parse_imgref(s: &str) -> Result<ImageReference> {
    match OstreeImageReference::try_from(s) {
        Ok(r) => Ok(r.imgref),
        Err(e) => ImageReference::try_from(s).with_context(|| {
            format!("{s:?} is neither an ostree image reference ({e}) nor an image reference")
        }),
    }
}

/// Runs the export and prints what it wrote: manifest digest, the config's `rootfs.diff_ids`
/// verbatim (ostree-ext 0.15 appends the new DiffIDs to the old ones), the DiffIDs computed
/// from the layer blobs, and how they compare with the image as it was imported.
pub(crate) async fn export(
    sysroot: &Path,
    imgref: &str,
    oci_dir: &Path,
    tag: &str,
    compress: bool,
) -> Result<()> {
    let repo = open_sysroot_repo(sysroot)?;
    let src = parse_imgref(imgref)?;
    let stored = store::query_image(&repo, &src)
        .with_context(|| format!("Querying {src}"))?
        .ok_or_else(|| anyhow!("{src} is not stored in {}/ostree/repo", sysroot.display()))?;

    std::fs::create_dir_all(oci_dir).with_context(|| format!("Creating {}", oci_dir.display()))?;
    let oci_abs =
        std::path::absolute(oci_dir).with_context(|| format!("Resolving {}", oci_dir.display()))?;
    let oci_str = path_str(&oci_abs)?;
    ensure!(
        !oci_str.contains(':'),
        "OCI directory {oci_str:?} must not contain ':'"
    );
    let dest = ImageReference {
        transport: Transport::OciDir,
        name: format!("{oci_str}:{tag}"),
    };
    let mut opts = ExportToOCIOpts::default();
    opts.skip_compression = !compress;
    let digest = store::export(&repo, &src, &dest, Some(opts))
        .await
        .with_context(|| format!("Exporting {src} to {dest}"))?;

    let ocidir = oci::open(&oci_abs)?;
    let (desc, manifest, config) = oci::read_image(&ocidir, tag)?;
    ensure!(
        *desc.digest() == digest,
        "index.json tags {} as {tag}, but export returned {digest}",
        desc.digest()
    );
    println!("exported: {src} -> {dest}");
    println!(
        "compression: {}",
        if compress {
            "gzip default level"
        } else {
            "skip_compression (as copy-to-storage: ostree chunks gzip -1, derived layers gzip -0)"
        }
    );
    println!("manifest digest: {digest}");
    println!("config digest: {}", manifest.config().digest());
    println!(
        "source manifest digest (as imported): {}",
        stored.manifest_digest
    );

    let written = config.rootfs().diff_ids();
    let unique: BTreeSet<&String> = written.iter().collect();
    println!(
        "config rootfs.diff_ids as written ({} entries, {} distinct):",
        written.len(),
        unique.len()
    );
    for d in written {
        println!("  {d}");
    }
    println!("config history entries: {}", config.history().len());
    for h in config.history() {
        println!(
            "  created={} created_by={:?}",
            h.created().as_deref().unwrap_or("-"),
            h.created_by().as_deref().unwrap_or("")
        );
    }

    println!(
        "layers ({}), DiffIDs computed from the blobs:",
        manifest.layers().len()
    );
    let mut computed = Vec::new();
    for (i, l) in manifest.layers().iter().enumerate() {
        let diff_id = oci::layer_diff_id(&ocidir, l)?;
        let components = l
            .annotations()
            .as_ref()
            .and_then(|a| a.get("ostree.components"))
            .map(|c| format!(" components=[{c}]"))
            .unwrap_or_default();
        println!(
            "  layer {i}: {} size={} media_type={} diff_id={diff_id}{components}",
            l.digest(),
            l.size(),
            l.media_type()
        );
        computed.push(diff_id);
    }
    println!("layer diff_ids (computed):");
    for d in &computed {
        println!("  {d}");
    }
    let tail_matches = written.len() >= computed.len()
        && written[written.len() - computed.len()..] == computed[..];
    println!(
        "computed diff_ids == last {} config diff_ids: {}",
        computed.len(),
        if tail_matches { "yes" } else { "NO" }
    );
    let original = stored.configuration.rootfs().diff_ids();
    println!(
        "computed diff_ids == diff_ids of the imported image: {}",
        if *original == computed { "yes" } else { "NO" }
    );
    if *original != computed {
        for (i, (a, b)) in original.iter().zip(computed.iter()).enumerate() {
            if a != b {
                println!("  layer {i}: imported {a}, exported {b}");
            }
        }
        if original.len() != computed.len() {
            println!(
                "  layer count: imported {}, exported {}",
                original.len(),
                computed.len()
            );
        }
    }
    Ok(())
}

/// `export --dest`: ostree-ext's `container::store::export` of a stored image to any image
/// reference, with no options, as upstream `bootc image copy-to-storage` calls it. For a
/// destination other than `oci:` it exports into a temporary OCI layout under `/var/tmp`
/// (uncompressed copy) and runs `skopeo copy` from there to `dest`.
pub(crate) async fn export_to(sysroot: &Path, imgref: &str, dest: &str) -> Result<()> {
    let repo = open_sysroot_repo(sysroot)?;
    let src = parse_imgref(imgref)?;
    ensure!(
        store::query_image(&repo, &src)
            .with_context(|| format!("Querying {src}"))?
            .is_some(),
        "{src} is not stored in {}/ostree/repo",
        sysroot.display()
    );
    let dest = ImageReference::try_from(dest)
        .with_context(|| format!("{dest:?} is not an image reference"))?;
    let digest = store::export(&repo, &src, &dest, None)
        .await
        .with_context(|| format!("Exporting {src} to {dest}"))?;
    println!("exported: {src} -> {dest}");
    println!("manifest digest: {digest}");
    Ok(())
}
