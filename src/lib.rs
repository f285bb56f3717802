//! bootc-image: read and write container images directly in containers-storage, natively and fast.
//!
//! The engine models every layer as one stream of tar entries ([`layer::entry`]) that a single
//! sink ([`layer::sink::LayerSink`]) turns into the store's three representations at once: the
//! tar-split, the DiffID, and the driver's tree. Every source is a producer of entries
//! ([`store::producer::LayerProducer`]); the store writes them in one transaction, all or nothing,
//! under c/storage's locks, so podman and skopeo can use the store at the same time. See
//! `docs/architecture.md`.
//!
//! - [`store`]: open a store, import images, copy between stores, inspect, tag, delete, verify.
//! - [`source`]: where images come from (`oci:`, `oci-archive:`, registries through skopeo's
//!   image proxy, the OSTree host image, composefs repositories, a root filesystem to build from).
//! - [`export`]: a stored image to an OCI layout or archive, compressed.
//! - [`layer`]: the entry model, tar with its raw bytes, decompression, the sink, the tree writer.
//! - [`image_ref`]: [`image_ref::ImageRef`], the one transport grammar (`docker://`, `oci:`, …).
//! - [`reference`]: image names by c/image's grammar, normalized as podman does.
//! - [`bootc`]: bootc's sysroot, its own store, bound images.
//!
//! The `bootc-image` command line is a crate of its own (`cli/`, `bootc-image-cli`), thin over
//! this one: the library has no command-line dependency, never prints and never exits.
//!
//! # Embedding
//!
//! Import an image layout into a store (`examples/import_oci.rs`):
//!
//! ```no_run
//! # fn main() -> bootc_image::Result<()> {
//! use bootc_image::image_ref::ImageRef;
//! use bootc_image::source;
//! use bootc_image::store::{Store, StoreConfig};
//!
//! let mut opened = source::open(&ImageRef::parse("oci:./my-image:1")?)?;
//! opened.image.names = vec![bootc_image::reference::normalize("localhost/app:1")?];
//! let config = StoreConfig::resolve(None, None, None)?; // storage.conf, as podman
//! let store = Store::open(config)?;
//! let report = opened.import_into(&store, &|_| {})?;
//! println!("{}", report.image_id);
//! # Ok(())
//! # }
//! ```
//!
//! Build a chunked, reproducible image from a root filesystem (`examples/build_chunked.rs`): the
//! plan is yours to inspect and adjust before anything is written.
//!
//! ```no_run
//! # fn main() -> bootc_image::Result<()> {
//! use bootc_image::source::rootfs::{BuildOptions, Builder};
//! use bootc_image::store::{Store, StoreConfig};
//!
//! let store = Store::open(StoreConfig::resolve(None, None, None)?)?;
//! let builder = Builder::new("/var/tmp/rootfs".as_ref(), BuildOptions::default())?;
//! let mut plan = builder.plan(None)?; // packages → layers (dpkg), at most 64
//! plan.move_package("linux-image-amd64", 0)?;
//! let image = builder.image(&plan, vec!["localhost/os:1".into()])?; // DiffIDs, config, manifest
//! let report = builder.commit(&plan, &image, &store, &|_| {})?;
//! println!("{}", report.image_id);
//! # Ok(())
//! # }
//! ```
//!
//! Copy an image out of a composefs repository ([`source::composefs::ComposefsImage`], which is its
//! own layer producer; `examples/import_composefs.rs`).
//!
//! Write a layer from your own files, with no tar on disk (`examples/build_layer.rs`): build each
//! entry ([`layer::entry::Entry`]: its header bytes, the parsed header, its content as bytes, a
//! stream or an open file), feed the entries once to [`layer::sink::LayerSink::digest_only`] for
//! the DiffID your config names, then implement [`store::producer::LayerProducer`] to feed them
//! again and call [`store::Store::import_with`]. The library never prints and never exits; errors
//! are [`Error`] values with a [`error::ErrorClass`].
#![forbid(unsafe_code)]

pub(crate) mod blob_info_cache;
pub mod bootc;
pub mod copy;
pub(crate) mod crashpoint;
pub mod error;
pub mod export;
pub mod external_tool;
pub(crate) mod fsutil;
pub mod image_ref;
pub mod layer;
pub(crate) mod memory_limit;
pub mod parallel;
pub mod proxy_server;
pub mod push;
pub mod reference;
pub mod retry;
pub mod source;
pub mod store;

pub use copy::{Copied, CopyObserver, CopyOptions, Opened, copy, open};
pub use error::{Error, Result};
pub use image_ref::ImageRef;
pub use storage_format::Digest;
