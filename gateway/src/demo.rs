//! `aie demo`. Until the Platinum demo lands, it proves the core end to end.
use std::process::ExitCode;

/// Runs the demo.
pub async fn run() -> anyhow::Result<ExitCode> {
    anyhow::bail!("aie demo is not built yet")
}
