//! Round-2 defects (issue 22), each with the test that failed before its fix: names podman cannot
//! parse, FIFOs where files are read, closed or full stdout, export targets, dpkg lists that are
//! no files, a file growing during a build. Where a store is touched, podman still lists it.

use std::fs;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::refused;
use crate::errors::{assert_seed_listed, seed};
use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::util::{Driver, TestStore, assert_clean_failure, describe, run};

/// A seeded store with `localhost/r2:1` copied in from a small layout; the layout's source.
fn setup() -> (TestStore, String) {
    let (store, src) = crate::cli::setup();
    store.ours_copy_ok(&src, Some("localhost/r2:1"));
    (store, src)
}

/// Runs `cmd` with a deadline: a hang is a failure, not a stuck suite.
fn run_within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("still running after {limit:?}: {}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Upper-case letters in a repository path break `podman images` for the whole store: `image
/// tag`, `copy-to-storage --target` and `build-chunked --target` refuse them (image class, 3),
/// as podman 4.3 and 5 parse names; an upper-case registry name stays valid.
#[test]
fn upper_case_names_refused() {
    let (store, src) = setup();
    for name in ["UPPER/x:1", "Foo/bar", "localhost/Foo", "quay.io/Org/x:1"] {
        refused(
            &store,
            &["image", "tag", "localhost/r2:1", name],
            3,
            &["lowercase"],
        );
        refused(
            &store,
            &["copy-to-storage", "--source", &src, "--target", name],
            3,
            &["lowercase"],
        );
    }
    refused(
        &store,
        &[
            "copy-to-storage",
            "--source",
            &src,
            "--target",
            "containers-storage:Foo/bar",
        ],
        3,
        &["lowercase"],
    );
    let root = crate::build_chunked::make_rootfs(&store.dir, "5.2");
    let root_s = root.display().to_string();
    refused(
        &store,
        &[
            "build-chunked",
            "--rootfs",
            &root_s,
            "--target",
            "UPPER/x:1",
        ],
        3,
        &["lowercase"],
    );
    // A registry's host name may have capitals (c/image's domain grammar), and podman lists it.
    let out = run(store
        .ours_cmd()
        .args(["image", "tag", "localhost/r2:1", "Reg.Example/x:1"]));
    assert!(out.status.success(), "{}", describe(&out));
    store.podman_ok(&["images"]);
    assert!(store.image_names().iter().any(|n| n == "Reg.Example/x:1"));
}

/// A FIFO where a composefs object should be, or as a dpkg `.list`, must not hang anything: the
/// object is damage (one line, exit 3), the list is skipped with a warning.
#[test]
fn fifos_never_block() {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let (repo, _built, big) = crate::composefs::small_repo(&store.dir);
    let [object] = crate::composefs::objects_with(&repo, &big)
        .try_into()
        .expect("one object");
    fs::remove_file(&object).expect("rm object");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &object,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    let before = store.snapshot();
    let src = crate::composefs::source(&repo, "small");
    let out = run_within(
        store.ours_cmd().args([
            "copy-to-storage",
            "--source",
            &src,
            "--target",
            "localhost/f:1",
        ]),
        Duration::from_secs(60),
    );
    assert_clean_failure(&out, "FIFO object", &["not a regular file"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(before.diff(&store.snapshot()).is_empty(), "store changed");
    assert_seed_listed(&store);

    // dpkg lists: a FIFO, a directory and a dangling symlink are skipped and said; the build ends.
    let root = crate::build_chunked::make_rootfs(&store.dir, "5.2");
    let info = root.join("var/lib/dpkg/info");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        info.join("fifo.list"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .expect("mkfifo");
    fs::create_dir(info.join("adir.list")).expect("dir list");
    std::os::unix::fs::symlink("/nonexistent/x.list", info.join("dangling.list")).expect("link");
    let mut c = store.ours_cmd();
    c.arg("build-chunked").arg("--rootfs").arg(&root).args([
        "--target",
        "localhost/b:1",
        "--progress",
        "none",
    ]);
    let out = run_within(&mut c, Duration::from_secs(120));
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    for l in ["fifo.list", "adir.list", "dangling.list"] {
        assert!(
            err.lines()
                .any(|x| x.starts_with("warning: ") && x.contains(l) && x.contains("unowned")),
            "{l} not reported: {err}"
        );
    }
    store.podman_ok(&["image", "mount", "localhost/b:1"]);
    store.podman_ok(&["image", "unmount", "localhost/b:1"]);
}

/// A file growing while build-chunked reads the tree: refused with a line naming it (not stored as
/// a prefix of itself); the store as it was.
#[test]
fn file_growing_during_build() {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let root = crate::build_chunked::make_rootfs(&store.dir, "5.2");
    let log = root.join("var/log/growing.log");
    fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
    fs::write(&log, vec![b'x'; 1 << 20]).expect("write");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            use std::io::Write as _;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("open");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"line\n").expect("append");
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let before = store.snapshot();
    let out = crate::build_chunked::build(&store, &root, "localhost/g:1", &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer");
    assert_clean_failure(
        &out,
        "growing file",
        &["growing.log", "changed during the build"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(before.diff(&store.snapshot()).is_empty(), "store changed");
    assert_seed_listed(&store);
}

/// stdout closed by its reader (`| head -1`) ends the command quietly with 141, as podman (no
/// panic); a full stdout (`> /dev/full`) is one error line, storage class (4).
#[test]
fn closed_and_full_stdout() {
    let (store, _src) = setup();
    let cases: [&[&str]; 4] = [
        &["image", "inspect", "localhost/r2:1"],
        &["list", "--format", "json"],
        &["completion", "bash"],
        &["storage", "status", "--format", "json"],
    ];
    for args in cases {
        // The reader goes away before we write.
        let mut child = store
            .ours_cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "{args:?}: {}",
            describe(&out)
        );
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = store
            .ours_cmd()
            .args(args)
            .stdout(full)
            .output()
            .expect("run");
        assert_clean_failure(&out, &format!("{args:?} > /dev/full"), &["standard output"]);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {}", describe(&out));
    }
}

/// `export … oci-archive:PATH` writes through a symlink (its target replaced, the link kept) and
/// through a character device (still a device afterwards), as skopeo; a destination inside a
/// store is refused and the store stays readable; an empty `oci:` path and a tag skopeo would
/// refuse are usage mistakes of the image class.
#[test]
fn export_targets() {
    let (store, _src) = setup();
    let dir = store.scratch("export");
    fs::create_dir_all(&dir).expect("mkdir");
    // Through a symlink.
    let real = dir.join("real.tar");
    fs::write(&real, b"old").expect("write");
    std::os::unix::fs::symlink("real.tar", dir.join("link.tar")).expect("link");
    let dest = format!("oci-archive:{}", dir.join("link.tar").display());
    let out = run(store.ours_cmd().args(["export", "localhost/r2:1", &dest]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        fs::symlink_metadata(dir.join("link.tar"))
            .expect("link")
            .file_type()
            .is_symlink()
    );
    assert!(fs::metadata(&real).expect("real").len() > 1024);
    let out =
        run(Command::new("skopeo").args(["inspect", &format!("oci-archive:{}", real.display())]));
    assert!(out.status.success(), "skopeo reads it: {}", describe(&out));
    // Through a character device (a null device of our own).
    let dev = dir.join("null");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &dev,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .expect("mknod");
    let dest = format!("oci-archive:{}", dev.display());
    let out = run(store.ours_cmd().args(["export", "localhost/r2:1", &dest]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        fs::symlink_metadata(&dev)
            .expect("dev")
            .file_type()
            .is_char_device(),
        "the device is still a device"
    );
    // Into the store's own files.
    let images_json = store.images_dir().join("images.json");
    let layers_json = store.layers_dir().join("layers.json");
    for target in [
        format!("oci-archive:{}", images_json.display()),
        format!("oci-archive:{}", layers_json.display()),
        format!("oci:{}", store.layers_dir().display()),
        format!("oci:{}", store.root.join("x").display()),
    ] {
        refused(
            &store,
            &["export", "localhost/r2:1", &target],
            3,
            &["inside the store"],
        );
    }
    // No path, a tag skopeo's oci: transport refuses.
    refused(
        &store,
        &["export", "localhost/r2:1", "oci:"],
        3,
        &["no path"],
    );
    let bad_tag = format!("oci:{}:Bad Tag!", dir.join("l").display());
    refused(&store, &["export", "localhost/r2:1", &bad_tag], 3, &["tag"]);
    assert!(!dir.join("l").exists());
}

/// Docker schema 2 images — from a registry, a `docker-archive:` (what `podman save` writes) and
/// a `dir:` — are stored with the source's own manifest and config: the same image ID and digest
/// as skopeo's copy, and skopeo exports ours.
#[test]
fn docker_schema2_everywhere() {
    let reg = crate::registry::Registry::start(false);
    let reference = TestStore::new(Driver::Overlay);
    let mine = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&reference.dir.join("oci"));
    let spec = ImageSpec::from_tars(
        "v2s2",
        &[fixture::small_tar(402), fixture::small_tar(403)],
        Compression::Gzip,
    );
    oci.add_image(Some("v1"), &spec);
    let layout = oci.source(Some("v1"));
    let archive = reference.dir.join("saved.tar");
    let dir = reference.dir.join("dir-v2s2");
    let skopeo = |args: &[&str]| {
        crate::util::run_ok(
            Command::new("skopeo")
                .env("TMPDIR", &reference.tmpdir)
                .args(["copy", "--quiet", "--insecure-policy"])
                .args(args),
        )
    };
    skopeo(&[
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &layout,
        &format!("docker://{}/v2s2:1", reg.host()),
    ]);
    skopeo(&[
        &layout,
        &format!("docker-archive:{}:localhost/saved:1", archive.display()),
    ]);
    skopeo(&[
        "--format",
        "v2s2",
        &layout,
        &format!("dir:{}", dir.display()),
    ]);
    let sources = [
        (format!("docker://{}/v2s2:1", reg.host()), "localhost/a:1"),
        (
            format!("docker-archive:{}", archive.display()),
            "localhost/b:1",
        ),
        (format!("dir:{}", dir.display()), "localhost/c:1"),
    ];
    for (src, name) in &sources {
        skopeo(&["--src-tls-verify=false", src, &reference.storage_ref(name)]);
        let out = run(mine
            .ours_cmd()
            .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
            .args([
                "copy-to-storage",
                "--source",
                src,
                "--target",
                name,
                "--progress",
                "none",
            ]));
        assert!(out.status.success(), "{src}: {}", describe(&out));
        let (a, b) = (reference.inspect(name), mine.inspect(name));
        for key in ["Id", "Digest", "RootFS"] {
            assert_eq!(a[key], b[key], "{src}: {key}");
        }
        assert!(
            b["ManifestType"]
                .as_str()
                .is_some_and(|t| t.contains("docker.distribution.manifest.v2")),
            "{src}: {}",
            b["ManifestType"]
        );
        let export = mine.scratch(&format!("export-{}", &name[10..11]));
        crate::util::run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            "--insecure-policy",
            &mine.storage_ref(name),
            &format!("oci:{}", export.display()),
        ]));
    }
    // `pull` by name from the registry, too.
    let out = run(mine
        .ours_cmd()
        .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
        .args([
            "pull",
            "--progress",
            "none",
            &format!("{}/v2s2:1", reg.host()),
        ]));
    assert!(out.status.success(), "pull: {}", describe(&out));
}

/// policy.json is enforced before anything is read: a `reject` scope refuses the image (as
/// skopeo copy does), a signature requirement is refused in one line (it cannot be verified on
/// this path), a broken policy is refused whole; the store stays as it was.
#[test]
fn signature_policy_enforced() {
    let (store, src) = setup();
    let reg = crate::registry::Registry::start(false);
    reg.push(&src, "pol/x:1");
    let host = reg.host();
    let image = format!("{host}/pol/x:1");
    let policy = store.scratch("policy.json");
    let pull = |policy_text: &str, code: i32, mentions: &[&str]| {
        fs::write(&policy, policy_text).expect("write policy");
        let before = store.snapshot();
        let out = run(store
            .ours_cmd()
            .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
            .arg("pull")
            .arg("--signature-policy")
            .arg(&policy)
            .args(["--progress", "none", &image]));
        if code == 0 {
            assert!(out.status.success(), "{policy_text}: {}", describe(&out));
            return;
        }
        assert_clean_failure(&out, policy_text, mentions);
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        assert!(before.diff(&store.snapshot()).is_empty(), "store changed");
        assert_seed_listed(&store);
    };
    let reject_host = format!(
        r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"docker":{{"{host}":[{{"type":"reject"}}]}}}}}}"#
    );
    pull(&reject_host, 3, &["rejected by policy"]);
    // skopeo agrees.
    fs::write(&policy, &reject_host).expect("write policy");
    let out = run(Command::new("skopeo").arg("--policy").arg(&policy).args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{image}"),
        &format!("oci:{}", store.scratch("sk").display()),
    ]));
    assert!(!out.status.success(), "skopeo should refuse too");
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected by policy"));
    // Signatures required: refused, never skipped.
    pull(
        &format!(
            r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"docker":{{"{host}/pol":[{{"type":"signedBy","keyType":"GPGKeys","keyPath":"/nonexistent.gpg"}}]}}}}}}"#
        ),
        3,
        &["signatures", "skopeo copy"],
    );
    // The default rejects, and oci: layouts are checked too.
    pull(
        r#"{"default":[{"type":"reject"}]}"#,
        3,
        &["rejected by policy"],
    );
    let out = run(store
        .ours_cmd()
        .arg("copy-to-storage")
        .args(["--source", &src])
        .args([
            "--target",
            "localhost/p:1",
            "--signature-policy",
            policy.to_str().expect("utf-8"),
        ]));
    assert_clean_failure(&out, "oci: rejected", &["rejected by policy"]);
    // A policy c/image cannot load is refused whole.
    pull(r#"{"default":[]}"#, 3, &["invalid signature policy"]);
    pull(
        r#"{"default":[{"type":"insecureAcceptAnything","extra":1}]}"#,
        3,
        &["invalid signature policy"],
    );
    // A more specific scope that accepts wins over the host's reject.
    pull(
        &format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{host}":[{{"type":"reject"}}],"{host}/pol/x":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#
        ),
        0,
        &[],
    );
}

/// `--target NAME@DIGEST` and `image tag NAME@DIGEST` must name the image's own manifest digest:
/// another one is refused (skopeo could not export the image by it); the image's own is stored.
#[test]
fn digest_names_must_match() {
    let (store, src) = setup();
    let wrong = format!("localhost/x@sha256:{}", "1".repeat(64));
    refused(
        &store,
        &["copy-to-storage", "--source", &src, "--target", &wrong],
        3,
        &["manifest digest"],
    );
    refused(
        &store,
        &["image", "tag", "localhost/r2:1", &wrong],
        3,
        &["manifest digest"],
    );
    let digest = store.inspect("localhost/r2:1")["Digest"]
        .as_str()
        .expect("Digest")
        .to_string();
    let right = format!("localhost/x@{digest}");
    let out = run(store
        .ours_cmd()
        .args(["image", "tag", "localhost/r2:1", &right]));
    assert!(out.status.success(), "{}", describe(&out));
    crate::util::run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--insecure-policy",
        &store.storage_ref(&right),
        &format!("oci:{}", store.scratch("by-digest").display()),
    ]));
}

/// `image rm` and `image inspect` with names that are not there, as podman: rm removes the rest
/// (exit 1 without --force, 0 with it), -q prints nothing; inspect prints the images found, then
/// fails for the missing one; an unreadable store is an error, never "absent".
#[test]
fn image_commands_as_podman() {
    let (store, src) = setup();
    store.ours_copy_ok(&src, Some("localhost/r2:2"));
    store.ours_copy_ok(&src, Some("localhost/r2:3"));
    // rm without --force: the rest goes, the missing one fails (image class).
    let out = run(store
        .ours_cmd()
        .args(["image", "rm", "nope", "localhost/r2:2"]));
    assert_clean_failure(&out, "rm nope", &["nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Untagged: localhost/r2:2"));
    // rm -f: missing names are no failure; -q prints nothing.
    let out = run(store
        .ours_cmd()
        .args(["-q", "image", "rm", "-f", "nope", "localhost/r2:3"]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "{}", describe(&out));
    assert!(
        !store
            .image_names()
            .iter()
            .any(|n| n.ends_with(":2") || n.ends_with(":3"))
    );
    store.podman_ok(&["images"]);
    // inspect: found ones printed, then the error.
    let out = run(store
        .ours_cmd()
        .args(["image", "inspect", "localhost/r2:1", "nope"]));
    assert_clean_failure(&out, "inspect nope", &["nope"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON of the found one");
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    // The same JSON as podman's for a two-name image.
    let out = run(store
        .ours_cmd()
        .args(["image", "tag", "localhost/r2:1", "localhost/other:9"]));
    assert!(out.status.success(), "{}", describe(&out));
    let ours = crate::util::run_ok(
        store
            .ours_cmd()
            .args(["image", "inspect", "localhost/r2:1"]),
    );
    let theirs = store.podman_ok(&["image", "inspect", "localhost/r2:1"]);
    assert_eq!(ours.trim_end(), theirs.trim_end());
    // An unreadable store (not root): an error, not "absent". Run as nobody.
    let out =
        run(store
            .ours_cmd()
            .uid(65534)
            .gid(65534)
            .args(["image", "exists", "localhost/r2:1"]));
    assert_ne!(out.status.code(), Some(1), "{}", describe(&out));
    assert_ne!(out.status.code(), Some(0), "{}", describe(&out));
    assert_clean_failure(
        &out,
        "exists as nobody",
        &["rootless stores are not supported"],
    );
}

/// `--runroot` longer than podman accepts (50 characters) is refused before anything is written.
#[test]
fn long_runroot_refused() {
    let (store, src) = setup();
    let long = format!("/tmp/{}", "r".repeat(60));
    let out = run(Command::new(crate::util::BIN)
        .arg("--root")
        .arg(&store.root)
        .arg("--runroot")
        .arg(&long)
        .args([
            "copy-to-storage",
            "--source",
            &src,
            "--target",
            "localhost/l:1",
        ]));
    assert_clean_failure(&out, "long runroot", &["longer than the 50"]);
    assert!(!Path::new(&long).exists());
}

/// `pull --progress json` prints only JSON events, the last a `done` event with the image; `pull
/// --format json` one object per image; `storage verify --root` checks that store, with `--format
/// json`; `list --root` lists that store even in a container.
#[test]
fn options_mean_the_same_everywhere() {
    let (store, src) = setup();
    let out = run(store.ours_cmd().args(["pull", "--progress", "json", &src]));
    assert!(out.status.success(), "{}", describe(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let last = lines.last().expect("events");
    assert_eq!(last["event"], "done", "{last}");
    assert!(last["image_id"].is_string(), "{last}");
    let out = run(store
        .ours_cmd()
        .args(["pull", "--progress", "none", "--format", "json", &src]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pull JSON");
    assert!(v["digest"].is_string(), "{v}");
    // verify with --root checks that store (not bootc's), and speaks JSON.
    let out = run(store
        .ours_cmd()
        .args(["storage", "verify", "--format", "json"]));
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("verify JSON");
    assert_eq!(
        v["store"].as_str(),
        Some(store.root.to_str().expect("utf-8")),
        "{v}"
    );
    // list --root in a container (the `container` variable, as podman sets it, says we are in one).
    let out = run(store
        .ours_cmd()
        .env("container", "podman")
        .args(["list", "--format", "json"]));
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list JSON");
    assert!(
        v.as_array()
            .is_some_and(|a| a.iter().any(|r| r["image"] == "localhost/r2:1")),
        "{v}"
    );
}

/// An extra file in a layer's `diff/` is found by `storage verify` (and removed by repair).
#[test]
fn verify_finds_extra_files() {
    let (store, _src) = setup();
    let top = store.inspect("localhost/r2:1")["GraphDriver"]["Data"]["UpperDir"]
        .as_str()
        .expect("UpperDir")
        .to_string();
    fs::write(Path::new(&top).join("planted"), b"x").expect("plant");
    // A planted directory is named, not each file in it.
    fs::create_dir_all(Path::new(&top).join("planteddir/sub")).expect("plant dir");
    fs::write(Path::new(&top).join("planteddir/sub/f"), b"x").expect("plant in dir");
    let out = run(store.ours_cmd().args(["storage", "verify"]));
    assert_clean_failure(&out, "extra file", &["problems"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("planted") && stdout.contains("planteddir") && !stdout.contains("sub"),
        "{}",
        describe(&out)
    );
}

/// An export killed (SIGKILL) after a layer blob: an `oci:` layout keeps no temporary blob, and the
/// work directory a killed `oci-archive:` export left is removed by the next export there.
#[test]
fn killed_exports_leave_nothing() {
    use std::os::unix::process::ExitStatusExt as _;
    let (store, _src) = setup();
    let dir = store.scratch("killed-export");
    fs::create_dir_all(&dir).expect("mkdir");
    let layout = dir.join("layout");
    let archive = dir.join("a.tar");
    for dest in [
        format!("oci:{}", layout.display()),
        format!("oci-archive:{}", archive.display()),
    ] {
        let out = run(store
            .ours_cmd()
            .env("BOOTC_IMAGE_CRASH_AT", "export:layer-blob")
            .args(["export", "localhost/r2:1", &dest]));
        assert_eq!(out.status.signal(), Some(9), "{dest}: {}", describe(&out));
    }
    let leftovers = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(leftovers(&layout.join("blobs/sha256")).is_empty());
    let out = run(store.ours_cmd().args([
        "export",
        "localhost/r2:1",
        &format!("oci-archive:{}", archive.display()),
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}
