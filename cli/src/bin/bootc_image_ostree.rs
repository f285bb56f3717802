//! `bootc-image-ostree`: copies OSTree host images into containers-storage. `bootc-image` runs it for
//! `copy-to-storage` of a host image; it is the only binary linked with libostree.

fn main() -> std::process::ExitCode {
    bootc_image_cli::exit_with(bootc_image_cli::run_host(std::env::args_os()))
}
