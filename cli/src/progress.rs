//! Progress of a copy: on a terminal a bar per layer (bytes of total, rate, ETA) as podman draws
//! them, silent in a pipe or with `--quiet`, or one JSON object per event (`--progress json`) on
//! stdout or a file descriptor (`--progress-fd`) for tools.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use bootc_image::store::image_input::{LayerInput, Progress};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar per layer on stderr when it is a terminal, nothing otherwise.
    Auto,
    /// One JSON object per event on stdout (or `--progress-fd`): `plan`, `bytes`, `layer-done`,
    /// `done`.
    Json,
    /// Nothing.
    None,
}

/// Where JSON events go.
#[derive(Debug)]
enum JsonOut {
    Stdout,
    Fd(Mutex<File>),
}

/// Opens the file descriptor `fd` (inherited from the caller) for progress events, through
/// `/proc/self/fd` (no raw descriptors taken over).
pub fn open_progress_fd(fd: u32) -> anyhow::Result<File> {
    let path = format!("/proc/self/fd/{fd}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| {
            super::exit::fail(
                super::exit::Code::Usage,
                format!(
                    "--progress-fd {fd}: cannot write to that file descriptor ({e}): open it for writing before running bootc-image, e.g. `3>events.json`"
                ),
            )
        })
}

/// Shows import progress.
#[derive(Debug)]
pub struct Reporter {
    json: Option<JsonOut>,
    bars: Option<Bars>,
    layers: Vec<(String, u64)>,
    state: Mutex<State>,
    /// Writing JSON events to stdout failed (a reader that went away, a full disk).
    stdout_failed: std::sync::atomic::AtomicBool,
}

/// The terminal display: one bar per layer being written.
struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<Option<ProgressBar>>>,
    sized: ProgressStyle,
    unsized_: ProgressStyle,
}

impl std::fmt::Debug for Bars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bars").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    bytes: Vec<u64>,
    read: Vec<u64>,
    last: Instant,
}

/// The short form of a digest podman prints (`sha256:` dropped, 12 hex digits).
fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

impl Reporter {
    /// A reporter for an image's layers, showing progress as `mode` says; JSON events go to `fd`
    /// when given, else to stdout.
    pub fn new(layers: &[LayerInput], mode: ProgressMode, fd: Option<File>) -> Reporter {
        let layers: Vec<(String, u64)> = layers
            .iter()
            .map(|l| (l.blob_digest.to_string(), l.blob_size))
            .collect();
        let n = layers.len();
        let json = match (mode, fd) {
            (ProgressMode::Json, Some(f)) => Some(JsonOut::Fd(Mutex::new(f))),
            (ProgressMode::Json, None) => Some(JsonOut::Stdout),
            _ => None,
        };
        let bars = (mode == ProgressMode::Auto && std::io::stderr().is_terminal()).then(|| {
            let sized = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let unsized_ =
                ProgressStyle::with_template("{prefix} {bytes} {binary_bytes_per_sec} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Mutex::new(vec![None; n]),
                sized,
                unsized_,
            }
        });
        Reporter {
            json,
            bars,
            layers,
            state: Mutex::new(State {
                bytes: vec![0; n],
                read: vec![0; n],
                last: Instant::now(),
            }),
            stdout_failed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Writes one JSON event.
    pub fn emit(&self, v: serde_json::Value) {
        match &self.json {
            // One write per event, so a reader (or another writer of the descriptor) never sees
            // half a line.
            Some(JsonOut::Fd(f)) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(format!("{v}\n").as_bytes());
                }
            }
            Some(JsonOut::Stdout) => {
                let mut out = std::io::stdout().lock();
                if out
                    .write_all(format!("{v}\n").as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    self.stdout_failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            None => {}
        }
    }

    /// Whether writing JSON events to stdout failed.
    pub fn stdout_failed(&self) -> bool {
        self.stdout_failed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether events go somewhere other than stdout.
    pub fn json_on_fd(&self) -> bool {
        matches!(self.json, Some(JsonOut::Fd(_)))
    }

    /// Handles one event.
    pub fn event(&self, p: Progress) {
        if self.json.is_some() {
            self.json_event(p);
        } else if let Some(b) = &self.bars {
            self.bar_event(b, p);
        }
    }

    fn json_event(&self, p: Progress) {
        let Ok(mut s) = self.state.lock() else { return };
        match p {
            Progress::Plan { total, to_write } => {
                let sizes: Vec<u64> = self.layers.iter().map(|l| l.1).collect();
                let digests: Vec<&str> = self.layers.iter().map(|l| l.0.as_str()).collect();
                self.emit(serde_json::json!({
                    "event": "plan", "layers": total, "to_write": to_write,
                    "digests": digests, "sizes": sizes,
                }));
            }
            Progress::Bytes { index, bytes, read } => {
                if let Some(b) = s.bytes.get_mut(index) {
                    *b = bytes;
                }
                if let Some(r) = s.read.get_mut(index) {
                    *r = read;
                }
                if s.last.elapsed().as_millis() >= 100 {
                    s.last = Instant::now();
                    let total = self.layers.get(index).map_or(0, |l| l.1);
                    self.emit(serde_json::json!({
                        "event": "bytes", "layer": index, "bytes": bytes, "read": read,
                        "total": total,
                    }));
                }
            }
            Progress::LayerDone { index, reused } => {
                let bytes = s.bytes.get(index).copied().unwrap_or(0);
                let read = s.read.get(index).copied().unwrap_or(0);
                self.emit(serde_json::json!({
                    "event": "layer-done", "layer": index, "reused": reused, "bytes": bytes,
                    "read": read,
                }));
            }
        }
    }

    fn bar_event(&self, b: &Bars, p: Progress) {
        let Ok(mut bars) = b.bars.lock() else { return };
        match p {
            Progress::Plan { .. } => {}
            Progress::Bytes { index, read, .. } => {
                let Some(slot) = bars.get_mut(index) else {
                    return;
                };
                let bar = slot.get_or_insert_with(|| {
                    let (digest, total) = self.layers.get(index).cloned().unwrap_or_default();
                    let bar = if total > 0 {
                        ProgressBar::new(total).with_style(b.sized.clone())
                    } else {
                        ProgressBar::no_length().with_style(b.unsized_.clone())
                    };
                    b.multi
                        .add(bar.with_prefix(format!("Copying blob {}", short(&digest))))
                });
                bar.set_position(read);
            }
            Progress::LayerDone { index, reused } => {
                if reused {
                    let digest = self.layers.get(index).map(|l| l.0.as_str()).unwrap_or("");
                    b.multi.suspend(|| {
                        super::output::note(format_args!(
                            "Copying blob {} skipped: already exists",
                            short(digest)
                        ));
                    });
                } else if let Some(Some(bar)) = bars.get(index) {
                    bar.finish_with_message("done");
                }
            }
        }
    }

    /// Ends the display: bars of layers that did not finish stay as they were.
    pub fn finish(&self) {
        if let Some(b) = &self.bars
            && let Ok(bars) = b.bars.lock()
        {
            for bar in bars.iter().flatten() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            // indicatif leaves the cursor at the end of the last bar.
            if bars.iter().any(Option::is_some) {
                super::output::note(format_args!(""));
            }
        }
    }
}

/// The progress mode after --quiet.
pub fn progress_mode(cli: &super::Cli, mode: ProgressMode) -> ProgressMode {
    if cli.quiet && mode == ProgressMode::Auto {
        ProgressMode::None
    } else {
        mode
    }
}
