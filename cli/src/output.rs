//! What a command prints: result lines on stdout and notes on stderr, written without panicking.
//!
//! `println!` panics when stdout cannot be written (`| head -1` closes it, `> /dev/full` fills
//! it). Here a write error is an error: a closed pipe ends the command quietly with the status a
//! shell reports for podman in the same place (141: podman dies of `SIGPIPE`), any other failure
//! is one `error:` line with the storage class.

use std::io::Write;

use super::exit;

/// Writes `text` and a newline to stdout.
pub fn line(text: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `text` to stdout as it is (no newline added).
pub fn text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes `bytes` to stdout as they are.
pub fn bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// A note on stderr (`warning: …`); a stderr that cannot be written loses it, nothing more.
pub fn warn(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "warning: {text}");
}

/// A line on stderr as it is; lost if stderr cannot be written.
pub fn note(text: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// An import's result as one JSON object (name, image_id, digest, layers written and reused).
pub fn result_json(report: &bootc_image::store::image_input::ImportReport) -> serde_json::Value {
    serde_json::json!({
        "name": report.names.first(),
        "image_id": report.image_id,
        "digest": report.manifest_digest.to_string(),
        "layers_written": report.layers_written,
        "layers_reused": report.layers_reused,
    })
}

/// `n` and the noun, singular for one: `1 layer`, `3 layers`, `0 images`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A failed write to stdout as the error the command ends with.
fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        exit::ClosedOutput.into()
    } else {
        exit::fail(
            exit::Code::Storage,
            format!(
                "cannot write to standard output: {e}: send the output to a file system with space, or to a pipe"
            ),
        )
    }
}

/// `println!` that returns the write's error instead of panicking: `outln!("{x}")?`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
