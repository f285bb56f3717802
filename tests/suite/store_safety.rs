//! Store safety: inputs that once destroyed other images' data or made `podman images` fail for
//! the whole store are refused before anything is written (issue "Nothing we write breaks a
//! store"). Each test runs on a store seeded by skopeo and checks the failure contract: one
//! `error:` line, the store byte for byte as it was, podman still listing the seed image.

use serde_json::json;

use crate::errors::{assert_seed_listed, expect_failure_on, seed};
use crate::fixture::{
    self, CONFIG_MEDIA_TYPE, Compression, Entry, ImageSpec, LayerBlob, MANIFEST_MEDIA_TYPE, OciDir,
};
use crate::util::{Driver, TestStore, assert_clean_failure};

/// A two-layer image whose second layer holds `whiteout` (an empty file named like a whiteout).
fn whiteout_image(dir: &std::path::Path, whiteout: &str) -> String {
    let mut oci = OciDir::create(&dir.join("wh"));
    let tars = [
        fixture::small_tar(100),
        fixture::build_tar(&[
            Entry::dir("sub/"),
            Entry::whiteout(whiteout),
            Entry::file("after", b"after\n".to_vec()),
        ]),
    ];
    let spec = ImageSpec::from_tars("whiteout", &tars, Compression::Gzip);
    oci.add_image(Some("wh"), &spec);
    oci.source(Some("wh"))
}

/// Whiteouts that name the directory itself or its parent (`.wh...` is the whiteout of `..`): on
/// vfs these once deleted every layer of every image. Both drivers refuse them and change nothing.
#[test]
fn whiteouts_of_dot_and_dotdot_are_refused() {
    for driver in [Driver::Vfs, Driver::Overlay] {
        for wh in [".wh...", ".wh..", ".wh.", "sub/.wh...", "sub/.wh.."] {
            expect_failure_on(driver, &format!("{driver:?} {wh}"), |dir| {
                whiteout_image(dir, wh)
            });
        }
    }
}

/// A layout whose manifest is `manifest` (a JSON object given the config and one layer's
/// descriptors), tagged `m`.
fn layout_with_manifest(
    dir: &std::path::Path,
    make: impl FnOnce(serde_json::Value, serde_json::Value) -> serde_json::Value,
) -> String {
    let mut oci = OciDir::create(&dir.join("mf"));
    let layer = LayerBlob::new(&fixture::small_tar(101), Compression::Gzip);
    let spec = ImageSpec {
        layers: vec![layer],
        label: "manifest rules".into(),
    };
    let config = serde_json::to_vec(&spec.config()).expect("config json");
    let config_digest = oci.write_blob(&config);
    let layer_digest = oci.write_blob(&spec.layers[0].blob);
    let config_desc =
        json!({"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()});
    let layer_desc = json!({"mediaType": spec.layers[0].media_type, "digest": layer_digest,
        "size": spec.layers[0].blob.len()});
    let manifest = make(config_desc, json!([layer_desc]));
    oci.add_manifest_bytes(Some("m"), &serde_json::to_vec(&manifest).expect("json"));
    oci.source(Some("m"))
}

/// Manifests c/image would reject when podman reads them back ("rejecting ambiguous manifest",
/// not an image): refused before anything is written.
#[test]
fn manifests_podman_cannot_read_are_refused() {
    type Make = fn(serde_json::Value, serde_json::Value) -> serde_json::Value;
    let cases: [(&str, Make); 6] = [
        ("index media type with config and layers", |c, l| {
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "config": c, "layers": l})
        }),
        ("manifests field in an image manifest", |c, l| {
            json!({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": c,
                   "layers": l, "manifests": []})
        }),
        ("schema 1 history field", |c, l| {
            json!({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": c,
                   "layers": l, "history": []})
        }),
        ("artifact config", |mut c, l| {
            c["mediaType"] = json!("application/vnd.example.artifact.v1+json");
            json!({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": c, "layers": l})
        }),
        (
            "schemaVersion 1",
            |c, l| json!({"schemaVersion": 1, "mediaType": MANIFEST_MEDIA_TYPE, "config": c, "layers": l}),
        ),
        ("docker manifest with an OCI config", |c, l| {
            json!({"schemaVersion": 2,
                   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                   "config": c, "layers": l})
        }),
    ];
    for (what, make) in cases {
        expect_failure_on(Driver::Overlay, what, |dir| layout_with_manifest(dir, make));
    }
}

/// Target names podman cannot parse (each once made `podman images` fail for the whole store)
/// are refused with one line naming the name; the store is unchanged. A valid but unusual name
/// is stored as podman would normalize it (`containers-storage:NAME` is skopeo's transport
/// around a name: see cli.rs).
#[test]
fn names_podman_cannot_parse_are_refused() {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let mut oci = OciDir::create(&store.scratch("names"));
    let spec = ImageSpec::from_tars("names", &[fixture::small_tar(102)], Compression::Gzip);
    oci.add_image(Some("n"), &spec);
    let src = oci.source(Some("n"));
    let long_repo = format!("localhost/{}", "a".repeat(300));
    let long_tag = format!("localhost/x:{}", "t".repeat(200));
    for bad in [
        "../x",
        long_repo.as_str(),
        "x:t1:t2",
        long_tag.as_str(),
        "containers-storage:containers-storage:x",
        "docker://x",
        "Upper/Case",
        "localhost/x:-dash",
        "",
    ] {
        let before = store.snapshot();
        let out = store.ours_copy(&src, Some(bad));
        assert_clean_failure(&out, &format!("--target {bad:?}"), &["invalid image name"]);
        let d = before.diff(&store.snapshot());
        assert!(
            d.is_empty(),
            "{bad:?}: the store changed:\n{}",
            d.join("\n")
        );
    }
    assert_seed_listed(&store);
    store.ours_copy_ok(&src, Some("localhost:5000/a_b__c-d/e.f:v1.0-x"));
    let inspect = store.inspect("localhost:5000/a_b__c-d/e.f:v1.0-x");
    assert_eq!(
        inspect["RepoTags"],
        json!(["localhost:5000/a_b__c-d/e.f:v1.0-x"]),
        "stored name"
    );
    store.ours_copy_ok(&src, Some("docker.io/shortname"));
    store.inspect("docker.io/library/shortname:latest");
    let names: usize = store.images().len();
    assert!(names >= 2, "podman images lists {names} images");
}

/// Packs `dir` (an OCI layout) as a tar at `file`, then appends `extra` members given as (raw
/// name, content), names written as they are.
fn archive_with_members(dir: &std::path::Path, file: &std::path::Path, extra: &[(&[u8], &[u8])]) {
    let mut out = Vec::new();
    let mut members: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for name in ["oci-layout", "index.json"] {
        members.push((
            name.as_bytes().to_vec(),
            std::fs::read(dir.join(name)).expect("read layout file"),
        ));
    }
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .expect("read blobs")
        .map(|e| e.expect("entry").path())
        .collect();
    blobs.sort();
    for b in blobs {
        let name = format!(
            "blobs/sha256/{}",
            b.file_name().expect("name").to_string_lossy()
        );
        members.push((name.into_bytes(), std::fs::read(&b).expect("read blob")));
    }
    members.extend(extra.iter().map(|(n, c)| (n.to_vec(), c.to_vec())));
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        fixture::set_field(&mut h.as_old_mut().name, &name);
        h.set_mode(0o644);
        h.set_mtime(fixture::EPOCH);
        h.set_entry_type(tar::EntryType::Regular);
        fixture::push_header(&mut out, h, &data);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(file, out).expect("write archive");
}

/// An oci-archive whose later member `blobs/sha256/../../index.json` would replace the real
/// `index.json` (so another image than the one named would be stored): refused, as skopeo does.
/// A member given twice is refused too.
#[test]
fn archive_members_that_replace_others_are_refused() {
    for (what, member) in [
        ("a '..' member", &b"blobs/sha256/../../index.json"[..]),
        ("a repeated member", &b"index.json"[..]),
    ] {
        expect_failure_on(Driver::Overlay, what, |dir| {
            let mut oci = OciDir::create(&dir.join("arch"));
            for n in [103, 104] {
                let spec =
                    ImageSpec::from_tars("arch", &[fixture::small_tar(n)], Compression::Gzip);
                oci.add_image(Some(&format!("t{n}")), &spec);
            }
            // The other index names only t104, as t103.
            let index: serde_json::Value = serde_json::from_slice(
                &std::fs::read(oci.path.join("index.json")).expect("read index"),
            )
            .expect("index json");
            let mut other = index.clone();
            other["manifests"] = json!([index["manifests"][1].clone()]);
            other["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] =
                json!("t103");
            let other = serde_json::to_vec(&other).expect("json");
            let file = dir.join("arch.tar");
            archive_with_members(&oci.path, &file, &[(member, &other)]);
            format!("oci-archive:{}:t103", file.display())
        });
    }
}

/// Runs our copy with a deadline: inputs that are not regular files must fail at once, never block.
fn copy_within(store: &TestStore, src: &str, secs: u64) -> std::process::Output {
    let mut child = store
        .ours_cmd()
        .args([
            "copy-to-storage",
            "--source",
            src,
            "--target",
            "localhost/x",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bootc-image");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("copy of {src} still running after {secs} s: it blocked on its input");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// Inputs that are not regular files — a FIFO as index.json or as a blob, a FIFO as the archive,
/// a blob that is a symlink out of the layout — are refused at open with one line; nothing blocks.
#[test]
fn inputs_that_are_not_regular_files_are_refused() {
    let store = TestStore::new(Driver::Overlay);
    seed(&store);
    let before = store.snapshot();
    let mk = |name: &str| {
        let mut oci = OciDir::create(&store.scratch(name));
        let spec = ImageSpec::from_tars(name, &[fixture::small_tar(105)], Compression::Gzip);
        let built = oci.add_image(Some("t"), &spec);
        (oci, built)
    };
    let fifo = |p: &std::path::Path| {
        let _ = std::fs::remove_file(p);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            p,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .expect("mkfifo");
    };
    let mut cases = Vec::new();
    let (oci, _) = mk("fifo-index");
    fifo(&oci.path.join("index.json"));
    cases.push((
        "index.json a FIFO",
        oci.source(Some("t")),
        "not a regular file",
    ));
    let (oci, built) = mk("fifo-blob");
    fifo(&oci.blob_path(&built.layer_digests[0]));
    cases.push((
        "layer blob a FIFO",
        oci.source(Some("t")),
        "not a regular file",
    ));
    let (oci, built) = mk("link-blob");
    let outside = store.scratch("outside-blob");
    let blob = oci.blob_path(&built.layer_digests[0]);
    std::fs::rename(&blob, &outside).expect("move blob out");
    std::os::unix::fs::symlink(&outside, &blob).expect("symlink blob");
    cases.push((
        "layer blob a symlink out of the layout",
        oci.source(Some("t")),
        "out of the OCI layout",
    ));
    let archive = store.scratch("fifo.tar");
    fifo(&archive);
    cases.push((
        "archive a FIFO",
        format!("oci-archive:{}", archive.display()),
        "not a regular file",
    ));
    for (what, src, mention) in cases {
        let out = copy_within(&store, &src, 30);
        assert_clean_failure(&out, what, &[mention]);
    }
    let d = before.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed:\n{}", d.join("\n"));
    assert_seed_listed(&store);
}

/// `storage verify --store default` finds what is damaged in a podman store (a layer file changed,
/// an image's config gone, a layer whose data is gone, orphaned files) without changing anything;
/// `--repair` removes exactly the damaged images and layers and the orphans, and podman then lists,
/// inspects and mounts everything that is left; the removed images can be copied again.
#[test]
fn verify_finds_damage_and_repair_removes_it() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("vr"));
    let mut built = std::collections::BTreeMap::new();
    for (tag, n) in [("p", 201), ("q", 202), ("r", 203), ("w", 204)] {
        let spec = ImageSpec::from_tars(tag, &[fixture::small_tar(n)], Compression::Gzip);
        built.insert(tag, oci.add_image(Some(tag), &spec));
    }
    let name = |t: &str| format!("localhost/vr-{t}:latest");
    store.ours_copy_ok(&oci.source(Some("p")), Some(&name("p")));
    store.ours_copy_ok(&oci.source(Some("q")), Some(&name("q")));
    store.skopeo_copy_in(&oci.source(Some("r")), &name("r"));
    store.skopeo_copy_in(&oci.source(Some("w")), &name("w"));
    let verify = |extra: &[&str]| {
        let mut c = store.ours_cmd();
        c.args(["storage", "verify", "--store", "default"])
            .args(extra);
        crate::util::run(&mut c)
    };
    let out = verify(&[]);
    assert!(
        out.status.success(),
        "clean store: {}",
        crate::util::describe(&out)
    );
    let top = |t: &str| -> String {
        store
            .image_records()
            .into_iter()
            .find(|r| r["id"] == built[t].image_id().as_str())
            .and_then(|r| r["layer"].as_str().map(str::to_string))
            .expect("top layer")
    };
    // p: a file of its layer changed. q: a big-data file is gone. r: its layer data is gone
    // (which also leaves its overlay short link dangling).
    let (tp, tr) = (top("p"), top("r"));
    std::fs::write(
        store.root.join(format!("overlay/{tp}/diff/layer201/file")),
        "changed content of small layer 201\n",
    )
    .expect("damage p");
    let qdir = store.images_dir().join(built["q"].image_id());
    let data_file = std::fs::read_dir(&qdir)
        .expect("read q's dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('='))
        })
        .expect("a big-data file of q");
    std::fs::remove_file(&data_file).expect("remove q's data");
    std::fs::remove_dir_all(store.root.join(format!("overlay/{tr}/diff"))).expect("damage r");
    let orphan_dir = store.root.join(format!("overlay/{}", "e".repeat(64)));
    std::fs::create_dir_all(orphan_dir.join("diff")).expect("orphan dir");
    let orphan_ts = store
        .layers_dir()
        .join(format!("{}.tar-split.gz", "f".repeat(64)));
    std::fs::write(&orphan_ts, b"").expect("orphan tar-split");

    let before = store.snapshot();
    let out = verify(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_clean_failure(&out, "verify of a damaged store", &["--repair"]);
    for want in [
        format!("damaged layer {tp}"),
        format!("damaged image {}", built["p"].image_id()),
        format!("damaged image {}", built["q"].image_id()),
        format!("damaged layer {tr}"),
        format!("damaged image {}", built["r"].image_id()),
        format!("orphan {}", orphan_dir.display()),
        format!("orphan {}", orphan_ts.display()),
    ] {
        assert!(
            stdout.contains(&want),
            "verify should report {want:?}:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains(&built["w"].image_id()),
        "w is sound:\n{stdout}"
    );
    let out = verify(&["--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("verify --json prints JSON");
    assert_eq!(
        v["problems"].as_array().map(Vec::len),
        Some(8),
        "{v:#}\n{}",
        crate::util::describe(&out)
    );
    assert!(
        before.diff(&store.snapshot()).is_empty(),
        "verify changed the store"
    );

    let out = verify(&["--repair"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "repair: {}",
        crate::util::describe(&out)
    );
    assert!(
        stdout.contains("Repaired: removed 3 images, 2 layers, 3 orphaned files"),
        "{stdout}"
    );
    assert!(!orphan_dir.exists() && !orphan_ts.exists(), "orphans left");
    let out = verify(&[]);
    assert!(
        out.status.success(),
        "after repair: {}",
        crate::util::describe(&out)
    );
    let listed = store.images();
    assert_eq!(listed.len(), 1, "podman images after repair: {listed:?}");
    // q's layer is sound and still there; w mounts; the removed images copy again.
    let mnt = store.image_mount(&name("w"));
    assert!(mnt.join("layer204/file").is_file());
    store.image_umount(&name("w"));
    for t in ["p", "q", "r"] {
        store.ours_copy_ok(&oci.source(Some(t)), Some(&name(t)));
        let mnt = store.image_mount(&name(t));
        assert!(
            mnt.join(format!(
                "layer{}/file",
                200 + "pqr".find(t).unwrap_or(0) + 1
            ))
            .is_file()
        );
        store.image_umount(&name(t));
    }
}
