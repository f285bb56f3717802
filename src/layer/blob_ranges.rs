//! The byte ranges of a blob a partial pull fetches: the parts it needs, sorted and merged (gaps
//! up to c/storage's `autoMergePartsThreshold` bridged, at most [`MAX_RANGES`] requests), and
//! [`Ranges`], which reads them forward, opening each when first needed.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Gaps between missing chunks up to this many bytes are fetched rather than split into two
/// ranges (c/storage's `autoMergePartsThreshold`).
pub const MERGE_GAP: u64 = 1024;
/// At most this many ranges (each a request): beyond, the closest ones are merged.
pub const MAX_RANGES: usize = 256;

/// Opens bytes `start..end` of the layer's blob.
pub type OpenRange<'a> = dyn Fn(u64, u64) -> Result<Box<dyn Read + Send>> + Sync + 'a;

/// Sorted ranges, those closer than [`MERGE_GAP`] merged, then the closest merged until at most
/// [`MAX_RANGES`] are left.
pub fn merge_ranges(mut parts: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    parts.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (s, e) in parts {
        match out.last_mut() {
            Some(last) if s <= last.1 + MERGE_GAP => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    if out.len() > MAX_RANGES {
        // The widest gap that still has to be bridged: merge every gap no wider than it.
        let mut gaps: Vec<u64> = out.windows(2).map(|w| w[1].0 - w[0].1).collect();
        gaps.sort_unstable();
        let limit = gaps[out.len() - MAX_RANGES - 1];
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s - last.1 <= limit => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        out = merged;
    }
    out
}

/// The planned ranges of the blob, read forward (a range opened when first needed).
pub struct Ranges<'a> {
    list: &'a [(u64, u64)],
    cur: Option<Box<dyn Read + Send>>,
    /// The blob offset the current range's reader is at, and where it ends.
    pos: u64,
    end: u64,
    open: &'a OpenRange<'a>,
    fetched: &'a AtomicU64,
}

impl std::fmt::Debug for Ranges<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ranges")
            .field("ranges", &self.list.len())
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<'a> Ranges<'a> {
    /// The ranges `list` (sorted) of a blob, opened with `open`; the bytes read are added to
    /// `fetched`.
    pub fn new(list: &'a [(u64, u64)], open: &'a OpenRange<'a>, fetched: &'a AtomicU64) -> Self {
        Ranges {
            list,
            cur: None,
            pos: 0,
            end: 0,
            open,
            fetched,
        }
    }

    /// Moves to blob offset `off`, within the current range or by opening the one holding it.
    pub fn seek_to(&mut self, off: u64) -> std::io::Result<()> {
        if self.cur.is_none() || off < self.pos || off >= self.end {
            let k = self.list.partition_point(|r| r.1 <= off);
            let Some(&(s, e)) = self.list.get(k).filter(|r| r.0 <= off) else {
                return Err(std::io::Error::other(bad(format!(
                    "offset {off} is in no planned range"
                ))));
            };
            self.cur = Some((self.open)(s, e).map_err(std::io::Error::other)?);
            (self.pos, self.end) = (s, e);
        }
        let skip = off - self.pos;
        let copied = std::io::copy(&mut self.take(skip), &mut std::io::sink())?;
        if copied != skip {
            return Err(std::io::Error::other(bad("a range ended early")));
        }
        Ok(())
    }
}

impl Read for Ranges<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(r) = self.cur.as_mut() else {
            return Ok(0);
        };
        let max = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let max = buf.len().min(max);
        let n = r.read(&mut buf[..max])?;
        self.pos += n as u64;
        self.fetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn bad(why: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("a partial pull: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge() {
        assert_eq!(
            merge_ranges(vec![(5000, 6000), (0, 100), (600, 700), (100, 200)]),
            vec![(0, 700), (5000, 6000)]
        );
        let many: Vec<(u64, u64)> = (0..1000u64)
            .map(|i| (i * 10_000, i * 10_000 + 10))
            .collect();
        let merged = merge_ranges(many);
        assert!(merged.len() <= MAX_RANGES, "{}", merged.len());
        assert_eq!(merged[0].0, 0);
        assert_eq!(merged.last().map(|r| r.1), Some(999 * 10_000 + 10));
    }
}
