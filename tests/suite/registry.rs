//! Registries: a real Debian `docker-registry` (distribution 2.8) on 127.0.0.1 with a random port,
//! images pushed with skopeo; what we pull must equal what `skopeo copy docker://…` writes, and
//! every failure (credentials, missing tag, unreachable, corrupt blob, cut connection) must leave
//! the store as it was.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::fixture::{self, BuiltImage, Compression, ImageSpec, OciDir, UNDEFINED_MTIME_PATHS};
use crate::interop::{
    NAME, assert_inspect_equal, assert_records_equal, assert_skopeo_exports, assert_trees_equal,
};
use crate::util::{Driver, TestStore, describe, run, run_ok, unique_tmp_path};

/// A running registry, stopped and removed on drop.
pub struct Registry {
    child: Child,
    /// Its directory: config, data, log, registries.conf.
    pub dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `user:password` when it asks for credentials.
    pub creds: Option<String>,
    /// The certs.d directory of a registry speaking TLS.
    pub certs: Option<PathBuf>,
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a registry; with `auth`, htpasswd basic auth for `tester:secret`.
    pub fn start(auth: bool) -> Registry {
        Registry::start_with(auth, None, "")
    }

    /// Starts a registry speaking TLS with the certificates of [`tls_files`] in `certs`,
    /// requiring a client certificate its CA signed; registries.conf leaves it secure.
    pub fn start_tls(certs: &Path) -> Registry {
        Registry::start_with(false, Some(certs), "")
    }

    /// Starts a registry: `auth` as in [`Registry::start`], TLS as in [`Registry::start_tls`],
    /// `extra` appended to its configuration (an `auth:` section of its own, say).
    pub fn start_with(auth: bool, tls: Option<&Path>, extra: &str) -> Registry {
        let dir = unique_tmp_path("registry");
        fs::create_dir_all(dir.join("data")).expect("registry dir");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        if let Some(c) = tls {
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                c.join("server.pem").display(),
                c.join("server-key.pem").display(),
                c.join("ca.crt").display()
            ));
        }
        let creds = auth.then(|| {
            let out = run_ok(Command::new("htpasswd").args(["-Bbn", "tester", "secret"]));
            fs::write(dir.join("htpasswd"), out).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
            "tester:secret".to_string()
        });
        config.push_str(extra);
        fs::write(dir.join("config.yml"), config).expect("write registry config");
        fs::write(
            dir.join("registries.conf"),
            format!(
                "[[registry]]\nlocation = \"127.0.0.1:{port}\"\ninsecure = {}\n",
                tls.is_none()
            ),
        )
        .expect("write registries.conf");
        let log = fs::File::create(dir.join("log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (apt install docker-registry)");
        let r = Registry {
            child,
            dir,
            port,
            creds,
            certs: tls.map(Path::to_path_buf),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registries.conf marking it insecure (plain HTTP).
    pub fn conf(&self) -> PathBuf {
        self.dir.join("registries.conf")
    }

    /// Pushes `src` (e.g. `oci:DIR:TAG`) as `HOST/repo`.
    pub fn push(&self, src: &str, repo: &str) {
        let mut c = Command::new("skopeo");
        c.args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--dest-tls-verify=false",
        ]);
        if let Some(cr) = &self.creds {
            c.args(["--dest-creds", cr]);
        }
        if let Some(certs) = &self.certs {
            c.arg("--dest-cert-dir").arg(certs);
        }
        c.args([src, &format!("docker://{}/{repo}", self.host())]);
        run_ok(&mut c);
    }

    /// An auth.json with the registry's credentials.
    pub fn authfile(&self, path: &Path, creds: &str) {
        let auth = base64_encode(creds.as_bytes());
        fs::write(
            path,
            format!(
                "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
                self.host()
            ),
        )
        .expect("write auth.json");
    }

    /// How many times a blob was fetched (GET, any answer), from the access log.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
            .count()
    }

    /// The file the registry keeps blob `digest` in.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = fixture::digest_hex(digest);
        self.dir.join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, made with
/// openssl in `dir`: `ca.crt`, `client.cert` and `client.key` there are a certs.d directory for
/// the registry (the server's files are `server.pem`, `server-key.pem`).
pub fn tls_files(dir: &Path) {
    fs::create_dir_all(dir).expect("certs dir");
    let ssl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(dir).args(args));
    };
    self_signed(dir, "ca.key", "ca.crt", "test CA");
    fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("ext");
    for (name, key) in [("server", "server-key.pem"), ("client", "client.key")] {
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            key,
            "-out",
            &format!("{name}.csr"),
        ]);
        let out = if name == "server" {
            "server.pem"
        } else {
            "client.cert"
        };
        ssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            out,
        ]);
    }
}

/// A self-signed certificate `cert` for `cn` with its new RSA key `key`, in `dir` (openssl).
pub fn self_signed(dir: &Path, key: &str, cert: &str, cn: &str) {
    run_ok(Command::new("openssl").current_dir(dir).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        key,
        "-out",
        cert,
    ]));
}

/// Standard base64 (for auth.json).
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Our binary on `store` with the registry's registries.conf.
pub fn ours(store: &TestStore, reg: &Registry) -> Command {
    let mut c = store.ours_cmd();
    c.env("CONTAINERS_REGISTRIES_CONF", reg.conf());
    c
}

/// A failure whose last stderr line is the one error line (retry notices may come before it);
/// returns that line.
pub fn failed(out: &Output, what: &str, codes: &[i32], mentions: &[&str]) -> String {
    assert!(
        out.status.code().is_some_and(|c| codes.contains(&c)),
        "{what}: exit code not one of {codes:?}\n{}",
        describe(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or_default();
    assert!(last.starts_with("error: "), "{what}: {}", describe(out));
    for l in &lines[..lines.len().saturating_sub(1)] {
        assert!(l.contains("retry"), "{what}: unexpected line {l:?}");
    }
    for m in mentions {
        assert!(last.contains(m), "{what}: should mention {m:?}: {last}");
    }
    last.to_string()
}

/// One image through the registry into skopeo's store and ours; podman's views must be equal.
fn registry_equals_skopeo(driver: Driver, spec: &ImageSpec) {
    registry_equals_skopeo_via(driver, spec, "skopeo");
}

/// [`registry_equals_skopeo`], our pull reaching the registry `via` skopeo's proxy or natively.
fn registry_equals_skopeo_via(driver: Driver, spec: &ImageSpec, via: &str) {
    let reg = Registry::start(false);
    let reference = TestStore::new(driver);
    let mine = TestStore::new(driver);
    let mut oci = OciDir::create(&reference.dir.join("oci"));
    let built = oci.add_image(Some("v1"), spec);
    reg.push(&oci.source(Some("v1")), "interop:v1");
    let src = format!("docker://{}/interop:v1", reg.host());
    // skopeo compresses uncompressed layers on the way to a registry: the manifest is the registry's.
    let mut built = built;
    built.manifest_digest = registry_digest(&src);
    skopeo_pull(&reference, &src);
    let out = run(ours(&mine, &reg).env("BOOTC_IMAGE_VIA", via).args([
        "copy-to-storage",
        "--source",
        &src,
        "--target",
        NAME,
        "--progress",
        "none",
    ]));
    assert!(out.status.success(), "our copy: {}", describe(&out));
    check_equal(&reference, &mine, &built);
}

/// The native registry client (issue 25's first part): the same stores as skopeo's, for each
/// compression, from the plain-HTTP registry registries.conf marks insecure.
#[test]
fn registry_native_equals_skopeo() {
    for compression in [Compression::Gzip, Compression::Zstd, Compression::None] {
        registry_equals_skopeo_via(Driver::Overlay, &fixture::rich_image(compression), "native");
    }
}

/// A registry (with credentials if `auth`), an overlay store, and an image of `tars` (gzip)
/// pushed to the registry as `repo`: (registry, store, layout, image).
fn pushed(
    auth: bool,
    label: &str,
    tars: &[Vec<u8>],
    repo: &str,
) -> (Registry, TestStore, OciDir, BuiltImage) {
    let reg = Registry::start(auth);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let built = oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars(label, tars, Compression::Gzip),
    );
    reg.push(&oci.source(Some("v1")), repo);
    (reg, store, oci, built)
}

/// `skopeo copy SRC containers-storage:…NAME` from the plain-HTTP registry into `reference`.
fn skopeo_pull(reference: &TestStore, src: &str) {
    run_ok(
        Command::new("skopeo")
            .env("TMPDIR", &reference.tmpdir)
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--src-tls-verify=false",
                src,
                &reference.storage_ref(NAME),
            ]),
    );
}

/// The manifest digest the registry holds for `src`.
fn registry_digest(src: &str) -> String {
    let out = run_ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", src]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    v["Digest"].as_str().expect("Digest").to_string()
}

fn check_equal(reference: &TestStore, mine: &TestStore, built: &BuiltImage) {
    assert_inspect_equal(reference, mine, built);
    assert_records_equal(reference, mine);
    assert_trees_equal(reference, mine, NAME, UNDEFINED_MTIME_PATHS);
    assert_skopeo_exports(mine, built);
}

/// One test per driver and compression of the rich fixture.
macro_rules! registry_equals_skopeo_case {
    ($($name:ident: $driver:expr, $compression:expr;)*) => {$(
        #[test]
        fn $name() {
            registry_equals_skopeo($driver, &fixture::rich_image($compression));
        }
    )*};
}

registry_equals_skopeo_case! {
    registry_overlay_gzip: Driver::Overlay, Compression::Gzip;
    registry_overlay_zstd: Driver::Overlay, Compression::Zstd;
    registry_overlay_uncompressed: Driver::Overlay, Compression::None;
    registry_vfs_gzip: Driver::Vfs, Compression::Gzip;
}

#[test]
fn registry_overlay_mixed() {
    let tars: Vec<Vec<u8>> = (0..3).map(fixture::small_tar).collect();
    let kinds = [Compression::Gzip, Compression::Zstd, Compression::None];
    let spec = ImageSpec {
        layers: tars
            .iter()
            .zip(kinds)
            .map(|(t, k)| fixture::LayerBlob::new(t, k))
            .collect(),
        label: "mixed".into(),
    };
    registry_equals_skopeo(Driver::Overlay, &spec);
}

/// `pull NAME` (no transport) names the image as podman does and honours
/// CONTAINERS_REGISTRIES_CONF; a second image sharing the base fetches only its own layer.
#[test]
fn registry_pull_names_and_reuses_layers() {
    let reg = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let tars: Vec<Vec<u8>> = (20..23).map(fixture::small_tar).collect();
    let x = oci.add_image(
        Some("x"),
        &ImageSpec::from_tars("x", &tars[..2], Compression::Gzip),
    );
    let y = oci.add_image(
        Some("y"),
        &ImageSpec::from_tars("y", &tars, Compression::Gzip),
    );
    reg.push(&oci.source(Some("x")), "app/x:1");
    reg.push(&oci.source(Some("y")), "app/y:1");
    let out = run(ours(&store, &reg).args([
        "pull",
        "--progress",
        "none",
        &format!("{}/app/x:1", reg.host()),
    ]));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), x.image_id());
    let before: Vec<usize> = x.layer_digests.iter().map(|d| reg.blob_gets(d)).collect();
    let out =
        run(ours(&store, &reg).args(["pull", "-q", &format!("docker://{}/app/y:1", reg.host())]));
    assert!(out.status.success(), "{}", describe(&out));
    let after: Vec<usize> = x.layer_digests.iter().map(|d| reg.blob_gets(d)).collect();
    assert_eq!(before, after, "shared layers must not be fetched again");
    assert_eq!(reg.blob_gets(&y.layer_digests[2]), 1, "the new layer, once");
    let v = store.inspect(&format!("{}/app/y:1", reg.host()));
    assert_eq!(v["Id"], serde_json::Value::from(y.image_id()));
    assert_eq!(
        v["Digest"],
        serde_json::Value::from(y.manifest_digest.clone())
    );
    let check =
        run(store
            .podman_cmd()
            .args(["image", "inspect", &format!("{}/app/x:1", reg.host())]));
    assert!(check.status.success(), "{}", describe(&check));
}

/// Credentials: none and wrong ones are refused (external class, naming the remedy), the store
/// unchanged; --authfile and REGISTRY_AUTH_FILE work.
#[test]
fn registry_auth() {
    registry_auth_via("skopeo");
}

/// [`registry_auth`] with the native registry client (Basic authentication).
#[test]
fn registry_native_auth() {
    registry_auth_via("native");
}

/// [`registry_auth`], the registry reached `via` skopeo's proxy or natively.
fn registry_auth_via(via: &str) {
    let (reg, store, _, _) = pushed(true, "auth", &[fixture::small_tar(30)], "secret/app:1");
    let image = format!("{}/secret/app:1", reg.host());
    let empty = store.dir.join("empty-auth.json");
    fs::write(&empty, "{}").expect("write");
    let snap = store.snapshot();
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .args(["pull", "--retry", "0", "--authfile"])
        .arg(&empty)
        .arg(&image));
    failed(&out, "no credentials", &[5], &[&image, "--authfile"]);
    let wrong = store.dir.join("wrong.json");
    reg.authfile(&wrong, "tester:nope");
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .args(["pull", "--retry", "0", "--authfile"])
        .arg(&wrong)
        .arg(&image));
    failed(&out, "wrong credentials", &[5], &[&image]);
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
    let good = store.dir.join("good.json");
    reg.authfile(&good, "tester:secret");
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .args(["pull", "-q", "--authfile"])
        .arg(&good)
        .arg(&image));
    assert!(out.status.success(), "{}", describe(&out));
    store.podman_ok(&["rmi", &image]);
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .env("REGISTRY_AUTH_FILE", &good)
        .args(["pull", "-q", &image]));
    assert!(
        out.status.success(),
        "REGISTRY_AUTH_FILE: {}",
        describe(&out)
    );
}

/// A missing tag, an unreachable registry, a blob whose bytes do not match its digest: one clean
/// error each, the store as it was, podman still working.
#[test]
fn registry_faults() {
    registry_faults_via("skopeo");
}

/// [`registry_faults`] with the native registry client.
#[test]
fn registry_native_faults() {
    registry_faults_via("native");
}

/// The body of [`registry_faults`], the registry reached `via` skopeo's proxy or natively.
fn registry_faults_via(via: &str) {
    let tars = [fixture::small_tar(40), fixture::small_tar(41)];
    let (reg, store, _, built) = pushed(false, "faults", &tars, "f/app:1");
    store.podman_ok(&["images"]);
    let snap = store.snapshot();
    let missing = format!("{}/f/app:nope", reg.host());
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .args(["pull", "--retry", "0", &missing]));
    failed(&out, "missing tag", &[3], &[&missing]);
    let unreachable = format!("127.0.0.1:{}/f/app:1", free_port());
    let out = run(ours(&store, &reg).env("BOOTC_IMAGE_VIA", via).args([
        "pull",
        "--retry",
        "1",
        "--retry-delay",
        "10ms",
        "--tls-verify=false",
        &unreachable,
    ]));
    failed(&out, "unreachable registry", &[5], &[&unreachable]);
    if via == "native" {
        // --tls-verify=true wins over registries.conf's `insecure`: HTTPS only, refused.
        let out = run(ours(&store, &reg).env("BOOTC_IMAGE_VIA", via).args([
            "pull",
            "--retry",
            "0",
            "--tls-verify=true",
            &format!("{}/f/app:1", reg.host()),
        ]));
        failed(&out, "--tls-verify=true", &[5], &["HTTPS"]);
    }
    // The registry serves the second layer with other bytes of the same length.
    let f = reg.blob_file(&built.layer_digests[1]);
    let mut bytes = fs::read(&f).expect("blob");
    let n = bytes.len() / 2;
    bytes[n] ^= 0xff;
    fs::write(&f, bytes).expect("corrupt blob");
    let image = format!("{}/f/app:1", reg.host());
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", via)
        .args(["pull", "--retry", "0", &image]));
    failed(
        &out,
        "corrupt blob",
        &[3, 5],
        &[fixture::digest_hex(&built.layer_digests[1])],
    );
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
    store.podman_ok(&["images"]);
}

/// A TCP proxy in front of the registry that cuts responses after `limit` bytes: once, or always.
struct CuttingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
    /// Bytes passed on from the registry to the client, in all.
    sent: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, limit: usize, always: bool) -> CuttingProxy {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        l.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let sent_all = Arc::new(AtomicUsize::new(0));
        let (s, c, total) = (stop.clone(), cuts.clone(), sent_all.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).expect("blocking");
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let cut = always || c.load(Ordering::SeqCst) == 0;
                let c = c.clone();
                let total = total.clone();
                let (mut c_in, mut s_out) = (
                    client.try_clone().expect("dup"),
                    server.try_clone().expect("dup"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16384];
                    let mut sent = 0;
                    while let Ok(n) = s_in.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        // Once: the first connection past the limit (a client that keeps
                        // connections alive has several past it) is cut, and counted once.
                        if cut
                            && sent + n > limit
                            && (always
                                || c.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                                    .is_ok())
                        {
                            let _ = c_out.write_all(&buf[..limit - sent]);
                            total.fetch_add(limit - sent, Ordering::SeqCst);
                            let _ = c_out.shutdown(std::net::Shutdown::Both);
                            let _ = s_in.shutdown(std::net::Shutdown::Both);
                            if always {
                                c.fetch_add(1, Ordering::SeqCst);
                            }
                            return;
                        }
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n;
                        total.fetch_add(n, Ordering::SeqCst);
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy {
            port,
            stop,
            cuts,
            sent: sent_all,
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `pull IMAGE` over plain HTTP, two retries 10 ms apart, no progress.
fn pull_retrying(store: &TestStore, reg: &Registry, image: &str, via: &str) -> Output {
    run(ours(store, reg).env("BOOTC_IMAGE_VIA", via).args([
        "pull",
        "--tls-verify=false",
        "--retry",
        "2",
        "--retry-delay",
        "10ms",
        "--progress",
        "none",
        image,
    ]))
}

/// A connection cut mid-blob: cut once, the pull succeeds with the image skopeo sees (skopeo
/// 1.9's proxy fetches the layer again from nothing; the native client resumes it with `Range`,
/// so nothing that arrived is fetched twice); cut always, a clean error after the retries, naming
/// the image and the layer, with the store as it was.
#[test]
fn registry_cut_mid_blob() {
    registry_cut_mid_blob_via("skopeo");
}

/// [`registry_cut_mid_blob`] with the native registry client.
#[test]
fn registry_native_cut_mid_blob() {
    registry_cut_mid_blob_via("native");
}

/// The body of [`registry_cut_mid_blob`], the registry reached `via` skopeo's proxy or natively.
fn registry_cut_mid_blob_via(via: &str) {
    let reg = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let big = fixture::build_tar(&[fixture::Entry::file(
        "data/random",
        fixture::pseudo_random(3 << 20, 7),
    )]);
    let built = oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars("cut", &[fixture::small_tar(50), big], Compression::None),
    );
    reg.push(&oci.source(Some("v1")), "c/app:1");
    store.podman_ok(&["images"]);
    let snap = store.snapshot();
    {
        // Cut every 256 KiB: more cuts than the native client resumes a blob.
        let always = CuttingProxy::start(reg.port, 256 << 10, true);
        let image = format!("127.0.0.1:{}/c/app:1", always.port);
        let out = pull_retrying(&store, &reg, &image, via);
        // The registry holds the layer gzip-compressed (skopeo compressed it on the way).
        let v: serde_json::Value = serde_json::from_str(&run_ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/c/app:1", reg.host()),
        ])))
        .expect("inspect JSON");
        let blob = v["Layers"][1].as_str().expect("layer").to_string();
        let line = failed(
            &out,
            "always cut",
            &[5],
            &[&image, fixture::digest_hex(&blob)],
        );
        eprintln!("always cut: {line}");
        assert!(
            always.cuts.load(Ordering::SeqCst) >= 3,
            "cut on each attempt"
        );
        let d = snap.diff(&store.snapshot());
        assert!(d.is_empty(), "the store changed: {d:?}");
    }
    if via == "native" {
        // Cut every MiB: each resume brings another MiB, and the 3 MiB blob arrives.
        let every_mib = CuttingProxy::start(reg.port, 1 << 20, true);
        let image = format!("127.0.0.1:{}/c/app:1", every_mib.port);
        let out = pull_retrying(&store, &reg, &image, via);
        assert!(out.status.success(), "cut every MiB: {}", describe(&out));
        assert!(
            every_mib.cuts.load(Ordering::SeqCst) >= 2,
            "cut and resumed"
        );
        run_ok(ours(&store, &reg).args(["image", "rm", &image]));
    }
    let once = CuttingProxy::start(reg.port, 1 << 20, false);
    let image = format!("127.0.0.1:{}/c/app:1", once.port);
    let gets_before = reg.blob_gets(&built_blob(&reg));
    let out = pull_retrying(&store, &reg, &image, via);
    assert!(out.status.success(), "cut once: {}", describe(&out));
    assert_eq!(once.cuts.load(Ordering::SeqCst), 1, "cut once");
    if via == "native" {
        // Resumed: the big blob asked for twice (whole, then the rest), and what passed the
        // proxy is the blob once plus the small documents, not the blob and the part cut.
        let blob = built_blob(&reg);
        let size = fs::metadata(reg.blob_file(&blob)).expect("blob").len() as usize;
        assert_eq!(
            reg.blob_gets(&blob) - gets_before,
            2,
            "one GET, one ranged GET"
        );
        let sent = once.sent.load(Ordering::SeqCst);
        assert!(
            sent < size + (128 << 10),
            "{sent} bytes passed for a {size}-byte blob: fetched again"
        );
    }
    let v = store.inspect(&image);
    assert_eq!(v["Id"], serde_json::Value::from(built.image_id()));
    let (config, layers) = store.exported_diff_ids(&image, "cut");
    assert_eq!(config, built.diff_ids);
    assert_eq!(layers, built.diff_ids);
}

/// The digest of the big (second) layer of `c/app:1` as the registry holds it.
fn built_blob(reg: &Registry) -> String {
    let v: serde_json::Value = serde_json::from_str(&run_ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/c/app:1", reg.host()),
    ])))
    .expect("inspect JSON");
    v["Layers"][1].as_str().expect("layer").to_string()
}

/// `cmd pull` into bootc's store with podman absent from PATH.
#[test]
fn cmd_pull_without_podman() {
    let (reg, store, _, built) = pushed(false, "cmdpull", &[fixture::small_tar(60)], "cmd/app:1");
    let sysroot = store.scratch("s");
    fs::create_dir_all(&sysroot).expect("sysroot");
    let bin = store.scratch("bin");
    fs::create_dir_all(&bin).expect("bin");
    std::os::unix::fs::symlink("/usr/bin/skopeo", bin.join("skopeo")).expect("link skopeo");
    let image = format!("{}/cmd/app:1", reg.host());
    let out = run(Command::new(crate::util::BIN)
        .env("PATH", &bin)
        .env("CONTAINERS_REGISTRIES_CONF", reg.conf())
        .arg("--sysroot")
        .arg(&sysroot)
        .args(["cmd", "pull", "--progress", "none", &image]));
    assert!(out.status.success(), "cmd pull: {}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        built.image_id()
    );
    let listed = run_ok(
        Command::new("podman")
            .arg("--root")
            .arg(sysroot.join("ostree/bootc/storage"))
            .arg("--runroot")
            .arg(store.scratch("sr"))
            .args(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
    );
    assert!(listed.contains(&image), "podman lists it: {listed}");
}

/// A config as Docker and BuildKit write them (`architecture` first, `container_config`, pretty
/// printed): stored byte for byte, so the image ID is its digest, as skopeo stores it.
#[test]
fn registry_config_stored_byte_for_byte() {
    let reg = Registry::start(false);
    let reference = TestStore::new(Driver::Overlay);
    let mine = TestStore::new(Driver::Overlay);
    let spec = ImageSpec::from_tars("docker-style", &[fixture::small_tar(80)], Compression::Gzip);
    let config = format!(
        "{{\n  \"architecture\": \"amd64\",\n  \"config\": {{\"Cmd\": [\"/bin/sh\"], \"Labels\": null}},\n  \"container_config\": {{\"Hostname\": \"abc\", \"Cmd\": [\"/bin/sh\", \"-c\", \"#(nop) ADD file\"]}},\n  \"created\": \"2024-01-02T03:04:05.123456789Z\",\n  \"docker_version\": \"20.10.7\",\n  \"os\": \"linux\",\n  \"rootfs\": {{\"type\": \"layers\", \"diff_ids\": [\"{}\"]}}\n}}\n",
        spec.layers[0].diff_id
    );
    let mut oci = OciDir::create(&reference.dir.join("oci"));
    let built = oci.add_image_with_config(Some("v1"), &spec, config.as_bytes());
    reg.push(&oci.source(Some("v1")), "interop:v1");
    let src = format!("docker://{}/interop:v1", reg.host());
    skopeo_pull(&reference, &src);
    let out = run(ours(&mine, &reg).args(["copy-to-storage", "--source", &src, "--target", NAME]));
    assert!(out.status.success(), "our copy: {}", describe(&out));
    assert_eq!(
        mine.inspect(NAME)["Id"],
        serde_json::Value::from(built.image_id())
    );
    assert_inspect_equal(&reference, &mine, &built);
    assert_records_equal(&reference, &mine);
}

/// A manifest that lies about a layer's size (the registry only checks that the blob exists):
/// refused with one clean error, the store as it was.
#[test]
fn registry_manifest_lying_about_sizes() {
    let (reg, store, oci, built) = pushed(false, "lies", &[fixture::small_tar(90)], "lies/app:1");
    // The same manifest with the layer's size off by one, put under another tag.
    let manifest_path = oci
        .path
        .join("blobs/sha256")
        .join(fixture::digest_hex(&built.manifest_digest));
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).expect("manifest")).expect("JSON");
    let size = manifest["layers"][0]["size"].as_u64().expect("size");
    manifest["layers"][0]["size"] = (size + 1).into();
    let body = serde_json::to_vec(&manifest).expect("JSON");
    let put = format!(
        "import sys, urllib.request\n\
         r = urllib.request.Request('http://{}/v2/lies/app/manifests/2', data=sys.stdin.buffer.read(), method='PUT',\n\
             headers={{'Content-Type': 'application/vnd.oci.image.manifest.v1+json'}})\n\
         print(urllib.request.urlopen(r).status)\n",
        reg.host()
    );
    let mut child = Command::new("python3")
        .args(["-c", &put])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&body)
        .expect("write manifest");
    let out = child.wait_with_output().expect("python3");
    assert!(out.status.success(), "PUT manifest: {}", describe(&out));
    store.podman_ok(&["images"]);
    let snap = store.snapshot();
    let image = format!("{}/lies/app:2", reg.host());
    let out = run(ours(&store, &reg).args(["pull", "--retry", "0", &image]));
    let line = failed(
        &out,
        "manifest lying about a size",
        &[3, 5],
        &[&image, fixture::digest_hex(&built.layer_digests[0])],
    );
    eprintln!("lying manifest: {line}");
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
}

/// The native client needs no skopeo: with none on PATH, a pull from the registry works, and the
/// proxy path says in one line that skopeo is missing.
#[test]
fn registry_native_without_skopeo() {
    let (reg, store, _, _) = pushed(false, "noskopeo", &[fixture::small_tar(70)], "n/app:1");
    let image = format!("{}/n/app:1", reg.host());
    let empty = store.dir.join("no-tools");
    fs::create_dir_all(&empty).expect("mkdir");
    let out = run(ours(&store, &reg)
        .env("PATH", &empty)
        .env("BOOTC_IMAGE_VIA", "skopeo")
        .args(["pull", "--retry", "0", &image]));
    failed(&out, "no skopeo", &[5], &["skopeo", "install"]);
    let out = run(ours(&store, &reg)
        .env("PATH", &empty)
        .env("BOOTC_IMAGE_VIA", "native")
        .args(["pull", &image]));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        store.inspect(&image)["Digest"].as_str(),
        Some(registry_digest(&format!("docker://{image}")).as_str())
    );
}

/// A registry speaking TLS with a private CA and requiring a client certificate: the native
/// client pulls from it with `--cert-dir` (the CA beside the system's roots, the client
/// certificate presented) the image skopeo sees; without the directory, or with the CA but no
/// client certificate, one line naming certs.d, the store as it was.
#[test]
fn registry_native_tls_cert_dir() {
    let store = TestStore::new(Driver::Overlay);
    let certs = store.scratch("certs");
    tls_files(&certs);
    // certs.d holds only what c/image reads there.
    let dir = store.scratch("certs.d");
    fs::create_dir_all(&dir).expect("certs.d");
    for f in ["ca.crt", "client.cert", "client.key"] {
        fs::copy(certs.join(f), dir.join(f)).expect("copy cert");
    }
    let mut reg = Registry::start_tls(&certs);
    reg.certs = Some(dir.clone());
    let mut oci = OciDir::create(&store.dir.join("oci"));
    oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars("tls", &[fixture::small_tar(95)], Compression::Gzip),
    );
    reg.push(&oci.source(Some("v1")), "t/app:1");
    store.podman_ok(&["images"]);
    let snap = store.snapshot();
    let image = format!("{}/t/app:1", reg.host());
    let pull = |cert_dir: Option<&Path>| {
        let mut c = ours(&store, &reg);
        c.env("BOOTC_IMAGE_VIA", "native")
            .args(["pull", "--retry", "0", "--progress", "none"]);
        if let Some(d) = cert_dir {
            c.arg("--cert-dir").arg(d);
        }
        run(c.arg(&image))
    };
    let line = failed(&pull(None), "no CA", &[5], &["certs.d", "--cert-dir"]);
    eprintln!("no CA: {line}");
    let no_client = store.scratch("ca-only");
    fs::create_dir_all(&no_client).expect("mkdir");
    fs::copy(certs.join("ca.crt"), no_client.join("ca.crt")).expect("copy");
    let line = failed(
        &pull(Some(&no_client)),
        "no client certificate",
        &[5],
        &[&image],
    );
    eprintln!("no client certificate: {line}");
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
    let out = pull(Some(&dir));
    assert!(
        out.status.success(),
        "pull with --cert-dir: {}",
        describe(&out)
    );
    let digest = v_digest(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--cert-dir"])
            .arg(&dir)
            .arg(format!("docker://{image}")),
    ));
    assert_eq!(
        store.inspect(&image)["Digest"].as_str(),
        Some(digest.as_str())
    );
    store.podman_ok(&["image", "exists", &image]);
}

/// The `Digest` of `skopeo inspect`'s JSON.
pub fn v_digest(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).expect("inspect JSON");
    v["Digest"].as_str().expect("digest").to_string()
}

/// registries.conf's mirrors and prefixes, natively: a name under a prefix is pulled from its
/// mirror (rewritten there) while the mirror serves it, else from the registry the location
/// names; `pull-from-mirror = "digest-only"` keeps tags off the mirror; the image keeps the name
/// the user gave, with the digest skopeo sees where the name was rewritten to.
#[test]
fn registry_native_mirrors() {
    let primary = Registry::start(false);
    let mirror = Registry::start(false);
    let store = TestStore::new(Driver::Overlay);
    let mut oci = OciDir::create(&store.dir.join("oci"));
    let x = oci.add_image(
        Some("x"),
        &ImageSpec::from_tars("x", &[fixture::small_tar(110)], Compression::Gzip),
    );
    let y = oci.add_image(
        Some("y"),
        &ImageSpec::from_tars("y", &[fixture::small_tar(111)], Compression::Gzip),
    );
    primary.push(&oci.source(Some("x")), "real/app:1");
    mirror.push(&oci.source(Some("y")), "mirrored/app:1");
    let conf = store.scratch("mirrors.conf");
    let write_conf = |mirror_at: &str, pull_from: &str| {
        fs::write(
            &conf,
            format!(
                "[[registry]]\nprefix = \"example.test/team\"\nlocation = \"{}/real\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{mirror_at}/mirrored\"\ninsecure = true\npull-from-mirror = \"{pull_from}\"\n",
                primary.host()
            ),
        )
        .expect("write registries.conf");
    };
    let name = "example.test/team/app:1";
    let pull = |image: &str| {
        run(store
            .ours_cmd()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .env("BOOTC_IMAGE_VIA", "native")
            .args(["pull", "--retry", "0", "--progress", "none", image]))
    };
    // What skopeo sees where the name was rewritten to.
    let skopeo_digest = |image: String| {
        v_digest(&run_ok(Command::new("skopeo").args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{image}"),
        ])))
    };
    // From the mirror.
    write_conf(&mirror.host(), "all");
    let out = pull(name);
    assert!(
        out.status.success(),
        "pull from the mirror: {}",
        describe(&out)
    );
    let v = store.inspect(name);
    assert_eq!(v["Id"], serde_json::Value::from(y.image_id()));
    assert_eq!(
        v["Digest"].as_str(),
        Some(skopeo_digest(format!("{}/mirrored/app:1", mirror.host())).as_str())
    );
    assert_eq!(
        mirror.blob_gets(&y.layer_digests[0]),
        1,
        "the mirror served"
    );
    // By digest, from the mirror too.
    let by_digest = format!("example.test/team/app@{}", y.manifest_digest);
    let out = pull(&by_digest);
    assert!(out.status.success(), "by digest: {}", describe(&out));
    // Tags kept off the mirror: from the registry.
    write_conf(&mirror.host(), "digest-only");
    let out = pull(name);
    assert!(
        out.status.success(),
        "tag-only from the registry: {}",
        describe(&out)
    );
    let v = store.inspect(name);
    assert_eq!(v["Id"], serde_json::Value::from(x.image_id()));
    assert_eq!(
        v["Digest"].as_str(),
        Some(skopeo_digest(format!("{}/real/app:1", primary.host())).as_str())
    );
    assert_eq!(
        primary.blob_gets(&x.layer_digests[0]),
        1,
        "the registry served"
    );
    // A mirror that is down: the registry.
    run_ok(store.ours_cmd().args(["image", "rm", name]));
    write_conf(&format!("127.0.0.1:{}", free_port()), "all");
    let out = pull(name);
    assert!(out.status.success(), "mirror down: {}", describe(&out));
    assert_eq!(
        store.inspect(name)["Id"],
        serde_json::Value::from(x.image_id())
    );
    store.podman_ok(&["image", "exists", name]);
}

/// Short names as podman resolves them: an unqualified-search registry tried (the image named
/// after it), an alias followed, and with neither one line naming the remedy.
#[test]
fn registry_short_names() {
    let (reg, store, _, built) = pushed(false, "short", &[fixture::small_tar(130)], "team/tool:1");
    let conf = store.scratch("short.conf");
    let missing = format!("127.0.0.1:{}", free_port());
    fs::write(
        &conf,
        format!(
            "unqualified-search-registries = [\"{missing}\", \"{}\"]\n[aliases]\n\"mytool\" = \"{}/team/tool\"\n[[registry]]\nlocation = \"{}\"\ninsecure = true\n[[registry]]\nlocation = \"{missing}\"\ninsecure = true\n",
            reg.host(),
            reg.host(),
            reg.host()
        ),
    )
    .expect("registries.conf");
    let pull = |name: &str| {
        run(store
            .ours_cmd()
            .env("CONTAINERS_REGISTRIES_CONF", &conf)
            .args(["pull", "--retry", "0", "--progress", "none", name]))
    };
    // Searched: the first registry is down, the second has it.
    let out = pull("team/tool:1");
    assert!(out.status.success(), "searched: {}", describe(&out));
    let full = format!("{}/team/tool:1", reg.host());
    assert_eq!(
        store.inspect(&full)["Id"],
        serde_json::Value::from(built.image_id())
    );
    // An alias, the tag kept.
    run_ok(store.ours_cmd().args(["image", "rm", &full]));
    let out = pull("mytool:1");
    assert!(out.status.success(), "alias: {}", describe(&out));
    store.podman_ok(&["image", "exists", &full]);
    // Neither: the remedy.
    fs::write(&conf, "").expect("empty registries.conf");
    let out = pull("nothing:1");
    failed(
        &out,
        "no search registries",
        &[3],
        &["unqualified-search", "docker.io/library/nothing"],
    );
}
