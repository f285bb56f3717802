//! Making hardlinks possible between stores: podman bind-mounts each store's `overlay/` onto itself, and
//! `link()` refuses to cross mount points even within one filesystem. We re-run ourselves in a private
//! mount namespace (via `unshare`) and detach those self-bind mounts there; nothing changes outside.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Set in the environment of the re-executed process.
pub const PRIVATE_NS_ENV: &str = "BOOTC_IMAGE_PRIVATE_MOUNTNS";

#[derive(Debug, Clone)]
struct MountInfo {
    dev: String,
    root: PathBuf,
    mount_point: PathBuf,
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn mounts() -> Vec<MountInfo> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() > 4).then(|| MountInfo {
                dev: f[2].to_string(),
                root: PathBuf::from(unescape(f[3])),
                mount_point: PathBuf::from(unescape(f[4])),
            })
        })
        .collect()
}

/// Whether `path` is a bind mount of itself (same filesystem, same directory), as podman leaves a store's
/// `overlay/` directory.
pub fn is_self_bind(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else {
        return false;
    };
    let all = mounts();
    let Some(m) = all.iter().rev().find(|m| m.mount_point == path) else {
        return false;
    };
    let Some(parent) = all
        .iter()
        .rev()
        .filter(|p| p.mount_point != path && path.starts_with(&p.mount_point))
        .max_by_key(|p| p.mount_point.as_os_str().len())
    else {
        return false;
    };
    let Ok(rel) = path.strip_prefix(&parent.mount_point) else {
        return false;
    };
    m.dev == parent.dev && m.root == parent.root.join(rel)
}

/// If any of `dirs` is a self-bind mount and we are not yet in our private namespace, re-runs this
/// command there and returns its exit code; inside it, detaches those mounts and returns `None`.
pub fn reexec_for_links(dirs: &[PathBuf]) -> Result<Option<i32>> {
    let binds: Vec<&PathBuf> = dirs.iter().filter(|d| is_self_bind(d)).collect();
    if binds.is_empty() {
        return Ok(None);
    }
    if std::env::var_os(PRIVATE_NS_ENV).is_some() {
        for b in binds {
            rustix::mount::unmount(b.as_path(), rustix::mount::UnmountFlags::DETACH)
                .map_err(|e| Error::io("detaching the bind mount", b, std::io::Error::from(e)))?;
        }
        return Ok(None);
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("finding", "/proc/self/exe", e))?;
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PRIVATE_NS_ENV, "1")
        .status()
        .map_err(|e| Error::io("running", "unshare", e))?;
    Ok(Some(status.code().unwrap_or(1)))
}
