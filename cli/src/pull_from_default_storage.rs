//! `bootc-image pull-from-default-storage IMAGE`.

use super::Cli;
use super::default_store::{pull, ran_in_private_namespace};
use super::output::{ResultFormat, outln};

/// Options of pull-from-default-storage.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image in the default store: a name, short name or ID.
    pub image: String,
    /// First rebuild each layer from its tar-split and files and check its DiffID.
    #[arg(long)]
    pub verify: bool,
    /// The result: a line, or one JSON object (name, image ID, layers copied and reused, how).
    #[arg(long, value_enum, default_value_t = ResultFormat::Text)]
    pub format: ResultFormat,
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    if ran_in_private_namespace(cli)? {
        return Ok(());
    }
    let (text, json) = pull(cli, &args.image, args.verify)?;
    match args.format {
        ResultFormat::Json => outln!("{json}")?,
        ResultFormat::Text if !cli.quiet => outln!("{text}")?,
        ResultFormat::Text => {}
    }
    Ok(())
}
