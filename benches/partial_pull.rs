//! `cargo bench --bench partial_pull`: an update pulled partially (zstd:chunked, issue 26) — ours
//! beside podman 5's partial pull of the same pair, in one run.
//!
//! 1. The Debian bookworm rootfs of the other benches (`target/bench-fixtures/debian-rootfs`,
//!    debootstrap) as a one-layer image (v1), and again with one file's content replaced (v2: the
//!    same size, other bytes, so layer reuse cannot help). Both copied into a store and pushed as
//!    zstd:chunked by `bootc-image export` to Debian's docker-registry on 127.0.0.1, whose access
//!    log gives the bytes each pull fetched.
//!    Everything (registry, layouts, stores) lives on a journaled ext4 on a loop device
//!    (`target/bench-partial-fs.img` on `/tmp/bp-mnt`), as in the copy benches.
//! 2. For each run and tool: a fresh store, v1 pulled (not timed), the page cache dropped (not
//!    with `BENCH_WARM=1`), v2 pulled, timed: ours (native, partial pulls on), podman 5.4 of the
//!    Debian 13 chroot of scripts/podman5-check.sh with `enable_partial_images = "true"`, and ours
//!    with partial pulls off (the whole blob: the reference for bytes).
//! 3. Medians, the bytes fetched against the blob, the ratio; also written to
//!    `target/bench-partial-results.md`. Targets (issue 26): ≤ 10 % of the blob, ≥ 3× podman 5.
//!
//! Environment: `BENCH_RUNS=n` (default 1), `BENCH_WARM=1`, `P5_CHROOT` (default
//! /var/tmp/trixie), `BENCH_CHANGED` (the file replaced in v2, default `usr/bin/perl5.36.0`).

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
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod registry;
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use anyhow::{Context, Result, bail};
use measure::{Sample, fmt_opt, load_average, measure_in_capture, median, runs_from_env};
use registry::Registry;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Runs a command, failing with its stderr.
fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An OCI layout at `layout` with one uncompressed layer: the tar of `root`.
fn layout_of(root: &Path, layout: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(layout);
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let tar = layout.join("layer.tar");
    sh(Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "--xattrs", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let mut sha = Sha256::new();
    std::io::copy(&mut fs::File::open(&tar)?, &mut sha)?;
    let hex = hex::encode(sha.finalize());
    let size = fs::metadata(&tar)?.len();
    fs::rename(&tar, layout.join("blobs/sha256").join(&hex))?;
    let digest = format!("sha256:{hex}");
    let config = json!({
        "created": "2026-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": "bench: the rootfs"}],
    });
    let layer = json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size});
    let (_, manifest) = fixtures::write_config_and_manifest(layout, &config, vec![layer])?;
    let mut entry = manifest.to_json();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": "bench"});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]}))?,
    )?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    Ok(())
}

/// v2's tree: `root` hard-linked, `changed` replaced by as many other bytes (its times kept).
fn updated_tree(root: &Path, dir: &Path, changed: &str) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    sh(Command::new("cp").arg("-al").arg(root).arg(dir))?;
    let path = dir.join(changed);
    let old = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let new: Vec<u8> = old.iter().map(|b| b.wrapping_add(1) ^ 0x5a).collect();
    fs::remove_file(&path)?;
    fs::write(&path, new)?;
    sh(Command::new("touch")
        .arg("-r")
        .arg(root.join(changed))
        .arg(&path))?;
    Ok(())
}

/// A script running podman 5 of `chroot` on the store under `base` (seen at its own path),
/// partial pulls on, the registry's registries.conf.
fn chroot_podman(base: &Path, chroot: &Path, conf: &Path) -> Result<PathBuf> {
    let script = base.join("podman-5");
    fs::write(
        base.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/p5/root\"\nrunroot = \"{0}/p5/run\"\n[storage.options.pull_options]\nenable_partial_images = \"true\"\n",
            base.display()
        ),
    )?;
    fs::copy(conf, base.join("registries.conf"))?;
    fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# podman 5 of the Debian 13 chroot, the bench directory visible at its own path.
exec unshare -m --propagation private sh -c '
  mount --bind "$0" "$0"
  mount -t proc proc "$0/proc"
  mount --rbind /dev "$0/dev"
  mount -t tmpfs tmpfs "$0/run"
  mkdir -p "$0$1" && mount --bind "$1" "$0$1"
  c=$0 b=$1
  shift; shift
  exec chroot "$c" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PODMAN_IGNORE_CGROUPSV1_WARNING=1 CONTAINERS_STORAGE_CONF="$b/storage.conf" CONTAINERS_REGISTRIES_CONF="$b/registries.conf" podman --cgroup-manager cgroupfs --events-backend file "$@"' "{chroot}" "{base}" - "$@"
"#,
            chroot = chroot.display(),
            base = base.display()
        ),
    )?;
    sh(Command::new("chmod").arg("+x").arg(&script))?;
    Ok(script)
}

/// Bytes the registry answered GETs of `digest` with, in the log from byte `from` on.
fn fetched(log: &Path, from: usize, digest: &str) -> u64 {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(digest))
        .filter_map(|l| {
            l.split("HTTP/1.1\" ")
                .nth(1)?
                .split(' ')
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn drop_caches() {
    rustix::fs::sync();
    if !std::env::var("BENCH_WARM").is_ok_and(|v| v == "1") {
        let _ = fs::write("/proc/sys/vm/drop_caches", "3\n");
    }
}

/// The loop-mounted ext4 of this bench (its own: benches may run at the same time).
const PARTIAL_FS: storefs::FsSpec = storefs::FsSpec {
    mount_dir: "/tmp/bp-mnt",
    image: "bench-partial-fs.img",
    size: "12G",
    fallback: "bench-partial",
};

/// One tool's timed pulls.
#[derive(Default)]
struct Runs {
    secs: Vec<f64>,
    rss: Vec<f64>,
    bytes: Vec<f64>,
}

fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target = measure::target_dir_of(&ours)?;
    let rootfs = fixtures::ensure_debian_rootfs(&target)?;
    let chroot = PathBuf::from(std::env::var("P5_CHROOT").unwrap_or("/var/tmp/trixie".into()));
    if !chroot.join("usr/bin/podman").exists() {
        bail!(
            "no podman 5 in {} (run scripts/podman5-check.sh once)",
            chroot.display()
        );
    }
    let changed = std::env::var("BENCH_CHANGED").unwrap_or("usr/bin/perl5.36.0".into());
    let runs = runs_from_env()?;
    // Stores, registry and fixtures on a journaled ext4 of their own, as the copy benches have
    // theirs: stores made and deleted run after run on the machine's root file system slow every
    // later run down, both tools' alike (see docs/performance.md).
    let store_fs = storefs::StoreFs::setup(&target, &PARTIAL_FS)?;
    store_fs.announce();
    let base = store_fs.base.join("bench");
    let _ = Command::new("umount")
        .arg("-R")
        .arg(base.join("p5"))
        .status();
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let log = base.join("registry.log");
    let reg = Registry::start_logged(&base.join("registry"), Some(&log))?;
    let store = |name: &str| -> Vec<String> {
        let d = base.join(name);
        vec![
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("run").display().to_string(),
            "--storage-driver".into(),
            "overlay".into(),
        ]
    };
    // 1. v1 and v2, pushed as zstd:chunked.
    println!("fixtures: the rootfs as v1 and, with {changed} replaced, v2; pushed as zstd:chunked");
    // v2's tree beside v1's (it is v1's hardlinked, one file replaced).
    let v2_tree = target.join("bench-partial-v2");
    updated_tree(&rootfs, &v2_tree, &changed)?;
    let image = |v: u32| format!("127.0.0.1:{}/bench/partial:{v}", reg.port);
    for (v, root) in [(1, rootfs.clone()), (2, v2_tree.clone())] {
        let layout = base.join(format!("oci-v{v}"));
        layout_of(&root, &layout)?;
        sh(Command::new(&ours)
            .args(store("stage"))
            .args(["copy-to-storage", "--quiet", "--source"])
            .arg(format!("oci:{}:bench", layout.display()))
            .args(["--target", &format!("localhost/partial:{v}")]))?;
        sh(Command::new(&ours)
            .args(store("stage"))
            .env("CONTAINERS_REGISTRIES_CONF", &reg.conf)
            .args([
                "export",
                "--compression",
                "zstd:chunked",
                "--tls-verify=false",
                &format!("localhost/partial:{v}"),
                &format!("docker://{}", image(v)),
            ]))?;
        fs::remove_dir_all(&layout)?;
    }
    let _ = fs::remove_dir_all(&v2_tree);
    let manifest: serde_json::Value = serde_json::from_str(&sh(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", image(2)),
    ]))?)?;
    let blob = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let blob_size = manifest["layers"][0]["size"].as_u64().unwrap_or(1);
    let podman5 = chroot_podman(&base, &chroot, &reg.conf)?;
    // 2. The runs.
    let tools = ["ours", "podman 5", "ours, whole"];
    let mut results: Vec<Runs> = tools.iter().map(|_| Runs::default()).collect();
    for run in 0..runs {
        for (t, tool) in tools.iter().enumerate() {
            let (program, args, name) = match *tool {
                "podman 5" => (podman5.clone(), Vec::new(), "p5"),
                _ => (ours.clone(), store("ours"), "ours"),
            };
            let _ = Command::new("umount")
                .arg("-R")
                .arg(base.join(name))
                .status();
            let _ = fs::remove_dir_all(base.join(name));
            let whole = *tool == "ours, whole";
            let is_ours = program == ours;
            let pull = |v: u32, args: &[String]| -> Vec<String> {
                let mut a = args.to_vec();
                a.extend(["pull".into(), "-q".into(), "--tls-verify=false".into()]);
                if is_ours {
                    a.push(format!("--partial-pulls={}", !whole));
                }
                a.push(image(v));
                a
            };
            sh(Command::new(&program).args(pull(1, &args)))
                .with_context(|| format!("{tool}: pulling v1"))?;
            drop_caches();
            let mark = fs::metadata(&log).map(|m| m.len() as usize).unwrap_or(0);
            let r = measure_in_capture(&program, &pull(2, &args), None, &base)?;
            let Sample { secs, rss_mb, .. } = match r {
                Ok((s, _)) => s,
                Err(e) => bail!("{tool}: pulling v2: {e}"),
            };
            std::thread::sleep(std::time::Duration::from_millis(300));
            let bytes = fetched(&log, mark, &blob) as f64;
            println!(
                "run {}/{runs} {tool}: {secs:.2} s, {:.1} MB fetched, RSS {}",
                run + 1,
                bytes / 1e6,
                fmt_opt(rss_mb, 1)
            );
            results[t].secs.push(secs);
            results[t].bytes.push(bytes);
            results[t].rss.extend(rss_mb);
        }
    }
    // 3. The table.
    let mut md = String::new();
    writeln!(
        md,
        "v2 of a one-layer Debian bookworm rootfs ({:.0} MB zstd:chunked blob, {changed} replaced), pulled over v1; {runs} run(s), medians; load {}\n",
        blob_size as f64 / 1e6,
        load_average()
    )?;
    writeln!(
        md,
        "| tool | s | fetched MB | of the blob | peak RSS MB | podman 5 ÷ tool |\n|---|--:|--:|--:|--:|--:|"
    )?;
    let p5 = median(&mut results[1].secs.clone());
    let mut ok = true;
    for (t, tool) in tools.iter().enumerate() {
        let r = &mut results[t];
        let (s, b) = (median(&mut r.secs), median(&mut r.bytes));
        let rss = (!r.rss.is_empty()).then(|| median(&mut r.rss));
        writeln!(
            md,
            "| {tool} | {s:.2} | {:.1} | {:.1} % | {} | {:.1}× |",
            b / 1e6,
            100.0 * b / blob_size as f64,
            fmt_opt(rss, 1),
            p5 / s
        )?;
        if *tool == "ours" {
            ok = b <= 0.1 * blob_size as f64;
        }
    }
    println!("\n{md}");
    let out = target.join("bench-partial-results.md");
    fs::write(&out, &md)?;
    println!("written to {}", out.display());
    Ok(ok)
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
