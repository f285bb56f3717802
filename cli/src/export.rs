//! `bootc-image export IMAGE DEST`: an image of a store into an OCI layout or archive, or pushed
//! to a registry (`docker://NAME`) natively.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use super::output::ResultFormat;
use super::store_args::WhichStore;
use bootc_image::export::{Destination, LayerCompression, export};
use bootc_image::push::push;
use bootc_image::store::{Store, lookup};

/// Layer compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// gzip: what every registry and client reads.
    Gzip,
    /// zstd: smaller and faster; podman 4+, skopeo, containerd read it.
    Zstd,
    /// Uncompressed tar layers.
    None,
    /// zstd:chunked: a zstd frame per file and a table of contents, so podman 5 (partial pulls
    /// on) fetches only the files it lacks; any zstd reader reads it whole.
    #[value(name = "zstd:chunked")]
    ZstdChunked,
}

/// Options of export.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: a name, short name or ID.
    pub image: String,
    /// Where: oci:DIR[:TAG] (created or added to), oci-archive:FILE[:TAG] (replaced) or
    /// docker://NAME[:TAG] (pushed to the registry, as podman push).
    pub dest: String,
    /// How layers are compressed.
    #[arg(long, value_enum, default_value_t = Compression::Gzip)]
    pub compression: Compression,
    /// The store: the default one (--root …, storage.conf) or bootc's.
    #[arg(long, value_enum, default_value_t = WhichStore::Default)]
    pub store: WhichStore,
    /// The result: a line, or one JSON object.
    #[arg(long, value_enum, default_value_t = ResultFormat::Text)]
    pub format: ResultFormat,
    /// After the export or push, write the manifest's digest to FILE (as podman push).
    #[arg(long, value_name = "FILE")]
    pub digestfile: Option<std::path::PathBuf>,
    /// Reaching the registry of a docker:// destination.
    #[command(flatten)]
    pub fetch: super::fetch_args::FetchArgs,
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let registry = args.dest.strip_prefix("docker://");
    let dest = match registry {
        Some(_) => None,
        None => Some(Destination::parse(&args.dest)?),
    };
    let config = match args.store {
        WhichStore::Bootc => bootc_image::bootc::storage::config(&cli.sysroot()),
        WhichStore::Default => cli.store_config()?,
    };
    // Never into a store we know: the one read, the default one, bootc's.
    let bootc = bootc_image::bootc::storage::config(&cli.sysroot());
    let default = cli.store_config().ok();
    let mut stores = vec![
        config.graphroot.as_path(),
        config.runroot.as_path(),
        bootc.graphroot.as_path(),
        bootc.runroot.as_path(),
    ];
    if let Some(d) = &default {
        stores.extend([d.graphroot.as_path(), d.runroot.as_path()]);
    }
    if let Some(d) = &dest {
        d.check_outside(&stores)?;
    }
    let store = Store::open_read_only(config.clone())
        .with_context(|| format!("opening the store {}", config.graphroot.display()))?;
    let images = store.images()?;
    let image = lookup::find_image(&images, &args.image)
        .with_context(|| format!("in the store {}", config.graphroot.display()))?;
    let compression = match args.compression {
        Compression::Gzip => LayerCompression::Gzip,
        Compression::Zstd => LayerCompression::Zstd,
        Compression::None => LayerCompression::None,
        Compression::ZstdChunked => LayerCompression::ZstdChunked,
    };
    let started = std::time::Instant::now();
    let (digest, layer_bytes, verb) = match &dest {
        Some(d) => {
            let report = export(&store, image, d, compression)
                .with_context(|| format!("exporting {} to {}", args.image, args.dest))?;
            (report.manifest_digest, report.layer_bytes, "Exported")
        }
        None => {
            let name = registry.unwrap_or_default();
            let report = push(&store, image, name, &args.fetch.options(), compression)
                .with_context(|| format!("pushing {} to {}", args.image, args.dest))?;
            (report.manifest_digest, report.bytes_sent, "Pushed")
        }
    };
    if let Some(f) = &args.digestfile {
        std::fs::write(f, digest.as_str())
            .with_context(|| format!("writing the digest to {}", f.display()))?;
    }
    if args.format == ResultFormat::Json {
        outln!(
            "{}",
            serde_json::json!({
                "image_id": image.id,
                "digest": digest.to_string(),
                "layer_bytes": layer_bytes,
                "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            })
        )?;
    } else if !cli.quiet {
        outln!("{verb} {} to {}", args.image, args.dest)?;
        outln!("Digest: {digest}")?;
    }
    Ok(())
}
