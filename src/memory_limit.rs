//! The memory limit this process runs under (its memory cgroup's, or any parent's: v1
//! `memory.limit_in_bytes`, v2 `memory.max`), and what we do differently under a small one.
//!
//! A memory cgroup counts the page cache its processes dirty. cgroup v1 has no writeback
//! throttling of its own: a writer faster than the disk fills a small cgroup with dirty pages
//! that cannot be reclaimed until written, and the kernel kills it (our zstd copy in a 32 MiB
//! cgroup, docs/performance.md). Under a limit below [`SMALL`], each file written is handed to
//! writeback as soon as it is complete (`posix_fadvise(DONTNEED)`: its dirty pages start going
//! to disk, its clean ones are dropped), so dirty pages stay few.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A limit below this is small. At 64 MiB our imports finish without early writeback, and it
/// costs them a third of their time there (session 15: gzip 1.24 → 1.69 s, zstd 1.11 → 1.61
/// s); at 32 MiB the zstd import needs it (killed without, 2.36 s with).
const SMALL: u64 = 64 << 20;

/// The smallest memory limit on this process's cgroup and its parents, if any is set.
fn limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut dirs: Vec<(PathBuf, &str)> = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            dirs.push((
                Path::new("/sys/fs/cgroup/memory").join(rel),
                "memory.limit_in_bytes",
            ));
        } else if controllers.is_empty() {
            dirs.push((Path::new("/sys/fs/cgroup").join(rel), "memory.max"));
        }
    }
    let mut smallest: Option<u64> = None;
    for (dir, file) in dirs {
        let mut at = Some(dir.as_path());
        while let Some(d) = at {
            if let Ok(v) = std::fs::read_to_string(d.join(file))
                && let Ok(n) = v.trim().parse::<u64>()
            {
                smallest = Some(smallest.map_or(n, |s| s.min(n)));
            }
            at = d.parent().filter(|p| p.starts_with("/sys/fs/cgroup"));
        }
    }
    smallest
}

/// Whether files are handed to writeback as they are completed (a memory limit below 64 MiB).
pub(crate) fn early_writeback() -> bool {
    static EARLY: OnceLock<bool> = OnceLock::new();
    *EARLY.get_or_init(|| {
        let early = limit().is_some_and(|l| l < SMALL);
        if early {
            tracing::debug!("a memory limit below 64 MiB: files go to writeback as written");
        }
        early
    })
}
