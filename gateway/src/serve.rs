//! `aie serve SERVER`: one server on its own listener.

use std::{net::SocketAddr, path::Path, process::ExitCode};

use aie_shared::{
    HttpOptions, Metrics, http,
    rmcp::ServerHandler,
    vault::{AgentName, Vault},
};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `listen`, naming the address in the error when it is taken or not allowed.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is the port in use? pick another with --listen)")
    })
}

/// Serves `handler` alone on `listen` until SIGTERM or Ctrl-C, printing the URL first.
async fn serve_alone<H>(
    name: &str,
    handler: H,
    listen: SocketAddr,
    ready: http::ReadyCheck,
) -> anyhow::Result<ExitCode>
where
    H: ServerHandler + Clone + Send + Sync + 'static,
{
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let mcp = aie_shared::streamable_http(handler, &opts, metrics.clone(), streams.clone());
    let app = aie_shared::app(mcp, &opts, metrics, ready);
    println!("aie {name}: serving http://{addr}/mcp");
    http::serve(listener, app, None, streams, http::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Serves the conformance fixtures.
pub async fn conformance(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    serve_alone(
        "conformance",
        aie_conformance::server(),
        listen,
        http::always_ready(),
    )
    .await
}

/// Serves the vault-claim tools for `agent` on `vault`.
pub async fn vault_claim(
    listen: SocketAddr,
    vault: &Path,
    agent: AgentName,
) -> anyhow::Result<ExitCode> {
    let opened = Vault::open(vault)
        .with_context(|| "opening the vault (lay one out with `aie vault init --vault DIR`)")?;
    let root = vault.to_path_buf();
    // Ready while the vault directory is there to be read.
    let ready: http::ReadyCheck = std::sync::Arc::new(move || {
        let root = root.clone();
        Box::pin(async move {
            match tokio::fs::metadata(&root).await {
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(format!("vault {} is not reachable", root.display())),
            }
        })
    });
    let server =
        aie_vault_claim::server::server(aie_vault_claim::server::VaultClaim::new(opened, agent));
    serve_alone("vault-claim", server, listen, ready).await
}
