//! The host-image fixture: an ostree sysroot holding the generated bench tree as a chunked,
//! ostree-encapsulated container image, imported by ostree-ext and deployed with
//! `ostree admin deploy`, as on a bootc host. Built with the `tests/ostree-fixture` tool from the
//! single layer of the cached `none-1` layout (see `fixtures.rs`), once per version key; the
//! result stays on the bench filesystem (`host_fs.rs`) for later runs.
//!
//! Used by `copy_host_image` through `#[path = "common/host_fixture.rs"] mod host_fixture;`.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Bump when the way the sysroot is made changes: it keys the cache.
pub const HOST_FIXTURE_VERSION: &str = "h1";
/// The image name the sysroot stores (and both tools give the copy).
pub const HOST_IMAGE: &str = "localhost/bench-host:latest";
/// The stateroot of the deployment.
const STATEROOT: &str = "bench-os";
/// Fake packages the tree is split into (`build --chunks`): each becomes a layer.
pub const CHUNKS: u32 = 40;
/// The kernel version of the placeholder `ostree admin deploy` needs.
const KVER: &str = "6.0.0";

/// A built sysroot.
#[derive(Debug, Clone)]
pub struct HostFixture {
    /// Cache key (`h1-v1-full-40c`).
    pub key: String,
    /// The sysroot (its repository is `ostree/repo`).
    pub sysroot: PathBuf,
    /// The ostree commit of the image's first layer (the whole tree).
    pub base_commit: String,
    /// The merge commit the image reference points to.
    pub merge_commit: String,
    /// Number of layers of the stored image.
    pub layers: usize,
}

impl HostFixture {
    /// The sysroot's repository.
    pub fn repo(&self) -> PathBuf {
        self.sysroot.join("ostree/repo")
    }

    fn to_json(&self) -> Value {
        json!({
            "key": self.key,
            "base_commit": self.base_commit,
            "merge_commit": self.merge_commit,
            "layers": self.layers,
        })
    }

    fn load(dir: &Path, key: &str) -> Option<Self> {
        let v: Value = serde_json::from_slice(&fs::read(dir.join("fixture.json")).ok()?).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        (s("key")? == key).then_some(())?;
        Some(HostFixture {
            key: key.to_owned(),
            sysroot: dir.join("sysroot"),
            base_commit: s("base_commit")?,
            merge_commit: s("merge_commit")?,
            layers: usize::try_from(v.get("layers")?.as_u64()?).ok()?,
        })
    }
}

/// Builds the fixture tool into its own target directory, `target_dir/ostree-fixture` (a no-op
/// when it is up to date), and returns its path. Its own directory, so that whatever else builds
/// or cleans `tests/ostree-fixture/target` meanwhile cannot pull the binary from under the bench.
pub fn build_fixture_tool(manifest_dir: &Path, target_dir: &Path) -> Result<PathBuf> {
    let manifest = manifest_dir.join("tests/ostree-fixture/Cargo.toml");
    let tool_target = target_dir.join("ostree-fixture");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    println!(
        "fixture tool: cargo build --release --manifest-path {} --target-dir {}",
        manifest.display(),
        tool_target.display()
    );
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&tool_target)
        .stdin(Stdio::null())
        .status()
        .context("running cargo build for tests/ostree-fixture")?;
    ensure!(
        status.success(),
        "building tests/ostree-fixture failed ({status})"
    );
    let bin = tool_target.join("release/ostree-fixture");
    ensure!(bin.exists(), "{} missing after the build", bin.display());
    Ok(bin)
}

/// Runs a fixture-building command, echoing it; returns its stdout, fails with its stderr.
fn run_logged(cmd: &mut Command) -> Result<String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  + {shown}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The blob of the single layer of the `none-1` layout (an uncompressed tar).
pub fn single_layer_tar(layout: &Path) -> Result<PathBuf> {
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value = serde_json::from_slice(&fs::read(layout.join("index.json"))?)?;
    let m = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("{}: no manifest", layout.display()))?;
    let manifest: Value = serde_json::from_slice(&fs::read(blob(m))?)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    ensure!(
        layers.len() == 1,
        "{} has {} layers, expected 1",
        layout.display(),
        layers.len()
    );
    let d = layers[0]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("{}: layer without digest", layout.display()))?;
    Ok(blob(d))
}

/// Turns the extracted bench tree into what a bootable ostree commit holds: a kernel under
/// `usr/lib/modules`, `/etc` as `/usr/etc`, an empty `/var` (the dpkg database moves to
/// `usr/lib/sysimage/dpkg`, as rpm-ostree moves the rpmdb).
fn make_bootable(rootfs: &Path) -> Result<()> {
    let modules = rootfs.join("usr/lib/modules").join(KVER);
    fs::create_dir_all(&modules)?;
    fs::write(
        modules.join("vmlinuz"),
        "placeholder kernel for ostree admin deploy\n",
    )?;
    let etc = rootfs.join("etc");
    if etc.is_dir() && !rootfs.join("usr/etc").exists() {
        fs::rename(&etc, rootfs.join("usr/etc"))?;
    }
    let var = rootfs.join("var");
    let dpkg = var.join("lib/dpkg");
    if dpkg.is_dir() {
        fs::create_dir_all(rootfs.join("usr/lib/sysimage"))?;
        fs::rename(&dpkg, rootfs.join("usr/lib/sysimage/dpkg"))?;
    }
    if var.exists() {
        fs::remove_dir_all(&var)?;
    }
    fs::create_dir(&var)?;
    Ok(())
}

/// Removes an earlier fixture directory (its sysroot's deployments are immutable).
fn remove_fixture_dir(tool: &Path, dir: &Path) -> Result<()> {
    let sysroot = dir.join("sysroot");
    if sysroot.join("ostree").is_dir() {
        run_logged(
            Command::new(tool)
                .arg("cleanup")
                .arg("--sysroot")
                .arg(&sysroot),
        )?;
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// The line `prefix VALUE` of a tool's output.
fn field(out: &str, prefix: &str) -> Result<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| anyhow!("no {prefix:?} line in the fixture tool's output"))
}

/// Makes sure `base/fx-<key>/sysroot` holds the image built from `layout` (the `none-1` layout
/// of the fixtures keyed `tree_key`), building it if not. Fixtures of other versions are removed.
pub fn ensure_host_fixture(
    base: &Path,
    tool: &Path,
    layout: &Path,
    tree_key: &str,
) -> Result<HostFixture> {
    let key = format!("{HOST_FIXTURE_VERSION}-{tree_key}-{CHUNKS}c");
    let dir = base.join(format!("fx-{key}"));
    if let Some(f) = HostFixture::load(&dir, &key) {
        println!("host fixture: cached in {}", dir.display());
        return Ok(f);
    }
    // A partial build of this key, and fixtures of other versions, go; other scales stay.
    let current = format!("fx-{HOST_FIXTURE_VERSION}-");
    for entry in fs::read_dir(base)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path() == dir || (name.starts_with("fx-") && !name.starts_with(&current)) {
            remove_fixture_dir(tool, &entry.path())?;
        }
    }
    println!("host fixture: building {} ...", dir.display());
    let start = Instant::now();
    let rootfs = dir.join("rootfs");
    let build_repo = dir.join("build-repo");
    let oci = dir.join("oci");
    let sysroot = dir.join("sysroot");
    fs::create_dir_all(&rootfs)?;
    let tar = single_layer_tar(layout)?;
    run_logged(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("--same-owner")
            .arg("-xpf")
            .arg(&tar)
            .arg("-C")
            .arg(&rootfs),
    )?;
    make_bootable(&rootfs)?;
    run_logged(
        Command::new(tool)
            .arg("build")
            .arg("--rootfs")
            .arg(&rootfs)
            .arg("--repo")
            .arg(&build_repo)
            .arg("--oci")
            .arg(&oci)
            .args(["--tag", "bench", "--chunks", &CHUNKS.to_string()]),
    )?;
    let out = run_logged(
        Command::new(tool)
            .arg("deploy")
            .arg("--sysroot")
            .arg(&sysroot)
            .arg("--oci")
            .arg(&oci)
            .args([
                "--tag",
                "bench",
                "--imgref-name",
                HOST_IMAGE,
                "--stateroot",
                STATEROOT,
            ]),
    )?;
    let layers = out
        .lines()
        .filter(|l| l.starts_with("  layer sha256:") && l.contains(" ref "))
        .count();
    let fixture = HostFixture {
        key: key.clone(),
        sysroot,
        base_commit: field(&out, "base commit:")?,
        merge_commit: field(&out, "merge commit:")?,
        layers,
    };
    for d in [&rootfs, &build_repo, &oci] {
        fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
    }
    fs::write(
        dir.join("fixture.json"),
        serde_json::to_vec_pretty(&fixture.to_json())?,
    )?;
    println!(
        "host fixture: built in {:.1} s ({} layers, base commit {})",
        start.elapsed().as_secs_f64(),
        fixture.layers,
        fixture.base_commit
    );
    Ok(fixture)
}
