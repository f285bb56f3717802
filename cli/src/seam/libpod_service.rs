//! `system service --time=0 unix://PATH`: the one libpod endpoint bootc calls,
//! `POST /v*/libpod/images/pull?reference=…`, answered as podman answers it — newline-delimited
//! JSON (`stream`, `pullProgress`, then `images`/`id`, or `error`) — with the pull done natively
//! into the store the global options name. The socket appears only once it accepts connections
//! (bound under a temporary name, then renamed); nothing is written on stderr unless the service
//! cannot start (bootc never drains that pipe); a concurrent CLI pull on the same store is safe
//! (the store's own locks).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::as_podman::Globals;
use bootc_image::store::image_input::Progress;

/// Serves until killed.
pub fn run(g: &Globals, opts: &[&str]) -> anyhow::Result<u8> {
    let mut uri = None;
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            "--time=0" | "-t0" => {}
            "--time" | "-t" if opts.get(i + 1) == Some(&"0") => i += 1,
            o if o.starts_with('-') => bail!(
                "podman system service {o} is not served by bootc-image (it serves --time=0 unix://PATH, as bootc runs it)"
            ),
            o => uri = Some(o.to_string()),
        }
        i += 1;
    }
    let Some(path) = uri.as_deref().and_then(|u| u.strip_prefix("unix://")) else {
        bail!("podman system service needs unix://PATH (bootc-image serves a Unix socket only)");
    };
    let config = super::as_podman::cli_of(g)?.store_config()?;
    let listener = bind_atomically(Path::new(path))?;
    // The credentials bootc hands over (REGISTRY_AUTH_FILE=/proc/self/fd/4) stay readable: the
    // descriptor is ours for as long as we run.
    let fetch = crate::fetch_args::FetchArgs {
        authfile: std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from),
        ..Default::default()
    }
    .options();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let config = config.clone();
        let fetch = fetch.clone();
        std::thread::spawn(move || {
            let _ = serve_one(conn, &config, &fetch);
        });
    }
    Ok(0)
}

/// A listening socket at `path`, which appears (renamed into place) only once it listens.
fn bind_atomically(path: &Path) -> anyhow::Result<UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let tmp: PathBuf = dir.join(format!(".bootc-image-service-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).with_context(|| format!("listening on {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("creating the socket {}", path.display()))?;
    Ok(listener)
}

/// One request on `conn`.
fn serve_one(
    conn: UnixStream,
    config: &bootc_image::store::StoreConfig,
    fetch: &bootc_image::source::image_proxy::FetchOptions,
) -> anyhow::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut content_length = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            content_length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length.min(1 << 20)];
    std::io::Read::read_exact(&mut reader, &mut body)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut out = conn;
    // `/v5.0.0/libpod/images/pull`, or unversioned as podman also serves it.
    let is_pull = method == "POST"
        && (path == "/libpod/images/pull"
            || path.starts_with("/v") && path.ends_with("/libpod/images/pull"));
    let reference = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "reference")
        .map(|(_, v)| percent_decode(v));
    let Some(reference) = reference.filter(|_| is_pull) else {
        let (status, msg) = if is_pull {
            ("400 Bad Request", "reference is required".to_string())
        } else {
            (
                "404 Not Found",
                format!(
                    "{method} {path}: not served by bootc-image (it serves POST /libpod/images/pull)"
                ),
            )
        };
        let body = json!({"cause": msg, "message": msg, "response": status[..3].parse::<u16>().unwrap_or(0)}).to_string();
        write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    };
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )?;
    let stream = Mutex::new(Chunked(out));
    stream.send(&json!({"stream": format!("Trying to pull {reference}...\n")}));
    let result = pull(&reference, config, fetch, &stream);
    match result {
        Ok(id) => stream.send(&json!({"images": [id], "id": id})),
        Err(e) => stream.send(&json!({"error": crate::error_line(&e)})),
    }
    let mut out = stream
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    out.0.write_all(b"0\r\n\r\n")?;
    Ok(())
}

/// The response body, chunked.
struct Chunked(UnixStream);

/// Sends one NDJSON line; a client that went away is not our error.
trait SendLine {
    fn send(&self, v: &Value);
}

impl SendLine for Mutex<Chunked> {
    fn send(&self, v: &Value) {
        let line = format!("{v}\n");
        if let Ok(mut c) = self.lock() {
            let _ = write!(c.0, "{:x}\r\n{line}\r\n", line.len());
        }
    }
}

/// What the pull tells its client: each layer's bytes as `pullProgress`.
struct Reporter<'a> {
    stream: &'a Mutex<Chunked>,
    layers: Mutex<Vec<(String, u64)>>,
}

impl bootc_image::CopyObserver for Reporter<'_> {
    fn opened(&self, image: &bootc_image::store::image_input::ImageInput) {
        if let Ok(mut l) = self.layers.lock() {
            *l = image
                .layers
                .iter()
                .map(|x| (x.blob_digest.to_string(), x.blob_size))
                .collect();
        }
        self.stream
            .send(&json!({"stream": "Getting image source signatures\n"}));
    }
    fn progress(&self, event: Progress) {
        let layer = |i: usize| {
            self.layers
                .lock()
                .ok()
                .and_then(|l| l.get(i).cloned())
                .unwrap_or_default()
        };
        match event {
            Progress::Bytes { index, read, .. } => {
                let (id, total) = layer(index);
                self.stream.send(&json!({"pullProgress": {"status": "pulling", "current": read, "total": total, "progressComponentID": id}}));
            }
            Progress::LayerDone { index, reused } => {
                let (id, total) = layer(index);
                let status = if reused { "skipped" } else { "success" };
                self.stream
                    .send(&json!({"stream": format!("Copying blob {id} done\n")}));
                self.stream.send(&json!({"pullProgress": {"status": status, "current": total, "total": total, "progressComponentID": id}}));
            }
            _ => {}
        }
    }
}

/// Pulls `reference` into the store; its image ID.
fn pull(
    reference: &str,
    config: &bootc_image::store::StoreConfig,
    fetch: &bootc_image::source::image_proxy::FetchOptions,
    stream: &Mutex<Chunked>,
) -> anyhow::Result<String> {
    let opened = crate::copying::open_pull(reference, fetch)?;
    let store = bootc_image::store::Store::open(config.clone())
        .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
    let reporter = Reporter {
        stream,
        layers: Mutex::new(Vec::new()),
    };
    let copied = opened.copy_into(&store, &reporter)?;
    stream.send(&json!({"stream": "Writing manifest to image destination\n"}));
    Ok(copied.image_id)
}

/// `%XX` sequences decoded (the reference comes with every non-alphanumeric byte encoded); a `%`
/// not followed by two hex digits is kept as it is.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decode() {
        assert_eq!(super::percent_decode("a%2Fb%3A1"), "a/b:1");
        assert_eq!(super::percent_decode("%zz%2"), "%zz%2");
        assert_eq!(super::percent_decode("%+F%\u{e9}"), "% F%\u{e9}");
    }
}
