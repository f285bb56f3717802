//! Image sources: each yields a manifest, a config and layer blobs.

pub mod manifest_rules;
pub mod oci_archive;
pub mod oci_layout;
pub mod oci_types;
#[cfg(feature = "ostree")]
pub mod ostree_host;

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::store::import::ImageInput;

/// A parsed `--source` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceRef {
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    OciDir {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick, if any.
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`: a tar of an OCI image layout.
    OciArchive {
        /// The archive.
        path: PathBuf,
        /// The tag to pick, if any.
        tag: Option<String>,
    },
}

impl SourceRef {
    /// Parses `TRANSPORT:REST` as c/image does (the first `:` after the path separates the tag).
    pub fn parse(s: &str) -> Result<SourceRef> {
        let Some((transport, rest)) = s.split_once(':') else {
            return Err(Error::InvalidInput(format!(
                "source {s:?} names no transport: use oci:DIR[:TAG] or oci-archive:FILE[:TAG]"
            )));
        };
        let (path, tag) = match rest.split_once(':') {
            Some((p, t)) => (p, (!t.is_empty()).then(|| t.to_string())),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(Error::InvalidInput(format!("source {s:?} names no path")));
        }
        match transport {
            "oci" => Ok(SourceRef::OciDir {
                path: path.into(),
                tag,
            }),
            "oci-archive" => Ok(SourceRef::OciArchive {
                path: path.into(),
                tag,
            }),
            other => Err(Error::InvalidInput(format!(
                "unknown transport {other:?} in {s:?}: supported are oci:DIR[:TAG] and oci-archive:FILE[:TAG]"
            ))),
        }
    }
}

/// An opened source image: what to import and where its blobs are.
pub struct OpenedSource {
    /// Manifest, config and layer list, checked against their digests.
    pub image: ImageInput,
    /// Where the layer blobs come from.
    pub blobs: Box<dyn BlobSource + Send>,
}

impl std::fmt::Debug for OpenedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSource")
            .field("image", &self.image)
            .finish_non_exhaustive()
    }
}

/// Opens a source, reading and verifying its manifest and config.
pub fn open(source: &SourceRef) -> Result<OpenedSource> {
    match source {
        SourceRef::OciDir { path, tag } => oci_layout::open(path, tag.as_deref()),
        SourceRef::OciArchive { path, tag } => oci_archive::open(path, tag.as_deref()),
    }
}
