//! The few OCI/Docker JSON shapes we read: index, manifest, config.

use serde::Deserialize;

/// OCI image index media type.
pub(crate) const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker manifest list media type.
pub(crate) const MEDIA_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation holding a layout's tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor.
#[derive(Debug, Clone, Deserialize)]
pub struct Descriptor {
    /// Media type.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Platform (in indexes).
    #[serde(default)]
    pub platform: Option<Platform>,
}

/// A platform.
#[derive(Debug, Clone, Deserialize)]
pub struct Platform {
    /// CPU architecture.
    #[serde(default)]
    pub architecture: String,
    /// Operating system.
    #[serde(default)]
    pub os: String,
}

/// An image index (index.json or a nested index).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Index {
    /// The manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Media type, if given.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// The config descriptor.
    pub config: Descriptor,
    /// The layers, base first.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
}

/// The parts of an image config we need.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Creation time.
    #[serde(default)]
    pub created: Option<String>,
    /// The root filesystem's DiffIDs.
    pub rootfs: RootFs,
}

/// `rootfs` of a config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// DiffIDs, base first.
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// Layer media types we can apply.
pub(crate) fn is_layer_media_type(m: &str) -> bool {
    matches!(
        m,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | ""
    )
}

/// The architecture name OCI uses for this machine.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// A layer's descriptor in a manifest we make: media type, digest, size, and annotations (a
/// zstd:chunked layer's TOC position).
pub(crate) type LayerDescriptor<'a> = (
    &'a str,
    storage_format::Digest,
    u64,
    Option<&'a std::collections::BTreeMap<String, String>>,
);

/// The bytes of an OCI image manifest naming a config (its digest and length) and `layers`
/// (media type, digest, size), with `annotations` when it has any: one writer for every manifest
/// we make (a build, an export), so their field order is one.
pub(crate) fn manifest_bytes(
    config_digest: &storage_format::Digest,
    config_len: usize,
    layers: &[LayerDescriptor<'_>],
    annotations: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_len,
        },
        "layers": layers.iter().map(|(media_type, d, size, a)| {
            let mut desc = serde_json::json!({
                "mediaType": media_type,
                "digest": d.to_string(),
                "size": size,
            });
            if let Some(a) = a {
                desc["annotations"] = serde_json::json!(a);
            }
            desc
        }).collect::<Vec<_>>(),
    });
    if let Some(a) = annotations.filter(|a| a.as_object().is_some_and(|o| !o.is_empty())) {
        manifest["annotations"] = a;
    }
    // A `Value` always serializes.
    serde_json::to_vec(&manifest).unwrap_or_default()
}
