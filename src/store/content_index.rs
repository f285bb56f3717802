//! The store's files found by the sha256 of their content (and the chunks zstd:chunked TOCs cut
//! big files into, by theirs), from the TOCs stored with its layers
//! (zstd:chunked ones, the TOC of our own every other layer we write gets, and those podman 5
//! pulled): what a partial pull takes from the store instead of fetching it, as c/storage's
//! layers cache finds files in other layers, reading any layer with a `zstd-chunked-manifest`
//! whether it has a `toc-digest` or not. Only layers with a TOC take part (c/storage's rule too:
//! a layer stored without one — podman's or skopeo's — cannot say what its files hold without
//! reading them all).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use storage_format::LayerRecord;

use super::Store;
use crate::layer::zstd_chunked_partial::{LocalFiles, sha256_bytes};

/// Content digest → a layer's tree and the file's name in it. The names are kept one after
/// another in one buffer, not one allocation each (a store's TOCs may list millions of files).
#[derive(Debug, Default)]
pub(crate) struct ContentIndex {
    trees: Vec<PathBuf>,
    /// Every indexed name, one after another.
    names: Vec<u8>,
    files: HashMap<[u8; 32], Loc>,
    /// Chunks of files (zstd:chunked TOCs cut big files): digest → the file, and the chunk's
    /// offset in it.
    chunks: HashMap<[u8; 32], (Loc, u64)>,
}

/// Where a file is: a tree (index), and its name's place in [`ContentIndex::names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    tree: u32,
    at: u32,
    len: u32,
}

/// Adds `name` to `names` (not again when it is the last one added, as a file's chunks name
/// it once each); `None` past 4 GiB of names.
fn intern(names: &mut Vec<u8>, last: &mut Option<Loc>, tree: u32, name: &[u8]) -> Option<Loc> {
    if let Some(l) = *last
        && l.tree == tree
        && names.get(l.at as usize..(l.at + l.len) as usize) == Some(name)
    {
        return Some(l);
    }
    let loc = Loc {
        tree,
        at: u32::try_from(names.len()).ok()?,
        len: u32::try_from(name.len()).ok()?,
    };
    u32::try_from(names.len() + name.len()).ok()?;
    names.extend_from_slice(name);
    *last = Some(loc);
    Some(loc)
}

impl ContentIndex {
    /// The index of the complete layers of `layers` that have a TOC stored as a tree's.
    pub(crate) fn of_layers<'a>(
        store: &Store,
        layers: impl IntoIterator<Item = &'a LayerRecord>,
    ) -> ContentIndex {
        let mut index = ContentIndex::default();
        for rec in layers {
            if rec.is_incomplete() {
                continue;
            }
            let Some(manifest) = store.stored_manifest(rec) else {
                continue;
            };
            let tree = u32::try_from(index.trees.len()).unwrap_or(u32::MAX);
            let (files, chunks, names) = (&mut index.files, &mut index.chunks, &mut index.names);
            let names_before = names.len();
            let mut last = None;
            // Read entry by entry (a TOC may list a million); a file's first chunk is on its own
            // entry (at offset 0), the others on `chunk` entries; runs of zeros are never
            // fetched, so never looked for.
            let read = manifest.read(|e| {
                let file = (e.kind == "reg" && e.size > 0)
                    .then(|| e.digest.as_deref().and_then(sha256_bytes))
                    .flatten();
                let chunk = ((e.kind == "reg" || e.kind == "chunk")
                    && e.chunk_size > 0
                    && e.chunk_type.as_deref() != Some("zeros"))
                .then(|| e.chunk_digest.as_deref().and_then(sha256_bytes))
                .flatten();
                if file.is_none() && chunk.is_none() {
                    return Ok(());
                }
                let Some(loc) = intern(names, &mut last, tree, e.name.as_bytes()) else {
                    return Err("more names than an index holds".into());
                };
                if let Some(d) = file {
                    files.entry(d).or_insert(loc);
                }
                if let Some(d) = chunk {
                    let at = if e.kind == "reg" { 0 } else { e.chunk_offset };
                    chunks.entry(d).or_insert((loc, at));
                }
                Ok(())
            });
            if let Err(why) = read {
                // None of it is used: what it gave before the error goes again.
                tracing::debug!(layer = %rec.id, "a stored TOC that does not parse is not indexed: {why}");
                files.retain(|_, at| at.tree != tree);
                chunks.retain(|_, at| at.0.tree != tree);
                names.truncate(names_before);
            } else {
                index.trees.push(store.driver().tree_path(&rec.id));
            }
        }
        index
    }

    /// How many distinct contents it finds.
    pub(crate) fn len(&self) -> usize {
        self.files.len()
    }

    /// How many distinct chunks it finds.
    pub(crate) fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

impl LocalFiles for ContentIndex {
    fn has(&self, digest: &[u8; 32]) -> bool {
        self.files.contains_key(digest)
    }

    fn path(&self, digest: &[u8; 32]) -> Option<PathBuf> {
        let loc = self.files.get(digest)?;
        Some(self.trees[loc.tree as usize].join(std::ffi::OsStr::from_bytes(self.name(loc))))
    }

    fn open(&self, digest: &[u8; 32], size: u64) -> std::io::Result<std::fs::File> {
        let loc = self
            .files
            .get(digest)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let name = self.name(loc);
        let file = self.open_in(loc.tree, name)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() != size {
            return Err(std::io::Error::other(format!(
                "{} is not a file of {size} bytes",
                String::from_utf8_lossy(name)
            )));
        }
        Ok(file)
    }

    fn has_chunk(&self, digest: &[u8; 32]) -> bool {
        self.chunks.contains_key(digest)
    }

    fn open_chunk(&self, digest: &[u8; 32], size: u64) -> std::io::Result<std::fs::File> {
        use std::io::{Seek, SeekFrom};
        let (loc, at) = self
            .chunks
            .get(digest)
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let name = self.name(loc);
        let mut file = self.open_in(loc.tree, name)?;
        let meta = file.metadata()?;
        if !meta.is_file() || meta.len() < at.saturating_add(size) {
            return Err(std::io::Error::other(format!(
                "{} is not a file with {size} bytes at {at}",
                String::from_utf8_lossy(name)
            )));
        }
        file.seek(SeekFrom::Start(*at))?;
        Ok(file)
    }
}

impl ContentIndex {
    /// The name `loc` places.
    fn name(&self, loc: &Loc) -> &[u8] {
        self.names
            .get(loc.at as usize..(loc.at as usize + loc.len as usize))
            .unwrap_or_default()
    }

    /// Opens file `name` inside tree `tree`, whatever its links say.
    fn open_in(&self, tree: u32, name: &[u8]) -> std::io::Result<std::fs::File> {
        let root = std::fs::File::open(&self.trees[tree as usize])?;
        // Inside the layer's tree, whatever its links say.
        let fd = crate::fsutil::openat2_retry(
            root.as_fd(),
            name,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )?;
        Ok(std::fs::File::from(fd))
    }
}
