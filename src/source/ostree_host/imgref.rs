//! Image references as ostree-ext stores them: `docker://quay.io/x:y`, and the ref names it escapes them
//! into (`ostree/container/image/docker_3A__2F__2F_quay…`).

use crate::error::{Error, Result};
use crate::image_ref::ImageRef;

/// ostree-ext's ref prefix for images.
pub(crate) const IMAGE_PREFIX: &str = "ostree/container/image";
/// ostree-ext's ref prefix for layers.
pub(crate) const LAYER_PREFIX: &str = "ostree/container/blob";

/// Turns an origin's `container-image-reference` (`ostree-unverified-registry:quay.io/x:y`,
/// `ostree-remote-image:REMOTE:docker://…`, `ostree-image-signed:docker://…`) or a plain image reference
/// (`docker://…`, `registry:…`, `oci:…`, or a bare `quay.io/x:y`) into the reference string ostree-ext
/// keys the stored image by (`docker://quay.io/x:y`).
pub fn image_reference(s: &str) -> Result<String> {
    if let Some(name) = s.strip_prefix("registry:") {
        return registry(s, name);
    }
    match ImageRef::parse(s) {
        Ok(ImageRef::Ostree { image, .. }) => return Ok(image.to_string()),
        Ok(r) => return Ok(r.to_string()),
        Err(e) if ImageRef::names_transport(s) => return Err(e),
        Err(_) => {}
    }
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err(bad(s));
    }
    // `word:rest` where `word` is no registry host (no `.`, `/`, or `:port`) names a transport.
    if let Some((t, r)) = s.split_once(':')
        && !t.contains('/')
        && !t.contains('.')
        && t != "localhost"
        && !r.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(Error::InvalidInput(format!(
            "unknown transport {t:?} in {s:?}: supported are oci:DIR[:TAG], oci-archive:FILE[:TAG] and host images (docker://…, ostree-unverified-registry:…)"
        )));
    }
    registry(s, s)
}

/// `name` from its registry, as ostree-ext writes the reference.
fn registry(s: &str, name: &str) -> Result<String> {
    if name.is_empty() {
        return Err(bad(s));
    }
    Ok(ImageRef::parse_pull(name)?.to_string())
}

fn bad(s: &str) -> Error {
    Error::InvalidInput(format!(
        "invalid image reference {s:?}: use e.g. docker://quay.io/org/image:tag"
    ))
}

/// ostree-ext's ref escaping: alphanumerics and `-` as they are, `/` after an alphanumeric when more
/// follows, `_` as `__`, anything else as `_XX_` (hex code point).
pub(crate) fn escape_for_ref(s: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut prev_alnum = false;
    for (i, &c) in chars.iter().enumerate() {
        let alnum = c.is_ascii_alphanumeric();
        match c {
            c if alnum => out.push(c),
            '/' if prev_alnum && i + 1 < chars.len() => out.push('/'),
            '-' => out.push('-'),
            '_' => out.push_str("__"),
            o => out.push_str(&format!("_{:02X}_", o as u32)),
        }
        prev_alnum = alnum;
    }
    out
}

/// The ref of a stored image.
pub fn image_ref(imgref: &str) -> String {
    format!("{IMAGE_PREFIX}/{}", escape_for_ref(imgref))
}

/// The ref of a stored layer blob.
pub(crate) fn layer_ref(digest: &str) -> String {
    format!("{LAYER_PREFIX}/{}", escape_for_ref(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        // The example from ostree-ext's documentation.
        assert_eq!(
            escape_for_ref("registry:quay.io/coreos/fedora:latest"),
            "registry_3A_quay_2E_io/coreos/fedora_3A_latest"
        );
    }

    #[test]
    fn references() {
        let cases = [
            (
                "ostree-unverified-registry:quay.io/x:y",
                "docker://quay.io/x:y",
            ),
            (
                "ostree-unverified-image:docker://quay.io/x:y",
                "docker://quay.io/x:y",
            ),
            (
                "ostree-remote-image:fedora:registry:quay.io/x",
                "docker://quay.io/x",
            ),
            ("ostree-unverified-image:oci:/srv/img", "oci:/srv/img"),
            ("quay.io/x:y", "docker://quay.io/x:y"),
        ];
        for (i, want) in cases {
            assert_eq!(image_reference(i).unwrap(), want, "{i}");
        }
    }
}
