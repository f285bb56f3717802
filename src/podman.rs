//! The one place podman runs: `bootc-image cmd`, pointed at bootc's store the way upstream bootc does it
//! (`--root /run/bootc/storage --runroot /proc/self/fd/3` in a private mount namespace where the store is
//! bind-mounted on `/run/bootc/storage`; podman records the runroot in its database, so it must not change).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::error::{Error, Result};

/// Where the store is bind-mounted for podman; also the run root directory (reached as fd 3).
pub const ALIAS_DIR: &str = "/run/bootc/storage";
/// The run root podman is given.
pub const RUNROOT_ARG: &str = "/proc/self/fd/3";

/// The podman binary (`BOOTC_EXP_EXTERNAL_CONTAINER_TOOL`, as upstream, else `podman`).
pub fn podman_bin() -> OsString {
    std::env::var_os("BOOTC_EXP_EXTERNAL_CONTAINER_TOOL").unwrap_or_else(|| "podman".into())
}

/// Builds the command that runs `podman --root /run/bootc/storage --runroot /proc/self/fd/3 <args>` with
/// `storage` bind-mounted on `/run/bootc/storage` in a private mount namespace (via `unshare`, so no unsafe
/// code runs between fork and exec). The original `/run/bootc/storage` is opened as fd 3 first.
pub fn command(storage: &Path, args: &[OsString]) -> Result<Command> {
    std::fs::create_dir_all(ALIAS_DIR)
        .map_err(|e| Error::io("creating directory", ALIAS_DIR, e))?;
    let script = r#"set -e
exec 3<"$1"
mount --bind "$2" "$1"
shift 2
exec "$@""#;
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "bootc-image-podman",
        ALIAS_DIR,
    ]);
    cmd.arg(storage);
    cmd.arg(podman_bin());
    cmd.args(["--root", ALIAS_DIR, "--runroot", RUNROOT_ARG]);
    cmd.args(args);
    Ok(cmd)
}

/// Runs podman as [`command`] builds it, with inherited stdio; fails with podman's exit status.
pub fn run(storage: &Path, args: &[OsString]) -> Result<()> {
    let status = command(storage, args)?
        .status()
        .map_err(|e| Error::io("running podman for", storage, e))?;
    if !status.success() {
        return Err(Error::InvalidInput(format!("podman failed ({status})")));
    }
    Ok(())
}
