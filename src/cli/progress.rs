//! Progress of a copy: one line on a terminal (layers, bytes, rate), silent in a pipe or with
//! `--quiet`, or one JSON object per event on stdout (`--progress json`) for tools.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use crate::store::import::Progress;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A line on stderr when it is a terminal, nothing otherwise.
    Auto,
    /// One JSON object per event on stdout: `plan`, `bytes`, `layer-done`.
    Json,
    /// Nothing.
    None,
}

/// Shows import progress.
#[derive(Debug)]
pub struct Reporter {
    tty: bool,
    json: bool,
    start: Instant,
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
    /// A reporter for layers of the given blob sizes, showing progress as `mode` says.
    pub fn new(sizes: Vec<u64>, mode: ProgressMode) -> Reporter {
        let n = sizes.len();
        Reporter {
            tty: mode == ProgressMode::Auto && std::io::stderr().is_terminal(),
            json: mode == ProgressMode::Json,
            start: Instant::now(),
            state: Mutex::new(State {
                bytes: vec![0; n],
                done: 0,
                total: n,
                to_write: n,
                last: Instant::now(),
            }),
        }
    }

    fn emit(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    /// Handles one event.
    pub fn event(&self, p: Progress) {
        if !self.tty && !self.json {
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        if self.json {
            match p {
                Progress::Plan { total, to_write } => self.emit(serde_json::json!({
                    "event": "plan", "layers": total, "to_write": to_write,
                })),
                Progress::Bytes { index, bytes } => {
                    if let Some(b) = s.bytes.get_mut(index) {
                        *b = bytes;
                    }
                    if s.last.elapsed().as_millis() >= 100 {
                        s.last = Instant::now();
                        self.emit(serde_json::json!({
                            "event": "bytes", "layer": index, "bytes": bytes,
                        }));
                    }
                }
                Progress::LayerDone { index, reused } => {
                    let bytes = s.bytes.get(index).copied().unwrap_or(0);
                    self.emit(serde_json::json!({
                        "event": "layer-done", "layer": index, "reused": reused, "bytes": bytes,
                    }));
                }
            }
            return;
        }
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
        let bytes: u64 = s.bytes.iter().sum();
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rlayers {}/{} ({} to write), {} MiB written, {:.0} MiB/s   ",
            s.done.min(s.total),
            s.total,
            s.to_write,
            bytes >> 20,
            bytes as f64 / secs / f64::from(1 << 20)
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
