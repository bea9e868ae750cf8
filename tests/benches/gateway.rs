//! Benchmark of the gateway on loopback: `tools/call` of a trivial tool through the gateway
//! against the same server called directly, in one run. Latency (p50, p99) on one
//! connection, one call at a time, so the difference is the gateway's added latency; then
//! requests/s on several keep-alive connections. Stateless JSON (2026-07-28) and legacy
//! sessions (2025-11-25).
//!
//! Run: `cargo bench -p aie-e2e --bench gateway`. Prints figures only; it never fails on
//! time.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use aie::gateway::{ClientIdentity, ClientToken, Gateway, GatewayBuilder, gateway_router};
use aie_shared::{Metrics, app, http, streamable_http};
use bytes::Bytes;
use common::{echo_server, in_own_runtime, serve_on_loopback};
use http_body_util::{BodyExt, Full};
use hyper::{Request, client::conn::http1};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

const CONNECTIONS: usize = 8;
const WARMUP: Duration = Duration::from_millis(500);
const MEASURE: Duration = Duration::from_secs(3);
const ACCEPT: &str = "application/json, text/event-stream";
const TOKEN: &str = "bench-token";

/// Starts the echo server, a gateway fronting it over HTTP and a gateway hosting another
/// copy of it in-process (the embedded default of `aie up`), on a runtime of their own;
/// returns their addresses.
fn start_servers() -> (SocketAddr, SocketAddr, SocketAddr) {
    in_own_runtime(|| async {
        let direct = serve_on_loopback(|opts, streams| {
            let metrics = Metrics::new();
            let mcp = streamable_http(echo_server(), opts, metrics.clone(), streams);
            app(mcp, opts, metrics, http::always_ready())
        })
        .await;
        let fronting =
            gateway(Gateway::builder().upstream("echo", &format!("http://{direct}/mcp"), false))
                .await;
        let hosting = gateway(Gateway::builder().in_process("echo", echo_server(), false)).await;
        (direct, fronting, hosting)
    })
}

/// Builds the gateway `builder` describes, with the bench's client, and serves it.
async fn gateway(builder: GatewayBuilder) -> SocketAddr {
    let token =
        ClientToken::from_token(ClientIdentity::new("bench", "owner"), TOKEN).expect("token");
    let gateway = builder.client(token).build().await.expect("gateway starts");
    serve_on_loopback(|opts, streams| gateway_router(&gateway, opts, Metrics::new(), streams)).await
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Era {
    Stateless,
    Legacy,
}

fn call_body(id: u64, era: Era) -> String {
    let mut params = json!({"name": "echo", "arguments": {"text": "hello"}});
    if era == Era::Stateless {
        params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}});
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

fn request(addr: SocketAddr, body: String, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post("/mcp")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("authorization", format!("Bearer {TOKEN}"));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

/// One connection's calls until `deadline`; returns the latencies of calls that began after
/// `measure_from`, and the number of failed calls.
async fn connection(
    era: Era,
    addr: SocketAddr,
    measure_from: Instant,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);

    let mut session = String::new();
    if era == Era::Legacy {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
        let res = sender
            .send_request(request(addr, init.to_string(), &[]))
            .await
            .expect("initialize");
        session = res.headers()["mcp-session-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let _ = res.into_body().collect().await;
        sender.ready().await.expect("ready");
        let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
        let headers = [
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", "2025-11-25"),
        ];
        let res = sender
            .send_request(request(addr, done, &headers))
            .await
            .expect("initialized");
        let _ = res.into_body().collect().await;
    }

    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut id = 1;
    while Instant::now() < deadline {
        sender.ready().await.expect("ready");
        let req = match era {
            Era::Stateless => request(
                addr,
                call_body(id, era),
                &[
                    ("mcp-protocol-version", "2026-07-28"),
                    ("mcp-method", "tools/call"),
                    ("mcp-name", "echo"),
                ],
            ),
            Era::Legacy => request(
                addr,
                call_body(id, era),
                &[
                    ("mcp-session-id", session.as_str()),
                    ("mcp-protocol-version", "2025-11-25"),
                ],
            ),
        };
        let started = Instant::now();
        let res = sender.send_request(req).await.expect("send");
        let ok = res.status().is_success();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let elapsed = started.elapsed();
        if !ok || !body.windows(8).any(|w| w == b"\"hello\"}") {
            errors += 1;
        }
        if started >= measure_from {
            latencies.push(elapsed);
        }
        id += 1;
    }
    (latencies, errors)
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

async fn measure(era: Era, addr: SocketAddr, connections: usize) -> Figures {
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let deadline = measure_from + MEASURE;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(era, addr, measure_from, deadline)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await.expect("connection task");
        all.extend(latencies);
        errors += e;
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    Figures {
        rps: all.len() as f64 / MEASURE.as_secs_f64(),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        errors,
    }
}

fn main() {
    aie_shared::init_crypto();
    let (direct, gateway, hosting) = start_servers();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    println!(
        "tools/call of a trivial tool on loopback, through the gateway and direct; {}s per figure after {}ms warm-up",
        MEASURE.as_secs(),
        WARMUP.as_millis()
    );
    println!(
        "{:<50} {:>10} {:>10} {:>10} {:>12} {:>8}",
        "era / path", "p50 µs", "p99 µs", "req/s (1)", "req/s (8)", "errors"
    );
    for (era, label) in [
        (Era::Stateless, "stateless JSON (2026-07-28)"),
        (Era::Legacy, "legacy session (2025-11-25)"),
    ] {
        let mut p50s = Vec::new();
        let mut p99s = Vec::new();
        let mut direct_rps = 0.0;
        for (path, addr) in [
            ("direct", direct),
            ("gateway, HTTP upstream", gateway),
            ("gateway, in-process", hosting),
        ] {
            let one = client.block_on(measure(era, addr, 1));
            let many = client.block_on(measure(era, addr, CONNECTIONS));
            if path == "direct" {
                direct_rps = many.rps;
            }
            println!(
                "{:<50} {:>10.0} {:>10.0} {:>10.0} {:>12.0} {:>8}  ({:.0}% of direct)",
                format!("{label}, {path}"),
                one.p50_us,
                one.p99_us,
                one.rps,
                many.rps,
                one.errors + many.errors,
                100.0 * many.rps / direct_rps
            );
            p50s.push(one.p50_us);
            p99s.push(one.p99_us);
        }
        for (i, path) in [(1, "HTTP upstream"), (2, "in-process")] {
            println!(
                "{:<50} {:>10.0} {:>10.0}",
                format!("{label}, added ({path})"),
                p50s[i] - p50s[0],
                p99s[i] - p99s[0]
            );
        }
    }
}
