//! The booted (or any stored) OSTree host image as a source: its layers are synthesized from the
//! repository in ostree-ext's export layout — the ostree commit layer, the chunk layers, the derived
//! layers — straight into the store, with content objects hardlinked from a bare repository.

pub mod checksum;
pub mod gvariant;
pub mod imgref;
pub mod meta_objects;
pub mod objects;
pub mod plan;
pub mod repo;
pub(crate) mod tar_layout;
pub(crate) mod upstream_image;

use std::path::{Path, PathBuf};

use serde_json::Value;
use storage_format::Digest;

use crate::error::{Error, Result};
use crate::layer::decompress::Compression;
use crate::layer::read_ahead::{ReadAhead, StopOnDrop};
use crate::layer::sink::LayerSink;
use crate::layer::tar_stream::feed_tar;
use crate::store::image_input::{ImageInput, LayerBytes, LayerInput};
use crate::store::producer::{LayerProducer, Produced};
use meta_objects::MetaObjects;
use objects::ObjectInfos;
use plan::{LayerSplit, Plan};
pub use repo::deployed_reference;
use repo::{ChunkContent, commit_root, derived_digest, open_repo};
use tar_layout::LayoutWriter;
use upstream_image::set_manifest;

/// A host image opened for copying.
#[derive(Debug)]
pub struct HostImage {
    repo_path: PathBuf,
    /// The reference it is stored under (`docker://…`).
    pub imgref: String,
    base_commit: String,
    plan: Vec<Plan>,
    meta: MetaObjects,
    /// The manifest without its layers, and the layer descriptors (sizes set by `set_manifest`).
    manifest_base: Value,
    layer_descs: Vec<Value>,
    /// What to import (manifest, config, layers with their DiffIDs).
    pub input: ImageInput,
}

impl HostImage {
    /// Opens the image `imgref` (any form `image_reference` accepts; `None` = the deployed one) in the
    /// repository of `sysroot`, plans its layers and finds their DiffIDs.
    ///
    /// With `verify` false (the fast path), the ostree layers' DiffIDs are taken from the image's own
    /// config — ostree-ext's layout is deterministic, so its export gives the DiffIDs the image was
    /// built with — and nothing is read beyond the commit's directory objects; the writing pass
    /// checks every DiffID (a mismatch rolls the copy back) and learns each layer's length, which
    /// [`HostLayers`]' `complete_image` puts into the manifest. With `verify` true, every content
    /// object is checked against its checksum and every DiffID computed from content first.
    pub fn open(
        sysroot: &Path,
        imgref: Option<&str>,
        names: Vec<String>,
        verify: bool,
    ) -> Result<HostImage> {
        let given = match imgref {
            Some(r) => r.to_string(),
            None => deployed_reference(sysroot)?,
        };
        let imgref = imgref::image_reference(&given)?;
        let repo_path = sysroot.join("ostree/repo");
        let repo = open_repo(&repo_path)?;
        let stored = repo::stored_image(&repo, &repo_path, &imgref)?;
        let split = plan::split_layers(&stored.manifest, &stored.config, &imgref)?;
        let base_ref = imgref::layer_ref(&split.digests[0]);
        let base_commit = repo
            .require_rev(&base_ref)
            .map_err(|e| {
                repo::gerr(
                    &format!("the ostree layer of {imgref} ({base_ref}) is missing"),
                    e,
                )
            })?
            .to_string();
        // Rebuild the object → chunk assignment from the layer commits, as ostree-ext does.
        let (root_tree, root_meta) = commit_root(&repo, &base_commit)?;
        let meta = MetaObjects::load(&repo, &repo_path, &root_tree, &root_meta)?;
        let plan = plan::plan_layers(&repo, &repo_path, &meta, &base_commit, &split)?;
        if verify {
            // Every content object must match its checksum: they are hardlinked as they are.
            // Layer by layer: only one layer's object metadata is held at a time.
            for p in &plan {
                if let Plan::Final(c) | Plan::Chunk(c) = p {
                    checksum::verify_objects(&repo, &repo_path, c.keys())?;
                }
            }
        }
        let source = Repository {
            repo: &repo,
            path: &repo_path,
            meta: &meta,
            base_commit: &base_commit,
        };
        let layers = layer_inputs(&source, &plan, &split, verify)?;
        let exported = upstream_image::exported_image(
            &stored.manifest,
            stored.config,
            &plan,
            &split,
            layers,
            names,
        )?;
        Ok(HostImage {
            repo_path,
            imgref,
            base_commit,
            plan,
            meta,
            manifest_base: exported.manifest_base,
            layer_descs: exported.layer_descs,
            input: exported.input,
        })
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.plan.len()
    }

    /// The DiffIDs of the ostree layers (the commit layer, then the chunks) computed from content,
    /// as `open` with `verify` does; derived layers are left out.
    pub fn ostree_diff_ids_from_content(&self) -> Result<Vec<Digest>> {
        let repo = open_repo(&self.repo_path)?;
        self.plan
            .iter()
            .filter(|p| !matches!(p, Plan::Derived(_)))
            .map(|p| {
                let src = Repository {
                    repo: &repo,
                    path: &self.repo_path,
                    meta: &self.meta,
                    base_commit: &self.base_commit,
                };
                content_diff_id(&src, p).map(|(d, _)| d)
            })
            .collect()
    }
}

/// The repository a host image's layers are read from.
struct Repository<'a> {
    repo: &'a ostree::Repo,
    path: &'a Path,
    meta: &'a MetaObjects,
    base_commit: &'a str,
}

/// Each layer's DiffID, and its length where that takes no more work (the fast path learns the
/// ostree layers' lengths by writing them: `complete_image` gives the manifest). With `verify`,
/// computed from content, two layers at a time, each thread with its own repository handle
/// (libostree's are not shared across threads); else the config's DiffIDs.
fn layer_inputs(
    src: &Repository<'_>,
    plan: &[Plan],
    split: &LayerSplit,
    verify: bool,
) -> Result<Vec<LayerInput>> {
    let from_content: Vec<Option<Result<(Digest, u64)>>> = if verify {
        crate::parallel::map_in_order(plan, 2, |p| match p {
            Plan::Final(_) | Plan::Chunk(_) => Some(open_repo(src.path).and_then(|r| {
                content_diff_id(
                    &Repository {
                        repo: &r,
                        path: src.path,
                        meta: src.meta,
                        base_commit: src.base_commit,
                    },
                    p,
                )
            })),
            Plan::Derived(_) => None,
        })
    } else {
        Vec::new()
    };
    let mut from_content = from_content.into_iter();
    let mut out = Vec::new();
    for (i, p) in plan.iter().enumerate() {
        let computed = from_content.next().flatten();
        let (diff_id, size) = match (p, computed) {
            (Plan::Final(_) | Plan::Chunk(_), Some(r)) => r?,
            // The config's DiffID; the length is learnt while writing (0 until then). Without a
            // usable DiffID there, from content.
            (Plan::Final(_) | Plan::Chunk(_), None) => {
                match split.diff_ids.get(i).and_then(|d| Digest::parse(d).ok()) {
                    Some(d) => (d, 0),
                    None => content_diff_id(src, p)?,
                }
            }
            // Derived layers are re-exported by `ostree export`, with new mtimes: always hashed.
            (Plan::Derived(r), _) => derived_digest(src.path, r)?,
        };
        out.push(LayerInput {
            blob_digest: diff_id.clone(),
            blob_size: size,
            diff_id,
            toc: None,
        });
    }
    Ok(out)
}

/// Feeds the ostree layer `chunk` (`final_layer`: with the commit's structure) into `sink`.
fn write_ostree_layer(
    w: &mut LayoutWriter<'_>,
    sink: &mut LayerSink<'_>,
    chunk: &ChunkContent,
    final_layer: bool,
) -> Result<()> {
    if final_layer {
        w.write_commit(sink, true)?;
    } else {
        w.write_repo_structure(sink)?;
    }
    w.write_chunk(sink, chunk)?;
    w.finish(sink)
}

/// The ostree layer `plan` as planned, its chunk and whether it is the final (commit) layer.
fn ostree_chunk(plan: &Plan) -> Result<(&ChunkContent, bool)> {
    match plan {
        Plan::Final(c) => Ok((c, true)),
        Plan::Chunk(c) => Ok((c, false)),
        Plan::Derived(_) => Err(Error::Internal("derived layer planned as ostree".into())),
    }
}

/// The DiffID and length of an ostree layer, from its content: the layer's tar stream, hashed.
fn content_diff_id(src: &Repository<'_>, plan: &Plan) -> Result<(Digest, u64)> {
    let (chunk, final_layer) = ostree_chunk(plan)?;
    let objects = ObjectInfos::load(src.repo, src.path, chunk.keys())?;
    let mut sink = LayerSink::digest_only();
    let mut w = LayoutWriter::new(src.repo, src.path, &objects, src.meta, src.base_commit)?;
    write_ostree_layer(&mut w, &mut sink, chunk, final_layer)?;
    let (summary, diff_id) = sink.finish();
    let diff_id =
        diff_id.ok_or_else(|| Error::Internal("a digest sink without a digest".into()))?;
    Ok((diff_id, summary.diff_size))
}

/// How far (in bytes of object content) the read-ahead helper may run ahead of the writer.
const READ_AHEAD_LEAD: u64 = 32 << 20;

/// Counts of how content reached the tree.
#[derive(Debug, Default)]
pub struct LinkCounts {
    /// Files hardlinked from the repository.
    pub linked: std::sync::atomic::AtomicU64,
    /// Files whose bytes were written.
    pub written: std::sync::atomic::AtomicU64,
}

/// Writes a [`HostImage`]'s layers (the second pass).
#[derive(Debug)]
pub struct HostLayers<'a> {
    /// The image.
    pub image: &'a HostImage,
    /// How files got there.
    pub counts: LinkCounts,
}

impl LayerProducer for HostLayers<'_> {
    /// `ostree export` output is hashed as it is read; synthesized layers by the sink.
    fn sink_hashes(&self, index: usize) -> bool {
        !matches!(self.image.plan.get(index), Some(Plan::Derived(_)))
    }

    fn produce(
        &self,
        index: usize,
        _layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Produced> {
        let plan = self
            .image
            .plan
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no layer {index}")))?;
        let diff_id = match plan {
            Plan::Derived(r) => Some(self.produce_derived(r, sink, progress)?),
            _ => {
                self.produce_ostree(plan, sink)?;
                progress(LayerBytes {
                    written: sink.size(),
                    read: sink.size(),
                });
                None
            }
        };
        Ok(Produced {
            diff_id,
            compression: Compression::None,
            toc: None,
            partial: false,
        })
    }

    /// The manifest with the layers' real lengths (the fast path only estimated them).
    fn complete_image(&self, input: &ImageInput, diff_sizes: &[u64]) -> Result<Option<ImageInput>> {
        if diff_sizes.len() != input.layers.len() {
            return Err(Error::Internal("layer count changed".into()));
        }
        let mut done = input.clone();
        for (l, &size) in done.layers.iter_mut().zip(diff_sizes) {
            l.blob_size = size;
        }
        set_manifest(
            &mut done,
            &self.image.manifest_base,
            &self.image.layer_descs,
        )?;
        Ok(Some(done))
    }
}

impl HostLayers<'_> {
    /// A derived layer: `ostree export` of its commit, hashed as it is read.
    fn produce_derived(
        &self,
        layer_ref: &str,
        sink: &mut LayerSink<'_>,
        progress: &dyn Fn(LayerBytes),
    ) -> Result<Digest> {
        repo::ostree_export(&self.image.repo_path, layer_ref, |out| {
            let (hashing, state) = crate::layer::decompress::HashingReader::new(out);
            let hashing = std::io::BufReader::with_capacity(256 * 1024, hashing);
            feed_tar(hashing, sink, |written| {
                progress(LayerBytes {
                    written,
                    read: written,
                })
            })?;
            let (diff_id, _) = state
                .lock()
                .map_err(|_| Error::Internal("hash state poisoned".into()))?
                .result();
            Ok(diff_id)
        })
    }

    /// An ostree layer, synthesized from the repository (the sink computes its DiffID).
    fn produce_ostree(&self, plan: &Plan, sink: &mut LayerSink<'_>) -> Result<()> {
        let img = self.image;
        // glib objects are not shared across threads: each layer opens the repository itself.
        let repo = open_repo(&img.repo_path)?;
        let (chunk, final_layer) = ostree_chunk(plan)?;
        // Object files are read in checksum order: a helper asks the kernel for the next ones while
        // this thread hashes and links.
        let ra = ReadAhead::new(READ_AHEAD_LEAD);
        // Each layer reads its own objects' metadata (in parallel with the other writer).
        let objects = &ObjectInfos::load(&repo, &img.repo_path, chunk.keys())?;
        let files = chunk.keys().filter_map(|csum| {
            let info = objects.get(csum).ok()?;
            info.symlink.is_none().then(|| {
                (
                    objects::object_path(&img.repo_path, csum, "file"),
                    info.size,
                )
            })
        });
        std::thread::scope(|s| -> Result<()> {
            if objects.bare() {
                s.spawn(|| ra.run(files));
            }
            let _stop = StopOnDrop(&ra);
            let mut w =
                LayoutWriter::new(&repo, &img.repo_path, objects, &img.meta, &img.base_commit)?
                    .with_read_ahead(&ra);
            write_ostree_layer(&mut w, sink, chunk, final_layer)
        })?;
        use std::sync::atomic::Ordering;
        self.counts.linked.fetch_add(sink.linked, Ordering::Relaxed);
        self.counts
            .written
            .fetch_add(sink.written, Ordering::Relaxed);
        Ok(())
    }
}
