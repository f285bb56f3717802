//! Copies an image from a composefs repository into a containers-storage store through the
//! library, as `bootc-image copy-to-storage --source composefs:REPO:IMAGE` does: each layer's
//! splitstream streamed into the store, files reflinked from the repository's objects where the
//! file system can, DiffIDs checked while writing.
//!
//! ```sh
//! cargo run --example import_composefs -- /sysroot/composefs sha256:… /var/tmp/store/root /run/store localhost/os:1
//! podman --root /var/tmp/store/root --runroot /run/store images
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::Context;
use bootc_image::source::composefs::{ComposefsImage, ImageSelector};
use bootc_image::store::{Store, StoreConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, image, root, runroot, name] = args.as_slice() else {
        anyhow::bail!("usage: import_composefs REPO TAG|sha256:DIGEST ROOT RUNROOT NAME");
    };
    // The image: a tag of the repository or a manifest digest; its manifest and config come back
    // byte for byte, so the store gets the image's own digests.
    let names = vec![bootc_image::reference::normalize(name)?];
    let image = ComposefsImage::open(repo.as_ref(), &ImageSelector::parse(image), names, false)
        .with_context(|| format!("reading {image} in {repo}"))?;
    let config =
        StoreConfig::resolve(Some(root.as_ref()), Some(runroot.as_ref()), Some("overlay"))?;
    let store = Store::open(config)?;
    // The image is its own layer producer.
    let report = store.import_with(&image.input, &image, &|_| {})?;
    println!(
        "{} {} ({} layers written, {} reused)",
        report.image_id, report.manifest_digest, report.layers_written, report.layers_reused
    );
    Ok(())
}
