//! `bootc-image cmd`: the podman passthrough on bootc's store (build, push, list); `cmd pull` is
//! native.

use std::ffi::OsString;

use super::Cli;
use bootc_image::bootc::storage;

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
    /// Pull IMAGES into bootc's store (natively, without podman; always fetches the manifest).
    Pull {
        /// The images: NAME[:TAG|@DIGEST] from a registry, or TRANSPORT:REFERENCE.
        #[arg(required = true)]
        images: Vec<String>,
        /// Registry options.
        #[command(flatten)]
        fetch: super::fetch_args::FetchArgs,
        /// Progress: bars on a terminal (auto), JSON events on stdout (json), or none.
        #[arg(long, value_enum, default_value_t = super::progress::ProgressMode::Auto)]
        progress: super::progress::ProgressMode,
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
    let (verb, args): (&str, Vec<OsString>) = match c {
        CmdCommand::List { args } => ("list", args.clone()),
        CmdCommand::Build { args } => ("build", args.clone()),
        CmdCommand::Push { args } => ("push", args.clone()),
        CmdCommand::Pull {
            images,
            fetch,
            progress,
        } => {
            // Natively: podman stays only for build, push and list.
            let options = fetch.options_for_bootc(&cli.sysroot);
            let mut reporting = super::copying::Reporting::new(
                cli,
                *progress,
                None,
                super::output::ResultFormat::Text,
            );
            reporting.quiet = false;
            for image in images {
                let opened = super::copying::open_pull(image, &options)?;
                super::copying::pull_into(&reporting, &store, image, opened)?;
            }
            return Ok(());
        }
    };
    drop(store);
    let mut full: Vec<OsString> = vec!["image".into(), verb.into()];
    full.extend(args);
    // podman printed its own error; pass its exit code on.
    let code = crate::podman::run(&path, &full)?;
    if code != 0 {
        return Err(super::exit::Delegated(code).into());
    }
    Ok(())
}
