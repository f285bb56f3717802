//! The `bootc-image` command.

#[allow(clippy::print_stderr)] // the one error line
fn main() -> std::process::ExitCode {
    match bootc_image::cli::run(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = bootc_image::cli::error_line(&e);
            if !line.is_empty() {
                eprintln!("error: {line}");
            }
            std::process::ExitCode::from(bootc_image::cli::exit::code_of(&e))
        }
    }
}
