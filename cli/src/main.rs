//! The `bootc-image` command.

fn main() -> std::process::ExitCode {
    bootc_image_cli::main_with(std::env::args_os().collect())
}
