//! Pushing an image of a store to a registry natively (`export IMAGE docker://NAME`), as
//! `podman push` does it: when every blob the stored manifest names is on the destination already
//! (the registry it came from, or mounted there from a repository of the same registry another
//! name of the image is in), the config and that manifest are put byte for byte, so the image
//! keeps its digest; otherwise each layer is a blob the destination has already — the one it was
//! pulled as, or the one an earlier push made of it (the blob-info cache) — or its tar is rebuilt,
//! compressed and uploaded in one pass (a chunked `PATCH` streamed from the compressor, its digest
//! known at the end and given in the closing `PUT`), two layers at a time, then the config, then a
//! new OCI manifest naming them.
//! Nothing of the store is written.

use std::io::Write;

use storage_format::{Digest, ImageRecord, LayerRecord};

use crate::blob_info_cache::BlobInfoCache;
use crate::error::{Error, Result};
use crate::export::{
    Annotations, LayerCompression, LayerWriteError, compressed_layer, stored_annotations,
};

/// A blob the destination has for a layer: media type, digest, size, annotations.
type KnownBlob = (&'static str, Digest, u64, Option<Annotations>);
use crate::source::image_proxy::FetchOptions;
use crate::source::registry::client::Repo;
use crate::source::registry::{auth, config, tls};
use crate::store::Store;

/// What a push did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PushReport {
    /// The manifest's digest on the registry.
    pub manifest_digest: Digest,
    /// Layers uploaded (compressed here).
    pub uploaded: usize,
    /// Layers already there (or mounted from another repository).
    pub reused: usize,
    /// Compressed bytes sent.
    pub bytes_sent: u64,
}

/// The one-line error for an answer the registry should not have given.
fn answered(image: &str, what: &str, resp: &ureq::http::Response<ureq::Body>) -> Error {
    let s = resp.status();
    Error::Remote {
        image: image.to_string(),
        message: format!(
            "the registry answered {s} to {what}{}",
            if s == 403 || s == 401 {
                ": check that the credentials may push there (podman login)"
            } else {
                ""
            }
        ),
        transient: s == 429 || s.is_server_error(),
    }
}

/// A response header as text.
fn header<'a>(resp: &'a ureq::http::Response<ureq::Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether the destination has blob `digest`.
fn has_blob(repo: &Repo, digest: &str, image: &str) -> Result<bool> {
    let resp = repo.send(
        "HEAD",
        &repo.url(&format!("blobs/{digest}")),
        &[],
        &[],
        image,
    )?;
    match resp.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        _ => Err(answered(image, &format!("HEAD blob {digest}"), &resp)),
    }
}

/// Mounts blob `digest` from repository `from` of the same registry; whether it worked.
fn mount(repo: &Repo, digest: &str, from: &str, image: &str) -> Result<bool> {
    let url = repo.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
    let resp = repo.send("POST", &url, &[], &[], image)?;
    if resp.status() == 202 {
        // The registry started an upload instead: cancelled, as c/image does.
        if let Some(l) = header(&resp, "location") {
            let _ = repo.send("DELETE", &repo.absolute(l), &[], &[], image);
        }
    }
    Ok(resp.status() == 201)
}

/// Starts an upload; its location.
fn start_upload(repo: &Repo, image: &str) -> Result<String> {
    let resp = repo.send("POST", &repo.url("blobs/uploads/"), &[], &[], image)?;
    if resp.status() != 202 {
        return Err(answered(image, "starting an upload", &resp));
    }
    header(&resp, "location")
        .map(|l| repo.absolute(l))
        .ok_or_else(|| Error::Remote {
            image: image.to_string(),
            message: "the registry started an upload without a Location".into(),
            transient: false,
        })
}

/// `location` with `digest` as its query's `digest`.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Closes the upload at `location` as `digest`.
fn finish_upload(
    repo: &Repo,
    location: &str,
    digest: &str,
    body: &[u8],
    image: &str,
) -> Result<()> {
    let resp = repo.send(
        "PUT",
        &with_digest(location, digest),
        &[("Content-Type", "application/octet-stream")],
        body,
        image,
    )?;
    if resp.status() != 201 {
        return Err(answered(
            image,
            &format!("closing the upload of {digest}"),
            &resp,
        ));
    }
    Ok(())
}

/// Uploads a small blob (the config) unless the destination has it.
fn put_small(repo: &Repo, bytes: &[u8], image: &str) -> Result<Digest> {
    let digest = Digest::of_bytes(bytes);
    if !has_blob(repo, digest.as_str(), image)? {
        let location = start_upload(repo, image)?;
        finish_upload(repo, &location, digest.as_str(), bytes, image)?;
    }
    Ok(digest)
}

/// Rebuilds, compresses and uploads one layer in one pass: (digest, size).
fn upload_layer(
    store: &Store,
    layer: &LayerRecord,
    repo: &Repo,
    compression: LayerCompression,
    image: &str,
) -> Result<(Digest, u64, Option<Annotations>)> {
    let location = start_upload(repo, image)?;
    let (sent, produced) = std::thread::scope(|s| {
        // The pipe lives in the scope: should the upload panic, the reader is dropped on the way
        // out and the compressor stops instead of blocking on a full pipe.
        let (mut reader, writer) = match std::io::pipe() {
            Ok(p) => p,
            Err(e) => {
                let e = Error::io("creating a pipe for", layer.id.as_str(), e);
                return (
                    Err(e),
                    Err(LayerWriteError::Other(Error::Internal(String::new()))),
                );
            }
        };
        let producer = s.spawn(move || {
            compressed_layer(
                store,
                layer,
                std::io::BufWriter::with_capacity(256 << 10, writer),
                compression,
            )
            .and_then(|(mut out, digest, len, _, annotations)| {
                out.flush().map_err(LayerWriteError::Write)?;
                Ok((digest, len, annotations))
            })
        });
        let sent = repo.send_stream(
            "PATCH",
            &location,
            &[("Content-Type", "application/octet-stream")],
            &mut reader,
            image,
        );
        // The compressor stops (its pipe broken) if the upload did.
        drop(reader);
        let produced = producer.join().unwrap_or_else(|_| {
            Err(LayerWriteError::Other(Error::Internal(
                "the compressor panicked".into(),
            )))
        });
        (sent, produced)
    });
    // An upload that failed explains a compressor that could not write (a broken pipe): its
    // error, a network one (retried), comes first.
    let resp = match (sent, produced) {
        (Err(e), _) => return Err(e),
        (Ok(resp), _) if resp.status() != 202 => {
            return Err(answered(
                image,
                &format!("the upload of layer {}", layer.id),
                &resp,
            ));
        }
        (Ok(_), Err(LayerWriteError::Write(e))) => {
            return Err(Error::Remote {
                image: image.to_string(),
                message: format!("uploading layer {}: {e}", layer.id),
                transient: true,
            });
        }
        (Ok(_), Err(LayerWriteError::Other(e))) => return Err(e),
        (Ok(resp), Ok(produced)) => (resp, produced),
    };
    let (resp, (digest, len, annotations)) = resp;
    let location = header(&resp, "location")
        .map(|l| repo.absolute(l))
        .unwrap_or(location);
    finish_upload(repo, &location, digest.as_str(), &[], image)?;
    Ok((digest, len, annotations))
}

/// A blob already on the destination (or mounted there from `siblings`) that holds layer
/// `layer`: the blob it was pulled as (its record's compressed digest), or the one an earlier push
/// made of it compressed as `compression` (the blob-info cache). Its media type, digest, size.
fn known_blob(
    repo: &Repo,
    layer: &LayerRecord,
    compression: LayerCompression,
    cache: &std::sync::Mutex<BlobInfoCache>,
    siblings: &[String],
    name: &str,
) -> Result<Option<KnownBlob>> {
    let Some(diff_id) = layer.diff_digest.as_deref() else {
        return Ok(None);
    };
    let mut candidates: Vec<(&'static str, String, u64, Option<Annotations>)> = Vec::new();
    let pulled_as = match layer.compression {
        Some(2) => Some(LayerCompression::Gzip),
        Some(4) => Some(LayerCompression::Zstd),
        None | Some(0) => Some(LayerCompression::None),
        _ => None,
    };
    if let (Some(kind), Some(d), Some(n)) = (
        pulled_as,
        &layer.compressed_diff_digest,
        layer.compressed_size.and_then(|n| u64::try_from(n).ok()),
    ) {
        candidates.push((kind.media_type(), d.clone(), n, None));
    }
    if let Some(b) = cache
        .lock()
        .ok()
        .and_then(|c| c.get(diff_id, compression.cache_key()).cloned())
    {
        let a = (!b.annotations.is_empty()).then_some(b.annotations);
        candidates.push((compression.media_type(), b.digest, b.size, a));
    }
    for (media_type, digest, size, annotations) in candidates {
        let Ok(parsed) = Digest::parse(&digest) else {
            continue;
        };
        if has_blob(repo, &digest, name)? {
            return Ok(Some((media_type, parsed, size, annotations)));
        }
        for from in siblings {
            if mount(repo, &digest, from, name)? {
                return Ok(Some((media_type, parsed, size, annotations)));
            }
        }
    }
    Ok(None)
}

/// The stored manifest, when its blobs can all be found on the destination (there, or mounted
/// from `siblings`): its bytes and media type. `None`: the layers must be uploaded.
fn reusable_manifest(
    store: &Store,
    image: &ImageRecord,
    repo: &Repo,
    siblings: &[String],
    layers: usize,
    name: &str,
) -> Result<Option<(Vec<u8>, String)>> {
    let Ok(bytes) = crate::store::copy::read_big_data(store, image, "manifest") else {
        return Ok(None);
    };
    let Ok(m) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let Some(descs) = m["layers"].as_array() else {
        return Ok(None);
    };
    if descs.len() != layers
        || m["config"]["digest"].as_str() != Some(&format!("sha256:{}", image.id))
    {
        return Ok(None);
    }
    for d in descs {
        let Some(digest) = d["digest"].as_str() else {
            return Ok(None);
        };
        if has_blob(repo, digest, name)? {
            continue;
        }
        let mut mounted = false;
        for from in siblings {
            if mount(repo, digest, from, name)? {
                mounted = true;
                break;
            }
        }
        if !mounted {
            return Ok(None);
        }
    }
    let media_type = m["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.manifest.v1+json")
        .to_string();
    Ok(Some((bytes, media_type)))
}

/// Pushes `image` of `store` to `docker://dest` (`dest` a name with a tag, or none for
/// `latest`), new layers compressed as `compression`.
pub fn push(
    store: &Store,
    image: &ImageRecord,
    dest: &str,
    fetch: &FetchOptions,
    compression: LayerCompression,
) -> Result<PushReport> {
    let name = crate::image_ref::ImageRef::Docker(dest.to_string()).to_string();
    fetch.check_authfile()?;
    let r = crate::reference::parse(dest)?;
    if r.digest.is_some() {
        return Err(Error::InvalidInput(format!(
            "{name}: a push names a tag, not a digest: drop the @sha256:… part"
        )));
    }
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let conf_insecure = config::push_insecure(&r.domain, &r.path)?;
    let insecure = fetch.tls_verify.map_or(conf_insecure, |v| !v);
    let tls = tls::TlsFiles::for_host(&r.domain, fetch.cert_dir.as_deref())?;
    let creds = auth::credentials(fetch, &r.domain, &r.path)?;
    let mut repo = fetch.retry.run(&format!("opening {name}"), || {
        Repo::connect(&r.domain, &r.path, insecure, &tls, creds.clone(), &name)
    })?;
    let layers = store.image_layers(image)?;
    // Other repositories of the same registry the image is named in: blobs may be mounted.
    let mut siblings: Vec<String> = image
        .names
        .iter()
        .filter_map(|n| crate::reference::parse(n).ok())
        .filter(|n| n.domain == r.domain && n.path != r.path)
        .map(|n| n.path)
        .collect();
    siblings.sort();
    siblings.dedup();
    repo.push = true;
    repo.mount_from = siblings;
    let siblings = &repo.mount_from;
    let config_key = format!("sha256:{}", image.id);
    let config = crate::store::copy::read_big_data(store, image, &config_key)?;
    let (manifest, media_type, uploaded, bytes_sent) = match fetch
        .retry
        .run(&format!("checking the blobs of {name}"), || {
            reusable_manifest(store, image, &repo, siblings, layers.len(), &name)
        })? {
        Some((m, t)) => {
            fetch
                .retry
                .run(&format!("uploading the config to {name}"), || {
                    put_small(&repo, &config, &name)
                })?;
            (m, t, 0, 0)
        }
        None => {
            let cache = std::sync::Mutex::new(BlobInfoCache::load());
            let blobs = crate::parallel::map_in_order(&layers, 2, |l| {
                fetch
                    .retry
                    .run(&format!("uploading layer {} to {name}", l.id), || {
                        if let Some(known) =
                            known_blob(&repo, l, compression, &cache, siblings, &name)?
                        {
                            return Ok((known, false));
                        }
                        let (digest, size, annotations) =
                            upload_layer(store, l, &repo, compression, &name)?;
                        if let (Some(d), Ok(mut c)) = (&l.diff_digest, cache.lock()) {
                            c.record(d, compression.cache_key(), &digest, size, &annotations);
                        }
                        Ok(((compression.media_type(), digest, size, annotations), true))
                    })
            })
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            if let Ok(c) = cache.into_inner() {
                c.save();
            }
            let config_digest = fetch
                .retry
                .run(&format!("uploading the config to {name}"), || {
                    put_small(&repo, &config, &name)
                })?;
            let descs: Vec<crate::source::oci_types::LayerDescriptor<'_>> = blobs
                .iter()
                .map(|((t, d, n, a), _)| (*t, d.clone(), *n, a.as_ref()))
                .collect();
            let m = crate::source::oci_types::manifest_bytes(
                &config_digest,
                config.len(),
                &descs,
                stored_annotations(store, image),
            );
            let sent = blobs
                .iter()
                .filter(|(_, up)| *up)
                .map(|((_, _, n, _), _)| n)
                .sum();
            (
                m,
                "application/vnd.oci.image.manifest.v1+json".to_string(),
                blobs.iter().filter(|(_, up)| *up).count(),
                sent,
            )
        }
    };
    let digest = Digest::of_bytes(&manifest);
    fetch
        .retry
        .run(&format!("putting the manifest of {name}"), || {
            let resp = repo.send(
                "PUT",
                &repo.url(&format!("manifests/{tag}")),
                &[("Content-Type", &media_type)],
                &manifest,
                &name,
            )?;
            if resp.status() != 201 {
                return Err(answered(&name, "the manifest", &resp));
            }
            if let Some(d) = header(&resp, "docker-content-digest")
                && d != digest.as_str()
            {
                return Err(Error::DigestMismatch {
                    what: format!("the manifest pushed to {name}"),
                    expected: digest.to_string(),
                    actual: d.to_string(),
                });
            }
            Ok(())
        })?;
    Ok(PushReport {
        manifest_digest: digest,
        uploaded,
        reused: layers.len() - uploaded,
        bytes_sent,
    })
}
