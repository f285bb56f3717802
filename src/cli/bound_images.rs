//! `bootc-image bound-images list|pull`.

use anyhow::Context;

use super::Cli;
use crate::bootc::{bound_images, deployments, storage};
use crate::source::{self, SourceRef};
use crate::store::copy::CopyOptions;
use crate::store::{Store, lookup};

/// Bound-image commands.
#[derive(Debug, clap::Subcommand)]
pub enum BoundCommand {
    /// List the bound images of the running root (or of the sysroot's first deployment).
    List {
        /// Lines of image and unit file, or a JSON list of {"image", "source"}.
        #[arg(long, value_enum, default_value_t = super::copy_to_storage::ResultFormat::Text)]
        format: super::copy_to_storage::ResultFormat,
    },
    /// Copy every bound image into bootc's store, all or nothing: from the default store, or from the
    /// `oci:`/`oci-archive:` reference the unit names.
    Pull,
}

fn bound(cli: &Cli) -> anyhow::Result<Vec<bound_images::BoundImage>> {
    let sysroot = cli.sysroot();
    match deployments::running_root(&cli.sysroot, &sysroot)? {
        Some(root) => Ok(bound_images::read(&root)?),
        None => Ok(Vec::new()),
    }
}

/// Runs the command.
pub fn run(cli: &Cli, c: &BoundCommand) -> anyhow::Result<()> {
    let images = bound(cli)?;
    match c {
        BoundCommand::List { format } => {
            if *format == super::copy_to_storage::ResultFormat::Json {
                let v: Vec<serde_json::Value> = images
                    .iter()
                    .map(|b| serde_json::json!({"image": b.image, "source": b.source}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
                return Ok(());
            }
            for b in &images {
                println!("{}\t{}", b.image, b.source);
            }
            Ok(())
        }
        BoundCommand::Pull => {
            if super::pull_from_default_storage::ran_in_private_namespace(cli)? {
                return Ok(());
            }
            pull_all(cli, &images)
        }
    }
}

fn pull_all(cli: &Cli, images: &[bound_images::BoundImage]) -> anyhow::Result<()> {
    let sysroot = cli.sysroot();
    let (dst, _) = storage::ensure(&sysroot)?;
    let before: std::collections::HashSet<String> =
        dst.images()?.into_iter().map(|i| i.id).collect();
    let mut default_store: Option<Store> = None;
    let mut added: Vec<String> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for b in images {
            let id = if b.image.starts_with("oci:") || b.image.starts_with("oci-archive:") {
                let r = SourceRef::parse(&b.image)?;
                let mut opened = source::open(&r)
                    .with_context(|| format!("bound image {} ({})", b.image, b.source))?;
                opened.image.names = vec![
                    bound_images::store_name(&b.image)
                        .with_context(|| format!("bound image {}", b.source))?,
                ];
                opened
                    .import_into(&dst, &|_| {})
                    .with_context(|| format!("bound image {} ({})", b.image, b.source))?
                    .image_id
            } else {
                if default_store.is_none() {
                    default_store = Some(Store::open_read_only(cli.store_config()?)?);
                }
                let src = default_store
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("default store"))?;
                let found = lookup::find_image(&src.images()?, &b.image)
                    .with_context(|| {
                        format!(
                            "bound image {} ({}) in the default store",
                            b.image, b.source
                        )
                    })?
                    .clone();
                let name = bound_images::store_name(&b.image)
                    .with_context(|| format!("bound image {}", b.source))?;
                dst.copy_image_from(
                    src,
                    &found.id,
                    &CopyOptions {
                        names: vec![name],
                        verify: false,
                    },
                )
                .with_context(|| format!("bound image {} ({})", b.image, b.source))?
                .image_id
            };
            if !before.contains(&id) {
                added.push(id);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        // All or nothing: take back what this run added.
        dst.delete_images(&added)
            .context("removing the images this pull added")?;
        return Err(e);
    }
    println!("Bound images stored: {}", images.len());
    Ok(())
}
