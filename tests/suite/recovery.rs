//! Recovery after an interrupted write: whatever state a killed copy leaves (an `incomplete` layer
//! record, a half-written tree, a temporary tar-split), the next opener — podman or us — cleans it
//! up, and no image ever points at a missing layer.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::fixture::{self, Compression, Entry, ImageSpec, OciDir};
use crate::util::{Driver, TestStore, describe};

/// A layer large enough that a copy is still writing it a moment after it starts.
fn big_tar(seed: u32) -> Vec<u8> {
    let mut entries = vec![Entry::dir("big/")];
    let mut x: u64 = u64::from(seed) * 2_654_435_761 + 1;
    for i in 0..400 {
        let mut data = Vec::with_capacity(64 * 1024);
        for _ in 0..(64 * 1024 / 8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        entries.push(Entry::file(&format!("big/f{i:04}"), data));
    }
    fixture::build_tar(&entries)
}

/// Asserts the store is consistent: no incomplete layer, every image's layer chain exists, every
/// overlay layer directory has a record, and (with `no_temp`) none of our temporary files is left
/// (podman does not know them; our next open removes them).
fn assert_consistent(store: &TestStore, no_temp: bool) {
    let layers = store.layer_records();
    let ids: Vec<&str> = layers.iter().filter_map(|l| l["id"].as_str()).collect();
    for l in &layers {
        assert!(
            l["flags"]["incomplete"].as_bool() != Some(true),
            "incomplete layer left: {l}"
        );
    }
    for img in store.image_records() {
        let mut next = img["layer"].as_str().map(str::to_owned);
        while let Some(id) = next {
            let rec = layers
                .iter()
                .find(|l| l["id"].as_str() == Some(id.as_str()));
            let rec =
                rec.unwrap_or_else(|| panic!("image {} points at missing layer {id}", img["id"]));
            next = rec["parent"].as_str().map(str::to_owned);
        }
    }
    let overlay = store.root.join("overlay");
    if let Ok(rd) = fs::read_dir(&overlay) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "l" || name.starts_with('.') {
                continue;
            }
            assert!(
                ids.contains(&name.as_str()),
                "overlay/{name} has no layer record"
            );
        }
    }
    let leftovers: Vec<String> = fs::read_dir(store.layers_dir())
        .expect("layers dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(
        !no_temp || leftovers.is_empty(),
        "temporary files left: {leftovers:?}"
    );
}

/// A crash left an incomplete layer (record, tree, temporary tar-split): our next copy removes it
/// before writing, as c/storage does, and podman lists the store.
#[test]
fn incomplete_layer_is_removed_on_next_open() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    oci.add_image(
        Some("a"),
        &ImageSpec::from_tars("a", &[fixture::small_tar(61)], Compression::Gzip),
    );
    oci.add_image(
        Some("b"),
        &ImageSpec::from_tars("b", &[fixture::small_tar(62)], Compression::Gzip),
    );
    store.ours_copy_ok(&oci.source(Some("a")), Some("localhost/a"));

    // Fake what a process killed mid-layer leaves behind.
    let id = "f".repeat(64);
    let layers_json = store.layers_dir().join("layers.json");
    let mut layers: Vec<Value> =
        serde_json::from_slice(&fs::read(&layers_json).expect("read")).expect("json");
    layers.push(serde_json::json!({"id": id, "created": "2026-01-01T00:00:00Z", "flags": {"incomplete": true}}));
    fs::write(&layers_json, serde_json::to_vec(&layers).expect("json")).expect("write");
    let dir = store.root.join("overlay").join(&id);
    fs::create_dir_all(dir.join("diff/half")).expect("mkdir");
    fs::write(dir.join("diff/half/written"), b"partial").expect("write");
    fs::write(dir.join("link"), b"ZZZZZZZZZZZZZZZZZZZZZZZZZZ").expect("write");
    std::os::unix::fs::symlink(
        format!("../{id}/diff"),
        store.root.join("overlay/l/ZZZZZZZZZZZZZZZZZZZZZZZZZZ"),
    )
    .expect("symlink");
    fs::write(
        store.layers_dir().join(format!(".tmp-{id}.tar-split.gz")),
        b"partial",
    )
    .expect("write");

    store.ours_copy_ok(&oci.source(Some("b")), Some("localhost/b"));
    assert!(!dir.exists(), "the incomplete layer's tree is still there");
    assert!(
        !store
            .root
            .join("overlay/l/ZZZZZZZZZZZZZZZZZZZZZZZZZZ")
            .exists(),
        "its l/ link is still there"
    );
    assert_consistent(&store, true);
    let names: Vec<String> = store
        .images()
        .iter()
        .flat_map(|i| i["Names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    assert!(
        names.contains(&"localhost/a:latest".to_string())
            && names.contains(&"localhost/b:latest".to_string()),
        "{names:?}"
    );
}

/// Our copy killed (SIGKILL) while it writes layers: podman then reads the store without errors
/// (deleting what was incomplete), and a second copy completes the image.
#[test]
fn killed_mid_write_is_recovered() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let tars: Vec<Vec<u8>> = (0..3).map(big_tar).collect();
    let built = oci.add_image(
        Some("t"),
        &ImageSpec::from_tars("big", &tars, Compression::Gzip),
    );
    for delay in [150u64, 400] {
        let mut child = store
            .ours_cmd()
            .args([
                "copy-to-storage",
                "--source",
                &oci.source(Some("t")),
                "--target",
                "localhost/big",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start bootc-image");
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        // Whatever state it reached, podman must read the store (it removes incomplete layers).
        store.podman_ok(&["images"]);
        assert_consistent(&store, false);
        let out = store.ours_copy(&oci.source(Some("t")), Some("localhost/big"));
        assert!(
            out.status.success(),
            "second copy failed: {}",
            describe(&out)
        );
        assert_consistent(&store, true);
        let inspect = store.inspect("localhost/big");
        assert_eq!(
            inspect["Digest"].as_str(),
            Some(built.manifest_digest.as_str())
        );
        store.podman_ok(&["rmi", "localhost/big"]);
    }
}
