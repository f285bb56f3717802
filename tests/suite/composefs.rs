//! The composefs source: images in a composefs repository (bootc's composefs backend) copied into
//! containers-storage must be what skopeo writes from the original OCI image.
//!
//! Fixtures are made at test time with the composefs crates, as bootc makes them: a repository
//! (SHA-512, fs-verity off as on ext4) into which `composefs_oci::pull` imports the tests' own OCI
//! layouts (its native `oci:` path: each layer split into a splitstream, large files as objects).
//! A composefs *sysroot* is laid out as bootc's composefs backend lays it (taken from upstream's
//! `bootc_composefs/state.rs::write_composefs_state` and `composefs_consts.rs`): the repository in
//! `composefs/`, the image tagged `localhost/bootc-<manifest digest>` (bootc's GC tag), and
//! `state/deploy/<id>/<id>.origin` with `[origin] container-image-reference =
//! ostree-unverified-image:docker://NAME`, `[boot] boot_type`, `[image] manifest_digest`, where
//! `<id>` is the fs-verity id of the image's EROFS (the deployment id bootc uses).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::fixture::{self, BuiltImage, Compression, ImageSpec, OciDir, UNDEFINED_MTIME_PATHS};
use crate::interop::{self, NAME};
use crate::util::{Driver, TestStore, Tree, run, run_ok, walk_tree};

/// The fixture tool (`tests/composefs-fixture`, its own workspace: composefs-oci must not share a
/// build with bootc-image), built on first use when `scripts/test.sh` has not built it.
pub fn fixture_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| crate::util::workspace_tool("composefs-fixture"))
}

/// Imports the OCI image `oci_src` (`oci:DIR:TAG`) into a new repository at `repo`, tagged `tag`,
/// with composefs-oci (the fixture tool); returns the manifest digest.
pub fn import_into_repo(oci_src: &str, repo: &Path, tag: &str) -> String {
    let out = run_ok(
        Command::new(fixture_tool())
            .arg("import")
            .arg(oci_src)
            .arg(repo)
            .arg(tag),
    );
    out.trim().to_string()
}

/// The source reference of an image in a repository.
pub fn source(repo: &Path, image: &str) -> String {
    format!("composefs:{}:{image}", repo.display())
}

/// `entries` with a directory entry before each entry whose parent no entry names (composefs-oci
/// builds the image's tree while importing and refuses a file in an implied directory; bootc's
/// images never have one).
fn with_parents(entries: Vec<fixture::Entry>) -> Vec<fixture::Entry> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in entries {
        let path = e
            .path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let mut parent = String::new();
        for c in path
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            parent = if parent.is_empty() {
                c.to_string()
            } else {
                format!("{parent}/{c}")
            };
            if seen.insert(parent.clone()) {
                out.push(fixture::Entry::dir(&format!("{parent}/")));
            }
        }
        seen.insert(path);
        out.push(e);
    }
    out
}

/// The rich fixture (whiteouts, opaque dirs, hardlinks, xattrs, devices, long and non-UTF-8 names,
/// large and small files), implied directories made explicit.
fn rich_image(compression: Compression) -> ImageSpec {
    let tars: Vec<Vec<u8>> = [
        fixture::rich_layer1(),
        fixture::rich_layer2(),
        fixture::rich_layer3(),
    ]
    .into_iter()
    .map(|l| fixture::build_tar(&with_parents(l)))
    .collect();
    ImageSpec::from_tars("rich", &tars, compression)
}

/// The rich fixture in an OCI layout and a repository made from it.
fn rich_repo(dir: &Path, compression: Compression) -> (String, PathBuf, BuiltImage) {
    let mut oci = OciDir::create(&dir.join("oci"));
    let built = oci.add_image(Some("v1"), &rich_image(compression));
    let repo = dir.join("composefs");
    let digest = import_into_repo(&oci.source(Some("v1")), &repo, "v1");
    assert_eq!(
        digest, built.manifest_digest,
        "the repository keeps the digest"
    );
    (oci.source(Some("v1")), repo, built)
}

/// skopeo from the OCI layout vs ours from the repository: inspect, records, trees, exports, rmi.
fn compare(driver: Driver, compression: Compression) {
    interop::compare_copies(
        driver,
        |dir| {
            let (oci_src, repo, built) = rich_repo(dir, compression);
            (oci_src, source(&repo, "v1"), built)
        },
        UNDEFINED_MTIME_PATHS,
    );
}

/// gzip original, overlay.
#[test]
fn composefs_overlay_gzip() {
    compare(Driver::Overlay, Compression::Gzip);
}

/// zstd original, overlay.
#[test]
fn composefs_overlay_zstd() {
    compare(Driver::Overlay, Compression::Zstd);
}

/// Uncompressed original, vfs.
#[test]
fn composefs_vfs_uncompressed() {
    compare(Driver::Vfs, Compression::None);
}

/// Hard-link headers whose metadata differs from the target's, `./` entries; by manifest digest.
#[test]
fn composefs_edge_by_digest() {
    interop::compare_copies(
        Driver::Overlay,
        |dir| {
            let mut oci = OciDir::create(&dir.join("oci"));
            // composefs-oci's import builds the image's tree, which must have a /usr.
            let mut tars = fixture::edge_tars();
            tars.push(fixture::build_tar(&[fixture::Entry::dir("usr/")]));
            let spec = ImageSpec {
                layers: tars
                    .iter()
                    .map(|t| fixture::LayerBlob::new(t, Compression::Gzip))
                    .collect(),
                label: "edge".into(),
            };
            let built = oci.add_image(Some("edge"), &spec);
            let repo = dir.join("composefs");
            import_into_repo(&oci.source(Some("edge")), &repo, "edge");
            let src = source(&repo, &built.manifest_digest);
            (oci.source(Some("edge")), src, built)
        },
        &[""],
    );
}

/// The repository's state: every path with its type, mode, owner, size, content digest, mtime.
fn repo_state(repo: &Path) -> Tree {
    walk_tree(repo)
}

/// Copying changes nothing in the repository: objects, streams, refs, byte for byte and inode
/// metadata (mtimes included).
#[test]
fn composefs_repository_unchanged() {
    let store = TestStore::new(Driver::Overlay);
    let (_, repo, built) = rich_repo(&store.dir, Compression::Gzip);
    let before = repo_state(&repo);
    store.ours_copy_ok(&source(&repo, "v1"), Some(NAME));
    let after = repo_state(&repo);
    let d = crate::util::diff_trees(&before, &after, &[]);
    assert!(d.is_empty(), "the repository changed:\n{}", d.join("\n"));
    assert_eq!(
        store.inspect(NAME)["Digest"],
        Value::from(built.manifest_digest)
    );
}

/// The object files of a repository that hold `content`.
pub fn objects_with(repo: &Path, content: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in fs::read_dir(repo.join("objects")).expect("objects") {
        let d = d.expect("entry").path();
        if !d.is_dir() {
            continue;
        }
        for f in fs::read_dir(&d).expect("dir") {
            let f = f.expect("entry").path();
            if fs::read(&f).is_ok_and(|c| c == content) {
                out.push(f);
            }
        }
    }
    out
}

/// A repository with one layer holding a large file (an external object) and a small one (inline).
pub fn small_repo(dir: &Path) -> (PathBuf, BuiltImage, Vec<u8>) {
    let big = fixture::pseudo_random(300_000, 7);
    let tar = fixture::build_tar(&[
        fixture::Entry::dir("usr/"),
        fixture::Entry::dir("etc/"),
        fixture::Entry::file("etc/small", b"small".to_vec()),
        fixture::Entry::file("big.bin", big.clone()),
    ]);
    let mut oci = OciDir::create(&dir.join("oci"));
    let built = oci.add_image(
        Some("small"),
        &ImageSpec::from_tars("small", &[tar], Compression::Gzip),
    );
    let repo = dir.join("composefs");
    import_into_repo(&oci.source(Some("small")), &repo, "small");
    (repo, built, big)
}

/// Bad input: a missing object, an object whose content lies (same size), a truncated layer
/// splitstream, an unknown tag: each a one-line image error (exit 3) that names it, store unchanged.
#[test]
fn composefs_bad_input() {
    let store = TestStore::new(Driver::Overlay);
    crate::errors::seed(&store);
    let (repo, _built, big) = small_repo(&store.dir);
    let before = store.snapshot();
    let fail = |src: &str, extra: &[&str], mentions: &[&str]| {
        let mut cmd = store.ours_cmd();
        cmd.args(["copy-to-storage", "--source", src, "--target", NAME])
            .args(extra);
        let out = run(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            crate::util::describe(&out)
        );
        let line = crate::util::assert_clean_failure(&out, src, mentions);
        eprintln!("{line}");
        let d = before.diff(&store.snapshot());
        assert!(d.is_empty(), "{src}: the store changed:\n{}", d.join("\n"));
    };

    fail(
        &source(&repo, "nope:1"),
        &[],
        &["nope:1", "no image tagged"],
    );

    let [object] = objects_with(&repo, &big).try_into().expect("one object");
    // A lying object: same size, other bytes. The DiffID check catches it, and the copy checked
    // again object by object names it; --verify names it at once.
    let mut lying = big.clone();
    lying[1000] ^= 0xff;
    let saved = fs::read(&object).expect("read");
    fs::write(&object, &lying).expect("write");
    let name = object
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    fail(
        &source(&repo, "small"),
        &[],
        &[&name, "does not match its content", "fs-verity digest"],
    );
    fail(
        &source(&repo, "small"),
        &["--verify"],
        &["does not match its content", "fs-verity digest"],
    );
    fs::write(&object, &saved).expect("restore");

    // A short object.
    fs::write(&object, &big[..1000]).expect("write");
    fail(&source(&repo, "small"), &[], &["is 1000 bytes", "big.bin"]);
    fs::write(&object, &saved).expect("restore");

    // A missing object.
    fs::rename(&object, object.with_extension("gone")).expect("hide");
    fail(
        &source(&repo, "small"),
        &[],
        &["composefs repository", "cannot be opened"],
    );
    fs::rename(object.with_extension("gone"), &object).expect("restore");

    // It still copies once repaired.
    store.ours_copy_ok(&source(&repo, "small"), Some(NAME));
}

/// A truncated layer splitstream: the damage is named, nothing stored.
#[test]
fn composefs_truncated_splitstream() {
    let store = TestStore::new(Driver::Overlay);
    crate::errors::seed(&store);
    let (repo, built, _) = small_repo(&store.dir);
    let layer = repo
        .join("streams")
        .join(format!("oci-layer-{}", built.diff_ids[0]));
    let target = fs::canonicalize(&layer).expect("layer stream");
    let bytes = fs::read(&target).expect("read");
    let before = store.snapshot();
    // Truncated; whole but its header naming a section far outside the file (the reader would
    // allocate what it says); whole but with bytes of its compressed stream changed.
    let mut huge = bytes.clone();
    huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut garbled = bytes.clone();
    let mid = garbled.len() / 2;
    for b in &mut garbled[mid..mid + 8] {
        *b ^= 0x5a;
    }
    for (damage, mentions) in [
        (
            bytes[..bytes.len() - 40].to_vec(),
            &["outside the file"][..],
        ),
        (huge, &["outside the file"][..]),
        (garbled, &[][..]),
    ] {
        fs::write(&target, &damage).expect("damage");
        let out = store.ours_copy(&source(&repo, "small"), Some(NAME));
        assert_eq!(
            out.status.code(),
            Some(3),
            "{}",
            crate::util::describe(&out)
        );
        let line = crate::util::assert_clean_failure(&out, "damaged splitstream", mentions);
        eprintln!("{line}");
        let d = before.diff(&store.snapshot());
        assert!(d.is_empty(), "the store changed:\n{}", d.join("\n"));
    }
}

/// The image a composefs sysroot fixture deploys.
const HOST_IMAGE: &str = "quay.io/example/os:42";

/// A composefs sysroot as bootc lays it (see the module documentation), deploying the rich image
/// as [`HOST_IMAGE`]; returns the sysroot and the image.
fn composefs_sysroot(dir: &Path) -> (PathBuf, BuiltImage) {
    let mut oci = OciDir::create(&dir.join("oci"));
    let built = oci.add_image(Some("v1"), &rich_image(Compression::Gzip));
    let sysroot = dir.join("sysroot");
    let repo_path = sysroot.join("composefs");
    fs::create_dir_all(&sysroot).expect("sysroot");
    let tag = format!("localhost/bootc-{}", built.manifest_digest);
    import_into_repo(&oci.source(Some("v1")), &repo_path, &tag);
    // The deployment id: the fs-verity id of the image's EROFS, which the import linked to it.
    let id = run_ok(
        Command::new(fixture_tool())
            .arg("erofs-id")
            .arg(&repo_path)
            .arg(&built.manifest_digest),
    )
    .trim()
    .to_string();
    let state = sysroot.join("state/deploy").join(&id);
    fs::create_dir_all(state.join("etc")).expect("etc");
    fs::create_dir_all(sysroot.join("state/os/default/var")).expect("var");
    std::os::unix::fs::symlink("../../os/default/var", state.join("var")).expect("var link");
    fs::write(
        state.join(format!("{id}.origin")),
        format!(
            "[origin]\ncontainer-image-reference = ostree-unverified-image:docker://{HOST_IMAGE}\n\n\
             [boot]\nboot_type = bls\ndigest = 0000\n\n[image]\nmanifest_digest = {}\n",
            built.manifest_digest
        ),
    )
    .expect("origin");
    (sysroot, built)
}

/// `bootc-image --sysroot SYSROOT …` on `store`.
fn on_sysroot(store: &TestStore, sysroot: &Path, args: &[&str]) -> std::process::Output {
    let mut c = store.ours_cmd();
    c.arg("--sysroot").arg(sysroot).args(args);
    run(&mut c)
}

/// Like [`on_sysroot`], panics unless it succeeds; returns stdout.
fn on_sysroot_ok(store: &TestStore, sysroot: &Path, args: &[&str]) -> String {
    let out = on_sysroot(store, sysroot, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        crate::util::describe(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// On a composefs sysroot: `copy-to-storage` without --source copies the deployment's image (as
/// localhost/bootc); `--source docker://NAME` is the deployment's image, not a registry's; `list
/// --type host` shows it. Digests are the original image's.
#[test]
fn composefs_sysroot_copy_and_list() {
    let store = TestStore::new(Driver::Overlay);
    let (sysroot, built) = composefs_sysroot(&store.dir);
    let stdout = on_sysroot_ok(&store, &sysroot, &["copy-to-storage"]);
    assert!(stdout.contains(HOST_IMAGE), "names the image: {stdout}");
    let v = store.inspect("localhost/bootc:latest");
    assert_eq!(v["Digest"], Value::from(built.manifest_digest.clone()));
    assert_eq!(v["Id"], Value::from(built.image_id()));
    assert_eq!(v["RootFS"]["Layers"], Value::from(built.diff_ids.clone()));

    let src = format!("docker://{HOST_IMAGE}");
    on_sysroot_ok(
        &store,
        &sysroot,
        &["copy-to-storage", "--source", &src, "--target", NAME],
    );
    assert_eq!(
        store.inspect(NAME)["Digest"],
        Value::from(built.manifest_digest.clone())
    );

    let listed = on_sysroot_ok(
        &store,
        &sysroot,
        &["list", "--type", "host", "--format", "json"],
    );
    let rows: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(
        rows,
        serde_json::json!([{"image_type": "host", "image": format!("docker://{HOST_IMAGE}")}])
    );
}

/// A composefs sysroot without a deployment: a one-line image error naming what is missing.
#[test]
fn composefs_sysroot_without_deployment() {
    let store = TestStore::new(Driver::Overlay);
    crate::errors::seed(&store);
    let sysroot = store.scratch("sysroot");
    fs::create_dir_all(sysroot.join("composefs")).expect("repo");
    fs::create_dir_all(sysroot.join("state/deploy")).expect("state");
    let before = store.snapshot();
    let out = on_sysroot(&store, &sysroot, &["copy-to-storage"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        crate::util::describe(&out)
    );
    crate::util::assert_clean_failure(&out, "no deployment", &["has no deployment", "--source"]);
    let d = before.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed:\n{}", d.join("\n"));
}

/// podman's view of bootc's store in `sysroot`.
fn bootc_store_inspect(sysroot: &Path, name: &str) -> Value {
    let runroot = crate::util::unique_tmp_path("rr");
    let out = crate::util::run_ok(
        std::process::Command::new("podman")
            .arg("--root")
            .arg(sysroot.join("ostree/bootc/storage"))
            .arg("--runroot")
            .arg(&runroot)
            .args(["--storage-driver", "overlay", "image", "inspect", name]),
    );
    let _ = fs::remove_dir_all(&runroot);
    let v: Value = serde_json::from_str(&out).expect("inspect JSON");
    v[0].clone()
}

/// `set-unified` on a composefs sysroot puts the deployed image into bootc's store under its name
/// with its digest; run again, it finds it there, verifies it and changes nothing.
#[test]
fn set_unified_composefs() {
    let store = TestStore::new(Driver::Overlay);
    let (sysroot, built) = composefs_sysroot(&store.dir);
    let first = on_sysroot_ok(&store, &sysroot, &["set-unified"]);
    assert!(first.contains("Stored"), "{first}");
    let v = bootc_store_inspect(&sysroot, HOST_IMAGE);
    assert_eq!(v["Digest"], Value::from(built.manifest_digest.clone()));
    assert_eq!(v["RootFS"]["Layers"], Value::from(built.diff_ids.clone()));
    let bootc_store = sysroot.join("ostree/bootc/storage");
    let before = walk_tree(&bootc_store);
    let second = on_sysroot_ok(&store, &sysroot, &["set-unified"]);
    assert!(second.contains("already in bootc's storage"), "{second}");
    let d = crate::util::diff_trees(&before, &walk_tree(&bootc_store), &[]);
    assert!(
        d.is_empty(),
        "the second run changed bootc's store:\n{}",
        d.join("\n")
    );
}

/// `set-unified` when the default store already holds the booted image: copied from there.
#[test]
fn set_unified_from_default_store() {
    let store = TestStore::new(Driver::Overlay);
    let (sysroot, built) = composefs_sysroot(&store.dir);
    store.skopeo_copy_in(
        &format!("oci:{}:v1", store.dir.join("oci").display()),
        HOST_IMAGE,
    );
    let out = on_sysroot_ok(&store, &sysroot, &["set-unified"]);
    assert!(out.contains("from the default store"), "{out}");
    let v = bootc_store_inspect(&sysroot, HOST_IMAGE);
    assert_eq!(v["Digest"], Value::from(built.manifest_digest));
}

/// A loop-mounted XFS (reflink on), unmounted and deleted on drop.
pub struct Xfs {
    dir: PathBuf,
    /// Its mount point.
    pub mnt: PathBuf,
}

impl Xfs {
    /// Makes and mounts one (600 MB, sparse).
    pub fn new() -> Xfs {
        let dir = crate::util::unique_tmp_path("xfs");
        let img = dir.join("fs.img");
        let mnt = dir.join("mnt");
        fs::create_dir_all(&mnt).expect("mount point");
        crate::util::run_ok(
            std::process::Command::new("truncate")
                .args(["-s", "600M"])
                .arg(&img),
        );
        crate::util::run_ok(
            std::process::Command::new("mkfs.xfs")
                .args(["-q", "-f", "-m", "reflink=1"])
                .arg(&img),
        );
        crate::util::run_ok(
            std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&img)
                .arg(&mnt),
        );
        Xfs { dir, mnt }
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        crate::util::unmount_below(&self.mnt);
        let _ = std::process::Command::new("umount").arg(&self.mnt).status();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// On XFS the large file's extents are shared with its object (a reflink: `filefrag` reports
/// them shared), the small one is written, and the image is still the original.
#[test]
fn composefs_reflink_on_xfs() {
    let xfs = Xfs::new();
    let store = TestStore::new_in(Driver::Overlay, &xfs.mnt);
    let (repo, built, big) = small_repo(&store.dir);
    let out = store.ours_copy_ok(&source(&repo, "small"), Some(NAME));
    assert!(
        out.contains("1 file reflinked from the repository"),
        "{out}"
    );
    let v = store.inspect(NAME);
    assert_eq!(v["Digest"], Value::from(built.manifest_digest));
    let layer = store
        .root
        .join("overlay")
        .join(built.diff_ids[0].trim_start_matches("sha256:"));
    let file = layer.join("diff/big.bin");
    assert_eq!(fs::read(&file).expect("big.bin"), big);
    let extents = crate::util::run_ok(std::process::Command::new("filefrag").arg("-v").arg(&file));
    assert!(
        extents.contains("shared"),
        "big.bin's extents are not shared:\n{extents}"
    );
    drop(store);
}
