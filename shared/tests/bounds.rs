//! The listener's bounds over real loopback connections (contract invariant 10): requests in
//! service per client, open sessions on the listener, idle sessions closed.

use std::{net::SocketAddr, time::Duration};

use aie_shared::{
    ClientKey, HttpOptions, ListenerLimits, Metrics, ToolOutput, ToolServer, ToolSet, ToolSpec,
    app, http, serve, streamable_http,
};
use axum::{extract::Request, middleware::Next, response::Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};
use tokio_util::sync::CancellationToken;

#[derive(Deserialize, JsonSchema)]
struct SleepArgs {
    /// How long to take, in milliseconds.
    ms: u64,
}

#[derive(Serialize, JsonSchema)]
struct Slept {
    slept_ms: u64,
}
impl ToolOutput for Slept {}

fn sleepy_server() -> ToolServer {
    let mut tools = ToolSet::new();
    tools.add(
        ToolSpec::read("sleep", "Sleep", "Answers after a while"),
        |a: SleepArgs| async move {
            tokio::time::sleep(Duration::from_millis(a.ms.min(5_000))).await;
            Ok(Slept { slept_ms: a.ms })
        },
    );
    ToolServer::new("sleepy", tools)
}

/// Stands in for the gateway's token layer: the `x-client` header names the client.
async fn client_from_header(mut request: Request, next: Next) -> Response {
    if let Some(name) = request
        .headers()
        .get("x-client")
        .and_then(|v| v.to_str().ok())
    {
        let key = ClientKey::new(name);
        request.extensions_mut().insert(key);
    }
    next.run(request).await
}

struct Running {
    base: String,
    metrics: Metrics,
    _stop: oneshot::Sender<()>,
}

async fn start(limits: ListenerLimits) -> Running {
    aie_shared::init_crypto();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let mut opts = HttpOptions::new(addr);
    opts.limits = limits;
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let mcp = streamable_http(sleepy_server(), &opts, metrics.clone(), streams.clone())
        .layer(axum::middleware::from_fn(client_from_header));
    let router = app(mcp, &opts, metrics.clone(), http::always_ready());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, None, streams, async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        metrics,
        _stop: stop,
    }
}

fn limits(max_sessions: usize, in_flight: usize, idle: Duration) -> ListenerLimits {
    ListenerLimits {
        max_sessions,
        max_sessions_per_client: max_sessions,
        max_in_flight_per_client: in_flight,
        session_idle: idle,
    }
}

/// A stateless (2026-07-28) `sleep` call by `client`: (status, body, Retry-After).
async fn sleep_call(base: &str, client: &str, ms: u64) -> (u16, Value, Option<String>) {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "sleep", "arguments": {"ms": ms},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}}});
    let response = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "sleep")
        .header("x-client", client)
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, response.json().await.expect("json"), retry)
}

/// Opens a legacy session; its id, or the refusal's status and body.
async fn initialize(base: &str) -> Result<String, (u16, Value)> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let response = reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    match response.headers().get("mcp-session-id") {
        Some(id) => Ok(id.to_str().expect("ascii").to_owned()),
        None => Err((status, response.json().await.unwrap_or(Value::Null))),
    }
}

/// A `ping` in session `id`: the HTTP status (404 once the session has ended).
async fn ping(base: &str, id: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{base}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", id)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}).to_string())
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

/// A client with as many requests in service as its bound gets 429 naming the bound's
/// `[limits]` key, with `Retry-After`; another client is served meanwhile, and once the
/// answers are out the first is served again.
#[tokio::test]
async fn requests_past_a_clients_bound_are_refused_while_others_are_served() {
    let server = start(limits(16, 2, Duration::from_secs(60))).await;
    let base = server.base.clone();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move { sleep_call(&base, "agent", 1_500).await })
        })
        .collect();
    // Both slow calls are in service once a third is refused; try for a while.
    let mut refused = None;
    for _ in 0..100 {
        let answer = sleep_call(&base, "agent", 0).await;
        if answer.0 == 429 {
            refused = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, body, retry) = refused.expect("a third request in service refused");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("client `agent`")
            && message.contains("[limits] max_in_flight_per_client = 2"),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("1"));
    let (status, other, _) = sleep_call(&base, "owner", 0).await;
    assert_eq!(status, 200, "another client is not held back: {other}");
    for call in slow {
        let (status, body, _) = call.await.expect("join");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = sleep_call(&base, "agent", 0).await;
    assert_eq!(status, 200, "served again once answered: {body}");
    assert!(
        server
            .metrics
            .render()
            .contains(r#"aie_mcp_limit_refusals_total{limit="max_in_flight_per_client"}"#)
    );
}

/// Without a client (a standalone server) the listener is one client: past
/// `max_sessions` a new session gets 429 naming the key; a session ended with DELETE (200)
/// makes room.
#[tokio::test]
async fn sessions_past_the_listeners_bound_are_refused_until_one_ends() {
    let server = start(limits(2, 8, Duration::from_secs(60))).await;
    let first = initialize(&server.base).await.expect("first");
    initialize(&server.base).await.expect("second");
    let (status, body) = initialize(&server.base).await.expect_err("third");
    assert_eq!(status, 429);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 open") && message.contains("[limits] max_sessions = 2"),
        "{body}"
    );
    assert_eq!(body["id"], 1, "the refusal answers the initialize request");
    let deleted = reqwest::Client::new()
        .delete(format!("{}/mcp", server.base))
        .header("mcp-protocol-version", "2025-11-25")
        .header("mcp-session-id", &first)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200, "a session's DELETE answers 200");
    assert_eq!(ping(&server.base, &first).await, 404);
    initialize(&server.base)
        .await
        .expect("room once a session ended");
}

/// A session without a request for the idle time is closed (404), and its place is free.
#[tokio::test]
async fn idle_sessions_are_closed() {
    let server = start(limits(1, 8, Duration::from_secs(1))).await;
    let id = initialize(&server.base).await.expect("session");
    assert_eq!(ping(&server.base, &id).await, 200);
    // Each request restarts the idle time, so wait past it before every look.
    let mut status = 200;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        status = ping(&server.base, &id).await;
        if status == 404 {
            break;
        }
    }
    assert_eq!(status, 404, "the idle session was not closed");
    initialize(&server.base)
        .await
        .expect("its place is free again");
}
