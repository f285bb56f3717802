//! The command line: argument parsing and one module per command.

// The command line is where output goes to the terminal; the rest of the library never prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bound_images;
mod build_chunked;
mod cmd;
mod copy_to_storage;
mod copying;
mod default_store;
pub mod exit;
mod export;
mod fetch_args;
mod generate;
mod image;
mod list;
mod output;
mod podman;
mod progress;
mod pull;
mod pull_from_default_storage;
pub mod seam;
mod set_unified;
mod storage;
mod store_args;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use bootc_image::store::StoreConfig;
use output::outln;

/// A warning on stderr (`warning: …`).
fn warn(text: std::fmt::Arguments<'_>) {
    output::warn(text);
}

/// Work natively with container images in containers-storage (the `bootc image` commands).
#[derive(Debug, Parser)]
#[command(
    name = "bootc-image",
    version,
    about,
    next_help_heading = "Global options"
)]
pub struct Cli {
    /// Graph root of the store (like podman's --root). Default: from storage.conf.
    #[arg(long, global = true, value_name = "PATH")]
    pub root: Option<PathBuf>,
    /// Run root of the store (like podman's --runroot). Default: from storage.conf.
    #[arg(long, global = true, value_name = "PATH")]
    pub runroot: Option<PathBuf>,
    /// Storage driver: overlay or vfs (like podman's --storage-driver). Default: from storage.conf.
    #[arg(long, global = true, value_name = "DRIVER")]
    pub storage_driver: Option<String>,
    /// Log messages of this level and above on stderr: error, warn, info, debug, trace (as podman's
    /// --log-level). Default: RUST_LOG if set, else warn.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Print no progress and no result lines (errors still go to stderr).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// The physical root bootc manages (a booted system's `/`, or a sysroot on disk).
    #[arg(long, global = true, value_name = "PATH", default_value = "/")]
    pub sysroot: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log levels, as podman names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors (the default).
    Warn,
    /// What the engine does: stores opened and recovered, layers written and reused, deletes.
    Info,
    /// Also locks, external programs, per-layer details.
    Debug,
    /// Everything.
    Trace,
}

/// Sends `tracing` events to stderr: the level of --log-level, else RUST_LOG, else warn.
pub(crate) fn init_logging(level: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(match l {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image into containers-storage (default target localhost/bootc).
    CopyToStorage(copy_to_storage::Args),
    /// List the images bootc holds: host images, unified (bootc's store) and logically bound ones.
    List(list::Args),
    /// Pull images from registries (or dir:, docker-archive:, oci:, oci-archive:) into a store, as
    /// podman pull: natively, layers in parallel, retried, all or nothing per image.
    Pull(pull::Args),
    /// Copy an image from the default store (podman's) into bootc's store, sharing its files.
    PullFromDefaultStorage(pull_from_default_storage::Args),
    /// Build a chunked, reproducible image from a root filesystem directory into a store: one layer
    /// per big package (dpkg), small ones packed, unowned files last; no tar on disk.
    BuildChunked(build_chunked::Args),
    /// Export an image of a store to an OCI layout or archive with compressed layers (gzip or
    /// zstd), to push it without podman.
    Export(export::Args),
    /// Put the booted host image into bootc's store under its name, so upgrades find it there
    /// (from bootc's store as it is, the default store, or the host's OSTree or composefs repository).
    SetUnified(set_unified::Args),
    /// Run podman on bootc's store: list, build, pull or push.
    #[command(subcommand)]
    Cmd(cmd::CmdCommand),
    /// Logically bound images (usr/lib/bootc/bound-images.d).
    #[command(subcommand)]
    BoundImages(bound_images::BoundCommand),
    /// Image commands as podman's, natively: exists, inspect, rm, tag.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (one per command) into a directory (for packaging).
    #[command(hide = true)]
    GenerateMan {
        /// The directory.
        dir: std::path::PathBuf,
    },
    /// bootc's store: create, inspect, verify, collect garbage.
    #[command(subcommand)]
    Storage(storage::StorageCommand),
}

/// The whole program: bootc's seam roles (podman's, skopeo's) when this binary plays them
/// ([`seam::role`]), else our own command line.
pub fn main_with(args: Vec<OsString>) -> std::process::ExitCode {
    match seam::role(&args) {
        Some(role) => seam::run(role, args),
        None => exit_with(run(args)),
    }
}

/// The process's end for a command's outcome: success, or the one `error:` line (lost, not a
/// panic, when stderr cannot be written) and the exit code of the error's class.
pub fn exit_with(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => failed_with(&e, "error", |code| code),
    }
}

/// The end of a failed command: its one line after `prefix:` (`error` here, `Error` as podman
/// says it; lost, not a panic, when stderr cannot be written), and the exit code `code` makes
/// of the error's class ([`exit::code_of`]).
pub(crate) fn failed_with(
    e: &anyhow::Error,
    prefix: &str,
    code: impl FnOnce(u8) -> u8,
) -> std::process::ExitCode {
    use std::io::Write as _;
    let line = error_line(e);
    if !line.is_empty() {
        let _ = writeln!(std::io::stderr().lock(), "{prefix}: {line}");
    }
    std::process::ExitCode::from(code(exit::code_of(e)))
}

/// The one line printed for a failed command: the error's chain, and for errors of the file system
/// under the store a remedy.
pub fn error_line(e: &anyhow::Error) -> String {
    // Another process of ours already reported.
    if e.chain()
        .any(|c| c.is::<exit::Delegated>() || c.is::<exit::ClosedOutput>())
    {
        return String::new();
    }
    let mut msg = format!("{e:#}").replace('\n', " ");
    let os = e.chain().find_map(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
    });
    let remedy = match os.map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::NOSPC) | Some(rustix::io::Errno::DQUOT) => {
            Some("free space on that file system and run again (nothing was stored)")
        }
        Some(rustix::io::Errno::ROFS) => Some(
            "that file system is read-only: remount it read-write, or name another store with --root",
        ),
        Some(rustix::io::Errno::ACCESS) | Some(rustix::io::Errno::PERM)
            if !rustix::process::geteuid().is_root() =>
        {
            Some(
                "rootless stores are not supported (the store's files must be owned as the image says): run bootc-image as root",
            )
        }
        Some(rustix::io::Errno::ACCESS) | Some(rustix::io::Errno::PERM) => {
            Some("check the permissions of the store (and of --root), or name another with --root")
        }
        _ => None,
    };
    if let Some(r) = remedy {
        msg.push_str(": ");
        msg.push_str(r);
    }
    msg
}

impl Cli {
    /// The sysroot these options select.
    pub fn sysroot(&self) -> bootc_image::bootc::sysroot::Sysroot {
        bootc_image::bootc::sysroot::Sysroot::new(&self.sysroot)
    }

    /// Whether --root, --runroot or --storage-driver was given.
    pub fn names_a_store(&self) -> bool {
        self.root.is_some() || self.runroot.is_some() || self.storage_driver.is_some()
    }

    /// Says (on stderr) that --root/--runroot/--storage-driver do not apply to a command that
    /// works on bootc's store only.
    pub fn note_store_options_unused(&self, command: &str) {
        if self.names_a_store() {
            output::note(format_args!(
                "note: {command} works on bootc's store under --sysroot; --root/--runroot/--storage-driver name the default store, which it does not use"
            ));
        }
    }

    /// The store configuration these options select. A --runroot longer than podman accepts is
    /// refused as podman refuses it.
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        if let Some(run) = &self.runroot
            && run.as_os_str().len() > bootc_image::store::RUNROOT_MAX
        {
            return Err(exit::fail(
                exit::Code::Usage,
                format!(
                    "the run root {} is {} characters, longer than the {} podman accepts (\"the specified runroot is longer than 50 characters\"): name a shorter --runroot",
                    run.display(),
                    run.as_os_str().len(),
                    bootc_image::store::RUNROOT_MAX
                ),
            ));
        }
        // Relative paths are made absolute as podman makes them (no symlink resolved: bootc's
        // run root /proc/self/fd/3 must stay that path).
        let absolute = |p: &Option<PathBuf>| -> anyhow::Result<Option<PathBuf>> {
            Ok(match p {
                Some(p) => Some(std::path::absolute(p)?),
                None => None,
            })
        };
        let config = StoreConfig::resolve(
            absolute(&self.root)?.as_deref(),
            absolute(&self.runroot)?.as_deref(),
            self.storage_driver.as_deref(),
        )?;
        // Where podman 6's storage.conf lookup moves the store podman 4.3 and 5 use: said once.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            if let Some(line) = bootc_image::store::storage_conf_difference(
                self.root.is_some(),
                self.runroot.is_some(),
                self.storage_driver.is_some(),
            ) {
                output::note(format_args!("note: {line}"));
            }
        });
        Ok(config)
    }
}

/// Parses `args` and runs the command.
pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    storage_format::set_wait_notice(lock_wait_notice);
    let cli = parse(args)?;
    let Some(cli) = cli else { return Ok(()) };
    init_logging(cli.log_level);
    let result = run_command(&cli);
    if let Some(kib) = peak_rss_kib() {
        tracing::debug!("peak resident set size of this process: {kib} kB");
    }
    result
}

/// This process's peak resident set size (`VmHWM`), without its children's.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the command `cli` names.
fn run_command(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::CopyToStorage(args) => copy_to_storage::run(cli, args),
        Command::List(args) => list::run(cli, args),
        Command::Pull(args) => pull::run(cli, args),
        Command::PullFromDefaultStorage(args) => pull_from_default_storage::run(cli, args),
        Command::SetUnified(args) => set_unified::run(cli, args),
        Command::BuildChunked(args) => build_chunked::run(cli, args),
        Command::Export(args) => export::run(cli, args),
        Command::Cmd(c) => cmd::run(cli, c),
        Command::BoundImages(c) => bound_images::run(cli, c),
        Command::Storage(c) => storage::run(cli, c),
        Command::Image(c) => image::run(cli, c),
        Command::Completion { shell } => output::bytes(&generate::completion(*shell)),
        Command::GenerateMan { dir } => {
            for f in generate::man_pages(dir)? {
                outln!("{}", dir.join(f).display())?;
            }
            Ok(())
        }
    }
}

/// The entry point of `bootc-image-ostree`, the helper that copies OSTree host images: it is the only
/// binary linked with libostree, so the other commands start in a millisecond instead of paying for
/// loading libostree, glib and their dependencies.
#[cfg(feature = "ostree")]
pub fn run_host(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    storage_format::set_wait_notice(lock_wait_notice);
    let Some(cli) = parse(args)? else {
        return Ok(());
    };
    init_logging(cli.log_level);
    match &cli.command {
        Command::CopyToStorage(args) => copy_to_storage::run_host(&cli, args),
        Command::SetUnified(args) => set_unified::run_host(&cli, args),
        _ => Err(exit::fail(
            exit::Code::Usage,
            "bootc-image-ostree only copies host images: use bootc-image",
        )),
    }
}

/// Says once, on stderr, that a store lock is held by another process and we wait for it.
fn lock_wait_notice(path: &std::path::Path, holder: Option<u32>) {
    let who = match holder {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("process {pid} ({})", comm.trim())
        }
        None => "another process".to_string(),
    };
    output::note(format_args!(
        "Waiting for the lock {}, held by {who} (podman, skopeo or another copy); it is released when that finishes",
        path.display()
    ));
}

/// Set in the environment of the command re-run in a private mount namespace.
const PRIVATE_NS_ENV: &str = "BOOTC_IMAGE_PRIVATE_MOUNTNS";

/// Runs this command again in a private mount namespace when hardlinking needs one (see
/// [`bootc_image::bootc::mountns`]); returns whether it did (the caller then stops: the child did the
/// work, and its failure comes back as [`exit::Delegated`]).
fn ran_in_private_namespace(
    dirs: &[std::path::PathBuf],
    remount_rw: &[std::path::PathBuf],
) -> anyhow::Result<bool> {
    use bootc_image::bootc::mountns::{Namespace, prepare_private_namespace};
    let inside = std::env::var_os(PRIVATE_NS_ENV).is_some();
    if prepare_private_namespace(dirs, remount_rw, inside)? == Namespace::Ready {
        return Ok(false);
    }
    let exe = std::env::current_exe()
        .map_err(|e| bootc_image::Error::io("finding", "/proc/self/exe", e))?;
    tracing::debug!("re-running in a private mount namespace (unshare)");
    let status = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PRIVATE_NS_ENV, "1")
        .status()
        .map_err(|e| bootc_image::Error::external("unshare", e))?;
    delegated(&status)?;
    Ok(true)
}

/// The outcome of another process of ours that reported on its own: its failure as
/// [`exit::Delegated`].
pub(crate) fn delegated(status: &std::process::ExitStatus) -> anyhow::Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(exit::Delegated(crate::exit_code(status)).into())
    }
}

/// Parses arguments; `None` when clap printed help or the version.
fn parse(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<Option<Cli>> {
    match Cli::try_parse_from(args) {
        Err(e) => {
            // --help and --version are not errors (and a closed pipe while printing them is none).
            if !e.use_stderr() {
                let _ = e.print();
                return Ok(None);
            }
            if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                || e.kind() == clap::error::ErrorKind::MissingSubcommand
            {
                return Err(exit::fail(
                    exit::Code::Usage,
                    "a command is needed, e.g. bootc-image copy-to-storage --source oci:DIR (see bootc-image --help)",
                ));
            }
            let text = e.to_string();
            // One line: clap's message up to its usage section.
            let msg: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(|l| l.trim().trim_start_matches("error: "))
                .filter(|l| !l.is_empty())
                .collect();
            Err(exit::fail(
                exit::Code::Usage,
                format!("{} (see bootc-image --help)", msg.join(" ")),
            ))
        }
        Ok(c) => Ok(Some(c)),
    }
}

/// The exit code a shell would report for a child's status: its code, or 128 + the signal that
/// killed it.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
