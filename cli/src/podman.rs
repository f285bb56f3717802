//! The one place podman runs: `bootc-image cmd`, pointed at bootc's store the way upstream bootc does it
//! (`--root /run/bootc/storage --runroot /proc/self/fd/3` in a private mount namespace where the store is
//! bind-mounted on `/run/bootc/storage`; podman records the runroot in its database, so it must not change).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootc_image::error::{Error, Result};

/// Where the store is bind-mounted for podman; also the run root directory (reached as fd 3).
pub const ALIAS_DIR: &str = "/run/bootc/storage";
/// The run root podman is given.
pub const RUNROOT_ARG: &str = "/proc/self/fd/3";

/// The podman binary (`BOOTC_EXP_EXTERNAL_CONTAINER_TOOL`, as upstream, else PATH's real `podman`,
/// never this binary installed under that name).
pub fn podman_bin() -> OsString {
    std::env::var_os("BOOTC_EXP_EXTERNAL_CONTAINER_TOOL")
        .or_else(|| bootc_image::external_tool::find("podman").map(PathBuf::into_os_string))
        .unwrap_or_else(|| "podman".into())
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

/// The bootc/ostree global auth file, as upstream finds it.
pub fn global_auth_file() -> Option<std::path::PathBuf> {
    [
        "/run/ostree/auth.json",
        "/etc/ostree/auth.json",
        "/usr/lib/ostree/auth.json",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.is_file())
}

/// Runs podman as [`command`] builds it, with inherited stdio, and returns its exit code. As upstream,
/// podman gets `REGISTRY_AUTH_FILE`: the bootc/ostree global auth file, else an empty `{}` one, so it
/// never falls back to a user's credentials.
pub fn run(storage: &Path, args: &[OsString]) -> Result<i32> {
    let mut cmd = command(storage, args)?;
    let empty;
    match global_auth_file() {
        Some(p) => {
            cmd.env("REGISTRY_AUTH_FILE", p);
        }
        None => {
            empty = tempfile::NamedTempFile::new()
                .map_err(|e| Error::io("creating", "an empty auth file", e))?;
            std::fs::write(empty.path(), b"{}")
                .map_err(|e| Error::io("writing", empty.path(), e))?;
            cmd.env("REGISTRY_AUTH_FILE", empty.path());
        }
    }
    let status = cmd
        .status()
        .map_err(|e| Error::external("podman (through unshare)", e))?;
    Ok(crate::exit_code(&status))
}
