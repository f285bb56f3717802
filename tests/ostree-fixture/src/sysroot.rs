//! `deploy`, `list`, `cleanup`: a scratch ostree sysroot holding container images the way a bootc
//! host does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, ensure};
use ostree_ext::container::OstreeImageReference;
use ostree_ext::container::store::{self, ImageImporter, PrepareResult};
use ostree_ext::containers_image_proxy::ImageProxyConfig;
use ostree_ext::{gio, ostree, refescape};

use crate::commit::path_str;
use crate::oci;

/// Ref prefix of stored images (merge commits), as in ostree-ext's `store.rs`.
pub(crate) const IMAGE_PREFIX: &str = "ostree/container/image";
/// Ref prefix of stored layers.
pub(crate) const BLOB_PREFIX: &str = "ostree/container/blob";
/// Merge commit metadata keys that `store::query_image` (and so `export`) needs.
pub(crate) const REQUIRED_META: [&str; 3] = [
    "ostree.manifest",
    "ostree.container.image-config",
    "ostree.manifest-digest",
];
/// The origin key bootc reads the booted image reference from.
const ORIGIN_IMGREF_KEY: &str = "container-image-reference";

/// Inputs of [`deploy`].
#[derive(Debug)]
pub(crate) struct DeployOpts<'a> {
    /// Sysroot directory.
    pub(crate) sysroot: &'a Path,
    /// OCI layout holding the image.
    pub(crate) oci: &'a Path,
    /// Image tag.
    pub(crate) tag: &'a str,
    /// Registry name to store and deploy the image as.
    pub(crate) imgref_name: &'a str,
    /// Stateroot.
    pub(crate) stateroot: &'a str,
}

/// Runs a command, echoing it, and fails if it does not exit with 0.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("+ {shown}");
    let status = cmd.status().with_context(|| format!("Running {shown}"))?;
    ensure!(status.success(), "{shown} failed: {status}");
    Ok(())
}

/// Opens `sysroot/ostree/repo`.
pub(crate) fn open_sysroot_repo(sysroot: &Path) -> Result<ostree::Repo> {
    let path = sysroot.join("ostree/repo");
    let repo = ostree::Repo::new_for_path(&path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("Opening repository {}", path.display()))?;
    Ok(repo)
}

/// Loads the sysroot (deployments and their origins).
fn load_sysroot(sysroot: &Path) -> Result<ostree::Sysroot> {
    let s = ostree::Sysroot::new(Some(&gio::File::for_path(sysroot)));
    s.load(gio::Cancellable::NONE)
        .with_context(|| format!("Loading sysroot {}", sysroot.display()))?;
    Ok(s)
}

/// The keys of a commit's metadata, in order.
pub(crate) fn commit_meta_keys(repo: &ostree::Repo, commit: &str) -> Result<Vec<String>> {
    let (v, _) = repo
        .load_commit(commit)
        .with_context(|| format!("Loading commit {commit}"))?;
    let meta = v.child_value(0);
    let mut keys = Vec::new();
    for i in 0..meta.n_children() {
        let entry = meta.child_value(i);
        let key = entry.child_value(0);
        keys.push(
            key.str()
                .ok_or_else(|| anyhow!("commit {commit}: metadata key is not a string"))?
                .to_string(),
        );
    }
    keys.sort();
    Ok(keys)
}

/// The ref an image reference is stored under, e.g.
/// `ostree/container/image/docker_3A_2F_2Fquay_2E_io_2F…`.
pub(crate) fn image_ref(imgref: &OstreeImageReference) -> Result<String> {
    refescape::prefix_escape_for_ref(IMAGE_PREFIX, &imgref.imgref.to_string())
}

/// `deploy`: imports the OCI image into the sysroot repository as the registry image `NAME`,
/// checks the stored state, deploys the merge commit and writes a bootc origin.
pub(crate) async fn deploy(opts: &DeployOpts<'_>) -> Result<()> {
    let sysroot = opts.sysroot;
    let sysroot_str = path_str(sysroot)?;
    ensure!(
        !opts.stateroot.is_empty() && !opts.stateroot.contains('/'),
        "invalid stateroot {:?}",
        opts.stateroot
    );
    if !sysroot.join("ostree/repo/config").exists() {
        std::fs::create_dir_all(sysroot).with_context(|| format!("Creating {sysroot_str}"))?;
        run(Command::new("ostree").args(["admin", "init-fs", sysroot_str]))?;
    }
    if !sysroot.join("ostree/deploy").join(opts.stateroot).exists() {
        run(Command::new("ostree").args([
            "admin",
            "os-init",
            &format!("--sysroot={sysroot_str}"),
            opts.stateroot,
        ]))?;
    }
    let repo = open_sysroot_repo(sysroot)?;

    let oci_abs = std::path::absolute(opts.oci)
        .with_context(|| format!("Resolving {}", opts.oci.display()))?;
    let oci_str = path_str(&oci_abs)?;
    ensure!(
        !oci_str.contains(':'),
        "OCI directory {oci_str:?} must not contain ':'"
    );
    let src: OstreeImageReference = format!("ostree-unverified-image:oci:{oci_str}:{}", opts.tag)
        .as_str()
        .try_into()?;
    let target: OstreeImageReference = format!("ostree-unverified-registry:{}", opts.imgref_name)
        .as_str()
        .try_into()?;
    let ocidir = oci::open(&oci_abs)?;
    let want_digest = oci::tagged_descriptor(&ocidir, opts.tag)?.digest().clone();

    let existing = store::query_image(&repo, &target.imgref)
        .with_context(|| format!("Querying stored image {target}"))?;
    let state = match existing {
        Some(s) if s.manifest_digest == want_digest => {
            println!("{target} is already stored with manifest {want_digest}; not importing");
            s
        }
        _ => import(&repo, &src, &target).await?,
    };
    ensure!(
        state.manifest_digest == want_digest,
        "stored manifest digest {} differs from the OCI image's {want_digest}",
        state.manifest_digest
    );

    // The stored state, as copy-to-storage will find it.
    let ostree_ref = image_ref(&target)?;
    let resolved = repo
        .resolve_rev(&ostree_ref, false)
        .with_context(|| format!("Resolving {ostree_ref}"))?
        .ok_or_else(|| anyhow!("{ostree_ref} missing after import"))?;
    ensure!(
        resolved == state.merge_commit,
        "{ostree_ref} points to {resolved}, expected the merge commit {}",
        state.merge_commit
    );
    println!("image ref: {ostree_ref}");
    println!("imgref: {target}");
    println!("manifest digest: {}", state.manifest_digest);
    println!("base commit: {}", state.base_commit);
    println!("merge commit: {}", state.merge_commit);
    let keys = commit_meta_keys(&repo, &state.merge_commit)?;
    println!("merge commit metadata keys: {}", keys.join(" "));
    for k in REQUIRED_META {
        ensure!(
            keys.iter().any(|x| x == k),
            "merge commit {} lacks the metadata key {k}",
            state.merge_commit
        );
    }
    for l in state.manifest.layers() {
        let r = refescape::prefix_escape_for_ref(BLOB_PREFIX, l.digest().as_ref())?;
        let c = repo
            .resolve_rev(&r, true)
            .with_context(|| format!("Resolving {r}"))?;
        println!(
            "  layer {} ref {r} -> {}",
            l.digest(),
            c.as_deref().unwrap_or("(missing)")
        );
    }

    deploy_commit(sysroot, opts.stateroot, &state.merge_commit, &target)
}

/// Imports `src` with ostree-ext's `ImageImporter`, storing it under `target`'s reference.
async fn import(
    repo: &ostree::Repo,
    src: &OstreeImageReference,
    target: &OstreeImageReference,
) -> Result<Box<store::LayeredImageState>> {
    println!("importing {src} as {target}");
    // Run skopeo directly: ostree-ext drops it to `nobody` when run as root under systemd (as CI
    // jobs may be), and `nobody` may not be able to read the layout.
    let config = ImageProxyConfig {
        skopeo_cmd: Some(Command::new("skopeo")),
        ..Default::default()
    };
    let mut imp = ImageImporter::new(repo, src, config)
        .await
        .with_context(|| format!("Opening {src}"))?;
    imp.set_target(target);
    imp.require_bootable();
    let state = match imp
        .prepare()
        .await
        .with_context(|| format!("Preparing {src}"))?
    {
        PrepareResult::AlreadyPresent(s) => s,
        PrepareResult::Ready(prep) => {
            for l in prep.all_layers() {
                println!(
                    "  layer {} {}",
                    l.layer().digest(),
                    if l.commit.is_some() {
                        "stored"
                    } else {
                        "to fetch"
                    }
                );
            }
            imp.import(prep)
                .await
                .with_context(|| format!("Importing {src}"))?
        }
    };
    Ok(state)
}

/// `ostree admin deploy` of `commit` into `stateroot` (keeping the other deployments), with a
/// bootc origin `[origin] container-image-reference=<target>`; verifies the origin file.
fn deploy_commit(
    sysroot: &Path,
    stateroot: &str,
    commit: &str,
    target: &OstreeImageReference,
) -> Result<()> {
    let sysroot_str = path_str(sysroot)?;
    let origin = format!("[origin]\n{ORIGIN_IMGREF_KEY}={target}\n");
    let origin_tmp =
        std::env::temp_dir().join(format!("ostree-fixture-{}.origin", std::process::id()));
    std::fs::write(&origin_tmp, &origin)
        .with_context(|| format!("Writing {}", origin_tmp.display()))?;
    let r = run(Command::new("ostree").args([
        "admin",
        "deploy",
        &format!("--sysroot={sysroot_str}"),
        &format!("--os={stateroot}"),
        "--retain",
        &format!("--origin-file={}", path_str(&origin_tmp)?),
        commit,
    ]));
    let _ = std::fs::remove_file(&origin_tmp);
    r?;

    let s = load_sysroot(sysroot)?;
    let d = s
        .deployments()
        .into_iter()
        .find(|d| d.csum() == commit && d.osname() == stateroot)
        .ok_or_else(|| {
            anyhow!("no deployment of {commit} in stateroot {stateroot} after deploying")
        })?;
    let dir = sysroot.join(s.deployment_dirpath(&d).as_str());
    let origin_path = sysroot.join(d.origin_relpath().as_str());
    let found = std::fs::read_to_string(&origin_path)
        .with_context(|| format!("Reading {}", origin_path.display()))?;
    let wanted = format!("{ORIGIN_IMGREF_KEY}={target}");
    if !found.lines().any(|l| l.trim() == wanted) {
        // Older ostree wrote something else: write the origin as bootc does.
        std::fs::write(&origin_path, &origin)
            .with_context(|| format!("Writing {}", origin_path.display()))?;
    }
    ensure!(
        dir.join("usr").is_dir(),
        "deployment directory {} has no usr/",
        dir.display()
    );
    println!("deployment: {}", dir.display());
    println!("origin: {}", origin_path.display());
    for l in std::fs::read_to_string(&origin_path)
        .with_context(|| format!("Reading {}", origin_path.display()))?
        .lines()
    {
        println!("  {l}");
    }
    Ok(())
}

/// `list`: the repository's container refs (with the image each stands for) and the
/// deployments with their origins.
pub(crate) fn list(sysroot: &Path) -> Result<()> {
    let repo = open_sysroot_repo(sysroot)?;
    let refs: BTreeMap<String, String> = repo
        .list_refs_ext(
            None,
            ostree::RepoListRefsExtFlags::empty(),
            gio::Cancellable::NONE,
        )
        .context("Listing refs")?
        .into_iter()
        .collect();
    let mut by_commit: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    println!("image refs:");
    for (r, c) in refs.iter().filter(|(r, _)| r.starts_with(IMAGE_PREFIX)) {
        let name = refescape::unprefix_unescape_ref(IMAGE_PREFIX, r)?;
        let state = store::query_image_commit(&repo, c).with_context(|| format!("Querying {r}"))?;
        println!("  {r} -> {c}");
        println!("    image: {name}");
        println!("    manifest digest: {}", state.manifest_digest);
        println!("    layers: {}", state.manifest.layers().len());
        println!(
            "    metadata keys: {}",
            commit_meta_keys(&repo, c)?.join(" ")
        );
        by_commit.entry(c.as_str()).or_default().push(name);
    }
    println!("blob refs:");
    for (r, c) in refs.iter().filter(|(r, _)| r.starts_with(BLOB_PREFIX)) {
        let digest = refescape::unprefix_unescape_ref(BLOB_PREFIX, r)?;
        println!("  {r} -> {c}  ({digest})");
    }
    println!("other refs:");
    for (r, c) in refs
        .iter()
        .filter(|(r, _)| !r.starts_with(IMAGE_PREFIX) && !r.starts_with(BLOB_PREFIX))
    {
        println!("  {r} -> {c}");
    }

    let s = load_sysroot(sysroot)?;
    let deployments = s.deployments();
    println!("deployments: {}", deployments.len());
    for d in deployments {
        let imgref = d
            .origin()
            .and_then(|o| o.string("origin", ORIGIN_IMGREF_KEY).ok())
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".to_string());
        println!(
            "  {}: stateroot={} commit={} serial={} dir={}",
            d.index(),
            d.osname(),
            d.csum(),
            d.deployserial(),
            s.deployment_dirpath(&d)
        );
        println!("     {ORIGIN_IMGREF_KEY}={imgref}");
        if let Some(names) = by_commit.get(d.csum().as_str()) {
            println!("     stored image(s): {}", names.join(" "));
        }
    }
    Ok(())
}

/// `cleanup`: removes a scratch sysroot. Deployment roots carry the immutable attribute, which
/// even root must clear (`chattr -i`) before they can be removed.
pub(crate) fn cleanup(sysroot: &Path) -> Result<()> {
    if !sysroot.exists() {
        println!("{} does not exist", sysroot.display());
        return Ok(());
    }
    ensure!(
        sysroot.join("ostree").is_dir(),
        "{} does not look like an ostree sysroot (no ostree/); refusing to remove it",
        sysroot.display()
    );
    let deploy_root = sysroot.join("ostree/deploy");
    let mut immutable: Vec<PathBuf> = Vec::new();
    if deploy_root.is_dir() {
        for os in read_dir_sorted(&deploy_root)? {
            let deploy_dir = os.join("deploy");
            if !deploy_dir.is_dir() {
                continue;
            }
            for d in read_dir_sorted(&deploy_dir)? {
                let is_dir = d
                    .symlink_metadata()
                    .with_context(|| format!("Inspecting {}", d.display()))?
                    .is_dir();
                if is_dir {
                    immutable.push(d);
                }
            }
        }
    }
    for d in &immutable {
        run(Command::new("chattr").arg("-i").arg(d))?;
    }
    if let Err(e) = std::fs::remove_dir_all(sysroot) {
        // Something else is immutable: clear the attribute everywhere and try again.
        eprintln!(
            "warning: removing {}: {e}; clearing immutable bits recursively",
            sysroot.display()
        );
        let status = Command::new("chattr")
            .args(["-R", "-f", "-i"])
            .arg(sysroot)
            .status()
            .context("Running chattr -R -i")?;
        if !status.success() {
            eprintln!("warning: chattr -R -f -i {}: {status}", sysroot.display());
        }
        std::fs::remove_dir_all(sysroot)
            .with_context(|| format!("Removing {}", sysroot.display()))?;
    }
    println!(
        "removed {} ({} deployment(s) unlocked)",
        sysroot.display(),
        immutable.len()
    );
    Ok(())
}

/// The entries of `dir`, sorted.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("Reading {}", dir.display()))? {
        out.push(
            e.with_context(|| format!("Reading {}", dir.display()))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}
