//! The paths a tar-split has named so far, to refuse a duplicate as tar-split's packer does, in
//! memory that does not grow with the layer: each path is kept as a 128-bit hash of its cleaned
//! form; the most recent [`RECENT_MAX`] in memory (a duplicate among them is found at once, with
//! its name), older ones spilled to an anonymous temporary file as sorted runs
//! ([`SortedHashes`]), checked against each other and the rest by a merge when the stream ends
//! ([`SeenPaths::finish`]). A true
//! duplicate is always found; a false one needs a 128-bit collision (about 10⁻²⁷ for a million
//! paths).

use foldhash::HashSet;

use crate::error::Result;
use crate::sys::sorted_hashes::SortedHashes;

/// Hashes kept in memory before they are spilled (16 bytes each, about 0.8 MB of table).
pub(crate) const RECENT_MAX: usize = 32 * 1024;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct SeenPaths {
    recent: HashSet<u128>,
    /// The older ones, spilled.
    older: SortedHashes,
    count: u64,
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

impl SeenPaths {
    /// Spills to an anonymous file in `dir` instead of the system's temporary directory (which
    /// may be a tmpfs: memory again).
    pub fn spill_in(&mut self, dir: &std::path::Path) {
        self.older.spill_in(dir);
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

    /// Moves the recent hashes to the older ones.
    fn spill(&mut self) -> Result<()> {
        for h in self.recent.drain() {
            self.older.push(h)?;
        }
        Ok(())
    }

    /// After the last path: `Ok(true)` when no path was recorded twice, counting those spilled.
    pub fn finish(&mut self) -> Result<bool> {
        if self.older.is_empty() {
            // Every path is among the recent ones, which hold no duplicate.
            return Ok(true);
        }
        self.spill()?;
        Ok(std::mem::take(&mut self.older).repeated(1)?.is_empty())
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
