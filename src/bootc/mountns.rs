//! Making hardlinks possible between stores: podman bind-mounts each store's `overlay/` onto itself, and
//! `link()` refuses to cross mount points even within one filesystem. In a private mount namespace
//! those self-bind mounts are detached (and a read-only `/sysroot` made writable); nothing changes
//! outside. The library only prepares the namespace; entering one is the embedder's choice (the
//! command line re-executes itself under `unshare --mount`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
struct MountInfo {
    dev: String,
    root: PathBuf,
    mount_point: PathBuf,
    read_only: bool,
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
            (f.len() > 5).then(|| MountInfo {
                dev: f[2].to_string(),
                root: PathBuf::from(unescape(f[3])),
                mount_point: PathBuf::from(unescape(f[4])),
                read_only: f[5].split(',').any(|o| o == "ro"),
            })
        })
        .collect()
}

/// Whether `path` is a bind mount of itself (same filesystem, same directory), as podman leaves a store's
/// `overlay/` directory.
pub(crate) fn is_self_bind(path: &Path) -> bool {
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

/// `path` made absolute and free of symlinks, as far as it exists (a missing tail is appended).
fn canonical_prefix(path: &Path) -> Option<PathBuf> {
    let mut existing = path.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(&existing) {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return Some(out);
        }
        tail.push(existing.file_name()?.to_os_string());
        existing = existing.parent()?.to_path_buf();
    }
}

/// The mount holding the canonical `path`: the longest mount point above it, the topmost of a stack.
fn mount_of<'a>(all: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    all.iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
}

/// `target` as reached through the mount that holds `anchor`, when they are different mounts of one
/// filesystem and the anchor's mount shows the target's directory — as on a booted OSTree system,
/// where `/var` is the stateroot's `var` under `/sysroot` mounted on its own. link() refuses to cross
/// mount points even within one filesystem; through one mount it works. `None` when both are on one
/// mount already, on different filesystems, or the target is not under the anchor mount's root.
pub fn path_through_mount_of(anchor: &Path, target: &Path) -> Option<PathBuf> {
    let anchor = canonical_prefix(anchor)?;
    let target = canonical_prefix(target)?;
    let all = mounts();
    let a = mount_of(&all, &anchor)?;
    let t = mount_of(&all, &target)?;
    if a.mount_point == t.mount_point || a.dev != t.dev {
        return None;
    }
    // Where the target is inside the filesystem, then where that is under the anchor's mount.
    let in_fs = t.root.join(target.strip_prefix(&t.mount_point).ok()?);
    let under = in_fs.strip_prefix(&a.root).ok()?;
    let through = a.mount_point.join(under);
    // Nothing else may be mounted on the way (it would hide the directory).
    let shown = mount_of(&all, &through).is_some_and(|m| m.mount_point == a.mount_point);
    shown.then_some(through)
}

/// The mount point of the mount holding `path`, if that mount is read-only (as `/sysroot` is on a
/// booted OSTree system).
pub fn read_only_mount_of(path: &Path) -> Option<PathBuf> {
    let path = canonical_prefix(path)?;
    let all = mounts();
    mount_of(&all, &path)
        .filter(|m| m.read_only)
        .map(|m| m.mount_point.clone())
}

/// What [`prepare_private_namespace`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Nothing needs a private mount namespace, or this process is in one and it is ready.
    Ready,
    /// The work must run in a private mount namespace this process is not in: the embedder runs it
    /// there (the command line re-executes itself under `unshare --mount`) and calls this again
    /// inside with `inside_private_namespace`.
    Needed,
}

/// Whether hardlinking between the stores needs a private mount namespace: any of `dirs` is a
/// self-bind mount (podman leaves the driver directory so), or any of `remount_rw` must be made
/// writable. Inside one (`inside_private_namespace`), detaches those bind mounts and remounts those
/// mounts read-write (that mount only, as bootc does for `/sysroot`). Nothing changes outside the
/// namespace, and this never starts a process.
pub fn prepare_private_namespace(
    dirs: &[PathBuf],
    remount_rw: &[PathBuf],
    inside_private_namespace: bool,
) -> Result<Namespace> {
    let binds: Vec<&PathBuf> = dirs.iter().filter(|d| is_self_bind(d)).collect();
    if binds.is_empty() && remount_rw.is_empty() {
        return Ok(Namespace::Ready);
    }
    if !inside_private_namespace {
        return Ok(Namespace::Needed);
    }
    for b in binds {
        rustix::mount::unmount(b.as_path(), rustix::mount::UnmountFlags::DETACH)
            .map_err(|e| Error::io("detaching the bind mount", b, std::io::Error::from(e)))?;
    }
    for m in remount_rw {
        rustix::mount::mount_remount(m.as_path(), rustix::mount::MountFlags::BIND, "").map_err(
            |e| {
                Error::io(
                    "remounting read-write (in a private mount namespace)",
                    m,
                    std::io::Error::from(e),
                )
            },
        )?;
    }
    Ok(Namespace::Ready)
}
