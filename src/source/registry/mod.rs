//! Registries natively: a distribution-spec client for pulls, with no skopeo (issue 25, first
//! part). `docker://NAME` is opened here when [`FetchOptions::native`] asks for it: the manifest
//! (OCI or Docker schema 2; an index or list resolved to this machine's platform), the config,
//! then each layer blob streamed from its HTTP response into the layer pipeline, which verifies
//! it. Credentials as c/image finds them ([`auth`]), `insecure`/`blocked` from registries.conf
//! ([`config`]), TLS through the system's OpenSSL.
//!
//! Not yet: mirrors and short names of registries.conf, `certs.d` and client certificates,
//! resuming a cut blob with `Range`, pushes.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod config;

use std::io::Read;
use std::sync::Arc;

use crate::Digest;
use crate::error::{Error, Result};
use crate::layer::BlobSource;
use crate::source::OpenedSource;
use crate::source::image_proxy::FetchOptions;
use crate::source::oci_types::host_arch;
use client::{Repo, SMALL_LIMIT, network};

/// The manifest types asked for, as c/image asks for them.
const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Opens `docker://name` natively.
pub fn open(name: &str, fetch: &FetchOptions) -> Result<OpenedSource> {
    let image = format!("docker://{name}");
    let r = crate::reference::parse(name)?;
    let settings = config::settings(&r.domain, &r.path)?;
    if settings.blocked {
        return Err(Error::Remote {
            image,
            message: format!(
                "{} is blocked in registries.conf: pull from another registry, or unblock it",
                r.domain
            ),
            transient: false,
        });
    }
    // What this client does not follow yet is refused, never ignored.
    let certs_d = std::path::Path::new("/etc/containers/certs.d").join(&r.domain);
    if fetch.cert_dir.is_some() || certs_d.is_dir() {
        return Err(Error::Unsupported(format!(
            "{image}: client certificates and CAs ({}) with the native registry client: use --via skopeo (or BOOTC_IMAGE_VIA=skopeo) for this registry",
            fetch.cert_dir.as_deref().unwrap_or(&certs_d).display()
        )));
    }
    let insecure = settings.insecure || fetch.tls_verify == Some(false);
    let creds = auth::credentials(fetch, &r.domain, &r.path)?;
    let repo = fetch.retry.run(&format!("opening {image}"), || {
        Repo::connect(&r.domain, &r.path, insecure, creds.clone(), &image)
    })?;
    let reference = r
        .digest
        .clone()
        .or_else(|| r.tag.clone())
        .unwrap_or_else(|| "latest".into());
    let (mut manifest, mut digest) = manifest(&repo, &reference, r.digest.as_deref(), &image)?;
    // An index or list: this platform's manifest.
    if let Some(instance) = platform_instance(&manifest, &image)? {
        (manifest, digest) = self::manifest(&repo, &instance, Some(&instance), &image)?;
    }
    let parsed: crate::source::oci_types::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Error::InvalidInput(format!("the manifest of {image}: {e}")))?;
    let config = small_blob(&repo, &parsed.config.digest, &image)?;
    let input = crate::source::image_proxy::documents(&image, digest.as_str(), manifest, config)?;
    Ok(OpenedSource {
        image: input,
        blobs: Box::new(RegistryBlobs {
            repo: Arc::new(repo),
            image,
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
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(SMALL_LIMIT)
        .read_to_vec()
        .map_err(|e| network(image, "reading the manifest", e))?;
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
    resp.body_mut()
        .with_config()
        .limit(SMALL_LIMIT)
        .read_to_vec()
        .map_err(|e| network(image, "reading the config", e))
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
}

impl BlobSource for RegistryBlobs {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let resp = self
            .repo
            .get(&format!("blobs/{digest}"), None, &self.image)?;
        status(&resp, &self.image, &format!("blob {digest}"))?;
        let length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Box::new(Body {
            inner: resp.into_body().into_reader(),
            read: 0,
            length,
        }))
    }
}

/// A blob's response body. A connection that ends before the announced length, or breaks, is a
/// transient remote failure (the layer is fetched again), not a truncated blob.
struct Body<R> {
    inner: R,
    read: u64,
    length: Option<u64>,
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let cut = |message: String| {
            std::io::Error::other(crate::error::RemoteFailure {
                message,
                transient: true,
            })
        };
        match self.inner.read(buf) {
            Ok(0) if self.length.is_some_and(|l| self.read < l) => Err(cut(format!(
                "the connection ended after {} of {} bytes",
                self.read,
                self.length.unwrap_or(0)
            ))),
            Ok(n) => {
                self.read += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(cut(format!(
                "the connection broke after {} bytes: {e}",
                self.read
            ))),
        }
    }
}
