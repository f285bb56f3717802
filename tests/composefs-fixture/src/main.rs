//! `composefs-fixture`: composefs repositories for bootc-image's tests and benchmarks.
//!
//! ```text
//! composefs-fixture import oci:DIR:TAG REPO TAG     → prints the manifest digest
//! composefs-fixture erofs-id REPO MANIFEST_DIGEST   → prints the image's EROFS id (hex)
//! composefs-fixture export-oci REPO TAG DIR         → upstream's export: layers as tars into DIR
//! composefs-fixture import-cstor STORE ID REPO TAG  → composefs-storage's reader (cstor) imports
//!                                                     image ID of the containers-storage STORE
//! ```

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use composefs::fsverity::{Algorithm, FsVerityHashValue, Sha512HashValue};
use composefs::repository::{Repository, RepositoryConfig};
use composefs_oci::oci_image::OciImage;
use sha2::{Digest as _, Sha256};

/// A new repository at `repo` (SHA-512, fs-verity off, as bootc's backend on ext4) and a runtime
/// for the pulls.
fn new_repo(repo: &Path) -> Result<(Arc<Repository<Sha512HashValue>>, tokio::runtime::Runtime)> {
    let config = RepositoryConfig::new(Algorithm::SHA512).set_insecure();
    let (repository, _) = Repository::<Sha512HashValue>::init_path(rustix::fs::CWD, repo, config)
        .with_context(|| format!("creating the repository {}", repo.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok((Arc::new(repository), rt))
}

/// Imports `image` (`oci:DIR:TAG`) into a new repository at `repo` (SHA-512, fs-verity off, as
/// bootc's backend on ext4), tagged `tag`; returns the manifest digest.
fn import(image: &str, repo: &Path, tag: &str) -> Result<String> {
    let (repository, rt) = new_repo(repo)?;
    let pulled = rt
        .block_on(composefs_oci::pull(
            &repository,
            image,
            Some(tag),
            composefs_oci::PullOptions::default(),
        ))
        .with_context(|| format!("importing {image}"))?;
    Ok(pulled.manifest_digest.to_string())
}

/// Imports the image `id` of the containers-storage store at `store` into a new repository at
/// `repo` with composefs-storage's native reader (what bootc's unified composefs pull uses);
/// returns the manifest digest.
fn import_cstor(store: &Path, id: &str, repo: &Path, tag: &str) -> Result<String> {
    let (repository, rt) = new_repo(repo)?;
    let opts = composefs_oci::PullOptions {
        local_fetch: composefs_oci::LocalFetchOpt::IfPossible,
        storage_root: Some(store),
        ..Default::default()
    };
    let pulled = rt
        .block_on(composefs_oci::pull(
            &repository,
            &format!("containers-storage:{id}"),
            Some(tag),
            opts,
        ))
        .with_context(|| format!("importing {id} from {}", store.display()))?;
    Ok(pulled.manifest_digest.to_string())
}

/// The EROFS image id the import linked to the image's config.
fn erofs_id(repo: &Path, digest: &str) -> Result<String> {
    let repo = Repository::<Sha512HashValue>::open_path(rustix::fs::CWD, repo)?;
    let image = OciImage::open(&repo, &digest.parse()?, None)?;
    image
        .image_ref_v1()
        .or(image.image_ref_v2())
        .map(FsVerityHashValue::to_hex)
        .ok_or_else(|| anyhow!("no EROFS image linked to {digest}"))
}

/// A writer that hashes and counts what it writes.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sha.update(&b[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `bytes` as a blob of the layout `dir`; returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> Result<String> {
    let hex = hex::encode(Sha256::digest(bytes));
    fs::write(dir.join("blobs/sha256").join(&hex), bytes)?;
    Ok(format!("sha256:{hex}"))
}

/// Upstream bootc's first half of `copy-to-storage` on composefs (`export_repo_to_image`): the
/// image's layers written out of the repository as uncompressed tars into an OCI layout, with its
/// config and a new manifest.
fn export_oci(repo: &Path, tag: &str, dir: &Path) -> Result<()> {
    let repo = Repository::<Sha512HashValue>::open_path(rustix::fs::CWD, repo)?;
    let image = OciImage::open_ref(&repo, tag)?;
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    let mut layers = Vec::new();
    for diff_id in image.layer_diff_ids() {
        let verity = image
            .layer_verity(diff_id)
            .ok_or_else(|| anyhow!("no layer {diff_id}"))?;
        let mut stream = repo.open_stream("", Some(verity), None)?;
        let tmp = dir.join("blobs/layer.tmp");
        let mut out = Hashing {
            inner: std::io::BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?),
            sha: Sha256::new(),
            len: 0,
        };
        stream.cat(&repo, &mut out)?;
        out.flush()?;
        let hex = hex::encode(out.sha.finalize());
        fs::rename(&tmp, dir.join("blobs/sha256").join(&hex))?;
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{hex}"),
            "size": out.len,
        }));
    }
    let mut config_stream = repo.open_stream("", Some(image.config_verity()), None)?;
    let mut objects = Vec::new();
    config_stream.get_object_refs(|id| objects.push(id.clone()))?;
    let config = repo.read_object(objects.first().ok_or_else(|| anyhow!("no config"))?)?;
    let config_digest = put_blob(dir, &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": layers,
    }))?;
    let manifest_digest = put_blob(dir, &manifest)?;
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }],
        }))?,
    )?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["import", image, repo, tag] => println!("{}", import(image, Path::new(repo), tag)?),
        ["erofs-id", repo, digest] => println!("{}", erofs_id(Path::new(repo), digest)?),
        ["export-oci", repo, tag, dir] => export_oci(Path::new(repo), tag, Path::new(dir))?,
        ["import-cstor", store, id, repo, tag] => println!(
            "{}",
            import_cstor(Path::new(store), id, Path::new(repo), tag)?
        ),
        _ => bail!(
            "usage: composefs-fixture import oci:DIR:TAG REPO TAG | erofs-id REPO DIGEST | export-oci REPO TAG DIR | import-cstor STORE ID REPO TAG"
        ),
    }
    Ok(())
}
