//! Benchmark of aie's MCP core on loopback: `tools/call` of a trivial tool, stateless JSON
//! (2026-07-28) and legacy session (2025-11-25), beside a bare axum JSON echo measured in the
//! same run; then the idle resident memory of `aie serve conformance`.
//!
//! Run: `cargo build --release -p aie && cargo bench -p aie-e2e --bench mcp_core`.
//! Prints figures only; it never fails on time.

mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use aie_shared::rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use aie_shared::{Metrics, app, http, streamable_http};
use axum::{Json, Router, routing::post};
use common::{
    CONNECTIONS, Figures, MEASURE, STATELESS_CALL, WARMUP, call_body, client_runtime, connect,
    echo_server, in_own_runtime, in_session, measure, open_session, post_json, serve_on_loopback,
    timed_calls,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const ROUNDS: usize = 3;

/// Starts the servers on a runtime of their own (its own threads); returns the addresses of
/// aie, rmcp alone and the bare echo.
fn start_servers() -> (SocketAddr, SocketAddr, SocketAddr) {
    in_own_runtime(|| async {
        let aie = serve_on_loopback(|opts, streams| {
            let metrics = Metrics::new();
            let mcp = streamable_http(
                echo_server().with_metrics(metrics.clone()),
                opts,
                metrics.clone(),
                streams,
            );
            app(mcp, opts, metrics, http::always_ready())
        })
        .await;

        // rmcp's own Streamable HTTP service with the same settings and none of aie's
        // layers: the SDK's floor.
        let raw = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let raw_addr = raw.local_addr().expect("addr");
        let config = StreamableHttpServerConfig::default()
            .with_legacy_session_mode(true)
            .with_json_response(true)
            .disable_allowed_hosts()
            .disable_allowed_origins();
        let server = echo_server();
        let service = StreamableHttpService::new(
            move || Ok(server.clone()),
            Arc::new(LocalSessionManager::default()),
            config,
        );
        let rmcp_only = Router::new().route_service("/mcp", service);
        tokio::spawn(async move { axum::serve(raw, rmcp_only).await });

        let bare = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let bare_addr = bare.local_addr().expect("addr");
        let echo = Router::new().route("/echo", post(bare_echo));
        tokio::spawn(async move { axum::serve(bare, echo).await });
        (aie, raw_addr, bare_addr)
    })
}

/// The bare baseline: parse a JSON-RPC request, answer the same result shape.
async fn bare_echo(Json(req): Json<Value>) -> Json<Value> {
    let text = req
        .pointer("/params/arguments/text")
        .cloned()
        .unwrap_or(Value::Null);
    Json(json!({"jsonrpc": "2.0", "id": req["id"], "result": {
        "content": [{"type": "text", "text": text}], "structuredContent": {"text": text}, "isError": false}}))
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Stateless,
    RmcpStateless,
    LegacySession,
    BareEcho,
}

/// The `_meta` of a stateless call: the revision.
fn stateless_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}})
}

/// One connection's loop until `deadline`; returns latencies of the calls that began after
/// `measure_from`.
async fn connection(
    mode: Mode,
    addr: SocketAddr,
    measure_from: Instant,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let mut sender = connect(addr).await;
    let session = match mode {
        Mode::LegacySession => {
            open_session(&mut sender, |body, headers| {
                post_json(addr, "/mcp", body, headers)
            })
            .await
        }
        Mode::Stateless | Mode::RmcpStateless | Mode::BareEcho => String::new(),
    };
    timed_calls(&mut sender, measure_from, deadline, |id| match mode {
        Mode::Stateless | Mode::RmcpStateless => post_json(
            addr,
            "/mcp",
            call_body(id, Some(stateless_meta())),
            &STATELESS_CALL,
        ),
        Mode::LegacySession => post_json(addr, "/mcp", call_body(id, None), &in_session(&session)),
        Mode::BareEcho => post_json(addr, "/echo", call_body(id, None), &[]),
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Resident memory of a process, in MiB, from /proc.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn idle_memory() {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("aie")))
        .filter(|p| p.exists());
    let Some(bin) = bin else {
        println!("idle RSS: skipped (build the binary first: cargo build --release -p aie)");
        return;
    };
    let mut child = Command::new(&bin)
        .args(["serve", "conformance", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn aie");
    std::thread::sleep(Duration::from_secs(2));
    let rss = rss_mib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    match rss {
        Some(mib) => println!(
            "idle RSS of `aie serve conformance` ({}): {mib:.1} MiB",
            bin.display()
        ),
        None => println!("idle RSS: could not read /proc"),
    }
}

fn main() {
    aie_shared::init_crypto();
    let (aie, raw, bare) = start_servers();
    let client = client_runtime();
    println!(
        "tools/call of a trivial tool on loopback: {CONNECTIONS} keep-alive connections, {ROUNDS} rounds of {}s after {}ms warm-up; median of rounds",
        MEASURE.as_secs(),
        WARMUP.as_millis()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>8}",
        "mode", "req/s", "p50 µs", "p99 µs", "errors"
    );
    let mut bare_rps = 0.0;
    for (mode, addr, label) in [
        (Mode::BareEcho, bare, "bare axum JSON echo"),
        (Mode::Stateless, aie, "aie stateless JSON (2026-07-28)"),
        (Mode::RmcpStateless, raw, "rmcp alone, stateless JSON"),
        (Mode::LegacySession, aie, "aie legacy session (2025-11-25)"),
    ] {
        let rounds: Vec<Figures> = (0..ROUNDS)
            .map(|_| {
                let run = |from, until| connection(mode, addr, from, until);
                client.block_on(measure(CONNECTIONS, run))
            })
            .collect();
        let errors = rounds.iter().map(|f| f.errors).sum::<usize>();
        let rps = median(rounds.iter().map(|f| f.rps).collect());
        let p50 = median(rounds.iter().map(|f| f.p50_us).collect());
        let p99 = median(rounds.iter().map(|f| f.p99_us).collect());
        if let Mode::BareEcho = mode {
            bare_rps = rps;
        }
        let share = if bare_rps > 0.0 {
            format!("  ({:.0}% of bare)", 100.0 * rps / bare_rps)
        } else {
            String::new()
        };
        println!("{label:<34} {rps:>10.0} {p50:>10.0} {p99:>10.0} {errors:>8}{share}");
    }
    idle_memory();
}
