//! podman's role, on the store `--root`/`--runroot` name (bootc's, bind-mounted on
//! `/run/bootc/storage`, its run root `/proc/self/fd/3`, used only through that path) or the
//! default one: `images`, `image list|exists|pull|rm|inspect|tag|push`, `pull`, `inspect`,
//! `system info`, `system service`. What our own command line does the same way runs there; errors
//! exit 125 (`image exists`: 1 when absent), as podman's.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser as _;

use super::listing;

/// podman's global options we take, as given.
#[derive(Debug, Default)]
pub struct Globals {
    /// `--root`, `--runroot`, `--storage-driver`, `--log-level`, as our own options.
    pub ours: Vec<OsString>,
}

impl Globals {
    /// Our own command line: these global options, then `command`.
    pub fn argv<S: Into<OsString>>(&self, command: impl IntoIterator<Item = S>) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec!["bootc-image".into()];
        argv.extend(self.ours.iter().cloned());
        argv.extend(command.into_iter().map(Into::into));
        argv
    }
}

/// Splits podman's global options off `args` (after argv\[0\]); the rest is the command.
fn globals(args: &[OsString]) -> anyhow::Result<(Globals, Vec<String>)> {
    let mut g = Globals::default();
    let mut rest = Vec::new();
    let mut it = args.iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = it.next() {
        if !rest.is_empty() || !a.starts_with('-') {
            rest.push(a);
            continue;
        }
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        match name.as_str() {
            "--root" | "--runroot" | "--storage-driver" | "--log-level" => {
                let v = match inline {
                    Some(v) => v,
                    None => it.next().with_context(|| format!("{name} needs a value"))?,
                };
                g.ours.push(name.into());
                g.ours.push(v.into());
            }
            _ => bail!("podman option {name} is not served by bootc-image (bootc never passes it)"),
        }
    }
    Ok((g, rest))
}

/// A command line that is not podman's, given to `bootc-image` (not a `podman` link) with the
/// variable set: bootc-image's own command line runs it.
#[derive(Debug, thiserror::Error)]
#[error("not podman's")]
struct NotPodmans;

/// Runs podman's role: exit 0, 1 for an absent image (`image exists`), 125 for an error.
/// `named`: this binary runs as `podman` (else as `bootc-image` with the variable set, where a
/// shape podman's role does not serve is our own command line's).
pub fn main(args: Vec<OsString>, named: bool) -> ExitCode {
    let result = run(&args[1..], named);
    if let Err(e) = &result
        && e.is::<NotPodmans>()
    {
        return crate::exit_with(crate::run(args));
    }
    match result {
        Ok(code) => ExitCode::from(code),
        // podman's statuses: 1 for an absent image (`image exists`), 125 for any other error.
        Err(e) => crate::failed_with(&e, "Error", |code| match code {
            crate::exit::CLOSED_OUTPUT => code,
            c if c == crate::exit::Code::Absent as u8 => 1,
            _ => 125,
        }),
    }
}

/// Our own command line with the global options `g` and `command`.
fn ours(g: &Globals, command: &[&str]) -> anyhow::Result<u8> {
    crate::run(g.argv(command.iter().copied()))?;
    Ok(0)
}

fn run(args: &[OsString], named: bool) -> anyhow::Result<u8> {
    let (g, rest) = match globals(args) {
        Ok(split) => split,
        // `bootc-image --root R --sysroot S …`: our own options, our own command line.
        Err(_) if !named => return Err(NotPodmans.into()),
        Err(e) => return Err(e),
    };
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    if !named && ours_too(&words) {
        return Err(NotPodmans.into());
    }
    if words.starts_with(&["system", "service"]) {
        // bootc pipes the service's stderr and never reads it: nothing may be written there,
        // whatever RUST_LOG the service inherited (a full pipe would stop every pull).
        std::panic::set_hook(Box::new(|_| {}));
    } else {
        crate::init_logging(None);
    }
    match words.as_slice() {
        ["images", opts @ ..] | ["image", "list" | "ls", opts @ ..] => {
            let Some(format) = listing::Format::parse(opts)? else {
                return passthrough(&rest);
            };
            listing::list(&g, &format)?;
            Ok(0)
        }
        ["image", "exists", name] => ours(&g, &["image", "exists", without_transport(name)]),
        ["image", "pull", reference] | ["pull", reference]
            if reference.starts_with("containers-storage:") =>
        {
            pull_from_store(&g, reference)
        }
        ["image", "pull", opts @ ..] | ["pull", opts @ ..] => {
            let mut cmd = vec!["pull"];
            if !opts.iter().any(|o| o.starts_with("--progress")) {
                cmd.extend(["--progress", "none"]);
            }
            cmd.extend(opts.iter().filter(|o| !matches!(**o, "-q" | "--quiet")));
            ours(&g, &cmd)
        }
        ["image", "rm", opts @ ..] | ["rmi", opts @ ..] => {
            let mut cmd = vec!["image", "rm"];
            cmd.extend(opts.iter());
            ours(&g, &cmd)
        }
        ["inspect" | "image", "inspect", ..] | ["inspect", ..] => {
            let opts = if words[0] == "image" {
                &words[2..]
            } else {
                &words[1..]
            };
            let Some((format, names)) = listing::inspect_args(opts)? else {
                return passthrough(&rest);
            };
            listing::inspect(&g, &format, &names)?;
            Ok(0)
        }
        ["image", "tag", image, names @ ..] | ["tag", image, names @ ..] => {
            let mut cmd = vec!["image", "tag", image];
            cmd.extend(names.iter());
            ours(&g, &cmd)
        }
        ["image", "push", opts @ ..] => match push_to_store(opts)? {
            Some((src, dest)) => push_into_store(&g, src, dest),
            None => passthrough(&rest),
        },
        ["image", "build", ..] | ["build", ..] | ["push", ..] => passthrough(&rest),
        ["system", "info", ..] | ["info", ..] => {
            listing::system_info(&g)?;
            Ok(0)
        }
        ["system", "service", opts @ ..] => super::libpod_service::run(&g, opts),
        ["version"] => {
            crate::output::line(format_args!(
                "bootc-image {} serving podman's role for bootc",
                env!("CARGO_PKG_VERSION")
            ))?;
            Ok(0)
        }
        _ if !named => Err(NotPodmans.into()),
        _ => passthrough(&rest),
    }
}

/// Whether `words`, given to `bootc-image` with the variable set (not to a `podman` link), are
/// rather our own command line: our own commands of the same name (`pull`, `image
/// exists|rm|inspect|tag`) with options bootc never passes, e.g. `image inspect --store bootc X`.
fn ours_too(words: &[&str]) -> bool {
    let opts = match words {
        ["pull", rest @ ..] => rest,
        ["image", "exists" | "rm" | "inspect" | "tag", rest @ ..] => rest,
        _ => return false,
    };
    opts.iter()
        .any(|o| o.starts_with('-') && !matches!(*o, "--format=json"))
}

/// A name as the store knows it: `containers-storage:NAME` (bootc passes references of other
/// transports as they are) without its transport, as podman looks such names up locally.
fn without_transport(name: &str) -> &str {
    match name.strip_prefix("containers-storage:") {
        Some(rest) if !rest.starts_with('[') => rest,
        _ => name,
    }
}

/// `image push [--remove-signatures] SRC containers-storage:[STORE]DEST`: the source and the
/// destination reference when the push goes into a store; `None` for any other push.
fn push_to_store<'a>(opts: &[&'a str]) -> anyhow::Result<Option<(&'a str, &'a str)>> {
    let positional: Vec<&str> = opts
        .iter()
        .copied()
        .filter(|o| !matches!(*o, "--remove-signatures" | "-q" | "--quiet"))
        .collect();
    match positional.as_slice() {
        [src, dest] if dest.starts_with("containers-storage:") && !src.starts_with('-') => {
            Ok(Some((src, dest)))
        }
        _ => Ok(None),
    }
}

/// `image push SRC containers-storage:[STORE]DEST`: the image `src` of the store the global
/// options name (podman's default store when bootc runs this) copied into the store and name of
/// `dest`, its files shared where the file system allows.
fn push_into_store(g: &Globals, src: &str, dest: &str) -> anyhow::Result<u8> {
    let cli = cli_of(g)?;
    let from = bootc_image::store::Store::open(cli.store_config()?)?;
    let images = from.images()?;
    let img = bootc_image::store::lookup::find_image(&images, src)?;
    let target = bootc_image::image_ref::parse_storage_reference(dest)?;
    let config = crate::store_args::spec_config(target.store.as_ref())?;
    let to = bootc_image::store::Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let opts = bootc_image::CopyOptions::named(&target.name)?;
    bootc_image::copy::open_stored(from, &img.id.clone(), &opts)?.copy_into(&to, &())?;
    Ok(0)
}

/// `pull containers-storage:[STORE]NAME` (bootc's fallback for that transport): the image of that
/// store (the default one unless named) copied into the store the global options name, its files
/// shared, named as the reference names it.
fn pull_from_store(g: &Globals, reference: &str) -> anyhow::Result<u8> {
    let cli = cli_of(g)?;
    let to = bootc_image::store::Store::open(cli.store_config()?)?;
    let src = bootc_image::ImageRef::parse(reference)?;
    let opts = match bootc_image::image_ref::parse_storage_reference(reference) {
        Ok(r) => bootc_image::CopyOptions::named(&r.name)?,
        // An image ID: the image keeps the names it has.
        Err(_) => bootc_image::CopyOptions::default(),
    };
    let copied = bootc_image::copy(&to, &src, &opts, &())?;
    crate::output::line(format_args!("{}", copied.image_id))?;
    Ok(0)
}

/// Our command line's options for the global options `g` (the store they name).
pub(crate) fn cli_of(g: &Globals) -> anyhow::Result<crate::Cli> {
    Ok(crate::Cli::try_parse_from(g.argv(["list"]))?)
}

/// Runs the real podman with `args` (what we do not serve natively: `image build`, a push to a
/// registry, flags we do not know), with the same descriptors and environment.
fn passthrough(args: &[String]) -> anyhow::Result<u8> {
    let Some(podman) = super::real_tool("podman") else {
        bail!(
            "{}",
            super::missing("podman", format!("podman {}", args.join(" ")).as_ref())
        );
    };
    let status = std::process::Command::new(podman)
        .args(std::env::args_os().skip(1))
        .env_remove(super::TOOL_ENV)
        .status()
        .context("running podman")?;
    Ok(u8::try_from(crate::exit_code(&status)).unwrap_or(125))
}
