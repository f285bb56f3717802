//! `podman image inspect`'s view of an image, computed from the store's records and big data.

use serde_json::{Map, Value, json};
use storage_format::ImageRecord;

/// The manifest type podman shows for a manifest that names none (an OCI manifest).
const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

use super::Store;
use super::copy::read_big_data;
use crate::error::{Error, Result};

/// The repository of a name (`localhost/a:1` → `localhost/a`).
fn repository(name: &str) -> &str {
    let name = name.split('@').next().unwrap_or(name);
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].find(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

impl Store {
    /// The image as `podman image inspect` shows it: `Id`, `Digest`, `RepoTags`, `RepoDigests`,
    /// `Parent`, `Comment`, `Created`, `Config`, `Version`, `Author`, `Architecture`, `Os`, `Size`,
    /// `VirtualSize`, `GraphDriver`, `RootFS`, `Labels`, `Annotations`, `ManifestType`, `User`,
    /// `History`, `NamesHistory`.
    pub fn inspect_image(&self, img: &ImageRecord) -> Result<Value> {
        let parse = |bytes: Vec<u8>, what: &str| -> Result<Value> {
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::Store(format!(
                    "the {what} of image {} is not valid JSON: {e}",
                    img.id
                ))
            })
        };
        let config = parse(
            read_big_data(self, img, &format!("sha256:{}", img.id))?,
            "config",
        )?;
        let manifest = parse(read_big_data(self, img, "manifest")?, "manifest")?;
        let (chain, size) = self.chain_and_size(img)?;
        let (tags, repo_digests) = tags_and_repo_digests(img);
        let cfg = config.get("config").cloned().unwrap_or_else(|| json!({}));
        let str_of =
            |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let graph = self.graph_driver(&chain);
        let labels = cfg.get("Labels").cloned().unwrap_or(Value::Null);
        let annotations = manifest
            .get("annotations")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let manifest_type = manifest
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(MEDIA_OCI_MANIFEST)
            .to_string();
        // libimage: an OCI image's comment is its first history entry's; a Docker one's the
        // config's own `comment`.
        let comment = if manifest_type.starts_with("application/vnd.docker.") {
            str_of(&config, "comment")
        } else {
            config
                .pointer("/history/0/comment")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok(json!({
            "Id": img.id,
            "Digest": img.digest.clone().unwrap_or_default(),
            "RepoTags": tags,
            "RepoDigests": repo_digests,
            "Parent": "",
            "Comment": comment,
            "Created": config.get("created").cloned().unwrap_or(Value::Null),
            "Config": cfg,
            "Version": str_of(&config, "docker_version"),
            "Author": str_of(&config, "author"),
            "Architecture": str_of(&config, "architecture"),
            "Os": str_of(&config, "os"),
            "Size": size,
            "VirtualSize": size,
            "GraphDriver": graph,
            "RootFS": {
                "Type": "layers",
                "Layers": config.pointer("/rootfs/diff_ids").cloned().unwrap_or(json!([])),
            },
            "Labels": labels,
            "Annotations": annotations,
            "ManifestType": manifest_type,
            "User": str_of(&cfg, "User"),
            "History": config.get("history").cloned().unwrap_or(json!([])),
            "NamesHistory": img.names_history,
        }))
    }
}

impl Store {
    /// The image's layer IDs, top first, and its size as c/storage counts it: the layers'
    /// uncompressed sizes plus the big-data items.
    fn chain_and_size(&self, img: &ImageRecord) -> Result<(Vec<String>, i64)> {
        let layers = self.layers()?;
        let mut size: i64 = 0;
        let mut chain = Vec::new();
        let mut next = img.layer.clone();
        while let Some(id) = next {
            let Some(l) = layers.iter().find(|l| l.id == id) else {
                break;
            };
            size += l.diff_size.unwrap_or(0);
            chain.push(l.id.clone());
            next = l.parent.clone();
            if chain.len() > layers.len() {
                break;
            }
        }
        size += img
            .big_data_sizes
            .values()
            .filter_map(Value::as_i64)
            .sum::<i64>();
        Ok((chain, size))
    }

    /// `GraphDriver` for the layer chain `chain` (top first): overlay's directories, or vfs.
    fn graph_driver(&self, chain: &[String]) -> Value {
        match self.config().driver {
            super::DriverKind::Overlay => {
                let dir = |id: &str, sub: &str| {
                    self.config()
                        .graphroot
                        .join("overlay")
                        .join(id)
                        .join(sub)
                        .display()
                        .to_string()
                };
                let mut data = Map::new();
                if chain.len() > 1 {
                    let lower: Vec<String> = chain[1..].iter().map(|id| dir(id, "diff")).collect();
                    data.insert("LowerDir".into(), json!(lower.join(":")));
                }
                if let Some(top) = chain.first() {
                    data.insert("UpperDir".into(), json!(dir(top, "diff")));
                    data.insert("WorkDir".into(), json!(dir(top, "work")));
                }
                json!({"Name": "overlay", "Data": data})
            }
            super::DriverKind::Vfs => json!({"Name": "vfs", "Data": null}),
        }
    }
}

/// `RepoTags` (the names without a digest) and `RepoDigests` (each repository with each manifest
/// digest, sorted, as libimage's `RepoDigests` ends in `sort.Strings`).
fn tags_and_repo_digests(img: &ImageRecord) -> (Vec<&String>, Vec<String>) {
    let mut digests: Vec<String> = img.digest.iter().cloned().collect();
    for (k, v) in &img.big_data_digests {
        if k.starts_with("manifest-")
            && let Some(d) = v.as_str()
            && !digests.iter().any(|x| x == d)
        {
            digests.push(d.to_string());
        }
    }
    let tags: Vec<&String> = img.names.iter().filter(|n| !n.contains('@')).collect();
    let mut repos: Vec<&str> = Vec::new();
    for n in &img.names {
        let r = repository(n);
        if !repos.contains(&r) {
            repos.push(r);
        }
    }
    let mut repo_digests: Vec<String> = repos
        .iter()
        .flat_map(|r| digests.iter().map(move |d| format!("{r}@{d}")))
        .collect();
    repo_digests.sort();
    repo_digests.dedup();
    (tags, repo_digests)
}
