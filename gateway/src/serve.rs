//! `aie serve SERVER`: one server on its own listener.

use std::{net::SocketAddr, process::ExitCode};

use aie_shared::{HttpOptions, Metrics, http};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Binds `listen`, naming the address in the error when it is taken or not allowed.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen} (is the port in use? pick another with --listen)")
    })
}

/// Serves the conformance fixtures until SIGTERM or Ctrl-C.
pub async fn conformance(listen: SocketAddr) -> anyhow::Result<ExitCode> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr()?;
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let mcp = aie_shared::streamable_http(
        aie_conformance::server(),
        &opts,
        metrics.clone(),
        streams.clone(),
    );
    let app = aie_shared::app(mcp, &opts, metrics, http::always_ready());
    println!("aie conformance: serving http://{addr}/mcp");
    http::serve(listener, app, None, streams, http::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}
