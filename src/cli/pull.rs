//! `bootc-image pull IMAGE…`: images from registries (or any transport we read) into a store, as
//! `podman pull`; also the engine of `cmd pull` and of bound images from registries.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use super::fetch_args::FetchArgs;
use super::progress::{ProgressMode, Reporter};
use crate::image_ref::ImageRef;
use crate::source::image_proxy::FetchOptions;
use crate::source::{self, OpenedSource};
use crate::store::Store;
use crate::store::image_input::ImportReport;

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
        let opened = open(image, &fetch)?;
        let store =
            match &mut store {
                Some(s) => s,
                None => store.insert(Store::open(config.clone()).with_context(|| {
                    format!("opening the store at {}", config.graphroot.display())
                })?),
            };
        let mode = super::progress::progress_mode(cli, args.progress);
        let reporter = Reporter::new(&opened.image.layers, mode, None);
        let report = opened
            .import_into(store, &|p| reporter.event(p))
            .with_context(|| format!("pulling {image}"))?;
        reporter.finish();
        let v = super::output::result_json(&report);
        if mode == ProgressMode::Json {
            // JSON events on stdout: the result is their last event, not a bare line among them.
            let mut done = v.clone();
            done["event"] = "done".into();
            reporter.emit(done);
        } else if args.format == super::output::ResultFormat::Json {
            outln!("{v}")?;
        } else {
            outln!("{}", report.image_id)?;
        }
    }
    Ok(())
}

/// Where an image argument leads and the name it gets: `docker://NAME` and a bare `NAME` are
/// pulled from the registry and named NAME (normalized, as podman); `dir:`, `docker-archive:`,
/// `oci:` and `oci-archive:` are named `localhost/TAG` (or after the file).
pub fn resolve(image: &str) -> anyhow::Result<(ImageRef, String)> {
    if image.starts_with("containers-storage:") {
        return Err(super::exit::fail(
            super::exit::Code::Image,
            format!(
                "{image}: pulling from a store: into bootc's store use `bootc-image pull-from-default-storage NAME`; between stores `copy-to-storage --source {image} --target containers-storage:[STORE]NAME`"
            ),
        ));
    }
    let r = ImageRef::parse_pull(image)?;
    let name = crate::bootc::bound_images::store_name(&r.to_string())
        .with_context(|| format!("naming {image} in the store"))?;
    Ok((r, name))
}

/// Opens an image argument for fetching, with its store name.
pub fn open(image: &str, fetch: &FetchOptions) -> anyhow::Result<OpenedSource> {
    let (source, name) = resolve(image)?;
    let mut opened =
        source::open_with(&source, fetch).with_context(|| format!("pulling {image}"))?;
    opened.image.names = vec![name];
    Ok(opened)
}

/// Pulls one image into `store` (always: its manifest is fetched again, layers already stored are
/// not), with progress as `mode` says.
pub fn pull_one(
    store: &Store,
    image: &str,
    fetch: &FetchOptions,
    mode: ProgressMode,
) -> anyhow::Result<ImportReport> {
    import(store, image, open(image, fetch)?, mode)
}

/// Imports an opened image into `store`, with progress as `mode` says.
fn import(
    store: &Store,
    image: &str,
    opened: OpenedSource,
    mode: ProgressMode,
) -> anyhow::Result<ImportReport> {
    let reporter = Reporter::new(&opened.image.layers, mode, None);
    let report = opened
        .import_into(store, &|p| reporter.event(p))
        .with_context(|| format!("pulling {image}"))?;
    reporter.finish();
    Ok(report)
}
