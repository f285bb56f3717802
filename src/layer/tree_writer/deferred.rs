//! The second half of writing a regular file — its bytes, owner, mode, times, close — done on a
//! helper thread, while the tree writer goes on creating the next entries.
//!
//! Creating an entry (a path lookup, a new inode, a directory entry) and writing a file's bytes
//! and metadata through its descriptor cost about the same in the kernel; a layer of small files
//! spends most of its time there. Splitting the two lets them run on two cores. Everything the
//! helper does goes through the file's own descriptor, so the order of entries is kept for
//! everything that names a path; the tree writer waits for the helper ([`Deferred::flush`]) before
//! anything that could see or change a file still in its queue (a hardlink's inode, a replaced or
//! whited-out path, the end of the layer).
//!
//! Bytes and files in the queue are bounded: memory and descriptors stay flat.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::metadata::{FileMeta, apply_file_meta};
use crate::error::{Error, Result};
use crate::layer::shared_bytes::SharedBytes;

/// Bytes of file content queued at most.
const MAX_BYTES: usize = 4 << 20;
/// Files queued at most (each holds a descriptor), and at most an eighth of the process's
/// descriptor limit (as the directory cache).
const MAX_FILES: usize = 128;
/// A file's bytes are handed over in pieces of this size (smaller files in one piece).
const PIECE: usize = 256 * 1024;
/// Jobs are handed over in batches of this many (or [`PIECE`] bytes): one wake-up of the helper
/// per batch, not per file.
const BATCH_JOBS: usize = 32;

/// Bytes of a file for the helper: copied into a buffer of its own, or chunks of the decoded
/// stream shared as they are.
enum Part {
    Owned(Vec<u8>),
    Shared(SharedBytes),
}

impl std::ops::Deref for Part {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Part::Owned(v) => v,
            Part::Shared(b) => b,
        }
    }
}

/// Consecutive bytes of a file, in parts.
type Parts = Vec<Part>;

/// Work for the helper, in the order the tree writer made it.
enum Job {
    /// A whole file: its bytes, then its metadata; then it is closed.
    Whole(File, Parts, Box<FileMeta>),
    /// The first bytes of a larger file, and its path in the layer (for errors).
    Start(File, Parts, Vec<u8>),
    /// More bytes of the file started last.
    More(Parts),
    /// The file started last is complete: its metadata, then close it.
    End(Box<FileMeta>),
}

impl Job {
    fn bytes(&self) -> usize {
        match self {
            Job::Whole(_, b, _) | Job::Start(_, b, _) | Job::More(b) => {
                b.iter().map(|p| p.len()).sum()
            }
            Job::End(_) => 0,
        }
    }

    fn files(&self) -> usize {
        usize::from(matches!(self, Job::Whole(..) | Job::Start(..)))
    }
}

/// What is queued, and the helper's first error.
#[derive(Default)]
struct State {
    bytes: usize,
    files: usize,
    jobs: usize,
    /// Whether the tree writer waits for the helper (only then is it woken).
    waiting: bool,
    error: Option<Error>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Jobs made but not handed over yet, and their bytes.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
}

/// The helper thread and its queue.
pub(super) struct Deferred {
    tx: Option<Sender<Vec<Job>>>,
    /// Files queued at most.
    max_files: usize,
    batch: Mutex<Batch>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").finish_non_exhaustive()
    }
}

impl Deferred {
    /// Starts the helper; `root_path` names the layer tree in its errors. `None` when no thread
    /// could be started (the tree writer then writes files itself).
    pub(super) fn start(root_path: PathBuf) -> Option<Deferred> {
        let (tx, rx) = channel();
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        let thread = std::thread::Builder::new()
            .name("layer-files".into())
            .spawn(move || run(rx, &for_thread, &root_path))
            .ok()?;
        let max_files = super::fd_share().clamp(1, MAX_FILES);
        Some(Deferred {
            tx: Some(tx),
            max_files,
            batch: Mutex::new(Batch::default()),
            shared,
            thread: Some(thread),
        })
    }

    /// Queues `job`, waiting while the queue is full; fails with the helper's error, if it had one.
    fn send(&self, job: Job) -> Result<()> {
        let (bytes, files) = (job.bytes(), job.files());
        let full = |st: &State| {
            st.jobs > 0 && (st.bytes + bytes > MAX_BYTES || st.files + files > self.max_files)
        };
        let mut st = self.shared.lock();
        if st.error.is_none() && full(&st) {
            // What is batched must reach the helper before waiting for it.
            drop(st);
            self.hand_over()?;
            st = self.wait_while(full);
        }
        if let Some(e) = st.error.take() {
            return Err(e);
        }
        st.bytes += bytes;
        st.files += files;
        st.jobs += 1;
        drop(st);
        let batch_full = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.bytes += bytes;
            b.jobs.push(job);
            b.jobs.len() >= BATCH_JOBS || b.bytes >= PIECE
        };
        if batch_full {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands the batched jobs to the helper.
    fn hand_over(&self) -> Result<()> {
        let jobs = {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            b.bytes = 0;
            std::mem::take(&mut b.jobs)
        };
        if jobs.is_empty() {
            return Ok(());
        }
        match &self.tx {
            Some(tx) if tx.send(jobs).is_ok() => Ok(()),
            _ => Err(Error::Internal("the file writer thread is gone".into())),
        }
    }

    /// Waits, as long as the helper has no error, while `busy` holds.
    fn wait_while(&self, busy: impl Fn(&State) -> bool) -> MutexGuard<'_, State> {
        let mut st = self.shared.lock();
        while st.error.is_none() && busy(&st) {
            st.waiting = true;
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        st.waiting = false;
        st
    }

    /// Waits until every queued file is written and closed; fails with the helper's error.
    pub(super) fn flush(&self) -> Result<()> {
        self.hand_over()?;
        let mut st = self.wait_while(|st| st.jobs > 0);
        match st.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // Jobs still batched are dropped (their files closed); the helper drains what it was
        // handed (after an error it only closes files) and ends.
        if let Ok(mut b) = self.batch.lock() {
            b.jobs.clear();
        }
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: Receiver<Vec<Job>>, shared: &Shared, root_path: &Path) {
    let mut current: Option<(File, Vec<u8>)> = None;
    for batch in rx {
        let (mut bytes, mut files, jobs) = (0, 0, batch.len());
        let mut failed = shared.lock().error.is_some();
        let mut error = None;
        for job in batch {
            bytes += job.bytes();
            files += job.files();
            if failed {
                // After an error, queued files are only closed: the layer is being abandoned.
                current = None;
            } else if let Err(e) = run_job(job, &mut current, root_path) {
                failed = true;
                current = None;
                error = Some(e);
            }
        }
        let mut st = shared.lock();
        st.bytes -= bytes;
        st.files -= files;
        st.jobs -= jobs;
        if st.error.is_none() {
            st.error = error;
        }
        let wake = st.waiting;
        drop(st);
        if wake {
            shared.changed.notify_all();
        }
    }
}

fn run_job(job: Job, current: &mut Option<(File, Vec<u8>)>, root_path: &Path) -> Result<()> {
    let write = |f: &mut File, parts: &Parts, name: &[u8]| {
        parts
            .iter()
            .try_for_each(|p| f.write_all(p))
            .map_err(|e| Error::write_entry(name, e))
    };
    match job {
        Job::Whole(mut f, b, meta) => {
            write(&mut f, &b, meta.name())?;
            apply_file_meta(&f, &meta, root_path)
        }
        Job::Start(mut f, b, name) => {
            let r = write(&mut f, &b, &name);
            *current = Some((f, name));
            r
        }
        Job::More(b) => match current.as_mut() {
            Some((f, name)) => write(f, &b, name),
            None => Err(Error::Internal("file bytes without a file".into())),
        },
        Job::End(meta) => match current.take() {
            Some((f, _)) => apply_file_meta(&f, &meta, root_path),
            None => Err(Error::Internal("file metadata without a file".into())),
        },
    }
}

/// A regular file whose bytes go to the helper: gathered here (copied, or shared chunks of the
/// decoded stream), handed over in pieces of about [`PIECE`] bytes.
#[derive(Debug)]
pub(super) struct QueuedFile {
    /// The file, until its first piece is handed over.
    file: Option<File>,
    /// Its path in the layer.
    name: Vec<u8>,
    /// The piece being gathered, and its length.
    parts: Parts,
    len: usize,
    /// Bytes of the file not gathered yet (by its header's size).
    left: u64,
}

impl std::fmt::Debug for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Part::Owned(v) => write!(f, "Owned({})", v.len()),
            Part::Shared(b) => write!(f, "Shared({})", b.len()),
        }
    }
}

impl QueuedFile {
    pub(super) fn new(file: File, name: Vec<u8>, size: u64) -> QueuedFile {
        QueuedFile {
            file: Some(file),
            name,
            parts: Vec::with_capacity(1),
            len: 0,
            left: size,
        }
    }

    /// Appends a copy of `b`, handing full pieces to the helper.
    pub(super) fn write(&mut self, d: &Deferred, mut b: &[u8]) -> Result<()> {
        while !b.is_empty() {
            let n = (PIECE - self.len.min(PIECE)).min(b.len());
            match self.parts.last_mut() {
                Some(Part::Owned(v)) if v.capacity() - v.len() >= n => {
                    v.extend_from_slice(&b[..n]);
                }
                _ => {
                    let left = usize::try_from(self.left).unwrap_or(usize::MAX);
                    let room = PIECE - self.len.min(PIECE);
                    let mut v = Vec::with_capacity(left.min(room).max(n));
                    v.extend_from_slice(&b[..n]);
                    self.parts.push(Part::Owned(v));
                }
            }
            self.gathered(d, n)?;
            b = &b[n..];
        }
        Ok(())
    }

    /// Appends `b` as it is (no copy), handing full pieces to the helper.
    pub(super) fn write_shared(&mut self, d: &Deferred, b: SharedBytes) -> Result<()> {
        let n = b.len();
        self.parts.push(Part::Shared(b));
        self.gathered(d, n)
    }

    /// `n` more bytes were gathered: a full piece goes to the helper.
    fn gathered(&mut self, d: &Deferred, n: usize) -> Result<()> {
        self.len += n;
        self.left = self.left.saturating_sub(n as u64);
        if self.len < PIECE {
            return Ok(());
        }
        let piece = std::mem::take(&mut self.parts);
        self.len = 0;
        match self.file.take() {
            Some(f) => d.send(Job::Start(f, piece, self.name.clone())),
            None => d.send(Job::More(piece)),
        }
    }

    /// The file is complete: queues what is left, then its metadata.
    pub(super) fn finish(self, d: &Deferred, meta: FileMeta) -> Result<()> {
        let meta = Box::new(meta);
        match self.file {
            Some(f) => d.send(Job::Whole(f, self.parts, meta)),
            None => {
                if !self.parts.is_empty() {
                    d.send(Job::More(self.parts))?;
                }
                d.send(Job::End(meta))
            }
        }
    }
}
