//! The crate's error type.

/// Everything that can go wrong while reading or writing the on-disk format.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A JSON document could not be parsed or produced.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),
    /// `storage.conf` is not valid TOML or has a key of the wrong type.
    #[error("storage.conf: {0}")]
    Toml(String),
    /// A layer's tar-split names the same (cleaned) path twice.
    #[error("duplicate path in layer: {0}")]
    DuplicatePath(String),
    /// A string is not a `sha256:<64 lowercase hex>` digest.
    #[error("invalid digest: {0:?}")]
    InvalidDigest(String),
    /// A tar-split stream is malformed.
    #[error("invalid tar-split: {0}")]
    InvalidTarSplit(String),
    /// A record of `layers.json` / `images.json` is malformed.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
