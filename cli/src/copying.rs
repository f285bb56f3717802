//! What the commands that copy an image share (copy-to-storage, set-unified, pull, cmd pull):
//! progress rendered from the library's events, the result printed as text, JSON or a last JSON
//! event, and the OSTree helper that copies host images.

use std::sync::Mutex;

use anyhow::Context;

use super::Cli;
use super::output::{ResultFormat, count, outln, result_json};
use super::progress::{ProgressMode, Reporter};
use bootc_image::copy::{Copied, CopyObserver, Sharing};
use bootc_image::store::image_input::{ImageInput, ImportReport, Progress};

/// How a copy is shown: progress (mode, and the descriptor JSON events go to), the result's
/// format, quietness.
#[derive(Debug)]
pub struct Reporting {
    /// The progress mode, after --quiet and --progress-fd.
    pub mode: ProgressMode,
    /// `--progress-fd`: JSON events go there instead of stdout.
    pub fd: Option<std::fs::File>,
    /// The result's format.
    pub format: ResultFormat,
    /// --quiet.
    pub quiet: bool,
    /// When the command started.
    pub started: std::time::Instant,
}

impl Reporting {
    /// Reporting as the global options, `mode`, `fd` and `format` say.
    pub fn new(
        cli: &Cli,
        mode: ProgressMode,
        fd: Option<std::fs::File>,
        format: ResultFormat,
    ) -> Reporting {
        let mode = if fd.is_some() {
            ProgressMode::Json
        } else {
            super::progress::progress_mode(cli, mode)
        };
        Reporting {
            mode,
            fd,
            format,
            quiet: cli.quiet,
            started: std::time::Instant::now(),
        }
    }

    /// A reporter for `layers` (events to the descriptor when there is one).
    fn reporter(
        &self,
        layers: &[bootc_image::store::image_input::LayerInput],
    ) -> anyhow::Result<Reporter> {
        let fd = self
            .fd
            .as_ref()
            .map(std::fs::File::try_clone)
            .transpose()
            .context("duplicating the --progress-fd descriptor")?;
        Ok(Reporter::new(layers, self.mode, fd))
    }

    /// Prints the result `v` (JSON) or `text`: text lines (not with --quiet), or JSON (with
    /// --format json); with JSON progress the result is also the last event (`done`), on stdout
    /// or the progress descriptor.
    pub fn print(
        &self,
        reporter: &Reporter,
        mut v: serde_json::Value,
        text: &[String],
    ) -> anyhow::Result<()> {
        let seconds = self.started.elapsed().as_secs_f64();
        v["seconds"] = ((seconds * 1000.0).round() / 1000.0).into();
        if self.mode == ProgressMode::Json {
            let mut done = v.clone();
            done["event"] = "done".into();
            reporter.emit(done);
            if reporter.stdout_failed() {
                // The events' reader went away (or stdout is full): as for any result line.
                return outln!("{v}");
            }
            if !reporter.json_on_fd() {
                return Ok(());
            }
        }
        if self.format == ResultFormat::Json {
            outln!("{v}")?;
        } else if !self.quiet {
            for l in text {
                outln!("{l}")?;
            }
        }
        Ok(())
    }
}

/// Renders the library's copy events: a reporter made when the image is opened (again when the
/// copy starts over), fed every event.
pub struct Rendered<'a> {
    reporting: &'a Reporting,
    reporter: Mutex<Option<Reporter>>,
    failure: Mutex<Option<anyhow::Error>>,
}

impl<'a> Rendered<'a> {
    /// Rendering as `reporting` says.
    pub fn new(reporting: &'a Reporting) -> Rendered<'a> {
        Rendered {
            reporting,
            reporter: Mutex::new(None),
            failure: Mutex::new(None),
        }
    }

    /// Ends the display; the reporter, to print the result through (one for no layers when the
    /// image was never opened, as for store-to-store copies).
    pub fn finish(self) -> anyhow::Result<Reporter> {
        if let Some(e) = self.failure.into_inner().ok().flatten() {
            return Err(e);
        }
        match self.reporter.into_inner().ok().flatten() {
            Some(r) => {
                r.finish();
                Ok(r)
            }
            None => self.reporting.reporter(&[]),
        }
    }
}

impl CopyObserver for Rendered<'_> {
    fn opened(&self, image: &ImageInput) {
        let (Ok(mut slot), Ok(mut failure)) = (self.reporter.lock(), self.failure.lock()) else {
            return;
        };
        if let Some(old) = slot.take() {
            old.finish();
        }
        match self.reporting.reporter(&image.layers) {
            Ok(r) => *slot = Some(r),
            Err(e) => *failure = Some(e),
        }
    }

    fn progress(&self, event: Progress) {
        if let Ok(slot) = self.reporter.lock()
            && let Some(r) = slot.as_ref()
        {
            r.event(event);
        }
    }
}

/// The lines copy-to-storage prints for a copy of `shown` as `name`.
pub fn copied_text(copied: &Copied, name: &str, shown: &str) -> Vec<String> {
    let digest = format!("Digest: {}", copied.manifest_digest);
    match &copied.sharing {
        Sharing::Store(stats) => vec![format!("Stored {name} from {shown} ({})", stats.method())],
        Sharing::Composefs { reflinked, written } => vec![
            format!(
                "Stored {name} from {shown} ({} written, {} reused; {} reflinked from the repository, {} written)",
                count(copied.layers_written as u64, "layer"),
                copied.layers_reused,
                count(*reflinked, "file"),
                written
            ),
            digest,
        ],
        _ => vec![
            format!(
                "Stored {name} ({} written, {} reused)",
                count(copied.layers_written as u64, "layer"),
                copied.layers_reused
            ),
            digest,
        ],
    }
}

/// A copy's result as one JSON object (name, image_id, digest, layers written and reused).
pub fn copied_json(copied: &Copied) -> serde_json::Value {
    serde_json::json!({
        "name": copied.names.first(),
        "image_id": copied.image_id,
        "digest": copied.manifest_digest.to_string(),
        "layers_written": copied.layers_written,
        "layers_reused": copied.layers_reused,
    })
}

/// Copies the opened image into `store`, rendering progress and printing the result as
/// copy-to-storage does (`shown`: how to name the source in the text).
pub fn copy_and_print(
    reporting: &Reporting,
    store: &bootc_image::store::Store,
    opened: bootc_image::copy::Opened,
    shown: &str,
) -> anyhow::Result<Copied> {
    let rendered = Rendered::new(reporting);
    let name = opened.names().first().cloned().unwrap_or_default();
    let copied = opened
        .copy_into(store, &rendered)
        .with_context(|| format!("copying {shown} to {name}"));
    let reporter = rendered.finish()?;
    let copied = copied?;
    reporting.print(
        &reporter,
        copied_json(&copied),
        &copied_text(&copied, &name, shown),
    )?;
    Ok(copied)
}

/// Opens a pull argument (`NAME`, `docker://NAME`, `oci:DIR`, …) for fetching, named as podman
/// names it.
pub fn open_pull(
    image: &str,
    fetch: &bootc_image::source::image_proxy::FetchOptions,
) -> anyhow::Result<bootc_image::copy::Opened> {
    // A short name: its alias, or each unqualified-search registry in turn, as podman pull.
    let resolved = bootc_image::bootc::bound_images::pull_candidates(image)
        .with_context(|| format!("pulling {image}"))?;
    let last = resolved.candidates.len().saturating_sub(1);
    for (i, candidate) in resolved.candidates.iter().enumerate() {
        if let Some(why) = &resolved.rationale {
            tracing::info!(%image, %candidate, "resolved as {why}");
        }
        let (src, name) = bootc_image::bootc::bound_images::resolve_pull(candidate)
            .with_context(|| format!("naming {candidate} in the store"))?;
        let opts = bootc_image::copy::CopyOptions::default()
            .with_names(vec![name])
            .with_fetch(fetch.clone());
        match bootc_image::copy::open(&src, &opts) {
            Ok(o) => return Ok(o),
            Err(e) if i < last => {
                tracing::info!(%candidate, error = %e, "trying the next search registry");
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("pulling {candidate}"))),
        }
    }
    Err(anyhow::anyhow!("pulling {image}: no candidate to pull"))
}

/// Pulls the opened `image` into `store` as podman pull does: progress as `reporting` says, then
/// the image ID (also with --quiet), a JSON object, or — with JSON progress — a last `done` event.
pub fn pull_into(
    reporting: &Reporting,
    store: &bootc_image::store::Store,
    image: &str,
    opened: bootc_image::copy::Opened,
) -> anyhow::Result<Copied> {
    let rendered = Rendered::new(reporting);
    let copied = opened
        .copy_into(store, &rendered)
        .with_context(|| format!("pulling {image}"));
    let reporter = rendered.finish()?;
    let copied = copied?;
    let id_line = [copied.image_id.clone()];
    reporting.print(&reporter, copied_json(&copied), &id_line)?;
    Ok(copied)
}

/// The result of an import done by the caller (the OSTree host copy), printed as
/// [`copy_and_print`] prints its own.
pub fn print_import(
    reporting: &Reporting,
    reporter: &Reporter,
    report: &ImportReport,
    text: &[String],
) -> anyhow::Result<()> {
    reporting.print(reporter, result_json(report), text)
}

/// Host images are copied by `bootc-image-ostree`, installed next to this binary: only it links
/// libostree. Runs it with our arguments and exits with its status; `instead` says what to do
/// when it is missing.
pub fn exec_host_helper(instead: &str) -> anyhow::Result<()> {
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

/// The store `config` reached through the OSTree repository's mount, so objects can be
/// hardlinked: link() does not cross mount points, even within one filesystem, and on a booted
/// system the store (under /var) and the repository (under /sysroot) are two mounts of one
/// filesystem. The repository's mount (the stateroot's var) is made writable in a private mount
/// namespace if it is read-only, as bootc does; podman also leaves the store's driver directory
/// bind-mounted onto itself, and that mount is detached there too (see bootc::mountns). `None`:
/// this command ran again in such a namespace and is done.
#[cfg(feature = "ostree")]
fn through_repo_mount(
    cli: &Cli,
    sysroot: &std::path::Path,
    mut config: bootc_image::store::StoreConfig,
) -> anyhow::Result<Option<bootc_image::store::StoreConfig>> {
    use bootc_image::bootc::mountns;
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
        return Ok(None);
    }
    if config.graphroot != original_root && !cli.quiet {
        super::output::note(format_args!(
            "Reaching the store {} through {}, on the repository's mount, so files can be hardlinked",
            original_root.display(),
            config.graphroot.display()
        ));
    }
    Ok(Some(config))
}

/// The OSTree host image (`source`, or the booted one) copied into the store `config` as `name`,
/// its objects hardlinked (reached through the repository's mount, in a private mount namespace
/// when that needs remounting); `verify` checks every object first.
#[cfg(feature = "ostree")]
pub fn copy_host(
    cli: &Cli,
    reporting: &Reporting,
    source: Option<&str>,
    (name, config): (String, bootc_image::store::StoreConfig),
    verify: bool,
) -> anyhow::Result<()> {
    use bootc_image::source::ostree_host::{HostImage, HostLayers, LinkCounts};
    use std::sync::atomic::Ordering;
    if let Some(s) = source {
        bootc_image::source::ostree_host::imgref::image_reference(s)?;
    }
    let sysroot = cli.sysroot().path().to_path_buf();
    let Some(config) = through_repo_mount(cli, &sysroot, config)? else {
        return Ok(());
    };
    let what = source.unwrap_or("the deployed host image");
    let open = |verify: bool| HostImage::open(&sysroot, source, vec![name.clone()], verify);
    // (A NAME@DIGEST is not checked here: the manifest's digest is known only once the layers
    // are written.)
    let first = open(verify).with_context(|| format!("reading {what} in {}", sysroot.display()))?;
    let store = bootc_image::store::Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let counts = Mutex::new((0u64, 0u64));
    let rendered = Rendered::new(reporting);
    // On the second try every object is checked and every DiffID computed from content.
    let result =
        bootc_image::copy::import_verifying_on_mismatch(verify, first, open, &rendered, |image| {
            let producer = HostLayers {
                image,
                counts: LinkCounts::default(),
            };
            let result = store.import_with(&image.input, &producer, &|p| rendered.progress(p));
            let count = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
            if let Ok(mut c) = counts.lock() {
                *c = (
                    count(&producer.counts.linked),
                    count(&producer.counts.written),
                );
            }
            result
        })
        .with_context(|| format!("copying {what} to {name}"));
    let reporter = rendered.finish()?;
    let (image, report) = result?;
    let (linked, written) = counts.into_inner().unwrap_or_default();
    let text = [
        format!(
            "Stored {} from {} ({} written, {} reused; {} hardlinked from the repository, {written} written)",
            name,
            image.imgref,
            count(report.layers_written as u64, "layer"),
            report.layers_reused,
            count(linked, "file")
        ),
        format!("Digest: {}", report.manifest_digest),
    ];
    print_import(reporting, &reporter, &report, &text)
}
