//! bootc's own store and the `bootc image` family: `pull-from-default-storage`, `list`, `cmd`,
//! `bound-images` and `storage init|status|verify|gc`, driven against podman 4.3 and skopeo 1.9.3.
//!
//! A sysroot is a plain directory inside a [`TestStore`]'s temp dir (no ostree): bootc's store
//! lives in `<S>/ostree/bootc/storage`, deployments are hand-made
//! `<S>/ostree/deploy/<os>/deploy/<checksum>.<serial>/` trees with `.origin` files, and host
//! images are hand-made ref files under `<S>/ostree/repo/refs/heads/ostree/container/image/`.
//! The default store (the source of `pull-from-default-storage`) is the [`TestStore`] itself,
//! filled with skopeo from fixture layouts.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::fixture::{self, BuiltImage, Compression, ImageSpec, OciDir};
use crate::util::{
    BIN, Driver, LockHolder, TestStore, assert_clean_failure, describe, mounts_below,
    read_json_array, run, run_ok,
};

/// The fixture images: (tag in the layout, name in the default store, small layers base first).
/// `a`, `b` and `e` share their base layer (small layer 1).
const IMAGES: &[(&str, &str, &[u32])] = &[
    ("a", "quay.io/test/a:1", &[1, 2]),
    ("b", "quay.io/test/b:1", &[1, 3]),
    ("c", "quay.io/test/c:1", &[4]),
    ("e", "quay.io/test/e:1", &[1, 6]),
    ("f", "quay.io/test/f:1", &[7]),
    ("h", "quay.io/os/host:41", &[8]),
    ("s", "docker.io/library/shorty:latest", &[9]),
    ("app-a", "quay.io/a/app:1", &[10]),
    ("app-b", "quay.io/b/app:1", &[11]),
];

/// The name of fixture image `tag` in the default store.
fn name_of(tag: &str) -> &'static str {
    IMAGES
        .iter()
        .find(|(t, _, _)| *t == tag)
        .map(|(_, n, _)| *n)
        .unwrap_or_else(|| panic!("no fixture image {tag}"))
}

/// The fixture layout (every image of [`IMAGES`]) and the digests of each image by tag.
struct Fixture {
    oci: OciDir,
    built: BTreeMap<&'static str, BuiltImage>,
}

impl Fixture {
    /// Writes the layout into `<store dir>/oci`.
    fn new(store: &TestStore) -> Self {
        let mut oci = OciDir::create(&store.scratch("oci"));
        let mut built = BTreeMap::new();
        for (tag, _, layers) in IMAGES {
            let tars: Vec<Vec<u8>> = layers.iter().map(|n| fixture::small_tar(*n)).collect();
            let spec = ImageSpec::from_tars(&format!("bootc {tag}"), &tars, Compression::Gzip);
            built.insert(*tag, oci.add_image(Some(tag), &spec));
        }
        Fixture { oci, built }
    }

    /// The digests of image `tag`.
    fn image(&self, tag: &str) -> &BuiltImage {
        &self.built[tag]
    }

    /// Copies image `tag` into the default store under its [`IMAGES`] name with skopeo.
    fn put(&self, store: &TestStore, tag: &str) {
        store.skopeo_copy_in(&self.oci.source(Some(tag)), name_of(tag));
    }
}

/// A default store (overlay) holding the images `tags`, plus the fixture layout.
fn default_store(tags: &[&str]) -> (TestStore, Fixture) {
    let store = TestStore::new(Driver::Overlay);
    let fx = Fixture::new(&store);
    for t in tags {
        fx.put(&store, t);
    }
    (store, fx)
}

/// A fake sysroot: a plain directory in a test store's temp dir.
struct Sys {
    /// `--sysroot`.
    path: PathBuf,
    /// podman's `--tmpdir` for bootc's store (kept apart from the default store's).
    tmpdir: PathBuf,
}

impl Sys {
    /// `<store dir>/<name>` (short, so that the run root stays under 50 characters).
    fn new(store: &TestStore, name: &str) -> Self {
        let path = store.scratch(name);
        fs::create_dir_all(&path).expect("create sysroot");
        Sys {
            tmpdir: store.scratch(&format!("{name}t")),
            path,
        }
    }

    /// `<S>/ostree/bootc/storage`.
    fn storage(&self) -> PathBuf {
        self.path.join("ostree/bootc/storage")
    }

    /// The run root our binary uses for bootc's store of a sysroot that is not `/`.
    fn runroot(&self) -> PathBuf {
        self.path.join("run/bootc/storage")
    }

    /// `[overlay@<bootc store>+<run root>]`.
    fn spec(&self) -> String {
        format!(
            "[overlay@{}+{}]",
            self.storage().display(),
            self.runroot().display()
        )
    }

    /// podman with bootc's store as `--root`.
    fn podman(&self) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(self.storage())
            .arg("--runroot")
            .arg(self.runroot())
            .arg("--storage-driver")
            .arg("overlay")
            .arg("--tmpdir")
            .arg(&self.tmpdir)
            .arg("--events-backend")
            .arg("none");
        c
    }

    /// Runs podman on bootc's store, panics on failure, returns stdout.
    fn podman_ok(&self, args: &[&str]) -> String {
        run_ok(self.podman().args(args))
    }

    /// Our binary with `--sysroot S` and the default store's options.
    fn ours(&self, def: &TestStore) -> Command {
        let mut c = def.ours_cmd();
        c.arg("--sysroot").arg(&self.path);
        c
    }

    /// Runs our binary with `args`, returning its output whatever happened. `list` gets only
    /// `--sysroot`: given `--root`, it lists that store instead of bootc's.
    fn ours_out(&self, def: &TestStore, args: &[&str]) -> Output {
        if args.first() == Some(&"list") {
            return run(Command::new(BIN)
                .arg("--sysroot")
                .arg(&self.path)
                .args(args));
        }
        run(self.ours(def).args(args))
    }

    /// Runs our binary with `args`; panics unless it succeeds; returns stdout.
    fn ours_ok(&self, def: &TestStore, args: &[&str]) -> String {
        let out = self.ours_out(def, args);
        assert!(
            out.status.success(),
            "bootc-image {args:?} failed\n{}",
            describe(&out)
        );
        String::from_utf8(out.stdout).expect("stdout is UTF-8")
    }

    /// `pull-from-default-storage NAME`, panicking on failure; returns the trimmed stdout.
    fn pull(&self, def: &TestStore, name: &str) -> String {
        self.ours_ok(def, &["pull-from-default-storage", name])
            .trim()
            .to_string()
    }

    /// The records of bootc's images.json.
    fn image_records(&self) -> Vec<Value> {
        read_json_array(&self.storage().join("overlay-images/images.json"))
    }

    /// The records of bootc's layers.json.
    fn layer_records(&self) -> Vec<Value> {
        read_json_array(&self.storage().join("overlay-layers/layers.json"))
    }

    /// (image ID, names) of every image in bootc's store, sorted.
    fn images(&self) -> BTreeSet<(String, Vec<String>)> {
        self.image_records().iter().map(id_and_names).collect()
    }

    /// The IDs of the layers in bootc's layers.json.
    fn layer_ids(&self) -> BTreeSet<String> {
        self.layer_records()
            .iter()
            .map(|l| l["id"].as_str().expect("layer id").to_string())
            .collect()
    }

    /// What `podman images --format json` lists in bootc's store.
    fn podman_images(&self) -> Vec<Value> {
        serde_json::from_str(&self.podman_ok(&["images", "--format", "json"])).expect("JSON")
    }

    /// Asserts that `layer2/file` of the layer with DiffID `diff_id` is one inode in the store
    /// `src_root` and in bootc's store (hardlinked).
    fn assert_shares_file(&self, src_root: &Path, diff_id: &str) {
        let top = layer_id_by_diff(&self.layer_records(), diff_id);
        let rel = format!("overlay/{top}/diff/layer2/file");
        let (ms, md) = (
            fs::metadata(src_root.join(&rel)).expect("stat source file"),
            fs::metadata(self.storage().join(&rel)).expect("stat bootc file"),
        );
        assert_eq!(
            (ms.dev(), ms.ino()),
            (md.dev(), md.ino()),
            "{rel} hardlinked"
        );
    }

    /// Makes `<S>/usr/lib/bootc/bound-images.d/FILE` a link to a quadlet naming `image`.
    fn bind(&self, file: &str, image: &str) {
        bind_image(&self.path, file, image, true);
    }
}

/// (id, names) of an images.json record.
fn id_and_names(r: &Value) -> (String, Vec<String>) {
    let id = r["id"].as_str().expect("image id").to_string();
    let names = r["names"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| n.as_str().expect("name").to_string())
                .collect()
        })
        .unwrap_or_default();
    (id, names)
}

/// The quadlet section `file`'s extension calls for.
fn section_for(file: &str) -> &'static str {
    if file.ends_with(".container") {
        "Container"
    } else {
        "Image"
    }
}

/// Writes the quadlet `<root>/usr/share/containers/systemd/FILE` with `Image=image` and makes
/// `<root>/usr/lib/bootc/bound-images.d/FILE` a symlink to it (absolute, resolved inside the root,
/// or relative).
fn bind_image(root: &Path, file: &str, image: &str, absolute: bool) {
    let text = format!(
        "[Unit]\nDescription=bound {file}\n\n[{}]\nImage={image}\nPull=never\n",
        section_for(file)
    );
    bind_unit(root, file, &text, absolute);
}

/// Like [`bind_image`] with the unit's whole text given.
fn bind_unit(root: &Path, file: &str, text: &str, absolute: bool) {
    let units = root.join("usr/share/containers/systemd");
    let dir = root.join("usr/lib/bootc/bound-images.d");
    fs::create_dir_all(&units).expect("create quadlet dir");
    fs::create_dir_all(&dir).expect("create bound-images.d");
    fs::write(units.join(file), text).expect("write quadlet");
    let target = if absolute {
        format!("/usr/share/containers/systemd/{file}")
    } else {
        format!("../../../share/containers/systemd/{file}")
    };
    std::os::unix::fs::symlink(target, dir.join(file)).expect("symlink bound image");
}

/// Creates the deployment root `<S>/ostree/deploy/<os>/deploy/<checksum>.<serial>` (with a
/// little `/usr`), and its `.origin` file when `image` is given; returns the root.
fn add_deployment(sys: &Sys, os: &str, n: u32, serial: u32, image: Option<&str>) -> PathBuf {
    let deploy = sys.path.join(format!("ostree/deploy/{os}/deploy"));
    let name = format!("{:064x}.{serial}", u64::from(n) * 0x1111_1111);
    let root = deploy.join(&name);
    fs::create_dir_all(root.join("usr/lib/bootc")).expect("create deployment root");
    fs::create_dir_all(root.join("etc")).expect("create deployment etc");
    if let Some(img) = image {
        fs::write(
            deploy.join(format!("{name}.origin")),
            format!(
                "[origin]\ncontainer-image-reference=ostree-unverified-registry:{img}\n\n\
                 [rpmostree]\ncustom-origin-description=test\n"
            ),
        )
        .expect("write origin");
    }
    root
}

/// A host image ref file `<S>/ostree/repo/refs/heads/ostree/container/image/<escaped>`.
fn add_host_ref(sys: &Sys, escaped: &str, n: u32) {
    let path = sys
        .path
        .join("ostree/repo/refs/heads/ostree/container/image")
        .join(escaped);
    fs::create_dir_all(path.parent().expect("ref parent")).expect("create ref dirs");
    fs::write(&path, format!("{:064x}\n", u64::from(n) * 0xabcd_ef01)).expect("write ref");
}

/// A map of every path below `root` (no `*.lock` files, no podman database) to its type and,
/// for regular files, size and sha256; symlinks with their target.
fn content_snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    crate::util::visit_below(root, &mut |rel, path, ft| {
        if rel == "libpod/bolt_state.db" || rel == "db.sql" {
            return;
        }
        let desc = if ft.is_dir() {
            "d".to_string()
        } else if ft.is_symlink() {
            format!(
                "l {}",
                fs::read_link(path).expect("readlink").to_string_lossy()
            )
        } else if ft.is_file() {
            let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            format!("- {} {}", data.len(), hex::encode(Sha256::digest(&data)))
        } else {
            "other".to_string()
        };
        out.insert(rel.to_string(), desc);
    });
    out
}

/// Differences between two [`content_snapshot`]s.
fn snapshot_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut d = Vec::new();
    for (p, va) in a {
        match b.get(p) {
            None => d.push(format!("removed: {p} ({va})")),
            Some(vb) if vb != va => d.push(format!("changed: {p}: {va} -> {vb}")),
            Some(_) => {}
        }
    }
    for (p, vb) in b {
        if !a.contains_key(p) {
            d.push(format!("added: {p} ({vb})"));
        }
    }
    d
}

/// The ID of the layer with DiffID `diff_id` in layers.json `records`.
fn layer_id_by_diff(records: &[Value], diff_id: &str) -> String {
    records
        .iter()
        .find(|l| l["diff-digest"].as_str() == Some(diff_id))
        .and_then(|l| l["id"].as_str())
        .unwrap_or_else(|| panic!("no layer with DiffID {diff_id}"))
        .to_string()
}

/// The DiffIDs of the (only) image in the OCI layout at `dir`.
fn layout_diff_ids(dir: &Path) -> Vec<String> {
    let blob = |digest: &str| {
        fs::read(dir.join("blobs/sha256").join(fixture::digest_hex(digest)))
            .expect("read layout blob")
    };
    let index: Value =
        serde_json::from_slice(&fs::read(dir.join("index.json")).expect("read index.json"))
            .expect("index JSON");
    let manifest: Value = serde_json::from_slice(&blob(
        index["manifests"][0]["digest"]
            .as_str()
            .expect("manifest digest"),
    ))
    .expect("manifest JSON");
    let config: Value = serde_json::from_slice(&blob(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest"),
    ))
    .expect("config JSON");
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect()
}

/// The names in a `podman images --format json` entry.
fn podman_names(entry: &Value) -> Vec<String> {
    entry["Names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A consumer store (empty, fresh) whose podman sees bootc's store as an additional image store.
fn ais_podman(consumer: &TestStore, sys: &Sys) -> Command {
    let mut c = consumer.podman_cmd();
    c.arg("--storage-opt")
        .arg(format!("additionalimagestore={}", sys.storage().display()));
    c
}

// ---------------------------------------------------------------------------------------------
// 1. pull-from-default-storage
// ---------------------------------------------------------------------------------------------

/// The pulled image is usable through an additional image store and as `--root`, equals the
/// source image, shares the source's files by hardlink, leaves the source store untouched, and a
/// second image reuses the shared base layer.
#[test]
fn pull_from_default_storage_shares_files() {
    let (def, fx) = default_store(&["a", "b"]);
    let sys = Sys::new(&def, "s");
    let a = fx.image("a");
    let before = content_snapshot(&def.root);

    let out = sys.pull(&def, name_of("a"));
    assert_eq!(
        out, "Copied quay.io/test/a:1 (2 layers hardlinked, 0 reused)",
        "stdout of the first pull"
    );
    let after = content_snapshot(&def.root);
    let d = snapshot_diff(&before, &after);
    assert!(d.is_empty(), "the default store changed:\n{}", d.join("\n"));
    assert!(
        !sys.path.join("ostree/bootc/storage.tmp").exists(),
        "storage.tmp left behind"
    );

    // Same image record identity, same top layer.
    let src_rec = def
        .image_records()
        .into_iter()
        .find(|r| r["id"] == a.image_id())
        .expect("source image record");
    let dst_rec = sys
        .image_records()
        .into_iter()
        .find(|r| r["id"] == a.image_id())
        .expect("bootc store has the image with the same ID");
    assert_eq!(dst_rec["names"], json!([name_of("a")]), "names kept");
    assert_eq!(dst_rec["layer"], src_rec["layer"], "top layer ID");
    assert_eq!(dst_rec["digest"], src_rec["digest"], "manifest digest");

    // Hardlinked: a file of the top layer's diff is the same inode in both stores.
    let src_layers = def.layer_records();
    let dst_layers = sys.layer_records();
    for diff_id in &a.diff_ids {
        assert_eq!(
            layer_id_by_diff(&src_layers, diff_id),
            layer_id_by_diff(&dst_layers, diff_id),
            "layer ID of {diff_id}"
        );
    }
    let top = layer_id_by_diff(&dst_layers, &a.diff_ids[1]);
    let src_file = def.root.join(format!("overlay/{top}/diff/layer2/file"));
    let dst_file = sys
        .storage()
        .join(format!("overlay/{top}/diff/layer2/file"));
    let (ms, md) = (
        fs::metadata(&src_file).expect("stat source file"),
        fs::metadata(&dst_file).expect("stat bootc file"),
    );
    assert_eq!(
        (ms.dev(), ms.ino()),
        (md.dev(), md.ino()),
        "{} should be a hardlink of {}",
        dst_file.display(),
        src_file.display()
    );
    assert!(md.nlink() >= 2, "link count {}", md.nlink());

    // Through an additional image store: listed read-only, a container can be created and mounted.
    let consumer = TestStore::new(Driver::Overlay);
    let images: Vec<Value> = serde_json::from_str(&run_ok(
        ais_podman(&consumer, &sys).args(["images", "--format", "json"]),
    ))
    .expect("podman images JSON");
    let entry = images
        .iter()
        .find(|i| podman_names(i).iter().any(|n| n == name_of("a")))
        .unwrap_or_else(|| panic!("podman with the AIS does not list the image: {images:?}"));
    assert_eq!(entry["Id"], Value::from(a.image_id()));
    assert_eq!(entry["ReadOnly"], Value::Bool(true), "R/O: {entry}");
    run_ok(ais_podman(&consumer, &sys).args(["create", "--name", "ctr", name_of("a")]));
    let mnt = run_ok(ais_podman(&consumer, &sys).args(["mount", "ctr"]));
    let mnt = PathBuf::from(mnt.trim());
    let read = |p: &str| fs::read_to_string(mnt.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("layer1/file"), "content of small layer 1\n");
    assert_eq!(read("layer2/file"), "content of small layer 2\n");
    run_ok(ais_podman(&consumer, &sys).args(["umount", "ctr"]));
    run_ok(ais_podman(&consumer, &sys).args(["rm", "ctr"]));

    // As --root: inspect equals the source's.
    let inspect = |out: String| -> Value {
        serde_json::from_str::<Value>(&out).expect("inspect JSON")[0].clone()
    };
    let src_inspect = def.inspect(name_of("a"));
    let dst_inspect = inspect(sys.podman_ok(&["image", "inspect", name_of("a")]));
    for key in [
        "Id",
        "Digest",
        "RepoTags",
        "RootFS",
        "Config",
        "Architecture",
        "Os",
    ] {
        assert_eq!(
            dst_inspect[key], src_inspect[key],
            "podman image inspect {key}"
        );
    }

    // skopeo exports it with the fixture's DiffIDs.
    let out_dir = def.scratch("out-a");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--insecure-policy",
        &format!("containers-storage:{}{}", sys.spec(), name_of("a")),
        &format!("oci:{}", out_dir.display()),
    ]));
    assert_eq!(layout_diff_ids(&out_dir), a.diff_ids, "exported DiffIDs");

    // A second image sharing the base layer reuses it (podman has used bootc's store by now).
    let before = content_snapshot(&def.root);
    let out = sys.pull(&def, name_of("b"));
    assert_eq!(
        out, "Copied quay.io/test/b:1 (1 layer hardlinked, 1 reused)",
        "stdout of the second pull"
    );
    let d = snapshot_diff(&before, &content_snapshot(&def.root));
    assert!(d.is_empty(), "the default store changed:\n{}", d.join("\n"));
    let ids: BTreeSet<String> = sys.images().into_iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([a.image_id(), fx.image("b").image_id()]),
        "bootc store images"
    );
    assert_eq!(sys.layer_ids().len(), 3, "layers: shared base + two tops");
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        2,
        "podman images on bootc's store: {listed:?}"
    );

    // Every layer of bootc's store checks out.
    let out = sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
    assert!(out.starts_with("3 layers verified\n"), "{out}");
}

/// podman can leave a store's `overlay/` bind-mounted onto itself, and `link()` does not cross
/// mount points: with both stores' `overlay/` mounted so, the pull still hardlinks (it detaches
/// them in a private mount namespace) and the mounts outside are left as they were.
#[test]
fn pull_through_self_bind_mounts() {
    let (def, fx) = default_store(&["a", "b"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("b"));
    // skopeo leaves the default store's overlay/ mounted so already; add what is missing.
    let dirs = [def.root.join("overlay"), sys.storage().join("overlay")];
    for dir in &dirs {
        if !mounts_below(dir).contains(dir) {
            run_ok(Command::new("mount").arg("--bind").arg(dir).arg(dir));
        }
    }
    let mut before = mounts_below(&def.dir);
    before.sort();
    for dir in &dirs {
        assert!(
            before.contains(dir),
            "{} is not mounted: {before:?}",
            dir.display()
        );
    }

    let out = sys.pull(&def, name_of("a"));
    assert_eq!(
        out, "Copied quay.io/test/a:1 (1 layer hardlinked, 1 reused)",
        "pull through self-bind mounts"
    );
    let mut after = mounts_below(&def.dir);
    after.sort();
    assert_eq!(after, before, "mounts outside the command");

    sys.assert_shares_file(&def.root, &fx.image("a").diff_ids[1]);
    let out = sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
    assert!(out.starts_with("3 layers verified\n"), "{out}");
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        2,
        "podman images on bootc's store: {listed:?}"
    );
}

/// A pull by short name and by image ID finds the image and keeps its full name.
#[test]
fn pull_by_short_name_and_id() {
    let (def, fx) = default_store(&["c", "s"]);
    let sys = Sys::new(&def, "s");
    let out = sys.pull(&def, "shorty");
    assert_eq!(
        out,
        "Copied docker.io/library/shorty:latest (1 layer hardlinked, 0 reused)"
    );
    let c = fx.image("c");
    let out = sys.pull(&def, &c.image_id()[..12]);
    assert_eq!(
        out,
        "Copied quay.io/test/c:1 (1 layer hardlinked, 0 reused)"
    );
    assert_eq!(
        sys.images(),
        BTreeSet::from([
            (c.image_id(), vec![name_of("c").to_string()]),
            (fx.image("s").image_id(), vec![name_of("s").to_string()]),
        ])
    );
}

/// `--verify` passes on a good source; after a file of a source layer's diff is corrupted (same
/// length, other bytes), it fails cleanly and bootc's store is left as it was.
#[test]
fn pull_verify_detects_corrupted_source() {
    let (def, fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    let out = sys.ours_ok(
        &def,
        &["pull-from-default-storage", "--verify", name_of("c")],
    );
    assert_eq!(
        out.trim(),
        "Copied quay.io/test/c:1 (1 layer hardlinked, 0 reused)"
    );

    let a = fx.image("a");
    let top = layer_id_by_diff(&def.layer_records(), &a.diff_ids[1]);
    let file = def.root.join(format!("overlay/{top}/diff/layer2/file"));
    let good = fs::read(&file).expect("read source file");
    let bad = good.to_ascii_uppercase();
    assert_eq!(good.len(), bad.len());
    assert_ne!(good, bad);
    fs::write(&file, &bad).expect("corrupt source file");

    let before = content_snapshot(&sys.storage());
    let records = sys.images();
    let out = sys.ours_out(
        &def,
        &["pull-from-default-storage", "--verify", name_of("a")],
    );
    assert_clean_failure(&out, "pull --verify of a corrupted layer", &[&top]);
    let d = snapshot_diff(&before, &content_snapshot(&sys.storage()));
    assert!(d.is_empty(), "bootc's store changed:\n{}", d.join("\n"));
    assert_eq!(sys.images(), records);
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        1,
        "podman images on bootc's store: {listed:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Errors
// ---------------------------------------------------------------------------------------------

/// An image the default store does not hold: clean failure, bootc's store unchanged.
#[test]
fn pull_missing_image_fails() {
    let (def, _fx) = default_store(&["c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("c"));
    let before = content_snapshot(&sys.storage());
    let out = sys.ours_out(
        &def,
        &["pull-from-default-storage", "quay.io/nope/missing:1"],
    );
    assert_clean_failure(&out, "missing image", &["quay.io/nope/missing:1"]);
    let d = snapshot_diff(&before, &content_snapshot(&sys.storage()));
    assert!(d.is_empty(), "bootc's store changed:\n{}", d.join("\n"));
}

/// A short name two images match (`quay.io/a/app:1`, `quay.io/b/app:1` for `app:1`): clean
/// failure, nothing copied; the full name works.
#[test]
fn pull_ambiguous_short_name_fails() {
    let (def, fx) = default_store(&["app-a", "app-b"]);
    let sys = Sys::new(&def, "s");
    sys.ours_ok(&def, &["storage", "init"]);
    let before = content_snapshot(&sys.storage());
    let out = sys.ours_out(&def, &["pull-from-default-storage", "app:1"]);
    assert_clean_failure(&out, "ambiguous short name", &["app:1"]);
    let d = snapshot_diff(&before, &content_snapshot(&sys.storage()));
    assert!(d.is_empty(), "bootc's store changed:\n{}", d.join("\n"));
    assert!(sys.images().is_empty());
    sys.pull(&def, "quay.io/b/app:1");
    assert_eq!(
        sys.images(),
        BTreeSet::from([(
            fx.image("app-b").image_id(),
            vec!["quay.io/b/app:1".to_string()]
        )])
    );
}

/// While another process holds bootc's `overlay-layers/layers.lock`, the pull waits; once it is
/// released the pull completes.
#[test]
fn pull_waits_for_bootc_store_lock() {
    let (def, fx) = default_store(&["c"]);
    let sys = Sys::new(&def, "s");
    sys.ours_ok(&def, &["storage", "init"]);
    let holder = LockHolder::hold(&sys.storage().join("overlay-layers/layers.lock"));
    let mut child = sys
        .ours(&def)
        .args(["pull-from-default-storage", name_of("c")])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bootc-image");
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(status) = child.try_wait().expect("try_wait") {
        holder.release();
        let out = child.wait_with_output().expect("collect output");
        panic!(
            "pull exited ({status}) while layers.lock was held by another process\n{}",
            describe(&out)
        );
    }
    assert!(
        sys.images().is_empty(),
        "the image was recorded while the lock was held"
    );
    holder.release();
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "pull still running 120 s after the release\n{}",
                describe(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("collect output");
    assert!(
        out.status.success(),
        "pull after the release\n{}",
        describe(&out)
    );
    assert_eq!(
        sys.images(),
        BTreeSet::from([(fx.image("c").image_id(), vec![name_of("c").to_string()])])
    );
}

/// Runs `bound-images list` on a sysroot whose bound-images.d was set up by `setup`, and checks
/// the failure names `file`.
fn bound_list_fails(what: &str, file: &str, setup: impl FnOnce(&Path)) {
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    sys.bind("good.image", "quay.io/test/a:1");
    setup(&sys.path);
    let out = sys.ours_out(&def, &["bound-images", "list"]);
    assert_clean_failure(&out, what, &[file]);
    let out = sys.ours_out(&def, &["list", "--type", "logical", "--format", "json"]);
    assert_clean_failure(&out, &format!("list --type logical: {what}"), &[file]);
}

/// A regular file (not a symlink) in bound-images.d.
#[test]
fn bound_image_not_a_symlink() {
    bound_list_fails("not a symlink", "plain.image", |root| {
        fs::write(
            root.join("usr/lib/bootc/bound-images.d/plain.image"),
            "[Image]\nImage=quay.io/test/c:1\n",
        )
        .expect("write plain unit");
    });
}

/// `AuthFile=` is refused.
#[test]
fn bound_image_authfile() {
    bound_list_fails("AuthFile", "auth.image", |root| {
        bind_unit(
            root,
            "auth.image",
            "[Image]\nImage=quay.io/test/c:1\nAuthFile=/etc/ostree/auth.json\n",
            true,
        );
    });
}

/// A systemd specifier in `Image=` is refused.
#[test]
fn bound_image_specifier() {
    bound_list_fails("specifier", "spec.container", |root| {
        bind_unit(
            root,
            "spec.container",
            "[Container]\nImage=quay.io/test/%n:1\n",
            true,
        );
    });
}

/// A symlink with another extension is refused.
#[test]
fn bound_image_bad_extension() {
    bound_list_fails("bad extension", "other.service", |root| {
        bind_unit(
            root,
            "other.service",
            "[Image]\nImage=quay.io/test/c:1\n",
            true,
        );
    });
}

/// Valid units: absolute and relative links, `.image` and `.container`, `%%` unescaped, other
/// keys ignored; listed as `IMAGE\tFILE` sorted by file name.
#[test]
fn bound_images_list_valid() {
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    bind_image(&sys.path, "b.container", "quay.io/test/b:1", false);
    sys.bind("a.image", "quay.io/test/a:1");
    bind_unit(
        &sys.path,
        "c.image",
        "[Image]\nArch=amd64\nImage = quay.io/test/c%%:1\n",
        true,
    );
    let out = sys.ours_ok(&def, &["bound-images", "list"]);
    assert_eq!(
        out,
        "quay.io/test/a:1\ta.image\nquay.io/test/b:1\tb.container\nquay.io/test/c%:1\tc.image\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. list
// ---------------------------------------------------------------------------------------------

/// `list --format json` parsed.
fn list_json(sys: &Sys, def: &TestStore, t: &str) -> Value {
    let out = sys.ours_ok(def, &["list", "--type", t, "--format", "json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("list --type {t} JSON: {e}\n{out}"))
}

/// `[{"image_type": t, "image": i}, …]`.
fn rows(items: &[(&str, &str)]) -> Value {
    Value::Array(
        items
            .iter()
            .map(|(t, i)| json!({"image_type": t, "image": i}))
            .collect(),
    )
}

/// Checks the table shape: a header with REPOSITORY and TYPE, one row per item in order, the
/// TYPE column aligned on every line.
fn assert_table(out: &str, items: &[(&str, &str)]) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), items.len() + 1, "table lines:\n{out}");
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["REPOSITORY", "TYPE"],
        "header:\n{out}"
    );
    let col = lines[0].find("TYPE").expect("TYPE in header");
    for (line, (t, i)) in lines[1..].iter().zip(items) {
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            [*i, *t],
            "row:\n{out}"
        );
        assert_eq!(line.rfind(t), Some(col), "TYPE column aligned:\n{out}");
        assert_eq!(
            line.find(i),
            lines[0].find("REPOSITORY"),
            "REPOSITORY column aligned:\n{out}"
        );
    }
}

/// The JSON and table output of every `--type` on a sysroot with host refs, bootc's store and
/// bound images in the sysroot itself.
#[test]
fn list_types_and_formats() {
    let (def, _fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");

    // Nothing yet: empty lists, and listing does not create bootc's store.
    for t in ["all", "host", "logical", "unified"] {
        assert_eq!(
            list_json(&sys, &def, t),
            json!([]),
            "--type {t} on an empty sysroot"
        );
    }
    assert_table(&sys.ours_ok(&def, &["list"]), &[]);
    assert!(!sys.storage().exists(), "list created bootc's store");

    sys.pull(&def, name_of("a"));
    sys.pull(&def, name_of("c"));
    sys.bind("a.image", "quay.io/test/a:1");
    bind_image(&sys.path, "z.container", "quay.io/test/z:2", false);
    add_host_ref(&sys, "registry_3A_quay_2E_io/coreos/fedora_3A_latest", 1);
    add_host_ref(&sys, "docker_3A_/_2F_quay_2E_io/x/my__image_3A_v1", 2);

    let host = [
        ("host", "docker://quay.io/x/my_image:v1"),
        ("host", "registry:quay.io/coreos/fedora:latest"),
    ];
    let unified = [
        ("unified", "quay.io/test/a:1"),
        ("unified", "quay.io/test/c:1"),
    ];
    let logical = [
        ("logical", "quay.io/test/a:1"),
        ("logical", "quay.io/test/z:2"),
    ];
    let all: Vec<(&str, &str)> = host
        .iter()
        .chain(unified.iter())
        .chain(logical.iter())
        .copied()
        .collect();

    assert_eq!(list_json(&sys, &def, "host"), rows(&host), "--type host");
    assert_eq!(
        list_json(&sys, &def, "unified"),
        rows(&unified),
        "--type unified"
    );
    assert_eq!(
        list_json(&sys, &def, "logical"),
        rows(&logical),
        "--type logical"
    );
    assert_eq!(list_json(&sys, &def, "all"), rows(&all), "--type all");

    // The JSON is pretty-printed, as serde_json::to_writer_pretty writes it.
    let out = sys.ours_ok(&def, &["list", "--type", "host", "--format", "json"]);
    assert_eq!(
        out.trim_end(),
        serde_json::to_string_pretty(&rows(&host)).expect("pretty JSON")
    );

    assert_table(
        &sys.ours_ok(&def, &["list", "--type", "host", "--format", "table"]),
        &host,
    );
    assert_table(&sys.ours_ok(&def, &["list", "--type", "unified"]), &unified);
    assert_table(
        &sys.ours_ok(&def, &["list", "--type", "logical", "--format", "table"]),
        &logical,
    );
    assert_table(&sys.ours_ok(&def, &["list"]), &all);
}

/// Without bound-images.d in the sysroot itself, the logical images are the first deployment's.
#[test]
fn list_logical_from_deployment() {
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    let root = add_deployment(&sys, "fedora", 1, 0, Some("quay.io/os/host:41"));
    bind_image(&root, "one.image", "quay.io/test/one:1", true);
    bind_image(&root, "two.container", "quay.io/test/two:1", false);
    assert_eq!(
        list_json(&sys, &def, "logical"),
        rows(&[
            ("logical", "quay.io/test/one:1"),
            ("logical", "quay.io/test/two:1")
        ])
    );
    let out = sys.ours_ok(&def, &["bound-images", "list"]);
    assert_eq!(
        out,
        "quay.io/test/one:1\tone.image\nquay.io/test/two:1\ttwo.container\n"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. cmd
// ---------------------------------------------------------------------------------------------

/// `cmd list` runs podman on bootc's store (bind-mounted on /run/bootc/storage) and shows the
/// image pulled into it.
#[test]
fn cmd_list_shows_pulled_image() {
    let (def, fx) = default_store(&["c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("c"));
    let out = sys.ours_ok(
        &def,
        &["cmd", "list", "--format", "{{.Repository}}:{{.Tag}}"],
    );
    assert_eq!(out.trim(), name_of("c"), "cmd list --format");
    let out = sys.ours_ok(&def, &["cmd", "list", "--format", "json"]);
    let v: Vec<Value> = serde_json::from_str(&out).expect("cmd list --format json");
    assert_eq!(v.len(), 1, "{out}");
    assert_eq!(v[0]["Id"], Value::from(fx.image("c").image_id()));
    assert_eq!(podman_names(&v[0]), [name_of("c")]);
    // The bind mount stays inside podman's private namespace.
    assert!(
        mounts_below(Path::new("/run/bootc/storage"))
            .iter()
            .all(|m| m != Path::new("/run/bootc/storage")),
        "/run/bootc/storage is still a mount point outside the command"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. bound-images pull
// ---------------------------------------------------------------------------------------------

/// Two bound images present in the default store both land in bootc's store.
#[test]
fn bound_images_pull_from_default_store() {
    let (def, fx) = default_store(&["a", "s"]);
    let sys = Sys::new(&def, "s");
    sys.bind("a.image", name_of("a"));
    bind_image(&sys.path, "shorty.container", "shorty", false);
    let out = sys.ours_ok(&def, &["bound-images", "pull"]);
    assert_eq!(out.trim(), "Bound images stored: 2");
    assert_eq!(
        sys.images(),
        BTreeSet::from([
            (fx.image("a").image_id(), vec![name_of("a").to_string()]),
            (fx.image("s").image_id(), vec![name_of("s").to_string()]),
        ])
    );
    // Idempotent.
    sys.ours_ok(&def, &["bound-images", "pull"]);
    assert_eq!(sys.images().len(), 2);
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        2,
        "podman images on bootc's store: {listed:?}"
    );
}

/// One bound image missing from the default store: the pull fails and bootc's store holds
/// exactly what it held before (the image copied first is removed again, the one that was
/// already there stays).
#[test]
fn bound_images_pull_all_or_nothing() {
    let (def, _fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("c"));
    sys.bind("a.image", name_of("a"));
    sys.bind("c.image", name_of("c"));
    sys.bind("z.image", "quay.io/test/missing:1");
    let images = sys.images();
    let layers = sys.layer_ids();
    let out = sys.ours_out(&def, &["bound-images", "pull", "--retry", "0"]);
    assert_clean_failure(
        &out,
        "a bound image is missing",
        &["quay.io/test/missing:1"],
    );
    assert_eq!(sys.images(), images, "images after the failed pull");
    assert_eq!(sys.layer_ids(), layers, "layers after the failed pull");
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        1,
        "podman images on bootc's store: {listed:?}"
    );
}

/// `oci:DIR:TAG` and `oci-archive:FILE:TAG` references are imported directly, as localhost/TAG.
#[test]
fn bound_images_pull_oci_references() {
    let def = TestStore::new(Driver::Overlay);
    let fx = Fixture::new(&def);
    let archive = def.scratch("c.tar");
    let mut single = OciDir::create(&def.scratch("single"));
    let spec = ImageSpec::from_tars(
        "bootc archive",
        &[fixture::small_tar(1), fixture::small_tar(12)],
        Compression::Zstd,
    );
    let arch = single.add_image(Some("arch"), &spec);
    single.write_archive(&archive);
    let sys = Sys::new(&def, "s");
    sys.bind("dir.image", &fx.oci.source(Some("a")));
    sys.bind(
        "archive.container",
        &format!("oci-archive:{}:arch", archive.display()),
    );
    let out = sys.ours_ok(&def, &["bound-images", "pull"]);
    assert_eq!(out.trim(), "Bound images stored: 2");
    assert_eq!(
        sys.images(),
        BTreeSet::from([
            (
                fx.image("a").image_id(),
                vec!["localhost/a:latest".to_string()]
            ),
            (arch.image_id(), vec!["localhost/arch:latest".to_string()]),
        ])
    );
    let v: Value = serde_json::from_str(&sys.podman_ok(&["image", "inspect", "localhost/a"]))
        .expect("inspect JSON");
    assert_eq!(
        v[0]["RootFS"]["Layers"],
        json!(fx.image("a").diff_ids),
        "DiffIDs of the imported image"
    );
    let out = sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
    assert!(out.starts_with("3 layers verified\n"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 6. gc
// ---------------------------------------------------------------------------------------------

/// Three deployments in two stateroots with different bound images and host images: gc keeps
/// exactly the images they name (short names normalized), removes an unreferenced and an
/// untagged image and the layers only those used.
#[test]
fn gc_keeps_exactly_referenced_images() {
    let (def, fx) = default_store(&["a", "b", "c", "e", "f", "h", "s"]);
    let sys = Sys::new(&def, "s");
    // Deployment 1: host image quay.io/os/host:41, binds a.
    let d1 = add_deployment(&sys, "fedora", 1, 0, Some(name_of("h")));
    bind_image(&d1, "a.image", name_of("a"), true);
    // Deployment 2 (rollback): an older host image not in the store, binds b.
    let d2 = add_deployment(&sys, "fedora", 2, 1, Some("quay.io/os/host:40"));
    bind_image(&d2, "b.container", name_of("b"), false);
    // Deployment 3 in another stateroot: no origin, binds c and `shorty` by short name.
    let d3 = add_deployment(&sys, "other", 3, 0, None);
    bind_image(&d3, "c.image", name_of("c"), true);
    bind_image(&d3, "shorty.image", "shorty", true);

    for t in ["a", "b", "c", "e", "f", "h", "s"] {
        sys.pull(&def, name_of(t));
    }
    sys.podman_ok(&["untag", name_of("f")]);
    let f_rec = sys
        .image_records()
        .into_iter()
        .find(|r| r["id"] == fx.image("f").image_id())
        .expect("f record");
    assert!(
        f_rec["names"].as_array().is_none_or(|a| a.is_empty()),
        "f should be untagged: {f_rec}"
    );

    // The layers the kept images use.
    let kept_tags = ["a", "b", "c", "h", "s"];
    let records = sys.layer_records();
    let kept_layers: BTreeSet<String> = kept_tags
        .iter()
        .flat_map(|t| fx.image(t).diff_ids.clone())
        .map(|d| layer_id_by_diff(&records, &d))
        .collect();
    let removed_layers: BTreeSet<String> =
        sys.layer_ids().difference(&kept_layers).cloned().collect();
    assert_eq!(removed_layers.len(), 2, "e's top layer and f's layer");

    // --dry-run names the garbage and changes nothing.
    let before = content_snapshot(&sys.storage());
    let out = sys.ours_ok(&def, &["storage", "gc", "--dry-run"]);
    let would: BTreeSet<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("would remove image "))
        .collect();
    let e_id = fx.image("e").image_id();
    let f_id = fx.image("f").image_id();
    assert_eq!(
        would,
        BTreeSet::from([e_id.as_str(), f_id.as_str()]),
        "gc --dry-run output:\n{out}"
    );
    let would_layers: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("would remove layer ").map(str::to_owned))
        .collect();
    assert_eq!(would_layers, removed_layers, "gc --dry-run layers:\n{out}");
    assert_eq!(
        out.lines().last(),
        Some("Would remove 2 images, 2 layers"),
        "{out}"
    );
    let d = snapshot_diff(&before, &content_snapshot(&sys.storage()));
    assert!(
        d.is_empty(),
        "gc --dry-run changed the store:\n{}",
        d.join("\n")
    );

    let out = sys.ours_ok(&def, &["storage", "gc"]);
    assert_eq!(
        out.lines().last(),
        Some("Removed 2 images, 2 layers"),
        "{out}"
    );
    for id in &removed_layers {
        assert!(out.contains(&format!("removed layer {id}")), "{out}");
    }
    let ids: BTreeSet<String> = sys.images().into_iter().map(|(id, _)| id).collect();
    let expected: BTreeSet<String> = kept_tags.iter().map(|t| fx.image(t).image_id()).collect();
    assert_eq!(ids, expected, "images after gc");
    assert_eq!(sys.layer_ids(), kept_layers, "layers after gc");

    // No layer directory of a removed layer is left; every layer record has its directory (other
    // entries of overlay/: `l` and podman's `.has-mount-program`).
    let dirs: BTreeSet<String> = fs::read_dir(sys.storage().join("overlay"))
        .expect("read overlay/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    assert_eq!(dirs, kept_layers, "overlay/<id> dirs vs layers.json");
    for id in &removed_layers {
        assert!(
            !sys.storage()
                .join(format!("overlay-layers/{id}.tar-split.gz"))
                .exists(),
            "tar-split of removed layer {id} left"
        );
    }
    // Every short link points at a live layer.
    for e in fs::read_dir(sys.storage().join("overlay/l")).expect("read overlay/l") {
        let p = e.expect("entry").path();
        assert!(
            fs::metadata(&p).is_ok(),
            "dangling short link {} -> {:?}",
            p.display(),
            fs::read_link(&p)
        );
    }

    // podman still works on the store and lists exactly the kept images.
    let listed: Vec<Value> =
        serde_json::from_str(&sys.podman_ok(&["images", "--format", "json"])).expect("JSON");
    let listed_ids: BTreeSet<String> = listed
        .iter()
        .map(|i| i["Id"].as_str().expect("Id").to_string())
        .collect();
    assert_eq!(listed_ids, expected, "podman images after gc");
    let mnt = PathBuf::from(sys.podman_ok(&["image", "mount", name_of("a")]).trim());
    assert_eq!(
        fs::read_to_string(mnt.join("layer2/file")).expect("read mounted file"),
        "content of small layer 2\n"
    );
    sys.podman_ok(&["image", "umount", name_of("a")]);

    // A second gc has nothing to do.
    let out = sys.ours_ok(&def, &["storage", "gc"]);
    assert_eq!(out.trim(), "Removed 0 images, 0 layers");
}

/// `--format json` of `pull-from-default-storage`, `bound-images list` and `storage status`: one
/// JSON document each, with what the text says.
#[test]
fn json_outputs() {
    let (def, fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    sys.bind("c.image", name_of("c"));
    let out = sys.ours_ok(
        &def,
        &[
            "pull-from-default-storage",
            name_of("a"),
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(out.trim()).expect("pull JSON");
    assert_eq!(v["name"], name_of("a"));
    assert_eq!(v["image_id"], fx.image("a").image_id().as_str());
    assert_eq!(v["layers_copied"], 2, "{v}");
    let out = sys.ours_ok(&def, &["bound-images", "list", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).expect("bound-images JSON");
    assert_eq!(v, json!([{"image": name_of("c"), "source": "c.image"}]));
    let out = sys.ours_ok(&def, &["storage", "status", "--format", "json"]);
    let v: Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(v["bootc_store"]["exists"], true, "{v}");
    assert_eq!(v["bootc_store"]["store"]["images"], 1, "{v}");
    assert_eq!(v["bootc_store"]["store"]["layers"], 2, "{v}");
    assert_eq!(v["default_store"]["driver"], "overlay");
}

/// A sysroot without deployments: gc refuses (storage class, exit 4) and removes nothing; with
/// `--force` it removes every image.
#[test]
fn gc_without_deployments_needs_force() {
    let (def, _fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("a"));
    sys.pull(&def, name_of("c"));
    let before = content_snapshot(&sys.storage());
    let out = sys.ours_out(&def, &["storage", "gc"]);
    assert_clean_failure(
        &out,
        "gc without deployments",
        &["--force", "no deployment"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let d = snapshot_diff(&before, &content_snapshot(&sys.storage()));
    assert!(
        d.is_empty(),
        "gc without deployments changed the store:\n{}",
        d.join("\n")
    );
    let out = sys.ours_ok(&def, &["storage", "gc", "--force"]);
    assert_eq!(
        out.lines().last(),
        Some("Removed 2 images, 3 layers"),
        "{out}"
    );
    assert!(sys.podman_images().is_empty());
}

/// `pull-from-default-storage` and `bound-images pull` killed (SIGKILL) at each of their write
/// events: podman reads bootc's store every time, no image lacks data, and the next run succeeds
/// with the images the source has.
#[test]
fn pulls_killed_at_every_write_point_recover() {
    use std::os::unix::process::ExitStatusExt as _;
    let (def, fx) = default_store(&["a", "b", "c"]);
    let runs: &[(&[&str], &[&str])] = &[
        (
            &["pull-from-default-storage", "quay.io/test/a:1"],
            &[
                "copy:layers-incomplete",
                "copy:layer-tree:2",
                "copy:tar-split-renamed:1",
                "copy:layers-complete",
                "image:big-data:2",
                "image:record",
            ],
        ),
        (
            &["bound-images", "pull"],
            &[
                "copy:layer-tree:1",
                "image:record:1",
                "copy:layers-complete:2",
            ],
        ),
    ];
    let mut n = 0;
    for (args, points) in runs {
        for point in *points {
            n += 1;
            let sys = Sys::new(&def, &format!("p{n}"));
            sys.bind("b.image", name_of("b"));
            sys.bind("c.image", name_of("c"));
            let out = run(sys
                .ours(&def)
                .args(*args)
                .env("BOOTC_IMAGE_CRASH_AT", point));
            // Killed in the private mount namespace it re-runs itself in: 128 + SIGKILL.
            assert!(
                out.status.signal() == Some(9) || out.status.code() == Some(137),
                "{args:?} should have been killed at {point}\n{}",
                describe(&out)
            );
            let listed = sys.podman_images();
            for img in &listed {
                sys.podman_ok(&["image", "inspect", img["Id"].as_str().expect("Id")]);
            }
            crate::recovery::assert_sound(&sys.storage(), Driver::Overlay, false);
            sys.ours_ok(&def, args);
            crate::recovery::assert_sound(&sys.storage(), Driver::Overlay, true);
            let want: BTreeSet<String> = if args[0] == "bound-images" {
                ["b", "c"].iter().map(|t| fx.image(t).image_id()).collect()
            } else {
                BTreeSet::from([fx.image("a").image_id()])
            };
            let ids: BTreeSet<String> = sys.images().into_iter().map(|(id, _)| id).collect();
            assert_eq!(ids, want, "{args:?} after a kill at {point}");
            sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
        }
    }
}

/// `storage gc` killed (SIGKILL) at each point of its delete sequence: podman still lists and
/// inspects every image, no image lacks data, and the next run finishes the delete (no orphaned
/// layer, directory or tar-split left). Regression test for complete records without data that
/// a later pull reused.
#[test]
fn gc_killed_at_every_point_recovers() {
    use std::os::unix::process::ExitStatusExt as _;
    let (def, fx) = default_store(&["a", "b", "c", "e"]);
    let points = [
        "delete:journal",
        "delete:images-record",
        "delete:image-dirs",
        "delete:layers-flagged",
        "delete:layer-data:1",
        "delete:layer-data:3",
        "delete:layer-tar-split:2",
        "delete:layers-record",
    ];
    for (i, point) in points.iter().enumerate() {
        let sys = Sys::new(&def, &format!("k{i}"));
        let d = add_deployment(&sys, "os", 1, 0, None);
        bind_image(&d, "a.image", name_of("a"), true);
        for t in ["a", "b", "c", "e"] {
            sys.pull(&def, name_of(t));
        }
        let out = run(sys
            .ours(&def)
            .args(["storage", "gc"])
            .env("BOOTC_IMAGE_CRASH_AT", point));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "gc should have been killed at {point}\n{}",
            describe(&out)
        );
        // podman reads the interrupted store: every listed image inspects.
        let listed = sys.podman_images();
        for img in &listed {
            let id = img["Id"].as_str().expect("Id");
            sys.podman_ok(&["image", "inspect", id]);
        }
        crate::recovery::assert_sound(&sys.storage(), Driver::Overlay, false);
        // The next run finishes the job.
        sys.ours_ok(&def, &["storage", "gc"]);
        let ids: BTreeSet<String> = sys.images().into_iter().map(|(id, _)| id).collect();
        assert_eq!(
            ids,
            BTreeSet::from([fx.image("a").image_id()]),
            "{point}: images after the second gc"
        );
        let records = sys.layer_records();
        let kept: BTreeSet<String> = fx
            .image("a")
            .diff_ids
            .iter()
            .map(|d| layer_id_by_diff(&records, d))
            .collect();
        assert_eq!(sys.layer_ids(), kept, "{point}: layers after the second gc");
        let dirs: BTreeSet<String> = fs::read_dir(sys.storage().join("overlay"))
            .expect("read overlay/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() == 64)
            .collect();
        assert_eq!(dirs, kept, "{point}: layer directories after the second gc");
        let leftovers: Vec<String> = fs::read_dir(sys.storage().join("overlay-layers"))
            .expect("read overlay-layers/")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.ends_with(".tar-split.gz") && !kept.contains(n.trim_end_matches(".tar-split.gz"))
                    || n.starts_with("bootc-image-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{point}: left behind {leftovers:?}");
        let image_dirs = fs::read_dir(sys.storage().join("overlay-images"))
            .expect("read overlay-images/")
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
            .count();
        assert_eq!(
            image_dirs, 1,
            "{point}: image directories after the second gc"
        );
        assert_eq!(sys.podman_images().len(), 1, "{point}: podman images");
        // A pull of a removed image works again (no stale record is reused).
        sys.pull(&def, name_of("b"));
        let mnt = PathBuf::from(sys.podman_ok(&["image", "mount", name_of("b")]).trim());
        assert!(mnt.join("layer3/file").is_file(), "{point}: b mounts");
        sys.podman_ok(&["image", "umount", name_of("b")]);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. storage init / status
// ---------------------------------------------------------------------------------------------

/// `storage init` on an empty sysroot creates a store podman accepts as an additional image
/// store and as `--root` (both empty); a second init finds it.
#[test]
fn storage_init_creates_podman_store() {
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    let out = sys.ours_ok(&def, &["storage", "init"]);
    assert_eq!(
        out.trim(),
        format!("Created {}", sys.storage().display()),
        "storage init output"
    );
    for f in ["overlay-images/images.lock", "overlay-layers/layers.lock"] {
        assert!(sys.storage().join(f).is_file(), "{f} missing");
    }
    assert!(
        !sys.path.join("ostree/bootc/storage.tmp").exists(),
        "storage.tmp left behind"
    );

    // As an additional image store first (podman must not have touched it yet).
    let consumer = TestStore::new(Driver::Overlay);
    let images: Vec<Value> = serde_json::from_str(&run_ok(
        ais_podman(&consumer, &sys).args(["images", "--format", "json"]),
    ))
    .expect("podman images JSON");
    assert!(images.is_empty(), "AIS images: {images:?}");
    // Then as --root.
    let images: Vec<Value> =
        serde_json::from_str(&sys.podman_ok(&["images", "--format", "json"])).expect("JSON");
    assert!(images.is_empty(), "--root images: {images:?}");

    let out = sys.ours_ok(&def, &["storage", "init"]);
    assert_eq!(out.trim(), format!("Exists: {}", sys.storage().display()));
}

/// `storage status` reports the paths and counts; `storage verify` checks every layer.
#[test]
fn storage_status_and_verify() {
    let (def, _fx) = default_store(&["a", "b"]);
    let sys = Sys::new(&def, "s");
    let out = sys.ours_ok(&def, &["storage", "status"]);
    assert!(
        out.contains(&sys.storage().display().to_string()) && out.contains("not created yet"),
        "status before init:\n{out}"
    );
    assert!(!sys.storage().exists(), "status created the store");
    sys.pull(&def, name_of("a"));
    sys.pull(&def, name_of("b"));
    let out = sys.ours_ok(&def, &["storage", "status"]);
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(str::trim))
            .unwrap_or_else(|| panic!("no {key} in status:\n{out}"))
            .to_string()
    };
    assert_eq!(field("images:"), "2");
    assert_eq!(field("layers:"), "3 (0 incomplete)");
    assert!(
        out.contains(&def.root.display().to_string()),
        "status names the default store:\n{out}"
    );
    let out = sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
    assert!(out.starts_with("3 layers verified\n"), "{out}");
}

/// `--help` of the binary names the bootc commands (a cheap check that the binary under test is
/// the one with the bootc family).
#[test]
fn bootc_commands_exist() {
    let out = run_ok(Command::new(BIN).arg("--help"));
    for c in [
        "pull-from-default-storage",
        "list",
        "cmd",
        "bound-images",
        "storage",
    ] {
        assert!(out.contains(c), "--help lacks {c}:\n{out}");
    }
}

/// A booted system's mounts: the sysroot mounted read-only and its stateroot's `var` mounted on its
/// own, the default store under that `var`. The pull reaches the default store through the sysroot's
/// mount (link() does not cross mounts) and writes bootc's store there, made writable in its private
/// namespace only; the layers are hardlinked.
#[test]
fn pull_on_booted_mounts() {
    let (def, fx) = default_store(&[]);
    let sys = Sys::new(&def, "p");
    let var = sys.path.join("ostree/deploy/os/var");
    let inner = TestStore {
        dir: def.dir.clone(),
        root: var.join("lib/containers/storage"),
        runroot: def.runroot.clone(),
        tmpdir: def.tmpdir.clone(),
        driver: Driver::Overlay,
    };
    fs::create_dir_all(&inner.root).expect("create the default store under var");
    fx.put(&inner, "a");
    let booted = def.scratch("b");
    let out = run(crate::util::booted_mounts_cmd(&sys.path, &var, &booted)
        .arg(BIN)
        .arg("--root")
        .arg(booted.join("var/lib/containers/storage"))
        .arg("--runroot")
        .arg(&def.runroot)
        .args(["--storage-driver", "overlay", "--sysroot"])
        .arg(booted.join("sysroot"))
        .args(["pull-from-default-storage", name_of("a")]));
    assert!(
        out.status.success(),
        "pull on booted mounts\n{}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Copied quay.io/test/a:1 (2 layers hardlinked, 0 reused)",
        "pull on booted mounts"
    );
    sys.assert_shares_file(&inner.root, &fx.image("a").diff_ids[1]);
    let listed = sys.podman_images();
    assert_eq!(
        listed.len(),
        1,
        "podman images on bootc's store: {listed:?}"
    );
}

/// `storage init` on a read-only sysroot mount (a booted system's `/sysroot`): the command makes
/// that mount writable in its own private namespace only, and the store appears.
#[test]
fn storage_init_on_read_only_sysroot() {
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    let ro = def.scratch("ro");
    let var = def.scratch("ro-var");
    fs::create_dir_all(&var).expect("mkdir");
    let out = run(crate::util::booted_mounts_cmd(&sys.path, &var, &ro)
        .arg(BIN)
        .arg("--root")
        .arg(&def.root)
        .arg("--runroot")
        .arg(&def.runroot)
        .arg("--sysroot")
        .arg(ro.join("sysroot"))
        .args(["storage", "init"]));
    assert!(
        out.status.success(),
        "storage init on a read-only mount\n{}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "Created {}",
            ro.join("sysroot/ostree/bootc/storage").display()
        ),
        "storage init output"
    );
    for f in ["overlay-images/images.lock", "overlay-layers/layers.lock"] {
        assert!(sys.storage().join(f).is_file(), "{f} missing");
    }
}

/// Bound images from a registry: three images, one of which is missing → none stored and the store
/// as it was; `--dry-run` says where each would come from; all three reachable → all stored in
/// one go, and podman lists them through `additionalimagestore`.
#[test]
fn bound_images_pull_from_registry() {
    let reg = crate::registry::Registry::start(false);
    let def = TestStore::new(Driver::Overlay);
    let sys = Sys::new(&def, "s");
    let mut oci = OciDir::create(&def.dir.join("oci"));
    let tars: Vec<Vec<u8>> = (70..74).map(crate::fixture::small_tar).collect();
    let mut names = Vec::new();
    for k in 0..3 {
        // A shared base, and a layer of their own.
        let spec = ImageSpec::from_tars(
            &format!("b{k}"),
            &[tars[0].clone(), tars[k + 1].clone()],
            Compression::Gzip,
        );
        let built = oci.add_image(Some(&format!("b{k}")), &spec);
        reg.push(
            &oci.source(Some(&format!("b{k}"))),
            &format!("bound/b{k}:1"),
        );
        names.push((format!("{}/bound/b{k}:1", reg.host()), built));
    }
    sys.bind("a.image", &names[0].0);
    sys.bind("b.image", &names[1].0);
    sys.bind("c.image", &format!("{}/bound/missing:1", reg.host()));
    let with_conf = |args: &[&str]| {
        run(sys
            .ours(&def)
            .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
            .args(args))
    };
    // Create bootc's store first, so that "as it was" is a store.
    sys.ours_ok(&def, &["storage", "init"]);
    let (images, layers) = (sys.images(), sys.layer_ids());
    let out = with_conf(&["bound-images", "pull", "--retry", "0", "--progress", "none"]);
    assert_clean_failure(&out, "one bound image is missing", &["bound/missing:1"]);
    assert_eq!(sys.images(), images, "images after the failed pull");
    assert_eq!(sys.layer_ids(), layers, "layers after the failed pull");
    // Replace the missing one with the third image.
    fs::remove_file(sys.path.join("usr/lib/bootc/bound-images.d/c.image")).expect("unbind");
    sys.bind("c.image", &names[2].0);
    let out = with_conf(&["bound-images", "pull", "--dry-run"]);
    assert!(out.status.success(), "{}", describe(&out));
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(plan.lines().count(), 3, "{plan}");
    assert!(plan.lines().all(|l| l.contains("its registry")), "{plan}");
    assert_eq!(sys.images(), images, "--dry-run changes nothing");
    let out = with_conf(&["bound-images", "pull", "--progress", "none"]);
    assert!(out.status.success(), "{}", describe(&out));
    let want: BTreeSet<(String, Vec<String>)> = names
        .iter()
        .map(|(n, b)| (b.image_id(), vec![n.clone()]))
        .collect();
    assert_eq!(sys.images(), want);
    let consumer = TestStore::new(Driver::Overlay);
    let listed = run_ok(ais_podman(&consumer, &sys).args(["images", "--format", "{{.ID}}"]));
    assert_eq!(
        listed.lines().count(),
        3,
        "podman via additionalimagestore: {listed}"
    );
    let out = with_conf(&["bound-images", "pull", "--dry-run"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .all(|l| l.contains("already in bootc's store")),
        "{}",
        describe(&out)
    );
}

/// `storage gc --force` keeps an image that a podman container on bootc's store uses (as `podman
/// rmi` refuses to remove it), says so, and removes the rest; podman still lists and removes it.
#[test]
fn gc_keeps_images_containers_use() {
    let (def, _fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("a"));
    sys.pull(&def, name_of("c"));
    sys.podman_ok(&["create", "--name", "keeper", name_of("a"), "true"]);
    let out = sys.ours_ok(&def, &["storage", "gc", "--force"]);
    assert!(
        out.contains("kept image") && out.contains("used by container"),
        "{out}"
    );
    let names: Vec<String> = sys.podman_images().iter().flat_map(podman_names).collect();
    assert_eq!(names, vec![name_of("a").to_string()], "{out}");
    sys.podman_ok(&["rm", "keeper"]);
    sys.podman_ok(&["rmi", name_of("a")]);
}

/// A `storage gc` killed in the middle of its delete leaves a journal: `storage verify` reports it
/// as pending (exit 0, nothing lost), not as damage; the next write finishes it and verify is clean.
#[test]
fn verify_names_an_interrupted_gc_as_pending() {
    use std::os::unix::process::ExitStatusExt as _;
    let (def, _fx) = default_store(&["a", "c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("a"));
    sys.pull(&def, name_of("c"));
    for point in [
        "delete:image-dirs",
        "delete:layers-flagged",
        "delete:layer-data",
    ] {
        let mut c = sys.ours(&def);
        c.args(["storage", "gc", "--force"])
            .env("BOOTC_IMAGE_CRASH_AT", point);
        let out = run(&mut c);
        assert_eq!(out.status.signal(), Some(9), "{point}: {}", describe(&out));
        let out = sys.ours_out(&def, &["storage", "verify", "--store", "bootc"]);
        assert!(out.status.success(), "{point}: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("pending:") && text.contains("nothing is lost"),
            "{point}: {text}"
        );
        let out = sys.ours_out(
            &def,
            &["storage", "verify", "--store", "bootc", "--format", "json"],
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
        assert!(
            v["problems"].as_array().is_some_and(Vec::is_empty),
            "{point}: {v}"
        );
        assert!(
            v["pending"].as_array().is_some_and(|p| !p.is_empty()),
            "{point}: {v}"
        );
        // The next write finishes it.
        sys.ours_ok(&def, &["storage", "verify", "--store", "bootc", "--repair"]);
        let out = sys.ours_ok(&def, &["storage", "verify", "--store", "bootc"]);
        assert!(!out.contains("pending"), "{point}: {out}");
        sys.podman_ok(&["images"]);
        sys.pull(&def, name_of("a"));
        sys.pull(&def, name_of("c"));
    }
}

/// `cmd list` with bootc-image behind the seam (`BOOTC_EXP_EXTERNAL_CONTAINER_TOOL`): the podman
/// call bootc makes — `--root /run/bootc/storage --runroot /proc/self/fd/3 image list …` in a
/// private mount namespace, the run root reached through fd 3 only — served natively, printing
/// what real podman prints for the same store.
#[test]
fn cmd_list_through_the_seam() {
    let (def, _fx) = default_store(&["c"]);
    let sys = Sys::new(&def, "s");
    sys.pull(&def, name_of("c"));
    for format in [
        "{{.Repository}}:{{.Tag}}",
        "json",
        "table {{.ID}}\t{{.Repository}}\t{{.Size}}",
    ] {
        let real = sys.ours_ok(&def, &["cmd", "list", "--format", format]);
        let seam = run_ok(
            Command::new(BIN)
                .env("BOOTC_EXP_EXTERNAL_CONTAINER_TOOL", BIN)
                .arg("--sysroot")
                .arg(&sys.path)
                .args(["cmd", "list", "--format", format]),
        );
        assert_eq!(seam, real, "cmd list --format {format}");
    }
}
