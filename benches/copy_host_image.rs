//! `cargo bench --bench copy_host_image`: times `bootc-image copy-to-storage` of an OSTree host
//! image (stored in a sysroot's repository by ostree-ext, deployed with `ostree admin deploy`)
//! against upstream bootc's way of doing it and against a hardlink checkout, the floor.
//!
//! What it does, in order:
//! 1. reuses the generated bench tree of `copy_to_storage` (the single layer of the cached
//!    `none-1` layout, generated if missing);
//! 2. attaches a journaled ext4 on a loop device (`target/bench-fs-host.img`, kept between runs,
//!    mounted on `/tmp/bb-host`): the sysroot, every store, the checkouts and upstream's temporary
//!    directory live on it, so hardlinks work;
//! 3. builds the sysroot there once (cached by a version key): the tree made bootable (kernel
//!    placeholder, `/usr/etc`, empty `/var`), committed and encapsulated as a chunked image by
//!    `tests/ostree-fixture` (`build --chunks 40`), imported and deployed (`deploy`) under the
//!    name `localhost/bench-host:latest`. The tool is built into `target/ostree-fixture/`, its own
//!    target directory, so that nothing else building or cleaning the tool's tree interferes;
//! 4. for each run, with `sync` + dropped page cache before each timed command:
//!    (a) ours: `bootc-image --sysroot S --root R --runroot RR copy-to-storage --source
//!    docker://localhost/bench-host:latest` into a fresh store, once as it is (the image's own
//!    DiffIDs, checked while writing) and once with `--verify` (a checksum of every object and a
//!    DiffID pass over the content first); checks that files were hardlinked and that
//!    `podman images` lists the image; after the default run, (d) the layout floor: `cp -al` of
//!    the layer trees it wrote;
//!    (b) upstream: `ostree-fixture export --dest containers-storage:[overlay@R+RR]NAME`, i.e.
//!    ostree-ext's `container::store::export`, which writes a temporary OCI layout under
//!    `/var/tmp` and runs `skopeo copy` from it. It runs in a private mount namespace where
//!    `/var/tmp` (which ostree-ext hardcodes) is a bind mount of a directory on the bench
//!    filesystem, with `TMPDIR` there too; checks that `podman images` lists the image and
//!    that its layers' DiffIDs are ours;
//!    (c) floor: `ostree checkout -H --repo=S/ostree/repo BASE_COMMIT DEST`;
//!    each under GNU `time` (peak RSS, CPU);
//! 5. a breakdown of our time, in process (one run each, wall clock and CPU): libostree's fsck and
//!    our checksum of every content object, and the plan + DiffID pass, each cold then warm; `HostImage::open`, fast and
//!    verifying (cold), each followed by the writing pass as in the command; and the first half
//!    of upstream's path alone (`export --oci`: the temporary copy, cold);
//! 6. prints the table (medians over `BENCH_RUNS`, default 1) with the targets, and writes it as
//!    Markdown to `target/bench-results-host.md`.
//!
//! Environment: `BENCH_RUNS=n`, `BENCH_SMALL=1` (the ~30 MB tree), `BENCH_BREAKDOWN=0` (skip
//! step 5). Needs root (loop mount, `ostree admin deploy`, the `/var/tmp` bind mount), `ostree`,
//! `skopeo`, `podman`, `unshare`, GNU `time`.

// Benchmarks and tests report on the terminal and stop on the first broken fixture.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "common/fixtures.rs"]
#[allow(
    dead_code,
    reason = "shared with copy_to_storage; this bench uses a part"
)]
mod fixtures;
#[path = "common/host_fixture.rs"]
mod host_fixture;
#[path = "common/host_fs.rs"]
mod host_fs;
#[path = "common/measure.rs"]
#[allow(
    dead_code,
    reason = "shared with copy_to_storage; this bench uses a part"
)]
mod measure;
#[path = "common/storefs.rs"]
#[allow(
    dead_code,
    reason = "shared with copy_to_storage; this bench uses its mount helpers"
)]
mod storefs;

use anyhow::{Context, Result, bail, ensure};
use bootc_image::source::ostree_host::checksum::verify_objects;
use bootc_image::source::ostree_host::meta_objects::MetaObjects;
use bootc_image::source::ostree_host::plan::commit_objects;
use bootc_image::source::ostree_host::repo::commit_root;
use bootc_image::source::ostree_host::{HostImage, HostLayers, LinkCounts};
use bootc_image::store::{Store, StoreConfig};
use host_fixture::{CHUNKS, HOST_IMAGE, HostFixture, build_fixture_tool, ensure_host_fixture};
use host_fs::HostFs;
use measure::{
    RSS_TARGET_MB, Sample, ToolResult, fmt_opt, load_average, measure_capture, overlay_store_args,
    runs_from_env, settle_warm, small_from_env, version_of,
};
use ostree::gio;
use serde_json::Value;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// Target: ours ≤ this × the hardlink checkout.
const FLOOR_TARGET: f64 = 2.0;
/// Target: upstream ≥ this × ours.
const UPSTREAM_TARGET: f64 = 10.0;
/// The loop-mounted ext4 (short mount point: podman wants runroots < 50 characters).
const MOUNT_DIR: &str = "/tmp/bb-host";
/// Its image file in the target directory, and its size (sparse).
const FS_IMAGE: (&str, &str) = ("bench-fs-host.img", "20G");

/// `N` in our "… N files hardlinked from the repository …" line.
fn hardlinked(stdout: &str) -> Option<u64> {
    let (before, _) = stdout.split_once(" files hardlinked")?;
    before.rsplit([' ', ';', '(']).next()?.parse().ok()
}

/// The layers' DiffIDs recorded in a store (`overlay-layers/layers.json`), sorted.
fn store_diff_ids(root: &Path) -> Result<Vec<String>, String> {
    let path = root.join("overlay-layers/layers.json");
    let v: Value = fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("cannot read {}", path.display()))?;
    let mut ids: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["diff-digest"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Whether `podman images` on the store lists [`HOST_IMAGE`].
fn podman_lists(root: &Path, runroot: &Path) -> Result<(), String> {
    let out = Command::new("podman")
        .arg("--root")
        .arg(root)
        .arg("--runroot")
        .arg(runroot)
        .args([
            "--storage-driver",
            "overlay",
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}}",
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running podman: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "podman images failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if stdout.lines().any(|l| l.trim() == HOST_IMAGE) {
        Ok(())
    } else {
        Err(format!(
            "podman images does not list {HOST_IMAGE}: {:?}",
            stdout.trim()
        ))
    }
}

/// Prints one run's outcome.
fn report_run(what: &str, run: usize, runs: usize, r: &Result<Sample, String>, extra: &str) {
    measure::report_run(&format!("{what:9}"), run, runs, r, 2, extra);
}

/// Everything the timed runs need.
#[derive(Debug)]
struct Setup {
    /// Our binary.
    ours: PathBuf,
    /// The fixture tool.
    tool: PathBuf,
    /// The bench filesystem.
    fs: HostFs,
    /// The sysroot.
    fx: HostFixture,
    /// Where GNU time writes its report.
    scratch: PathBuf,
}

/// The results of one tool over all runs.
#[derive(Debug, Default)]
struct Results {
    /// Ours (default: the image's own DiffIDs, checked while writing).
    ours: ToolResult,
    /// Ours with `--verify` (object fsck and DiffID pass first).
    ours_verify: ToolResult,
    /// Files we hardlinked (last run).
    linked: Option<u64>,
    /// Upstream.
    upstream: ToolResult,
    /// The hardlink checkout.
    floor: ToolResult,
    /// `cp -al` of the layer trees we wrote: the directories and links of ostree-ext's layout alone.
    layout_floor: ToolResult,
}

/// (a) ours, into a fresh store (with `--verify` when `verify`); returns the sorted DiffIDs it
/// stored.
fn run_ours(
    s: &Setup,
    res: &mut Results,
    warned: &mut bool,
    verify: bool,
    run: usize,
    runs: usize,
) -> Result<Option<Vec<String>>> {
    s.fs.clean("ou")?;
    let (root, runroot) = s.fs.store("ou");
    let mut args: Vec<String> = vec!["--sysroot".into(), s.fx.sysroot.display().to_string()];
    args.extend(overlay_store_args(&root, &runroot));
    args.extend([
        "copy-to-storage".into(),
        "--source".into(),
        format!("docker://{HOST_IMAGE}"),
        "--target".into(),
        HOST_IMAGE.into(),
    ]);
    if verify {
        args.push("--verify".into());
    }
    // `bootc-image` runs `bootc-image-ostree` (beside it) for host images: warm both.
    let helper = s.ours.with_file_name("bootc-image-ostree");
    settle_warm(warned, &[&s.ours, &helper]);
    let mut diff_ids = None;
    let r = measure_capture(&s.ours, &args, &s.scratch)?.and_then(|(sample, stdout)| {
        let linked = hardlinked(&stdout)
            .ok_or_else(|| format!("no hardlink count in the output: {:?}", stdout.trim()))?;
        if linked == 0 {
            return Err(format!("no file was hardlinked: {}", stdout.trim()));
        }
        res.linked = Some(linked);
        diff_ids = Some(store_diff_ids(&root)?);
        podman_lists(&root, &runroot)?;
        Ok(sample)
    });
    let extra = res
        .linked
        .map(|n| format!(", {n} files hardlinked"))
        .unwrap_or_default();
    let ok = r.is_ok();
    if verify {
        report_run("ours -v", run, runs, &r, &extra);
        res.ours_verify.record(r);
    } else {
        report_run("ours", run, runs, &r, &extra);
        res.ours.record(r);
        if ok {
            run_layout_floor(s, res, warned, &root, run, runs)?;
        }
    }
    s.fs.clean("ou")?;
    Ok(diff_ids)
}

/// (b) upstream: ostree-ext's export to containers-storage (temporary OCI layout + skopeo), with
/// `/var/tmp` and `TMPDIR` on the bench filesystem.
fn run_upstream(
    s: &Setup,
    res: &mut Results,
    warned: &mut bool,
    ours_ids: Option<&[String]>,
    run: usize,
    runs: usize,
) -> Result<()> {
    s.fs.clean("up")?;
    let (root, runroot) = s.fs.store("up");
    let vartmp = s.fs.dir("up/vartmp");
    fs::create_dir_all(&vartmp)?;
    let args: Vec<String> = vec![
        "-m".into(),
        "--propagation".into(),
        "private".into(),
        "sh".into(),
        "-c".into(),
        r#"mount --bind "$1" /var/tmp && export TMPDIR="$1" && shift && exec "$@""#.into(),
        "sh".into(),
        vartmp.display().to_string(),
        s.tool.display().to_string(),
        "export".into(),
        "--sysroot".into(),
        s.fx.sysroot.display().to_string(),
        "--imgref".into(),
        format!("ostree-unverified-registry:{HOST_IMAGE}"),
        "--dest".into(),
        format!(
            "containers-storage:[overlay@{}+{}]{HOST_IMAGE}",
            root.display(),
            runroot.display()
        ),
    ];
    settle_warm(warned, &[&s.tool, Path::new("skopeo")]);
    let r = measure_capture(Path::new("unshare"), &args, &s.scratch)?.and_then(|(sample, _)| {
        podman_lists(&root, &runroot)?;
        let ids = store_diff_ids(&root)?;
        if let Some(o) = ours_ids
            && o != ids.as_slice()
        {
            return Err(format!(
                "its layers differ from ours: {} DiffIDs vs our {}",
                ids.len(),
                o.len()
            ));
        }
        Ok(sample)
    });
    let leftovers = fs::read_dir(&vartmp).map(|d| d.count()).unwrap_or(0);
    let extra = if leftovers > 0 {
        format!(", {leftovers} entries left in its /var/tmp")
    } else if ours_ids.is_some() {
        ", same layer DiffIDs as ours".to_owned()
    } else {
        String::new()
    };
    report_run("upstream", run, runs, &r, &extra);
    res.upstream.record(r);
    s.fs.clean("up")?;
    Ok(())
}

/// (d) the layout floor: `cp -al` of every layer directory of the store `root` we just wrote —
/// the same directories and hardlinks, without reading content, hashing or tar-splits. ostree-ext's
/// layout has many more entries than a checkout (each layer repeats the repository structure and
/// its 256 object directories, and every file is an object plus a hardlink), so this is the least
/// any writer of that layout spends.
fn run_layout_floor(
    s: &Setup,
    res: &mut Results,
    warned: &mut bool,
    root: &Path,
    run: usize,
    runs: usize,
) -> Result<()> {
    s.fs.clean("lf")?;
    // podman leaves the store's `overlay` bind-mounted onto itself, and links do not cross mounts.
    host_fs::unmount_below(root);
    let dest = s.fs.dir("lf");
    fs::create_dir_all(&dest)?;
    // One shell runs one `cp -al` per layer (each layer tree goes to its own directory).
    let mut script = String::from("set -e\n");
    let mut n = 0;
    for e in fs::read_dir(root.join("overlay"))? {
        let e = e?;
        let diff = e.path().join("diff");
        if diff.is_dir() {
            let target = dest.join(e.file_name());
            fs::create_dir_all(&target)?;
            script.push_str(&format!(
                "cp -al '{}' '{}/'\n",
                diff.display(),
                target.display()
            ));
            n += 1;
        }
    }
    settle_warm(warned, &[Path::new("cp")]);
    let sh_args = vec!["-c".to_string(), script];
    let r = measure_capture(Path::new("sh"), &sh_args, &s.scratch)?.map(|(sample, _)| sample);
    report_run("layout floor", run, runs, &r, &format!(", {n} layer trees"));
    res.layout_floor.record(r);
    s.fs.clean("lf")?;
    Ok(())
}

/// (c) the floor: a hardlink checkout of the image's ostree commit.
fn run_floor(
    s: &Setup,
    res: &mut Results,
    warned: &mut bool,
    run: usize,
    runs: usize,
) -> Result<()> {
    s.fs.clean("co")?;
    fs::create_dir_all(s.fs.dir("co"))?;
    let dest = s.fs.dir("co/tree");
    let args: Vec<String> = vec![
        "checkout".into(),
        "-H".into(),
        format!("--repo={}", s.fx.repo().display()),
        s.fx.base_commit.clone(),
        dest.display().to_string(),
    ];
    settle_warm(warned, &[Path::new("ostree")]);
    let r = measure_capture(Path::new("ostree"), &args, &s.scratch)?.map(|(sample, _)| sample);
    report_run("floor", run, runs, &r, "");
    res.floor.record(r);
    s.fs.clean("co")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Breakdown of our time

/// One phase of the breakdown.
#[derive(Debug)]
struct Phase {
    /// What was timed.
    name: String,
    /// Wall-clock seconds, or why it failed.
    secs: Result<f64, String>,
    /// CPU seconds (user + system, all threads), when known.
    cpu: Option<f64>,
}

/// This process's CPU time so far (user + system, all threads), from `/proc/self/stat`.
fn self_cpu() -> Option<f64> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Fields after the command name start at field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(ticks / 100.0)
}

/// Times `f` in process, after a cold-cache settle when `cold`; records it as `name`, marked
/// "(cold)" or "(warm)" when `mark`.
fn timed<T>(
    phases: &mut Vec<Phase>,
    warned: &mut bool,
    name: &str,
    cold: bool,
    mark: bool,
    f: impl FnOnce() -> Result<T>,
) -> Option<T> {
    if cold {
        settle_warm(warned, &[]);
    }
    let cpu0 = self_cpu();
    let start = Instant::now();
    let r = f();
    let secs = start.elapsed().as_secs_f64();
    let cpu = self_cpu().zip(cpu0).map(|(b, a)| b - a);
    let name = match (mark, cold) {
        (false, _) => name.to_owned(),
        (true, true) => format!("{name} (cold)"),
        (true, false) => format!("{name} (warm)"),
    };
    let (secs, v) = match r {
        Ok(v) => (Ok(secs), Some(v)),
        Err(e) => (Err(format!("{e:#}")), None),
    };
    println!(
        "breakdown: {name}: {}",
        match &secs {
            Ok(x) => format!("{x:.2} s, CPU {} s", fmt_opt(cpu, 2)),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    phases.push(Phase { name, secs, cpu });
    v
}

fn open_repo(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(repo)
}

/// The fsck `HostImage::open` starts with: every content object of the commit, checksummed.
fn phase_fsck(fx: &HostFixture, ours: bool) -> Result<usize> {
    let repo = open_repo(&fx.repo())?;
    let (tree, dirmeta) = commit_root(&repo, &fx.base_commit)?;
    let meta = MetaObjects::load(&repo, &fx.repo(), &tree, &dirmeta)?;
    let objects = commit_objects(&repo, &fx.repo(), &meta, &fx.base_commit)?;
    if ours {
        verify_objects(&repo, &fx.repo(), objects.keys())?;
    } else {
        for csum in objects.keys() {
            repo.fsck_object(ostree::ObjectType::File, csum, gio::Cancellable::NONE)
                .with_context(|| format!("fsck of {csum}"))?;
        }
    }
    Ok(objects.len())
}

/// The DiffID first pass of `HostImage::open` with `verify`: the image planned (fast open), then
/// every ostree layer's tar stream hashed from content. Returns the DiffIDs.
fn phase_diff_ids(fx: &HostFixture) -> Result<Vec<String>> {
    let image = HostImage::open(
        &fx.sysroot,
        Some(&format!("docker://{HOST_IMAGE}")),
        vec![],
        false,
    )?;
    let ids = image.ostree_diff_ids_from_content()?;
    ensure!(
        image.layer_count() == ids.len(),
        "the fixture image has derived layers; this breakdown expects none"
    );
    Ok(ids.iter().map(ToString::to_string).collect())
}

/// Our writing pass: `HostImage`'s layers into a fresh store `name`; returns the files hardlinked.
fn write_pass(s: &Setup, image: &HostImage, name: &str) -> Result<u64> {
    s.fs.clean(name)?;
    let (root, runroot) = s.fs.store(name);
    let store = Store::open(StoreConfig::resolve(
        Some(&root),
        Some(&runroot),
        Some("overlay"),
    )?)?;
    let producer = HostLayers {
        image,
        counts: LinkCounts::default(),
    };
    store.import_with(&image.input, &producer, &|_| {})?;
    Ok(producer
        .counts
        .linked
        .load(std::sync::atomic::Ordering::Relaxed))
}

/// Step 5: where our time goes, and the first half of upstream's.
fn breakdown(s: &Setup, warned: &mut bool) -> Result<Vec<Phase>> {
    let mut phases = Vec::new();
    let p = &mut phases;
    for (ours, name) in [
        (false, "libostree's fsck_object of every content object"),
        (true, "our checksum of every content object (as --verify)"),
    ] {
        for cold in [true, false] {
            let n = timed(p, warned, name, cold, true, || phase_fsck(&s.fx, ours));
            if let (true, Some(n)) = (cold, n) {
                println!("breakdown: {n} content objects checked");
            }
        }
    }
    let mut ids = None;
    for cold in [true, false] {
        ids = timed(
            p,
            warned,
            "plan + DiffID pass from content",
            cold,
            true,
            || phase_diff_ids(&s.fx),
        );
    }
    let source = format!("docker://{HOST_IMAGE}");
    let open = |verify: bool| {
        Ok(HostImage::open(
            &s.fx.sysroot,
            Some(&source),
            vec![HOST_IMAGE.to_owned()],
            verify,
        )?)
    };
    for verify in [false, true] {
        let what = if verify {
            "HostImage::open, verify (fsck + DiffID pass + plan)"
        } else {
            "HostImage::open, fast (plan; DiffIDs from the config)"
        };
        let image = timed(p, warned, what, true, true, || open(verify));
        if let (Some(ids), Some(image)) = (&ids, &image) {
            let theirs: Vec<String> = image
                .input
                .layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect();
            println!(
                "breakdown: DiffIDs of open({verify}) {} those computed from content",
                if *ids == theirs {
                    "equal"
                } else {
                    "DIFFER from"
                }
            );
        }
        if let Some(image) = &image {
            // Right after open, as in the command.
            let what = if verify {
                "writing pass, right after the verify open (as in `--verify`)"
            } else {
                "writing pass, right after the fast open (as in the default command)"
            };
            let linked = timed(p, warned, what, false, false, || write_pass(s, image, "ph"));
            if let Some(n) = linked {
                println!("breakdown: the writing pass hardlinked {n} files");
            }
            s.fs.clean("ph")?;
        }
    }
    // Upstream's first half alone: the export to an OCI layout with skip_compression, as
    // ostree-ext makes its temporary copy.
    s.fs.clean("ux")?;
    let oci = s.fs.dir("ux/oci");
    let args: Vec<String> = vec![
        "export".into(),
        "--sysroot".into(),
        s.fx.sysroot.display().to_string(),
        "--imgref".into(),
        format!("ostree-unverified-registry:{HOST_IMAGE}"),
        "--oci".into(),
        oci.display().to_string(),
        "--tag".into(),
        "bench".into(),
    ];
    settle_warm(warned, &[&s.tool]);
    let r = measure_capture(&s.tool, &args, &s.scratch)?;
    let blob_mb = dir_bytes(&oci.join("blobs/sha256")) as f64 / 1e6;
    let cpu = r.as_ref().ok().and_then(|(sample, _)| sample.cpu_secs);
    phases.push(Phase {
        name: "upstream's first half alone: `ostree-fixture export --oci` (separate process, cold)"
            .to_owned(),
        secs: r.map(|(sample, _)| {
            println!("breakdown: upstream's temporary OCI layout holds {blob_mb:.0} MB of blobs");
            sample.secs
        }),
        cpu,
    });
    s.fs.clean("ux")?;
    Ok(phases)
}

/// Total size of the files in `dir` (not recursive).
fn dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// Report

/// A ratio, formatted.
fn ratio(x: Option<f64>) -> String {
    x.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}×"))
}

/// The results as Markdown.
fn render(res: &Results, phases: &[Phase]) -> String {
    let (ours, up, floor) = (res.ours.secs(), res.upstream.secs(), res.floor.secs());
    let mut s = String::new();
    let _ = writeln!(s, "| command | s | CPU s | peak RSS MB |");
    let _ = writeln!(s, "|---|---:|---:|---:|");
    for (name, r) in [
        ("ours: `bootc-image copy-to-storage`", &res.ours),
        ("ours with `--verify`", &res.ours_verify),
        (
            "upstream: ostree-ext export → temp OCI → skopeo",
            &res.upstream,
        ),
        ("floor: `ostree checkout -H`", &res.floor),
        (
            "layout floor: `cp -al` of the layer trees we wrote",
            &res.layout_floor,
        ),
    ] {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} |",
            fmt_opt(r.secs(), 2),
            fmt_opt(r.cpu(), 2),
            fmt_opt(r.rss(), 1)
        );
    }
    let of = ours.zip(floor).map(|(a, b)| a / b);
    let uo = up.zip(ours).map(|(a, b)| a / b);
    let rss = res.ours.rss();
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "—",
    };
    let _ = writeln!(s);
    let _ = writeln!(s, "| ratio | value | target | |");
    let _ = writeln!(s, "|---|---:|---:|---|");
    let _ = writeln!(
        s,
        "| ours / floor | {} | ≤ {FLOOR_TARGET:.0}× | {} |",
        ratio(of),
        verdict(of.map(|x| x <= FLOOR_TARGET))
    );
    let _ = writeln!(
        s,
        "| ours / layout floor | {} | (no target) | |",
        ratio(ours.zip(res.layout_floor.secs()).map(|(a, b)| a / b))
    );
    let _ = writeln!(
        s,
        "| upstream / ours | {} | ≥ {UPSTREAM_TARGET:.0}× | {} |",
        ratio(uo),
        verdict(uo.map(|x| x >= UPSTREAM_TARGET))
    );
    let _ = writeln!(
        s,
        "| our peak RSS | {} MB | ≤ {RSS_TARGET_MB:.0} MB | {} |",
        fmt_opt(rss, 1),
        verdict(rss.map(|x| x <= RSS_TARGET_MB))
    );
    if !phases.is_empty() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| breakdown (one run each, in process unless noted) | s | CPU s |"
        );
        let _ = writeln!(s, "|---|---:|---:|");
        for p in phases {
            let v = match &p.secs {
                Ok(x) => format!("{x:.2}"),
                Err(e) => format!("failed: {e}"),
            };
            let _ = writeln!(s, "| {} | {v} | {} |", p.name, fmt_opt(p.cpu, 2));
        }
    }
    s
}

/// `libostree 2022.7`, from `ostree --version`.
fn ostree_version() -> String {
    let out = Command::new("ostree").arg("--version").output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .map(|v| format!("libostree {}", v.trim().trim_matches('\'')))
        .unwrap_or_else(|| "libostree ?".to_owned())
}

/// Runs the whole benchmark; `Ok(false)` when some measurement failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let manifest_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let target_dir = measure::target_dir_of(&ours)?;
    let small = small_from_env();
    let runs = runs_from_env()?;
    let do_breakdown = std::env::var("BENCH_BREAKDOWN").map_or(true, |v| v != "0");
    for tool in ["ostree", "skopeo", "podman", "unshare", "/usr/bin/time"] {
        if version_of(tool).is_none() {
            bail!("{tool} is needed and does not run");
        }
    }

    // 1.–3. Fixtures.
    let (tree_key, fixtures_dir) = fixtures::ensure_fixtures(&target_dir, small)?;
    let tool = build_fixture_tool(&manifest_dir, &target_dir)?;
    let fs_ = HostFs::setup(&target_dir, FS_IMAGE.0, FS_IMAGE.1, MOUNT_DIR)?;
    println!(
        "bench fs: journaled ext4 on {} mounted at {} ({})",
        fs_.dev,
        fs_.base.display(),
        if fs_.fresh {
            "new"
        } else {
            "kept from an earlier run"
        }
    );
    let fx = ensure_host_fixture(&fs_.base, &tool, &fixtures_dir.join("none-1"), &tree_key)?;
    println!(
        "sysroot {}: {HOST_IMAGE}, {} layers (--chunks {CHUNKS}), base commit {}",
        fx.sysroot.display(),
        fx.layers,
        fx.base_commit
    );
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let setup = Setup {
        ours,
        tool,
        fs: fs_,
        fx,
        scratch,
    };

    // 4. Timed runs.
    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let mut res = Results::default();
    for run in 1..=runs {
        let ids = run_ours(&setup, &mut res, &mut warned, false, run, runs)?;
        let ids_verify = run_ours(&setup, &mut res, &mut warned, true, run, runs)?;
        if ids.is_some() && ids_verify.is_some() && ids != ids_verify {
            println!("WARNING: ours and ours --verify stored different layer DiffIDs");
        }
        run_upstream(&setup, &mut res, &mut warned, ids.as_deref(), run, runs)?;
        run_floor(&setup, &mut res, &mut warned, run, runs)?;
    }

    // 5. Breakdown.
    let phases = if do_breakdown {
        breakdown(&setup, &mut warned)?
    } else {
        Vec::new()
    };
    let load_end = load_average();

    // 6. Report.
    let table = render(&res, &phases);
    println!();
    println!("{table}");
    let mut md = String::new();
    let _ = writeln!(md, "# copy_host_image bench results\n");
    let _ = writeln!(
        md,
        "tree `{tree_key}`, sysroot `{}` ({} layers), {runs} run(s) (median), cold page cache; {}; {}; {}\n",
        setup.fx.key,
        setup.fx.layers,
        version_of("skopeo").unwrap_or_default(),
        version_of("podman").unwrap_or_default(),
        ostree_version(),
    );
    let _ = writeln!(md, "{table}");
    if let Some(n) = res.linked {
        let _ = writeln!(md, "ours hardlinked {n} files from the repository.\n");
    }
    let _ = writeln!(
        md,
        "load average (1/5/15 min) at start: {load_start}, at end: {load_end}"
    );
    let results = target_dir.join("bench-results-host.md");
    fs::write(&results, md)?;
    println!("written to {}", results.display());
    let failed = res.ours.error.is_some()
        || res.ours_verify.error.is_some()
        || res.upstream.error.is_some()
        || res.floor.error.is_some()
        || res.layout_floor.error.is_some()
        || phases.iter().any(|p| p.secs.is_err());
    Ok(!failed)
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
