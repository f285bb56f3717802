//! OCI image layout helpers: reproducible history, blob pruning, derived layers, DiffIDs.

use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use ocidir::OciDir;
use ocidir::cap_std::{ambient_authority, fs::Dir};
use ocidir::oci_spec::image::{
    self as oci_image, Descriptor, HistoryBuilder, ImageConfiguration, ImageManifest, MediaType,
};

use crate::commit::path_str;

/// Directory of the blobs in an OCI layout.
const BLOBDIR: &str = "blobs/sha256";

/// Opens an existing OCI image layout.
pub(crate) fn open(path: &Path) -> Result<OciDir> {
    let dir = Dir::open_ambient_dir(path, ambient_authority())
        .with_context(|| format!("Opening OCI directory {}", path.display()))?;
    OciDir::open(&dir).with_context(|| format!("Opening OCI directory {}", path.display()))
}

/// The index entry tagged `tag`.
pub(crate) fn tagged_descriptor(ocidir: &OciDir, tag: &str) -> Result<Descriptor> {
    let index = ocidir
        .read_index()
        .context("Reading index.json")?
        .ok_or_else(|| anyhow!("no index.json"))?;
    index
        .manifests()
        .iter()
        .find(|d| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(oci_image::ANNOTATION_REF_NAME))
                .is_some_and(|t| t == tag)
        })
        .cloned()
        .ok_or_else(|| anyhow!("no image tagged {tag:?} in index.json"))
}

/// Reads the manifest and config of the image tagged `tag`.
pub(crate) fn read_image(
    ocidir: &OciDir,
    tag: &str,
) -> Result<(Descriptor, ImageManifest, ImageConfiguration)> {
    let desc = tagged_descriptor(ocidir, tag)?;
    let manifest: ImageManifest = ocidir
        .read_json_blob(&desc)
        .with_context(|| format!("Reading manifest {}", desc.digest()))?;
    let config: ImageConfiguration = ocidir
        .read_json_blob(manifest.config())
        .with_context(|| format!("Reading config {}", manifest.config().digest()))?;
    Ok((desc, manifest, config))
}

/// Makes an encapsulated image reproducible: ostree-ext (through ocidir's `push_layer`) stamps
/// every history entry with the current time, so the config (and manifest) digest would change
/// from one run to the next although every layer is byte-identical. Sets each entry's `created`
/// to the image's own `created` (the commit timestamp) and re-tags the rewritten manifest.
pub(crate) fn normalize_history(ocidir: &OciDir, tag: &str) -> Result<Descriptor> {
    let (desc, mut manifest, mut config) = read_image(ocidir, tag)?;
    let created = config.created().clone();
    let mut changed = false;
    for h in config.history_mut() {
        if *h.created() != created {
            h.set_created(created.clone());
            changed = true;
        }
    }
    if !changed {
        return Ok(desc);
    }
    let config_desc = ocidir.write_config(config).context("Writing config")?;
    manifest.set_config(config_desc);
    let platform = desc.platform().clone().unwrap_or_default();
    ocidir
        .insert_manifest(manifest, Some(tag), platform)
        .context("Writing manifest")
}

/// Removes blobs that no manifest of the index references (left behind by
/// [`normalize_history`] and by re-tagging). Returns how many were removed.
pub(crate) fn prune_unreferenced(ocidir: &OciDir) -> Result<usize> {
    let index = ocidir
        .read_index()
        .context("Reading index.json")?
        .ok_or_else(|| anyhow!("no index.json"))?;
    let mut keep = HashSet::new();
    for desc in index.manifests() {
        keep.insert(desc.digest().digest().to_string());
        let manifest: ImageManifest = ocidir
            .read_json_blob(desc)
            .with_context(|| format!("Reading manifest {}", desc.digest()))?;
        keep.insert(manifest.config().digest().digest().to_string());
        for l in manifest.layers() {
            keep.insert(l.digest().digest().to_string());
        }
    }
    let mut removed = 0;
    for entry in ocidir.dir.read_dir(BLOBDIR).context("Listing blobs")? {
        let entry = entry.context("Listing blobs")?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !keep.contains(name) {
            ocidir
                .dir
                .remove_file(Path::new(BLOBDIR).join(name))
                .with_context(|| format!("Removing blob {name}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Prints an image of the layout: manifest and config digests, labels that matter to ostree,
/// layers (digest, size, DiffID, components) and the config's DiffIDs.
pub(crate) fn print_image(ocidir: &OciDir, desc: &Descriptor) -> Result<()> {
    let manifest: ImageManifest = ocidir
        .read_json_blob(desc)
        .with_context(|| format!("Reading manifest {}", desc.digest()))?;
    let config: ImageConfiguration = ocidir
        .read_json_blob(manifest.config())
        .with_context(|| format!("Reading config {}", manifest.config().digest()))?;
    println!("manifest digest: {}", desc.digest());
    println!("config digest: {}", manifest.config().digest());
    println!("created: {}", config.created().as_deref().unwrap_or("-"));
    if let Some(labels) = config.config().as_ref().and_then(|c| c.labels().as_ref()) {
        let mut labels: Vec<_> = labels.iter().collect();
        labels.sort();
        for (k, v) in labels {
            println!("label {k}={v}");
        }
    }
    let diff_ids = config.rootfs().diff_ids();
    println!("layers: {}", manifest.layers().len());
    for (i, l) in manifest.layers().iter().enumerate() {
        let components = l
            .annotations()
            .as_ref()
            .and_then(|a| a.get("ostree.components"))
            .map(|c| format!(" components=[{c}]"))
            .unwrap_or_default();
        let created_by = config
            .history()
            .get(i)
            .and_then(|h| h.created_by().as_deref())
            .unwrap_or("");
        println!(
            "  layer {i}: {} size={} diff_id={} created_by={created_by:?}{components}",
            l.digest(),
            l.size(),
            diff_ids.get(i).map(String::as_str).unwrap_or("-"),
        );
    }
    println!("diff_ids ({}):", diff_ids.len());
    for d in diff_ids {
        println!("  {d}");
    }
    Ok(())
}

/// The DiffID of a layer blob: `sha256:` of its uncompressed content.
pub(crate) fn layer_diff_id(ocidir: &OciDir, layer: &Descriptor) -> Result<String> {
    let blob = ocidir
        .read_blob(layer)
        .with_context(|| format!("Opening layer {}", layer.digest()))?;
    let blob = BufReader::new(blob);
    let reader: Box<dyn Read> = match layer.media_type() {
        MediaType::ImageLayerGzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        MediaType::ImageLayer => Box::new(blob),
        MediaType::Other(t) if t == "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Box::new(flate2::bufread::MultiGzDecoder::new(blob))
        }
        other => bail!(
            "layer {} has unsupported media type {other}",
            layer.digest()
        ),
    };
    sha256_of(reader).with_context(|| format!("Decompressing layer {}", layer.digest()))
}

/// `sha256:<hex>` of everything `r` yields.
fn sha256_of(mut r: impl Read) -> Result<String> {
    let mut hasher = openssl::sha::Sha256::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let digest = hasher.finish();
    let mut s = String::from("sha256:");
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    Ok(s)
}

/// Opens `path` as a tar stream, decompressing it if it is gzip.
fn open_tar(path: &Path) -> Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path).with_context(|| format!("Opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let n = f
        .read(&mut magic)
        .with_context(|| format!("Reading {}", path.display()))?;
    let f = BufReader::new(std::io::Read::chain(
        std::io::Cursor::new(magic[..n].to_vec()),
        f,
    ));
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}

/// `add-derived`: appends `layer_tar` as a gzip layer on top of `oci:tag`, as a container build
/// `FROM` the base image would: the config gets one more DiffID and history entry (dated like the
/// image, to stay reproducible), the manifest one more layer; the result is tagged `new_tag`.
pub(crate) fn add_derived(oci: &Path, tag: &str, layer_tar: &Path, new_tag: &str) -> Result<()> {
    let ocidir = open(oci)?;
    let (desc, mut manifest, mut config) = read_image(&ocidir, tag)?;

    // List the entries first: this validates the tar and documents the layer.
    let mut archive = tar::Archive::new(open_tar(layer_tar)?);
    let mut entries = Vec::new();
    for e in archive
        .entries()
        .with_context(|| format!("Reading tar {}", layer_tar.display()))?
    {
        let e = e.with_context(|| format!("Reading tar {}", layer_tar.display()))?;
        let path = e
            .path()
            .with_context(|| format!("Reading tar {}", layer_tar.display()))?
            .display()
            .to_string();
        entries.push(path);
    }
    if entries.is_empty() {
        bail!("{} has no entries", layer_tar.display());
    }

    let mut w = ocidir
        .create_gzip_layer(None)
        .context("Creating layer blob")?;
    std::io::copy(&mut open_tar(layer_tar)?, &mut w)
        .with_context(|| format!("Compressing {}", layer_tar.display()))?;
    let layer = w.complete().context("Writing layer blob")?;
    let diff_id = layer.uncompressed_sha256_as_digest().to_string();

    let mut rootfs = config.rootfs().clone();
    rootfs.diff_ids_mut().push(diff_id.clone());
    config.set_rootfs(rootfs);
    let name = layer_tar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut history =
        HistoryBuilder::default().created_by(format!("ostree-fixture add-derived {name}"));
    if let Some(created) = config.created().clone() {
        history = history.created(created);
    }
    config
        .history_mut()
        .push(history.build().context("Building the history entry")?);
    let layer_desc = layer
        .descriptor()
        .build()
        .context("Building the layer descriptor")?;
    manifest.layers_mut().push(layer_desc);

    let config_desc = ocidir.write_config(config).context("Writing config")?;
    manifest.set_config(config_desc);
    let platform = desc.platform().clone().unwrap_or_default();
    let new_desc = ocidir
        .insert_manifest(manifest, Some(new_tag), platform)
        .context("Writing manifest")?;
    let pruned = prune_unreferenced(&ocidir)?;
    if pruned > 0 {
        println!("pruned {pruned} unreferenced blob(s)");
    }
    println!("derived layer entries: {}", entries.join(" "));
    println!("derived layer diff_id: {diff_id}");
    println!("image: oci:{}:{new_tag} (from {tag})", path_str(oci)?);
    print_image(&ocidir, &new_desc)
}
