//! skopeo's `experimental-image-proxy`, served natively: the protocol bootc (through the
//! `containers-image-proxy` crate) speaks to fetch images, on a `SOCK_SEQPACKET` socket.
//!
//! Protocol 0.2.8: `Initialize`, `OpenImage`, `OpenImageOptional`, `GetManifest` (converted to
//! OCI; its value the digest of the manifest as stored), `GetFullConfig`, `GetConfig`,
//! `GetLayerInfo`, `GetLayerInfoPiped` (for a store's images: the uncompressed layers by DiffID,
//! as c/image's storage source lists them), `GetBlob` (digest and size verified, a mismatch
//! reported by `FinishPipe`), `GetRawBlob`, `FinishPipe`, `CloseImage`, `Shutdown`. The proxy only
//! reads: stores are opened read-only, nothing is ever written.

mod hash_thread;
mod pipes;
mod served_image;
mod wire;

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::Digest;
use crate::error::{Error, Result};
use crate::source::image_proxy::FetchOptions;
use served_image::ServedImage;
use wire::Reply;

/// The protocol version we speak (skopeo 1.14's; the client needs ≥ 0.2.7 for
/// `GetLayerInfoPiped` and ≥ 0.2.8 for `GetRawBlob`).
pub const PROTOCOL_VERSION: &str = "0.2.8";

/// How the proxy opens images: skopeo's `experimental-image-proxy` options.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ServeOptions {
    /// Credentials, TLS and the signature policy for images fetched from registries.
    pub fetch: FetchOptions,
    /// `--insecure-policy`: open images without evaluating the signature policy.
    pub insecure_policy: bool,
    /// Read-only stores searched after the default one for `containers-storage:` images
    /// (`STORAGE_OPTS=additionalimagestore=…`).
    pub additional_stores: Vec<PathBuf>,
}

impl ServeOptions {
    /// Options fetching as `fetch` says, evaluating the signature policy unless
    /// `insecure_policy`, with no additional stores.
    pub fn new(fetch: FetchOptions, insecure_policy: bool) -> ServeOptions {
        ServeOptions {
            fetch,
            insecure_policy,
            additional_stores: Vec::new(),
        }
    }

    /// Options with the additional image stores `STORAGE_OPTS` names (comma-separated
    /// `additionalimagestore=PATH` options, as c/storage reads the variable).
    pub fn with_storage_opts(mut self, storage_opts: Option<&str>) -> ServeOptions {
        for opt in storage_opts.unwrap_or_default().split(',') {
            let opt = opt.trim();
            let value = opt
                .strip_prefix("additionalimagestore=")
                .or_else(|| opt.strip_prefix("overlay.imagestore="))
                .or_else(|| opt.strip_prefix("overlay.additionalimagestore="));
            if let Some(path) = value.filter(|p| !p.is_empty()) {
                self.additional_stores.push(PathBuf::from(path));
            }
        }
        self
    }
}

/// The proxy's state: open images and running pipes.
#[derive(Debug)]
struct Server {
    images: HashMap<u32, Arc<ServedImage>>,
    last_image: u32,
    pipes: pipes::Pipes,
    /// Turns for streams with a hashing thread: as many as there are cores (at least two).
    turns: Arc<pipes::Turns>,
}

impl Server {
    fn new() -> Server {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        Server {
            images: HashMap::new(),
            last_image: 0,
            pipes: pipes::Pipes::default(),
            turns: Arc::new(pipes::Turns::new(cores.max(2))),
        }
    }
}

/// Serves the protocol on `socket` until the client sends `Shutdown` or closes its end. An error
/// of one request is that request's reply; only a socket that cannot be read or written ends
/// the service with an error.
pub fn serve(socket: BorrowedFd<'_>, opts: &ServeOptions) -> Result<()> {
    let mut server = Server::new();
    while let Some(req) = wire::receive(socket)? {
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                wire::send(socket, &Reply::failed(chain(&e)), &[])?;
                continue;
            }
        };
        tracing::debug!(method = %req.method, args = ?req.args, "proxy request");
        if req.method == "Shutdown" {
            // Not waiting for writers: one the client no longer reads would never end (as skopeo,
            // the proxy just exits).
            return Ok(());
        }
        let (reply, fds) = match server.handle(&req.method, &req.args, opts) {
            Ok(done) => done,
            Err(e) => (Reply::failed(chain(&e)), Vec::new()),
        };
        wire::send(socket, &reply, &fds)?;
    }
    Ok(())
}

/// An error with its causes, on one line.
fn chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// The argument `i` of a request.
fn arg<'a>(args: &'a [Value], i: usize, method: &str) -> Result<&'a Value> {
    args.get(i).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{method} needs {} arguments, got {}",
            i + 1,
            args.len()
        ))
    })
}

/// The argument `i` as a number (an image or pipe id).
fn arg_u32(args: &[Value], i: usize, method: &str) -> Result<u32> {
    arg(args, i, method)?
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::InvalidInput(format!("{method}: argument {i} is not an id")))
}

/// The argument `i` as a string.
fn arg_str<'a>(args: &'a [Value], i: usize, method: &str) -> Result<&'a str> {
    arg(args, i, method)?
        .as_str()
        .ok_or_else(|| Error::InvalidInput(format!("{method}: argument {i} is not a string")))
}

/// What a request answers: the reply and the descriptors sent beside it.
type Answer = (Reply, Vec<OwnedFd>);

impl Server {
    /// The image `args[0]` names.
    fn image(&self, args: &[Value], method: &str) -> Result<Arc<ServedImage>> {
        let id = arg_u32(args, 0, method)?;
        self.images
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::InvalidInput(format!("{method}: no open image {id}")))
    }

    /// A reply whose payload `write` puts into a pipe.
    fn piped(&mut self, value: Value, write: pipes::Writer) -> Result<Answer> {
        let (id, read) = self.pipes.start(write, &self.turns)?;
        Ok((Reply::ok(value, id), vec![read]))
    }

    /// A reply whose payload is `bytes`.
    fn piped_bytes(&mut self, value: Value, bytes: Vec<u8>) -> Result<Answer> {
        self.piped(
            value,
            Box::new(move |out, _| {
                std::io::Write::write_all(out, &bytes).map_err(|e| Error::Write {
                    what: "a reply into its pipe".into(),
                    source: e,
                })
            }),
        )
    }

    fn handle(&mut self, method: &str, args: &[Value], opts: &ServeOptions) -> Result<Answer> {
        let plain = |v: Value| Ok((Reply::ok(v, 0), Vec::new()));
        match method {
            "Initialize" => plain(PROTOCOL_VERSION.into()),
            "OpenImage" | "OpenImageOptional" => {
                let reference = arg_str(args, 0, method)?;
                match served_image::open(reference, opts)? {
                    Some(img) => {
                        self.last_image = self.last_image.wrapping_add(1).max(1);
                        self.images.insert(self.last_image, Arc::new(img));
                        plain(self.last_image.into())
                    }
                    None if method == "OpenImageOptional" => plain(0.into()),
                    None => Err(Error::not_found(
                        reference,
                        format!("{reference}: no such image"),
                    )),
                }
            }
            "CloseImage" => {
                let id = arg_u32(args, 0, method)?;
                self.images.remove(&id);
                plain(Value::Null)
            }
            "GetManifest" => {
                let img = self.image(args, method)?;
                self.piped_bytes(img.manifest_digest.clone().into(), img.manifest.clone())
            }
            "GetFullConfig" => {
                let img = self.image(args, method)?;
                self.piped_bytes(Value::Null, img.config.clone())
            }
            "GetConfig" => {
                let img = self.image(args, method)?;
                let config: Value = serde_json::from_slice(&img.config)
                    .map_err(|e| Error::InvalidInput(format!("the image's config: {e}")))?;
                let inner = serde_json::to_vec(&config["config"])
                    .map_err(|e| Error::Internal(e.to_string()))?;
                self.piped_bytes(Value::Null, inner)
            }
            "GetLayerInfo" => {
                let img = self.image(args, method)?;
                plain(
                    serde_json::to_value(&img.layer_infos)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                )
            }
            "GetLayerInfoPiped" => {
                let img = self.image(args, method)?;
                let bytes = serde_json::to_vec(&img.layer_infos)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                self.piped_bytes(Value::Null, bytes)
            }
            "GetBlob" => {
                let img = self.image(args, method)?;
                let digest = Digest::parse(arg_str(args, 1, method)?)?;
                let size = arg(args, 2, method)?.as_u64();
                let write = img.blob(digest, size)?;
                self.piped(size.map_or(Value::from(-1), Value::from), write)
            }
            "GetRawBlob" => {
                let img = self.image(args, method)?;
                let digest = Digest::parse(arg_str(args, 1, method)?)?;
                let (size, write) = img.raw_blob(digest)?;
                let fds = pipes::start_raw(write, &self.turns)?;
                Ok((Reply::ok(size.into(), 0), fds.into()))
            }
            "FinishPipe" => {
                let id = arg_u32(args, 0, method)?;
                self.pipes.finish(id)?;
                plain(Value::Null)
            }
            other => Err(Error::Unsupported(format!(
                "the proxy method {other:?} (protocol {PROTOCOL_VERSION})"
            ))),
        }
    }
}
