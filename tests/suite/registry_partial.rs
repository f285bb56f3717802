//! Partial pulls of zstd:chunked layers, natively (issue 26, item 3): an update whose layer
//! differs from the stored version in one file fetches the TOC, the tar-split and that file's
//! frames — a small part of the blob, counted in the registry's access log — and ends with the
//! layer a whole pull writes (DiffID, tree, tar-split), recorded as podman 5 records a partial
//! pull; without anything in the store, or with partial pulls off, the blob comes whole.

use std::fs;

use crate::fixture::{self, Compression, Entry, ImageSpec, OciDir};
use crate::registry::{Registry, ours};
use crate::util::{Driver, TestStore, describe, run};

/// Bytes the registry sent for GETs of blob `digest` (its access log, combined format).
fn blob_bytes_sent(reg: &Registry, digest: &str) -> u64 {
    let log = fs::read_to_string(reg.dir.join("log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
        .filter_map(|l| {
            // `"GET /v2/… HTTP/1.1" 206 12345 "…"`
            let after = l.split("HTTP/1.1\" ").nth(1)?;
            after.split(' ').nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// A tree of sixty small files, a 2 MiB file (many chunks) and a file that differs by
/// `version`.
fn tree(version: u64) -> Vec<u8> {
    let mut entries = vec![Entry::dir("usr"), Entry::dir("usr/lib"), Entry::dir("etc")];
    for i in 0..60u64 {
        entries.push(Entry::file(
            &format!("usr/lib/f{i:02}"),
            fixture::pseudo_random(40_000 + i as usize * 131, i),
        ));
    }
    entries.push(Entry::file(
        "usr/lib/big",
        fixture::pseudo_random(2 << 20, 77),
    ));
    entries.push(Entry::file("usr/lib/empty", Vec::new()));
    entries.push(Entry::hardlink("usr/lib/big-link", "usr/lib/big"));
    entries.push(Entry::file(
        "etc/changed",
        fixture::pseudo_random(100_000, 1000 + version),
    ));
    fixture::build_tar(&entries)
}

/// The layer records of `store`.
fn layers(store: &TestStore) -> Vec<serde_json::Value> {
    let text = fs::read(store.dir.join("root/overlay-layers/layers.json")).expect("layers.json");
    serde_json::from_slice(&text).expect("JSON")
}

/// `pull IMAGE` into `store` from `reg` natively, with `env`; the output.
fn pull(
    store: &TestStore,
    reg: &Registry,
    image: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = ours(store, reg);
    cmd.env("RUST_LOG", "bootc_image=info")
        .args(["pull", "--progress", "none", image]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// v1 and v2 of the test image in a store, pushed to `reg` as zstd:chunked (`p/app:1`, `:2`).
fn pushed_pair(reg: &Registry) -> TestStore {
    pushed_pair_of(reg, "app", tree)
}

/// v1 and v2 of the image of `tree` in a store (`localhost/p:1`, `:2`), pushed to `reg` as
/// zstd:chunked (`p/REPO:1`, `:2`).
fn pushed_pair_of(reg: &Registry, repo: &str, tree: fn(u64) -> Vec<u8>) -> TestStore {
    let src = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&src.dir.join("oci"));
    for v in [1u64, 2] {
        let tag = format!("v{v}");
        oci.add_image(
            Some(&tag),
            &ImageSpec::from_tars("partial", &[tree(v)], Compression::Gzip),
        );
        src.ours_copy_ok(&oci.source(Some(&tag)), Some(&format!("localhost/p:{v}")));
        let out = run(ours(&src, reg).args([
            "export",
            "--compression",
            "zstd:chunked",
            &format!("localhost/p:{v}"),
            &format!("docker://{}/p/{repo}:{v}", reg.host()),
        ]));
        assert!(out.status.success(), "push v{v}: {}", describe(&out));
    }
    src
}

/// Two versions of a one-layer image pushed as zstd:chunked by our export; pulled one after the
/// other into a fresh store, the second fetches its TOC, tar-split and the changed file only
/// (under 10 % of the blob), rebuilds the layer podman 4.3 reads and `storage verify` checks,
/// with the tree a whole pull gives; its record has the TOC and no compressed digest. With
/// partial pulls off, or into an empty store, the blob comes whole.
#[test]
fn registry_partial_pull_update() {
    let reg = Registry::start(false);
    let src = pushed_pair(&reg);
    let image = |v: u64| format!("{}/p/app:{v}", reg.host());
    let manifest = |v: u64| -> serde_json::Value {
        let raw = crate::util::run_ok(std::process::Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}", image(v)),
        ]));
        serde_json::from_str(&raw).expect("manifest")
    };
    let m2 = manifest(2);
    let blob = m2["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let size = m2["layers"][0]["size"].as_u64().expect("size");

    // v1 whole, then v2 partially.
    let mine = TestStore::new(Driver::Overlay);
    let out = pull(&mine, &reg, &image(1), &[]);
    assert!(out.status.success(), "pull v1: {}", describe(&out));
    let out = pull(&mine, &reg, &image(2), &[]);
    assert!(out.status.success(), "pull v2: {}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("pulling partially"), "{log}");
    let sent = blob_bytes_sent(&reg, &blob);
    assert!(
        sent * 10 <= size,
        "{sent} bytes of a {size}-byte blob fetched: more than 10 %"
    );
    assert!(sent > 50_000, "the changed file was fetched: {sent}");
    // Recorded as podman 5 records a partial pull.
    let rec = layers(&mine)
        .into_iter()
        .find(|l| l["diff-digest"] == src.inspect("localhost/p:2")["RootFS"]["Layers"][0])
        .expect("the v2 layer");
    assert!(rec["toc-digest"].is_string(), "{rec}");
    assert!(rec.get("compressed-diff-digest").is_none(), "{rec}");
    // The layer rebuilds to its DiffID, podman 4.3 reads it, the tree is the source's.
    let v = run(mine.ours_cmd().args(["storage", "verify"]));
    assert!(v.status.success(), "verify: {}", describe(&v));
    assert_eq!(
        mine.inspect(&image(2))["Id"],
        src.inspect("localhost/p:2")["Id"]
    );
    let a = crate::util::walk_tree(&src.image_mount("localhost/p:2"));
    let b = crate::util::walk_tree(&mine.image_mount(&image(2)));
    src.image_umount("localhost/p:2");
    mine.image_umount(&image(2));
    assert_eq!(
        crate::util::diff_trees(&a, &b, fixture::UNDEFINED_MTIME_PATHS),
        Vec::<String>::new(),
        "the tree of the partial pull"
    );

    // Partial pulls off: v2 comes whole.
    let whole = TestStore::new(Driver::Overlay);
    let out = pull(&whole, &reg, &image(1), &[]);
    assert!(out.status.success(), "pull v1: {}", describe(&out));
    let before = blob_bytes_sent(&reg, &blob);
    let out = pull(
        &whole,
        &reg,
        &image(2),
        &[("BOOTC_IMAGE_PARTIAL_PULLS", "false")],
    );
    assert!(out.status.success(), "pull v2 whole: {}", describe(&out));
    assert_eq!(blob_bytes_sent(&reg, &blob) - before, size, "whole");
    let rec = layers(&whole)
        .into_iter()
        .find(|l| l["compressed-diff-digest"] == blob.as_str())
        .expect("the v2 layer, whole");
    assert!(rec["toc-digest"].is_string(), "the TOC kept: {rec}");
}

/// What stands before the registry ignores ranges: the update comes whole, before anything is
/// written. Its ranged answers after the TOC's are damaged: a fetched file does not match its TOC
/// digest half-way through the layer, the layer is written again whole — and either way the image
/// is the source's, checked by `storage verify`.
#[test]
fn registry_partial_pull_fallbacks() {
    use crate::registry_faults::{Fault, FaultProxy};
    let reg = Registry::start(false);
    let src = pushed_pair(&reg);
    for (fault, said) in [
        (Fault::NoRanges, "pulled whole"),
        (Fault::FlipRanges, "pulling the whole layer"),
    ] {
        let p = FaultProxy::start(reg.port, fault.clone());
        let mine = TestStore::new(Driver::Overlay);
        for v in [1, 2] {
            let image = format!("127.0.0.1:{}/p/app:{v}", p.port);
            let out = run(ours(&mine, &reg).env("RUST_LOG", "bootc_image=info").args([
                "pull",
                "--tls-verify=false",
                "--progress",
                "none",
                &image,
            ]));
            assert!(out.status.success(), "{fault:?} v{v}: {}", describe(&out));
            if v == 2 {
                let log = String::from_utf8_lossy(&out.stderr);
                assert!(log.contains(said), "{fault:?}: {log}");
                assert_eq!(
                    mine.inspect(&image)["Id"],
                    src.inspect("localhost/p:2")["Id"],
                    "{fault:?}"
                );
            }
        }
        let v = run(mine.ours_cmd().args(["storage", "verify"]));
        assert!(v.status.success(), "{fault:?} verify: {}", describe(&v));
    }
}

/// Issue 26, item 4: a layer imported without a TOC (here v1 from a gzip OCI layout) gets one of
/// ours — c/storage's `zstd-chunked-manifest` big data naming each file's sha256, no
/// `toc-digest` — so the zstd:chunked v2 is pulled partially over it (under 10 % of the blob),
/// into the image a whole pull gives.
#[test]
fn registry_partial_pull_over_gzip_import() {
    let reg = Registry::start(false);
    let src = pushed_pair(&reg);
    let mine = TestStore::new(Driver::Overlay);
    mine.ours_copy_ok(
        &format!("oci:{}:v1", src.dir.join("oci").display()),
        Some("localhost/p:1"),
    );
    // v1's layer: our TOC, no `toc-digest`, the compressed digest of the gzip blob.
    let rec = layers(&mine).into_iter().next().expect("the v1 layer");
    assert!(rec.get("toc-digest").is_none(), "{rec}");
    assert!(rec["compressed-diff-digest"].is_string(), "{rec}");
    assert_eq!(
        rec["big-data-names"],
        serde_json::json!(["zstd-chunked-manifest", "zstd-chunked-layer-data"])
    );
    let id = rec["id"].as_str().expect("id");
    let big = mine.dir.join("root/overlay-layers").join(id);
    let toc: serde_json::Value = serde_json::from_slice(
        &fs::read(big.join(storage_format::big_data_file_name("zstd-chunked-manifest")))
            .expect("the TOC"),
    )
    .expect("TOC JSON");
    let entries = toc["entries"].as_array().expect("entries");
    let changed = entries
        .iter()
        .find(|e| e["name"] == "etc/changed")
        .expect("etc/changed in the TOC");
    assert_eq!(changed["type"], "reg");
    assert_eq!(changed["size"], 100_000);
    let want = format!(
        "sha256:{}",
        hex_sha256(&fixture::pseudo_random(100_000, 1001))
    );
    assert_eq!(changed["digest"], want.as_str());
    assert!(entries.iter().any(|e| e["type"] == "hardlink"), "{toc}");

    let m2 = crate::util::run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/p/app:2", reg.host()),
    ]));
    let m2: serde_json::Value = serde_json::from_str(&m2).expect("manifest");
    let blob = m2["layers"][0]["digest"].as_str().expect("digest");
    let size = m2["layers"][0]["size"].as_u64().expect("size");
    let image = format!("{}/p/app:2", reg.host());
    let out = pull(&mine, &reg, &image, &[]);
    assert!(out.status.success(), "pull v2: {}", describe(&out));
    let sent = blob_bytes_sent(&reg, blob);
    assert!(
        sent * 10 <= size,
        "{sent} bytes of a {size}-byte blob fetched over a gzip import"
    );
    assert_eq!(
        mine.inspect(&image)["Id"],
        src.inspect("localhost/p:2")["Id"]
    );
    let v = run(mine.ours_cmd().args(["storage", "verify"]));
    assert!(v.status.success(), "verify: {}", describe(&v));
}

/// `sha256` of `b`, in hex.
fn hex_sha256(b: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(b))
}

/// The tree of [`tree`]`(1)`'s kind: a small file and a 2 MiB one, 100 bytes in the middle of
/// the big one changed in v2.
fn tree_big_changed(version: u64) -> Vec<u8> {
    let mut big = fixture::pseudo_random(2 << 20, 77);
    if version == 2 {
        for b in &mut big[1_000_000..1_000_100] {
            *b ^= 0xff;
        }
    }
    fixture::build_tar(&[
        Entry::dir("usr"),
        Entry::dir("usr/lib"),
        Entry::file("usr/lib/small", fixture::pseudo_random(10_000, 5)),
        Entry::file("usr/lib/big", big),
    ])
}

/// A file changed in part: its chunks the store holds (from v1's zstd:chunked TOC) are read from
/// there, only the changed chunk's frames are fetched (c/storage's chunk reuse); the file is
/// checked whole against its digest, the image is the source's.
#[test]
fn registry_partial_pull_reuses_chunks() {
    let reg = Registry::start(false);
    let src = pushed_pair_of(&reg, "chunks", tree_big_changed);
    let image = |v: u64| format!("{}/p/chunks:{v}", reg.host());
    let mine = TestStore::new(Driver::Overlay);
    let out = pull(&mine, &reg, &image(1), &[]);
    assert!(out.status.success(), "pull v1: {}", describe(&out));
    let m2 = crate::util::run_ok(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}", image(2)),
    ]));
    let m2: serde_json::Value = serde_json::from_str(&m2).expect("manifest");
    let blob = m2["layers"][0]["digest"].as_str().expect("digest");
    let out = pull(&mine, &reg, &image(2), &[]);
    assert!(out.status.success(), "pull v2: {}", describe(&out));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("pulling partially"), "{log}");
    assert!(!log.contains("chunks_from_store=0 "), "{log}");
    // 100 changed bytes: one or two chunks (64 KiB on average) and the TOC and tar-split.
    let sent = blob_bytes_sent(&reg, blob);
    assert!(
        sent < 256 * 1024,
        "{sent} bytes fetched for 100 changed bytes of a 2 MiB file: more than its changed chunks"
    );
    assert_eq!(
        mine.inspect(&image(2))["Id"],
        src.inspect("localhost/p:2")["Id"]
    );
    let v = run(mine.ours_cmd().args(["storage", "verify"]));
    assert!(v.status.success(), "verify: {}", describe(&v));
}
