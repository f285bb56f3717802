//! A one-line progress display on a terminal; silent in a pipe.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::store::import::Progress;

/// Shows import progress on stderr when it is a terminal.
#[derive(Debug)]
pub struct Reporter {
    tty: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    bytes: Vec<u64>,
    done: usize,
    total: usize,
    to_write: usize,
    last: Instant,
}

impl Reporter {
    /// A reporter for layers of the given blob sizes.
    pub fn new(sizes: Vec<u64>) -> Reporter {
        let n = sizes.len();
        Reporter {
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                bytes: vec![0; n],
                done: 0,
                total: n,
                to_write: n,
                last: Instant::now(),
            }),
        }
    }

    /// Handles one event.
    pub fn event(&self, p: Progress) {
        if !self.tty {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        match p {
            Progress::Plan { total, to_write } => {
                s.total = total;
                s.to_write = to_write;
            }
            Progress::Bytes { index, bytes } => {
                if let Some(b) = s.bytes.get_mut(index) {
                    *b = bytes;
                }
                if s.last.elapsed().as_millis() < 100 {
                    return;
                }
            }
            Progress::LayerDone { .. } => s.done += 1,
        }
        s.last = Instant::now();
        let mb: u64 = s.bytes.iter().sum::<u64>() >> 20;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rlayers {}/{} ({} to write), {mb} MiB written   ",
            s.done.min(s.total),
            s.total,
            s.to_write
        );
        let _ = err.flush();
    }

    /// Ends the progress line.
    pub fn finish(&self) {
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}
