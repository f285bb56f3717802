//! OSTree deployments of a sysroot: their roots and the image each was deployed from.

use std::path::{Path, PathBuf};

use super::sysroot::Sysroot;
use crate::error::{Error, Result};

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The stateroot (OS name).
    pub stateroot: String,
    /// Its directory name, `<checksum>.<serial>`.
    pub name: String,
    /// Its root filesystem.
    pub root: PathBuf,
    /// The container image reference in its origin (`container-image-reference`), if any.
    pub image_reference: Option<String>,
}

impl Deployment {
    /// The image name without its ostree-container transport prefix (`ostree-unverified-registry:`…).
    pub(crate) fn image_name(&self) -> Option<String> {
        self.image_reference.as_deref().map(strip_transport)
    }
}

/// The image an origin's reference names, without its transport: `ostree-unverified-registry:`,
/// `ostree-remote-image:REMOTE:`, `docker://`, ostree-ext's `registry:`, `containers-storage:` and
/// the like stripped (a layout or archive keeps its transport).
pub fn strip_transport(r: &str) -> String {
    use crate::image_ref::ImageRef;
    let r = r.strip_prefix("registry:").unwrap_or(r);
    let parsed = match ImageRef::parse(r) {
        Ok(ImageRef::Ostree { image, .. }) => *image,
        Ok(other) => other,
        Err(_) => return r.to_string(),
    };
    match parsed {
        ImageRef::Docker(name) | ImageRef::ContainersStorage { name, .. } => name,
        other => other.to_string(),
    }
}

fn origin_image(origin: &Path) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(origin) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", origin, e)),
    };
    Ok(keyfile_value(&text, "origin", "container-image-reference"))
}

/// A value of a GLib key file (an `.origin`): `key=value` in `[section]`, spaces around `=`
/// allowed (ostree writes none, bootc's composefs backend writes `key = value`).
pub(crate) fn keyfile_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = name.trim() == section;
        } else if in_section
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_string());
        }
    }
    None
}

/// Lists the deployments on disk (`ostree/deploy/<stateroot>/deploy/<checksum>.<serial>`).
pub fn list(sysroot: &Sysroot) -> Result<Vec<Deployment>> {
    let deploy = sysroot.path().join("ostree/deploy");
    let mut out = Vec::new();
    let Ok(stateroots) = std::fs::read_dir(&deploy) else {
        return Ok(out);
    };
    for sr in stateroots.flatten() {
        let stateroot = sr.file_name().to_string_lossy().into_owned();
        let dir = sr.path().join("deploy");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let root = dir.join(&name);
            let image_reference = origin_image(&dir.join(format!("{name}.origin")))?;
            out.push(Deployment {
                stateroot: stateroot.clone(),
                name,
                root,
                image_reference,
            });
        }
    }
    Ok(out)
}

/// The root whose bound images are "logical": the sysroot itself when it carries
/// `usr/lib/bootc/bound-images.d` (a booted `/`), else the first deployment.
pub fn running_root(sysroot_arg: &Path, sysroot: &Sysroot) -> Result<Option<PathBuf>> {
    if sysroot_arg
        .join(super::bound_images::BOUND_IMAGE_DIR)
        .exists()
        || sysroot_arg == Path::new("/")
    {
        return Ok(Some(sysroot_arg.to_path_buf()));
    }
    Ok(list(sysroot)?.into_iter().next().map(|d| d.root))
}
