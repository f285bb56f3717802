//! `bootc-image export IMAGE DEST`: an image of a store into an OCI layout or archive.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use super::output::ResultFormat;
use super::store_args::WhichStore;
use bootc_image::export::{Destination, LayerCompression, export};
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
}

/// Options of export.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: a name, short name or ID.
    pub image: String,
    /// Where: oci:DIR[:TAG] (created or added to) or oci-archive:FILE[:TAG] (replaced).
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
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let dest = Destination::parse(&args.dest)?;
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
    dest.check_outside(&stores)?;
    let store = Store::open_read_only(config.clone())
        .with_context(|| format!("opening the store {}", config.graphroot.display()))?;
    let images = store.images()?;
    let image = lookup::find_image(&images, &args.image)
        .with_context(|| format!("in the store {}", config.graphroot.display()))?;
    let compression = match args.compression {
        Compression::Gzip => LayerCompression::Gzip,
        Compression::Zstd => LayerCompression::Zstd,
        Compression::None => LayerCompression::None,
    };
    let started = std::time::Instant::now();
    let report = export(&store, image, &dest, compression)
        .with_context(|| format!("exporting {} to {}", args.image, args.dest))?;
    if args.format == ResultFormat::Json {
        outln!(
            "{}",
            serde_json::json!({
                "image_id": image.id,
                "digest": report.manifest_digest.to_string(),
                "layer_bytes": report.layer_bytes,
                "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
            })
        )?;
    } else if !cli.quiet {
        outln!("Exported {} to {}", args.image, args.dest)?;
        outln!("Digest: {}", report.manifest_digest)?;
    }
    Ok(())
}
