//! Makes a composefs repository holding an OCI image, as bootc's composefs backend pulls one (a
//! SHA-512 repository, fs-verity off as on ext4; the image's layers split into splitstreams and
//! objects by `composefs_oci::pull`): to try `copy-to-storage --source composefs:…` without a
//! composefs host, and for the podman 5 check and the benchmark.
//!
//! ```sh
//! cargo run --example composefs_repo -- oci:./my-oci-dir:tag /var/tmp/cfs-repo tag
//! bootc-image copy-to-storage --source composefs:/var/tmp/cfs-repo:tag --target localhost/app:1
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

use anyhow::Context;
use composefs::fsverity::{Algorithm, Sha512HashValue};
use composefs::repository::{Repository, RepositoryConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [image, repo, tag] = args.as_slice() else {
        anyhow::bail!("usage: composefs_repo oci:DIR:TAG REPO_DIR TAG");
    };
    let config = RepositoryConfig::new(Algorithm::SHA512).set_insecure();
    let (repository, _) =
        Repository::<Sha512HashValue>::init_path(rustix::fs::CWD, repo.as_str(), config)
            .with_context(|| format!("creating the repository {repo}"))?;
    let repository = Arc::new(repository);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pulled = runtime
        .block_on(composefs_oci::pull(
            &repository,
            image,
            Some(tag),
            composefs_oci::PullOptions::default(),
        ))
        .with_context(|| format!("importing {image}"))?;
    println!("{}", pulled.manifest_digest);
    Ok(())
}
