//! bootc's own containers-storage: creation (in a temporary sibling, renamed into place), opening, and
//! SELinux labelling.

use std::path::{Path, PathBuf};

use super::sysroot::Sysroot;
use crate::error::{Error, Result};
use crate::store::{DriverKind, Store, StoreConfig};

/// The stamp that says the store was labelled.
pub const LABELED_STAMP: &str = ".bootc_labeled";

/// The store configuration of bootc's storage in `sysroot`.
pub fn config(sysroot: &Sysroot) -> StoreConfig {
    StoreConfig {
        graphroot: sysroot.storage_path(),
        runroot: sysroot.runroot(),
        driver: DriverKind::Overlay,
        sync_filesystem: false,
    }
}

/// Whether SELinux is enabled on this machine.
pub fn selinux_enabled() -> bool {
    std::fs::read_to_string("/sys/fs/selinux/enforce").is_ok()
}

/// Creates bootc's store if it is missing, in a layout podman accepts both as `--root` and as a read-only
/// additional image store (empty lock files present, nothing incomplete), then opens it.
pub fn ensure(sysroot: &Sysroot) -> Result<(Store, bool)> {
    let path = sysroot.storage_path();
    let mut created = false;
    if !path.exists() {
        let parent = path
            .parent()
            .ok_or_else(|| Error::Internal("storage path has no parent".into()))?;
        // On composefs systems `ostree/bootc` is a symlink to `../composefs/bootc`: create its target.
        if let Ok(target) = std::fs::read_link(parent)
            && !parent.exists()
        {
            let t = parent.parent().unwrap_or(parent).join(target);
            std::fs::create_dir_all(&t).map_err(|e| Error::io("creating directory", &t, e))?;
        }
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating directory", parent, e))?;
        let tmp: PathBuf = parent.join("storage.tmp");
        crate::fsutil::remove_all(&tmp).map_err(|e| Error::io("removing", &tmp, e))?;
        {
            let mut cfg = config(sysroot);
            cfg.graphroot = tmp.clone();
            let store = Store::open(cfg)?;
            store.init_empty_records()?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("renaming into place", &path, e))?;
        created = true;
    }
    let store = Store::open(config(sysroot))?;
    label(&path)?;
    Ok((store, created))
}

/// Opens bootc's store if it exists.
pub fn open_existing(sysroot: &Sysroot) -> Result<Option<Store>> {
    if !sysroot.storage_path().exists() {
        return Ok(None);
    }
    Store::open(config(sysroot)).map(Some)
}

/// Opens bootc's store only to read it, if it exists: nothing is created or recovered.
pub fn open_existing_read_only(sysroot: &Sysroot) -> Result<Option<Store>> {
    if !sysroot.storage_path().exists() {
        return Ok(None);
    }
    Store::open_read_only(config(sysroot)).map(Some)
}

/// Labels the store as if it lived at /var/lib/containers/storage when SELinux is enabled (once,
/// recorded by the stamp file); does nothing when it is not.
pub fn label(path: &Path) -> Result<()> {
    if !selinux_enabled() || path.join(LABELED_STAMP).exists() {
        return Ok(());
    }
    let reference = Path::new("/var/lib/containers/storage");
    if !reference.exists() {
        return Ok(());
    }
    let status = std::process::Command::new("chcon")
        .arg("-R")
        .arg(format!("--reference={}", reference.display()))
        .arg(path)
        .status()
        .map_err(|e| Error::external("chcon", e))?;
    if !status.success() {
        return Err(Error::external(
            "chcon",
            format!("labelling {}: {status}", path.display()),
        ));
    }
    let stamp = path.join(LABELED_STAMP);
    std::fs::write(&stamp, b"").map_err(|e| Error::io("writing", &stamp, e))?;
    Ok(())
}
