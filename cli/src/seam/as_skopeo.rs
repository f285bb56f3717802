//! skopeo's role: `experimental-image-proxy` served natively, `copy` into stores and layouts,
//! `--help` (which the proxy crate probes for `--user-agent-prefix`). Errors end with one line
//! and exit 1, as skopeo's do.

use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};

use bootc_image::ImageRef;
use bootc_image::proxy_server::{ServeOptions, serve};
use bootc_image::source::image_proxy::FetchOptions;

/// The help `skopeo --help` prints here: the options the proxy takes, `--user-agent-prefix` among
/// them (the proxy crate passes it only to a skopeo that lists it).
const HELP: &str = "\
Usage: skopeo [global options] COMMAND [options]

bootc-image serving skopeo's role for bootc (BOOTC_EXP_EXTERNAL_CONTAINER_TOOL).

Commands:
  experimental-image-proxy  Serve the image proxy protocol (0.2.8) on a socket (fd 0 or --sockfd)
  copy                      Copy an image: [--digestfile FILE] [--authfile FILE] SOURCE DESTINATION

Global options:
      --debug                      enable debug output
      --insecure-policy            run the tool without any policy check
      --policy string              path to a trust policy file
      --user-agent-prefix string   prefix to add to the user agent string
  -h, --help                       help for skopeo
  -v, --version                    version for skopeo

Proxy options:
      --authfile string    path of the authentication file
      --no-creds           access the registry anonymously
      --cert-dir string    certificates (*.crt, *.cert, *.key) for the registry
      --tls-verify=false   require HTTPS and verify certificates (default true)
      --sockfd int         serve on this socket (default 0)
";

/// The options of a skopeo command line, wherever they stand.
#[derive(Debug, Default)]
struct Options {
    debug: bool,
    insecure_policy: bool,
    policy: Option<PathBuf>,
    authfile: Option<PathBuf>,
    no_creds: bool,
    cert_dir: Option<PathBuf>,
    tls_verify: Option<bool>,
    sockfd: i32,
    digestfile: Option<PathBuf>,
    help: bool,
    version: bool,
    positional: Vec<String>,
}

/// Parses skopeo's options (`--name value`, `--name=value`); flags we do not know are refused.
fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        let mut value = |n: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| anyhow!("{n} needs a value")),
            }
        };
        let boolean = |v: &Option<String>| -> anyhow::Result<bool> {
            match v.as_deref() {
                None | Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(x) => bail!("{name}={x}: not a boolean"),
            }
        };
        match name {
            "--debug" => o.debug = boolean(&inline)?,
            "--insecure-policy" => o.insecure_policy = boolean(&inline)?,
            "--no-creds" => o.no_creds = boolean(&inline)?,
            "--tls-verify" | "--src-tls-verify" | "--dest-tls-verify" => {
                o.tls_verify = Some(boolean(&inline)?)
            }
            "--remove-signatures" | "--quiet" | "-q" => {}
            "--help" | "-h" => o.help = true,
            "--version" | "-v" => o.version = true,
            "--policy" => o.policy = Some(value(name)?.into()),
            "--authfile" | "--src-authfile" | "--dest-authfile" => {
                o.authfile = Some(value(name)?.into())
            }
            "--cert-dir" | "--src-cert-dir" | "--dest-cert-dir" => {
                o.cert_dir = Some(value(name)?.into())
            }
            "--user-agent-prefix" => {
                value(name)?;
            }
            "--sockfd" => o.sockfd = value(name)?.parse().context("--sockfd")?,
            "--digestfile" => o.digestfile = Some(value(name)?.into()),
            "--decryption-key" | "--src-decryption-key" => bail!(
                "{name}: encrypted images are not supported by bootc-image; decrypt the image first (skopeo copy --decryption-key …)"
            ),
            n if n.starts_with('-') && n.len() > 1 => {
                bail!("skopeo option {n} is not served by bootc-image (bootc never passes it)")
            }
            _ => o.positional.push(a.clone()),
        }
    }
    Ok(o)
}

impl Options {
    /// The fetch options: credentials (`--authfile`, else `REGISTRY_AUTH_FILE`, else c/image's
    /// defaults; none with `--no-creds`), TLS, the policy.
    fn fetch(&self) -> FetchOptions {
        let mut f = FetchOptions {
            authfile: self
                .authfile
                .clone()
                .or_else(|| std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from)),
            tls_verify: self.tls_verify,
            cert_dir: self.cert_dir.clone(),
            signature_policy: self.policy.clone(),
            // bootc-image's own registry client unless skopeo's proxy is asked for (as for every
            // command).
            native: !std::env::var("BOOTC_IMAGE_VIA").is_ok_and(|v| v == "skopeo"),
            partial: !std::env::var("BOOTC_IMAGE_PARTIAL_PULLS").is_ok_and(|v| v == "false"),
            ..FetchOptions::default()
        };
        if self.no_creds {
            f.authfile = None;
            f.no_default_credentials = true;
        }
        f
    }
}

/// Runs skopeo's role; exit 0, or 1 with one `error:` line.
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // skopeo's status for any failure; a closed stdout as for every command (141).
        Err(e) => crate::failed_with(&e, "error", |code| {
            if code == crate::exit::CLOSED_OUTPUT {
                code
            } else {
                1
            }
        }),
    }
}

/// The command of a skopeo command line: the first word not an option or an option's value.
fn command_of(args: &[String]) -> Option<&str> {
    const TAKE_VALUE: [&str; 5] = [
        "--policy",
        "--user-agent-prefix",
        "--registries-conf",
        "--tmpdir",
        "--command-timeout",
    ];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if TAKE_VALUE.contains(&a.as_str()) {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(other) =
        command_of(args).filter(|c| !matches!(*c, "experimental-image-proxy" | "copy"))
    {
        // Anything else is the real skopeo's, when one is installed.
        return match super::real_tool("skopeo") {
            Some(_) => through_real_skopeo(),
            None => Err(crate::exit::fail(
                crate::exit::Code::Usage,
                format!(
                    "skopeo {other} is not served by bootc-image (it serves experimental-image-proxy and copy, what bootc runs), and the real skopeo is not installed: install skopeo"
                ),
            )),
        };
    }
    let o = parse(args)?;
    crate::init_logging(Some(if o.debug {
        crate::LogLevel::Debug
    } else {
        crate::LogLevel::Warn
    }));
    let command = o.positional.first().map(String::as_str);
    match command {
        _ if o.help => crate::output::text(HELP),
        Some("experimental-image-proxy") => proxy(&o),
        Some("copy") => copy(&o),
        None if o.version => crate::output::line(format_args!(
            "skopeo version 1.14.0 (bootc-image {})",
            env!("CARGO_PKG_VERSION")
        )),
        None => crate::output::text(HELP),
        Some(other) => Err(anyhow!("skopeo {other}: not served")),
    }
}

/// The socket the proxy serves: fd 0, or `--sockfd N` (a descriptor our parent left open).
fn socket(n: i32) -> anyhow::Result<OwnedFd> {
    if n == 0 {
        return Ok(std::io::stdin().as_fd().try_clone_to_owned()?);
    }
    if n < 0 || !std::path::Path::new(&format!("/proc/self/fd/{n}")).exists() {
        bail!("--sockfd {n}: no such open descriptor");
    }
    // SAFETY: descriptor `n` is open (checked above), given to this process by its parent for the
    // proxy; nothing in this process closes it, so it outlives every use.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(n) };
    Ok(fd.try_clone_to_owned()?)
}

/// `experimental-image-proxy`: serves until `Shutdown` or end of file.
fn proxy(o: &Options) -> anyhow::Result<()> {
    let opts = ServeOptions::new(o.fetch(), o.insecure_policy)
        .with_storage_opts(std::env::var("STORAGE_OPTS").ok().as_deref());
    serve(socket(o.sockfd)?.as_fd(), &opts)?;
    Ok(())
}

/// `copy [--digestfile F] SRC DEST`: into a store natively (`containers-storage:[STORE]NAME`), from
/// a store to a layout (`oci:DIR[:TAG]`); other pairs through the real skopeo when installed.
fn copy(o: &Options) -> anyhow::Result<()> {
    let [_, src, dest] = o.positional.as_slice() else {
        bail!(
            "skopeo copy needs SOURCE and DESTINATION, e.g. copy oci:/tmp/img containers-storage:localhost/img:1"
        );
    };
    // A transport we do not read or write (docker-daemon:, …) is the real skopeo's.
    let (Ok(src_ref), Ok(dest_ref)) = (ImageRef::parse(src), ImageRef::parse(dest)) else {
        return through_real_skopeo();
    };
    let digest = match (&src_ref, &dest_ref) {
        (_, ImageRef::ContainersStorage { store, name })
            if !matches!(
                src_ref,
                ImageRef::Composefs { .. } | ImageRef::Ostree { .. }
            ) =>
        {
            let config = crate::store_args::spec_config(store.as_ref())?;
            let opts = bootc_image::CopyOptions::named(name)?.with_fetch(o.fetch());
            let store = bootc_image::store::Store::open(config.clone())
                .with_context(|| format!("opening the store at {}", config.graphroot.display()))?;
            bootc_image::copy(&store, &src_ref, &opts, &())?.manifest_digest
        }
        (
            ImageRef::ContainersStorage { store, name },
            ImageRef::OciDir { .. } | ImageRef::OciArchive { .. },
        ) => {
            let config = crate::store_args::spec_config(store.as_ref())?;
            let store = bootc_image::store::Store::open_read_only(config)?;
            let images = store.images()?;
            let img = bootc_image::store::lookup::find_image(&images, name)?;
            let dest = bootc_image::export::Destination::parse(dest)?;
            bootc_image::export::export(
                &store,
                img,
                &dest,
                bootc_image::export::LayerCompression::Gzip,
            )?
            .manifest_digest
        }
        _ => return through_real_skopeo(),
    };
    if let Some(f) = &o.digestfile {
        std::fs::write(f, digest.to_string())
            .with_context(|| format!("writing the digest file {}", f.display()))?;
    }
    Ok(())
}

/// Runs the real skopeo with our own arguments (a copy we do not serve natively).
fn through_real_skopeo() -> anyhow::Result<()> {
    let Some(skopeo) = super::real_tool("skopeo") else {
        bail!(
            "{}",
            super::missing(
                "skopeo",
                "this skopeo copy (between transports bootc-image does not write)".as_ref()
            )
        );
    };
    let status = std::process::Command::new(skopeo)
        .args(std::env::args_os().skip(1))
        .env_remove(super::TOOL_ENV)
        .status()
        .context("running skopeo")?;
    crate::delegated(&status)
}
