//! The proxy's data pipes: each payload is written by a thread of its own into a pipe whose read
//! end goes to the client, so the request loop goes on while the client reads (a payload over
//! the pipe's 64 KiB would otherwise never finish). `FinishPipe` waits for the writer and reports
//! its error: a blob whose digest or size is not what was asked is reported there.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

use crate::error::{Error, Result};

/// What a writer thread does with the pipe's write end.
pub(crate) type Writer = Box<dyn FnOnce(&mut File) -> Result<()> + Send>;

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
    pub(crate) fn start(&mut self, write: Writer) -> Result<(u32, OwnedFd)> {
        let (read, mut file) = pipe()?;
        self.last = self.last.wrapping_add(1).max(1);
        let id = self.last;
        let handle = std::thread::Builder::new()
            .name(format!("proxy-pipe-{id}"))
            .spawn(move || write(&mut file))
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

    /// Whether writers are still running (a `Shutdown` waits for them).
    pub(crate) fn finish_all(&mut self) {
        for (_, handle) in self.running.drain() {
            let _ = handle.join();
        }
    }
}

/// Starts a raw blob: `write` into a data pipe; its error, if any, as JSON into a second pipe
/// (`{"code": "EPIPE"|"retryable"|"other", "message": …}`), which is closed empty on success.
/// Returns both read ends: data first.
pub(crate) fn start_raw(write: Writer) -> Result<[OwnedFd; 2]> {
    let (data_read, mut data) = pipe()?;
    let (err_read, mut err) = pipe()?;
    std::thread::Builder::new()
        .name("proxy-raw-blob".into())
        .spawn(move || {
            if let Err(e) = write(&mut data) {
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
