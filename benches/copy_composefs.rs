//! `cargo bench --bench copy_composefs`: times `bootc-image copy-to-storage --source
//! composefs:REPO:TAG` against upstream bootc's way (bootc_composefs/export.rs) and against the
//! floor, on the same image in a composefs repository.
//!
//! What it does, in order:
//! 1. reuses the generated OS-like tree of `copy_to_storage` (its cached `gzip-1` layout,
//!    generated if missing);
//! 2. creates a journaled ext4 on a loop device (sparse `target/bench-fs-cfs.img`, mounted on
//!    `/tmp/bb-cfs`): the repository, the stores, upstream's temporary OCI directory and the
//!    floor's copy all live there (ext4: no reflink, so files are copied, as on a Debian host);
//! 3. imports the layout into a composefs repository there with `composefs_oci::pull` (SHA-512,
//!    fs-verity off, as bootc's backend on ext4; `tests/composefs-fixture import`), once per run;
//! 4. for each run, with `sync` + dropped page cache before each timed command, under GNU `time`
//!    (peak RSS, CPU):
//!    (a) ours: `bootc-image copy-to-storage --source composefs:REPO:bench` into a fresh store;
//!    (b) upstream: each layer's splitstream written out as an uncompressed tar into a temporary
//!    OCI directory (`tests/composefs-fixture export-oci`, with the composefs crates — what
//!    `export_repo_to_image` does), then `skopeo copy oci:DIR:bench containers-storage:…`;
//!    (c) floor: `cp -a --reflink=auto` of the image's tree (the layer tree of run (a), kept
//!    once);
//! 5. prints the table (medians over `BENCH_RUNS`, default 1) with the targets (≥ 10× upstream,
//!    ≤ 1.5× the floor, ≤ 32 MB RSS), and writes it as Markdown to
//!    `target/bench-results-composefs.md`.
//!
//! Environment: `BENCH_RUNS=n`, `BENCH_SMALL=1` (the ~30 MB tree), `BENCH_TREE=debian`. Needs root
//! (loop mount), `skopeo`, GNU `time`, `cp`.

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
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use fixtures::{FixtureInfo, IMAGE_NAME, TAG, check_store, ensure_fixtures};
use measure::{
    RSS_TARGET_MB, ToolResult, fmt_opt, load_average, measure, overlay_store_args, runs_from_env,
    settle, small_from_env,
};
use storefs::{FsSpec, StoreFs};

/// The bench's own filesystem (its stores must not disturb the other benches').
const CFS_FS: FsSpec = FsSpec {
    mount_dir: "/tmp/bb-cfs",
    image: "bench-fs-cfs.img",
    size: "20G",
    fallback: "bench-stores-cfs",
};

/// Target: at least this many times faster than upstream's path.
const UPSTREAM_TARGET: f64 = 10.0;
/// Target: at most this many times the floor.
const FLOOR_TARGET: f64 = 1.5;

/// The fixture tool (`tests/composefs-fixture`, its own workspace), built if needed.
fn fixture_tool() -> Result<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("tests/composefs-fixture");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(dir.join("Cargo.toml"))
            .status()?;
    anyhow::ensure!(status.success(), "building tests/composefs-fixture");
    Ok(dir.join("target/release/composefs-fixture"))
}

/// Imports `layout` (`oci:DIR:TAG`) into a new repository at `repo`, tagged [`TAG`].
fn make_repo(tool: &Path, layout: &str, repo: &Path) -> Result<String> {
    let out = std::process::Command::new(tool)
        .arg("import")
        .arg(layout)
        .arg(repo)
        .arg(TAG)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "composefs-fixture import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The tree of the image's (only) layer in the store at `root`.
fn layer_tree(root: &Path, info: &FixtureInfo) -> PathBuf {
    let id = info.layer_ids().pop().unwrap_or_default();
    root.join("overlay").join(id).join("diff")
}

/// One measured path's results, with its target.
struct Line {
    what: &'static str,
    result: ToolResult,
}

/// Runs the whole benchmark; `Ok(false)` when some measurement failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let small = small_from_env();
    let runs = runs_from_env()?;

    // 1. The layout, 2. the filesystem, 3. the repository.
    let (key, fixtures_dir) = ensure_fixtures(&target_dir, small)?;
    let layout = fixtures_dir.join("gzip-1");
    let info = FixtureInfo::load(&layout)?;
    let fs_ = StoreFs::setup(&target_dir, &CFS_FS)?;
    fs_.announce();
    let repo = fs_.base.join("cfs-repo");
    if repo.exists() {
        fs::remove_dir_all(&repo)?;
    }
    let started = std::time::Instant::now();
    let tool = fixture_tool()?;
    let digest = make_repo(&tool, &format!("oci:{}:{TAG}", layout.display()), &repo)
        .context("importing the layout into a composefs repository")?;
    println!(
        "repository: {} ({digest}) made in {:.1} s",
        repo.display(),
        started.elapsed().as_secs_f64()
    );
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let tree = fs_.base.join("tree");
    let source = format!("composefs:{}:{TAG}", repo.display());

    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let mut lines = [
        Line {
            what: "ours",
            result: ToolResult::default(),
        },
        Line {
            what: "upstream",
            result: ToolResult::default(),
        },
        Line {
            what: "floor",
            result: ToolResult::default(),
        },
    ];
    for run in 1..=runs {
        // (a) ours.
        fs_.clean("ou")?;
        let (root, runroot) = fs_.store("ou");
        settle(&mut warned, &ours);
        let mut args = overlay_store_args(&root, &runroot);
        args.extend([
            "copy-to-storage".into(),
            "--source".into(),
            source.clone(),
            "--target".into(),
            IMAGE_NAME.into(),
            "--progress".into(),
            "none".into(),
        ]);
        let r =
            measure(&ours, &args, &scratch)?.and_then(|s| check_store(&root, &info).map(|()| s));
        measure::report_run("ours    ", run, runs, &r, 2, "");
        lines[0].result.record(r);
        if !tree.exists() {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(layer_tree(&root, &info))
                .arg(&tree)
                .status()?;
            anyhow::ensure!(status.success(), "keeping the image's tree");
        }
        fs_.clean("ou")?;

        // (b) upstream: the export (this bench as a helper), then skopeo.
        fs_.clean("up")?;
        let (root, runroot) = fs_.store("up");
        let oci = fs_.base.join("upstream-oci");
        let _ = fs::remove_dir_all(&oci);
        let script = format!(
            "'{}' export-oci '{}' {TAG} '{}' && skopeo copy --insecure-policy 'oci:{}:{TAG}' 'containers-storage:[overlay@{}+{}]{IMAGE_NAME}'",
            tool.display(),
            repo.display(),
            oci.display(),
            oci.display(),
            root.display(),
            runroot.display()
        );
        settle(&mut warned, Path::new("skopeo"));
        let r = measure(Path::new("sh"), &["-c".into(), script], &scratch)?;
        measure::report_run("upstream", run, runs, &r, 2, "");
        lines[1].result.record(r);
        let _ = fs::remove_dir_all(&oci);
        fs_.clean("up")?;

        // (c) floor.
        let dest = fs_.base.join("floor");
        let _ = fs::remove_dir_all(&dest);
        settle(&mut warned, Path::new("cp"));
        let r = measure(
            Path::new("cp"),
            &[
                "-a".into(),
                "--reflink=auto".into(),
                tree.display().to_string(),
                dest.display().to_string(),
            ],
            &scratch,
        )?;
        measure::report_run("floor   ", run, runs, &r, 2, "");
        lines[2].result.record(r);
        let _ = fs::remove_dir_all(&dest);
    }
    let _ = fs::remove_dir_all(&tree);
    let _ = fs::remove_dir_all(&repo);
    drop(fs_);

    // 5. Report.
    let secs = |i: usize| lines[i].result.secs();
    let ours_s = secs(0);
    let vs_upstream = secs(1).zip(ours_s).map(|(u, o)| u / o);
    let vs_floor = ours_s.zip(secs(2)).map(|(o, f)| o / f);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| path | s | CPU s | peak RSS MB |\n|------|--:|------:|------------:|"
    );
    for l in &lines {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} |",
            l.what,
            fmt_opt(l.result.secs(), 2),
            fmt_opt(l.result.cpu(), 2),
            fmt_opt(l.result.rss(), 1)
        );
    }
    let _ = writeln!(
        table,
        "\nours vs upstream: {} (target ≥ {UPSTREAM_TARGET}×); ours vs floor: {} (target ≤ {FLOOR_TARGET}×); ours RSS {} MB (target ≤ {RSS_TARGET_MB:.0})",
        vs_upstream.map_or("—".into(), |x| format!("{x:.1}× faster")),
        vs_floor.map_or("—".into(), |x| format!("{x:.2}×")),
        fmt_opt(lines[0].result.rss(), 1)
    );
    println!("\n{table}");
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# copy_composefs bench results\n\nfixtures `{key}` (gzip-1 imported into a composefs repository), {runs} run(s) each (median), cold page cache\n\n{table}\nload average at start: {load_start}, at end: {}",
        load_average()
    );
    let results = target_dir.join("bench-results-composefs.md");
    fs::write(&results, md)?;
    println!("written to {}", results.display());
    Ok(lines.iter().all(|l| l.result.error.is_none()))
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
