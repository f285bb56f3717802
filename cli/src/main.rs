//! The `bootc-image` command.

fn main() -> std::process::ExitCode {
    bootc_image_cli::exit_with(bootc_image_cli::run(std::env::args_os()))
}
