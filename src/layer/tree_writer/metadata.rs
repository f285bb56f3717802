//! Metadata as c/storage applies it: owners, modes, times (clamped as Go's `Chtimes` does),
//! xattrs (which reach the tree, which failures are ignored).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::super::path::{clean_components, join};
use super::super::tar_header::{EntryKind, TarHeader};
use super::*;
use crate::error::{Error, Result};
use crate::fsutil::proc_path;

/// Whether a failure to set an xattr is ignored, as c/storage ignores it: ENOTSUP always (the file
/// system has no xattrs), EPERM only in a user namespace (where root may not set `trusted.*`). As
/// real root, EPERM (e.g. a `user.*` xattr on a symlink) fails the layer, as it fails skopeo.
pub(super) fn xattr_error_ignored(e: Errno) -> bool {
    static IN_USERNS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    e == Errno::NOTSUP
        || (e == Errno::PERM
            && *IN_USERNS.get_or_init(|| {
                std::fs::read_to_string("/proc/self/uid_map").map_or(true, |m| {
                    m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"]
                })
            }))
}

/// Whether an xattr of a tar entry reaches the tree. c/storage never applies `security.selinux`
/// (the store's labels come from the mount), and overlayfs' own control attributes
/// (`trusted.overlay.*`, `user.overlay.*` in userxattr mode) would be interpreted by overlayfs: a
/// `metacopy` or `redirect` from a layer could make files unreadable or point elsewhere.
pub(crate) fn applied_xattr(name: &[u8]) -> bool {
    !(name == b"security.selinux"
        || name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay."))
}

pub(super) fn ts(secs: i64, nsec: u32) -> Timespec {
    // c/storage's Chtimes sets times before the epoch, or after the last one a Go time.Duration
    // holds (1<<63-1 ns: 2262-04-11), to the epoch.
    const MAX: (i64, u32) = (9_223_372_036, 854_775_807);
    if secs < 0 || (secs, nsec) > MAX {
        Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        }
    } else {
        Timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nsec),
        }
    }
}

/// The access and modification times c/storage gives an entry: atime is at least mtime.
pub(super) fn file_times(h: &TarHeader) -> Timestamps {
    let m = ts(h.mtime, h.mtime_nsec);
    let a = match h.atime {
        Some((s, n)) if (s, n) > (h.mtime, h.mtime_nsec) => ts(s, n),
        _ => m,
    };
    Timestamps {
        last_access: a,
        last_modification: m,
    }
}

/// Directory times: os.Chtimes with the header's atime (the epoch when absent).
pub(super) fn dir_times(h: &TarHeader) -> Timestamps {
    let a = h.atime.map(|(s, n)| ts(s, n)).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    Timestamps {
        last_access: a,
        last_modification: ts(h.mtime, h.mtime_nsec),
    }
}

pub(super) fn id(v: u64, name: &[u8]) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Unsafe {
        entry: String::from_utf8_lossy(name).into_owned(),
        reason: format!("has an owner id {v} out of range"),
    })
}

/// What a regular file gets once its bytes are written: owner, xattrs, mode, times.
#[derive(Debug)]
pub(super) struct FileMeta {
    /// Its path in the layer (for errors).
    name: Vec<u8>,
    uid: rustix::fs::Uid,
    gid: rustix::fs::Gid,
    mode: u32,
    /// The xattrs that reach the tree.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    times: Timestamps,
}

impl FileMeta {
    /// The metadata `h` gives the file at `name`.
    pub(super) fn of(h: &TarHeader, name: Vec<u8>) -> Result<FileMeta> {
        Ok(FileMeta {
            uid: rustix::fs::Uid::from_raw(id(h.uid, &h.name)?),
            gid: rustix::fs::Gid::from_raw(id(h.gid, &h.name)?),
            mode: h.mode,
            xattrs: h
                .xattrs
                .iter()
                .filter(|(k, _)| applied_xattr(k))
                .cloned()
                .collect(),
            times: file_times(h),
            name,
        })
    }

    /// Its path in the layer.
    pub(super) fn name(&self) -> &[u8] {
        &self.name
    }
}

/// What an entry's inode still needs of its header's owner and mode, judged from its `stat`
/// (`None`: not looked at, so both): `(chown, chmod)`. A chown clears set-id bits, so the mode is
/// only known right when no chown is made.
fn changes_needed(
    st: Option<&rustix::fs::Stat>,
    uid: rustix::fs::Uid,
    gid: rustix::fs::Gid,
    mode: u32,
) -> (bool, bool) {
    let owned = st.is_some_and(|st| st.st_uid == uid.as_raw() && st.st_gid == gid.as_raw());
    let mode_right = owned && st.is_some_and(|st| st.st_mode & 0o7777 == mode);
    (!owned, !mode_right)
}

/// Applies `m` to the open file `f` (in `root_path`'s tree), in c/storage's order: owner, xattrs,
/// mode, times.
pub(super) fn apply_file_meta(f: &File, m: &FileMeta, root_path: &Path) -> Result<()> {
    // Under a small memory limit, its pages go to disk now (see `memory_limit`).
    if crate::memory_limit::early_writeback() {
        let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
    }
    let full = &m.name;
    // A file we just created often has its owner and mode already (created by that owner, with
    // the header's permission bits): an fstat is much cheaper than a chown and a chmod, which
    // each dirty the inode. With xattrs, all three calls are made in c/storage's order (an ACL
    // xattr changes the mode; chown drops capabilities).
    let st = rustix::fs::fstat(f).ok().filter(|_| m.xattrs.is_empty());
    let (chown, chmod) = changes_needed(st.as_ref(), m.uid, m.gid, m.mode);
    if chown {
        rustix::fs::fchown(f, Some(m.uid), Some(m.gid))
            .map_err(|e| errno("chown", root_path, full, e))?;
    }
    for (k, v) in &m.xattrs {
        match rustix::fs::fsetxattr(f, k.as_slice(), v, XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if xattr_error_ignored(e) => {}
            Err(e) => return Err(errno("setting xattr on", root_path, full, e)),
        }
    }
    if chmod {
        rustix::fs::fchmod(f, Mode::from_raw_mode(m.mode))
            .map_err(|e| errno("chmod", root_path, full, e))?;
    }
    rustix::fs::futimens(f, &m.times).map_err(|e| errno("setting times of", root_path, full, e))
}

impl TreeWriter {
    /// Applies the header's owner, mode, xattrs and times to the entry `base` in `parent_comps`,
    /// by its name (an open regular file gets [`apply_file_meta`]).
    pub(super) fn apply_metadata(
        &mut self,
        parent_comps: &[&[u8]],
        base: &[u8],
        h: &TarHeader,
    ) -> Result<()> {
        let root_path = self.root_path.clone();
        let full = {
            let mut c = parent_comps.to_vec();
            c.push(base);
            join(&c)
        };
        let uid = rustix::fs::Uid::from_raw(id(h.uid, &h.name)?);
        let gid = rustix::fs::Gid::from_raw(id(h.gid, &h.name)?);
        let mode = Mode::from_raw_mode(h.mode);
        if h.kind == EntryKind::HardLink {
            // A hardlink's header is applied to the shared inode; when it already matches (an OSTree
            // object linked in), leave the inode alone: it may belong to a repository.
            if h.xattrs.is_empty() {
                let (target, _) = clean_components(&h.linkname);
                if self.known.get(&join(&target)) == Some(&meta_of(h)) {
                    return Ok(());
                }
            }
            // The inode may be a file whose metadata is still queued.
            self.flush_files()?;
            let parent = self.parent(parent_comps)?;
            if let Ok(st) = rustix::fs::statat(&*parent, base, AtFlags::SYMLINK_NOFOLLOW)
                && metadata_matches(&st, h)
            {
                return Ok(());
            }
            // The shared inode changes below: what is known of any path may be stale now.
            self.known.clear();
        }
        let parent = self.parent(parent_comps)?;
        // As for a regular file (see `apply_file_meta`): an entry just created often has its
        // owner and mode already, and a stat is much cheaper than a chown and a chmod. A hardlink's
        // inode was looked at above; with xattrs, all calls are made in c/storage's order.
        let st = (h.kind != EntryKind::HardLink && h.xattrs.is_empty())
            .then(|| rustix::fs::statat(&*parent, base, AtFlags::SYMLINK_NOFOLLOW).ok())
            .flatten();
        let (chown, chmod) = changes_needed(st.as_ref(), uid, gid, h.mode);
        if chown {
            rustix::fs::chownat(
                &*parent,
                base,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| errno("chown", &root_path, &full, e))?;
        }
        if !h.xattrs.is_empty() {
            let p = proc_path(parent.as_fd(), base);
            for (k, v) in h.xattrs.iter().filter(|(k, _)| applied_xattr(k)) {
                match rustix::fs::lsetxattr(p.as_slice(), k.as_slice(), v, XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(e) if xattr_error_ignored(e) => {}
                    Err(e) => return Err(errno("setting xattr on", &root_path, &full, e)),
                }
            }
        }
        let is_symlink = match h.kind {
            EntryKind::Symlink => true,
            EntryKind::HardLink => rustix::fs::statat(&*parent, base, AtFlags::SYMLINK_NOFOLLOW)
                .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink)
                .unwrap_or(true),
            _ => false,
        };
        if !is_symlink && chmod {
            rustix::fs::chmodat(&*parent, base, mode, AtFlags::empty())
                .map_err(|e| errno("chmod", &root_path, &full, e))?;
        }
        match h.kind {
            EntryKind::Directory => self.dirs.push(full, dir_times(h))?,
            _ => {
                rustix::fs::utimensat(&*parent, base, &file_times(h), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| errno("setting times of", &root_path, &full, e))?;
            }
        }
        Ok(())
    }
}
