//! Reading and writing layers.json / images.json under their locks, with last-writer tokens.

use std::path::Path;

use storage_format::{LockGuard, Record, RecordFile};

use super::atomic::atomic_write;
use crate::error::{Error, Result};

/// Reads a record file; a missing file is an empty one. Also returns the original bytes, if any.
pub fn read<T: Record>(path: &Path) -> Result<(RecordFile<T>, Option<Vec<u8>>)> {
    match std::fs::read(path) {
        Ok(bytes) => Ok((RecordFile::parse(&bytes)?, Some(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((RecordFile::parse(b"")?, None)),
        Err(e) => Err(Error::io("reading", path, e)),
    }
}

/// Writes a record file atomically while `guard` holds its write lock, writing a fresh last-writer token
/// before (podman 5) and after (podman 4) the rename.
pub fn write<T: Record>(path: &Path, file: &RecordFile<T>, guard: &LockGuard<'_>) -> Result<()> {
    let bytes = file.to_bytes()?;
    write_bytes(path, Some(&bytes), guard)
}

/// Writes (or, with `None`, removes) a record file's exact bytes under its lock, with tokens.
pub(crate) fn write_bytes(path: &Path, bytes: Option<&[u8]>, guard: &LockGuard<'_>) -> Result<()> {
    guard.record_write()?;
    match bytes {
        Some(b) => atomic_write(path, b, 0o600)?,
        None => match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("removing", path, e)),
        },
    }
    guard.record_write()?;
    Ok(())
}
