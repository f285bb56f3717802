//! A multiset of 128-bit hashes, gathered in any order and read back sorted, in memory that does
//! not grow with their number: past [`RUN_MAX`] in memory they are sorted and written as one run
//! to an anonymous temporary file, and [`SortedHashes::into_sorted`] merges the runs (k-way, each
//! read forward in small blocks). What a set of a million names would cost (tens of MB in a hash
//! table) becomes 16 bytes a name on disk.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Hashes kept in memory before they are written as a run (16 bytes each: 512 KiB).
pub(crate) const RUN_MAX: usize = 32 * 1024;
/// The read buffer of each run during the merge.
const RUN_BUF: usize = 16 * 1024;

fn spill_error(e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("keeping path hashes in a temporary file: {e}"),
    ))
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct SortedHashes {
    mem: Vec<u128>,
    /// The spill file and each run's length in hashes.
    spilled: Option<(std::fs::File, Vec<u64>)>,
    /// Where the spill file goes (the system's temporary directory when `None`).
    spill_dir: Option<PathBuf>,
}

impl SortedHashes {
    /// An empty multiset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spills to an anonymous file in `dir` instead of the system's temporary directory (which
    /// may be a tmpfs: memory again).
    pub fn spill_in(&mut self, dir: &Path) {
        self.spill_dir = Some(dir.to_path_buf());
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty() && self.spilled.is_none()
    }

    /// Whether any run went to the spill file.
    pub fn spilled(&self) -> bool {
        self.spilled.is_some()
    }

    /// Adds `h`.
    pub fn push(&mut self, h: u128) -> Result<()> {
        if self.mem.capacity() == 0 {
            self.mem.reserve_exact(RUN_MAX);
        }
        self.mem.push(h);
        if self.mem.len() >= RUN_MAX {
            self.spill()?;
        }
        Ok(())
    }

    /// Writes the hashes in memory as one sorted run.
    fn spill(&mut self) -> Result<()> {
        self.mem.sort_unstable();
        if self.spilled.is_none() {
            let file = match &self.spill_dir {
                Some(dir) => tempfile::tempfile_in(dir),
                None => tempfile::tempfile(),
            };
            self.spilled = Some((file.map_err(spill_error)?, Vec::new()));
        }
        if let Some((file, runs)) = self.spilled.as_mut() {
            file.seek(SeekFrom::End(0)).map_err(spill_error)?;
            let mut w = BufWriter::with_capacity(RUN_BUF, &*file);
            for h in &self.mem {
                w.write_all(&h.to_le_bytes()).map_err(spill_error)?;
            }
            w.flush().map_err(spill_error)?;
            runs.push(self.mem.len() as u64);
        }
        self.mem.clear();
        Ok(())
    }

    /// Every hash added, in ascending order (equal ones side by side).
    pub fn into_sorted(mut self) -> Result<SortedIter> {
        self.mem.sort_unstable();
        let mut it = SortedIter {
            file: None,
            readers: Vec::new(),
            heap: BinaryHeap::new(),
            mem: std::mem::take(&mut self.mem).into_iter().peekable(),
        };
        if let Some((file, runs)) = self.spilled.take() {
            let mut start = 0u64;
            for &n in &runs {
                it.readers.push(RunReader {
                    pos: start * 16,
                    left: n,
                    buf: Vec::new(),
                    at: 0,
                });
                start += n;
            }
            for (i, r) in it.readers.iter_mut().enumerate() {
                if let Some(h) = r.next(&file)? {
                    it.heap.push(Reverse((h, i)));
                }
            }
            it.file = Some(file);
        }
        Ok(it)
    }
}

impl SortedHashes {
    /// The hashes added more than once, each once, ascending; at most `limit` of them (the
    /// merge stops there).
    pub fn repeated(self, limit: usize) -> Result<Vec<u128>> {
        let mut out = Vec::new();
        let mut prev: Option<u128> = None;
        for h in self.into_sorted()? {
            let h = h?;
            if out.len() >= limit {
                break;
            }
            if prev == Some(h) && out.last() != Some(&h) {
                out.push(h);
            }
            prev = Some(h);
        }
        Ok(out)
    }
}

/// The hashes of a [`SortedHashes`], ascending: a k-way merge of its runs (each read at its own
/// offset with `pread`, the runs sharing one file) and the ones left in memory.
#[derive(Debug)]
pub struct SortedIter {
    file: Option<std::fs::File>,
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<(u128, usize)>>,
    mem: std::iter::Peekable<std::vec::IntoIter<u128>>,
}

impl SortedIter {
    fn next_hash(&mut self) -> Result<Option<u128>> {
        let from_runs = self.heap.peek().map(|r| r.0.0);
        match (from_runs, self.mem.peek().copied()) {
            (None, None) => Ok(None),
            (Some(a), Some(b)) if b < a => Ok(self.mem.next()),
            (None, Some(_)) => Ok(self.mem.next()),
            (Some(_), _) => {
                let Some(Reverse((h, i))) = self.heap.pop() else {
                    return Ok(None);
                };
                if let (Some(file), Some(r)) = (&self.file, self.readers.get_mut(i))
                    && let Some(n) = r.next(file)?
                {
                    self.heap.push(Reverse((n, i)));
                }
                Ok(Some(h))
            }
        }
    }
}

impl Iterator for SortedIter {
    type Item = Result<u128>;

    fn next(&mut self) -> Option<Result<u128>> {
        self.next_hash().transpose()
    }
}

/// One sorted run of the spill file, read forward in blocks.
#[derive(Debug)]
struct RunReader {
    /// The file offset of the next block.
    pos: u64,
    /// Hashes not yet returned.
    left: u64,
    buf: Vec<u8>,
    at: usize,
}

impl RunReader {
    fn next(&mut self, file: &std::fs::File) -> Result<Option<u128>> {
        use std::os::unix::fs::FileExt as _;
        if self.left == 0 {
            return Ok(None);
        }
        if self.at == self.buf.len() {
            let want = (self.left * 16).min(RUN_BUF as u64) as usize;
            self.buf.resize(want, 0);
            file.read_exact_at(&mut self.buf, self.pos)
                .map_err(spill_error)?;
            self.pos += want as u64;
            self.at = 0;
        }
        let mut b = [0u8; 16];
        b.copy_from_slice(&self.buf[self.at..self.at + 16]);
        self.at += 16;
        self.left -= 1;
        if self.left == 0 {
            self.buf = Vec::new();
        }
        Ok(Some(u128::from_le_bytes(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comes_back_sorted_across_runs() -> Result<()> {
        let n = RUN_MAX * 3 + 17;
        let mut s = SortedHashes::new();
        // A permutation of 0..n with every tenth value twice.
        let mut want = Vec::new();
        for i in 0..n as u128 {
            let v = (i * 7919) % n as u128;
            s.push(v)?;
            want.push(v);
            if v.is_multiple_of(10) {
                s.push(v)?;
                want.push(v);
            }
        }
        assert!(s.spilled());
        want.sort_unstable();
        let got: Vec<u128> = s.into_sorted()?.collect::<Result<_>>()?;
        assert_eq!(got, want);
        // The repeated ones, across runs: every tenth, once each; or the first few.
        let build = || -> Result<SortedHashes> {
            let mut s = SortedHashes::new();
            for v in &want {
                s.push(*v)?;
            }
            Ok(s)
        };
        let tenths: Vec<u128> = (0..n as u128).filter(|v| v.is_multiple_of(10)).collect();
        assert_eq!(build()?.repeated(usize::MAX)?, tenths);
        assert_eq!(build()?.repeated(2)?, vec![0, 10]);
        // In memory only.
        let mut s = SortedHashes::new();
        for v in [5u128, 1, 3] {
            s.push(v)?;
        }
        assert!(!s.spilled());
        assert_eq!(s.into_sorted()?.collect::<Result<Vec<_>>>()?, vec![1, 3, 5]);
        Ok(())
    }
}
