//! `build`: root filesystem → ostree commit → chunked, encapsulated OCI image.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::num::NonZeroU32;
use std::path::Path;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail, ensure};
use indexmap::IndexMap;
use ostree_ext::chunking::ObjectMetaSized;
use ostree_ext::container::{Config, ExportOpts, ImageReference, Transport};
use ostree_ext::objectsource::{ObjectMeta, ObjectSourceMeta};
use ostree_ext::prelude::*;
use ostree_ext::{gio, glib, ostree};

use crate::oci;

/// Commit timestamp used when neither `--timestamp` nor `SOURCE_DATE_EPOCH` is given
/// (2023-11-14T22:13:20Z).
pub(crate) const DEFAULT_TIMESTAMP: u64 = 1_700_000_000;

/// Prefix of the branch the rootfs is committed to (`fixture/TAG`).
const BRANCH_PREFIX: &str = "fixture/";

/// Package name for objects outside /usr in the per-directory grouping.
const ROOTFS_PACKAGE: &str = "rootfs";

/// Inputs of [`build`].
#[derive(Debug)]
pub(crate) struct BuildOpts<'a> {
    /// Root filesystem to commit.
    pub(crate) rootfs: &'a Path,
    /// Bare repository (created if missing).
    pub(crate) repo: &'a Path,
    /// OCI layout to write.
    pub(crate) oci: &'a Path,
    /// Image tag; the branch is `fixture/<tag>`.
    pub(crate) tag: &'a str,
    /// Hash paths into this many packages instead of grouping by directory.
    pub(crate) chunks: Option<NonZeroU32>,
    /// Commit timestamp.
    pub(crate) timestamp: u64,
}

/// Runs `build`: commit, compute the fake package mapping, encapsulate, make the result
/// reproducible, print a summary.
pub(crate) async fn build(opts: &BuildOpts<'_>) -> Result<()> {
    ensure!(
        !opts.tag.is_empty() && !opts.tag.contains(':') && !opts.tag.contains('/'),
        "invalid tag {:?}: it must be non-empty and hold neither ':' nor '/'",
        opts.tag
    );
    let oci_path = path_str(opts.oci)?;
    ensure!(
        !oci_path.contains(':'),
        "OCI directory {oci_path:?} must not contain ':' (ostree-ext splits OUTDIR:TAG at the first ':')"
    );
    let repo = open_or_create_bare_repo(opts.repo)?;
    let branch = format!("{BRANCH_PREFIX}{}", opts.tag);
    let kver = find_kernel(opts.rootfs)?;
    let commit = commit_rootfs(
        &repo,
        opts.rootfs,
        &branch,
        opts.tag,
        kver.as_deref(),
        opts.timestamp,
    )?;
    println!("commit: {commit}");
    println!("branch: {branch}");
    println!("repo: {}", opts.repo.display());

    let grouping = match opts.chunks {
        Some(n) => Grouping::PathHash(n),
        None => Grouping::Directory,
    };
    let files = walk_commit(&repo, &commit)?;
    let (contentmeta, plan) = content_meta(&repo, &files, grouping)?;
    println!(
        "packages: {} fake packages for {} file objects ({} paths)",
        plan.len(),
        contentmeta.map.len(),
        files.len()
    );
    for p in &plan {
        println!(
            "  package {:<24} objects={:<4} bytes={}",
            p.name, p.objects, p.bytes
        );
    }

    std::fs::create_dir_all(opts.oci).with_context(|| format!("Creating {oci_path}"))?;
    let dest = ImageReference {
        transport: Transport::OciDir,
        name: format!("{oci_path}:{}", opts.tag),
    };
    let mut export_opts = ExportOpts::default();
    export_opts.contentmeta = Some(&contentmeta);
    ostree_ext::container::encapsulate(
        &repo,
        &branch,
        &Config::default(),
        Some(export_opts),
        &dest,
    )
    .await
    .with_context(|| format!("Encapsulating {commit} into {}", dest.name))?;

    let ocidir = oci::open(opts.oci)?;
    let desc = oci::normalize_history(&ocidir, opts.tag)?;
    let pruned = oci::prune_unreferenced(&ocidir)?;
    if pruned > 0 {
        println!("pruned {pruned} unreferenced blob(s) from {oci_path}");
    }
    println!("image: oci:{oci_path}:{}", opts.tag);
    oci::print_image(&ocidir, &desc)?;
    Ok(())
}

/// `path` as UTF-8, which ostree-ext's image references need.
pub(crate) fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))
}

/// Opens the bare repository at `path`, creating it (like `ostree init --mode=bare`) if it has no
/// `config` yet.
fn open_or_create_bare_repo(path: &Path) -> Result<ostree::Repo> {
    let cancellable = gio::Cancellable::NONE;
    let repo = ostree::Repo::new_for_path(path);
    if path.join("config").exists() {
        repo.open(cancellable)
            .with_context(|| format!("Opening repository {}", path.display()))?;
        ensure!(
            repo.mode() == ostree::RepoMode::Bare,
            "repository {} has mode {:?}, expected bare",
            path.display(),
            repo.mode()
        );
    } else {
        std::fs::create_dir_all(path).with_context(|| format!("Creating {}", path.display()))?;
        repo.create(ostree::RepoMode::Bare, cancellable)
            .with_context(|| format!("Creating bare repository {}", path.display()))?;
        println!("created bare repository {}", path.display());
    }
    Ok(repo)
}

/// The kernel version of the tree: the first directory under `usr/lib/modules` holding a
/// `vmlinuz` (what `ostree admin deploy` looks for).
fn find_kernel(rootfs: &Path) -> Result<Option<String>> {
    let modules = rootfs.join("usr/lib/modules");
    let entries = match std::fs::read_dir(&modules) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "warning: {} is missing; `deploy` will fail (ostree needs usr/lib/modules/<kver>/vmlinuz)",
                modules.display()
            );
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("Reading {}", modules.display())),
    };
    let mut versions = BTreeSet::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("Reading {}", modules.display()))?;
        if entry.path().join("vmlinuz").is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            versions.insert(name.to_string());
        }
    }
    Ok(versions.into_iter().next())
}

/// Commits `rootfs` as is (real owners, modes and xattrs; no parent) to `branch`, with metadata
/// like a bootable image's: `version`, `ostree.bootable`, `ostree.linux`. The fixed timestamp
/// and the missing parent make the commit checksum a function of the tree alone.
fn commit_rootfs(
    repo: &ostree::Repo,
    rootfs: &Path,
    branch: &str,
    version: &str,
    kver: Option<&str>,
    timestamp: u64,
) -> Result<String> {
    let cancellable = gio::Cancellable::NONE;
    let rootfs_str = path_str(rootfs)?;
    ensure!(rootfs.is_dir(), "rootfs {rootfs_str} is not a directory");
    let meta = glib::VariantDict::new(None);
    meta.insert("version", version);
    if let Some(kver) = kver {
        meta.insert("ostree.bootable", true);
        meta.insert("ostree.linux", kver);
    }
    let meta = meta.end();

    let txn = repo
        .auto_transaction(cancellable)
        .context("Starting a repository transaction")?;
    let mtree = ostree::MutableTree::new();
    repo.write_dfd_to_mtree(libc::AT_FDCWD, rootfs_str, &mtree, None, cancellable)
        .with_context(|| format!("Committing the files of {rootfs_str}"))?;
    let root = repo
        .write_mtree(&mtree, cancellable)
        .context("Writing the directory tree")?;
    let root = root
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow!("write_mtree did not return a RepoFile"))?;
    let subject = format!("ostree-fixture {version}");
    let commit = repo
        .write_commit_with_time(
            None,
            Some(&subject),
            None,
            Some(&meta),
            &root,
            timestamp,
            cancellable,
        )
        .context("Writing the commit")?;
    repo.transaction_set_ref(None, branch, Some(commit.as_str()));
    txn.commit(cancellable)
        .context("Committing the transaction")?;
    Ok(commit.to_string())
}

/// A path in a commit and the checksum of its content object (regular file or symlink).
#[derive(Debug)]
pub(crate) struct FileObject {
    /// Absolute path in the tree, e.g. `/usr/bin/tool`.
    pub(crate) path: String,
    /// Content object checksum.
    pub(crate) checksum: String,
}

/// Every non-directory entry of `commit`, in path order (hard links appear once per path).
pub(crate) fn walk_commit(repo: &ostree::Repo, commit: &str) -> Result<Vec<FileObject>> {
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("Reading commit {commit}"))?;
    let mut out = Vec::new();
    walk_dir(&root, "", &mut out)?;
    Ok(out)
}

/// Recursion of [`walk_commit`]; `prefix` is the path of `dir` ("" for the root).
fn walk_dir(dir: &gio::File, prefix: &str, out: &mut Vec<FileObject>) -> Result<()> {
    let children = dir
        .enumerate_children(
            "standard::name,standard::type",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("Listing {prefix}/"))?;
    let mut entries = Vec::new();
    for info in children {
        let info = info.with_context(|| format!("Listing {prefix}/"))?;
        let name = info.name();
        let name = name
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 file name in {prefix}/: {name:?}"))?
            .to_string();
        entries.push((name, info.file_type() == gio::FileType::Directory));
    }
    entries.sort();
    for (name, is_dir) in entries {
        let path = format!("{prefix}/{name}");
        let child = dir.child(&name);
        if is_dir {
            walk_dir(&child, &path, out)?;
        } else {
            let file = child
                .downcast_ref::<ostree::RepoFile>()
                .ok_or_else(|| anyhow!("{path} is not a file of an ostree commit"))?;
            file.ensure_resolved()
                .with_context(|| format!("Resolving {path}"))?;
            out.push(FileObject {
                path,
                checksum: file.checksum().to_string(),
            });
        }
    }
    Ok(())
}

/// How file objects are assigned to fake packages.
#[derive(Debug, Clone, Copy)]
enum Grouping {
    /// One package per directory directly under /usr (`usr/bin`, `usr/lib`, `usr/share`,
    /// `usr/etc`, …); files directly in /usr form `usr`, everything outside /usr `rootfs`.
    Directory,
    /// `chunk-NN`, NN = FNV-1a hash of the path modulo N.
    PathHash(NonZeroU32),
}

impl Grouping {
    /// The package owning `path`.
    fn package_for(self, path: &str) -> String {
        match self {
            Grouping::Directory => {
                let mut parts = path.trim_start_matches('/').split('/');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some("usr"), Some(dir), Some(_)) => format!("usr/{dir}"),
                    (Some("usr"), Some(_), None) => "usr".to_string(),
                    _ => ROOTFS_PACKAGE.to_string(),
                }
            }
            Grouping::PathHash(n) => {
                format!("chunk-{:02}", fnv1a(path.as_bytes()) % u64::from(n.get()))
            }
        }
    }
}

/// 64-bit FNV-1a: a stable (toolchain-independent) hash for the path grouping.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One fake package of the plan, for the summary.
#[derive(Debug)]
struct PackageSummary {
    /// Package name.
    name: String,
    /// Number of distinct file objects.
    objects: usize,
    /// Total size of those objects.
    bytes: u64,
}

/// Builds the `contentmeta` that makes `encapsulate` chunk: every content object of the commit
/// mapped to exactly one fake package (ostree-ext asserts that no object is left over). An
/// object reachable from several paths (hard links, identical files) belongs to the package of
/// its first path in path order, so the mapping is deterministic.
fn content_meta(
    repo: &ostree::Repo,
    files: &[FileObject],
    grouping: Grouping,
) -> Result<(ObjectMetaSized, Vec<PackageSummary>)> {
    let mut map = IndexMap::new();
    let mut names: BTreeMap<String, Rc<str>> = BTreeMap::new();
    for f in files {
        if map.contains_key(&f.checksum) {
            continue;
        }
        let name = grouping.package_for(&f.path);
        let id = Rc::clone(
            names
                .entry(name.clone())
                .or_insert_with(|| Rc::from(name.as_str())),
        );
        map.insert(f.checksum.clone(), id);
    }
    if map.is_empty() {
        bail!("the commit has no files; nothing to chunk");
    }
    let set: HashSet<ObjectSourceMeta> = names
        .values()
        .map(|id| ObjectSourceMeta {
            identifier: Rc::clone(id),
            name: Rc::clone(id),
            srcid: Rc::clone(id),
            change_time_offset: 1,
            change_frequency: 1,
        })
        .collect();
    let sized = ObjectMetaSized::compute_sizes(repo, ObjectMeta { set, map })
        .context("Computing package sizes")?;
    let mut objects: BTreeMap<&str, usize> = BTreeMap::new();
    for id in sized.map.values() {
        *objects.entry(id).or_default() += 1;
    }
    let plan = sized
        .sizes
        .iter()
        .map(|s| PackageSummary {
            name: s.meta.name.to_string(),
            objects: objects
                .get(&*s.meta.identifier)
                .copied()
                .unwrap_or_default(),
            bytes: s.size,
        })
        .collect();
    Ok((sized, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_grouping() {
        let g = Grouping::Directory;
        assert_eq!(g.package_for("/usr/bin/tool"), "usr/bin");
        assert_eq!(g.package_for("/usr/lib/modules/6.0.0/vmlinuz"), "usr/lib");
        assert_eq!(g.package_for("/usr/etc/os-release"), "usr/etc");
        assert_eq!(g.package_for("/usr/README"), "usr");
        assert_eq!(g.package_for("/bin"), "rootfs");
    }

    #[test]
    fn hash_grouping_is_stable() {
        let n = NonZeroU32::new(4).expect("nonzero");
        let g = Grouping::PathHash(n);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let p = g.package_for("/usr/bin/tool");
        assert!(p.starts_with("chunk-0"));
        assert_eq!(p, g.package_for("/usr/bin/tool"));
    }
}
