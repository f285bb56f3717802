//! zstd:chunked layers imported whole (issue 26, first part): the TOC the descriptor's annotations
//! place is checked and kept as podman 5 keeps it after a partial pull (`toc-digest`, the
//! `zstd-chunked-manifest` and `zstd-chunked-layer-data` big data); a TOC whose annotation lies is
//! ignored and the layer recorded as plain zstd. (podman5-check compares the records with podman
//! 5's own partial pull of a skopeo-made zstd:chunked image.)

use std::fs;

use serde_json::{Value, json};

use crate::fixture::{self, Compression, ImageSpec, LayerBlob, OciDir};
use crate::util::{Driver, TestStore, describe, run, run_ok};

/// `n` bytes of xorshift noise (a rolling checksum cuts them about every 64 KiB).
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A zstd skippable frame holding `data`.
fn skippable(data: &[u8]) -> Vec<u8> {
    let mut f = 0x184D_2A50u32.to_le_bytes().to_vec();
    f.extend_from_slice(&u32::try_from(data.len()).expect("small").to_le_bytes());
    f.extend_from_slice(data);
    f
}

/// A layer as zstd:chunked lays it out, as far as an importer sees: the tar in zstd frames, then
/// the compressed TOC in a skippable frame the annotations point at (`lie`: a checksum of other
/// bytes). Returns the layer and the uncompressed TOC.
fn chunked_layer(tar: &[u8], lie: bool) -> (LayerBlob, Vec<u8>) {
    chunked_layer_with(tar, lie, json!([{"type": "dir", "name": ".", "mode": 493}]))
}

/// [`chunked_layer`] with these TOC `entries`.
fn chunked_layer_with(tar: &[u8], lie: bool, entries: Value) -> (LayerBlob, Vec<u8>) {
    let toc = serde_json::to_vec(&json!({"version": 1, "entries": entries})).expect("toc");
    let compressed = zstd::bulk::compress(&toc, 3).expect("compress toc");
    let mut blob = zstd::bulk::compress(tar, 3).expect("compress tar");
    let offset = blob.len() + 8;
    blob.extend(skippable(&compressed));
    let checksum = if lie {
        fixture::sha256_digest(b"other bytes")
    } else {
        fixture::sha256_digest(&compressed)
    };
    let layer = LayerBlob {
        media_type: Compression::Zstd.media_type().to_string(),
        blob,
        diff_id: fixture::sha256_digest(tar),
        annotations: json!({
            "io.github.containers.zstd-chunked.manifest-checksum": checksum,
            "io.github.containers.zstd-chunked.manifest-position":
                format!("{offset}:{}:{}:1", compressed.len(), toc.len()),
        }),
    };
    (layer, toc)
}

/// The layer records of `store`.
fn layers(store: &TestStore) -> Vec<Value> {
    let text = fs::read(store.dir.join("root/overlay-layers/layers.json")).expect("layers.json");
    serde_json::from_slice(&text).expect("JSON")
}

/// An image of a zstd:chunked layer and a plain gzip one: the first keeps its TOC (record and big
/// data as podman 5's), podman 4.3 reads the store, `storage verify` passes, a store-to-store copy
/// carries the TOC, `image rm` removes it with the layer; a TOC that lies about a file's digest,
/// or whose annotation lies, is not kept.
#[test]
fn zstd_chunked_toc_kept() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let (chunked, toc) = chunked_layer(&fixture::small_tar(150), false);
    let checksum = chunked.annotations["io.github.containers.zstd-chunked.manifest-checksum"]
        .as_str()
        .expect("checksum")
        .to_string();
    let spec = ImageSpec {
        layers: vec![
            chunked,
            LayerBlob::new(&fixture::small_tar(151), Compression::Gzip),
        ],
        label: "chunked".into(),
    };
    oci.add_image(Some("v1"), &spec);
    let name = "localhost/chunked:1";
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci.source(Some("v1")),
        "--target",
        name,
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    let recs = layers(&store);
    let first = &recs[0];
    assert_eq!(first["toc-digest"].as_str(), Some(checksum.as_str()));
    assert_eq!(
        first["big-data-names"],
        json!(["zstd-chunked-manifest", "zstd-chunked-layer-data"])
    );
    let id = first["id"].as_str().expect("id");
    let dir = store.dir.join("root/overlay-layers").join(id);
    assert_eq!(
        fs::read(dir.join("=enN0ZC1jaHVua2VkLW1hbmlmZXN0")).expect("TOC big data"),
        toc
    );
    assert_eq!(
        fs::read(dir.join("=enN0ZC1jaHVua2VkLWxheWVyLWRhdGE=")).expect("layer data"),
        br#"{"format":0}"#
    );
    assert!(
        recs[1].get("toc-digest").is_none(),
        "the gzip layer has none"
    );
    store.podman_ok(&["image", "inspect", name]);
    run_ok(
        store
            .ours_cmd()
            .args(["storage", "verify", "--store", "default"]),
    );
    // Copied into bootc's store with its TOC.
    let sysroot = store.scratch("sysroot");
    let out = run(store
        .ours_cmd()
        .arg("--sysroot")
        .arg(&sysroot)
        .args(["pull-from-default-storage", name]));
    assert!(out.status.success(), "{}", describe(&out));
    let bootc = sysroot.join("ostree/bootc/storage/overlay-layers").join(id);
    assert_eq!(
        fs::read(bootc.join("=enN0ZC1jaHVua2VkLW1hbmlmZXN0")).expect("copied TOC"),
        toc
    );
    // Removed with the layer.
    run_ok(store.ours_cmd().args(["image", "rm", name]));
    assert!(!dir.exists(), "the layer's big data went with it");
    // A TOC that lies about a file's content: not kept (podman would hand that file out by the
    // digest the TOC gives).
    let mut oci3 = OciDir::create(&store.dir.join("oci3"));
    let tar = fixture::build_tar(&[fixture::Entry::file("etc/x", b"hello\n".to_vec())]);
    let (false_toc, _) = chunked_layer_with(
        &tar,
        false,
        json!([{"type": "reg", "name": "etc/x", "size": 6,
                "digest": fixture::sha256_digest(b"other\n")}]),
    );
    oci3.add_image(
        Some("v1"),
        &ImageSpec {
            layers: vec![false_toc],
            label: "false toc".into(),
        },
    );
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci3.source(Some("v1")),
        "--target",
        "localhost/falsetoc:1",
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        layers(&store).iter().all(|r| r.get("toc-digest").is_none()),
        "a TOC that lies about a file is not kept"
    );
    run_ok(
        store
            .ours_cmd()
            .args(["image", "rm", "localhost/falsetoc:1"]),
    );
    // A TOC whose annotation lies: ignored, the layer recorded as plain zstd.
    let mut oci2 = OciDir::create(&store.dir.join("oci2"));
    let (lying, _) = chunked_layer(&fixture::small_tar(152), true);
    oci2.add_image(
        Some("v1"),
        &ImageSpec {
            layers: vec![lying],
            label: "lying".into(),
        },
    );
    let out = run(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci2.source(Some("v1")),
        "--target",
        "localhost/lying:1",
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    let recs = layers(&store);
    assert!(
        recs.iter().all(|r| r.get("toc-digest").is_none()),
        "a lying TOC is not kept: {recs:?}"
    );
    store.podman_ok(&["image", "inspect", "localhost/lying:1"]);
}

/// A zstd:chunked layer the store holds, met again under another parent (an update whose base
/// changed): copied from the store's own layer with its TOC (the layout no longer has the blob),
/// as if it had been fetched.
#[test]
fn zstd_chunked_layer_copied_with_its_toc() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let (chunked, toc) = chunked_layer(&fixture::small_tar(160), false);
    for (tag, base) in [("a", 161), ("b", 162)] {
        oci.add_image(
            Some(tag),
            &ImageSpec {
                layers: vec![
                    LayerBlob::new(&fixture::small_tar(base), Compression::Gzip),
                    chunked.clone(),
                ],
                label: format!("rebased {tag}"),
            },
        );
        let out = run(store.ours_cmd().args([
            "copy-to-storage",
            "--source",
            &oci.source(Some(tag)),
            "--target",
            &format!("localhost/rebased:{tag}"),
        ]));
        assert!(out.status.success(), "{}", describe(&out));
        // The layout loses the chunked blob: the second image can only have it from the store.
        let digest = fixture::sha256_digest(&chunked.blob);
        let _ = fs::remove_file(oci.blob_path(&digest));
    }
    let recs = layers(&store);
    let with_toc: Vec<&Value> = recs
        .iter()
        .filter(|r| r.get("toc-digest").is_some())
        .collect();
    assert_eq!(
        with_toc.len(),
        2,
        "both copies of the layer keep the TOC: {recs:?}"
    );
    assert_ne!(with_toc[0]["id"], with_toc[1]["id"]);
    for r in with_toc {
        let dir = store
            .dir
            .join("root/overlay-layers")
            .join(r["id"].as_str().expect("id"));
        assert_eq!(
            fs::read(dir.join("=enN0ZC1jaHVua2VkLW1hbmlmZXN0")).expect("TOC"),
            toc
        );
    }
    store.podman_ok(&["image", "inspect", "localhost/rebased:b"]);
    run_ok(
        store
            .ours_cmd()
            .args(["storage", "verify", "--store", "default"]),
    );
}

/// `export --compression zstd:chunked`: the blob decodes (any zstd reader) to the layer's tar,
/// skopeo 1.9 copies it into a store with the image's ID, our import finds its TOC where the
/// annotations say (the digest checks), and a second export is byte for byte the same.
/// (podman5-check: podman 5 pulls it partially.)
#[test]
fn zstd_chunked_export() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let big = fixture::build_tar(&[
        fixture::Entry::dir("data"),
        fixture::Entry::file("data/random", noise(1 << 20, 3)),
        // A hole: a `zeros` chunk between data chunks.
        fixture::Entry::file(
            "data/sparse",
            [
                fixture::pseudo_random(5000, 4),
                vec![0u8; 8192],
                fixture::pseudo_random(5000, 5),
            ]
            .concat(),
        ),
        fixture::Entry::file("data/empty", Vec::new()),
        fixture::Entry::symlink("data/link", "random"),
    ]);
    let built = oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars(
            "to chunk",
            &[fixture::small_tar(170), big],
            Compression::Gzip,
        ),
    );
    let name = "localhost/tochunk:1";
    run_ok(store.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &oci.source(Some("v1")),
        "--target",
        name,
    ]));
    let export = |dir: &str| {
        let out = store.scratch(dir);
        run_ok(store.ours_cmd().args([
            "export",
            name,
            &format!("oci:{}:c", out.display()),
            "--compression",
            "zstd:chunked",
        ]));
        out
    };
    let (one, two) = (export("chunked-1"), export("chunked-2"));
    let index = |d: &std::path::Path| -> Value {
        serde_json::from_slice(&fs::read(d.join("index.json")).expect("index")).expect("JSON")
    };
    let digest = index(&one)["manifests"][0]["digest"].clone();
    assert_eq!(
        digest,
        index(&two)["manifests"][0]["digest"],
        "deterministic"
    );
    let blob = |d: &std::path::Path, digest: &str| {
        fs::read(d.join("blobs/sha256").join(fixture::digest_hex(digest))).expect("blob")
    };
    let manifest: Value =
        serde_json::from_slice(&blob(&one, digest.as_str().expect("digest"))).expect("manifest");
    for (l, diff_id) in manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .zip(&built.diff_ids)
    {
        assert!(
            l["annotations"]["io.github.containers.zstd-chunked.manifest-checksum"].is_string(),
            "{l}"
        );
        let bytes = blob(&one, l["digest"].as_str().expect("digest"));
        let tar = zstd::stream::decode_all(&bytes[..]).expect("zstd decodes it");
        assert_eq!(&fixture::sha256_digest(&tar), diff_id, "the layer's tar");
    }
    // The big files were cut into chunks (c/storage's rolling checksum), the hole a `zeros` one.
    let big = &manifest["layers"][1];
    let position = big["annotations"]["io.github.containers.zstd-chunked.manifest-position"]
        .as_str()
        .expect("position");
    let p: Vec<usize> = position
        .split(':')
        .map(|x| x.parse().expect("number"))
        .collect();
    let bytes = blob(&one, big["digest"].as_str().expect("digest"));
    let toc: Value =
        serde_json::from_slice(&zstd::stream::decode_all(&bytes[p[0]..p[0] + p[1]]).expect("TOC"))
            .expect("TOC JSON");
    let entries = toc["entries"].as_array().expect("entries");
    let chunks_of = |name: &str| {
        entries
            .iter()
            .filter(|e| e["name"] == name || e["name"] == format!("./{name}"))
            .count()
    };
    assert!(chunks_of("data/random") > 1, "cut into chunks: {toc}");
    assert!(
        entries.iter().any(|e| e["chunkType"] == "zeros"),
        "a zeros chunk: {toc}"
    );
    // Each chunk's frame decodes to bytes of its digest.
    for e in entries.iter().filter(|e| e["chunkDigest"].is_string()) {
        let off = e["offset"].as_u64().expect("offset") as usize;
        let size = e["chunkSize"].as_u64().expect("size") as usize;
        let mut dec = zstd::stream::read::Decoder::new(&bytes[off..]).expect("decoder");
        let mut data = vec![0u8; size];
        std::io::Read::read_exact(&mut dec, &mut data).expect("the chunk's frame");
        assert_eq!(
            fixture::sha256_digest(&data),
            e["chunkDigest"].as_str().expect("digest")
        );
    }
    // skopeo 1.9 reads it as zstd.
    let other = TestStore::new(Driver::Overlay);
    run_ok(std::process::Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("oci:{}:c", one.display()),
        &format!(
            "containers-storage:[overlay@{}+{}]{name}",
            other.dir.join("root").display(),
            other.dir.join("run").display()
        ),
    ]));
    assert_eq!(
        other.inspect(name)["Id"],
        Value::from(built.image_id()),
        "skopeo 1.9: the same image"
    );
    // Our import finds the TOCs the annotations place.
    let again = TestStore::new(Driver::Overlay);
    run_ok(again.ours_cmd().args([
        "copy-to-storage",
        "--source",
        &format!("oci:{}:c", one.display()),
        "--target",
        name,
    ]));
    assert!(
        layers(&again).iter().all(|r| r["toc-digest"].is_string()),
        "every layer's TOC found and checked"
    );
}
