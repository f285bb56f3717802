//! An image the proxy has open: its manifest as OCI, its config, what `GetLayerInfo` says of its
//! layers, and its blobs as verified streams.
//!
//! Two kinds, as c/image has them: an image of a store (`containers-storage:`), whose layers are
//! served uncompressed by DiffID, rebuilt from the tar-split and the layer's tree; and an image of
//! a blob source (`oci:`, `oci-archive:`, and through skopeo `docker://`, `dir:`,
//! `docker-archive:`), whose blobs are served as the manifest names them.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use storage_format::{ImageRecord, LayerRecord};

use super::ServeOptions;
use crate::Digest;
use crate::error::{Error, Result};
use crate::image_ref::ImageRef;
use crate::layer::BlobSource;
use crate::layer::hashing_writer::HashingWriter;
use crate::layer::sink::LayerSink;
use crate::source::manifest_rules::{MEDIA_DOCKER_MANIFEST, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST};
use crate::store::{Store, StoreConfig};

/// How many bytes of a stored layer's stream are gathered before they are written into its pipe.
const PIPE_BATCH: usize = 128 << 10;

/// How much of the next layer's files is asked for while a layer is served.
const PREFETCH: u64 = 32 << 20;

/// One entry of `GetLayerInfo`: what the client asks `GetBlob` for.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LayerInfo {
    digest: String,
    size: u64,
    media_type: String,
}

/// Where the blobs of an image come from.
enum Blobs {
    /// A store's layers by DiffID (in the order of `layer_infos`).
    Stored {
        store: Arc<Store>,
        layers: HashMap<String, Arc<LayerRecord>>,
    },
    /// A source's blobs by digest, with their sizes.
    Source(Box<dyn BlobSource + Send>),
}

/// An open image.
pub(crate) struct ServedImage {
    /// The manifest, converted to OCI.
    pub manifest: Vec<u8>,
    /// The digest of the manifest as the source has it (before any conversion).
    pub manifest_digest: String,
    /// The config.
    pub config: Vec<u8>,
    config_digest: Digest,
    /// What `GetLayerInfo` answers.
    pub layer_infos: Vec<LayerInfo>,
    blobs: Blobs,
}

impl std::fmt::Debug for ServedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedImage")
            .field("manifest_digest", &self.manifest_digest)
            .finish_non_exhaustive()
    }
}

/// Opens `reference` (`containers-storage:NAME`, `oci:DIR[:TAG]`, `docker://…`, …); `None` when
/// it does not exist (for `OpenImageOptional`).
pub(crate) fn open(reference: &str, opts: &ServeOptions) -> Result<Option<ServedImage>> {
    let r = ImageRef::parse(reference)?;
    // The image missing (no layout, no such tag) is "absent"; a blob missing from an image that is
    // there is an error of its own.
    let absent = |e: Error| match e {
        Error::NotFound { what, .. } if !what.starts_with("sha256:") => Ok(None),
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        e => Err(e),
    };
    match &r {
        ImageRef::ContainersStorage { store, name } => {
            let stores = match store {
                Some(spec) => vec![StoreConfig::of_spec(Some(spec))?],
                None => {
                    let default = StoreConfig::resolve(None, None, None)?;
                    let extra = opts.additional_stores.iter().map(|root| StoreConfig {
                        graphroot: root.clone(),
                        ..default.clone()
                    });
                    std::iter::once(default.clone()).chain(extra).collect()
                }
            };
            for config in stores {
                if !opts.insecure_policy {
                    crate::source::policy::load(opts.fetch.signature_policy.as_deref())?.check(
                        &crate::source::policy::PolicyRef::storage(
                            config.driver.name(),
                            &config.graphroot,
                            name,
                        ),
                    )?;
                }
                let store = match Store::open_read_only(config) {
                    Ok(s) => s,
                    // A store that does not exist holds no image (bootc's additional store may be
                    // the only one there is).
                    Err(Error::Store(_)) => continue,
                    Err(e) => return Err(e),
                };
                let images = store.images()?;
                match crate::store::lookup::find_image(&images, name) {
                    Ok(img) => return stored(Arc::new(store), img).map(Some),
                    Err(Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(None)
        }
        ImageRef::OciDir { .. } | ImageRef::OciArchive { .. } => {
            if !opts.insecure_policy {
                crate::source::policy::check_source(&r, opts.fetch.signature_policy.as_deref())?;
            }
            match crate::source::open_unchecked(&r, &opts.fetch) {
                Ok(s) => from_source(s).map(Some),
                Err(e) => absent(e),
            }
        }
        r if r.is_proxied() => {
            if !opts.insecure_policy {
                crate::source::policy::check_source(r, opts.fetch.signature_policy.as_deref())?;
            }
            from_source(crate::source::open_unchecked(r, &opts.fetch)?).map(Some)
        }
        other => Err(Error::Unsupported(format!(
            "{other} in the image proxy (served: containers-storage:, oci:, oci-archive:, docker://, dir:, docker-archive:)"
        ))),
    }
}

/// The image `img` of `store`: its layers served uncompressed by DiffID, as c/image's storage
/// source does.
fn stored(store: Arc<Store>, img: &ImageRecord) -> Result<ServedImage> {
    let manifest = crate::store::copy::read_big_data(&store, img, "manifest")?;
    let config = crate::store::copy::read_big_data(&store, img, &format!("sha256:{}", img.id))?;
    let config_digest = Digest::of_bytes(&config);
    let manifest_digest = Digest::of_bytes(&manifest).to_string();
    let docker = media_type(&manifest) == MEDIA_DOCKER_MANIFEST;
    let chain = {
        let _read = store.layers_lock().lock_read()?;
        crate::store::copy::layer_chain(&store.read_layers()?.0, img)?
    };
    let mut layer_infos = Vec::new();
    let mut layers = HashMap::new();
    for l in chain {
        let (Some(diff), Some(size)) = (l.diff_digest.clone(), l.diff_size) else {
            return Err(Error::Damaged {
                what: format!("layer {}", l.id),
                detail: "it records no DiffID or size".into(),
            });
        };
        layer_infos.push(LayerInfo {
            digest: diff.clone(),
            size: u64::try_from(size).unwrap_or(0),
            media_type: if docker {
                "application/vnd.docker.image.rootfs.diff.tar"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            }
            .into(),
        });
        layers.insert(diff, Arc::new(l));
    }
    Ok(ServedImage {
        manifest: to_oci(&manifest)?,
        manifest_digest,
        config,
        config_digest,
        layer_infos,
        blobs: Blobs::Stored { store, layers },
    })
}

/// An image of a blob source.
fn from_source(s: crate::source::OpenedSource) -> Result<ServedImage> {
    let oci = to_oci(&s.image.manifest)?;
    let m: crate::source::oci_types::Manifest = serde_json::from_slice(&oci)
        .map_err(|e| Error::InvalidInput(format!("the image's manifest: {e}")))?;
    let layer_infos = m
        .layers
        .iter()
        .map(|d| LayerInfo {
            digest: d.digest.clone(),
            size: d.size,
            media_type: d.media_type.clone(),
        })
        .collect();
    Ok(ServedImage {
        manifest: oci,
        manifest_digest: s.image.manifest_digest.to_string(),
        config: s.image.config,
        config_digest: s.image.config_digest,
        layer_infos,
        blobs: Blobs::Source(s.blobs),
    })
}

/// The manifest's `mediaType` (OCI when it has none).
fn media_type(manifest: &[u8]) -> String {
    serde_json::from_slice::<Value>(manifest)
        .ok()
        .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
        .unwrap_or_else(|| MEDIA_OCI_MANIFEST.to_string())
}

/// A Docker schema 2 manifest as OCI, as c/image converts it (media types mapped, digests,
/// sizes, URLs and annotations kept); an OCI manifest as it is.
pub(crate) fn to_oci(manifest: &[u8]) -> Result<Vec<u8>> {
    if media_type(manifest) != MEDIA_DOCKER_MANIFEST {
        return Ok(manifest.to_vec());
    }
    let mut v: Value = serde_json::from_slice(manifest)
        .map_err(|e| Error::InvalidInput(format!("the image's manifest: {e}")))?;
    v["mediaType"] = MEDIA_OCI_MANIFEST.into();
    v["config"]["mediaType"] = MEDIA_OCI_CONFIG.into();
    if let Some(layers) = v.get_mut("layers").and_then(Value::as_array_mut) {
        for l in layers {
            let oci = match l.get("mediaType").and_then(Value::as_str) {
                Some("application/vnd.docker.image.rootfs.diff.tar") => {
                    "application/vnd.oci.image.layer.v1.tar"
                }
                Some("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip") => {
                    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
                }
                _ => "application/vnd.oci.image.layer.v1.tar+gzip",
            };
            l["mediaType"] = oci.into();
        }
    }
    serde_json::to_vec(&v).map_err(|e| Error::Internal(format!("converting a manifest: {e}")))
}

/// Fails unless a stream hashed to `digest` and was `size` bytes long (when one is expected).
fn check_stream(digest: &Digest, actual: Digest, size: Option<u64>, len: u64) -> Result<()> {
    if let Some(size) = size
        && size != len
    {
        return Err(Error::SizeMismatch {
            what: format!("blob {digest}"),
            expected: size,
            found: len,
        });
    }
    if actual != *digest {
        return Err(Error::DigestMismatch {
            what: "blob".into(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

impl ServedImage {
    /// The writer of blob `digest` (`size` bytes, if the client knows), verified as it is written;
    /// an error at once when the image has no such blob.
    pub(crate) fn blob(
        self: &Arc<Self>,
        digest: Digest,
        size: Option<u64>,
    ) -> Result<super::pipes::Writer> {
        let me = Arc::clone(self);
        if digest == self.config_digest {
            return Ok(Box::new(move |out, _| {
                let mut v = HashingWriter::new(out);
                v.write_all(&me.config).map_err(|e| Error::Write {
                    what: "the config into its pipe".into(),
                    source: e,
                })?;
                let (_, actual, len) = v.finish();
                check_stream(&digest, actual, size, len)
            }));
        }
        match &self.blobs {
            Blobs::Stored { layers, .. } => {
                if !layers.contains_key(digest.as_str()) {
                    return Err(unknown(&digest));
                }
                Ok(Box::new(move |out, turns| {
                    let Blobs::Stored { store, layers } = &me.blobs else {
                        return Err(Error::Internal("blob kind changed".into()));
                    };
                    let layer = layers
                        .get(digest.as_str())
                        .ok_or_else(|| unknown(&digest))?;
                    // Hashed on another thread while this one reads the files (in its turn; with
                    // no turn after a wait, here).
                    let turn = turns.take();
                    // The next layer's first files asked for meanwhile (ostree-ext reads them in
                    // order; on a cold disk each layer would otherwise start from a standstill).
                    let next = me
                        .layer_infos
                        .iter()
                        .position(|l| l.digest == digest.as_str())
                        .and_then(|i| me.layer_infos.get(i + 1))
                        .and_then(|l| layers.get(&l.digest));
                    if let Some(next) = next {
                        let (store, next) = (Arc::clone(store), Arc::clone(next));
                        let _ = std::thread::Builder::new()
                            .name("proxy-prefetch".into())
                            .spawn(move || store.prefetch_layer(&next, PREFETCH));
                    }
                    // Headers and padding are small writes: gathered before they reach the pipe.
                    let mut out = std::io::BufWriter::with_capacity(PIPE_BATCH, out);
                    let flushed = |w: &mut std::io::BufWriter<&mut File>| {
                        w.flush().map_err(|e| Error::Write {
                            what: "a layer into its pipe".into(),
                            source: e,
                        })
                    };
                    let (diff_id, len) = if turn.is_some() {
                        let mut hashed = super::hash_thread::HashedWriter::new(&mut out)?;
                        store.feed_layer(layer, &mut LayerSink::to_writer_unhashed(&mut hashed))?;
                        hashed.finish()?
                    } else {
                        let mut hashed = HashingWriter::new(&mut out);
                        store.feed_layer(layer, &mut LayerSink::to_writer_unhashed(&mut hashed))?;
                        let (_, diff_id, len) = hashed.finish();
                        (diff_id, len)
                    };
                    flushed(&mut out)?;
                    check_stream(&digest, diff_id, size, len)
                }))
            }
            Blobs::Source(_) => {
                if !self.layer_infos.iter().any(|l| l.digest == digest.as_str()) {
                    return Err(unknown(&digest));
                }
                Ok(Box::new(move |out, _| {
                    let Blobs::Source(blobs) = &me.blobs else {
                        return Err(Error::Internal("blob kind changed".into()));
                    };
                    let mut r = blobs.open_blob(&digest)?;
                    let mut v = HashingWriter::new(out);
                    std::io::copy(&mut r, &mut v)
                        .map_err(|e| Error::read(format!("blob {digest}"), e))?;
                    let (_, actual, len) = v.finish();
                    check_stream(&digest, actual, size, len)
                }))
            }
        }
    }

    /// The writer of blob `digest` for `GetRawBlob`, and its size: the same stream as `GetBlob`'s
    /// (its digest still checked; a mismatch goes to the error pipe).
    pub(crate) fn raw_blob(
        self: &Arc<Self>,
        digest: Digest,
    ) -> Result<(i64, super::pipes::Writer)> {
        let size = if digest == self.config_digest {
            self.config.len() as i64
        } else {
            self.layer_infos
                .iter()
                .find(|l| l.digest == digest.as_str())
                .map(|l| l.size as i64)
                .ok_or_else(|| unknown(&digest))?
        };
        Ok((size, self.blob(digest, None)?))
    }
}

/// A blob the image does not have.
fn unknown(digest: &Digest) -> Error {
    Error::not_found(
        digest.to_string(),
        format!(
            "the image has no blob {digest} (ask for its config or a layer GetLayerInfo lists)"
        ),
    )
}
