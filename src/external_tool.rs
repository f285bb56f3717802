//! The external programs the engine runs (skopeo), found so that a program of that name which is
//! this very binary — bootc-image installed as PATH's `skopeo` or `podman` for bootc's seam — is
//! never run again by itself.

use std::path::PathBuf;

/// The real `tool` on PATH, if one is installed: the first executable of that name that is not
/// this process's own binary.
pub fn find(tool: &str) -> Option<PathBuf> {
    let me = std::fs::canonicalize("/proc/self/exe").ok();
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .filter(|p| p.is_file() && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok())
        .find(|p| std::fs::canonicalize(p).ok() != me)
}
