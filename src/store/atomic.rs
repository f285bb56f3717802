//! Atomic file replacement: temp file in the same directory, fdatasync, chmod, rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Prefix of the temporary files we create next to their final names; recovery removes leftovers.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// A temporary path beside `path` with a random suffix.
pub(crate) fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rnd = [0u8; 4];
    let _ = getrandom::fill(&mut rnd);
    path.with_file_name(format!("{TEMP_PREFIX}{name}{}", hex::encode(rnd)))
}

/// Writes `data` to `path` atomically with permissions `mode`, as c/storage's atomic writer does.
pub(crate) fn atomic_write(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    atomic_write_with(path, mode, &mut |f| f.write_all(data))
}

/// [`atomic_write`] of what `write` writes to the file (in pieces: the content need not be in
/// memory; `write` brings its own buffering).
pub(crate) fn atomic_write_with(
    path: &Path,
    mode: u32,
    write: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tmp = temp_path_for(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        write(&mut f)?;
        f.sync_data()?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("writing", path, e));
    }
    Ok(())
}
