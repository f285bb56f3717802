//! `cargo bench --bench build_chunked`: times `bootc-image build-chunked` of a root filesystem
//! against `podman build` (`FROM scratch` + `COPY tree/ /`) and against the ostree-ext path
//! (`ostree commit` + encapsulation into 40 chunked layers, ostree-ext 0.15 through
//! `tests/ostree-fixture build`, then `skopeo copy` into the store), on the same tree, same run.
//!
//! What it does, in order:
//! 1. extracts the generated bench tree (the single layer of the cached `none-1` layout of
//!    `copy_to_storage`; 380 MB, its own fake dpkg packages) onto a journaled ext4 on a loop
//!    device (`target/bench-fs-build.img`, mounted on `/tmp/bb-build`), where every store lives;
//! 2. builds the fixture tool (`target/ostree-fixture/`) for the ostree-ext path;
//! 3. for each run, with `sync` + dropped page cache before each timed command, under GNU `time`
//!    (peak RSS, CPU): ours (`build-chunked --max-layers 64 --timestamp …` into a fresh store),
//!    `podman build` into a fresh store, and the ostree-ext path into a fresh repository, layout
//!    and store;
//! 4. prints the table (medians over `BENCH_RUNS`, default 1) with the targets (≥ 5× `podman
//!    build`, ≥ 10× the ostree-ext path, peak RSS ≤ 32 MB) and writes it to
//!    `target/bench-results-build.md`.
//!
//! Environment: `BENCH_RUNS=n`, `BENCH_SMALL=1` (the ~30 MB tree). Needs root, podman, skopeo,
//! ostree's libraries (the fixture tool), GNU `time`, `tar`.

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
#[allow(
    dead_code,
    reason = "shared with copy_host_image; this bench uses a part"
)]
mod host_fixture;
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Result, ensure};
use fixtures::ensure_fixtures;
use measure::{
    RSS_TARGET_MB, ToolResult, fmt_opt, load_average, measure, overlay_store_args, runs_from_env,
    settle, small_from_env,
};
use storefs::{FsSpec, StoreFs};

/// The bench's own filesystem.
const BUILD_FS: FsSpec = FsSpec {
    mount_dir: "/tmp/bb-build",
    image: "bench-fs-build.img",
    size: "20G",
    fallback: "bench-stores-build",
};

/// Targets: at least this many times faster than podman build, and than the ostree-ext path.
const PODMAN_TARGET: f64 = 5.0;
const OSTREE_TARGET: f64 = 10.0;

/// Runs the whole benchmark; `Ok(false)` when some measurement failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let small = small_from_env();
    let runs = runs_from_env()?;
    let (key, fixtures_dir) = ensure_fixtures(&target_dir, small)?;
    let tar = host_fixture::single_layer_tar(&fixtures_dir.join("none-1"))?;
    let tool = host_fixture::build_fixture_tool(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        &target_dir,
    )?;
    let fs_ = StoreFs::setup(&target_dir, &BUILD_FS)?;
    fs_.announce();
    let ctx = fs_.base.join("ctx");
    let tree = ctx.join("tree");
    fs::create_dir_all(&tree)?;
    let status = Command::new("tar")
        .args(["--numeric-owner", "--same-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&tree)
        .status()?;
    ensure!(status.success(), "extracting the bench tree");
    fs::write(ctx.join("Containerfile"), "FROM scratch\nCOPY tree/ /\n")?;
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let names = ["ours", "podman build", "ostree-ext"];
    let mut results: Vec<ToolResult> = names.iter().map(|_| ToolResult::default()).collect();
    for run in 1..=runs {
        // Ours.
        fs_.clean("ou")?;
        let (root, runroot) = fs_.store("ou");
        settle(&mut warned, &ours);
        let mut args = overlay_store_args(&root, &runroot);
        args.extend(
            [
                "build-chunked",
                "--rootfs",
                &tree.display().to_string(),
                "--target",
                "localhost/built:latest",
                "--timestamp",
                "1700000000",
                "--progress",
                "none",
            ]
            .map(String::from),
        );
        let r = measure(&ours, &args, &scratch)?;
        measure::report_run("ours        ", run, runs, &r, 2, "");
        results[0].record(r);
        fs_.clean("ou")?;

        // podman build.
        fs_.clean("pb")?;
        let (root, runroot) = fs_.store("pb");
        settle(&mut warned, Path::new("podman"));
        let mut args = overlay_store_args(&root, &runroot);
        args.extend(
            [
                "build",
                "--network",
                "none",
                "--pull=never",
                "-q",
                "-t",
                "localhost/pb:latest",
                &ctx.display().to_string(),
            ]
            .map(String::from),
        );
        let r = measure(Path::new("podman"), &args, &scratch)?;
        measure::report_run("podman build", run, runs, &r, 2, "");
        results[1].record(r);
        fs_.clean("pb")?;

        // ostree commit + ostree-ext encapsulation + skopeo copy.
        fs_.clean("os")?;
        let (root, runroot) = fs_.store("os");
        let work = fs_.base.join("ostree-work");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work)?;
        let script = format!(
            "'{tool}' build --rootfs '{tree}' --repo '{w}/repo' --oci '{w}/oci' --tag bench --chunks 40 >/dev/null && skopeo copy -q --insecure-policy 'oci:{w}/oci:bench' 'containers-storage:[overlay@{root}+{runroot}]localhost/os:latest'",
            tool = tool.display(),
            tree = tree.display(),
            w = work.display(),
            root = root.display(),
            runroot = runroot.display()
        );
        settle(&mut warned, Path::new("skopeo"));
        let r = measure(Path::new("sh"), &["-c".into(), script], &scratch)?;
        measure::report_run("ostree-ext  ", run, runs, &r, 2, "");
        results[2].record(r);
        let _ = fs::remove_dir_all(&work);
        fs_.clean("os")?;
    }
    drop(fs_);

    let ours_s = results[0].secs();
    let ratio = |i: usize| results[i].secs().zip(ours_s).map(|(p, o)| p / o);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| path | s | CPU s | peak RSS MB | ours faster by | target |\n|---|--:|--:|--:|--:|--:|"
    );
    for (i, name) in names.iter().enumerate() {
        let target = match i {
            1 => format!("≥ {PODMAN_TARGET}×"),
            2 => format!("≥ {OSTREE_TARGET}×"),
            _ => format!("RSS ≤ {RSS_TARGET_MB:.0}"),
        };
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {target} |",
            fmt_opt(results[i].secs(), 2),
            fmt_opt(results[i].cpu(), 2),
            fmt_opt(results[i].rss(), 1),
            if i == 0 {
                "—".to_string()
            } else {
                ratio(i).map_or("—".into(), |x| format!("{x:.1}×"))
            }
        );
    }
    println!("\n{table}");
    let md = format!(
        "# build_chunked bench results\n\nfixtures `{key}` (the none-1 tree extracted), {runs} run(s) each (median), cold page cache\n\n{table}\nload average at start: {load_start}, at end: {}\n",
        load_average()
    );
    let out = target_dir.join("bench-results-build.md");
    fs::write(&out, md)?;
    println!("written to {}", out.display());
    Ok(results.iter().all(|r| r.error.is_none()))
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
