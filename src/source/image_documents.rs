//! From an image's documents to what the store imports: the manifest and config checked as podman
//! needs them, the layers paired with their DiffIDs. Every source that reads blobs uses it.

use storage_format::Digest;

use super::oci_types::{Config, Manifest, is_layer_media_type};
use crate::error::{Error, Result};
use crate::store::image_input::{ImageInput, LayerInput};

/// Parses JSON, naming the document and where it is on failure.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    loc: &str,
) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidInput(format!("{what} in {loc} is not valid: {e}")))
}

/// Parses a sha256 digest, naming what carried it on failure.
pub(crate) fn parse_digest(s: &str, what: &str) -> Result<Digest> {
    Digest::parse(s).map_err(|_| {
        Error::InvalidInput(format!(
            "{what} has an invalid or unsupported digest {s:?} (only sha256 is supported)"
        ))
    })
}

/// Checks and parses a manifest (`digest` is the one it is known by).
pub(crate) fn parse_manifest(bytes: &[u8], digest: &Digest, loc: &str) -> Result<Manifest> {
    super::manifest_rules::check_manifest(bytes, digest)?;
    parse_json(bytes, &format!("manifest {digest}"), loc)
}

/// The image to import from its manifest and config (whose digest the caller verified).
pub(crate) fn assemble(
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    manifest: &Manifest,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    loc: &str,
) -> Result<ImageInput> {
    super::manifest_rules::check_config(&config_bytes, &config_digest)?;
    let config: Config = parse_json(&config_bytes, &format!("config {config_digest}"), loc)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidInput(format!(
            "config {config_digest} lists {} DiffIDs but manifest {manifest_digest} has {} layers: the image is corrupt: rebuild it",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    let mut layers = Vec::with_capacity(manifest.layers.len());
    for (l, d) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        if !is_layer_media_type(&l.media_type) {
            return Err(Error::Unsupported(format!(
                "layer {} has media type {:?}",
                l.digest, l.media_type
            )));
        }
        layers.push(LayerInput {
            blob_digest: parse_digest(&l.digest, "layer")?,
            blob_size: l.size,
            diff_id: parse_digest(d, "config DiffID")?,
            toc: crate::layer::zstd_chunked_toc::TocRef::from_annotations(&l.annotations),
        });
    }
    Ok(ImageInput {
        manifest: manifest_bytes,
        manifest_digest,
        config: config_bytes,
        config_digest,
        created: config.created,
        layers,
        names: Vec::new(),
    })
}
