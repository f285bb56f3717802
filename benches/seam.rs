//! `cargo bench --bench seam`: bootc's external-tool seam, ours beside the peers, in one run.
//!
//! 1. **The image proxy serving `containers-storage:`** to ostree-ext's importer sequence
//!    (`OpenImage`, `GetManifest`, `GetFullConfig`, `GetLayerInfoPiped`, then `GetBlob` of each
//!    layer by DiffID, one after the other, uncompressed), and to composefs's (the same, blobs all
//!    in flight at once), driven by the `containers-image-proxy` crate as bootc drives it: ours
//!    beside skopeo 1.18 (Debian 13, the chroot of scripts/podman5-check.sh: Debian 12's 1.9.3
//!    cannot serve this at all). Same store, page cache dropped before each run, runs alternating.
//!    Target: ≥ 3× skopeo, peak RSS ≤ 32 MB.
//! 2. **The libpod pull** bootc sends to `podman system service` (`POST
//!    /v5.0.0/libpod/images/pull`, curl over the Unix socket) from a registry on loopback into a
//!    fresh store: ours beside podman 4.3's own service. Target (once the native registry client
//!    lands): ≥ 4×.
//!
//! Fixtures: `gzip-1` and `gzip-40` of copy_to_storage (`target/bench-fixtures/`).
//! Environment: `BENCH_RUNS=n` (default 1), `BENCH_SMALL=1`, `BENCH_WARM=1` (page cache kept),
//! `BENCH_PARTS=proxy,libpod` (which parts run), `P5_CHROOT` (default
//! /var/tmp/trixie; part 1 is skipped without it), `BENCH_FIXTURES=gzip-1,gzip-40`.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "common/fixtures.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod fixtures;
#[path = "common/measure.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod measure;
#[path = "common/registry.rs"]
mod registry;

use anyhow::{Context, Result, bail};
use containers_image_proxy::{ImageProxy, ImageProxyConfig};
use fixtures::{FIXTURES, TAG, ensure_fixtures};
use measure::{RSS_TARGET_MB, load_average, median, runs_from_env, small_from_env};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// One timed run: seconds, peak RSS (MB) of the serving process.
type Run = (f64, Option<f64>);

/// Medians of a tool's runs.
fn medians(runs: &[Run]) -> (f64, Option<f64>) {
    let mut secs: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let mut rss: Vec<f64> = runs.iter().filter_map(|r| r.1).collect();
    (
        median(&mut secs),
        (!rss.is_empty()).then(|| median(&mut rss)),
    )
}

/// `sync`, then the page cache dropped (not with `BENCH_WARM=1`).
fn drop_caches() {
    rustix::fs::sync();
    if std::env::var("BENCH_WARM").is_ok_and(|v| v == "1") {
        return;
    }
    let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Reads the peak RSS GNU time wrote to `file` (kB; its last line, after "Command terminated by
/// signal 15" for a service stopped with SIGTERM), in MB.
fn rss_of(file: &Path) -> Option<f64> {
    let text = fs::read_to_string(file).ok()?;
    let kb: f64 = text
        .lines()
        .last()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024.0 / 1e6)
}

/// Drives a proxy started by `cmd` (`… experimental-image-proxy` is appended) through the
/// importer sequence on `image`; `parallel`: every blob in flight at once. Returns the bytes read.
fn drive(cmd: Command, image: &str, parallel: bool) -> Result<u64> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut config = ImageProxyConfig::default();
        config.skopeo_cmd = Some(cmd);
        config.insecure_policy = Some(true);
        config.auth_anonymous = true;
        let proxy = ImageProxy::new_with_config(config).await?;
        let img = proxy.open_image(image).await?;
        let _ = proxy.fetch_manifest(&img).await?;
        let _ = proxy.fetch_config(&img).await?;
        let infos = proxy
            .get_layer_info(&img)
            .await?
            .context("the proxy gave no layer info")?;
        let proxy = &proxy;
        let img = &img;
        let fetch = |i: &containers_image_proxy::ConvertedLayerInfo| {
            let (digest, size) = (i.digest.clone(), i.size);
            async move {
                let (mut reader, finish) = proxy.get_blob(img, &digest, size).await?;
                let mut n = 0u64;
                let mut buf = vec![0u8; 256 * 1024];
                let read = async {
                    loop {
                        let k = reader.read(&mut buf).await?;
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    Ok::<_, std::io::Error>(())
                };
                let (r, f) = tokio::join!(read, finish);
                r?;
                f?;
                Ok::<u64, anyhow::Error>(n)
            }
        };
        let mut total = 0;
        if parallel {
            for n in futures_util::future::join_all(infos.iter().map(fetch)).await {
                total += n?;
            }
        } else {
            for i in &infos {
                total += fetch(i).await?;
            }
        }
        proxy.close_image(img).await?;
        Ok(total)
    })
}

/// The proxy command of a tool, under GNU time writing its peak RSS into `rss`.
fn timed(program: &Path, rss: &Path) -> Command {
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(rss).arg(program);
    c.stderr(Stdio::null());
    c
}

/// A script running skopeo 1.18 of the chroot `chroot`, seeing `base` (the store) at its own path.
fn chroot_skopeo(base: &Path, chroot: &Path) -> Result<PathBuf> {
    let script = base.join("skopeo-1.18");
    fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# skopeo 1.18 of the Debian 13 chroot, the bench store visible at its own path.
exec unshare -m sh -c '
  mount -t proc proc "$0/proc"
  mount --bind /dev "$0/dev"
  mkdir -p "$0$1" && mount --bind "$1" "$0$1"
  shift; shift
  exec chroot "{chroot}" env CONTAINERS_STORAGE_CONF="{base}/storage.conf" skopeo "$@"' "{chroot}" "{base}" - "$@"
"#,
            chroot = chroot.display(),
            base = base.display()
        ),
    )?;
    Command::new("chmod").arg("+x").arg(&script).status()?;
    Ok(script)
}

/// Part 1: the proxy serving the store's images. Returns the report's lines.
fn proxy_part(
    ours: &Path,
    base: &Path,
    images: &[(String, PathBuf)],
    runs: usize,
) -> Result<String> {
    let chroot = PathBuf::from(std::env::var("P5_CHROOT").unwrap_or("/var/tmp/trixie".into()));
    if !chroot.join("usr/bin/skopeo").exists() {
        return Ok(format!(
            "proxy: skipped, no skopeo 1.18 in {} (run scripts/podman5-check.sh once)\n",
            chroot.display()
        ));
    }
    let store = base.join("store");
    let _ = fs::remove_dir_all(&store);
    fs::create_dir_all(&store)?;
    fs::write(
        base.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            store.display()
        ),
    )?;
    let skopeo = chroot_skopeo(base, &chroot)?;
    for (name, layout) in images {
        let out = Command::new(ours)
            .env("CONTAINERS_STORAGE_CONF", base.join("storage.conf"))
            .args(["copy-to-storage", "--source"])
            .arg(format!("oci:{}:{TAG}", layout.display()))
            .args(["--target", &format!("localhost/{name}:1"), "--quiet"])
            .output()?;
        if !out.status.success() {
            bail!(
                "copying {name} in: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let rss = base.join("rss.txt");
    let mut report = String::new();
    writeln!(
        report,
        "| image | sequence | served MB | skopeo 1.18 s | ours s | ratio | RSS skopeo MB | RSS ours MB |\n|---|---|---|---|---|---|---|---|"
    )?;
    for (name, _) in images {
        for parallel in [false, true] {
            let image = format!("containers-storage:localhost/{name}:1");
            let (mut theirs, mut mine) = (Vec::new(), Vec::new());
            let mut bytes = 0;
            for _ in 0..runs {
                for tool in ["skopeo", "ours"] {
                    drop_caches();
                    let _ = fs::remove_file(&rss);
                    let mut cmd = if tool == "ours" {
                        let mut c = timed(ours, &rss);
                        c.env("BOOTC_EXP_EXTERNAL_CONTAINER_TOOL", ours)
                            .env("CONTAINERS_STORAGE_CONF", base.join("storage.conf"));
                        c
                    } else {
                        timed(&skopeo, &rss)
                    };
                    cmd.env_remove("RUST_LOG");
                    let start = Instant::now();
                    bytes = drive(cmd, &image, parallel)
                        .with_context(|| format!("{tool} serving {image}"))?;
                    let secs = start.elapsed().as_secs_f64();
                    // GNU time writes once its child is gone (after Shutdown).
                    std::thread::sleep(Duration::from_millis(100));
                    let run = (secs, rss_of(&rss));
                    if tool == "ours" {
                        mine.push(run)
                    } else {
                        theirs.push(run)
                    }
                }
            }
            let (ts, tr) = medians(&theirs);
            let (os, or) = medians(&mine);
            let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
            writeln!(
                report,
                "| {name} | {} | {:.0} | {ts:.2} | {os:.2} | **{:.1}×** | {} | {} |",
                if parallel {
                    "composefs (all in flight)"
                } else {
                    "ostree-ext (one by one)"
                },
                bytes as f64 / 1e6,
                ts / os,
                f(tr),
                f(or)
            )?;
        }
    }
    writeln!(
        report,
        "\ntarget: ≥ 3× skopeo 1.18, RSS ≤ {RSS_TARGET_MB} MB"
    )?;
    Ok(report)
}

/// Percent-encodes every byte but ASCII letters and digits, as bootc does.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One libpod pull of `image` into a fresh store by the service `program` (podman or our link).
fn libpod_pull(program: &Path, base: &Path, image: &str, conf: &Path) -> Result<Run> {
    let store = base.join("pull-store");
    let _ = Command::new("umount")
        .arg("-R")
        .arg(store.join("root/overlay"))
        .stderr(Stdio::null())
        .status();
    let _ = fs::remove_dir_all(&store);
    fs::create_dir_all(&store)?;
    let sock = store.join("api.sock");
    let rss = base.join("rss-service.txt");
    let _ = fs::remove_file(&rss);
    let mut service = timed(program, &rss)
        .env("CONTAINERS_REGISTRIES_CONF", conf)
        .env("BOOTC_EXP_EXTERNAL_CONTAINER_TOOL", program)
        .env_remove("RUST_LOG")
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .stdout(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        if Instant::now() > deadline {
            let _ = service.kill();
            bail!("{}: no socket", program.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop_caches();
    let start = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&sock)
        .args(["-X", "POST", "-H", "Host: d"])
        .arg(format!(
            "http://d/v5.0.0/libpod/images/pull?reference={}&pullProgress=true&policy=always",
            encode(image)
        ))
        .output()?;
    let secs = start.elapsed().as_secs_f64();
    // SIGTERM: GNU time reports the service's peak when it ends.
    let _ = Command::new("pkill")
        .arg("-TERM")
        .arg("-P")
        .arg(service.id().to_string())
        .status();
    let _ = service.wait();
    let body = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || body.contains("\"error\"") {
        bail!("{} pulling {image}: {body}", program.display());
    }
    Ok((secs, rss_of(&rss)))
}

/// Part 2: the libpod pull, ours beside podman 4.3's service.
fn libpod_part(
    ours: &Path,
    base: &Path,
    images: &[(String, PathBuf)],
    runs: usize,
) -> Result<String> {
    let registry = registry::Registry::start(&base.join("registry"))?;
    let links = base.join("links");
    let _ = fs::remove_dir_all(&links);
    fs::create_dir_all(&links)?;
    std::os::unix::fs::symlink(ours, links.join("podman"))?;
    let mut report = String::new();
    writeln!(
        report,
        "| image | podman 4.3 service s | ours s | ratio | RSS podman MB | RSS ours MB |\n|---|---|---|---|---|---|"
    )?;
    for (name, layout) in images {
        registry.push(layout, name)?;
        let image = registry.image(name);
        let (mut theirs, mut mine) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            theirs.push(libpod_pull(
                Path::new("/usr/bin/podman"),
                base,
                &image,
                &registry.conf,
            )?);
            mine.push(libpod_pull(
                &links.join("podman"),
                base,
                &image,
                &registry.conf,
            )?);
        }
        let (ts, tr) = medians(&theirs);
        let (os, or) = medians(&mine);
        let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.1}"));
        writeln!(
            report,
            "| {name} | {ts:.2} | {os:.2} | **{:.1}×** | {} | {} |",
            ts / os,
            f(tr),
            f(or)
        )?;
    }
    writeln!(
        report,
        "\ntarget once the native registry client lands: ≥ 4× podman 4.3's service"
    )?;
    Ok(report)
}

fn run() -> Result<()> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let runs = runs_from_env()?;
    let only: Option<Vec<String>> = std::env::var("BENCH_FIXTURES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let (_, fixtures_dir) = ensure_fixtures(&target_dir, small_from_env())?;
    let images: Vec<(String, PathBuf)> = FIXTURES
        .iter()
        .filter(|s| s.name.starts_with("gzip"))
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s.name)))
        .map(|s| (s.name.to_string(), fixtures_dir.join(s.name)))
        .collect();
    let base = target_dir.join("bench-seam");
    fs::create_dir_all(&base)?;
    let load = load_average();
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "proxy,libpod".into());
    let proxy = if parts.contains("proxy") {
        proxy_part(&ours, &base, &images, runs)?
    } else {
        "skipped (BENCH_PARTS)\n".into()
    };
    let libpod = if parts.contains("libpod") {
        libpod_part(&ours, &base, &images, runs)?
    } else {
        "skipped (BENCH_PARTS)\n".into()
    };
    let report = format!(
        "## bootc's seam (`cargo bench --bench seam`, {runs} run(s), medians; load {load} → {})\n\n### The image proxy serving containers-storage:\n\n{proxy}\n### The libpod pull (podman system service)\n\n{libpod}",
        load_average()
    );
    println!("{report}");
    fs::write(target_dir.join("bench-seam-results.md"), &report)?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench seam: {e:#}");
            ExitCode::FAILURE
        }
    }
}
