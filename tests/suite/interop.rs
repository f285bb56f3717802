//! Interoperability: what `bootc-image copy-to-storage` writes must be what skopeo writes.
//!
//! The same fixture goes into store A with `skopeo copy` and into store B with our binary; then
//! podman's view of both (inspect JSON, mounted trees) must be equal, skopeo must be able to
//! export our image with the original DiffIDs, and `podman rmi` must remove every trace of it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::fixture::{self, BuiltImage, Compression, ImageSpec, OciDir, UNDEFINED_MTIME_PATHS};
use crate::util::{Driver, TestStore, diff_trees, run_ok, walk_tree};

/// The name both stores use for the image under comparison.
pub const NAME: &str = "localhost/interop:latest";

/// `podman image inspect` with the store paths in `GraphDriver` replaced by `<ROOT>`.
fn normalized_inspect(store: &TestStore, name: &str) -> Value {
    let v = store.inspect(name);
    let text = serde_json::to_string(&v).expect("serialize inspect");
    let text = text.replace(&store.root.display().to_string(), "<ROOT>");
    serde_json::from_str(&text).expect("reparse inspect")
}

/// Asserts that the inspect output of our image equals skopeo's, field by field, and matches
/// the fixture's digests.
pub fn assert_inspect_equal(reference: &TestStore, ours: &TestStore, built: &BuiltImage) {
    let a = normalized_inspect(reference, NAME);
    let b = normalized_inspect(ours, NAME);
    let keys: BTreeSet<&String> = a
        .as_object()
        .expect("inspect object")
        .keys()
        .chain(b.as_object().expect("inspect object").keys())
        .collect();
    let diffs: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
        .map(|k| {
            format!(
                "{k}: skopeo {:?}\n    ours {:?}",
                a.get(k.as_str()),
                b.get(k.as_str())
            )
        })
        .collect();
    assert!(
        diffs.is_empty(),
        "podman image inspect differs:\n{}",
        diffs.join("\n")
    );
    assert_eq!(
        b["Id"],
        Value::from(built.image_id()),
        "image ID = config digest hex"
    );
    assert_eq!(
        b["Digest"],
        Value::from(built.manifest_digest.clone()),
        "manifest digest"
    );
    assert_eq!(
        b["RootFS"]["Layers"],
        Value::from(built.diff_ids.clone()),
        "RootFS.Layers"
    );
}

/// Mounts `name` in both stores and compares the trees.
pub fn assert_trees_equal(
    reference: &TestStore,
    ours: &TestStore,
    name: &str,
    skip_mtime: &[&str],
) {
    let ta = walk_tree(&reference.image_mount(name));
    let tb = walk_tree(&ours.image_mount(name));
    reference.image_umount(name);
    ours.image_umount(name);
    let d = diff_trees(&ta, &tb, skip_mtime);
    assert!(
        d.is_empty(),
        "mounted trees differ (skopeo vs ours):\n{}",
        d.join("\n")
    );
}

/// Exports `NAME` from `store` with skopeo and checks the DiffIDs of config and layers.
pub fn assert_skopeo_exports(store: &TestStore, built: &BuiltImage) {
    let (config, layers) = store.exported_diff_ids(NAME, "export");
    assert_eq!(config, built.diff_ids, "exported config");
    assert_eq!(
        layers, built.diff_ids,
        "exported layers must decompress to the original DiffIDs"
    );
}

/// `podman rmi NAME` must leave no layer, layer dir, tar-split or image data behind.
fn assert_rmi_cleans(store: &TestStore, name: &str) {
    store.podman_ok(&["rmi", name]);
    assert!(
        store.layer_records().is_empty(),
        "layers.json after rmi: {:?}",
        store.layer_records()
    );
    assert!(
        store.image_records().is_empty(),
        "images.json after rmi: {:?}",
        store.image_records()
    );
    let driver_dir = match store.driver {
        Driver::Overlay => store.root.join("overlay"),
        Driver::Vfs => store.root.join("vfs/dir"),
    };
    let leftovers: Vec<String> = fs::read_dir(&driver_dir)
        .map(|rd| {
            rd.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n != "l" && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "layer dirs left in {}: {leftovers:?}",
        driver_dir.display()
    );
    let tar_splits: Vec<String> = fs::read_dir(store.layers_dir())
        .expect("layers dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tar-split"))
        .collect();
    assert!(
        tar_splits.is_empty(),
        "tar-split files left: {tar_splits:?}"
    );
    let image_dirs: Vec<String> = fs::read_dir(store.images_dir())
        .expect("images dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().expect("type").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        image_dirs.is_empty(),
        "image data dirs left: {image_dirs:?}"
    );
}

/// Asserts our copy's stdout names the image and its manifest digest.
fn assert_stdout_reports(stdout: &str, name: &str, built: &BuiltImage) {
    assert!(
        stdout.contains(name),
        "stdout should name {name}: {stdout:?}"
    );
    assert!(
        stdout.contains(&built.manifest_digest),
        "stdout should hold the manifest digest {}: {stdout:?}",
        built.manifest_digest
    );
}

/// Full comparison of one image: skopeo from `skopeo_src`, ours from `ours_src`.
pub fn compare_copies(
    driver: Driver,
    build: impl FnOnce(&Path) -> (String, String, BuiltImage),
    skip_mtime: &[&str],
) {
    let reference = TestStore::new(driver);
    let ours = TestStore::new(driver);
    let (skopeo_src, ours_src, built) = build(&reference.dir);
    reference.skopeo_copy_in(&skopeo_src, NAME);
    let stdout = ours.ours_copy_ok(&ours_src, Some(NAME));
    assert_stdout_reports(&stdout, NAME, &built);

    assert_inspect_equal(&reference, &ours, &built);
    let listed = ours.images();
    assert_eq!(listed.len(), 1, "podman images: {listed:?}");
    assert_eq!(
        listed[0]["Names"],
        Value::from(vec![NAME]),
        "podman images Names"
    );
    assert_eq!(
        listed[0]["Id"],
        Value::from(built.image_id()),
        "podman images Id"
    );

    assert_records_equal(&reference, &ours);
    assert_trees_equal(&reference, &ours, NAME, skip_mtime);
    assert_skopeo_exports(&ours, &built);
    assert_rmi_cleans(&ours, NAME);
}

/// A layer record without the big-data names of the TOC we write for a layer that came without
/// one (issue 26, item 4: skopeo writes none); a zstd:chunked layer's (with its `toc-digest`)
/// stays.
pub fn without_own_toc(mut rec: Value) -> Value {
    let own = serde_json::json!(["zstd-chunked-manifest", "zstd-chunked-layer-data"]);
    if let Some(o) = rec.as_object_mut()
        && !o.contains_key("toc-digest")
        && o.get("big-data-names") == Some(&own)
    {
        o.remove("big-data-names");
    }
    rec
}

/// layers.json records must equal skopeo's (apart from `created`); the images.json record must
/// agree on identity, names, top layer, creation time and the manifest/config big data
/// (c/image's empty `signature-*` item and its `metadata` are optional).
pub fn assert_records_equal(reference: &TestStore, ours: &TestStore) {
    let by_id = |recs: Vec<Value>| -> std::collections::BTreeMap<String, Value> {
        recs.into_iter()
            .map(|mut r| {
                if let Some(o) = r.as_object_mut() {
                    o.remove("created");
                }
                (r["id"].as_str().expect("layer id").to_string(), r)
            })
            .collect()
    };
    let a = by_id(reference.layer_records());
    let b = by_id(
        ours.layer_records()
            .into_iter()
            .map(without_own_toc)
            .collect(),
    );
    let ids_a: Vec<&String> = a.keys().collect();
    let ids_b: Vec<&String> = b.keys().collect();
    assert_eq!(ids_a, ids_b, "layer IDs (skopeo vs ours)");
    let diffs: Vec<String> = a
        .iter()
        .filter(|(id, ra)| b.get(*id) != Some(*ra))
        .map(|(id, ra)| format!("layer {id}:\n  skopeo {ra}\n  ours   {}", b[id]))
        .collect();
    assert!(
        diffs.is_empty(),
        "layers.json records differ:\n{}",
        diffs.join("\n")
    );

    let ia = reference.image_records();
    let ib = ours.image_records();
    assert_eq!(ib.len(), 1, "images.json: {ib:?}");
    let (ia, ib) = (&ia[0], &ib[0]);
    for key in ["id", "digest", "names", "layer", "created"] {
        assert_eq!(ia[key], ib[key], "images.json `{key}` (skopeo vs ours)");
    }
    for name in ia["big-data-names"].as_array().expect("big-data-names") {
        let name = name.as_str().expect("big-data name");
        if name.starts_with("signature") {
            continue;
        }
        assert!(
            ib["big-data-names"]
                .as_array()
                .is_some_and(|v| v.iter().any(|n| n == name)),
            "our image lacks big data {name}: {ib}"
        );
        assert_eq!(
            ia["big-data-sizes"][name], ib["big-data-sizes"][name],
            "size of {name}"
        );
        assert_eq!(
            ia["big-data-digests"][name], ib["big-data-digests"][name],
            "digest of {name}"
        );
    }
}

/// Rich fixture from an `oci:` layout.
fn rich(driver: Driver, compression: Compression) {
    compare_copies(
        driver,
        |dir| {
            let mut oci = OciDir::create(&dir.join("oci"));
            let built = oci.add_image(Some("v1"), &fixture::rich_image(compression));
            let src = oci.source(Some("v1"));
            (src.clone(), src, built)
        },
        UNDEFINED_MTIME_PATHS,
    );
}

/// Rich fixture, overlay, gzip layers.
#[test]
fn interop_overlay_gzip() {
    rich(Driver::Overlay, Compression::Gzip);
}

/// Rich fixture, overlay, zstd layers.
#[test]
fn interop_overlay_zstd() {
    rich(Driver::Overlay, Compression::Zstd);
}

/// Rich fixture, overlay, uncompressed layers.
#[test]
fn interop_overlay_uncompressed() {
    rich(Driver::Overlay, Compression::None);
}

/// Rich fixture, vfs, gzip layers.
#[test]
fn interop_vfs_gzip() {
    rich(Driver::Vfs, Compression::Gzip);
}

/// Rich fixture, vfs, zstd layers.
#[test]
fn interop_vfs_zstd() {
    rich(Driver::Vfs, Compression::Zstd);
}

/// Rich fixture, vfs, uncompressed layers.
#[test]
fn interop_vfs_uncompressed() {
    rich(Driver::Vfs, Compression::None);
}

/// Rich fixture with a different compression per layer (gzip, zstd, none), overlay.
#[test]
fn interop_overlay_mixed_compression() {
    compare_copies(
        Driver::Overlay,
        |dir| {
            let mut oci = OciDir::create(&dir.join("oci"));
            let kinds = [Compression::Gzip, Compression::Zstd, Compression::None];
            let spec = ImageSpec {
                layers: fixture::rich_tars()
                    .iter()
                    .zip(kinds)
                    .map(|(t, c)| fixture::LayerBlob::new(t, c))
                    .collect(),
                label: "mixed".into(),
            };
            let built = oci.add_image(Some("mixed"), &spec);
            let src = oci.source(Some("mixed"));
            (src.clone(), src, built)
        },
        UNDEFINED_MTIME_PATHS,
    );
}

/// Edge fixture (hard-link header metadata, `./` mode), a single zstd layer.
fn edge(driver: Driver) {
    compare_copies(
        driver,
        |dir| {
            let mut oci = OciDir::create(&dir.join("oci"));
            let tars = fixture::edge_tars();
            let spec = ImageSpec {
                layers: tars
                    .iter()
                    .map(|t| fixture::LayerBlob::new(t, Compression::Zstd))
                    .collect(),
                label: "edge".into(),
            };
            let built = oci.add_image(Some("edge"), &spec);
            let src = oci.source(Some("edge"));
            (src.clone(), src, built)
        },
        &[""],
    );
}

/// Hard-link headers whose mode/owner/mtime differ from the target's, overlay.
#[test]
fn interop_edge_overlay() {
    edge(Driver::Overlay);
}

/// Hard-link headers whose mode/owner/mtime differ from the target's, vfs.
#[test]
fn interop_edge_vfs() {
    edge(Driver::Vfs);
}

/// A layout with a single untagged image: `oci:DIR` without a tag, and ours from an
/// `oci-archive:` of the same layout.
#[test]
fn interop_oci_archive_and_untagged() {
    compare_copies(
        Driver::Overlay,
        |dir| {
            let mut oci = OciDir::create(&dir.join("oci"));
            let built = oci.add_image(None, &fixture::rich_image(Compression::Gzip));
            let archive = dir.join("image.tar");
            oci.write_archive(&archive);
            (
                oci.source(None),
                format!("oci-archive:{}", archive.display()),
                built,
            )
        },
        UNDEFINED_MTIME_PATHS,
    );
}

/// A tagged image in an `oci-archive:FILE:TAG` among others.
#[test]
fn oci_archive_with_tag() {
    let store = TestStore::new(Driver::Vfs);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let other = ImageSpec::from_tars("other", &[fixture::small_tar(5)], Compression::Gzip);
    oci.add_image(Some("other"), &other);
    let wanted = ImageSpec::from_tars("wanted", &[fixture::small_tar(6)], Compression::Zstd);
    let built = oci.add_image(Some("wanted"), &wanted);
    let archive = store.scratch("image.tar");
    oci.write_archive(&archive);
    let stdout = store.ours_copy_ok(&format!("oci-archive:{}:wanted", archive.display()), None);
    assert_stdout_reports(&stdout, "localhost/bootc:latest", &built);
    let v = store.inspect("localhost/bootc:latest");
    assert_eq!(v["Id"], Value::from(built.image_id()));
    assert_eq!(v["Digest"], Value::from(built.manifest_digest.clone()));
}

/// Default target name, podman-style normalisation, and a second name for an existing image.
#[test]
fn target_names() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let spec = ImageSpec::from_tars("names", &[fixture::small_tar(7)], Compression::Gzip);
    let built = oci.add_image(Some("t"), &spec);
    let src = oci.source(Some("t"));
    let stdout = store.ours_copy_ok(&src, None);
    assert_stdout_reports(&stdout, "localhost/bootc:latest", &built);
    let stdout = store.ours_copy_ok(&src, Some("foo"));
    assert_stdout_reports(&stdout, "docker.io/library/foo:latest", &built);
    // podman 4.3 lists an image once per name; all entries must be the one image.
    let listed = store.images();
    let ids: BTreeSet<&str> = listed
        .iter()
        .map(|i| i["Id"].as_str().expect("Id"))
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([built.image_id().as_str()]),
        "one image: {listed:?}"
    );
    let names: BTreeSet<&str> = listed[0]["Names"]
        .as_array()
        .expect("Names")
        .iter()
        .map(|n| n.as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["localhost/bootc:latest", "docker.io/library/foo:latest"]),
        "podman images Names"
    );
    assert_eq!(
        store.image_records().len(),
        1,
        "images.json holds one record"
    );
    assert_eq!(
        store.layer_records().len(),
        1,
        "the layer is not duplicated"
    );
    store.podman_ok(&["image", "exists", "foo"]);
    store.podman_ok(&["image", "exists", "localhost/bootc"]);
}

/// Two small images sharing their first two layers: X = (L1, L2), Y = (L1, L2, L3).
fn shared_images(oci: &mut OciDir) -> (BuiltImage, BuiltImage) {
    let tars: Vec<Vec<u8>> = (11..14).map(fixture::small_tar).collect();
    let x = ImageSpec::from_tars("x", &tars[..2], Compression::Gzip);
    let y = ImageSpec::from_tars("y", &tars, Compression::Gzip);
    (oci.add_image(Some("x"), &x), oci.add_image(Some("y"), &y))
}

/// Checks that image `name`'s mounted tree holds the three small layers' files.
fn assert_has_small_layers(store: &TestStore, name: &str, layers: std::ops::Range<u32>) {
    let mnt = store.image_mount(name);
    for n in layers {
        let content = fs::read_to_string(mnt.join(format!("layer{n}/file")))
            .unwrap_or_else(|e| panic!("{name}: layer{n}/file: {e}"));
        assert_eq!(content, format!("content of small layer {n}\n"));
    }
    store.image_umount(name);
}

/// skopeo stores X, then we store Y: our copy reuses L1 and L2 without touching their records.
fn skopeo_then_ours(driver: Driver) {
    let store = TestStore::new(driver);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let (_x, y) = shared_images(&mut oci);
    store.skopeo_copy_in(&oci.source(Some("x")), "localhost/x:latest");
    let before = store.layer_records();
    assert_eq!(before.len(), 2);
    store.ours_copy_ok(&oci.source(Some("y")), Some("localhost/y:latest"));
    let after = store.layer_records();
    assert_eq!(after.len(), 3, "layers.json after our copy: {after:#?}");
    for rec in &before {
        let id = &rec["id"];
        let now = after
            .iter()
            .find(|r| &r["id"] == id)
            .expect("old layer still recorded");
        assert_eq!(now, rec, "skopeo's layer record must be untouched");
    }
    assert_eq!(
        store.inspect("localhost/y:latest")["RootFS"]["Layers"],
        Value::from(y.diff_ids)
    );
    assert_eq!(store.images().len(), 2);
    assert_has_small_layers(&store, "localhost/y:latest", 11..14);
    assert_has_small_layers(&store, "localhost/x:latest", 11..13);
}

/// Layer sharing, skopeo first, overlay.
#[test]
fn shared_layers_skopeo_then_ours_overlay() {
    skopeo_then_ours(Driver::Overlay);
}

/// Layer sharing, skopeo first, vfs.
#[test]
fn shared_layers_skopeo_then_ours_vfs() {
    skopeo_then_ours(Driver::Vfs);
}

/// We store X, then skopeo stores Y and reuses our L1 and L2.
fn ours_then_skopeo(driver: Driver) {
    let store = TestStore::new(driver);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let (x, y) = shared_images(&mut oci);
    store.ours_copy_ok(&oci.source(Some("x")), Some("localhost/x:latest"));
    let before = store.layer_records();
    assert_eq!(before.len(), 2, "our layers: {before:#?}");
    store.skopeo_copy_in(&oci.source(Some("y")), "localhost/y:latest");
    let after = store.layer_records();
    assert_eq!(
        after.len(),
        3,
        "skopeo must reuse our two layers: {after:#?}"
    );
    assert_eq!(
        store.inspect("localhost/x:latest")["RootFS"]["Layers"],
        Value::from(x.diff_ids)
    );
    assert_eq!(
        store.inspect("localhost/y:latest")["RootFS"]["Layers"],
        Value::from(y.diff_ids)
    );
    assert_has_small_layers(&store, "localhost/y:latest", 11..14);
    assert_has_small_layers(&store, "localhost/x:latest", 11..13);
}

/// Layer sharing, ours first, overlay.
#[test]
fn shared_layers_ours_then_skopeo_overlay() {
    ours_then_skopeo(Driver::Overlay);
}

/// Layer sharing, ours first, vfs.
#[test]
fn shared_layers_ours_then_skopeo_vfs() {
    ours_then_skopeo(Driver::Vfs);
}

/// Without global options the store comes from `CONTAINERS_STORAGE_CONF`.
#[test]
fn storage_conf_from_env() {
    let store = TestStore::new(Driver::Vfs);
    let conf = store.scratch("storage.conf");
    fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            store.root.display(),
            store.runroot.display()
        ),
    )
    .expect("write storage.conf");
    let mut oci = OciDir::create(&store.scratch("oci"));
    let spec = ImageSpec::from_tars("conf", &[fixture::small_tar(8)], Compression::Gzip);
    let built = oci.add_image(Some("t"), &spec);
    let stdout = run_ok(
        std::process::Command::new(crate::util::BIN)
            .env("CONTAINERS_STORAGE_CONF", &conf)
            .args(["copy-to-storage", "--source", &oci.source(Some("t"))]),
    );
    assert_stdout_reports(&stdout, "localhost/bootc:latest", &built);
    assert!(
        store.root.join("vfs-images/images.json").exists(),
        "image written to the vfs store"
    );
    let v = store.inspect("localhost/bootc:latest");
    assert_eq!(v["Id"], Value::from(built.image_id()));
}

/// podman can create a container on our image (a container layer whose lower chain is our
/// layers), mount it, see all layers' files, and report a write in `podman diff`.
#[test]
fn container_on_our_image() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let tars: Vec<Vec<u8>> = (40..43).map(fixture::small_tar).collect();
    oci.add_image(
        Some("t"),
        &ImageSpec::from_tars("ctr", &tars, Compression::Gzip),
    );
    store.ours_copy_ok(&oci.source(Some("t")), Some("localhost/ctr:latest"));
    store.podman_ok(&[
        "create",
        "--name",
        "c1",
        "localhost/ctr:latest",
        "/bin/true",
    ]);
    let mnt = std::path::PathBuf::from(store.podman_ok(&["mount", "c1"]).trim());
    for n in 40..43 {
        let content = fs::read_to_string(mnt.join(format!("layer{n}/file")))
            .unwrap_or_else(|e| panic!("container sees layer{n}/file: {e}"));
        assert_eq!(content, format!("content of small layer {n}\n"));
    }
    fs::write(mnt.join("written-in-container"), b"hello\n").expect("write into the container");
    let diff = store.podman_ok(&["diff", "c1"]);
    assert!(
        diff.lines().any(|l| l.trim() == "A /written-in-container"),
        "podman diff: {diff}"
    );
    store.podman_ok(&["umount", "c1"]);
    store.podman_ok(&["rm", "c1"]);
    assert_rmi_cleans(&store, "localhost/ctr:latest");
}
