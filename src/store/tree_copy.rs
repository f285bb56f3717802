//! Full copy of a directory tree with owners, modes, xattrs, times and hardlinks kept (vfs layers).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::Timespec;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Timestamps, XattrFlags};

use crate::error::{Error, Result};
use crate::fsutil::{open_dir, open_dir_at, proc_path};

/// Copies the tree at `src` to the new directory `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let io = |e: rustix::io::Errno| Error::io("copying layer tree", dst, std::io::Error::from(e));
    let src_fd = open_dir(src).map_err(|e| Error::io("opening", src, std::io::Error::from(e)))?;
    let st = rustix::fs::fstat(&src_fd).map_err(io)?;
    rustix::fs::mkdir(dst, Mode::from_raw_mode(0o700)).map_err(io)?;
    let dst_fd = open_dir(dst).map_err(io)?;
    let mut links = HashMap::new();
    let mut path = Vec::new();
    copy_dir(
        src_fd.as_fd(),
        dst_fd.as_fd(),
        dst_fd.as_fd(),
        &mut path,
        &mut links,
    )
    .map_err(io)?;
    copy_meta(src_fd.as_fd(), b"", dst_fd.as_fd(), b"", &st).map_err(io)?;
    Ok(())
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
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(src, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => return Ok(()),
        Err(e) => return Err(e),
    };
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 65536];
        let len = rustix::fs::lgetxattr(src, name, &mut value[..])?;
        match rustix::fs::lsetxattr(dst, name, &value[..len], XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) | Err(rustix::io::Errno::PERM) => {}
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

fn copy_dir(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    path: &mut Vec<u8>,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> rustix::io::Result<()> {
    for entry in Dir::read_from(src)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes().to_vec();
        if name == b"." || name == b".." {
            continue;
        }
        let st = rustix::fs::statat(src, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)?;
        let ft = FileType::from_raw_mode(st.st_mode);
        let saved = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&name);
        if ft != FileType::Directory && st.st_nlink > 1 {
            let key = (st.st_dev as u64, st.st_ino as u64);
            if let Some(first) = links.get(&key) {
                rustix::fs::linkat(
                    dst_root,
                    first.as_slice(),
                    dst,
                    name.as_slice(),
                    AtFlags::empty(),
                )?;
                path.truncate(saved);
                continue;
            }
            links.insert(key, path.clone());
        }
        match ft {
            FileType::Directory => {
                rustix::fs::mkdirat(dst, name.as_slice(), Mode::from_raw_mode(0o700))?;
                let s: OwnedFd = open_dir_at(src, name.as_slice())?;
                let d: OwnedFd = open_dir_at(dst, name.as_slice())?;
                copy_dir(s.as_fd(), d.as_fd(), dst_root, path, links)?;
            }
            FileType::RegularFile => {
                let s = rustix::fs::openat(
                    src,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let d = rustix::fs::openat(
                    dst,
                    name.as_slice(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                copy_content(&s, &d, st.st_size as u64)?;
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, name.as_slice(), Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dst, name.as_slice())?;
            }
            FileType::CharacterDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket => {
                rustix::fs::mknodat(
                    dst,
                    name.as_slice(),
                    ft,
                    Mode::from_raw_mode(st.st_mode & 0o7777),
                    st.st_rdev,
                )?;
            }
            FileType::Unknown => {}
        }
        copy_meta(src, &name, dst, &name, &st)?;
        path.truncate(saved);
    }
    Ok(())
}

/// Copies file content: reflink when the filesystem can, else copy_file_range, else read/write.
pub fn copy_content(src: &OwnedFd, dst: &OwnedFd, len: u64) -> rustix::io::Result<()> {
    if rustix::fs::ioctl_ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(rustix::io::Errno::XDEV)
            | Err(rustix::io::Errno::NOSYS)
            | Err(rustix::io::Errno::INVAL) => {
                let mut s = File::from(src.try_clone().map_err(|_| rustix::io::Errno::BADF)?);
                let mut d = File::from(dst.try_clone().map_err(|_| rustix::io::Errno::BADF)?);
                std::io::copy(&mut s, &mut d).map_err(|_| rustix::io::Errno::IO)?;
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
