//! A range of a blob kept aside as the blob streams past (a zstd:chunked TOC, which may be tens
//! of MB compressed for a layer of a million entries): written to an anonymous temporary file,
//! so memory does not grow with it; kept in memory only where no temporary file can be made.

use std::io::{BufWriter, Read, Write};

/// Where the kept bytes go.
#[derive(Debug)]
enum Out {
    /// None of the range has come yet.
    Nothing,
    /// A temporary file.
    File(BufWriter<std::fs::File>),
    /// Memory (no temporary file could be made).
    Mem(Vec<u8>),
    /// Writing the temporary file failed: the range is not kept.
    Failed,
}

/// The range being kept.
#[derive(Debug)]
pub(crate) struct KeptRange {
    start: u64,
    len: u64,
    out: Out,
}

/// A kept range's bytes, once the blob ended.
#[derive(Debug)]
pub enum Kept {
    /// In an anonymous temporary file, from its start.
    File(std::fs::File),
    /// In memory.
    Mem(Vec<u8>),
}

impl Kept {
    /// The bytes, from the first.
    pub fn reader(&self) -> Box<dyn Read + '_> {
        match self {
            Kept::File(f) => Box::new(crate::fsutil::ReadAt::new(f)),
            Kept::Mem(v) => Box::new(&v[..]),
        }
    }
}

impl KeptRange {
    /// Keeps the `len` bytes from offset `start` of the blob.
    pub(crate) fn new(start: u64, len: u64) -> Self {
        KeptRange {
            start,
            len,
            out: Out::Nothing,
        }
    }

    /// The blob's bytes `chunk`, which start at offset `from`.
    pub(crate) fn chunk(&mut self, from: u64, chunk: &[u8]) {
        let to = from + chunk.len() as u64;
        let (lo, hi) = (self.start.max(from), (self.start + self.len).min(to));
        if lo >= hi {
            return;
        }
        let part = &chunk[(lo - from) as usize..(hi - from) as usize];
        if matches!(self.out, Out::Nothing) {
            self.out = match tempfile::tempfile() {
                Ok(f) => Out::File(BufWriter::with_capacity(64 * 1024, f)),
                Err(_) => Out::Mem(Vec::new()),
            };
        }
        match &mut self.out {
            Out::File(w) => {
                if w.write_all(part).is_err() {
                    self.out = Out::Failed;
                }
            }
            Out::Mem(v) => v.extend_from_slice(part),
            Out::Nothing | Out::Failed => {}
        }
    }

    /// The bytes kept; `None` when they could not be (an empty range is kept, empty).
    pub(crate) fn finish(self) -> Option<Kept> {
        match self.out {
            Out::Nothing => Some(Kept::Mem(Vec::new())),
            Out::File(w) => w.into_inner().ok().map(Kept::File),
            Out::Mem(v) => Some(Kept::Mem(v)),
            Out::Failed => None,
        }
    }
}
