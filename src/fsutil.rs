//! Small fd-relative filesystem helpers shared by the drivers and the layer writer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;

/// Opens a directory (for use as a dirfd) relative to `dir`, without following a final symlink.
pub(crate) fn open_dir_at(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Creates the regular file `name` in `dir` for writing: it must not exist (not even as a
/// symlink), and it starts private (0600) until its metadata is applied.
pub(crate) fn create_new_file_at(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
) -> rustix::io::Result<OwnedFd> {
    create_new_file_mode_at(dir, name, 0o600)
}

/// [`create_new_file_at`] with the permission bits `perm` (the umask and default ACLs apply).
pub(crate) fn create_new_file_mode_at(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
    perm: u32,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(perm & 0o777),
    )
}

/// Opens a directory by absolute or relative path.
pub(crate) fn open_dir(path: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Removes `name` below `dir`, recursively if it is a directory. A missing entry is not an error.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    // Only a child of `dir`: never the directory itself, its parent, or a path through others.
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(Errno::INVAL);
    }
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let child = open_dir_at(dir, name)?;
        remove_children(child.as_fd(), |_| true)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())
    }
}

/// Removes every child of the directory `dir` for which `keep_not` returns true.
pub(crate) fn remove_children(
    dir: BorrowedFd<'_>,
    mut should_remove: impl FnMut(&[u8]) -> bool,
) -> rustix::io::Result<()> {
    let mut names = Vec::new();
    // `dir` may be an O_PATH descriptor, which cannot be listed: open the directory itself.
    let listable = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    for entry in Dir::read_from(&listable)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if should_remove(name) {
            names.push(name.to_vec());
        }
    }
    for name in names {
        remove_all_at(dir, &name)?;
    }
    Ok(())
}

/// Removes a path recursively; a missing path is not an error.
pub(crate) fn remove_all(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The `/proc/self/fd/N/name` path that reaches `name` inside the directory `dir` without following
/// anything but the directory's own fd.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &[u8]) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // With an empty name, "/." keeps the last component from being the magic link itself, which
    // l*xattr calls would act on instead of the directory.
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(if name.is_empty() { b"." } else { name });
    p
}

/// `openat2`, tried again while it fails with `EAGAIN`: with `RESOLVE_IN_ROOT` or
/// `RESOLVE_BENEATH`, the kernel refuses a resolution through `..` that raced with a rename or a
/// mount anywhere on the system (it cannot rule out an escape), and openat2(2) asks the caller
/// to retry. A concurrent podman renames all the time.
pub(crate) fn openat2_retry<Fd: AsFd, P: rustix::path::Arg + Copy>(
    dirfd: Fd,
    path: P,
    flags: OFlags,
    mode: Mode,
    resolve: rustix::fs::ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(&dirfd, path, flags, mode, resolve) {
            Err(Errno::AGAIN) if tries < 128 => tries += 1,
            r => return r,
        }
    }
}

/// Opens an input file for reading only if it is a regular file: `O_NONBLOCK` so that a FIFO or
/// device cannot block the open, then `fstat`. With `beneath`, `path` is resolved below that
/// directory and may not leave it (no `..` or symlink out of it). A non-regular file is
/// `ErrorKind::InvalidInput`.
pub(crate) fn open_regular(beneath: Option<&Path>, path: &Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::ResolveFlags;
    let fd = match beneath {
        Some(dir) => {
            let dirfd = open_dir(dir)?;
            openat2_retry(
                &dirfd,
                path,
                INPUT_FLAGS,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            )?
        }
        None => rustix::fs::open(path, INPUT_FLAGS, Mode::empty())?,
    };
    regular_only(fd)
}

/// [`open_regular`] relative to the open directory `dir`, without following a final symlink: for
/// the objects of a repository or a tree read by the thousand.
pub(crate) fn open_regular_at(
    dir: BorrowedFd<'_>,
    name: impl rustix::path::Arg,
) -> std::io::Result<std::fs::File> {
    let fd = rustix::fs::openat(dir, name, INPUT_FLAGS | OFlags::NOFOLLOW, Mode::empty())?;
    regular_only(fd)
}

/// How an input file is opened: read-only, and never blocking in `open` (a FIFO, a tty).
const INPUT_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// `fd` as a file if it is a regular one (a FIFO, device, socket or directory is
/// `ErrorKind::InvalidInput`), with `O_NONBLOCK` cleared so reads behave as usual.
fn regular_only(fd: OwnedFd) -> std::io::Result<std::fs::File> {
    let st = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(std::fs::File::from(fd))
}

/// A reader of a shared file from its start, with `pread`: readers of one file do not move each
/// other.
#[derive(Debug)]
pub(crate) struct ReadAt<'a> {
    file: &'a std::fs::File,
    pos: u64,
}

impl<'a> ReadAt<'a> {
    /// A reader of `file` from its first byte.
    pub(crate) fn new(file: &'a std::fs::File) -> Self {
        ReadAt { file, pos: 0 }
    }
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
