//! Logically bound images: `usr/lib/bootc/bound-images.d` in a root, as upstream bootc reads it.
//!
//! Every entry must be a symlink named `*.image` or `*.container` pointing at a quadlet file (resolved
//! inside the root); the file's `[Image]` or `[Container]` section names the image with `Image=`.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Error, Result};

/// The directory, relative to a root.
pub(crate) const BOUND_IMAGE_DIR: &str = "usr/lib/bootc/bound-images.d";

/// A bound image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundImage {
    /// The image reference from `Image=`.
    pub image: String,
    /// The file that named it.
    pub source: String,
}

fn invalid(file: &str, why: &str) -> Error {
    Error::InvalidInput(format!("bound image {file}: {why}"))
}

/// Reads the bound images of the root filesystem at `root`, sorted by file name.
pub fn read(root: &Path) -> Result<Vec<BoundImage>> {
    let dir = root.join(BOUND_IMAGE_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir, e)),
    };
    let root_fd = crate::fsutil::open_dir(root)
        .map_err(|e| Error::io("opening", root, std::io::Error::from(e)))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("reading", &dir, e))?;
        names.push(e.file_name());
    }
    names.sort();
    let mut out = Vec::new();
    for os_name in names {
        let name = os_name
            .to_str()
            .ok_or_else(|| invalid(&os_name.to_string_lossy(), "invalid non-UTF-8 file name"))?
            .to_string();
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
        if !meta.file_type().is_symlink() {
            return Err(invalid(&name, "Not a symlink"));
        }
        let section = if name.ends_with(".image") {
            "Image"
        } else if name.ends_with(".container") {
            "Container"
        } else {
            return Err(invalid(
                &name,
                "Invalid file extension (expected .image or .container)",
            ));
        };
        // Resolve the link (absolute or relative) inside the root, never outside it.
        let rel = format!("{BOUND_IMAGE_DIR}/{name}");
        let fd = crate::fsutil::openat2_retry(
            root_fd.as_fd(),
            rel.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| invalid(&name, &format!("cannot open its target: {e}")))?;
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(1 << 20)
            .read_to_string(&mut text)
            .map_err(|e| invalid(&name, &format!("cannot read it: {e}")))?;
        let image = parse_unit(&text, section).map_err(|why| invalid(&name, &why))?;
        out.push(BoundImage {
            image,
            source: name,
        });
    }
    Ok(out)
}

/// A pull argument as `podman pull` reads it — `TRANSPORT:REF` or a bare registry `NAME` — and
/// the name it gets in a store: registry images their normalized name, `dir:`, `docker-archive:`,
/// `oci:` and `oci-archive:` `localhost/TAG` (or after the file).
pub fn resolve_pull(image: &str) -> Result<(crate::image_ref::ImageRef, String)> {
    let r = crate::image_ref::ImageRef::parse_pull(image)?;
    if let crate::image_ref::ImageRef::ContainersStorage { .. } = r {
        return Err(crate::Error::InvalidInput(format!(
            "{image}: pulling from a store: into bootc's store use `bootc-image pull-from-default-storage NAME`; between stores `copy-to-storage --source {image} --target containers-storage:[STORE]NAME`"
        )));
    }
    let name = store_name(&r.to_string())?;
    Ok((r, name))
}

/// What a pull argument may mean, in the order to try: itself when it names a transport or a
/// registry; for a short name (`busybox`), its alias or one name per unqualified-search registry,
/// as podman resolves it ([`crate::source::registry::short_names`]).
pub fn pull_candidates(image: &str) -> Result<crate::source::registry::short_names::Resolved> {
    if crate::image_ref::ImageRef::parse(image).is_ok() {
        return Ok(crate::source::registry::short_names::Resolved {
            candidates: vec![image.to_string()],
            rationale: None,
        });
    }
    crate::source::registry::short_names::resolve(image)
}

/// The name a bound image has in bootc's store: its normalized reference, or for an
/// `oci:DIR[:TAG]` / `oci-archive:FILE[:TAG]` reference `localhost/TAG` (the file name without a tag),
/// made a valid name component. A reference podman could not parse is an error.
pub fn store_name(image: &str) -> Result<String> {
    use crate::image_ref::ImageRef;
    let parsed = ImageRef::parse(image);
    if let Ok(ImageRef::Docker(name)) = &parsed {
        return crate::reference::normalize(name);
    }
    let file_named = match parsed {
        Ok(ImageRef::OciDir { path, tag } | ImageRef::OciArchive { path, tag }) => {
            Some((path, tag))
        }
        // dir:PATH, docker-archive:PATH[:NAME]: named after the file.
        Ok(ImageRef::Dir(path) | ImageRef::DockerArchive { path, .. }) => Some((path, None)),
        _ => None,
    };
    if let Some((path, tag)) = file_named {
        let (path, tag) = (&path, &tag);
        let base = tag.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "bound".into())
        });
        let base = base.to_lowercase();
        let keep: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if let Ok(name) = crate::reference::normalize(&format!("localhost/{keep}")) {
            return Ok(name);
        }
        // Only dashes between letters and digits: always a valid component.
        let dashed: String = keep
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dashed = dashed.trim_matches('-');
        let dashed = if dashed.is_empty() { "bound" } else { dashed };
        return crate::reference::normalize(&format!("localhost/{dashed}"));
    }
    crate::reference::normalize(image)
}

/// Extracts `Image=` from section `[section]` of a quadlet unit; refuses `AuthFile=` and specifiers.
pub(crate) fn parse_unit(text: &str, section: &str) -> std::result::Result<String, String> {
    let mut current = String::new();
    let mut image = None;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.trim().to_string();
            continue;
        }
        if current != section {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "Image" => image = Some(unescape_specifiers(v.trim())?),
            "AuthFile" => return Err("AuthFile is not supported".into()),
            _ => {}
        }
    }
    image.ok_or_else(|| format!("missing Image= in [{section}]"))
}

/// `%%` → `%`; any other systemd specifier is refused.
fn unescape_specifiers(v: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => out.push('%'),
                Some(x) => return Err(format!("systemd specifiers are not supported: %{x}")),
                None => return Err("invalid trailing %".into()),
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err("empty Image=".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(
            parse_unit("[Image]\nImage=quay.io/a/b:1\n", "Image").unwrap(),
            "quay.io/a/b:1"
        );
        assert_eq!(
            parse_unit(
                "[Unit]\nImage=x\n[Container]\nExec=sh\nImage = q.io/c%%d\n",
                "Container"
            )
            .unwrap(),
            "q.io/c%d"
        );
        assert!(
            parse_unit("[Image]\nImage=a/%n\n", "Image")
                .unwrap_err()
                .contains("specifiers")
        );
        assert!(
            parse_unit("[Image]\nImage=a\nAuthFile=/x\n", "Image")
                .unwrap_err()
                .contains("AuthFile")
        );
        assert!(
            parse_unit("[Image]\n", "Image")
                .unwrap_err()
                .contains("missing Image=")
        );
    }
}
