//! Reading the OSTree repository: opening it, the image stored in it (its commit's manifest and
//! config), directory objects, commit roots, the chunk layers' commits, and `ostree export`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use ostree::gio;
use ostree::glib;
use serde_json::Value;
use storage_format::Digest;

use super::gvariant::{parse_commit_root, parse_dirtree};
use super::imgref;
use super::objects::object_path as repo_object_path;
use crate::error::{Error, Result};

/// Objects of one layer: checksum → real paths (absolute, as found walking the commit).
pub(crate) type ChunkContent = BTreeMap<String, Vec<String>>;

pub(crate) fn gerr(what: &str, e: glib::Error) -> Error {
    Error::InvalidInput(format!("{what}: {e}"))
}

pub(crate) fn open_repo(path: &Path) -> Result<ostree::Repo> {
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
            Error::not_found(
                "deployment",
                format!(
                    "no deployment in the sysroot {}: name an image with --source",
                    sysroot.display()
                ),
            )
        })?;
    let origin = dep.origin().ok_or_else(|| {
        Error::not_found("origin", format!("deployment {} has no origin", dep.csum()))
    })?;
    let r = origin.string("origin", "container-image-reference").map_err(|_| {
        Error::not_found("container-image-reference", format!(
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

/// Runs `ostree export` of `layer_ref` (a derived layer's commit) and hands its tar stream to
/// `consume`; the export must then succeed.
pub(crate) fn ostree_export<T>(
    repo_path: &Path,
    layer_ref: &str,
    consume: impl FnOnce(&mut dyn std::io::Read) -> Result<T>,
) -> Result<T> {
    let mut child = Command::new("ostree")
        .arg(format!("--repo={}", repo_path.display()))
        .args(["export", layer_ref])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::external("ostree export", e))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| Error::Internal("ostree export has no stdout".into()))?;
    let consumed = consume(&mut out);
    drop(out);
    let status = child
        .wait()
        .map_err(|e| Error::external("ostree export", e))?;
    // A failure of ours first when the export then died of the closed pipe; the export's own
    // failure first otherwise (its stream was cut short because it failed).
    let broken_pipe = {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(rustix::process::Signal::PIPE.as_raw())
    };
    let consumed = match consumed {
        Err(e) if status.success() || broken_pipe => return Err(e),
        other => other,
    };
    if !status.success() {
        return Err(Error::external(
            format!("ostree export {layer_ref}"),
            status,
        ));
    }
    consumed
}

/// The DiffID and size of a derived layer: `ostree export` of its commit, hashed.
pub(crate) fn derived_digest(repo_path: &Path, layer_ref: &str) -> Result<(Digest, u64)> {
    ostree_export(repo_path, layer_ref, |out| {
        let (mut hashing, state) = crate::layer::decompress::HashingReader::new(out);
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| Error::read("ostree export", e))?;
        let r = state
            .lock()
            .map_err(|_| Error::Internal("hash state poisoned".into()))?
            .result();
        Ok(r)
    })
}

/// The bytes of a metadata object (dirtree, dirmeta): read from its file, as every repository mode
/// stores them; through libostree when the file is elsewhere (a parent repository).
pub(crate) fn meta_object_bytes(
    repo: &ostree::Repo,
    repo_path: &Path,
    t: ostree::ObjectType,
    csum: &str,
) -> Result<Vec<u8>> {
    let suffix = match t {
        ostree::ObjectType::DirTree => "dirtree",
        ostree::ObjectType::DirMeta => "dirmeta",
        _ => "commit",
    };
    let path = repo_object_path(repo_path, csum, suffix);
    match std::fs::read(&path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let v = repo
                .load_variant(t, csum)
                .map_err(|e| gerr(&format!("loading object {csum}"), e))?;
            Ok(v.data_as_bytes().to_vec())
        }
        Err(e) => Err(Error::io("reading", &path, e)),
    }
}

/// A commit's root dirtree and dirmeta checksums.
pub fn commit_root(repo: &ostree::Repo, commit: &str) -> Result<(String, String)> {
    let (commit_v, _) = repo
        .load_commit(commit)
        .map_err(|e| gerr(&format!("loading commit {commit}"), e))?;
    let (_, _, _, _, _, _, tree, meta) =
        commit_v.get::<ostree::CommitVariantType>().ok_or_else(|| {
            Error::InvalidInput(format!("commit {commit} is not a valid commit object"))
        })?;
    Ok((hex::encode(tree), hex::encode(meta)))
}

/// [`layer_commit_objects`] of every ref of `layer_refs`, read several at a time straight from the
/// repository's files (ref, commit object, root dirtree); a layer whose files are not all where a
/// plain repository keeps them goes through libostree (which also words any error).
pub(crate) fn layer_commits_objects(
    repo: &ostree::Repo,
    repo_path: &Path,
    layer_refs: &[String],
) -> Result<Vec<Vec<String>>> {
    const READERS: usize = 4;
    let native = |r: &String| -> Option<Vec<String>> {
        let rev = std::fs::read_to_string(repo_path.join("refs/heads").join(r)).ok()?;
        let rev = rev.trim();
        if rev.len() != 64 || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let commit = std::fs::read(repo_object_path(repo_path, rev, "commit")).ok()?;
        let (tree, _) = parse_commit_root(&commit)?;
        let data = std::fs::read(repo_object_path(repo_path, &tree, "dirtree")).ok()?;
        let parsed = parse_dirtree(&data, "dirtree").ok()?;
        let mut names: Vec<String> = parsed.files.into_iter().map(|f| f.name).collect();
        names.extend(parsed.dirs.into_iter().map(|d| d.name));
        Some(names)
    };
    let found = crate::parallel::map_in_order(layer_refs, READERS, native);
    layer_refs
        .iter()
        .zip(found)
        .map(|(r, names)| match names {
            Some(names) => Ok(names),
            None => layer_commit_objects(repo, repo_path, r),
        })
        .collect()
}

/// The names of a layer commit's root entries: ostree-ext stores chunk layers as commits whose files are
/// named by the object checksums they carry.
pub(crate) fn layer_commit_objects(
    repo: &ostree::Repo,
    repo_path: &Path,
    layer_ref: &str,
) -> Result<Vec<String>> {
    let rev = repo
        .require_rev(layer_ref)
        .map_err(|e| gerr(&format!("resolving {layer_ref}"), e))?;
    let (tree, _) = commit_root(repo, &rev)?;
    let data = meta_object_bytes(repo, repo_path, ostree::ObjectType::DirTree, &tree)?;
    let parsed = parse_dirtree(&data, &format!("dirtree {tree}"))?;
    let mut names: Vec<String> = parsed.files.into_iter().map(|f| f.name).collect();
    names.extend(parsed.dirs.into_iter().map(|d| d.name));
    Ok(names)
}

/// An image as ostree-ext stores it: the manifest and config in its merge commit's metadata.
#[derive(Debug)]
pub(crate) struct StoredImage {
    /// Its manifest.
    pub manifest: Value,
    /// Its config.
    pub config: Value,
}

/// Finds the image `imgref` in the repository and reads its manifest and config.
pub(crate) fn stored_image(
    repo: &ostree::Repo,
    repo_path: &Path,
    imgref: &str,
) -> Result<StoredImage> {
    let image_ref = imgref::image_ref(imgref);
    let merge = repo
        .resolve_rev(&image_ref, true)
        .map_err(|e| gerr(&format!("resolving {image_ref}"), e))?
        .ok_or_else(|| {
            Error::not_found(imgref.to_string(), format!(
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
    let json = |key: &str, what: &str| -> Result<Value> {
        let text = lookup_str(&meta, key).ok_or_else(|| not_image(key))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::InvalidInput(format!(
                "the {what} stored for {imgref} is not valid JSON: {e}"
            ))
        })
    };
    let manifest = json("ostree.manifest", "manifest")?;
    let config = json("ostree.container.image-config", "config")?;
    Ok(StoredImage { manifest, config })
}
