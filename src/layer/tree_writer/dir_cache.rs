//! Directory fds by path, for the tree writer.

use foldhash::{HashMap, HashMapExt};
use std::os::fd::OwnedFd;
use std::sync::Arc;

/// Directory fds by path (relative to the layer root), so entries that alternate between directories
/// do not resolve their parents again and again. Emptied whenever anything is removed from the tree
/// (a cached directory may be gone) and when full; its size follows the process's fd limit.
#[derive(Debug)]
pub(super) struct DirCache {
    map: HashMap<Vec<u8>, Arc<OwnedFd>>,
    cap: usize,
}

impl DirCache {
    pub(super) fn new() -> DirCache {
        let cap = super::fd_share().clamp(8, 1024);
        DirCache {
            map: HashMap::new(),
            cap,
        }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<Arc<OwnedFd>> {
        self.map.get(key).cloned()
    }

    pub(super) fn insert(&mut self, key: Vec<u8>, fd: OwnedFd) -> Arc<OwnedFd> {
        if self.map.len() >= self.cap {
            self.map.clear();
        }
        let fd = Arc::new(fd);
        self.map.insert(key, fd.clone());
        fd
    }

    pub(super) fn clear(&mut self) {
        self.map.clear();
    }
}
