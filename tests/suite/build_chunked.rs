//! `build-chunked`: a root filesystem with dpkg metadata (made here: a few fake packages with their
//! `.list` files, a merged /usr, and the tricky entries — hardlinks, symlinks, xattrs, a device,
//! a FIFO, setuid, a long name, an empty directory) built into a store; podman mounts a tree equal
//! to the rootfs, every file sits in the layer of its package, builds are reproducible, and a
//! rebuild with `--from-image` after one package changed changes only that package's layer.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{Driver, TestStore, Tree, diff_trees, run, run_ok, walk_tree};

/// All mtimes of the fixture (whole seconds, as layers keep them).
const MTIME: u64 = 1_700_000_000;

fn write(root: &Path, rel: &str, content: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    fs::write(&p, content).expect("write");
}

/// The fixture rootfs under `dir`; `bash_version` changes the `bash` package's files.
pub fn make_rootfs(dir: &Path, bash_version: &str) -> PathBuf {
    let root = dir.join("rootfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("usr/bin")).expect("usr/bin");
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("bin link");
    // base-files
    write(&root, "etc/hostname", b"builder\n");
    write(&root, "etc/os-release", b"ID=debian\n");
    // bash (listed through the merged-/usr path /bin/bash)
    let bash = format!("#!/bin/sh\necho bash {bash_version}\n").repeat(200);
    write(&root, "usr/bin/bash", bash.as_bytes());
    fs::hard_link(root.join("usr/bin/bash"), root.join("usr/bin/rbash")).expect("hardlink");
    write(&root, "usr/share/doc/bash/README", bash_version.as_bytes());
    write(&root, "usr/bin/su", b"su binary\n");
    fs::set_permissions(root.join("usr/bin/su"), fs::Permissions::from_mode(0o4755))
        .expect("setuid");
    // libfoo: a library and its symlink, an xattr
    write(
        &root,
        "usr/lib/x86_64-linux-gnu/libfoo.so.1",
        &vec![7u8; 50_000],
    );
    std::os::unix::fs::symlink(
        "libfoo.so.1",
        root.join("usr/lib/x86_64-linux-gnu/libfoo.so"),
    )
    .expect("so link");
    rustix::fs::lsetxattr(
        root.join("usr/lib/x86_64-linux-gnu/libfoo.so.1").as_path(),
        "user.origin",
        b"libfoo",
        rustix::fs::XattrFlags::empty(),
    )
    .expect("xattr");
    // bigpkg: one big file
    write(
        &root,
        "usr/share/big/data.bin",
        &crate::fixture::pseudo_random(300_000, 9),
    );
    // Unowned: machine-id, a long name, a device, a FIFO, an empty directory.
    write(&root, "etc/machine-id", b"0123456789abcdef\n");
    let long = format!("opt/{}/{}", "d".repeat(120), "f".repeat(90));
    write(&root, &long, b"long\n");
    fs::create_dir_all(root.join("dev")).expect("dev");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/null").as_path(),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("dev/initctl").as_path(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
    fs::create_dir_all(root.join("var/empty")).expect("empty dir");
    // An empty directory whose parents hold nothing else (the layer must carry them too).
    fs::create_dir_all(root.join("usr/local/share/empty")).expect("empty dir");
    // dpkg's database.
    let lists = [
        ("base-files", "/.\n/etc\n/etc/hostname\n/etc/os-release\n"),
        (
            "bash",
            "/.\n/bin\n/bin/bash\n/bin/rbash\n/usr/bin/su\n/usr/share/doc/bash\n/usr/share/doc/bash/README\n",
        ),
        (
            "libfoo1:amd64",
            "/.\n/usr/lib/x86_64-linux-gnu/libfoo.so.1\n/usr/lib/x86_64-linux-gnu/libfoo.so\n",
        ),
        ("bigpkg", "/.\n/usr/share/big\n/usr/share/big/data.bin\n"),
    ];
    for (pkg, list) in lists {
        write(
            &root,
            &format!("var/lib/dpkg/info/{pkg}.list"),
            list.as_bytes(),
        );
    }
    run_ok(Command::new("find").arg(&root).args([
        "-exec",
        "touch",
        "-h",
        "-d",
        &format!("@{MTIME}"),
        "{}",
        "+",
    ]));
    root
}

/// `bootc-image build-chunked --rootfs ROOT --target NAME ARGS…` on `store`.
pub fn build(store: &TestStore, root: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let mut c = store.ours_cmd();
    c.arg("build-chunked")
        .arg("--rootfs")
        .arg(root)
        .args(["--target", name, "--progress", "none"])
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH");
    run(&mut c)
}

fn build_ok(store: &TestStore, root: &Path, name: &str, extra: &[&str]) -> String {
    let out = build(store, root, name, extra);
    assert!(
        out.status.success(),
        "build-chunked: {}",
        crate::util::describe(&out)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// The plan (`--plan --format json`): (key, packages) per layer.
fn plan(store: &TestStore, root: &Path, extra: &[&str]) -> Vec<(String, Vec<String>)> {
    let mut args = vec!["--plan", "--format", "json"];
    args.extend_from_slice(extra);
    let out = build_ok(store, root, "localhost/plan:1", &args);
    let v: Value = serde_json::from_str(&out).expect("plan JSON");
    v["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["key"].as_str().expect("key").to_string(),
                l["packages"]
                    .as_array()
                    .expect("packages")
                    .iter()
                    .map(|p| p.as_str().expect("package").to_string())
                    .collect(),
            )
        })
        .collect()
}

/// A tree without its root entry (the root's metadata is the layer's, not the rootfs').
fn without_root(mut t: Tree) -> Tree {
    t.nodes.remove("");
    t
}

/// The rootfs as the image holds it: directories' mtimes at the epoch.
fn as_built(mut t: Tree) -> Tree {
    for n in t.nodes.values_mut() {
        if n.kind == 'd' {
            n.mtime = (0, 0);
        }
    }
    without_root(t)
}

/// The layer directories of `name` in `store`, base first.
fn layer_dirs(store: &TestStore, name: &str) -> Vec<PathBuf> {
    let diff_ids: Vec<String> = store.inspect(name)["RootFS"]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|d| d.as_str().expect("digest").to_string())
        .collect();
    let records = store.layer_records();
    let mut parent: Option<String> = None;
    diff_ids
        .iter()
        .map(|d| {
            let rec = records
                .iter()
                .find(|r| {
                    r["diff-digest"] == d.as_str() && r["parent"].as_str() == parent.as_deref()
                })
                .expect("layer record");
            let id = rec["id"].as_str().expect("id").to_string();
            parent = Some(id.clone());
            store.root.join("overlay").join(id).join("diff")
        })
        .collect()
}

/// podman mounts a tree equal to the rootfs; every package's files are in its layer; skopeo
/// exports the config's DiffIDs; labels and history as documented.
#[test]
fn build_chunked_tree_and_layers() {
    let store = TestStore::new(Driver::Overlay);
    let root = make_rootfs(&store.dir, "5.2");
    let out = build_ok(&store, &root, "localhost/os:1", &["--label", "version=1"]);
    assert!(out.contains("Built localhost/os:1"), "{out}");
    let v = store.inspect("localhost/os:1");
    assert_eq!(v["Labels"]["containers.bootc"], "1");
    assert_eq!(v["Labels"]["version"], "1");
    let mounted = walk_tree(&store.image_mount("localhost/os:1"));
    store.image_umount("localhost/os:1");
    let d = diff_trees(&as_built(walk_tree(&root)), &without_root(mounted), &[]);
    assert!(
        d.is_empty(),
        "mounted tree differs from the rootfs:\n{}",
        d.join("\n")
    );

    let layers = plan(&store, &root, &[]);
    let keys: Vec<&str> = layers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "pkg:bigpkg",
            "pkg:libfoo1",
            "pkg:bash",
            "pkg:base-files",
            "unowned"
        ],
        "{layers:?}"
    );
    let dirs = layer_dirs(&store, "localhost/os:1");
    assert_eq!(dirs.len(), layers.len());
    let in_layer = |i: usize, rel: &str| fs::symlink_metadata(dirs[i].join(rel)).is_ok();
    for (rel, pkg) in [
        ("usr/share/big/data.bin", "bigpkg"),
        ("usr/lib/x86_64-linux-gnu/libfoo.so.1", "libfoo1"),
        ("usr/lib/x86_64-linux-gnu/libfoo.so", "libfoo1"),
        ("usr/bin/bash", "bash"),
        ("usr/bin/rbash", "bash"),
        ("usr/bin/su", "bash"),
        ("etc/hostname", "base-files"),
        ("etc/machine-id", "unowned"),
        ("dev/null", "unowned"),
        ("bin", "bash"),
    ] {
        let want = layers
            .iter()
            .position(|(k, p)| p.iter().any(|x| x == pkg) || (pkg == "unowned" && k == pkg))
            .expect("layer of package");
        for (i, _) in dirs.iter().enumerate() {
            let file_here = in_layer(i, rel);
            assert_eq!(
                file_here,
                i == want,
                "{rel} in layer {i} (want {want}: {pkg})"
            );
        }
    }
    let (config, exported) = store.exported_diff_ids("localhost/os:1", "build");
    assert_eq!(config, exported, "skopeo exports the config's DiffIDs");
}

/// The same tree built twice into fresh stores: the same image ID and manifest digest.
#[test]
fn build_chunked_reproducible() {
    let a = TestStore::new(Driver::Overlay);
    let b = TestStore::new(Driver::Vfs);
    let root = make_rootfs(&a.dir, "5.2");
    let ts = ["--timestamp", "1700000100"];
    build_ok(&a, &root, "localhost/os:1", &ts);
    build_ok(&b, &root, "localhost/os:1", &ts);
    let (ia, ib) = (a.inspect("localhost/os:1"), b.inspect("localhost/os:1"));
    assert_eq!(ia["Id"], ib["Id"]);
    assert_eq!(ia["Digest"], ib["Digest"]);
    assert_eq!(ia["Created"], "2023-11-14T22:15:00Z");
}

/// A rebuild after the bash package changed, with --from-image: only bash's layer changes.
#[test]
fn build_chunked_from_image() {
    let store = TestStore::new(Driver::Overlay);
    let root = make_rootfs(&store.dir, "5.2");
    build_ok(&store, &root, "localhost/os:1", &[]);
    let root = make_rootfs(&store.dir, "5.2.15-updated");
    build_ok(
        &store,
        &root,
        "localhost/os:2",
        &["--from-image", "localhost/os:1"],
    );
    let ids = |n: &str| -> Vec<String> {
        store.inspect(n)["RootFS"]["Layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|d| d.as_str().expect("digest").to_string())
            .collect()
    };
    let (one, two) = (ids("localhost/os:1"), ids("localhost/os:2"));
    assert_eq!(one.len(), two.len());
    let changed: Vec<usize> = (0..one.len()).filter(|&i| one[i] != two[i]).collect();
    let layers = plan(&store, &root, &["--from-image", "localhost/os:1"]);
    let bash = layers
        .iter()
        .position(|(_, p)| p.iter().any(|x| x == "bash"))
        .expect("bash layer");
    assert_eq!(changed, vec![bash], "changed layers");
}

/// Bad input: a missing rootfs, a file instead of a directory, a symlink loop, an invalid label,
/// an unknown --from-image: one line, the right class, the store unchanged.
#[test]
fn build_chunked_bad_input() {
    let store = TestStore::new(Driver::Overlay);
    crate::errors::seed(&store);
    let before = store.snapshot();
    let file = store.scratch("a-file");
    fs::write(&file, b"x").expect("file");
    let lp = store.scratch("loop");
    std::os::unix::fs::symlink(&lp, &lp).expect("loop");
    let good = make_rootfs(&store.dir, "5.2");
    let cases: [(&Path, &[&str], i32, &str); 5] = [
        (Path::new("/nonexistent/rootfs"), &[], 3, "does not exist"),
        (&file, &[], 3, "not a directory"),
        (&lp, &[], 3, "symlink loop"),
        (&good, &["--label", "=x"], 2, "KEY=VALUE"),
        (&good, &["--from-image", "localhost/nope:1"], 3, "nope"),
    ];
    for (root, extra, code, mention) in cases {
        let out = build(&store, root, "localhost/broken:1", extra);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{root:?} {extra:?}: {}",
            crate::util::describe(&out)
        );
        crate::util::assert_clean_failure(&out, mention, &[mention]);
        let d = before.diff(&store.snapshot());
        assert!(
            d.is_empty(),
            "{root:?}: the store changed:\n{}",
            d.join("\n")
        );
    }
}

/// Without a package database, files are grouped by directory (`usr/<dir>`, top-level dirs).
#[test]
fn build_chunked_without_dpkg() {
    let store = TestStore::new(Driver::Overlay);
    let root = make_rootfs(&store.dir, "5.2");
    fs::remove_dir_all(root.join("var/lib/dpkg")).expect("rm dpkg");
    let layers = plan(&store, &root, &[]);
    let keys: Vec<&str> = layers.iter().map(|(k, _)| k.as_str()).collect();
    assert!(keys.contains(&"pkg:dir:usr/share"), "{keys:?}");
    assert!(keys.contains(&"pkg:dir:etc"), "{keys:?}");
    build_ok(&store, &root, "localhost/os:1", &["--max-layers", "3"]);
    let n = store.inspect("localhost/os:1")["RootFS"]["Layers"]
        .as_array()
        .expect("layers")
        .len();
    assert!(n <= 3, "{n} layers");
}

/// `export`: the built image into an OCI layout (gzip) and an archive (zstd); skopeo copies each
/// into a fresh store, where podman sees the same image ID and DiffIDs and mounts the same tree.
#[test]
fn export_built_image() {
    let store = TestStore::new(Driver::Overlay);
    let root = make_rootfs(&store.dir, "5.2");
    build_ok(&store, &root, "localhost/os:1", &[]);
    let want = store.inspect("localhost/os:1");
    let layout = store.scratch("export-oci");
    let archive = store.scratch("export.tar");
    for (dest, extra) in [
        (format!("oci:{}:v1", layout.display()), "gzip"),
        (format!("oci-archive:{}:v1", archive.display()), "zstd"),
    ] {
        let mut c = store.ours_cmd();
        c.args(["export", "localhost/os:1", &dest, "--compression", extra]);
        let out = run(&mut c);
        assert!(
            out.status.success(),
            "export {dest}: {}",
            crate::util::describe(&out)
        );
        let other = TestStore::new(Driver::Overlay);
        other.skopeo_copy_in(&dest, "localhost/os:1");
        let got = other.inspect("localhost/os:1");
        assert_eq!(got["Id"], want["Id"], "{dest}: image ID");
        assert_eq!(
            got["RootFS"]["Layers"], want["RootFS"]["Layers"],
            "{dest}: DiffIDs"
        );
        let a = walk_tree(&store.image_mount("localhost/os:1"));
        let b = walk_tree(&other.image_mount("localhost/os:1"));
        store.image_umount("localhost/os:1");
        other.image_umount("localhost/os:1");
        let d = diff_trees(&without_root(a), &without_root(b), &[]);
        assert!(d.is_empty(), "{dest}: trees differ:\n{}", d.join("\n"));
    }
    let manifest_types = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(format!("oci:{}:v1", layout.display())),
    );
    assert!(manifest_types.contains("tar+gzip"), "{manifest_types}");
}

/// A rootfs on another file system than the store (XFS here, the store on /tmp): files are copied
/// (no reflink across file systems), and the image is the one built from the same tree in place.
#[test]
fn build_chunked_rootfs_elsewhere() {
    let xfs = crate::composefs::Xfs::new();
    let store = TestStore::new(Driver::Overlay);
    let here = make_rootfs(&store.dir, "5.2");
    let there = make_rootfs(&xfs.mnt, "5.2");
    let ts = ["--timestamp", "1700000100"];
    build_ok(&store, &here, "localhost/here:1", &ts);
    build_ok(&store, &there, "localhost/there:1", &ts);
    assert_eq!(
        store.inspect("localhost/here:1")["Id"],
        store.inspect("localhost/there:1")["Id"]
    );
    let a = walk_tree(&store.image_mount("localhost/there:1"));
    store.image_umount("localhost/there:1");
    let d = diff_trees(&as_built(walk_tree(&there)), &without_root(a), &[]);
    assert!(d.is_empty(), "{}", d.join("\n"));
}
