//! Deployments of a composefs sysroot, as bootc's composefs backend lays them out: the repository in
//! `composefs/`, one directory per deployment in `state/deploy/<id>/` (the id is the hex fs-verity
//! digest of the deployment's EROFS image) holding `<id>.origin`, a key file whose
//! `[origin] container-image-reference` names the image (`ostree-unverified-image:docker://…`) and
//! whose `[image] manifest_digest` names its manifest in the repository. The booted deployment is
//! the one the kernel command line names (`composefs=<id>`, `composefs=?<id>` without fs-verity).

use std::path::{Path, PathBuf};

use super::deployments::{keyfile_value, strip_transport};
use super::sysroot::Sysroot;
use crate::error::{Error, Result};
use crate::source::composefs::ImageSelector;

/// The repository relative to the sysroot.
pub(crate) const REPO_SUBPATH: &str = "composefs";
/// The deployments' state relative to the sysroot.
pub(crate) const DEPLOY_SUBPATH: &str = "state/deploy";

/// One deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposefsDeployment {
    /// Its id: the hex fs-verity digest of its EROFS image.
    pub id: String,
    /// The image reference of its origin, if any (`ostree-unverified-image:docker://…`).
    pub image_reference: Option<String>,
    /// The manifest digest its origin records, if any (`sha256:…`).
    pub manifest_digest: Option<String>,
}

impl ComposefsDeployment {
    /// The image name without its transport (`quay.io/org/os:tag`).
    pub(crate) fn image_name(&self) -> Option<String> {
        self.image_reference.as_deref().map(strip_transport)
    }

    /// How messages name it: its image, else its id.
    pub fn shown(&self) -> String {
        self.image_name()
            .unwrap_or_else(|| format!("deployment {}", self.id))
    }

    /// The manifest digest its origin records; `remedy` says what to do when there is none.
    pub fn manifest(&self, remedy: &str) -> Result<storage_format::Digest> {
        let digest = self.manifest_digest.as_deref().ok_or_else(|| {
            Error::not_found(
                format!("{}.origin", self.id),
                format!(
                    "the origin of deployment {} records no [image] manifest_digest (written by an older bootc): {remedy}",
                    self.id
                ),
            )
        })?;
        match ImageSelector::parse(digest) {
            ImageSelector::Manifest(d) => Ok(d),
            ImageSelector::Tag(_) => Err(Error::InvalidInput(format!(
                "the origin of deployment {} records manifest_digest {digest:?}, which is not a sha256 digest",
                self.id
            ))),
        }
    }

    /// The image reference as `list` shows host images (ostree-ext's form, as for OSTree hosts):
    /// the origin's reference without its `ostree-…:` signature prefix, `docker://` for registry
    /// images.
    pub fn listed_reference(&self) -> Option<String> {
        let r = self.image_reference.as_deref()?;
        if let Ok(crate::image_ref::ImageRef::Ostree { image, .. }) =
            crate::image_ref::ImageRef::parse(r)
        {
            return Some(image.to_string());
        }
        Some(r.to_string())
    }
}

/// Whether the sysroot uses bootc's composefs backend: a repository and deployment state.
pub fn is_composefs(sysroot: &Sysroot) -> bool {
    sysroot.path().join(REPO_SUBPATH).is_dir() && sysroot.path().join(DEPLOY_SUBPATH).is_dir()
}

/// The repository of a composefs sysroot.
pub fn repo_path(sysroot: &Sysroot) -> PathBuf {
    sysroot.path().join(REPO_SUBPATH)
}

/// The deployments on disk, sorted by id.
pub fn list(sysroot: &Sysroot) -> Result<Vec<ComposefsDeployment>> {
    let dir = sysroot.path().join(DEPLOY_SUBPATH);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| Error::io("reading", &dir, e))?;
        let id = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let origin = e.path().join(format!("{id}.origin"));
        let text = match std::fs::read_to_string(&origin) {
            Ok(t) => t,
            // Not (yet) a deployment: bootc writes the origin last.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("reading", &origin, e)),
        };
        out.push(ComposefsDeployment {
            id,
            image_reference: keyfile_value(&text, "origin", "container-image-reference"),
            manifest_digest: keyfile_value(&text, "image", "manifest_digest"),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The deployment id a kernel command line boots (`composefs=<id>` or `composefs=?<id>`).
pub(crate) fn booted_id(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|p| p.strip_prefix("composefs="))
        .next_back()
        .map(|v| v.trim_start_matches('?').to_string())
}

/// The deployment to copy when none is named: the booted one (the running kernel's command line,
/// when `running` says the sysroot is the booted system's), else the only one. Several deployments
/// and none booted: the caller must name one; `remedy` says how (e.g. "name one with --source").
pub fn default_deployment(
    sysroot: &Sysroot,
    running: bool,
    remedy: &str,
) -> Result<ComposefsDeployment> {
    let all = list(sysroot)?;
    let booted = running
        .then(|| std::fs::read_to_string("/proc/cmdline").ok())
        .flatten()
        .and_then(|c| booted_id(&c));
    if let Some(id) = booted
        && let Some(d) = all.iter().find(|d| d.id == id)
    {
        return Ok(d.clone());
    }
    match all.as_slice() {
        [] => Err(Error::not_found(
            sysroot.path().join(DEPLOY_SUBPATH).display().to_string(),
            format!(
                "the composefs sysroot {} has no deployment (no {}/<id>/<id>.origin): {remedy}",
                sysroot.path().display(),
                DEPLOY_SUBPATH
            ),
        )),
        [one] => Ok(one.clone()),
        many => Err(Error::InvalidInput(format!(
            "the composefs sysroot {} has {} deployments and none is booted here: {remedy} ({})",
            sysroot.path().display(),
            many.len(),
            many.iter()
                .filter_map(ComposefsDeployment::image_name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The deployment whose image is `name` (transport ignored, as upstream's `copy-to-storage`).
pub fn find_by_image(sysroot: &Sysroot, name: &str) -> Result<Option<ComposefsDeployment>> {
    let want = strip_transport(name);
    Ok(list(sysroot)?
        .into_iter()
        .find(|d| d.image_name().as_deref() == Some(want.as_str())))
}

/// The image `copy-to-storage` takes from a composefs sysroot: `source` as a deployment's image
/// name (transport ignored, as upstream), else as a tag or manifest digest of the repository;
/// without `source`, the default deployment's image. Returns it and the name to report it by.
pub fn host_image(
    sysroot: &Sysroot,
    source: Option<&str>,
    running: bool,
    remedy: &str,
) -> Result<(ImageSelector, String)> {
    let deployment = match source {
        Some(s) => match find_by_image(sysroot, s)? {
            Some(d) => d,
            None => return Ok((ImageSelector::parse(s), s.to_string())),
        },
        None => default_deployment(sysroot, running, remedy)?,
    };
    let digest = deployment.manifest(remedy)?;
    Ok((ImageSelector::Manifest(digest), deployment.shown()))
}

/// Whether `path` is the booted system's sysroot (`/`, or `/sysroot` on a booted host).
pub fn is_running_sysroot(arg: &Path) -> bool {
    arg == Path::new("/") || arg == Path::new("/sysroot")
}

#[cfg(test)]
mod tests {
    #[test]
    fn booted_id_from_cmdline() {
        assert_eq!(
            super::booted_id("root=UUID=x composefs=?abc12 rw").as_deref(),
            Some("abc12")
        );
        assert_eq!(
            super::booted_id("composefs=def quiet").as_deref(),
            Some("def")
        );
        assert_eq!(super::booted_id("root=/dev/vda quiet"), None);
    }
}
