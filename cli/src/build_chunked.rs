//! `bootc-image build-chunked`: a root filesystem → a chunked, reproducible image in a store.

use super::output::outln;
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;

use super::Cli;
use super::output::ResultFormat;
use super::progress::{ProgressMode, Reporter};
use super::store_args::target;
use bootc_image::source::rootfs::{BuildOptions, Builder, Grouping, prior_from_store};
use bootc_image::store::Store;

/// Options of build-chunked.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The root filesystem to build from: a directory (a debootstrap tree, a mounted image).
    #[arg(long, value_name = "DIR")]
    pub rootfs: PathBuf,
    /// The image's name: NAME, containers-storage:NAME or containers-storage:[driver@root+runroot]NAME.
    #[arg(long, value_name = "NAME")]
    pub target: String,
    /// At most this many layers.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_layers: usize,
    /// The previous build (an image in the same store): packages keep their layers, so a rebuild
    /// after one package changed changes only its layer.
    #[arg(long, value_name = "IMAGE")]
    pub from_image: Option<String>,
    /// A label of the image config (repeatable); containers.bootc=1 is always set.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// An annotation of the manifest (repeatable).
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// A JSON file with the image config's `config` object (Cmd, Entrypoint, Env, WorkingDir, …).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Clamp every mtime to this time (seconds since the epoch) and make it the creation time.
    /// Default: SOURCE_DATE_EPOCH; without either, the newest mtime in the tree is the creation
    /// time.
    #[arg(long, value_name = "SECS", env = "SOURCE_DATE_EPOCH")]
    pub timestamp: Option<i64>,
    /// Print the plan (layers and their packages) and build nothing.
    #[arg(long)]
    pub plan: bool,
    /// Progress: a bar per layer on a terminal (auto), JSON events on stdout, or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// The result: text lines, or one JSON object.
    #[arg(long, value_enum, default_value_t = ResultFormat::Text)]
    pub format: ResultFormat,
    /// Then push the image to this registry name (REGISTRY/REPO[:TAG], docker:// optional),
    /// layers gzip-compressed (reproducibly: the same tree pushes the same digests).
    #[arg(long, value_name = "NAME")]
    pub push: Option<String>,
    /// Reaching the registry of --push.
    #[command(flatten)]
    pub fetch: super::fetch_args::FetchArgs,
}

/// `KEY=VALUE` pairs of `--label`/`--annotation`.
fn pairs(flag: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        match item.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() && !k.contains(char::is_whitespace) => {
                out.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(super::exit::fail(
                    super::exit::Code::Usage,
                    format!("{flag} {item:?} is not KEY=VALUE with a non-empty key without spaces"),
                ));
            }
        }
    }
    Ok(out)
}

/// The `--config` file: a JSON object (the config's `config` part), if one is named.
fn read_config(
    path: Option<&std::path::Path>,
) -> anyhow::Result<Option<serde_json::Map<String, serde_json::Value>>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let bytes = std::fs::read(path).map_err(|e| {
        super::exit::fail(
            super::exit::Code::Image,
            format!(
                "--config {}: {e}: name a readable JSON file",
                path.display()
            ),
        )
    })?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(m)) => Ok(Some(m)),
        _ => Err(super::exit::fail(
            super::exit::Code::Usage,
            format!(
                "--config {}: not a JSON object (write the config's \"config\" part: {{\"Cmd\": [\"/sbin/init\"]}})",
                path.display()
            ),
        )),
    }
}

/// `--plan`: the layers the build would make, as lines or one JSON object.
fn print_plan(
    grouping: &Grouping,
    plan: &bootc_image::source::rootfs::plan::ChunkPlan,
    format: ResultFormat,
) -> anyhow::Result<()> {
    let grouping = match grouping {
        Grouping::Dpkg(dir) => format!("dpkg ({dir})"),
        Grouping::Directories => "directories (no package database)".to_string(),
    };
    if format == ResultFormat::Json {
        let layers: Vec<serde_json::Value> = plan
            .layers
            .iter()
            .map(|l| serde_json::json!({"key": l.key, "bytes": l.size, "packages": l.packages}))
            .collect();
        return outln!(
            "{}",
            serde_json::json!({"grouping": grouping, "layers": layers})
        );
    }
    outln!(
        "{}, grouped by {grouping}:",
        super::output::count(plan.layers.len() as u64, "layer")
    )?;
    for (i, l) in plan.layers.iter().enumerate() {
        outln!(
            "{i:3} {:24} {:>10} bytes  {}",
            l.key,
            l.size,
            l.packages.join(" ")
        )?;
    }
    Ok(())
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let config = read_config(args.config.as_deref())?;
    let options = BuildOptions {
        max_layers: args.max_layers,
        timestamp: args.timestamp,
        labels: pairs("--label", &args.labels)?,
        annotations: pairs("--annotation", &args.annotations)?,
        config,
    };
    if options.max_layers == 0 {
        return Err(super::exit::fail(
            super::exit::Code::Usage,
            "--max-layers must be at least 1",
        ));
    }
    let (name, store_config) = target(cli, &args.target)?;
    let builder = Builder::new(&args.rootfs, options)
        .with_context(|| format!("reading {}", args.rootfs.display()))?;
    for list in &builder.skipped_lists {
        super::warn(format_args!(
            "{list} in {} is not a regular file: skipped, the files it would list go into the unowned layer",
            args.rootfs.display()
        ));
    }
    let store = Store::open(store_config.clone())
        .with_context(|| format!("opening the store at {}", store_config.graphroot.display()))?;
    let prior = match &args.from_image {
        Some(prev) => Some(
            prior_from_store(&store, prev)
                .with_context(|| format!("reading the previous build {prev}"))?
                .ok_or_else(|| {
                    super::exit::fail(
                        super::exit::Code::Image,
                        format!(
                            "--from-image {prev} was not built by build-chunked (its history names no chunks): build without --from-image"
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let plan = builder.plan(prior.as_ref())?;
    if args.plan {
        return print_plan(&builder.grouping, &plan, args.format);
    }
    let input = builder.image(&plan, vec![name.clone()])?;
    bootc_image::copy::check_name_digests(&input)?;
    let mode = super::progress::progress_mode(cli, args.progress);
    let reporter = Reporter::new(&input.layers, mode, None);
    let report = builder
        .commit(&plan, &input, &store, &|p| reporter.event(p))
        .with_context(|| format!("building {name} from {}", args.rootfs.display()))?;
    reporter.finish();
    let pushed = match &args.push {
        Some(dest) => {
            let dest = dest.strip_prefix("docker://").unwrap_or(dest);
            let images = store.images()?;
            let image = images
                .iter()
                .find(|i| i.id == report.image_id)
                .ok_or_else(|| {
                    anyhow::anyhow!("the image {} just built is gone", report.image_id)
                })?;
            let r = bootc_image::push::push(
                &store,
                image,
                dest,
                &args.fetch.options(),
                bootc_image::export::LayerCompression::Gzip,
            )
            .with_context(|| format!("pushing {name} to docker://{dest}"))?;
            Some((dest.to_string(), r.manifest_digest))
        }
        None => None,
    };
    let seconds = started.elapsed().as_secs_f64();
    if args.format == ResultFormat::Json {
        outln!(
            "{}",
            serde_json::json!({
                "name": name,
                "image_id": report.image_id,
                "digest": report.manifest_digest.to_string(),
                "layers": plan.layers.len(),
                "layers_written": report.layers_written,
                "layers_reused": report.layers_reused,
                "pushed": pushed.as_ref().map(|(d, digest)| serde_json::json!({"name": d, "digest": digest.to_string()})),
                "seconds": (seconds * 1000.0).round() / 1000.0,
            })
        )?;
    } else if !cli.quiet {
        outln!(
            "Built {name} from {} ({}: {} written, {} reused)",
            args.rootfs.display(),
            super::output::count(plan.layers.len() as u64, "layer"),
            report.layers_written,
            report.layers_reused
        )?;
        outln!("ID: {}", report.image_id)?;
        outln!("Digest: {}", report.manifest_digest)?;
        if let Some((dest, digest)) = &pushed {
            outln!("Pushed to docker://{dest}")?;
            outln!("Pushed digest: {digest}")?;
        }
    }
    Ok(())
}
