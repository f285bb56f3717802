//! Image sources: each yields a manifest, a config and layer blobs.

pub(crate) mod blob_layers;
pub mod composefs;
pub(crate) mod image_documents;
pub mod image_proxy;
pub mod manifest_rules;
pub(crate) mod oci_archive;
pub(crate) mod oci_layout;
pub mod oci_types;
#[cfg(feature = "ostree")]
pub mod ostree_host;
mod partial_pull;
pub mod policy;
mod proxy_errors;
pub mod registry;
mod signatures;
pub use crate::retry;
pub mod rootfs;

use std::io::Read;

use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::layer::BlobSource;
use crate::store::image_input::ImageInput;

/// Where a `--source` leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `oci:` or `oci-archive:`: read here, natively.
    Layout,
    /// A host image stored in the sysroot's OSTree repository (`docker://…` it holds, `ostree-…:`,
    /// or a bare image name).
    Host,
    /// `docker://…` (not a host image), `dir:`, `docker-archive:`: fetched through skopeo's image
    /// proxy.
    Fetched,
    /// `containers-storage:[STORE]NAME`: another store, copied natively.
    Store,
    /// `composefs:REPO:IMAGE`: an image of a composefs repository, read natively.
    Composefs,
}

/// Routes a `--source` by its transport. Transports we cannot read, and paths without a
/// transport, are refused with what to do instead. `docker://` is routed as a host image here; the
/// caller fetches it from its registry when the host does not hold it.
pub fn classify(s: &str) -> Result<SourceKind> {
    match ImageRef::parse(s) {
        Ok(ImageRef::OciDir { .. } | ImageRef::OciArchive { .. }) => return Ok(SourceKind::Layout),
        Ok(ImageRef::Dir(_) | ImageRef::DockerArchive { .. }) => return Ok(SourceKind::Fetched),
        Ok(ImageRef::ContainersStorage { .. }) => return Ok(SourceKind::Store),
        Ok(ImageRef::Composefs { .. }) => return Ok(SourceKind::Composefs),
        Ok(_) => return Ok(SourceKind::Host),
        // A reference of a transport we know but written wrong: its own error.
        Err(e) if ImageRef::names_transport(s) => return Err(e),
        Err(_) => {}
    }
    const HOST: [&str; 6] = [
        "registry:",
        "ostree-unverified-registry:",
        "ostree-unverified-image:",
        "ostree-image-signed:",
        "ostree-remote-registry:",
        "ostree-remote-image:",
    ];
    if HOST.iter().any(|p| s.starts_with(p)) {
        return Ok(SourceKind::Host);
    }
    if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") || s == "." {
        return Err(Error::InvalidInput(format!(
            "--source {s:?} is a path: name its format, oci:{s}[:TAG] for an OCI layout directory or oci-archive:{s}[:TAG] for an archive"
        )));
    }
    if let Some((t, _)) = s.split_once(':') {
        let other = ["docker-daemon", "sif", "tarball", "ostree"];
        if other.contains(&t) {
            return Err(Error::Unsupported(format!(
                "the {t}: transport as a source (supported: oci:, oci-archive:, docker://, dir:, docker-archive:, containers-storage:, composefs: and host images); convert it first: `skopeo copy {s} oci:/var/tmp/img:tag`, then --source oci:/var/tmp/img:tag"
            )));
        }
        if !t.contains(['/', '.'])
            && t != "localhost"
            && !s[t.len() + 1..].starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(Error::InvalidInput(format!(
                "unknown transport {t:?} in {s:?}: supported are oci:DIR[:TAG], oci-archive:FILE[:TAG], docker://NAME, dir:DIR, docker-archive:FILE, containers-storage:NAME, composefs:REPO:IMAGE and host images (ostree-unverified-registry:…)"
            )));
        }
    }
    Ok(SourceKind::Host)
}

/// An opened source image: what to import and where its blobs are.
pub struct OpenedSource {
    /// Manifest, config and layer list, checked against their digests.
    pub image: ImageInput,
    /// Where the layer blobs come from.
    pub blobs: Box<dyn BlobSource + Send>,
    /// How often a layer whose blob fails to arrive (transiently) is written again.
    pub retry: retry::RetryPolicy,
}

impl std::fmt::Debug for OpenedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSource")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// Opens a source, reading and verifying its manifest and config.
pub fn open(source: &ImageRef) -> Result<OpenedSource> {
    open_with(source, &image_proxy::FetchOptions::default())
}

/// Opens a source whose layers are tar blobs (`oci:`, `oci-archive:`, `docker://`, `dir:`,
/// `docker-archive:`); images read through the proxy are fetched as `fetch` says.
pub fn open_with(source: &ImageRef, fetch: &image_proxy::FetchOptions) -> Result<OpenedSource> {
    // The signature policy first, as c/image checks it before anything is read.
    let (verdict, r) = policy::evaluate_source(source, fetch.signature_policy.as_deref())?;
    let policy::Verdict::Signatures(kind) = verdict else {
        return open_unchecked(source, fetch);
    };
    // Signatures: verified by the installed skopeo's proxy (which knows c/image's signature
    // formats), then exactly the manifest it verified is read, by its digest.
    let ImageRef::Docker(name) = source else {
        return Err(policy::signatures_unverifiable(&r, &kind, None));
    };
    let digest = signatures::verified_digest(&source.to_string(), &r, &kind, fetch)?;
    let parsed = crate::reference::parse(name)?;
    let pinned = format!("{}/{}@{digest}", parsed.domain, parsed.path);
    open_unchecked(&ImageRef::Docker(pinned), fetch)
}

/// [`open_with`] without evaluating the signature policy: for callers that did (or were told not
/// to, as skopeo's `--insecure-policy`).
pub(crate) fn open_unchecked(
    source: &ImageRef,
    fetch: &image_proxy::FetchOptions,
) -> Result<OpenedSource> {
    match source {
        ImageRef::OciDir { path, tag } => oci_layout::open(path, tag.as_deref()),
        ImageRef::OciArchive { path, tag } => oci_archive::open(path, tag.as_deref()),
        ImageRef::Docker(name) if fetch.native => registry::open(name, fetch),
        r if r.is_proxied() => image_proxy::open(&r.to_string(), fetch),
        other => Err(Error::Unsupported(format!(
            "{other} as a blob source: open it with its own reader (containers-storage: and composefs: are copied by copy-to-storage)"
        ))),
    }
}

/// Reads a whole blob into memory, for small JSON blobs (manifests, configs, indexes).
pub(crate) fn read_small(mut r: impl Read, limit: u64, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    (&mut r)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::read(what.to_string(), e))?;
    if buf.len() as u64 > limit {
        return Err(Error::InvalidInput(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    Ok(buf)
}

impl OpenedSource {
    /// Imports the image into `store`: its blobs decompressed, verified and written layer by layer
    /// (all or nothing); `progress` gets the import's events.
    pub fn import_into(
        &self,
        store: &crate::store::Store,
        progress: &(dyn Fn(crate::store::image_input::Progress) + Sync),
    ) -> Result<crate::store::image_input::ImportReport> {
        let producer =
            blob_layers::BlobLayers::new(self.blobs.as_ref(), self.retry).partial_into(store);
        store.import_with(&self.image, &producer, progress)
    }
}
