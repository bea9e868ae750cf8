//! The `aie` command line.

use std::{net::SocketAddr, process::ExitCode};

use clap::{Parser, Subcommand};

/// aie: MCP servers that let an AI employee work around the clock without ever acting
/// behind its owner's back.
#[derive(Debug, Parser)]
#[command(name = "aie", version, about = "aie: MCP servers that let an AI employee work around the clock without ever acting behind its owner's back.", long_about = None)]
pub struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "AIE_LOG_JSON")]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the self-contained demo on embedded defaults and print its timeline.
    Demo,
    /// Run one server alone on its own listener.
    Serve {
        /// Which server.
        #[command(subcommand)]
        server: ServeTarget,
    },
}

/// Servers `aie serve` can run.
#[derive(Debug, Subcommand)]
pub enum ServeTarget {
    /// The official MCP conformance suite's fixtures, served by aie's own MCP core.
    Conformance {
        /// Address to listen on; port 0 picks a free port (the URL is printed).
        #[arg(long, default_value = "127.0.0.1:3001", env = "AIE_LISTEN")]
        listen: SocketAddr,
    },
}

/// Parses the arguments, runs the command, and turns every error into one line on stderr
/// and a non-zero exit.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own timeline; services log their life.
    let filter = match cli.command {
        Command::Demo => "warn,rmcp=error",
        _ => aie_shared::telemetry::SERVICE_FILTER,
    };
    aie_shared::telemetry::init(filter, cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aie: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo => crate::demo::run().await,
            Command::Serve {
                server: ServeTarget::Conformance { listen },
            } => crate::serve::conformance(listen).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("aie: {e:#}");
            ExitCode::FAILURE
        }
    }
}
