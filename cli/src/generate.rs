//! `bootc-image completion SHELL` and the man pages, both from the same clap definitions as `--help`.

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
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    std::fs::write(dir.join(&file), out)?;
    written.push(file);
    for sub in cmd.get_subcommands() {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
