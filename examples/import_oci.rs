//! Imports an OCI image layout into a containers-storage store, as `bootc-image copy-to-storage
//! --source oci:DIR[:TAG]` does, through the library.
//!
//! ```sh
//! cargo run --example import_oci -- ./my-oci-dir[:tag] /var/tmp/store/root /run/store localhost/app:1
//! podman --root /var/tmp/store/root --runroot /run/store images
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::Context;
use bootc_image::image_ref::ImageRef;
use bootc_image::source;
use bootc_image::store::image_input::Progress;
use bootc_image::store::{Store, StoreConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [layout, root, runroot, name] = args.as_slice() else {
        anyhow::bail!("usage: import_oci OCI_DIR[:TAG] ROOT RUNROOT NAME");
    };
    // The source: manifest, config and blobs, checked against their digests as they are read.
    let src = ImageRef::parse(&format!("oci:{layout}"))?;
    let mut opened = source::open(&src).with_context(|| format!("reading {layout}"))?;
    // The name, normalized as podman does (`app` → `docker.io/library/app:latest`).
    opened.image.names = vec![bootc_image::reference::normalize(name)?];
    // The store: these roots and the overlay driver; storage.conf for everything else.
    let config =
        StoreConfig::resolve(Some(root.as_ref()), Some(runroot.as_ref()), Some("overlay"))?;
    let store = Store::open(config)?;
    let progress = |p: Progress| {
        if let Progress::LayerDone { index, reused } = p {
            eprintln!(
                "layer {index} {}",
                if reused { "reused" } else { "written" }
            );
        }
    };
    let report = opened.import_into(&store, &progress)?;
    println!("{} {}", report.image_id, report.manifest_digest);
    Ok(())
}
