//! `bootc-image image exists|inspect|rm|tag`: podman's image commands, natively, on the default store
//! (or `--root`) or on bootc's store (`--store bootc`, under `--sysroot`).

use super::Cli;
use super::exit::{Code, fail};
use super::output::outln;
use super::store_args::WhichStore;
use bootc_image::store::Store;
use bootc_image::store::lookup::{find_image, matched_name};

/// Image commands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Exit 0 if the image is in the store and 1 if it is not, printing nothing (as
    /// `podman image exists`).
    Exists {
        /// Name, short name, ID or ID prefix.
        name: String,
        /// Which store: the default one (podman's, or --root) or bootc's (under --sysroot).
        #[arg(long, value_enum, default_value_t = WhichStore::Default)]
        store: WhichStore,
    },
    /// Remove images, as `podman rmi`: a name of an image that has other names is only untagged;
    /// its last name, or its ID, removes the image and the layers no other image uses.
    Rm {
        /// Names, short names, IDs or ID prefixes.
        #[arg(required = true)]
        images: Vec<String>,
        /// Which store: the default one (podman's, or --root) or bootc's (under --sysroot).
        #[arg(long, value_enum, default_value_t = WhichStore::Default)]
        store: WhichStore,
        /// Remove an image named by ID even when it has several names (all of them go), as
        /// `podman rmi --force`. Containers are not removed: an image a container uses is refused
        /// (remove the container with `podman rm -f` first).
        #[arg(long, short)]
        force: bool,
    },
    /// Print images as `podman image inspect` does (a JSON list, podman's field names and values).
    Inspect {
        /// Names, short names, IDs or ID prefixes.
        #[arg(required = true)]
        images: Vec<String>,
        /// Which store: the default one (podman's, or --root) or bootc's (under --sysroot).
        #[arg(long, value_enum, default_value_t = WhichStore::Default)]
        store: WhichStore,
    },
    /// Add names to an image, as `podman tag` (a name another image had moves to this one).
    Tag {
        /// The image: name, short name, ID or ID prefix.
        image: String,
        /// The new names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Which store: the default one (podman's, or --root) or bootc's (under --sysroot).
        #[arg(long, value_enum, default_value_t = WhichStore::Default)]
        store: WhichStore,
    },
}

/// Opens the chosen store — for writing (`rm`, `tag`: recovering what an interrupted writer left)
/// or only to read it under read locks (`exists`, `inspect`, as podman) —; `None` when it does not
/// exist.
fn open(cli: &Cli, which: WhichStore, write: bool) -> anyhow::Result<Option<Store>> {
    let config = match which {
        WhichStore::Bootc => bootc_image::bootc::storage::config(&cli.sysroot()),
        WhichStore::Default => cli.store_config()?,
    };
    // A store we may not look into is an error, not an absent store (or image).
    let lock = config
        .graphroot
        .join(format!("{}-layers", config.driver.name()))
        .join("layers.lock");
    match std::fs::symlink_metadata(&lock) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(bootc_image::Error::io("reading the store", &config.graphroot, e).into());
        }
    }
    Ok(Some(if write {
        Store::open(config)?
    } else {
        Store::open_read_only(config)?
    }))
}

/// Opens the chosen store, which must exist for `name` to be in it.
fn open_required(cli: &Cli, which: WhichStore, name: &str, write: bool) -> anyhow::Result<Store> {
    open(cli, which, write)?.ok_or_else(|| {
        fail(
            Code::Image,
            format!("image {name:?} is not in the store: there is no store"),
        )
    })
}

/// Removes (or untags) one image as `podman rmi` does; prints what it did unless --quiet.
fn remove_one(cli: &Cli, s: &Store, typed: &str, force: bool) -> anyhow::Result<()> {
    let all = s.images()?;
    let img = find_image(&all, typed)?.clone();
    match matched_name(&img, typed) {
        Some(name) if img.names.len() > 1 => {
            s.untag_image(&img.id, &name)?;
            if !cli.quiet {
                outln!("Untagged: {name}")?;
            }
            return Ok(());
        }
        None if img.names.len() > 1 && !force => {
            return Err(fail(
                Code::Image,
                format!(
                    "image {typed:?} has several names ({}): remove them by name, or all at once with --force",
                    img.names.join(", ")
                ),
            ));
        }
        _ => {}
    }
    let users = s.containers_of_image(&img.id)?;
    if !users.is_empty() {
        return Err(fail(
            Code::Image,
            format!(
                "image {typed:?} is in use by container {}: remove the container first (podman rm -f; bootc-image does not remove containers, even with --force)",
                users.join(", ")
            ),
        ));
    }
    s.delete_images(std::slice::from_ref(&img.id))?;
    if !cli.quiet {
        for n in &img.names {
            outln!("Untagged: {n}")?;
        }
        outln!("Deleted: {}", img.id)?;
    }
    Ok(())
}

/// Runs the command.
pub fn run(cli: &Cli, c: &ImageCommand) -> anyhow::Result<()> {
    match c {
        ImageCommand::Exists { name, store } => {
            let found = match open(cli, *store, false)? {
                Some(s) => find_image(&s.images()?, name).is_ok(),
                None => false,
            };
            if !found {
                return Err(fail(Code::Absent, ""));
            }
        }
        ImageCommand::Rm {
            images,
            store,
            force,
        } => {
            let s = open_required(cli, *store, &images[0], true)?;
            // As podman rmi: every image is tried; the first failure is reported at the end
            // (one line), and with --force an image that is not there is no failure.
            let mut first_err: Option<anyhow::Error> = None;
            for typed in images {
                match remove_one(cli, &s, typed, *force) {
                    Ok(()) => {}
                    Err(e) if e.chain().any(|c| c.is::<super::exit::ClosedOutput>()) => {
                        return Err(e);
                    }
                    Err(e) => {
                        let absent = e.chain().any(|c| {
                            matches!(
                                c.downcast_ref::<bootc_image::Error>(),
                                Some(bootc_image::Error::NotFound { .. })
                            )
                        });
                        if !(absent && *force) && first_err.is_none() {
                            first_err = Some(e);
                        }
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        ImageCommand::Inspect { images, store } => inspect(cli, *store, images)?,
        ImageCommand::Tag {
            image,
            names,
            store,
        } => {
            let s = open_required(cli, *store, image, true)?;
            let img = find_image(&s.images()?, image)?.clone();
            let full: Vec<String> = names
                .iter()
                .map(|n| bootc_image::reference::normalize(n))
                .collect::<Result<_, _>>()?;
            s.tag_image(&img.id, &full)?;
        }
    }
    Ok(())
}

/// `image inspect IMAGE…`: podman's JSON for the images found, then — as podman — the first one
/// not found fails.
fn inspect(cli: &Cli, store: WhichStore, images: &[String]) -> anyhow::Result<()> {
    let s = open_required(cli, store, &images[0], false)?;
    let all = s.images()?;
    let mut out = Vec::new();
    let mut first_err = None;
    for typed in images {
        match find_image(&all, typed).and_then(|img| s.inspect_image(img)) {
            Ok(v) => out.push(v),
            Err(e) if first_err.is_none() => first_err = Some(e),
            Err(_) => {}
        }
    }
    if out.is_empty()
        && let Some(e) = first_err
    {
        return Err(e.into());
    }
    // podman indents with five spaces.
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"     ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&out, &mut ser)?;
    outln!("{}", String::from_utf8_lossy(&buf))?;
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
