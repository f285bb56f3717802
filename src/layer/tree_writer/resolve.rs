//! Directories of the layer by path: resolved inside the layer root (`openat2(RESOLVE_IN_ROOT)`),
//! created when missing as c/storage's implied directories are, and kept in the writer's
//! [`DirCache`](super::dir_cache::DirCache).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::super::path::join;
use super::{TreeWriter, errno};
use crate::error::Result;
use crate::fsutil::remove_all_at;

impl TreeWriter {
    /// An `O_PATH` fd of the directory at `path`, resolved inside the layer root.
    pub(super) fn resolve_in_root(&self, path: &[u8]) -> rustix::io::Result<OwnedFd> {
        if path.is_empty() {
            return rustix::fs::openat(
                self.root.as_fd(),
                ".",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            );
        }
        crate::fsutil::openat2_retry(
            self.root.as_fd(),
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// Returns an fd of the parent directory, creating missing directories (0755, root-owned) as
    /// c/storage's implied-directory creation does.
    pub(super) fn parent(&mut self, comps: &[&[u8]]) -> Result<Arc<OwnedFd>> {
        let key = join(comps);
        if let Some(fd) = self.cache.get(&key) {
            return Ok(fd);
        }
        match self.resolve_in_root(&key) {
            Ok(fd) => Ok(self.cache.insert(key, fd)),
            Err(Errno::NOENT) => self.create_parents(comps),
            Err(e) => Err(errno("resolving", &self.root_path, &key, e)),
        }
    }

    /// Removes what is at `base` under `parent` (the directory `parent_comps`), which an entry
    /// replaces, as in c/storage; cached directories and known inodes may be gone with it. Returns
    /// the parent again.
    pub(super) fn remove_existing(
        &mut self,
        parent: &OwnedFd,
        parent_comps: &[&[u8]],
        base: &[u8],
        full: &[u8],
    ) -> Result<Arc<OwnedFd>> {
        self.flush_files()?;
        self.removed = true;
        remove_all_at(parent.as_fd(), base)
            .map_err(|e| errno("removing", &self.root_path, full, e))?;
        self.cache.clear();
        self.known.clear();
        self.parent(parent_comps)
    }

    /// An existing directory of the layer (nothing is created).
    pub(super) fn existing_dir(&mut self, path: &[u8]) -> rustix::io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cache.get(path) {
            return Ok(fd);
        }
        let fd = self.resolve_in_root(path)?;
        Ok(self.cache.insert(path.to_vec(), fd))
    }

    /// Creates the missing directories of `comps` (0755, as c/storage's implied directories), from
    /// the deepest one that exists; every directory on the way goes into the cache.
    pub(super) fn create_parents(&mut self, comps: &[&[u8]]) -> Result<Arc<OwnedFd>> {
        let root_path = self.root_path.clone();
        // The deepest existing prefix (the whole path is known to be missing).
        let mut depth = comps.len();
        let mut current = loop {
            if depth == 0 {
                break self
                    .existing_dir(b"")
                    .map_err(|e| errno("opening", &root_path, b"", e))?;
            }
            depth -= 1;
            if depth == 0 {
                continue;
            }
            let prefix = join(&comps[..depth]);
            if let Some(fd) = self.cache.get(&prefix) {
                break fd;
            }
            match self.resolve_in_root(&prefix) {
                Ok(fd) => break self.cache.insert(prefix, fd),
                Err(Errno::NOENT) => {}
                Err(e) => return Err(errno("resolving", &root_path, &prefix, e)),
            }
        };
        for i in depth..comps.len() {
            let prefix = join(&comps[..=i]);
            let fd = match rustix::fs::mkdirat(&*current, comps[i], Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    rustix::fs::chmodat(
                        &*current,
                        comps[i],
                        Mode::from_raw_mode(0o755),
                        AtFlags::empty(),
                    )
                    .map_err(|e| errno("chmod", &root_path, &prefix, e))?;
                    // Just created as a directory: open it where it is, never following a link.
                    rustix::fs::openat(
                        &*current,
                        comps[i],
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| errno("opening", &root_path, &prefix, e))?
                }
                // Something is there after all (a symlink, resolved inside the layer).
                Err(Errno::EXIST) => self
                    .resolve_in_root(&prefix)
                    .map_err(|e| errno("resolving", &root_path, &prefix, e))?,
                Err(e) => return Err(errno("creating directory", &root_path, &prefix, e)),
            };
            current = self.cache.insert(prefix, fd);
        }
        Ok(current)
    }
}
