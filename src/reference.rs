//! Image names as podman parses and normalizes them (`foo` → `docker.io/library/foo:latest`).
//!
//! The grammar is the one of `github.com/containers/image/docker/reference` (distribution's):
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [domain "/"] path-component ["/" path-component]*
//! domain     := host [":" port]            host := domain-component ["." domain-component]*
//!                                                   | "[" IPv6 "]"
//! domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! path-component   := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest     := "sha256:" 64 hex
//! ```
//!
//! The normalized name (domain and path) is at most 255 characters, and a bare 64-hex name is an ID,
//! not a name. Everything we store passes this parser, so podman 4.3 and 5 can read every name.

use crate::error::{Error, Result};

/// Longest name (domain + path) a reference may have.
pub(crate) const NAME_MAX: usize = 255;
/// Longest tag.
pub(crate) const TAG_MAX: usize = 128;

/// Transport names of c/image and ostree-ext (not `docker`: `docker:dind` is an image), refused as the first part of a name.
const TRANSPORTS: [&str; 9] = [
    "containers-storage",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "ostree-image-signed",
    "ostree-remote-image",
    "ostree-remote-registry",
    "ostree-unverified-registry",
];

/// A parsed reference, normalized as podman stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Domain, e.g. `docker.io` or `localhost:5000`.
    pub domain: String,
    /// Path, e.g. `library/busybox`.
    pub path: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest, if any.
    pub digest: Option<String>,
}

impl Reference {
    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_domain(s: &str) -> bool {
    // An IPv6 literal in brackets, or dotted components; then an optional port.
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty()
            || !v6
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    host.is_empty() && s.starts_with('[') || host.split('.').all(is_domain_component)
}

fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__", or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Parses `name` as podman 4.3's and 5's `ParseNormalizedNamed` (c/image's `docker/reference`): a
/// domain is the first component when it has a `.` or `:` or is `localhost`; otherwise `docker.io`
/// (and `library/` for one-component names). Upper-case letters are allowed in a domain only: an
/// upper-case first component is *not* a domain there (a newer distribution parser's rule), so
/// `UPPER/x` is refused as podman refuses it ("repository name must be lowercase").
pub fn parse(name: &str) -> Result<Reference> {
    let bad = |why: &str| {
        Error::InvalidInput(format!(
            "invalid image name {name:?}: {why}; use e.g. localhost/name:tag"
        ))
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.contains("://") {
        return Err(bad("a transport (like docker://) is not part of a name"));
    }
    // `containers-storage:x` parses as the image `containers-storage` tagged `x`, but whoever typed
    // it meant a transport, and podman's command line would read it as one.
    if let Some((t, _)) = name.split_once(':')
        && !t.contains('/')
        && TRANSPORTS.contains(&t)
    {
        return Err(bad(&format!(
            "{t:?} is a transport, not part of a name: give the name alone"
        )));
    }
    if name.len() == 64 && storage_format::is_valid_id(name) {
        return Err(bad("64 hexadecimal digits are an image ID, not a name"));
    }
    let (rest, digest) = match name.split_once('@') {
        Some((r, d)) => {
            storage_format::Digest::parse(d)
                .map_err(|_| bad(&format!("{d:?} is not a sha256 digest")))?;
            (r, Some(d.to_string()))
        }
        None => (name, None),
    };
    // The tag is after a ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag
        && !is_tag(t)
    {
        return Err(bad(&format!(
            "the tag {t:?} is not 1–{TAG_MAX} letters, digits, '_', '.' or '-' (not starting with '.' or '-')"
        )));
    }
    let (domain, path) = split_domain(repo).ok_or_else(|| {
        let first = repo.split('/').next().unwrap_or(repo);
        bad(&format!("{first:?} is not a valid registry"))
    })?;
    if path.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(bad(
            "the repository name must be lowercase (podman refuses upper-case letters outside the registry's name)",
        ));
    }
    if let Some(c) = path.split('/').find(|c| !is_path_component(c)) {
        return Err(bad(&format!(
            "{c:?} is not a valid name component (lower-case letters and digits, separated by '.', '_', '__' or '-')"
        )));
    }
    let full = format!("{domain}/{path}");
    if full.len() > NAME_MAX {
        return Err(bad(&format!(
            "the repository name is {} characters, more than {NAME_MAX}",
            full.len()
        )));
    }
    Ok(Reference {
        domain,
        path,
        tag: tag.map(str::to_string),
        digest,
    })
}

/// The registry and the path of the repository `repo`, as c/image's `splitDockerDomain`: the
/// first component is the registry when it has a `.` or `:` or is `localhost` (and must then be a
/// valid host); otherwise `docker.io`, with `library/` for one-component paths.
fn split_domain(repo: &str) -> Option<(String, String)> {
    Some(match repo.split_once('/') {
        Some((first, remainder)) if first.contains(['.', ':']) || first == "localhost" => {
            if !is_domain(first) {
                return None;
            }
            let domain = if first == "index.docker.io" {
                "docker.io"
            } else {
                first
            };
            let path = if domain == "docker.io" && !remainder.contains('/') {
                format!("library/{remainder}")
            } else {
                remainder.to_string()
            };
            (domain.to_string(), path)
        }
        Some(_) => ("docker.io".to_string(), repo.to_string()),
        None => ("docker.io".to_string(), format!("library/{repo}")),
    })
}

/// Normalizes an image name the way c/image's `reference.ParseNormalizedNamed` + `TagNameOnly` do:
/// `:latest` is added when there is neither tag nor digest.
pub fn normalize(name: &str) -> Result<String> {
    let mut r = parse(name)?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    Ok(r.to_string())
}

/// The store a `containers-storage:[driver@graphroot+runroot]` reference names, as skopeo reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSpec {
    /// The driver, if given (`overlay@…`).
    pub driver: Option<String>,
    /// The graph root.
    pub graphroot: std::path::PathBuf,
    /// The run root, if given (`…+/run/…`).
    pub runroot: Option<std::path::PathBuf>,
}

/// A `--target`: `NAME`, `containers-storage:NAME` or `containers-storage:[STORE]NAME`, the name
/// normalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageReference {
    /// The store, when the reference names one.
    pub store: Option<StoreSpec>,
    /// The normalized name.
    pub name: String,
}

/// Checks names about to be stored: each must be a reference podman parses, already normalized
/// (`domain/path:tag` or `…@digest`), so no reader of the store ever meets a name it cannot parse.
pub fn check_stored_names(names: &[String]) -> Result<()> {
    for n in names {
        if normalize(n)? != *n {
            return Err(Error::InvalidInput(format!(
                "image name {n:?} is not normalized: store it as {:?}",
                normalize(n)?
            )));
        }
    }
    Ok(())
}

/// Checks that every name with a digest (`NAME@sha256:…`) names one of `digests`, the manifest
/// digests of the image it goes to: c/image resolves `NAME@DIGEST` by that digest, and a name
/// whose digest is another manifest's makes the image unreadable by that name (skopeo cannot
/// export it).
pub fn check_name_digests(names: &[String], digests: &[String]) -> Result<()> {
    for n in names {
        if let Some((_, d)) = n.split_once('@')
            && !digests.iter().any(|x| x == d)
        {
            return Err(Error::InvalidInput(format!(
                "{n:?} names the manifest digest {d}, but the image's is {}: drop the @DIGEST (give NAME:TAG), or name the image's own digest",
                digests.first().map_or("unknown", String::as_str)
            )));
        }
    }
    Ok(())
}

/// The manifest digests of a stored image: its `digest`, its `digests`, and those of its
/// `manifest…` big-data items.
pub(crate) fn record_digests(img: &storage_format::ImageRecord) -> Vec<String> {
    let mut out: Vec<String> = img.digest.iter().cloned().collect();
    if let Some(serde_json::Value::Array(a)) = img.extra.get("digests") {
        out.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    for (k, v) in &img.big_data_digests {
        if (k == "manifest" || k.starts_with("manifest-"))
            && let Some(d) = v.as_str()
        {
            out.push(d.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn names() {
        let cases = [
            ("localhost/bootc", "localhost/bootc:latest"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("quay.io/a/b:1.0", "quay.io/a/b:1.0"),
            ("me/app:v1", "docker.io/me/app:v1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("index.docker.io/a/b", "docker.io/a/b:latest"),
            ("Registry.Example/a", "Registry.Example/a:latest"),
            (
                "[::1]:5000/a_b__c-d--e.f",
                "[::1]:5000/a_b__c-d--e.f:latest",
            ),
            (
                &format!("a@sha256:{}", "0".repeat(64)),
                &format!("docker.io/library/a@sha256:{}", "0".repeat(64)),
            ),
        ];
        for (i, want) in cases {
            assert_eq!(normalize(i).unwrap(), want, "{i}");
        }
    }

    #[test]
    fn names_podman_cannot_parse() {
        let long_repo = format!("localhost/{}", "a".repeat(300));
        let long_tag = format!("localhost/x:{}", "t".repeat(200));
        let id = "a".repeat(64);
        for bad in [
            "",
            "Upper/Case",
            "UPPER/x:1",
            "Foo/bar",
            "localhost/Foo",
            "quay.io/Org/x",
            "../x",
            "x:t1:t2",
            "docker://x",
            "containers-storage:x",
            "oci:x",
            "localhost/x:.tag",
            "localhost/x:",
            "localhost//x",
            "localhost/x/",
            "localhost/-x",
            "localhost/x_-y",
            "local host/x",
            "localhost/x@sha256:12",
            long_repo.as_str(),
            long_tag.as_str(),
            id.as_str(),
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
