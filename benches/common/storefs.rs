//! The filesystem for the benchmark stores: a journaled ext4 on a loop device, because the stores
//! that runs create and delete must not sit on an ext4 without journal (it avoids reusing freshly
//! freed inodes, and each run gets slower; see `docs/performance.md`).
//!
//! Shared by the benches through `#[path = "common/storefs.rs"] mod storefs;`.

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Mount points under `prefix`, deepest first.
pub fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(prefix))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out.dedup();
    out
}

/// Unmounts `dir` and everything under it (podman leaves `overlay/` bind-mounted onto itself).
pub fn unmount_under(dir: &Path) {
    unmount_matching(dir, false);
}

/// Unmounts everything strictly below `dir`, leaving `dir` itself mounted (a bench filesystem).
pub fn unmount_below(dir: &Path) {
    unmount_matching(dir, true);
}

fn unmount_matching(dir: &Path, keep_dir: bool) {
    for _ in 0..4 {
        let mounts: Vec<PathBuf> = mounts_under(dir)
            .into_iter()
            .filter(|m| !(keep_dir && m == dir))
            .collect();
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// The root and runroot of the store named `name` under `base` (kept short for podman's runroot
/// limit).
pub fn store_paths(base: &Path, name: &str) -> (PathBuf, PathBuf) {
    let dir = base.join(name);
    (dir.join("root"), dir.join("run"))
}

/// Unmounts and deletes `base/name`.
pub fn remove_store_dir(base: &Path, name: &str) -> Result<()> {
    let dir = base.join(name);
    unmount_under(&dir);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Runs a setup command; fails with its stderr.
pub fn run_cmd(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The file system the benches' loop device gets: `BENCH_FS=xfs` (reflink-capable), else ext4
/// with journal (Debian's default).
pub fn fs_type() -> &'static str {
    match std::env::var("BENCH_FS").as_deref() {
        Ok("xfs") => "xfs",
        _ => "ext4",
    }
}

/// Where a bench puts its store filesystem. Each bench has its own, so that two benches running
/// at the same time do not tear down each other's stores.
#[derive(Debug, Clone, Copy)]
pub struct FsSpec {
    /// Mount point (short: podman wants runroots < 50 characters).
    pub mount_dir: &'static str,
    /// File name of the sparse ext4 image, in the target directory.
    pub image: &'static str,
    /// Size of that image (`truncate -s`).
    pub size: &'static str,
    /// Directory in the target directory used instead when no loop mount can be made.
    pub fallback: &'static str,
}

/// Where the stores live: a loop-mounted journaled ext4, or a plain directory as a fallback.
#[derive(Debug)]
pub struct StoreFs {
    /// Directory holding the stores.
    pub base: PathBuf,
    /// The loop device and image file, when we set one up (torn down on drop).
    pub loop_dev: Option<(String, PathBuf)>,
    /// Why the fallback was taken, if it was.
    pub fallback_reason: Option<String>,
}

impl StoreFs {
    /// Sets up the loop-mounted ext4 `spec` describes, or falls back to
    /// `target_dir/<spec.fallback>`.
    pub fn setup(target_dir: &Path, spec: &FsSpec) -> Result<Self> {
        let img = target_dir.join(spec.image);
        match Self::setup_loop(&img, spec) {
            Ok(dev) => Ok(StoreFs {
                base: PathBuf::from(spec.mount_dir),
                loop_dev: Some((dev, img)),
                fallback_reason: None,
            }),
            Err(e) => {
                let base = target_dir.join(spec.fallback);
                fs::create_dir_all(&base)?;
                Ok(StoreFs {
                    base,
                    loop_dev: None,
                    fallback_reason: Some(format!("{e:#}")),
                })
            }
        }
    }

    /// Detaches leftovers of an earlier run, makes a fresh ext4 with journal and mounts it.
    fn setup_loop(img: &Path, spec: &FsSpec) -> Result<String> {
        if !rustix::process::geteuid().is_root() {
            bail!("not root");
        }
        let mnt = Path::new(spec.mount_dir);
        unmount_under(mnt);
        let img_str = img
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", img.display()))?;
        Self::detach_loops(img_str);
        let _ = fs::remove_file(img);
        run_cmd("truncate", &["-s", spec.size, img_str])?;
        if fs_type() == "xfs" {
            // XFS with reflink (xfsprogs' default since 5.1, said explicitly).
            run_cmd("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", img_str])?;
        } else {
            // Initialise inode tables and journal now: lazy init would write in the background
            // while we measure.
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
        }
        let dev = run_cmd("losetup", &["--direct-io=on", "-f", "--show", img_str])?;
        fs::create_dir_all(mnt)?;
        if let Err(e) = run_cmd("mount", &[&dev, spec.mount_dir]) {
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

    /// Prints where the stores are, with a warning when they are not on the loop-mounted ext4.
    pub fn announce(&self) {
        match &self.fallback_reason {
            None => println!(
                "stores: {} on {} mounted at {}",
                if fs_type() == "xfs" {
                    "XFS (reflink)"
                } else {
                    "journaled ext4"
                },
                self.loop_dev.as_ref().map_or("?", |(d, _)| d.as_str()),
                self.base.display()
            ),
            Some(why) => println!(
                "WARNING: stores in {} (no loop-mounted ext4: {why}); times may drift from run to run",
                self.base.display()
            ),
        }
    }

    /// The directory of the store (or sysroot) named `name`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// The root and runroot of the store named `name` (kept short for podman's runroot limit).
    pub fn store(&self, name: &str) -> (PathBuf, PathBuf) {
        store_paths(&self.base, name)
    }

    /// Unmounts and deletes the store named `name`.
    pub fn clean(&self, name: &str) -> Result<()> {
        remove_store_dir(&self.base, name)
    }
}

impl Drop for StoreFs {
    fn drop(&mut self) {
        if let Some((dev, img)) = self.loop_dev.take() {
            unmount_under(&self.base);
            let _ = run_cmd("losetup", &["-d", &dev]);
            let _ = fs::remove_file(img);
        }
    }
}

/// The loop-mounted ext4 the copy benches share for their stores: `target/bench-fs.img` (sparse,
/// 20 GB) mounted on `/tmp/bb-mnt` (short: podman wants runroots < 50 chars).
pub const COPY_STORE_FS: FsSpec = FsSpec {
    mount_dir: "/tmp/bb-mnt",
    image: "bench-fs.img",
    size: "20G",
    fallback: "bench-stores",
};
