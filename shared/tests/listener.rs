//! The shared listener in-process: health, readiness, metrics, graceful shutdown that drains
//! in-flight calls, and TLS.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use aie_shared::{
    HttpOptions, Metrics, TlsFiles, ToolError, ToolOutput, ToolServer, ToolSet, ToolSpec, app,
    http, serve, streamable_http,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
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
            if a.ms > 10_000 {
                return Err(ToolError::InvalidArguments(
                    "ms must be at most 10000".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(a.ms)).await;
            Ok(Slept { slept_ms: a.ms })
        },
    );
    ToolServer::new("sleepy", tools)
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(tls: Option<Arc<rustls::ServerConfig>>, ready: http::ReadyCheck) -> Running {
    aie_shared::init_crypto();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let opts = HttpOptions::new(addr);
    let streams = CancellationToken::new();
    let metrics = Metrics::new();
    let mcp = streamable_http(
        sleepy_server().with_metrics(metrics.clone()),
        &opts,
        metrics.clone(),
        streams.clone(),
    );
    let router = app(mcp, &opts, metrics, ready);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, router, tls, streams, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

fn call_sleep(id: u64, ms: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "sleep", "arguments": {"ms": ms},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string()
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> reqwest::Result<Value> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "sleep")
        .body(body)
        .send()
        .await?
        .json()
        .await
}

/// `/healthz` is alive, `/readyz` reports the check's reason, `/metrics` counts the call
/// by method and tool.
#[tokio::test]
async fn health_readiness_and_metrics() {
    let ready: http::ReadyCheck =
        Arc::new(|| Box::pin(async { Err("vault unreachable".to_owned()) }));
    let server = start(None, ready).await;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    assert!(
        ready
            .text()
            .await
            .expect("text")
            .contains("vault unreachable")
    );

    let answer = post(&client, &format!("{base}/mcp"), call_sleep(1, 1))
        .await
        .expect("call");
    assert_eq!(
        answer.pointer("/result/structuredContent/slept_ms"),
        Some(&json!(1))
    );
    let refused = post(&client, &format!("{base}/mcp"), call_sleep(2, 20_000))
        .await
        .expect("call");
    assert_eq!(refused.pointer("/result/isError"), Some(&json!(true)));

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(r#"aie_mcp_requests_total{method="tools/call",tool="sleep"} 2"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"kind="tool_error""#), "{metrics}");
    assert!(
        metrics.contains(
            r#"aie_mcp_request_duration_seconds_count{method="tools/call",tool="sleep"} 2"#
        ),
        "{metrics}"
    );
}

/// Shutdown stops accepting at once but lets a call already in flight finish with its result.
#[tokio::test]
async fn shutdown_drains_in_flight_calls() {
    let mut server = start(None, http::always_ready()).await;
    let url = format!("http://{}/mcp", server.addr);
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move { post(&client, &url, call_sleep(1, 1500)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = server.stop.take().expect("not stopped yet").send(());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A new connection is refused while the old call drains.
    let fresh = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "new connections must be refused during shutdown"
    );

    let answer = in_flight
        .await
        .expect("join")
        .expect("in-flight call completed");
    assert_eq!(
        answer.pointer("/result/structuredContent/slept_ms"),
        Some(&json!(1500))
    );
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("io");
}

/// With a certificate and key the listener speaks TLS (rustls, ring provider).
#[tokio::test]
async fn tls_listener_serves_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert.cert.pem()).expect("write cert");
    std::fs::write(&files.key, cert.signing_key.serialize_pem()).expect("write key");
    let tls = http::load_tls(&files).expect("load TLS");
    let server = start(Some(tls), http::always_ready()).await;

    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).expect("root");
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .build()
        .expect("client");
    let url = format!("https://localhost:{}/healthz", server.addr.port());
    let res = client.get(url).send().await.expect("https request");
    assert_eq!(res.status(), 200);

    // Plain HTTP to the TLS port does not get an answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.addr))
        .send()
        .await;
    assert!(plain.is_err());
}

/// A missing key file is an error naming the file, not a panic.
#[test]
fn missing_tls_files_name_the_file() {
    let files = TlsFiles {
        cert: "/nonexistent/aie-cert.pem".into(),
        key: "/nonexistent/aie-key.pem".into(),
    };
    let err = http::load_tls(&files).expect_err("missing files");
    assert!(format!("{err:#}").contains("aie-cert.pem"), "{err:#}");
}
