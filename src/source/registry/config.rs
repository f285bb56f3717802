//! What registries.conf (v2) says of an image's registry, as c/image reads it: the
//! `[[registry]]` whose `prefix` (or `location`; `*.domain` wildcards too) matches the image best
//! (the longest), its `insecure` and `blocked`, its `location` (the prefix rewritten) and its
//! `[[registry.mirror]]`s with `pull-from-mirror` (and the older `mirror-by-digest-only`). Read
//! from the files c/image reads ([`files`]; a later table for the same prefix replaces an earlier
//! one, as c/image merges them). A version 1 file (`[registries.search]`) is
//! refused rather than ignored. Short names: [`super::short_names`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

/// The settings of one `[[registry]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Entry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<Mirror>,
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
    /// Version 1's tables; present means the file is version 1.
    registries: Option<toml::Value>,
}

/// One place to pull an image from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PullSource {
    /// The host (with its port) to reach.
    pub host: String,
    /// The repository path there.
    pub path: String,
    /// Plain HTTP, or HTTPS without verification, is allowed.
    pub insecure: bool,
    /// A mirror, not the registry the name names.
    pub mirror: bool,
}

/// The files to read, in order, as c/image finds them: `CONTAINERS_REGISTRIES_CONF`, else (for a
/// user other than root) `~/.config/containers/registries.conf` when it exists, else
/// `/etc/containers/registries.conf`; then the drop-ins in name order — the system's
/// `/etc/containers/registries.conf.d/*.conf` unless the user's own file is the main one, then the
/// user's `~/.config/containers/registries.conf.d/*.conf`.
pub(crate) fn files() -> Vec<PathBuf> {
    let user_dir = (!rustix::process::geteuid().is_root())
        .then(|| std::env::var_os("HOME"))
        .flatten()
        .map(|h| PathBuf::from(h).join(".config/containers"));
    let user_file = user_dir
        .as_ref()
        .map(|d| d.join("registries.conf"))
        .filter(|f| f.is_file());
    let env = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty());
    let (main, user_main) = match (env, user_file) {
        (Some(f), _) => (PathBuf::from(f), false),
        (None, Some(u)) => (u, true),
        (None, None) => (PathBuf::from("/etc/containers/registries.conf"), false),
    };
    let mut out = vec![main];
    let mut dirs = Vec::new();
    if !user_main {
        dirs.push(PathBuf::from("/etc/containers/registries.conf.d"));
    }
    if let Some(d) = user_dir {
        dirs.push(d.join("registries.conf.d"));
    }
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut extra: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        out.extend(extra);
    }
    out
}

/// A one-line error for a registries.conf c/image would refuse too.
fn bad(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "{} is not a registries.conf this client reads ({what}): fix it (containers-registries.conf(5))",
        path.display()
    ))
}

/// Reads one file's tables.
fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let file: File = toml::from_str(&text).map_err(|e| bad(path, e))?;
    if file.registries.is_some() {
        return Err(bad(
            path,
            "version 1 tables ([registries.*]); write [[registry]] tables instead",
        ));
    }
    for e in &file.registry {
        let prefix = e.prefix();
        if prefix.is_empty() {
            return Err(bad(path, "a [[registry]] with neither prefix nor location"));
        }
        if prefix.starts_with("*.") && !e.location.is_empty() {
            return Err(bad(
                path,
                format!("the wildcard prefix {prefix} has a location"),
            ));
        }
        for m in &e.mirror {
            if e.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
                return Err(bad(
                    path,
                    "mirror-by-digest-only and a mirror's pull-from-mirror together",
                ));
            }
            if !["", "all", "digest-only", "tag-only"].contains(&m.pull_from_mirror.as_str()) {
                return Err(bad(
                    path,
                    format!("pull-from-mirror = {:?}", m.pull_from_mirror),
                ));
            }
            if m.location.is_empty() {
                return Err(bad(path, "a mirror without a location"));
            }
        }
    }
    Ok(file.registry)
}

impl Entry {
    /// The prefix images are matched against.
    fn prefix(&self) -> &str {
        let p = if self.prefix.is_empty() {
            &self.location
        } else {
            &self.prefix
        };
        p.trim_end_matches('/')
    }

    /// How well it matches `full` (`host/path`): the length of the prefix, or `None`.
    fn matches(&self, host: &str, full: &str) -> Option<usize> {
        let prefix = self.prefix();
        if let Some(domain) = prefix.strip_prefix("*.") {
            // The host without its port.
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            return (name.ends_with(&format!(".{domain}"))).then_some(prefix.len());
        }
        let hit = full == prefix
            || full.starts_with(&format!("{prefix}/"))
            || full.starts_with(&format!("{prefix}:"));
        hit.then_some(prefix.len())
    }
}

/// Where `host/path` (tagged or, with `by_digest`, by digest) is pulled from, in order: the
/// mirrors that serve such references, then the registry itself (its `location` in place of the
/// prefix). A blocked registry is refused.
pub(crate) fn pull_sources(host: &str, path: &str, by_digest: bool) -> Result<Vec<PullSource>> {
    pull_sources_in(&files(), host, path, by_digest)
}

/// Whether `host/path` may be pushed to over plain HTTP or unverified HTTPS (its registry's
/// `insecure`); a blocked registry is refused. Pushes go where the name says: no mirror, no
/// rewriting.
pub(crate) fn push_insecure(host: &str, path: &str) -> Result<bool> {
    let full = format!("{host}/{path}");
    match best_entry(&files(), host, &full)? {
        Some(e) if e.blocked => Err(blocked(&full, &e)),
        Some(e) => Ok(e.insecure),
        None => Ok(false),
    }
}

/// The `[[registry]]` of `confs` matching `full` (`host/path`) best.
fn best_entry(confs: &[PathBuf], host: &str, full: &str) -> Result<Option<Entry>> {
    let mut best: Option<(usize, Entry)> = None;
    for f in confs {
        for e in read(f)? {
            if let Some(len) = e.matches(host, full)
                && best.as_ref().is_none_or(|(l, _)| len >= *l)
            {
                best = Some((len, e));
            }
        }
    }
    Ok(best.map(|(_, e)| e))
}

/// The error for a blocked registry.
fn blocked(full: &str, entry: &Entry) -> Error {
    Error::Remote {
        image: crate::image_ref::ImageRef::Docker(full.to_string()).to_string(),
        message: format!(
            "{} is blocked in registries.conf: use another registry, or unblock it",
            entry.prefix()
        ),
        transient: false,
    }
}

/// [`pull_sources`] as the registries.conf files `confs` say.
fn pull_sources_in(
    confs: &[PathBuf],
    host: &str,
    path: &str,
    by_digest: bool,
) -> Result<Vec<PullSource>> {
    let full = format!("{host}/{path}");
    let Some(entry) = best_entry(confs, host, &full)? else {
        return Ok(vec![PullSource {
            host: host.to_string(),
            path: path.to_string(),
            insecure: false,
            mirror: false,
        }]);
    };
    if entry.blocked {
        return Err(blocked(&full, &entry));
    }
    let prefix = entry.prefix().to_string();
    // The rest of the name after the prefix (empty or starting with '/').
    let rest = if prefix.starts_with("*.") {
        None
    } else {
        Some(&full[prefix.len()..])
    };
    let rewrite = |location: &str, insecure: bool, mirror: bool| -> PullSource {
        let full = match rest {
            Some(r) if !location.is_empty() => format!("{}{r}", location.trim_end_matches('/')),
            _ => full.clone(),
        };
        let (h, p) = full.split_once('/').unwrap_or((&full, ""));
        PullSource {
            host: h.to_string(),
            path: p.to_string(),
            insecure,
            mirror,
        }
    };
    let mut out = Vec::new();
    for m in &entry.mirror {
        let wanted = match m.pull_from_mirror.as_str() {
            "digest-only" => by_digest,
            "tag-only" => !by_digest,
            _ => !entry.mirror_by_digest_only || by_digest,
        };
        if wanted && rest.is_some() {
            out.push(rewrite(&m.location, m.insecure, true));
        }
    }
    out.push(rewrite(&entry.location, entry.insecure, false));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_conf(text: &str, f: impl FnOnce(&dyn Fn(&str, &str, bool) -> Result<Vec<PullSource>>)) {
        let dir = std::env::temp_dir().join(format!(
            "regconf-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("registries.conf");
        std::fs::write(&path, text).expect("write");
        let confs = vec![path];
        f(&|h, p, d| pull_sources_in(&confs, h, p, d));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    fn hosts(v: &[PullSource]) -> Vec<String> {
        v.iter().map(|s| format!("{}/{}", s.host, s.path)).collect()
    }

    #[test]
    fn mirrors_prefixes_and_blocking() {
        let conf = r#"
unqualified-search-registries = ["example.com"]
[[registry]]
prefix = "example.com/team"
location = "primary.test/real"
[[registry.mirror]]
location = "m1.test/mirrored"
[[registry.mirror]]
location = "m2.test"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m3.test/x"
pull-from-mirror = "tag-only"
insecure = true

[[registry]]
prefix = "*.internal.test"
insecure = true

[[registry]]
location = "bad.test"
blocked = true
"#;
        with_conf(conf, |pull_sources| {
            let tagged = pull_sources("example.com", "team/app", false).expect("sources");
            assert_eq!(
                hosts(&tagged),
                [
                    "m1.test/mirrored/app",
                    "m3.test/x/app",
                    "primary.test/real/app"
                ]
            );
            assert!(tagged[1].insecure && tagged[1].mirror && !tagged[2].mirror);
            let by_digest = pull_sources("example.com", "team/app", true).expect("sources");
            assert_eq!(
                hosts(&by_digest),
                [
                    "m1.test/mirrored/app",
                    "m2.test/app",
                    "primary.test/real/app"
                ]
            );
            // Not under the prefix: as named.
            let other = pull_sources("example.com", "teams/app", false).expect("sources");
            assert_eq!(hosts(&other), ["example.com/teams/app"]);
            let wild = pull_sources("a.internal.test", "x", false).expect("sources");
            assert_eq!(hosts(&wild), ["a.internal.test/x"]);
            assert!(wild[0].insecure);
            let e = pull_sources("bad.test", "x", false).expect_err("blocked");
            assert!(e.to_string().contains("blocked"), "{e}");
        });
        with_conf(
            "[registries.search]\nregistries = ['a']\n",
            |pull_sources| {
                let e = pull_sources("a", "b", false).expect_err("v1");
                assert!(e.to_string().contains("version 1"), "{e}");
            },
        );
    }
}
