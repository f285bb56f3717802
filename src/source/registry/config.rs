//! What registries.conf (v2) says of a registry, as far as the native client follows it today:
//! `insecure` and `blocked`, for the `[[registry]]` whose `prefix` (or `location`) matches the
//! image best (the longest). Read from `CONTAINERS_REGISTRIES_CONF`, else
//! `/etc/containers/registries.conf` and then `/etc/containers/registries.conf.d/*.conf` in name
//! order (a later table for the same prefix replaces an earlier one, as c/image merges them).
//! Mirrors, short-name aliases and search registries are not followed yet.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The settings of one `[[registry]]`.
#[derive(Debug, Clone, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
}

#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
}

/// What applies to one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Settings {
    /// Plain HTTP, or HTTPS without verification, is allowed.
    pub insecure: bool,
    /// Pulling from it is refused.
    pub blocked: bool,
}

/// The files to read, in order.
fn files() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|v| !v.is_empty()) {
        return vec![PathBuf::from(f)];
    }
    let mut out = vec![PathBuf::from("/etc/containers/registries.conf")];
    if let Ok(dir) = std::fs::read_dir("/etc/containers/registries.conf.d") {
        let mut extra: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        extra.sort();
        out.extend(extra);
    }
    out
}

/// Reads one file's tables.
fn read(path: &Path) -> Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let file: File = toml::from_str(&text).map_err(|e| {
        Error::InvalidInput(format!(
            "{} is not a registries.conf this client reads ({e}): fix it (containers-registries.conf(5))",
            path.display()
        ))
    })?;
    Ok(file.registry)
}

/// The settings for `host/path`.
pub(crate) fn settings(host: &str, path: &str) -> Result<Settings> {
    let full = format!("{host}/{path}");
    let mut best: Option<(usize, Entry)> = None;
    for f in files() {
        for e in read(&f)? {
            let prefix = if e.prefix.is_empty() {
                &e.location
            } else {
                &e.prefix
            };
            let prefix = prefix.trim_end_matches('/');
            let matches = full == prefix
                || full.starts_with(&format!("{prefix}/"))
                || full.starts_with(&format!("{prefix}:"));
            if !prefix.is_empty()
                && matches
                && best.as_ref().is_none_or(|(l, _)| prefix.len() >= *l)
            {
                best = Some((prefix.len(), e.clone()));
            }
        }
    }
    Ok(best.map_or_else(Settings::default, |(_, e)| Settings {
        insecure: e.insecure,
        blocked: e.blocked,
    }))
}
