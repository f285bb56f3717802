//! The front door: one call copies an image, named by an [`ImageRef`], into a store.
//!
//! [`copy`] owns what every use case needs around the engine: the signature policy, opening the
//! source, naming the image (normalized, a `NAME@DIGEST` checked against the image's digest), the
//! store-to-store shortcut for `containers-storage:` (files shared, nothing re-read), and — for
//! composefs repositories — the fallback that opens the image again with every object checked when
//! a DiffID does not match. Progress and the opened image are told to a [`CopyObserver`]; printing
//! them is the caller's business.
//!
//! ```no_run
//! # fn main() -> bootc_image::Result<()> {
//! use bootc_image::{copy, CopyOptions, ImageRef};
//! use bootc_image::store::{Store, StoreConfig};
//!
//! let store = Store::open(StoreConfig::resolve(None, None, None)?)?;
//! let src = ImageRef::parse("oci:./my-image:1")?;
//! let opts = CopyOptions::named("localhost/app:1")?;
//! let copied = copy(&store, &src, &opts, &())?;
//! println!("{} {}", copied.image_id, copied.manifest_digest);
//! # Ok(())
//! # }
//! ```

use std::sync::atomic::Ordering;

use storage_format::Digest;

use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::source::image_proxy::FetchOptions;
use crate::store::Store;
use crate::store::image_input::{ImageInput, ImportReport, Progress};
use crate::store::tree_copy::CopyStats;

/// What a copy tells as it goes. Both methods do nothing by default; `()` observes nothing.
pub trait CopyObserver: Sync {
    /// The source was opened: its manifest, config and layers (called again if the copy starts
    /// over with every object checked).
    fn opened(&self, _image: &ImageInput) {}
    /// An import event: the plan, bytes written, a layer done.
    fn progress(&self, _event: Progress) {}
}

impl CopyObserver for () {}

/// How to copy.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CopyOptions {
    /// The names to give the image in the store (normalized, e.g. `localhost/app:1`); empty:
    /// none for a new image, the source's own for a `containers-storage:` source.
    pub names: Vec<String>,
    /// Registries, credentials, TLS, retries and the signature policy.
    pub fetch: FetchOptions,
    /// Check every object of a composefs repository (or every layer copied from another store)
    /// before writing, instead of checking DiffIDs while writing and starting over on a mismatch.
    pub verify: bool,
}

impl CopyOptions {
    /// Options naming the image `name` (normalized as podman does: `app` →
    /// `docker.io/library/app:latest`).
    pub fn named(name: &str) -> Result<CopyOptions> {
        Ok(CopyOptions {
            names: vec![crate::reference::normalize(name)?],
            ..CopyOptions::default()
        })
    }

    /// These options with `names` (already normalized) as the names.
    pub fn with_names(mut self, names: Vec<String>) -> CopyOptions {
        self.names = names;
        self
    }

    /// These options with `fetch` as the registry options.
    pub fn with_fetch(mut self, fetch: FetchOptions) -> CopyOptions {
        self.fetch = fetch;
        self
    }

    /// These options with `verify` set.
    pub fn with_verify(mut self, verify: bool) -> CopyOptions {
        self.verify = verify;
        self
    }
}

/// How an image's files reached the store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sharing {
    /// Written from the source's layer blobs.
    Written,
    /// From another store: trees hardlinked, reflinked or copied.
    Store(CopyStats),
    /// From a composefs repository: files reflinked from its objects, or written.
    Composefs {
        /// Files whose extents are shared with the repository's objects.
        reflinked: u64,
        /// Files written.
        written: u64,
    },
}

/// What a copy did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Copied {
    /// The image ID.
    pub image_id: String,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The names it has in the store.
    pub names: Vec<String>,
    /// Layers written (or copied from another store).
    pub layers_written: usize,
    /// Layers the store already had.
    pub layers_reused: usize,
    /// How the files got there.
    pub sharing: Sharing,
}

impl Copied {
    fn from_import(r: ImportReport, sharing: Sharing) -> Copied {
        Copied {
            image_id: r.image_id,
            manifest_digest: r.manifest_digest,
            names: r.names,
            layers_written: r.layers_written,
            layers_reused: r.layers_reused,
            sharing,
        }
    }
}

/// An image opened for copying: its source read and checked, nothing written yet (so a source
/// that does not open leaves no trace, not even a new store).
pub struct Opened {
    names: Vec<String>,
    verify: bool,
    inner: Inner,
}

enum Inner {
    /// Layer blobs (`oci:`, `oci-archive:`, registries, `dir:`, `docker-archive:`).
    Blobs(crate::source::OpenedSource),
    /// An image of another store.
    Store { from: Store, id: String },
    /// An image of a composefs repository (kept with what reopens it).
    Composefs {
        repo: std::path::PathBuf,
        image: crate::source::composefs::ImageSelector,
        opened: Box<crate::source::composefs::ComposefsImage>,
    },
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

/// Opens the image `src` for copying, as `opts` says: the signature policy, the manifest and
/// config read and checked, the names checked against the image.
pub fn open(src: &ImageRef, opts: &CopyOptions) -> Result<Opened> {
    let inner = match src {
        ImageRef::ContainersStorage { store: spec, name } => {
            let (from, id) = open_store_image(spec.as_ref(), name, opts)?;
            Inner::Store { from, id }
        }
        ImageRef::Composefs { repo, image } => {
            let opened = crate::source::composefs::ComposefsImage::open(
                repo,
                image,
                opts.names.clone(),
                opts.verify,
            )?;
            check_name_digests(&opened.input)?;
            Inner::Composefs {
                repo: repo.clone(),
                image: image.clone(),
                opened: Box::new(opened),
            }
        }
        ImageRef::Ostree { .. } => {
            return Err(Error::Unsupported(format!(
                "{src}: an OSTree host image is copied by bootc-image-ostree (copy-to-storage on a bootc host)"
            )));
        }
        _ => {
            let mut opened = crate::source::open_with(src, &opts.fetch)?;
            opened.image.names = opts.names.clone();
            // A registry image pulled by digest may be named by that digest, also when it is a
            // list's (the proxy resolved it to this platform's manifest), as podman names it.
            let mut digests = vec![opened.image.manifest_digest.to_string()];
            if let ImageRef::Docker(name) = src
                && let Some((_, d)) = name.split_once('@')
            {
                digests.push(d.to_string());
            }
            crate::reference::check_name_digests(&opened.image.names, &digests)?;
            Inner::Blobs(opened)
        }
    };
    Ok(Opened {
        names: opts.names.clone(),
        verify: opts.verify,
        inner,
    })
}

impl Opened {
    /// The names the image gets.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The image's manifest, config and layers, when the source is not another store.
    pub fn input(&self) -> Option<&ImageInput> {
        match &self.inner {
            Inner::Blobs(o) => Some(&o.image),
            Inner::Composefs { opened, .. } => Some(&opened.input),
            Inner::Store { .. } => None,
        }
    }

    /// Copies the image into `store`, telling `observer` what happens. All or nothing: on any
    /// error the store is as it was.
    pub fn copy_into(self, store: &Store, observer: &dyn CopyObserver) -> Result<Copied> {
        let progress = |p: Progress| observer.progress(p);
        match self.inner {
            Inner::Blobs(opened) => {
                observer.opened(&opened.image);
                let report = opened.import_into(store, &progress)?;
                Ok(Copied::from_import(report, Sharing::Written))
            }
            Inner::Store { from, id } => {
                let copied = store.copy_image_from(
                    &from,
                    &id,
                    &crate::store::copy::CopyOptions {
                        names: self.names,
                        verify: self.verify,
                    },
                )?;
                Ok(Copied {
                    image_id: copied.image_id,
                    manifest_digest: Digest::parse(&copied.manifest_digest)?,
                    names: copied.names,
                    layers_written: copied.layers_copied,
                    layers_reused: copied.layers_reused,
                    sharing: Sharing::Store(copied.stats),
                })
            }
            Inner::Composefs {
                repo,
                image,
                opened,
            } => {
                let names = self.names;
                let reopen = |verify: bool| {
                    crate::source::composefs::ComposefsImage::open(
                        &repo,
                        &image,
                        names.clone(),
                        verify,
                    )
                };
                let (image, report) =
                    import_verifying_on_mismatch(self.verify, *opened, reopen, observer, |o| {
                        store.import_with(&o.input, o, &progress)
                    })?;
                let sharing = Sharing::Composefs {
                    reflinked: image.reflinked.load(Ordering::Relaxed),
                    written: image.written.load(Ordering::Relaxed),
                };
                Ok(Copied::from_import(report, sharing))
            }
        }
    }
}

/// Opens the image `id` of the store `from` (already open, e.g. reached through another mount)
/// for copying into another store, its files shared: what [`open`] does for a
/// `containers-storage:` reference, without the reference.
pub fn open_stored(from: Store, id: &str, opts: &CopyOptions) -> Result<Opened> {
    // The signature policy's containers-storage scopes, for the image's (first) name.
    let name = opts.names.first().map_or(id, String::as_str);
    crate::source::policy::load(opts.fetch.signature_policy.as_deref())?.check(
        &crate::source::policy::PolicyRef::storage(
            from.config().driver.name(),
            &from.config().graphroot,
            name,
        ),
    )?;
    Ok(Opened {
        names: opts.names.clone(),
        verify: opts.verify,
        inner: Inner::Store {
            from,
            id: id.to_string(),
        },
    })
}

/// Copies the image `src` into `store`, as `opts` says, telling `observer` what happens: [`open`]
/// then [`Opened::copy_into`]. All or nothing: on any error the store is as it was.
pub fn copy(
    store: &Store,
    src: &ImageRef,
    opts: &CopyOptions,
    observer: &dyn CopyObserver,
) -> Result<Copied> {
    open(src, opts)?.copy_into(store, observer)
}

/// A `NAME@DIGEST` must name the image's own manifest digest (c/image finds the image by it;
/// skopeo cannot export an image stored under another digest).
pub fn check_name_digests(input: &ImageInput) -> Result<()> {
    crate::reference::check_name_digests(&input.names, &[input.manifest_digest.to_string()])
}

/// An opened image that can be imported and opened again.
pub trait Reopenable {
    /// What is imported.
    fn input(&self) -> &ImageInput;
}

impl Reopenable for crate::source::composefs::ComposefsImage {
    fn input(&self) -> &ImageInput {
        &self.input
    }
}

#[cfg(feature = "ostree")]
impl Reopenable for crate::source::ostree_host::HostImage {
    fn input(&self) -> &ImageInput {
        &self.input
    }
}

/// Imports `first` (opened with `verify`'s choice) with `import`; when a DiffID does not match (an
/// object is damaged, or the image was made differently) the import was rolled back, and — unless
/// every object was checked already — the image is opened again with `reopen(true)` (every object
/// checked, every DiffID computed from content) and imported again. Returns the image as last
/// opened and the import's report.
pub fn import_verifying_on_mismatch<S: Reopenable>(
    verify: bool,
    first: S,
    reopen: impl Fn(bool) -> Result<S>,
    observer: &dyn CopyObserver,
    import: impl Fn(&S) -> Result<ImportReport>,
) -> Result<(S, ImportReport)> {
    let mut opened = first;
    observer.opened(opened.input());
    let mut result = import(&opened);
    if !verify && matches!(result, Err(Error::DigestMismatch { .. })) {
        opened = reopen(true)?;
        observer.opened(opened.input());
        result = import(&opened);
    }
    result.map(|r| (opened, r))
}

/// `containers-storage:[STORE]NAME`: that store opened read-only and the image's ID in it (the
/// signature policy's containers-storage scopes evaluated, as skopeo copy does).
fn open_store_image(
    spec: Option<&crate::reference::StoreSpec>,
    name: &str,
    opts: &CopyOptions,
) -> Result<(Store, String)> {
    let config = crate::store::StoreConfig::of_spec(spec)?;
    crate::source::policy::load(opts.fetch.signature_policy.as_deref())?.check(
        &crate::source::policy::PolicyRef::storage(config.driver.name(), &config.graphroot, name),
    )?;
    let from = Store::open_read_only(config.clone())?;
    let images = from.images()?;
    let id = crate::store::lookup::find_image(&images, name)
        .map_err(|e| match e {
            Error::NotFound { what, message } => Error::NotFound {
                what,
                message: format!("{message} (in the store {})", config.graphroot.display()),
            },
            e => e,
        })?
        .id
        .clone();
    Ok((from, id))
}
