//! `oci:DIR[:TAG]`: an OCI image layout directory. Also the layout logic shared with archives.

use std::io::Read;
use std::path::{Path, PathBuf};

use storage_format::Digest;

use super::OpenedSource;
use super::image_documents::{assemble, parse_digest, parse_json, parse_manifest};
use super::oci_types::{Descriptor, Index, MEDIA_DOCKER_LIST, MEDIA_INDEX, REF_NAME, host_arch};
use super::read_small;
use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::store::image_input::ImageInput;

/// Largest JSON document (index, manifest, config) we read.
const JSON_LIMIT: u64 = 16 << 20;

/// Access to the files of a layout, wherever it is stored.
pub trait Layout: BlobSource {
    /// Where the layout is, for messages.
    fn location(&self) -> String;
    /// Reads `index.json`.
    fn read_index(&self) -> Result<Vec<u8>>;
    /// Whether the blob exists, and its size.
    fn blob_size(&self, digest: &Digest) -> Option<u64>;
}

/// A layout directory.
#[derive(Debug, Clone)]
pub(crate) struct LayoutDir {
    root: PathBuf,
}

impl LayoutDir {
    fn blob_rel(digest: &Digest) -> PathBuf {
        Path::new("blobs/sha256").join(digest.hex())
    }

    /// Opens a file of the layout: a regular file, reached without leaving the layout.
    fn open_file(&self, rel: &Path) -> std::io::Result<std::fs::File> {
        crate::fsutil::open_regular(Some(&self.root), rel)
    }

    /// The error for a layout file that cannot be opened.
    fn open_error(&self, rel: &Path, e: std::io::Error, missing: Error) -> Error {
        let p = self.root.join(rel);
        match e.kind() {
            std::io::ErrorKind::NotFound => missing,
            std::io::ErrorKind::InvalidInput => Error::InvalidInput(format!(
                "{} in the OCI layout {} is not a regular file: replace it with the real file",
                rel.display(),
                self.root.display()
            )),
            _ if e.raw_os_error() == Some(libc_exdev()) => Error::InvalidInput(format!(
                "{} leads out of the OCI layout {} (a symlink or '..'): copy the file into the layout",
                p.display(),
                self.root.display()
            )),
            _ => Error::io("opening", &p, e),
        }
    }
}

/// `EXDEV`: what `openat2(RESOLVE_BENEATH)` returns for a path that leaves the directory.
fn libc_exdev() -> i32 {
    rustix::io::Errno::XDEV.raw_os_error()
}

impl BlobSource for LayoutDir {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let rel = Self::blob_rel(digest);
        let f = self.open_file(&rel).map_err(|e| {
            self.open_error(
                &rel,
                e,
                Error::not_found(digest.to_string(), format!(
                    "blob {digest} is missing from the OCI layout {}: the layout is incomplete: re-create it",
                    self.root.display()
                )),
            )
        })?;
        Ok(Box::new(f))
    }
}

impl Layout for LayoutDir {
    fn location(&self) -> String {
        format!("OCI layout {}", self.root.display())
    }
    fn read_index(&self) -> Result<Vec<u8>> {
        let rel = Path::new("index.json");
        let f = self.open_file(rel).map_err(|e| {
            self.open_error(
                rel,
                e,
                Error::not_found(
                    "index.json",
                    format!(
                        "{} is not an OCI image layout (no index.json)",
                        self.root.display()
                    ),
                ),
            )
        })?;
        read_small(f, JSON_LIMIT, "index.json")
    }
    fn blob_size(&self, digest: &Digest) -> Option<u64> {
        self.open_file(&Self::blob_rel(digest))
            .and_then(|f| f.metadata())
            .ok()
            .map(|m| m.len())
    }
}

/// Opens `oci:DIR[:TAG]`.
pub fn open(dir: &Path, tag: Option<&str>) -> Result<OpenedSource> {
    let layout = LayoutDir {
        root: dir.to_path_buf(),
    };
    let image = resolve(&layout, tag)?;
    Ok(OpenedSource {
        image,
        blobs: Box::new(layout),
        retry: super::retry::RetryPolicy::none(),
    })
}

/// Reads a JSON blob named by a descriptor and checks its digest.
fn read_verified(layout: &dyn Layout, desc: &Descriptor, what: &str) -> Result<(Vec<u8>, Digest)> {
    let digest = parse_digest(&desc.digest, what)?;
    let bytes = read_small(layout.open_blob(&digest)?, JSON_LIMIT, what)?;
    let actual = Digest::of_bytes(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: what.to_string(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok((bytes, digest))
}

/// Picks the manifest descriptor for `tag` from an index.
fn pick(index: &Index, tag: Option<&str>, loc: &str) -> Result<Descriptor> {
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            .cloned()
            .ok_or_else(|| {
                let tags: Vec<&str> = index
                    .manifests
                    .iter()
                    .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
                    .collect();
                Error::not_found(
                    format!("tag {t}"),
                    format!(
                        "no image tagged {t:?} in {loc}; tags there: {}",
                        if tags.is_empty() {
                            "none".to_string()
                        } else {
                            tags.join(", ")
                        }
                    ),
                )
            }),
        None => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::not_found("image", format!("{loc} holds no image"))),
            many => Err(Error::InvalidInput(format!(
                "{loc} holds {} images: name one with :TAG",
                many.len()
            ))),
        },
    }
}

/// Resolves the image in a layout: manifest (through nested indexes), config, layers; all checked.
pub fn resolve(layout: &dyn Layout, tag: Option<&str>) -> Result<ImageInput> {
    let loc = layout.location();
    let index: Index = parse_json(&layout.read_index()?, "index.json", &loc)?;
    let mut desc = pick(&index, tag, &loc)?;
    // Follow nested indexes to this platform's manifest.
    for _ in 0..4 {
        if desc.media_type != MEDIA_INDEX && desc.media_type != MEDIA_DOCKER_LIST {
            break;
        }
        let (bytes, _) = read_verified(layout, &desc, "image index")?;
        let nested: Index = parse_json(&bytes, "image index", &loc)?;
        desc = nested
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
            })
            .cloned()
            .ok_or_else(|| {
                Error::not_found(
                    format!("linux/{} image", host_arch()),
                    format!("no linux/{} image in the index of {loc}", host_arch()),
                )
            })?;
    }
    let (manifest_bytes, manifest_digest) = read_verified(layout, &desc, "manifest")?;
    let manifest = parse_manifest(&manifest_bytes, &manifest_digest, &loc)?;
    let (config_bytes, config_digest) = read_verified(layout, &manifest.config, "config")?;
    let image = assemble(
        manifest_bytes,
        manifest_digest,
        &manifest,
        config_bytes,
        config_digest,
        &loc,
    )?;
    for l in &image.layers {
        let blob_digest = &l.blob_digest;
        match layout.blob_size(blob_digest) {
            None => {
                // Say why when it is there but cannot be used (not a regular file, out of the layout).
                layout.open_blob(blob_digest)?;
                return Err(Error::not_found(
                    blob_digest.to_string(),
                    format!(
                        "layer blob {blob_digest} is missing from {loc}: the layout is incomplete: re-create it"
                    ),
                ));
            }
            Some(size) if size != l.blob_size => {
                return Err(Error::SizeMismatch {
                    what: format!("layer blob {blob_digest} in {loc}"),
                    expected: l.blob_size,
                    found: size,
                });
            }
            Some(_) => {}
        }
    }
    Ok(image)
}
