//! Deterministic OCI image layouts built from hand-made tar layers.
//!
//! Every byte of a fixture is a pure function of the code below: fixed mtimes, fixed owners,
//! pseudo-random file content from a fixed seed, and deterministic gzip/zstd output. The tars are
//! written header by header (ustar headers plus our own PAX `x` records and GNU `L`/`K` entries),
//! so a fixture can hold exactly the encodings real images use, and broken variants for the error
//! tests.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Base mtime of fixture entries: 2023-11-14T22:13:20Z.
pub const EPOCH: u64 = 1_700_000_000;

/// The `created` time written into fixture configs (equal to [`EPOCH`]).
pub const CREATED: &str = "2023-11-14T22:13:20Z";

/// `org.opencontainers.image.ref.name`, the index annotation that names a tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// OCI media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// OCI media type of an image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// What a tar entry is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
    /// A hard link to this path (relative to the layer root).
    Hardlink(String),
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// How a name (or link target) longer than the 100-byte ustar field is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongNames {
    /// PAX `path` / `linkpath` records in an `x` header.
    Pax,
    /// GNU `././@LongLink` entries of type `L` (name) and `K` (link target).
    Gnu,
}

/// One tar entry with all of its metadata.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name as written in the header (directories should end with `/`).
    pub path: String,
    /// Type and payload.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Nanoseconds of the mtime; when set, a PAX `mtime` record carries them.
    pub mtime_nsec: Option<u32>,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Encoding of a long name or link target.
    pub long_names: LongNames,
    /// Name bytes to write instead of `path` (for names that are not UTF-8).
    pub raw_path: Option<Vec<u8>>,
}

impl Entry {
    /// An entry with default metadata (root-owned, mtime [`EPOCH`]).
    fn new(path: &str, kind: Kind, mode: u32) -> Self {
        Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: EPOCH,
            mtime_nsec: None,
            xattrs: Vec::new(),
            long_names: LongNames::Pax,
            raw_path: None,
        }
    }

    /// A regular file, mode 0644.
    pub fn file(path: &str, content: impl Into<Vec<u8>>) -> Self {
        Self::new(path, Kind::File(content.into()), 0o644)
    }

    /// A directory, mode 0755 (`path` should end with `/`).
    pub fn dir(path: &str) -> Self {
        Self::new(path, Kind::Dir, 0o755)
    }

    /// A symlink `path -> target`, mode 0777.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Symlink(target.to_string()), 0o777)
    }

    /// A hard link `path` to `target`; give it the target's metadata with the builder methods.
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self::new(path, Kind::Hardlink(target.to_string()), 0o644)
    }

    /// A character device.
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::Char(major, minor), 0o666)
    }

    /// A block device.
    pub fn block_dev(path: &str, major: u32, minor: u32) -> Self {
        Self::new(path, Kind::Block(major, minor), 0o660)
    }

    /// A FIFO.
    pub fn fifo(path: &str) -> Self {
        Self::new(path, Kind::Fifo, 0o600)
    }

    /// A whiteout (`.wh.NAME`) entry as an empty regular file, the way most tools write it.
    pub fn whiteout(path: &str) -> Self {
        Self::new(path, Kind::File(Vec::new()), 0o644)
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets uid and gid.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the mtime (whole seconds).
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// Sets the mtime with nanoseconds (written as a PAX record).
    pub fn mtime_ns(mut self, mtime: u64, nsec: u32) -> Self {
        self.mtime = mtime;
        self.mtime_nsec = Some(nsec);
        self
    }

    /// Adds an extended attribute.
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.xattrs.push((name.to_string(), value.to_vec()));
        self
    }

    /// Writes these bytes as the entry name (for names that are not valid UTF-8).
    pub fn raw_name(mut self, name: &[u8]) -> Self {
        self.raw_path = Some(name.to_vec());
        self
    }

    /// Encodes a long name or link target with GNU `L`/`K` entries instead of PAX.
    pub fn gnu_long(mut self) -> Self {
        self.long_names = LongNames::Gnu;
        self
    }
}

/// One PAX record `"<len> key=value\n"`, where len counts the whole record.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = 3 + key.len() + value.len(); // ' ' + '=' + '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    assert_eq!(out.len(), len, "PAX record length");
    out
}

/// Appends `data` padded to a 512-byte boundary.
fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(data);
    let rem = data.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// Copies up to `field.len()` bytes of `value` into a header field (no NUL when it is full).
pub fn set_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// Appends one raw header + data.
pub fn push_header(out: &mut Vec<u8>, mut header: tar::Header, data: &[u8]) {
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    push_padded(out, data);
}

/// A GNU `././@LongLink` entry of type `L` or `K` carrying `name` plus a NUL.
pub fn push_gnu_long(out: &mut Vec<u8>, ty: tar::EntryType, name: &[u8]) {
    let mut h = tar::Header::new_gnu();
    set_field(&mut h.as_old_mut().name, b"././@LongLink");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(ty);
    let mut data = name.to_vec();
    data.push(0);
    push_header(out, h, &data);
}

/// Serialises `entries` into an uncompressed tar (ending with two zero blocks).
pub fn build_tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let link = match &e.kind {
            Kind::Symlink(t) | Kind::Hardlink(t) => Some(t.as_str()),
            _ => None,
        };
        let mut pax = Vec::new();
        if let Some(ns) = e.mtime_nsec {
            pax.extend(pax_record(
                "mtime",
                format!("{}.{:09}", e.mtime, ns).as_bytes(),
            ));
        }
        let path = e.raw_path.as_deref().unwrap_or(e.path.as_bytes());
        let long_path = path.len() > 100;
        let long_link = link.is_some_and(|l| l.len() > 100);
        if e.long_names == LongNames::Pax {
            if long_path {
                pax.extend(pax_record("path", path));
            }
            if let (true, Some(l)) = (long_link, link) {
                pax.extend(pax_record("linkpath", l.as_bytes()));
            }
        }
        for (k, v) in &e.xattrs {
            pax.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
        }
        if e.long_names == LongNames::Gnu {
            if let (true, Some(l)) = (long_link, link) {
                push_gnu_long(&mut out, tar::EntryType::GNULongLink, l.as_bytes());
            }
            if long_path {
                push_gnu_long(&mut out, tar::EntryType::GNULongName, path);
            }
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            set_field(
                &mut h.as_old_mut().name,
                format!("PaxHeaders.0/entry{i}").as_bytes(),
            );
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(e.mtime);
            h.set_entry_type(tar::EntryType::XHeader);
            push_header(&mut out, h, &pax);
        }

        let mut h = if e.long_names == LongNames::Gnu {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        set_field(&mut h.as_old_mut().name, path);
        if let Some(l) = link {
            set_field(&mut h.as_old_mut().linkname, l.as_bytes());
        }
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        let (ty, data): (tar::EntryType, &[u8]) = match &e.kind {
            Kind::File(c) => (tar::EntryType::Regular, c),
            Kind::Dir => (tar::EntryType::Directory, &[]),
            Kind::Symlink(_) => (tar::EntryType::Symlink, &[]),
            Kind::Hardlink(_) => (tar::EntryType::Link, &[]),
            Kind::Char(..) => (tar::EntryType::Char, &[]),
            Kind::Block(..) => (tar::EntryType::Block, &[]),
            Kind::Fifo => (tar::EntryType::Fifo, &[]),
        };
        h.set_entry_type(ty);
        if let Kind::Char(ma, mi) | Kind::Block(ma, mi) = e.kind {
            h.set_device_major(ma).expect("device major");
            h.set_device_minor(mi).expect("device minor");
        } else if e.long_names == LongNames::Pax {
            // ustar headers carry zero device numbers for non-devices, as Go writes them.
            h.set_device_major(0).expect("device major");
            h.set_device_minor(0).expect("device minor");
        }
        push_header(&mut out, h, data);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Deterministic pseudo-random bytes (xorshift64*), half of them compressible text.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if (out.len() / 4096) % 2 == 0 {
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(format!("line {v:016x}\n").as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Layer compression of a fixture blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar`
    None,
    /// `application/vnd.oci.image.layer.v1.tar+gzip`
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`
    Zstd,
}

impl Compression {
    /// The OCI layer media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Compresses `data` deterministically.
    pub fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(data).expect("gzip write");
                enc.finish().expect("gzip finish")
            }
            Compression::Zstd => zstd::encode_all(data, 3).expect("zstd encode"),
        }
    }
}

/// Decompresses a layer blob by sniffing its magic bytes (gzip, zstd or plain tar).
pub fn decompress_any(blob: &[u8]) -> Vec<u8> {
    if blob.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let mut dec = flate2::read::GzDecoder::new(blob);
        std::io::Read::read_to_end(&mut dec, &mut out).expect("gunzip");
        out
    } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::decode_all(blob).expect("unzstd")
    } else {
        blob.to_vec()
    }
}

/// A layer blob as it will be stored in the layout.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// Media type for the manifest descriptor.
    pub media_type: String,
    /// The blob bytes (compressed or not); its digest is computed when written.
    pub blob: Vec<u8>,
    /// The DiffID recorded in the config.
    pub diff_id: String,
    /// Annotations of its descriptor (null: none).
    pub annotations: Value,
}

impl LayerBlob {
    /// Compresses `tar` and records its DiffID.
    pub fn new(tar: &[u8], compression: Compression) -> Self {
        LayerBlob {
            media_type: compression.media_type().to_string(),
            blob: compression.compress(tar),
            diff_id: sha256_digest(tar),
            annotations: Value::Null,
        }
    }
}

/// What goes into one image of a layout.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Layers, base first.
    pub layers: Vec<LayerBlob>,
    /// A label that makes configs (and so image IDs) of different fixtures distinct.
    pub label: String,
}

impl ImageSpec {
    /// An image from uncompressed `tars`, each compressed with `compression`.
    pub fn from_tars(label: &str, tars: &[Vec<u8>], compression: Compression) -> Self {
        ImageSpec {
            layers: tars
                .iter()
                .map(|t| LayerBlob::new(t, compression))
                .collect(),
            label: label.to_string(),
        }
    }

    /// The config JSON value (diff_ids from the layers).
    pub fn config(&self) -> Value {
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let history: Vec<Value> = (0..self.layers.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("fixture layer {}", i + 1)}))
            .collect();
        json!({
            "created": CREATED,
            "author": "bootc-image tests",
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Cmd": ["/bin/tool"],
                "WorkingDir": "/",
                "Labels": {"org.example.fixture": self.label.clone()}
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history
        })
    }
}

/// Digests of an image written into a layout.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    /// Manifest digest (what podman shows as `Digest`).
    pub manifest_digest: String,
    /// Config digest (its hex is the image ID).
    pub config_digest: String,
    /// Layer blob digests in manifest order.
    pub layer_digests: Vec<String>,
    /// DiffIDs in config order.
    pub diff_ids: Vec<String>,
}

impl BuiltImage {
    /// The image ID as containers-storage derives it (config digest hex).
    pub fn image_id(&self) -> String {
        digest_hex(&self.config_digest).to_string()
    }
}

/// An OCI image layout directory being written.
#[derive(Debug)]
pub struct OciDir {
    /// The layout root.
    pub path: PathBuf,
    manifests: Vec<Value>,
}

impl OciDir {
    /// Creates `path` with `oci-layout`, an empty `blobs/sha256/` and an empty index.
    pub fn create(path: &Path) -> Self {
        fs::create_dir_all(path.join("blobs/sha256")).expect("create layout dirs");
        fs::write(
            path.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("write oci-layout");
        let dir = OciDir {
            path: path.to_path_buf(),
            manifests: Vec::new(),
        };
        dir.write_index();
        dir
    }

    /// The file holding blob `digest`.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.path.join("blobs/sha256").join(digest_hex(digest))
    }

    /// Stores `data` as a blob and returns its digest.
    pub fn write_blob(&self, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        fs::write(self.blob_path(&digest), data).expect("write blob");
        digest
    }

    /// Rewrites `index.json` from the manifests added so far.
    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.manifests});
        fs::write(
            self.path.join("index.json"),
            serde_json::to_vec(&index).expect("index json"),
        )
        .expect("write index.json");
    }

    /// Adds a manifest blob (any bytes) under `tag` (or untagged) to the index.
    pub fn add_manifest_bytes(&mut self, tag: Option<&str>, manifest: &[u8]) -> String {
        let digest = self.write_blob(manifest);
        let mut desc = json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": digest,
            "size": manifest.len(),
        });
        if let Some(tag) = tag {
            desc["annotations"] = json!({ REF_NAME: tag });
        }
        self.manifests.push(desc);
        self.write_index();
        digest
    }

    /// Writes an image whose config is `config` (any bytes) and returns its digests.
    pub fn add_image_with_config(
        &mut self,
        tag: Option<&str>,
        spec: &ImageSpec,
        config: &[u8],
    ) -> BuiltImage {
        let config_digest = self.write_blob(config);
        let mut layer_digests = Vec::new();
        let mut descs = Vec::new();
        for l in &spec.layers {
            let d = self.write_blob(&l.blob);
            let mut desc = json!({"mediaType": l.media_type, "digest": d, "size": l.blob.len()});
            if !l.annotations.is_null() {
                desc["annotations"] = l.annotations.clone();
            }
            descs.push(desc);
            layer_digests.push(d);
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
            "layers": descs,
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest json");
        let manifest_digest = self.add_manifest_bytes(tag, &manifest);
        BuiltImage {
            manifest_digest,
            config_digest,
            layer_digests,
            diff_ids: spec.layers.iter().map(|l| l.diff_id.clone()).collect(),
        }
    }

    /// Writes a well-formed image and returns its digests.
    pub fn add_image(&mut self, tag: Option<&str>, spec: &ImageSpec) -> BuiltImage {
        let config = serde_json::to_vec(&spec.config()).expect("config json");
        self.add_image_with_config(tag, spec, &config)
    }

    /// The `oci:DIR:TAG` (or `oci:DIR`) source string for this layout.
    pub fn source(&self, tag: Option<&str>) -> String {
        match tag {
            Some(t) => format!("oci:{}:{t}", self.path.display()),
            None => format!("oci:{}", self.path.display()),
        }
    }

    /// Packs the layout into an `oci-archive` tar file at `file`.
    pub fn write_archive(&self, file: &Path) {
        let f = fs::File::create(file).expect("create oci archive");
        let mut b = tar::Builder::new(f);
        b.mode(tar::HeaderMode::Deterministic);
        b.append_dir_all(".", &self.path).expect("tar layout");
        b.into_inner()
            .expect("finish oci archive")
            .sync_all()
            .expect("sync oci archive");
    }
}

/// Paths of the rich fixture whose directory mtime is not defined by a tar header (created
/// implicitly as parents, or holding whiteouts without an explicit header), plus the root.
pub const UNDEFINED_MTIME_PATHS: &[&str] = &[
    "",
    "deep",
    "deep/sub",
    "implied",
    "implied/sub",
    "implied/sub/deeper",
];

/// A name longer than 100 bytes (a PAX `path` in layer 2).
pub fn long_pax_name() -> String {
    format!(
        "usr/share/{}/{}.txt",
        "p".repeat(60),
        "long-pax-name-".repeat(4)
    )
}

/// A name longer than 100 bytes (a GNU `L` entry in layer 3).
pub fn long_gnu_name() -> String {
    format!("usr/share/{}.txt", "gnu-long-name-".repeat(9))
}

/// A symlink target longer than 100 bytes.
pub fn long_link_target() -> String {
    format!("/usr/share/{}", "target-".repeat(16))
}

/// Layer 1 of the rich fixture: the base tree.
pub fn rich_layer1() -> Vec<Entry> {
    vec![
        Entry::dir("./"),
        Entry::dir("bin/"),
        Entry::file("bin/tool", b"#!/bin/sh\necho tool v1\n".to_vec()).mode(0o4755),
        Entry::hardlink("bin/tool-hl", "bin/tool").mode(0o4755),
        Entry::file("bin/sgid", b"sgid\n".to_vec())
            .mode(0o2755)
            .owner(0, 5678),
        Entry::symlink("bin/rel", "tool"),
        Entry::symlink("bin/abs", "/etc/passwd"),
        Entry::symlink("bin/dangling", "../nonexistent/target"),
        Entry::dir("etc/").mtime(EPOCH + 10),
        Entry::file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n".to_vec()),
        Entry::file("etc/removeme", b"to be removed\n".to_vec()),
        Entry::file("etc/empty", Vec::new()),
        Entry::file("etc/owned", b"owned\n".to_vec())
            .mode(0o640)
            .owner(1234, 5678),
        Entry::file("etc/nobody", b"nobody\n".to_vec())
            .mode(0o600)
            .owner(65534, 65534),
        Entry::file("etc/xattr-file", b"xattrs\n".to_vec())
            .xattr("user.foo", b"bar")
            .xattr("user.binary", &[0, 1, 2, 0xff]),
        Entry::hardlink("etc/xattr-hl", "etc/xattr-file"),
        Entry::file("etc/big.bin", pseudo_random(160 * 1024, 42)).mode(0o600),
        Entry::dir("dev/"),
        Entry::char_dev("dev/null", 1, 3),
        Entry::block_dev("dev/loop0", 7, 0).owner(0, 6),
        Entry::fifo("dev/fifo"),
        Entry::dir("tmp/").mode(0o1777).mtime(EPOCH + 20),
        Entry::dir("olddir/"),
        Entry::file("olddir/a", b"a\n".to_vec()),
        Entry::dir("olddir/sub/"),
        Entry::file("olddir/sub/b", b"b\n".to_vec()),
        Entry::dir("opq/").mode(0o750),
        Entry::file("opq/old1", b"old1\n".to_vec()),
        Entry::dir("opq/olddir/"),
        Entry::file("opq/olddir/old2", b"old2\n".to_vec()),
        Entry::dir("deep/").mode(0o750).owner(1234, 1234),
        Entry::dir("deep/sub/").mode(0o700),
        Entry::file("deep/sub/f", b"f\n".to_vec()),
        Entry::file("deep/sub/g", b"g\n".to_vec()),
        // A set-group-ID directory: what is created in it inherits its group (and a directory
        // its set-group-ID bit), which the headers below do not give.
        Entry::dir("shared/").mode(0o2775).owner(0, 5678),
        Entry::dir("shared/sub/"),
        Entry::file("shared/f", b"f\n".to_vec()),
        Entry::symlink("shared/link", "sub").owner(1234, 1234),
        Entry::dir("srv/").mtime_ns(EPOCH + 30, 123_456_789),
        Entry::file("srv/data.txt", b"nanos\n".to_vec()).mtime_ns(EPOCH + 31, 987_654_321),
        Entry::dir("xdir/").xattr("user.dirattr", b"on a dir"),
        Entry::file("xdir/file", b"in xdir\n".to_vec()),
    ]
}

/// Layer 2 of the rich fixture: whiteouts, opaque dir, `./`-prefixed names, PAX long names,
/// UTF-8 names.
pub fn rich_layer2() -> Vec<Entry> {
    vec![
        Entry::dir("./").mtime(EPOCH + 100),
        Entry::whiteout("./.wh.olddir"),
        Entry::dir("./etc/").mtime(EPOCH + 100),
        Entry::whiteout("./etc/.wh.removeme"),
        Entry::file(
            "./etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n".to_vec(),
        ),
        Entry::dir("./opq/").mode(0o750).mtime(EPOCH + 100),
        Entry::whiteout("./opq/.wh..wh..opq"),
        Entry::file("./opq/new", b"new in opaque dir\n".to_vec()),
        Entry::whiteout("./deep/sub/.wh.f"),
        Entry::dir("./usr/"),
        Entry::dir("./usr/share/"),
        Entry::dir(&format!("./usr/share/{}/", "p".repeat(60))),
        Entry::file(
            &format!("./{}", long_pax_name()),
            b"long pax name\n".to_vec(),
        ),
        Entry::symlink("./usr/share/long-pax-link", &long_link_target()),
        Entry::dir("./usr/share/données/").mtime(EPOCH + 101),
        Entry::file("./usr/share/données/café.txt", "crème brûlée\n").owner(1000, 1000),
        Entry::dir("./usr/share/日本語/"),
        Entry::file("./usr/share/日本語/ファイル.txt", "こんにちは\n"),
    ]
}

/// Layer 3 of the rich fixture: GNU long names, a hard link to a file re-added in this layer,
/// implied parent directories.
pub fn rich_layer3() -> Vec<Entry> {
    vec![
        Entry::dir("bin/").mtime(EPOCH + 200).gnu_long(),
        Entry::file("bin/tool", b"#!/bin/sh\necho tool v2\n".to_vec())
            .mode(0o4755)
            .gnu_long(),
        Entry::hardlink("bin/tool-hl2", "bin/tool")
            .mode(0o4755)
            .gnu_long(),
        Entry::dir("usr/").gnu_long(),
        Entry::dir("usr/share/").mtime(EPOCH + 201).gnu_long(),
        Entry::file(&long_gnu_name(), b"long gnu name\n".to_vec()).gnu_long(),
        Entry::symlink("usr/share/long-gnu-link", &long_link_target()).gnu_long(),
        Entry::file(
            "implied/sub/deeper/file.txt",
            b"parents are implied\n".to_vec(),
        )
        .gnu_long(),
        Entry::file("implied/sub/other", b"other\n".to_vec())
            .owner(4321, 4321)
            .gnu_long(),
    ]
}

/// The three uncompressed tars of the rich fixture.
pub fn rich_tars() -> Vec<Vec<u8>> {
    vec![
        build_tar(&rich_layer1()),
        build_tar(&rich_layer2()),
        build_tar(&rich_layer3()),
    ]
}

/// The rich fixture image with every layer compressed with `compression`.
pub fn rich_image(compression: Compression) -> ImageSpec {
    ImageSpec::from_tars("rich", &rich_tars(), compression)
}

/// A small single-file layer; `n` makes the content (and so the DiffID) unique.
pub fn small_tar(n: u32) -> Vec<u8> {
    build_tar(&[
        Entry::dir(&format!("layer{n}/")),
        Entry::file(
            &format!("layer{n}/file"),
            format!("content of small layer {n}\n"),
        ),
    ])
}

/// The edge fixture: hard-link headers whose metadata differs from their target's (c/storage
/// applies the link header's mode, owner and mtime to the shared inode: the last header wins)
/// a `./` entry with an unusual mode (applied to the root by vfs, ignored by overlay), and a
/// name that is not UTF-8 (tar-split stores it as `name_raw`).
pub fn edge_tars() -> Vec<Vec<u8>> {
    vec![build_tar(&[
        Entry::dir("./").mode(0o751).mtime(EPOCH + 7),
        Entry::file("target", b"t\n".to_vec()),
        Entry::hardlink("link", "target")
            .mode(0o600)
            .owner(1234, 1234)
            .mtime(EPOCH + 5),
        Entry::file("t2", b"t2\n".to_vec()).mode(0o640),
        Entry::hardlink("l2", "t2").mode(0o777).mtime(EPOCH + 9),
        Entry::file("latin1", b"not UTF-8\n".to_vec()).raw_name(b"latin1-caf\xe9.txt"),
    ])]
}

/// A layer that tries to write outside the layer: a `../`-laden name under `host_dir`, then a
/// symlink `evil -> ../../…/<host_dir>` and an entry `evil/pwned` written through it.
/// `host_dir` must be absolute.
pub fn escape_tar(host_dir: &Path) -> Vec<u8> {
    let up = "../".repeat(12);
    let rel = host_dir.to_string_lossy();
    let rel = rel.trim_start_matches('/');
    build_tar(&[
        Entry::file(&format!("{up}{rel}/dotdot"), b"dotdot\n".to_vec()),
        Entry::symlink("evil", &format!("{up}{rel}")),
        Entry::file("evil/pwned", b"pwned\n".to_vec()),
    ])
}

/// Ways to break the second layer (or the metadata) of a two-layer image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// The layer blob (an uncompressed tar) has one byte of file data flipped: same size, still
    /// a valid tar, but not the content its digest names.
    BlobDigestMismatch,
    /// The gzip stream stops halfway (digest and size describe the truncated blob).
    TruncatedGzip,
    /// The zstd frame stops halfway.
    TruncatedZstd,
    /// The gzip trailer's CRC-32 is wrong (digest, size and DiffID are right).
    GzipBadCrc,
    /// An uncompressed tar cut in the middle of a file's data (DiffID = digest of the cut tar).
    TruncatedTar,
    /// A hard link whose target is `../../etc/passwd`.
    HardlinkOutside,
    /// The config's second DiffID is not the layer's.
    DiffIdMismatch,
    /// The second layer's blob file does not exist.
    MissingBlob,
    /// The manifest blob is not JSON.
    ManifestNotJson,
}

/// The tar of the second layer of broken images: one 64 KiB file first, so that a cut at
/// 30000 bytes lands inside its data.
fn breakable_tar() -> Vec<u8> {
    build_tar(&[
        Entry::file("broken-data.bin", pseudo_random(64 * 1024, 7)),
        Entry::file("after", b"after\n".to_vec()),
    ])
}

/// Writes a two-layer image under `tag` whose first layer is valid and that is broken as `how`
/// says.
pub fn write_broken(oci: &mut OciDir, tag: &str, how: Breakage) {
    let good = LayerBlob::new(&small_tar(100), Compression::Gzip);
    let tar = breakable_tar();
    let second = match how {
        Breakage::TruncatedGzip => {
            let gz = Compression::Gzip.compress(&tar);
            LayerBlob {
                media_type: Compression::Gzip.media_type().to_string(),
                blob: gz[..gz.len() / 2].to_vec(),
                diff_id: sha256_digest(&tar),
                annotations: Value::Null,
            }
        }
        Breakage::TruncatedZstd => {
            let zst = Compression::Zstd.compress(&tar);
            LayerBlob {
                media_type: Compression::Zstd.media_type().to_string(),
                blob: zst[..zst.len() / 2].to_vec(),
                diff_id: sha256_digest(&tar),
                annotations: Value::Null,
            }
        }
        Breakage::GzipBadCrc => {
            let mut gz = Compression::Gzip.compress(&tar);
            let n = gz.len();
            gz[n - 8] ^= 0x01;
            LayerBlob {
                media_type: Compression::Gzip.media_type().to_string(),
                blob: gz,
                diff_id: sha256_digest(&tar),
                annotations: Value::Null,
            }
        }
        Breakage::TruncatedTar => {
            let cut = tar[..512 + 30_000].to_vec();
            LayerBlob {
                media_type: Compression::None.media_type().to_string(),
                diff_id: sha256_digest(&cut),
                blob: cut,
                annotations: Value::Null,
            }
        }
        Breakage::HardlinkOutside => LayerBlob::new(
            &build_tar(&[
                Entry::file("ok", b"ok\n".to_vec()),
                Entry::hardlink("evil", "../../etc/passwd"),
            ]),
            Compression::Gzip,
        ),
        Breakage::BlobDigestMismatch => LayerBlob::new(&tar, Compression::None),
        _ => LayerBlob::new(&tar, Compression::Gzip),
    };
    let spec = ImageSpec {
        layers: vec![good, second],
        label: format!("broken {how:?}"),
    };
    match how {
        Breakage::ManifestNotJson => {
            oci.add_manifest_bytes(Some(tag), b"this is not a manifest {");
        }
        Breakage::DiffIdMismatch => {
            let mut config = spec.config();
            config["rootfs"]["diff_ids"][1] = json!(sha256_digest(b"not the layer"));
            let config = serde_json::to_vec(&config).expect("config json");
            oci.add_image_with_config(Some(tag), &spec, &config);
        }
        Breakage::BlobDigestMismatch => {
            let built = oci.add_image(Some(tag), &spec);
            let path = oci.blob_path(&built.layer_digests[1]);
            let mut blob = fs::read(&path).expect("read blob");
            blob[512 + 100] ^= 0xff;
            fs::write(&path, blob).expect("overwrite blob");
        }
        Breakage::MissingBlob => {
            let built = oci.add_image(Some(tag), &spec);
            fs::remove_file(oci.blob_path(&built.layer_digests[1])).expect("remove blob");
        }
        _ => {
            oci.add_image(Some(tag), &spec);
        }
    }
}
