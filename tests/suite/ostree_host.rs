//! OSTree host images: `copy-to-storage` of the image a bootc system runs from.
//!
//! The fixture (`scripts/ostree-fixture.sh --keep`, built once per test binary run) is a scratch
//! sysroot holding two deployments of a small chunked ostree-encapsulated image — `base` (7
//! layers) and `derived` (base plus one plain tar layer; the default deployment) — and the oracle:
//! both images exported again by ostree-ext 0.15's own exporter into an OCI layout
//! (`$work/export`, tags `base` and `derived`).
//!
//! Our copy must carry the same layers as the oracle (same DiffIDs, layer by layer), give the same
//! tree as the oracle copied in by skopeo, hardlink the bare repository's content objects into the
//! layers and never modify the repository. Known, deliberate difference: hardlinked files keep the
//! repository object's xattrs, while the oracle's tar carries none, so trees are compared without
//! xattrs and the xattr is checked on its own.
//!
//! The fixture sysroot is shared and only read; tests that break or write to a sysroot use a
//! private `cp -a` copy. Stores live on the fixture's filesystem (`/var/tmp`) so objects can be
//! hardlinked.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;

use crate::errors::assert_seed_listed;
use crate::fixture::{REF_NAME, sha256_digest};
use crate::fixture::{decompress_any, digest_hex};
use crate::util::{
    Driver, Node, TestStore, Tree, describe, diff_trees, require_tools, run, run_ok, walk_tree,
};

/// The base image as the sysroot stores it.
const BASE: &str = "docker://localhost/ostree-fixture:base";
/// The derived image (the default deployment).
const DERIVED: &str = "docker://localhost/ostree-fixture:derived";
/// Layers of the base image: the ostree commit layer and six chunks.
const BASE_LAYERS: usize = 7;
/// Layers of the derived image: base's plus the derived tar layer.
const DERIVED_LAYERS: usize = 8;
/// The name our copies get in the tests' stores.
const NAME: &str = "localhost/host:latest";
/// `--target`'s default.
const DEFAULT_TARGET: &str = "localhost/bootc:latest";
/// A file with a `user.fixture=hello` xattr in the rootfs (kept by the repository object).
const XATTR_FILE: &str = "usr/share/fixture/xattr.txt";
/// The big regular file of the rootfs (with a hard link `data-hardlink.bin`).
const DATA_FILE: &str = "usr/share/fixture/data.bin";
/// A small regular file with content found nowhere else in the rootfs.
const SMALL_FILE: &str = "usr/share/fixture/small.txt";
/// Where fixtures and the tests' stores go: one filesystem, so objects can be hardlinked.
const WORK_PARENT: &str = "/var/tmp";
/// Fixture work dirs are `WORK_PARENT/bt-ostree-<pid of the test binary>`.
const WORK_PREFIX: &str = "bt-ostree-";

/// The fixture as `scripts/ostree-fixture.sh --keep` leaves it.
#[derive(Debug)]
struct HostFixture {
    /// `$OSTREE_FIXTURE_WORK`.
    work: PathBuf,
    /// The sysroot with the two deployments.
    sysroot: PathBuf,
    /// The oracle: ostree-ext's export of both images (tags `base`, `derived`).
    export: PathBuf,
    /// The root filesystem the base image was committed from.
    rootfs: PathBuf,
}

impl HostFixture {
    /// The sysroot's repository.
    fn repo(&self) -> PathBuf {
        self.sysroot.join("ostree/repo")
    }

    /// `oci:EXPORT:TAG`: the oracle image for skopeo.
    fn oracle_source(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.export.display())
    }

    /// A file of the rootfs the base image was committed from.
    fn rootfs_file(&self, rel: &str) -> Vec<u8> {
        let p = self.rootfs.join(rel);
        fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

/// The repository root (above `CARGO_MANIFEST_DIR`, the command line's crate).
fn project_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The fixture tool binary as `scripts/ostree-fixture.sh` builds it.
fn fixture_tool() -> PathBuf {
    project_dir().join("tests/ostree-fixture/target/release/ostree-fixture")
}

/// The fixture, built on first use (once per test binary run); panics in every test if the build
/// failed.
fn host_fixture() -> &'static HostFixture {
    static FIXTURE: OnceLock<Result<HostFixture, String>> = OnceLock::new();
    match FIXTURE.get_or_init(build_fixture) {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    }
}

/// Runs `scripts/ostree-fixture.sh --keep` into a fresh work dir of this process.
fn build_fixture() -> Result<HostFixture, String> {
    require_tools();
    remove_stale_work_dirs();
    let work = Path::new(WORK_PARENT).join(format!("{WORK_PREFIX}{}", std::process::id()));
    remove_work_dir(&work);
    let start = Instant::now();
    let out = run(
        Command::new(project_dir().join("scripts/ostree-fixture.sh"))
            .arg("--keep")
            .env("OSTREE_FIXTURE_WORK", &work)
            // The script runs the tool from tests/ostree-fixture/target: keep cargo building there.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .current_dir(project_dir()),
    );
    if !out.status.success() {
        return Err(format!(
            "building the ostree fixture (OSTREE_FIXTURE_WORK={} scripts/ostree-fixture.sh \
             --keep) failed\n{}",
            work.display(),
            describe(&out)
        ));
    }
    eprintln!(
        "ostree fixture built in {:.1} s at {}",
        start.elapsed().as_secs_f64(),
        work.display()
    );
    let fx = HostFixture {
        sysroot: work.join("sysroot"),
        export: work.join("export"),
        rootfs: work.join("rootfs"),
        work,
    };
    for p in [fx.repo(), fx.export.join("index.json"), fx.rootfs.clone()] {
        if !p.exists() {
            return Err(format!(
                "the ostree fixture has no {} (script output:\n{})",
                p.display(),
                describe(&out)
            ));
        }
    }
    Ok(fx)
}

/// Removes the fixture work dirs left by earlier runs whose process is gone.
fn remove_stale_work_dirs() {
    let Ok(rd) = fs::read_dir(WORK_PARENT) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(WORK_PREFIX) else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() {
            remove_work_dir(&e.path());
        }
    }
}

/// Removes a fixture work dir; its deployments are immutable, so the tool's `cleanup` (or
/// `chattr -R -i` when the tool is not built) goes first.
fn remove_work_dir(work: &Path) {
    if !work.exists() {
        return;
    }
    let sysroot = work.join("sysroot");
    if sysroot.exists() {
        let tool = fixture_tool();
        let out = if tool.exists() {
            run(Command::new(&tool)
                .args(["cleanup", "--sysroot"])
                .arg(&sysroot))
        } else {
            run(Command::new("chattr")
                .args(["-R", "-f", "-i"])
                .arg(&sysroot))
        };
        if !out.status.success() {
            eprintln!(
                "warning: cleaning up {}: {}",
                sysroot.display(),
                describe(&out)
            );
        }
    }
    if let Err(e) = fs::remove_dir_all(work) {
        eprintln!("warning: cannot remove {}: {e}", work.display());
    }
}

/// An empty overlay store on the fixture's filesystem (a short path: the runroot stays well
/// under podman's 50 characters).
fn host_store() -> TestStore {
    let fx = host_fixture();
    let store = TestStore::new_in(Driver::Overlay, Path::new(WORK_PARENT));
    let dev = |p: &Path| {
        fs::metadata(p)
            .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
            .dev()
    };
    assert_eq!(
        dev(&store.dir),
        dev(&fx.work),
        "the store ({}) and the fixture ({}) must share a filesystem",
        store.dir.display(),
        fx.work.display()
    );
    store
}

/// A private copy of the fixture sysroot inside the store's dir (`cp -a`: hardlinks between the
/// repository and the deployments are kept; the immutable bit is not).
fn private_sysroot(store: &TestStore) -> PathBuf {
    let dest = store.scratch("sysroot");
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(&host_fixture().sysroot)
            .arg(&dest),
    );
    dest
}

/// `bootc-image --sysroot SYSROOT --root … copy-to-storage [--source SRC] [--target NAME]`.
fn host_copy(
    store: &TestStore,
    sysroot: &Path,
    source: Option<&str>,
    target: Option<&str>,
) -> Output {
    let mut c = store.ours_cmd();
    c.arg("--sysroot").arg(sysroot).arg("copy-to-storage");
    if let Some(s) = source {
        c.args(["--source", s]);
    }
    if let Some(t) = target {
        c.args(["--target", t]);
    }
    run(&mut c)
}

/// Like [`host_copy`], panics unless it succeeds; returns stdout.
fn host_copy_ok(
    store: &TestStore,
    sysroot: &Path,
    source: Option<&str>,
    target: Option<&str>,
) -> String {
    let out = host_copy(store, sysroot, source, target);
    assert!(
        out.status.success(),
        "bootc-image --sysroot {} copy-to-storage --source {source:?} --target {target:?} \
         failed\n{}",
        sysroot.display(),
        describe(&out)
    );
    String::from_utf8(out.stdout).expect("stdout is UTF-8")
}

/// The counts of our copy's summary line: `Stored NAME from SRC (W layers written, R reused; L
/// files hardlinked from the repository, F written)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    layers_written: usize,
    layers_reused: usize,
    files_linked: usize,
    files_written: usize,
}

/// Parses the summary line of our copy's stdout.
fn counts(stdout: &str) -> Counts {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Stored "))
        .unwrap_or_else(|| panic!("no `Stored …` line in {stdout:?}"));
    let inner = line
        .rsplit_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no `(…)` counts in {line:?}"));
    let mut c = BTreeMap::new();
    for part in inner.split([',', ';']) {
        let (n, what) = part
            .trim()
            .split_once(' ')
            .unwrap_or_else(|| panic!("count {part:?} in {line:?}"));
        let n: usize = n
            .parse()
            .unwrap_or_else(|e| panic!("count {part:?} in {line:?}: {e}"));
        c.insert(what.to_string(), n);
    }
    let get = |k: &str| {
        *c.get(k)
            .unwrap_or_else(|| panic!("no `{k}` count in {line:?}"))
    };
    Counts {
        layers_written: get("layers written"),
        layers_reused: get("reused"),
        files_linked: get("files hardlinked from the repository"),
        files_written: get("written"),
    }
}

/// The strings of a JSON array.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_string())
        .collect()
}

/// One image of an OCI layout, read without any tool.
#[derive(Debug)]
struct LayoutImage {
    /// The config.
    config: Value,
    /// DiffIDs recomputed from the layer blobs (decompressed, sha256).
    blob_diff_ids: Vec<String>,
    /// The layer tars (decompressed), bottom first.
    tars: Vec<Vec<u8>>,
}

impl LayoutImage {
    /// Directories of the merged tree whose mtime is the extraction time: the topmost layer
    /// that has them holds no entry for them, only entries below them (ostree-ext's chunks hold
    /// `usr/share/fixture/data.bin` but no `usr/share/fixture/`), so the extractor creates them.
    fn implicit_dirs(&self) -> Vec<String> {
        // For every path: is it an explicit entry of the topmost layer that has it?
        let mut top_explicit: BTreeMap<String, bool> = BTreeMap::new();
        for tar in &self.tars {
            let mut explicit = BTreeSet::new();
            let mut touched = BTreeSet::new();
            let mut ar = tar::Archive::new(&tar[..]);
            for e in ar.entries().expect("read layer tar") {
                let e = e.expect("layer tar entry");
                let p = e.path().expect("entry path").to_string_lossy().into_owned();
                let p = p.trim_start_matches("./").trim_end_matches('/').to_string();
                if p.is_empty() {
                    continue;
                }
                let mut a = Path::new(&p).parent();
                while let Some(d) = a.filter(|d| !d.as_os_str().is_empty()) {
                    touched.insert(d.to_string_lossy().into_owned());
                    a = d.parent();
                }
                touched.insert(p.clone());
                explicit.insert(p);
            }
            for p in touched {
                let is_explicit = explicit.contains(&p);
                top_explicit.insert(p, is_explicit);
            }
        }
        top_explicit
            .into_iter()
            .filter(|(_, explicit)| !explicit)
            .map(|(p, _)| p)
            .collect()
    }
}

/// Reads image `tag` (or the only image when `None`) of the OCI layout `dir`.
fn read_layout(dir: &Path, tag: Option<&str>) -> LayoutImage {
    let read = |p: PathBuf| fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    let blob = |d: &str| read(dir.join("blobs/sha256").join(digest_hex(d)));
    let json = |b: Vec<u8>| -> Value { serde_json::from_slice(&b).expect("JSON") };
    let index = json(read(dir.join("index.json")));
    let manifests = index["manifests"].as_array().expect("index manifests");
    let desc = match tag {
        Some(t) => manifests
            .iter()
            .find(|m| m["annotations"][REF_NAME] == t)
            .unwrap_or_else(|| panic!("no tag {t} in {}: {index}", dir.display())),
        None => {
            assert_eq!(manifests.len(), 1, "{}: {index}", dir.display());
            &manifests[0]
        }
    };
    let manifest = json(blob(desc["digest"].as_str().expect("manifest digest")));
    let config = json(blob(manifest["config"]["digest"].as_str().expect("config")));
    let tars: Vec<Vec<u8>> = manifest["layers"]
        .as_array()
        .expect("manifest layers")
        .iter()
        .map(|l| decompress_any(&blob(l["digest"].as_str().expect("digest"))))
        .collect();
    LayoutImage {
        config,
        blob_diff_ids: tars.iter().map(|t| sha256_digest(t)).collect(),
        tars,
    }
}

/// The oracle export of `tag`, checked for what the comparisons rely on.
fn oracle(tag: &str, layers: usize) -> LayoutImage {
    let img = read_layout(&host_fixture().export, Some(tag));
    assert_eq!(img.blob_diff_ids.len(), layers, "oracle {tag}: layer count");
    // ostree-ext 0.15 appends the exported DiffIDs to the stored config's (so they are doubled);
    // the blob-derived ones are the truth, and they must at least end the config's list.
    let cfg = strings(&img.config["rootfs"]["diff_ids"]);
    assert!(
        cfg.ends_with(&img.blob_diff_ids),
        "oracle {tag}: config diff_ids {cfg:?} do not end with the blobs' {:?}",
        img.blob_diff_ids
    );
    img
}

/// The DiffIDs of the layer chain of image `name` in `store` from layers.json, bottom first.
fn layer_chain(store: &TestStore, name: &str) -> Vec<String> {
    let id = store.inspect(name)["Id"]
        .as_str()
        .expect("image Id")
        .to_string();
    let image = store
        .image_records()
        .into_iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no images.json record {id}"));
    let layers: BTreeMap<String, Value> = store
        .layer_records()
        .into_iter()
        .map(|r| (r["id"].as_str().expect("layer id").to_string(), r))
        .collect();
    let mut chain = Vec::new();
    let mut next = image["layer"].as_str().map(str::to_string);
    while let Some(l) = next {
        let rec = layers
            .get(&l)
            .unwrap_or_else(|| panic!("layer {l} not in layers.json"));
        chain.push(
            rec["diff-digest"]
                .as_str()
                .expect("diff-digest")
                .to_string(),
        );
        next = rec["parent"].as_str().map(str::to_string);
        assert!(chain.len() <= layers.len(), "parent loop in layers.json");
    }
    chain.reverse();
    chain
}

/// Paths `overlay/*/diff/REL` of `store` that exist.
fn in_diffs(store: &TestStore, rel: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(store.root.join("overlay"))
        .expect("read overlay dir")
        .map(|e| e.expect("entry").path().join("diff").join(rel))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    out.sort();
    out
}

/// The only `overlay/*/diff/REL` of `store`.
fn one_in_diffs(store: &TestStore, rel: &str) -> PathBuf {
    let found = in_diffs(store, rel);
    assert_eq!(found.len(), 1, "{rel} in the layer diffs: {found:?}");
    found.into_iter().next().expect("one")
}

/// The content objects (`objects/*/*.file`) of a repository.
fn content_objects(repo: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(repo.join("objects")).expect("read objects") {
        let d = d.expect("entry").path();
        if !d.is_dir() {
            continue;
        }
        for f in fs::read_dir(&d).expect("read objects subdir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|x| x == "file") {
                out.push(f);
            }
        }
    }
    out.sort();
    out
}

/// The content object of `repo` that is the inode of `file`, if any.
fn object_with_inode(repo: &Path, file: &Path) -> Option<PathBuf> {
    let md = fs::symlink_metadata(file).expect("lstat");
    content_objects(repo).into_iter().find(|o| {
        let m = fs::symlink_metadata(o).expect("lstat object");
        m.dev() == md.dev() && m.ino() == md.ino()
    })
}

/// The only regular content object of `repo` whose bytes are `content`.
fn object_with_content(repo: &Path, content: &[u8]) -> PathBuf {
    let found: Vec<PathBuf> = content_objects(repo)
        .into_iter()
        .filter(|o| {
            let m = fs::symlink_metadata(o).expect("lstat object");
            m.is_file()
                && m.len() == content.len() as u64
                && fs::read(o).expect("read object") == content
        })
        .collect();
    assert_eq!(found.len(), 1, "objects with that content: {found:?}");
    found.into_iter().next().expect("one")
}

/// The checksum of a content object from its path (`objects/ab/cdef….file` → `abcdef…`).
fn object_checksum(obj: &Path) -> String {
    let dir = obj.parent().and_then(Path::file_name).expect("object dir");
    let stem = obj.file_stem().expect("object file stem");
    format!("{}{}", dir.to_string_lossy(), stem.to_string_lossy())
}

/// `ostree fsck` of `repo` must succeed and report no error.
fn assert_fsck_clean(repo: &Path, when: &str) {
    let out = run(Command::new("ostree")
        .arg("fsck")
        .arg(format!("--repo={}", repo.display())));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.to_lowercase().contains("corrupt"),
        "ostree fsck {when}\n{}",
        describe(&out)
    );
}

/// The state of a repository for "left unchanged" checks: every path with type, mode, owner,
/// size, content, link target, xattrs and mtime. Link counts are left out: hardlinking an object
/// into a store raises them, which is the point.
fn repo_state(repo: &Path) -> Tree {
    let mut t = walk_tree(repo);
    for n in t.nodes.values_mut() {
        n.nlink = 0;
    }
    t
}

/// Asserts that `repo` is as `before`.
fn assert_repo_unchanged(repo: &Path, before: &Tree, when: &str) {
    let d = diff_trees(before, &repo_state(repo), &[]);
    assert!(
        d.is_empty(),
        "the repository changed {when}:\n{}",
        d.join("\n")
    );
}

/// A node with its link count cleared, for comparing one file's metadata and content.
fn without_nlink(n: &Node) -> Node {
    Node {
        nlink: 0,
        ..n.clone()
    }
}

/// The metadata and content of one file (lstat), as [`walk_tree`] records it.
fn node_of(path: &Path) -> Node {
    let t = walk_tree(path);
    without_nlink(t.nodes.get("").expect("the walked path itself"))
}

/// Copies image `source` with our binary, checks its DiffIDs (podman's inspect, layers.json, a
/// skopeo export) against the oracle's `tag`.
fn assert_diff_ids_match_oracle(tag: &str, source: &str, layers: usize) {
    let fx = host_fixture();
    let oracle = oracle(tag, layers);
    let store = host_store();
    let stdout = host_copy_ok(&store, &fx.sysroot, Some(source), Some(NAME));
    let c = counts(&stdout);
    assert_eq!(
        (c.layers_written, c.layers_reused),
        (layers, 0),
        "layers written/reused in an empty store: {stdout}"
    );
    assert!(c.files_linked > 0, "no file hardlinked: {stdout}");
    assert!(stdout.contains(NAME), "stdout should name {NAME}: {stdout}");
    assert!(
        stdout.contains(source),
        "stdout should name {source}: {stdout}"
    );

    let inspect = store.inspect(NAME);
    let ours = strings(&inspect["RootFS"]["Layers"]);
    assert_eq!(
        ours.len(),
        layers,
        "our config's diff_ids must not be doubled as ostree-ext 0.15's are: {ours:?}"
    );
    assert_eq!(
        ours, oracle.blob_diff_ids,
        "RootFS.Layers (ours) vs the oracle's layer blobs, layer by layer"
    );
    let digest = inspect["Digest"].as_str().expect("Digest");
    assert!(
        stdout.contains(digest),
        "stdout should hold the manifest digest {digest}: {stdout}"
    );
    assert_eq!(
        inspect["Labels"], oracle.config["config"]["Labels"],
        "config labels (ours vs oracle)"
    );
    assert_eq!(
        layer_chain(&store, NAME),
        oracle.blob_diff_ids,
        "layers.json diff-digest chain"
    );

    let out = store.scratch("export");
    store.skopeo_copy_out(NAME, &out);
    let exported = read_layout(&out, None);
    assert_eq!(
        exported.blob_diff_ids, oracle.blob_diff_ids,
        "skopeo export of ours: DiffIDs of its layer blobs"
    );
    assert_eq!(
        strings(&exported.config["rootfs"]["diff_ids"]),
        oracle.blob_diff_ids,
        "skopeo export of ours: config diff_ids"
    );
}

/// Base: 7 layers, DiffIDs as ostree-ext's export.
#[test]
fn diff_ids_base() {
    assert_diff_ids_match_oracle("base", BASE, BASE_LAYERS);
}

/// Derived: 8 layers (the derived tar layer included), DiffIDs as ostree-ext's export.
#[test]
fn diff_ids_derived() {
    assert_diff_ids_match_oracle("derived", DERIVED, DERIVED_LAYERS);
}

/// A walked tree prepared for comparison with the oracle's: no root dir, no xattrs (ours keep
/// the repository objects'), no link counts (ours count the repository's and the deployments'
/// links too; hard-link groups inside the tree are still compared).
fn comparable(mut t: Tree) -> Tree {
    t.nodes.remove("");
    for n in t.nodes.values_mut() {
        n.xattrs.clear();
        n.nlink = 0;
    }
    t
}

/// Our copy of `source` mounted by podman equals the oracle's `tag` copied in by skopeo (mtimes
/// of directories the extraction creates implicitly are not compared: they are "now" on both
/// sides).
fn assert_tree_matches_oracle(tag: &str, source: &str, layers: usize) {
    let fx = host_fixture();
    let implicit = oracle(tag, layers).implicit_dirs();
    let skip_mtime: Vec<&str> = implicit.iter().map(String::as_str).collect();
    let reference = host_store();
    reference.skopeo_copy_in(&fx.oracle_source(tag), NAME);
    let ours = host_store();
    host_copy_ok(&ours, &fx.sysroot, Some(source), Some(NAME));

    let ta = walk_tree(&reference.image_mount(NAME));
    let tb = walk_tree(&ours.image_mount(NAME));
    reference.image_umount(NAME);
    ours.image_umount(NAME);

    // The deliberate difference: our file is the repository object, xattr included.
    let xattr = |t: &Tree| {
        t.nodes
            .get(XATTR_FILE)
            .unwrap_or_else(|| panic!("no {XATTR_FILE} in the tree"))
            .xattrs
            .clone()
    };
    assert_eq!(
        xattr(&tb).get("user.fixture").map(Vec::as_slice),
        Some(&b"hello"[..]),
        "our {XATTR_FILE} keeps the object's user.fixture xattr"
    );
    assert!(
        xattr(&ta).is_empty(),
        "the oracle's tar was expected to carry no xattrs (ostree-ext 0.15): {:?}",
        xattr(&ta)
    );

    let d = diff_trees(&comparable(ta), &comparable(tb), &skip_mtime);
    assert!(
        d.is_empty(),
        "mounted trees differ (oracle via skopeo vs ours; mtimes not compared for the \
         implicitly created {skip_mtime:?}):\n{}",
        d.join("\n")
    );
}

/// The derived image's tree equals the oracle's (paths, types, modes, owners, sizes, content,
/// link targets, hard-link groups, mtimes).
#[test]
fn tree_derived() {
    assert_tree_matches_oracle("derived", DERIVED, DERIVED_LAYERS);
}

/// The base image's tree equals the oracle's.
#[test]
fn tree_base() {
    assert_tree_matches_oracle("base", BASE, BASE_LAYERS);
}

/// Zero copy: the files in the layer diffs are the repository's content objects.
#[test]
fn objects_hardlinked() {
    let fx = host_fixture();
    let store = host_store();
    let stdout = host_copy_ok(&store, &fx.sysroot, Some(BASE), Some(NAME));
    let c = counts(&stdout);
    assert!(c.files_linked > 0, "no file hardlinked: {stdout}");

    for rel in [DATA_FILE, SMALL_FILE, XATTR_FILE] {
        let ours = one_in_diffs(&store, rel);
        let obj = object_with_inode(&fx.repo(), &ours).unwrap_or_else(|| {
            panic!(
                "{} is not hardlinked to any object of {}",
                ours.display(),
                fx.repo().display()
            )
        });
        assert_eq!(
            fs::read(&obj).expect("read object"),
            fx.rootfs_file(rel),
            "{rel}: object {} content",
            obj.display()
        );
    }
    // The hard link pair of the rootfs is one inode in the layer too.
    let data = fs::symlink_metadata(one_in_diffs(&store, DATA_FILE)).expect("lstat");
    let pair = fs::symlink_metadata(one_in_diffs(&store, "usr/share/fixture/data-hardlink.bin"))
        .expect("lstat");
    assert_eq!(
        (data.dev(), data.ino()),
        (pair.dev(), pair.ino()),
        "data.bin and data-hardlink.bin"
    );
}

/// The copy never modifies the repository, and neither does using the image: a container
/// writing a new file and modifying files of the image (copy-up) leaves the objects alone.
#[test]
fn repo_unchanged() {
    let store = host_store();
    let sysroot = private_sysroot(&store);
    let repo = sysroot.join("ostree/repo");
    assert_fsck_clean(&repo, "before the copy");
    let before = repo_state(&repo);

    host_copy_ok(&store, &sysroot, Some(DERIVED), Some(NAME));
    assert_repo_unchanged(&repo, &before, "by the copy");
    assert_fsck_clean(&repo, "after the copy");

    // The objects behind two image files: one to modify, one to chmod, through a container.
    let small_diff = one_in_diffs(&store, SMALL_FILE);
    let small_obj = object_with_inode(&repo, &small_diff).expect("small.txt is an object");
    let data_diff = one_in_diffs(&store, DATA_FILE);
    let data_obj = object_with_inode(&repo, &data_diff).expect("data.bin is an object");
    let small_before = node_of(&small_obj);
    let data_before = node_of(&data_obj);
    let after_copy = repo_state(&repo);

    store.podman_ok(&["create", "--name", "hostctr", NAME, "/usr/bin/hello"]);
    let mnt = PathBuf::from(store.podman_ok(&["mount", "hostctr"]).trim());
    fs::write(
        mnt.join("usr/share/fixture/new-file"),
        b"written by a container\n",
    )
    .expect("write a new file in the container");
    let small = mnt.join(SMALL_FILE);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&small)
        .expect("open small.txt in the container");
    f.write_all(b"appended in the container\n")
        .expect("append to small.txt");
    drop(f);
    let data = mnt.join(DATA_FILE);
    fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod data.bin in the container");
    assert!(
        fs::read_to_string(&small)
            .expect("read back")
            .ends_with("appended in the container\n"),
        "the container sees its write"
    );
    store.podman_ok(&["umount", "hostctr"]);
    store.podman_ok(&["rm", "hostctr"]);

    assert_repo_unchanged(&repo, &after_copy, "by the container's writes");
    assert_eq!(
        node_of(&small_obj),
        small_before,
        "object {} of {SMALL_FILE}",
        small_obj.display()
    );
    assert_eq!(
        node_of(&data_obj),
        data_before,
        "object {} of {DATA_FILE}",
        data_obj.display()
    );
    assert_eq!(
        node_of(&small_diff),
        small_before,
        "the image's own {SMALL_FILE} (still the object)"
    );
    assert_fsck_clean(&repo, "after the container's writes");
}

/// Without --source the default deployment's image (derived) is copied, as localhost/bootc.
#[test]
fn default_deployment() {
    let fx = host_fixture();
    let oracle = oracle("derived", DERIVED_LAYERS);
    let store = host_store();
    let stdout = host_copy_ok(&store, &fx.sysroot, None, None);
    assert!(
        stdout.contains(DEFAULT_TARGET) && stdout.contains(DERIVED),
        "stdout should name {DEFAULT_TARGET} and {DERIVED}: {stdout}"
    );
    assert_eq!(
        strings(&store.inspect(DEFAULT_TARGET)["RootFS"]["Layers"]),
        oracle.blob_diff_ids,
        "RootFS.Layers of the default deployment's copy"
    );
    let listed = store.images();
    assert_eq!(listed.len(), 1, "podman images: {listed:?}");
    assert_eq!(
        strings(&listed[0]["Names"]),
        vec![DEFAULT_TARGET.to_string()],
        "podman images Names"
    );
}

/// The other spellings of a stored image: `ostree-unverified-registry:NAME` and a bare name.
#[test]
fn source_spellings() {
    let fx = host_fixture();
    let oracle = oracle("base", BASE_LAYERS);
    let store = host_store();
    for (i, src) in [
        "ostree-unverified-registry:localhost/ostree-fixture:base",
        "localhost/ostree-fixture:base",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("localhost/spelling{i}:latest");
        host_copy_ok(&store, &fx.sysroot, Some(src), Some(&name));
        assert_eq!(
            strings(&store.inspect(&name)["RootFS"]["Layers"]),
            oracle.blob_diff_ids,
            "RootFS.Layers of --source {src}"
        );
    }
}

/// Copying base after derived reuses all seven base layers.
#[test]
fn layer_reuse() {
    let fx = host_fixture();
    let oracle_base = oracle("base", BASE_LAYERS);
    let store = host_store();
    host_copy_ok(
        &store,
        &fx.sysroot,
        Some(DERIVED),
        Some("localhost/derived:latest"),
    );
    assert_eq!(store.layer_records().len(), DERIVED_LAYERS);
    let stdout = host_copy_ok(
        &store,
        &fx.sysroot,
        Some(BASE),
        Some("localhost/base:latest"),
    );
    let c = counts(&stdout);
    assert_eq!(
        (c.layers_written, c.layers_reused),
        (0, BASE_LAYERS),
        "base after derived: {stdout}"
    );
    assert_eq!(
        store.layer_records().len(),
        DERIVED_LAYERS,
        "layers.json after copying base too"
    );
    assert_eq!(
        strings(&store.inspect("localhost/base:latest")["RootFS"]["Layers"]),
        oracle_base.blob_diff_ids,
        "RootFS.Layers of base"
    );
    assert_eq!(store.images().len(), 2, "podman images");
}

/// `list --type host --format json` lists both stored images.
#[test]
fn list() {
    let fx = host_fixture();
    let out = run_ok(
        Command::new(crate::util::BIN)
            .arg("--sysroot")
            .arg(&fx.sysroot)
            .args(["list", "--type", "host", "--format", "json"]),
    );
    let v: Value = serde_json::from_str(&out).expect("list JSON");
    let got: BTreeSet<(String, String)> = v
        .as_array()
        .expect("list array")
        .iter()
        .map(|e| {
            (
                e["image_type"].as_str().expect("image_type").to_string(),
                e["image"].as_str().expect("image").to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [BASE, DERIVED]
        .iter()
        .map(|i| ("host".to_string(), i.to_string()))
        .collect();
    assert_eq!(got, want, "list --type host: {out}");
}

// ---------------------------------------------------------------------------------------------
// Errors: non-zero exit, one `error: ` line, the store unchanged.

/// A store on the fixture's filesystem holding the error tests' seed image (sharing no layer with
/// the host images).
fn seeded_store() -> TestStore {
    let store = host_store();
    crate::errors::seed(&store);
    store
}

/// Runs a copy from `sysroot` that must fail: non-zero exit, exactly one stderr line starting
/// with `error: ` (holding each of `mentions`), and the store exactly as it was. Returns the line.
fn expect_host_failure(
    store: &TestStore,
    sysroot: &Path,
    source: Option<&str>,
    what: &str,
    mentions: &[&str],
) -> String {
    let before = store.snapshot();
    let out = host_copy(store, sysroot, source, Some("localhost/broken:latest"));
    let after = store.snapshot();
    let line = crate::util::assert_clean_failure(&out, what, mentions);
    let d = before.diff(&after);
    assert!(d.is_empty(), "{what}: the store changed:\n{}", d.join("\n"));
    assert_seed_listed(store);
    eprintln!("{what}: {line}");
    line
}

/// An image the repository does not hold.
#[test]
fn error_unknown_source() {
    let store = seeded_store();
    expect_host_failure(
        &store,
        &host_fixture().sysroot,
        Some("ostree-unverified-registry:localhost/nope:1"),
        "unknown --source",
        &["localhost/nope:1"],
    );
}

/// A sysroot without any deployment, and no --source.
#[test]
fn error_no_deployment() {
    let store = seeded_store();
    let sysroot = store.scratch("empty-sysroot");
    fs::create_dir_all(&sysroot).expect("create sysroot dir");
    run_ok(
        Command::new("ostree")
            .args(["admin", "init-fs"])
            .arg(&sysroot),
    );
    expect_host_failure(&store, &sysroot, None, "no deployment", &["deployment"]);
}

/// A content object of the image is missing from the repository.
#[test]
fn error_missing_object() {
    let store = seeded_store();
    let sysroot = private_sysroot(&store);
    let repo = sysroot.join("ostree/repo");
    let obj = object_with_content(&repo, &host_fixture().rootfs_file(SMALL_FILE));
    fs::remove_file(&obj).expect("remove the object");
    let sum = object_checksum(&obj);
    expect_host_failure(&store, &sysroot, Some(BASE), "missing object", &[&sum]);
}

/// A content object whose bytes do not match its checksum (same length, same mtime).
#[test]
fn error_corrupt_object() {
    let store = seeded_store();
    let sysroot = private_sysroot(&store);
    let repo = sysroot.join("ostree/repo");
    let obj = object_with_content(&repo, &host_fixture().rootfs_file(SMALL_FILE));
    let md = fs::symlink_metadata(&obj).expect("lstat object");
    let mut data = fs::read(&obj).expect("read object");
    data[0] = if data[0] == b'X' { b'Y' } else { b'X' };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(&obj)
        .expect("open the object for writing");
    f.seek(SeekFrom::Start(0)).expect("seek");
    f.write_all(&data).expect("overwrite the object");
    drop(f);
    // Keep its times, so only the content gives it away.
    let ts = |s: i64, ns: i64| rustix::fs::Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        &obj,
        &rustix::fs::Timestamps {
            last_access: ts(md.atime(), md.atime_nsec()),
            last_modification: ts(md.mtime(), md.mtime_nsec()),
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .expect("restore the object's times");
    assert_eq!(fs::metadata(&obj).expect("stat").len(), md.len());
    let sum = object_checksum(&obj);
    expect_host_failure(&store, &sysroot, Some(BASE), "corrupt object", &[&sum]);
}

/// An image ref pointing to a plain ostree commit (no container image metadata).
#[test]
fn error_ref_not_an_image() {
    let store = seeded_store();
    let sysroot = private_sysroot(&store);
    let repo = sysroot.join("ostree/repo");
    // The base image's ostree commit: a commit as `ostree commit` made it, no image metadata.
    let oracle = oracle("base", BASE_LAYERS);
    let commit = oracle.config["config"]["Labels"]["ostree.commit"]
        .as_str()
        .expect("ostree.commit label")
        .to_string();
    run_ok(
        Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .arg("refs")
            .arg("--create=ostree/container/image/docker_3A__2F__2F_localhost/notimage")
            .arg(&commit),
    );
    expect_host_failure(
        &store,
        &sysroot,
        Some("docker://localhost/notimage"),
        "ref that is not an image",
        &["notimage"],
    );
}

/// A booted system's mounts: the sysroot mounted read-only, and its stateroot's `var` mounted on its
/// own (two mounts of one filesystem, as ostree-prepare-root leaves them), the store under that
/// `var`. link() does not cross mounts, so the copy must reach the store through the sysroot's mount
/// (made writable in its private namespace only) and say so; the objects are then hardlinked, and
/// podman lists the image in the store at its real path.
#[test]
fn booted_mounts_link_through_the_sysroot() {
    let store = host_store();
    let sysroot = private_sysroot(&store);
    let deploy = sysroot.join("ostree/deploy");
    let stateroot = fs::read_dir(&deploy)
        .expect("read ostree/deploy")
        .map(|e| e.expect("entry").path())
        .find(|p| p.join("var").is_dir())
        .unwrap_or_else(|| panic!("no stateroot with a var under {}", deploy.display()));
    let var = stateroot.join("var");
    // Not created beforehand: the store is made through the sysroot's mount.
    let graph = var.join("lib/containers/storage");
    assert!(!graph.exists(), "{} exists already", graph.display());
    let booted = store.scratch("booted");
    let out = run(crate::util::booted_mounts_cmd(&sysroot, &var, &booted)
        .arg(crate::util::BIN)
        .arg("--root")
        .arg(booted.join("var/lib/containers/storage"))
        .arg("--runroot")
        .arg(&store.runroot)
        .args(["--storage-driver", "overlay", "--sysroot"])
        .arg(booted.join("sysroot"))
        .args(["copy-to-storage", "--source", BASE, "--target", NAME]));
    assert!(
        out.status.success(),
        "booted-layout copy failed\n{}",
        describe(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("through"),
        "the copy should say (on stderr) it reached the store through the sysroot's mount: {stderr}"
    );
    let c = counts(&stdout);
    assert!(c.files_linked > 0, "no file hardlinked: {stdout}");
    // The store at its real path: the diff's file is the repository's object.
    let real = TestStore {
        dir: store.dir.clone(),
        root: graph.clone(),
        runroot: store.runroot.clone(),
        tmpdir: store.tmpdir.clone(),
        driver: Driver::Overlay,
    };
    let ours = one_in_diffs(&real, SMALL_FILE);
    assert!(
        object_with_inode(&sysroot.join("ostree/repo"), &ours).is_some(),
        "{} is not hardlinked to an object of the repository",
        ours.display()
    );
    assert!(
        real.podman_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .contains(NAME.trim_start_matches("docker://")),
        "podman does not list {NAME} in {}",
        graph.display()
    );
    assert!(
        !sysroot.join(".rw-probe").exists(),
        "the probe must not have been created"
    );
}

/// `bare-user` (metadata in the `user.ostreemeta` xattr, symlinks as files) and `archive`
/// (compressed objects) repositories: objects cannot be hardlinked, so their bytes are read through
/// libostree and written — and the image is the same: DiffIDs as ostree-ext's export, layer by layer.
#[test]
fn other_repo_modes_copy_bytes() {
    let fx = host_fixture();
    let oracle = oracle("base", BASE_LAYERS);
    for mode in ["bare-user", "archive"] {
        // A store each: the two copies have the same layers, the second would reuse them.
        let store = host_store();
        let sysroot = store.scratch(&format!("sys-{mode}"));
        let repo = sysroot.join("ostree/repo");
        fs::create_dir_all(&repo).expect("create repo dir");
        run_ok(
            Command::new("ostree")
                .arg(format!("--repo={}", repo.display()))
                .args(["init", &format!("--mode={mode}")]),
        );
        run_ok(
            Command::new("ostree")
                .arg(format!("--repo={}", repo.display()))
                .arg("pull-local")
                .arg(fx.repo()),
        );
        let name = format!("localhost/mode-{mode}:latest");
        let stdout = host_copy_ok(&store, &sysroot, Some(BASE), Some(&name));
        let c = counts(&stdout);
        assert_eq!(
            c.files_linked, 0,
            "{mode}: nothing can be hardlinked: {stdout}"
        );
        assert!(c.files_written > 0, "{mode}: files written: {stdout}");
        assert_eq!(
            strings(&store.inspect(&name)["RootFS"]["Layers"]),
            oracle.blob_diff_ids,
            "{mode}: RootFS.Layers vs the oracle's, layer by layer"
        );
        let ours = one_in_diffs(&store, SMALL_FILE);
        assert_eq!(
            fs::read(&ours).expect("read our file"),
            fx.rootfs_file(SMALL_FILE),
            "{mode}: {SMALL_FILE} content"
        );
    }
}

/// `--verify`: every content object is checked against its checksum (xattrs and symlinks
/// included) and every DiffID computed from content before writing; the image is the same.
#[test]
fn verify_checks_every_object() {
    let fx = host_fixture();
    let oracle = oracle("derived", DERIVED_LAYERS);
    let store = host_store();
    let out = run(store.ours_cmd().arg("--sysroot").arg(&fx.sysroot).args([
        "copy-to-storage",
        "--verify",
        "--source",
        DERIVED,
        "--target",
        NAME,
    ]));
    assert!(
        out.status.success(),
        "copy --verify failed\n{}",
        describe(&out)
    );
    assert_eq!(
        strings(&store.inspect(NAME)["RootFS"]["Layers"]),
        oracle.blob_diff_ids,
        "RootFS.Layers with --verify vs the oracle's"
    );
}

/// `set-unified` on an OSTree sysroot: the deployed image (derived) goes into bootc's store under
/// its name, its files hardlinked from the repository, its layers the oracle's; run again, it is
/// found there, verified and kept (bootc's store unchanged).
#[test]
fn set_unified_ostree() {
    let oracle = oracle("derived", DERIVED_LAYERS);
    let store = host_store();
    let sysroot = private_sysroot(&store);
    let set_unified = || {
        let mut c = store.ours_cmd();
        c.arg("--sysroot").arg(&sysroot).arg("set-unified");
        let out = run(&mut c);
        assert!(out.status.success(), "set-unified: {}", describe(&out));
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    let first = set_unified();
    assert!(first.contains("Stored"), "{first}");
    let bootc_store = sysroot.join("ostree/bootc/storage");
    let runroot = crate::util::unique_tmp_path("rr");
    let inspect = run_ok(
        Command::new("podman")
            .arg("--root")
            .arg(&bootc_store)
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "overlay", "image", "inspect"])
            .arg(DERIVED.trim_start_matches("docker://")),
    );
    let _ = fs::remove_dir_all(&runroot);
    let v: Value = serde_json::from_str(&inspect).expect("inspect JSON");
    assert_eq!(
        strings(&v[0]["RootFS"]["Layers"]),
        oracle.blob_diff_ids,
        "RootFS.Layers in bootc's store"
    );
    let before = walk_tree(&bootc_store);
    let second = set_unified();
    assert!(second.contains("already in bootc's storage"), "{second}");
    let d = diff_trees(&before, &walk_tree(&bootc_store), &[]);
    assert!(
        d.is_empty(),
        "the second run changed bootc's store:\n{}",
        d.join("\n")
    );
}
