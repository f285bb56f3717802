//! `bootc-image copy-to-storage`.

use anyhow::Context;

use super::Cli;
use super::copying::{Reporting, copy_and_print};
use super::output::ResultFormat;
use super::progress::ProgressMode;
use super::store_args::{spec_config, target};
use bootc_image::bootc::composefs_deployments;
use bootc_image::copy::CopyOptions;
use bootc_image::image_ref::ImageRef;
use bootc_image::source::{self, SourceKind};
use bootc_image::store::Store;

/// Options of copy-to-storage.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to copy: oci:DIR[:TAG], oci-archive:FILE[:TAG], dir:DIR, docker-archive:FILE,
    /// containers-storage:[STORE]NAME, a host image stored in the sysroot's OSTree repository
    /// (e.g. docker://quay.io/org/os:tag), or docker://NAME from its registry when the host does not
    /// hold it. Default: the booted image.
    #[arg(long, value_name = "SRC")]
    pub source: Option<String>,
    /// The name to give it in the store: NAME, containers-storage:NAME, or
    /// containers-storage:[driver@root+runroot]NAME (which names the store too, as skopeo does).
    #[arg(long, value_name = "NAME", default_value = "localhost/bootc")]
    pub target: String,
    /// Progress: a bar per layer on a terminal (auto), one JSON object per event on stdout (json),
    /// or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// Write the JSON progress events (and the result event) to this inherited file descriptor
    /// instead of stdout; implies --progress json.
    #[arg(long, value_name = "FD")]
    pub progress_fd: Option<u32>,
    /// The result: text lines, or one JSON object (name, image ID, digest, layers, seconds).
    #[arg(long, value_enum, default_value_t = ResultFormat::Text)]
    pub format: ResultFormat,
    /// Flush the filesystem (syncfs) before the layers are recorded as complete, so the image also
    /// survives a power loss. Slower: it waits for every byte to reach the disk.
    #[arg(long)]
    pub sync: bool,
    /// Host images: check every OSTree object against its checksum and compute every DiffID from
    /// content before writing (slower). Without it the image's own DiffIDs are used and checked while
    /// writing; a mismatch falls back to this.
    #[arg(long)]
    pub verify: bool,
    /// Registry options (docker://, and dir:/docker-archive: through skopeo).
    #[command(flatten)]
    pub fetch: super::fetch_args::FetchArgs,
}

/// The descriptor `--progress-fd` names, opened first of all: before we open files of our own, a
/// number the caller did not pass cannot be one of ours (a store's lock file).
fn progress_file(args: &Args) -> anyhow::Result<Option<std::fs::File>> {
    args.progress_fd
        .map(super::progress::open_progress_fd)
        .transpose()
}

/// Where `--source` leads (the booted host image without one): by its transport, and a
/// `docker://` image the host does not hold is fetched from its registry.
fn route(cli: &Cli, source: Option<&str>) -> anyhow::Result<SourceKind> {
    let sysroot = cli.sysroot();
    let kind = match source {
        Some(s) => source::classify(s)?,
        None => {
            let repo = sysroot.path().join("ostree/repo");
            if !composefs_deployments::is_composefs(&sysroot) && !repo.is_dir() {
                return Err(super::exit::fail(
                    super::exit::Code::Image,
                    format!(
                        "no --source given, and {} is not a bootc host (no {} nor composefs/ and state/deploy/): name the image with --source oci:DIR[:TAG] or oci-archive:FILE[:TAG], or a sysroot on disk with --sysroot DIR",
                        sysroot.path().display(),
                        repo.display()
                    ),
                ));
            }
            SourceKind::Host
        }
    };
    let src = source.unwrap_or_default();
    Ok(match kind {
        SourceKind::Host if src.starts_with("docker://") && !host_holds(cli, src)? => {
            SourceKind::Fetched
        }
        k => k,
    })
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let reporting = Reporting::new(cli, args.progress, progress_file(args)?, args.format);
    let (name, mut config) = target(cli, &args.target)?;
    config.sync_filesystem = args.sync;
    let kind = route(cli, args.source.as_deref())?;
    let src = args.source.as_deref().unwrap_or_default();
    let sysroot = cli.sysroot();
    let composefs = composefs_deployments::is_composefs(&sysroot);
    let opts = CopyOptions::default()
        .with_names(vec![name.clone()])
        .with_fetch(args.fetch.options())
        .with_verify(args.verify);
    let (image, shown) = match kind {
        SourceKind::Host if composefs => {
            let running = composefs_deployments::is_running_sysroot(&cli.sysroot);
            let (image, what) = composefs_deployments::host_image(
                &sysroot,
                args.source.as_deref(),
                running,
                "name the image with --source (a deployment's image name, a tag or a sha256: manifest digest)",
            )?;
            let repo = composefs_deployments::repo_path(&sysroot);
            let shown = format!("{what} in {}", repo.display());
            (ImageRef::Composefs { repo, image }, shown)
        }
        SourceKind::Host => {
            if let Some(s) = args.source.as_deref() {
                host_reference_check(s)?;
            }
            return super::copying::exec_host_helper("for OCI sources use --source oci:DIR[:TAG]");
        }
        SourceKind::Store => {
            let image = ImageRef::parse(src)?;
            if let ImageRef::ContainersStorage { store, .. } = &image
                && spec_config(store.as_ref())?.graphroot == config.graphroot
            {
                return Err(super::exit::fail(
                    super::exit::Code::Usage,
                    format!(
                        "--source {src} and --target {} are the same store: give the image another name with `bootc-image image tag`",
                        args.target
                    ),
                ));
            }
            (image, src.to_string())
        }
        SourceKind::Composefs => {
            let image = ImageRef::parse(src)?;
            let shown = match &image {
                ImageRef::Composefs { repo, .. } => format!("{src} in {}", repo.display()),
                _ => src.to_string(),
            };
            (image, shown)
        }
        SourceKind::Layout | SourceKind::Fetched => (ImageRef::parse(src)?, src.to_string()),
    };
    // The image first: a source that does not open leaves no trace, not even a new store.
    let opened =
        bootc_image::copy::open(&image, &opts).with_context(|| format!("reading {shown}"))?;
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    copy_and_print(&reporting, &store, opened, &shown)?;
    Ok(())
}

/// Whether the sysroot holds the image `docker://…` as a host image: in its OSTree repository
/// (ostree-ext's ref for it), or as a composefs deployment's image.
fn host_holds(cli: &Cli, imgref: &str) -> anyhow::Result<bool> {
    let sysroot = cli.sysroot();
    if composefs_deployments::is_composefs(&sysroot) {
        return Ok(composefs_deployments::find_by_image(&sysroot, imgref)?.is_some());
    }
    #[cfg(feature = "ostree")]
    {
        let r = bootc_image::source::ostree_host::imgref::image_ref(imgref);
        Ok(sysroot
            .path()
            .join("ostree/repo/refs/heads")
            .join(r)
            .is_file())
    }
    #[cfg(not(feature = "ostree"))]
    {
        Ok(false)
    }
}

/// Checks a host image reference before handing it to the helper.
fn host_reference_check(s: &str) -> anyhow::Result<()> {
    #[cfg(feature = "ostree")]
    bootc_image::source::ostree_host::imgref::image_reference(s)?;
    #[cfg(not(feature = "ostree"))]
    ImageRef::parse(s)?;
    Ok(())
}

/// `copy-to-storage` of a host image, in `bootc-image-ostree`.
#[cfg(feature = "ostree")]
pub fn run_host(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let reporting = Reporting::new(cli, args.progress, progress_file(args)?, args.format);
    let (name, mut config) = target(cli, &args.target)?;
    config.sync_filesystem = args.sync;
    super::copying::copy_host(
        cli,
        &reporting,
        args.source.as_deref(),
        (name, config),
        args.verify,
    )
}
