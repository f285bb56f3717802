//! Images in a composefs repository (bootc's composefs backend keeps the booted image in
//! `/sysroot/composefs`), read with the `composefs` crate, without changing a byte of the
//! repository. composefs-oci's conventions (stream names, tag encoding, content types) are
//! followed, but the crate is kept out of the build: it turns on flate2's C-zlib backend, which
//! flate2 would then use for all our gzip (~30 % slower imports).
//!
//! The repository keeps an OCI image as splitstreams: the manifest's (`oci-manifest-<digest>`,
//! the manifest bytes as one object, a named reference to its config), the config's (its bytes,
//! named references to each layer by DiffID), and one per layer (`oci-layer-<diff_id>`). Tags are
//! `streams/refs/oci/<tag>`. The manifest and config come back byte for byte, so the store gets
//! the image's own digests; each layer's splitstream becomes an entry stream
//! ([`layer_entries`]) whose DiffID the sink computes and the import checks.

pub(crate) mod layer_entries;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use composefs::fsverity::{FsVerityHashValue, Sha256HashValue, Sha512HashValue};
use composefs::repository::{Repository, RepositoryOpenError};
use sha2::Digest as _;
use storage_format::Digest;

use self::layer_entries::{ObjectPlace, feed_splitstream};
use super::image_documents::{assemble, parse_digest, parse_manifest};
use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::read_ahead::{ReadAhead, StopOnDrop};
use crate::layer::sink::LayerSink;
use crate::store::image_input::{ImageInput, LayerBytes, LayerInput};
use crate::store::producer::{LayerProducer, Produced};

/// The content type composefs-oci gives layer splitstreams.
const LAYER_CONTENT_TYPE: u64 = u64::from_le_bytes(*b"ocilayer");

/// The manifest a tag names: `streams/refs/oci/<tag>` (`%` and `/` percent-encoded, as
/// composefs-oci writes tags) links to `../../oci-manifest-<digest>`; `None` when there is no
/// such tag.
fn resolve_tag(repo_path: &Path, tag: &str) -> std::result::Result<Option<Digest>, String> {
    let encoded = tag.replace('%', "%25").replace('/', "%2F");
    let link = repo_path.join("streams/refs/oci").join(encoded);
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", link.display())),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let digest = name
        .strip_prefix("oci-manifest-")
        .and_then(|d| Digest::parse(d).ok())
        .ok_or_else(|| {
            format!(
                "{} links to {}, not a manifest",
                link.display(),
                target.display()
            )
        })?;
    Ok(Some(digest))
}

/// How far the read-ahead of a layer's objects runs ahead of the copy.
const READ_AHEAD_LEAD: u64 = 64 << 20;

/// The largest manifest or config we read.
const DOCUMENT_LIMIT: u64 = 4 << 20;

pub use crate::image_ref::ImageSelector;

/// The repository and the image's layer streams, for one digest algorithm.
struct Typed<H: FsVerityHashValue> {
    repo: Repository<H>,
    /// Each layer's splitstream (its fs-verity id), base first.
    layers: Vec<H>,
}

/// The compression of a layer blob by its media type (recorded with the blob's digest, as
/// c/storage records what it pulled).
fn blob_compression(media_type: &str) -> Compression {
    if media_type.ends_with("gzip") {
        Compression::Gzip
    } else if media_type.ends_with("zstd") {
        Compression::Zstd
    } else {
        Compression::None
    }
}

enum AnyTyped {
    Sha256(Typed<Sha256HashValue>),
    Sha512(Typed<Sha512HashValue>),
}

/// An image of a composefs repository, opened: what to import, and the producer of its layers.
pub struct ComposefsImage {
    /// Manifest, config and layers, byte for byte as the repository holds them.
    pub input: ImageInput,
    /// The repository's directory.
    pub repo_path: PathBuf,
    /// Check every object against its fs-verity digest while copying it.
    pub verify: bool,
    /// Files whose extents were shared with the repository's objects.
    pub reflinked: AtomicU64,
    /// Files whose bytes were written.
    pub written: AtomicU64,
    /// Each layer blob's compression, by the manifest's media types.
    compressions: Vec<Compression>,
    typed: AnyTyped,
}

impl std::fmt::Debug for ComposefsImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComposefsImage")
            .field("repo_path", &self.repo_path)
            .field("manifest_digest", &self.input.manifest_digest)
            .finish_non_exhaustive()
    }
}

impl ComposefsImage {
    /// Opens `image` in the repository at `repo_path` (SHA-512 repositories, as bootc makes them,
    /// or SHA-256; with or without fs-verity), reading nothing but what it names. `names` are the
    /// names to give it in the store.
    pub fn open(
        repo_path: &Path,
        image: &ImageSelector,
        names: Vec<String>,
        verify: bool,
    ) -> Result<ComposefsImage> {
        let cwd = rustix::fs::CWD;
        let (input, compressions, typed) =
            match Repository::<Sha512HashValue>::open_path(cwd, repo_path) {
                Ok(repo) => {
                    let (input, c, t) = open_typed(repo, repo_path, image)?;
                    (input, c, AnyTyped::Sha512(t))
                }
                Err(RepositoryOpenError::AlgorithmMismatch { .. }) => {
                    let repo = Repository::<Sha256HashValue>::open_path(cwd, repo_path)
                        .map_err(|e| open_error(repo_path, e))?;
                    let (input, c, t) = open_typed(repo, repo_path, image)?;
                    (input, c, AnyTyped::Sha256(t))
                }
                Err(e) => return Err(open_error(repo_path, e)),
            };
        let mut input = input;
        input.names = names;
        Ok(ComposefsImage {
            input,
            repo_path: repo_path.to_path_buf(),
            verify,
            reflinked: AtomicU64::new(0),
            written: AtomicU64::new(0),
            compressions,
            typed,
        })
    }

    fn feed<H: FsVerityHashValue>(
        &self,
        t: &Typed<H>,
        index: usize,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<()> {
        let diff_id = layer.diff_id.to_string();
        let place = ObjectPlace {
            repo_path: &self.repo_path,
            layer: &diff_id,
        };
        let verity = t
            .layers
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no layer {index}")))?;
        check_splitstream(&object_path(&self.repo_path, verity))
            .map_err(|e| place.damaged(format!("its splitstream: {e}")))?;
        let mut stream = t
            .repo
            .open_stream("", Some(verity), Some(LAYER_CONTENT_TYPE))
            .map_err(|e| place.damaged(format!("its splitstream cannot be read ({e:#})")))?;
        let report = |written| {
            progress(LayerBytes {
                written,
                read: written,
            })
        };
        // The objects in the order the stream first names them: a helper asks the kernel for the
        // next ones while this thread copies and hashes (a cold disk sees many requests at once).
        // (Their ids, 64 bytes each: the paths are made one at a time by the helper.)
        let mut objects = Vec::new();
        stream
            .get_object_refs(|id| objects.push(id.clone()))
            .map_err(|e| place.damaged(format!("{e:#}")))?;
        let ra = ReadAhead::new(READ_AHEAD_LEAD);
        std::thread::scope(|s| {
            s.spawn(|| {
                ra.run(objects.iter().map(|id| {
                    let p = place.object_path(id);
                    let size = std::fs::metadata(&p).map_or(0, |m| m.len());
                    (p, size)
                }))
            });
            let _stop = StopOnDrop(&ra);
            let how = (self.verify, Some(&ra));
            feed_splitstream(&place, stream, how, sink, report)
        })
    }
}

impl LayerProducer for ComposefsImage {
    fn sink_hashes(&self, _index: usize) -> bool {
        true
    }

    fn produce(
        &self,
        index: usize,
        layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced> {
        let (reflinked, written) = (sink.reflinked, sink.written);
        match &self.typed {
            AnyTyped::Sha256(t) => self.feed(t, index, layer, sink, progress)?,
            AnyTyped::Sha512(t) => self.feed(t, index, layer, sink, progress)?,
        }
        self.reflinked
            .fetch_add(sink.reflinked - reflinked, Ordering::Relaxed);
        self.written
            .fetch_add(sink.written - written, Ordering::Relaxed);
        Ok(Produced {
            diff_id: None,
            compression: self
                .compressions
                .get(index)
                .copied()
                .unwrap_or(Compression::None),
            toc: None,
            partial: false,
        })
    }
}

/// Why a repository cannot be opened, in our classes: not there, not ours to read, from another
/// composefs version, or damaged.
fn open_error(repo_path: &Path, e: RepositoryOpenError) -> Error {
    let shown = repo_path.display();
    match e {
        RepositoryOpenError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            Error::not_found(
                shown.to_string(),
                format!(
                    "no composefs repository at {shown}: name the directory that holds meta.json, objects/ and streams/"
                ),
            )
        }
        RepositoryOpenError::MetadataMissing => Error::not_found(
            shown.to_string(),
            format!(
                "{shown} is not a composefs repository (no meta.json): name the directory that holds meta.json, objects/ and streams/"
            ),
        ),
        RepositoryOpenError::Io(io) => Error::io("opening the composefs repository", repo_path, io),
        RepositoryOpenError::OldFormatRepository => Error::Unsupported(format!(
            "the composefs repository {shown} predates meta.json (made by an older bootc): upgrade it with bootc or `cfsctl init` (we never write to it)"
        )),
        e @ (RepositoryOpenError::UnsupportedVersion { .. }
        | RepositoryOpenError::IncompatibleFeatures(_)) => Error::Unsupported(format!(
            "the composefs repository {shown}: {e}; a newer composefs wrote it"
        )),
        e => Error::Composefs {
            repo: repo_path.to_path_buf(),
            detail: format!("cannot be opened ({e})"),
        },
    }
}

/// An opened image: what to import, each layer blob's compression, the layer streams.
type Parts<H> = (ImageInput, Vec<Compression>, Typed<H>);

/// The image's documents and layer streams in a repository of one algorithm.
fn open_typed<H: FsVerityHashValue>(
    repo: Repository<H>,
    repo_path: &Path,
    image: &ImageSelector,
) -> Result<Parts<H>> {
    let damaged = |detail: String| Error::Composefs {
        repo: repo_path.to_path_buf(),
        detail,
    };
    let loc = format!("composefs repository {}", repo_path.display());
    let manifest_digest: Digest = match image {
        ImageSelector::Tag(tag) => match resolve_tag(repo_path, tag) {
            Ok(Some(d)) => d,
            Ok(None) => {
                return Err(Error::not_found(
                    tag.clone(),
                    format!(
                        "no image tagged {tag:?} in the {loc} (tags are under streams/refs/oci/): name an image it holds, by tag or manifest digest"
                    ),
                ));
            }
            Err(e) => return Err(damaged(format!("tag {tag:?} cannot be read ({e})"))),
        },
        ImageSelector::Manifest(d) => d.clone(),
    };
    let manifest_id = format!("oci-manifest-{manifest_digest}");
    if repo
        .has_stream(&manifest_id)
        .map_err(|e| damaged(format!("{e:#}")))?
        .is_none()
    {
        return Err(Error::not_found(
            manifest_digest.to_string(),
            format!("the {loc} holds no manifest {manifest_digest}: name an image it holds"),
        ));
    }
    let (manifest_bytes, manifest_refs) =
        read_document(&repo, repo_path, &manifest_id, None, &damaged)?;
    check_digest(&manifest_bytes, &manifest_digest, "manifest", &damaged)?;
    let manifest = parse_manifest(&manifest_bytes, &manifest_digest, &loc)?;
    let config_digest = parse_digest(&manifest.config.digest, "the config")?;
    let config_verity = manifest_refs
        .get(format!("config:{config_digest}").as_str())
        .ok_or_else(|| damaged(format!("{manifest_id} names no config stream")))?;
    let (config_bytes, config_refs) = read_document(
        &repo,
        repo_path,
        &format!("oci-config-{config_digest}"),
        Some(config_verity),
        &damaged,
    )?;
    check_digest(&config_bytes, &config_digest, "config", &damaged)?;
    let compressions = manifest
        .layers
        .iter()
        .map(|l| blob_compression(&l.media_type))
        .collect();
    let input = assemble(
        manifest_bytes,
        manifest_digest,
        &manifest,
        config_bytes,
        config_digest,
        &loc,
    )?;
    let layers = input
        .layers
        .iter()
        .map(|l| {
            config_refs
                .get(l.diff_id.to_string().as_str())
                .cloned()
                .ok_or_else(|| damaged(format!("layer {} has no splitstream", l.diff_id)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((input, compressions, Typed { repo, layers }))
}

/// The DiffID of the layer splitstream in the file `stream`, whose external objects are in the
/// repository at `repo_path` (read only as far as the stream references them): the layer's tar
/// rebuilt and hashed, nothing written. Any damage — of the stream or an object — is an error.
pub fn layer_stream_diff_id(repo_path: &Path, stream: &Path) -> Result<Digest> {
    let place = ObjectPlace {
        repo_path,
        layer: "(given)",
    };
    check_splitstream(stream).map_err(|e| place.damaged(format!("its splitstream: {e}")))?;
    let file =
        crate::fsutil::open_regular(None, stream).map_err(|e| Error::io("opening", stream, e))?;
    let mut sink = LayerSink::digest_only();
    let cwd = rustix::fs::CWD;
    match Repository::<Sha512HashValue>::open_path(cwd, repo_path) {
        Ok(_) => {
            let reader =
                composefs::splitstream::SplitStreamReader::<Sha512HashValue>::new(file, None)
                    .map_err(|e| place.damaged(format!("its splitstream ({e:#})")))?;
            feed_splitstream(&place, reader, (false, None), &mut sink, |_| {})?;
        }
        Err(RepositoryOpenError::AlgorithmMismatch { .. }) => {
            Repository::<Sha256HashValue>::open_path(cwd, repo_path)
                .map_err(|e| open_error(repo_path, e))?;
            let reader =
                composefs::splitstream::SplitStreamReader::<Sha256HashValue>::new(file, None)
                    .map_err(|e| place.damaged(format!("its splitstream ({e:#})")))?;
            feed_splitstream(&place, reader, (false, None), &mut sink, |_| {})?;
        }
        Err(e) => return Err(open_error(repo_path, e)),
    }
    let (_, diff_id) = sink.finish();
    diff_id.ok_or_else(|| Error::Internal("a digest-only sink gave no digest".into()))
}

/// A splitstream's named references (name → stream).
type NamedRefs<H> = HashMap<Box<str>, H>;

/// A document kept as a splitstream of one external object (a manifest, a config): its bytes,
/// and the stream's named references (config → its layers' streams).
fn read_document<H: FsVerityHashValue>(
    repo: &Repository<H>,
    repo_path: &Path,
    content_id: &str,
    verity: Option<&H>,
    damaged: &dyn Fn(String) -> Error,
) -> Result<(Vec<u8>, NamedRefs<H>)> {
    let file = match verity {
        Some(v) => object_path(repo_path, v),
        None => repo_path.join("streams").join(content_id),
    };
    check_splitstream(&file).map_err(|e| damaged(format!("{content_id}: {e}")))?;
    let mut stream = repo
        .open_stream(content_id, verity, None)
        .map_err(|e| damaged(format!("{content_id} cannot be read ({e:#})")))?;
    let mut objects = Vec::new();
    stream
        .get_object_refs(|id| objects.push(id.clone()))
        .map_err(|e| damaged(format!("{content_id}: {e:#}")))?;
    let [object] = objects.as_slice() else {
        return Err(damaged(format!(
            "{content_id} holds {} objects, not one",
            objects.len()
        )));
    };
    let file = crate::fsutil::open_regular(None, &object_path(repo_path, object))
        .map_err(|e| damaged(format!("the object of {content_id} cannot be opened ({e})")))?;
    let bytes = super::read_small(file, DOCUMENT_LIMIT, content_id)?;
    Ok((bytes, stream.into_named_refs()))
}

/// The file of object `id` in the repository at `repo_path`.
fn object_path<H: FsVerityHashValue>(repo_path: &Path, id: &H) -> PathBuf {
    let hex = id.to_hex();
    let (dir, rest) = hex.split_at(2.min(hex.len()));
    repo_path.join("objects").join(dir).join(rest)
}

/// Checks that every section a splitstream's header names lies inside the file, before the
/// composefs reader allocates buffers of the sizes it reads there (a damaged or crafted stream
/// would otherwise make it ask for any amount of memory). Old-format headers are left to it.
pub(crate) fn check_splitstream(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f =
        crate::fsutil::open_regular(None, path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let mut head = [0u8; 32];
    f.read_exact(&mut head)
        .map_err(|_| "shorter than a splitstream header".to_string())?;
    if &head[..11] != b"SplitStream" {
        return Ok(());
    }
    let range = |b: &[u8]| -> (u64, u64) {
        let mut s = [0u8; 8];
        let mut e = [0u8; 8];
        s.copy_from_slice(&b[..8]);
        e.copy_from_slice(&b[8..16]);
        (u64::from_le_bytes(s), u64::from_le_bytes(e))
    };
    let inside = |(s, e): (u64, u64)| s <= e && e <= len;
    let info = range(&head[16..32]);
    if !inside(info) || info.1 - info.0 < 64 || info.1 - info.0 > 4096 {
        return Err("its header names an info section outside the file".into());
    }
    let mut buf = vec![0u8; usize::try_from(info.1 - info.0).unwrap_or(64)];
    f.seek(SeekFrom::Start(info.0))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| e.to_string())?;
    for i in 0..4 {
        if !inside(range(&buf[i * 16..i * 16 + 16])) {
            return Err(
                "its header names a section outside the file (truncated or damaged)".into(),
            );
        }
    }
    Ok(())
}

fn check_digest(
    bytes: &[u8],
    digest: &Digest,
    what: &str,
    damaged: &dyn Fn(String) -> Error,
) -> Result<()> {
    let actual = Digest::from_sha256(sha2::Sha256::digest(bytes).into());
    if &actual != digest {
        return Err(damaged(format!(
            "the {what} {digest} does not match its content (sha256 is {actual})"
        )));
    }
    Ok(())
}
