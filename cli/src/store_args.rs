//! The store options every command shares: `--target` as skopeo's `containers-storage:` transport
//! reads it (the name, and the store it may name).

use super::Cli;
use bootc_image::image_ref::parse_storage_reference;

/// The name and store `--target` selects: `NAME`, `containers-storage:NAME`, or
/// `containers-storage:[driver@root+runroot]NAME`, which names the store as skopeo's transport does
/// (and so may not be combined with --root/--runroot/--storage-driver).
pub fn target(cli: &Cli, t: &str) -> anyhow::Result<(String, bootc_image::store::StoreConfig)> {
    let r = parse_storage_reference(t)?;
    let Some(spec) = r.store else {
        return Ok((r.name, cli.store_config()?));
    };
    if cli.root.is_some() || cli.runroot.is_some() || cli.storage_driver.is_some() {
        return Err(super::exit::fail(
            super::exit::Code::Usage,
            format!(
                "--target {t:?} names a store, and so do --root/--runroot/--storage-driver: name it once"
            ),
        ));
    }
    Ok((r.name, spec_config(Some(&spec))?))
}

/// The store a `containers-storage:[driver@root+runroot]` reference names; without one, the
/// default store (storage.conf), as skopeo reads the transport.
pub fn spec_config(
    spec: Option<&bootc_image::reference::StoreSpec>,
) -> anyhow::Result<bootc_image::store::StoreConfig> {
    Ok(bootc_image::store::StoreConfig::of_spec(spec)?)
}

/// The store a command works on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhichStore {
    /// bootc's store, `<sysroot>/ostree/bootc/storage`.
    Bootc,
    /// The default store: podman's, or the one named by --root / storage.conf.
    Default,
}
