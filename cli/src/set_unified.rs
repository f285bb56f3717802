//! `bootc-image set-unified`: the booted host image into bootc's own store, under its name, so the
//! next upgrade finds it there (upstream's `bootc image set-unified`).
//!
//! The image comes from the first place that has it: bootc's store already (verified and kept:
//! nothing is written), the default store (copied natively, files shared), else the host's own
//! repository (the OSTree repository, zero-copy; or the composefs repository, reflinked or
//! copied). On an OSTree sysroot the command runs in `bootc-image-ostree`, which links libostree.

use super::output::outln;
use anyhow::Context;

use super::Cli;
use super::copying::{Reporting, copy_and_print};
use super::output::ResultFormat;
use super::progress::ProgressMode;
use bootc_image::bootc::{composefs_deployments, storage};
use bootc_image::store::{Store, lookup};

/// Options of set-unified.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Check every object of the host repository against its checksum while copying (slower).
    #[arg(long)]
    pub verify: bool,
    /// Progress of a copy: a bar per layer on a terminal (auto), JSON events on stdout, or none.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// The result: text lines, or one JSON object.
    #[arg(long, value_enum, default_value_t = ResultFormat::Text)]
    pub format: ResultFormat,
}

/// How a copy of set-unified is shown.
fn reporting(cli: &Cli, args: &Args) -> Reporting {
    Reporting::new(cli, args.progress, None, args.format)
}

/// How the booted image is recognized in a store.
#[derive(Debug, Clone)]
enum Expect {
    /// By its manifest digest (composefs: the origin records it, and the copy keeps it).
    Digest(String),
    /// By its config without `rootfs` and `history` (OSTree: the copy's manifest is only final
    /// once the layers are written, and its DiffIDs are the image's own or, when those do not
    /// match the content, computed from it).
    Config(serde_json::Value),
}

/// A config without the parts an OSTree copy may compute anew.
fn config_sans_layers(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("rootfs");
        o.remove("history");
    }
    v
}

impl Expect {
    fn matches(&self, store: &Store, image: &storage_format::ImageRecord) -> bool {
        match self {
            Expect::Digest(d) => image.digest.as_deref() == Some(d.as_str()),
            Expect::Config(want) => {
                let key = format!("sha256:{}", image.id);
                bootc_image::store::copy::read_big_data(store, image, &key)
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .is_some_and(|v| &config_sans_layers(v) == want)
            }
        }
    }
}

/// What is already there: `Some(message)` when bootc's store holds `name` as the booted image
/// and it verifies; `None` when it must be copied.
fn already_unified(cli: &Cli, name: &str, expect: &Expect) -> anyhow::Result<Option<String>> {
    let sysroot = cli.sysroot();
    let Some(store) = storage::open_existing_read_only(&sysroot)
        .with_context(|| format!("opening bootc's store {}", sysroot.storage_path().display()))?
    else {
        return Ok(None);
    };
    let images = store.images()?;
    let Ok(found) = lookup::find_image(&images, name) else {
        return Ok(None);
    };
    if !expect.matches(&store, found) {
        // The name is on another image (an older build): the booted one is copied and takes it.
        return Ok(None);
    }
    store
        .verify_image(found)
        .with_context(|| format!("verifying {name} in bootc's store"))?;
    Ok(Some(format!(
        "{name} is already in bootc's storage ({}), verified",
        found.digest.as_deref().unwrap_or(&found.id)
    )))
}

/// Whether the default store holds `name` as the booted image.
fn in_default_store(cli: &Cli, name: &str, expect: &Expect) -> bool {
    let Ok(config) = cli.store_config() else {
        return false;
    };
    if config.graphroot == cli.sysroot().storage_path() {
        return false;
    }
    let Ok(store) = Store::open_read_only(config) else {
        return false;
    };
    let Ok(images) = store.images() else {
        return false;
    };
    lookup::find_image(&images, name).is_ok_and(|f| expect.matches(&store, f))
}

/// The steps every backend shares; `from_host` copies the host image into bootc's store as `name`
/// (already normalized).
fn unify(
    cli: &Cli,
    args: &Args,
    name: &str,
    expect: &Expect,
    from_host: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(msg) = already_unified(cli, name, expect)? {
        if args.format == ResultFormat::Json {
            outln!(
                "{}",
                serde_json::json!({"name": name, "already_present": true})
            )?;
        } else if !cli.quiet {
            outln!("{msg}")?;
        }
        return Ok(());
    }
    if in_default_store(cli, name, expect) {
        if super::default_store::ran_in_private_namespace(cli)? {
            return Ok(());
        }
        let (text, json) = super::default_store::pull(cli, name, args.verify)?;
        match args.format {
            ResultFormat::Json => outln!("{json}")?,
            ResultFormat::Text if !cli.quiet => outln!("{text} from the default store")?,
            ResultFormat::Text => {}
        }
        return Ok(());
    }
    // On a booted host bootc's store is under the read-only /sysroot: write it from a private
    // mount namespace where that mount is writable, as every command that writes it does.
    let sysroot = cli.sysroot();
    let remount: Vec<_> = bootc_image::bootc::mountns::read_only_mount_of(&sysroot.storage_path())
        .into_iter()
        .collect();
    if !remount.is_empty() && super::ran_in_private_namespace(&[], &remount)? {
        return Ok(());
    }
    storage::ensure(&sysroot).with_context(|| {
        format!(
            "creating bootc's store {}",
            sysroot.storage_path().display()
        )
    })?;
    from_host()
}

/// The name a deployment's image reference gives in bootc's store (normalized as podman does), or
/// an error naming the origin.
fn store_name(reference: &str, deployment: &str) -> anyhow::Result<String> {
    let stripped = bootc_image::bootc::deployments::strip_transport(reference);
    bootc_image::reference::normalize(&stripped).map_err(|e| {
        super::exit::fail(
            super::exit::Code::Image,
            format!(
                "deployment {deployment}'s image {reference:?} has no name an image store can hold ({e}): set-unified needs a registry or containers-storage image"
            ),
        )
    })
}

/// What to do when the booted deployment cannot be found.
const NO_DEPLOYMENT: &str = "deploy an image first (bootc install, bootc switch)";

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    if composefs_deployments::is_composefs(&sysroot) {
        let running = composefs_deployments::is_running_sysroot(&cli.sysroot);
        let deployment =
            composefs_deployments::default_deployment(&sysroot, running, NO_DEPLOYMENT)?;
        let reference = deployment.image_reference.clone().ok_or_else(|| {
            super::exit::fail(
                super::exit::Code::Image,
                format!(
                    "deployment {} was not deployed from a container image (its origin names none)",
                    deployment.id
                ),
            )
        })?;
        let name = store_name(&reference, &deployment.id)?;
        let digest = deployment
            .manifest("copy it with copy-to-storage --source and --target naming bootc's store")?;
        let expect = Expect::Digest(digest.to_string());
        let image = bootc_image::source::composefs::ImageSelector::Manifest(digest);
        let what = deployment.shown();
        return unify(cli, args, &name, &expect, || {
            let repo = composefs_deployments::repo_path(&sysroot);
            let shown = format!("{what} in {}", repo.display());
            let opts = bootc_image::copy::CopyOptions::default()
                .with_names(vec![name.clone()])
                .with_verify(args.verify);
            let image = bootc_image::image_ref::ImageRef::Composefs { repo, image };
            let opened = bootc_image::copy::open(&image, &opts)
                .with_context(|| format!("reading {shown}"))?;
            let config = storage::config(&sysroot);
            let store = Store::open(config.clone())
                .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
            copy_and_print(&reporting(cli, args), &store, opened, &shown).map(|_| ())
        });
    }
    if !sysroot.repo_path().is_dir() {
        return Err(super::exit::fail(
            super::exit::Code::Image,
            format!(
                "{} is not a bootc host (no ostree/repo, nor composefs/ and state/deploy/): name a sysroot with --sysroot DIR",
                sysroot.path().display()
            ),
        ));
    }
    super::copying::exec_host_helper("set-unified on an OSTree host needs it")
}

/// `set-unified` on an OSTree sysroot, in `bootc-image-ostree`.
#[cfg(feature = "ostree")]
pub fn run_host(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    use bootc_image::source::ostree_host::{HostImage, repo::deployed_reference};
    let sysroot = cli.sysroot();
    let reference = deployed_reference(sysroot.path()).map_err(|e| match e {
        bootc_image::Error::NotFound { what, .. } => super::exit::fail(
            super::exit::Code::Image,
            format!(
                "the sysroot {} has no deployment from a container image ({what}): {NO_DEPLOYMENT}",
                sysroot.path().display()
            ),
        ),
        e => e.into(),
    })?;
    let name = store_name(&reference, "booted")?;
    // The image's config (its layers aside) is known before any layer is written.
    let image = HostImage::open(sysroot.path(), Some(&reference), vec![name.clone()], false)
        .with_context(|| format!("reading {reference} in {}", sysroot.path().display()))?;
    let config: serde_json::Value = serde_json::from_slice(&image.input.config)
        .with_context(|| format!("the config of {reference}"))?;
    let expect = Expect::Config(config_sans_layers(config));
    drop(image);
    unify(cli, args, &name, &expect, || {
        super::copying::copy_host(
            cli,
            &reporting(cli, args),
            Some(&reference),
            (name.clone(), storage::config(&sysroot)),
            args.verify,
        )
    })
}
