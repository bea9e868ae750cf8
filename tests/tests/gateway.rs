//! The gateway end to end: the official conformance suite through it in both eras, real
//! clients (the Python SDK, rmcp) with bearer tokens, aggregation of two upstreams and an
//! in-process server with failure isolation, and authentication.

use std::{
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
};

use aie_e2e::{Aie, aie_bin, conformance_suite, last_json_line, peer, peers_dir, run};
use aie_shared::rmcp::{
    ClientLifecycleMode, ClientServiceExt,
    model::{CallToolRequestParams, CallToolResult, ClientConfig, ProtocolVersion},
    service::{RoleClient, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const TOKEN: &str = "gateway-test-token";
/// A second client's token.
const PHONE: &str = "gateway-test-phone-token";
const SIMPLE_TEXT: &str = "This is a simple text response for testing.";

/// `aie serve conformance` on a free port.
fn fixtures() -> Aie {
    Aie::start(&["serve", "conformance", "--listen", "127.0.0.1:0"])
}

/// `aie serve gateway ARGS` on a free port, accepting `TOKEN`.
fn gateway(args: &[&str]) -> Aie {
    let mut all = vec!["serve", "gateway", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Aie::start_with_env(&all, &[("AIE_TOKEN", TOKEN)])
}

fn upstream_flag(name: &str, server: &Aie, prefix: bool) -> String {
    let suffix = if prefix { "" } else { ",prefix=false" };
    format!("{name}={}{suffix}", server.url)
}

/// An rmcp client session through the gateway, with `token`.
async fn client(
    url: &str,
    lifecycle: ClientLifecycleMode,
    token: &str,
) -> RunningService<RoleClient, ClientConfig> {
    aie_shared::init_crypto();
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned()).auth_header(token);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    ClientConfig::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("client connects through the gateway")
}

fn legacy() -> ClientLifecycleMode {
    ClientLifecycleMode::Initialize
}

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

async fn call(client: &RunningService<RoleClient, ClientConfig>, tool: &str) -> CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

/// A front that adds the bearer token to every request, for a peer that cannot send one
/// (the conformance suite); everything else passes through, streams included.
async fn token_front(target: &str) -> SocketAddr {
    aie_shared::init_crypto();
    let client = reqwest::Client::new();
    let base = target.trim_end_matches("/mcp").to_owned();
    let app = Router::new().fallback(move |request: Request| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = http_body_util::BodyExt::collect(body)
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let mut headers = parts.headers.clone();
            for hop in [header::HOST, header::CONTENT_LENGTH, header::CONNECTION] {
                headers.remove(hop);
            }
            headers.insert(
                header::AUTHORIZATION,
                format!("Bearer {TOKEN}").parse().expect("header value"),
            );
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let sent = client
                .request(parts.method, format!("{base}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await;
            let Ok(upstream) = sent else {
                return Response::builder()
                    .status(StatusCode::BAD_GATEWAY)
                    .body(Body::empty())
                    .expect("response");
            };
            let mut response = Response::builder().status(upstream.status());
            for (name, value) in upstream.headers() {
                if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    response = response.header(name, value);
                }
            }
            response
                .body(Body::from_stream(upstream.bytes_stream()))
                .expect("response")
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn suite_through_gateway(requirements: &'static str) {
    let upstream = fixtures();
    let gw = gateway(&["--upstream", &upstream_flag("fixtures", &upstream, false)]);
    let front = token_front(&gw.url).await;
    let url = format!("http://localhost:{}/mcp", front.port());
    let run = tokio::task::spawn_blocking(move || conformance_suite(&url, requirements))
        .await
        .expect("suite task");
    assert!(
        run.failures.is_empty(),
        "scored scenarios failed through the gateway for {requirements}: {:?}",
        run.failures
    );
    assert!(
        run.passed >= 25,
        "only {} scenarios passed for {requirements}: did the suite run?",
        run.passed
    );
    assert!(
        run.status.success(),
        "conformance suite exited with {} for {requirements}",
        run.status
    );
}

/// Every scored 2025-11-25 scenario passes through the gateway (legacy sessions, relayed
/// sampling, elicitation, logging, progress, subscriptions).
#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_through_gateway_2025_11_25() {
    suite_through_gateway("2025-11-25").await;
}

/// Every scored 2026-07-28 scenario passes through the gateway (stateless requests,
/// input-required round trips, caching hints, listen streams).
#[tokio::test(flavor = "multi_thread")]
async fn conformance_suite_through_gateway_2026_07_28() {
    suite_through_gateway("2026-07-28").await;
}

fn python_client(mode: &str) {
    let upstream = fixtures();
    let gw = gateway(&["--upstream", &upstream_flag("fixtures", &upstream, false)]);
    let out = run(Command::new(peer("AIE_PYTHON"))
        .arg(peers_dir().join("mcp_client.py"))
        .args([&gw.url, mode, "test_simple_text", "{}"])
        .args(["--header", &format!("Authorization=Bearer {TOKEN}")]));
    assert!(out.status.success(), "python client failed in {mode} mode");
    let answer = last_json_line(&out);
    let expected_version = if mode == "legacy" { "2025-11-25" } else { mode };
    assert_eq!(answer["protocol_version"], expected_version);
    if mode == "legacy" {
        assert_eq!(answer["server_name"], "aie-gateway");
    }
    assert!(
        answer["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "test_simple_text"))
    );
    assert_eq!(answer["is_error"], false);
    assert_eq!(answer["text"], SIMPLE_TEXT);
}

/// The official Python SDK lists and calls a tool through the gateway, legacy handshake.
#[test]
fn python_sdk_legacy_through_gateway() {
    python_client("legacy");
}

/// The official Python SDK lists and calls a tool through the gateway, 2026-07-28.
#[test]
fn python_sdk_2026_07_28_through_gateway() {
    python_client("2026-07-28");
}

async fn rmcp_round(lifecycle: ClientLifecycleMode, expected: ProtocolVersion) {
    let upstream = fixtures();
    let gw = gateway(&["--upstream", &upstream_flag("fixtures", &upstream, false)]);
    let client = client(&gw.url, lifecycle, TOKEN).await;
    let info = client.peer().peer_info().expect("server info");
    assert_eq!(info.protocol_version, expected);
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "test_simple_text"));
    let result = call(&client, "test_simple_text").await;
    assert_eq!(text_of(&result), SIMPLE_TEXT);
    client.cancel().await.expect("close");
}

/// rmcp's client lists and calls a tool through the gateway, legacy handshake.
#[tokio::test(flavor = "multi_thread")]
async fn rmcp_client_legacy_through_gateway() {
    rmcp_round(legacy(), ProtocolVersion::V_2025_11_25).await;
}

/// rmcp's client lists and calls a tool through the gateway, 2026-07-28.
#[tokio::test(flavor = "multi_thread")]
async fn rmcp_client_2026_07_28_through_gateway() {
    rmcp_round(modern(), ProtocolVersion::V_2026_07_28).await;
}

/// Two upstreams (one prefixed) and the in-process vault-claim server: names merge and
/// each call reaches its backend; killing one upstream makes its tools fail naming it,
/// the others keep working, and /readyz names it.
#[tokio::test(flavor = "multi_thread")]
async fn aggregation_routes_and_isolates_a_failing_upstream() {
    let vault = tempfile::tempdir().unwrap();
    let vault_dir = vault.path().to_str().unwrap().to_owned();
    let out = run(Command::new(aie_bin()).args(["vault", "init", "--vault", &vault_dir]));
    assert!(out.status.success(), "vault init");
    let first = fixtures();
    let second = fixtures();
    let gw = gateway(&[
        "--upstream",
        &upstream_flag("fixtures", &first, false),
        "--upstream",
        &upstream_flag("other", &second, true),
        "--vault",
        &vault_dir,
    ]);
    let session = client(&gw.url, legacy(), TOKEN).await;
    let stateless = client(&gw.url, modern(), TOKEN).await;
    let names: Vec<String> = session
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for expected in [
        "test_simple_text",
        "other_test_simple_text",
        "vault_list_tasks",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n == "other_vault_list_tasks"));
    for client in [&session, &stateless] {
        assert_eq!(
            text_of(&call(client, "test_simple_text").await),
            SIMPLE_TEXT
        );
        assert_eq!(
            text_of(&call(client, "other_test_simple_text").await),
            SIMPLE_TEXT
        );
        let listed = call(client, "vault_list_tasks").await;
        assert_ne!(listed.is_error, Some(true), "{}", text_of(&listed));
        assert!(
            listed
                .structured_content
                .is_some_and(|s| s["tasks"].is_array())
        );
    }

    drop(second);
    for client in [&session, &stateless] {
        let failed = call(client, "other_test_simple_text").await;
        assert_eq!(failed.is_error, Some(true));
        assert!(text_of(&failed).contains("`other`"), "{}", text_of(&failed));
        assert_eq!(
            text_of(&call(client, "test_simple_text").await),
            SIMPLE_TEXT
        );
        let listed = call(client, "vault_list_tasks").await;
        assert_ne!(listed.is_error, Some(true), "{}", text_of(&listed));
    }
    let ready = reqwest::get(format!("http://{}/readyz", gw.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let why = ready.text().await.unwrap();
    assert!(why.contains("`other`"), "{why}");
    assert!(!why.contains("`fixtures`"), "{why}");
    session.cancel().await.unwrap();
    stateless.cancel().await.unwrap();
}

/// Two backends exposing one name refuse the start, naming both.
#[test]
fn colliding_names_refuse_to_start() {
    let upstream = fixtures();
    let out = run(Command::new(aie_bin())
        .args(["serve", "gateway", "--listen", "127.0.0.1:0"])
        .args(["--upstream", &upstream_flag("one", &upstream, false)])
        .args(["--upstream", &upstream_flag("two", &upstream, false)])
        .env("AIE_TOKEN", TOKEN));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`one` and `two`"), "{stderr}");
}

/// Starts the conformance fixtures in this process behind a layer that records every
/// request's headers.
async fn recording_upstream() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let opts = aie_shared::HttpOptions::new(addr);
    let mcp = aie_shared::streamable_http(
        aie_conformance::server(),
        &opts,
        aie_shared::Metrics::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let record = seen.clone();
    let app = mcp.layer(middleware::from_fn(move |request: Request, next: Next| {
        let record = record.clone();
        async move {
            record
                .lock()
                .expect("unpoisoned")
                .push(request.headers().clone());
            next.run(request).await
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), seen)
}

/// No token and a wrong token get 401 with a Bearer challenge; the upstream never sees
/// the client's Authorization header, in either era.
#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_required_and_never_forwarded() {
    let (upstream, seen) = recording_upstream().await;
    let gw = gateway(&["--upstream", &format!("rec={upstream},prefix=false")]);
    aie_shared::init_crypto();
    let http = reqwest::Client::new();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let post = |token: Option<&str>| {
        let mut request = http
            .post(&gw.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let missing = post(None).await.unwrap();
    assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        missing.headers()[header::WWW_AUTHENTICATE],
        "Bearer realm=\"aie\""
    );
    let wrong = post(Some("not-the-token")).await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let challenge = wrong.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    seen.lock().unwrap().clear();
    for lifecycle in [legacy(), modern()] {
        let client = client(&gw.url, lifecycle, TOKEN).await;
        assert_eq!(
            text_of(&call(&client, "test_simple_text").await),
            SIMPLE_TEXT
        );
        client.cancel().await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty(), "the upstream saw no request");
    assert!(
        seen.iter()
            .any(|h| h.get("mcp-method").is_some_and(|m| m == "tools/call")),
        "no stateless tools/call reached the upstream"
    );
    for headers in seen.iter() {
        assert!(
            !headers.contains_key(header::AUTHORIZATION),
            "the upstream saw Authorization: {headers:?}"
        );
    }
}

/// A guard that hides one tool, refuses another, and records every outcome.
#[derive(Default)]
struct Strict {
    outcomes: Mutex<Vec<(String, aie::gateway::CallOutcome)>>,
}

#[async_trait::async_trait]
impl aie::gateway::CallGuard for Strict {
    fn visible(&self, _client: &aie::gateway::ClientIdentity, tool: &str) -> bool {
        tool != "test_error_handling"
    }

    async fn before(
        &self,
        client: &aie::gateway::ClientIdentity,
        call: &aie::gateway::CallInfo,
    ) -> Result<aie::gateway::Permit, String> {
        if call.tool == "test_image_content" {
            return Err(format!("{} may not fetch images", client.name));
        }
        Ok(aie::gateway::Permit::new(client.clone(), call.clone()))
    }

    async fn after(&self, permit: aie::gateway::Permit, outcome: &aie::gateway::CallOutcome) {
        self.outcomes
            .lock()
            .expect("unpoisoned")
            .push((permit.call.tool, outcome.clone()));
    }
}

impl Strict {
    /// Two rounds (one per era) of: `test_simple_text` ok, `test_error_handling` failed; the
    /// refused call never reported.
    fn heard_two_rounds(&self) {
        use aie::gateway::CallOutcome;
        let outcomes = self.outcomes.lock().expect("unpoisoned").clone();
        let expected = [
            (
                "test_simple_text".to_owned(),
                CallOutcome::Result { is_error: false },
            ),
            (
                "test_error_handling".to_owned(),
                CallOutcome::Result { is_error: true },
            ),
        ];
        assert_eq!(outcomes, [expected.clone(), expected].concat());
    }
}

/// A gateway hosting `handler` in-process as `name`, guarded by [`Strict`], served on
/// loopback: its URL, the guard and the listener's metrics.
async fn strict_gateway<H>(name: &str, handler: H) -> (String, Arc<Strict>, aie_shared::Metrics)
where
    H: aie_shared::rmcp::ServerHandler + aie_shared::DirectCalls + Clone + Send + Sync + 'static,
{
    use aie::gateway::{ClientIdentity, ClientToken, Gateway, gateway_router};
    let guard = Arc::new(Strict::default());
    let gateway = Gateway::builder()
        .in_process(name, handler, false)
        .client(
            ClientToken::from_token(ClientIdentity::new("laptop", "owner"), TOKEN).expect("token"),
        )
        .client(
            ClientToken::from_token(ClientIdentity::new("phone", "owner"), PHONE).expect("token"),
        )
        .shared_guard(guard.clone())
        .build()
        .await
        .expect("gateway starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let opts = aie_shared::HttpOptions::new(addr);
    let streams = tokio_util::sync::CancellationToken::new();
    let metrics = aie_shared::Metrics::new();
    let app = gateway_router(&gateway, &opts, metrics.clone(), streams.clone());
    tokio::spawn(aie_shared::http::serve(
        listener,
        app,
        None,
        streams,
        std::future::pending(),
    ));
    (format!("http://{addr}/mcp"), guard, metrics)
}

/// The guard decides what a client sees and may call, for an in-process backend too: a
/// hidden tool is absent from the list, a refused call answers the guard's reason and
/// never runs, and every forwarded call's outcome comes back to the guard.
#[tokio::test(flavor = "multi_thread")]
async fn the_guard_hides_refuses_and_hears_outcomes() {
    let (url, guard, _) = strict_gateway("fixtures", aie_conformance::server()).await;
    for lifecycle in [legacy(), modern()] {
        let client = client(&url, lifecycle, TOKEN).await;
        let names: Vec<String> = client
            .list_all_tools()
            .await
            .expect("tools/list")
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert!(names.iter().any(|n| n == "test_simple_text"));
        assert!(
            !names.iter().any(|n| n == "test_error_handling"),
            "{names:?}"
        );
        let refused = call(&client, "test_image_content").await;
        assert_eq!(refused.is_error, Some(true));
        assert_eq!(text_of(&refused), "refused: laptop may not fetch images");
        assert_eq!(
            text_of(&call(&client, "test_simple_text").await),
            SIMPLE_TEXT
        );
        let failed = call(&client, "test_error_handling").await;
        assert_eq!(failed.is_error, Some(true));
        client.cancel().await.expect("close");
    }
    guard.heard_two_rounds();
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct NoArgs {}

#[derive(serde::Serialize, schemars::JsonSchema)]
struct Said {
    text: String,
}
impl aie_shared::ToolOutput for Said {
    fn render(&self) -> String {
        self.text.clone()
    }
}

/// Plain tools named like the fixtures [`Strict`] decides on, in a `ToolServer`, whose
/// 2026-07-28 calls the gateway answers on the direct path.
fn plain_tools() -> aie_shared::ToolServer {
    use aie_shared::{ToolError, ToolSet, ToolSpec};
    let mut tools = ToolSet::new();
    tools.add(
        ToolSpec::read("test_simple_text", "Text", "Simple text"),
        |_: NoArgs| async {
            Ok(Said {
                text: SIMPLE_TEXT.into(),
            })
        },
    );
    tools.add(
        ToolSpec::read("test_image_content", "Image", "Refused by the guard"),
        |_: NoArgs| async { Ok(Said { text: "ran".into() }) },
    );
    tools.add(
        ToolSpec::read("test_error_handling", "Error", "Always fails"),
        |_: NoArgs| async { Err::<Said, _>(ToolError::Failed("it failed".into())) },
    );
    tools.add(
        ToolSpec::read("test_in_doubt", "In doubt", "May or may not have happened"),
        |_: NoArgs| async { Err::<Said, _>(ToolError::InDoubt("connection lost".into())) },
    );
    aie_shared::ToolServer::new("plain", tools)
}

/// A call the gateway answers without rmcp's per-request service (an in-process tool) is
/// guarded exactly like any other: refused with the guard's reason and never run, its
/// outcome reported, in both eras; the metrics show which calls went direct.
#[tokio::test(flavor = "multi_thread")]
async fn direct_calls_through_the_gateway_are_guarded() {
    let (url, guard, metrics) = strict_gateway("plain", plain_tools()).await;
    let direct = |tool: &str| {
        let line = format!("aie_mcp_direct_calls_total{{method=\"tools/call\",tool=\"{tool}\"}} ");
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "0".into())
    };
    // Every modern call goes direct. In a session, calls go through rmcp until one has shown
    // who owns the session and one has touched it (see the session test below).
    for (lifecycle, went_direct) in [(modern(), ["1", "1", "1"]), (legacy(), ["1", "1", "1"])] {
        let client = client(&url, lifecycle, TOKEN).await;
        let refused = call(&client, "test_image_content").await;
        assert_eq!(refused.is_error, Some(true));
        assert_eq!(text_of(&refused), "refused: laptop may not fetch images");
        assert_eq!(
            text_of(&call(&client, "test_simple_text").await),
            SIMPLE_TEXT
        );
        let failed = call(&client, "test_error_handling").await;
        assert_eq!(failed.is_error, Some(true));
        assert_eq!(text_of(&failed), "test_error_handling: it failed");
        client.cancel().await.expect("close");
        for (tool, count) in [
            "test_image_content",
            "test_simple_text",
            "test_error_handling",
        ]
        .into_iter()
        .zip(went_direct)
        {
            assert_eq!(direct(tool), count, "{tool}\n{}", metrics.render());
        }
    }
    guard.heard_two_rounds();

    // A raw 2025-11-25 session: its calls go direct once one call through rmcp showed its
    // owner and one touched it; another client's token on it is still refused.
    let http = reqwest::Client::new();
    let post = |token: &str, session: Option<&str>, body: Value| {
        let mut request = http
            .post(&url)
            .bearer_auth(token)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}});
    let opened = post(TOKEN, None, init).await.expect("initialize");
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    let _ = opened.text().await;
    let done = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let _ = post(TOKEN, Some(&session), done)
        .await
        .expect("initialized");
    let simple = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "test_simple_text", "arguments": {}}})
    };
    for id in 1..=3 {
        let answer = post(TOKEN, Some(&session), simple(id)).await.expect("call");
        let text = answer.text().await.expect("body");
        assert!(text.contains(SIMPLE_TEXT), "{text}");
    }
    assert_eq!(direct("test_simple_text"), "2", "{}", metrics.render());
    let stolen = post(PHONE, Some(&session), simple(4)).await.expect("call");
    let text = stolen.text().await.expect("body");
    assert!(text.contains("belongs to another client"), "{text}");
    assert_eq!(direct("test_simple_text"), "2", "{}", metrics.render());
    let again = post(TOKEN, Some(&session), simple(5)).await.expect("call");
    assert!(again.text().await.expect("body").contains(SIMPLE_TEXT));
    assert_eq!(direct("test_simple_text"), "3", "{}", metrics.render());
}

/// An in-process server's "may have happened" reaches the guard as `InDoubt`, in both eras
/// (the guard then leaves an approval in doubt for the owner, never retried).
#[tokio::test(flavor = "multi_thread")]
async fn in_doubt_from_an_in_process_server_reaches_the_guard() {
    use aie::gateway::CallOutcome;
    let (url, guard, _) = strict_gateway("plain", plain_tools()).await;
    for lifecycle in [modern(), legacy()] {
        let client = client(&url, lifecycle, TOKEN).await;
        let doubt = call(&client, "test_in_doubt").await;
        assert_eq!(doubt.is_error, Some(true));
        assert!(aie_shared::in_doubt(&doubt), "{doubt:?}");
        client.cancel().await.expect("close");
    }
    let outcomes = guard.outcomes.lock().expect("unpoisoned").clone();
    let expected = (
        "test_in_doubt".to_owned(),
        CallOutcome::InDoubt {
            reason: "test_in_doubt: connection lost".into(),
        },
    );
    assert_eq!(outcomes, [expected.clone(), expected]);
}
