//! The filesystem of the host-image bench: a journaled ext4 on a loop device that holds the
//! sysroot, the stores, the hardlink checkouts and upstream's temporary directory, all on one
//! filesystem (hardlinks need that). Unlike the stores' filesystem of `copy_to_storage`, it is
//! kept between runs (the image file stays in the target directory), because the sysroot built on
//! it is a cached fixture; it is detached at the end of each run.
//!
//! Used by `copy_host_image` through `#[path = "common/host_fs.rs"] mod host_fs;`.

use anyhow::{Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};

pub use crate::storefs::unmount_below;
use crate::storefs::{mounts_under, remove_store_dir, run_cmd, store_paths};

/// The loop-mounted ext4 of the host-image bench.
#[derive(Debug)]
pub struct HostFs {
    /// Its mount point.
    pub base: PathBuf,
    /// The loop device.
    pub dev: String,
    /// Whether the filesystem was made by this run (an empty one: no cached sysroot).
    pub fresh: bool,
}

impl HostFs {
    /// Attaches and mounts `image` (in `target_dir`) on `mount_dir`, making a new journaled
    /// ext4 of `size` first when the image is missing or does not mount.
    pub fn setup(target_dir: &Path, image: &str, size: &str, mount_dir: &str) -> Result<Self> {
        if !rustix::process::geteuid().is_root() {
            bail!(
                "needs root (loop mount, ostree admin deploy, bind-mounting /var/tmp for ostree-ext)"
            );
        }
        let img = target_dir.join(image);
        let img_str = img
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", img.display()))?;
        let mnt = Path::new(mount_dir);
        // Leftovers of an interrupted run.
        for m in mounts_under(mnt) {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
        detach_loops(img_str);
        fs::create_dir_all(mnt)?;
        if img.exists() {
            match attach_and_mount(img_str, mount_dir) {
                Ok(dev) => {
                    return Ok(HostFs {
                        base: mnt.to_path_buf(),
                        dev,
                        fresh: false,
                    });
                }
                Err(e) => println!("note: {img_str} does not mount ({e:#}); making a new one"),
            }
        }
        let _ = fs::remove_file(&img);
        run_cmd("truncate", &["-s", size, img_str])?;
        // Inode tables and journal initialised now: lazy init would write in the background while
        // we measure.
        run_cmd(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                img_str,
            ],
        )?;
        let dev = attach_and_mount(img_str, mount_dir)?;
        Ok(HostFs {
            base: mnt.to_path_buf(),
            dev,
            fresh: true,
        })
    }

    /// `base/name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// Root and runroot of the store named `name` (short: podman wants runroots < 50 chars).
    pub fn store(&self, name: &str) -> (PathBuf, PathBuf) {
        store_paths(&self.base, name)
    }

    /// Unmounts what is mounted at or below `base/name` and deletes it.
    pub fn clean(&self, name: &str) -> Result<()> {
        remove_store_dir(&self.base, name)
    }
}

impl Drop for HostFs {
    fn drop(&mut self) {
        unmount_below(&self.base);
        // Give the blocks of the deleted stores back to the sparse image file.
        let _ = run_cmd("fstrim", &[&self.base.to_string_lossy()]);
        let _ = rustix::mount::unmount(&self.base, rustix::mount::UnmountFlags::empty());
        let _ = run_cmd("losetup", &["-d", &self.dev]);
    }
}

/// `losetup --direct-io=on` + `mount`; returns the loop device.
fn attach_and_mount(img: &str, mount_dir: &str) -> Result<String> {
    let dev = run_cmd("losetup", &["--direct-io=on", "-f", "--show", img])?;
    if let Err(e) = run_cmd("mount", &[&dev, mount_dir]) {
        let _ = run_cmd("losetup", &["-d", &dev]);
        return Err(e);
    }
    Ok(dev)
}

/// Detaches every loop device backed by `img`.
fn detach_loops(img: &str) {
    if let Ok(list) = run_cmd("losetup", &["-j", img]) {
        for line in list.lines() {
            if let Some((dev, _)) = line.split_once(':') {
                let _ = run_cmd("losetup", &["-d", dev]);
            }
        }
    }
}
