//! The command line's edges: exit codes by class, `--target` as skopeo's `containers-storage:`
//! transport, `--source` routed by transport. Every refusal is one `error:` line, the store stays
//! byte for byte as it was, and podman still lists it.

use std::process::Command;

use crate::errors::{assert_seed_listed, seed};
use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::util::{BIN, Driver, TestStore, assert_clean_failure, describe, run};

/// A seeded store and a one-image layout in it.
pub fn setup() -> (TestStore, String) {
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
pub fn refused(store: &TestStore, args: &[&str], code: i32, mentions: &[&str]) {
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
    let spec = other.storage_ref("localhost/y:2");
    let out = run(Command::new(BIN).args(["copy-to-storage", "--source", &src, "--target", &spec]));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        other.inspect("localhost/y:2")["RepoTags"],
        serde_json::json!(["localhost/y:2"])
    );
}

/// `--source containers-storage:[STORE]NAME`: copied natively from that store into another one;
/// podman sees the same image (ID, digest, layers) in both; the same store as source and target is
/// a usage error.
#[test]
fn containers_storage_sources() {
    let (store, src) = setup();
    store.ours_copy_ok(&src, Some("localhost/x:1"));
    let from = store.storage_ref("localhost/x:1");
    let other = TestStore::new(Driver::Overlay);
    let to = other.storage_ref("localhost/y:2");
    let out = run(Command::new(BIN).args(["copy-to-storage", "--source", &from, "--target", &to]));
    assert!(out.status.success(), "{}", describe(&out));
    let (a, b) = (
        store.inspect("localhost/x:1"),
        other.inspect("localhost/y:2"),
    );
    for key in ["Id", "Digest", "RootFS"] {
        assert_eq!(a[key], b[key], "{key}");
    }
    let mounted = other.image_mount("localhost/y:2");
    assert!(
        mounted.join("layer301/file").is_file(),
        "podman mounts the copy"
    );
    other.image_umount("localhost/y:2");
    let same = store.storage_ref("localhost/z:3");
    let out =
        run(Command::new(BIN).args(["copy-to-storage", "--source", &from, "--target", &same]));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// Sources we cannot read (yet) name their transport and what to do, with the image class (3);
/// no `--source` off a bootc host says so.
#[test]
fn sources_routed_by_transport() {
    let (store, _src) = setup();
    for (source, mention) in [
        ("dir:/var/tmp/no-such-img", "/var/tmp/no-such-img"),
        (
            "docker-archive:/var/tmp/no-such-img.tar",
            "/var/tmp/no-such-img.tar",
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
        .args([
            "copy-to-storage",
            "--source",
            "ostree-unverified-registry:quay.io/x/y:1",
        ]));
    assert_clean_failure(&out, "no helper", &["bootc-image-ostree"]);
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(before.diff(&store.snapshot()).is_empty());
}

/// The layer IDs and image IDs of a store, for comparing two stores.
fn ids(store: &TestStore) -> (Vec<String>, Vec<String>) {
    let get = |v: Vec<serde_json::Value>| {
        let mut ids: Vec<String> = v
            .iter()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    (get(store.layer_records()), get(store.image_records()))
}

/// A store where skopeo put `localhost/a` and `localhost/b`: two layers each, the base (fixture tar
/// `base`) shared, the top ones (`base + 1`, `base + 2`) their own.
fn store_with_a_and_b(base: u32) -> TestStore {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("img"));
    for (tag, n) in [("a", base + 1), ("b", base + 2)] {
        let spec = ImageSpec::from_tars(
            tag,
            &[fixture::small_tar(base), fixture::small_tar(n)],
            Compression::Gzip,
        );
        oci.add_image(Some(tag), &spec);
    }
    store.skopeo_copy_in(&oci.source(Some("a")), "localhost/a:latest");
    store.skopeo_copy_in(&oci.source(Some("b")), "localhost/b:latest");
    store
}

/// `image rm` killed (SIGKILL) at every step of the delete order: podman still lists and inspects
/// every image, the store is sound (no record without data), and the next `image rm` (or, once
/// the image record is gone, our next open) finishes the delete: the store ends as `podman rmi`
/// leaves its twin.
#[test]
fn image_rm_killed_at_every_point_recovers() {
    use std::os::unix::process::ExitStatusExt as _;
    let points = [
        "delete:journal",
        "delete:images-record",
        "delete:image-dirs",
        "delete:layers-flagged",
        "delete:layer-data:1",
        "delete:layer-tar-split:1",
        "delete:layers-record",
    ];
    let make = || store_with_a_and_b(320);
    let twin = make();
    twin.podman_ok(&["rmi", "localhost/b"]);
    for point in points {
        let store = make();
        let out = run(store
            .ours_cmd()
            .args(["image", "rm", "localhost/b"])
            .env("BOOTC_IMAGE_CRASH_AT", point));
        assert_eq!(
            out.status.signal(),
            Some(9),
            "image rm should have been killed at {point}\n{}",
            describe(&out)
        );
        for img in store.images() {
            let id = img["Id"].as_str().expect("Id");
            store.podman_ok(&["image", "inspect", id]);
        }
        crate::recovery::assert_sound(&store.root, Driver::Overlay, false);
        // Again: the image is removed now, or was already (its record went before the kill).
        let out = run(store.ours_cmd().args(["image", "rm", "localhost/b"]));
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "{point}: the second image rm\n{}",
            describe(&out)
        );
        // Any open for writing finishes an interrupted delete.
        let out = run(store
            .ours_cmd()
            .args(["image", "tag", "localhost/a", "localhost/a:x"]));
        assert!(out.status.success(), "{point}: {}", describe(&out));
        let out = run(store.ours_cmd().args(["image", "rm", "localhost/a:x"]));
        assert!(out.status.success(), "{point}: {}", describe(&out));
        assert_eq!(
            ids(&store),
            ids(&twin),
            "{point}: ours after recovery vs podman rmi"
        );
        assert_eq!(store.image_names(), vec!["localhost/a:latest".to_string()]);
    }
}

/// `image exists` (0/1, silent), `image tag` (podman sees the name) and `image rm` (untags a name
/// of an image with others; removes the image and only its own layers, leaving what `podman rmi`
/// leaves on an identical store; refuses an image a container uses).
#[test]
fn image_exists_tag_rm_agree_with_podman() {
    let stores = [store_with_a_and_b(310), store_with_a_and_b(310)];
    let (ours, theirs) = (&stores[0], &stores[1]);
    let image = |s: &TestStore, args: &[&str]| run(s.ours_cmd().arg("image").args(args));
    // exists
    for name in [
        "localhost/a:latest",
        "localhost/a",
        "a",
        &ours.inspect("a")["Id"].as_str().expect("Id")[..12],
    ] {
        let out = image(ours, &["exists", name]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "exists {name}: {}",
            describe(&out)
        );
    }
    let out = image(ours, &["exists", "localhost/nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        describe(&out)
    );
    // tag: podman sees it; rm of that name only untags.
    let out = image(ours, &["tag", "a", "localhost/a2:1", "quay.io/x/a:2"]);
    assert!(out.status.success(), "{}", describe(&out));
    let tags = ours.inspect("localhost/a2:1")["RepoTags"].clone();
    for want in ["localhost/a:latest", "localhost/a2:1", "quay.io/x/a:2"] {
        assert!(
            tags.as_array().expect("tags").iter().any(|t| t == want),
            "{tags}"
        );
    }
    let out = image(ours, &["rm", "localhost/a2:1", "quay.io/x/a:2"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        ours.inspect("localhost/a")["RepoTags"],
        serde_json::json!(["localhost/a:latest"])
    );
    // rm of the last name: what podman rmi leaves (the shared base layer stays for b).
    let out = image(ours, &["rm", "localhost/a"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deleted: "));
    theirs.podman_ok(&["rmi", "localhost/a"]);
    assert_eq!(ids(ours), ids(theirs), "ours vs podman rmi");
    assert_eq!(ours.images().len(), 1);
    // An image a container uses is refused; podman still has the container.
    ours.podman_ok(&["create", "--name", "c1", "localhost/b", "true"]);
    let before = ours.snapshot();
    let out = image(ours, &["rm", "localhost/b"]);
    assert_clean_failure(&out, "rm of an image in use", &["in use by container"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(
        before.diff(&ours.snapshot()).is_empty(),
        "rm of an image in use changed the store"
    );
    ours.podman_ok(&["rm", "c1"]);
    // By ID while it has several names: refused, then with --force all names go (podman rmi -f).
    let out = image(ours, &["tag", "b", "localhost/b2:1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let id = ours.inspect("b")["Id"].as_str().expect("Id").to_string();
    let before = ours.snapshot();
    let out = image(ours, &["rm", &id[..12]]);
    assert_clean_failure(&out, "rm by ID of an image with two names", &["--force"]);
    assert!(before.diff(&ours.snapshot()).is_empty());
    let out = image(ours, &["rm", "--force", &id[..12]]);
    assert!(out.status.success(), "{}", describe(&out));
    theirs.podman_ok(&["tag", "localhost/b", "localhost/b2:1"]);
    theirs.podman_ok(&["rmi", "-f", &id[..12]]);
    assert_eq!(ids(ours), ids(theirs), "ours vs podman rmi, last image");
}

/// `image inspect` prints what `podman image inspect` prints, for images we wrote and images
/// skopeo wrote, on overlay and vfs, with several names and layers.
#[test]
fn image_inspect_matches_podman() {
    for driver in [Driver::Overlay, Driver::Vfs] {
        let store = TestStore::new(driver);
        let mut oci = OciDir::create(&store.scratch("insp"));
        oci.add_image(Some("rich"), &fixture::rich_image(Compression::Gzip));
        let spec = ImageSpec::from_tars("small", &[fixture::small_tar(320)], Compression::Zstd);
        oci.add_image(Some("small"), &spec);
        store.ours_copy_ok(&oci.source(Some("rich")), Some("localhost/rich:1"));
        store.skopeo_copy_in(&oci.source(Some("small")), "quay.io/x/small:2");
        store.podman_ok(&["tag", "localhost/rich:1", "localhost/rich:latest"]);
        for name in ["localhost/rich:1", "quay.io/x/small:2"] {
            let ours: serde_json::Value = serde_json::from_str(&crate::util::run_ok(
                store.ours_cmd().args(["image", "inspect", name]),
            ))
            .expect("our JSON");
            let theirs: serde_json::Value =
                serde_json::from_str(&store.podman_ok(&["image", "inspect", name]))
                    .expect("podman JSON");
            assert_eq!(
                ours, theirs,
                "{driver:?} {name}: ours vs podman image inspect"
            );
        }
    }
}

/// `list --root R` lists the images of R (as unified images), not bootc's store.
#[test]
fn list_honours_root() {
    let (store, src) = setup();
    store.ours_copy_ok(&src, Some("localhost/listed:1"));
    let sysroot = store.scratch("empty-sysroot");
    std::fs::create_dir_all(&sysroot).expect("mkdir");
    let out = crate::util::run_ok(
        store
            .ours_cmd()
            .arg("--sysroot")
            .arg(&sysroot)
            .args(["list", "--type", "unified", "--format", "json"]),
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("list JSON");
    let names: Vec<&str> = v
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["image"].as_str())
        .collect();
    assert!(names.contains(&"localhost/listed:1"), "{out}");
    assert!(names.contains(&crate::errors::SEED), "{out}");
}

/// `copy-to-storage --source SRC --target NAME --progress-fd 3` on `store`, run by bash's
/// `script` (which sets up descriptor 3, then `exec "$@"`).
fn fd3_copy(store: &TestStore, script: &str, src: &str, name: &str) -> Command {
    let ours = store.ours_cmd();
    let mut sh = Command::new("bash");
    sh.arg("-c")
        .arg(script)
        .arg("bash")
        .arg(ours.get_program())
        .args(ours.get_args())
        .args([
            "copy-to-storage",
            "--source",
            src,
            "--target",
            name,
            "--progress-fd",
            "3",
        ])
        .env_remove("RUST_LOG");
    sh
}

/// `--progress json`: one JSON object per line on stdout — the plan, a `layer-done` per layer
/// whose bytes are the layer's uncompressed size, then the result; `--format json` prints the
/// result alone; `-q` prints nothing.
#[test]
fn progress_json_format_json_and_quiet() {
    let (store, _src) = setup();
    let mut oci = OciDir::create(&store.scratch("prog"));
    let tars: Vec<Vec<u8>> = (330..333).map(fixture::small_tar).collect();
    let built = oci.add_image(
        Some("p"),
        &ImageSpec::from_tars("prog", &tars, Compression::Gzip),
    );
    let src = oci.source(Some("p"));
    let out = crate::util::run_ok(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/prog:1",
        "--progress",
        "json",
    ]));
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "plan", "{out}");
    assert_eq!(events[0]["layers"], 3);
    // Each layer's total is its blob's size, and the bytes read of it reach that total.
    let blob_size = |d: &str| {
        let hex = d.strip_prefix("sha256:").expect("sha256 digest");
        std::fs::metadata(oci.path.join("blobs/sha256").join(hex))
            .expect("blob")
            .len()
    };
    for (i, d) in built.layer_digests.iter().enumerate() {
        assert_eq!(events[0]["digests"][i], d.as_str(), "{out}");
        assert_eq!(events[0]["sizes"][i], blob_size(d), "{out}");
    }
    let done: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "layer-done")
        .collect();
    assert_eq!(done.len(), 3, "{out}");
    let records = store.layer_records();
    for d in done {
        let i = d["layer"].as_u64().expect("layer") as usize;
        let rec = records
            .iter()
            .find(|r| r["diff-digest"] == built.diff_ids[i].as_str())
            .expect("layer record");
        assert_eq!(d["bytes"], rec["diff-size"], "layer {i}: {out}");
        assert_eq!(
            d["read"],
            blob_size(&built.layer_digests[i]),
            "layer {i}: {out}"
        );
    }
    let last = events.last().expect("events");
    assert_eq!(last["event"], "done");
    assert_eq!(last["image_id"], built.image_id().as_str());
    assert_eq!(last["digest"], built.manifest_digest.as_str());
    assert_eq!(last["name"], "localhost/prog:1");
    // --format json: the result alone.
    let out = crate::util::run_ok(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/prog:2",
        "--format",
        "json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(v["layers_reused"], 3, "{out}");
    // --progress-fd 3: the events (and the result event) on descriptor 3, the text result on stdout.
    let events_file = store.scratch("events.json");
    let mut sh = fd3_copy(
        &store,
        r#"exec "$@" 3>"$EVENTS""#,
        &src,
        "localhost/prog:fd",
    );
    sh.env("EVENTS", &events_file);
    let out = crate::util::run_ok(&mut sh);
    assert!(out.starts_with("Stored localhost/prog:fd"), "{out}");
    let text = std::fs::read_to_string(&events_file).expect("events");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    assert_eq!(events[0]["event"], "plan", "{text}");
    assert_eq!(events.last().expect("events")["event"], "done", "{text}");
    // A descriptor that is not open (3, closed by the shell: the number the store's first lock
    // file would get): a usage error naming it, and the store as it was.
    let before = store.snapshot();
    let mut sh = fd3_copy(
        &store,
        r#"exec 3>&-; exec "$@""#,
        &src,
        "localhost/prog:fd2",
    );
    let out = run(&mut sh);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--progress-fd 3"),
        "{}",
        describe(&out)
    );
    assert!(
        before.diff(&store.snapshot()).is_empty(),
        "a closed --progress-fd changed the store"
    );
    // -q: nothing.
    let out = run(store.ours_cmd().args([
        "-q",
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/prog:3",
    ]));
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        describe(&out)
    );
}

/// `--log-level info` (or `RUST_LOG=info`) logs what the engine does on stderr; by default a
/// successful copy prints nothing there.
#[test]
fn log_levels() {
    let (store, src) = setup();
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/l1",
    ]));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        describe(&out)
    );
    let out = run(store.ours_cmd().args([
        "--log-level",
        "info",
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/l2",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("INFO") && stderr.contains("importing image"),
        "{}",
        describe(&out)
    );
    let out =
        run(store
            .ours_cmd()
            .env("RUST_LOG", "debug")
            .args(["image", "exists", "localhost/l2"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("DEBUG") && stderr.contains("store opened"),
        "{}",
        describe(&out)
    );
    let out = run(store.ours_cmd().args(["--log-level", "loud", "list"]));
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

/// podman 6's storage.conf lookup (issue 27): with no `--root`, a drop-in of the user's
/// `storage.conf.d` (read as root too, after the main file) moves the default store; the store is
/// the drop-in's, podman reads it there, and one line says how it differs from the store podman
/// 4.3 and 5 would open. `--root` wins over it, and then nothing is said.
#[test]
fn storage_conf_drop_in_moves_the_default_store() {
    let (store, src) = setup();
    let home = store.scratch("xdg");
    let moved = store.scratch("moved");
    let drop_in = home.join("containers/storage.conf.d/50-moved.conf");
    std::fs::create_dir_all(drop_in.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &drop_in,
        format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/root\"\nrunroot = \"{0}/run\"\n",
            moved.display()
        ),
    )
    .expect("drop-in");
    let cmd = || {
        let mut c = Command::new(crate::util::BIN);
        c.env_remove("RUST_LOG")
            .env_remove("CONTAINERS_STORAGE_CONF")
            .env_remove("CONTAINERS_STORAGE_CONF_OVERRIDE")
            .env("XDG_CONFIG_HOME", &home);
        c
    };
    let out = crate::util::run(cmd().args([
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        "localhost/moved:1",
        "--progress",
        "none",
    ]));
    assert!(out.status.success(), "{}", crate::util::describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let notes: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("note: storage.conf:"))
        .collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(notes[0].contains("50-moved.conf"), "{err}");
    assert!(
        notes[0].contains(&format!("graphroot {}/root", moved.display())),
        "{err}"
    );
    // The image is in the drop-in's store, where podman finds it.
    let podman = crate::util::run_ok(
        Command::new("podman")
            .arg("--root")
            .arg(moved.join("root"))
            .arg("--runroot")
            .arg(moved.join("run"))
            .args([
                "--storage-driver",
                "overlay",
                "images",
                "--format",
                "{{.Repository}}",
            ]),
    );
    assert!(podman.contains("localhost/moved"), "{podman}");
    // `--root` (and the others) replace what the drop-in says: nothing to say.
    let mut c = store.ours_cmd();
    c.env("XDG_CONFIG_HOME", &home)
        .env_remove("CONTAINERS_STORAGE_CONF")
        .args(["list", "--type", "unified"]);
    let out = crate::util::run(&mut c);
    assert!(out.status.success(), "{}", crate::util::describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("note: storage.conf:"),
        "{}",
        crate::util::describe(&out)
    );
}
