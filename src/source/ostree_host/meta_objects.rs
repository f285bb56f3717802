//! The directory objects (dirtree, dirmeta) of a commit, read once, level by level, several files at
//! a time: on a cold disk a depth-first walk waits for one small file after another, while each level
//! of the tree can be asked for at once. Every later walk of the commit (planning, each layer's
//! structure) reads from here.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::gvariant::parse_dirtree;
use super::objects::object_path;
use super::repo::meta_object_bytes;
use crate::error::{Error, Result};

/// How many files are read at once.
const READERS: usize = 16;

/// Dirtree and dirmeta bytes by checksum.
#[derive(Debug, Default)]
pub struct MetaObjects {
    dirtrees: HashMap<String, Vec<u8>>,
    dirmetas: HashMap<String, Vec<u8>>,
}

/// Reads `paths`, [`READERS`] at a time; results in order.
fn read_all(paths: &[PathBuf]) -> Vec<std::io::Result<Vec<u8>>> {
    crate::parallel::map_in_order(paths, READERS, |p| std::fs::read(p))
}

impl MetaObjects {
    /// Reads every dirtree and dirmeta reachable from the dirtree `root` and the dirmeta
    /// `root_meta` of a commit in the repository at `repo_path` (opened as `repo`, which serves
    /// objects not stored as plain files there, such as a parent repository's).
    pub fn load(
        repo: &ostree::Repo,
        repo_path: &Path,
        root: &str,
        root_meta: &str,
    ) -> Result<MetaObjects> {
        let mut me = MetaObjects::default();
        let mut metas: HashSet<String> = HashSet::from([root_meta.to_string()]);
        let mut level = vec![root.to_string()];
        let mut queued: HashSet<String> = HashSet::from([root.to_string()]);
        while !level.is_empty() {
            let paths: Vec<PathBuf> = level
                .iter()
                .map(|c| object_path(repo_path, c, "dirtree"))
                .collect();
            let mut next = Vec::new();
            for (csum, r) in level.iter().zip(read_all(&paths)) {
                let data = match r {
                    Ok(d) => d,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        meta_object_bytes(repo, repo_path, ostree::ObjectType::DirTree, csum)?
                    }
                    Err(e) => {
                        return Err(Error::io(
                            "reading",
                            object_path(repo_path, csum, "dirtree"),
                            e,
                        ));
                    }
                };
                let tree = parse_dirtree(&data, &format!("dirtree {csum}"))?;
                for d in tree.dirs {
                    metas.insert(d.meta);
                    if queued.insert(d.tree.clone()) {
                        next.push(d.tree);
                    }
                }
                me.dirtrees.insert(csum.clone(), data);
            }
            level = next;
        }
        let metas: Vec<String> = metas.into_iter().collect();
        let paths: Vec<PathBuf> = metas
            .iter()
            .map(|c| object_path(repo_path, c, "dirmeta"))
            .collect();
        for (csum, r) in metas.into_iter().zip(read_all(&paths)) {
            let data = match r {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    meta_object_bytes(repo, repo_path, ostree::ObjectType::DirMeta, &csum)?
                }
                Err(e) => {
                    return Err(Error::io(
                        "reading",
                        object_path(repo_path, &csum, "dirmeta"),
                        e,
                    ));
                }
            };
            me.dirmetas.insert(csum, data);
        }
        Ok(me)
    }

    /// The bytes of a dirtree (`is_tree`) or dirmeta read by [`load`](Self::load).
    pub fn get(&self, is_tree: bool, csum: &str) -> Option<&[u8]> {
        let map = if is_tree {
            &self.dirtrees
        } else {
            &self.dirmetas
        };
        map.get(csum).map(Vec::as_slice)
    }
}

impl MetaObjects {
    /// A metadata object from here, else from the repository.
    pub(crate) fn get_or_read<'m>(
        &'m self,
        repo: &ostree::Repo,
        repo_path: &Path,
        t: ostree::ObjectType,
        csum: &str,
    ) -> Result<Cow<'m, [u8]>> {
        match self.get(t == ostree::ObjectType::DirTree, csum) {
            Some(b) => Ok(Cow::Borrowed(b)),
            None => meta_object_bytes(repo, repo_path, t, csum).map(Cow::Owned),
        }
    }
}
