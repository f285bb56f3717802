//! `bootc-image bound-images list|pull`.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use bootc_image::bootc::{bound_images, deployments, storage};
use bootc_image::image_ref::ImageRef;
use bootc_image::source;
use bootc_image::store::copy::CopyOptions;
use bootc_image::store::{Store, lookup};

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

/// Where a bound image comes from.
#[derive(Debug)]
enum Origin {
    /// bootc's store has it already.
    Present,
    /// The default store has it: copied natively (its files shared).
    DefaultStore(String),
    /// Fetched: from its registry, or the layout or archive the unit names.
    Fetched,
}

fn pull_all(
    cli: &Cli,
    images: &[bound_images::BoundImage],
    fetch: &super::fetch_args::FetchArgs,
    dry_run: bool,
    progress: super::progress::ProgressMode,
) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    let (dst, _) = storage::ensure(&sysroot)?;
    let stored = dst.images()?;
    // The default store is optional: without it (or unreadable) every image comes from its source.
    let default_store = match Store::open_read_only(cli.store_config()?) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("no default store to copy bound images from: {e}");
            None
        }
    };
    let default_images = match default_store.as_ref().map(Store::images) {
        Some(Ok(images)) => images,
        Some(Err(e)) => {
            tracing::warn!("reading the default store's images: {e}; fetching from the sources");
            Vec::new()
        }
        None => Vec::new(),
    };
    let mut plan = Vec::new();
    for b in images {
        let name = bound_images::store_name(&b.image)
            .with_context(|| format!("bound image {} ({})", b.image, b.source))?;
        // A layout or archive the unit names is read from there, never from the default store.
        let local = matches!(
            bootc_image::bootc::bound_images::resolve_pull(&b.image),
            Ok((ImageRef::OciDir { .. } | ImageRef::OciArchive { .. }, _))
        );
        let origin = if lookup::find_image(&stored, &name).is_ok() {
            Origin::Present
        } else if !local && let Ok(found) = lookup::find_image(&default_images, &b.image) {
            Origin::DefaultStore(found.id.clone())
        } else {
            Origin::Fetched
        };
        plan.push((b, name, origin));
    }
    if dry_run {
        for (b, name, origin) in &plan {
            let from = match origin {
                Origin::Present => "already in bootc's store".to_string(),
                Origin::DefaultStore(id) => {
                    format!("the default store (image {})", &id[..12.min(id.len())])
                }
                Origin::Fetched => match bootc_image::bootc::bound_images::resolve_pull(&b.image) {
                    Ok((ImageRef::Docker(_), _)) => {
                        format!("its registry (docker://{name})")
                    }
                    _ => b.image.clone(),
                },
            };
            outln!("{}\t{}\t{from}", b.image, b.source)?;
        }
        return Ok(());
    }
    let before: std::collections::HashSet<String> = stored.into_iter().map(|i| i.id).collect();
    // Fetched images: opened in parallel (each its own proxy), written in one transaction.
    let to_fetch: Vec<&(&bound_images::BoundImage, String, Origin)> = plan
        .iter()
        .filter(|(_, _, o)| matches!(o, Origin::Fetched))
        .collect();
    let options = fetch.options_for_bootc(&cli.sysroot);
    let opened = bootc_image::parallel::map_in_order(&to_fetch, 4, |(b, name, _)| {
        let (source, _) = bootc_image::bootc::bound_images::resolve_pull(&b.image)?;
        let mut o = source::open_with(&source, &options)
            .with_context(|| format!("bound image {} ({})", b.image, b.source))?;
        o.image.names = vec![name.clone()];
        anyhow::Ok(o)
    });
    let opened: Vec<source::OpenedSource> = opened.into_iter().collect::<anyhow::Result<_>>()?;
    let mut added: Vec<String> = Vec::new();
    if !opened.is_empty() {
        let producers: Vec<_> = opened
            .iter()
            .map(|o| bootc_image::source::blob_layers::BlobLayers {
                blobs: o.blobs.as_ref(),
                retry: o.retry,
            })
            .collect();
        let items: Vec<bootc_image::store::import::ImportItem<'_>> = opened
            .iter()
            .zip(&producers)
            .map(|(o, p)| bootc_image::store::import::ImportItem {
                input: &o.image,
                producer: p,
            })
            .collect();
        let layers: Vec<_> = opened.iter().flat_map(|o| o.image.layers.clone()).collect();
        let mode = super::progress::progress_mode(cli, progress);
        let reporter = super::progress::Reporter::new(&layers, mode, None);
        let reports = dst
            .import_all(&items, &|p| reporter.event(p))
            .context("storing the bound images (none was stored)")?;
        reporter.finish();
        added.extend(
            reports
                .into_iter()
                .map(|r| r.image_id)
                .filter(|id| !before.contains(id)),
        );
    }
    let result = (|| -> anyhow::Result<()> {
        for (b, name, origin) in &plan {
            let Origin::DefaultStore(id) = origin else {
                continue;
            };
            let src = default_store
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("the default store is gone"))?;
            let copied = dst
                .copy_image_from(
                    src,
                    id,
                    &CopyOptions {
                        names: vec![name.clone()],
                        verify: false,
                    },
                )
                .with_context(|| format!("bound image {} ({})", b.image, b.source))?;
            if !before.contains(&copied.image_id) {
                added.push(copied.image_id);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        // All or nothing: take back what this run added.
        dst.delete_images(&added)
            .context("removing the images this pull added")?;
        return Err(e);
    }
    if !cli.quiet {
        outln!("Bound images stored: {}", images.len())?;
    }
    Ok(())
}
