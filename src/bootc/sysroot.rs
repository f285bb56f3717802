//! The physical root bootc manages (`/sysroot` on a booted system, any directory for tests and builders).

use std::path::{Path, PathBuf};

/// bootc's root relative to the sysroot.
pub const BOOTC_ROOT: &str = "ostree/bootc";
/// bootc's containers-storage relative to the sysroot.
pub(crate) const STORAGE_SUBPATH: &str = "ostree/bootc/storage";
/// The run root podman uses for bootc's store.
pub const RUNROOT: &str = "/run/bootc/storage";

/// A sysroot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysroot {
    path: PathBuf,
}

impl Sysroot {
    /// The sysroot at `path`. For `/` (a booted system) the physical root is `/sysroot` when it
    /// holds an OSTree or composefs host.
    pub fn new(path: &Path) -> Sysroot {
        let physical = if path == Path::new("/")
            && (Path::new("/sysroot/ostree").exists() || Path::new("/sysroot/composefs").exists())
        {
            PathBuf::from("/sysroot")
        } else {
            path.to_path_buf()
        };
        Sysroot { path: physical }
    }

    /// The sysroot's physical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// bootc's containers-storage (`ostree/bootc/storage`; on composefs systems `ostree/bootc` is a
    /// symlink to `../composefs/bootc`, which the path follows).
    pub fn storage_path(&self) -> PathBuf {
        self.path.join(STORAGE_SUBPATH)
    }

    /// The run root for bootc's store: always `/run/bootc/storage`, which is what podman gets (as
    /// `/proc/self/fd/3`) from `bootc-image cmd`, whatever the sysroot.
    pub fn runroot(&self) -> PathBuf {
        PathBuf::from(RUNROOT)
    }

    /// The ostree repository.
    pub fn repo_path(&self) -> PathBuf {
        self.path.join("ostree/repo")
    }
}

/// Whether we run inside a container (as upstream's `running_in_container`).
pub fn running_in_container() -> bool {
    Path::new("/run/.containerenv").exists()
        || Path::new("/.dockerenv").exists()
        || std::env::var_os("container").is_some()
}
