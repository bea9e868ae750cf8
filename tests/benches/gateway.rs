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
use common::{
    CONNECTIONS, MEASURE, STATELESS_CALL, WARMUP, call_body, client_runtime, connect, echo_server,
    in_own_runtime, in_session, measure, open_session, post_json, serve_on_loopback, timed_calls,
};
use http_body_util::Full;
use hyper::Request;
use serde_json::{Value, json};

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

/// The `_meta` of a stateless call: the revision, and who calls.
fn stateless_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}})
}

/// A POST to the gateway's `/mcp` as the bench's client, with `headers` added.
fn request(addr: SocketAddr, body: String, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let authorization = format!("Bearer {TOKEN}");
    let mut all = vec![("authorization", authorization.as_str())];
    all.extend_from_slice(headers);
    post_json(addr, "/mcp", body, &all)
}

/// One connection's calls until `deadline`; returns the latencies of calls that began after
/// `measure_from`, and the number of failed calls.
async fn connection(
    era: Era,
    addr: SocketAddr,
    measure_from: Instant,
    deadline: Instant,
) -> (Vec<Duration>, usize) {
    let mut sender = connect(addr).await;
    let session = match era {
        Era::Legacy => {
            open_session(&mut sender, |body, headers| request(addr, body, headers)).await
        }
        Era::Stateless => String::new(),
    };
    timed_calls(&mut sender, measure_from, deadline, |id| match era {
        Era::Stateless => request(addr, call_body(id, Some(stateless_meta())), &STATELESS_CALL),
        Era::Legacy => request(addr, call_body(id, None), &in_session(&session)),
    })
    .await
}

fn main() {
    aie_shared::init_crypto();
    let (direct, gateway, hosting) = start_servers();
    let client = client_runtime();
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
            let run = |from, until| connection(era, addr, from, until);
            let one = client.block_on(measure(1, run));
            let many = client.block_on(measure(CONNECTIONS, run));
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
