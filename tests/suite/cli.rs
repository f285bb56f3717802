//! The command line's edges: exit codes by class, `--target` as skopeo's `containers-storage:`
//! transport, `--source` routed by transport. Every refusal is one `error:` line, the store stays
//! byte for byte as it was, and podman still lists it.

use std::process::Command;

use crate::errors::{assert_seed_listed, seed};
use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::util::{BIN, Driver, TestStore, assert_clean_failure, describe, run};

/// A seeded store and a one-image layout in it.
fn setup() -> (TestStore, String) {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let mut oci = OciDir::create(&store.scratch("cli"));
    let spec = ImageSpec::from_tars("cli", &[fixture::small_tar(301)], Compression::Gzip);
    oci.add_image(Some("t"), &spec);
    let src = oci.source(Some("t"));
    (store, src)
}

/// Runs our binary with `args` on `store` and checks a refusal: `code`, one line naming
/// `mentions`, the store unchanged, podman still listing the seed image.
fn refused(store: &TestStore, args: &[&str], code: i32, mentions: &[&str]) {
    let before = store.snapshot();
    let out = run(store.ours_cmd().args(args));
    let what = format!("{args:?}");
    assert_clean_failure(&out, &what, mentions);
    assert_eq!(out.status.code(), Some(code), "{what}: {}", describe(&out));
    let d = before.diff(&store.snapshot());
    assert!(d.is_empty(), "{what}: the store changed:\n{}", d.join("\n"));
    assert_seed_listed(store);
}

/// Usage errors exit 2: no command, an unknown option, a missing value, a store named twice.
#[test]
fn usage_errors_exit_2() {
    let (store, src) = setup();
    let out = run(&mut Command::new(BIN));
    assert_clean_failure(&out, "no arguments", &["a command is needed"]);
    assert_eq!(out.status.code(), Some(2));
    refused(&store, &["--bogus"], 2, &["--bogus"]);
    refused(&store, &["copy-to-storage", "--source"], 2, &["--source"]);
    let spec = format!(
        "containers-storage:[overlay@{}+{}]localhost/x",
        store.root.display(),
        store.runroot.display()
    );
    refused(
        &store,
        &["copy-to-storage", "--source", &src, "--target", &spec],
        2,
        &["name it once"],
    );
}

/// Targets podman could not parse, or with another transport: image class (3).
#[test]
fn bad_targets_exit_3() {
    let (store, src) = setup();
    for t in [
        "docker://localhost/x",
        "containers-storage:docker://x",
        "containers-storage:containers-storage:x",
        "localhost/UPPER",
        "local host/x",
        "../x",
        "containers-storage:[relative]x",
    ] {
        refused(
            &store,
            &["copy-to-storage", "--source", &src, "--target", t],
            3,
            &["invalid"],
        );
    }
}

/// `containers-storage:NAME` stores NAME normalized; `containers-storage:[driver@root+runroot]NAME`
/// also selects the store, as skopeo does.
#[test]
fn containers_storage_targets() {
    let (store, src) = setup();
    store.ours_copy_ok(&src, Some("containers-storage:localhost/x"));
    let tags = store.inspect("localhost/x:latest")["RepoTags"].clone();
    assert_eq!(tags, serde_json::json!(["localhost/x:latest"]));
    let other = TestStore::new(Driver::Vfs);
    let spec = format!(
        "containers-storage:[vfs@{}+{}]localhost/y:2",
        other.root.display(),
        other.runroot.display()
    );
    let out = run(Command::new(BIN).args(["copy-to-storage", "--source", &src, "--target", &spec]));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        other.inspect("localhost/y:2")["RepoTags"],
        serde_json::json!(["localhost/y:2"])
    );
}

/// Sources we cannot read (yet) name their transport and what to do, with the image class (3);
/// no `--source` off a bootc host says so.
#[test]
fn sources_routed_by_transport() {
    let (store, _src) = setup();
    for (source, mention) in [
        ("dir:/var/tmp/img", "skopeo copy"),
        ("docker-archive:/var/tmp/img.tar", "skopeo copy"),
        (
            "containers-storage:localhost/seed",
            "pull-from-default-storage",
        ),
        ("/var/tmp/img", "oci:/var/tmp/img"),
        ("./img", "oci-archive:./img"),
        ("foo:bar", "unknown transport"),
    ] {
        refused(
            &store,
            &[
                "copy-to-storage",
                "--source",
                source,
                "--target",
                "localhost/z",
            ],
            3,
            &[mention],
        );
    }
    let empty = store.scratch("not-a-sysroot");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let sysroot = empty.display().to_string();
    refused(
        &store,
        &["--sysroot", &sysroot, "copy-to-storage"],
        3,
        &["not a bootc host", "--source"],
    );
}

/// A storage error (no store to verify) exits 4; an external one (the OSTree helper missing) 5.
#[test]
fn storage_and_external_errors() {
    let (store, _src) = setup();
    let missing = store.scratch("no-store").display().to_string();
    let out = run(Command::new(BIN).args([
        "--root", &missing, "storage", "verify", "--store", "default",
    ]));
    assert_clean_failure(&out, "verify without a store", &["no overlay store"]);
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    // bootc-image alone, without bootc-image-ostree beside it.
    let lone = store.scratch("lone");
    std::fs::create_dir_all(&lone).expect("mkdir");
    let bin = lone.join("bootc-image");
    std::fs::copy(BIN, &bin).expect("copy binary");
    let before = store.snapshot();
    let out = run(Command::new(&bin)
        .arg("--root")
        .arg(&store.root)
        .arg("--runroot")
        .arg(&store.runroot)
        .args(["copy-to-storage", "--source", "docker://quay.io/x/y:1"]));
    assert_clean_failure(&out, "no helper", &["bootc-image-ostree"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(before.diff(&store.snapshot()).is_empty());
}
