//! The signature policy (`policy.json`, containers-policy.json(5)) evaluated before an image is
//! opened, as c/image's `PolicyContext.IsRunningImageAllowed` does for podman 4.3 and 5.
//!
//! Debian 12's skopeo 1.9.3 serves image-proxy protocol 0.2.3, which never evaluates the policy, so
//! we do it ourselves, for every source transport: the requirements of the most specific scope
//! (the image's identity, then its namespaces, then the transport's `""` scope, then `default`)
//! must all accept. `insecureAcceptAnything` and `reject` are evaluated here; a signature
//! requirement (`signedBy`, `sigstoreSigned`, `signedBaseLayer`) cannot be checked on this path
//! and refuses the image in one line — a security setting is never skipped.
//!
//! The file is parsed as strictly as c/image parses it (unknown or duplicate keys, empty
//! requirement lists, a missing `default`, scopes a transport cannot have: the whole policy is
//! refused), and found where podman finds it: `/etc/containers/policy.json` for root, else
//! `$XDG_CONFIG_HOME/containers/policy.json` (or `~/.config/…`) when it exists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::image_ref::ImageRef;

/// The system-wide policy.
pub(crate) const SYSTEM_POLICY: &str = "/etc/containers/policy.json";

/// One requirement of a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `insecureAcceptAnything`.
    Accept,
    /// `reject`.
    Reject,
    /// A signature requirement (`signedBy`, `sigstoreSigned`, `signedBaseLayer`), by its type.
    Signed(String),
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Requirements when no transport scope applies.
    pub default: Vec<Requirement>,
    /// Transport → scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// The image being opened, as the policy sees it: its transport and the scopes that may name it,
/// most specific first (identity, then namespaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// The transport (`docker`, `oci`, …).
    pub transport: &'static str,
    /// The reference as c/image prints it in its verdict (`docker://busybox:latest`).
    pub shown: String,
    /// The identity, then the namespaces, in lookup order.
    pub scopes: Vec<String>,
}

/// Where podman reads the policy: root always the system file; others their own when it exists.
pub(crate) fn default_path() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from(SYSTEM_POLICY);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    match config.map(|c| c.join("containers/policy.json")) {
        Some(p) if p.exists() => p,
        _ => PathBuf::from(SYSTEM_POLICY),
    }
}

/// Loads the policy at `path` (or podman's default).
pub fn load(path: Option<&Path>) -> Result<Policy> {
    let path = path.map_or_else(default_path, Path::to_path_buf);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::InvalidInput(format!(
            "the signature policy {} cannot be read ({e}): install it (Debian: golang-github-containers-common) or name one with --signature-policy (skopeo's role: --policy)",
            path.display()
        ))
    })?;
    parse(&bytes).map_err(|why| {
        Error::InvalidInput(format!(
            "invalid signature policy {}: {why}: fix it (containers-policy.json(5)) or name another with --signature-policy (skopeo's role: --policy)",
            path.display()
        ))
    })
}

/// Checks JSON text for duplicate keys in any object (c/image refuses them; serde keeps the last).
fn duplicate_key(bytes: &[u8]) -> Option<String> {
    struct Check(Option<String>);
    impl<'de> serde::de::Visitor<'de> for &mut Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> std::result::Result<(), A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) && self.0.is_none() {
                    self.0 = Some(k);
                }
                m.next_value_seed(&mut *self)?;
            }
            Ok(())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut s: A,
        ) -> std::result::Result<(), A::Error> {
            while s.next_element_seed(&mut *self)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
    }
    impl<'de> serde::de::DeserializeSeed<'de> for &mut Check {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    let mut check = Check(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde::de::DeserializeSeed::deserialize(&mut check, &mut de).ok()?;
    check.0
}

/// Parses policy text as strictly as c/image.
pub fn parse(bytes: &[u8]) -> std::result::Result<Policy, String> {
    let top: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if let Some(k) = duplicate_key(bytes) {
        return Err(format!("Duplicate key {k:?}"));
    }
    let top = object(&top, "the policy")?;
    only_keys(top, &["default", "transports"])?;
    let default = requirements(top.get("default").ok_or("Default policy is missing")?)?;
    let mut transports = BTreeMap::new();
    if let Some(t) = top.get("transports") {
        for (name, scopes) in object(t, "transports")? {
            let mut parsed = BTreeMap::new();
            for (scope, reqs) in object(scopes, name)? {
                if !scope.is_empty() && !valid_scope(name, scope) {
                    return Err(format!("Unknown key {scope:?}"));
                }
                parsed.insert(scope.clone(), requirements(reqs)?);
            }
            transports.insert(name.clone(), parsed);
        }
    }
    Ok(Policy {
        default,
        transports,
    })
}

fn object<'a>(v: &'a Value, what: &str) -> std::result::Result<&'a Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("{what} is not a JSON object"))
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str]) -> std::result::Result<(), String> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("Unknown key {k:?}")),
        None => Ok(()),
    }
}

/// A requirement list: non-empty, each requirement of a known type with only its fields.
fn requirements(v: &Value) -> std::result::Result<Vec<Requirement>, String> {
    let list = match v {
        Value::Array(a) => a,
        _ => return Err("List of verification policy requirements must not be empty".into()),
    };
    if list.is_empty() {
        return Err("List of verification policy requirements must not be empty".into());
    }
    list.iter()
        .map(|r| {
            let r = object(r, "a requirement")?;
            let ty = r.get("type").and_then(Value::as_str).unwrap_or_default();
            match ty {
                "insecureAcceptAnything" => only_keys(r, &["type"]).map(|()| Requirement::Accept),
                "reject" => only_keys(r, &["type"]).map(|()| Requirement::Reject),
                "signedBy" => only_keys(
                    r,
                    &[
                        "type",
                        "keyType",
                        "keyPath",
                        "keyPaths",
                        "keyData",
                        "signedIdentity",
                    ],
                )
                .map(|()| Requirement::Signed(ty.into())),
                "sigstoreSigned" => only_keys(
                    r,
                    &[
                        "type",
                        "keyPath",
                        "keyPaths",
                        "keyData",
                        "fulcio",
                        "rekorPublicKeyPath",
                        "rekorPublicKeyData",
                        "rekorPublicKeyPaths",
                        "pki",
                        "signedIdentity",
                    ],
                )
                .map(|()| Requirement::Signed(ty.into())),
                "signedBaseLayer" => only_keys(r, &["type", "baseLayerIdentity"])
                    .map(|()| Requirement::Signed(ty.into())),
                other => Err(format!("Unknown policy requirement type {other:?}")),
            }
        })
        .collect()
}

/// Whether `scope` is one c/image's transport `name` accepts in a policy (unknown transports:
/// anything).
fn valid_scope(transport: &str, scope: &str) -> bool {
    let clean_absolute = |s: &str| {
        s.starts_with('/')
            && s != "/"
            && !s.ends_with('/')
            && !s.contains("//")
            && s.split('/').all(|c| c != "." && c != "..")
    };
    match transport {
        "docker-archive" => false,
        "dir" => clean_absolute(scope),
        "oci" | "oci-archive" => {
            let path = scope.split_once(':').map_or(scope, |(p, _)| p);
            clean_absolute(path)
        }
        "containers-storage" => {
            scope.starts_with('[')
                && scope.find(']').is_some_and(|end| {
                    let spec = &scope[1..end];
                    let root = spec.split_once('@').map_or(spec, |(_, r)| r);
                    root.starts_with('/')
                })
        }
        _ => true,
    }
}

impl Policy {
    /// The requirements for `r`: the first scope found, else the transport's `""`, else default.
    pub(crate) fn requirements_for(&self, r: &PolicyRef) -> &[Requirement] {
        if let Some(scopes) = self.transports.get(r.transport) {
            for s in &r.scopes {
                if let Some(reqs) = scopes.get(s) {
                    return reqs;
                }
            }
            if let Some(reqs) = scopes.get("") {
                return reqs;
            }
        }
        &self.default
    }

    /// Whether `r` may be opened: every requirement must accept it (a signature requirement is
    /// refused: see [`Policy::evaluate`] for the callers that can have signatures verified).
    pub fn check(&self, r: &PolicyRef) -> Result<()> {
        match self.evaluate(r)? {
            Verdict::Accepted => Ok(()),
            Verdict::Signatures(kind) => Err(signatures_unverifiable(r, &kind, None)),
        }
    }

    /// What the policy says of `r`: refused (`reject`), accepted, or accepted only with
    /// signatures, which only c/image can verify (a signature requirement is never skipped).
    pub fn evaluate(&self, r: &PolicyRef) -> Result<Verdict> {
        let mut signed = None;
        for req in self.requirements_for(r) {
            match req {
                Requirement::Accept => {}
                Requirement::Reject => {
                    return Err(Error::InvalidInput(format!(
                        "Source image rejected: Running image {} is rejected by policy: allow it in the signature policy (policy.json) if it should be pulled",
                        r.shown
                    )));
                }
                Requirement::Signed(kind) => {
                    signed.get_or_insert_with(|| kind.clone());
                }
            }
        }
        Ok(signed.map_or(Verdict::Accepted, Verdict::Signatures))
    }
}

/// What the policy says of an image it does not reject.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Every requirement accepts it.
    Accepted,
    /// It needs signatures (the first signature requirement's type).
    Signatures(String),
}

/// The one-line refusal of an image whose signatures cannot be verified here; `why` says why
/// (e.g. the installed skopeo is too old), else that this transport is never verified.
pub(crate) fn signatures_unverifiable(r: &PolicyRef, kind: &str, why: Option<&str>) -> Error {
    Error::Unsupported(format!(
        "{}: the signature policy requires signatures ({kind}), which {}: copy it with `skopeo copy {} containers-storage:NAME`, which verifies them, and then use the stored image",
        r.shown,
        why.unwrap_or("cannot be verified for this transport"),
        r.shown
    ))
}

/// `path` made absolute with symlinks resolved, as c/image's `ResolvePathToFullyExplicit` does
/// (a path that does not exist yet: its parent resolved, the name appended).
fn explicit_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    if let Ok(c) = std::fs::canonicalize(&abs) {
        return c;
    }
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => std::fs::canonicalize(p)
            .map(|p| p.join(n))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// The path's parents, nearest first, without `/`.
fn parents(p: &Path) -> Vec<String> {
    p.ancestors()
        .skip(1)
        .filter(|a| a.as_os_str() != "/" && !a.as_os_str().is_empty())
        .map(|a| a.display().to_string())
        .collect()
}

impl PolicyRef {
    /// A `docker://` reference (without the prefix): identity `name:tag` or `name@digest`, then
    /// the repository and its parents up to the host, then `*.domain` wildcards.
    pub fn docker(reference: &str) -> Result<PolicyRef> {
        let mut r = crate::reference::parse(reference)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".into());
        }
        let name = r.name();
        let identity = match (&r.digest, &r.tag) {
            (Some(d), _) => format!("{name}@{d}"),
            (None, Some(t)) => format!("{name}:{t}"),
            (None, None) => name.clone(),
        };
        let mut scopes = vec![identity];
        let mut n = name.as_str();
        loop {
            scopes.push(n.to_string());
            match n.rfind('/') {
                Some(i) => n = &n[..i],
                None => break,
            }
        }
        let mut host = n.split_once(':').map_or(n, |(h, _)| h);
        while let Some(dot) = host.find('.') {
            host = &host[dot + 1..];
            scopes.push(format!("*.{host}"));
        }
        // c/image prints the familiar form (`busybox:latest`); the full one names it as well.
        Ok(PolicyRef {
            transport: "docker",
            shown: ImageRef::Docker(r.to_string()).to_string(),
            scopes,
        })
    }

    /// The reference of a source we open: `docker://`, `dir:`, `docker-archive:`, `oci:`,
    /// `oci-archive:`.
    pub(crate) fn of_source(source: &ImageRef) -> Result<PolicyRef> {
        // The resolved path, then its parents (for oci: the path is a namespace of itself too,
        // which changes nothing in the lookup).
        let paths = |transport: &'static str, p: &Path| {
            let p = explicit_path(p);
            let mut scopes = vec![p.display().to_string()];
            scopes.extend(parents(&p));
            PolicyRef {
                transport,
                shown: source.to_string(),
                scopes,
            }
        };
        match source {
            ImageRef::OciDir { path, .. } => Ok(paths("oci", path)),
            ImageRef::OciArchive { path, .. } => Ok(paths("oci-archive", path)),
            ImageRef::Dir(path) => Ok(paths("dir", path)),
            ImageRef::Docker(name) => PolicyRef::docker(name),
            ImageRef::DockerArchive { .. } => Ok(PolicyRef {
                transport: "docker-archive",
                shown: source.to_string(),
                scopes: Vec::new(),
            }),
            other => Err(Error::InvalidInput(format!(
                "{other}: no signature policy scope is known for this transport"
            ))),
        }
    }

    /// An image of the store at `graphroot` (driver `driver`) named `name` (normalized):
    /// `[driver@root]NAME`, its repository and parents, `[driver@root]`, `[root]`.
    pub fn storage(driver: &str, graphroot: &Path, name: &str) -> PolicyRef {
        // c/image's identity is the normalized name.
        let normalized = crate::reference::normalize(name).unwrap_or_else(|_| name.to_string());
        let name = normalized.as_str();
        let root = graphroot.display();
        let store = format!("[{driver}@{root}]");
        let mut scopes = vec![format!("{store}{name}")];
        let repo = name
            .split_once('@')
            .map(|(n, _)| n)
            .unwrap_or_else(|| match name.rfind(':') {
                Some(i) if !name[i..].contains('/') => &name[..i],
                _ => name,
            });
        let mut n = repo;
        loop {
            scopes.push(format!("{store}{n}"));
            match n.rfind('/') {
                Some(i) => n = &n[..i],
                None => break,
            }
        }
        scopes.push(store.clone());
        scopes.push(format!("[{root}]"));
        let shown = ImageRef::ContainersStorage {
            store: Some(crate::reference::StoreSpec {
                driver: Some(driver.to_string()),
                graphroot: graphroot.to_path_buf(),
                runroot: None,
            }),
            name: name.to_string(),
        }
        .to_string();
        PolicyRef {
            transport: "containers-storage",
            shown,
            scopes,
        }
    }
}

/// Evaluates the policy (`policy_path`, or podman's default) for opening `source`.
pub(crate) fn check_source(source: &ImageRef, policy_path: Option<&Path>) -> Result<()> {
    let r = PolicyRef::of_source(source)?;
    load(policy_path)?.check(&r)
}

/// [`check_source`], a signature requirement returned as [`Verdict::Signatures`] with the
/// reference it concerns, for a caller that can have them verified.
pub(crate) fn evaluate_source(
    source: &ImageRef,
    policy_path: Option<&Path>,
) -> Result<(Verdict, PolicyRef)> {
    let r = PolicyRef::of_source(source)?;
    Ok((load(policy_path)?.evaluate(&r)?, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(s: &str) -> Policy {
        parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn strict_parse() {
        for bad in [
            r#"{}"#,
            r#"{"default":[]}"#,
            r#"{"default":[{"type":"insecureAcceptAnything","x":1}]}"#,
            r#"{"default":[{"type":"nope"}]}"#,
            r#"{"default":[{"type":"reject"}],"extra":1}"#,
            r#"{"default":[{"type":"reject"}],"transports":{"docker-archive":{"x":[{"type":"reject"}]}}}"#,
            r#"{"default":[{"type":"reject"}],"transports":{"dir":{"rel":[{"type":"reject"}]}}}"#,
            r#"{"default":[{"type":"reject"}],"default":[{"type":"reject"}]}"#,
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn docker_scopes() {
        let r = PolicyRef::docker("reg.example.com:5000/ns/img:1").unwrap();
        assert_eq!(
            r.scopes,
            [
                "reg.example.com:5000/ns/img:1",
                "reg.example.com:5000/ns/img",
                "reg.example.com:5000/ns",
                "reg.example.com:5000",
                "*.example.com",
                "*.com"
            ]
        );
        let r = PolicyRef::docker("busybox").unwrap();
        assert_eq!(r.scopes[0], "docker.io/library/busybox:latest");
        assert_eq!(r.scopes.last().unwrap(), "*.io");
    }

    #[test]
    fn most_specific_scope_wins() {
        let p = policy(
            r#"{"default":[{"type":"insecureAcceptAnything"}],
                "transports":{"docker":{
                    "quay.io":[{"type":"reject"}],
                    "quay.io/ok":[{"type":"insecureAcceptAnything"}],
                    "*.example.com":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}}}"#,
        );
        let ok = |s: &str| p.check(&PolicyRef::docker(s).unwrap()).is_ok();
        assert!(!ok("quay.io/a/b:1"));
        assert!(ok("quay.io/ok/b:1"));
        assert!(ok("docker.io/x"));
        assert!(!ok("a.example.com/x"));
        assert!(ok("example.com/x"));
    }

    #[test]
    fn storage_scopes() {
        let r = PolicyRef::storage("overlay", Path::new("/s"), "quay.io/a/b:1");
        assert_eq!(
            r.scopes,
            [
                "[overlay@/s]quay.io/a/b:1",
                "[overlay@/s]quay.io/a/b",
                "[overlay@/s]quay.io/a",
                "[overlay@/s]quay.io",
                "[overlay@/s]",
                "[/s]"
            ]
        );
    }
}
