//! `bootc-image cmd`: the podman passthrough on bootc's store.

use std::ffi::OsString;

use super::Cli;
use crate::bootc::storage;

/// The podman verbs bootc passes through.
#[derive(Debug, clap::Subcommand)]
pub enum CmdCommand {
    /// podman image list ARGS on bootc's store.
    List {
        /// Arguments for podman.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<OsString>,
    },
    /// podman image build ARGS into bootc's store.
    Build {
        /// Arguments for podman.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<OsString>,
    },
    /// podman image pull IMAGES into bootc's store.
    Pull {
        /// The images.
        #[arg(required = true)]
        images: Vec<OsString>,
    },
    /// podman image push ARGS from bootc's store.
    Push {
        /// Arguments for podman.
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<OsString>,
    },
}

/// Runs the command.
pub fn run(cli: &Cli, c: &CmdCommand) -> anyhow::Result<()> {
    cli.note_store_options_unused("bootc-image cmd");
    let (store, _) = storage::ensure(&cli.sysroot())?;
    let path = store.config().graphroot.clone();
    drop(store);
    let (verb, args): (&str, Vec<OsString>) = match c {
        CmdCommand::List { args } => ("list", args.clone()),
        CmdCommand::Build { args } => ("build", args.clone()),
        CmdCommand::Push { args } => ("push", args.clone()),
        CmdCommand::Pull { images } => {
            for img in images {
                let code =
                    crate::podman::run(&path, &["image".into(), "pull".into(), img.clone()])?;
                if code != 0 {
                    return Err(super::exit::Delegated(code).into());
                }
            }
            return Ok(());
        }
    };
    let mut full: Vec<OsString> = vec!["image".into(), verb.into()];
    full.extend(args);
    // podman printed its own error; pass its exit code on.
    let code = crate::podman::run(&path, &full)?;
    if code != 0 {
        return Err(super::exit::Delegated(code).into());
    }
    Ok(())
}
