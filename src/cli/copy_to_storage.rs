//! `bootc-image copy-to-storage`.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use super::progress::{ProgressMode, Reporter};
use crate::bootc::composefs_deployments;
use crate::image_ref::ImageRef;
use crate::reference::parse_storage_reference;
use crate::source::composefs::{ComposefsImage, ImageSelector};
use crate::source::{self, SourceKind};
use crate::store::Store;
use crate::store::image_input::{ImageInput, ImportReport, Progress};
use std::sync::atomic::Ordering;

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

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// The progress mode after --quiet and --progress-fd.
fn progress_mode(cli: &Cli, args: &Args) -> ProgressMode {
    if args.progress_fd.is_some() {
        ProgressMode::Json
    } else {
        super::pull::progress_mode(cli, args.progress)
    }
}

/// The descriptor `--progress-fd` names, opened first of all: before we open files of our own, a
/// number the caller did not pass cannot be one of ours (a store's lock file).
fn progress_file(args: &Args) -> anyhow::Result<Option<std::fs::File>> {
    args.progress_fd
        .map(super::progress::open_progress_fd)
        .transpose()
}

/// The reporter for `layers`, as the options ask; JSON events go to `fd` when given.
fn reporter(
    cli: &Cli,
    args: &Args,
    layers: &[crate::store::image_input::LayerInput],
    fd: Option<&std::fs::File>,
) -> anyhow::Result<Reporter> {
    let fd = fd
        .map(std::fs::File::try_clone)
        .transpose()
        .context("duplicating the --progress-fd descriptor")?;
    Ok(Reporter::new(layers, progress_mode(cli, args), fd))
}

/// An import's result as one JSON object (name, image_id, digest, layers written and reused).
pub(super) fn result_json(report: &crate::store::image_input::ImportReport) -> serde_json::Value {
    serde_json::json!({
        "name": report.names.first(),
        "image_id": report.image_id,
        "digest": report.manifest_digest.to_string(),
        "layers_written": report.layers_written,
        "layers_reused": report.layers_reused,
    })
}

/// Prints the result: text lines (not with --quiet), or JSON (with --format json); with JSON
/// progress the result is also the last event (`done`), on stdout or the progress descriptor.
fn print_result(
    cli: &Cli,
    args: &Args,
    reporter: &Reporter,
    report: &crate::store::image_input::ImportReport,
    text: &[String],
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let seconds = started.elapsed().as_secs_f64();
    let mut v = result_json(report);
    v["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
    let json_events = progress_mode(cli, args) == ProgressMode::Json;
    if json_events {
        let mut done = v.clone();
        done["event"] = "done".into();
        reporter.emit(done);
        if !reporter.json_on_fd() {
            return Ok(());
        }
    }
    if args.format == ResultFormat::Json {
        outln!("{v}")?;
    } else if !cli.quiet {
        for l in text {
            outln!("{l}")?;
        }
    }
    Ok(())
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let progress_fd = progress_file(args)?;
    let (name, mut config) = target(cli, &args.target)?;
    config.sync_filesystem = args.sync;
    let sysroot = cli.sysroot();
    let composefs = composefs_deployments::is_composefs(&sysroot);
    let kind = match args.source.as_deref() {
        Some(s) => source::classify(s)?,
        None => {
            let repo = sysroot.path().join("ostree/repo");
            if !composefs && !repo.is_dir() {
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
    let src = args.source.as_deref().unwrap_or_default();
    let kind = match kind {
        SourceKind::Host if src.starts_with("docker://") && !host_holds(cli, src)? => {
            SourceKind::Fetched
        }
        k => k,
    };
    match kind {
        SourceKind::Host if composefs => {
            let running = composefs_deployments::is_running_sysroot(&cli.sysroot);
            let (image, what) = composefs_deployments::host_image(
                &sysroot,
                args.source.as_deref(),
                running,
                "name the image with --source (a deployment's image name, a tag or a sha256: manifest digest)",
            )?;
            let repo = composefs_deployments::repo_path(&sysroot);
            return from_composefs(cli, args, (&repo, &image, &what), name, config, progress_fd);
        }
        SourceKind::Host => {
            if let Some(s) = args.source.as_deref() {
                host_reference_check(s)?;
            }
            return exec_host_helper();
        }
        SourceKind::Composefs => {
            let ImageRef::Composefs { repo, image } = ImageRef::parse(src)? else {
                return Err(crate::Error::Internal(format!("{src} routed as composefs")).into());
            };
            return from_composefs(cli, args, (&repo, &image, src), name, config, progress_fd);
        }
        SourceKind::Store => return from_store(cli, args, src, &name, config, started),
        SourceKind::Layout | SourceKind::Fetched => {}
    }
    let source_ref = ImageRef::parse(src)?;
    let mut opened = source::open_with(&source_ref, &args.fetch.options())
        .with_context(|| format!("reading {src}"))?;
    opened.image.names = vec![name.clone()];
    target_digest_check(&opened.image)?;
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let reporter = reporter(cli, args, &opened.image.layers, progress_fd.as_ref())?;
    let report = opened
        .import_into(&store, &|p| reporter.event(p))
        .with_context(|| format!("copying {src} to {name}"))?;
    reporter.finish();
    let text = [
        format!(
            "Stored {} ({} layers written, {} reused)",
            name, report.layers_written, report.layers_reused
        ),
        format!("Digest: {}", report.manifest_digest),
    ];
    print_result(cli, args, &reporter, &report, &text, started)?;
    Ok(())
}

/// The name and store `--target` selects: `NAME`, `containers-storage:NAME`, or
/// `containers-storage:[driver@root+runroot]NAME`, which names the store as skopeo's transport does
/// (and so may not be combined with --root/--runroot/--storage-driver).
pub fn target(cli: &Cli, t: &str) -> anyhow::Result<(String, crate::store::StoreConfig)> {
    let r = parse_storage_reference(t)?;
    let Some(spec) = r.store else {
        return Ok((r.name, cli.store_config()?));
    };
    if cli.root.is_some() || cli.runroot.is_some() || cli.storage_driver.is_some() {
        return Err(super::exit::fail(
            super::exit::Code::Usage,
            format!(
                "--target {t:?} names a store, and so do --root/--runroot/--storage-driver: name it once"
            ),
        ));
    }
    Ok((r.name, spec_config(Some(&spec))?))
}

/// The store a `containers-storage:[driver@root+runroot]` reference names; without one, the
/// default store (storage.conf), as skopeo reads the transport.
fn spec_config(
    spec: Option<&crate::reference::StoreSpec>,
) -> anyhow::Result<crate::store::StoreConfig> {
    Ok(match spec {
        Some(spec) => crate::store::StoreConfig::resolve(
            Some(&spec.graphroot),
            spec.runroot.as_deref(),
            spec.driver.as_deref(),
        )?,
        None => crate::store::StoreConfig::resolve(None, None, None)?,
    })
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
        let r = crate::source::ostree_host::imgref::image_ref(imgref);
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

/// An image of a composefs repository (`repo`, the image in it, the name to report it by): each
/// layer's splitstream written into the store, files' extents shared with the repository's
/// objects where the file system can (reflink), else copied; DiffIDs checked while writing.
pub(super) fn from_composefs(
    cli: &Cli,
    args: &Args,
    (repo, image, what): (&std::path::Path, &ImageSelector, &str),
    name: String,
    config: crate::store::StoreConfig,
    progress_fd: Option<std::fs::File>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let open = |verify: bool| {
        ComposefsImage::open(repo, image, vec![name.clone()], verify)
            .with_context(|| format!("reading {what}"))
    };
    let first = open(args.verify)?;
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    // Objects are checked against their fs-verity digests on the second try.
    let (opened, reporter, result, ()) =
        import_verifying_on_mismatch(cli, args, progress_fd.as_ref(), first, open, |o, ev| {
            (store.import_with(&o.input, o, ev), ())
        })?;
    let report = result.with_context(|| format!("copying {what} to {name}"))?;
    reporter.finish();
    let reflinked = opened.reflinked.load(Ordering::Relaxed);
    let written = opened.written.load(Ordering::Relaxed);
    let text = [
        format!(
            "Stored {name} from {what} in {} ({} layers written, {} reused; {reflinked} files reflinked from the repository, {written} written)",
            repo.display(),
            report.layers_written,
            report.layers_reused
        ),
        format!("Digest: {}", report.manifest_digest),
    ];
    print_result(cli, args, &reporter, &report, &text, started)?;
    Ok(())
}

/// An image of the host (OSTree or composefs) opened for a copy.
trait OpenedImage {
    /// What is imported.
    fn input(&self) -> &ImageInput;
}

impl OpenedImage for ComposefsImage {
    fn input(&self) -> &ImageInput {
        &self.input
    }
}

impl OpenedImage for crate::source::ostree_host::HostImage {
    fn input(&self) -> &ImageInput {
        &self.input
    }
}

/// Imports `first` (opened with `--verify`'s choice) with `import`, which returns the import's
/// result and what it counted. The fast path takes the DiffIDs from the image's config and
/// checks them while writing; when one does not match (an object is damaged, or the image was
/// encapsulated differently) the copy was rolled back, and unless every object was checked
/// already, the image is opened again (`open(true)`: every object checked, which names a damaged
/// one, and every DiffID computed from content) and written again.
fn import_verifying_on_mismatch<S: OpenedImage, T>(
    cli: &Cli,
    args: &Args,
    progress_fd: Option<&std::fs::File>,
    first: S,
    open: impl Fn(bool) -> anyhow::Result<S>,
    import: impl Fn(&S, &(dyn Fn(Progress) + Sync)) -> (crate::Result<ImportReport>, T),
) -> anyhow::Result<(S, Reporter, crate::Result<ImportReport>, T)> {
    let mut opened = first;
    target_digest_check(opened.input())?;
    let mut reporter = reporter(cli, args, &opened.input().layers, progress_fd)?;
    let (mut result, mut counted) = import(&opened, &|p| reporter.event(p));
    if !args.verify && matches!(result, Err(crate::Error::DigestMismatch { .. })) {
        reporter.finish();
        opened = open(true)?;
        // The layers' DiffIDs and sizes are now the ones computed from content.
        reporter = self::reporter(cli, args, &opened.input().layers, progress_fd)?;
        (result, counted) = import(&opened, &|p| reporter.event(p));
    }
    Ok((opened, reporter, result, counted))
}

/// A `--target NAME@DIGEST` must name the image's own manifest digest (c/image finds the image
/// by it; skopeo cannot export an image stored under another digest).
pub(super) fn target_digest_check(input: &ImageInput) -> anyhow::Result<()> {
    Ok(crate::reference::check_name_digests(
        &input.names,
        &[input.manifest_digest.to_string()],
    )?)
}

/// `--source containers-storage:[STORE]NAME`: the image copied natively from that store (its
/// files shared where the two stores are on one file system), named `name`.
fn from_store(
    cli: &Cli,
    args: &Args,
    src: &str,
    name: &str,
    config: crate::store::StoreConfig,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let r = parse_storage_reference(src)?;
    let src_config = spec_config(r.store.as_ref())?;
    if src_config.graphroot == config.graphroot {
        return Err(super::exit::fail(
            super::exit::Code::Usage,
            format!(
                "--source {src} and --target {} are the same store: give the image another name with `bootc-image image tag`",
                args.target
            ),
        ));
    }
    // The signature policy's containers-storage scopes, as skopeo copy evaluates them.
    crate::source::policy::load(args.fetch.signature_policy.as_deref())?.check(
        &crate::source::policy::PolicyRef::storage(
            src_config.driver.name(),
            &src_config.graphroot,
            &r.name,
        ),
    )?;
    let from = Store::open_read_only(src_config.clone())
        .with_context(|| format!("opening the store {}", src_config.graphroot.display()))?;
    let images = from.images()?;
    let found = crate::store::lookup::find_image(&images, &r.name)
        .with_context(|| format!("in the store {}", src_config.graphroot.display()))?;
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let copied = store
        .copy_image_from(
            &from,
            &found.id,
            &crate::store::copy::CopyOptions {
                names: vec![name.to_string()],
                verify: args.verify,
            },
        )
        .with_context(|| format!("copying {src} to {name}"))?;
    let seconds = started.elapsed().as_secs_f64();
    if args.format == ResultFormat::Json {
        outln!(
            "{}",
            serde_json::json!({
                "name": name,
                "image_id": copied.image_id,
                "seconds": (seconds * 1000.0).round() / 1000.0,
            })
        )?;
    } else if !cli.quiet {
        outln!("Stored {name} from {src} ({})", copied.stats.method())?;
    }
    Ok(())
}

/// Checks a host image reference before handing it to the helper.
fn host_reference_check(s: &str) -> anyhow::Result<()> {
    #[cfg(feature = "ostree")]
    crate::source::ostree_host::imgref::image_reference(s)?;
    #[cfg(not(feature = "ostree"))]
    ImageRef::parse(s)?;
    Ok(())
}

/// Host images are copied by `bootc-image-ostree`, installed next to this binary: only it links
/// libostree. Runs it with our arguments and exits with its status.
pub(super) fn exec_host_helper() -> anyhow::Result<()> {
    exec_host_helper_for("for OCI sources use --source oci:DIR[:TAG]")
}

/// [`exec_host_helper`], `instead` saying what to do when the helper is missing.
pub(super) fn exec_host_helper_for(instead: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this executable")?;
    // Beside us in a build tree; in libexec when installed (the Debian package).
    let beside = exe.with_file_name("bootc-image-ostree");
    let candidates = [
        beside.clone(),
        exe.parent()
            .and_then(|d| d.parent())
            .map(|p| p.join("libexec/bootc-image/bootc-image-ostree"))
            .unwrap_or_default(),
        std::path::PathBuf::from("/usr/libexec/bootc-image/bootc-image-ostree"),
    ];
    let helper = candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or(beside);
    if !helper.exists() {
        return Err(super::exit::fail(
            super::exit::Code::External,
            format!(
                "copying OSTree host images needs {} (built with the `ostree` feature); {instead}",
                helper.display()
            ),
        ));
    }
    let status = std::process::Command::new(&helper)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("running {}", helper.display()))?;
    super::delegated(&status)
}

/// `copy-to-storage` of a host image, in `bootc-image-ostree`.
#[cfg(feature = "ostree")]
pub fn run_host(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let progress_fd = progress_file(args)?;
    let (name, mut config) = target(cli, &args.target)?;
    config.sync_filesystem = args.sync;
    host(cli, args, name, config, progress_fd.as_ref())
}

/// `copy-to-storage` of a host image into the store `config` as `name` (set-unified: bootc's store).
#[cfg(feature = "ostree")]
pub(super) fn host_into(
    cli: &Cli,
    args: &Args,
    name: String,
    config: crate::store::StoreConfig,
) -> anyhow::Result<()> {
    host(cli, args, name, config, None)
}

/// The booted (or named) OSTree host image.
#[cfg(feature = "ostree")]
fn host(
    cli: &Cli,
    args: &Args,
    name: String,
    config: crate::store::StoreConfig,
    progress_fd: Option<&std::fs::File>,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let source = args.source.as_deref();
    use crate::source::ostree_host::{HostImage, HostLayers, LinkCounts};
    if let Some(s) = source {
        crate::source::ostree_host::imgref::image_reference(s)?;
    }
    use crate::bootc::mountns;
    let sysroot = cli.sysroot().path().to_path_buf();
    // link() does not cross mount points, even within one filesystem. On a booted system the store
    // (under /var) and the repository (under /sysroot) are two mounts of one filesystem: reach the
    // store through the repository's mount (the stateroot's var), made writable in a private mount
    // namespace if it is read-only, as bootc does. podman also leaves the store's driver directory
    // bind-mounted onto itself: that mount is detached there too (see bootc::mountns).
    let mut config = config;
    let original_root = config.graphroot.clone();
    let mut remount = Vec::new();
    if let Some(through) =
        mountns::path_through_mount_of(&sysroot.join("ostree/repo"), &config.graphroot)
    {
        remount.extend(mountns::read_only_mount_of(&through));
        config.graphroot = through;
    }
    let home = config.graphroot.join(config.driver.name());
    if super::ran_in_private_namespace(&[home], &remount)? {
        return Ok(());
    }
    if config.graphroot != original_root && !cli.quiet {
        super::output::note(format_args!(
            "Reaching the store {} through {}, on the repository's mount, so files can be hardlinked",
            original_root.display(),
            config.graphroot.display()
        ));
    }
    let what = source.unwrap_or("the deployed host image");
    let open = |verify: bool| {
        HostImage::open(&sysroot, source, vec![name.clone()], verify)
            .with_context(|| format!("reading {what} in {}", sysroot.display()))
    };
    let store = Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    // On the second try every object is checked and every DiffID computed from content.
    let first = open(args.verify)?;
    let (image, reporter, result, (linked, written)) =
        import_verifying_on_mismatch(cli, args, progress_fd, first, open, |image, ev| {
            let producer = HostLayers {
                image,
                counts: LinkCounts::default(),
            };
            let result = store.import_with(&image.input, &producer, ev);
            let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            let counts = (
                count(&producer.counts.linked),
                count(&producer.counts.written),
            );
            (result, counts)
        })?;
    let report = result.with_context(|| format!("copying {} to {name}", image.imgref))?;
    reporter.finish();
    let text = [
        format!(
            "Stored {} from {} ({} layers written, {} reused; {linked} files hardlinked from the repository, {written} written)",
            name, image.imgref, report.layers_written, report.layers_reused
        ),
        format!("Digest: {}", report.manifest_digest),
    ];
    print_result(cli, args, &reporter, &report, &text, started)?;
    Ok(())
}
