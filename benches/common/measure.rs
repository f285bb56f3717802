//! Measuring commands: cold page cache, wall clock, and peak RSS and CPU time through GNU `time`.
//!
//! Shared by the benches through `#[path = "common/measure.rs"] mod measure;`.

use anyhow::{Context, Result, anyhow};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Whether `BENCH_SMALL` asks for the small (~30 MB) fixture.
pub fn small_from_env() -> bool {
    std::env::var("BENCH_SMALL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `BENCH_RUNS` (default 1): how many runs the median is taken over.
pub fn runs_from_env() -> Result<usize> {
    match std::env::var("BENCH_RUNS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| anyhow!("BENCH_RUNS must be a positive integer, got {v:?}")),
        Err(_) => Ok(1),
    }
}

/// `sync`, then drop the page cache (may be refused in a sandbox: then only warn once), then run
/// `program --version` so that the tool's own binary is not what the cold cache measures: the
/// image blobs are read cold, the programs start warm.
pub fn settle(warned: &mut bool, program: &Path) {
    settle_warm(warned, &[program]);
}

/// [`settle`], warming every program in `programs` (a tool that runs others, like our re-exec
/// through `unshare`, should find all of them warm).
pub fn settle_warm(warned: &mut bool, programs: &[&Path]) {
    rustix::fs::sync();
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3\n")
        && !*warned
    {
        println!("note: cannot drop caches ({e}); runs are warm-cache");
        *warned = true;
    }
    for warm in std::iter::once(Path::new("/usr/bin/time")).chain(programs.iter().copied()) {
        let _ = Command::new(warm)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One timed command.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock seconds.
    pub secs: f64,
    /// Peak RSS in MB (10^6 bytes), when GNU time was there to tell.
    pub rss_mb: Option<f64>,
    /// CPU seconds, user + system, when GNU time was there to tell.
    pub cpu_secs: Option<f64>,
    /// Peak RSS in MB of bootc-image's own process, its children's not included (it logs it).
    pub own_rss_mb: Option<f64>,
}

/// Runs `program args…` under GNU `time -f "%M %U %S"` (`ru_maxrss` and CPU times of that one
/// child, threads included), timing it with the wall clock. `Ok(Err(msg))` when the command itself failed.
pub fn measure(program: &Path, args: &[String], scratch: &Path) -> Result<Result<Sample, String>> {
    measure_in(program, args, None, scratch)
}

/// [`measure`], with the command running in `cwd` when given.
pub fn measure_in(
    program: &Path,
    args: &[String],
    cwd: Option<&Path>,
    scratch: &Path,
) -> Result<Result<Sample, String>> {
    Ok(measure_in_capture(program, args, cwd, scratch)?.map(|(sample, _)| sample))
}

/// [`measure`], also returning the command's stdout.
pub fn measure_capture(
    program: &Path,
    args: &[String],
    scratch: &Path,
) -> Result<Result<(Sample, String), String>> {
    measure_in_capture(program, args, None, scratch)
}

/// [`measure_in`], also returning the command's stdout.
pub fn measure_in_capture(
    program: &Path,
    args: &[String],
    cwd: Option<&Path>,
    scratch: &Path,
) -> Result<Result<(Sample, String), String>> {
    let gnu_time = Path::new("/usr/bin/time");
    let rss_file = scratch.join("bench-rss.txt");
    let _ = fs::remove_file(&rss_file);
    let mut cmd = if gnu_time.exists() {
        let mut c = Command::new(gnu_time);
        c.arg("-f")
            .arg("%M %U %S")
            .arg("-o")
            .arg(&rss_file)
            .arg(program);
        c
    } else {
        Command::new(program)
    };
    // bootc-image logs its own peak RSS (without its children's) at debug level.
    cmd.args(args)
        .stdin(Stdio::null())
        .env("RUST_LOG", "warn,bootc_image_cli=debug");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", program.display()))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("Command exited"))
            .unwrap_or("(no stderr)");
        return Ok(Err(format!(
            "{} ({}): {last}",
            out.status,
            program.display()
        )));
    }
    // The last line is "<max RSS KiB> <user s> <system s>".
    let usage: Vec<f64> = fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.lines().last().map(str::to_owned))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (rss_mb, cpu_secs) = match usage.as_slice() {
        [kib, user, sys] => (Some(kib * 1024.0 / 1e6), Some(user + sys)),
        _ => (None, None),
    };
    let own_rss_mb = String::from_utf8_lossy(&out.stderr).lines().find_map(|l| {
        let kib: f64 = l
            .split_once("peak resident set size of this process: ")?
            .1
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024.0 / 1e6)
    });
    Ok(Ok((
        Sample {
            secs,
            rss_mb,
            cpu_secs,
            own_rss_mb,
        },
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )))
}

/// The cargo target directory of a built binary (`target/<profile>/bootc-image` → `target/`).
pub fn target_dir_of(binary: &Path) -> Result<std::path::PathBuf> {
    binary
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("unexpected binary path {}", binary.display()))
}

/// Median of a non-empty slice.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The outcome of one tool on one fixture over all runs.
#[derive(Debug, Default)]
pub struct ToolResult {
    /// Wall-clock seconds per run.
    pub secs: Vec<f64>,
    /// Peak RSS per run (MB).
    pub rss: Vec<f64>,
    /// CPU seconds (user + system) per run.
    pub cpu: Vec<f64>,
    /// Peak RSS of the measured process alone per run (MB), when it reported it.
    pub own_rss: Vec<f64>,
    /// First failure, if any.
    pub error: Option<String>,
}

impl ToolResult {
    /// Records one run's sample, or its failure.
    pub fn record(&mut self, r: Result<Sample, String>) {
        match r {
            Ok(s) => {
                self.secs.push(s.secs);
                if let Some(m) = s.rss_mb {
                    self.rss.push(m);
                }
                if let Some(c) = s.cpu_secs {
                    self.cpu.push(c);
                }
                if let Some(m) = s.own_rss_mb {
                    self.own_rss.push(m);
                }
            }
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
    }

    /// Median seconds, when every run succeeded.
    pub fn secs(&self) -> Option<f64> {
        (self.error.is_none() && !self.secs.is_empty()).then(|| median(&mut self.secs.clone()))
    }

    /// Median CPU seconds, when every run succeeded and GNU time reported them.
    pub fn cpu(&self) -> Option<f64> {
        (self.error.is_none() && !self.cpu.is_empty()).then(|| median(&mut self.cpu.clone()))
    }

    /// Largest peak RSS seen (MB).
    pub fn rss(&self) -> Option<f64> {
        self.rss.iter().copied().reduce(f64::max)
    }

    /// Largest peak RSS of the measured process alone (MB), when it reported it.
    pub fn own_rss(&self) -> Option<f64> {
        self.own_rss.iter().copied().reduce(f64::max)
    }
}

/// Formats an optional number.
pub fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.prec$}"))
}

/// `/proc/loadavg`'s three load averages: other work on the machine skews the numbers.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

/// The first line of `program --version`, if it runs.
pub fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program).arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

/// Prints one run's outcome as it happens: `LABEL run i/n: S s, CPU C s, peak RSS M MB EXTRA`, the
/// seconds with `decimals` digits (the label comes padded as the bench wants its column).
pub fn report_run(
    label: &str,
    run: usize,
    runs: usize,
    r: &std::result::Result<Sample, String>,
    decimals: usize,
    extra: &str,
) {
    match r {
        Ok(s) => println!(
            "{label} run {run}/{runs}: {:7.decimals$} s, CPU {} s, peak RSS {} MB{extra}",
            s.secs,
            fmt_opt(s.cpu_secs, 2),
            fmt_opt(s.rss_mb, 1)
        ),
        Err(e) => println!("{label} run {run}/{runs}: FAILED: {e}"),
    }
}

/// The exit status of a bench's `run`: success only when every run and check passed.
pub fn exit_code(outcome: Result<bool>) -> std::process::ExitCode {
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: some runs failed (see above)");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--root ROOT --runroot RUNROOT --storage-driver overlay`: the global options that point podman
/// or bootc-image at a bench store.
pub fn overlay_store_args(root: &Path, runroot: &Path) -> Vec<String> {
    vec![
        "--root".into(),
        root.display().to_string(),
        "--runroot".into(),
        runroot.display().to_string(),
        "--storage-driver".into(),
        "overlay".into(),
    ]
}

/// The target for our peak resident set size, in MB.
pub const RSS_TARGET_MB: f64 = 32.0;
