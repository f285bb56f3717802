//! TLS settings for one registry as c/image finds them: the certificate directory is `--cert-dir`
//! when given, else the first of `/etc/containers/certs.d/HOST` and `/etc/docker/certs.d/HOST`
//! (and, for a user other than root, `~/.config/containers/certs.d/HOST` first) that exists. In
//! it, each `*.crt` is a CA trusted beside the system's roots, and each `*.cert` with its `*.key`
//! a client certificate (a key in PKCS #8 PEM, as `openssl req -newkey` writes it).

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts};

use crate::error::{Error, Result};

/// What TLS with one registry uses.
#[derive(Debug, Default)]
pub(crate) struct TlsFiles {
    /// The directory the files came from.
    pub dir: Option<PathBuf>,
    /// CAs of the directory (`*.crt`).
    cas: Vec<Certificate<'static>>,
    /// The client certificate and key (`*.cert`, `*.key`).
    client: Option<ClientCert>,
}

/// The system's CA bundle: `SSL_CERT_FILE`, else where Debian, Fedora/CentOS or others keep it.
fn system_bundle() -> Option<PathBuf> {
    if let Some(f) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(f));
    }
    [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The directory c/image would use for `host`.
fn directory(host: &str, cert_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = cert_dir {
        return Some(d.to_path_buf());
    }
    let mut dirs = Vec::new();
    if !rustix::process::geteuid().is_root()
        && let Some(home) = std::env::var_os("HOME")
    {
        dirs.push(PathBuf::from(home).join(".config/containers/certs.d"));
    }
    dirs.push(PathBuf::from("/etc/containers/certs.d"));
    dirs.push(PathBuf::from("/etc/docker/certs.d"));
    dirs.into_iter().map(|d| d.join(host)).find(|d| d.is_dir())
}

/// A one-line error for a file of the certificate directory.
fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "{}: {what}: fix or remove it (containers-certs.d(5))",
        path.display()
    ))
}

/// The certificates in a PEM file.
fn certificates(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let pem = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(path, e))? {
            PemItem::Certificate(c) => out.push(c),
            _ => continue,
        }
    }
    if out.is_empty() {
        return Err(bad(path, "no PEM certificate in it"));
    }
    Ok(out)
}

impl TlsFiles {
    /// The files for `host` (as the reference names it, with its port).
    pub(crate) fn for_host(host: &str, cert_dir: Option<&Path>) -> Result<TlsFiles> {
        let Some(dir) = directory(host, cert_dir) else {
            return Ok(TlsFiles::default());
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && cert_dir.is_none() => {
                return Ok(TlsFiles::default());
            }
            Err(e) => return Err(Error::io("reading the certificate directory", &dir, e)),
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        let mut files = TlsFiles {
            dir: Some(dir.clone()),
            ..TlsFiles::default()
        };
        for path in &names {
            let ext = path.extension().and_then(|e| e.to_str());
            match ext {
                Some("crt") => files.cas.extend(certificates(path)?),
                Some("cert") => {
                    let key = path.with_extension("key");
                    if !key.is_file() {
                        return Err(bad(
                            path,
                            format!("a client certificate without its key {}", key.display()),
                        ));
                    }
                    if files.client.is_some() {
                        return Err(bad(path, "a second client certificate"));
                    }
                    let chain = certificates(path)?;
                    let pem = std::fs::read(&key).map_err(|e| Error::io("reading", &key, e))?;
                    let key_parsed = PrivateKey::from_pem(&pem).map_err(|e| bad(&key, e))?;
                    files.client = Some(ClientCert::new_with_certs(&chain, key_parsed));
                }
                Some("key") if !path.with_extension("cert").is_file() => {
                    return Err(bad(
                        path,
                        format!(
                            "a client key without its certificate {}",
                            path.with_extension("cert").display()
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(files)
    }

    /// The TLS configuration: the system's roots (and the directory's CAs beside them),
    /// verification off when `verify` is false, the client certificate.
    pub(crate) fn config(&self, verify: bool) -> Result<ureq::tls::TlsConfig> {
        let roots = if self.cas.is_empty() {
            RootCerts::PlatformVerifier
        } else {
            let mut all = self.cas.clone();
            if let Some(bundle) = system_bundle() {
                all.extend(certificates(&bundle)?);
            }
            RootCerts::new_with_certs(&all)
        };
        Ok(ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .root_certs(roots)
            .client_cert(self.client.clone())
            .disable_verification(!verify)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaired_client_files_refused() {
        let dir = std::env::temp_dir().join(format!("tls-unpaired-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("c.cert"), "x").expect("write");
        let e = TlsFiles::for_host("h", Some(&dir)).expect_err("no key");
        assert!(e.to_string().contains("without its key"), "{e}");
        std::fs::rename(dir.join("c.cert"), dir.join("c.key")).expect("rename");
        let e = TlsFiles::for_host("h", Some(&dir)).expect_err("no cert");
        assert!(e.to_string().contains("without its certificate"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        // No directory for the host: nothing, the system's roots.
        let none = TlsFiles::for_host("no-such-host.invalid:1", None).expect("none");
        assert!(none.dir.is_none());
    }
}
