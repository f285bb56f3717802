//! The on-disk format of containers-storage (the store that podman, skopeo and
//! buildah use), as a library of small, pure building blocks.
//!
//! This crate knows *how things are written*: the JSON records of
//! `layers.json` and `images.json` (keeping every byte of records it was not
//! asked to change), layer and image ID derivation, big-data file names, the
//! tar-split JSON-lines format, the fcntl lock files and their last-writer
//! token, overlay link ids and `lower` chains, Go's RFC 3339 timestamps and
//! `storage.conf`.
//!
//! The parsers and formats are pure; what touches the system (lock files, the environment and
//! files of `storage.conf`, the clock, randomness) is in [`sys`].
//!
//! It holds **no policy**: it never decides what to write, when to lock, in
//! which order to do things or how to recover from a crash. That is the job of
//! the engine that uses it. Nothing here prints.
#![forbid(unsafe_code)]

pub mod bigdata;
pub mod conf;
pub mod digest;
pub mod error;
pub mod ids;
pub mod overlay;
pub mod records;
pub mod sys;
pub mod tarsplit;
pub mod time;

pub use bigdata::{big_data_file_name, big_data_key_from_file_name};
pub use conf::StorageConf;
pub use digest::Digest;
pub use error::{Error, Result};
pub use ids::{image_id, is_valid_id, layer_id};
pub use overlay::{LINK_DIR, lower_chain, parse_lower};
pub use records::{ImageRecord, LayerRecord, Record, RecordFile};
pub use sys::clock::now_rfc3339_nano;
pub use sys::lockfile::{LockFile, LockGuard, WaitNotice, new_token, set_wait_notice};
pub use sys::random::new_link_id;
pub use sys::seen_paths::path_hash;
pub use tarsplit::{Crc64, TarSplitEntry, TarSplitReader, TarSplitWriter};
pub use time::rfc3339_nano;
