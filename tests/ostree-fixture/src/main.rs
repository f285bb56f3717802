//! `ostree-fixture`: builds the ostree side of bootc-image's host-image tests.
//!
//! A bootc host keeps its booted image in the ostree repository of the sysroot, imported by
//! ostree-ext: one ostree commit per image layer (refs `ostree/container/blob/*`) plus a merge
//! commit (ref `ostree/container/image/<escaped image reference>`) whose metadata carries the
//! original manifest and config. `bootc image copy-to-storage` re-serialises that image with
//! ostree-ext's `container::store::export` and hands it to skopeo.
//!
//! This tool produces that state from a small root filesystem, without a registry or a booted
//! bootc system:
//!
//! - `build`: commit a directory into a bare repository and encapsulate the commit, chunked into
//!   several layers, as an OCI image layout (deterministic: same input, same digests);
//! - `add-derived`: append a plain tar layer, as a `FROM <base>` container build would;
//! - `deploy`: import an image into a sysroot's repository under a registry image reference and
//!   deploy it with `ostree admin deploy`, writing the origin the way bootc does;
//! - `export`: the oracle, ostree-ext's own export of a stored image to an OCI layout (or, with
//!   `--dest`, to any image reference, e.g. a containers-storage store, as upstream bootc does);
//! - `list`, `cleanup`: inspect and remove a scratch sysroot.

mod commit;
mod export;
mod oci;
mod sysroot;

use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Command line of `ostree-fixture`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "ostree/bootc host-image fixtures for bootc-image tests"
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Commit a root filesystem into a bare ostree repository and encapsulate it, chunked into
    /// several layers, as the OCI image OUTDIR:TAG.
    Build(BuildArgs),
    /// Append a plain tar layer to OUTDIR:TAG and tag the result NEW_TAG.
    AddDerived(AddDerivedArgs),
    /// Import OUTDIR:TAG into a sysroot's repository as `ostree-unverified-registry:NAME` and
    /// deploy it.
    Deploy(DeployArgs),
    /// Export a stored image with ostree-ext's `container::store::export` (the oracle).
    Export(ExportArgs),
    /// Print a sysroot's container refs and its deployments.
    List(SysrootArgs),
    /// Remove a scratch sysroot, clearing the immutable bit of its deployments first.
    Cleanup(SysrootArgs),
}

/// Arguments of `build`.
#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Root filesystem to commit (owners, modes and xattrs are kept as they are on disk).
    #[arg(long)]
    rootfs: PathBuf,
    /// Bare ostree repository; created (`ostree init --mode=bare`) if missing.
    #[arg(long)]
    repo: PathBuf,
    /// OCI image layout directory to write to; created if missing.
    #[arg(long)]
    oci: PathBuf,
    /// Tag of the image in the layout; the commit goes to the branch `fixture/TAG`.
    #[arg(long)]
    tag: String,
    /// Assign files to N fake packages by a hash of their path, instead of one package per
    /// directory under /usr (`usr/bin`, `usr/lib`, …).
    #[arg(long)]
    chunks: Option<NonZeroU32>,
    /// Commit timestamp (seconds since the epoch); it is also the image's `created` time.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = commit::DEFAULT_TIMESTAMP)]
    timestamp: u64,
}

/// Arguments of `add-derived`.
#[derive(Debug, clap::Args)]
struct AddDerivedArgs {
    /// OCI image layout holding the base image.
    #[arg(long)]
    oci: PathBuf,
    /// Tag of the base image.
    #[arg(long)]
    tag: String,
    /// The layer: a tar archive, plain or gzip-compressed.
    #[arg(long)]
    layer_tar: PathBuf,
    /// Tag for the derived image.
    #[arg(long)]
    new_tag: String,
}

/// Arguments of `deploy`.
#[derive(Debug, clap::Args)]
struct DeployArgs {
    /// Sysroot directory; `ostree admin init-fs` runs first if it has no `ostree/repo`.
    #[arg(long)]
    sysroot: PathBuf,
    /// OCI image layout holding the image.
    #[arg(long)]
    oci: PathBuf,
    /// Tag of the image in the layout.
    #[arg(long)]
    tag: String,
    /// Registry name the image is stored and deployed under (`ostree-unverified-registry:NAME`),
    /// e.g. `quay.io/example/os:latest`.
    #[arg(long)]
    imgref_name: String,
    /// Stateroot (`ostree admin deploy --os`); `ostree admin os-init` is run for it.
    #[arg(long)]
    stateroot: String,
}

/// Arguments of `export`.
#[derive(Debug, clap::Args)]
struct ExportArgs {
    /// Sysroot whose `ostree/repo` holds the image.
    #[arg(long)]
    sysroot: PathBuf,
    /// Stored image, e.g. `ostree-unverified-registry:quay.io/example/os:latest` (a plain
    /// `docker://…`-style image reference is accepted too).
    #[arg(long)]
    imgref: String,
    /// OCI image layout directory to export to; created if missing.
    #[arg(long, required_unless_present = "dest", requires = "tag")]
    oci: Option<PathBuf>,
    /// Tag of the exported image.
    #[arg(long, requires = "oci")]
    tag: Option<String>,
    /// Export to this image reference instead of `--oci`/`--tag`, e.g.
    /// `containers-storage:[overlay@ROOT+RUNROOT]NAME`: exactly what upstream `bootc image
    /// copy-to-storage` runs (`container::store::export(repo, src, dest, None)`, which writes a
    /// temporary uncompressed OCI layout under /var/tmp and runs `skopeo copy oci:TMP DEST`).
    #[arg(long, conflicts_with_all = ["oci", "tag"])]
    dest: Option<String>,
    /// With `--oci`: compress layers with the default gzip level. Without it the export is made
    /// as copy-to-storage makes its temporary copy (`skip_compression`: ostree chunks at gzip
    /// level 1, derived layers at level 0).
    #[arg(long)]
    compress: bool,
}

/// A sysroot argument.
#[derive(Debug, clap::Args)]
struct SysrootArgs {
    /// Sysroot directory.
    #[arg(long)]
    sysroot: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Build(a) => {
            commit::build(&commit::BuildOpts {
                rootfs: &a.rootfs,
                repo: &a.repo,
                oci: &a.oci,
                tag: &a.tag,
                chunks: a.chunks,
                timestamp: a.timestamp,
            })
            .await
        }
        Command::AddDerived(a) => oci::add_derived(&a.oci, &a.tag, &a.layer_tar, &a.new_tag),
        Command::Deploy(a) => {
            sysroot::deploy(&sysroot::DeployOpts {
                sysroot: &a.sysroot,
                oci: &a.oci,
                tag: &a.tag,
                imgref_name: &a.imgref_name,
                stateroot: &a.stateroot,
            })
            .await
        }
        Command::Export(a) => match (a.dest, a.oci, a.tag) {
            (Some(dest), _, _) => export::export_to(&a.sysroot, &a.imgref, &dest).await,
            (None, Some(oci), Some(tag)) => {
                export::export(&a.sysroot, &a.imgref, &oci, &tag, a.compress).await
            }
            _ => anyhow::bail!("export needs --oci and --tag, or --dest"),
        },
        Command::List(a) => sysroot::list(&a.sysroot),
        Command::Cleanup(a) => sysroot::cleanup(&a.sysroot),
    }
}
