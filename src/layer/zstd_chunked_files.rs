//! A partial pull's file table: the regular files with content a zstd:chunked TOC lists, with
//! their chunks (all files' in one list) and their indexes by a 64-bit hash of the cleaned name,
//! gathered entry by entry as the TOC is read.

use std::collections::HashMap;

use super::zstd_chunked_partial::bad;
use super::zstd_chunked_toc::{TocEntry, sha256_bytes};
use crate::error::Result;

/// A name as the tar-split and the TOC are matched by: its components, cleaned; `None` for a
/// name that climbs out.
pub(super) fn clean_name(name: &[u8]) -> Option<Vec<u8>> {
    let (comps, escaped) = super::path::clean_components(name);
    (!escaped).then(|| super::path::join(&comps))
}

/// One chunk of a file: its uncompressed size and, unless it is a run of zeros, its frames.
#[derive(Debug, Clone)]
pub(super) struct Chunk {
    pub(super) offset: u64,
    pub(super) end: u64,
    pub(super) size: u64,
    pub(super) zeros: bool,
    /// The chunk's content digest, when the TOC gives one.
    pub(super) digest: Option<[u8; 32]>,
}

/// A regular file of the layer with content; its chunks are `count` of
/// [`ChunkedLayer`](super::zstd_chunked_partial::ChunkedLayer)'s, from `first` (one list for all files, not one allocation each).
#[derive(Debug)]
pub(super) struct RemoteFile {
    pub(super) size: u64,
    pub(super) digest: [u8; 32],
    pub(super) first: u32,
    pub(super) count: u32,
}

/// The key of a cleaned name in [`ChunkedLayer`](super::zstd_chunked_partial::ChunkedLayer)'s table.
pub(super) fn name_key(name: &[u8]) -> u64 {
    // The low half of the 128-bit hash.
    storage_format::path_hash(name) as u64
}

/// The regular files with content the TOC lists, and their indexes by cleaned name, gathered
/// entry by entry.
#[derive(Default)]
pub(super) struct FilesOf {
    files: Vec<RemoteFile>,
    chunks: Vec<Chunk>,
    /// Where each file's frames end (its entry's `endOffset`).
    ends: Vec<u64>,
    by_name: HashMap<u64, u32>,
    /// The file whose `chunk` entries may follow: its name's hash and index.
    current: Option<(u64, usize)>,
}

impl FilesOf {
    /// Takes the next entry of the TOC.
    pub(super) fn push(&mut self, e: &TocEntry) -> std::result::Result<(), String> {
        let name = clean_name(e.name.as_bytes()).ok_or_else(|| format!("it names {:?}", e.name))?;
        let key = name_key(&name);
        let zeros = e.chunk_type.as_deref() == Some("zeros");
        match &*e.kind {
            "reg" if e.size > 0 => {
                let digest = e
                    .digest
                    .as_deref()
                    .and_then(sha256_bytes)
                    .ok_or_else(|| format!("{} has no digest in it", e.name))?;
                let size = if e.chunk_size > 0 {
                    e.chunk_size
                } else {
                    e.size
                };
                let first =
                    u32::try_from(self.chunks.len()).map_err(|_| "too many chunks in it")?;
                self.chunks.push(Chunk {
                    offset: e.offset,
                    end: 0,
                    size,
                    zeros,
                    digest: e.chunk_digest.as_deref().and_then(sha256_bytes),
                });
                self.files.push(RemoteFile {
                    size: e.size,
                    digest,
                    first,
                    count: 1,
                });
                self.ends.push(e.end_offset);
                let i = self.files.len() - 1;
                let at = u32::try_from(i).map_err(|_| "too many files in it".to_string())?;
                if self.by_name.insert(key, at).is_some() {
                    return Err(format!("{} is twice in it", e.name));
                }
                self.current = Some((key, i));
            }
            "chunk" => {
                // The file's entry came just before its chunks: its chunks are the last ones.
                let Some(f) = self
                    .current
                    .filter(|&(n, i)| n == key && i + 1 == self.files.len())
                    .and_then(|_| self.files.last_mut())
                else {
                    return Err(format!("a chunk of {} is out of place in it", e.name));
                };
                f.count = f.count.checked_add(1).ok_or("too many chunks in it")?;
                u32::try_from(self.chunks.len()).map_err(|_| "too many chunks in it")?;
                self.chunks.push(Chunk {
                    offset: e.offset,
                    end: e.end_offset,
                    size: e.chunk_size,
                    zeros,
                    digest: e.chunk_digest.as_deref().and_then(sha256_bytes),
                });
            }
            _ => self.current = None,
        }
        Ok(())
    }

    /// The files, their chunks' ends filled in and checked.
    #[allow(clippy::type_complexity)]
    pub(super) fn finish(self) -> Result<(Vec<RemoteFile>, Vec<Chunk>, HashMap<u64, u32>)> {
        let FilesOf {
            mut files,
            mut chunks,
            ends,
            mut by_name,
            ..
        } = self;
        // A chunk without an end of its own ends where the next one starts (the first, whose
        // entry's end is the file's, too); the last where the file's frames end.
        for (f, end) in files.iter().zip(ends) {
            let from = f.first as usize;
            let Some(mine) = chunks.get_mut(from..from + f.count as usize) else {
                return Err(bad("the TOC's chunks do not add up to their file"));
            };
            for k in 0..mine.len() {
                let next = mine.get(k + 1).map_or(end, |c| c.offset);
                if let Some(c) = mine.get_mut(k)
                    && c.end == 0
                {
                    c.end = next;
                }
            }
            let total: u64 = mine.iter().map(|c| c.size).sum();
            if total != f.size || mine.iter().any(|c| !c.zeros && c.end <= c.offset) {
                return Err(bad("the TOC's chunks do not add up to their file"));
            }
        }
        files.shrink_to_fit();
        chunks.shrink_to_fit();
        by_name.shrink_to_fit();
        Ok((files, chunks, by_name))
    }
}
