//! Checks of the harness itself, with skopeo and podman only: the fixtures parse, two skopeo
//! imports of the same fixture compare equal under the interop rules (so a difference in the
//! interop tests is ours), and the broken layouts really are broken for skopeo too.

use std::collections::BTreeMap;
use std::io::Read as _;

use crate::fixture::{self, Breakage, Compression, OciDir, UNDEFINED_MTIME_PATHS, write_broken};
use crate::util::{Driver, TestStore, describe, diff_trees, walk_tree};

/// The rich tars parse with the `tar` crate and decode long names, link targets and xattrs.
#[test]
fn fixture_tars_parse() {
    let mut names = Vec::new();
    let mut xattrs = BTreeMap::new();
    for tar in fixture::rich_tars() {
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            if let Some(exts) = entry.pax_extensions().expect("pax") {
                for ext in exts {
                    let ext = ext.expect("pax record");
                    if let Some(k) = ext.key().expect("key").strip_prefix("SCHILY.xattr.") {
                        xattrs.insert((path.clone(), k.to_string()), ext.value_bytes().to_vec());
                    }
                }
            }
            if let Some(link) = entry.link_name().expect("link name") {
                names.push(link.to_string_lossy().into_owned());
            }
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("entry data");
            assert_eq!(
                data.len() as u64,
                entry.header().size().expect("size"),
                "{path}"
            );
            names.push(path);
        }
    }
    for want in [
        fixture::long_pax_name(),
        fixture::long_gnu_name(),
        fixture::long_link_target(),
        "./usr/share/données/café.txt".to_string(),
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.trim_start_matches("./") == want.trim_start_matches("./")),
            "{want} not found in {names:?}"
        );
    }
    assert_eq!(
        xattrs.get(&("etc/xattr-file".to_string(), "user.foo".to_string())),
        Some(&b"bar".to_vec())
    );
    // Deterministic: building again gives the same bytes.
    assert_eq!(fixture::rich_tars(), fixture::rich_tars());
    let a = fixture::rich_image(Compression::Zstd);
    let b = fixture::rich_image(Compression::Zstd);
    assert!(
        a.layers
            .iter()
            .zip(&b.layers)
            .all(|(x, y)| x.blob == y.blob)
    );
}

/// Two skopeo imports of the rich fixture (seconds apart) compare equal with the interop rules.
fn skopeo_vs_skopeo(driver: Driver) {
    let a = TestStore::new(driver);
    let b = TestStore::new(driver);
    let mut oci = OciDir::create(&a.scratch("oci"));
    oci.add_image(Some("v1"), &fixture::rich_image(Compression::Gzip));
    let name = "localhost/self:latest";
    a.skopeo_copy_in(&oci.source(Some("v1")), name);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    b.skopeo_copy_in(&oci.source(Some("v1")), name);
    let ta = walk_tree(&a.image_mount(name));
    let tb = walk_tree(&b.image_mount(name));
    a.image_umount(name);
    b.image_umount(name);
    let d = diff_trees(&ta, &tb, UNDEFINED_MTIME_PATHS);
    assert!(d.is_empty(), "skopeo vs skopeo:\n{}", d.join("\n"));
    // The fixture's interesting entries are really there.
    for p in [
        "dev/null",
        "dev/loop0",
        "dev/fifo",
        "bin/tool-hl2",
        "opq/new",
        "implied/sub/other",
    ] {
        assert!(ta.nodes.contains_key(p), "{p} missing from the skopeo tree");
    }
    for p in ["olddir", "etc/removeme", "opq/old1", "deep/sub/f"] {
        assert!(!ta.nodes.contains_key(p), "{p} should have been whited out");
    }
}

/// Harness check, overlay.
#[test]
fn harness_skopeo_vs_skopeo_overlay() {
    skopeo_vs_skopeo(Driver::Overlay);
}

/// Harness check, vfs.
#[test]
fn harness_skopeo_vs_skopeo_vfs() {
    skopeo_vs_skopeo(Driver::Vfs);
}

/// skopeo rejects every broken layout except the DiffID mismatch (which skopeo 1.9.3 accepts).
#[test]
fn broken_layouts_rejected_by_skopeo() {
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.scratch("oci"));
    let cases = [
        Breakage::BlobDigestMismatch,
        Breakage::TruncatedGzip,
        Breakage::TruncatedZstd,
        Breakage::TruncatedTar,
        Breakage::HardlinkOutside,
        Breakage::MissingBlob,
        Breakage::ManifestNotJson,
    ];
    for (i, how) in cases.into_iter().enumerate() {
        let tag = format!("b{i}");
        write_broken(&mut oci, &tag, how);
        let out = store.skopeo_copy_in_output(&oci.source(Some(&tag)), "localhost/b:latest");
        assert!(
            !out.status.success(),
            "skopeo accepted {how:?}\n{}",
            describe(&out)
        );
    }
}
