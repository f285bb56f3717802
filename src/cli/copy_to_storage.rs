//! `bootc-image copy-to-storage`.

use anyhow::Context;

use super::Cli;
use super::progress::Reporter;
use crate::reference::normalize;
use crate::source::{self, SourceRef};
use crate::store::Store;

/// Options of copy-to-storage.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to copy: oci:DIR[:TAG] or oci-archive:FILE[:TAG].
    #[arg(long, value_name = "SRC")]
    pub source: Option<String>,
    /// The name to give it in the store.
    #[arg(long, value_name = "NAME", default_value = "localhost/bootc")]
    pub target: String,
    /// Flush the filesystem (syncfs) before the layers are recorded as complete, so the image also
    /// survives a power loss. Slower: it waits for every byte to reach the disk.
    #[arg(long)]
    pub sync: bool,
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let Some(src) = args.source.as_deref() else {
        anyhow::bail!(
            "copying the booted host image is not supported yet: name an image with --source oci:DIR[:TAG] or oci-archive:FILE[:TAG]"
        );
    };
    let source_ref = SourceRef::parse(src)?;
    let name = normalize(&args.target)?;
    let mut opened = source::open(&source_ref).with_context(|| format!("reading {src}"))?;
    opened.image.names = vec![name.clone()];
    let mut config = cli.store_config()?;
    config.sync_filesystem = args.sync;
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let reporter = Reporter::new(opened.image.layers.iter().map(|l| l.blob_size).collect());
    let report = store
        .import_image(&opened.image, opened.blobs.as_ref(), &|p| reporter.event(p))
        .with_context(|| format!("copying {src} to {name}"))?;
    reporter.finish();
    println!(
        "Stored {} ({} layers written, {} reused)",
        name, report.layers_written, report.layers_reused
    );
    println!("Digest: {}", report.manifest_digest);
    Ok(())
}
