//! What podman can read back: the manifest and config rules of c/image, applied before anything is
//! written. A manifest that c/image would take for another type ("rejecting ambiguous manifest"),
//! or that is no image at all, would make `podman images` fail for the whole store.

use serde_json::{Map, Value};
use storage_format::Digest;

use super::oci_types::is_layer_media_type;
use crate::error::{Error, Result};

/// OCI image manifest.
pub(crate) const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker schema 2 manifest.
pub(crate) const MEDIA_DOCKER_MANIFEST: &str =
    "application/vnd.docker.distribution.manifest.v2+json";
/// OCI image config.
pub(crate) const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub(crate) const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Fields that belong to other manifest kinds (index/list, schema 1). Go's JSON decoder matches
/// keys case-insensitively, so c/image sees `Manifests` as `manifests` too.
const FOREIGN_FIELDS: [&str; 3] = ["manifests", "fslayers", "history"];

fn invalid(digest: &Digest, why: &str) -> Error {
    Error::InvalidInput(format!(
        "manifest {digest} {why}: podman could not read such an image; rebuild or re-push it with podman, buildah or skopeo"
    ))
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    field(obj, key).and_then(Value::as_str)
}

/// Checks a manifest as c/image reads it back from a store: an image manifest (OCI or Docker
/// schema 2) by its own `mediaType` or by c/image's guess, with no field of another manifest kind,
/// a config of the matching image config type, and layers of layer media types. Returns the
/// manifest's media type.
pub fn check_manifest(bytes: &[u8], digest: &Digest) -> Result<&'static str> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| invalid(digest, &format!("is not valid JSON ({e})")))?;
    let Value::Object(obj) = value else {
        return Err(invalid(digest, "is not a JSON object"));
    };
    let schema = field(&obj, "schemaVersion").and_then(Value::as_i64);
    if schema != Some(2) {
        return Err(invalid(
            digest,
            &format!("has schemaVersion {schema:?}, not 2"),
        ));
    }
    let kind = match str_field(&obj, "mediaType") {
        Some(MEDIA_OCI_MANIFEST) | None => MEDIA_OCI_MANIFEST,
        Some(MEDIA_DOCKER_MANIFEST) => MEDIA_DOCKER_MANIFEST,
        Some(other) => {
            return Err(invalid(
                digest,
                &format!("declares media type {other:?}, which is not an image manifest"),
            ));
        }
    };
    let foreign: Vec<&str> = FOREIGN_FIELDS
        .iter()
        .copied()
        .filter(|f| field(&obj, f).is_some_and(|v| !v.is_null()))
        .collect();
    if !foreign.is_empty() {
        return Err(invalid(
            digest,
            &format!(
                "is ambiguous: it has the field(s) {} of another manifest kind",
                foreign.join(", ")
            ),
        ));
    }
    let Some(Value::Object(config)) = field(&obj, "config") else {
        return Err(invalid(digest, "has no config"));
    };
    let config_type = str_field(config, "mediaType").unwrap_or_default();
    let want_config = if kind == MEDIA_OCI_MANIFEST {
        MEDIA_OCI_CONFIG
    } else {
        MEDIA_DOCKER_CONFIG
    };
    if config_type != want_config {
        return Err(invalid(
            digest,
            &format!(
                "has a config of media type {config_type:?}: an image needs {want_config:?} (artifacts cannot be stored as images)"
            ),
        ));
    }
    match field(&obj, "layers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(layers)) => {
            for l in layers {
                let t = l
                    .as_object()
                    .and_then(|o| str_field(o, "mediaType"))
                    .unwrap_or_default();
                let docker = t.starts_with("application/vnd.docker.");
                if !is_layer_media_type(t) || (kind == MEDIA_DOCKER_MANIFEST && !docker) {
                    return Err(Error::Unsupported(format!(
                        "manifest {digest} has a layer of media type {t:?}, which a {kind} cannot carry"
                    )));
                }
            }
        }
        Some(_) => return Err(invalid(digest, "has layers that are not a list")),
    }
    Ok(kind)
}

/// Checks a config as c/image reads it: a JSON object whose `rootfs` is of type `layers`.
pub fn check_config(bytes: &[u8], digest: &Digest) -> Result<()> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "config {digest} {why}: podman could not use such an image; rebuild it"
        ))
    };
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| bad(&format!("is not valid JSON ({e})")))?;
    let Value::Object(obj) = value else {
        return Err(bad("is not a JSON object"));
    };
    let Some(Value::Object(rootfs)) = field(&obj, "rootfs") else {
        return Err(bad("has no rootfs"));
    };
    match str_field(rootfs, "type") {
        Some("layers") => Ok(()),
        other => Err(bad(&format!(
            "has a rootfs of type {other:?}, not \"layers\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Digest {
        Digest::of_bytes(b"x")
    }

    fn manifest(extra: &str, media: &str, config: &str) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,{media}"config":{{"mediaType":"{config}","digest":"sha256:00","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:00","size":1}}]{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn accepts_image_manifests() {
        let m = manifest(
            "",
            r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#,
            MEDIA_OCI_CONFIG,
        );
        assert_eq!(check_manifest(&m, &d()).ok(), Some(MEDIA_OCI_MANIFEST));
        let m = manifest("", "", MEDIA_OCI_CONFIG);
        assert_eq!(check_manifest(&m, &d()).ok(), Some(MEDIA_OCI_MANIFEST));
    }

    #[test]
    fn refuses_what_podman_cannot_read() {
        let cases = [
            manifest(
                "",
                r#""mediaType":"application/vnd.oci.image.index.v1+json","#,
                MEDIA_OCI_CONFIG,
            ),
            manifest(r#","manifests":[]"#, "", MEDIA_OCI_CONFIG),
            manifest(r#","Manifests":[]"#, "", MEDIA_OCI_CONFIG),
            manifest(r#","history":[]"#, "", MEDIA_OCI_CONFIG),
            manifest("", "", "application/vnd.example.artifact"),
            manifest(
                "",
                r#""mediaType":"application/vnd.docker.distribution.manifest.v2+json","#,
                MEDIA_OCI_CONFIG,
            ),
            br#"{"schemaVersion":1,"config":{}}"#.to_vec(),
            b"[]".to_vec(),
        ];
        for m in cases {
            assert!(
                check_manifest(&m, &d()).is_err(),
                "{}",
                String::from_utf8_lossy(&m)
            );
        }
    }

    #[test]
    fn configs() {
        assert!(check_config(br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#, &d()).is_ok());
        assert!(check_config(br#"{"rootfs":{"type":"other"}}"#, &d()).is_err());
        assert!(check_config(br#"[]"#, &d()).is_err());
    }
}
