//! `aie demo`: a self-contained run on embedded defaults that prints its timeline and exits 0
//! only when every step held.
//!
//! Today it proves the foundation: aie's MCP core starts on a loopback port and real MCP
//! clients use it in both protocol eras. The Platinum demo (an email drafted in the cloud,
//! approved and sent locally) replaces these steps as the servers land.

use std::{future::Future, net::SocketAddr, process::ExitCode, time::Instant};

use aie_shared::{
    HttpOptions, Metrics, http,
    rmcp::{
        ClientLifecycleMode, ClientServiceExt,
        model::{CallToolRequestParams, ClientConfig, ProtocolVersion},
        transport::StreamableHttpClientTransport,
    },
};
use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Prints one timeline line per step, with the time since the start.
struct Timeline {
    started: Instant,
    failed: usize,
}

impl Timeline {
    async fn step<T>(
        &mut self,
        what: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        let result = work.await;
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        match result {
            Ok(value) => {
                println!("{ms:8.1} ms  ok    {what}");
                Some(value)
            }
            Err(e) => {
                self.failed += 1;
                println!("{ms:8.1} ms  FAIL  {what}: {e:#}");
                None
            }
        }
    }
}

/// Runs the demo.
pub async fn run() -> anyhow::Result<ExitCode> {
    aie_shared::init_crypto();
    let mut timeline = Timeline {
        started: Instant::now(),
        failed: 0,
    };
    println!("aie demo: the MCP core, end to end, on a loopback port\n");

    let streams = CancellationToken::new();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let Some(addr) = timeline
        .step(
            "start aie's MCP core (conformance fixtures) on 127.0.0.1",
            async {
                let listener = TcpListener::bind("127.0.0.1:0")
                    .await
                    .context("binding a loopback port")?;
                let addr = listener.local_addr()?;
                let opts = HttpOptions::new(addr);
                let metrics = Metrics::new();
                let mcp = aie_shared::streamable_http(
                    aie_conformance::server(),
                    &opts,
                    metrics.clone(),
                    streams.clone(),
                );
                let app = aie_shared::app(mcp, &opts, metrics, http::always_ready());
                let shutdown = async move {
                    let _ = stopped.await;
                };
                tokio::spawn(http::serve(listener, app, None, streams.clone(), shutdown));
                Ok(addr)
            },
        )
        .await
    else {
        bail!("the core did not start");
    };
    println!("               serving http://{addr}/mcp");

    let eras = [
        (
            "legacy 2025-11-25 (initialize, session)",
            ClientLifecycleMode::Initialize,
        ),
        (
            "stateless 2026-07-28 (server/discover)",
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        ),
    ];
    for (era, lifecycle) in eras {
        timeline
            .step(
                &format!("client, {era}: connect, list tools, call test_simple_text"),
                client_round(addr, lifecycle),
            )
            .await;
    }

    let _ = stop.send(());
    let total = timeline.started.elapsed().as_secs_f64() * 1000.0;
    if timeline.failed == 0 {
        println!("\nsummary: every step held ({total:.0} ms)");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "\nsummary: {} step(s) failed ({total:.0} ms)",
            timeline.failed
        );
        Ok(ExitCode::FAILURE)
    }
}

/// One rmcp client session: connect in the given lifecycle, list tools, call one.
async fn client_round(addr: SocketAddr, lifecycle: ClientLifecycleMode) -> anyhow::Result<()> {
    let transport = StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    let client = ClientConfig::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .context("connecting")?;
    let tools = client.list_all_tools().await.context("tools/list")?;
    let result = client
        .call_tool(CallToolRequestParams::new("test_simple_text"))
        .await
        .context("tools/call")?;
    let text = result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let version = client
        .peer()
        .peer_info()
        .map(|i| i.protocol_version.to_string())
        .unwrap_or_default();
    client.cancel().await.context("closing the client")?;
    if text.is_empty() {
        bail!("test_simple_text returned no text");
    }
    println!(
        "               protocol {version}, {} tools, answer: {text:?}",
        tools.len()
    );
    Ok(())
}
