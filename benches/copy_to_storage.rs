//! `cargo bench --bench copy_to_storage`: times `bootc-image copy-to-storage` against
//! `skopeo copy oci:… containers-storage:…` on generated, OS-like images.
//!
//! What it does, in order:
//! 1. generates (deterministically, from a seeded PRNG, without network) a `/usr`-like tree and
//!    writes it as four OCI layouts: 1 gzip layer, 40 gzip layers, 1 zstd layer, 1 uncompressed
//!    layer. They are cached under `target/bench-fixtures/<version>-<scale>/`, so a re-run skips
//!    this step;
//! 2. creates a journaled ext4 on a loop device (sparse `target/bench-fs.img`, mounted on
//!    `/tmp/bb-mnt`) for the stores, because the stores that runs create and delete must not sit
//!    on an ext4 without journal (inode reuse slows each run down, see `docs/performance.md`);
//! 3. for each layout and each run: a fresh store for skopeo and a fresh store for us, `sync` and
//!    drop the page cache before each timed command (the tool binaries are then warmed with
//!    `--version`, the image blobs stay cold), time it (wall clock), record its peak RSS and CPU
//!    time through GNU `time -f "%M %U %S"` (`ru_maxrss`, user and system time of that one
//!    child), and check that the store holds the expected layer IDs and image;
//! 4. prints a table (median of the runs) with the targets beside it, and writes it as Markdown to
//!    `target/bench-results.md`.
//!
//! Environment: `BENCH_CONSTRAIN=1core` or `=64m` (both tools on one CPU, or in a memory cgroup
//! of that size: see `common/constrain.rs`; skopeo killed for memory is shown as such),
//! `BENCH_RUNS=n` (default 1, median reported), `BENCH_SMALL=1` (a ~30 MB tree for
//! quick checks), `BENCH_FIXTURES=gzip-1,zstd-1` (run only these layouts), `BENCH_BASELINE=PATH`
//! (an A/B: another build of bootc-image takes skopeo's place, run alternately with ours on the
//! same fixture; the "skopeo" columns are then the baseline's, and the speed-up baseline / ours).
//!
//! It needs root for the loop mount; without it (or without `losetup`) the stores go to
//! `target/bench-stores` and the report says so.

// Benchmarks and tests report on the terminal and stop on the first broken fixture.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "common/constrain.rs"]
mod constrain;
#[path = "common/copy_runs.rs"]
mod copy_runs;
#[path = "common/fixtures.rs"]
mod fixtures;
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use anyhow::{Result, anyhow, bail};
use copy_runs::{CopyBench, Outcome, Peer};
use fixtures::{FIXTURES, FixtureInfo, FixtureSpec, TAG, ensure_fixtures};
use measure::{
    RSS_TARGET_MB, Sample, ToolResult, fmt_opt, load_average, measure, runs_from_env,
    small_from_env, version_of,
};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use storefs::StoreFs;

/// One fixture's row of results.
#[derive(Debug)]
struct Row {
    /// The fixture.
    spec: FixtureSpec,
    /// Its metadata.
    info: FixtureInfo,
    /// skopeo's results and ours.
    runs: Outcome,
}

/// Renders the results as a Markdown table (also readable on a terminal).
fn render_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| fixture | layers | blobs MB | skopeo s | ours s | speed-up | target | skopeo CPU s | ours CPU s | skopeo RSS MB | ours RSS MB | RSS target | status |"
    );
    let _ = writeln!(
        s,
        "|---------|-------:|---------:|---------:|-------:|---------:|-------:|-------------:|-----------:|--------------:|------------:|-----------:|--------|"
    );
    for r in rows {
        let sk = r.runs.peer.as_ref().and_then(ToolResult::secs);
        let ours = r.runs.ours.secs();
        let ratio = sk.zip(ours).map(|(a, b)| a / b);
        let ratio_ok = match (ratio, r.spec.target_ratio) {
            (Some(x), Some(t)) => Some(x >= t),
            _ => None,
        };
        let rss = r.runs.ours.rss();
        let rss_ok = rss.map(|m| m <= RSS_TARGET_MB);
        let status = r
            .runs
            .status(ratio_ok == Some(false) || rss_ok == Some(false));
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | ≤ {RSS_TARGET_MB:.0} | {} |",
            r.spec.name,
            r.spec.layers,
            r.info.blob_bytes as f64 / 1e6,
            if r.runs.peer_oom {
                "OOM-killed".to_owned()
            } else {
                fmt_opt(sk, 2)
            },
            fmt_opt(ours, 2),
            ratio.map_or_else(|| "—".to_owned(), |x| format!("{x:.1}×")),
            r.spec
                .target_ratio
                .map_or_else(|| "—".to_owned(), |t| format!("≥ {t}×")),
            fmt_opt(r.runs.peer.as_ref().and_then(ToolResult::cpu), 2),
            fmt_opt(r.runs.ours.cpu(), 2),
            fmt_opt(r.runs.peer.as_ref().and_then(ToolResult::rss), 0),
            fmt_opt(rss, 1),
            status
        );
    }
    s
}

/// Runs the whole benchmark; `Ok(false)` when some measurement failed.
fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let small = small_from_env();
    let runs = runs_from_env()?;
    let only: Option<Vec<String>> = std::env::var("BENCH_FIXTURES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());

    // 1. Fixtures.
    let (key, fixtures_dir) = ensure_fixtures(&target_dir, small)?;
    let specs: Vec<FixtureSpec> = FIXTURES
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|n| n == s.name)))
        .copied()
        .collect();
    if specs.is_empty() {
        bail!("BENCH_FIXTURES selects none of gzip-1, gzip-40, zstd-1, none-1");
    }

    // 2. Store filesystem.
    let store_fs = StoreFs::setup(&target_dir, &storefs::COPY_STORE_FS)?;
    store_fs.announce();
    // An A/B: the baseline build in skopeo's place.
    let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);
    let skopeo = match &baseline {
        Some(b) => Some(format!("baseline {}", b.display())),
        None => version_of("skopeo"),
    };
    if skopeo.is_none() {
        println!("WARNING: skopeo not found; measuring bootc-image alone");
    }
    let peer = match &baseline {
        Some(b) => Some(Peer::Baseline(b.clone())),
        None => skopeo.as_ref().map(|_| Peer::Skopeo),
    };
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let constrained = constrain::Constrained::from_env(&scratch)?;
    if let Some(c) = &constrained {
        println!("constrained: {}", c.label);
    }
    let run_under = |program: &Path, args: &[String]| -> Result<Result<Sample, String>> {
        match &constrained {
            Some(c) => {
                let (p, a) = c.wrap(program, args);
                measure(&p, &a, &scratch)
            }
            None => measure(program, args, &scratch),
        }
    };
    let peer_oom = |e: &str| {
        constrained.as_ref().is_some_and(|c| c.limits_memory()) && constrain::oom_killed(e)
    };
    let clean = |name: &str| store_fs.clean(name);
    let bench = CopyBench {
        store_fs: &store_fs,
        ours: &ours,
        peer: peer.as_ref(),
        run_under: &run_under,
        peer_oom: &peer_oom,
        clean: &clean,
    };

    // 3. Measure.
    let load_start = load_average();
    println!("load average (1/5/15 min): {load_start}");
    let mut warned = false;
    let mut rows = Vec::new();
    for spec in specs {
        let layout = fixtures_dir.join(spec.name);
        let info = FixtureInfo::load(&layout)?;
        let layout_str = layout
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {}", layout.display()))?;
        let source = format!("oci:{layout_str}:{TAG}");
        let outcome = bench.runs(spec.name, &source, &info, runs, &mut warned)?;
        rows.push(Row {
            spec,
            info,
            runs: outcome,
        });
    }
    drop(store_fs);

    // 4. Report.
    let table = render_table(&rows);
    println!();
    println!("{table}");
    let tree = fs::read_to_string(fixtures_dir.join("tree.json")).unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# copy_to_storage bench results\n");
    let _ = writeln!(
        md,
        "fixtures `{key}`, {runs} run(s) each (median), cold page cache; skopeo: {}{}\n",
        skopeo.as_deref().unwrap_or("absent"),
        constrained
            .as_ref()
            .map_or(String::new(), |c| format!("; constrained: {}", c.label))
    );
    let _ = writeln!(md, "{table}");
    let _ = writeln!(
        md,
        "load average (1/5/15 min) at start: {load_start}, at end: {}\n",
        load_average()
    );
    let _ = writeln!(
        md,
        "tree: `{}`",
        tree.split_whitespace().collect::<String>()
    );
    let results = target_dir.join("bench-results.md");
    fs::write(&results, md)?;
    println!("written to {}", results.display());
    let failed = rows.iter().any(|r| r.runs.failed());
    Ok(!failed)
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
