//! Building a chunked, reproducible image from a root filesystem directory, straight into a store
//! (`build-chunked`): no tar on disk, nothing compressed, files copied (or reflinked) from the
//! tree into the layers.
//!
//! ```text
//! Builder::new(rootfs, options)   reads the tree and its package database
//!   .plan(prior)                  which package goes to which layer (inspect, adjust)
//!   .image(&plan, names)          DiffIDs from the files (one pass), config and manifest
//!   .commit(&plan, &image, store) the layers written into the store (a second pass)
//! ```
//!
//! Each layer holds the files of its packages with every parent directory (so a layer stands on
//! its own), in path order; a hardlink group stays whole in the layer of its first member. The
//! same tree and options give the same bytes: sorted entries, ustar/PAX headers without user or
//! group names, mtimes in whole seconds (clamped to `--timestamp`), the config's `created` the
//! timestamp (or the newest mtime in the tree).

pub mod dpkg;
pub mod plan;
pub(crate) mod scan;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use storage_format::Digest;

use self::plan::{ChunkPlan, Prior, history_comment};
use self::scan::{Node, NodeKind};
use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::entry::{BuiltEntries, Content, Entry, EntryMeta};
use crate::layer::read_ahead::{ReadAhead, StopOnDrop};
use crate::layer::sink::LayerSink;
use crate::layer::tar_build::header_bytes;
use crate::layer::tar_header::{EntryKind, TarHeader};
use crate::store::Store;
use crate::store::image_input::{ImageInput, ImportReport, LayerBytes, LayerInput, Progress};
use crate::store::producer::{LayerProducer, Produced};

/// How far the read-ahead of a layer's files runs ahead of the writer.
const READ_AHEAD_LEAD: u64 = 64 << 20;

/// Options of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// At most this many layers (default 64).
    pub max_layers: usize,
    /// Clamp every mtime to this (seconds since the epoch) and make it the image's creation time;
    /// without it the creation time is the newest mtime in the tree.
    pub timestamp: Option<i64>,
    /// Labels of the image config (added to and overriding `containers.bootc=1` and, for an
    /// OSTree-style tree, `ostree.bootable=1`).
    pub labels: BTreeMap<String, String>,
    /// Annotations of the manifest.
    pub annotations: BTreeMap<String, String>,
    /// The image config's `config` object (Cmd, Env, …), from `--config FILE`.
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            max_layers: 64,
            timestamp: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            config: None,
        }
    }
}

/// How files are grouped: by dpkg package, or (no package database) by directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grouping {
    /// dpkg's file lists, in this directory of the tree.
    Dpkg(&'static str),
    /// No package database: `usr/<dir>` and other top-level directories are the groups.
    Directories,
}

/// A root filesystem read and ready to plan and build.
#[derive(Debug)]
pub struct Builder {
    root: PathBuf,
    options: BuildOptions,
    nodes: Vec<Node>,
    /// The group (package) of each node that is not a directory; `None`: unowned.
    owner: Vec<Option<usize>>,
    /// Group names.
    groups: Vec<String>,
    /// How the groups were found.
    pub grouping: Grouping,
    /// dpkg file lists skipped because they are no regular file (relative to the root): the files
    /// they would list are unowned. Worth telling the user.
    pub skipped_lists: Vec<String>,
}

/// The tar header of the tree's node `n` (mtime `mtime`): a directory's name ends in `/` and its
/// mtime is the epoch, a symlink carries its target.
fn node_header(n: &Node, mtime: i64) -> TarHeader {
    let mut name = n.path.clone();
    let mut h = TarHeader::new(Vec::new(), EntryKind::Regular, n.mode, n.size, mtime);
    h.uid = u64::from(n.uid);
    h.gid = u64::from(n.gid);
    h.devmajor = n.rdev.0;
    h.devminor = n.rdev.1;
    h.xattrs = n.xattrs.clone();
    h.kind = match n.kind {
        NodeKind::Directory => {
            name.push(b'/');
            // A directory is in every layer holding something below it, and a package update
            // changes its mtime (dpkg renames files into it): at the epoch, as in an OSTree commit,
            // it changes no layer but its package's.
            h.mtime = 0;
            EntryKind::Directory
        }
        NodeKind::File => EntryKind::Regular,
        NodeKind::Symlink => {
            h.linkname = n.target.clone();
            EntryKind::Symlink
        }
        NodeKind::CharDevice => EntryKind::CharDevice,
        NodeKind::BlockDevice => EntryKind::BlockDevice,
        NodeKind::Fifo => EntryKind::Fifo,
    };
    h.name = name;
    h
}

/// Fails when the file `f` (at `path`) is no longer the file the scan found (`size` bytes,
/// modified at `mtime`): the tree changed while it was being built, and what went in would not be
/// the file.
fn changed_during_build(f: &std::fs::File, path: &Path, size: u64, mtime: i64) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = f
        .metadata()
        .map_err(|e| Error::read(path.display().to_string(), e))?;
    if m.len() != size || m.mtime() != mtime {
        return Err(Error::InvalidInput(format!(
            "{} changed during the build ({size} bytes when the tree was read, {} now{}): build from a tree nothing writes to (stop its services, or copy or snapshot it first)",
            path.display(),
            m.len(),
            if m.mtime() != mtime {
                ", modified since"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// Puts every parent directory of `path` (`index`: path → node) into `layer` too.
fn with_parents(
    index: &HashMap<&[u8], usize>,
    layers: &mut [BTreeSet<usize>],
    path: &[u8],
    layer: usize,
) {
    let mut p = path;
    while let Some(slash) = p.iter().rposition(|&b| b == b'/') {
        p = &p[..slash];
        // A parent already in the layer has its own parents there too.
        if let Some(&d) = index.get(p)
            && !layers[d].insert(layer)
        {
            break;
        }
    }
}

/// The group of a path without a package database: `usr/<dir>`, or its top-level directory.
fn directory_group(path: &[u8]) -> String {
    let mut parts = path.split(|&b| b == b'/');
    let first = parts.next().unwrap_or_default();
    let group = match (first, parts.next()) {
        (b"usr", Some(second)) if path.len() > 4 + second.len() => {
            format!("usr/{}", String::from_utf8_lossy(second))
        }
        _ => String::from_utf8_lossy(first).into_owned(),
    };
    // (Names go into history comments split on spaces.)
    format!("dir:{}", group.replace('%', "%25").replace(' ', "%20"))
}

impl Builder {
    /// Reads the tree under `root` and its package database.
    pub fn new(root: &Path, options: BuildOptions) -> Result<Builder> {
        let nodes = scan::scan(root)?;
        let links: HashMap<Vec<u8>, Vec<u8>> = nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Symlink)
            .map(|n| (n.path.clone(), n.target.clone()))
            .collect();
        let mut skipped_lists = Vec::new();
        let (grouping, groups, mut owner) = match dpkg::read(root, &links)? {
            Some(p) => {
                skipped_lists = p.skipped.clone();
                let owner: Vec<Option<usize>> = nodes
                    .iter()
                    .map(|n| {
                        (n.kind != NodeKind::Directory)
                            .then(|| p.owner.get(&n.path).copied())
                            .flatten()
                    })
                    .collect();
                (Grouping::Dpkg(p.info_dir), p.names, owner)
            }
            None => {
                let mut names: Vec<String> = Vec::new();
                let mut index: HashMap<String, usize> = HashMap::new();
                let owner: Vec<Option<usize>> = nodes
                    .iter()
                    .map(|n| {
                        if n.kind == NodeKind::Directory || !n.path.contains(&b'/') {
                            return None;
                        }
                        let g = directory_group(&n.path);
                        let i = *index.entry(g.clone()).or_insert_with(|| {
                            names.push(g);
                            names.len() - 1
                        });
                        Some(i)
                    })
                    .collect();
                (Grouping::Directories, names, owner)
            }
        };
        // A hardlink group stays whole, with its first member's owner.
        let mut first_owner: HashMap<(u64, u64), Option<usize>> = HashMap::new();
        for (n, o) in nodes.iter().zip(owner.iter_mut()) {
            if let Some(inode) = n.inode {
                *o = *first_owner.entry(inode).or_insert(*o);
            }
        }
        Ok(Builder {
            root: root.to_path_buf(),
            options,
            nodes,
            owner,
            groups,
            grouping,
            skipped_lists,
        })
    }

    /// Bytes per group present in the tree, and of the unowned files (`None` when every entry
    /// but directories has an owner).
    fn sizes(&self) -> (BTreeMap<String, u64>, Option<u64>) {
        let mut sizes = BTreeMap::new();
        let mut unowned = None;
        let mut inodes = std::collections::HashSet::new();
        for (n, o) in self.nodes.iter().zip(&self.owner) {
            if n.kind == NodeKind::Directory {
                continue;
            }
            let size = if n.inode.is_none_or(|i| inodes.insert(i)) {
                n.size
            } else {
                0
            };
            match o {
                Some(g) => *sizes.entry(self.groups[*g].clone()).or_insert(0) += size,
                None => *unowned.get_or_insert(0) += size,
            }
        }
        (sizes, unowned)
    }

    /// The plan for this tree: with `prior` (the previous build's plan), packages keep their
    /// layers.
    pub fn plan(&self, prior: Option<&Prior>) -> Result<ChunkPlan> {
        let (sizes, unowned) = self.sizes();
        plan::plan(&sizes, unowned, self.options.max_layers, prior)
    }

    /// Which layer each node goes to, per `plan`: for directories every layer holding something
    /// below them (an empty one: the unowned layer, else the last).
    fn layers_of(&self, plan: &ChunkPlan) -> Result<Vec<BTreeSet<usize>>> {
        let group_layer: HashMap<&str, usize> = plan
            .layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.packages.iter().map(move |p| (p.as_str(), i)))
            .collect();
        let last = plan.layers.len().saturating_sub(1);
        let unowned = plan.unowned_layer().unwrap_or(last);
        let index: HashMap<&[u8], usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.path.as_slice(), i))
            .collect();
        let mut out = vec![BTreeSet::new(); self.nodes.len()];
        for (i, (n, o)) in self.nodes.iter().zip(&self.owner).enumerate() {
            if n.kind == NodeKind::Directory {
                continue;
            }
            let layer = match o {
                Some(g) => *group_layer.get(self.groups[*g].as_str()).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "package {} is in no layer of the plan",
                        self.groups[*g]
                    ))
                })?,
                None => unowned,
            };
            out[i].insert(layer);
            with_parents(&index, &mut out, &n.path, layer);
        }
        // Directories nothing is below: the unowned layer, with their parents (so the layer
        // stands on its own: no parent directory made up by the extraction).
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.kind != NodeKind::Directory || !out[i].is_empty() {
                continue;
            }
            out[i].insert(unowned);
            with_parents(&index, &mut out, &n.path, unowned);
        }
        Ok(out)
    }

    /// The entries of layer `layer`, fed into `sink`, with a helper thread asking the kernel for
    /// the next files of the layer while this one hashes and copies (a cold disk then sees many
    /// requests at once instead of one file at a time).
    fn feed(
        &self,
        layers: &[BTreeSet<usize>],
        layer: usize,
        sink: &mut LayerSink<'_>,
    ) -> Result<()> {
        let ra = ReadAhead::new(READ_AHEAD_LEAD);
        // (A hardlink group's later members are links: nothing of theirs is read.)
        let mut inodes = std::collections::HashSet::new();
        let files = self
            .nodes
            .iter()
            .zip(layers)
            .filter(|(n, set)| n.kind == NodeKind::File && n.size > 0 && set.contains(&layer))
            .filter(move |(n, _)| n.inode.is_none_or(|i| inodes.insert(i)))
            .map(|(n, _)| (self.root.join(std::ffi::OsStr::from_bytes(&n.path)), n.size));
        std::thread::scope(|s| {
            s.spawn(|| ra.run(files));
            let _stop = StopOnDrop(&ra);
            self.feed_entries(layers, layer, sink, &ra)
        })
    }

    /// [`Builder::feed`]'s entries.
    fn feed_entries(
        &self,
        layers: &[BTreeSet<usize>],
        layer: usize,
        sink: &mut LayerSink<'_>,
        ra: &ReadAhead,
    ) -> Result<()> {
        let mut built = BuiltEntries::default();
        let mut first_of: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let clamp = |t: i64| self.options.timestamp.map_or(t, |ts| t.min(ts)).max(0);
        for (n, set) in self.nodes.iter().zip(layers) {
            if !set.contains(&layer) {
                continue;
            }
            let mut h = node_header(n, clamp(n.mtime));
            if let Some(inode) = n.inode {
                match first_of.get(&inode) {
                    Some(first) => {
                        h.kind = EntryKind::HardLink;
                        h.linkname = first.clone();
                        h.size = 0;
                    }
                    None => {
                        first_of.insert(inode, n.path.clone());
                    }
                }
            }
            let bytes = header_bytes(&h);
            let path = self.root.join(std::ffi::OsStr::from_bytes(&n.path));
            let content = if h.kind == EntryKind::Regular && h.size > 0 {
                // Copied (or reflinked), never hardlinked: the tree is yours and may change.
                // Not through a symlink: an entry replaced by one after the scan must not pull a
                // file from outside the tree into the image.
                let file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(&path)
                }
                .map_err(|e| {
                    Error::read(
                        format!("{} (did it change during the build?)", path.display()),
                        e,
                    )
                })?;
                // Kept to look again once the bytes are in: a file that grew (or shrank) while
                // the build read it would otherwise go in as a prefix of itself.
                let watch = file
                    .try_clone()
                    .map_err(|e| Error::read(path.display().to_string(), e))?;
                changed_during_build(&watch, &path, h.size, n.mtime)?;
                Some((
                    Content::Object {
                        file,
                        path: &path,
                        linkable: false,
                    },
                    watch,
                ))
            } else {
                None
            };
            let meta = EntryMeta::Header(&h);
            let raw = built.raw(&bytes, meta.content_size());
            let size = meta.content_size();
            match content {
                Some((content, watch)) => {
                    sink.entry(Entry { raw, meta, content })?;
                    changed_during_build(&watch, &path, h.size, n.mtime)?;
                }
                None => {
                    sink.entry(Entry {
                        raw,
                        meta,
                        content: Content::None,
                    })?;
                }
            }
            ra.consumed(size);
        }
        sink.trailer(&built.trailer())
    }

    /// The labels of the image config: ours, then the options'.
    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert("containers.bootc".to_string(), "1".to_string());
        if self.nodes.iter().any(|n| n.path == b"usr/lib/ostree") {
            labels.insert("ostree.bootable".to_string(), "1".to_string());
        }
        labels.extend(self.options.labels.clone());
        labels
    }

    /// Writes the image `input` (from [`Builder::image`] of the same `plan`) into `store`: every
    /// layer written from the files again, its DiffID checked against the one computed before (a
    /// file that changed in between fails the build), all or nothing. `progress` gets the
    /// import's events.
    pub fn commit(
        &self,
        plan: &ChunkPlan,
        input: &ImageInput,
        store: &Store,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<ImportReport> {
        let layers = self.layers_of(plan)?;
        let producer = RootfsLayers {
            builder: self,
            layers,
        };
        store.import_with(input, &producer, progress)
    }

    /// The image of `plan`: each layer's DiffID and length from the files (digest-only, two
    /// layers at a time), then the config and the manifest.
    pub fn image(&self, plan: &ChunkPlan, names: Vec<String>) -> Result<ImageInput> {
        let layers = self.layers_of(plan)?;
        let indices: Vec<usize> = (0..plan.layers.len()).collect();
        let digests = crate::parallel::map_in_order(&indices, 2, |&i| {
            let mut sink = LayerSink::digest_only();
            self.feed(&layers, i, &mut sink)?;
            let (summary, diff_id) = sink.finish();
            let diff_id = diff_id
                .ok_or_else(|| Error::Internal("a digest-only sink gave no digest".into()))?;
            Ok((diff_id, summary.diff_size))
        })
        .into_iter()
        .collect::<Result<Vec<(Digest, u64)>>>()?;
        let created_secs = self
            .options
            .timestamp
            .unwrap_or_else(|| self.nodes.iter().map(|n| n.mtime).max().unwrap_or(0).max(0));
        let created = storage_format::time::rfc3339_nano(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(created_secs).unwrap_or(0)),
        );
        let arch = crate::source::oci_types::host_arch();
        let mut inner = self.options.config.clone().unwrap_or_default();
        // The config file's labels, then ours and --label's over them.
        let mut labels: BTreeMap<String, serde_json::Value> = inner
            .get("Labels")
            .and_then(|l| l.as_object())
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (k, v) in self.labels() {
            labels.insert(k, v.into());
        }
        inner.insert(
            "Labels".into(),
            serde_json::to_value(labels).unwrap_or_default(),
        );
        let history: Vec<serde_json::Value> = plan
            .layers
            .iter()
            .map(|l| {
                serde_json::json!({
                    "created": created,
                    "created_by": "bootc-image build-chunked",
                    "comment": history_comment(l),
                })
            })
            .collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "created": created,
            "architecture": arch,
            "os": "linux",
            "config": inner,
            "rootfs": {
                "type": "layers",
                "diff_ids": digests.iter().map(|(d, _)| d.to_string()).collect::<Vec<_>>(),
            },
            "history": history,
        }))
        .map_err(|e| Error::Internal(format!("serializing the config: {e}")))?;
        let config_digest = Digest::of_bytes(&config);
        let layers: Vec<crate::source::oci_types::LayerDescriptor<'_>> = digests
            .iter()
            .map(|(d, size)| {
                (
                    "application/vnd.oci.image.layer.v1.tar",
                    d.clone(),
                    *size,
                    None,
                )
            })
            .collect();
        let annotations = serde_json::to_value(&self.options.annotations).ok();
        let manifest = crate::source::oci_types::manifest_bytes(
            &config_digest,
            config.len(),
            &layers,
            annotations,
        );
        Ok(ImageInput {
            manifest_digest: Digest::of_bytes(&manifest),
            manifest,
            config,
            config_digest,
            created: Some(created),
            layers: digests
                .into_iter()
                .map(|(diff_id, size)| LayerInput {
                    blob_digest: diff_id.clone(),
                    blob_size: size,
                    diff_id,
                    toc: None,
                })
                .collect(),
            names,
        })
    }
}

/// The plan of the image `name` in `store`, if it was built by us.
pub fn prior_from_store(store: &Store, name: &str) -> Result<Option<Prior>> {
    let images = store.images()?;
    let image = crate::store::lookup::find_image(&images, name)?;
    let key = format!("sha256:{}", image.id);
    let config = crate::store::copy::read_big_data(store, image, &key)?;
    let value: serde_json::Value = serde_json::from_slice(&config)
        .map_err(|e| Error::InvalidInput(format!("the config of {name} is not JSON: {e}")))?;
    Ok(Prior::from_history(&value))
}

/// The layers of a build, as the store's producer.
struct RootfsLayers<'a> {
    builder: &'a Builder,
    layers: Vec<BTreeSet<usize>>,
}

impl LayerProducer for RootfsLayers<'_> {
    fn sink_hashes(&self, _index: usize) -> bool {
        true
    }

    fn produce(
        &self,
        index: usize,
        _layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced> {
        self.builder.feed(&self.layers, index, sink)?;
        progress(LayerBytes {
            written: sink.size(),
            read: sink.size(),
        });
        Ok(Produced {
            diff_id: None,
            compression: Compression::None,
            toc: None,
            partial: false,
        })
    }
}
