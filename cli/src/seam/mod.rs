//! bootc's external-tool seam: this binary as the `podman` and `skopeo` stock bootc runs.
//!
//! bootc (≥ 1.16) runs `$BOOTC_EXP_EXTERNAL_CONTAINER_TOOL` for both tools, and since 1.16.4 the
//! literal `skopeo` on PATH for its ordinary pulls. Nothing tells the tool which role it plays, and
//! argv\[0\] is not reliable (bootc execs it as `bootc` once), so the role comes from the first
//! argument. Seam mode is on when this binary runs as `podman` or `skopeo` (a link's name) or
//! when the variable is set (bootc sets it; its children inherit it). In seam mode:
//!
//! | first argument | role |
//! |---|---|
//! | `experimental-image-proxy`, `copy` (and `--help` as `skopeo`) | skopeo's ([`as_skopeo`]) |
//! | `--root …`, `system`, `image`, `images`, `inspect`, `pull` | podman's ([`as_podman`]) |
//!
//! Outside these shapes, a binary named `podman` or `skopeo` fails in one line naming what it does
//! not serve; `bootc-image` with the variable set runs its own commands as always.
//! `../shared/notes/bootc-seam.md` (in the project's shared notes) lists every call.

pub mod as_podman;
pub mod as_skopeo;
mod libpod_service;
mod listing;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The variable bootc reads for the tool it runs.
pub const TOOL_ENV: &str = "BOOTC_EXP_EXTERNAL_CONTAINER_TOOL";

/// The role this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// skopeo's: the image proxy, `copy`.
    Skopeo,
    /// podman's: bootc's store, `system info`, `system service`.
    Podman,
}

/// The file name of argv\[0\].
fn invoked_as(args: &[OsString]) -> Option<&str> {
    let a0 = args.first()?;
    Path::new(a0).file_name()?.to_str()
}

/// The role `args` ask for, `None` outside seam mode (our own commands).
pub fn role(args: &[OsString]) -> Option<Role> {
    let named = match invoked_as(args) {
        Some("podman") => Some(Role::Podman),
        Some("skopeo") => Some(Role::Skopeo),
        _ => None,
    };
    let env = std::env::var_os(TOOL_ENV).is_some_and(|v| !v.is_empty());
    if named.is_none() && !env {
        return None;
    }
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let by_shape = match first {
        "experimental-image-proxy" | "copy" => Some(Role::Skopeo),
        "system" | "image" | "images" | "pull" | "rmi" => Some(Role::Podman),
        f if f.starts_with("--root") || f.starts_with("--runroot") => Some(Role::Podman),
        // Both tools have it; bootc runs podman's (as argv[0] `bootc`), skopeo's takes a transport.
        "inspect" if named != Some(Role::Skopeo) => Some(Role::Podman),
        _ => None,
    };
    // One value serves both roles (bootc runs `…/podman experimental-image-proxy` when the
    // variable names our podman link): the shape first, then the link's name.
    by_shape.or(named)
}

/// Runs `args` in `role`, with that tool's exit codes.
pub fn run(role: Role, args: Vec<OsString>) -> ExitCode {
    match role {
        Role::Skopeo => as_skopeo::main(args),
        Role::Podman => {
            let named = invoked_as(&args) == Some("podman");
            as_podman::main(args, named)
        }
    }
}

/// The real `tool` (podman, skopeo) on PATH, never this binary.
pub fn real_tool(tool: &str) -> Option<PathBuf> {
    bootc_image::external_tool::find(tool)
}

/// The text for a tool that is needed but missing.
pub fn missing(tool: &str, what: &OsStr) -> String {
    format!(
        "{} needs the real {tool}, which is not installed (bootc-image serves only bootc's own calls natively): install {tool}",
        what.to_string_lossy()
    )
}
