//! Images read through skopeo's image proxy (`skopeo experimental-image-proxy`, spoken by the
//! `containers-image-proxy` crate): registries (`docker://`), `dir:` and `docker-archive:`, with
//! c/image's registries.conf, mirrors, credentials, TLS and signature policy.
//!
//! The proxy hands each blob over a pipe; a task on a small tokio runtime reads it in chunks into a
//! bounded channel, and the layer pipeline reads the channel as a plain `Read` — no copy of the
//! blob on disk, memory bounded by the channel. The proxy serves one request at a time, so a blob's
//! `FinishPipe` is sent only once its data has been read: several blobs then stream at once.
//! DiffIDs come from the config (what the store needs), so Debian 12's skopeo 1.9.3, whose proxy
//! has no `GetLayerInfo`, serves as well as newer ones.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage};
use storage_format::Digest;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::OpenedSource;
use super::image_documents::{assemble, parse_manifest};
use super::proxy_errors::{described, remote_error};
use crate::error::{Error, RemoteFailure, Result};
use crate::layer::BlobSource;
use crate::retry::RetryPolicy;

/// Largest manifest or config we accept.
const JSON_LIMIT: usize = 16 << 20;
/// Bytes per chunk handed from the proxy's pipe to the layer pipeline: a pipe's capacity (a read
/// never returns more), and small enough for malloc to reuse rather than map anew.
const CHUNK: usize = 64 << 10;
/// Chunks in flight per blob: with the chunk size, the memory a blob stream may hold.
const CHUNKS: usize = 8;
/// Most blocking threads the shared proxy runtime may run (tokio's default).
const BLOCKING_THREADS: usize = 512;

/// How to reach registries: credentials, TLS, retries (podman's options of the same names).
/// The default reaches registries natively (`native`), with c/image's default files.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `--authfile`: the credentials file; `None` lets c/image look where it does
    /// (`$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`, …).
    pub authfile: Option<PathBuf>,
    /// `--tls-verify`: `Some(false)` accepts any certificate and plain HTTP; `None` follows
    /// registries.conf.
    pub tls_verify: Option<bool>,
    /// `--cert-dir`: client certificates and CAs for the registry.
    pub cert_dir: Option<PathBuf>,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Without `authfile`, use no credentials at all rather than c/image's default files (bootc's
    /// store: never the user's credentials, as upstream).
    pub no_default_credentials: bool,
    /// The signature policy (podman's `--signature-policy`); `None`: where podman reads it.
    pub signature_policy: Option<PathBuf>,
    /// `docker://` images through the native registry client ([`crate::source::registry`]), the
    /// default; `false`: through skopeo's image proxy (c/image exactly).
    pub native: bool,
    /// zstd:chunked layers pulled partially (natively, from registries that serve ranges): the
    /// files the store holds are not fetched. The default.
    pub partial: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            authfile: None,
            tls_verify: None,
            cert_dir: None,
            retry: RetryPolicy::default(),
            no_default_credentials: false,
            signature_policy: None,
            native: true,
            partial: true,
        }
    }
}

impl FetchOptions {
    /// Refuses an `--authfile` that is not a file, in one line naming the remedy.
    pub(crate) fn check_authfile(&self) -> Result<()> {
        match &self.authfile {
            Some(f) if !f.is_file() => Err(Error::InvalidInput(format!(
                "the credentials file {} does not exist: name an existing auth.json with --authfile (podman login --authfile {} REGISTRY writes one)",
                f.display(),
                f.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// The proxy with the image open.
struct Connection {
    proxy: ImageProxy,
    img: OpenedImage,
    imgref: String,
}

/// The blobs of an image opened through the proxy. The proxy serves one request at a time and
/// holds a blob's `FinishPipe` until the blob has been read, so each blob in flight gets a
/// connection (a skopeo process) of its own from a small pool.
pub(crate) struct ProxyBlobs {
    pool: Arc<std::sync::Mutex<Vec<Connection>>>,
    rt: Option<Arc<tokio::runtime::Runtime>>,
    sizes: HashMap<Digest, u64>,
    imgref: String,
    opts: FetchOptions,
}

impl std::fmt::Debug for ProxyBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBlobs")
            .field("imgref", &self.imgref)
            .finish_non_exhaustive()
    }
}

/// Opens `imgref` through the proxy: its manifest (this platform's, from a list) and config,
/// checked; transient failures retried as `opts.retry` says.
pub fn open(imgref: &str, opts: &FetchOptions) -> Result<OpenedSource> {
    opts.check_authfile()?;
    let rt = shared_runtime()?;
    // The proxy connections live on the shared runtime's worker threads, whichever thread opened
    // the image.
    let opened = opts.retry.run(&format!("opening {imgref}"), || {
        rt.block_on(rt.spawn(connect_and_read(imgref.to_string(), opts.clone())))
            .map_err(|e| Error::Internal(format!("the proxy task failed: {e}")))?
    });
    let (conn, digest, manifest, config) = match opened {
        Ok(o) => o,
        Err(e) => {
            release_runtime(rt);
            return Err(e);
        }
    };
    let mut blobs = ProxyBlobs {
        pool: Arc::new(std::sync::Mutex::new(vec![conn])),
        rt: Some(rt),
        sizes: HashMap::new(),
        imgref: imgref.to_string(),
        opts: opts.clone(),
    };
    let image = documents(imgref, &digest, manifest, config)?;
    blobs.sizes = image
        .layers
        .iter()
        .map(|l| (l.blob_digest.clone(), l.blob_size))
        .collect();
    Ok(OpenedSource {
        image,
        blobs: Box::new(blobs),
        retry: opts.retry,
    })
}

/// The shared proxy runtime while an image is open; its strong count changes only under this lock
/// (see [`shared_runtime`] and [`release_runtime`]).
static SHARED_RUNTIME: std::sync::Mutex<std::sync::Weak<tokio::runtime::Runtime>> =
    std::sync::Mutex::new(std::sync::Weak::new());

/// The runtime every open image's proxy connections run on, shared while any image is open and
/// shut down with the last one. One runtime for all (rather than one per image) keeps the threads,
/// and the malloc arenas each allocating thread gets, as few as the work in flight needs: bound
/// images open five proxies at once.
///
/// Its blocking threads: each skopeo process holds one for good (the crate waits for the child
/// there), each request to a proxy and each read of a blob's pipe holds one while it runs, and a
/// blob's `FinishPipe` holds one until the pipe has been read. Threads are started only for calls
/// that wait, so the count follows the connections open; the cap is only there to stop a runaway
/// (a lower one, counted per image, deadlocked when several images shared it: the child waits
/// took every thread and the reads waited for ever).
pub(crate) fn shared_runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    let mut shared = SHARED_RUNTIME
        .lock()
        .map_err(|_| Error::Internal("the proxy runtime's lock is poisoned".into()))?;
    if let Some(rt) = shared.upgrade() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("image-proxy")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("starting the proxy's runtime: {e}")))?;
    *shared = Arc::downgrade(&rt);
    Ok(rt)
}

/// Lets go of an image's hold on the shared runtime; the last one shuts it down, which stops the
/// skopeo processes still running (after two seconds, a proxy that does not answer is left to exit
/// when its socket closes).
pub(crate) fn release_runtime(rt: Arc<tokio::runtime::Runtime>) {
    let held = SHARED_RUNTIME.lock();
    let last = Arc::try_unwrap(rt).ok();
    drop(held);
    if let Some(rt) = last {
        rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// The proxy's configuration for `imgref`: credentials, TLS, the real skopeo.
pub(crate) fn proxy_config(imgref: &str, opts: &FetchOptions) -> Result<ImageProxyConfig> {
    let mut config = ImageProxyConfig::default();
    config.authfile = opts.authfile.clone();
    config.certificate_directory = opts.cert_dir.clone();
    config.auth_anonymous = opts.authfile.is_none() && opts.no_default_credentials;
    if opts.tls_verify == Some(false) {
        config.insecure_skip_tls_verification = Some(true);
    }
    // Always the real skopeo by its path: PATH's `skopeo` may be this very binary (bootc's seam),
    // which would start itself again. (No parent-death signal then: the proxy exits at end of
    // file on its socket, which closes when we go.)
    let mut cmd = skopeo(imgref)?;
    if let Some(p) = &opts.signature_policy {
        cmd.arg("--policy").arg(p);
    }
    config.skopeo_cmd = Some(cmd);
    Ok(config)
}

/// Starts the proxy and opens the image.
async fn connect(imgref: String, opts: FetchOptions) -> Result<Connection> {
    let imgref = imgref.as_str();
    let config = proxy_config(imgref, &opts)?;
    let proxy = ImageProxy::new_with_config(config)
        .await
        .map_err(|e| remote_error(imgref, "starting skopeo's image proxy", e))?;
    let img = proxy
        .open_image(imgref)
        .await
        .map_err(|e| remote_error(imgref, "opening", e))?;
    Ok(Connection {
        proxy,
        img,
        imgref: imgref.to_string(),
    })
}

/// The variable naming podman's registries.conf.
const REGISTRIES_CONF: &str = "CONTAINERS_REGISTRIES_CONF";

/// The `skopeo` command, told the registries.conf podman would read: podman honours
/// `CONTAINERS_REGISTRIES_CONF`, skopeo 1.9 does not by itself.
/// The real skopeo: never this binary, should it be installed as PATH's `skopeo` for bootc; an
/// error naming `imgref` when there is none.
fn skopeo(imgref: &str) -> Result<std::process::Command> {
    let Some(path) = crate::external_tool::find("skopeo") else {
        return Err(Error::external(
            "skopeo",
            format!(
                "{imgref} is read through skopeo's image proxy, and skopeo is not installed (bootc-image's own skopeo role serves only stores and OCI layouts): install it (apt install skopeo)"
            ),
        ));
    };
    let mut cmd = std::process::Command::new(path);
    if let Some(conf) = std::env::var_os(REGISTRIES_CONF).filter(|c| !c.is_empty()) {
        cmd.arg("--registries-conf").arg(conf);
    }
    Ok(cmd)
}

/// Starts the proxy, opens the image, reads its manifest and config.
async fn connect_and_read(
    imgref: String,
    opts: FetchOptions,
) -> Result<(Connection, String, Vec<u8>, Vec<u8>)> {
    let conn = connect(imgref.clone(), opts.clone()).await?;
    let imgref = imgref.as_str();
    let (proxy, img) = (&conn.proxy, &conn.img);
    let (digest, manifest) = proxy
        .fetch_manifest_raw_oci(img)
        .await
        .map_err(|e| remote_error(imgref, "reading the manifest of", e))?;
    if manifest.len() > JSON_LIMIT {
        return Err(Error::InvalidInput(format!(
            "{imgref}: its manifest is larger than {JSON_LIMIT} bytes"
        )));
    }
    // A Docker schema 2 manifest arrives converted to OCI (under the original's digest), its
    // config re-encoded under a digest no source has: the original bytes are what we fetch,
    // verify and store, as podman does.
    let manifest = if super::image_documents::parse_digest(&digest, "the manifest")?
        == Digest::of_bytes(&manifest)
    {
        manifest
    } else {
        let (r, d, o) = (imgref.to_string(), digest.clone(), opts.clone());
        tokio::task::spawn_blocking(move || original_manifest(&r, &d, &o))
            .await
            .map_err(|e| Error::Internal(format!("the manifest task failed: {e}")))??
    };
    // The config as stored, byte for byte: as a blob (GetFullConfig would give it re-encoded,
    // which no longer hashes to its digest for configs written by Docker or BuildKit).
    let parsed: super::oci_types::Manifest =
        super::image_documents::parse_json(&manifest, "the manifest", imgref)?;
    if parsed.config.size > JSON_LIMIT as u64 {
        return Err(Error::InvalidInput(format!(
            "{imgref}: its config is larger than {JSON_LIMIT} bytes"
        )));
    }
    let config_digest: containers_image_proxy::oci_spec::image::Digest =
        parsed.config.digest.parse().map_err(|e| {
            Error::InvalidInput(format!(
                "{imgref}: config digest {:?}: {e}",
                parsed.config.digest
            ))
        })?;
    let (mut reader, driver) = proxy
        .get_blob(img, &config_digest, parsed.config.size)
        .await
        .map_err(|e| remote_error(imgref, "reading the config of", e))?;
    let mut config = Vec::new();
    let read = async {
        (&mut reader)
            .take(JSON_LIMIT as u64 + 1)
            .read_to_end(&mut config)
            .await
    };
    let (read, finished) = tokio::join!(read, driver);
    finished.map_err(|e| remote_error(imgref, "reading the config of", e))?;
    read.map_err(|e| Error::read(format!("the config of {imgref}"), e))?;
    Ok((conn, digest, manifest, config))
}

/// The manifest of `imgref` as its source holds it, byte for byte (skopeo 1.9's proxy only gives it
/// converted to OCI): `skopeo inspect --raw`, with the options the proxy got, by `digest` for a
/// registry (a tag may name a list, or move); it must hash to `digest`.
fn original_manifest(imgref: &str, digest: &str, opts: &FetchOptions) -> Result<Vec<u8>> {
    let target = match crate::image_ref::ImageRef::parse(imgref) {
        Ok(crate::image_ref::ImageRef::Docker(name)) => {
            let r = crate::reference::parse(&name)?;
            crate::image_ref::ImageRef::Docker(format!("{}@{digest}", r.name())).to_string()
        }
        _ => imgref.to_string(),
    };
    let mut cmd = skopeo(imgref)?;
    cmd.args(["inspect", "--raw", "--retry-times", "0"]);
    if let Some(a) = &opts.authfile {
        cmd.arg("--authfile").arg(a);
    } else if opts.no_default_credentials {
        cmd.arg("--no-creds");
    }
    if let Some(d) = &opts.cert_dir {
        cmd.arg("--cert-dir").arg(d);
    }
    if opts.tls_verify == Some(false) {
        cmd.arg("--tls-verify=false");
    }
    let out = cmd
        .arg(&target)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            Error::external(
                "skopeo",
                format!(
                    "cannot run skopeo ({e}), which reads {imgref}: install it (apt install skopeo)"
                ),
            )
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let detail = err
            .lines()
            .last()
            .unwrap_or("")
            .trim_start_matches("time=")
            .trim();
        return Err(described(
            imgref,
            "reading the original manifest of",
            detail,
            false,
        ));
    }
    let expected = super::image_documents::parse_digest(digest, "the manifest")?;
    let actual = Digest::of_bytes(&out.stdout);
    if actual != expected {
        return Err(Error::DigestMismatch {
            what: format!("manifest of {imgref}"),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    if out.stdout.len() > JSON_LIMIT {
        return Err(Error::InvalidInput(format!(
            "{imgref}: its manifest is larger than {JSON_LIMIT} bytes"
        )));
    }
    Ok(out.stdout)
}

/// The image from the proxy's documents: the manifest as the source holds it (the original
/// fetched when the proxy converted it) and the config, each checked against its digest.
pub(crate) fn documents(
    imgref: &str,
    digest: &str,
    manifest: Vec<u8>,
    config: Vec<u8>,
) -> Result<crate::store::image_input::ImageInput> {
    let loc = imgref.to_string();
    let manifest_digest = super::image_documents::parse_digest(digest, "the manifest")?;
    let parsed = parse_manifest(&manifest, &manifest_digest, &loc)?;
    let config_digest = super::image_documents::parse_digest(&parsed.config.digest, "config")?;
    let actual = Digest::of_bytes(&config);
    if actual != config_digest {
        return Err(Error::DigestMismatch {
            what: format!("config of {imgref}"),
            expected: config_digest.to_string(),
            actual: actual.to_string(),
        });
    }
    // connect_and_read fetched the original when the proxy converted it: it hashes to its digest.
    if Digest::of_bytes(&manifest) != manifest_digest {
        return Err(Error::Internal(format!(
            "{imgref}: the manifest does not hash to {manifest_digest}"
        )));
    }
    assemble(
        manifest,
        manifest_digest,
        &parsed,
        config,
        config_digest,
        &loc,
    )
}

impl BlobSource for ProxyBlobs {
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        let Some(rt) = &self.rt else {
            return Err(Error::Internal("the image proxy is closed".into()));
        };
        let size = *self.sizes.get(digest).ok_or_else(|| {
            Error::Internal(format!("blob {digest} is not a layer of {}", self.imgref))
        })?;
        let oci_digest: containers_image_proxy::oci_spec::image::Digest = digest
            .to_string()
            .parse()
            .map_err(|e| Error::Internal(format!("digest {digest}: {e}")))?;
        let idle = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match idle {
            Some(c) => c,
            None => rt
                .block_on(rt.spawn(connect(self.imgref.clone(), self.opts.clone())))
                .map_err(|e| Error::Internal(format!("the proxy task failed: {e}")))??,
        };
        let (tx, rx) = mpsc::channel(CHUNKS);
        rt.spawn(stream_blob(
            conn,
            Arc::clone(&self.pool),
            oci_digest,
            size,
            tx,
        ));
        Ok(Box::new(ChannelReader {
            rx,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
        }))
    }
}

/// Streams one blob from the proxy into `tx`: its data in chunks, then, if the proxy reports a
/// failure (a cut connection, a digest the registry lied about), that failure — so the reader
/// never takes a short blob for a whole one. The data is read while `FinishPipe` is pending
/// (skopeo closes the pipe only then). A connection that served the blob well goes back to `pool`.
async fn stream_blob(
    conn: Connection,
    pool: Arc<std::sync::Mutex<Vec<Connection>>>,
    digest: containers_image_proxy::oci_spec::image::Digest,
    size: u64,
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    let failure = |e: containers_image_proxy::Error| {
        let err = remote_error(&conn.imgref, &format!("fetching blob {digest} of"), e);
        let transient = err.is_transient();
        std::io::Error::other(RemoteFailure {
            message: err.to_string(),
            transient,
        })
    };
    let (reader, driver) = match conn.proxy.get_blob(&conn.img, &digest, size).await {
        Ok(x) => x,
        Err(e) => {
            let _ = tx.send(Err(failure(e))).await;
            return;
        }
    };
    // The pump owns the pipe: when it stops early (the reader went away), the pipe closes with it,
    // skopeo's writer fails, and `FinishPipe` returns instead of waiting for a reader.
    let pump_tx = tx.clone();
    let pump = async move {
        let (mut reader, tx) = (reader, pump_tx);
        loop {
            let mut buf = Vec::with_capacity(CHUNK);
            match reader.read_buf(&mut buf).await {
                Ok(0) => return Pumped::Whole,
                Ok(_) => {
                    if tx.send(Ok(buf)).await.is_err() {
                        return Pumped::Abandoned;
                    }
                }
                Err(e) => return Pumped::Failed(e),
            }
        }
    };
    let (pumped, finished) = tokio::join!(pump, driver);
    // skopeo's own error says more than a broken pipe does: it comes first.
    let outcome = match (pumped, finished) {
        (Pumped::Abandoned, _) => None,
        (_, Err(e)) => Some(Err(failure(e))),
        (Pumped::Failed(e), Ok(())) => Some(Err(std::io::Error::other(RemoteFailure {
            message: format!(
                "{}: reading blob {digest} from skopeo's pipe: {e}",
                conn.imgref
            ),
            transient: true,
        }))),
        (Pumped::Whole, Ok(())) => Some(Ok(Vec::new())),
    };
    let whole = matches!(outcome, Some(Ok(_)));
    if let Some(o) = outcome {
        let _ = tx.send(o).await;
    }
    drop(tx);
    if whole && let Ok(mut p) = pool.lock() {
        p.push(conn);
    }
}

/// How reading a blob's pipe ended.
enum Pumped {
    /// At its end.
    Whole,
    /// The reader went away.
    Abandoned,
    /// A read failed.
    Failed(std::io::Error),
}

/// The layer pipeline's side of a blob stream: chunks, then an empty chunk for the end (or an
/// error). A channel closed without either is a stream cut short, never a whole blob.
struct ChannelReader {
    rx: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(c)) if c.is_empty() => self.ended = true,
                Some(Ok(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(std::io::Error::other(RemoteFailure {
                        message: "the blob stream from skopeo stopped before its end".into(),
                        transient: true,
                    }));
                }
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for ProxyBlobs {
    /// Closes the image in its proxies and stops them; a proxy that does not answer is left to
    /// exit when its socket closes.
    fn drop(&mut self) {
        let Some(rt) = self.rt.take() else { return };
        let conns: Vec<Connection> = self
            .pool
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for Connection { proxy, img, .. } in conns {
            let _ = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), async {
                    let _ = proxy.close_image(&img).await;
                    proxy.finalize().await
                })
                .await
            });
        }
        release_runtime(rt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_told_apart() {
        let e = described("docker://r/x:1", "opening", "manifest unknown", false);
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        let e = described(
            "docker://r/x:1",
            "opening",
            "unauthorized: authentication required",
            false,
        );
        assert!(e.to_string().contains("podman login"), "{e}");
        assert!(!e.is_transient());
        let e = described(
            "docker://r/x:1",
            "fetching",
            "read tcp: connection reset by peer",
            false,
        );
        assert!(e.is_transient(), "{e}");
        let e = described(
            "docker://r/x:1",
            "opening",
            "http: server gave HTTP response to HTTPS client",
            false,
        );
        assert!(e.to_string().contains("--tls-verify=false"), "{e}");
        let e = described(
            "docker://r/x:1",
            "fetching",
            "Corrupted blob, expecting sha256:aa",
            false,
        );
        assert!(!e.is_transient(), "{e}");
    }
}
