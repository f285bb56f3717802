//! Exit codes: one per class of failure, as `bootc image`'s error handling distinguishes image,
//! storage and external errors. Documented in docs/cli.md.

use bootc_image::error::ErrorClass;

/// The exit code of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// `image exists`: the image is not there (nothing is printed).
    Absent = 1,
    /// The command line is wrong (clap's convention).
    Usage = 2,
    /// The image or a name: missing, invalid, corrupt, unsafe, unsupported.
    Image = 3,
    /// The store or its file system: missing, damaged, full, read-only, not permitted.
    Storage = 4,
    /// An external program (podman, ostree, unshare, chcon, the OSTree helper) failed or is missing.
    External = 5,
    /// A bug of ours.
    Internal = 6,
}

/// A failure the command line itself finds, with its class.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The class.
    pub code: Code,
    /// The one-line message, naming the thing and a remedy.
    pub message: String,
}

/// Another process of ours (the OSTree helper, or this command re-run in a private mount namespace)
/// did the work, reported on its own and failed with this exit code: nothing more is printed.
#[derive(Debug, thiserror::Error)]
#[error("")]
pub struct Delegated(pub i32);

/// Standard output was closed by its reader (`… | head -1`): the command stops at once and prints
/// nothing more, as podman does (which dies of `SIGPIPE`; a shell reports 141 for both).
#[derive(Debug, thiserror::Error)]
#[error("")]
pub struct ClosedOutput;

/// The exit status for [`ClosedOutput`]: 128 + `SIGPIPE`, what a shell reports for podman there.
pub const CLOSED_OUTPUT: u8 = 141;

/// A [`Failure`] as an error.
pub fn fail(code: Code, message: impl Into<String>) -> anyhow::Error {
    Failure {
        code,
        message: message.into(),
    }
    .into()
}

/// The exit code for an error: the class of the first classified error in its chain.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ClosedOutput>() {
            return CLOSED_OUTPUT;
        }
        if let Some(Delegated(code)) = cause.downcast_ref::<Delegated>() {
            return u8::try_from(*code).unwrap_or(Code::Internal as u8);
        }
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code as u8;
        }
        if let Some(err) = cause.downcast_ref::<bootc_image::Error>() {
            return match err.class() {
                ErrorClass::Image => Code::Image,
                ErrorClass::Storage => Code::Storage,
                ErrorClass::External => Code::External,
                _ => Code::Internal,
            } as u8;
        }
        if cause.downcast_ref::<storage_format::Error>().is_some()
            || cause.downcast_ref::<std::io::Error>().is_some()
        {
            return Code::Storage as u8;
        }
        if cause.downcast_ref::<serde_json::Error>().is_some() {
            return Code::Internal as u8;
        }
    }
    Code::Internal as u8
}
