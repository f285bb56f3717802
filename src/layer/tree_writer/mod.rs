//! Materializes tar entries in a layer's tree, safely and as c/storage's extraction does.
//!
//! Every path is resolved with `openat2(RESOLVE_IN_ROOT)` against the layer root, so `..` and symlinks
//! (absolute or relative) inside the layer resolve inside it, like c/storage's chrooted extraction, and
//! nothing is ever written outside. The last component is always created or changed with `*at` calls that
//! do not follow it.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags};
use rustix::io::Errno;

mod deferred;
mod dir_cache;
mod dir_times;
mod metadata;
mod resolve;
mod whiteout;

use deferred::{Deferred, QueuedFile};
use dir_cache::DirCache;
use dir_times::DirTimes;
pub(crate) use metadata::applied_xattr;
use metadata::{FileMeta, apply_file_meta, dir_times, id, xattr_error_ignored};

use super::path::{clean_components, join};
use super::shared_bytes::SharedBytes;
use super::tar_header::{EntryKind, TarHeader};
use crate::error::{Error, Result};
use crate::fsutil::create_new_file_mode_at;

/// Prefix of whiteout entries.
pub(crate) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
pub(crate) const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque (root stores).
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// How whiteouts are represented in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutStyle {
    /// overlay: a 0:0 character device for a deleted path, an xattr for an opaque directory.
    Overlay,
    /// vfs: the tree is the full filesystem, so whiteouts delete.
    Delete,
}

/// Whether [`TreeWriter::begin_linked`] linked the source, or opened a file for its bytes.
#[derive(Debug)]
pub(crate) enum Linked {
    /// The entry is a hardlink to the source.
    Yes,
    /// Write the content into this file, then call [`TreeWriter::finish_file`].
    No(OpenFile),
}

/// Whether an inode already has the owner, mode and mtime a header gives.
fn metadata_matches(st: &rustix::fs::Stat, h: &TarHeader) -> bool {
    let symlink = FileType::from_raw_mode(st.st_mode) == FileType::Symlink;
    u64::from(st.st_uid) == h.uid
        && u64::from(st.st_gid) == h.gid
        && (symlink || st.st_mode & 0o7777 == h.mode)
        && st.st_mtime == h.mtime.max(0)
        && (h.mtime < 0 || st.st_mtime_nsec as i64 == i64::from(h.mtime_nsec))
        && h.xattrs.is_empty()
}

/// A regular file being written; finish it with [`TreeWriter::finish_file`].
#[derive(Debug)]
pub(crate) struct OpenFile(FileOut);

#[derive(Debug)]
enum FileOut {
    /// Written here, through the file.
    Direct(File),
    /// Bytes and metadata handed to the tree writer's file thread.
    Queued(QueuedFile),
}

impl OpenFile {
    /// The file itself, when it is written directly (opened by [`TreeWriter::begin`]).
    pub fn file(&self) -> Option<&File> {
        match &self.0 {
            FileOut::Direct(f) => Some(f),
            FileOut::Queued(_) => None,
        }
    }

    /// Appends `b` to the file (named `name` in errors).
    pub fn write_all(&mut self, tree: &TreeWriter, b: &[u8], name: &[u8]) -> Result<()> {
        match &mut self.0 {
            FileOut::Direct(f) => {
                std::io::Write::write_all(f, b).map_err(|e| Error::write_entry(name, e))
            }
            FileOut::Queued(q) => q.write(tree.file_thread()?, b),
        }
    }

    /// Whether [`write_shared`](Self::write_shared) hands the bytes on without copying them (the
    /// file is written by the tree writer's file thread).
    pub(crate) fn takes_shared(&self) -> bool {
        matches!(self.0, FileOut::Queued(_))
    }

    /// Appends `b`, which a file written by the file thread takes as it is.
    pub(crate) fn write_shared(
        &mut self,
        tree: &TreeWriter,
        b: SharedBytes,
        name: &[u8],
    ) -> Result<()> {
        match &mut self.0 {
            FileOut::Direct(f) => {
                std::io::Write::write_all(f, &b).map_err(|e| Error::write_entry(name, e))
            }
            FileOut::Queued(q) => q.write_shared(tree.file_thread()?, b),
        }
    }
}

/// Writes the entries of one layer into its tree.
#[derive(Debug)]
pub struct TreeWriter {
    root: OwnedFd,
    root_path: PathBuf,
    style: WhiteoutStyle,
    /// Directory entries whose times are set at the end (creating children changes them).
    dirs: DirTimes,
    /// Paths written by this layer (vfs opaque handling keeps them).
    unpacked: HashSet<Vec<u8>>,
    /// Directories resolved so far (see [`DirCache`]).
    cache: DirCache,
    /// Whether `linkat(AT_EMPTY_PATH)` from an open file works here (it needs CAP_DAC_READ_SEARCH).
    link_by_fd: bool,
    /// Regular files of this layer whose inode has exactly their header's metadata (written or
    /// linked in by this writer), by path: a hardlink to one of them with the same metadata needs no
    /// `stat`. Emptied whenever an inode may have changed otherwise.
    known: HashMap<Vec<u8>, Meta>,
    /// Whether anything was removed from the tree (an entry replaced, a vfs whiteout): only then
    /// may a directory entry be gone or replaced by the time its times are set.
    removed: bool,
    /// The thread that writes the bytes and metadata of files opened by
    /// [`begin_queued`](Self::begin_queued), started with the first one.
    deferred: Option<Deferred>,
    /// Whether [`begin_queued`](Self::begin_queued) may use that thread (see
    /// [`with_file_thread`](Self::with_file_thread)).
    file_thread: bool,
}

/// The most files [`TreeWriter`] remembers the metadata of (about 100 bytes each).
const KNOWN_MAX: usize = 4 * 1024;

/// An eighth of the process's descriptor limit (the soft one): what one part of a layer writer
/// (its directory cache, its file thread's queue) may hold open, so that two writers at once
/// leave most descriptors to everything else.
fn fd_share() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(soft / 8).unwrap_or(usize::MAX)
}

/// Longest path c/storage can create or export: its paths are strings below the layer directory,
/// and the kernel refuses those of `PATH_MAX` (4096) bytes or more.
const PATH_MAX: usize = 4096;

/// Owner, mode and mtime of a header: what a hardlink entry applies to the shared inode.
type Meta = (u64, u64, u32, i64, u32);

fn meta_of(h: &TarHeader) -> Meta {
    (h.uid, h.gid, h.mode, h.mtime, h.mtime_nsec)
}

fn errno(what: &'static str, path: &Path, name: &[u8], e: Errno) -> Error {
    let mut p = path.as_os_str().as_encoded_bytes().to_vec();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name);
    }
    Error::io(
        what,
        Path::new(&String::from_utf8_lossy(&p).into_owned()),
        std::io::Error::from(e),
    )
}

impl TreeWriter {
    /// Opens the layer tree at `root_path`.
    pub fn new(root_path: &Path, style: WhiteoutStyle) -> Result<TreeWriter> {
        let root = crate::fsutil::open_dir(root_path)
            .map_err(|e| Error::io("opening layer tree", root_path, e))?;
        Ok(TreeWriter {
            root,
            root_path: root_path.to_path_buf(),
            style,
            dirs: DirTimes::new(root_path),
            unpacked: HashSet::new(),
            cache: DirCache::new(),
            link_by_fd: true,
            known: HashMap::new(),
            removed: false,
            deferred: None,
            file_thread: false,
        })
    }

    /// Lets the tree writer hand the bytes and metadata of files that come as bytes to a thread of
    /// its own (see [`begin_queued`](Self::begin_queued)): worth it when this layer is the only
    /// one being written (two cores, one layer); when layers are written side by side, they keep
    /// the cores busy already.
    pub(crate) fn with_file_thread(mut self, on: bool) -> Self {
        self.file_thread = on;
        self
    }

    /// The file thread, which a queued file was handed to.
    fn file_thread(&self) -> Result<&Deferred> {
        self.deferred
            .as_ref()
            .ok_or_else(|| Error::Internal("a queued file without a file thread".into()))
    }

    /// Waits until the file thread has written and closed every file handed to it.
    fn flush_files(&self) -> Result<()> {
        match &self.deferred {
            Some(d) => d.flush(),
            None => Ok(()),
        }
    }

    /// Like [`begin`](Self::begin), but a regular file's bytes and metadata are written by the
    /// tree writer's file thread (when [`with_file_thread`](Self::with_file_thread) allowed one),
    /// while the next entries are created: for content that comes as bytes (a tar stream), not as
    /// a file to clone.
    pub(crate) fn begin_queued(&mut self, h: &TarHeader) -> Result<Option<OpenFile>> {
        let opened = self.begin(h)?;
        if self.file_thread && self.deferred.is_none() {
            self.deferred = Deferred::start(self.root_path.clone());
        }
        Ok(match (opened, &self.deferred) {
            (Some(OpenFile(FileOut::Direct(f))), Some(_)) => {
                let (comps, _) = clean_components(&h.name);
                Some(OpenFile(FileOut::Queued(QueuedFile::new(
                    f,
                    join(&comps),
                    h.size,
                ))))
            }
            (opened, _) => opened,
        })
    }

    /// Creates the entry described by `h`. For a regular file, returns the file to write its data to.
    pub(crate) fn begin(&mut self, h: &TarHeader) -> Result<Option<OpenFile>> {
        let (comps, _) = clean_components(&h.name);
        if h.kind == EntryKind::GlobalHeader {
            // c/storage ignores a global header, but first creates the implied parent
            // directories of its name, as for every entry.
            if let Some((_, parent_comps)) = comps.split_last()
                && !parent_comps.is_empty()
            {
                let parent_comps = parent_comps.to_vec();
                self.parent(&parent_comps)?;
            }
            return Ok(None);
        }
        let Some((&base, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): c/storage's overlay ignores it; its vfs applies it.
            if self.style == WhiteoutStyle::Delete && h.kind == EntryKind::Directory {
                self.apply_root_metadata(h)?;
            }
            return Ok(None);
        };
        let parent_comps: Vec<&[u8]> = parent_comps.to_vec();
        let full = join(&comps);
        let too_long = |p: &[u8]| self.root_path.as_os_str().len() + 1 + p.len() >= PATH_MAX;
        if too_long(&full) || (h.kind == EntryKind::HardLink && too_long(&h.linkname)) {
            return Err(Error::Unsafe {
                entry: String::from_utf8_lossy(&h.name).chars().take(200).collect(),
                reason: format!(
                    "is a path too long for containers-storage to write or export ({} bytes within the layer)",
                    full.len().max(h.linkname.len())
                ),
            });
        }
        if base.starts_with(WHITEOUT_PREFIX) {
            self.whiteout(&parent_comps, base, h)?;
            return Ok(None);
        }
        let root_path = self.root_path.clone();
        let style = self.style;
        let link_target = if h.kind == EntryKind::HardLink {
            Some(self.link_target(h)?)
        } else {
            None
        };
        let mut parent = self.parent(&parent_comps)?;
        let mut file = None;
        // Create first; only when the name is taken look at what is there (c/storage replaces
        // anything but a directory over a directory).
        let mut replaced = false;
        loop {
            let created = create_node(&parent, base, h, link_target.as_ref(), &mut file)?;
            match created {
                Ok(()) => break,
                Err(Errno::EXIST) if !replaced => {
                    let st = rustix::fs::statat(&*parent, base, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| errno("stat", &root_path, &full, e))?;
                    if FileType::from_raw_mode(st.st_mode) == FileType::Directory
                        && h.kind == EntryKind::Directory
                    {
                        break;
                    }
                    parent = self.remove_existing(&parent, &parent_comps, base, &full)?;
                    replaced = true;
                }
                Err(Errno::NOENT) if h.kind == EntryKind::HardLink => {
                    return Err(not_in_layer(h));
                }
                Err(e) => {
                    let what = match h.kind {
                        EntryKind::Directory => "creating directory",
                        EntryKind::Regular => "creating file",
                        EntryKind::Symlink => "creating symlink",
                        EntryKind::HardLink => "creating hardlink",
                        _ => "creating device",
                    };
                    return Err(errno(what, &root_path, &full, e));
                }
            }
        }
        if style == WhiteoutStyle::Delete {
            self.unpacked.insert(full);
        }
        if file.is_none() {
            self.apply_metadata(&parent_comps, base, h)?;
        }
        Ok(file)
    }

    /// A hardlink's target: its directory, resolved inside the layer (never created), and name.
    fn link_target(&mut self, h: &TarHeader) -> Result<(Arc<OwnedFd>, Vec<u8>)> {
        let unsafe_link = |reason: String| Error::Unsafe {
            entry: String::from_utf8_lossy(&h.name).into_owned(),
            reason,
        };
        let (target, escaped) = clean_components(&h.linkname);
        if escaped {
            return Err(unsafe_link(format!(
                "is a hardlink to {:?}, outside the layer",
                String::from_utf8_lossy(&h.linkname)
            )));
        }
        let Some((&tbase, tparent)) = target.split_last() else {
            return Err(unsafe_link("is a hardlink to the layer root".into()));
        };
        let tdir = self
            .existing_dir(&join(tparent))
            .map_err(|_| not_in_layer(h))?;
        Ok((tdir, tbase.to_vec()))
    }

    fn apply_root_metadata(&mut self, h: &TarHeader) -> Result<()> {
        let uid = rustix::fs::Uid::from_raw(id(h.uid, &h.name)?);
        let gid = rustix::fs::Gid::from_raw(id(h.gid, &h.name)?);
        let e = |what, err| errno(what, &self.root_path, b"", err);
        rustix::fs::fchown(&self.root, Some(uid), Some(gid)).map_err(|err| e("chown", err))?;
        for (k, v) in h.xattrs.iter().filter(|(k, _)| applied_xattr(k)) {
            match rustix::fs::fsetxattr(&self.root, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if xattr_error_ignored(e) => {}
                Err(err) => return Err(e("setting xattr on", err)),
            }
        }
        rustix::fs::fchmod(&self.root, Mode::from_raw_mode(h.mode))
            .map_err(|err| e("chmod", err))?;
        self.dirs.push(Vec::new(), dir_times(h))?;
        Ok(())
    }

    /// Creates a regular file entry as a hardlink to `src` (open, at `src_path`) when `src` already
    /// has exactly the entry's metadata (owner, mode, mtime; the entry carries no xattrs), so nothing
    /// about `src` changes; otherwise (or across filesystems) creates it as [`begin`](Self::begin)
    /// does, for its bytes.
    pub(crate) fn begin_linked(
        &mut self,
        h: &TarHeader,
        src: &File,
        src_path: &Path,
    ) -> Result<Linked> {
        let fallback = |w: &mut TreeWriter| -> Result<Linked> {
            match w.begin(h)? {
                Some(f) => Ok(Linked::No(f)),
                None => Err(Error::Internal("a regular entry opened no file".into())),
            }
        };
        let usable = h.kind == EntryKind::Regular
            && h.xattrs.is_empty()
            && rustix::fs::fstat(src).is_ok_and(|st| {
                FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                    && metadata_matches(&st, h)
            });
        let (comps, _) = clean_components(&h.name);
        let Some((&base, parent_comps)) = comps.split_last() else {
            return fallback(self);
        };
        if !usable || base.starts_with(WHITEOUT_PREFIX) {
            return fallback(self);
        }
        let parent_comps: Vec<&[u8]> = parent_comps.to_vec();
        let full = join(&comps);
        let root_path = self.root_path.clone();
        let mut parent = self.parent(&parent_comps)?;
        let mut replaced = false;
        loop {
            let mut linked = Err(Errno::NOENT);
            if self.link_by_fd {
                linked = rustix::fs::linkat(src, "", &*parent, base, AtFlags::EMPTY_PATH);
                if matches!(linked, Err(Errno::NOENT) | Err(Errno::PERM)) {
                    // Not allowed without CAP_DAC_READ_SEARCH: link by path from now on.
                    self.link_by_fd = false;
                }
            }
            if !self.link_by_fd {
                linked =
                    rustix::fs::linkat(rustix::fs::CWD, src_path, &*parent, base, AtFlags::empty());
            }
            match linked {
                Ok(()) => {
                    self.remember(full.clone(), meta_of(h));
                    if self.style == WhiteoutStyle::Delete {
                        self.unpacked.insert(full);
                    }
                    return Ok(Linked::Yes);
                }
                Err(Errno::EXIST) if !replaced => {
                    parent = self.remove_existing(&parent, &parent_comps, base, &full)?;
                    replaced = true;
                }
                Err(Errno::XDEV) | Err(Errno::PERM) | Err(Errno::MLINK) => return fallback(self),
                Err(e) => return Err(errno("linking", &root_path, &full, e)),
            }
        }
    }

    /// Sets owner, xattrs, mode and times of a regular file after its data was written.
    pub(crate) fn finish_file(&mut self, f: OpenFile, h: &TarHeader) -> Result<()> {
        let (comps, _) = clean_components(&h.name);
        if comps.is_empty() {
            return Ok(());
        }
        let full = join(&comps);
        let meta = FileMeta::of(h, full.clone())?;
        match f.0 {
            FileOut::Direct(f) => apply_file_meta(&f, &meta, &self.root_path)?,
            FileOut::Queued(q) => q.finish(self.file_thread()?, meta)?,
        }
        if h.kind == EntryKind::Regular && h.xattrs.is_empty() {
            self.remember(full, meta_of(h));
        }
        Ok(())
    }

    /// Remembers that the file at `full` has exactly `meta`. The memory stays bounded whatever the
    /// layer's size: past [`KNOWN_MAX`] files the map starts again (a hardlink to a file it
    /// forgot costs one `stat`).
    fn remember(&mut self, full: Vec<u8>, meta: Meta) {
        if self.known.len() >= KNOWN_MAX {
            self.known.clear();
            self.known.shrink_to(KNOWN_MAX);
        }
        self.known.insert(full, meta);
    }

    /// Applies directory times, last, as c/storage does.
    pub fn finish(mut self) -> Result<()> {
        self.flush_files()?;
        self.cache.clear();
        let dirs = std::mem::replace(&mut self.dirs, DirTimes::new(&self.root_path));
        dirs.for_each(|path, times| self.set_dir_times(path, times))
    }

    /// Sets the times of the directory entry at `path`, once the layer's entries are all written.
    fn set_dir_times(&mut self, path: &[u8], times: &Timestamps) -> Result<()> {
        let (comps, _) = clean_components(path);
        if comps.is_empty() {
            rustix::fs::futimens(&self.root, times)
                .map_err(|e| errno("setting times of", &self.root_path, b"", e))?;
            return Ok(());
        }
        if !self.removed {
            // Nothing was removed: every directory is still where its entry made it.
            let Some((&base, parent_comps)) = comps.split_last() else {
                return Ok(());
            };
            let parent_path = join(parent_comps);
            let parent = self
                .existing_dir(&parent_path)
                .map_err(|e| errno("resolving", &self.root_path, &parent_path, e))?;
            rustix::fs::utimensat(&*parent, base, times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| errno("setting times of", &self.root_path, path, e))?;
            return Ok(());
        }
        // As c/storage's Chtimes (utimensat, following) in its chroot: the name is followed
        // (inside the layer), and a directory that a later entry removed fails the layer (ENOENT),
        // but whatever a later entry put in its place (a file written through a symlink after a
        // whiteout removed the directory) gets the times, as os.Chtimes gives them.
        let fd = crate::fsutil::openat2_retry(
            &self.root,
            join(&comps).as_slice(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| errno("setting times of", &self.root_path, path, e))?;
        // The magic link itself, followed to the inode: not proc_path's "N/.", which fails with
        // ENOTDIR when the name is no longer a directory.
        let p = format!("/proc/self/fd/{}", fd.as_raw_fd());
        rustix::fs::utimensat(rustix::fs::CWD, p.as_str(), times, AtFlags::empty())
            .map_err(|e| errno("setting times of", &self.root_path, path, e))?;
        Ok(())
    }

    /// Whether the whiteout style deletes.
    pub fn style(&self) -> WhiteoutStyle {
        self.style
    }
}

/// The error for a hardlink whose target is not in the layer.
fn not_in_layer(h: &TarHeader) -> Error {
    Error::Unsafe {
        entry: String::from_utf8_lossy(&h.name).into_owned(),
        reason: format!(
            "is a hardlink to {:?}, which is not in the layer",
            String::from_utf8_lossy(&h.linkname)
        ),
    }
}

/// Creates the node of `h` as `base` in `parent` (a regular file opened into `file`); the
/// kernel's answer, for the caller to decide about a name already taken.
fn create_node(
    parent: &Arc<OwnedFd>,
    base: &[u8],
    h: &TarHeader,
    link_target: Option<&(Arc<OwnedFd>, Vec<u8>)>,
    file: &mut Option<OpenFile>,
) -> Result<rustix::io::Result<()>> {
    let mode = Mode::from_raw_mode(h.mode);
    Ok(match h.kind {
        EntryKind::Directory => rustix::fs::mkdirat(&**parent, base, mode),
        EntryKind::Regular => create_new_file_mode_at(parent.as_fd(), base, h.mode).map(|fd| {
            *file = Some(OpenFile(FileOut::Direct(File::from(fd))));
        }),
        EntryKind::Symlink => rustix::fs::symlinkat(h.linkname.as_slice(), &**parent, base),
        EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
            let ft = match h.kind {
                EntryKind::CharDevice => FileType::CharacterDevice,
                EntryKind::BlockDevice => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let dev = rustix::fs::makedev(h.devmajor, h.devminor);
            rustix::fs::mknodat(&**parent, base, ft, mode, dev)
        }
        EntryKind::HardLink => match link_target {
            Some((tdir, tbase)) => {
                rustix::fs::linkat(&**tdir, tbase.as_slice(), &**parent, base, AtFlags::empty())
            }
            None => return Err(Error::Internal("hardlink without a target".into())),
        },
        EntryKind::GlobalHeader => Ok(()),
    })
}
