//! What each content object of an image is — owner, mode, size, symlink target, xattrs — read once
//! while planning and used by every pass after it. In a `bare` repository the object file carries all
//! of it, so it is read with one `lstat` (and `readlink`/`llistxattr`) per object, without libostree;
//! an object with xattrs, and every object of a `bare-user` or `archive` repository, goes through
//! libostree's `load_file`, which knows how those modes store metadata.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ostree::gio;
use rustix::fs::{AtFlags, FileType};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// One content object, as its tar entry needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectInfo {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits (no file type).
    pub mode: u32,
    /// Content length (0 for a symlink).
    pub size: u64,
    /// The target, for a symlink object; `None` for a regular file.
    pub symlink: Option<String>,
    /// The xattrs, as the serialized `a(ayay)` GVariant ostree-ext writes as `.file-xattrs`.
    pub xattrs: Vec<u8>,
}

/// Content objects by checksum.
#[derive(Debug, Default)]
pub(crate) struct ObjectInfos {
    /// By binary checksum: 14,000 objects of an OS image take 1.4 MB less than with hex keys.
    map: HashMap<[u8; 32], ObjectInfo>,
    bare: bool,
}

/// `S_IFMT`: ostree modes carry the file type, tar modes do not.
const S_IFMT: u32 = 0o170000;

/// `objects/xx/rest.SUFFIX` inside a repository (`file`, `dirtree`, `dirmeta`, `commit`).
pub(crate) fn object_path(repo_path: &Path, csum: &str, suffix: &str) -> PathBuf {
    let (first, rest) = csum.split_at(2.min(csum.len()));
    repo_path.join(format!("objects/{first}/{rest}.{suffix}"))
}

/// The binary form of a hex checksum.
fn key(csum: &str) -> Result<[u8; 32]> {
    let mut k = [0u8; 32];
    hex::decode_to_slice(csum, &mut k)
        .map_err(|_| Error::InvalidInput(format!("{csum:?} is not an object checksum")))?;
    Ok(k)
}

fn damaged(csum: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "loading file object {csum}: {e} (the repository may be damaged: run ostree fsck)"
    ))
}

impl ObjectInfos {
    /// Reads every object of `csums` from the repository at `repo_path` (opened as `repo`).
    pub fn load<'c>(
        repo: &ostree::Repo,
        repo_path: &Path,
        csums: impl IntoIterator<Item = &'c String>,
    ) -> Result<ObjectInfos> {
        let bare = repo.mode() == ostree::RepoMode::Bare;
        let mut seen = std::collections::HashSet::new();
        let csums: Vec<&String> = csums.into_iter().filter(|c| seen.insert(*c)).collect();
        // A bare repository's objects are lstat'ed by several threads at once (a cold disk then
        // serves many inode reads together); the rest goes through libostree, on this thread.
        let native: Vec<Option<ObjectInfo>> = if bare {
            stat_all(repo_path, &csums)?
        } else {
            vec![None; csums.len()]
        };
        let mut map = HashMap::with_capacity(csums.len());
        for (csum, info) in csums.into_iter().zip(native) {
            let info = match info {
                Some(i) => i,
                None => load_libostree(repo, csum)?,
            };
            map.insert(key(csum)?, info);
        }
        Ok(ObjectInfos { map, bare })
    }

    /// The object `csum`, which must have been loaded.
    pub fn get(&self, csum: &str) -> Result<&ObjectInfo> {
        self.map
            .get(&key(csum)?)
            .ok_or_else(|| Error::Internal(format!("object {csum} was not planned")))
    }

    /// Whether the repository is `bare`: its regular objects are the files to hardlink.
    pub fn bare(&self) -> bool {
        self.bare
    }
}

/// How many threads lstat objects.
const STATTERS: usize = 4;

/// [`load_bare`] of every object, by [`STATTERS`] threads; results in order.
fn stat_all(repo_path: &Path, csums: &[&String]) -> Result<Vec<Option<ObjectInfo>>> {
    crate::parallel::map_in_order(csums, STATTERS, |c| load_bare(repo_path, c))
        .into_iter()
        .collect()
}

/// A bare-repository object from its own inode; `None` when it has xattrs (libostree then
/// serializes them, so the `.file-xattrs` bytes are exactly upstream's).
fn load_bare(repo_path: &Path, csum: &str) -> Result<Option<ObjectInfo>> {
    let path = object_path(repo_path, csum, "file");
    let st = rustix::fs::statat(rustix::fs::CWD, &path, AtFlags::SYMLINK_NOFOLLOW).map_err(
        |e| match e {
            Errno::NOENT => damaged(csum, "no such object"),
            e => damaged(csum, e),
        },
    )?;
    let mut names = [0u8; 1];
    match rustix::fs::llistxattr(&path, &mut names[..]) {
        Ok(0) => {}
        // Any name at all (ERANGE: longer than the probe buffer) → libostree.
        Ok(_) | Err(Errno::RANGE) => return Ok(None),
        Err(Errno::NOTSUP) => {}
        Err(e) => return Err(damaged(csum, e)),
    }
    let symlink = match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => None,
        FileType::Symlink => {
            let t = rustix::fs::readlinkat(rustix::fs::CWD, &path, Vec::new())
                .map_err(|e| damaged(csum, e))?;
            Some(t.into_string().map_err(|_| {
                Error::InvalidInput(format!("symlink object {csum} has a non-UTF-8 target"))
            })?)
        }
        _ => {
            return Err(Error::InvalidInput(format!(
                "object {csum} is neither a file nor a symlink"
            )));
        }
    };
    Ok(Some(ObjectInfo {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & !S_IFMT,
        size: if symlink.is_some() {
            0
        } else {
            u64::try_from(st.st_size).unwrap_or(0)
        },
        symlink,
        xattrs: Vec::new(),
    }))
}

/// Any object through libostree.
fn load_libostree(repo: &ostree::Repo, csum: &str) -> Result<ObjectInfo> {
    let (stream, info, xattrs) = repo
        .load_file(csum, gio::Cancellable::NONE)
        .map_err(|e| damaged(csum, e))?;
    let symlink = match stream {
        Some(_) => {
            if info.file_type() != gio::FileType::Regular {
                return Err(Error::InvalidInput(format!(
                    "object {csum} has content but is not a regular file"
                )));
            }
            None
        }
        None => {
            if info.file_type() != gio::FileType::SymbolicLink {
                return Err(Error::InvalidInput(format!(
                    "object {csum} is neither a file nor a symlink"
                )));
            }
            let target = info.symlink_target().ok_or_else(|| {
                Error::InvalidInput(format!("symlink object {csum} has no target"))
            })?;
            Some(
                target
                    .to_str()
                    .ok_or_else(|| {
                        Error::InvalidInput(format!("symlink object {csum} has a non-UTF-8 target"))
                    })?
                    .to_string(),
            )
        }
    };
    Ok(ObjectInfo {
        uid: info.attribute_uint32("unix::uid"),
        gid: info.attribute_uint32("unix::gid"),
        mode: info.attribute_uint32("unix::mode") & !S_IFMT,
        size: if symlink.is_some() {
            0
        } else {
            u64::try_from(info.size()).unwrap_or(0)
        },
        symlink,
        xattrs: xattrs.data_as_bytes().to_vec(),
    })
}
