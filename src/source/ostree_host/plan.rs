//! Planning a host image's layers as ostree-ext exports them: which stored layer is the ostree
//! commit, which are chunks and which are derived, and which content objects each layer carries
//! (the object → chunk assignment rebuilt from the chunk layers' commits).

use std::path::Path;

use serde_json::Value;

use super::gvariant::parse_dirtree;
use super::imgref;
use super::meta_objects::MetaObjects;
use super::repo::{ChunkContent, commit_root, layer_commits_objects};
use crate::error::{Error, Result};

/// The config label naming the last layer that belongs to the ostree commit.
const DIFFID_LABEL: &str = "ostree.final-diffid";

/// One layer of the export.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// The ostree layer: the commit's structure plus the objects no chunk took.
    Final(ChunkContent),
    /// A component (chunk) layer.
    Chunk(ChunkContent),
    /// A derived layer, exported as a plain tar by `ostree export`.
    Derived(String),
}

/// The stored image's layers, split as ostree-ext's layout has them.
#[derive(Debug)]
pub(crate) struct LayerSplit {
    /// Layer digests in manifest order (the first is the ostree commit).
    pub digests: Vec<String>,
    /// The config's DiffIDs.
    pub diff_ids: Vec<String>,
    /// The component (chunk) layers, up to the final-diffid layer.
    pub components: Vec<String>,
    /// The derived layers, after it.
    pub derived: Vec<String>,
}

/// Splits the layers of `manifest`/`config`: the first is the ostree commit; up to the layer the
/// `ostree.final-diffid` label names come the component layers; after it, derived layers.
pub(crate) fn split_layers(manifest: &Value, config: &Value, imgref: &str) -> Result<LayerSplit> {
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let digests: Vec<String> = layers
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect();
    if digests.is_empty() || digests.len() != layers.len() {
        return Err(Error::InvalidInput(format!(
            "the manifest stored for {imgref} has no valid layers"
        )));
    }
    let final_diffid = config["config"]["Labels"][DIFFID_LABEL]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "{imgref} has no {DIFFID_LABEL} label: it is not an ostree-encapsulated image"
            ))
        })?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let target = diff_ids
        .iter()
        .position(|d| *d == final_diffid)
        .and_then(|i| digests.get(i).cloned())
        .ok_or_else(|| {
            Error::InvalidInput(format!("{imgref}: no layer has the DiffID {final_diffid}"))
        })?;
    let mut components = Vec::new();
    let mut derived = Vec::new();
    let mut after = false;
    for (i, d) in digests.iter().enumerate() {
        if *d == target {
            after = true;
            if i != 0 {
                components.push(d.clone());
            }
        } else if !after {
            if i != 0 {
                components.push(d.clone());
            }
        } else {
            derived.push(d.clone());
        }
    }
    Ok(LayerSplit {
        digests,
        diff_ids,
        components,
        derived,
    })
}

/// The layers to write: the ostree layer (the commit's structure plus the objects no chunk took),
/// each chunk with its objects (from the chunk layers' commits, as ostree-ext assigns them), the
/// derived layers.
pub(crate) fn plan_layers(
    repo: &ostree::Repo,
    repo_path: &Path,
    meta: &MetaObjects,
    base_commit: &str,
    split: &LayerSplit,
) -> Result<Vec<Plan>> {
    let mut remainder = commit_objects(repo, repo_path, meta, base_commit)?;
    let mut chunks = Vec::new();
    let layer_refs: Vec<String> = split
        .components
        .iter()
        .map(|d| imgref::layer_ref(d))
        .collect();
    for names in layer_commits_objects(repo, repo_path, &layer_refs)? {
        let mut chunk = ChunkContent::new();
        for name in names {
            if let Some(paths) = remainder.remove(&name) {
                chunk.insert(name, paths);
            }
        }
        chunks.push(Plan::Chunk(chunk));
    }
    let mut plan = vec![Plan::Final(remainder)];
    plan.extend(chunks);
    plan.extend(
        split
            .derived
            .iter()
            .map(|d| Plan::Derived(imgref::layer_ref(d))),
    );
    Ok(plan)
}

/// Walks a commit: every content object with its absolute paths (in walk order), as ostree-ext's
/// chunking starts from. Directory objects come from `meta` where it has them.
pub fn commit_objects(
    repo: &ostree::Repo,
    repo_path: &Path,
    meta: &MetaObjects,
    commit: &str,
) -> Result<ChunkContent> {
    let (tree, _) = commit_root(repo, commit)?;
    let mut out = ChunkContent::new();
    walk(
        repo,
        repo_path,
        meta,
        &tree,
        &mut String::from("/"),
        &mut out,
    )?;
    Ok(out)
}

fn walk(
    repo: &ostree::Repo,
    repo_path: &Path,
    meta: &MetaObjects,
    csum: &str,
    path: &mut String,
    out: &mut ChunkContent,
) -> Result<()> {
    let data = meta.get_or_read(repo, repo_path, ostree::ObjectType::DirTree, csum)?;
    let tree = parse_dirtree(&data, &format!("dirtree {csum}"))?;
    drop(data);
    let len = path.len();
    for f in tree.files {
        path.push_str(&f.name);
        out.entry(f.checksum).or_default().push(path.clone());
        path.truncate(len);
    }
    for d in tree.dirs {
        path.push_str(&d.name);
        path.push('/');
        walk(repo, repo_path, meta, &d.tree, path, out)?;
        path.truncate(len);
    }
    Ok(())
}
