//! The booted (or any stored) OSTree host image as a source: its layers are synthesized from the
//! repository in ostree-ext's export layout — the ostree commit layer, the chunk layers, the derived
//! layers — straight into the store, with content objects hardlinked from a bare repository.

pub mod checksum;
pub mod gvariant;
pub mod imgref;
pub mod meta_objects;
pub mod objects;
pub mod tar_layout;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ostree::gio;
use ostree::glib;
use serde_json::{Value, json};
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
use tar_layout::{ChunkContent, LayoutWriter, commit_objects, commit_root, layer_commits_objects};

/// The config label naming the last layer that belongs to the ostree commit.
const DIFFID_LABEL: &str = "ostree.final-diffid";
/// The annotation of component layers.
const CONTENT_ANNOTATION: &str = "ostree.components";

fn gerr(what: &str, e: glib::Error) -> Error {
    Error::InvalidInput(format!("{what}: {e}"))
}

/// One layer of the export.
#[derive(Debug, Clone)]
enum Plan {
    /// The ostree layer: the commit's structure plus the objects no chunk took.
    Final(ChunkContent),
    /// A component (chunk) layer.
    Chunk(ChunkContent),
    /// A derived layer, exported as a plain tar by `ostree export`.
    Derived(String),
}

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

fn open_repo(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE).map_err(|e| {
        gerr(
            &format!("opening the OSTree repository {}", path.display()),
            e,
        )
    })?;
    Ok(repo)
}

/// The image reference of the booted deployment (or, on a sysroot that is not booted, the default one).
pub fn deployed_reference(sysroot: &Path) -> Result<String> {
    let sr = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    sr.load(gio::Cancellable::NONE)
        .map_err(|e| gerr(&format!("loading the sysroot {}", sysroot.display()), e))?;
    let dep = sr
        .booted_deployment()
        .or_else(|| sr.deployments().into_iter().next())
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no deployment in the sysroot {}: name an image with --source",
                sysroot.display()
            ))
        })?;
    let origin = dep
        .origin()
        .ok_or_else(|| Error::NotFound(format!("deployment {} has no origin", dep.csum())))?;
    let r = origin.string("origin", "container-image-reference").map_err(|_| {
        Error::NotFound(format!(
            "deployment {} was not deployed from a container image (no container-image-reference in its origin)",
            dep.csum()
        ))
    })?;
    Ok(r.to_string())
}

fn lookup_str(dict: &glib::VariantDict, key: &str) -> Option<String> {
    dict.lookup_value(key, None)
        .and_then(|v| v.str().map(str::to_owned))
}

/// The DiffID and size of a derived layer: `ostree export` of its commit, hashed.
fn derived_digest(repo_path: &Path, layer_ref: &str) -> Result<(Digest, u64)> {
    let mut child = export_command(repo_path, layer_ref)
        .spawn()
        .map_err(|e| Error::external("ostree export", e))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| Error::Internal("ostree export has no stdout".into()))?;
    let (mut hashing, state) = crate::layer::decompress::HashingReader::new(&mut out);
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(|e| Error::read("ostree export", e))?;
    drop(hashing);
    let status = child
        .wait()
        .map_err(|e| Error::external("ostree export", e))?;
    if !status.success() {
        return Err(Error::external(
            format!("ostree export {layer_ref}"),
            status,
        ));
    }
    let r = state
        .lock()
        .map_err(|_| Error::Internal("hash state poisoned".into()))?
        .result();
    Ok(r)
}

fn export_command(repo_path: &Path, layer_ref: &str) -> Command {
    let mut c = Command::new("ostree");
    c.arg(format!("--repo={}", repo_path.display()))
        .args(["export", layer_ref])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    c
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
        let image_ref = imgref::image_ref(&imgref);
        let merge = repo
            .resolve_rev(&image_ref, true)
            .map_err(|e| gerr(&format!("resolving {image_ref}"), e))?
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no host image {imgref} in {}: `bootc-image list --type host` shows the stored ones",
                    repo_path.display()
                ))
            })?;
        let (commit_v, _) = repo
            .load_commit(&merge)
            .map_err(|e| gerr(&format!("loading commit {merge}"), e))?;
        let meta = glib::VariantDict::new(Some(&commit_v.child_value(0)));
        let not_image = |k: &str| {
            Error::InvalidInput(format!(
                "commit {merge} ({imgref}) is not a container image: it has no {k} metadata"
            ))
        };
        let manifest_text =
            lookup_str(&meta, "ostree.manifest").ok_or_else(|| not_image("ostree.manifest"))?;
        let config_text = lookup_str(&meta, "ostree.container.image-config")
            .ok_or_else(|| not_image("ostree.container.image-config"))?;
        let manifest: Value = serde_json::from_str(&manifest_text).map_err(|e| {
            Error::InvalidInput(format!(
                "the manifest stored for {imgref} is not valid JSON: {e}"
            ))
        })?;
        let mut config: Value = serde_json::from_str(&config_text).map_err(|e| {
            Error::InvalidInput(format!(
                "the config stored for {imgref} is not valid JSON: {e}"
            ))
        })?;
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
        // ostree-ext's split: the first layer is the ostree commit; up to the final-diffid layer come the
        // component layers; after it, derived layers.
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
        let base_ref = imgref::layer_ref(&digests[0]);
        let base_commit = repo
            .require_rev(&base_ref)
            .map_err(|e| {
                gerr(
                    &format!("the ostree layer of {imgref} ({base_ref}) is missing"),
                    e,
                )
            })?
            .to_string();
        // Rebuild the object → chunk assignment from the layer commits, as ostree-ext does.
        let (root_tree, root_meta) = commit_root(&repo, &base_commit)?;
        let meta = MetaObjects::load(&repo, &repo_path, &root_tree, &root_meta)?;
        let mut remainder = commit_objects(&repo, &repo_path, &meta, &base_commit)?;
        let mut plan = Vec::new();
        let mut chunks = Vec::new();
        let layer_refs: Vec<String> = components.iter().map(|d| imgref::layer_ref(d)).collect();
        for names in layer_commits_objects(&repo, &repo_path, &layer_refs)? {
            let mut chunk = ChunkContent::new();
            for name in names {
                if let Some(paths) = remainder.remove(&name) {
                    chunk.insert(name, paths);
                }
            }
            chunks.push(Plan::Chunk(chunk));
        }
        plan.push(Plan::Final(remainder));
        plan.extend(chunks);
        plan.extend(derived.iter().map(|d| Plan::Derived(imgref::layer_ref(d))));

        if verify {
            // Every content object must match its checksum: they are hardlinked as they are.
            // Layer by layer: only one layer's object metadata is held at a time.
            for p in &plan {
                if let Plan::Final(c) | Plan::Chunk(c) = p {
                    checksum::verify_objects(&repo, &repo_path, c.keys())?;
                }
            }
        }
        // First pass: each layer's DiffID, and its length where that takes no more work (the fast path
        // learns the ostree layers' lengths by writing them: `complete_image` gives the manifest).
        // Computed from content (`verify`), two layers at a time, each thread with its own repository
        // handle (libostree's are not shared across threads).
        let from_content: Vec<Option<Result<(Digest, u64)>>> = if verify {
            crate::parallel::map_in_order(&plan, 2, |p| match p {
                Plan::Final(_) | Plan::Chunk(_) => Some(
                    open_repo(&repo_path)
                        .and_then(|r| content_diff_id(&r, &repo_path, &meta, &base_commit, p)),
                ),
                Plan::Derived(_) => None,
            })
        } else {
            Vec::new()
        };
        let mut from_content = from_content.into_iter();
        let mut layer_inputs = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            let computed = from_content.next().flatten();
            let (diff_id, size) = match (p, computed) {
                (Plan::Final(_) | Plan::Chunk(_), Some(r)) => r?,
                // The config's DiffID; the length is learnt while writing (0 until then). Without a
                // usable DiffID there, from content.
                (Plan::Final(_) | Plan::Chunk(_), None) => {
                    match diff_ids.get(i).and_then(|d| Digest::parse(d).ok()) {
                        Some(d) => (d, 0),
                        None => content_diff_id(&repo, &repo_path, &meta, &base_commit, p)?,
                    }
                }
                // Derived layers are re-exported by `ostree export`, with new mtimes: always hashed.
                (Plan::Derived(r), _) => derived_digest(&repo_path, r)?,
            };
            layer_inputs.push(LayerInput {
                blob_digest: diff_id.clone(),
                blob_size: size,
                diff_id,
            });
        }

        // The image upstream's export writes: manifest and config cloned, layers replaced (uncompressed,
        // as for a containers-storage destination), DiffIDs set (not appended), history per layer.
        let created = now_secs();
        let mut new_layers = Vec::new();
        let mut history = Vec::new();
        let old_history = config["history"].as_array().cloned().unwrap_or_default();
        for (i, (p, l)) in plan.iter().zip(&layer_inputs).enumerate() {
            let mut desc = json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": l.diff_id.to_string(),
                "size": l.blob_size,
            });
            let description = match p {
                Plan::Final(_) => String::new(),
                Plan::Chunk(_) => {
                    desc["annotations"] = json!({ CONTENT_ANNOTATION: "" });
                    String::new()
                }
                Plan::Derived(_) => {
                    // Upstream copies annotations and history comments by the derived layer's own index.
                    let k = i - (1 + components.len());
                    if let Some(a) = layers.get(k).and_then(|l| l.get("annotations")) {
                        desc["annotations"] = a.clone();
                    }
                    old_history
                        .get(k)
                        .and_then(|h| h["comment"].as_str())
                        .unwrap_or_default()
                        .to_string()
                }
            };
            new_layers.push(desc);
            history.push(json!({ "created": created, "created_by": description }));
        }
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": layer_inputs.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
        });
        config["history"] = Value::Array(history);
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let config_digest = Digest::of_bytes(&config_bytes);
        let mut manifest_base = manifest.clone();
        manifest_base["config"] = json!({
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config_bytes.len(),
        });
        if manifest_base.get("mediaType").is_none() {
            manifest_base["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        }
        let mut input = ImageInput {
            manifest_digest: Digest::of_bytes(b""),
            manifest: Vec::new(),
            config: config_bytes,
            config_digest,
            created: config["created"].as_str().map(str::to_owned),
            layers: layer_inputs,
            names,
        };
        set_manifest(&mut input, &manifest_base, &new_layers)?;
        Ok(HostImage {
            repo_path,
            imgref,
            base_commit,
            plan,
            meta,
            manifest_base,
            layer_descs: new_layers,
            input,
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
                content_diff_id(&repo, &self.repo_path, &self.meta, &self.base_commit, p)
                    .map(|(d, _)| d)
            })
            .collect()
    }
}

/// The DiffID and length of an ostree layer, from its content: the layer's tar stream, hashed.
fn content_diff_id(
    repo: &ostree::Repo,
    repo_path: &Path,
    meta: &MetaObjects,
    base_commit: &str,
    plan: &Plan,
) -> Result<(Digest, u64)> {
    let chunk = match plan {
        Plan::Final(c) | Plan::Chunk(c) => c,
        Plan::Derived(_) => return Err(Error::Internal("derived layer planned as ostree".into())),
    };
    let objects = ObjectInfos::load(repo, repo_path, chunk.keys())?;
    let mut sink = LayerSink::digest_only();
    let mut w = LayoutWriter::new(repo, repo_path, &objects, meta, base_commit)?;
    match plan {
        Plan::Final(rem) => {
            w.write_commit(&mut sink, true)?;
            w.write_chunk(&mut sink, rem)?;
        }
        Plan::Chunk(c) => {
            w.write_repo_structure(&mut sink)?;
            w.write_chunk(&mut sink, c)?;
        }
        Plan::Derived(_) => return Err(Error::Internal("derived layer planned as ostree".into())),
    }
    w.finish(&mut sink)?;
    let (summary, diff_id) = sink.finish();
    let diff_id =
        diff_id.ok_or_else(|| Error::Internal("a digest sink without a digest".into()))?;
    Ok((diff_id, summary.diff_size))
}

/// Sets the manifest of `input` from `base` and `descs` with the layer sizes of `input`.
fn set_manifest(input: &mut ImageInput, base: &Value, descs: &[Value]) -> Result<()> {
    let mut manifest = base.clone();
    manifest["layers"] = Value::Array(
        descs
            .iter()
            .zip(&input.layers)
            .map(|(d, l)| {
                let mut d = d.clone();
                d["size"] = json!(l.blob_size);
                d
            })
            .collect(),
    );
    input.manifest = serde_json::to_vec(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    input.manifest_digest = Digest::of_bytes(&input.manifest);
    Ok(())
}

fn now_secs() -> String {
    let t = storage_format::now_rfc3339_nano();
    // RFC 3339 with whole seconds, as ocidir writes history.
    match t.split_once('.') {
        Some((s, _)) => format!("{s}Z"),
        None => t,
    }
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
        let img = self.image;
        let plan = img
            .plan
            .get(index)
            .ok_or_else(|| Error::Internal(format!("no layer {index}")))?;
        if let Plan::Derived(r) = plan {
            let mut child = export_command(&img.repo_path, r)
                .spawn()
                .map_err(|e| Error::external("ostree export", e))?;
            let out = child
                .stdout
                .take()
                .ok_or_else(|| Error::Internal("ostree export has no stdout".into()))?;
            let (hashing, state) = crate::layer::decompress::HashingReader::new(out);
            feed_tar(hashing, sink, |written| {
                progress(LayerBytes {
                    written,
                    read: written,
                })
            })?;
            let status = child
                .wait()
                .map_err(|e| Error::external("ostree export", e))?;
            if !status.success() {
                return Err(Error::external(format!("ostree export {r}"), status));
            }
            let (diff_id, _) = state
                .lock()
                .map_err(|_| Error::Internal("hash state poisoned".into()))?
                .result();
            return Ok(Produced {
                diff_id: Some(diff_id),
                compression: Compression::None,
            });
        }
        // glib objects are not shared across threads: each layer opens the repository itself.
        let repo = open_repo(&img.repo_path)?;
        let chunk = match plan {
            Plan::Final(c) | Plan::Chunk(c) => c,
            Plan::Derived(_) => {
                return Err(Error::Internal("derived layer planned as ostree".into()));
            }
        };
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
            if let Plan::Final(_) = plan {
                w.write_commit(sink, true)?;
            } else {
                w.write_repo_structure(sink)?;
            }
            w.write_chunk(sink, chunk)?;
            w.finish(sink)
        })?;
        use std::sync::atomic::Ordering;
        self.counts.linked.fetch_add(sink.linked, Ordering::Relaxed);
        self.counts
            .written
            .fetch_add(sink.written, Ordering::Relaxed);
        progress(LayerBytes {
            written: sink.size(),
            read: sink.size(),
        });
        Ok(Produced {
            diff_id: None,
            compression: Compression::None,
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
