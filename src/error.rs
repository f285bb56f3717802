//! The library's error type.

use std::path::{Path, PathBuf};

/// Errors of the engine. Each message names the thing at fault and, where one exists, the remedy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or stream operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a stream failed.
    #[error("reading {what}")]
    Read {
        /// The stream.
        what: String,
        /// The OS or decoder error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("writing {what}")]
    Write {
        /// The file.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An error while writing one layer.
    #[error("layer {digest}")]
    Layer {
        /// The layer blob's digest.
        digest: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// An on-disk record or format error.
    #[error(transparent)]
    Format(#[from] storage_format::Error),
    /// A layer tar is malformed.
    #[error("malformed layer tar: {0}; the blob is corrupt: rebuild or re-fetch the image")]
    MalformedTar(String),
    /// A stream ended early.
    #[error("truncated {0}: the blob is incomplete: rebuild or re-fetch the image")]
    Truncated(String),
    /// Content does not match the digest that names it.
    #[error(
        "{what} {expected} does not match its content (sha256 is {actual}): the source is corrupt: rebuild or re-fetch the image"
    )]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The expected digest.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },
    /// A layer entry tries to leave its layer.
    #[error("layer entry {entry:?} {reason}; refusing the layer: it is unsafe or corrupt")]
    Unsafe {
        /// The entry name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// Data in the store does not match its records.
    #[error(
        "{what} does not verify: {detail}; the store is damaged: remove the image and copy it again"
    )]
    Damaged {
        /// What (e.g. `layer <id>`).
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The user's input is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// Something does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A feature the engine does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An invariant of the engine broke.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on a path.
    pub fn io(
        what: &'static str,
        path: impl AsRef<Path>,
        source: impl Into<std::io::Error>,
    ) -> Error {
        Error::Io {
            what,
            path: path.as_ref().to_path_buf(),
            source: source.into(),
        }
    }
    /// An error reading a stream.
    pub fn read(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Read {
            what: what.into(),
            source,
        }
    }
    /// A malformed tar.
    pub fn malformed_tar(msg: impl Into<String>) -> Error {
        Error::MalformedTar(msg.into())
    }
    /// A truncated stream.
    pub fn truncated(what: impl Into<String>) -> Error {
        Error::Truncated(what.into())
    }
}
