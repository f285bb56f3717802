//! One repository of one registry over HTTP(S) (ureq, TLS through the system's OpenSSL): the
//! endpoint chosen as c/image does (HTTPS; plain HTTP only for a registry marked insecure or with
//! `--tls-verify=false`, after HTTPS failed), requests retried once after a 401 with the
//! challenge answered (Basic, or a Bearer token fetched from the realm), the token kept.

use std::sync::Mutex;
use std::time::Duration;

use super::auth::{Challenge, Credentials, parse_challenge};
use super::proxy_env::proxy_for;
use super::tls::TlsFiles;
use crate::error::{Error, Result};

/// What a response may carry at most when read whole (manifests, configs, tokens).
const SMALL_LIMIT: u64 = 16 << 20;

/// A repository on a registry.
pub(crate) struct Repo {
    agent: ureq::Agent,
    /// `https://host` or `http://host`.
    base: String,
    /// The registry's host (`docker.io` as the user wrote it; `registry-1.docker.io` is the
    /// endpoint).
    pub host: String,
    /// The repository path (`library/busybox`).
    pub path: String,
    creds: Option<Credentials>,
    /// The `Authorization` value that worked last.
    authorization: Mutex<Option<String>>,
    /// Whether it is pushed to (tokens ask for `pull,push`).
    pub push: bool,
    /// Repositories of the same registry blobs may be mounted from (tokens ask to pull them).
    pub mount_from: Vec<String>,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("base", &self.base)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// An agent speaking TLS as `tls` says, through `proxy` (an address) when one is given.
fn agent(tls: ureq::tls::TlsConfig, proxy: Option<&str>, image: &str) -> Result<ureq::Agent> {
    let proxy = match proxy {
        Some(p) => Some(ureq::Proxy::new(p).map_err(|e| Error::Remote {
            image: image.to_string(),
            message: format!(
                "the proxy {p} from the environment (HTTPS_PROXY/HTTP_PROXY): {e}: fix the variable"
            ),
            transient: false,
        })?),
        None => None,
    };
    Ok(ureq::Agent::config_builder()
        .proxy(proxy)
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        // Long enough for a registry committing a large upload (the closing PUT) to answer.
        .timeout_recv_response(Some(Duration::from_secs(600)))
        // A body may take as long as it takes while it keeps coming (a layer of gigabytes on a
        // slow link): a minute without a byte either way is a dead connection.
        .timeout_recv_body(None)
        .timeout_send_body(None)
        .timeout_per_read(Some(Duration::from_secs(60)))
        .timeout_per_write(Some(Duration::from_secs(60)))
        .user_agent(concat!("bootc-image/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

/// How many times one request waits out a `429 Too Many Requests` before the answer stands.
const TOO_MANY_WAITS: u32 = 5;

/// How long to wait after a 429: its `Retry-After` in seconds (at most a minute), else 1 s
/// doubling with each wait.
fn retry_after(resp: &ureq::http::Response<ureq::Body>, waits: u32) -> Duration {
    let told = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match told {
        Some(s) => Duration::from_secs(s.min(60)),
        None => Duration::from_secs(1 << waits.saturating_sub(1).min(5)),
    }
}

/// A small response body (a manifest, a config, a token) read whole, at most [`SMALL_LIMIT`]
/// bytes; `what` names the read in errors.
pub(crate) fn read_small(
    resp: &mut ureq::http::Response<ureq::Body>,
    image: &str,
    what: &str,
) -> Result<Vec<u8>> {
    resp.body_mut()
        .with_config()
        .limit(SMALL_LIMIT)
        .read_to_vec()
        .map_err(|e| network(image, what, e))
}

/// A network failure as a transient remote error.
pub(crate) fn network(image: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Remote {
        image: image.to_string(),
        message: format!("{what}: {e}"),
        transient: true,
    }
}

impl Repo {
    /// Connects to `host` (as the reference names it) for `path`: HTTPS first (with `tls`'s CAs
    /// and client certificate); plain HTTP when `insecure` and HTTPS cannot be spoken there.
    /// `image` names the reference in errors.
    pub(crate) fn connect(
        host: &str,
        path: &str,
        insecure: bool,
        tls: &TlsFiles,
        creds: Option<Credentials>,
        image: &str,
    ) -> Result<Repo> {
        let endpoint = if host == "docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let config = tls.config(!insecure)?;
        let mut agent = agent(config.clone(), proxy_for(endpoint, true).as_deref(), image)?;
        let https = format!("https://{endpoint}");
        let base = match agent.get(format!("{https}/v2/")).call() {
            Ok(_) => https,
            Err(_) if insecure => {
                let http = format!("http://{endpoint}");
                agent = self::agent(config, proxy_for(endpoint, false).as_deref(), image)?;
                agent
                    .get(format!("{http}/v2/"))
                    .call()
                    .map_err(|e| network(image, &format!("reaching {endpoint}"), e))?;
                http
            }
            Err(e) => {
                // A certificate or TLS failure stays; a network one may pass (retried).
                let transient = !matches!(e, ureq::Error::Tls(_))
                    && !e.to_string().to_ascii_lowercase().contains("certificate")
                    && !e.to_string().contains("native-tls")
                    && !e.to_string().contains("SSL");
                return Err(Error::Remote {
                    image: image.to_string(),
                    message: format!(
                        "reaching {endpoint} over HTTPS: {e}: check the address; for a private CA or a client certificate put them in {} (or name a directory with --cert-dir); mark the registry insecure in registries.conf (or --tls-verify=false) if it speaks plain HTTP",
                        tls.dir.as_ref().map_or_else(
                            || format!("/etc/containers/certs.d/{host}/"),
                            |d| format!("{}/", d.display())
                        )
                    ),
                    transient,
                });
            }
        };
        Ok(Repo {
            agent,
            base,
            host: host.to_string(),
            path: path.to_string(),
            creds,
            authorization: Mutex::new(None),
            push: false,
            mount_from: Vec::new(),
        })
    }

    /// `GET /v2/<path>/<what>` with `accept`, answering one authentication challenge.
    pub(crate) fn get(
        &self,
        what: &str,
        accept: Option<&str>,
        image: &str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        match accept {
            Some(a) => self.get_with(what, &[("Accept", a)], image),
            None => self.get_with(what, &[], image),
        }
    }

    /// `GET /v2/<path>/<what>` with `headers`, answering one authentication challenge.
    pub(crate) fn get_with(
        &self,
        what: &str,
        headers: &[(&str, &str)],
        image: &str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let url = self.url(what);
        self.send("GET", &url, headers, &[], image)
    }

    /// `https://host/v2/<path>/<what>`.
    pub(crate) fn url(&self, what: &str) -> String {
        format!("{}/v2/{}/{what}", self.base, self.path)
    }

    /// A `Location` the registry answered, as an absolute URL.
    pub(crate) fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}/{}", self.base, location.trim_start_matches('/'))
        }
    }

    /// `method url` with `headers` and `body` (sent again after answering one authentication
    /// challenge).
    pub(crate) fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        image: &str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let send = |auth: Option<&str>| -> Result<ureq::http::Response<ureq::Body>> {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let req = req
                .body(body)
                .map_err(|e| Error::Internal(format!("building a request for {url}: {e}")))?;
            // 429: waited out as c/image does (Retry-After, else a doubling backoff), a few times.
            let mut waits = 0;
            loop {
                let resp = self
                    .agent
                    .run(req.clone())
                    .map_err(|e| network(image, &format!("{method} {url}"), e))?;
                if resp.status() != 429 || waits >= TOO_MANY_WAITS {
                    return Ok(resp);
                }
                waits += 1;
                let wait = retry_after(&resp, waits);
                tracing::warn!(%url, ?wait, "the registry answered 429 Too Many Requests; waiting");
                std::thread::sleep(wait);
            }
        };
        // Credentials go to the registry's own origin only (not to a Location elsewhere).
        let own = url.starts_with(&format!("{}/", self.base));
        let known = if own {
            self.authorization.lock().ok().and_then(|a| a.clone())
        } else {
            None
        };
        let resp = send(known.as_deref())?;
        if !own {
            return Ok(resp);
        }
        if resp.status() != 401 {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let Some(challenge) = challenge else {
            return Err(self.denied(
                image,
                "the registry asks for credentials in a way bootc-image does not speak",
            ));
        };
        let auth = self.answer(&challenge, image)?;
        let resp = send(Some(&auth))?;
        if resp.status() == 401 {
            return Err(self.denied(image, "the registry refused the credentials"));
        }
        if let Ok(mut a) = self.authorization.lock() {
            *a = Some(auth);
        }
        Ok(resp)
    }

    /// `method url` with a streamed body, sent once with the authorization a request before it
    /// earned (a stream cannot be sent again).
    pub(crate) fn send_stream(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &mut dyn std::io::Read,
        image: &str,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if url.starts_with(&format!("{}/", self.base))
            && let Some(a) = self.authorization.lock().ok().and_then(|a| a.clone())
        {
            req = req.header("Authorization", a);
        }
        let req = req
            .body(ureq::SendBody::from_reader(body))
            .map_err(|e| Error::Internal(format!("building a request for {url}: {e}")))?;
        let resp = self
            .agent
            .run(req)
            .map_err(|e| network(image, &format!("{method} {url}"), e))?;
        if resp.status() == 401 {
            return Err(self.denied(image, "the registry refused the credentials"));
        }
        Ok(resp)
    }

    /// The one-line error for refused credentials.
    fn denied(&self, image: &str, why: &str) -> Error {
        Error::Remote {
            image: image.to_string(),
            message: format!(
                "{why} ({}): log in (podman login {}) or name the credentials with --authfile",
                if self.creds.is_some() {
                    "credentials were sent"
                } else {
                    "no credentials found"
                },
                self.host
            ),
            transient: false,
        }
    }

    /// The `Authorization` value answering `challenge`.
    fn answer(&self, challenge: &Challenge, image: &str) -> Result<String> {
        match challenge {
            Challenge::Basic => self
                .creds
                .as_ref()
                .map(Credentials::basic)
                .ok_or_else(|| self.denied(image, "the registry asks for credentials")),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                // As c/image asks: this repository (for pushing too when pushing), the scope the
                // challenge names when it is another, and pulling from the repositories blobs
                // may be mounted from.
                let actions = if self.push { "pull,push" } else { "pull" };
                let mut scopes = vec![format!("repository:{}:{actions}", self.path)];
                scopes.extend(scope.iter().cloned());
                scopes.extend(
                    self.mount_from
                        .iter()
                        .map(|p| format!("repository:{p}:pull")),
                );
                scopes.dedup();
                let mut req = self.agent.get(realm);
                for s in &scopes {
                    req = req.query("scope", s);
                }
                if let Some(s) = service {
                    req = req.query("service", s);
                }
                if let Some(c) = &self.creds {
                    req = req.header("Authorization", &c.basic());
                }
                let mut resp = req
                    .call()
                    .map_err(|e| network(image, &format!("getting a token from {realm}"), e))?;
                if !resp.status().is_success() {
                    return Err(self.denied(
                        image,
                        &format!("the token service {realm} answered {}", resp.status()),
                    ));
                }
                let body = read_small(&mut resp, image, "reading a token")?;
                #[derive(serde::Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let t: Token = serde_json::from_slice(&body).map_err(|e| Error::Remote {
                    image: image.to_string(),
                    message: format!("the token service {realm} answered no token ({e})"),
                    transient: false,
                })?;
                let token = if t.token.is_empty() {
                    t.access_token
                } else {
                    t.token
                };
                Ok(format!("Bearer {token}"))
            }
        }
    }
}
