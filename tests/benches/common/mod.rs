//! What both benchmarks share: the trivial tool they call, servers on loopback in a
//! runtime of their own, and the client side: connections calling the tool one call at a
//! time, timed, and the figures of a measurement.

use std::{
    future::Future,
    net::SocketAddr,
    time::{Duration, Instant},
};

use aie_shared::{HttpOptions, ToolOutput, ToolServer, ToolSet, ToolSpec, http};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    Request,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, JsonSchema)]
struct EchoArgs {
    /// Text to send back.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct Echoed {
    text: String,
}
impl ToolOutput for Echoed {
    fn render(&self) -> String {
        self.text.clone()
    }
}

/// A server with one tool, `echo`, that sends its text back.
pub fn echo_server() -> ToolServer {
    let mut tools = ToolSet::new();
    tools.add(
        ToolSpec::read("echo", "Echo", "Sends the text back"),
        |a: EchoArgs| async move { Ok(Echoed { text: a.text }) },
    );
    ToolServer::new("bench", tools)
}

/// Binds a loopback port and serves, with aie's listener, the router `make` builds for it
/// (given the listener's options and its stream token); returns the address.
pub async fn serve_on_loopback(
    make: impl FnOnce(&HttpOptions, CancellationToken) -> Router,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let router = make(&opts, streams.clone());
    tokio::spawn(http::serve(
        listener,
        router,
        None,
        streams,
        std::future::pending(),
    ));
    addr
}

/// Runs `start` on a multi-thread runtime in a thread of its own, which then serves for as
/// long as the process lives, so the servers never share the client's threads; returns what
/// `start` returned.
pub fn in_own_runtime<T, F, Fut>(start: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            tx.send(start().await).expect("report the servers");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("servers started")
}

/// Keep-alive connections at once for the requests/s figures.
pub const CONNECTIONS: usize = 8;
/// How long a measurement runs before its calls count.
pub const WARMUP: Duration = Duration::from_millis(500);
/// How long a measurement's calls count.
pub const MEASURE: Duration = Duration::from_secs(3);

/// The headers of a stateless (2026-07-28) `tools/call` of `echo`.
pub const STATELESS_CALL: [(&str, &str); 3] = [
    ("mcp-protocol-version", "2026-07-28"),
    ("mcp-method", "tools/call"),
    ("mcp-name", "echo"),
];

/// The headers of a request in the legacy (2025-11-25) session `session`.
pub fn in_session(session: &str) -> [(&str, &str); 2] {
    [
        ("mcp-session-id", session),
        ("mcp-protocol-version", "2025-11-25"),
    ]
}

/// The body of `tools/call` number `id` of `echo` with "hello", with `meta` as its `_meta`.
pub fn call_body(id: u64, meta: Option<Value>) -> String {
    let mut params = json!({"name": "echo", "arguments": {"text": "hello"}});
    if let Some(meta) = meta {
        params["_meta"] = meta;
    }
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
}

/// A JSON POST of `body` to `path` on `addr` with the headers every MCP client sends, then
/// `headers`.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: String,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

/// A keep-alive HTTP/1 connection to `addr` with Nagle off; returns its sender.
pub async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Opens a legacy (2025-11-25) session on `sender`, `initialize` then
/// `notifications/initialized`, each built by `request(body, headers)`; returns its id.
pub async fn open_session(
    sender: &mut SendRequest<Full<Bytes>>,
    request: impl Fn(String, &[(&str, &str)]) -> Request<Full<Bytes>>,
) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let res = sender
        .send_request(request(init.to_string(), &[]))
        .await
        .expect("initialize");
    let session = res.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let _ = res.into_body().collect().await;
    sender.ready().await.expect("ready");
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    let res = sender
        .send_request(request(done, &in_session(&session)))
        .await
        .expect("initialized");
    let _ = res.into_body().collect().await;
    session
}

/// Sends the calls `call(id)` builds on `sender`, one at a time, until `deadline`; returns
/// the latencies of those begun from `measure_from` on, and how many failed (an error
/// status, or no echoed "hello").
pub async fn timed_calls(
    sender: &mut SendRequest<Full<Bytes>>,
    measure_from: Instant,
    deadline: Instant,
    mut call: impl FnMut(u64) -> Request<Full<Bytes>>,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut id = 1;
    while Instant::now() < deadline {
        sender.ready().await.expect("ready");
        let req = call(id);
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

/// What one measurement gives.
pub struct Figures {
    /// Calls measured per second, over all connections.
    pub rps: f64,
    /// Median latency, in µs.
    pub p50_us: f64,
    /// 99th-percentile latency, in µs.
    pub p99_us: f64,
    /// Failed calls, warm-up included.
    pub errors: usize,
}

/// Runs `connections` connections at once, each the future `connection(measure_from,
/// deadline)` (as [`timed_calls`] returns), through [`WARMUP`] and [`MEASURE`]; returns
/// their figures together.
pub async fn measure<Fut>(
    connections: usize,
    connection: impl Fn(Instant, Instant) -> Fut,
) -> Figures
where
    Fut: Future<Output = (Vec<Duration>, usize)> + Send + 'static,
{
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let deadline = measure_from + MEASURE;
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(measure_from, deadline)))
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

/// The client's runtime: one thread, so the client never competes with itself.
pub fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}
