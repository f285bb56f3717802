//! Registry credentials and challenges, as c/image reads them: auth.json files in c/image's order
//! (`--authfile`, else `REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json` or
//! `/run/containers/UID/auth.json`, then `~/.config/containers/auth.json` and
//! `~/.docker/config.json`), the most specific key first (`host/ns/repo`, …, `host`), a file's
//! `credHelpers` before its `auths`; `WWW-Authenticate` challenges (Basic, Bearer).

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::source::image_proxy::FetchOptions;

/// A user name and password (or token) for a registry.
#[derive(Clone)]
pub(crate) struct Credentials {
    pub user: String,
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub(crate) fn basic(&self) -> String {
        let raw = format!("{}:{}", self.user, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// One auth.json (or docker config.json).
#[derive(Debug, Default, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// An entry of `auths`.
#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
}

/// The files c/image reads, in its order.
fn auth_files(fetch: &FetchOptions) -> Vec<PathBuf> {
    if let Some(f) = &fetch.authfile {
        return vec![f.clone()];
    }
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    if fetch.no_default_credentials {
        return Vec::new();
    }
    let mut files = Vec::new();
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => files.push(PathBuf::from(d).join("containers/auth.json")),
        None => files.push(PathBuf::from(format!(
            "/run/containers/{}/auth.json",
            rustix::process::geteuid().as_raw()
        ))),
    }
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
    }
    files
}

/// The keys that may hold `repo`'s credentials, most specific first (`host/a/b`, `host/a`,
/// `host`; for Docker Hub also its legacy `https://index.docker.io/v1/`).
fn keys_for(host: &str, repo: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut path = format!("{host}/{repo}");
    loop {
        keys.push(path.clone());
        match path.rsplit_once('/') {
            Some((parent, _)) => path = parent.to_string(),
            None => break,
        }
    }
    if host == "docker.io" {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    keys
}

/// The credentials for `repo` on `host` (`docker.io` for Docker Hub), if any file has them.
pub(crate) fn credentials(
    fetch: &FetchOptions,
    host: &str,
    repo: &str,
) -> Result<Option<Credentials>> {
    let keys = keys_for(host, repo);
    for path in auth_files(fetch) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("reading the credentials file", &path, e)),
        };
        let file: AuthFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::InvalidInput(format!(
                "the credentials file {} is not valid JSON ({e}): fix it or log in again (podman login)",
                path.display()
            ))
        })?;
        if let Some(helper) = keys.iter().find_map(|k| file.cred_helpers.get(k)) {
            return helper_credentials(helper, host).map(Some);
        }
        for key in &keys {
            let entry = file
                .auths
                .get(key)
                .or_else(|| file.auths.get(&format!("https://{key}")));
            if let Some(entry) = entry.filter(|e| !e.auth.is_empty()) {
                return decode(&entry.auth, &path).map(Some);
            }
        }
    }
    Ok(None)
}

/// An `auth` value: base64 of `user:password`.
fn decode(auth: &str, path: &std::path::Path) -> Result<Credentials> {
    let bad = || {
        Error::InvalidInput(format!(
            "the credentials file {} holds an invalid \"auth\" value: log in again (podman login)",
            path.display()
        ))
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, secret) = text.split_once(':').ok_or_else(bad)?;
    Ok(Credentials {
        user: user.to_string(),
        secret: secret.to_string(),
    })
}

/// Asks `docker-credential-HELPER get` for `host`'s credentials.
fn helper_credentials(helper: &str, host: &str) -> Result<Credentials> {
    use std::io::Write as _;
    let program = format!("docker-credential-{helper}");
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::external(&program, format!("cannot run it ({e}): install it, or remove credHelpers from the credentials file")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::external(&program, e))?;
    if !out.status.success() {
        return Err(Error::external(
            &program,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::external(&program, format!("answered no credentials ({e})")))?;
    Ok(Credentials {
        user: a.username,
        secret: a.secret,
    })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `Basic realm=…`: send the credentials.
    Basic,
    /// `Bearer realm=…,service=…,scope=…`: get a token from `realm`.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Parses a `WWW-Authenticate` value (`Scheme k="v",k2="v2"`).
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = BTreeMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            match after.find(',') {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = next.trim_start_matches([',', ' ']);
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => Some(Challenge::Bearer {
            realm: params.remove("realm")?,
            service: params.remove("service"),
            scope: params.remove("scope"),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn keys_most_specific_first() {
        assert_eq!(
            keys_for("quay.io", "a/b"),
            vec!["quay.io/a/b", "quay.io/a", "quay.io"]
        );
    }
}
