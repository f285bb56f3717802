//! The store's write paths without podman and without root: an image made here (tar layers in
//! memory, owned by the running user) imported into a throw-away store, then its records and trees
//! checked — the transaction (commit, rollback), recovery at open, the delete order, and the tree
//! writer's whiteouts, hardlinks and replacements.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use storage_format::Digest;

use super::{DriverKind, Store, StoreConfig};
use crate::error::Result;
use crate::layer::BlobSource;
use crate::source::OpenedSource;
use crate::source::image_documents::{assemble, parse_manifest};

/// Blobs held in memory.
struct MemBlobs(HashMap<Digest, Vec<u8>>);

impl BlobSource for MemBlobs {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let b = self.0.get(digest).cloned().unwrap_or_default();
        Ok(Box::new(std::io::Cursor::new(b)))
    }
}

/// One tar entry of a test layer.
enum E {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Link(&'static str, &'static str),
    Hard(&'static str, &'static str),
}

/// A tar of `entries`, owned by the running user.
fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let (uid, gid) = (
        rustix::process::getuid().as_raw() as u64,
        rustix::process::getgid().as_raw() as u64,
    );
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                (p, b"")
            }
            E::File(p, d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (p, d)
            }
            E::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_link_name(t).unwrap();
                (p, b"")
            }
            E::Hard(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_link_name(t).unwrap();
                (p, b"")
            }
        };
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An image of uncompressed `layers`, named `name`, opened as a source; `corrupt` flips a byte of
/// that layer's blob (its digest then lies).
fn image(name: &str, layers: &[Vec<u8>], corrupt: Option<usize>) -> OpenedSource {
    let mut blobs = HashMap::new();
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, t) in layers.iter().enumerate() {
        let d = Digest::of_bytes(t);
        let mut bytes = t.clone();
        if corrupt == Some(i) {
            let last = bytes.len() / 2;
            bytes[last] ^= 0xff;
        }
        blobs.insert(d.clone(), bytes);
        descs.push((
            "application/vnd.oci.image.layer.v1.tar",
            d.clone(),
            t.len() as u64,
            None,
        ));
        diff_ids.push(d.to_string());
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_digest = Digest::of_bytes(&config);
    let manifest =
        crate::source::oci_types::manifest_bytes(&config_digest, config.len(), &descs, None);
    let manifest_digest = Digest::of_bytes(&manifest);
    let parsed = parse_manifest(&manifest, &manifest_digest, "test").unwrap();
    let mut input = assemble(
        manifest,
        manifest_digest,
        &parsed,
        config,
        config_digest,
        "test",
    )
    .unwrap();
    input.names = vec![crate::reference::normalize(name).unwrap()];
    OpenedSource {
        image: input,
        blobs: Box::new(MemBlobs(blobs)),
        retry: crate::retry::RetryPolicy::none(),
    }
}

/// A store in a new temporary directory.
fn store(driver: DriverKind) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        graphroot: dir.path().join("root"),
        runroot: dir.path().join("run"),
        driver,
        sync_filesystem: false,
    };
    let s = Store::open(config).unwrap();
    (dir, s)
}

/// Every path below `root` with its kind and size (what a failed write must leave unchanged).
fn listing(root: &Path) -> Vec<(PathBuf, bool, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.push((e.path(), m.is_dir(), if m.is_dir() { 0 } else { m.len() }));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

fn base_layer() -> Vec<u8> {
    tar_of(&[
        E::Dir("etc/"),
        E::File("etc/hello", b"hello\n"),
        E::File("etc/gone", b"removed above\n"),
        E::Hard("etc/hello-again", "etc/hello"),
        E::Link("etc/link", "hello"),
        E::Dir("opt/"),
        E::File("opt/replaced", b"a file first\n"),
    ])
}

fn upper_layer() -> Vec<u8> {
    tar_of(&[
        E::Dir("etc/"),
        E::File("etc/.wh.gone", b""),
        E::File("etc/new", b"new\n"),
        E::Dir("opt/"),
        E::Dir("opt/replaced/"),
    ])
}

#[test]
fn import_writes_records_and_trees() {
    for driver in [DriverKind::Overlay, DriverKind::Vfs] {
        let (_dir, s) = store(driver);
        let src = image("localhost/unit:1", &[base_layer(), upper_layer()], None);
        let report = src.import_into(&s, &|_| {}).unwrap();
        assert_eq!(report.layers_written, 2);
        let layers = s.layers().unwrap();
        assert_eq!(layers.len(), 2);
        assert!(
            layers
                .iter()
                .all(|l| !l.is_incomplete() && l.diff_digest.is_some())
        );
        let images = s.images().unwrap();
        assert_eq!(images[0].names, vec!["localhost/unit:1".to_string()]);
        assert_eq!(images[0].id, report.image_id);
        // The base tree: content, the hardlink sharing the inode, the symlink.
        let base = layers.iter().find(|l| l.parent.is_none()).unwrap();
        let t = s.driver().tree_path(&base.id);
        assert_eq!(std::fs::read(t.join("etc/hello")).unwrap(), b"hello\n");
        let (a, b) = (
            t.join("etc/hello").metadata().unwrap(),
            t.join("etc/hello-again").metadata().unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "{driver:?}: hardlink");
        assert_eq!(
            std::fs::read_link(t.join("etc/link")).unwrap(),
            Path::new("hello")
        );
        // The upper tree: the whiteout as the driver wants it, the file replaced by a directory.
        let upper = layers.iter().find(|l| l.parent.is_some()).unwrap();
        let u = s.driver().tree_path(&upper.id);
        let gone = u.join("etc/gone").symlink_metadata();
        match driver {
            DriverKind::Overlay => {
                let m = gone.unwrap();
                assert_eq!(m.rdev(), 0, "overlay whiteout is a 0:0 device");
                assert!(std::os::unix::fs::FileTypeExt::is_char_device(
                    &m.file_type()
                ));
            }
            DriverKind::Vfs => assert!(gone.is_err(), "vfs deletes the whited-out file"),
        }
        assert!(
            u.join("opt/replaced").is_dir(),
            "{driver:?}: replaced by a directory"
        );
        // Every layer rebuilds to its DiffID.
        for l in &layers {
            s.verify_layer(l).unwrap();
        }
    }
}

#[test]
fn failed_import_rolls_back() {
    let (dir, s) = store(DriverKind::Overlay);
    s.images().unwrap();
    let before = listing(&dir.path().join("root"));
    // The second layer's blob does not match its digest: nothing may remain.
    let src = image("localhost/unit:1", &[base_layer(), upper_layer()], Some(1));
    let err = src.import_into(&s, &|_| {}).unwrap_err();
    assert!(
        matches!(
            err,
            crate::Error::Layer { .. } | crate::Error::DigestMismatch { .. }
        ),
        "{err}"
    );
    // The records are rewritten and the locks get a new last-writer token; everything else is as
    // it was.
    let after: Vec<_> = listing(&dir.path().join("root"))
        .into_iter()
        .filter(|(p, _, _)| !p.ends_with("layers.json") && !p.ends_with("images.json"))
        .map(|(p, d, n)| {
            (
                p.clone(),
                d,
                if p.extension().is_some_and(|e| e == "lock") {
                    0
                } else {
                    n
                },
            )
        })
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|(p, _, _)| !p.ends_with("layers.json") && !p.ends_with("images.json"))
        .collect();
    assert_eq!(before, after);
    assert!(s.layers().unwrap().is_empty());
    assert!(s.images().unwrap().is_empty());
}

#[test]
fn open_removes_an_incomplete_layer() {
    let (dir, s) = store(DriverKind::Overlay);
    image("localhost/unit:1", &[base_layer()], None)
        .import_into(&s, &|_| {})
        .unwrap();
    let config = s.config().clone();
    let id = s.layers().unwrap()[0].id.clone();
    drop(s);
    // What a killed write leaves: the layer flagged incomplete (and no image naming it).
    let layers_json = dir.path().join("root/overlay-layers/layers.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&layers_json).unwrap()).unwrap();
    v[0]["flags"] = serde_json::json!({"incomplete": true});
    std::fs::write(&layers_json, serde_json::to_vec(&v).unwrap()).unwrap();
    std::fs::write(dir.path().join("root/overlay-images/images.json"), b"[]").unwrap();
    let s = Store::open(config).unwrap();
    assert!(s.layers().unwrap().is_empty());
    assert!(!s.driver().tree_path(&id).exists());
    assert!(!s.tar_split_path(&id).exists());
}

#[test]
fn delete_removes_image_then_layers() {
    let (dir, s) = store(DriverKind::Vfs);
    let a = image("localhost/a:1", &[base_layer()], None)
        .import_into(&s, &|_| {})
        .unwrap();
    let b = image("localhost/b:1", &[base_layer(), upper_layer()], None)
        .import_into(&s, &|_| {})
        .unwrap();
    assert_eq!(b.layers_reused, 1, "the shared base layer is written once");
    // Removing b keeps the base layer a still uses.
    let r = s.delete_images(std::slice::from_ref(&b.image_id)).unwrap();
    assert_eq!(r.images, vec![b.image_id.clone()]);
    assert_eq!(r.layers.len(), 1);
    assert_eq!(s.layers().unwrap().len(), 1);
    assert!(
        !dir.path()
            .join("root/vfs-images")
            .join(&b.image_id)
            .exists()
    );
    // Removing a removes the rest; no journal remains.
    let r = s.delete_images(std::slice::from_ref(&a.image_id)).unwrap();
    assert_eq!(r.layers.len(), 1);
    assert!(s.layers().unwrap().is_empty());
    assert!(s.images().unwrap().is_empty());
    assert!(!s.layers_dir().join(super::delete::JOURNAL).exists());
    assert!(s.check().unwrap().problems.is_empty());
}
