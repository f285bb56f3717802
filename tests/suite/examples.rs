//! The library's examples (`examples/`), run as a user would: what they write, podman reads.

use std::path::PathBuf;
use std::process::Command;

use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::util::{Driver, TestStore, diff_trees, run_ok, walk_tree};

/// The built example `name` (`cargo test` builds the examples beside the test binary's
/// `deps/`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile directory");
    let p = dir.join("examples").join(name);
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --examples` (cargo test builds them)",
        p.display()
    );
    p
}

/// `import_oci`: an OCI layout imported through the library is the image podman inspects, with
/// the source's ID and digest.
#[test]
fn import_oci_example() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let tars: Vec<Vec<u8>> = (401..403).map(fixture::small_tar).collect();
    let built = oci.add_image(
        Some("ex"),
        &ImageSpec::from_tars("ex", &tars, Compression::Gzip),
    );
    let out = run_ok(
        Command::new(example("import_oci"))
            .arg(format!("{}:ex", oci.path.display()))
            .arg(&store.root)
            .arg(&store.runroot)
            .arg("localhost/example:1"),
    );
    assert!(out.starts_with(&built.image_id()), "{out}");
    let v = store.inspect("localhost/example:1");
    assert_eq!(v["Id"], built.image_id().as_str());
    assert_eq!(v["Digest"], built.manifest_digest.as_str());
}

/// `import_composefs` copies an image from a composefs repository (made from an OCI layout by the
/// fixture tool, with composefs-oci) through the library: podman inspects the source's ID and
/// digest.
#[test]
fn composefs_examples() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let tar = fixture::build_tar(&[
        fixture::Entry::dir("usr/"),
        fixture::Entry::file("usr/big", fixture::pseudo_random(100_000, 3)),
    ]);
    let built = oci.add_image(
        Some("ex"),
        &ImageSpec::from_tars("ex", &[tar], Compression::Zstd),
    );
    let repo = store.scratch("cfs");
    let digest =
        crate::composefs::import_into_repo(&format!("oci:{}:ex", oci.path.display()), &repo, "ex");
    assert_eq!(digest, built.manifest_digest);
    let out = run_ok(
        Command::new(example("import_composefs"))
            .arg(&repo)
            .arg("ex")
            .arg(&store.root)
            .arg(&store.runroot)
            .arg("localhost/example:1"),
    );
    assert!(out.starts_with(&built.image_id()), "{out}");
    let v = store.inspect("localhost/example:1");
    assert_eq!(v["Id"], built.image_id().as_str());
    assert_eq!(v["Digest"], built.manifest_digest.as_str());
}

/// `build_chunked`: the library's builder, with a package moved into the base layer by hand; podman
/// inspects the image the example reports.
#[test]
fn build_chunked_example() {
    let store = TestStore::new(Driver::Overlay);
    let root = store.scratch("rootfs");
    std::fs::create_dir_all(root.join("usr/bin")).expect("mkdir");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("mkdir");
    std::fs::write(root.join("usr/bin/a"), vec![1u8; 5000]).expect("write");
    std::fs::write(root.join("usr/bin/b"), vec![2u8; 9000]).expect("write");
    std::fs::write(root.join("var/lib/dpkg/info/a.list"), "/usr/bin/a\n").expect("write");
    std::fs::write(root.join("var/lib/dpkg/info/b.list"), "/usr/bin/b\n").expect("write");
    let out = run_ok(
        Command::new(example("build_chunked"))
            .arg(&root)
            .arg(&store.root)
            .arg(&store.runroot)
            .arg("localhost/chunked:1")
            .arg("a"),
    );
    assert!(
        out.starts_with("layer 0: pkg:b (14000 bytes) a b\nlayer 1: unowned"),
        "{out}"
    );
    let id = out
        .lines()
        .last()
        .expect("last line")
        .split(' ')
        .next()
        .expect("id");
    let v = store.inspect("localhost/chunked:1");
    assert_eq!(v["Id"], id);
}

/// `build_layer`: a directory of files (a subdirectory, an executable, a symlink, an empty file)
/// becomes an image in one pass; podman lists it and mounts a tree equal to the directory, and
/// a second build of the same directory gives the same digests (reproducible).
#[test]
fn build_layer_example() {
    let store = TestStore::new(Driver::Overlay);
    let dir = store.scratch("rootfs");
    std::fs::create_dir_all(dir.join("etc/app")).expect("mkdir");
    std::fs::create_dir_all(dir.join("usr/bin")).expect("mkdir");
    std::fs::write(dir.join("hello"), "hello\n").expect("write");
    std::fs::write(dir.join("etc/app/app.conf"), vec![b'x'; 5000]).expect("write");
    std::fs::write(dir.join("etc/empty"), "").expect("write");
    std::fs::write(dir.join("usr/bin/hi"), "#!/bin/sh\necho hi\n").expect("write");
    std::os::unix::fs::symlink("../hello", dir.join("etc/link")).expect("symlink");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("usr/bin/hi"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
    }
    let build = |name: &str| {
        run_ok(
            Command::new(example("build_layer"))
                .arg(&dir)
                .arg(&store.root)
                .arg(&store.runroot)
                .arg(name),
        )
    };
    let first = build("localhost/built:1");
    let names = store.image_names();
    assert!(
        names.contains(&"localhost/built:1".to_string()),
        "{names:?}"
    );
    let mounted = store.image_mount("localhost/built:1");
    // Headers carry whole seconds (ustar), and the directory itself is not an entry.
    let seconds = |mut t: crate::util::Tree| {
        t.nodes.remove("");
        for n in t.nodes.values_mut() {
            n.mtime.1 = 0;
        }
        t
    };
    let d = diff_trees(
        &seconds(walk_tree(&dir)),
        &seconds(walk_tree(&mounted)),
        &[],
    );
    store.image_umount("localhost/built:1");
    assert!(
        d.is_empty(),
        "the mounted image differs from the directory:\n{}",
        d.join("\n")
    );
    let second = build("localhost/built:2");
    assert_eq!(first, second, "the same directory built twice");
}

/// `copy`: the front door in a dozen lines — an OCI layout and the same image from a registry
/// (`docker://`), each copied into a store podman inspects with the source's ID.
#[test]
fn copy_example() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let tars: Vec<Vec<u8>> = (404..406).map(fixture::small_tar).collect();
    let built = oci.add_image(
        Some("ex"),
        &ImageSpec::from_tars("ex", &tars, Compression::Gzip),
    );
    let reg = crate::registry::Registry::start(false);
    reg.push(&oci.source(Some("ex")), "ex/copy:1");
    for (src, name) in [
        (oci.source(Some("ex")), "localhost/copy:1"),
        (
            format!("docker://{}/ex/copy:1", reg.host()),
            "localhost/copy:2",
        ),
    ] {
        let out = run_ok(
            Command::new(example("copy"))
                .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
                .arg(&src)
                .arg(&store.root)
                .arg(&store.runroot)
                .arg(name),
        );
        assert!(out.starts_with(&built.image_id()), "{src}: {out}");
        assert_eq!(store.inspect(name)["Id"], built.image_id().as_str());
    }
}
