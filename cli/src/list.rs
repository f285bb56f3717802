//! `bootc-image list`: the images bootc holds, in upstream's JSON and table shapes.

use super::output::outln;
use serde::Serialize;

use super::Cli;
use bootc_image::bootc::{
    bound_images, composefs_deployments, deployments, host_images, storage, sysroot,
};

/// Which images to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListType {
    /// Everything.
    All,
    /// Host images: in the OSTree repository, or the composefs deployments' images.
    Host,
    /// Logically bound images of the running root.
    Logical,
    /// Images in bootc's own store.
    Unified,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table.
    Table,
    /// A JSON array.
    Json,
}

/// Options of list.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which images.
    #[arg(long = "type", value_enum, default_value = "all")]
    pub list_type: ListType,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// One row.
#[derive(Debug, Serialize)]
pub struct ImageOutput {
    /// host, unified or logical.
    pub image_type: &'static str,
    /// The image.
    pub image: String,
}

/// Collects the rows.
pub fn collect(cli: &Cli, t: ListType) -> anyhow::Result<Vec<ImageOutput>> {
    let sysroot = cli.sysroot();
    let in_container = sysroot::running_in_container() && cli.sysroot == std::path::Path::new("/");
    // In a container there are no host images; `--type all` lists what there is: the bound
    // images, and the store --root (or --runroot/--storage-driver) names.
    let host_too = !in_container;
    let t = if in_container && t == ListType::All && !cli.names_a_store() {
        ListType::Logical
    } else {
        t
    };
    if in_container && t == ListType::Host {
        return Err(super::exit::fail(
            super::exit::Code::Image,
            "listing host images requires a booted bootc system: use --type logical here, or --sysroot DIR",
        ));
    }
    let mut out = Vec::new();
    let hosts = t == ListType::Host || t == ListType::All && host_too;
    if hosts && composefs_deployments::is_composefs(&sysroot) {
        let mut images: Vec<String> = composefs_deployments::list(&sysroot)?
            .iter()
            .filter_map(|d| d.listed_reference())
            .collect();
        images.sort();
        images.dedup();
        for image in images {
            out.push(ImageOutput {
                image_type: "host",
                image,
            });
        }
    } else if hosts {
        for image in host_images::list(&sysroot)? {
            out.push(ImageOutput {
                image_type: "host",
                image,
            });
        }
    }
    // With --root (or --runroot/--storage-driver), the store named is listed instead of bootc's.
    let store = if cli.names_a_store() {
        Some(bootc_image::store::Store::open_read_only(
            cli.store_config()?,
        )?)
    } else {
        storage::open_existing_read_only(&sysroot)?
    };
    if matches!(t, ListType::All | ListType::Unified)
        && let Some(store) = store
    {
        for img in store.images()? {
            for image in img.names {
                out.push(ImageOutput {
                    image_type: "unified",
                    image,
                });
            }
        }
    }
    if matches!(t, ListType::All | ListType::Logical)
        && let Some(root) = deployments::running_root(&cli.sysroot, &sysroot)?
    {
        for b in bound_images::read(&root)? {
            out.push(ImageOutput {
                image_type: "logical",
                image: b.image,
            });
        }
    }
    Ok(out)
}

/// Renders rows as upstream's table: columns REPOSITORY and TYPE, no borders.
pub fn table(rows: &[ImageOutput]) -> String {
    let w = rows
        .iter()
        .map(|r| r.image.len())
        .max()
        .unwrap_or(0)
        .max("REPOSITORY".len());
    let mut s = format!(" {:<w$}  TYPE \n", "REPOSITORY");
    for r in rows {
        s.push_str(&format!(" {:<w$}  {} \n", r.image, r.image_type));
    }
    s
}

/// Runs the command.
pub fn run(cli: &Cli, args: &Args) -> anyhow::Result<()> {
    let rows = collect(cli, args.list_type)?;
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&rows)?)?,
        Format::Table => super::output::text(&table(&rows))?,
    }
    Ok(())
}
