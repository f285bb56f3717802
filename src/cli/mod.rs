//! The command line: argument parsing and one module per command.

mod copy_to_storage;
mod progress;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::store::StoreConfig;

/// Work natively with container images in containers-storage (the `bootc image` commands).
#[derive(Debug, Parser)]
#[command(name = "bootc-image", version, about)]
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
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy an image into containers-storage (default target localhost/bootc).
    CopyToStorage(copy_to_storage::Args),
}

impl Cli {
    /// The store configuration these options select.
    pub fn store_config(&self) -> anyhow::Result<StoreConfig> {
        Ok(StoreConfig::resolve(
            self.root.as_deref(),
            self.runroot.as_deref(),
            self.storage_driver.as_deref(),
        )?)
    }
}

/// Parses `args` and runs the command.
pub fn run(args: impl IntoIterator<Item = OsString>) -> anyhow::Result<()> {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            if !e.use_stderr() {
                e.print()?;
                return Ok(());
            }
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            anyhow::bail!("{first} (see bootc-image --help)");
        }
    };
    match &cli.command {
        Command::CopyToStorage(args) => copy_to_storage::run(&cli, args),
    }
}
