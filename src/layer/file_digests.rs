//! The entries of a layer as it was written from a zstd:chunked blob — each one's cleaned name
//! (as a 128-bit hash) and, for a regular file with content, the sha256 the sink computed — in
//! tar order: what the blob's own TOC is checked against
//! ([`matches_digests`](super::zstd_chunked_toc::matches_digests)). Kept in an anonymous
//! temporary file as fixed records, with the names in sorted runs to find those named twice:
//! memory does not grow with the layer.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, BufWriter, Read, Write};

use storage_format::path_hash;
use storage_format::sys::sorted_hashes::SortedHashes;

use super::tar_header::TarHeader;
use super::toc_out::TocEntries;
use super::zstd_chunked_toc::toc_type;
use crate::error::{Error, Result};

/// Bytes of one record: the name's hash, a flag, the digest.
const RECORD: usize = 16 + 1 + 32;

fn spill_error(e: std::io::Error) -> Error {
    Error::Io {
        what: "keeping the layer's file digests in",
        path: std::env::temp_dir(),
        source: e,
    }
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FileDigests {
    out: Option<BufWriter<std::fs::File>>,
    names: SortedHashes,
    count: u64,
}

impl TocEntries for FileDigests {
    fn entry(&mut self, h: &TarHeader, digest: Option<&[u8; 32]>) -> Result<()> {
        if toc_type(h.kind).is_some() {
            let (comps, _) = super::path::clean_components(&h.name);
            self.push(&super::path::join(&comps), digest)?;
        }
        Ok(())
    }
}

impl FileDigests {
    /// Adds the entry with the cleaned name `name` and, for a file with content, its digest.
    pub fn push(&mut self, name: &[u8], digest: Option<&[u8; 32]>) -> Result<()> {
        let h = path_hash(name);
        if self.out.is_none() {
            let f = tempfile::tempfile().map_err(spill_error)?;
            self.out = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        let mut rec = [0u8; RECORD];
        rec[..16].copy_from_slice(&h.to_le_bytes());
        if let Some(d) = digest {
            rec[16] = 1;
            rec[17..].copy_from_slice(d);
        }
        if let Some(out) = self.out.as_mut() {
            out.write_all(&rec).map_err(spill_error)?;
        }
        self.names.push(h)?;
        self.count += 1;
        Ok(())
    }

    /// The entries, to read in order.
    pub fn finish(self) -> Result<Written> {
        // Names given twice, and where each is given last.
        let twice: HashSet<u128> = self.names.repeated(usize::MAX)?.into_iter().collect();
        let file = match self.out {
            Some(out) => Some(out.into_inner().map_err(|e| spill_error(e.into_error()))?),
            None => None,
        };
        let mut written = Written {
            file,
            reader: None,
            left: self.count,
            at: 0,
            last: HashMap::new(),
        };
        if !twice.is_empty() {
            written.rewind();
            let mut k = 0u64;
            while let Some((h, _)) = written.next_record()? {
                if twice.contains(&h) {
                    written.last.insert(h, k);
                }
                k += 1;
            }
        }
        written.rewind();
        Ok(written)
    }
}

/// The entries of a [`FileDigests`], read back in order.
#[derive(Debug)]
pub struct Written {
    file: Option<std::fs::File>,
    reader: Option<BufReader<std::fs::File>>,
    left: u64,
    /// The index of the next record.
    at: u64,
    /// For names given more than once: the index of the last.
    last: HashMap<u128, u64>,
}

impl Written {
    fn rewind(&mut self) {
        self.reader = self
            .file
            .as_ref()
            .and_then(|f| f.try_clone().ok())
            .map(|f| BufReader::with_capacity(64 * 1024, f));
        if let Some(r) = self.reader.as_mut() {
            let _ = std::io::Seek::rewind(r);
        }
        self.left += self.at;
        self.at = 0;
    }

    /// The next entry: its name's hash and digest, with its index.
    pub fn next_record(&mut self) -> Result<Option<(u128, Option<[u8; 32]>)>> {
        if self.left == 0 {
            return Ok(None);
        }
        let Some(r) = self.reader.as_mut() else {
            return Ok(None);
        };
        let mut rec = [0u8; RECORD];
        r.read_exact(&mut rec).map_err(spill_error)?;
        self.left -= 1;
        self.at += 1;
        let mut h = [0u8; 16];
        h.copy_from_slice(&rec[..16]);
        let digest = (rec[16] == 1).then(|| {
            let mut d = [0u8; 32];
            d.copy_from_slice(&rec[17..]);
            d
        });
        Ok(Some((u128::from_le_bytes(h), digest)))
    }

    /// The index of the entry [`next_record`](Self::next_record) returned last.
    pub fn index(&self) -> u64 {
        self.at.saturating_sub(1)
    }

    /// Whether the entry at `index`, named `h`, is the last of that name.
    pub fn is_last(&self, h: u128, index: u64) -> bool {
        self.last.get(&h).is_none_or(|&k| k == index)
    }
}
