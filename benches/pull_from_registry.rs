//! `cargo bench --bench pull_from_registry`: times `bootc-image pull` against
//! `skopeo copy docker://… containers-storage:…` and `podman pull`, from a registry on loopback.
//!
//! What it does, in order:
//! 1. the generated OS-like layouts of `copy_to_storage` (cached under `target/bench-fixtures/`):
//!    1 gzip layer, 40 gzip layers, 1 zstd layer; and five images made of the first 8, 16, 24, 32
//!    and 40 layers of the 40-layer one (bound images sharing their bases, as they do);
//! 2. starts Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 with a random port, its
//!    data under `target/bench-registry/`, plain HTTP marked insecure in a registries.conf, and
//!    pushes the images with skopeo (blobs the registry has are not pushed again);
//! 3. for each image and run: fresh stores on the loop-mounted ext4 of `copy_to_storage`, the page
//!    cache dropped (the registry's files are read cold), then skopeo, podman and us, each timed
//!    with its peak RSS and CPU time; the store checked;
//! 4. `bound-images pull` of the five images into bootc's store of a sysroot, against pulling them
//!    one after the other with podman;
//! 5. a table of medians with the targets (≥ 4× on 40 layers, ≥ 3× on one, RSS ≤ 32 MB, bound
//!    images ≥ 3×), also written to `target/bench-registry-results.md`.
//!
//! Environment: `BENCH_RUNS=n` (default 1), `BENCH_SMALL=1`, `BENCH_FIXTURES=gzip-1,…,bound`,
//! `BENCH_BASELINE=PATH` (an A/B: another build of bootc-image pulls in podman's place, alternately
//! with ours; the "podman" columns are then the baseline's; not for `bound`).

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
#[path = "common/storefs.rs"]
#[allow(dead_code, reason = "shared between the benches; each uses a part")]
mod storefs;

use anyhow::{Result, anyhow, bail};
use fixtures::{FIXTURES, FixtureInfo, TAG, check_store_named, ensure_fixtures};
use measure::{
    RSS_TARGET_MB, Sample, ToolResult, fmt_opt, load_average, measure, overlay_store_args,
    runs_from_env, settle_warm, small_from_env, version_of,
};
use registry::Registry;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use storefs::StoreFs;

/// One row of results.
#[derive(Debug)]
struct Row {
    name: String,
    layers: usize,
    blob_mb: f64,
    target: f64,
    skopeo: Option<ToolResult>,
    podman: Option<ToolResult>,
    ours: ToolResult,
}

/// A layout of the first `n` layers of the 40-layer one (blobs hardlinked).
fn prefix_layout(gzip40: &Path, dir: &Path, n: usize) -> Result<FixtureInfo> {
    let index: Value = serde_json::from_slice(&fs::read(gzip40.join("index.json"))?)?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("no manifest"))?;
    let blob = |d: &str| {
        gzip40
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(&fs::read(blob(mdigest))?)?;
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
    let mut config: Value = serde_json::from_slice(&fs::read(blob(config_digest))?)?;
    let layers: Vec<Value> = manifest["layers"]
        .as_array()
        .ok_or_else(|| anyhow!("no layers"))?
        .iter()
        .take(n)
        .cloned()
        .collect();
    let diff_ids: Vec<Value> = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| anyhow!("no diff_ids"))?
        .iter()
        .take(n)
        .cloned()
        .collect();
    config["rootfs"]["diff_ids"] = Value::from(diff_ids.clone());
    config["history"] = Value::from(
        (0..n)
            .map(|i| json!({"created": config["created"], "created_by": format!("bound {n}: layer {i}")}))
            .collect::<Vec<_>>(),
    );
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    for l in &layers {
        let d = l["digest"].as_str().unwrap_or_default();
        fs::hard_link(
            blob(d),
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )?;
    }
    let (cdesc, mdesc) = fixtures::write_config_and_manifest(dir, &config, layers.clone())?;
    let mut entry = mdesc.to_json();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": TAG});
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]}))?,
    )?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(FixtureInfo {
        config_digest: cdesc.digest,
        diff_ids: diff_ids
            .iter()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect(),
        blob_bytes: layers.iter().map(|l| l["size"].as_u64().unwrap_or(0)).sum(),
        tar_bytes: 0,
    })
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| image | layers | blobs MB | skopeo s | podman s | ours s | vs skopeo | vs podman | target | ours CPU s | skopeo RSS MB | podman RSS MB | ours RSS MB (with skopeo) | ours alone RSS MB | status |"
    );
    let _ = writeln!(
        s,
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    );
    for r in rows {
        let ours = r.ours.secs();
        let sk = r.skopeo.as_ref().and_then(ToolResult::secs);
        let pm = r.podman.as_ref().and_then(ToolResult::secs);
        let ratio = |x: Option<f64>| {
            x.zip(ours)
                .map_or_else(|| "—".to_owned(), |(a, b)| format!("{:.1}×", a / b))
        };
        let below = [sk, pm]
            .iter()
            .flatten()
            .zip(std::iter::repeat(ours))
            .any(|(a, b)| b.is_some_and(|b| a / b < r.target));
        // The target is of our process (the skopeo proxies it starts are skopeo's), when it
        // reported its own peak; else of the process tree.
        let rss_over = r
            .ours
            .own_rss()
            .or_else(|| r.ours.rss())
            .is_some_and(|m| m > RSS_TARGET_MB);
        let status = if let Some(e) = &r.ours.error {
            format!("ours failed: {e}")
        } else if below || rss_over {
            "below target".to_owned()
        } else {
            "ok".to_owned()
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} | ≥ {}× | {} | {} | {} | {} | {} | {status} |",
            r.name,
            r.layers,
            r.blob_mb,
            fmt_opt(sk, 2),
            fmt_opt(pm, 2),
            fmt_opt(ours, 2),
            ratio(sk),
            ratio(pm),
            r.target,
            fmt_opt(r.ours.cpu(), 2),
            fmt_opt(r.skopeo.as_ref().and_then(ToolResult::rss), 0),
            fmt_opt(r.podman.as_ref().and_then(ToolResult::rss), 0),
            fmt_opt(r.ours.rss(), 1),
            fmt_opt(r.ours.own_rss(), 1),
        );
    }
    s
}

fn record(
    label: &str,
    tool: &str,
    run: usize,
    runs: usize,
    res: &mut ToolResult,
    r: Result<Sample, String>,
) {
    measure::report_run(&format!("{label:8} {tool:6}"), run, runs, &r, 2, "");
    res.record(r);
}

fn run() -> Result<bool> {
    let ours = PathBuf::from(env!("CARGO_BIN_EXE_bootc-image"));
    let target_dir = measure::target_dir_of(&ours)?;
    let runs = runs_from_env()?;
    let only: Option<Vec<String>> = std::env::var("BENCH_FIXTURES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let wanted = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    if version_of("skopeo").is_none()
        || version_of("docker-registry").is_none()
            && !Path::new("/usr/bin/docker-registry").exists()
    {
        bail!("needs skopeo and docker-registry (scripts/install-deps.sh)");
    }
    let podman = version_of("podman");
    // An A/B: the baseline build in podman's place.
    let baseline = std::env::var_os("BENCH_BASELINE").map(PathBuf::from);

    // 1. Fixtures and the registry.
    let (key, fixtures_dir) = ensure_fixtures(&target_dir, small_from_env())?;
    let reg_dir = target_dir.join("bench-registry");
    let registry = Registry::start(&reg_dir)?;
    let mut images: Vec<(String, PathBuf, FixtureInfo, usize, f64)> = Vec::new();
    for spec in FIXTURES
        .iter()
        .filter(|s| s.name != "none-1" && wanted(s.name))
    {
        let layout = fixtures_dir.join(spec.name);
        let info = FixtureInfo::load(&layout)?;
        let target = if spec.layers > 1 { 4.0 } else { 3.0 };
        images.push((spec.name.to_owned(), layout, info, spec.layers, target));
    }
    let mut bound: Vec<(String, FixtureInfo)> = Vec::new();
    if wanted("bound") {
        for k in 1..=5 {
            let dir = target_dir.join(format!("bench-bound/{key}-{k}"));
            let info = prefix_layout(&fixtures_dir.join("gzip-40"), &dir, 8 * k)?;
            registry.push(&dir, &format!("bound-{k}"))?;
            bound.push((format!("bound-{k}"), info));
        }
    }
    for (name, layout, ..) in &images {
        registry.push(layout, name)?;
    }

    // 2. Measure.
    let store_fs = StoreFs::setup(&target_dir, &storefs::COPY_STORE_FS)?;
    store_fs.announce();
    let scratch = target_dir.join("bench-scratch");
    fs::create_dir_all(&scratch)?;
    let load_start = load_average();
    let mut warned = false;
    let mut rows = Vec::new();
    let conf = registry.conf.display().to_string();
    // SAFETY-free: our binary reads CONTAINERS_REGISTRIES_CONF; podman too.
    let env_prefix = |program: &Path| -> (PathBuf, Vec<String>) {
        (
            PathBuf::from("/usr/bin/env"),
            vec![
                format!("CONTAINERS_REGISTRIES_CONF={conf}"),
                program.display().to_string(),
            ],
        )
    };
    // `bootc-image pull IMAGE` (our build, or the baseline's) into the store at root/runroot.
    let pull_args = |program: &Path, root: &Path, runroot: &Path, image: &str| {
        let (program, mut args) = env_prefix(program);
        args.extend(overlay_store_args(root, runroot));
        args.extend([
            "pull".into(),
            "--progress".into(),
            "none".into(),
            image.to_string(),
        ]);
        (program, args)
    };
    let podman_path = PathBuf::from("/usr/bin/podman");
    for (name, _, info, layers, target) in &images {
        let image = registry.image(name);
        let mut sk = ToolResult::default();
        let mut pm = (podman.is_some() || baseline.is_some()).then(ToolResult::default);
        let mut ou = ToolResult::default();
        for run in 1..=runs {
            store_fs.clean("sk")?;
            let (root, runroot) = store_fs.store("sk");
            settle_warm(&mut warned, &[Path::new("skopeo")]);
            let args = vec![
                "copy".into(),
                "--insecure-policy".into(),
                "--src-tls-verify=false".into(),
                format!("docker://{image}"),
                format!(
                    "containers-storage:[overlay@{}+{}]{image}",
                    root.display(),
                    runroot.display()
                ),
            ];
            let r = measure(Path::new("skopeo"), &args, &scratch)?
                .and_then(|s| check_store_named(&root, info, &image).map(|()| s));
            record(name, "skopeo", run, runs, &mut sk, r);
            store_fs.clean("sk")?;
            if let Some(pm) = pm.as_mut() {
                store_fs.clean("pm")?;
                let (root, runroot) = store_fs.store("pm");
                let (program, args) = match &baseline {
                    Some(b) => {
                        settle_warm(&mut warned, &[b, Path::new("/usr/bin/skopeo")]);
                        pull_args(b, &root, &runroot, &image)
                    }
                    None => {
                        settle_warm(&mut warned, &[&podman_path]);
                        let mut args = overlay_store_args(&root, &runroot);
                        args.extend([
                            "pull".into(),
                            "-q".into(),
                            "--tls-verify=false".into(),
                            image.clone(),
                        ]);
                        (podman_path.clone(), args)
                    }
                };
                let r = measure(&program, &args, &scratch)?
                    .and_then(|s| check_store_named(&root, info, &image).map(|()| s));
                record(name, "podman", run, runs, pm, r);
                store_fs.clean("pm")?;
            }
            store_fs.clean("ou")?;
            let (root, runroot) = store_fs.store("ou");
            settle_warm(&mut warned, &[&ours, Path::new("/usr/bin/skopeo")]);
            let (program, args) = pull_args(&ours, &root, &runroot, &image);
            let r = measure(&program, &args, &scratch)?
                .and_then(|s| check_store_named(&root, info, &image).map(|()| s));
            record(name, "ours", run, runs, &mut ou, r);
            store_fs.clean("ou")?;
        }
        rows.push(Row {
            name: name.clone(),
            layers: *layers,
            blob_mb: info.blob_bytes as f64 / 1e6,
            target: *target,
            skopeo: Some(sk),
            podman: pm,
            ours: ou,
        });
    }
    if !bound.is_empty() {
        let mut pm = podman.as_ref().map(|_| ToolResult::default());
        let mut ou = ToolResult::default();
        let names: Vec<String> = bound.iter().map(|(n, _)| registry.image(n)).collect();
        for run in 1..=runs {
            if let Some(pm) = pm.as_mut() {
                store_fs.clean("pm")?;
                let (root, runroot) = store_fs.store("pm");
                settle_warm(&mut warned, &[&podman_path]);
                let script = names
                    .iter()
                    .map(|n| {
                        format!(
                            "podman --root {} --runroot {} --storage-driver overlay pull -q --tls-verify=false {n} >/dev/null",
                            root.display(),
                            runroot.display()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" && ");
                let r = measure(Path::new("/bin/sh"), &["-c".into(), script], &scratch)?;
                record("bound", "podman", run, runs, pm, r);
                store_fs.clean("pm")?;
            }
            // A sysroot whose bound-images.d names the five images; bootc's store inside it.
            store_fs.clean("ou")?;
            let (sysroot, _) = store_fs.store("ou");
            let units = sysroot.join("usr/share/containers/systemd");
            let dir = sysroot.join("usr/lib/bootc/bound-images.d");
            fs::create_dir_all(&units)?;
            fs::create_dir_all(&dir)?;
            for (k, n) in names.iter().enumerate() {
                let file = format!("b{k}.image");
                fs::write(units.join(&file), format!("[Image]\nImage={n}\n"))?;
                std::os::unix::fs::symlink(
                    format!("/usr/share/containers/systemd/{file}"),
                    dir.join(&file),
                )?;
            }
            let empty = sysroot.join("no-default-store");
            settle_warm(&mut warned, &[&ours, Path::new("/usr/bin/skopeo")]);
            let (program, mut args) = env_prefix(&ours);
            args.extend([
                "--sysroot".into(),
                sysroot.display().to_string(),
                "--root".into(),
                empty.display().to_string(),
                "bound-images".into(),
                "pull".into(),
                "--progress".into(),
                "none".into(),
            ]);
            let r = measure(&program, &args, &scratch)?.and_then(|s| {
                let root = sysroot.join("ostree/bootc/storage");
                bound
                    .iter()
                    .zip(&names)
                    .try_for_each(|((_, info), n)| check_store_named(&root, info, n))
                    .map(|()| s)
            });
            record("bound", "ours", run, runs, &mut ou, r);
            store_fs.clean("ou")?;
        }
        rows.push(Row {
            name: "5 bound images".into(),
            layers: 40,
            blob_mb: bound.last().map_or(0.0, |(_, i)| i.blob_bytes as f64 / 1e6),
            target: 3.0,
            skopeo: None,
            podman: pm,
            ours: ou,
        });
    }
    drop(store_fs);
    drop(registry);

    // 3. Report.
    let table = render(&rows);
    println!("\n{table}");
    let mut md = String::new();
    let _ = writeln!(md, "# pull_from_registry bench results\n");
    let _ = writeln!(
        md,
        "fixtures `{key}`, {runs} run(s) each (median), registry on loopback, cold page cache; skopeo {}, podman {}\n",
        version_of("skopeo").unwrap_or_default(),
        podman.unwrap_or_default()
    );
    let _ = writeln!(md, "{table}");
    let _ = writeln!(
        md,
        "load average at start: {load_start}, at end: {}",
        load_average()
    );
    let out = target_dir.join("bench-registry-results.md");
    fs::write(&out, md)?;
    println!("written to {}", out.display());
    Ok(rows.iter().all(|r| r.ours.error.is_none()))
}

fn main() -> ExitCode {
    measure::exit_code(run())
}
