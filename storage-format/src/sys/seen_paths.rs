//! The paths a tar-split has named so far, to refuse a duplicate as tar-split's packer does, in
//! memory that does not grow with the layer: each path is kept as a 128-bit hash of its cleaned
//! form; the most recent [`RECENT_MAX`] in memory (a duplicate among them is found at once, with
//! its name), older ones spilled to an anonymous temporary file as sorted runs, checked against
//! each other and the rest by a merge when the stream ends ([`SeenPaths::finish`]). A true
//! duplicate is always found; a false one needs a 128-bit collision (about 10⁻²⁷ for a million
//! paths).

use std::collections::BinaryHeap;
use std::io::{BufWriter, Seek, SeekFrom, Write};

use foldhash::HashSet;

use crate::error::{Error, Result};

/// Hashes kept in memory before they are spilled (16 bytes each, about 0.8 MB of table).
pub(crate) const RECENT_MAX: usize = 32 * 1024;
/// The read buffer of each run during the final merge.
const RUN_BUF: usize = 16 * 1024;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct SeenPaths {
    recent: HashSet<u128>,
    /// The spilled runs: the file, and each run's length in hashes.
    spilled: Option<(std::fs::File, Vec<u64>)>,
    count: u64,
    /// Where the spill file goes (the system's temporary directory when `None`).
    spill_dir: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for SeenPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenPaths")
            .field("paths", &self.count)
            .finish_non_exhaustive()
    }
}

/// The 128-bit hash a path is kept as (of its cleaned form, which the caller gives): equal paths
/// hash equal; two distinct ones collide with probability about 2⁻¹²⁸.
pub fn path_hash(path: &[u8]) -> u128 {
    use std::hash::BuildHasher as _;
    let a = foldhash::quality::FixedState::with_seed(0x5eed_0001).hash_one(path);
    let b = foldhash::quality::FixedState::with_seed(0x5eed_0002).hash_one(path);
    (u128::from(a) << 64) | u128::from(b)
}

fn spill_error(e: std::io::Error) -> Error {
    Error::Io(std::io::Error::new(
        e.kind(),
        format!("keeping a tar-split's paths in a temporary file: {e}"),
    ))
}

impl SeenPaths {
    /// Spills to an anonymous file in `dir` instead of the system's temporary directory (which
    /// may be a tmpfs: memory again).
    pub fn spill_in(&mut self, dir: &std::path::Path) {
        self.spill_dir = Some(dir.to_path_buf());
    }

    /// How many paths were recorded.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// Records the cleaned path `path`; `Ok(false)` when it was among the recent ones already
    /// (older duplicates are found by [`finish`](Self::finish)).
    pub fn insert(&mut self, path: &[u8]) -> Result<bool> {
        if !self.recent.insert(path_hash(path)) {
            return Ok(false);
        }
        self.count += 1;
        if self.recent.len() >= RECENT_MAX {
            self.spill()?;
        }
        Ok(true)
    }

    /// Writes the recent hashes as one sorted run.
    fn spill(&mut self) -> Result<()> {
        let mut run: Vec<u128> = self.recent.drain().collect();
        run.sort_unstable();
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
            for h in &run {
                w.write_all(&h.to_le_bytes()).map_err(spill_error)?;
            }
            w.flush().map_err(spill_error)?;
            runs.push(run.len() as u64);
        }
        Ok(())
    }

    /// After the last path: `Ok(true)` when no path was recorded twice, counting those spilled.
    pub fn finish(&mut self) -> Result<bool> {
        let Some((file, runs)) = self.spilled.take() else {
            return Ok(true);
        };
        let mut recent: Vec<u128> = self.recent.drain().collect();
        recent.sort_unstable();
        // A k-way merge of the runs and the recent hashes: equal neighbours are a duplicate.
        // Each run is read at its own offset (`pread`: the runs share one file).
        let mut readers = Vec::with_capacity(runs.len());
        let mut start = 0u64;
        for &n in &runs {
            readers.push(RunReader {
                pos: start * 16,
                left: n,
                buf: Vec::new(),
                at: 0,
            });
            start += n;
        }
        let file = &file;
        let next = |r: &mut RunReader| r.next(file);
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(h) = next(r)? {
                heap.push(std::cmp::Reverse((h, i)));
            }
        }
        let mut recent = recent.into_iter().peekable();
        let mut last: Option<u128> = None;
        loop {
            let from_runs = heap.peek().map(|r| r.0.0);
            let h = match (from_runs, recent.peek().copied()) {
                (None, None) => return Ok(true),
                (Some(a), Some(b)) if b < a => recent.next(),
                (None, Some(_)) => recent.next(),
                (Some(_), _) => match heap.pop() {
                    Some(std::cmp::Reverse((h, i))) => {
                        if let Some(n) = next(&mut readers[i])? {
                            heap.push(std::cmp::Reverse((n, i)));
                        }
                        Some(h)
                    }
                    None => None,
                },
            };
            let Some(h) = h else { return Ok(true) };
            if last == Some(h) {
                return Ok(false);
            }
            last = Some(h);
        }
    }
}

/// One sorted run of the spilled file, read forward in blocks.
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
        Ok(Some(u128::from_le_bytes(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_near_and_far() {
        let n = RECENT_MAX * 3 + 17;
        let name = |i: usize| format!("d/{i}").into_bytes();
        let mut s = SeenPaths::default();
        for i in 0..n {
            assert!(s.insert(&name(i)).unwrap());
        }
        assert_eq!(s.len(), n as u64);
        // A near duplicate is found at once.
        assert!(!s.insert(&name(n - 1)).unwrap());
        assert!(s.finish().unwrap(), "no duplicate");
        // A far one (spilled long ago) is found at the end.
        let mut s = SeenPaths::default();
        for i in 0..n {
            assert!(s.insert(&name(i)).unwrap());
        }
        assert!(s.insert(&name(5)).unwrap(), "not among the recent");
        assert!(!s.finish().unwrap(), "found by the merge");
        // Duplicates between two spilled runs too.
        let mut s = SeenPaths::default();
        for i in 0..RECENT_MAX {
            s.insert(&name(i)).unwrap();
        }
        s.insert(&name(1)).unwrap();
        for i in 0..RECENT_MAX {
            s.insert(&name(n + i)).unwrap();
        }
        assert!(!s.finish().unwrap());
    }
}
