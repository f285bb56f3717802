//! `bootc-image storage init|status|verify|gc`.

use super::output::{count, outln};
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Cli;
use super::store_args::WhichStore;
use bootc_image::bootc::{gc, storage};

/// Storage commands.
#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// Create bootc's store if it is missing.
    Init,
    /// Where the stores are, what they hold, disk use, anything incomplete.
    Status {
        /// Lines for people, or one JSON object.
        #[arg(long, value_enum, default_value_t = super::output::ResultFormat::Text)]
        format: super::output::ResultFormat,
    },
    /// Check a store: rebuild every layer from its tar-split and files and check its DiffID, check
    /// every image's layers and data, find orphaned files. With --repair, remove what is damaged.
    Verify {
        /// Remove damaged images and layers (and the layers above them) and orphaned files,
        /// crash-safely, and say what was removed.
        #[arg(long)]
        repair: bool,
        /// Print the findings (and what was removed) as JSON (the same as --format json).
        #[arg(long)]
        json: bool,
        /// Lines for people, or one JSON object.
        #[arg(long, value_enum, default_value_t = super::output::ResultFormat::Text)]
        format: super::output::ResultFormat,
        /// Which store: bootc's own (under --sysroot), or the default one (podman's, or the one
        /// --root/--runroot/--storage-driver name). Default: the default store when one of those
        /// options is given, else bootc's.
        #[arg(long, value_enum)]
        store: Option<WhichStore>,
    },
    /// Remove images no deployment binds or boots, and the layers only they used.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Collect even when the sysroot has no deployment (then every image is garbage).
        #[arg(long)]
        force: bool,
    },
}

/// The store `storage verify` checks: the one named, else the default store when --root,
/// --runroot or --storage-driver names one (options mean the same in every command), else bootc's.
fn verify_store(cli: &Cli, store: Option<WhichStore>) -> WhichStore {
    store.unwrap_or(if cli.names_a_store() {
        WhichStore::Default
    } else {
        WhichStore::Bootc
    })
}

/// Disk use of a tree, counting each inode once.
fn disk_use(path: &Path, seen: &mut HashSet<(u64, u64)>) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = 0;
    if seen.insert((m.dev(), m.ino())) {
        total += m.blocks() * 512;
    }
    if m.is_dir()
        && let Ok(rd) = std::fs::read_dir(path)
    {
        for e in rd.flatten() {
            total += disk_use(&e.path(), seen);
        }
    }
    total
}

/// Runs the command.
pub fn run(cli: &Cli, c: &StorageCommand) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    // A booted system mounts /sysroot read-only: the commands that write bootc's store run in a
    // private mount namespace where that mount is read-write, as bootc does (nothing changes outside).
    if matches!(
        c,
        StorageCommand::Init | StorageCommand::Gc { dry_run: false, .. }
    ) || matches!(c, StorageCommand::Verify { repair: true, store, .. }
            if verify_store(cli, *store) == WhichStore::Bootc)
    {
        let remount: Vec<_> =
            bootc_image::bootc::mountns::read_only_mount_of(&sysroot.storage_path())
                .into_iter()
                .collect();
        if super::ran_in_private_namespace(&[], &remount)? {
            return Ok(());
        }
    }
    match c {
        StorageCommand::Init => {
            let (store, created) = storage::ensure(&sysroot)?;
            outln!(
                "{} {}",
                if created { "Created" } else { "Exists:" },
                store.config().graphroot.display()
            )
        }
        StorageCommand::Status { format } => status(cli, *format),
        StorageCommand::Verify {
            repair,
            json,
            format,
            store,
        } => verify(
            cli,
            verify_store(cli, *store),
            *repair,
            *json || *format == super::output::ResultFormat::Json,
        ),
        StorageCommand::Gc { dry_run, force } => collect(cli, *dry_run, *force),
    }
}

/// `storage status [--format json]`.
fn status(cli: &Cli, format: super::output::ResultFormat) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    let path = sysroot.storage_path();
    let selinux = if storage::selinux_enabled() {
        if path.join(storage::LABELED_STAMP).exists() {
            "labelled"
        } else {
            "not labelled"
        }
    } else {
        "disabled"
    };
    let bootc = match storage::open_existing_read_only(&sysroot)? {
        None => None,
        Some(store) => {
            let layers = store.layers()?;
            Some((
                store.images()?.len(),
                layers.len(),
                layers.iter().filter(|l| l.is_incomplete()).count(),
                disk_use(&path, &mut HashSet::new()),
            ))
        }
    };
    let def = cli.store_config()?;
    if format == super::output::ResultFormat::Json {
        let store = bootc.map(|(images, layers, incomplete, bytes)| {
            serde_json::json!({
                "images": images, "layers": layers, "incomplete_layers": incomplete,
                "disk_use_bytes": bytes, "selinux": selinux,
            })
        });
        let v = serde_json::json!({
            "bootc_store": {"path": path, "exists": store.is_some(), "store": store},
            "default_store": {"path": def.graphroot, "driver": def.driver.name()},
        });
        return outln!("{}", serde_json::to_string_pretty(&v)?);
    }
    outln!("bootc store:   {}", path.display())?;
    match bootc {
        None => outln!("  (not created yet: `bootc-image storage init`)")?,
        Some((images, layers, incomplete, bytes)) => {
            outln!("  images:      {images}")?;
            outln!("  layers:      {layers} ({incomplete} incomplete)")?;
            outln!("  disk use:    {} MiB", bytes >> 20)?;
            outln!("  SELinux:     {selinux}")?;
        }
    }
    outln!(
        "default store: {} ({})",
        def.graphroot.display(),
        def.driver.name()
    )
}

/// `storage gc [--dry-run] [--force]`.
fn collect(cli: &Cli, dry_run: bool, force: bool) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    if !force && bootc_image::bootc::deployments::list(&sysroot)?.is_empty() {
        return Err(super::exit::fail(
            super::exit::Code::Storage,
            format!(
                "no deployment under {}: every image of bootc's store would be garbage; check --sysroot, or pass --force to remove them all",
                sysroot.path().join("ostree/deploy").display()
            ),
        ));
    }
    let Some(store) = storage::open_existing(&sysroot)? else {
        return outln!("Removed 0 images, 0 layers");
    };
    let roots = gc::roots(&sysroot)?;
    let report = gc::collect(&store, &roots, dry_run)?;
    let (each, total) = if dry_run {
        ("would remove", "Would remove")
    } else {
        ("removed", "Removed")
    };
    for id in &report.images {
        outln!("{each} image {id}")?;
    }
    for id in &report.layers {
        outln!("{each} layer {id}")?;
    }
    for (id, containers) in &report.kept_for_containers {
        outln!(
            "kept image {id}: used by container {} (remove it with `bootc-image cmd` … `podman rm`)",
            containers.join(", ")
        )?;
    }
    outln!(
        "{total} {}, {}",
        count(report.images.len() as u64, "image"),
        count(report.layers.len() as u64, "layer")
    )
}

/// `storage verify [--repair] [--json] [--store bootc|default]`.
fn verify(cli: &Cli, which: WhichStore, repair: bool, json: bool) -> anyhow::Result<()> {
    use bootc_image::store::Store;
    let sysroot = cli.sysroot();
    let config = match which {
        WhichStore::Bootc => storage::config(&sysroot),
        WhichStore::Default => cli.store_config()?,
    };
    let path = config.graphroot.clone();
    let open = |rw: bool| -> anyhow::Result<Store> {
        let exists = path
            .join(format!("{}-layers", config.driver.name()))
            .exists();
        if !exists {
            return Err(super::exit::fail(
                super::exit::Code::Storage,
                format!(
                    "there is no {} store at {}: nothing to verify",
                    config.driver.name(),
                    path.display()
                ),
            ));
        }
        Ok(if rw {
            Store::open(config.clone())?
        } else {
            Store::open_read_only(config.clone())?
        })
    };
    let (report, repaired) = if repair {
        let (r, fixed) = open(true)?.repair()?;
        (r, Some(fixed))
    } else {
        (open(false)?.check()?, None)
    };
    let remaining = match &repaired {
        Some(r) => r.kept_in_use.len(),
        None => report.problems.len(),
    };
    if json {
        let v = serde_json::json!({
            "store": path,
            "layers_checked": report.layers_checked,
            "images_checked": report.images_checked,
            "problems": report.problems,
            "pending": report.pending,
            "removed": repaired,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_verify(&report, repaired.as_ref())?;
    }
    if remaining > 0 {
        let message = if repaired.is_some() {
            format!(
                "{remaining} damaged layers of {} are still in use (by containers or mounts): remove those containers with podman (or unmount), then repair again",
                path.display()
            )
        } else {
            format!(
                "the store at {} has {remaining} problems: `bootc-image storage verify --repair` removes the damaged images and layers (pull them again afterwards)",
                path.display()
            )
        };
        return Err(super::exit::fail(super::exit::Code::Storage, message));
    }
    Ok(())
}

/// The lines of `storage verify`: the problems, what is pending, and what was verified or removed.
fn print_verify(
    report: &bootc_image::store::check::CheckReport,
    repaired: Option<&bootc_image::store::check::RepairReport>,
) -> anyhow::Result<()> {
    for p in &report.problems {
        outln!("{p}")?;
    }
    if repaired.is_none() {
        for p in &report.pending {
            outln!("pending: {p}")?;
        }
        if !report.pending.is_empty() {
            outln!(
                "An interrupted write or delete left {} items; nothing is lost: the next command that writes to this store (pull, copy, rm, storage verify --repair) finishes it, as podman does",
                report.pending.len()
            )?;
        }
    }
    match repaired {
        None if report.problems.is_empty() => {
            outln!("{} verified", count(report.layers_checked as u64, "layer"))?;
            outln!("{} verified", count(report.images_checked as u64, "image"))
        }
        None => Ok(()),
        Some(r) => {
            for id in &r.images {
                outln!("removed image {id}")?;
            }
            for id in &r.layers {
                outln!("removed layer {id}")?;
            }
            for p in &r.orphans {
                outln!("removed {}", p.display())?;
            }
            for id in &r.kept_in_use {
                outln!("kept damaged layer {id}: a container or a mount uses it")?;
            }
            outln!(
                "Repaired: removed {}, {}, {}",
                count(r.images.len() as u64, "image"),
                count(r.layers.len() as u64, "layer"),
                count(r.orphans.len() as u64, "orphaned file")
            )
        }
    }
}
