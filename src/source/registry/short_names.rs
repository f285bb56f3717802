//! Short names as `podman pull` resolves them (c/image's `shortnames.Resolve`): a name without a
//! registry (`busybox`, `library/debian:12`, `app@sha256:…`) becomes its alias when registries.conf
//! (or a drop-in, or the alias cache c/image records, `/var/cache/containers/short-name-aliases.conf`)
//! has one; else one candidate per `unqualified-search-registries` entry, tried in order. Without
//! a terminal to prompt on, `short-name-mode = "enforcing"` with several search registries is an
//! error, as for podman; `permissive` (c/image's default) and `disabled` try them all. A name with
//! a registry is itself. (`docker://NAME` is never resolved: it means docker.io, as for skopeo.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The short-name settings of one registries.conf file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ShortNameFile {
    unqualified_search_registries: Option<Vec<String>>,
    #[serde(default)]
    short_name_mode: String,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
}

/// The merged settings: search registries (and the file that set them), mode, aliases with the
/// file each came from.
#[derive(Debug, Default)]
struct Settings {
    search: Vec<String>,
    search_origin: Option<PathBuf>,
    mode: String,
    aliases: BTreeMap<String, (String, PathBuf)>,
}

/// How a short name resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The fully qualified names to try, in order.
    pub candidates: Vec<String>,
    /// Why: `None` for a name that was not short, else e.g. `an alias (FILE)`.
    pub rationale: Option<String>,
}

/// Whether `name` has no registry: its first `/` component has no `.` or `:` and is not
/// `localhost` (or there is no `/`).
pub fn is_short(name: &str) -> bool {
    let repo = name.split('@').next().unwrap_or(name);
    match repo.split_once('/') {
        None => true,
        Some((first, _)) => !(first.contains('.') || first.contains(':') || first == "localhost"),
    }
}

/// `name` split into its repository and its `:tag` / `@digest` suffix.
fn split_suffix(name: &str) -> (&str, &str) {
    if let Some(at) = name.find('@') {
        let (repo, digest) = name.split_at(at);
        // A tag before the digest is kept with it.
        return match repo.rfind(':') {
            Some(c) if !repo[c..].contains('/') => (&name[..c], &name[c..]),
            _ => (repo, digest),
        };
    }
    match name.rfind(':') {
        Some(c) if !name[c..].contains('/') => name.split_at(c),
        _ => (name, ""),
    }
}

/// Reads the settings of `files` in order (later files override earlier ones, as c/image merges
/// drop-ins), then the alias cache, whose aliases win.
fn settings(files: &[PathBuf], cache: Option<&Path>) -> Result<Settings> {
    let mut out = Settings::default();
    let read = |path: &Path| -> Result<Option<ShortNameFile>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", path, e)),
        };
        toml::from_str(&text).map(Some).map_err(|e| {
            Error::InvalidInput(format!(
                "{} is not a registries.conf this client reads ({e}): fix it (containers-registries.conf(5))",
                path.display()
            ))
        })
    };
    for f in files {
        let Some(file) = read(f)? else { continue };
        if let Some(s) = file.unqualified_search_registries {
            out.search = s;
            out.search_origin = Some(f.clone());
        }
        if !file.short_name_mode.is_empty() {
            out.mode = file.short_name_mode;
        }
        for (k, v) in file.aliases {
            out.aliases.insert(k, (v, f.clone()));
        }
    }
    if let Some(c) = cache
        && let Some(file) = read(c)?
    {
        for (k, v) in file.aliases {
            out.aliases.insert(k, (v, c.to_path_buf()));
        }
    }
    Ok(out)
}

/// The candidates for `name` (as `podman pull` takes it), from registries.conf as c/image finds
/// it. No prompt is ever shown: enforcing mode with several search registries refuses.
pub fn resolve(name: &str) -> Result<Resolved> {
    // c/image's alias cache: root's, or the user's.
    let cache = if rustix::process::geteuid().is_root() {
        Some(PathBuf::from(
            "/var/cache/containers/short-name-aliases.conf",
        ))
    } else {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/containers/short-name-aliases.conf"))
    };
    resolve_in(name, &super::config::files(), cache.as_deref())
}

/// [`resolve`] with the given configuration files and alias cache.
fn resolve_in(name: &str, files: &[PathBuf], cache: Option<&Path>) -> Result<Resolved> {
    if !is_short(name) {
        return Ok(Resolved {
            candidates: vec![name.to_string()],
            rationale: None,
        });
    }
    let s = settings(files, cache)?;
    let (repo, suffix) = split_suffix(name);
    if let Some((target, origin)) = s.aliases.get(repo) {
        return Ok(Resolved {
            candidates: vec![format!("{target}{suffix}")],
            rationale: Some(format!("an alias ({})", origin.display())),
        });
    }
    let origin = s
        .search_origin
        .as_deref()
        .or(files.first().map(PathBuf::as_path))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if s.search.is_empty() {
        return Err(Error::InvalidInput(format!(
            "short-name {name:?} did not resolve to an alias and no unqualified-search registries are defined in {origin:?}: name the registry (e.g. docker.io/library/{name}) or add unqualified-search-registries there"
        )));
    }
    match s.mode.as_str() {
        "" | "permissive" | "disabled" => {}
        "enforcing" if s.search.len() == 1 => {}
        "enforcing" => {
            return Err(Error::InvalidInput(format!(
                "short-name resolution enforced but cannot prompt without a TTY: {name:?} could come from any of {}; name the registry (e.g. {}/{name})",
                s.search.join(", "),
                s.search[0]
            )));
        }
        other => {
            return Err(Error::InvalidInput(format!(
                "short-name-mode {other:?} in registries.conf is none of enforcing, permissive, disabled: fix it"
            )));
        }
    }
    Ok(Resolved {
        candidates: s
            .search
            .iter()
            .map(|r| {
                // docker.io's one-component names live under library/.
                if (r == "docker.io" || r == "index.docker.io") && !repo.contains('/') {
                    format!("docker.io/library/{repo}{suffix}")
                } else {
                    format!("{r}/{repo}{suffix}")
                }
            })
            .collect(),
        rationale: Some(format!("the unqualified-search registries ({origin})")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_not() {
        for s in [
            "busybox",
            "busybox:1",
            "library/debian",
            "a/b/c:2",
            "app@sha256:00",
        ] {
            assert!(is_short(s), "{s}");
        }
        for s in [
            "quay.io/x",
            "localhost/app",
            "127.0.0.1:5000/a",
            "host:5000/a:1",
        ] {
            assert!(!is_short(s), "{s}");
        }
        assert_eq!(split_suffix("a/b:1"), ("a/b", ":1"));
        assert_eq!(split_suffix("a@sha256:00"), ("a", "@sha256:00"));
        assert_eq!(split_suffix("a:1@sha256:00"), ("a", ":1@sha256:00"));
        assert_eq!(split_suffix("a"), ("a", ""));
    }

    #[test]
    fn aliases_search_and_modes() {
        let dir = std::env::temp_dir().join(format!("shortnames-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let main = dir.join("registries.conf");
        let dropin = dir.join("50-x.conf");
        let cache = dir.join("cache.conf");
        std::fs::write(
            &main,
            "unqualified-search-registries = [\"docker.io\", \"quay.io\"]\n[aliases]\n\"app\" = \"quay.io/org/app\"\n\"old\" = \"a.io/old\"\n",
        )
        .expect("write");
        std::fs::write(&dropin, "[aliases]\n\"old\" = \"b.io/old\"\n").expect("write");
        std::fs::write(&cache, "[aliases]\n\"cached\" = \"c.io/x\"\n").expect("write");
        let files = vec![main.clone(), dropin.clone()];
        let r = |n: &str| resolve_in(n, &files, Some(&cache));
        assert_eq!(r("app:1").expect("alias").candidates, ["quay.io/org/app:1"]);
        assert_eq!(r("old").expect("drop-in").candidates, ["b.io/old"]);
        assert_eq!(r("cached").expect("cache").candidates, ["c.io/x"]);
        assert_eq!(
            r("tool:2").expect("search").candidates,
            ["docker.io/library/tool:2", "quay.io/tool:2"]
        );
        assert_eq!(r("q.io/a").expect("qualified").candidates, ["q.io/a"]);
        std::fs::write(&dropin, "short-name-mode = \"enforcing\"\n").expect("write");
        let e = r("tool").expect_err("enforcing");
        assert!(e.to_string().contains("cannot prompt"), "{e}");
        std::fs::write(&main, "").expect("write");
        let e = r("tool").expect_err("no search registries");
        assert!(e.to_string().contains("no unqualified-search"), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
