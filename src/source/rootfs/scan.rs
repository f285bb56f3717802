//! Reading a root filesystem directory: every entry with its metadata, in path order, without
//! following a symlink (so no loop inside the tree can trap the walk).

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What an entry of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// A directory.
    Directory,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
}

/// One entry of the tree (the root itself excluded).
#[derive(Debug, Clone)]
pub struct Node {
    /// Its path relative to the root, without a leading or trailing `/`.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: NodeKind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size of a regular file, 0 otherwise.
    pub size: u64,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// Device numbers of a device.
    pub rdev: (u32, u32),
    /// The inode (device, number) of a regular file with more than one link: its hardlink group.
    pub inode: Option<(u64, u64)>,
    /// A symlink's target.
    pub target: Vec<u8>,
    /// Extended attributes (`security.selinux` excluded: a build host's labels mean nothing in
    /// the image; empty values excluded: a tar cannot carry them), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Extended attributes of `path` (not following a symlink), `security.selinux` left out.
fn xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let io = |e: rustix::io::Errno| Error::io("reading extended attributes of", path, e);
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name == b"security.selinux" {
            continue;
        }
        if name.contains(&b'=') {
            // A PAX record splits at the first `=`: the name would come back as another.
            return Err(Error::InvalidInput(format!(
                "{} has an extended attribute whose name holds '=' ({}), which a tar cannot carry: remove it",
                path.display(),
                String::from_utf8_lossy(name)
            )));
        }
        let cname = std::ffi::OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, cname, &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(io(e)),
            }
        };
        value.truncate(len);
        // An empty value cannot be carried: Go's tar reader (c/storage's) drops such a record.
        if value.is_empty() {
            continue;
        }
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Reads the tree under `root`: every entry but sockets (a tar cannot hold them), sorted by path.
pub(crate) fn scan(root: &Path) -> Result<Vec<Node>> {
    let md = match std::fs::metadata(root) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::not_found(
                root.display().to_string(),
                format!(
                    "the root filesystem {} does not exist: name the directory to build from",
                    root.display()
                ),
            ));
        }
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(Error::InvalidInput(format!(
                "the root filesystem {} is a symlink loop: name the directory itself",
                root.display()
            )));
        }
        Err(e) => return Err(Error::io("opening the root filesystem", root, e)),
    };
    if !md.is_dir() {
        return Err(Error::InvalidInput(format!(
            "the root filesystem {} is not a directory: name the directory to build from (a debootstrap tree, a mounted image)",
            root.display()
        )));
    }
    let mut nodes = BTreeMap::new();
    let mut stack: Vec<(Vec<u8>, PathBuf)> = vec![(Vec::new(), root.to_path_buf())];
    while let Some((rel, dir)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("reading", &dir, e))?;
        for e in entries {
            let e = e.map_err(|e| Error::io("reading", &dir, e))?;
            let path = e.path();
            let name = e.file_name();
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            let md =
                std::fs::symlink_metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                NodeKind::Directory
            } else if ft.is_file() {
                NodeKind::File
            } else if ft.is_symlink() {
                NodeKind::Symlink
            } else if ft.is_char_device() {
                NodeKind::CharDevice
            } else if ft.is_block_device() {
                NodeKind::BlockDevice
            } else if ft.is_fifo() {
                NodeKind::Fifo
            } else {
                continue;
            };
            let target = if kind == NodeKind::Symlink {
                std::fs::read_link(&path)
                    .map_err(|e| Error::io("reading the link", &path, e))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            };
            let rdev = md.rdev();
            let node = Node {
                path: child.clone(),
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if kind == NodeKind::File { md.len() } else { 0 },
                mtime: md.mtime(),
                rdev: (rustix::fs::major(rdev), rustix::fs::minor(rdev)),
                inode: (kind == NodeKind::File && md.nlink() > 1).then(|| (md.dev(), md.ino())),
                target,
                xattrs: xattrs(&path)?,
            };
            if kind == NodeKind::Directory {
                stack.push((child.clone(), path));
            }
            nodes.insert(child, node);
        }
    }
    Ok(nodes.into_values().collect())
}
