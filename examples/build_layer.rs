//! Builds a one-layer image from a directory of your own files straight into a store: no tar on
//! disk, nothing compressed. Each file becomes an entry (header bytes built with the `tar` crate,
//! content read from the file) fed to the library's `LayerSink` — once digest-only for the DiffID
//! the config must name, then into the store's tree and tar-split.
//!
//! ```sh
//! cargo run --example build_layer -- ./rootfs /var/tmp/store/root /run/store localhost/mine:1
//! podman --root /var/tmp/store/root --runroot /run/store run --rm localhost/mine:1 cat /hello
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use bootc_image::Digest;
use bootc_image::layer::decompress::Compression;
use bootc_image::layer::entry::{BuiltEntries, Content, Entry, EntryMeta};
use bootc_image::layer::sink::LayerSink;
use bootc_image::layer::tar_stream::parse_built_header;
use bootc_image::store::image_input::{ImageInput, LayerBytes, LayerInput};
use bootc_image::store::producer::{LayerProducer, Produced};
use bootc_image::store::{Store, StoreConfig};

/// The files of a directory, in a fixed order (sorted), as (path in the layer, path on disk).
fn walk(root: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<Vec<_>, _>>()?;
        names.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in names {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type()?.is_dir() {
                subdirs.push((format!("{name}/"), e.path()));
            }
            out.push((name, e.path()));
        }
        stack.extend(subdirs.into_iter().rev());
    }
    out.sort();
    Ok(out)
}

/// A layer of the files under `root`.
struct DirLayer {
    root: PathBuf,
    files: Vec<(String, PathBuf)>,
}

impl DirLayer {
    /// Feeds every file as an entry into `sink`, then the end of the stream.
    fn feed(&self, sink: &mut LayerSink<'_>) -> bootc_image::Result<()> {
        let io = |what: &Path, e: std::io::Error| bootc_image::Error::io("reading", what, e);
        let mut built = BuiltEntries::default();
        let mut headers = tar::Builder::new(Vec::new());
        for (name, path) in &self.files {
            let md = std::fs::symlink_metadata(path).map_err(|e| io(path, e))?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
            h.set_uid(u64::from(md.uid()));
            h.set_gid(u64::from(md.gid()));
            // The header bytes tar-rs writes (GNU long-name records included), without content.
            headers.get_mut().clear();
            let appended = if md.file_type().is_symlink() {
                let target = std::fs::read_link(path).map_err(|e| io(path, e))?;
                h.set_size(0);
                headers.append_link(&mut h, name, &target)
            } else {
                headers.append_data(&mut h, name, std::io::empty())
            };
            appended.map_err(|e| io(path, e))?;
            let header = std::mem::take(headers.get_mut());
            let parsed = parse_built_header(&header)?;
            let meta = EntryMeta::Header(&parsed);
            let content = if md.file_type().is_file() && md.len() > 0 {
                // Copied, never hardlinked: the directory is yours and may change later.
                Content::Object {
                    file: std::fs::File::open(path).map_err(|e| io(path, e))?,
                    path,
                    linkable: false,
                }
            } else {
                Content::None
            };
            let raw = built.raw(&header, meta.content_size());
            sink.entry(Entry { raw, meta, content })?;
        }
        sink.trailer(&built.trailer())
    }
}

impl LayerProducer for DirLayer {
    fn sink_hashes(&self, _index: usize) -> bool {
        true
    }

    fn produce(
        &self,
        _index: usize,
        _layer: &LayerInput,
        sink: &mut LayerSink<'_>,
        _progress: &dyn Fn(LayerBytes),
    ) -> bootc_image::Result<Produced> {
        self.feed(sink)?;
        Ok(Produced {
            diff_id: None,
            compression: Compression::None,
            toc: None,
            partial: false,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, root, runroot, name] = args.as_slice() else {
        anyhow::bail!("usage: build_layer DIR ROOT RUNROOT NAME");
    };
    let layer = DirLayer {
        root: PathBuf::from(dir),
        files: walk(Path::new(dir))?,
    };
    // 1. The DiffID and length of the layer's tar stream, from the files (nothing written).
    let mut digest = LayerSink::digest_only();
    layer.feed(&mut digest)?;
    let (summary, diff_id) = digest.finish();
    let diff_id = diff_id.context("a digest-only sink gives a digest")?;
    // 2. The image config and manifest naming that layer (uncompressed, as in a store).
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created_by": format!("build_layer {}", layer.root.display())}],
    }))?;
    let config_digest = Digest::of_bytes(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": diff_id.to_string(),
            "size": summary.diff_size,
        }],
    }))?;
    let input = ImageInput {
        manifest_digest: Digest::of_bytes(&manifest),
        manifest,
        config,
        config_digest,
        created: None,
        layers: vec![LayerInput {
            blob_digest: diff_id.clone(),
            blob_size: summary.diff_size,
            diff_id,
            toc: None,
        }],
        names: vec![bootc_image::reference::normalize(name)?],
    };
    // 3. Into the store: the same entries again, now into the layer's tree and tar-split (the
    //    sink checks the DiffID), then the image, all or nothing.
    let config =
        StoreConfig::resolve(Some(root.as_ref()), Some(runroot.as_ref()), Some("overlay"))?;
    let store = Store::open(config)?;
    let report = store.import_with(&input, &layer, &|_| {})?;
    println!("{} {}", report.image_id, report.manifest_digest);
    Ok(())
}
