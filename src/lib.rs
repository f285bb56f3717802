//! bootc-image: read and write container images directly in containers-storage, natively and fast.
//!
//! The engine models every layer as one stream of tar entries that a single sink turns into the
//! store's three representations at once: the tar-split, the DiffID, and the driver's tree. See
//! `docs/architecture.md`.
//!
//! - [`store`]: open a store, lock it as c/storage does, import images all-or-nothing.
//! - [`layer`]: tar parsing with raw bytes, decompression, and the layer sink.
//! - [`source`]: where images come from (`oci:`, `oci-archive:`).
//! - [`cli`]: the `bootc-image` command line, thin over the above.
#![forbid(unsafe_code)]

pub mod bootc;
pub mod cli;
pub mod crashpoint;
pub mod error;
pub mod fsutil;
pub mod layer;
pub mod parallel;
pub mod podman;
pub mod reference;
pub mod source;
pub mod store;

pub use error::{Error, Result};
