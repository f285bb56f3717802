//! `bootc-image set-unified`: the booted host image into bootc's own store, under its name, so the
//! next upgrade finds it there (upstream's `bootc image set-unified`).
//!
//! The image comes from the first place that has it: bootc's store already (verified and kept:
//! nothing is written), the default store (copied natively, files shared), else the host's own
//! repository (the OSTree repository, zero-copy; or the composefs repository, reflinked or
//! copied). On an OSTree sysroot the command runs in `bootc-image-ostree`, which links libostree.

use anyhow::Context;

use super::Cli;
use super::copy_to_storage::{self, ResultFormat};
use super::progress::ProgressMode;
use crate::bootc::{composefs_deployments, storage};
use crate::store::{Store, lookup};

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

/// The copy-to-storage options a host copy of set-unified runs with.
fn copy_args(args: &Args, source: Option<String>, target: String) -> copy_to_storage::Args {
    copy_to_storage::Args {
        source,
        target,
        progress: args.progress,
        progress_fd: None,
        format: args.format,
        sync: false,
        verify: args.verify,
        fetch: super::fetch_args::FetchArgs::default(),
    }
}

/// What is already there: `Some(message)` when bootc's store holds `name` (with `digest`, when
/// known) and it verifies; `None` when it must be copied.
fn already_unified(cli: &Cli, name: &str, digest: Option<&str>) -> anyhow::Result<Option<String>> {
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
    if digest.is_some_and(|d| found.digest.as_deref() != Some(d)) {
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

/// Whether the default store holds `name` (with `digest`, when known).
fn in_default_store(cli: &Cli, name: &str, digest: Option<&str>) -> bool {
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
    lookup::find_image(&images, name)
        .is_ok_and(|f| digest.is_none_or(|d| f.digest.as_deref() == Some(d)))
}

/// The steps every backend shares; `from_host` copies the host image into bootc's store as `name`.
fn unify(
    cli: &Cli,
    args: &Args,
    name: &str,
    digest: Option<&str>,
    from_host: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(msg) = already_unified(cli, name, digest)? {
        if args.format == ResultFormat::Json {
            println!(
                "{}",
                serde_json::json!({"name": name, "already_present": true})
            );
        } else if !cli.quiet {
            println!("{msg}");
        }
        return Ok(());
    }
    if in_default_store(cli, name, digest) {
        if super::pull_from_default_storage::ran_in_private_namespace(cli)? {
            return Ok(());
        }
        let (text, json) = super::pull_from_default_storage::pull(cli, name, args.verify)?;
        match args.format {
            ResultFormat::Json => println!("{json}"),
            ResultFormat::Text if !cli.quiet => println!("{text} from the default store"),
            ResultFormat::Text => {}
        }
        return Ok(());
    }
    let sysroot = cli.sysroot();
    storage::ensure(&sysroot).with_context(|| {
        format!(
            "creating bootc's store {}",
            sysroot.storage_path().display()
        )
    })?;
    from_host()
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    if composefs_deployments::is_composefs(&sysroot) {
        let running = composefs_deployments::is_running_sysroot(&cli.sysroot);
        let deployment = composefs_deployments::default_deployment(&sysroot, running)?;
        let name = deployment.image_name().ok_or_else(|| {
            super::exit::fail(
                super::exit::Code::Image,
                format!(
                    "deployment {} was not deployed from a container image (its origin names none)",
                    deployment.id
                ),
            )
        })?;
        let (image, what) = composefs_deployments::host_image(&sysroot, None, running)?;
        let digest = deployment.manifest_digest.clone();
        return unify(cli, args, &name, digest.as_deref(), || {
            let copy = copy_args(args, None, name.clone());
            let repo = composefs_deployments::repo_path(&sysroot);
            let config = storage::config(&sysroot);
            let target = crate::reference::parse_storage_reference(&name)?.name;
            copy_to_storage::from_composefs(
                cli,
                &copy,
                (&repo, &image, &what),
                target,
                config,
                None,
            )
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
    copy_to_storage::exec_host_helper()
}

/// `set-unified` on an OSTree sysroot, in `bootc-image-ostree`.
#[cfg(feature = "ostree")]
pub fn run_host(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    let reference = crate::source::ostree_host::repo::deployed_reference(sysroot.path())?;
    let name = crate::bootc::deployments::strip_transport(&reference);
    unify(cli, args, &name, None, || {
        let copy = copy_args(args, Some(reference.clone()), name.clone());
        let target = crate::reference::parse_storage_reference(&name)?.name;
        copy_to_storage::host_into(cli, &copy, target, storage::config(&sysroot))
    })
}
