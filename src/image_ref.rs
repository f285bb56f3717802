//! `ImageRef`: the one transport grammar. Every image reference the library reads —
//! containers-transports(5) (`docker://`, `oci:`, `oci-archive:`, `dir:`, `docker-archive:`,
//! `containers-storage:`), `composefs:REPO:IMAGE`, and the ostree-container references bootc keeps
//! in its origins (`ostree-unverified-registry:…`) — is parsed here, once, into a typed value whose
//! `Display` gives the text back.
//!
//! ```text
//! docker://NAME[:TAG|@DIGEST]          a registry image (NAME as podman normalizes it)
//! oci:DIR[:TAG]  oci-archive:FILE[:TAG] an OCI layout or its tar (the first ':' ends the path)
//! dir:DIR                              skopeo's directory layout
//! docker-archive:FILE[:NAME:TAG|:@N]   `docker save` / `podman save` output
//! containers-storage:[DRIVER@ROOT+RUNROOT]NAME   an image of a store (store options refused)
//! composefs:REPO:IMAGE                 an image of a composefs repository (a tag or sha256:)
//! ostree-unverified-registry:NAME, ostree-unverified-image:REF, ostree-image-signed:REF,
//! ostree-remote-registry:REMOTE:NAME, ostree-remote-image:REMOTE:REF
//!                                      a host image as bootc names it
//! ```

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::reference::{StorageReference, StoreSpec};
use storage_format::Digest;

/// An image in a repository: a tag (`quay.io/org/os:42`, as `streams/refs/oci/` has it) or a
/// manifest digest (`sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    /// A tag.
    Tag(String),
    /// A manifest digest.
    Manifest(Digest),
}

impl ImageSelector {
    /// `sha256:<64 hex>` is a manifest digest, anything else a tag.
    pub fn parse(s: &str) -> ImageSelector {
        match Digest::parse(s) {
            Ok(d) if s.starts_with("sha256:") => ImageSelector::Manifest(d),
            _ => ImageSelector::Tag(s.to_string()),
        }
    }
}

impl std::fmt::Display for ImageSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSelector::Tag(t) => f.write_str(t),
            ImageSelector::Manifest(d) => write!(f, "{d}"),
        }
    }
}

/// How an ostree-container reference asks for the image to be verified (bootc's origin syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OstreeVerify {
    /// `ostree-unverified-registry:` (the image is `docker://` of the rest) and
    /// `ostree-unverified-image:`.
    Unverified,
    /// `ostree-image-signed:`.
    Signed,
    /// `ostree-remote-registry:REMOTE:` and `ostree-remote-image:REMOTE:`: checked with an OSTree
    /// remote's keys.
    Remote(String),
}

/// One image reference, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageRef {
    /// `docker://NAME`: NAME as typed (a valid reference); [`ImageRef::docker_name`] normalizes it.
    Docker(String),
    /// `oci:DIR[:TAG]`.
    OciDir {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name`, if any.
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`.
    OciArchive {
        /// The archive.
        path: PathBuf,
        /// The tag, if any.
        tag: Option<String>,
    },
    /// `dir:DIR`.
    Dir(PathBuf),
    /// `docker-archive:FILE[:REF]`.
    DockerArchive {
        /// The archive.
        path: PathBuf,
        /// The image in it (`NAME:TAG` or `@INDEX`), if any.
        image: Option<String>,
    },
    /// `containers-storage:[STORE]NAME`.
    ContainersStorage {
        /// The store, when the reference names one.
        store: Option<StoreSpec>,
        /// The image: a name (as typed) or an ID.
        name: String,
    },
    /// `composefs:REPO:IMAGE`.
    Composefs {
        /// The repository's directory.
        repo: PathBuf,
        /// The image: a tag or a manifest digest.
        image: ImageSelector,
    },
    /// An ostree-container reference: how to verify, and the image it wraps.
    Ostree {
        /// The verification it asks for.
        verify: OstreeVerify,
        /// The image (`docker://…` for the `-registry` forms).
        image: Box<ImageRef>,
        /// Written in the `-registry:` form (`ostree-unverified-registry:NAME`), not the
        /// `-image:` one (`ostree-unverified-image:docker://NAME`); the same image either way.
        registry_form: bool,
    },
}

/// The transports, as their prefixes (without the ostree-container ones).
pub(crate) const TRANSPORTS: [&str; 7] = [
    "docker://",
    "oci:",
    "oci-archive:",
    "dir:",
    "docker-archive:",
    "containers-storage:",
    "composefs:",
];

/// The ostree-container forms' prefixes.
const OSTREE_TRANSPORTS: [&str; 5] = [
    "ostree-unverified-registry:",
    "ostree-unverified-image:",
    "ostree-image-signed:",
    "ostree-remote-registry:",
    "ostree-remote-image:",
];

fn invalid(s: &str, why: &str) -> Error {
    Error::InvalidInput(format!("invalid image reference {s:?}: {why}"))
}

/// `PATH[:TAG]` split at the first ':' (c/image's rule for oci: and oci-archive:).
fn path_and_tag(s: &str, rest: &str) -> Result<(PathBuf, Option<String>)> {
    let (path, tag) = match rest.split_once(':') {
        Some((p, t)) => (p, (!t.is_empty()).then(|| t.to_string())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid(s, "it names no path"));
    }
    Ok((PathBuf::from(path), tag))
}

impl ImageRef {
    /// Parses `TRANSPORT:REFERENCE`. A reference without a transport we know is an error naming
    /// the transports we read.
    pub fn parse(s: &str) -> Result<ImageRef> {
        if let Some(r) = Self::parse_ostree(s)? {
            return Ok(r);
        }
        if let Some(name) = s.strip_prefix("docker://") {
            crate::reference::parse(name).map_err(|e| invalid(s, &e.to_string()))?;
            return Ok(ImageRef::Docker(name.to_string()));
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = path_and_tag(s, rest)?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = path_and_tag(s, rest)?;
            return Ok(ImageRef::OciDir { path, tag });
        }
        if let Some(rest) = s.strip_prefix("dir:") {
            if rest.is_empty() {
                return Err(invalid(s, "it names no path"));
            }
            return Ok(ImageRef::Dir(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (path, image) = match rest.split_once(':') {
                Some((p, i)) => (p, (!i.is_empty()).then(|| i.to_string())),
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(invalid(s, "it names no path"));
            }
            return Ok(ImageRef::DockerArchive {
                path: PathBuf::from(path),
                image,
            });
        }
        if let Some(rest) = s.strip_prefix("containers-storage:") {
            // Checked as skopeo reads it; the name kept as typed (ostree-ext keys a host image by
            // the reference as written, and a store finds short names itself).
            let typed = match rest.split_once(']') {
                Some((_, name)) if rest.starts_with('[') => name,
                _ => rest,
            };
            // An image ID (`ID` or `@ID`), as c/image's storage transport takes it: the store
            // part checked alone.
            let id = typed.strip_prefix('@').unwrap_or(typed);
            let is_id = id.len() == 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let store = if is_id {
                let spec = &s[..s.len() - typed.len()];
                parse_storage_reference(&format!("{spec}localhost/id"))?.store
            } else {
                parse_storage_reference(s)?.store
            };
            return Ok(ImageRef::ContainersStorage {
                store,
                name: if is_id { id } else { typed }.to_string(),
            });
        }
        if let Some(rest) = s.strip_prefix("composefs:") {
            return match rest.split_once(':') {
                Some((repo, image)) if !repo.is_empty() && !image.is_empty() => {
                    Ok(ImageRef::Composefs {
                        repo: PathBuf::from(repo),
                        image: ImageSelector::parse(image),
                    })
                }
                _ => Err(Error::InvalidInput(format!(
                    "{s:?} names no image: use composefs:REPO:TAG or composefs:REPO:sha256:DIGEST"
                ))),
            };
        }
        Err(Error::InvalidInput(format!(
            "{s:?} names no transport we read: use docker://NAME, oci:DIR[:TAG], oci-archive:FILE[:TAG], dir:DIR, docker-archive:FILE, containers-storage:NAME or composefs:REPO:IMAGE"
        )))
    }

    /// Parses an image argument as `podman pull` reads it: a reference with its transport, or a
    /// bare `NAME[:TAG|@DIGEST]`, which is `docker://NAME`.
    pub(crate) fn parse_pull(s: &str) -> Result<ImageRef> {
        match ImageRef::parse(s) {
            Ok(r) => Ok(r),
            Err(e) if Self::names_transport(s) => Err(e),
            Err(_) => ImageRef::parse(&format!("docker://{s}")),
        }
    }

    /// The ostree-container forms, if `s` is one.
    fn parse_ostree(s: &str) -> Result<Option<ImageRef>> {
        let bad = || invalid(s, "use e.g. ostree-unverified-registry:quay.io/org/os:tag");
        let remote = |r: &str| -> Result<(String, String)> {
            match r.split_once(':') {
                Some((remote, rest)) if !remote.is_empty() && !rest.is_empty() => {
                    Ok((remote.to_string(), rest.to_string()))
                }
                _ => Err(bad()),
            }
        };
        let registry = |name: &str| -> Result<Box<ImageRef>> {
            if name.is_empty() {
                return Err(bad());
            }
            Ok(Box::new(ImageRef::parse(&format!("docker://{name}"))?))
        };
        // ostree-ext also reads `registry:NAME` for `docker://NAME` there.
        let parsed = |r: &str| -> Result<Box<ImageRef>> {
            match r.strip_prefix("registry:") {
                Some(name) => registry(name),
                None => Ok(Box::new(ImageRef::parse(r)?)),
            }
        };
        let (verify, image, registry_form) =
            if let Some(r) = s.strip_prefix("ostree-unverified-registry:") {
                (OstreeVerify::Unverified, registry(r)?, true)
            } else if let Some(r) = s.strip_prefix("ostree-unverified-image:") {
                (OstreeVerify::Unverified, parsed(r)?, false)
            } else if let Some(r) = s.strip_prefix("ostree-image-signed:") {
                (OstreeVerify::Signed, parsed(r)?, false)
            } else if let Some(r) = s.strip_prefix("ostree-remote-registry:") {
                let (remote, name) = remote(r)?;
                (OstreeVerify::Remote(remote), registry(&name)?, true)
            } else if let Some(r) = s.strip_prefix("ostree-remote-image:") {
                let (remote, image) = remote(r)?;
                (OstreeVerify::Remote(remote), parsed(&image)?, false)
            } else {
                return Ok(None);
            };
        Ok(Some(ImageRef::Ostree {
            verify,
            image,
            registry_form,
        }))
    }

    /// Whether `s` starts with the prefix of a transport this grammar reads (so an error parsing
    /// it is that transport's, not a sign of a bare name).
    pub(crate) fn names_transport(s: &str) -> bool {
        TRANSPORTS
            .iter()
            .chain(&OSTREE_TRANSPORTS)
            .any(|t| s.starts_with(t))
    }

    /// The transport's name, as c/image and the policy name it (`docker`, `oci`, …; `ostree`
    /// for the ostree-container forms).
    pub fn transport(&self) -> &'static str {
        match self {
            ImageRef::Docker(_) => "docker",
            ImageRef::OciDir { .. } => "oci",
            ImageRef::OciArchive { .. } => "oci-archive",
            ImageRef::Dir(_) => "dir",
            ImageRef::DockerArchive { .. } => "docker-archive",
            ImageRef::ContainersStorage { .. } => "containers-storage",
            ImageRef::Composefs { .. } => "composefs",
            ImageRef::Ostree { .. } => "ostree",
        }
    }

    /// Whether skopeo's image proxy reads this image (registries, `dir:`, `docker-archive:`).
    pub(crate) fn is_proxied(&self) -> bool {
        matches!(
            self,
            ImageRef::Docker(_) | ImageRef::Dir(_) | ImageRef::DockerArchive { .. }
        )
    }

    /// For `docker://NAME`: NAME normalized as podman stores it (`busybox` →
    /// `docker.io/library/busybox:latest`).
    pub fn docker_name(&self) -> Option<String> {
        match self {
            ImageRef::Docker(n) => crate::reference::normalize(n).ok(),
            _ => None,
        }
    }
}

/// Parses a target as skopeo's `containers-storage:` transport does; any other transport is
/// refused, and the name must be one podman parses.
pub fn parse_storage_reference(s: &str) -> Result<StorageReference> {
    let Some(rest) = s.strip_prefix("containers-storage:") else {
        return Ok(StorageReference {
            store: None,
            name: crate::reference::normalize(s)?,
        });
    };
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "invalid store reference {s:?}: {why}; use containers-storage:[overlay@/var/lib/containers/storage+/run/containers/storage]NAME"
        ))
    };
    let Some(spec_rest) = rest.strip_prefix('[') else {
        return Ok(StorageReference {
            store: None,
            name: crate::reference::normalize(rest)?,
        });
    };
    let (spec, name) = spec_rest
        .split_once(']')
        .ok_or_else(|| bad("the store has no closing ']'"))?;
    let (driver, roots) = match spec.split_once('@') {
        Some((d, r)) => (Some(d.to_string()), r),
        None => (None, spec),
    };
    if roots.contains(':') {
        return Err(bad(
            "store options are not supported (set them in storage.conf)",
        ));
    }
    let (graphroot, runroot) = match roots.split_once('+') {
        Some((g, r)) => (g, Some(r)),
        None => (roots, None),
    };
    let absolute = |p: &str| p.starts_with('/');
    if !absolute(graphroot) || runroot.is_some_and(|r| !absolute(r)) {
        return Err(bad("the store's paths must be absolute"));
    }
    Ok(StorageReference {
        store: Some(StoreSpec {
            driver: driver.filter(|d| !d.is_empty()),
            graphroot: graphroot.into(),
            runroot: runroot.map(Into::into),
        }),
        name: crate::reference::normalize(name)?,
    })
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tagged =
            |f: &mut std::fmt::Formatter<'_>, t: &str, p: &PathBuf, tag: &Option<String>| {
                write!(f, "{t}:{}", p.display())?;
                match tag {
                    Some(tag) => write!(f, ":{tag}"),
                    None => Ok(()),
                }
            };
        match self {
            ImageRef::Docker(n) => write!(f, "docker://{n}"),
            ImageRef::OciDir { path, tag } => tagged(f, "oci", path, tag),
            ImageRef::OciArchive { path, tag } => tagged(f, "oci-archive", path, tag),
            ImageRef::Dir(p) => write!(f, "dir:{}", p.display()),
            ImageRef::DockerArchive { path, image } => tagged(f, "docker-archive", path, image),
            ImageRef::ContainersStorage { store, name } => {
                f.write_str("containers-storage:")?;
                if let Some(s) = store {
                    f.write_str("[")?;
                    if let Some(d) = &s.driver {
                        write!(f, "{d}@")?;
                    }
                    write!(f, "{}", s.graphroot.display())?;
                    if let Some(r) = &s.runroot {
                        write!(f, "+{}", r.display())?;
                    }
                    f.write_str("]")?;
                }
                f.write_str(name)
            }
            ImageRef::Composefs { repo, image } => {
                write!(f, "composefs:{}:{image}", repo.display())
            }
            ImageRef::Ostree {
                verify,
                image,
                registry_form,
            } => {
                let registry = match image.as_ref() {
                    ImageRef::Docker(n) if *registry_form => Some(n),
                    _ => None,
                };
                match (verify, registry) {
                    (OstreeVerify::Unverified, Some(n)) => {
                        write!(f, "ostree-unverified-registry:{n}")
                    }
                    (OstreeVerify::Unverified, None) => {
                        write!(f, "ostree-unverified-image:{image}")
                    }
                    (OstreeVerify::Signed, _) => write!(f, "ostree-image-signed:{image}"),
                    (OstreeVerify::Remote(r), Some(n)) => {
                        write!(f, "ostree-remote-registry:{r}:{n}")
                    }
                    (OstreeVerify::Remote(r), None) => write!(f, "ostree-remote-image:{r}:{image}"),
                }
            }
        }
    }
}

impl std::str::FromStr for ImageRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_references() {
        use super::parse_storage_reference as p;
        assert_eq!(
            p("containers-storage:localhost/x").unwrap().name,
            "localhost/x:latest"
        );
        let r = p("containers-storage:[vfs@/s/root+/s/run]localhost/x:1").unwrap();
        assert_eq!(r.name, "localhost/x:1");
        let st = r.store.unwrap();
        assert_eq!(st.driver.as_deref(), Some("vfs"));
        assert_eq!(st.graphroot, std::path::PathBuf::from("/s/root"));
        assert_eq!(st.runroot, Some(std::path::PathBuf::from("/s/run")));
        assert!(
            p("containers-storage:[/s/root]x")
                .unwrap()
                .store
                .unwrap()
                .runroot
                .is_none()
        );
        for bad in [
            "docker://x",
            "containers-storage:[rel+/r]x",
            "containers-storage:[/r:opt]x",
            "containers-storage:[/r",
            "containers-storage:docker://x",
            "containers-storage:",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips() {
        for s in [
            "docker://busybox",
            "docker://quay.io/org/app:1",
            "docker://localhost:5000/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "oci:/srv/img",
            "oci:/srv/img:v1",
            "oci-archive:./a.tar:latest",
            "dir:/var/tmp/d",
            "docker-archive:/x.tar",
            "docker-archive:/x.tar:localhost/a:1",
            "containers-storage:localhost/x:latest",
            "containers-storage:[overlay@/s/root+/s/run]localhost/x:1",
            "containers-storage:[/s/root]localhost/x:1",
            "composefs:/sysroot/composefs:quay.io/org/os:42",
            "ostree-unverified-registry:quay.io/org/os:42",
            "ostree-remote-registry:fedora:quay.io/fedora/os:42",
            "ostree-image-signed:docker://quay.io/org/os:42",
            "ostree-unverified-image:oci:/srv/img",
            "ostree-remote-image:r:docker://quay.io/a/b:1",
        ] {
            let r = ImageRef::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.to_string(), s, "{r:?}");
        }
    }

    #[test]
    fn refused() {
        for s in [
            "",
            "busybox",
            "docker://UPPER/x",
            "docker://",
            "oci:",
            "oci-archive::tag",
            "dir:",
            "containers-storage:[/r:opt]x",
            "composefs:/repo",
            "ostree-unverified-registry:",
            "ostree-remote-registry:fedora",
            "sif:/x",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} should be refused");
        }
    }

    #[test]
    fn kinds() {
        let r = ImageRef::parse("docker://busybox").unwrap();
        assert!(r.is_proxied());
        assert_eq!(r.transport(), "docker");
        assert_eq!(
            r.docker_name().as_deref(),
            Some("docker.io/library/busybox:latest")
        );
        assert!(!ImageRef::parse("oci:/x").unwrap().is_proxied());
        assert!(
            ImageRef::parse("docker-archive:/x.tar")
                .unwrap()
                .is_proxied()
        );
        let ImageRef::Composefs { image, .. } =
            ImageRef::parse(&format!("composefs:/r:sha256:{}", "a".repeat(64))).unwrap()
        else {
            panic!("composefs")
        };
        assert!(matches!(image, ImageSelector::Manifest(_)));
    }
}
