//! `bootc-image bound-images list|pull`.

use super::output::outln;
use anyhow::Context;

use std::sync::Mutex;

use super::Cli;
use super::progress::Reporter;
use bootc_image::bootc::{bound_images, bound_pull, deployments, storage};
use bootc_image::store::Store;

/// Bound-image commands.
#[derive(Debug, clap::Subcommand)]
pub enum BoundCommand {
    /// List the bound images of the running root (or of the sysroot's first deployment).
    List {
        /// Lines of image and unit file, or a JSON list of {"image", "source"}.
        #[arg(long, value_enum, default_value_t = super::output::ResultFormat::Text)]
        format: super::output::ResultFormat,
    },
    /// Copy every bound image not yet in bootc's store into it, all or nothing: from the default
    /// store when it holds the image, else from its registry (or the oci:/oci-archive:/dir:/
    /// docker-archive: reference the unit names); fetched images are written together, in parallel.
    Pull {
        /// Registry options (default credentials: bootc's /run, /etc, /usr/lib/ostree/auth.json).
        #[command(flatten)]
        fetch: super::fetch_args::FetchArgs,
        /// List what would be fetched and from where; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Progress: bars on a terminal (auto), JSON events on stdout (json), or none.
        #[arg(long, value_enum, default_value_t = super::progress::ProgressMode::Auto)]
        progress: super::progress::ProgressMode,
    },
}

fn bound(cli: &Cli) -> anyhow::Result<Vec<bound_images::BoundImage>> {
    let sysroot = cli.sysroot();
    match deployments::running_root(&cli.sysroot, &sysroot)? {
        Some(root) => Ok(bound_images::read(&root)?),
        None => Ok(Vec::new()),
    }
}

/// Runs the command.
pub fn run(cli: &Cli, c: &BoundCommand) -> anyhow::Result<()> {
    let images = bound(cli)?;
    match c {
        BoundCommand::List { format } => {
            if *format == super::output::ResultFormat::Json {
                let v: Vec<serde_json::Value> = images
                    .iter()
                    .map(|b| serde_json::json!({"image": b.image, "source": b.source}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(());
            }
            for b in &images {
                outln!("{}\t{}", b.image, b.source)?;
            }
            Ok(())
        }
        BoundCommand::Pull {
            fetch,
            dry_run,
            progress,
        } => {
            if !dry_run && super::default_store::ran_in_private_namespace(cli)? {
                return Ok(());
            }
            pull_all(cli, &images, fetch, *dry_run, *progress)
        }
    }
}

/// The bound images into bootc's store, all or nothing (or, with `dry_run`, where each would come
/// from).
fn pull_all(
    cli: &Cli,
    images: &[bound_images::BoundImage],
    fetch: &super::fetch_args::FetchArgs,
    dry_run: bool,
    progress: super::progress::ProgressMode,
) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    let (dst, _) = storage::ensure(&sysroot)?;
    // The default store is optional: without it (or unreadable) every image comes from its source.
    let default_store = match Store::open_read_only(cli.store_config()?) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("no default store to copy bound images from: {e}");
            None
        }
    };
    let plan = bound_pull::plan(&dst, default_store.as_ref(), images)?;
    if dry_run {
        for p in &plan {
            outln!("{}\t{}\t{}", p.image.image, p.image.source, p.from())?;
        }
        return Ok(());
    }
    let mode = super::progress::progress_mode(cli, progress);
    let reporter: Mutex<Option<Reporter>> = Mutex::new(None);
    let layers = |l: &[bootc_image::store::image_input::LayerInput]| {
        if let Ok(mut r) = reporter.lock() {
            *r = Some(Reporter::new(l, mode, None));
        }
    };
    let events = |p| {
        if let Ok(r) = reporter.lock()
            && let Some(r) = r.as_ref()
        {
            r.event(p);
        }
    };
    let pulled = bound_pull::pull_all(
        &dst,
        default_store.as_ref(),
        &plan,
        &fetch.options_for_bootc(&cli.sysroot),
        &layers,
        &events,
    );
    if let Some(r) = reporter.into_inner().ok().flatten() {
        r.finish();
    }
    pulled.context("storing the bound images (none was stored)")?;
    if !cli.quiet {
        outln!("Bound images stored: {}", images.len())?;
    }
    Ok(())
}
