//! `aie config check FILE` and `aie config schema`.

use std::{path::Path, process::ExitCode};

/// `aie config check FILE`: prints `FILE: ok`, or every error one a line (file, line, key,
/// what to fix) and exits 1.
pub fn check(file: &Path) -> anyhow::Result<ExitCode> {
    match aie_shared::config::check(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in errors.errors() {
                println!("{error}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `aie config schema`: prints the config's JSON Schema.
pub fn schema() -> anyhow::Result<ExitCode> {
    println!(
        "{}",
        serde_json::to_string_pretty(&aie_shared::config::schema())?
    );
    Ok(ExitCode::SUCCESS)
}
