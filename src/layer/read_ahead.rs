//! Read-ahead for files a layer writer will read one after another: a helper thread asks the kernel
//! (`posix_fadvise(WILLNEED)`) to start reading the next files while the writer hashes the current
//! one, so a cold disk sees many requests at once instead of one file at a time. It stays at most
//! `lead` bytes ahead of what the writer reports consumed; when it is that far ahead it sleeps until
//! the writer has caught up by half, so the two threads switch a few times per layer instead of once
//! per file. It never reads data itself.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

use rustix::fs::{Advice, Mode, OFlags};

/// Shared between the writer (which reports progress) and the read-ahead thread.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    lead: u64,
    state: Mutex<State>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct State {
    consumed: u64,
    /// Bytes announced by the helper so far.
    announced: u64,
    /// Whether the helper sleeps until the writer catches up.
    waiting: bool,
    stopped: bool,
}

impl ReadAhead {
    /// A read-ahead that keeps at most `lead` bytes announced beyond what was consumed.
    pub fn new(lead: u64) -> Self {
        ReadAhead {
            lead,
            state: Mutex::new(State::default()),
            moved: Condvar::new(),
        }
    }

    /// Writer side: `bytes` more of the announced files were read.
    pub(crate) fn consumed(&self, bytes: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.consumed += bytes;
            if s.waiting && s.announced.saturating_sub(s.consumed) <= self.lead / 2 {
                s.waiting = false;
                self.moved.notify_all();
            }
        }
    }

    /// Writer side: no more reads will come (done or failed); the helper returns.
    pub fn stop(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.stopped = true;
            s.waiting = false;
            self.moved.notify_all();
        }
    }

    /// Helper side: announces `files` (path, size) in the order the writer reads them. Returns when
    /// all were announced or [`stop`](Self::stop) was called. Failures (a missing file) are ignored:
    /// the writer meets them itself and reports them properly.
    pub fn run(&self, files: impl IntoIterator<Item = (PathBuf, u64)>) {
        for (path, size) in files {
            {
                let Ok(mut s) = self.state.lock() else { return };
                if s.announced.saturating_sub(s.consumed) > self.lead {
                    s.waiting = true;
                    while !s.stopped && s.waiting {
                        s = match self.moved.wait(s) {
                            Ok(s) => s,
                            Err(_) => return,
                        };
                    }
                }
                if s.stopped {
                    return;
                }
                s.announced += size;
            }
            if size == 0 {
                continue;
            }
            if let Ok(fd) = rustix::fs::open(
                &path,
                OFlags::RDONLY
                    | OFlags::NONBLOCK
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC
                    | OFlags::NOATIME,
                Mode::empty(),
            )
            .or_else(|_| {
                rustix::fs::open(
                    &path,
                    OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            }) {
                let _ = rustix::fs::fadvise(&fd, 0, None, Advice::WillNeed);
            }
        }
    }
}

/// Stops a [`ReadAhead`] when dropped, so an early return of the writer never leaves the helper
/// waiting.
#[derive(Debug)]
pub(crate) struct StopOnDrop<'a>(pub &'a ReadAhead);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}
