//! Tar parity with Go's `archive/tar`, the parser c/storage and skopeo use: a corpus of
//! adversarial layer tars goes through skopeo (c/storage) into one store and through us into
//! another. Both must refuse, or both accept with the same mounted tree; every layer we accept must
//! be exported again by skopeo with its DiffID; no overlayfs control xattr reaches our tree.

use crate::fixture::{self, Compression, ImageSpec, OciDir, pax_record, push_gnu_long, set_field};
use crate::util::{Driver, TestStore, describe, diff_trees, walk_tree};

/// Raw tar blocks, written by hand so that every header form can be produced.
#[derive(Default)]
struct RawTar(Vec<u8>);

impl RawTar {
    /// A ustar header block of type `ty` for `name` whose size field says `size`, then `data`
    /// padded to a block; `edit` may change the header before its checksum is set.
    fn header(
        &mut self,
        name: &[u8],
        ty: tar::EntryType,
        data: &[u8],
        edit: impl FnOnce(&mut tar::Header),
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        set_field(&mut h.as_old_mut().name, name);
        h.set_mode(if ty == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(fixture::EPOCH);
        h.set_entry_type(ty);
        h.set_size(data.len() as u64);
        h.set_device_major(0).expect("major");
        h.set_device_minor(0).expect("minor");
        edit(&mut h);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let rem = data.len() % 512;
        if rem != 0 {
            self.0.resize(self.0.len() + 512 - rem, 0);
        }
        self
    }

    /// A regular file.
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.header(name.as_bytes(), tar::EntryType::Regular, data, |_| {})
    }

    /// A PAX extended (`x`) or global (`g`) header with these records.
    fn pax(&mut self, ty: tar::EntryType, records: &[(&str, &[u8])]) -> &mut Self {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.header(b"PaxHeaders/x", ty, &data, |_| {})
    }

    /// An `x` header.
    fn x(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.pax(tar::EntryType::XHeader, records)
    }

    /// The end-of-archive blocks.
    fn end(&mut self) -> Vec<u8> {
        self.0.resize(self.0.len() + 1024, 0);
        std::mem::take(&mut self.0)
    }
}

/// Sets the mtime field to GNU base-256 `bytes` (12 bytes, top bit marking the form).
fn base256_mtime(bytes: [u8; 12]) -> impl FnOnce(&mut tar::Header) {
    move |h| h.as_old_mut().mtime = bytes
}

/// The one input where we deliberately differ: skopeo (as root) writes `trusted.overlay.metacopy`
/// into the layer, and the mounted file then fails to `lstat` (EIO). We drop overlayfs' control
/// xattrs, so our tree is compared with nothing but must be readable and exported exactly.
const OVERLAY_XATTRS: &str = "overlayfs control xattrs";

/// The corpus: (name, layer tar). One `base` entry file in each keeps the layer non-empty.
pub(crate) fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    let mut c = Vec::new();
    let mut t = RawTar::default();
    c.push((
        "two x headers: the second replaces the first",
        t.x(&[("path", b"first"), ("uid", b"7")])
            .x(&[("path", b"second")])
            .file("ustar-name", b"data\n")
            .end(),
    ));
    c.push((
        "a repeated key in one x header: the last wins",
        t.x(&[("path", b"a"), ("path", b"b")])
            .file("ustar-name", b"data\n")
            .end(),
    ));
    c.push((
        "empty PAX path, uid and size keep the ustar values",
        t.x(&[("path", b""), ("uid", b""), ("size", b"")])
            .header(b"ustar-name", tar::EntryType::Regular, b"hello\n", |h| {
                h.set_uid(42);
            })
            .end(),
    ));
    c.push((
        "a global header with path= names no entry",
        t.pax(tar::EntryType::XGlobalHeader, &[("path", b"global-evil")])
            .file("real", b"real\n")
            .end(),
    ));
    c.push((
        "an x header before a global header is lost",
        t.x(&[("path", b"lost")])
            .pax(tar::EntryType::XGlobalHeader, &[("comment", b"g")])
            .file("kept", b"kept\n")
            .end(),
    ));
    c.push((
        "empty and non-empty user xattrs",
        t.x(&[
            ("SCHILY.xattr.user.empty", b""),
            ("SCHILY.xattr.user.full", b"v"),
        ])
        .file("x", b"x\n")
        .end(),
    ));
    c.push((
        OVERLAY_XATTRS,
        t.x(&[
            ("SCHILY.xattr.trusted.overlay.metacopy", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("SCHILY.xattr.user.overlay.opaque", b"y"),
            ("SCHILY.xattr.user.kept", b"1"),
        ])
        .file("m", b"m\n")
        .end(),
    ));
    c.push(("a GNU long name overrides a PAX path", {
        t.x(&[("path", b"pax-name")]);
        push_gnu_long(&mut t.0, tar::EntryType::GNULongName, b"gnu-name");
        t.file("short", b"s\n").end()
    }));
    c.push(("a GNU long name ends at its first NUL", {
        push_gnu_long(&mut t.0, tar::EntryType::GNULongName, b"abc\0def");
        t.file("short", b"s\n").end()
    }));
    // 0x10 << 40 seconds: far past 2262, well within an int64.
    let mut far = [0u8; 12];
    far[0] = 0x80;
    far[6] = 0x10;
    c.push((
        "a base-256 mtime past 2262 (c/storage sets the epoch)",
        t.header(b"far", tar::EntryType::Regular, b"f\n", base256_mtime(far))
            .end(),
    ));
    let mut huge = [0xffu8; 12];
    huge[0] = 0x80 | 0x3f;
    c.push((
        "a base-256 mtime beyond int64",
        t.header(
            b"huge",
            tar::EntryType::Regular,
            b"h\n",
            base256_mtime(huge),
        )
        .end(),
    ));
    c.push((
        "a PAX path with a NUL",
        t.x(&[("path", b"a\0b")]).file("nul", b"n\n").end(),
    ));
    c.push((
        "a negative PAX size",
        t.x(&[("size", b"-5")]).file("neg", b"").end(),
    ));
    c.push((
        "a whiteout, then a hardlink to the whited-out name",
        t.file("victim", b"v\n")
            .file(".wh.victim", b"")
            .header(b"link", tar::EntryType::Link, b"", |h| {
                set_field(&mut h.as_old_mut().linkname, b"victim");
            })
            .end(),
    ));
    // The tree writer's file thread still holds `big` (written in pieces) and `small` when the
    // hardlink re-owns `big`'s inode, a second `small` replaces the first and a whiteout removes
    // `gone`: each must wait for it, as a single writer would have.
    let big: Vec<u8> = (0..700 * 1024u32).map(|i| (i % 251) as u8).collect();
    c.push((
        "a hardlink, a replacement and a whiteout of files still being written",
        t.file("big", &big)
            .file("small", b"s\n")
            .header(b"big-link", tar::EntryType::Link, b"", |h| {
                set_field(&mut h.as_old_mut().linkname, b"big");
                h.set_mode(0o600);
                h.set_uid(5);
            })
            .file("small", b"replaced\n")
            .file("gone", b"g\n")
            .file(".wh.gone", b"")
            .end(),
    ));
    let deep = "d/".repeat(2000) + "f";
    c.push((
        "a path 2000 directories deep",
        t.x(&[("path", deep.as_bytes())]).file("deep", b"d\n").end(),
    ));
    c
}

/// How skopeo and we took one input.
enum Outcome {
    BothRefuse,
    BothAccept,
    /// One accepted, the other refused: what each said.
    Differ(String),
}

/// Copies `src` as `name` with skopeo into `reference` and with us into `ours`.
fn copy_both(reference: &TestStore, ours: &TestStore, src: &str, name: &str) -> Outcome {
    let theirs = reference.skopeo_copy_in_output(src, name);
    let mine = ours.ours_copy(src, Some(name));
    match (theirs.status.success(), mine.status.success()) {
        (false, false) => Outcome::BothRefuse,
        (true, true) => Outcome::BothAccept,
        (t, m) => Outcome::Differ(format!(
            "skopeo {}, ours {}\nskopeo: {}\nours: {}",
            if t { "accepts" } else { "refuses" },
            if m { "accepts" } else { "refuses" },
            describe(&theirs),
            describe(&mine)
        )),
    }
}

/// Copies each corpus layer with skopeo and with us and compares the outcomes.
#[test]
fn adversarial_tars_match_skopeo() {
    let reference = TestStore::new(Driver::Overlay);
    let ours = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&reference.scratch("corpus"));
    let cases = corpus();
    let mut divergences = Vec::new();
    for (i, (what, tar)) in cases.iter().enumerate() {
        let tag = format!("c{i}");
        let spec = ImageSpec::from_tars(what, std::slice::from_ref(tar), Compression::Gzip);
        let built = oci.add_image(Some(&tag), &spec);
        let name = format!("localhost/corpus:{tag}");
        let src = oci.source(Some(&tag));
        match copy_both(&reference, &ours, &src, &name) {
            Outcome::BothRefuse => continue,
            Outcome::BothAccept => {}
            Outcome::Differ(d) => {
                divergences.push(format!("{what}: {d}"));
                continue;
            }
        }
        let tb = walk_tree(&ours.image_mount(&name));
        ours.image_umount(&name);
        if *what == OVERLAY_XATTRS {
            if !tb.nodes.contains_key("m") {
                divergences.push(format!("{what}: our tree lacks m: {:?}", tb.nodes.keys()));
            }
        } else {
            let ta = walk_tree(&reference.image_mount(&name));
            reference.image_umount(&name);
            // Implied directories get the time of extraction.
            let d = diff_trees(&ta, &tb, &["", "PaxHeaders"]);
            if !d.is_empty() {
                divergences.push(format!(
                    "{what}: trees differ:\n{}\ntar: {:02x?}",
                    d.join("\n"),
                    tar
                ));
            }
        }
        let (_, exported) = ours.exported_diff_ids(&name, &format!("export{i}"));
        if exported != built.diff_ids {
            divergences.push(format!(
                "{what}: skopeo exports our layer as {exported:?}, not {:?}",
                built.diff_ids
            ));
        }
        // No overlayfs control xattr on any file of our layer.
        let record = ours
            .image_records()
            .into_iter()
            .find(|r| r["names"][0] == name.as_str())
            .expect("our image record");
        let diff = ours.root.join(format!(
            "overlay/{}/diff",
            record["layer"].as_str().expect("top layer")
        ));
        for entry in std::fs::read_dir(&diff).expect("read diff") {
            let p = entry.expect("entry").path();
            let mut buf = vec![0u8; 4096];
            let n = rustix::fs::llistxattr(&p, &mut buf[..]).unwrap_or(0);
            for x in buf[..n].split(|&b| b == 0).filter(|x| !x.is_empty()) {
                if x.starts_with(b"trusted.overlay.") || x.starts_with(b"user.overlay.") {
                    divergences.push(format!(
                        "{what}: {} carries {}",
                        p.display(),
                        String::from_utf8_lossy(x)
                    ));
                }
            }
        }
    }
    assert!(
        divergences.is_empty(),
        "{} of {} inputs diverge from skopeo:\n\n{}",
        divergences.len(),
        cases.len(),
        divergences.join("\n\n")
    );
}

/// A random layer over a fixed base, from a small grammar: directories, files, symlinks (relative,
/// absolute, dangling, through which later entries go), hardlinks (to earlier, missing or
/// whited-out names), whiteouts and opaque markers, `./` and `//` in names, and header forms (PAX
/// records with overrides, empty values and xattrs; GNU long names; global headers; repeated
/// extended headers).
fn generated_layer(rng: &mut crate::fuzz_smoke::Rng) -> Vec<u8> {
    let dirs = ["d0", "d1", "d0/sub", "base", "s0"];
    let names = ["f0", "f1", "x", "base-file", "sub"];
    let mut t = RawTar::default();
    let pick = |rng: &mut crate::fuzz_smoke::Rng, v: &[&'static str]| v[rng.below(v.len())];
    for _ in 0..1 + rng.below(10) {
        let dir = pick(rng, &dirs);
        let name = pick(rng, &names);
        let mut path = format!("{dir}/{name}");
        match rng.below(6) {
            0 => path = format!("./{path}"),
            1 => path = path.replacen('/', "//", 1),
            _ => {}
        }
        // Header forms before the entry.
        match rng.below(8) {
            0 => {
                t.x(&[("path", path.as_bytes())]);
                path = "ustar-name".into();
            }
            1 => {
                t.x(&[
                    ("path", b""),
                    ("SCHILY.xattr.user.a", b"1"),
                    ("SCHILY.xattr.user.e", b""),
                ]);
            }
            2 => {
                t.x(&[("path", b"lost")]).x(&[("uid", b"7")]);
            }
            3 => {
                push_gnu_long(&mut t.0, tar::EntryType::GNULongName, path.as_bytes());
                path = "gnu-short".into();
            }
            4 => {
                t.pax(tar::EntryType::XGlobalHeader, &[("path", b"g/evil")]);
            }
            _ => {}
        }
        match rng.below(9) {
            0 => {
                t.header(
                    format!("{dir}/").as_bytes(),
                    tar::EntryType::Directory,
                    b"",
                    |_| {},
                );
            }
            1 | 2 => {
                t.file(&path, format!("content {}\n", rng.below(3)).as_bytes());
            }
            3 => {
                let target = pick(rng, &["d0", "/d1", "../d0", "d9/none", "/base"]);
                t.header(path.as_bytes(), tar::EntryType::Symlink, b"", |h| {
                    set_field(&mut h.as_old_mut().linkname, target.as_bytes());
                });
            }
            4 => {
                let target = format!("{}/{}", pick(rng, &dirs), pick(rng, &names));
                t.header(path.as_bytes(), tar::EntryType::Link, b"", |h| {
                    set_field(&mut h.as_old_mut().linkname, target.as_bytes());
                });
            }
            5 => {
                t.file(&format!("{dir}/.wh.{name}"), b"");
            }
            6 => {
                t.file(&format!("{dir}/.wh..wh..opq"), b"");
            }
            7 => {
                // Through a symlink of the base layer.
                t.file(&format!("s0/{name}"), b"through\n");
            }
            _ => {
                t.header(
                    format!("{dir}/").as_bytes(),
                    tar::EntryType::Directory,
                    b"",
                    |h| {
                        h.set_mode(0o700);
                    },
                );
            }
        }
    }
    t.end()
}

/// Generated layers (`BOOTC_IMAGE_DIFF_TARS`, default 30) over a fixed base through skopeo and
/// through us, on overlay and vfs: both refuse, or both accept with the same tree, and skopeo
/// exports our layer with its DiffID.
#[test]
fn generated_tars_match_skopeo() {
    let count: usize = std::env::var("BOOTC_IMAGE_DIFF_TARS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // BOOTC_IMAGE_DIFF_SEED replays a run (the seed is printed).
    let seed = std::env::var("BOOTC_IMAGE_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = crate::fuzz_smoke::Rng(seed);
    let base = RawTar::default()
        .header(b"base/", tar::EntryType::Directory, b"", |_| {})
        .file("base/base-file", b"base\n")
        .header(b"d0/", tar::EntryType::Directory, b"", |_| {})
        .file("d0/f0", b"f0\n")
        .header(b"d1/", tar::EntryType::Directory, b"", |_| {})
        .header(b"s0", tar::EntryType::Symlink, b"", |h| {
            set_field(&mut h.as_old_mut().linkname, b"/d1");
        })
        .end();
    let mut divergences = Vec::new();
    let mut accepted = 0;
    let mut unexportable = 0;
    for driver in [Driver::Overlay, Driver::Vfs] {
        let reference = TestStore::new(driver);
        let ours = TestStore::new(driver);
        let mut oci = OciDir::create(&reference.scratch("gen"));
        for i in 0..count / 2 {
            let tar = generated_layer(&mut rng);
            let tag = format!("g{i}");
            let spec = ImageSpec::from_tars(&tag, &[base.clone(), tar.clone()], Compression::Gzip);
            let built = oci.add_image(Some(&tag), &spec);
            let name = format!("localhost/gen:{tag}");
            let src = oci.source(Some(&tag));
            let what = format!("{driver:?} seed {seed} layer {i}");
            match copy_both(&reference, &ours, &src, &name) {
                Outcome::BothRefuse => continue,
                Outcome::BothAccept => accepted += 1,
                Outcome::Differ(d) => {
                    divergences.push(format!("{what}: {d}\ntar: {tar:02x?}"));
                    continue;
                }
            }
            let walk = |store: &TestStore| {
                let mnt = store.image_mount(&name);
                let t = std::panic::catch_unwind(|| walk_tree(&mnt));
                store.image_umount(&name);
                t.map_err(|_| {
                    format!(
                        "{what}: {} cannot be walked; tar: {:02x?}",
                        mnt.display(),
                        tar
                    )
                })
            };
            let (ta, tb) = match (walk(&reference), walk(&ours)) {
                (Ok(a), Ok(b)) => (a, b),
                // overlayfs itself cannot show the result (an entry below a lower layer's symlink):
                // compare the layers' own trees.
                (Err(_), Err(_)) => {
                    let top = |store: &TestStore| {
                        let id = store
                            .image_records()
                            .into_iter()
                            .find(|r| r["names"][0] == name.as_str())
                            .and_then(|r| r["layer"].as_str().map(str::to_owned))
                            .expect("top layer");
                        walk_tree(&match driver {
                            Driver::Overlay => store.root.join(format!("overlay/{id}/diff")),
                            Driver::Vfs => store.root.join(format!("vfs/dir/{id}")),
                        })
                    };
                    (top(&reference), top(&ours))
                }
                (a, b) => {
                    divergences.extend(a.err().map(|e| format!("skopeo's tree: {e}")));
                    divergences.extend(b.err().map(|e| format!("our tree: {e}")));
                    continue;
                }
            };
            // Whiteout devices get the time they were made (by c/storage and by us alike).
            let (mut ta, mut tb) = (ta, tb);
            for t in [&mut ta, &mut tb] {
                for n in t.nodes.values_mut() {
                    if n.kind == 'c' && n.rdev == 0 {
                        n.mtime = (0, 0);
                    }
                }
            }
            let d = diff_trees(
                &ta,
                &tb,
                &["", "d0", "d1", "base", "d0/sub", "s0", "g", "d1/sub"],
            );
            if !d.is_empty() {
                divergences.push(format!(
                    "{what}: trees differ:\n{}\ntar: {:02x?}",
                    d.join("\n"),
                    tar
                ));
            }
            // c/storage exports through host paths: a layer written through an absolute symlink
            // of a lower layer cannot be exported from skopeo's own store either. Ours must export
            // whenever skopeo's does.
            match (
                reference.try_exported_diff_ids(&name, &format!("export-{i}")),
                ours.try_exported_diff_ids(&name, &format!("export-{i}")),
            ) {
                (_, Ok((_, exported))) if exported != built.diff_ids => divergences.push(format!(
                    "{what}: skopeo exports {exported:?}, not {:?}",
                    built.diff_ids
                )),
                (Ok(_), Err(e)) => {
                    divergences.push(format!("{what}: skopeo cannot export our layer: {e}"))
                }
                (Err(_), _) => unexportable += 1,
                _ => {}
            }
        }
    }
    if let Ok(dir) = std::env::var("BOOTC_IMAGE_DIFF_KEEP") {
        for (i, d) in divergences.iter().enumerate() {
            let _ = std::fs::write(format!("{dir}/divergence-{i}.txt"), d);
        }
    }
    eprintln!(
        "generated tars: {count} (seed {seed}), {accepted} accepted by both ({unexportable} that c/storage cannot export from its own store either), {} divergences",
        divergences.len()
    );
    assert!(
        divergences.is_empty(),
        "{} divergences from skopeo:\n\n{}",
        divergences.len(),
        divergences.join("\n\n")
    );
}

/// A gzip layer made of several members (as `cat a.gz b.gz` or parallel compressors write), cut
/// inside a header and inside file data, one member empty: read as one stream, as skopeo does.
#[test]
fn multi_member_gzip_matches_skopeo() {
    let reference = TestStore::new(Driver::Overlay);
    let ours = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&reference.scratch("members"));
    let tar = fixture::rich_tars().remove(0);
    let cuts = [0, 100, 700, 700, tar.len() / 2, tar.len()];
    let blob: Vec<u8> = cuts
        .windows(2)
        .flat_map(|w| Compression::Gzip.compress(&tar[w[0]..w[1]]))
        .collect();
    let spec = ImageSpec {
        layers: vec![fixture::LayerBlob {
            media_type: Compression::Gzip.media_type().to_string(),
            blob,
            diff_id: fixture::sha256_digest(&tar),
            annotations: serde_json::Value::Null,
        }],
        label: "multi-member gzip".into(),
    };
    oci.add_image(Some("m"), &spec);
    let name = "localhost/members:latest";
    match copy_both(&reference, &ours, &oci.source(Some("m")), name) {
        Outcome::BothAccept => {}
        Outcome::BothRefuse => panic!("both refused a multi-member gzip layer"),
        Outcome::Differ(d) => panic!("{d}"),
    }
    let theirs = walk_tree(&reference.image_mount(name));
    reference.image_umount(name);
    let mine = walk_tree(&ours.image_mount(name));
    ours.image_umount(name);
    let d = diff_trees(&theirs, &mine, &[""]);
    assert!(d.is_empty(), "trees differ:\n{}", d.join("\n"));
    assert_eq!(
        reference.image_records()[0]["id"],
        ours.image_records()[0]["id"]
    );
}

/// A layer with more directories than a layer writer keeps in memory (their times are set last,
/// from a spill file past 256 KiB): every directory gets its header's time, as skopeo gives it,
/// also when a later entry replaced one (then each name is resolved again).
#[test]
fn many_directories_times_match_skopeo() {
    let reference = TestStore::new(Driver::Overlay);
    let ours = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&reference.scratch("dirs"));
    let layer = |replace: bool| {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..6000u64 {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_mtime(fixture::EPOCH + i);
            h.set_size(0);
            b.append_data(&mut h, format!("d{:02}/s{i:04}/", i % 50), std::io::empty())
                .expect("dir");
            let mut f = tar::Header::new_gnu();
            f.set_entry_type(tar::EntryType::Regular);
            f.set_mode(0o644);
            f.set_mtime(fixture::EPOCH);
            f.set_size(2);
            b.append_data(&mut f, format!("d{:02}/s{i:04}/f", i % 50), &b"x\n"[..])
                .expect("file");
        }
        if replace {
            // A file written through a symlink replaces `d00/s0000/f` (tar-split refuses the
            // same name twice, so the replacement takes another one).
            let mut l = tar::Header::new_gnu();
            l.set_entry_type(tar::EntryType::Symlink);
            l.set_mode(0o777);
            l.set_mtime(fixture::EPOCH);
            l.set_size(0);
            b.append_link(&mut l, "zz", "d00/s0000").expect("symlink");
            let mut f = tar::Header::new_gnu();
            f.set_entry_type(tar::EntryType::Regular);
            f.set_mode(0o600);
            f.set_mtime(fixture::EPOCH);
            f.set_size(2);
            b.append_data(&mut f, "zz/f", &b"y\n"[..])
                .expect("replacement");
        }
        b.into_inner().expect("tar")
    };
    for (tag, replace) in [("plain", false), ("replaced", true)] {
        let spec = ImageSpec::from_tars(tag, &[layer(replace)], Compression::Gzip);
        oci.add_image(Some(tag), &spec);
        let name = format!("localhost/dirs:{tag}");
        let src = oci.source(Some(tag));
        assert!(
            matches!(
                copy_both(&reference, &ours, &src, &name),
                Outcome::BothAccept
            ),
            "{tag}: both tools accept the layer"
        );
        let ta = walk_tree(&reference.image_mount(&name));
        reference.image_umount(&name);
        let tb = walk_tree(&ours.image_mount(&name));
        ours.image_umount(&name);
        assert_eq!(
            tb.nodes.len(),
            12_051 + usize::from(replace),
            "{tag}: every entry"
        );
        // The d00..d49 parents are implied: they get the time of extraction.
        let implied: Vec<String> = (0..50).map(|i| format!("d{i:02}")).collect();
        let mut skip: Vec<&str> = implied.iter().map(String::as_str).collect();
        skip.push("");
        let d = diff_trees(&ta, &tb, &skip);
        assert!(d.is_empty(), "{tag}: trees differ:\n{}", d.join("\n"));
    }
}
