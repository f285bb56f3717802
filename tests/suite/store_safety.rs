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
/// is stored as podman would normalize it.
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
        "containers-storage:x",
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
