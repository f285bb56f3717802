//! `cargo bench --bench scale`: `bootc-image copy-to-storage` beside `skopeo copy` as the image
//! grows, in bytes and in entries, with peak RSS beside time.
//!
//! What it does, in order:
//! 1. makes the scale fixtures (`common/scale_trees.rs`), one gzip layer each, cached under
//!    `target/bench-fixtures/scale-<name>/`: the Debian 12 root filesystem (402 MB, ~20k
//!    entries; debootstrap once, network needed then), that plus five copies of its `/usr`
//!    (2.1 GB), plus as many as make 5 GB, and 1,001,000 generated small files. The first run
//!    writes them (about 10 minutes, 3 GB of disk);
//! 2. creates a journaled ext4 on a loop device (sparse `target/bench-scale-fs.img`, mounted on
//!    `/tmp/bs-mnt`) for the stores, trimmed after each run so that the sparse file gives the
//!    space back;
//! 3. for each fixture and run: a fresh store for skopeo, then one for us, `sync` and drop the
//!    page cache before each timed command, time it, record peak RSS and CPU through GNU `time`,
//!    and check that the store holds the image;
//! 4. prints a table (median of the runs; RSS the largest seen) with the 32 MB RSS target, and
//!    writes it to `target/bench-scale-results.md`.
//!
//! Environment: `BENCH_SCALES=402m,2.1g,5g,1m` (default all), `BENCH_RUNS=n` (default 1).
//! Disk: about 3 GB of fixtures plus 12 GB at most for the store filesystem.

// Benchmarks and tests report on the terminal and stop on the first broken fixture.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "common/copy_runs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod copy_runs;
#[path = "common/fixtures.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod fixtures;
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use anyhow::{Result, anyhow, bail};
use copy_runs::{CopyBench, Outcome, Peer};
use fixtures::scale_trees::{SCALES, ScaleSpec, ScaleStats, ensure_scale_fixture};
use fixtures::{FixtureInfo, TAG};
use measure::{
    RSS_TARGET_MB, ToolResult, fmt_opt, load_average, measure, runs_from_env, version_of,
};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use storefs::{FsSpec, StoreFs};

/// The scale bench's own store filesystem (two benches must not share one), big enough for the
/// 5 GB image's store with its tar-split and TOC.
const SCALE_STORE_FS: FsSpec = FsSpec {
    mount_dir: "/tmp/bs-mnt",
    image: "bench-scale-fs.img",
    size: "24G",
    fallback: "bench-scale-stores",
};

/// One fixture's row of results.
#[derive(Debug)]
struct Row {
    /// The fixture.
    spec: ScaleSpec,
    /// Its tree's counts.
    stats: ScaleStats,
    /// Its layout's metadata.
    info: FixtureInfo,
    /// skopeo's results and ours.
    runs: Outcome,
}

/// Renders the results as a Markdown table (also readable on a terminal).
fn render_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| fixture | entries | tar GB | blob MB | skopeo s | ours s | speed-up | skopeo CPU s | ours CPU s | skopeo RSS MB | ours RSS MB | RSS target | status |"
    );
    let _ = writeln!(
        s,
        "|---------|--------:|-------:|--------:|---------:|-------:|---------:|-------------:|-----------:|--------------:|------------:|-----------:|--------|"
    );
    for r in rows {
        let sk = r.runs.peer.as_ref().and_then(ToolResult::secs);
        let ours = r.runs.ours.secs();
        let rss = r.runs.ours.rss();
        let status = r.runs.status(rss.is_some_and(|m| m > RSS_TARGET_MB));
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} | ≤ {RSS_TARGET_MB:.0} | {} |",
            r.spec.name,
            r.stats.entries,
            r.info.tar_bytes as f64 / 1e9,
            r.info.blob_bytes as f64 / 1e6,
            fmt_opt(sk, 2),
            fmt_opt(ours, 2),
            sk.zip(ours)
                .map_or_else(|| "—".to_owned(), |(a, b)| format!("{:.1}×", a / b)),
            fmt_opt(r.runs.peer.as_ref().and_then(ToolResult::cpu), 1),
            fmt_opt(r.runs.ours.cpu(), 1),
            fmt_opt(r.runs.peer.as_ref().and_then(ToolResult::rss), 0),
            fmt_opt(rss, 1),
            status
        );
    }
    s
}

/// Deletes the store `name` and gives its blocks back to the sparse image.
fn clean(store_fs: &StoreFs, name: &str) -> Result<()> {
    store_fs.clean(name)?;
    if store_fs.loop_dev.is_some() {
        let _ = storefs::run_cmd("fstrim", &[SCALE_STORE_FS.mount_dir]);
    }
    Ok(())
}

/// Runs the whole benchmark; `Ok(false)` when some measurement failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let runs = runs_from_env()?;
    let only: Option<Vec<String>> = std::env::var("BENCH_SCALES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let specs: Vec<ScaleSpec> = SCALES
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.name)))
        .copied()
        .collect();
    if specs.is_empty() {
        bail!("BENCH_SCALES selects none of 402m, 2.1g, 5g, 1m");
    }

    // 1. Fixtures, all before any measurement.
    let mut fixtures = Vec::new();
    for spec in &specs {
        fixtures.push(ensure_scale_fixture(&target_dir, spec)?);
    }

    // 2. Store filesystem.
    let store_fs = StoreFs::setup(&target_dir, &SCALE_STORE_FS)?;
    store_fs.announce();
    let skopeo = version_of("skopeo");
    if skopeo.is_none() {
        println!("WARNING: skopeo not found; measuring bootc-image alone");
    }
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;

    let peer = skopeo.as_ref().map(|_| Peer::Skopeo);
    let run_under = |program: &Path, args: &[String]| measure(program, args, &scratch);
    let clean = |name: &str| clean(&store_fs, name);
    let bench = CopyBench {
        store_fs: &store_fs,
        ours: &ours,
        peer: peer.as_ref(),
        run_under: &run_under,
        peer_oom: &|_| false,
        clean: &clean,
    };

    // 3. Measure.
    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let mut rows = Vec::new();
    for (spec, (layout, stats)) in specs.into_iter().zip(fixtures) {
        let info = FixtureInfo::load(&layout)?;
        let layout_str = layout
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", layout.display()))?;
        let source = format!("oci:{layout_str}:{TAG}");
        let outcome = bench.runs(spec.name, &source, &info, runs, &mut warned)?;
        rows.push(Row {
            spec,
            stats,
            info,
            runs: outcome,
        });
    }
    drop(store_fs);

    // 4. Report.
    let table = render_table(&rows);
    println!();
    println!("{table}");
    let mut md = String::new();
    let _ = writeln!(md, "# scale bench results\n");
    let _ = writeln!(
        md,
        "one gzip layer each, {runs} run(s) each (median; RSS the largest), cold page cache; skopeo: {}\n",
        skopeo.as_deref().unwrap_or("absent"),
    );
    let _ = writeln!(md, "{table}");
    let _ = writeln!(
        md,
        "load average (1/5/15 min) at start: {load_start}, at end: {}",
        load_average()
    );
    let results = target_dir.join("bench-scale-results.md");
    fs::write(&results, md)?;
    println!("written to {}", results.display());
    let failed = rows.iter().any(|r| r.runs.failed());
    Ok(!failed)
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
