//! Failures: bad sources must fail cleanly (non-zero exit, one `error: ` line on stderr) and leave
//! the store exactly as it was; hostile layers must never write outside the layer.

use std::fs;
use std::path::Path;

use crate::fixture::{self, Breakage, Compression, ImageSpec, OciDir, write_broken};
use crate::util::{
    Driver, TestStore, assert_clean_failure, describe, diff_trees, unique_tmp_path, walk_tree,
};

/// The image every error test puts into the store first (with skopeo).
pub(crate) const SEED: &str = "localhost/seed:latest";

/// A store that already holds [`SEED`] and has been used by podman.
fn seeded_store(driver: Driver) -> TestStore {
    let store = TestStore::new(driver);
    seed(&store);
    store
}

/// Puts [`SEED`] into `store` with skopeo and checks podman lists it.
pub(crate) fn seed(store: &TestStore) {
    let mut oci = OciDir::create(&store.scratch("seed"));
    let spec = ImageSpec::from_tars("seed", &[fixture::small_tar(1)], Compression::Gzip);
    oci.add_image(Some("seed"), &spec);
    store.skopeo_copy_in(&oci.source(Some("seed")), SEED);
    assert_seed_listed(store);
}

/// `podman images` works and lists the seed image.
pub(crate) fn assert_seed_listed(store: &TestStore) {
    let names = store.image_names();
    assert!(
        names.iter().any(|n| n == SEED),
        "podman images should list {SEED}: {names:?}"
    );
}

/// Runs our copy of `src` on a seeded store and checks the failure contract and that the store
/// did not change.
pub(crate) fn expect_failure_on(driver: Driver, what: &str, src: impl FnOnce(&Path) -> String) {
    let store = seeded_store(driver);
    let src = src(&store.dir);
    let before = store.snapshot();
    let out = store.ours_copy(&src, Some("localhost/broken:latest"));
    let after = store.snapshot();
    assert_clean_failure(&out, what, &[]);
    let d = before.diff(&after);
    assert!(d.is_empty(), "{what}: the store changed:\n{}", d.join("\n"));
    assert_seed_listed(&store);
}

/// A failing copy of a two-layer image broken as `how`.
fn broken(driver: Driver, how: Breakage) {
    expect_failure_on(driver, &format!("{how:?}"), |dir| {
        let mut oci = OciDir::create(&dir.join("broken"));
        write_broken(&mut oci, "b", how);
        oci.source(Some("b"))
    });
}

/// A layer blob whose content does not match its digest.
#[test]
fn error_blob_digest_mismatch() {
    broken(Driver::Overlay, Breakage::BlobDigestMismatch);
}

/// A gzip layer cut in half.
#[test]
fn error_truncated_gzip() {
    broken(Driver::Overlay, Breakage::TruncatedGzip);
}

/// A gzip layer cut in half, vfs (where layer 2 starts as a copy of layer 1).
#[test]
fn error_truncated_gzip_vfs() {
    broken(Driver::Vfs, Breakage::TruncatedGzip);
}

/// A gzip layer whose trailer's CRC-32 is wrong (the blob's digest and the DiffID are right):
/// c/storage refuses it, so do we.
#[test]
fn error_gzip_bad_crc() {
    broken(Driver::Overlay, Breakage::GzipBadCrc);
}

/// A zstd layer cut in half.
#[test]
fn error_truncated_zstd() {
    broken(Driver::Overlay, Breakage::TruncatedZstd);
}

/// An uncompressed tar cut inside a file's data.
#[test]
fn error_truncated_tar() {
    broken(Driver::Overlay, Breakage::TruncatedTar);
}

/// A hard link to `../../etc/passwd`.
#[test]
fn error_hardlink_outside_layer() {
    broken(Driver::Overlay, Breakage::HardlinkOutside);
}

/// A hard link to `../../etc/passwd`, vfs.
#[test]
fn error_hardlink_outside_layer_vfs() {
    broken(Driver::Vfs, Breakage::HardlinkOutside);
}

/// Config DiffIDs that do not match the layers (skopeo 1.9.3 accepts these; we must not).
#[test]
fn error_diff_id_mismatch() {
    broken(Driver::Overlay, Breakage::DiffIdMismatch);
}

/// A layer blob missing from the layout.
#[test]
fn error_missing_blob() {
    broken(Driver::Overlay, Breakage::MissingBlob);
}

/// A manifest blob that is not JSON.
#[test]
fn error_manifest_not_json() {
    broken(Driver::Overlay, Breakage::ManifestNotJson);
}

/// An unknown transport.
#[test]
fn error_unknown_transport() {
    expect_failure_on(Driver::Overlay, "unknown transport", |_| {
        "foo:bar".to_string()
    });
}

/// A tag that the layout does not have.
#[test]
fn error_nonexistent_tag() {
    expect_failure_on(Driver::Overlay, "nonexistent tag", |dir| {
        let mut oci = OciDir::create(&dir.join("oci"));
        let spec = ImageSpec::from_tars("tag", &[fixture::small_tar(2)], Compression::Gzip);
        oci.add_image(Some("exists"), &spec);
        oci.source(Some("nosuchtag"))
    });
}

/// No tag given, but the layout holds two images.
#[test]
fn error_ambiguous_without_tag() {
    expect_failure_on(Driver::Overlay, "two images, no tag", |dir| {
        let mut oci = OciDir::create(&dir.join("oci"));
        for n in [3, 4] {
            let spec = ImageSpec::from_tars("amb", &[fixture::small_tar(n)], Compression::Gzip);
            oci.add_image(Some(&format!("t{n}")), &spec);
        }
        oci.source(None)
    });
}

/// A layout directory that does not exist.
#[test]
fn error_missing_layout() {
    expect_failure_on(Driver::Overlay, "missing layout", |dir| {
        format!("oci:{}:latest", dir.join("does-not-exist").display())
    });
}

/// An `oci-archive:` file that is not a tar.
#[test]
fn error_archive_not_tar() {
    expect_failure_on(Driver::Overlay, "archive not a tar", |dir| {
        let f = dir.join("garbage.tar");
        fs::write(&f, b"this is not a tar archive").expect("write garbage");
        format!("oci-archive:{}", f.display())
    });
}

/// `../` names and a symlink pointing out of the layer followed by `evil/pwned`: nothing may be
/// written to the host directory the layer aims at. skopeo keeps both inside the layer
/// (`tmp/bt-esc-…/{dotdot,pwned}`); if our copy succeeds its tree must match skopeo's.
fn escape(driver: Driver) {
    let host = unique_tmp_path("esc");
    fs::create_dir(&host).expect("create host target dir");
    let reference = TestStore::new(driver);
    let ours = TestStore::new(driver);
    let mut oci = OciDir::create(&reference.scratch("oci"));
    let spec = ImageSpec::from_tars("escape", &[fixture::escape_tar(&host)], Compression::Gzip);
    oci.add_image(Some("esc"), &spec);
    let name = "localhost/escape:latest";
    let skopeo_out = reference.skopeo_copy_in_output(&oci.source(Some("esc")), name);
    let out = ours.ours_copy(&oci.source(Some("esc")), Some(name));
    let written: Vec<String> = fs::read_dir(&host)
        .expect("read host dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let _ = fs::remove_dir_all(&host);
    assert!(
        written.is_empty(),
        "a layer wrote outside its root into {}: {written:?}\nour copy: {}\nskopeo: {}",
        host.display(),
        describe(&out),
        describe(&skopeo_out)
    );
    if out.status.success() {
        assert!(
            skopeo_out.status.success(),
            "skopeo failed:\n{}",
            describe(&skopeo_out)
        );
        let ta = walk_tree(&reference.image_mount(name));
        let tb = walk_tree(&ours.image_mount(name));
        reference.image_umount(name);
        ours.image_umount(name);
        let inner = host
            .strip_prefix("/")
            .expect("absolute")
            .to_string_lossy()
            .into_owned();
        assert!(
            tb.nodes.contains_key(&format!("{inner}/pwned")),
            "evil/pwned should land inside the layer at {inner}/pwned: {:?}",
            tb.nodes.keys().collect::<Vec<_>>()
        );
        let skip = ["", "tmp", inner.as_str()];
        let d = diff_trees(&ta, &tb, &skip);
        assert!(
            d.is_empty(),
            "escape layer: trees differ (skopeo vs ours):\n{}",
            d.join("\n")
        );
    } else {
        assert_clean_failure(&out, "escape layer", &[]);
    }
}

/// Escape attempts, overlay.
#[test]
fn escape_stays_inside_layer_overlay() {
    escape(Driver::Overlay);
}

/// Escape attempts, vfs.
#[test]
fn escape_stays_inside_layer_vfs() {
    escape(Driver::Vfs);
}
