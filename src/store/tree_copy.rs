//! Copies of a layer tree with owners, modes, xattrs, times and hardlinks kept: a full copy (vfs child
//! layers) or a zero-copy link farm (store-to-store copies: every non-directory is hardlinked; across
//! filesystems, reflinked, else copied).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fsutil::{create_new_file_at, open_dir, open_dir_at, proc_path};

/// How file content reaches the new tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyMode {
    /// New inodes with copied (or reflinked) content.
    Copy,
    /// Hardlinks to the source inodes; a reflink or copy where linking is impossible.
    Link,
}

/// What a tree copy did, per method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Entries hardlinked to the source.
    pub linked: u64,
    /// Files reflinked (shared extents).
    pub reflinked: u64,
    /// Files copied byte by byte.
    pub copied: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks, devices and FIFOs made anew (they have no content to share).
    pub recreated: u64,
}

impl CopyStats {
    /// Adds another copy's counts.
    pub fn add(&mut self, o: CopyStats) {
        self.linked += o.linked;
        self.reflinked += o.reflinked;
        self.copied += o.copied;
        self.dirs += o.dirs;
        self.recreated += o.recreated;
    }

    /// A word for the method that dominated: "hardlink", "reflink" or "copy".
    pub fn method(&self) -> &'static str {
        if self.copied > 0 {
            "copy"
        } else if self.reflinked > 0 {
            "reflink"
        } else {
            "hardlink"
        }
    }
}

/// Copies the tree at `src` to the new directory `dst`.
pub(crate) fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    copy_tree_with(src, dst, CopyMode::Copy).map(|_| ())
}

/// Copies the tree at `src` to the new directory `dst` with the given mode.
pub(crate) fn copy_tree_with(src: &Path, dst: &Path, mode: CopyMode) -> Result<CopyStats> {
    let io = |e: Errno| Error::io("copying layer tree to", dst, std::io::Error::from(e));
    let src_fd = open_dir(src).map_err(|e| Error::io("opening", src, std::io::Error::from(e)))?;
    let st = rustix::fs::fstat(&src_fd).map_err(io)?;
    rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)).map_err(io)?;
    let dst_fd = open_dir(dst).map_err(io)?;
    let mut c = Copier {
        mode,
        links: HashMap::new(),
        path: Vec::new(),
        stats: CopyStats::default(),
    };
    c.copy_dir(src_fd.as_fd(), dst_fd.as_fd(), dst_fd.as_fd())
        .map_err(io)?;
    copy_meta(src_fd.as_fd(), b"", dst_fd.as_fd(), b"", &st).map_err(io)?;
    Ok(c.stats)
}

fn times(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

fn copy_xattrs(src: &[u8], dst: &[u8]) -> rustix::io::Result<()> {
    let mut names = vec![0u8; 65536];
    let n = match rustix::fs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut value = vec![0u8; 65536];
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let len = rustix::fs::lgetxattr(src, name, &mut value[..])?;
        match rustix::fs::lsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) | Err(Errno::PERM) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Owner, xattrs, mode and times of `dst_name` in `dst_dir` from `st` and the source's xattrs.
fn copy_meta(
    src_dir: BorrowedFd<'_>,
    src_name: &[u8],
    dst_dir: BorrowedFd<'_>,
    dst_name: &[u8],
    st: &rustix::fs::Stat,
) -> rustix::io::Result<()> {
    let ft = FileType::from_raw_mode(st.st_mode);
    let name: &[u8] = if dst_name.is_empty() { b"." } else { dst_name };
    rustix::fs::chownat(
        dst_dir,
        name,
        Some(rustix::fs::Uid::from_raw(st.st_uid)),
        Some(rustix::fs::Gid::from_raw(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    copy_xattrs(&proc_path(src_dir, src_name), &proc_path(dst_dir, dst_name))?;
    if ft != FileType::Symlink {
        rustix::fs::chmodat(
            dst_dir,
            name,
            Mode::from_raw_mode(st.st_mode & 0o7777),
            AtFlags::empty(),
        )?;
    }
    rustix::fs::utimensat(dst_dir, name, &times(st), AtFlags::SYMLINK_NOFOLLOW)
}

struct Copier {
    mode: CopyMode,
    /// Source inode → its first path in the new tree (to keep hardlink groups in Copy mode).
    links: HashMap<(u64, u64), Vec<u8>>,
    path: Vec<u8>,
    stats: CopyStats,
}

impl Copier {
    fn copy_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        dst_root: BorrowedFd<'_>,
    ) -> rustix::io::Result<()> {
        for entry in Dir::read_from(src)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes().to_vec();
            if name == b"." || name == b".." {
                continue;
            }
            let saved = self.path.len();
            if !self.path.is_empty() {
                self.path.push(b'/');
            }
            self.path.extend_from_slice(&name);
            let r = self.copy_entry(src, dst, dst_root, &name);
            self.path.truncate(saved);
            r?;
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        dst_root: BorrowedFd<'_>,
        name: &[u8],
    ) -> rustix::io::Result<()> {
        let st = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        if ft == FileType::Directory {
            rustix::fs::mkdirat(dst, name, Mode::from_raw_mode(0o700))?;
            let s: OwnedFd = open_dir_at(src, name)?;
            let d: OwnedFd = open_dir_at(dst, name)?;
            self.copy_dir(s.as_fd(), d.as_fd(), dst_root)?;
            self.stats.dirs += 1;
            return copy_meta(src, name, dst, name, &st);
        }
        if self.mode == CopyMode::Link {
            match rustix::fs::linkat(src, name, dst, name, AtFlags::empty()) {
                Ok(()) => {
                    self.stats.linked += 1;
                    return Ok(());
                }
                // Another filesystem (or mount): fall back to copying, keeping hardlink groups.
                Err(Errno::XDEV) | Err(Errno::PERM) | Err(Errno::MLINK) => {}
                Err(e) => return Err(e),
            }
        }
        if st.st_nlink > 1 {
            let key = (st.st_dev as u64, st.st_ino as u64);
            if let Some(first) = self.links.get(&key) {
                return rustix::fs::linkat(dst_root, first.as_slice(), dst, name, AtFlags::empty());
            }
            self.links.insert(key, self.path.clone());
        }
        match ft {
            FileType::RegularFile => {
                let s = rustix::fs::openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let d = create_new_file_at(dst, name)?;
                if copy_content(&s, &d, st.st_size as u64)? {
                    self.stats.reflinked += 1;
                } else {
                    self.stats.copied += 1;
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dst, name)?;
                self.stats.recreated += 1;
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rustix::fs::mknodat(
                    dst,
                    name,
                    ft,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    st.st_rdev,
                )?;
                self.stats.recreated += 1;
            }
            FileType::Directory | FileType::Unknown => {}
        }
        copy_meta(src, name, dst, name, &st)
    }
}

/// Copies file content: reflink when the filesystem can (returns true), else copy_file_range, else
/// read/write (returns false).
pub(crate) fn copy_content(src: &OwnedFd, dst: &OwnedFd, len: u64) -> rustix::io::Result<bool> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(true);
    }
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(Errno::XDEV) | Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP) => {
                let mut s = File::from(src.try_clone().map_err(|_| Errno::BADF)?);
                let mut d = File::from(dst.try_clone().map_err(|_| Errno::BADF)?);
                std::io::copy(&mut s, &mut d).map_err(|_| Errno::IO)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}
