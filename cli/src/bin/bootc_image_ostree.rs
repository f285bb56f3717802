//! `bootc-image-ostree`: copies OSTree host images into containers-storage. `bootc-image` runs it for
//! `copy-to-storage` of a host image; it is the only binary linked with libostree.

#[allow(clippy::print_stderr)] // the one error line
fn main() -> std::process::ExitCode {
    match bootc_image_cli::run_host(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = bootc_image_cli::error_line(&e);
            if !line.is_empty() {
                eprintln!("error: {line}");
            }
            std::process::ExitCode::from(bootc_image_cli::exit::code_of(&e))
        }
    }
}
