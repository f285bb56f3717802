//! Host images: the container images stored in the sysroot's OSTree repository, found natively by their
//! refs (`ostree/container/image/<escaped reference>`).

use std::path::Path;

use super::sysroot::Sysroot;
use crate::error::{Error, Result};

/// The ref prefix ostree-ext stores images under.
pub(crate) const IMAGE_REF_PREFIX: &str = "ostree/container/image";

/// Reverses ostree-ext's ref escaping: `__` is `_`, `_XX_` is the character with hex code XX.
pub(crate) fn unescape_ref(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        match c {
            c if c.is_ascii_alphanumeric() || c == '-' || c == '/' => out.push(c),
            '_' => match it.next()? {
                '_' => out.push('_'),
                first => {
                    let mut hex = String::from(first);
                    for c in it.by_ref() {
                        if c == '_' {
                            break;
                        }
                        hex.push(c);
                    }
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
            },
            _ => return None,
        }
    }
    Some(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading", dir, e)),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&e.path(), &rel, out)?;
        } else if let Some(r) = unescape_ref(&rel) {
            out.push(r);
        }
    }
    Ok(())
}

/// The image references of the host images in the sysroot's repository, sorted.
pub fn list(sysroot: &Sysroot) -> Result<Vec<String>> {
    let mut out = Vec::new();
    walk(
        &sysroot
            .repo_path()
            .join("refs/heads")
            .join(IMAGE_REF_PREFIX),
        "",
        &mut out,
    )?;
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    /// What ostree-ext's escaping (ours, in the OSTree source) writes, this reads back.
    #[cfg(feature = "ostree")]
    #[test]
    fn unescapes_what_ostree_ext_escapes() {
        let escaped = crate::source::ostree_host::imgref::escape_for_ref("docker://q.io/a_b:1");
        assert_eq!(
            super::unescape_ref(&escaped).as_deref(),
            Some("docker://q.io/a_b:1")
        );
    }

    #[test]
    fn unescape() {
        assert_eq!(
            super::unescape_ref("registry_3A_quay_2E_io/coreos/fedora_3A_latest").as_deref(),
            Some("registry:quay.io/coreos/fedora:latest")
        );
        assert_eq!(super::unescape_ref("a__b").as_deref(), Some("a_b"));
        assert_eq!(super::unescape_ref("a.b"), None);
    }
}
