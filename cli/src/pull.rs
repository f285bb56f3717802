//! `bootc-image pull IMAGE…`: images from registries (or any transport we read) into a store, as
//! `podman pull`.

use anyhow::Context;

use super::Cli;
use super::copying::{Reporting, open_pull, pull_into};
use super::fetch_args::FetchArgs;
use super::progress::ProgressMode;
use bootc_image::store::Store;

/// Options of pull.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The images: NAME[:TAG|@DIGEST] from a registry (as docker://NAME), or TRANSPORT:REFERENCE
    /// with docker://, dir:, docker-archive:, oci: or oci-archive:.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
    /// Registry options.
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Progress: a bar per layer on a terminal (auto), one JSON object per event on stdout (json),
    /// or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// The result: each image's ID on a line (as podman pull), or one JSON object per image
    /// (name, image_id, digest, layers written and reused).
    #[arg(long, value_enum, default_value_t = super::output::ResultFormat::Text)]
    pub format: super::output::ResultFormat,
}

/// Runs the command: each image pulled into the store the global options select; its ID printed.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let config = cli.store_config()?;
    let fetch = args.fetch.options();
    let mut store: Option<Store> = None;
    for image in &args.images {
        // The image first: a name that does not resolve leaves no trace, not even a new store.
        let opened = open_pull(image, &fetch)?;
        let store =
            match &mut store {
                Some(s) => s,
                None => store.insert(Store::open(config.clone()).with_context(|| {
                    format!("opening the store at {}", config.graphroot.display())
                })?),
            };
        // podman pull prints the ID even with --quiet (which only silences progress).
        let mut reporting = Reporting::new(cli, args.progress, None, args.format);
        reporting.quiet = false;
        pull_into(&reporting, store, image, opened)?;
    }
    Ok(())
}
