//! Builds a chunked image from a root filesystem through the library, as `bootc-image
//! build-chunked` does, adjusting the plan on the way: read the tree and its dpkg database, plan
//! the layers (big packages alone, small ones packed, unowned files last), move a package, then
//! compute the image (DiffIDs from the files) and write it into a store.
//!
//! ```sh
//! cargo run --example build_chunked -- ./rootfs /var/tmp/store/root /run/store localhost/os:1 [PACKAGE]
//! podman --root /var/tmp/store/root --runroot /run/store image inspect localhost/os:1
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use anyhow::Context;
use bootc_image::source::rootfs::{BuildOptions, Builder};
use bootc_image::store::{Store, StoreConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rootfs, root, runroot, name, to_move) = match args.as_slice() {
        [a, b, c, d] => (a, b, c, d, None),
        [a, b, c, d, e] => (a, b, c, d, Some(e)),
        _ => anyhow::bail!("usage: build_chunked ROOTFS ROOT RUNROOT NAME [PACKAGE-TO-BASE-LAYER]"),
    };
    let options = BuildOptions {
        max_layers: 16,
        timestamp: Some(1_700_000_000),
        ..BuildOptions::default()
    };
    let builder =
        Builder::new(rootfs.as_ref(), options).with_context(|| format!("reading {rootfs}"))?;
    let mut plan = builder.plan(None)?;
    // The plan is yours to change: here, one package moves into the first layer.
    if let Some(pkg) = to_move {
        plan.move_package(pkg, 0)?;
    }
    for (i, layer) in plan.layers.iter().enumerate() {
        println!(
            "layer {i}: {} ({} bytes) {}",
            layer.key,
            layer.size,
            layer.packages.join(" ")
        );
    }
    let names = vec![bootc_image::reference::normalize(name)?];
    let image = builder.image(&plan, names)?;
    let config =
        StoreConfig::resolve(Some(root.as_ref()), Some(runroot.as_ref()), Some("overlay"))?;
    let store = Store::open(config)?;
    let report = builder.commit(&plan, &image, &store, &|_| {})?;
    println!("{} {}", report.image_id, report.manifest_digest);
    Ok(())
}
