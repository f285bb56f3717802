//! `cargo bench --bench pull_from_default_storage`: times `bootc-image pull-from-default-storage`
//! against `skopeo copy containers-storage:… containers-storage:…` and against the floor, `cp -al`
//! of the same layer trees; then times `bootc-image list --type unified --format json` against
//! `podman images --format json` on a store of 50 images.
//!
//! What it does, in order:
//! 1. takes the 40-layer gzip fixture of `copy_to_storage` (generated and cached under
//!    `target/bench-fixtures/<version>-<scale>/` by the shared generator in `common/fixtures.rs`);
//! 2. creates its own journaled ext4 on a loop device (sparse `target/bench-fs-pull.img`, mounted on
//!    `/tmp/bb-pull`; its own, so it can run while `copy_to_storage` holds `/tmp/bb-mnt`). Every
//!    store lives there, so source and destinations share a filesystem and hardlinks work;
//! 3. copies the fixture with skopeo into a default store `A` (not timed). skopeo leaves
//!    `A/overlay` bind-mounted onto itself, as podman does;
//! 4. for each run, each into a fresh destination, timed with the wall clock, with peak RSS and CPU
//!    time from GNU `time`; "cold" means `sync` and dropping the page cache first (the programs
//!    are then warmed with `--version`, the stores stay cold), "warm" means `sync` only, right
//!    after the cold run of the same command:
//!    - skopeo, cold then warm: `containers-storage:[overlay@A+RA]` →
//!      `containers-storage:[overlay@B+RB]`;
//!    - ours, cold then warm: `bootc-image --root A --runroot RA --sysroot S
//!      pull-from-default-storage`, with the self-bind mount in place, so it re-runs itself under
//!      `unshare` as it does in real use;
//!    - the floor, cold then warm: `cp -al --parents <id>/diff …` of the image's 40 layer trees,
//!      run in `A/overlay` after detaching the self-bind mount (in the bench's own, the host's,
//!      mount namespace: else `link()` fails with `EXDEV`);
//!    - ours, cold, while the self-bind mount is still detached: no re-exec;
//!
//!    then the self-bind mount is put back (`mount --bind`, `--make-private`, as c/storage does
//!    it). Each result is checked: the store holds every layer and the named image, one file of
//!    every layer has the source's inode (really hardlinked), and podman lists the image in
//!    bootc's store. Last, the re-exec's own cost: a no-op pull (every layer already there),
//!    warm, alternately with and without the self-bind mount, 20 times each;
//! 5. `list`: 50 small distinct images are generated, copied into `A` with skopeo and pulled
//!    into a sysroot `L` (not timed); then `bootc-image --sysroot L list --type unified --format
//!    json` and `podman --root L/ostree/bootc/storage images --format json` run alternately, warm
//!    cache, 20 times each after 2 warm-ups (median of the wall clock around the process);
//! 6. prints a table with the targets beside it, and writes it as Markdown to
//!    `target/bench-results-pull.md`. Exits non-zero if a run or a check failed.
//!
//! Environment: `BENCH_RUNS=n` (default 1, median reported), `BENCH_SMALL=1` (the ~30 MB tree
//! for a quick check).
//!
//! It needs root (loop mount, mount namespaces, dropping caches), skopeo, podman, `unshare`, GNU
//! `cp` and GNU `time`.

// Benchmarks and tests report on the terminal and stop on the first broken fixture.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use anyhow::{Context, Result, anyhow, bail};
use fixtures::{
    FixtureInfo, IMAGE_NAME, TAG, check_store, ensure_fixtures, write_blob,
    write_config_and_manifest,
};
use measure::{
    Sample, ToolResult, fmt_opt, load_average, measure, measure_in, median, overlay_store_args,
    runs_from_env, settle, settle_warm, small_from_env, version_of,
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;
use storefs::{FsSpec, StoreFs, mounts_under, unmount_under};

/// The loop-mounted ext4 for the stores: `target/bench-fs-pull.img` (sparse, 20 GB) mounted on
/// `/tmp/bb-pull` (short: podman wants runroots < 50 chars).
const STORE_FS: FsSpec = FsSpec {
    mount_dir: "/tmp/bb-pull",
    image: "bench-fs-pull.img",
    size: "20G",
    fallback: "bench-stores-pull",
};
/// The fixture layout the pull is measured on.
const FIXTURE: &str = "gzip-40";
/// Ours may take at most this many times the floor (`cp -al`).
const FLOOR_RATIO_TARGET: f64 = 2.0;
/// skopeo should take at least this many times as long as ours.
const SKOPEO_RATIO_TARGET: f64 = 15.0;
/// Number of images in the store that `list` is timed on.
const LIST_IMAGES: usize = 50;
/// Timed runs of each `list` command (after [`WARMUPS`] untimed ones).
const LIST_RUNS: usize = 20;
/// Untimed runs before timing a warm-cache command.
const WARMUPS: usize = 2;
/// Our `list` should take at most this long (ms).
const LIST_TARGET_MS: f64 = 10.0;
/// `podman images` should take at least this many times as long as our `list`.
const LIST_RATIO_TARGET: f64 = 10.0;
/// `created` of the small images' configs.
const SMALL_CREATED: &str = "2024-01-02T03:04:05Z";
/// The same instant as a Unix time: the mtime of the small images' entries.
const SMALL_MTIME: u64 = 1_704_164_645;

/// The stores on the bench filesystem, by directory name.
mod names {
    /// The default store everything is copied from (`a/root`, `a/run`).
    pub const SOURCE: &str = "a";
    /// skopeo's destination store (`b/root`, `b/run`).
    pub const SKOPEO: &str = "b";
    /// The sysroot our pull writes into.
    pub const SYSROOT: &str = "s";
    /// podman's runroot when it checks the sysroot's store.
    pub const SYSROOT_RUN: &str = "sr";
    /// The floor's destination directory.
    pub const FLOOR: &str = "f";
    /// The sysroot with the 50 images for `list`.
    pub const LIST: &str = "l";
    /// podman's runroot for that store.
    pub const LIST_RUN: &str = "lr";
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// `containers-storage:[overlay@ROOT+RUNROOT]NAME`.
fn storage_ref(root: &Path, runroot: &Path, name: &str) -> String {
    format!(
        "containers-storage:[overlay@{}+{}]{name}",
        root.display(),
        runroot.display()
    )
}

/// Runs an untimed command; its stdout, or a message with the end of its stderr.
fn run_quiet(program: &Path, args: &[String]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("(no stderr)");
        return Err(format!(
            "{} {}: {}: {last}",
            program.display(),
            args.join(" "),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `dir` is itself a mount point (podman's self-bind of a store's `overlay/`).
fn is_mount_point(dir: &Path) -> bool {
    mounts_under(dir).iter().any(|m| m == dir)
}

/// Puts back the self-bind mount c/storage makes of a store's `overlay/` (`mount --bind D D`,
/// then `--make-private`), if it is not there.
fn ensure_self_bind(dir: &Path) -> Result<()> {
    if is_mount_point(dir) {
        return Ok(());
    }
    rustix::mount::mount_bind(dir, dir)
        .with_context(|| format!("bind-mounting {} onto itself", dir.display()))?;
    rustix::mount::mount_change(dir, rustix::mount::MountPropagationFlags::PRIVATE)
        .with_context(|| format!("making {} private", dir.display()))?;
    Ok(())
}

/// For each layer, the path (relative to its `diff/`) of its first regular file in sorted
/// depth-first order: the files whose inodes show whether a copy hardlinked.
fn sample_files(overlay: &Path, layer_ids: &[String]) -> Result<Vec<(String, PathBuf)>> {
    /// The first regular file under `dir`, relative to `base`.
    fn first_file(base: &Path, dir: &Path) -> Result<Option<PathBuf>> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()?;
        entries.sort_by_key(fs::DirEntry::file_name);
        for e in entries {
            let ty = e.file_type()?;
            if ty.is_file() {
                return Ok(Some(e.path().strip_prefix(base)?.to_path_buf()));
            }
            if ty.is_dir()
                && let Some(found) = first_file(base, &e.path())?
            {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }
    let mut out = Vec::new();
    for id in layer_ids {
        let diff = overlay.join(id).join("diff");
        if let Some(rel) = first_file(&diff, &diff)? {
            out.push((id.clone(), rel));
        }
    }
    if out.is_empty() {
        bail!("no regular file in any layer under {}", overlay.display());
    }
    Ok(out)
}

/// Checks that each sample file under `dst/<id>/diff/` is the same inode as under
/// `src/<id>/diff/`.
fn check_links(src: &Path, dst: &Path, samples: &[(String, PathBuf)]) -> Result<(), String> {
    for (id, rel) in samples {
        let a = src.join(id).join("diff").join(rel);
        let b = dst.join(id).join("diff").join(rel);
        let ma = fs::symlink_metadata(&a).map_err(|e| format!("{}: {e}", a.display()))?;
        let mb = fs::symlink_metadata(&b).map_err(|e| format!("{}: {e}", b.display()))?;
        if (ma.dev(), ma.ino()) != (mb.dev(), mb.ino()) {
            return Err(format!(
                "{} is not hardlinked (inode {} vs {})",
                b.display(),
                mb.ino(),
                ma.ino()
            ));
        }
    }
    Ok(())
}

/// Checks that `podman images` on the store at `root` lists [`IMAGE_NAME`].
fn check_podman_lists(root: &Path, runroot: &Path) -> Result<(), String> {
    let mut args = overlay_store_args(root, runroot);
    args.extend([
        "images".into(),
        "--format".into(),
        "{{.Repository}}:{{.Tag}}".into(),
    ]);
    let out = run_quiet(Path::new("podman"), &args)?;
    if out.lines().any(|l| l.trim() == IMAGE_NAME) {
        Ok(())
    } else {
        Err(format!(
            "podman images does not list {IMAGE_NAME}: {:?}",
            out.trim()
        ))
    }
}

/// Prints one run's outcome as it happens.
fn report_run(what: &str, run: usize, runs: usize, r: &Result<Sample, String>) {
    measure::report_run(&format!("{what:16}"), run, runs, r, 3, "");
}

/// Wall-clock milliseconds of one run of `program args…`, checked by `check` on its stdout.
/// Nothing is dropped: the callers measure warm.
fn time_once(
    program: &Path,
    args: &[String],
    check: &dyn Fn(&str) -> Result<(), String>,
) -> Result<f64, String> {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(format!(
            "{} {}: {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    check(&String::from_utf8_lossy(&out.stdout))?;
    Ok(ms)
}

// ---------------------------------------------------------------------------------------------
// The 50 small images for `list`

/// Writes `count` small, distinct single-layer images into one OCI layout at `dir`, tagged
/// `list-00`, `list-01`, …; returns the tags.
fn write_small_layouts(dir: &Path, count: usize) -> Result<Vec<String>> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let mut manifests = Vec::new();
    let mut tags = Vec::new();
    for i in 0..count {
        let tag = format!("list-{i:02}");
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], dir: bool| -> Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_mtime(SMALL_MTIME);
            h.set_uid(0);
            h.set_gid(0);
            if dir {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
            } else {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
            }
            tar.append_data(&mut h, path, data)?;
            Ok(())
        };
        add("etc/", b"", true)?;
        add(
            &format!("etc/{tag}.conf"),
            format!("name = {tag}\n").as_bytes(),
            false,
        )?;
        add("usr/", b"", true)?;
        add("usr/share/", b"", true)?;
        add(&format!("usr/share/{tag}/"), b"", true)?;
        let data: Vec<u8> = (0..4096u32)
            .map(|b| (b.wrapping_mul(31) ^ i as u32) as u8)
            .collect();
        add(&format!("usr/share/{tag}/data.bin"), &data, false)?;
        let tar_bytes = tar.into_inner()?;
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut gz, &tar_bytes)?;
        let layer = write_blob(
            dir,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            &gz.finish()?,
        )?;
        let config = json!({
            "created": SMALL_CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": [format!("/usr/bin/{tag}")]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": SMALL_CREATED, "created_by": format!("bench: {tag}")}],
        });
        let (_, manifest) = write_config_and_manifest(dir, &config, vec![layer.to_json()])?;
        let mut entry = manifest.to_json();
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        manifests.push(entry);
        tags.push(tag);
    }
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(tags)
}

// ---------------------------------------------------------------------------------------------
// The benchmark

/// Everything the pull part measured.
#[derive(Debug, Default)]
struct PullResults {
    /// skopeo, storage to storage.
    skopeo: ToolResult,
    /// skopeo again right after, source in the page cache.
    skopeo_warm: ToolResult,
    /// Ours, with the self-bind mount in place (re-exec under `unshare`).
    ours: ToolResult,
    /// Ours again right after, source in the page cache.
    ours_warm: ToolResult,
    /// `cp -al` of the layer trees.
    floor: ToolResult,
    /// The floor again right after, source in the page cache.
    floor_warm: ToolResult,
    /// Ours with the self-bind mount detached (no re-exec).
    ours_direct: ToolResult,
    /// Warm no-op pull (every layer already there) with the self-bind mount (re-exec), ms per
    /// run.
    noop_reexec_ms: Vec<f64>,
    /// The same without the self-bind mount (no re-exec), ms per run.
    noop_direct_ms: Vec<f64>,
}

/// What the `list` part measured.
#[derive(Debug, Default)]
struct ListResults {
    /// Our `list`, ms per run.
    ours_ms: Vec<f64>,
    /// `podman images`, ms per run.
    podman_ms: Vec<f64>,
    /// First failure, if any.
    error: Option<String>,
}

/// The paths and programs a run uses.
#[derive(Debug)]
struct Ctx {
    /// Our binary.
    ours: PathBuf,
    /// The stores.
    store_fs: StoreFs,
    /// Root and runroot of the default store.
    src: (PathBuf, PathBuf),
    /// `A/overlay`.
    src_overlay: PathBuf,
    /// For GNU time's output.
    scratch: PathBuf,
}

impl Ctx {
    /// Our pull command line into the sysroot `sysroot`.
    fn pull_args(&self, sysroot: &Path, image: &str) -> Vec<String> {
        vec![
            "--root".into(),
            self.src.0.display().to_string(),
            "--runroot".into(),
            self.src.1.display().to_string(),
            "--sysroot".into(),
            sysroot.display().to_string(),
            "pull-from-default-storage".into(),
            image.into(),
        ]
    }

    /// Removes a sysroot and podman's runroot for it.
    fn clean_sysroot(&self) -> Result<()> {
        self.store_fs.clean(names::SYSROOT)?;
        self.store_fs.clean(names::SYSROOT_RUN)
    }

    /// One timed run of our pull into a fresh sysroot, checked; `self_bind` says whether the
    /// default store's self-bind mount is expected (and so the re-exec), `cold` whether the page
    /// cache is dropped first.
    fn run_ours(
        &self,
        warned: &mut bool,
        samples: &[(String, PathBuf)],
        info: &FixtureInfo,
        self_bind: bool,
        cold: bool,
    ) -> Result<Result<Sample, String>> {
        self.clean_sysroot()?;
        if is_mount_point(&self.src_overlay) != self_bind {
            return Ok(Err(format!(
                "{} is{} a mount point, expected the opposite",
                self.src_overlay.display(),
                if self_bind { " not" } else { "" }
            )));
        }
        let sysroot = self.store_fs.dir(names::SYSROOT);
        if cold {
            settle_warm(warned, &[&self.ours, Path::new("unshare")]);
        } else {
            rustix::fs::sync();
        }
        let r = measure(
            &self.ours,
            &self.pull_args(&sysroot, IMAGE_NAME),
            &self.scratch,
        )?;
        let bootc_store = sysroot.join("ostree/bootc/storage");
        let r = r.and_then(|s| {
            check_store(&bootc_store, info)?;
            check_links(&self.src_overlay, &bootc_store.join("overlay"), samples)?;
            check_podman_lists(&bootc_store, &self.store_fs.dir(names::SYSROOT_RUN))?;
            Ok(s)
        });
        self.clean_sysroot()?;
        Ok(r)
    }

    /// One timed run of skopeo from the default store into a fresh store, checked; `cold`
    /// says whether the page cache is dropped first.
    fn run_skopeo(
        &self,
        warned: &mut bool,
        info: &FixtureInfo,
        cold: bool,
    ) -> Result<Result<Sample, String>> {
        self.store_fs.clean(names::SKOPEO)?;
        let (b_root, b_run) = self.store_fs.store(names::SKOPEO);
        if cold {
            settle(warned, Path::new("skopeo"));
        } else {
            rustix::fs::sync();
        }
        let args = vec![
            "copy".into(),
            "--insecure-policy".into(),
            storage_ref(&self.src.0, &self.src.1, IMAGE_NAME),
            storage_ref(&b_root, &b_run, IMAGE_NAME),
        ];
        let r = measure(Path::new("skopeo"), &args, &self.scratch)?
            .and_then(|s| check_store(&b_root, info).map(|()| s));
        self.store_fs.clean(names::SKOPEO)?;
        Ok(r)
    }

    /// One timed run of the floor, `cp -al --parents <id>/diff… F/` in `A/overlay`, checked;
    /// the self-bind mount must be detached (else `link()` fails with `EXDEV`).
    fn run_floor(
        &self,
        warned: &mut bool,
        layer_ids: &[String],
        samples: &[(String, PathBuf)],
        cold: bool,
    ) -> Result<Result<Sample, String>> {
        self.store_fs.clean(names::FLOOR)?;
        let floor = self.store_fs.dir(names::FLOOR);
        fs::create_dir_all(&floor)?;
        if is_mount_point(&self.src_overlay) {
            return Ok(Err(format!(
                "{} is still a mount point",
                self.src_overlay.display()
            )));
        }
        if cold {
            settle(warned, Path::new("cp"));
        } else {
            rustix::fs::sync();
        }
        let mut args: Vec<String> = vec!["-al".into(), "--parents".into()];
        args.extend(layer_ids.iter().map(|id| format!("{id}/diff")));
        args.push(floor.display().to_string());
        let r = measure_in(
            Path::new("cp"),
            &args,
            Some(&self.src_overlay),
            &self.scratch,
        )?
        .and_then(|s| check_links(&self.src_overlay, &floor, samples).map(|()| s));
        self.store_fs.clean(names::FLOOR)?;
        Ok(r)
    }
}

/// The pull part: seeds the default store, then runs skopeo, ours, the floor and ours without
/// re-exec `runs` times.
fn bench_pull(
    ctx: &Ctx,
    info: &FixtureInfo,
    layout: &Path,
    runs: usize,
    warned: &mut bool,
) -> Result<PullResults> {
    let (a_root, a_run) = &ctx.src;
    let layout_str = layout
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", layout.display()))?;
    let start = Instant::now();
    run_quiet(
        Path::new("skopeo"),
        &[
            "copy".into(),
            "-q".into(),
            "--insecure-policy".into(),
            format!("oci:{layout_str}:{TAG}"),
            storage_ref(a_root, a_run, IMAGE_NAME),
        ],
    )
    .map_err(|e| anyhow!("seeding the default store: {e}"))?;
    check_store(a_root, info).map_err(|e| anyhow!("the default store after seeding: {e}"))?;
    println!(
        "default store: {} seeded by skopeo in {:.1} s (not timed); {} is {}",
        a_root.display(),
        start.elapsed().as_secs_f64(),
        ctx.src_overlay.display(),
        if is_mount_point(&ctx.src_overlay) {
            "bind-mounted onto itself, as skopeo/podman leave it"
        } else {
            "NOT a self-bind mount (unexpected: ours will not re-exec)"
        }
    );
    let layer_ids = info.layer_ids();
    let samples = sample_files(&ctx.src_overlay, &layer_ids)?;
    let mut res = PullResults::default();

    for run in 1..=runs {
        ensure_self_bind(&ctx.src_overlay)?;

        // skopeo: default store → a fresh store B; cold, then warm.
        let r = ctx.run_skopeo(warned, info, true)?;
        report_run("skopeo", run, runs, &r);
        res.skopeo.record(r);
        let r = ctx.run_skopeo(warned, info, false)?;
        report_run("skopeo, warm", run, runs, &r);
        res.skopeo_warm.record(r);

        // Ours, as in real use: the self-bind mount is there, so it re-runs under unshare. Then
        // again with the source's inodes in the page cache: what is left is writing.
        ensure_self_bind(&ctx.src_overlay)?;
        let r = ctx.run_ours(warned, &samples, info, true, true)?;
        report_run("ours", run, runs, &r);
        res.ours.record(r);
        let r = ctx.run_ours(warned, &samples, info, true, false)?;
        report_run("ours, warm", run, runs, &r);
        res.ours_warm.record(r);

        // The floor: cp -al of the same trees, through the plain directory; cold, then warm.
        unmount_under(&ctx.src_overlay);
        let r = ctx.run_floor(warned, &layer_ids, &samples, true)?;
        report_run("floor (cp -al)", run, runs, &r);
        res.floor.record(r);
        let r = ctx.run_floor(warned, &layer_ids, &samples, false)?;
        report_run("floor, warm", run, runs, &r);
        res.floor_warm.record(r);

        // Ours without the self-bind mount: no re-exec.
        let r = ctx.run_ours(warned, &samples, info, false, true)?;
        report_run("ours, no re-exec", run, runs, &r);
        res.ours_direct.record(r);

        ensure_self_bind(&ctx.src_overlay)?;
    }

    // The re-exec's fixed cost, warm: a pull that finds every layer already there, alternately
    // with and without the self-bind mount.
    ctx.clean_sysroot()?;
    let sysroot = ctx.store_fs.dir(names::SYSROOT);
    let args = ctx.pull_args(&sysroot, IMAGE_NAME);
    run_quiet(&ctx.ours, &args).map_err(|e| anyhow!("filling {}: {e}", sysroot.display()))?;
    let noop = |out: &str| {
        if out.contains("already present") {
            Ok(())
        } else {
            Err(format!("expected a no-op pull, got {:?}", out.trim()))
        }
    };
    for i in 0..WARMUPS + LIST_RUNS {
        ensure_self_bind(&ctx.src_overlay)?;
        let with = time_once(&ctx.ours, &args, &noop).map_err(|e| anyhow!(e))?;
        unmount_under(&ctx.src_overlay);
        let without = time_once(&ctx.ours, &args, &noop).map_err(|e| anyhow!(e))?;
        if i >= WARMUPS {
            res.noop_reexec_ms.push(with);
            res.noop_direct_ms.push(without);
        }
    }
    ensure_self_bind(&ctx.src_overlay)?;
    ctx.clean_sysroot()?;
    Ok(res)
}

/// The `list` part: 50 small images into the default store and from there into a sysroot, then
/// both listings timed warm.
fn bench_list(ctx: &Ctx) -> Result<ListResults> {
    let (a_root, a_run) = &ctx.src;
    let layout = ctx.scratch.join("list-oci");
    let start = Instant::now();
    let tags = write_small_layouts(&layout, LIST_IMAGES)?;
    let layout_str = layout
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", layout.display()))?;
    let mut res = ListResults::default();
    ctx.store_fs.clean(names::LIST)?;
    ctx.store_fs.clean(names::LIST_RUN)?;
    let sysroot = ctx.store_fs.dir(names::LIST);
    for tag in &tags {
        let name = format!("localhost/{tag}:latest");
        let setup = run_quiet(
            Path::new("skopeo"),
            &[
                "copy".into(),
                "-q".into(),
                "--insecure-policy".into(),
                format!("oci:{layout_str}:{tag}"),
                storage_ref(a_root, a_run, &name),
            ],
        )
        .and_then(|_| run_quiet(&ctx.ours, &ctx.pull_args(&sysroot, &name)));
        if let Err(e) = setup {
            res.error = Some(format!("setting up {name}: {e}"));
            return Ok(res);
        }
    }
    println!(
        "list: {LIST_IMAGES} images copied into the default store and pulled into {} in {:.1} s (not timed)",
        sysroot.display(),
        start.elapsed().as_secs_f64()
    );
    let bootc_store = sysroot.join("ostree/bootc/storage");
    let ours_args: Vec<String> = vec![
        "--sysroot".into(),
        sysroot.display().to_string(),
        "list".into(),
        "--type".into(),
        "unified".into(),
        "--format".into(),
        "json".into(),
    ];
    let mut podman_args = overlay_store_args(&bootc_store, &ctx.store_fs.dir(names::LIST_RUN));
    podman_args.extend(["images".into(), "--format".into(), "json".into()]);
    let count = |out: &str, what: &str| -> Result<(), String> {
        let v: Value = serde_json::from_str(out).map_err(|e| format!("{what}: {e}"))?;
        let n = v.as_array().map_or(0, Vec::len);
        if n == LIST_IMAGES {
            Ok(())
        } else {
            Err(format!("{what} lists {n} images, expected {LIST_IMAGES}"))
        }
    };
    let check_ours = |out: &str| count(out, "bootc-image list");
    let check_podman = |out: &str| count(out, "podman images");
    // Alternate the two, so that background noise hits both alike.
    for i in 0..WARMUPS + LIST_RUNS {
        let r = time_once(&ctx.ours, &ours_args, &check_ours).and_then(|ours| {
            time_once(Path::new("podman"), &podman_args, &check_podman).map(|podman| (ours, podman))
        });
        match r {
            Ok((o, p)) => {
                if i >= WARMUPS {
                    res.ours_ms.push(o);
                    res.podman_ms.push(p);
                }
            }
            Err(e) => {
                res.error = Some(e);
                break;
            }
        }
    }
    Ok(res)
}

/// A ratio row's status.
fn status(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "ok",
        Some(false) => "**missed**",
        None => "—",
    }
}

/// Renders the results as a Markdown table (also readable on a terminal).
fn render_table(p: &PullResults, l: &ListResults, info: &FixtureInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| measure | median | CPU s | peak RSS MB | target | status |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    let tool_row = |s: &mut String, what: &str, t: &ToolResult| {
        let status = t
            .error
            .as_deref()
            .map_or(String::new(), |e| format!("FAILED: {e}"));
        let _ = writeln!(
            s,
            "| {what} | {} s | {} | {} | | {status} |",
            fmt_opt(t.secs(), 3),
            fmt_opt(t.cpu(), 2),
            fmt_opt(t.rss(), 1)
        );
    };
    let layers = info.diff_ids.len();
    tool_row(
        &mut s,
        "skopeo copy containers-storage: → containers-storage:",
        &p.skopeo,
    );
    tool_row(&mut s, "**ours**: pull-from-default-storage", &p.ours);
    tool_row(
        &mut s,
        &format!("floor: `cp -al` of the {layers} layer trees"),
        &p.floor,
    );
    let (ours, floor, skopeo) = (p.ours.secs(), p.floor.secs(), p.skopeo.secs());
    let floor_ratio = ours.zip(floor).map(|(o, f)| o / f);
    let _ = writeln!(
        s,
        "| ours / floor | {} | | | ≤ {FLOOR_RATIO_TARGET}× | {} |",
        floor_ratio.map_or_else(|| "—".to_owned(), |x| format!("{x:.2}×")),
        status(floor_ratio.map(|x| x <= FLOOR_RATIO_TARGET))
    );
    let skopeo_ratio = skopeo.zip(ours).map(|(k, o)| k / o);
    let _ = writeln!(
        s,
        "| skopeo / ours | {} | | | ≥ {SKOPEO_RATIO_TARGET}× | {} |",
        skopeo_ratio.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}×")),
        status(skopeo_ratio.map(|x| x >= SKOPEO_RATIO_TARGET))
    );
    tool_row(
        &mut s,
        "ours with the self-bind mount detached (no re-exec)",
        &p.ours_direct,
    );
    tool_row(&mut s, "skopeo, warm page cache", &p.skopeo_warm);
    tool_row(&mut s, "ours, warm page cache", &p.ours_warm);
    tool_row(&mut s, "floor, warm page cache", &p.floor_warm);
    let warm_ratio = |a: &ToolResult, b: &ToolResult| {
        a.secs()
            .zip(b.secs())
            .map_or_else(|| "—".to_owned(), |(a, b)| format!("{:.2}×", a / b))
    };
    let _ = writeln!(
        s,
        "| warm: ours / floor; skopeo / ours | {}; {} | | | | |",
        warm_ratio(&p.ours_warm, &p.floor_warm),
        warm_ratio(&p.skopeo_warm, &p.ours_warm)
    );
    let warm = |v: &[f64]| (!v.is_empty()).then(|| median(&mut v.to_vec()));
    let (with, without) = (warm(&p.noop_reexec_ms), warm(&p.noop_direct_ms));
    let _ = writeln!(
        s,
        "| re-exec cost, warm: no-op pull with − without the self-bind mount ({} − {} ms) | {} ms | | | | |",
        fmt_opt(with, 2),
        fmt_opt(without, 2),
        fmt_opt(with.zip(without).map(|(w, o)| w - o), 2)
    );
    let list_status = l
        .error
        .as_deref()
        .map_or(String::new(), |e| format!("FAILED: {e}"));
    let (ours_ms, podman_ms) = (warm(&l.ours_ms), warm(&l.podman_ms));
    let _ = writeln!(
        s,
        "| **ours**: `list --type unified --format json`, {LIST_IMAGES} images, warm | {} ms | | | ≤ {LIST_TARGET_MS} ms | {} |",
        fmt_opt(ours_ms, 2),
        if l.error.is_some() {
            list_status.as_str()
        } else {
            status(ours_ms.map(|m| m <= LIST_TARGET_MS))
        }
    );
    let _ = writeln!(
        s,
        "| `podman images --format json`, same store, warm | {} ms | | | | |",
        fmt_opt(podman_ms, 1)
    );
    let list_ratio = podman_ms.zip(ours_ms).map(|(p, o)| p / o);
    let _ = writeln!(
        s,
        "| podman / ours (list) | {} | | | ≥ {LIST_RATIO_TARGET}× | {} |",
        list_ratio.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}×")),
        status(list_ratio.map(|x| x >= LIST_RATIO_TARGET))
    );
    s
}

/// Runs the whole benchmark; `Ok(false)` when some measurement or check failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let small = small_from_env();
    let runs = runs_from_env()?;
    if !rustix::process::geteuid().is_root() {
        bail!("this bench needs root: loop mount, mount namespaces, dropping caches");
    }
    let skopeo = version_of("skopeo").ok_or_else(|| anyhow!("skopeo not found"))?;
    let podman = version_of("podman").ok_or_else(|| anyhow!("podman not found"))?;
    version_of("unshare").ok_or_else(|| anyhow!("unshare (util-linux) not found"))?;
    version_of("cp").ok_or_else(|| anyhow!("cp not found"))?;

    // 1. The fixture.
    let (key, fixtures_dir) = ensure_fixtures(&target_dir, small)?;
    let layout = fixtures_dir.join(FIXTURE);
    let info = FixtureInfo::load(&layout)?;

    // 2. Store filesystem; bail out rather than measure hardlinks across filesystems.
    let store_fs = StoreFs::setup(&target_dir, &STORE_FS)?;
    store_fs.announce();
    if store_fs.fallback_reason.is_some() {
        bail!("no loop-mounted ext4 for the stores; not measuring");
    }
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let src = store_fs.store(names::SOURCE);
    let src_overlay = src.0.join("overlay");
    let ctx = Ctx {
        ours,
        store_fs,
        src,
        src_overlay,
        scratch,
    };

    // 3–4. Pull.
    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let pull = bench_pull(&ctx, &info, &layout, runs, &mut warned)?;

    // 5. List.
    let list = bench_list(&ctx)?;
    let load_end = load_average();
    drop(ctx);

    // 6. Report.
    let table = render_table(&pull, &list, &info);
    println!();
    println!("{table}");
    let tree = fs::read_to_string(fixtures_dir.join("tree.json")).unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# pull_from_default_storage bench results\n");
    let _ = writeln!(
        md,
        "fixture `{key}/{FIXTURE}` ({} layers, {:.0} MB of layer tars), {runs} run(s) (median), cold page cache for the pulls, warm for `list` (median of {LIST_RUNS}); {skopeo}; {podman}\n",
        info.diff_ids.len(),
        info.tar_bytes as f64 / 1e6
    );
    let _ = writeln!(md, "{table}");
    let _ = writeln!(
        md,
        "load average (1/5/15 min) at start: {load_start}, at end: {load_end}\n"
    );
    let _ = writeln!(
        md,
        "tree: `{}`",
        tree.split_whitespace().collect::<String>()
    );
    let results = target_dir.join("bench-results-pull.md");
    fs::write(&results, md)?;
    println!("written to {}", results.display());
    let failed = [
        &pull.skopeo,
        &pull.skopeo_warm,
        &pull.ours,
        &pull.ours_warm,
        &pull.floor,
        &pull.floor_warm,
        &pull.ours_direct,
    ]
    .iter()
    .any(|t| t.error.is_some())
        || list.error.is_some();
    Ok(!failed)
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
