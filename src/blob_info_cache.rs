//! What a push learnt about the compressed blobs it made, kept for the next push (as c/image's
//! blob-info cache): a layer's DiffID and compression → the blob's digest and size. The
//! compression here is reproducible, so a layer pushed once has that digest whenever it is pushed
//! again; knowing it before compressing lets a push ask the registry first and skip what is there.
//! One JSON file, `$XDG_CACHE_HOME/bootc-image/blob-info.json` (root: `/var/cache/bootc-image/`),
//! replaced atomically, at most [`MAX_ENTRIES`] entries (the newest kept); a missing or unreadable
//! file is an empty cache — it is only ever a hint, every use is checked against the registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use storage_format::Digest;

/// Entries kept at most.
const MAX_ENTRIES: usize = 10_000;

/// One compressed blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BlobInfo {
    /// Its digest.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// When it was last recorded (seconds since the epoch), to keep the newest.
    #[serde(default)]
    pub at: u64,
    /// Its descriptor's annotations (zstd:chunked's TOC position).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The cache's file.
fn path() -> Option<PathBuf> {
    if rustix::process::geteuid().is_root() {
        return Some(PathBuf::from("/var/cache/bootc-image/blob-info.json"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bootc-image/blob-info.json"))
}

/// The key of a layer compressed one way.
fn key(diff_id: &str, compression: &str) -> String {
    format!("{diff_id} {compression}")
}

/// The cache, read whole.
#[derive(Debug, Default)]
pub(crate) struct BlobInfoCache {
    entries: BTreeMap<String, BlobInfo>,
}

impl BlobInfoCache {
    /// Reads the cache (empty when there is none, or it cannot be read).
    pub(crate) fn load() -> BlobInfoCache {
        let entries = path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BlobInfoCache { entries }
    }

    /// The blob the layer `diff_id` compressed as `compression` was, if known.
    pub(crate) fn get(&self, diff_id: &str, compression: &str) -> Option<&BlobInfo> {
        self.entries.get(&key(diff_id, compression))
    }

    /// Records that the layer `diff_id` compressed as `compression` is `digest` (`size` bytes,
    /// its descriptor's `annotations`).
    pub(crate) fn record(
        &mut self,
        diff_id: &str,
        compression: &str,
        digest: &Digest,
        size: u64,
        annotations: &Option<BTreeMap<String, String>>,
    ) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.entries.insert(
            key(diff_id, compression),
            BlobInfo {
                digest: digest.to_string(),
                size,
                at,
                annotations: annotations.clone().unwrap_or_default(),
            },
        );
    }

    /// Writes the cache back (the newest entries), ignoring failures: it is only a hint.
    pub(crate) fn save(mut self) {
        let Some(p) = path() else { return };
        if self.entries.len() > MAX_ENTRIES {
            let mut ages: Vec<u64> = self.entries.values().map(|e| e.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() - MAX_ENTRIES];
            self.entries.retain(|_, e| e.at >= cut);
        }
        let Ok(bytes) = serde_json::to_vec(&self.entries) else {
            return;
        };
        if let Some(dir) = p.parent()
            && std::fs::create_dir_all(dir).is_ok()
            && let Err(e) = crate::store::atomic::atomic_write(&p, &bytes, 0o644)
        {
            tracing::debug!(error = %e, "the blob-info cache was not written");
        }
    }
}
