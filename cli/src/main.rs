//! The `bootc-image` command.

use std::io::Write;

fn main() -> std::process::ExitCode {
    match bootc_image_cli::run(std::env::args_os()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = bootc_image_cli::error_line(&e);
            if !line.is_empty() {
                // A stderr that cannot be written loses the line, not the exit code.
                let _ = writeln!(std::io::stderr().lock(), "error: {line}");
            }
            std::process::ExitCode::from(bootc_image_cli::exit::code_of(&e))
        }
    }
}
