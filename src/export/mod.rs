//! Exporting an image of a store to an OCI image layout directory or archive, compressed, so it
//! can be pushed without podman (`skopeo copy oci:DIR docker://…`). Each layer's tar is rebuilt
//! from its tar-split and files (its DiffID checked on the way), compressed and hashed in one pass,
//! two layers at a time; the config is kept byte for byte, the manifest names the compressed
//! blobs (so its digest is new, as with any push that compresses).

use std::io::Write;
use std::path::{Path, PathBuf};

use storage_format::{Digest, ImageRecord, LayerRecord};

use crate::error::{Error, Result};
use crate::layer::entry::BuiltEntries;
use crate::layer::tar_build::header_bytes;
use crate::layer::tar_header::{EntryKind, TarHeader};
use crate::source::oci_types::LayerDescriptor;
use crate::store::Store;

mod compressed_layer;
pub(crate) use compressed_layer::{Annotations, Compressed, LayerWriteError, compressed_layer};

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    /// gzip (what every registry and client reads).
    Gzip,
    /// zstd (smaller and faster; podman ≥ 4 and skopeo read it).
    Zstd,
    /// None.
    None,
    /// zstd:chunked: zstd with a frame per file and a table of contents (podman 5 pulls only
    /// the files it lacks; any zstd reader reads it whole).
    ZstdChunked,
}

impl LayerCompression {
    /// What the blob-info cache keys this compression by (zstd:chunked is not plain zstd).
    pub(crate) fn cache_key(self) -> &'static str {
        match self {
            LayerCompression::ZstdChunked => "zstd:chunked",
            other => other.media_type(),
        }
    }

    pub(crate) fn media_type(self) -> &'static str {
        match self {
            LayerCompression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            LayerCompression::Zstd | LayerCompression::ZstdChunked => {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            }
            LayerCompression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// Where the image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `oci:DIR[:TAG]`: a layout directory (created, or added to).
    Dir {
        /// The directory.
        path: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`: a tar of a layout (replaced).
    Archive {
        /// The file.
        path: PathBuf,
        /// The tag.
        tag: Option<String>,
    },
}

impl Destination {
    /// Parses `oci:DIR[:TAG]` or `oci-archive:FILE[:TAG]`.
    pub fn parse(s: &str) -> Result<Destination> {
        use crate::image_ref::ImageRef;
        let (archive, path, tag) = match ImageRef::parse(s) {
            Ok(ImageRef::OciDir { path, tag }) => (false, path, tag),
            Ok(ImageRef::OciArchive { path, tag }) => (true, path, tag),
            Err(e) if s.starts_with("oci") => return Err(e),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "destination {s:?}: use oci:DIR[:TAG] or oci-archive:FILE[:TAG]"
                )));
            }
        };
        if let Some(t) = &tag
            && !is_oci_ref_name(t)
        {
            return Err(Error::InvalidInput(format!(
                "destination {s:?}: the tag {t:?} is not letters and digits separated by one of - . _ : @ + / or -- (as skopeo's oci: transport requires): name it e.g. latest or v1.0"
            )));
        }
        Ok(if archive {
            Destination::Archive { path, tag }
        } else {
            Destination::Dir { path, tag }
        })
    }

    /// The path written.
    pub fn path(&self) -> &Path {
        match self {
            Destination::Dir { path, .. } | Destination::Archive { path, .. } => path,
        }
    }

    /// Refuses a destination inside any of `stores` (graph roots and run roots): an export there
    /// would overwrite the store's own files (`layers.json`, a layer's `diff/`) and break it for
    /// podman. Paths are compared resolved (symlinks followed, `..` removed).
    pub fn check_outside(&self, stores: &[&Path]) -> Result<()> {
        // An archive is written where its symlinks lead, even when the last one dangles.
        let dest = match self {
            Destination::Archive { path, .. } => match ArchiveTarget::of(path) {
                Ok(ArchiveTarget::File(p) | ArchiveTarget::Special(p)) => resolved(&p),
                Err(_) => resolved(path),
            },
            Destination::Dir { path, .. } => resolved(path),
        };
        for store in stores {
            let Ok(store) = std::fs::canonicalize(store) else {
                continue;
            };
            if dest.starts_with(&store) {
                return Err(Error::InvalidInput(format!(
                    "{} is inside the store {}: exporting there would overwrite the store's own files; name a path outside it",
                    self.path().display(),
                    store.display()
                )));
            }
        }
        Ok(())
    }
}

/// An OCI layout's tag (`org.opencontainers.image.ref.name`) as c/image's `oci:` transport accepts
/// it: components of letters and digits joined by one of `-._:@+` or `--`, separated by `/`.
fn is_oci_ref_name(t: &str) -> bool {
    t.split('/').all(|c| {
        let b = c.as_bytes();
        let alnum = |x: &u8| x.is_ascii_alphanumeric();
        if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(&b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(&b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            if !(sep == "--" || sep.len() == 1 && "-._:@+".contains(sep)) {
                return false;
            }
        }
        true
    })
}

/// `path` made absolute with every symlink resolved, as far as it exists (the rest appended).
fn resolved(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(p), Some(n)) => {
                rest.push(n.to_os_string());
                existing = p;
            }
            _ => return abs,
        }
    }
}

/// Where an archive's bytes go: a regular file (new or replaced, through a temporary file renamed
/// over it, so a reader never sees half an archive), or — as skopeo does — straight through a
/// device or FIFO already there. A symlink is followed to its target, which is written (the link
/// itself stays).
#[derive(Debug)]
enum ArchiveTarget {
    /// A regular file, at its resolved path.
    File(PathBuf),
    /// A character device, FIFO or other special file, written through.
    Special(PathBuf),
}

impl ArchiveTarget {
    fn of(path: &Path) -> Result<ArchiveTarget> {
        let mut p = path.to_path_buf();
        for _ in 0..40 {
            let meta = match std::fs::symlink_metadata(&p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(ArchiveTarget::File(p));
                }
                Err(e) => return Err(Error::io("reading", &p, e)),
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(&p).map_err(|e| Error::io("reading", &p, e))?;
                p = match p.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
                continue;
            }
            if ft.is_dir() {
                return Err(Error::InvalidInput(format!(
                    "{} is a directory: oci-archive: writes a file (use oci:{} for a layout directory)",
                    path.display(),
                    path.display()
                )));
            }
            return Ok(if ft.is_file() {
                ArchiveTarget::File(p)
            } else {
                ArchiveTarget::Special(p)
            });
        }
        Err(Error::InvalidInput(format!(
            "{}: too many levels of symbolic links",
            path.display()
        )))
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The new manifest's digest.
    pub manifest_digest: Digest,
    /// Compressed bytes of all layers.
    pub layer_bytes: u64,
}

/// Writes `bytes` as a blob of the layout at `dir`; returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> Result<Digest> {
    let d = Digest::of_bytes(bytes);
    let p = dir.join("blobs/sha256").join(d.hex());
    crate::store::atomic::atomic_write(&p, bytes, 0o644)?;
    Ok(d)
}

/// One layer compressed into a blob of `dir`: (digest, size, the DiffID of the tar, the
/// descriptor's annotations).
fn layer_blob(
    store: &Store,
    layer: &LayerRecord,
    dir: &Path,
    compression: LayerCompression,
) -> Result<Compressed> {
    let tmp = crate::store::atomic::temp_path_for(&dir.join("blobs/sha256").join(&layer.id));
    let result = compress_into(store, layer, &tmp, dir, compression);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    crate::crashpoint::hit("export:layer-blob");
    result
}

/// [`layer_blob`]'s work, into the temporary file `tmp`.
fn compress_into(
    store: &Store,
    layer: &LayerRecord,
    tmp: &Path,
    dir: &Path,
    compression: LayerCompression,
) -> Result<Compressed> {
    // An unnamed file (O_TMPFILE) that gets its name only once complete: a killed export leaves
    // nothing behind. File systems without O_TMPFILE get the named temporary file.
    let blobs = dir.join("blobs/sha256");
    let (file, unnamed) = match rustix::fs::open(
        &blobs,
        rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => (std::fs::File::from(fd), true),
        Err(_) => (
            std::fs::File::create(tmp).map_err(|e| Error::io("creating", tmp, e))?,
            false,
        ),
    };
    let write_err = |e: std::io::Error| Error::io("writing", tmp, e);
    let (out, digest, len, diff_id, annotations) = compressed_layer(
        store,
        layer,
        std::io::BufWriter::with_capacity(1 << 20, file),
        compression,
    )
    .map_err(|e| match e {
        LayerWriteError::Write(e) => write_err(e),
        LayerWriteError::Other(e) => e,
    })?;
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_data().map_err(write_err)?;
    let dest = blobs.join(digest.hex());
    if unnamed {
        use std::os::fd::AsRawFd;
        let link = format!("/proc/self/fd/{}", file.as_raw_fd());
        match rustix::fs::linkat(
            rustix::fs::CWD,
            link.as_str(),
            rustix::fs::CWD,
            &dest,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        ) {
            // The same digest is the same blob: the one there stays.
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(Error::io("naming", &dest, std::io::Error::from(e))),
        }
    } else {
        std::fs::rename(tmp, &dest).map_err(|e| Error::io("renaming into place", &dest, e))?;
    }
    Ok((digest, len, diff_id, annotations))
}

/// Writes the layout of `image` into `dir` (created if missing; an index entry added or replaced
/// for `tag`).
fn write_layout(
    store: &Store,
    image: &ImageRecord,
    dir: &Path,
    tag: Option<&str>,
    compression: LayerCompression,
) -> Result<ExportReport> {
    std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| Error::io("creating", dir, e))?;
    let layers = store.image_layers(image)?;
    let blobs =
        crate::parallel::map_in_order(&layers, 2, |l| layer_blob(store, l, dir, compression))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
    let config_key = format!("sha256:{}", image.id);
    let config = crate::store::copy::read_big_data(store, image, &config_key)?;
    let config_digest = put_blob(dir, &config)?;
    let layers: Vec<LayerDescriptor<'_>> = blobs
        .iter()
        .map(|(d, size, _, a)| (compression.media_type(), d.clone(), *size, a.as_ref()))
        .collect();
    let manifest = crate::source::oci_types::manifest_bytes(
        &config_digest,
        config.len(),
        &layers,
        stored_annotations(store, image),
    );
    let manifest_digest = put_blob(dir, &manifest)?;
    let index_path = dir.join("index.json");
    let index = index_with(&index_path, &manifest_digest, manifest.len(), tag)?;
    crate::store::atomic::atomic_write(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    crate::store::atomic::atomic_write(&index_path, &index, 0o644)?;
    Ok(ExportReport {
        manifest_digest,
        layer_bytes: blobs.iter().map(|(_, s, _, _)| s).sum(),
    })
}

/// The stored manifest's annotations, which a new manifest of the image keeps (as podman push
/// keeps them).
pub(crate) fn stored_annotations(store: &Store, image: &ImageRecord) -> Option<serde_json::Value> {
    crate::store::copy::read_big_data(store, image, "manifest")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|m| m.get("annotations").cloned())
}

/// `index.json` of the layout with the new manifest added: the entries already there, but one
/// with the same tag (an untagged export replaces an untagged entry of the same manifest).
fn index_with(
    index_path: &Path,
    manifest_digest: &Digest,
    manifest_len: usize,
    tag: Option<&str>,
) -> Result<Vec<u8>> {
    let mut manifests: Vec<serde_json::Value> = match std::fs::read(index_path) {
        Ok(b) => serde_json::from_slice::<serde_json::Value>(&b)
            .ok()
            .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} is not an OCI index: name an empty directory or a layout",
                    index_path.display()
                ))
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("reading", index_path, e)),
    };
    const REF: &str = "org.opencontainers.image.ref.name";
    // One entry per tag; an untagged export replaces an untagged entry of the same manifest.
    match tag {
        Some(t) => manifests.retain(|m| m["annotations"][REF].as_str() != Some(t)),
        None => manifests.retain(|m| {
            m["annotations"][REF].is_string()
                || m["digest"].as_str() != Some(manifest_digest.to_string().as_str())
        }),
    }
    let mut desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest.to_string(),
        "size": manifest_len,
    });
    if let Some(t) = tag {
        desc["annotations"] = serde_json::json!({ REF: t });
    }
    manifests.push(desc);
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": manifests,
    }))
    .map_err(|e| Error::Internal(format!("serializing the index: {e}")))?;
    Ok(index)
}

/// Writes the files of the layout `dir` as a tar into `target` (directories first, then files,
/// in path order).
fn write_archive(dir: &Path, target: &ArchiveTarget) -> Result<()> {
    match target {
        ArchiveTarget::File(file) => {
            let tmp = crate::store::atomic::temp_path_for(file);
            let result = std::fs::File::create(&tmp)
                .map_err(|e| Error::io("creating", &tmp, e))
                .and_then(|out| write_archive_to(dir, out, &tmp))
                .and_then(|()| {
                    std::fs::rename(&tmp, file)
                        .map_err(|e| Error::io("renaming into place", file, e))
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        }
        ArchiveTarget::Special(path) => {
            let out = std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io("opening", path, e))?;
            write_archive_to(dir, out, path)
        }
    }
}

/// [`write_archive`]'s work, into `out` (at `at`, for messages).
fn write_archive_to(dir: &Path, out: std::fs::File, at: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let werr = |e: std::io::Error| Error::io("writing", at, e);
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for rel in ["blobs", "blobs/sha256"] {
        entries.push((format!("{rel}/"), dir.join(rel)));
    }
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .map_err(|e| Error::io("reading", dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    blobs.sort();
    for b in blobs {
        entries.push((
            format!("blobs/sha256/{b}"),
            dir.join("blobs/sha256").join(&b),
        ));
    }
    entries.push(("index.json".into(), dir.join("index.json")));
    entries.push(("oci-layout".into(), dir.join("oci-layout")));
    let mut built = BuiltEntries::default();
    for (name, path) in entries {
        let is_dir = name.ends_with('/');
        let size = if is_dir {
            0
        } else {
            std::fs::metadata(&path)
                .map_err(|e| Error::io("reading", &path, e))?
                .len()
        };
        let (kind, mode) = if is_dir {
            (EntryKind::Directory, 0o755)
        } else {
            (EntryKind::Regular, 0o644)
        };
        let h = TarHeader::new(name.into_bytes(), kind, mode, size, 0);
        let header = header_bytes(&h);
        out.write_all(built.raw(&header, size)).map_err(werr)?;
        if !is_dir {
            let mut f = std::fs::File::open(&path).map_err(|e| Error::io("reading", &path, e))?;
            std::io::copy(&mut f, &mut out).map_err(werr)?;
        }
    }
    out.write_all(&built.trailer()).map_err(werr)?;
    let f = out.into_inner().map_err(|e| werr(e.into_error()))?;
    // A device or FIFO has nothing to sync (and /dev/null refuses to).
    if f.metadata().is_ok_and(|m| m.is_file()) {
        f.sync_all().map_err(werr)?;
    }
    Ok(())
}

/// The prefix of the layout an archive is built in, before the exporting process's ID.
const WORK_PREFIX: &str = ".bootc-image-export-";

/// Removes the work directories in `parent` of exports whose process is gone (killed).
fn remove_stale_work_dirs(parent: &Path) {
    let Ok(rd) = std::fs::read_dir(parent) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(WORK_PREFIX)
            .and_then(|r| r.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = crate::fsutil::remove_all(&e.path());
        }
    }
}

/// Exports `image` of `store` to `dest` with layers compressed as `compression`.
pub fn export(
    store: &Store,
    image: &ImageRecord,
    dest: &Destination,
    compression: LayerCompression,
) -> Result<ExportReport> {
    match dest {
        Destination::Dir { path, tag } => {
            write_layout(store, image, path, tag.as_deref(), compression)
        }
        Destination::Archive { path, tag } => {
            let target = ArchiveTarget::of(path)?;
            // The layout is built beside the file it becomes (the same file system: no copy of
            // the blobs across devices); for a device, in the temporary directory.
            let parent = match &target {
                ArchiveTarget::File(f) => f
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
                ArchiveTarget::Special(_) => std::env::temp_dir(),
            };
            // Named after this process, so that the next export removes what a killed one left.
            remove_stale_work_dirs(&parent);
            let work = tempfile::Builder::new()
                .prefix(&format!("{WORK_PREFIX}{}-", std::process::id()))
                .tempdir_in(&parent)
                .map_err(|e| Error::io("creating a directory in", &parent, e))?;
            let report = write_layout(store, image, work.path(), tag.as_deref(), compression)?;
            write_archive(work.path(), &target)?;
            Ok(report)
        }
    }
}
