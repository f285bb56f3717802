//! `bootc-image completion SHELL` and the man pages, both from the same clap definitions as `--help`.

use std::io::Write as _;
use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// The completion script for `shell`.
pub fn completion(shell: clap_complete::Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "bootc-image", &mut out);
    out
}

/// Writes `bootc-image.1` and one page per subcommand (`bootc-image-storage-gc.1` …) into `dir`.
pub fn man_pages(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let root = Cli::command();
    write_pages(&root, "bootc-image", dir, &mut written)?;
    Ok(written)
}

fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<String>,
) -> anyhow::Result<()> {
    if cmd.is_hide_set() {
        return Ok(());
    }
    let page = cmd.clone().name(name.to_string());
    let file = format!("{name}.1");
    let man = clap_mangen::Man::new(page);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    // The synopsis as it is typed: `bootc-image [GLOBAL OPTIONS] copy-to-storage [OPTIONS] …`.
    let words = name.replace('-', " ");
    let typed = words.replacen("bootc image", "bootc-image", 1);
    let typed = typed
        .replace("copy to storage", "copy-to-storage")
        .replace("pull from default storage", "pull-from-default-storage")
        .replace("build chunked", "build-chunked")
        .replace("set unified", "set-unified")
        .replace("bound images", "bound-images");
    let (top, rest) = typed.split_once(' ').unwrap_or((typed.as_str(), ""));
    let operands: Vec<String> = cmd
        .get_positionals()
        .map(|a| {
            let v = a
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| a.get_id().as_str().to_uppercase(), |v| v.to_string());
            let many = a.get_num_args().is_some_and(|n| n.max_values() > 1);
            let v = if many { format!("{v}...") } else { v };
            if a.is_required_set() {
                v
            } else {
                format!("[{v}]")
            }
        })
        .collect();
    let mut synopsis = vec![format!("\\fB{top}\\fR [\\fIGLOBAL OPTIONS\\fR]")];
    synopsis.extend((!rest.is_empty()).then(|| rest.to_string()));
    synopsis.push("[\\fIOPTIONS\\fR]".to_string());
    synopsis.extend(cmd.has_subcommands().then(|| "COMMAND".to_string()));
    synopsis.extend(operands);
    writeln!(out, ".SH SYNOPSIS\n{}", synopsis.join(" "))?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut out)?;
    }
    if let Some(examples) = examples(name) {
        writeln!(out, ".SH EXAMPLES")?;
        for (what, line) in examples {
            writeln!(
                out,
                ".PP\n{what}\n.PP\n.nf\n.RS 4\n{}\n.RE\n.fi",
                line.replace('\\', "\\\\")
            )?;
        }
    }
    writeln!(out, ".SH \"EXIT STATUS\"\n{EXIT_STATUS}")?;
    writeln!(
        out,
        ".SH \"SEE ALSO\"\npodman(1), skopeo(1), bootc(8), containers-storage.conf(5), containers-policy.json(5); docs/ in the source, one page per command"
    )?;
    std::fs::write(dir.join(&file), out)?;
    written.push(file);
    for sub in cmd.get_subcommands() {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// The EXIT STATUS section: the classes of docs/cli.md.
const EXIT_STATUS: &str = ".TP\n0\nSuccess.\n.TP\n1\nimage exists: the image is not there.\n.TP\n2\nUsage: the command line is wrong.\n.TP\n3\nImage: missing, invalid, corrupt, unsafe or unsupported; a name podman could not parse; refused by the signature policy.\n.TP\n4\nStorage: no store, a damaged store, no space, read-only, not permitted; standard output not writable.\n.TP\n5\nExternal: a program we run (skopeo, unshare, chcon, the OSTree helper) failed or is missing.\n.TP\n6\nInternal: a bug; please report it.\n.TP\n141\nStandard output closed by its reader (as podman).\n.TP\n128+N\nKilled by signal N.";

/// Examples for a page, by its name: (what, the command).
fn examples(name: &str) -> Option<&'static [(&'static str, &'static str)]> {
    Some(match name {
        "bootc-image" => &[
            (
                "An OCI layout into podman's store:",
                "bootc-image copy-to-storage --source oci:/var/tmp/app:1 --target localhost/app:1",
            ),
            (
                "Pull into a store of your own:",
                "bootc-image --root /var/tmp/s/root --runroot /run/s pull quay.io/org/app:1",
            ),
        ],
        "bootc-image-copy-to-storage" => &[
            (
                "The booted host image into podman's store (on a bootc host):",
                "bootc-image copy-to-storage",
            ),
            (
                "An OCI layout, named:",
                "bootc-image copy-to-storage --source oci:/var/tmp/app:1 --target localhost/app:1",
            ),
            (
                "From another store, files shared:",
                "bootc-image copy-to-storage --source containers-storage:[overlay@/var/lib/containers/storage]localhost/app:1 --target containers-storage:[overlay@/srv/s/root+/run/s]localhost/app:1",
            ),
        ],
        "bootc-image-pull" => &[
            ("From a registry:", "bootc-image pull quay.io/org/app:1"),
            (
                "A local registry over plain HTTP, JSON progress:",
                "bootc-image pull --tls-verify=false --progress json localhost:5000/app:1",
            ),
        ],
        "bootc-image-list" => &[(
            "Every image bootc holds, as JSON:",
            "bootc-image list --format json",
        )],
        "bootc-image-pull-from-default-storage" => &[(
            "An image podman pulled, into bootc's store:",
            "bootc-image pull-from-default-storage quay.io/org/app:1",
        )],
        "bootc-image-build-chunked" => &[(
            "A root filesystem into a chunked image:",
            "bootc-image build-chunked --rootfs /var/tmp/rootfs --target localhost/os:1",
        )],
        "bootc-image-export" => &[(
            "A stored image to an OCI archive, zstd:",
            "bootc-image export localhost/app:1 oci-archive:/var/tmp/app.tar --compression zstd",
        )],
        "bootc-image-set-unified" => &[(
            "The booted image into bootc's store:",
            "bootc-image set-unified",
        )],
        "bootc-image-storage-verify" => &[(
            "Check a store and remove what is damaged:",
            "bootc-image --root /var/lib/containers/storage storage verify --repair",
        )],
        "bootc-image-storage-gc" => {
            &[("What gc would remove:", "bootc-image storage gc --dry-run")]
        }
        "bootc-image-image-rm" => &[(
            "Remove an image, as podman rmi:",
            "bootc-image image rm localhost/app:1",
        )],
        "bootc-image-bound-images-pull" => &[(
            "The booted deployment's bound images into bootc's store:",
            "bootc-image bound-images pull",
        )],
        _ => return None,
    })
}
