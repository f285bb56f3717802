//! Bearer tokens: Debian's docker-registry with `auth.token`, verifying tokens signed by the key
//! of the certificate its `rootcertbundle` names, and a small token server of the tests that
//! hands one out (a JWT signed with openssl, the certificate in its `x5c` header) to a client
//! sending `tester:secret`. The native client must follow the challenge to the realm, send the
//! credentials there, and pull with the token.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::fixture::{self, Compression, ImageSpec, OciDir};
use crate::registry::{Registry, base64_encode, failed, ours, v_digest};
use crate::util::{Driver, TestStore, describe, run, run_ok};

const SERVICE: &str = "test-registry";
const ISSUER: &str = "test-issuer";

/// base64url without padding (JWT).
fn b64url(data: &[u8]) -> String {
    base64_encode(data)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A JWT granting pull and push on `repo`, signed with `dir/token.key`, valid for an hour.
fn signed_token(dir: &Path, repo: &str) -> String {
    let der = run_ok(Command::new("openssl").current_dir(dir).args([
        "x509",
        "-in",
        "token.crt",
        "-outform",
        "DER",
        "-out",
        "token.der",
    ]));
    drop(der);
    let cert = fs::read(dir.join("token.der")).expect("token cert");
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64_encode(&cert)]});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": "tester", "aud": SERVICE,
        "exp": now + 3600, "nbf": now - 60, "iat": now - 60, "jti": format!("t{now}"),
        "access": [{"type": "repository", "name": repo, "actions": ["pull", "push"]}],
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    fs::write(dir.join("input"), &signing_input).expect("input");
    run_ok(Command::new("openssl").current_dir(dir).args([
        "dgst",
        "-sha256",
        "-sign",
        "token.key",
        "-out",
        "sig",
        "input",
    ]));
    let sig = fs::read(dir.join("sig")).expect("signature");
    format!("{signing_input}.{}", b64url(&sig))
}

/// The token server: answers `GET /token?...` with the token to requests carrying the right
/// Basic credentials, 401 to the others; records each request's target.
struct TokenServer {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
}

impl TokenServer {
    fn start(token: String) -> TokenServer {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let good = format!("Basic {}", base64_encode(b"tester:secret"));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("dup"));
                let mut target = String::new();
                let mut authorized = false;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if l.is_empty() {
                        break;
                    }
                    if target.is_empty() {
                        target = l.split(' ').nth(1).unwrap_or_default().to_string();
                    } else if let Some((k, v)) = l.split_once(':')
                        && k.eq_ignore_ascii_case("authorization")
                    {
                        authorized = v.trim() == good;
                    }
                }
                log.lock().expect("log").push(target);
                let (status, body) = if authorized {
                    ("200 OK", format!("{{\"token\":\"{token}\"}}"))
                } else {
                    ("401 Unauthorized", "{}".to_string())
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, asked }
    }
}

/// The native client pulls with a bearer token from the realm, the credentials sent to it, and
/// pushes with one for pushing; without credentials, one line naming the remedy and the store as
/// it was.
#[test]
fn registry_native_bearer_token() {
    let store = TestStore::new(Driver::Overlay);
    let keys = store.scratch("token-keys");
    fs::create_dir_all(&keys).expect("mkdir");
    crate::registry::self_signed(&keys, "token.key", "token.crt", "token signer");
    let server = TokenServer::start(signed_token(&keys, "b/app"));
    let mut reg = Registry::start_with(
        false,
        None,
        &format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            server.port,
            keys.join("token.crt").display()
        ),
    );
    reg.creds = Some("tester:secret".into());
    let mut oci = OciDir::create(&store.dir.join("oci"));
    oci.add_image(
        Some("v1"),
        &ImageSpec::from_tars("token", &[fixture::small_tar(97)], Compression::Gzip),
    );
    reg.push(&oci.source(Some("v1")), "b/app:1");
    let image = format!("{}/b/app:1", reg.host());
    store.podman_ok(&["images"]);
    let snap = store.snapshot();
    let out = run(ours(&store, &reg).env("BOOTC_IMAGE_VIA", "native").args([
        "pull",
        "--retry",
        "0",
        "--authfile",
        "/dev/null/none",
        &image,
    ]));
    failed(&out, "no credentials file", &[3], &["authfile"]);
    let empty = store.scratch("empty-auth.json");
    fs::write(&empty, "{\"auths\":{}}").expect("auth.json");
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", "native")
        .arg("pull")
        .args(["--retry", "0", "--authfile"])
        .arg(&empty)
        .arg(&image));
    let line = failed(&out, "no credentials", &[5], &["podman login", &image]);
    eprintln!("no credentials: {line}");
    let d = snap.diff(&store.snapshot());
    assert!(d.is_empty(), "the store changed: {d:?}");
    let authfile = store.scratch("auth.json");
    reg.authfile(&authfile, "tester:secret");
    let before = server.asked.lock().expect("log").len();
    let out = run(ours(&store, &reg)
        .env("BOOTC_IMAGE_VIA", "native")
        .args(["pull", "--progress", "none", "--authfile"])
        .arg(&authfile)
        .arg(&image));
    assert!(
        out.status.success(),
        "pull with a token: {}",
        describe(&out)
    );
    let asked = server.asked.lock().expect("log")[before..].to_vec();
    assert!(
        asked
            .iter()
            .any(|t| t.contains("scope=repository%3Ab%2Fapp%3Apull")
                || t.contains("scope=repository:b/app:pull")),
        "the token asked for with the pull scope: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|t| t.contains(&format!("service={SERVICE}"))),
        "the service named: {asked:?}"
    );
    let digest = v_digest(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--creds", "tester:secret"])
            .arg(format!("docker://{image}")),
    ));
    assert_eq!(
        store.inspect(&image)["Digest"].as_str(),
        Some(digest.as_str())
    );
    // Pushed back under another tag with a token for pull and push: the digest it had.
    let before = server.asked.lock().expect("log").len();
    let out = run(ours(&store, &reg)
        .args([
            "export",
            &image,
            &format!("docker://{}/b/app:2", reg.host()),
        ])
        .arg("--authfile")
        .arg(&authfile));
    assert!(
        out.status.success(),
        "push with a token: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&digest),
        "the digest it had: {}",
        describe(&out)
    );
    let asked = server.asked.lock().expect("log")[before..].to_vec();
    assert!(
        asked.iter().any(|t| t.contains("push")),
        "a token asked for pushing: {asked:?}"
    );
}
