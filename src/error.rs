//! The library's error type.

use std::path::{Path, PathBuf};

/// Errors of the engine. Each message names the thing at fault and, where one exists, the remedy.
/// New variants may come: match on [`Error::class`] for what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A store cannot be used as it is (missing, damaged, misconfigured).
    #[error("{0}")]
    Store(String),
    /// An external program (ostree, unshare, chcon, podman) failed or is missing.
    #[error("{tool} failed: {detail}")]
    External {
        /// The program.
        tool: String,
        /// What happened.
        detail: String,
    },
    /// The user's input is invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// Something does not exist.
    #[error("{message}")]
    NotFound {
        /// What is missing (an image name, a digest, a tag, a file).
        what: String,
        /// The message, with the remedy.
        message: String,
    },
    /// Content is not as long as what describes it says.
    #[error(
        "{what} is {found} bytes, but {expected} are declared: the source is corrupt: rebuild or re-fetch the image"
    )]
    SizeMismatch {
        /// What was measured.
        what: String,
        /// The declared size.
        expected: u64,
        /// The size found.
        found: u64,
    },
    /// A feature the engine does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A registry or the image proxy failed: unreachable, refused the credentials, cut a blob short.
    #[error("{image}: {message}")]
    Remote {
        /// The image reference.
        image: String,
        /// What failed, with the remedy.
        message: String,
        /// Whether trying again may succeed (a network error, a 5xx or 429 answer, a cut stream).
        transient: bool,
    },
    /// A composefs repository cannot be read as it should be: a missing or damaged object, a
    /// damaged splitstream, an image it does not hold whole.
    #[error(
        "composefs repository {}: {detail}; the repository is damaged: check it with `cfsctl fsck` and pull the image again",
        repo.display()
    )]
    Composefs {
        /// The repository's directory.
        repo: PathBuf,
        /// What is wrong, and where.
        detail: String,
    },
    /// An invariant of the engine broke.
    #[error("internal error: {0}")]
    Internal(String),
    /// A producer gave up on a layer half-written (a partial pull that failed): the layer is
    /// written again from an empty tree, and the producer then writes it the ordinary way.
    #[error("{0}")]
    StartOver(Box<Error>),
    /// An error about one thing among several (a bound image, say): what it was, and the error,
    /// whose class it keeps.
    #[error("{what}")]
    Context {
        /// The thing, e.g. `bound image quay.io/x:1 (x.image)`.
        what: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

/// What kind of failure an error is: the command line maps each class to its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The image or a name: missing, invalid, corrupt, unsafe, unsupported.
    Image,
    /// The store or its file system: missing, damaged, full, read-only, not permitted.
    Storage,
    /// An external program failed or is missing.
    External,
    /// A bug of ours.
    Internal,
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Layer { source, .. } | Error::Context { source, .. } => source.class(),
            Error::StartOver(e) => e.class(),
            // A blob stream the registry or the proxy broke.
            Error::Read { source, .. } | Error::Io { source, .. }
                if source
                    .get_ref()
                    .is_some_and(|e| e.downcast_ref::<RemoteFailure>().is_some()) =>
            {
                ErrorClass::External
            }
            Error::Read { .. }
            | Error::MalformedTar(_)
            | Error::Truncated(_)
            | Error::DigestMismatch { .. }
            | Error::Unsafe { .. }
            | Error::InvalidInput(_)
            | Error::NotFound { .. }
            | Error::Composefs { .. }
            | Error::SizeMismatch { .. }
            | Error::Unsupported(_) => ErrorClass::Image,
            Error::Io { .. }
            | Error::Write { .. }
            | Error::Format(_)
            | Error::Damaged { .. }
            | Error::Store(_) => ErrorClass::Storage,
            Error::External { .. } | Error::Remote { .. } => ErrorClass::External,
            Error::Internal(_) => ErrorClass::Internal,
        }
    }

    /// An external program that could not be run or failed.
    pub fn external(tool: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::External {
            tool: tool.into(),
            detail: detail.to_string(),
        }
    }

    /// Whether trying again may succeed: a transient [`Error::Remote`], also when it reached us
    /// inside an I/O error of a blob stream ([`RemoteFailure`]).
    pub(crate) fn is_transient(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cur {
            if let Some(Error::Remote { transient, .. }) = e.downcast_ref::<Error>() {
                return *transient;
            }
            if let Some(f) = e.downcast_ref::<RemoteFailure>() {
                return f.transient;
            }
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(f) = inner.downcast_ref::<RemoteFailure>()
            {
                return f.transient;
            }
            cur = e.source();
        }
        false
    }

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
    /// Writing the content of the layer entry `entry` failed.
    pub(crate) fn write_entry(entry: &[u8], source: std::io::Error) -> Error {
        Error::Write {
            what: format!("{} into the layer", String::from_utf8_lossy(entry)),
            source,
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
    pub(crate) fn malformed_tar(msg: impl Into<String>) -> Error {
        Error::MalformedTar(msg.into())
    }
    /// Something missing: `what` names it, `message` says so with the remedy.
    pub(crate) fn not_found(what: impl Into<String>, message: impl Into<String>) -> Error {
        Error::NotFound {
            what: what.into(),
            message: message.into(),
        }
    }
    /// A stream that ended early.
    pub fn truncated(what: impl Into<String>) -> Error {
        Error::Truncated(what.into())
    }
}

/// A remote failure carried inside an `io::Error` of a blob stream, so that the layer pipeline
/// passes it through unchanged and [`Error::is_transient`] still sees it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct RemoteFailure {
    /// What failed.
    pub message: String,
    /// Whether trying again may succeed.
    pub transient: bool,
}
