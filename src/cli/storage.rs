//! `bootc-image storage init|status|verify|gc`.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Cli;
use crate::bootc::{gc, storage};

/// Storage commands.
#[derive(Debug, clap::Subcommand)]
pub enum StorageCommand {
    /// Create bootc's store if it is missing.
    Init,
    /// Where the stores are, what they hold, disk use, anything incomplete.
    Status,
    /// Rebuild every layer of bootc's store from its tar-split and files and check its DiffID.
    Verify,
    /// Remove images no deployment binds or boots, and the layers only they used.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
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
        StorageCommand::Init | StorageCommand::Gc { dry_run: false }
    ) {
        let remount: Vec<_> = crate::bootc::mountns::read_only_mount_of(&sysroot.storage_path())
            .into_iter()
            .collect();
        if let Some(code) = crate::bootc::mountns::reexec_for_links(&[], &remount)? {
            if code != 0 {
                std::process::exit(code);
            }
            return Ok(());
        }
    }
    match c {
        StorageCommand::Init => {
            let (store, created) = storage::ensure(&sysroot)?;
            println!(
                "{} {}",
                if created { "Created" } else { "Exists:" },
                store.config().graphroot.display()
            );
        }
        StorageCommand::Status => {
            let path = sysroot.storage_path();
            println!("bootc store:   {}", path.display());
            match storage::open_existing_read_only(&sysroot)? {
                None => println!("  (not created yet: `bootc-image storage init`)"),
                Some(store) => {
                    let layers = store.layers()?;
                    let incomplete = layers.iter().filter(|l| l.is_incomplete()).count();
                    println!("  images:      {}", store.images()?.len());
                    println!("  layers:      {} ({incomplete} incomplete)", layers.len());
                    println!(
                        "  disk use:    {} MiB",
                        disk_use(&path, &mut HashSet::new()) >> 20
                    );
                    println!(
                        "  SELinux:     {}",
                        if storage::selinux_enabled() {
                            if path.join(storage::LABELED_STAMP).exists() {
                                "labelled"
                            } else {
                                "not labelled"
                            }
                        } else {
                            "disabled"
                        }
                    );
                }
            }
            let def = cli.store_config()?;
            println!(
                "default store: {} ({})",
                def.graphroot.display(),
                def.driver.name()
            );
        }
        StorageCommand::Verify => {
            let store = storage::open_existing_read_only(&sysroot)?
                .ok_or_else(|| anyhow::anyhow!("bootc's store does not exist"))?;
            let layers = store.layers()?;
            for l in &layers {
                store.verify_layer(l)?;
            }
            println!("{} layers verified", layers.len());
        }
        StorageCommand::Gc { dry_run } => {
            let Some(store) = storage::open_existing(&sysroot)? else {
                println!("Removed 0 images, 0 layers");
                return Ok(());
            };
            let roots = gc::roots(&sysroot)?;
            let report = gc::collect(&store, &roots, *dry_run)?;
            if *dry_run {
                for id in &report.images {
                    println!("would remove {id}");
                }
            } else {
                println!(
                    "Removed {} images, {} layers",
                    report.images.len(),
                    report.layers.len()
                );
            }
        }
    }
    Ok(())
}
