//! Faults a registry (or what stands before it) may give the native client, injected by an HTTP
//! proxy of the tests in front of the real registry: `429 Too Many Requests` with `Retry-After`,
//! `500`, a slow body, a blob whose bytes are not its digest's, a body shorter than announced.
//! Each ends in the right image, or one line of the right class with the store as it was.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::registry::{Registry, failed, ours};
use crate::util::{Driver, TestStore, describe, run};

/// What the proxy does to blob requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Nothing: a forward proxy (absolute-form requests, and CONNECT tunnels to the registry).
    None,
    /// Answers the first `n` blob GETs with this status line and headers, then forwards.
    Status { n: usize, head: &'static str },
    /// Forwards blob bodies in 64 KiB pieces, `pause` apart.
    Slow { pause: Duration },
    /// Forwards layer bodies with one byte flipped in the middle of each body.
    Flip,
    /// Forwards a layer's response head, then half its body, then closes (every time).
    Short,
    /// Forwards requests without their `Range` header (a registry that serves whole blobs only).
    NoRanges,
    /// Flips a byte in the middle of every ranged answer (206) but the first.
    FlipRanges,
}

/// An HTTP proxy of one request per connection (it asks the registry to close after each).
pub struct FaultProxy {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Blob requests answered by the fault so far.
    hits: Arc<AtomicUsize>,
    /// Requests seen, in all.
    requests: Arc<AtomicUsize>,
}

/// Reads an HTTP head (up to the empty line) from `r`.
fn read_head(r: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end().to_string();
        if l.is_empty() {
            return Some(lines);
        }
        lines.push(l);
    }
}

/// The `Content-Length` of a head.
fn length(head: &[String]) -> usize {
    head.iter()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

impl FaultProxy {
    /// A proxy before the registry on `upstream`, doing `fault`.
    pub fn start(upstream: u16, fault: Fault) -> FaultProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, r) = (hits.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { continue };
                let (fault, h, r) = (fault.clone(), h.clone(), r.clone());
                std::thread::spawn(move || serve(client, upstream, &fault, &h, &r));
            }
        });
        FaultProxy {
            port,
            hits,
            requests,
        }
    }
}

/// One connection: its requests forwarded (or faulted) one by one.
fn serve(
    client: TcpStream,
    upstream: u16,
    fault: &Fault,
    hits: &AtomicUsize,
    requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(client.try_clone().expect("dup"));
    let mut out = client;
    while let Some(mut head) = read_head(&mut reader) {
        requests.fetch_add(1, Ordering::SeqCst);
        if head[0].starts_with("CONNECT ") {
            // A tunnel to the registry, whatever host was named.
            let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            if write!(out, "HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
                return;
            }
            let (mut up_r, mut up_w) = (up.try_clone().expect("dup"), up);
            let mut back = out.try_clone().expect("dup");
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up_r, &mut back);
                let _ = back.shutdown(std::net::Shutdown::Both);
            });
            // What the client sent beyond the head is in the reader's buffer.
            let _ = std::io::copy(&mut reader, &mut up_w);
            let _ = up_w.shutdown(std::net::Shutdown::Both);
            return;
        }
        // A proxy's request names the whole URL: the registry gets its path.
        if let Some((method, rest)) = head[0].split_once(" http://")
            && let Some((_, path)) = rest.split_once('/')
        {
            head[0] = format!("{method} /{path}");
        }
        let mut body = vec![0u8; length(&head)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let blob = head[0].starts_with("GET ") && head[0].contains("/blobs/");
        if blob
            && let Fault::Status { n, head: canned } = fault
            && hits
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |h| {
                    (h < *n).then_some(h + 1)
                })
                .is_ok()
        {
            let _ = write!(out, "{canned}\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let mut req = String::new();
        for l in &head {
            let lower = l.to_ascii_lowercase();
            let ranges_dropped = matches!(fault, Fault::NoRanges) && lower.starts_with("range:");
            if !lower.starts_with("connection:") && !ranges_dropped {
                req.push_str(l);
                req.push_str("\r\n");
            }
        }
        req.push_str("Connection: close\r\n\r\n");
        if up.write_all(req.as_bytes()).is_err() || up.write_all(&body).is_err() {
            return;
        }
        let mut resp = BufReader::new(up);
        let Some(rhead) = read_head(&mut resp) else {
            return;
        };
        let mut rbody = Vec::new();
        if resp.read_to_end(&mut rbody).is_err() {
            return;
        }
        let mut text = rhead.join("\r\n");
        text.push_str("\r\n\r\n");
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
        let ok = rhead[0].contains(" 200 ") || rhead[0].contains(" 206 ");
        match fault {
            Fault::Slow { pause } if blob && ok => {
                hits.fetch_add(1, Ordering::SeqCst);
                for piece in rbody.chunks(64 << 10) {
                    std::thread::sleep(*pause);
                    if out.write_all(piece).is_err() {
                        return;
                    }
                }
            }
            // Layers only (the config is small).
            Fault::Flip if blob && ok && rbody.len() > 4096 => {
                hits.fetch_add(1, Ordering::SeqCst);
                let mid = rbody.len() / 2;
                rbody[mid] ^= 0xff;
                let _ = out.write_all(&rbody);
            }
            Fault::FlipRanges if blob && rhead[0].contains(" 206 ") && rbody.len() > 4096 => {
                if hits.fetch_add(1, Ordering::SeqCst) > 0 {
                    let mid = rbody.len() / 2;
                    rbody[mid] ^= 0xff;
                }
                let _ = out.write_all(&rbody);
            }
            Fault::Short if blob && ok && rbody.len() > 4096 => {
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = out.write_all(&rbody[..rbody.len() / 2]);
                let _ = out.shutdown(std::net::Shutdown::Both);
                return;
            }
            _ => {
                if out.write_all(&rbody).is_err() {
                    return;
                }
            }
        }
    }
}

/// A registry with a two-layer image, a store that podman reads.
fn setup(label: &str) -> (Registry, TestStore) {
    let reg = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let big = fixture::build_tar(&[fixture::Entry::file(
        "data/random",
        fixture::pseudo_random(1 << 20, 9),
    )]);
    oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars(label, &[fixture::small_tar(140), big], Compression::Gzip),
    );
    reg.push(&oci.source(Some("v1")), "f/app:1");
    store.podman_ok(&["images"]);
    (reg, store)
}

/// `pull` through `proxy` with `retries` retries 10 ms apart.
fn pull(
    store: &TestStore,
    reg: &Registry,
    proxy: &FaultProxy,
    retries: &str,
) -> std::process::Output {
    run(ours(store, reg).args([
        "pull",
        "--tls-verify=false",
        "--retry",
        retries,
        "--retry-delay",
        "10ms",
        "--progress",
        "none",
        &format!("127.0.0.1:{}/f/app:1", proxy.port),
    ]))
}

/// 429 with Retry-After is waited out (within the request: no retry needed), 500 is retried, a
/// slow body arrives: the image each time.
#[test]
fn registry_native_transient_faults() {
    let (reg, store) = setup("transient");
    let p = FaultProxy::start(
        reg.port,
        Fault::Status {
            n: 2,
            head: "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1",
        },
    );
    let started = Instant::now();
    let out = pull(&store, &reg, &p, "0");
    assert!(out.status.success(), "429: {}", describe(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After waited"
    );
    assert_eq!(p.hits.load(Ordering::SeqCst), 2, "two 429s answered");
    let image = format!("127.0.0.1:{}/f/app:1", p.port);
    crate::util::run_ok(store.ours_cmd().args(["image", "rm", &image]));
    let p = FaultProxy::start(
        reg.port,
        Fault::Status {
            n: 1,
            head: "HTTP/1.1 500 Internal Server Error",
        },
    );
    let out = pull(&store, &reg, &p, "2");
    assert!(out.status.success(), "500 then retried: {}", describe(&out));
    let p = FaultProxy::start(
        reg.port,
        Fault::Slow {
            pause: Duration::from_millis(20),
        },
    );
    let out = pull(&store, &reg, &p, "0");
    assert!(out.status.success(), "slow body: {}", describe(&out));
    store.podman_ok(&["image", "exists", &format!("127.0.0.1:{}/f/app:1", p.port)]);
}

/// A 500 that stays, a body with a flipped byte, a body shorter than announced every time: one
/// line each (external class for the registry's failures, image class for the wrong bytes), the
/// store as it was.
#[test]
fn registry_native_lasting_faults() {
    let (reg, store) = setup("lasting");
    let snap = store.snapshot();
    let p = FaultProxy::start(
        reg.port,
        Fault::Status {
            n: usize::MAX,
            head: "HTTP/1.1 500 Internal Server Error",
        },
    );
    let line = failed(&pull(&store, &reg, &p, "1"), "500", &[5], &["500"]);
    eprintln!("500: {line}");
    let p = FaultProxy::start(reg.port, Fault::Flip);
    let line = failed(
        &pull(&store, &reg, &p, "0"),
        "flipped byte",
        &[3, 5],
        &["sha256:"],
    );
    eprintln!("flipped: {line}");
    let p = FaultProxy::start(reg.port, Fault::Short);
    let line = failed(
        &pull(&store, &reg, &p, "1"),
        "short body",
        &[5],
        &["127.0.0.1"],
    );
    eprintln!("short: {line}");
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
}

/// Proxies from the environment, as c/image takes them: a registry reached by a name only the
/// proxy knows goes through it (HTTPS first through `HTTPS_PROXY`'s tunnel, which fails as the
/// registry speaks plain HTTP, then through `HTTP_PROXY`'s, as the registry is insecure); a
/// loopback registry never does, even with a proxy that is not there.
#[test]
fn registry_native_http_proxy() {
    let (reg, store) = setup("proxied");
    let p = FaultProxy::start(reg.port, Fault::None);
    let conf = store.scratch("proxied.conf");
    let host = format!("registry.test:{}", reg.port);
    std::fs::write(
        &conf,
        format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
    )
    .expect("registries.conf");
    let proxy = format!("http://127.0.0.1:{}", p.port);
    let image = format!("{host}/f/app:1");
    let out = run(store
        .ours_cmd()
        .env("CONTAINERS_REGISTRIES_CONF", &conf)
        .env("HTTPS_PROXY", &proxy)
        .env("HTTP_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["pull", "--retry", "0", "--progress", "none", &image]));
    assert!(
        out.status.success(),
        "through the proxy: {}",
        describe(&out)
    );
    assert!(
        p.requests.load(Ordering::SeqCst) >= 4,
        "the proxy carried it"
    );
    store.podman_ok(&["image", "exists", &image]);
    let dead = format!("http://127.0.0.1:{}", crate::registry::free_port());
    let out = run(ours(&store, &reg)
        .env("HTTPS_PROXY", &dead)
        .env("HTTP_PROXY", &dead)
        .args([
            "pull",
            "--retry",
            "0",
            "--progress",
            "none",
            &format!("{}/f/app:1", reg.host()),
        ]));
    assert!(
        out.status.success(),
        "loopback, not proxied: {}",
        describe(&out)
    );
}
