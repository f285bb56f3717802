//! The proxy's data pipes: each payload is written by a thread of its own into a pipe whose read
//! end goes to the client, so the request loop goes on while the client reads (a payload over
//! the pipe's 64 KiB would otherwise never finish). `FinishPipe` waits for the writer and reports
//! its error: a blob whose digest or size is not what was asked is reported there.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// What a writer thread does with the pipe's write end, given the turns for helper threads.
pub(crate) type Writer = Box<dyn FnOnce(&mut File, &Turns) -> Result<()> + Send>;

/// Turns for streaming blobs: a client asking for forty layers at once gets them a few at a time
/// (as many as there are cores), each with a hashing thread, instead of forty streams' buffers at
/// once. A stream waits for a turn at most [`TURN_WAIT`], then goes on without one (hashing on its
/// own thread): no client's reading order can make streams wait for each other for good.
#[derive(Debug)]
pub(crate) struct Turns {
    free: Mutex<usize>,
    freed: Condvar,
}

/// How long a stream waits for a turn.
pub(crate) const TURN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A turn taken; given back when dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a>(&'a Turns);

impl Turns {
    /// `n` turns (at least one).
    pub(crate) fn new(n: usize) -> Turns {
        Turns {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// A turn, waiting for one at most [`TURN_WAIT`].
    pub(crate) fn take(&self) -> Option<Turn<'_>> {
        let free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut free, _) = self
            .freed
            .wait_timeout_while(free, TURN_WAIT, |f| *f == 0)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Turn(self))
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut free = self
            .0
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

/// The pipes whose writers run.
#[derive(Debug, Default)]
pub(crate) struct Pipes {
    last: u32,
    running: HashMap<u32, JoinHandle<Result<()>>>,
}

/// A pipe, its write end made large (1 MiB where allowed) so a writer runs ahead of the reader.
fn pipe() -> Result<(OwnedFd, File)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::io("creating", "a pipe", std::io::Error::from(e)))?;
    let _ = rustix::pipe::fcntl_setpipe_size(&w, 1 << 20);
    Ok((r, File::from(w)))
}

impl Pipes {
    /// Starts `write` on a thread of its own; returns the pipe's id and read end.
    pub(crate) fn start(&mut self, write: Writer, turns: &Arc<Turns>) -> Result<(u32, OwnedFd)> {
        let turns = Arc::clone(turns);
        let (read, mut file) = pipe()?;
        self.last = self.last.wrapping_add(1).max(1);
        let id = self.last;
        let handle = std::thread::Builder::new()
            .name(format!("proxy-pipe-{id}"))
            .spawn(move || write(&mut file, &turns))
            .map_err(|e| Error::io("starting", "a pipe writer thread", e))?;
        self.running.insert(id, handle);
        Ok((id, read))
    }

    /// Waits for the writer of pipe `id`; its error, if it failed.
    pub(crate) fn finish(&mut self, id: u32) -> Result<()> {
        let handle = self
            .running
            .remove(&id)
            .ok_or_else(|| Error::InvalidInput(format!("FinishPipe of unknown pipe {id}")))?;
        handle
            .join()
            .map_err(|_| Error::Internal(format!("the writer of pipe {id} panicked")))?
    }
}

/// Starts a raw blob: `write` into a data pipe; its error, if any, as JSON into a second pipe
/// (`{"code": "EPIPE"|"retryable"|"other", "message": …}`), which is closed empty on success.
/// Returns both read ends: data first.
pub(crate) fn start_raw(write: Writer, turns: &Arc<Turns>) -> Result<[OwnedFd; 2]> {
    let turns = Arc::clone(turns);
    let (data_read, mut data) = pipe()?;
    let (err_read, mut err) = pipe()?;
    std::thread::Builder::new()
        .name("proxy-raw-blob".into())
        .spawn(move || {
            if let Err(e) = write(&mut data, &turns) {
                drop(data);
                let code = match &e {
                    Error::Write { source, .. } | Error::Io { source, .. }
                        if source.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        "EPIPE"
                    }
                    Error::Remote { .. } => "retryable",
                    _ => "other",
                };
                let json = serde_json::json!({"code": code, "message": e.to_string()});
                let _ = err.write_all(json.to_string().as_bytes());
            }
        })
        .map_err(|e| Error::io("starting", "a pipe writer thread", e))?;
    Ok([data_read, err_read])
}
