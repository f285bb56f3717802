//! The directory times a layer writer sets last (creating children changes them), kept in memory
//! that does not grow with the layer: past [`MEM_MAX`] bytes of paths the list so far goes to an
//! anonymous temporary file beside the layer's tree, and is read back, in the order the entries
//! came, when the times are set.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{Timespec, Timestamps};

use crate::error::{Error, Result};

/// Bytes of paths (and times) kept in memory before they are spilled.
const MEM_MAX: usize = 256 * 1024;
/// Bytes a kept entry costs besides its path (its times and the vector's own).
const ENTRY_COST: usize = 64;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct DirTimes {
    /// Where a spill file is made: the directory holding the layer's tree.
    spill_dir: PathBuf,
    /// The latest entries, in order.
    mem: Vec<(Vec<u8>, Timestamps)>,
    /// What `mem` costs, about.
    mem_bytes: usize,
    /// The earlier entries, in order, when there were too many to keep.
    spilled: Option<BufWriter<File>>,
}

impl DirTimes {
    /// An empty list whose spill file, if it needs one, goes to the directory of `tree`.
    pub(super) fn new(tree: &Path) -> DirTimes {
        DirTimes {
            spill_dir: tree
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            mem: Vec::new(),
            mem_bytes: 0,
            spilled: None,
        }
    }

    fn spill_error(&self, e: std::io::Error) -> Error {
        Error::io(
            "keeping directory times in a temporary file in",
            &self.spill_dir,
            e,
        )
    }

    /// Adds the directory at `path` (cleaned, relative to the tree) with its `times`.
    pub(super) fn push(&mut self, path: Vec<u8>, times: Timestamps) -> Result<()> {
        self.mem_bytes += path.len() + ENTRY_COST;
        self.mem.push((path, times));
        if self.mem_bytes > MEM_MAX {
            self.spill()?;
        }
        Ok(())
    }

    /// Appends the entries in memory to the spill file.
    fn spill(&mut self) -> Result<()> {
        if self.spilled.is_none() {
            let f = tempfile::tempfile_in(&self.spill_dir).map_err(|e| self.spill_error(e))?;
            self.spilled = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        let mem = std::mem::take(&mut self.mem);
        self.mem_bytes = 0;
        let written = (|| -> std::io::Result<()> {
            let out = self
                .spilled
                .as_mut()
                .ok_or_else(|| std::io::Error::other("no spill file"))?;
            for (path, t) in &mem {
                let len = u32::try_from(path.len()).map_err(std::io::Error::other)?;
                out.write_all(&len.to_le_bytes())?;
                out.write_all(path)?;
                for ts in [t.last_access, t.last_modification] {
                    out.write_all(&ts.tv_sec.to_le_bytes())?;
                    out.write_all(&ts.tv_nsec.to_le_bytes())?;
                }
            }
            Ok(())
        })();
        written.map_err(|e| self.spill_error(e))?;
        // Keep the vector's capacity from growing past what one round needs.
        self.mem = Vec::with_capacity(mem.capacity().min(4096));
        Ok(())
    }

    /// Calls `f` with every entry, in the order they were added.
    pub(super) fn for_each(
        mut self,
        mut f: impl FnMut(&[u8], &Timestamps) -> Result<()>,
    ) -> Result<()> {
        if let Some(out) = self.spilled.take() {
            let mut file = out
                .into_inner()
                .map_err(|e| self.spill_error(e.into_error()))?;
            file.seek(SeekFrom::Start(0))
                .map_err(|e| self.spill_error(e))?;
            let mut r = BufReader::with_capacity(64 * 1024, file);
            let mut path = Vec::new();
            loop {
                let mut len = [0u8; 4];
                match r.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(self.spill_error(e)),
                }
                path.resize(u32::from_le_bytes(len) as usize, 0);
                let mut times = [0u8; 32];
                r.read_exact(&mut path)
                    .and_then(|()| r.read_exact(&mut times))
                    .map_err(|e| self.spill_error(e))?;
                let num = |i: usize| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&times[i * 8..i * 8 + 8]);
                    i64::from_le_bytes(b)
                };
                let ts = |s: i64, n: i64| Timespec {
                    tv_sec: s,
                    tv_nsec: n as _,
                };
                let t = Timestamps {
                    last_access: ts(num(0), num(1)),
                    last_modification: ts(num(2), num(3)),
                };
                f(&path, &t)?;
            }
        }
        for (path, t) in std::mem::take(&mut self.mem) {
            f(&path, &t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_across_a_spill() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", "/tmp", e))?;
        let tree = dir.path().join("diff");
        let mut d = DirTimes::new(&tree);
        let n = 20_000u32;
        for i in 0..n {
            let t = Timespec {
                tv_sec: i64::from(i),
                tv_nsec: i64::from(i % 1000) as _,
            };
            d.push(
                format!("dir{i}/sub").into_bytes(),
                Timestamps {
                    last_access: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    last_modification: t,
                },
            )?;
        }
        assert!(d.spilled.is_some(), "20k entries spill");
        assert!(d.mem_bytes <= MEM_MAX);
        let mut next = 0u32;
        d.for_each(|p, t| {
            assert_eq!(p, format!("dir{next}/sub").as_bytes());
            assert_eq!(t.last_modification.tv_sec, i64::from(next));
            assert_eq!(t.last_modification.tv_nsec, i64::from(next % 1000));
            next += 1;
            Ok(())
        })?;
        assert_eq!(next, n);
        Ok(())
    }
}
