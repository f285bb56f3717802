//! Registries natively: a distribution-spec client for pulls, with no skopeo (issue 25, first
//! part). `docker://NAME` is opened here when [`FetchOptions::native`] asks for it: the manifest
//! (OCI or Docker schema 2; an index or list resolved to this machine's platform), the config,
//! then each layer blob streamed from its HTTP response into the layer pipeline, which verifies
//! it. Credentials as c/image finds them ([`auth`]), `insecure`/`blocked` from registries.conf
//! ([`config`]), TLS through the system's OpenSSL with c/image's certificate directories
//! ([`tls`]). A blob whose connection is cut is resumed with
//! `Range` from the byte it stopped at.
//!
//! Mirrors and prefixes of registries.conf are followed: each mirror that serves the reference is
//! tried once in order, then the registry itself; the first that has the manifest serves the
//! config and layers too, and the image keeps the name the user gave.
//!
//! Short names (`pull busybox`) are resolved before, as podman does ([`short_names`]); pushes are
//! in [`crate::push`].

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod config;
mod prefetch;
mod proxy_env;
pub mod short_names;
pub(crate) mod tls;

use std::io::Read;
use std::sync::Arc;

use crate::Digest;
use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::source::OpenedSource;
use crate::source::image_proxy::FetchOptions;
use crate::source::oci_types::host_arch;
use client::{Repo, read_small};

/// The manifest types asked for, as c/image asks for them.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Opens `docker://name` natively.
pub fn open(name: &str, fetch: &FetchOptions) -> Result<OpenedSource> {
    let image = crate::image_ref::ImageRef::Docker(name.to_string()).to_string();
    fetch.check_authfile()?;
    let r = crate::reference::parse(name)?;
    let reference = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let creds = auth::credentials(fetch, &r.domain, &r.path)?;
    // The mirrors in order, then the registry: the first that has the manifest serves it all.
    let sources = config::pull_sources(&r.domain, &r.path, r.digest.is_some())?;
    let mut failures = Vec::new();
    let mut found = None;
    for (i, source) in sources.iter().enumerate() {
        let attempt = || -> Result<(Repo, Vec<u8>, Digest)> {
            let tls = tls::TlsFiles::for_host(&source.host, fetch.cert_dir.as_deref())?;
            // --tls-verify, when given, wins over registries.conf either way (as c/image).
            let insecure = fetch.tls_verify.map_or(source.insecure, |v| !v);
            let creds = if source.host == r.domain {
                creds.clone()
            } else {
                auth::credentials(fetch, &source.host, &source.path)?
            };
            // A mirror is tried once: the next source is the fallback.
            let retry = if source.mirror {
                crate::retry::RetryPolicy::none()
            } else {
                fetch.retry
            };
            retry.run(&format!("opening {image}"), || {
                let repo = Repo::connect(
                    &source.host,
                    &source.path,
                    insecure,
                    &tls,
                    creds.clone(),
                    &image,
                )?;
                let (manifest, digest) = manifest(&repo, &reference, r.digest.as_deref(), &image)?;
                Ok((repo, manifest, digest))
            })
        };
        match attempt() {
            Ok(f) => {
                found = Some(f);
                break;
            }
            Err(e) if i + 1 < sources.len() => {
                tracing::info!(mirror = %source.host, error = %e, "mirror failed, trying the next source");
                failures.push(format!("{}/{}: {e}", source.host, source.path));
            }
            Err(e) if failures.is_empty() => return Err(e),
            Err(e) => {
                return Err(Error::Context {
                    what: format!(
                        "{image} (its mirrors failed first: {})",
                        failures.join("; ")
                    ),
                    source: Box::new(e),
                });
            }
        }
    }
    let Some((repo, mut manifest, mut digest)) = found else {
        return Err(Error::Internal(format!("{image}: no source to pull from")));
    };
    // An index or list: this platform's manifest.
    if let Some(instance) = platform_instance(&manifest, &image)? {
        (manifest, digest) = self::manifest(&repo, &instance, Some(&instance), &image)?;
    }
    let parsed: crate::source::oci_types::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Error::InvalidInput(format!("the manifest of {image}: {e}")))?;
    let config = fetch
        .retry
        .run(&format!("reading the config of {image}"), || {
            small_blob(&repo, &parsed.config.digest, &image)
        })?;
    let input = crate::source::image_proxy::documents(&image, digest.as_str(), manifest, config)?;
    Ok(OpenedSource {
        image: input,
        blobs: Box::new(RegistryBlobs {
            repo: Arc::new(repo),
            image,
            prefetch: prefetch::Prefetch::default(),
            ranges: fetch.partial,
        }),
        retry: fetch.retry,
    })
}

/// The manifest `reference` (a tag or digest) names, and its digest — checked against
/// `want` when the reference is a digest.
fn manifest(
    repo: &Repo,
    reference: &str,
    want: Option<&str>,
    image: &str,
) -> Result<(Vec<u8>, Digest)> {
    let mut resp = repo.get(&format!("manifests/{reference}"), Some(ACCEPT), image)?;
    status(&resp, image, &format!("manifest {reference}"))?;
    let bytes = read_small(&mut resp, image, "reading the manifest")?;
    let digest = Digest::of_bytes(&bytes);
    if let Some(w) = want
        && digest.as_str() != w
    {
        return Err(Error::DigestMismatch {
            what: format!("manifest of {image}"),
            expected: w.to_string(),
            actual: digest.to_string(),
        });
    }
    Ok((bytes, digest))
}

/// For an index or manifest list, the digest of this platform's manifest (`linux/<arch>`).
fn platform_instance(bytes: &[u8], image: &str) -> Result<Option<String>> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::InvalidInput(format!("the manifest of {image}: {e}")))?;
    let Some(list) = v.get("manifests").and_then(|m| m.as_array()) else {
        return Ok(None);
    };
    let found = list.iter().find(|d| {
        let p = &d["platform"];
        p["os"] == "linux" && p["architecture"] == host_arch()
    });
    match found.and_then(|d| d["digest"].as_str()) {
        Some(d) => Ok(Some(d.to_string())),
        None => Err(Error::not_found(
            format!("linux/{} image", host_arch()),
            format!("{image} has no linux/{} image in its list", host_arch()),
        )),
    }
}

/// A small blob (the config) read whole and checked against its digest.
fn small_blob(repo: &Repo, digest: &str, image: &str) -> Result<Vec<u8>> {
    let mut resp = repo.get(&format!("blobs/{digest}"), None, image)?;
    status(&resp, image, &format!("blob {digest}"))?;
    read_small(&mut resp, image, "reading the config")
}

/// Fails unless `resp` is a success: 404 as not found, 429 and 5xx as transient.
fn status(resp: &ureq::http::Response<ureq::Body>, image: &str, what: &str) -> Result<()> {
    let s = resp.status();
    if s.is_success() {
        return Ok(());
    }
    if s == 404 {
        return Err(Error::not_found(
            image.to_string(),
            format!("{image}: the registry has no {what} (check the name and tag)"),
        ));
    }
    Err(Error::Remote {
        image: image.to_string(),
        message: format!("the registry answered {s} for {what}"),
        transient: s == 429 || s.is_server_error(),
    })
}

/// The blobs of an image on a registry, each an HTTP response body.
struct RegistryBlobs {
    repo: Arc<Repo>,
    image: String,
    /// The next blobs, asked for ahead.
    prefetch: prefetch::Prefetch,
    /// Whether ranges are served (partial pulls of zstd:chunked layers).
    ranges: bool,
}

impl BlobSource for RegistryBlobs {
    fn will_fetch(&self, digests: &[Digest]) {
        self.prefetch.announce(digests);
    }

    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let what = format!("blobs/{digest}");
        let resp = match self.prefetch.take(&self.repo, &self.image, digest) {
            Some(answer) => answer?,
            None => self.repo.get(&what, None, &self.image)?,
        };
        status(&resp, &self.image, &format!("blob {digest}"))?;
        let length = content_length(&resp);
        Ok(self.body(resp, what, 0, length, false))
    }

    fn serves_ranges(&self) -> bool {
        self.ranges
    }

    fn open_range(
        &self,
        digest: &Digest,
        start: u64,
        end: u64,
    ) -> Option<Result<Box<dyn Read + Send>>> {
        self.ranges.then(|| self.range(digest, start, end))
    }
}

impl RegistryBlobs {
    /// Bytes `start..end` of blob `digest`: a `Range` request answered `206` from `start`; any
    /// other answer (a registry that serves whole blobs only) is an error, and the caller pulls
    /// the whole blob.
    fn range(&self, digest: &Digest, start: u64, end: u64) -> Result<Box<dyn Read + Send>> {
        let what = format!("blobs/{digest}");
        let range = format!("bytes={start}-{}", end.saturating_sub(1));
        let resp = self
            .repo
            .get_with(&what, &[("Range", &range)], &self.image)?;
        if !answers_range_from(&resp, start) {
            return Err(Error::Unsupported(format!(
                "{}: the registry answered {} to a range request of blob {digest}",
                self.image,
                resp.status()
            )));
        }
        Ok(self.body(resp, what, start, Some(end - start), true))
    }

    /// The body of `resp` (blob path `what`, from byte `start` of it, `length` bytes when
    /// known; `ranged`: resumed with ranges inside that part), resumed where it breaks.
    fn body(
        &self,
        resp: ureq::http::Response<ureq::Body>,
        what: String,
        start: u64,
        length: Option<u64>,
        ranged: bool,
    ) -> Box<dyn Read + Send> {
        Box::new(Body {
            inner: Box::new(resp.into_body().into_reader()),
            read: 0,
            start,
            length,
            ranged,
            resumes: 0,
            repo: self.repo.clone(),
            what,
            image: self.image.clone(),
        })
    }
}

/// Whether `resp` is a `206` whose `Content-Range` starts at byte `from`.
fn answers_range_from(resp: &ureq::http::Response<ureq::Body>, from: u64) -> bool {
    resp.status() == 206
        && resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok())
            == Some(from)
}

/// The `Content-Length` of a response, when it has one.
fn content_length(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    resp.headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// How many times one blob's download is resumed with `Range` after a cut.
const RESUMES: u32 = 3;

/// A blob's response body. A connection that ends before the announced length, or breaks, is
/// resumed from the byte it stopped at (`Range: bytes=N-`, a `206` answer starting there), up to
/// [`RESUMES`] times; past that, or when the registry answers otherwise, it is a transient remote
/// failure (the layer is fetched again from nothing), not a truncated blob. The bytes are verified
/// downstream against the digest either way.
struct Body {
    inner: Box<dyn Read + Send>,
    /// Bytes read so far.
    read: u64,
    /// The blob offset of the first byte (a range's start; 0 for the whole blob).
    start: u64,
    /// How many bytes are announced (the blob's, or the range's).
    length: Option<u64>,
    /// A range of the blob: a resume asks for the rest of that range only.
    ranged: bool,
    resumes: u32,
    repo: Arc<Repo>,
    what: String,
    image: String,
}

impl Body {
    /// Asks for the rest of the blob from `self.read` on; `Err` says why it cannot be resumed.
    fn resume(&mut self) -> std::result::Result<(), String> {
        if self.resumes >= RESUMES {
            return Err(format!("{RESUMES} resumes already"));
        }
        self.resumes += 1;
        std::thread::sleep(std::time::Duration::from_millis(50 << self.resumes));
        let from = self.start + self.read;
        let range = match self.length {
            Some(l) if self.ranged => format!("bytes={from}-{}", self.start + l - 1),
            _ => format!("bytes={from}-"),
        };
        let resp = self
            .repo
            .get_with(&self.what, &[("Range", &range)], &self.image)
            .map_err(|e| e.to_string())?;
        if !answers_range_from(&resp, from) {
            return Err(format!(
                "the registry answered {} to a range request",
                resp.status()
            ));
        }
        tracing::debug!(blob = %self.what, from, "resuming a cut download");
        self.inner = Box::new(resp.into_body().into_reader());
        Ok(())
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let why = match self.inner.read(buf) {
                Ok(0) if self.length.is_some_and(|l| self.read < l) => format!(
                    "the connection ended after {} of {} bytes",
                    self.read,
                    self.length.unwrap_or(0)
                ),
                Ok(n) => {
                    self.read += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
                Err(e) => format!("the connection broke after {} bytes: {e}", self.read),
            };
            if let Err(no) = self.resume() {
                return Err(std::io::Error::other(crate::error::RemoteFailure {
                    message: format!("{why} (not resumed: {no})"),
                    transient: true,
                }));
            }
        }
    }
}
