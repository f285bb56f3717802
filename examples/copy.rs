//! Copies any image — `docker://…`, `oci:DIR[:TAG]`, `oci-archive:…`, `dir:…`, `docker-archive:…`,
//! `containers-storage:…` or `composefs:REPO:IMAGE` — into a store with the library's one call.
//!
//! ```sh
//! cargo run --example copy -- oci:./my-oci-dir:tag /var/tmp/store/root /run/store localhost/app:1
//! ```

// A program: it reports on the terminal.
#![allow(clippy::print_stdout)]

use bootc_image::store::{Store, StoreConfig};
use bootc_image::{CopyOptions, ImageRef, copy};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, root, runroot, name] = args.as_slice() else {
        anyhow::bail!("usage: copy SOURCE ROOT RUNROOT NAME");
    };
    let config = StoreConfig::resolve(Some(root.as_ref()), Some(runroot.as_ref()), None)?;
    let store = Store::open(config)?;
    let copied = copy(
        &store,
        &ImageRef::parse(src)?,
        &CopyOptions::named(name)?,
        &(),
    )?;
    println!("{} {}", copied.image_id, copied.manifest_digest);
    Ok(())
}
